"""scaseg-train --init / --distill: the pixel-wise distillation loss, a pruned student learning from its teacher (the
loss falls), the resume record of the settings, and teachers that cannot teach."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import scaseg
from badinput import refused, run
from scaseg.errors import ScasegError
from scaseg.train.dist import DistEnv
from scaseg.train.distill import distill_loss
from scaseg.train.loop import TrainConfig, Trainer

SHIPPED = scaseg.weights_path("scaseg-t-synth")
SIZE = (64, 128)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small synthetic dataset (the shipped model's 19 classes), a pruned student and two teachers that do not fit."""
    pytest.importorskip("torch_pruning")
    from scaseg.prune.core import find_ratio, prune

    folder = tmp_path_factory.mktemp("distill")
    proc = run("scaseg-synth", [folder / "data", "--num", "6", "--val-fraction", "0.34", "--size", "64x128",
                                "--video-frames", "0", "-q"], folder)
    assert proc.returncode == 0, proc.stderr
    teacher, info = scaseg.load_model(SHIPPED)
    ratio, _, _ = find_ratio(teacher, SIZE, 0.5)
    scaseg.save_checkpoint(prune(teacher, ratio), folder / "student.pth", class_names=info.class_names,
                           palette=info.palette, input_size=SIZE)
    scaseg.save_checkpoint(scaseg.build("scaseg-t", num_classes=5), folder / "five.pth")
    scaseg.save_checkpoint(scaseg.build("scaseg-b0", num_classes=19), folder / "b0.pth")
    return {"root": folder, "data": folder / "data", "student": folder / "student.pth", "five": folder / "five.pth",
            "b0": folder / "b0.pth"}


def _cfg(setup: dict[str, Path], out: Path, **kw) -> TrainConfig:
    base = dict(data=str(setup["data"]), out=str(out), dataset="cityscapes", variant="scaseg-t", iters=8, batch=2,
                crop=SIZE, scale_range=(1.0, 1.0), lr=2e-4, warmup=0, val_interval=0, workers=0, seed=1,
                device="cpu", threads=1, quiet=True, init=str(setup["student"]), distill=str(SHIPPED))
    base.update(kw)
    return TrainConfig(**base)


def test_the_loss_is_the_temperature_scaled_pixel_kl():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 4, 6, generator=g), torch.randn(2, 5, 4, 6, generator=g)
    assert float(distill_loss(t, t, 2.0)) == pytest.approx(0.0, abs=1e-6)
    T = 3.0
    per_pixel = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), log_target=True, reduction="none").sum(1)
    assert float(distill_loss(s, t, T)) == pytest.approx(float(per_pixel.mean()) * T * T, rel=1e-5)
    # A teacher at another resolution is brought to the student's.
    assert float(distill_loss(s, F.interpolate(s, size=(8, 12), mode="bilinear", align_corners=False), 1.0)) < 0.05


def _gap(student: torch.nn.Module, teacher: torch.nn.Module, images: torch.Tensor) -> float:
    with torch.no_grad():
        return float(distill_loss(student.eval()(images), teacher(images), 1.0))


@pytest.mark.slow
def test_a_pruned_student_learns_from_its_teacher_and_the_run_resumes_with_its_settings(setup, tmp_path):
    out = tmp_path / "run"
    teacher, _ = scaseg.load_model(SHIPPED)
    student, _ = scaseg.load_model(setup["student"])
    from scaseg.data.datasets import open_dataset
    from scaseg.runtime.preprocess import preprocess
    from scaseg.metadata import IMAGENET_MEAN, IMAGENET_STD

    train = open_dataset(setup["data"], "cityscapes", "train")
    images = torch.stack([torch.from_numpy(preprocess(train[i].image, SIZE, IMAGENET_MEAN, IMAGENET_STD, "stretch")[0])
                          for i in range(2)])
    before = _gap(student, teacher, images)
    trainer = Trainer(_cfg(setup, out), DistEnv())
    assert trainer.run(until=4)["iterations"] == 4
    with pytest.raises(ScasegError, match="the run used --distill-weight 1.0, not 2.0"):
        Trainer(_cfg(setup, out, resume=str(out), distill_weight=2.0), DistEnv())
    with pytest.raises(ScasegError, match="the run used --distill .*, not \\(none\\)"):
        Trainer(_cfg(setup, out, resume=str(out), distill=None), DistEnv())
    Trainer(_cfg(setup, out, resume=str(out)), DistEnv()).run()  # the pruned widths come back from the state
    trained, info = scaseg.load_model(out / "last.pth")
    assert trained.config["widths"] == student.config["widths"] and info.extra["iteration"] == 8
    after = _gap(trained, teacher, images)
    assert after < 0.8 * before, (before, after)


@pytest.mark.slow
@pytest.mark.parametrize("teacher, expect", [
    ("five", "has 5 classes and the student 19"),
    ("b0", "is a scaseg-b0 model and the student a scaseg-t"),
])
def test_a_teacher_that_cannot_teach_is_refused_in_one_line(setup, teacher, expect):
    args = ["--data", "data", "-o", "out", "--init", "student.pth", "--distill", setup[teacher].name,
            "--iters", "1", "--crop", "64x128", "--workers", "0", "--device", "cpu"]
    refused("scaseg-train", args, setup["root"], expect=expect)


@pytest.mark.slow
def test_init_refuses_a_model_of_other_classes_or_an_encoder_option(setup, tmp_path):
    with pytest.raises(ScasegError, match="has 5 classes and the data"):
        Trainer(_cfg(setup, tmp_path / "a", init=str(setup["five"]), distill=None), DistEnv())
    with pytest.raises(ScasegError, match="pass one of them"):
        Trainer(_cfg(setup, tmp_path / "b", pretrained=str(SHIPPED)), DistEnv())
