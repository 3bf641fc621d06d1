"""scaseg.train.loss: cross-entropy with ignore, class weights and online hard-example mining (OHEM)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scaseg.data.datasets import IGNORE_INDEX
from scaseg.train.loss import segmentation_loss


def _batch(seed: int = 0, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, classes, 8, 16, generator=g) * 3
    label = torch.randint(0, classes, (2, 8, 16), generator=g)
    label[0, :2] = IGNORE_INDEX
    return logits, label


def _true_prob(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, 1).gather(1, label.clamp_max(logits.shape[1] - 1)[:, None])[:, 0]


def test_without_ohem_it_is_cross_entropy_ignoring_255() -> None:
    logits, label = _batch()
    assert segmentation_loss(logits, label) == pytest.approx(float(F.cross_entropy(logits, label, ignore_index=255)))


def test_ohem_averages_only_the_pixels_below_the_threshold() -> None:
    logits, label = _batch()
    valid = label != IGNORE_INDEX
    prob = _true_prob(logits, label)
    hard = valid & (prob < 0.7)
    assert 0 < int(hard.sum()) < int(valid.sum())  # the case is informative: some pixels are easy
    pixel = F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX, reduction="none")
    got = segmentation_loss(logits, label, ohem_thresh=0.7, ohem_min_kept=1)
    assert float(got) == pytest.approx(float(pixel[hard].mean()), rel=1e-5)
    assert float(got) > float(segmentation_loss(logits, label))  # easy pixels no longer dilute the loss


def test_ohem_keeps_at_least_min_kept_hardest_pixels() -> None:
    logits, label = _batch(1)
    valid = label != IGNORE_INDEX
    prob = _true_prob(logits, label)[valid]
    pixel = F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX, reduction="none")[valid]
    k = int((prob < 0.1).sum()) + 40  # more than the threshold alone would keep
    order = prob.argsort()[:k]
    got = segmentation_loss(logits, label, ohem_thresh=0.1, ohem_min_kept=k)
    assert float(got) == pytest.approx(float(pixel[order].mean()), rel=1e-5)
    # min_kept beyond the valid pixel count keeps them all: plain cross-entropy
    assert float(segmentation_loss(logits, label, ohem_thresh=0.1, ohem_min_kept=10**6)) == pytest.approx(
        float(segmentation_loss(logits, label)), rel=1e-5)


def test_ohem_with_class_weights_is_the_weighted_mean_of_the_kept_pixels() -> None:
    logits, label = _batch(2)
    weight = torch.tensor([0.5, 1.0, 2.0, 4.0, 8.0])
    valid = label != IGNORE_INDEX
    hard = valid & (_true_prob(logits, label) < 0.7)
    nll = F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX, reduction="none")  # unweighted
    w = weight[label.clamp_max(4)]
    want = (w * nll)[hard].sum() / w[hard].sum()
    got = segmentation_loss(logits, label, weight, ohem_thresh=0.7, ohem_min_kept=1)
    assert float(got) == pytest.approx(float(want), rel=1e-5)


def test_ohem_gradient_flows_and_an_all_ignored_batch_gives_zero() -> None:
    logits, label = _batch(3)
    logits.requires_grad_(True)
    segmentation_loss(logits, label, ohem_thresh=0.7, ohem_min_kept=4).backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0
    empty = torch.full_like(label, IGNORE_INDEX)
    x = logits.detach().clone().requires_grad_(True)
    loss = segmentation_loss(x, empty, ohem_thresh=0.7)
    loss.backward()
    assert float(loss.detach()) == 0.0 and x.grad is not None
