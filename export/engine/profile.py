"""Build options checked before any work: precision, workspace, DLA, flavour-only options (the compute capabilities
a TensorRT-RTX engine is built for), the optimisation profile.

Pure functions (no TensorRT call, no file): each refusal is one sentence.
"""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence

from scaseg.errors import ScasegError
from scaseg.metadata import ModelInfo, check_precision
from scaseg.runtime.tensorrt.engine_info import cc_text
from scaseg.runtime.tensorrt.installed import TensorRT

Shape = tuple[int, int, int, int]

#: What TensorRT-RTX builds for when no --compute-capability is given (its documented default set, written out so
#: that the side file says what the engine holds).
RTX_DEFAULT_CCS = ("8.0", "8.6", "8.9", "12.0")


def _as_shape(value: Any, name: str) -> Shape:
    try:
        dims = tuple(int(d) for d in value)
    except (TypeError, ValueError):
        raise ScasegError(f"{name} must be four integers (B, 3, H, W), got {value!r}") from None
    if len(dims) != 4 or any(d < 1 for d in dims):
        raise ScasegError(f"{name} must be four positive integers (B, 3, H, W), got {value!r}")
    return (dims[0], dims[1], dims[2], dims[3])


def check_profile(min_shape: Any, opt_shape: Any, max_shape: Any) -> Optional[tuple[Shape, Shape, Shape]]:
    """Validate a min/opt/max profile: all three or none, four positive ints each, min <= opt <= max."""
    given = [s is not None for s in (min_shape, opt_shape, max_shape)]
    if not any(given):
        return None
    if not all(given):
        raise ScasegError("give all three of min_shape, opt_shape and max_shape, or none of them")
    lo, opt, hi = (_as_shape(s, n) for s, n in ((min_shape, "min_shape"), (opt_shape, "opt_shape"),
                                                (max_shape, "max_shape")))
    if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise ScasegError(f"the profile must satisfy min <= opt <= max on every axis, got {lo}, {opt}, {hi}")
    return lo, opt, hi


def check_options(precision: str, workspace_gib: float, dla_core: Optional[int]) -> None:
    """One sentence for an option no TensorRT could honour."""
    check_precision(precision, "engine precision")
    if not workspace_gib > 0:
        raise ScasegError(f"the workspace must be a positive number of GiB, got {workspace_gib}")
    if dla_core is not None:
        if int(dla_core) < 0:
            raise ScasegError(f"the DLA core index must be 0 or more, got {dla_core}")
        if precision == "fp32":
            raise ScasegError("DLA runs only fp16 or int8 layers: pass --precision fp16 or int8 with --dla-core")


def check_flavor_options(trt: TensorRT, compute_capabilities: Optional[Sequence[str]],
                         dla_core: Optional[int]) -> Optional[list[str]]:
    """Options that only one flavor has; returns the compute capabilities to build for (TensorRT-RTX) or None."""
    if trt.flavor == "standard":
        if compute_capabilities:
            raise ScasegError(f"--compute-capability is for TensorRT-RTX builds; {trt.label} builds for the GPU it "
                              "runs on (pass --tensorrt rtx to build for other GPUs)")
        return None
    if dla_core is not None:
        raise ScasegError(f"{trt.label} has no DLA support: build DLA engines on the Jetson with standard TensorRT")
    known = list(rtx_capabilities(trt.module)) if trt.module is not None else list(RTX_DEFAULT_CCS)
    return check_compute_capabilities(compute_capabilities or RTX_DEFAULT_CCS, known, trt.label)


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


def resolve_profile(onnx_shape: Sequence[int], info: ModelInfo,
                    profile: Optional[tuple[Shape, Shape, Shape]]) -> Optional[tuple[Shape, Shape, Shape]]:
    """The optimisation profile for the network input: None for a static input, else min/opt/max.

    ``onnx_shape`` uses -1 for dynamic axes. Without a user profile, a dynamic input is built for exactly the
    size and batch the metadata names (the shortest command works; pass a profile for a range).
    """
    dims = [int(d) for d in onnx_shape]
    if len(dims) != 4:
        raise ScasegError(f"the ONNX input has shape {tuple(dims)}; a SCASeg model takes (B, 3, H, W) "
                          "(raw frames: (B, H, W, 3))")
    if -1 not in dims:
        if profile is not None and any(tuple(dims) != s for s in profile):
            raise ScasegError(f"this ONNX has the static input shape {tuple(dims)}, so the engine cannot take the "
                              f"profile {profile[0]}..{profile[2]}: re-export with --dynamic to build for a range")
        return None
    if profile is not None:
        for shape in profile:
            for axis, (want, got) in enumerate(zip(dims, shape)):
                if want != -1 and want != got:
                    raise ScasegError(f"axis {axis} of the ONNX input is fixed at {want}, but the profile asks "
                                      f"for {got}")
        return profile
    size = info.input_size
    h_axis, c_axis = (1, 3) if info.layout == "NHWC" else (2, 1)  # a raw-frame graph takes (B, H, W, 3) uint8
    fill = {0: int(info.batch), c_axis: 3}
    if size is not None:
        fill.update({h_axis: int(size[0]), h_axis + 1: int(size[1])})
    sized = [d if d != -1 else fill.get(axis, -1) for axis, d in enumerate(dims)]
    if -1 in sized:
        raise ScasegError("the ONNX input has dynamic axes the metadata does not size: pass min_shape, opt_shape "
                          "and max_shape to build_engine")
    static = (sized[0], sized[1], sized[2], sized[3])
    return static, static, static
