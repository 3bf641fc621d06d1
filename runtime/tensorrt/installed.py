"""Which TensorRT is installed, its version and generation, and whether it can run the strip-attention plugin.

Two Python modules can provide TensorRT:

- ``tensorrt`` ("standard" TensorRT: desktop/datacenter wheels, JetPack's python3-libnvinfer). Generations:
  - 8.5 / 8.6 (JetPack 5.x ships 8.5): weakly typed networks, ``EXPLICIT_BATCH`` must be passed to
    ``create_network``, FP16/INT8 via builder flags (INT8 also for explicit Q/DQ networks), no ``STRONGLY_TYPED``.
  - 10.x (JetPack 6.x: 10.3; JetPack 7.x: 10.13+): explicit batch always, builder flags still work (weak typing is
    deprecated from 10.12), ``STRONGLY_TYPED`` exists; the Python plugin API ``tensorrt.plugin`` from 10.7 on.
  - 11.x: every network is strongly typed; the FP16/INT8 builder flags and ``EXPLICIT_BATCH`` are gone, so
    precision must already be written into the ONNX (an fp16 ONNX or a Q/DQ ONNX).
  Building needs the GPU the engine will run on (tactics are timed there).
- ``tensorrt_rtx`` (TensorRT for RTX, pip ``tensorrt-rtx-cu12``; generation "rtx"): strongly typed only (no FP16/INT8
  builder flags), no plugins (``tensorrt_rtx.plugin`` does not import in 1.7), no DLA. The builder runs without a
  GPU: engines are compiled ahead of time for a list of compute capabilities chosen at build time, and kernels are
  JIT-compiled on the target at first run (a runtime cache file keeps that work). Deserialising and running need a GPU.

Nothing here imports TensorRT at module level: the rules are testable anywhere. ``find_tensorrt`` is the single
answer to "is TensorRT installed" (a bare ``tensorrt/`` folder of type stubs does not count). What an engine
records and whether it can run here: ``engine_info``; how each generation builds: ``scaseg.export.engine``.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass
from typing import Any, Optional

from scaseg.errors import ScasegError

FLAVORS = ("standard", "rtx")
#: flavor -> Python module
MODULES = {"standard": "tensorrt", "rtx": "tensorrt_rtx"}
#: flavor -> how people call it
LABELS = {"standard": "TensorRT", "rtx": "TensorRT-RTX"}
#: flavor -> the pyproject extra that installs it (with onnx, which an engine build from an ONNX file reads it with)
EXTRAS = {"standard": "tensorrt", "rtx": "tensorrt-rtx"}
INSTALL_HINT = {
    "standard": f"pip install \".[{EXTRAS['standard']}]\" in the scaseg checkout on a desktop GPU, or JetPack's "
                "python3-libnvinfer on a Jetson",
    "rtx": f"pip install \".[{EXTRAS['rtx']}]\" in the scaseg checkout",
}
GENERATIONS = ("8.5", "10.x", "11.x", "rtx")
#: ``tensorrt.plugin`` landed in 10.6; the ONNX parser maps a node carrying ``plugin_namespace`` onto a Python
#: (quickly deployable) plugin reliably from 10.7 on, so the strip-attention plugin is used from there.
PYTHON_PLUGIN_MIN = (10, 7)

Version = tuple[int, ...]


def parse_version(text: str) -> Version:
    """"10.3.0.26" -> (10, 3, 0, 26); anything after the leading dotted digits (post/rc tags) is ignored."""
    match = re.match(r"\s*(\d+(?:\.\d+)*)", str(text))
    if not match:
        raise ScasegError(f"cannot read the TensorRT version {text!r}: expected something like 10.3.0")
    return tuple(int(part) for part in match.group(1).split("."))


def generation_of(flavor: str, version: Version) -> str:
    """"8.5", "10.x", "11.x" or "rtx"; one sentence for a standard TensorRT older than 8.5."""
    if flavor == "rtx":
        return "rtx"
    if version[:2] < (8, 5):
        raise ScasegError(f"TensorRT {'.'.join(map(str, version))} is older than 8.5, the oldest this project "
                          "targets (JetPack 5): upgrade TensorRT")
    if version[0] < 10:
        return "8.5"
    return "10.x" if version[0] == 10 else "11.x"


@dataclass(frozen=True)
class TensorRT:
    """One importable TensorRT: its flavor, module and version."""

    flavor: str  # "standard" | "rtx"
    version_text: str
    module: Any = None  # the imported module (None in tests that only exercise the rules)

    @property
    def version(self) -> Version:
        return parse_version(self.version_text)

    @property
    def generation(self) -> str:
        return generation_of(self.flavor, self.version)

    @property
    def label(self) -> str:
        """"TensorRT 10.3.0.26" or "TensorRT-RTX 1.7.1.116"."""
        return f"{LABELS[self.flavor]} {self.version_text}"


def _findable(flavor: str) -> bool:
    try:
        spec = importlib.util.find_spec(MODULES[flavor])
    except (ImportError, ValueError):  # a finder that refuses the name, a half-initialised module
        return False
    # tensorrt-stubs installs a bare tensorrt/ folder of .pyi files: a namespace package without an origin.
    return spec is not None and spec.origin is not None


def installed_flavors() -> list[str]:
    """The flavors whose module is importable here (without importing them)."""
    return [flavor for flavor in FLAVORS if _findable(flavor)]


def _check_choice(choice: str) -> None:
    if choice not in ("auto", *FLAVORS):
        raise ScasegError(f"unknown TensorRT {choice!r} for --tensorrt: expected auto, standard or rtx")


def find_tensorrt(choice: str = "auto") -> Optional[TensorRT]:
    """The TensorRT to use, imported, or None when there is none. ``choice``: auto | standard | rtx.

    ``auto`` takes standard TensorRT where both are installed (it builds for the GPU at hand), else TensorRT-RTX.
    A module that is present but fails to import (a missing libnvinfer) counts as absent.
    """
    _check_choice(choice)
    for flavor in (FLAVORS if choice == "auto" else (choice,)):
        if not _findable(flavor):
            continue
        try:
            module = importlib.import_module(MODULES[flavor])
        except Exception:  # a broken install (missing shared library) is as good as none
            continue
        if hasattr(module, "Builder"):
            return TensorRT(flavor, str(getattr(module, "__version__", "0")), module)
    return None


def require_tensorrt(purpose: str, choice: str = "auto") -> TensorRT:
    """The TensorRT to use, or one sentence saying it is missing (and how to install it)."""
    found = find_tensorrt(choice)
    if found is not None:
        return found
    if choice == "auto":
        raise ScasegError(f"TensorRT is not installed: {purpose} needs the tensorrt or tensorrt_rtx Python package "
                          f"({INSTALL_HINT['standard']}; or {INSTALL_HINT['rtx']})")
    broken = " (it is present but does not import)" if _findable(choice) else ""
    raise ScasegError(f"{LABELS[choice]} is not installed{broken}: {purpose} needs the {MODULES[choice]} Python "
                      f"package ({INSTALL_HINT[choice]})")


# --- rules per generation ---------------------------------------------------------------------------------------


def has_python_plugins(trt: TensorRT) -> bool:
    """Whether this TensorRT can run the strip-attention plugin written with ``tensorrt.plugin`` (standard >= 10.7)."""
    return trt.flavor == "standard" and trt.version[:2] >= PYTHON_PLUGIN_MIN
