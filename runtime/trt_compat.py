"""TensorRT generations in one place: version gates, the precision plan per generation, engine/GPU compatibility.

Everything here is pure Python (no ``tensorrt`` import at module level), so the rules are testable on a
machine without TensorRT. The generations this project targets:

- 8.5 / 8.6 (JetPack 5.x ships 8.5): weakly typed networks, ``EXPLICIT_BATCH`` must be passed to
  ``create_network``, FP16/INT8 via builder flags (INT8 also for explicit Q/DQ networks), no ``STRONGLY_TYPED``.
- 10.x (JetPack 6.x: 10.3; JetPack 7.x: 10.13+): explicit batch always, builder flags still work (weak typing is
  deprecated from 10.12), ``STRONGLY_TYPED`` exists; the Python plugin API ``tensorrt.plugin`` from 10.7 on.
- 11.x: every network is strongly typed; the FP16/INT8 builder flags and ``EXPLICIT_BATCH`` are gone, so
  precision must already be written into the ONNX (an fp16 ONNX or a Q/DQ ONNX).
"""
from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from scaseg.errors import ScasegError
from scaseg.metadata import ModelInfo

#: ``tensorrt.plugin`` landed in 10.6; the ONNX parser maps a node carrying ``plugin_namespace`` onto a Python
#: (quickly deployable) plugin reliably from 10.7 on, so the strip-attention plugin is used from there.
PYTHON_PLUGIN_MIN = (10, 7)
PRECISIONS = ("fp32", "fp16", "int8")
#: Key of the TensorRT facts inside ``ModelInfo.extra`` of an engine's side file.
FACTS_KEY = "tensorrt"

Version = tuple[int, ...]


def parse_version(text: str) -> Version:
    """"10.3.0.26" -> (10, 3, 0, 26); anything after the leading dotted digits (post/rc tags) is ignored."""
    match = re.match(r"\s*(\d+(?:\.\d+)*)", str(text))
    if not match:
        raise ScasegError(f"cannot read the TensorRT version {text!r}: expected something like 10.3.0")
    return tuple(int(part) for part in match.group(1).split("."))


def tensorrt_available() -> bool:
    """True when a real ``tensorrt`` package is importable (without importing it).

    tensorrt-stubs installs a bare ``tensorrt/`` folder of .pyi files, which Python would import as an empty
    namespace package; that does not count.
    """
    spec = importlib.util.find_spec("tensorrt")
    return spec is not None and spec.origin is not None


def require_tensorrt(purpose: str) -> str:
    """Import TensorRT or raise one sentence saying it is missing; returns its version string."""
    hint = ("pip install \".[tensorrt]\" in the scaseg checkout on a desktop GPU, or JetPack's python3-libnvinfer on a Jetson")
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as exc:
        detail = "" if isinstance(exc, ModuleNotFoundError) else f"; importing it failed: {exc}"
        raise ScasegError(f"TensorRT is not installed: {purpose} needs the tensorrt Python package ({hint}){detail}"
                          ) from None
    if getattr(trt, "__file__", None) is None or not hasattr(trt, "Builder"):
        raise ScasegError(f"TensorRT is not installed: {purpose} needs the tensorrt Python package ({hint}); "
                          "only its type stubs are present")
    return str(getattr(trt, "__version__", "0"))


def has_python_plugins(version: Version) -> bool:
    """Whether this TensorRT can run the strip-attention plugin written with ``tensorrt.plugin``."""
    return version[:2] >= PYTHON_PLUGIN_MIN


def needs_explicit_batch_flag(version: Version) -> bool:
    """TensorRT 8.x defaults to implicit batch; 10 ignores the flag and 11 removed it."""
    return version[0] < 10


@dataclass(frozen=True)
class PrecisionPlan:
    """How to get the requested precision out of one TensorRT generation and one ONNX file."""

    precision: str
    strongly_typed: bool
    builder_flags: tuple[str, ...]  # names in trt.BuilderFlag
    note: str


def onnx_precision(op_types: Sequence[str], float16_tensors: bool) -> str:
    """What an ONNX graph itself carries: "int8" (Q/DQ nodes), "fp16" (float16 tensors) or "fp32"."""
    if any(op in ("QuantizeLinear", "DequantizeLinear") for op in op_types):
        return "int8"
    return "fp16" if float16_tensors else "fp32"


