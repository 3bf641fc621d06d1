"""The post-hoc logit adjustment (scaseg.train.logit_adjust): the fit finds the shift a model carries, the trainer
folds it into the classifier's bias and records it."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from scaseg.data.datasets import open_dataset
from scaseg.errors import ScasegError
from scaseg.metadata import IMAGENET_MEAN, IMAGENET_STD
from scaseg.train import logit_adjust as LA
from scaseg.train.evaluate import evaluate
from scaseg.train.loop import TrainConfig, Trainer
from scaseg.train.loss import balanced_class_weights
from scaseg.train.dist import DistEnv

CLASSES = (0, 10, 13)  # road, sky, car: the classes of the images below
STEP = 40  # red value per class index: 0, 40, 80
NOISE = 14.0


def _write(root: Path, split: str, count: int, seed: int) -> None:
    """Cityscapes layout; the red channel is STEP x (index of the class in CLASSES) plus Gaussian noise, so a class
    is a noisy colour and the pixels between two colours are the ambiguous ones a prior shift decides."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        label = np.zeros((32, 64), np.uint8)
        label[:12] = 10
        label[18:26, int(rng.integers(0, 48)):][:, :14] = 13
        index = np.searchsorted(CLASSES, label)
        red = np.clip(20 + STEP * index + rng.normal(0, NOISE, label.shape), 0, 255)
        image = np.stack([np.full_like(red, 90), np.full_like(red, 90), red], -1).astype(np.uint8)  # BGR
        name = f"town_{i:06d}_000019"
        for folder, suffix, array in (("leftImg8bit", "leftImg8bit", image), ("gtFine", "gtFine_labelTrainIds", label)):
            path = root / folder / split / "town" / f"{name}_{suffix}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path), array)


class _Classifier(nn.Module):
    """The exact log-posterior of the images above (the noise's log-likelihood of the red value plus the log of
    each class's pixel share) plus the classifier's bias: a stand-in for a calibrated model, with the attribute
    path SCASeg has."""

    def __init__(self, prior: np.ndarray) -> None:
        super().__init__()
        self.log_prior = torch.tensor(np.log(prior), dtype=torch.float32)
        self.decode_head = nn.Module()
        self.decode_head.classifier = nn.Conv2d(1, 19, 1)
        with torch.no_grad():
            self.decode_head.classifier.weight.zero_()
            self.decode_head.classifier.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]  # back to 0..255
        logits = torch.full((x.shape[0], 19, *x.shape[-2:]), -1e4)
        for k, c in enumerate(CLASSES):
            logits[:, c] = -((red - 20 - STEP * k) ** 2) / (2 * NOISE ** 2) + self.log_prior[k]
        return logits + self.decode_head.classifier.bias[None, :, None, None]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("la") / "data"
    _write(root, "train", 8, seed=1)
    _write(root, "val", 4, seed=2)
    return root


def test_fit_finds_the_prior_shift_a_model_carries_and_apply_removes_it(data: Path) -> None:
    train = open_dataset(data, "cityscapes", "train")
    weight = balanced_class_weights(train, 19)
    assert float(weight[13]) > 2 * float(weight[0])  # the car is rare: its shift is the largest
    counts = sum(np.bincount(train.load_label(i).ravel(), minlength=256)[list(CLASSES)] for i in range(len(train)))
    for carried in (0.0, 0.7):
        model = _Classifier(counts / counts.sum())
        LA.apply(model, weight, -carried)  # the bias a weighted loss leaves: + carried x log w
        result = LA.fit(model, train, weight, images=8, progress=False)
        assert result["images"] == 8 and len(result["miou"]) == len(LA.ALPHAS)
        assert abs(result["alpha"] - carried) <= 0.21, result
        before = evaluate(model, open_dataset(data, "cityscapes", "val"), progress=False)["miou"]
        LA.apply(model, weight, result["alpha"])
        after = evaluate(model, open_dataset(data, "cityscapes", "val"), progress=False)["miou"]
        if carried:
            assert after > before + 0.005  # the shift cost mIoU, removing it gains it back on unseen images
        bias = model.decode_head.classifier.bias
        expected = (carried - result["alpha"]) * LA.log_weights(weight)
        assert torch.allclose(bias, expected, atol=1e-6)


def test_fit_images_spread_over_the_split_and_refuse_zero(data: Path) -> None:
    train = open_dataset(data, "cityscapes", "train")
    assert LA.fit_images(train, 3) == [0, 4, 7] and LA.fit_images(train, 100) == list(range(8))
    with pytest.raises(ScasegError, match="at least 1"):
        LA.fit_images(train, 0)


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), dataset="cityscapes", variant="scaseg-t", iters=2, batch=2,
                crop=(32, 64), lr=1e-3, warmup=1, val_interval=2, workers=0, seed=1, device="cpu", threads=1,
                class_weight="balanced", model_kwargs={"drop_path_rate": 0.0, "dropout": 0.0})
    base.update(kw)
    return TrainConfig(**base)


def test_trainer_folds_the_fitted_shift_into_the_checkpoint_and_records_it(data: Path, tmp_path: Path) -> None:
    import scaseg

    plain = Trainer(_cfg(data, tmp_path / "plain"), DistEnv()).run()
    adjusted = Trainer(_cfg(data, tmp_path / "adj", logit_adjust=True, logit_adjust_images=4), DistEnv()).run()
    assert plain["logit_alpha"] is None and adjusted["logit_alpha"] in LA.ALPHAS
    a, _ = scaseg.load_model(tmp_path / "plain" / "last.pth")
    b, info = scaseg.load_model(tmp_path / "adj" / "last.pth")
    record = info.extra["logit_adjustment"]
    assert record["alpha"] == adjusted["logit_alpha"] and record["images"] == 4 and record["iteration"] == 2
    weight = balanced_class_weights(open_dataset(data, "cityscapes", "train"), 19)
    sa, sb = a.state_dict(), b.state_dict()
    for name in sa:  # training is deterministic: only the classifier's bias differs, by exactly -alpha x log w
        if name == "decode_head.classifier.bias":
            assert torch.allclose(sb[name] - sa[name], -record["alpha"] * LA.log_weights(weight), atol=1e-6)
        else:
            assert torch.equal(sa[name], sb[name]), name
