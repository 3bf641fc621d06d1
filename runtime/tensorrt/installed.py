"""Which TensorRT is here, which generation it is, and every rule that depends on that: the one place for them.

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
answer to "is TensorRT installed" (a bare ``tensorrt/`` folder of type stubs does not count).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from scaseg.errors import ScasegError
# The engine precisions are the metadata's (the ONNX and engine say theirs in the same words).
from scaseg.metadata import PRECISIONS as PRECISIONS
from scaseg.metadata import ModelInfo

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
#: Key of the TensorRT facts inside ``ModelInfo.extra`` of an engine's side file.
FACTS_KEY = "tensorrt"
#: What TensorRT-RTX builds for when no --compute-capability is given (its documented default set, written out so
#: that the side file says what the engine holds).
RTX_DEFAULT_CCS = ("8.0", "8.6", "8.9", "12.0")

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


def needs_explicit_batch_flag(trt: TensorRT) -> bool:
    """TensorRT 8.x defaults to implicit batch; 10 ignores the flag, 11 and TensorRT-RTX removed it."""
    return trt.generation == "8.5"


def builds_without_gpu(trt: TensorRT) -> bool:
    """TensorRT-RTX compiles ahead of time for chosen compute capabilities; standard TensorRT times tactics on a GPU."""
    return trt.flavor == "rtx"


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


def precision_plan(trt: TensorRT, precision: str, graph_precision: str) -> PrecisionPlan:
    """Decide network typing and builder flags for ``precision`` given what the ONNX graph carries.

    ``graph_precision`` comes from :func:`onnx_precision`. Raises ScasegError for a combination that this
    TensorRT cannot build (e.g. fp16 from an fp32 ONNX on a strongly typed generation, int8 without Q/DQ nodes).
    """
    if precision not in PRECISIONS:
        raise ScasegError(f"unknown engine precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "int8" and graph_precision != "int8":
        raise ScasegError(
            "an int8 engine is built from a Q/DQ ONNX, and this ONNX has no QuantizeLinear/DequantizeLinear nodes: "
            "pass --calib DIR so scaseg-export calibrates it first"
        )
    if precision != "int8" and graph_precision == "int8":
        raise ScasegError(
            f"this ONNX is quantized (Q/DQ nodes), so it builds only an int8 engine, not {precision}: "
            "pass --precision int8 or start from the float ONNX"
        )
    if precision == "fp32" and graph_precision == "fp16":
        raise ScasegError("this ONNX is already fp16, so it cannot build an fp32 engine: start from the fp32 ONNX")
    generation = trt.generation
    if generation in ("11.x", "rtx"):
        if precision == "fp16" and graph_precision == "fp32":
            raise ScasegError(
                f"{trt.label} builds only strongly typed networks and has no FP16 builder flag, so an fp16 engine "
                "needs an fp16 ONNX: scaseg-export MODEL.onnx --format engine --precision fp16 converts it first"
            )
        return PrecisionPlan(precision, True, (), "strongly typed: precision taken from the ONNX tensors")
    if precision == "int8":
        # Explicit quantization: the Q/DQ scales are in the graph; 8.5 still insists on the INT8 flag and it is
        # harmless on 10.x. Layers the accuracy guard left in float stay fp32 (no FP16 flag).
        return PrecisionPlan("int8", False, ("INT8",), "explicit quantization from Q/DQ nodes")
    if precision == "fp16" and graph_precision == "fp16":
        if generation == "10.x":
            # The fp16 ONNX keeps sensitive ops in fp32 on purpose; strong typing honours that placement.
            return PrecisionPlan("fp16", True, (), "strongly typed from the fp16 ONNX")
        return PrecisionPlan("fp16", False, ("FP16",), "fp16 ONNX on a weakly typed network with the FP16 flag")
    if precision == "fp16":
        return PrecisionPlan("fp16", False, ("FP16",), "FP16 builder flag on the fp32 ONNX")
    return PrecisionPlan("fp32", False, (), "fp32 (TF32 where the GPU has it, TensorRT's default)")


def network_flags(trt_module: Any, trt: TensorRT, plan: PrecisionPlan) -> int:
    """create_network flags: EXPLICIT_BATCH on 8.x, STRONGLY_TYPED on 10.x when the plan wants it, else none.

    11.x and TensorRT-RTX are strongly typed whatever the flags say.
    """
    flags = 0
    if needs_explicit_batch_flag(trt):
        flags |= 1 << int(trt_module.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if plan.strongly_typed and trt.generation == "10.x":
        flags |= 1 << int(trt_module.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


# --- compute capabilities (TensorRT-RTX) -------------------------------------------------------------------------


def cc_text(value: Sequence[int] | str) -> str:
    """(8, 6) / "86" / "8.6" / "sm86" / "SM_86" -> "8.6"; one sentence for anything else."""
    if not isinstance(value, str):
        major, minor = (int(v) for v in value)
        return f"{major}.{minor}"
    text = value.strip().lower().replace("sm_", "").replace("sm", "")
    match = re.fullmatch(r"(\d+)\.(\d)", text) or re.fullmatch(r"(\d+)(\d)", text)
    if not match:
        raise ScasegError(f"cannot read the compute capability {value!r}: write it like 8.6 or sm86")
    return f"{int(match.group(1))}.{int(match.group(2))}"


def rtx_capabilities(trt_module: Any) -> dict[str, Any]:
    """"8.6" -> trt.ComputeCapability.SM86, for every SMxx this TensorRT-RTX names."""
    members = getattr(trt_module.ComputeCapability, "__members__", {})
    out = {}
    for name, member in members.items():
        match = re.fullmatch(r"SM(\d+)(\d)", name)
        if match:
            out[f"{int(match.group(1))}.{int(match.group(2))}"] = member
    return out


def check_compute_capabilities(requested: Sequence[str], known: Sequence[str], label: str) -> list[str]:
    """Normalise the requested compute capabilities (sorted, unique) or refuse an unknown one in one sentence."""
    ccs = sorted({cc_text(cc) for cc in requested}, key=lambda cc: tuple(int(p) for p in cc.split(".")))
    unknown = [cc for cc in ccs if cc not in known]
    if unknown:
        raise ScasegError(f"{label} cannot build for compute capability {', '.join(unknown)}: it knows "
                          f"{', '.join(sorted(known, key=lambda cc: tuple(int(p) for p in cc.split('.'))))}")
    return ccs


# --- engines and the GPU they were built for ------------------------------------------------------------------


def side_file(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``: where an engine's ModelInfo lives (a plan has no metadata slot)."""
    path = Path(engine_path)
    return path.with_name(path.name + ".json")


