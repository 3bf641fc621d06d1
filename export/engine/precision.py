"""An engine's precision on each TensorRT generation: network typing, builder flags, network creation flags.

8.5 and 10.x take fp16/int8 through builder flags on a weakly typed network (10.x also builds strongly typed from an
fp16 ONNX); 11.x and TensorRT-RTX build strongly typed networks only, so the precision must already be in the ONNX.
Pure rules (no TensorRT call): :func:`precision_plan` refuses, in one sentence, what a generation cannot build.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from scaseg.errors import ScasegError
# The engine precisions are the metadata's (the ONNX and engine say theirs in the same words).
from scaseg.metadata import PRECISIONS, check_precision  # noqa: F401  (PRECISIONS: the words its plans speak)
from scaseg.runtime.tensorrt.installed import TensorRT


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
    check_precision(precision, "engine precision")
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


def needs_explicit_batch_flag(trt: TensorRT) -> bool:
    """TensorRT 8.x defaults to implicit batch; 10 ignores the flag, 11 and TensorRT-RTX removed it."""
    return trt.generation == "8.5"


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
