"""Starting from a whole trained (or pruned) model (``--init``) and distilling from a teacher (``--distill``).

The distillation loss is pixel-wise: at every pixel, the KL divergence from the teacher's class distribution to the
student's, both softened by a temperature T, times T^2 (Hinton et al., so the gradient's scale does not shrink with
T), averaged over the pixels, added to the segmentation loss with a weight. It needs no extra module (no adapter
between feature widths, unlike feature distillation), so a pruned student of any widths learns from its unpruned
teacher: only their class counts must agree. docs/pruning.md says why this form and not channel-wise distillation.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from scaseg.checkpoint import load_model
from scaseg.errors import ScasegError
from scaseg.models.model import SCASeg, build, from_config


def init_model(path: str, variant: str, num_classes: int, data: str) -> SCASeg:
    """The model ``--init`` names, in train mode, holding its weights; refused in one sentence when it is not a whole
    trained model of ``variant`` for ``num_classes`` classes (the data's)."""
    model, info = load_model(path)  # strict: an encoder-only file or a partial one is refused there
    if info.variant != variant:
        raise ScasegError(f"--init {path} is a {info.variant} model, not --variant {variant}; pass --variant "
                          f"{info.variant}")
    if info.num_classes != num_classes:
        raise ScasegError(f"--init {path} has {info.num_classes} classes and the data {data} {num_classes}; "
                          "the classifier would not fit")
    return model.train()


def student(cfg: Any, state: Optional[dict[str, Any]], num_classes: int, source: Path) -> SCASeg:
    """The model a run trains: the ``--init`` model (rebuilt from the recorded config on resume, where the state's
    weights replace its own), else a new one of ``cfg.variant`` with ``--model-opt``."""
    if cfg.init and state is not None and state.get("model_config"):
        return rebuild(state["model_config"], source)
    if cfg.init:
        return init_model(cfg.init, cfg.variant, num_classes, cfg.data)
    return build(cfg.variant, num_classes=num_classes, **cfg.model_kwargs)


def teacher_term(teacher: nn.Module, image: torch.Tensor, logits: torch.Tensor, cfg: Any,
                 amp: Optional[torch.dtype]) -> torch.Tensor:
    """The weighted distillation loss of one batch: the teacher run on ``image`` (no gradient) against ``logits``."""
    with torch.no_grad(), torch.autocast(image.device.type, dtype=amp) if amp else nullcontext():
        taught = teacher(image)
    return cfg.distill_weight * distill_loss(logits, taught, cfg.distill_temperature)


def rebuild(config: Any, source: Path) -> SCASeg:
    """The model a resumed ``--init`` run trains, from the model config its state recorded (widths included)."""
    try:
        return from_config(config).train()
    except (ScasegError, KeyError, TypeError, ValueError) as exc:
        raise ScasegError(f"cannot resume from {source}: its model config is damaged ({exc})") from None


def load_teacher(path: str, student: nn.Module, device: torch.device, channels_last: bool = False) -> nn.Module:
    """The ``--distill`` teacher, frozen in eval mode on ``device``; refused in one sentence when its variant or class
    count is not the student's (a teacher of another task or family has nothing pixel-wise to teach)."""
    teacher, info = load_model(path)
    config: dict[str, Any] = getattr(student, "config")
    if info.variant != config["variant"]:
        raise ScasegError(f"the --distill teacher {path} is a {info.variant} model and the student a "
                          f"{config['variant']}; distil from the model the student was pruned from")
    if info.num_classes != config["num_classes"]:
        raise ScasegError(f"the --distill teacher {path} has {info.num_classes} classes and the student "
                          f"{config['num_classes']}; their logits cannot be compared")
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher = teacher.to(device).eval()
    # Module.to takes memory_format (as Tensor.to does); its type stubs do not say so.
    return teacher.to(memory_format=torch.channels_last) if channels_last else teacher  # type: ignore[call-overload]


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 x mean over pixels of KL(softmax(teacher / T) || softmax(student / T)); logits (B, K, H, W), the teacher's
    brought to the student's size first."""
    if teacher.shape[-2:] != student.shape[-2:]:
        teacher = F.interpolate(teacher, size=student.shape[-2:], mode="bilinear", align_corners=False)
    log_s = F.log_softmax(student.float() / temperature, dim=1)
    log_t = F.log_softmax(teacher.float() / temperature, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=1)  # B, H, W
    return kl.mean() * temperature**2


def check_options(init: Optional[str], distill: Optional[str], weight: float, temperature: float,
                  pretrained: Optional[str], model_kwargs: dict[str, Any]) -> None:
    """The distillation options checked, each refusal one sentence (TrainConfig.checked calls this)."""
    if init and pretrained:
        raise ScasegError("--init loads a whole model and --pretrained an encoder into a new one: pass one of them")
    if init and model_kwargs:
        raise ScasegError("--model-opt does not apply with --init: the model is the checkpoint's, as it was built")
    if not weight > 0:
        raise ScasegError(f"--distill-weight must be above 0, not {weight}")
    if not temperature > 0:
        raise ScasegError(f"--distill-temperature must be above 0, not {temperature}")
    for flag, path in (("--init", init), ("--distill", distill)):
        if path and not Path(path).expanduser().is_file():
            raise ScasegError(f"{flag} {path} is not a file")