def runtime_cache_file(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.rtcache``: TensorRT-RTX's JIT-compiled kernels for this GPU."""
    path = Path(engine_path)
    return path.with_name(path.name + ".rtcache")


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
    info = ModelInfo.from_json(text, path)  # the fields every model has, checked there
    why = facts_problem(info.extra.get(FACTS_KEY, {}))
    if why:
        raise ScasegError(f"the model metadata of {path} is invalid: {why}")
    return info


# The TensorRT facts the runtime and the Triton writer read, and the JSON type each must have where present (an
# absent one is engine_mismatch's to judge: it says what an engine that does not record it needs). Values come from
# JSON, so a whole number is exactly an int (``type(v) is int`` leaves out true and false).
_FACT_TYPES: dict[str, tuple[Any, str]] = {
    "trt_flavor": (lambda v: v in FLAVORS, f"one of {', '.join(FLAVORS)}"),
    "trt_version": (lambda v: isinstance(v, str), "a version string"),
    "gpu": (lambda v: isinstance(v, str), "a GPU name"),
    "compute_capability": (lambda v: isinstance(v, list) and len(v) == 2 and all(type(c) is int for c in v),
                           "[major, minor]"),
    "compute_capabilities": (lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v),
                             "a list of strings such as \"8.6\""),
    "plugin": (lambda v: isinstance(v, bool), "true or false"),
    "max_batch": (lambda v: type(v) is int and v >= 1, "a positive whole number"),
    "input_shapes": (lambda v: isinstance(v, dict) and all(
        isinstance(v.get(k), list) and len(v[k]) == 4 and all(type(d) is int and d >= 1 for d in v[k])
        for k in ("min", "opt", "max")), "{min, opt, max} shapes of 4 positive whole numbers"),
    "io_dtypes": (lambda v: isinstance(v, dict) and all(isinstance(d, str) for d in v.values()),
                  "an object of tensor name -> dtype name"),
}


