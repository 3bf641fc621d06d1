"""The training loss: pixel-wise cross-entropy (label 255 ignored), optionally class-weighted and/or with online
hard-example mining (OHEM), and the class weights computed from a dataset's labels."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
import torch.nn.functional as F

from scaseg.data.datasets import IGNORE_INDEX

if TYPE_CHECKING:  # pragma: no cover
    from scaseg.data.datasets import SegDataset

def segmentation_loss(logits: torch.Tensor, label: torch.Tensor, weight: Optional[torch.Tensor] = None, *,
                      ohem_thresh: float = 0.0, ohem_min_kept: int = 100_000) -> torch.Tensor:
    """Pixel-wise cross-entropy, ignore 255, optionally class-weighted; logits are upsampled (bilinear) to the label
    size first.

    ``ohem_thresh`` > 0: online hard-example mining as mmsegmentation's OHEMPixelSampler (SegNeXt's Cityscapes
    configs: thresh 0.7, min_kept 100000): only the pixels whose predicted probability of their true class is
    below the threshold count, but at least the ``ohem_min_kept`` hardest of the batch (the threshold rises to
    the probability of the min_kept-th hardest pixel); the loss is the mean over the kept pixels.
    """
    if logits.shape[-2:] != label.shape[-2:]:
        logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
    logits = logits.float()
    if not ohem_thresh > 0:
        return F.cross_entropy(logits, label, weight=weight, ignore_index=IGNORE_INDEX)
    pixel = F.cross_entropy(logits, label, weight=weight, ignore_index=IGNORE_INDEX, reduction="none")
    with torch.no_grad():
        valid = label != IGNORE_INDEX
        prob = torch.softmax(logits, 1).gather(1, label.clamp_max(logits.shape[1] - 1)[:, None])[:, 0]
        prob = prob[valid]
        thresh = ohem_thresh
        if prob.numel() > 0:
            k = min(max(int(ohem_min_kept), 1), prob.numel())
            thresh = max(thresh, float(prob.kthvalue(k).values))
        keep = valid.clone()
        keep[valid] = prob <= thresh
    kept = pixel[keep]
    if kept.numel() == 0:  # nothing valid in the batch: a zero loss that still has a graph
        return pixel.sum() * 0.0
    if weight is None:
        return kept.mean()
    return kept.sum() / weight[label[keep]].sum().clamp_min(1e-12)


def balanced_class_weights(data: SegDataset, num_classes: int) -> torch.Tensor:
    """ENet's weights 1 / ln(1.02 + frequency) from the labels of ``data``, scaled to a pixel-weighted mean of 1.

    A class with 1% of the pixels (a person in a street scene) weighs about 9x one with 30% (the road); a class
    absent from the labels gets weight 0 (it has no pixel to weigh anyway).
    """
    counts = np.zeros(num_classes, dtype=np.float64)
    for i in range(len(data)):
        label = data.load_label(i)
        if label is not None:
            counts += np.bincount(label.ravel(), minlength=256)[:num_classes]
    freq = counts / max(counts.sum(), 1.0)
    weight = np.where(counts > 0, 1.0 / np.log(1.02 + freq), 0.0)
    weight /= max(float((weight * freq).sum()), 1e-12)
    return torch.tensor(weight, dtype=torch.float32)


__all__ = ["segmentation_loss", "balanced_class_weights"]