def precision_plan(version: Version, precision: str, graph_precision: str) -> PrecisionPlan:
    """Decide network typing and builder flags for ``precision`` given what the ONNX graph carries.

    ``graph_precision`` comes from :func:`onnx_precision`. Raises ScasegError for a combination that this
    TensorRT cannot build (e.g. fp16 from an fp32 ONNX on TensorRT 11, int8 without Q/DQ nodes).
    """
    if precision not in PRECISIONS:
        raise ScasegError(f"unknown engine precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "int8" and graph_precision != "int8":
        raise ScasegError(
            "an int8 engine is built from a Q/DQ ONNX, and this ONNX has no QuantizeLinear/DequantizeLinear nodes: "
            "export it with --precision int8 --calib DIR first"
        )
    if precision != "int8" and graph_precision == "int8":
        raise ScasegError(
            f"this ONNX is quantized (Q/DQ nodes), so it builds only an int8 engine, not {precision}: "
            "pass --precision int8 or start from the float ONNX"
        )
    if precision == "fp32" and graph_precision == "fp16":
        raise ScasegError("this ONNX is already fp16, so it cannot build an fp32 engine: start from the fp32 ONNX")
    major = version[0]
    if major >= 11:
        if precision == "fp16" and graph_precision == "fp32":
            raise ScasegError(
                "TensorRT 11 builds only strongly typed networks and has no FP16 builder flag, so an fp16 engine "
                "needs an fp16 ONNX: export with --precision fp16 and build the engine from that file"
            )
        return PrecisionPlan(precision, True, (), "strongly typed: precision taken from the ONNX tensors")
    if precision == "int8":
        # Explicit quantization: the Q/DQ scales are in the graph; 8.5 still insists on the INT8 flag and it is
        # harmless on 10.x. Layers the accuracy guard left in float stay fp32 (no FP16 flag).
        return PrecisionPlan("int8", False, ("INT8",), "explicit quantization from Q/DQ nodes")
    if precision == "fp16" and graph_precision == "fp16":
        if major >= 10:
            # The fp16 ONNX keeps sensitive ops in fp32 on purpose; strong typing honours that placement.
            return PrecisionPlan("fp16", True, (), "strongly typed from the fp16 ONNX")
        return PrecisionPlan("fp16", False, ("FP16",), "fp16 ONNX on a weakly typed network with the FP16 flag")
    if precision == "fp16":
        return PrecisionPlan("fp16", False, ("FP16",), "FP16 builder flag on the fp32 ONNX")
    return PrecisionPlan("fp32", False, (), "fp32 (TF32 where the GPU has it, TensorRT's default)")


# --- engines and the GPU they were built for ------------------------------------------------------------------


def side_file(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``: where an engine's ModelInfo lives (a plan has no metadata slot)."""
    path = Path(engine_path)
    return path.with_name(path.name + ".json")


def read_engine_info(engine_path: str | Path) -> ModelInfo:
    """Read the ModelInfo side file of an engine; one sentence when it is missing or broken."""
    path = side_file(engine_path)
    if not path.is_file():
        raise ScasegError(
            f"the engine {engine_path} has no side file {path.name}; build engines with scaseg-export --format engine "
            "so their classes, input size and TensorRT facts travel with them"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScasegError(f"cannot read the engine side file {path}: {exc}") from None
    return ModelInfo.from_json(text)


def engine_facts(info: ModelInfo) -> dict[str, Any]:
    """The TensorRT facts recorded at build time (``extra["tensorrt"]``); empty when the side file has none."""
    facts = info.extra.get(FACTS_KEY) if isinstance(info.extra, dict) else None
    return dict(facts) if isinstance(facts, Mapping) else {}


def _norm_name(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def engine_mismatch(facts: Mapping[str, Any], *, trt_version: str, gpu_name: str,
                    compute_capability: Sequence[int]) -> Optional[str]:
    """Why an engine built with ``facts`` cannot run here, as one sentence, or None when it can.

    TensorRT plans are tied to the exact TensorRT version and to the GPU they were tuned on.
    """
    built_version = facts.get("version")
    if not built_version:
        return "its side file does not say which TensorRT built it; rebuild it with scaseg-export --format engine"
    if str(built_version) != str(trt_version):
        return (f"it was built with TensorRT {built_version} and this machine has TensorRT {trt_version}; "
                "rebuild the engine here from the ONNX")
    built_cc = facts.get("compute_capability")
    here_cc = tuple(int(v) for v in compute_capability)
    if built_cc is None or tuple(int(v) for v in built_cc) != here_cc:
        built = "unknown" if built_cc is None else ".".join(str(int(v)) for v in built_cc)
        return (f"it was built for a GPU of compute capability {built} and this GPU ({gpu_name}) is "
                f"{'.'.join(str(v) for v in here_cc)}; rebuild the engine here from the ONNX")
    built_gpu = facts.get("gpu")
    if built_gpu and _norm_name(built_gpu) != _norm_name(gpu_name):
        return (f"it was built on a {built_gpu} and this GPU is a {gpu_name}; tactics are tuned per GPU model, "
                "so rebuild the engine here from the ONNX")
    return None


def check_engine(engine_path: str | Path, info: ModelInfo, *, trt_version: str, gpu_name: str,
                 compute_capability: Sequence[int]) -> None:
    """Refuse, in one sentence, an engine built with another TensorRT version or for another GPU."""
    why = engine_mismatch(engine_facts(info), trt_version=trt_version, gpu_name=gpu_name,
                          compute_capability=compute_capability)
    if why:
        raise ScasegError(f"cannot run the engine {engine_path}: {why}")