def facts_problem(facts: Any) -> Optional[str]:
    """Why an engine side file's TensorRT facts (``extra["tensorrt"]``) cannot be read, as one clause, or None."""
    if not isinstance(facts, dict):
        return f"extra.{FACTS_KEY} must be a JSON object, got {type(facts).__name__}"
    for name, (fits, expected) in _FACT_TYPES.items():
        value = facts.get(name)
        if value is not None and not fits(value):
            return f"extra.{FACTS_KEY}.{name} must be {expected}, got {json.dumps(value)[:60]}"
    return None


def engine_facts(info: ModelInfo) -> dict[str, Any]:
    """The TensorRT facts recorded at build time (``extra["tensorrt"]``); empty when the side file has none."""
    facts = info.extra.get(FACTS_KEY) if isinstance(info.extra, dict) else None
    return dict(facts) if isinstance(facts, Mapping) else {}


def _norm_name(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def engine_mismatch(facts: Mapping[str, Any], *, trt: TensorRT, gpu_name: str,
                    compute_capability: Sequence[int]) -> Optional[str]:
    """Why an engine built with ``facts`` cannot run on this TensorRT and GPU, as one clause, or None when it can.

    Standard TensorRT plans are tied to the exact TensorRT version and to the GPU model they were tuned on;
    TensorRT-RTX plans to the exact TensorRT-RTX version and to the compute capabilities chosen at build time.
    """
    here_cc = cc_text(compute_capability)
    built_flavor = facts.get("trt_flavor")
    built_version = facts.get("trt_version")
    if not built_version or built_flavor not in FLAVORS:
        return "its side file does not say which TensorRT built it; rebuild it with scaseg-export --format engine"
    if built_flavor != trt.flavor:
        return (f"it was built with {LABELS[built_flavor]} and this machine runs {trt.label}; rebuild the engine "
                f"with --tensorrt {trt.flavor}")
    if str(built_version) != trt.version_text:
        return (f"it was built with {LABELS[built_flavor]} {built_version} and this machine has {trt.label}; "
                "rebuild the engine here from the ONNX")
    if trt.flavor == "rtx":
        ccs = [cc_text(str(cc)) for cc in facts.get("compute_capabilities") or []]
        if here_cc not in ccs:
            return (f"it was built for compute capabilities {', '.join(ccs) or 'none recorded'} and this GPU "
                    f"({gpu_name}) is {here_cc}; rebuild it with --compute-capability {here_cc}")
        return None
    built_cc = facts.get("compute_capability")
    if built_cc is None or cc_text(built_cc) != here_cc:
        built = "unknown" if built_cc is None else cc_text(built_cc)
        return (f"it was built for a GPU of compute capability {built} and this GPU ({gpu_name}) is "
                f"{here_cc}; rebuild the engine here from the ONNX")
    built_gpu = facts.get("gpu")
    if built_gpu and _norm_name(built_gpu) != _norm_name(gpu_name):
        return (f"it was built on a {built_gpu} and this GPU is a {gpu_name}; tactics are tuned per GPU model, "
                "so rebuild the engine here from the ONNX")
    return None


def check_engine(engine_path: str | Path, info: ModelInfo, *, trt: TensorRT, gpu_name: str,
                 compute_capability: Sequence[int]) -> None:
    """Refuse, in one sentence, an engine this TensorRT or this GPU cannot run."""
    why = engine_mismatch(engine_facts(info), trt=trt, gpu_name=gpu_name, compute_capability=compute_capability)
    if why:
        raise ScasegError(f"cannot run the engine {engine_path}: {why}")
