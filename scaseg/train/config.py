"""The training configuration (``TrainConfig``): every setting a run depends on, checked once, stored for resume."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from scaseg.errors import ScasegError


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in the training state so a resume can check it."""

    data: str
    out: str
    dataset: str = "auto"
    variant: str = "scaseg-t"
    iters: int = 160_000
    batch: int = 2  # per process
    crop: tuple[int, int] = (512, 512)
    scale_range: tuple[float, float] = (0.5, 2.0)
    base_short: Optional[int] = None
    lr: float = 6e-5
    weight_decay: float = 0.01
    head_lr_mult: float = 10.0
    warmup: int = 1500
    warmup_ratio: float = 1e-6
    power: float = 1.0
    val_interval: int = 4000  # 0: never validate
    ckpt_interval: int = 0  # 0: same as val_interval (or only at the end when that is 0 too)
    val_size: Optional[tuple[int, int]] = None  # None: validate at the stored image size
    train_split: str = "train"
    val_split: str = "val"
    workers: int = 2
    amp: str = "auto"  # auto | off | bf16 | fp16
    pretrained: Optional[str] = None
    resume: Optional[str] = None
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch intra-op threads; 0: PyTorch's default
    channels_last: bool = False  # convolutions on NHWC tensors (model and batches)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    quiet: bool = False  # no progress output
    class_weight: str = "none"  # none | balanced (balanced_class_weights of the train split)
    ohem_thresh: float = 0.0  # > 0: online hard-example mining (scaseg.train.loss.segmentation_loss)
    ohem_min_kept: int = 100_000
    logit_adjust: bool = False  # after the last step: scaseg.train.logit_adjust fitted on the train split
    logit_adjust_images: int = 128

    def checked(self) -> "TrainConfig":
        """Refuse values that cannot work, each with one sentence."""
        if self.iters < 1:
            raise ScasegError(f"--iters must be at least 1, not {self.iters}")
        if self.batch < 1:
            raise ScasegError(f"--batch must be at least 1, not {self.batch}")
        if min(self.crop) < 32:
            raise ScasegError(f"--crop must be at least 32x32 (the encoder's stride is 32), not {self.crop}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ScasegError(f"--scale-range must be two positive numbers, low <= high, not {lo} {hi}")
        if not self.lr > 0:
            raise ScasegError(f"--lr must be positive, not {self.lr}")
        for flag, value in (("--weight-decay", self.weight_decay), ("--warmup", self.warmup), ("--workers", self.workers)):
            if not value >= 0:
                raise ScasegError(f"{flag} must be 0 or more, not {value}")
        if not 0 <= self.ohem_thresh < 1:
            raise ScasegError(f"--ohem-thresh must be in [0, 1) (0: no OHEM), not {self.ohem_thresh}")
        if self.ohem_min_kept < 1:
            raise ScasegError(f"--ohem-min-kept must be at least 1, not {self.ohem_min_kept}")
        if self.class_weight not in ("none", "balanced"):
            raise ScasegError(f"--class-weight must be none or balanced, not {self.class_weight!r}")
        if self.logit_adjust and self.class_weight != "balanced":
            raise ScasegError("--logit-adjust needs --class-weight balanced (it undoes part of that weighting's shift "
                              "towards rare classes)")
        if self.logit_adjust_images < 1:
            raise ScasegError(f"--logit-adjust-images must be at least 1, not {self.logit_adjust_images}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ScasegError(f"--amp must be auto, off, bf16 or fp16, not {self.amp!r}")
        return self
