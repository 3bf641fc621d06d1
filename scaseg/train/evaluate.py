"""Validation mIoU during training: the model's labels at each image's source resolution, scored by scaseg.data.metrics.

The convention is the project's one (``scaseg.data.metrics``): the runtime's preprocessing (stretch to the network
size), the label map brought back to the image's own size (``labels_to_source``), then the confusion matrix.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scaseg.data.datasets import IGNORE_INDEX, SegDataset
from scaseg.data.metrics import SegMetrics
from scaseg.errors import ScasegError
from scaseg.metadata import IMAGENET_MEAN, IMAGENET_STD
from scaseg.progress import progress as progress_bar
from scaseg.runtime.preprocess import label_dtype, labels_to_source, preprocess
from scaseg.train import dist as D


@torch.no_grad()
def predict_logits(model: nn.Module, image: np.ndarray, size: Optional[tuple[int, int]],
                   mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD, *,
                   device: torch.device = torch.device("cpu"), amp: Optional[torch.dtype] = None) -> tuple[torch.Tensor, Any]:
    """``(logits, geometry)`` of one RGB image: float logits (K, h, w) at the network input size, as the runtime's
    labels head upsamples them, and the preprocessing geometry that ``labels_to_source`` takes back to the image."""
    x, geom = preprocess(image, size, mean, std, "stretch")
    with torch.autocast(device.type, dtype=amp) if amp else nullcontext():
        logits = model(torch.from_numpy(x)[None].to(device))
    if logits.shape[-2:] != x.shape[-2:]:
        logits = F.interpolate(logits.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
    return logits[0].float(), geom


def labels_of(logits: torch.Tensor, geom: Any, num_classes: int) -> np.ndarray:
    """The label map at the image's own resolution from ``predict_logits``'s output."""
    return labels_to_source(logits.argmax(0).cpu().numpy().astype(label_dtype(num_classes)), geom)


@torch.no_grad()
def predict_labels(model: nn.Module, image: np.ndarray, size: Optional[tuple[int, int]],
                   mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD, *, num_classes: int,
                   device: torch.device = torch.device("cpu"), amp: Optional[torch.dtype] = None) -> np.ndarray:
    """The label map of one RGB image at its own resolution, as validation scores it (``model`` in eval mode)."""
    logits, geom = predict_logits(model, image, size, mean, std, device=device, amp=amp)
    return labels_of(logits, geom, num_classes)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: SegDataset,
    env: D.DistEnv = D.DistEnv(),
    *,
    size: Optional[tuple[int, int]] = None,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    amp: Optional[torch.dtype] = None,
    progress: bool = True,
) -> dict[str, Any]:
    """mIoU of ``model`` on ``data`` at the source resolution, with the runtime's preprocessing; ranks split the images."""
    was_training = model.training
    model.eval()
    metrics = SegMetrics(data.num_classes, ignore_index=IGNORE_INDEX)
    indices = range(env.rank, len(data), env.world_size)
    for i in progress_bar(indices, desc="val", unit="img", leave=False, file=sys.stderr, disable=not (progress and env.is_main)):
        sample = data[i]
        if sample.label is None:
            raise ScasegError(f"validation needs labels, but the image {sample.name} has none")
        pred = predict_labels(model, sample.image, size, mean, std, num_classes=data.num_classes, device=env.device,
                              amp=amp)
        metrics.update(pred, sample.label)
    metrics.confusion = D.all_reduce_sum(metrics.confusion, env)
    model.train(was_training)
    return metrics.compute()


__all__ = ["evaluate", "labels_of", "predict_labels", "predict_logits"]
