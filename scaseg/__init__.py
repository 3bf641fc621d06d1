"""SCASeg edge toolkit: Strip Cross-Attention segmentation from PyTorch to ONNX Runtime and TensorRT.

This module stays import-light: no torch at import, so that ``import scaseg.runtime``
works on a Jetson that has no PyTorch. The model API below is loaded on first use.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# In a source checkout, export/, runtime/ and calibration/ sit beside this folder; the wheel installs them
# inside it (pyproject's package-dir). Searching the checkout root too makes `scaseg.runtime` & co. resolve
# the same way from a checkout (e.g. `python -c ...` run in the repo root, where ./scaseg shadows the wheel).
_here = os.path.dirname(os.path.abspath(__file__))
_root = os.path.dirname(_here)
if not os.path.isdir(os.path.join(_here, "runtime")) and os.path.isfile(os.path.join(_root, "runtime", "__init__.py")):
    __path__.append(_root)  # type: ignore[name-defined]  # noqa: F821

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

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'scaseg' has no attribute {name!r}")
