"""What an engine says about itself and whether this machine can run it: the one place for both.

A TensorRT plan has no metadata slot, so every engine travels with a side file ``<engine>.json`` (the ONNX's
ModelInfo, with the TensorRT facts the build recorded under ``extra["tensorrt"]``) and, for TensorRT-RTX, a runtime
cache ``<engine>.rtcache`` of its JIT-compiled kernels. Standard TensorRT plans are tied to the exact TensorRT
version and the GPU model they were tuned on; TensorRT-RTX plans to the exact version and the compute capabilities
chosen at build time. ``engine_mismatch`` says why an engine cannot run here, before anything is deserialised.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from scaseg.errors import ScasegError
from scaseg.metadata import ModelInfo
from scaseg.runtime.tensorrt.installed import FLAVORS, LABELS, TensorRT

#: Key of the TensorRT facts inside ``ModelInfo.extra`` of an engine's side file.
FACTS_KEY = "tensorrt"


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
