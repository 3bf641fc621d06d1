"""SCASeg edge toolkit: Strip Cross-Attention segmentation from PyTorch to ONNX Runtime and TensorRT.

This module stays import-light: no torch at import, so that ``import scaseg.runtime``
works on a Jetson that has no PyTorch. The model API below is loaded on first use.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_here = os.path.dirname(os.path.abspath(__file__))

# name -> module that defines it; resolved lazily by __getattr__ (PEP 562).
_LAZY = {
    "build": "scaseg.models.model",
    "SCASeg": "scaseg.models.model",
    "VARIANTS": "scaseg.models.model",
    "save_checkpoint": "scaseg.checkpoint",
    "load_model": "scaseg.checkpoint",
    "load_backbone": "scaseg.checkpoint",
}

if TYPE_CHECKING:  # pragma: no cover
    from scaseg.checkpoint import load_backbone, load_model, save_checkpoint
    from scaseg.models.model import SCASeg, VARIANTS, build

__all__ = ["__version__", "weights_path", "shipped_weights", "default_model", *_LAZY]

# Checkpoints that ship inside the package (scaseg/weights/<name>.pth, each with a <name>.json provenance file).
WEIGHTS_DIR = os.path.join(_here, "weights")


def shipped_weights() -> list[str]:
    """Names of the checkpoints shipped in the package (for ``weights_path``)."""
    if not os.path.isdir(WEIGHTS_DIR):
        return []
    return sorted(f[: -len(".pth")] for f in os.listdir(WEIGHTS_DIR) if f.endswith(".pth") and not f.startswith("."))


def weights_path(name: str) -> str:
    """Path of a checkpoint shipped in the package, e.g. ``scaseg.load_model(scaseg.weights_path("scaseg-t-synth"))``.

    Its provenance (recipe command, seed, measured mIoU) is the ``.json`` file of the same name beside it.
    """
    if name not in shipped_weights():  # also keeps names such as "../x" from reaching outside the folder
        from scaseg.errors import ScasegError

        known = ", ".join(shipped_weights()) or "none"
        raise ScasegError(f"no shipped weights named {name!r} (shipped: {known})")
    return os.path.join(WEIGHTS_DIR, f"{name}.pth")


# What scaseg-infer and scaseg-bench run when no model is named: the shipped checkpoint, exported once to int8 ONNX
# (8 MiB beside the 10 MiB checkpoint; fp32 would be 20 MiB) so that the torch-free runtime install has a model.
# The int8 file scores the same mIoU as fp32 on the synthetic scenes and is the fastest on a CPU (docs/precision.md).
DEFAULT_MODEL = "scaseg-t-synth"
DEFAULT_MODEL_FILE = f"{DEFAULT_MODEL}.int8.onnx"


def default_model() -> str:
    """Path of the model the commands run when none is given: ``scaseg/weights/scaseg-t-synth.int8.onnx``."""
    path = os.path.join(WEIGHTS_DIR, DEFAULT_MODEL_FILE)
    if not os.path.isfile(path):
        from scaseg.errors import ScasegError

        raise ScasegError(f"no model given, and this install lacks the shipped default {path}; name one with --model")
    return path


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'scaseg' has no attribute {name!r}")
