"""Post-hoc logit adjustment: undo part of the class-weighted loss's prior shift, fitted on the train split.

A cross-entropy with class weights ``w_c`` is minimised by logits that approximate ``log p(c | x) + log w_c`` (plus
a constant): the weighted loss shifts every pixel's decision towards the rare classes by ``log w_c`` (Menon et al.,
"Long-tail learning via logit adjustment", ICLR 2021). The weights buy recall of rare classes at the price of
their precision; neither extreme (``alpha`` 0, the weighted decision, or 1, the unweighted posterior) maximises
mIoU. ``fit`` scores ``logits - alpha * log w`` for ``alpha`` in ``ALPHAS`` on images of the *train* split (the
validation split stays unseen) and keeps the best; ``apply`` folds the shift into the classifier's bias, so the
checkpoint, every export and every runtime carry it with no new operator.
"""
from __future__ import annotations

import sys
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from scaseg.data.datasets import IGNORE_INDEX, SegDataset
from scaseg.data.metrics import SegMetrics, metrics_from_confusion
from scaseg.errors import ScasegError
from scaseg.progress import progress as progress_bar
from scaseg.train import dist as D
from scaseg.train.evaluate import labels_of, predict_logits

ALPHAS = tuple(i / 10 for i in range(11))


def log_weights(weight: torch.Tensor) -> torch.Tensor:
    """``log w`` per class; a class of weight 0 (absent from the train labels) is not shifted."""
    w = weight.detach().float().cpu()
    return torch.where(w > 0, torch.log(w.clamp_min(1e-12)), torch.zeros_like(w))


def fit_images(data: SegDataset, images: int) -> list[int]:
    """``images`` indices spread evenly over ``data`` (all of them when it has fewer)."""
    if images < 1:
        raise ScasegError(f"--logit-adjust-images must be at least 1, not {images}")
    n = len(data)
    if images >= n:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, images).round()})


@torch.no_grad()
def fit(model: nn.Module, data: SegDataset, weight: torch.Tensor, env: D.DistEnv = D.DistEnv(), *,
        images: int = 128, size: Optional[tuple[int, int]] = None, amp: Optional[torch.dtype] = None,
        alphas: tuple[float, ...] = ALPHAS, progress: bool = True) -> dict[str, Any]:
    """The ``alpha`` of ``alphas`` whose adjusted labels score the highest mIoU on ``images`` images of ``data``.

    Scored as validation scores (``scaseg.train.evaluate``): logits at the network input ``size``, labels at each
    image's own resolution. Ranks split the images and sum their confusion matrices, so every rank picks the
    same ``alpha``; a tie goes to the smaller shift. Returns ``alpha``, ``images``, ``alphas`` and their ``miou``.
    """
    was_training = model.training
    model.eval()
    shift = log_weights(weight).to(env.device)
    num_classes = data.num_classes
    if shift.numel() != num_classes:
        raise ScasegError(f"{shift.numel()} class weights for a dataset of {num_classes} classes")
    metrics = [SegMetrics(num_classes, ignore_index=IGNORE_INDEX) for _ in alphas]
    chosen = fit_images(data, images)
    mine = chosen[env.rank::env.world_size]
    for i in progress_bar(mine, desc="logit adjustment", unit="img", leave=False, file=sys.stderr,
                          disable=not (progress and env.is_main)):
        sample = data[i]
        if sample.label is None:
            raise ScasegError(f"the logit adjustment needs labels, but the image {sample.name} has none")
        logits, geom = predict_logits(model, sample.image, size, device=env.device, amp=amp)
        for alpha, m in zip(alphas, metrics):
            m.update(labels_of(logits - alpha * shift[:, None, None], geom, num_classes), sample.label)
    confusion = D.all_reduce_sum(np.stack([m.confusion for m in metrics]), env)
    model.train(was_training)
    scores = [float(metrics_from_confusion(c)["miou"]) for c in confusion]
    best = max(range(len(alphas)), key=lambda k: (scores[k], -k))
    return {"alpha": float(alphas[best]), "images": len(chosen), "alphas": [float(a) for a in alphas], "miou": scores}


@torch.no_grad()
def apply(model: nn.Module, weight: torch.Tensor, alpha: float) -> None:
    """Fold ``-alpha * log w`` into the classifier's bias (``model`` is an SCASeg, unwrapped from DDP)."""
    classifier = model.decode_head.classifier  # type: ignore[union-attr]
    if not isinstance(classifier, nn.Conv2d) or classifier.bias is None:
        raise ScasegError("the logit adjustment needs a classifier with a bias")
    bias = classifier.bias
    bias -= (alpha * log_weights(weight)).to(device=bias.device, dtype=bias.dtype)


__all__ = ["ALPHAS", "apply", "fit", "fit_images", "log_weights"]
