"""The training configuration (``TrainConfig``): every setting a run depends on, checked once, stored for resume."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

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
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # --model-opt: bool, int, float or str values
    quiet: bool = False  # no progress output
    class_weight: str = "none"  # none | balanced (balanced_class_weights of the train split)
    ohem_thresh: float = 0.0  # > 0: online hard-example mining (scaseg.train.loss.segmentation_loss)
    ohem_min_kept: int = 100_000
    logit_adjust: bool = False  # after the last step: scaseg.train.logit_adjust fitted on the train split
    logit_adjust_images: int = 128
    init: Optional[str] = None  # a whole trained (or pruned) model to start from (scaseg.train.distill)
    distill: Optional[str] = None  # the teacher checkpoint of pixel-wise distillation
    distill_weight: float = 1.0
    distill_temperature: float = 1.0

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
        for flag, value in (("--weight-decay", self.weight_decay), ("--warmup-iters", self.warmup), ("--workers", self.workers)):
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
        if not 0 <= self.seed < 2**63:
            raise ScasegError(f"--seed must be in [0, 2^63), not {self.seed}")
        from scaseg.train.distill import check_options

        check_options(self.init, self.distill, self.distill_weight, self.distill_temperature, self.pretrained,
                      self.model_kwargs)
        return self


REQUIRED = ("data", "variant", "dataset")  # what a saved configuration must hold; the rest have defaults


def config_problem(values: Any) -> Optional[str]:
    """Why ``values`` (a configuration read back from a training state) cannot be TrainConfig fields, or None.

    Unknown keys are allowed (a newer scaseg's settings) and missing ones take their defaults, except REQUIRED.
    """
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        return "its config is not a table of settings"
    for name in REQUIRED:
        if name not in values:
            return f"its config lacks {name!r}"
    for name, hint in get_type_hints(TrainConfig).items():
        if name in values and not _fits(values[name], hint):
            return f"its config's {name!r} is {_short(values[name])}, of the wrong type"
    if not all(isinstance(v, (bool, int, float, str)) for v in values.get("model_kwargs", {}).values()):
        return f"its config's 'model_kwargs' is {_short(values['model_kwargs'])}, of the wrong type"
    return None


def _fits(value: Any, hint: Any) -> bool:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union:
        return any(_fits(value, a) for a in args)
    if origin is tuple:
        return (isinstance(value, (tuple, list)) and len(value) == len(args)
                and all(_fits(v, a) for v, a in zip(value, args)))
    if origin is dict:
        return isinstance(value, dict) and all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
