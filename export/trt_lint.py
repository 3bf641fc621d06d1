"""TensorRT compatibility check of an ONNX graph: TensorRT's own ONNX parser where one imports, else static tables.

With ``tensorrt`` or ``tensorrt_rtx`` importable, :func:`lint` parses the graph with that TensorRT's ONNX parser (no
GPU needed) and reports the parser's own errors. Only where no TensorRT exists does it fall back to the hand-typed
tables below, and the report says which was used.

The fallback is a static check against onnx-tensorrt's operator support documentation (docs/operators.md), per
TensorRT generation. Tables transcribed from these versions of that file:
- "8.5":  the TensorRT 8.5 release (header: "TensorRT 8.5 supports operators up to Opset 17"). JetPack 5.x.
- "10.x": the TensorRT 10.15 table (opset 9..24) minus the ops its changelog adds after 10.3 (Attention: 10.14;
          RotaryEmbedding, RMSNormalization, TensorScatter: 10.15), with the opset range of 10.0 (9..20), so the
          check holds for every 10.x from JetPack 6's 10.3 on.
- "11.x": the 10.15 table plus Swish (11.0 release notes) and DFT (11.2), opset 9..24 (11.5 adds 25).
Restrictions checked beyond op and dtype: inputs that must be build-time constants, Resize modes, local functions.
A clean table report means "nothing the docs rule out", not "TensorRT parses it".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import onnx
from onnx import TensorProto, helper

from scaseg.export.sca import SCA_DOMAIN, SCA_OP

TARGETS = ("8.5", "10.x", "11.x")
OPSET_RANGE = {"8.5": (1, 17), "10.x": (9, 20), "11.x": (9, 24)}

# Type letters: F fp32, H fp16, B bf16, I int32, L int64, Q int8, O bool, U uint8, 8 fp8, 4 fp4, N int4.
_TRT85 = """
Abs FHI; Acos FH; Acosh FH; Add FHI; And O; ArgMax FH; ArgMin FH; Asin FH; Asinh FH; Atan FH; Atanh FH;
AveragePool FHQI; BatchNormalization FH; Cast FHIQO; Ceil FH; Celu FH; Clip FHQ; Concat FHIQO; Constant FHIQO;
ConstantOfShape F; Conv FHQ; ConvTranspose FHQ; Cos FH; Cosh FH; CumSum FH; DepthToSpace FHI; DequantizeLinear Q;
Div FHI; Dropout FH; Einsum FH; Elu FHQ; Equal FHI; Erf FH; Exp FH; Expand FHIO; EyeLike FHIO; Flatten FHIO;
Floor FH; Gather FHQIO; GatherElements FHQIO; GatherND FHQIO; Gemm FHQ; GlobalAveragePool FHQ; GlobalLpPool FHQ;
GlobalMaxPool FHQ; Greater FHI; GreaterOrEqual FHI; GridSample FH; GRU FH; HardSwish FHQ; HardSigmoid FHQ;
Identity FHIQO; If FHIO; ImageScaler FH; InstanceNormalization FH; IsNaN FHI; LeakyRelu FHQ; Less FHI;
LessOrEqual FHI; Log FH; LogSoftmax FH; Loop FHIO; LRN FH; LSTM FH; LpNormalization FH; LpPool FHQ; MatMul FH;
Max FHI; MaxPool FHQ; Mean FHI; MeanVarianceNormalization FH; Min FHI; Mod FHI; Mul FHI; Neg FHI;
NonMaxSuppression FH; NonZero FH; Not O; OneHot FHIO; Or O; Pad FHQI; ParametricSoftplus FHQ; Pow FH; PRelu FHQ;
QuantizeLinear FH; RandomNormal FH; RandomNormalLike FH; RandomUniform FH; RandomUniformLike FH; Range FHI;
Reciprocal FH; ReduceL1 FH; ReduceL2 FH; ReduceLogSum FH; ReduceLogSumExp FH; ReduceMax FH; ReduceMean FH;
ReduceMin FH; ReduceProd FH; ReduceSum FH; ReduceSumSquare FH; Relu FHQ; Reshape FHIQO; Resize FH;
ReverseSequence FH; RNN FH; RoiAlign FH; Round FHQ; ScaledTanh FHQ; Scan FH; Scatter FHQI; ScatterElements FHQI;
ScatterND FHQI; Selu FHQ; Shape FHIQO; Shrink FHI; Sigmoid FHQ; Sign FHQI; Sin FH; Sinh FH; Size FHIQO;
Slice FHIQO; Softmax FH; Softplus FHQ; Softsign FHQ; SpaceToDepth FHI; Split FHIO; Sqrt FH; Squeeze FHIQO;
Sub FHI; Sum FHI; Tan FH; Tanh FHQ; ThresholdedRelu FHQ; Tile FHIO; TopK FH; Transpose FHIQO; Trilu FHIQO;
Unsqueeze FHIQO; Upsample FH; Where FHIO; Xor O
"""
_TRT10_15 = """
Abs FHBIL; Acos FHB; Acosh FHB; Add FHBIL; And O; ArgMax FHBIL; ArgMin FHBIL; Asin FHB; Asinh FHB; Atan FHB;
Atanh FHB; Attention FHBQ8; AveragePool FHB; BatchNormalization FHB; BlackmanWindow FH; Cast FHBILUO;
CastLike FHBILUO; Ceil FHB; Celu FHB; Clip FHB; Concat FHBILO; Constant FHB84NILO; ConstantOfShape FHB84NILO;
Conv FHB; ConvTranspose FHB; Cos FHB; Cosh FHB; CumSum FHB; DeformConv FH; DepthToSpace FHBIL;
DequantizeLinear Q84N; Div FHBIL; Dropout FHB; Einsum FHB; Elu FHB; Equal FHBIL; Erf FHB; Exp FHB; Expand FHBILO;
EyeLike FHBILO; Flatten FHBILO; Floor FHB; Gather FHBILO; GatherElements FHBILO; GatherND FHBILO; Gelu FHBQIL;
Gemm FHB; GlobalAveragePool FHB; GlobalLpPool FHB; GlobalMaxPool FHB; Greater FHBIL; GreaterOrEqual FHBIL;
GridSample FH; GroupNormalization FHB; GRU FHB; HammingWindow FH; HannWindow FH; HardSigmoid FHB; HardSwish FHB;
Hardmax FHB; Identity FHBILO; If FHBILO; ImageScaler FHB; InstanceNormalization FHB; IsInf FHB; IsNaN FHBIL;
LayerNormalization FHB; LeakyRelu FHB; Less FHBIL; LessOrEqual FHBIL; Log FHB; LogSoftmax FHB; Loop FHBILO; LRN FHB;
LSTM FHB; LpNormalization FHB; LpPool FHB; MatMul FHB; Max FHBIL; MaxPool FHB; Mean FHB8IL;
MeanVarianceNormalization FHB; Min FHBIL; Mish FH; Mod FHBIL; Mul FHBIL; Neg FHBIL; NonMaxSuppression FH;
NonZero FH; Not O; OneHot FHBILO; Or O; Pad FHBIL; ParametricSoftplus FHB; Pow FHBIL; PRelu FHB; QuantizeLinear FHB;
RandomNormal FHB; RandomNormalLike FHB; RandomUniform FHB; RandomUniformLike FHB; Range FHBIL; Reciprocal FHB;
ReduceL1 FHBIL; ReduceL2 FHBIL; ReduceLogSum FHBIL; ReduceLogSumExp FHBIL; ReduceMax FHBIL; ReduceMean FHBIL;
ReduceMin FHBIL; ReduceProd FHBIL; ReduceSum FHBIL; ReduceSumSquare FHBIL; Relu FHBIL; Reshape FHBILO; Resize FHB;
ReverseSequence FHBILO; RMSNormalization FHB; RNN FHB; RoiAlign FH; RotaryEmbedding FHB; Round FHB; STFT F;
ScaledTanh FHB; Scan FHB; Scatter FHBIL; ScatterElements FHBIL; ScatterND FHBIL; Selu FHB; Shape FHBILO;
Shrink FHBIL; Sigmoid FHB; Sign FHBIL; Sin FHB; Sinh FHB; Size FHBILO; Slice FHBILO; Softmax FHB; Softplus FHB;
Softsign FHB; SpaceToDepth FHBIL; Split FHBILO; Sqrt FHB; Squeeze FHBILO; Sub FHBIL; Sum FHBIL; Tan FHB; Tanh FHB;
TensorScatter FHBI; ThresholdedRelu FHB; Tile FHBILO; TopK FHBIL; Transpose FHBILO; Trilu FHBILO; Unsqueeze FHBILO;
Upsample FHB; Where FHBILO; Xor O
"""
_AFTER_10_3 = ("Attention", "RotaryEmbedding", "RMSNormalization", "TensorScatter")
_ADDED_11 = "Swish FHB; DFT F"

# Inputs that must be build-time constants (initializers or Constant outputs): op -> input indices, per target.
_CONST_INPUTS = {
    "8.5": {"Slice": (3,), "Squeeze": (1,), "Unsqueeze": (1,), "TopK": (1,), "CumSum": (1,)},
    "10.x": {"CumSum": (1,), **{op: (1,) for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
                                                   "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
                                                   "ReduceSumSquare")}},
}
_CONST_INPUTS["11.x"] = _CONST_INPUTS["10.x"]
_RESIZE_COORD = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_RESIZE_MODES = {"nearest", "linear"}

_LETTER = {"F": "FP32", "H": "FP16", "B": "BF16", "I": "INT32", "L": "INT64", "Q": "INT8", "O": "BOOL", "U": "UINT8",
           "8": "FP8", "4": "FP4", "N": "INT4"}
_ONNX_TYPE = {TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16",
              TensorProto.INT32: "INT32", TensorProto.INT64: "INT64", TensorProto.INT8: "INT8",
              TensorProto.UINT8: "UINT8", TensorProto.BOOL: "BOOL", TensorProto.DOUBLE: "DOUBLE"}


def _parse(table: str) -> dict[str, frozenset[str]]:
    out = {}
    for entry in table.replace("\n", " ").split(";"):
        if entry.strip():
            op, letters = entry.split()
            out[op] = frozenset(_LETTER[c] for c in letters)
    return out


_TABLE_10_15 = _parse(_TRT10_15)
SUPPORT: dict[str, dict[str, frozenset[str]]] = {
    "8.5": _parse(_TRT85),
    "10.x": {op: t for op, t in _TABLE_10_15.items() if op not in _AFTER_10_3},
    "11.x": {**_TABLE_10_15, **_parse(_ADDED_11)},
}


@dataclass(frozen=True)
class Finding:
    """One thing a TensorRT generation's parser would refuse."""

    target: str
    node: str
    op: str
    problem: str

    def __str__(self) -> str:
        return f"TensorRT {self.target}: {self.op} ({self.node}): {self.problem}"


@dataclass
class LintReport:
    """Findings per target; ``notes`` are facts worth knowing that are not failures.

    ``source`` is "parser" (``parser`` names the TensorRT whose ONNX parser was run; findings are its errors) or
    "tables" (the hand-typed fallback, findings per generation in TARGETS).
    """

    opset: int
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str = "tables"
    parser: str = ""

    def clean(self, target: Optional[str] = None) -> bool:
        return not [f for f in self.findings if target is None or f.target == target]

    def summary(self, limit: int = 8) -> str:
        if self.source == "parser":
            head = f"{self.parser} ONNX parser (the real one)"
            if not self.findings:
                return f"{head}: parsed cleanly (opset {self.opset})"
            lines = [f"{head}: {len(self.findings)} error(s)"] + [f"  - {f.problem}" for f in self.findings[:limit]]
            if len(self.findings) > limit:
                lines.append(f"  - ... and {len(self.findings) - limit} more")
            return "\n".join(lines)
        lines = ["TensorRT lint from hand-typed operator tables (no TensorRT importable here to parse with):"]
        for target in TARGETS:
            found = [f for f in self.findings if f.target == target]
            if not found:
                lines.append(f"TensorRT {target}: clean (opset {self.opset})")
                continue
            lines.append(f"TensorRT {target}: {len(found)} problem(s)")
            lines += [f"  - {f.op} ({f.node}): {f.problem}" for f in found[:limit]]
            if len(found) > limit:
                lines.append(f"  - ... and {len(found) - limit} more")
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def _normalise(dtype: str, target: str) -> str:
    # 8.5's docs: INT64 is cast down to INT32 and DOUBLE to FLOAT; later versions only cast DOUBLE.
    if dtype == "DOUBLE":
        return "FP32"
    if target == "8.5" and dtype == "INT64":
        return "INT32"
    return dtype


def _types(model: onnx.ModelProto) -> dict[str, str]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = _ONNX_TYPE.get(vi.type.tensor_type.elem_type, TensorProto.DataType.Name(vi.type.tensor_type.elem_type))
    for init in g.initializer:
        types[init.name] = _ONNX_TYPE.get(init.data_type, TensorProto.DataType.Name(init.data_type))
    for node in g.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = _ONNX_TYPE.get(a.t.data_type, TensorProto.DataType.Name(a.t.data_type))
    return types


def _checked_tensors(node: onnx.NodeProto) -> list[str]:
    """The tensors whose type is the op's T in the support table."""
    if node.op_type in ("Constant", "ConstantOfShape", "RandomNormal", "RandomUniform"):
        return list(node.output[:1])
    if node.op_type in ("Cast", "CastLike"):
        return [node.input[0], node.output[0]]
    if node.op_type == "Where":
        return [t for t in node.input[1:2]]
    return [t for t in node.input[:1] if t]


def _lint_nodes(nodes: Iterable[onnx.NodeProto], types: dict[str, str], constants: set[str], where: str,
                report: LintReport, functions: set[tuple[str, str]]) -> None:
    for node in nodes:
        name = node.name or (node.output[0] if node.output else node.op_type)
        if node.domain not in ("", "ai.onnx"):
            op = f"{node.domain}:{node.op_type}"
            if (node.domain, node.op_type) in functions:
                report.findings.append(Finding("8.5", name, op, "ONNX local function: TensorRT 8.5's parser documents no "
                                               "local-function import (the Python plugin needs >= 10.7); use --sca-op decomposed"))
            else:
                report.findings += [Finding(t, name, op, "custom-domain op with no function definition in the model") for t in TARGETS]
            continue
        for target in TARGETS:
            supported = SUPPORT[target].get(node.op_type)
            if supported is None:
                report.findings.append(Finding(target, name, node.op_type, f"not in TensorRT {target}'s ONNX operator table{where}"))
                continue
            for tensor in _checked_tensors(node):
                dtype = types.get(tensor)
                if dtype is not None and _normalise(dtype, target) not in supported:
                    report.findings.append(Finding(target, name, node.op_type, f"{dtype} input/output is not supported{where} "
                                                   f"(supported: {', '.join(sorted(supported))})"))
                    break
            for index in _CONST_INPUTS[target].get(node.op_type, ()):
                if index < len(node.input) and node.input[index] and node.input[index] not in constants:
                    report.findings.append(Finding(target, name, node.op_type, f"input {index} must be a build-time constant{where}"))
            if node.op_type == "Resize":
                attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                coord = attrs.get("coordinate_transformation_mode", b"half_pixel")
                mode = attrs.get("mode", b"nearest")
                coord, mode = (v.decode() if isinstance(v, bytes) else v for v in (coord, mode))
                if coord not in _RESIZE_COORD or mode not in _RESIZE_MODES or attrs.get("antialias", 0):
                    report.findings.append(Finding(target, name, node.op_type, f"Resize mode {mode}/{coord} is not supported{where}"))


def lint(model: onnx.ModelProto, *, use_parser: bool = True) -> LintReport:
    """Parse ``model`` with the installed TensorRT's ONNX parser; without one, check it against the 8.5/10.x/11.x tables."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if use_parser:
        from scaseg.export.engine import builder
        from scaseg.runtime.tensorrt import installed

        trt = installed.find_tensorrt()
        if trt is not None:
            errors = builder.parse_errors(model, trt)
            return LintReport(opset=opset, source="parser", parser=trt.label,
                              findings=[Finding(trt.label, "", "parser", err) for err in errors])
    return lint_tables(model)


def lint_tables(model: onnx.ModelProto) -> LintReport:
    """The fallback: check ``model`` against TensorRT 8.5, 10.x and 11.x tables; local function bodies too."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    report = LintReport(opset=opset)
    for target in TARGETS:
        lo, hi = OPSET_RANGE[target]
        if not lo <= opset <= hi:
            report.findings.append(Finding(target, "model", "opset", f"opset {opset} is outside TensorRT {target}'s range {lo}..{hi}"))
    g = model.graph
    constants = {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    types = _types(model)
    functions = {(f.domain, f.name) for f in model.functions}
    _lint_nodes(g.node, types, constants, "", report, functions)
    for f in model.functions:
        body_consts = {o for n in f.node if n.op_type == "Constant" for o in n.output}
        _lint_nodes(f.node, {}, body_consts, f" (inside local function {f.domain}:{f.name})", report, set())
    if (SCA_DOMAIN, SCA_OP) in functions:
        report.notes.append(f"{SCA_DOMAIN}:{SCA_OP} is an ONNX local function: TensorRT 10.x/11.x inline it, and from "
                            "10.7 a registered plugin of that name (scaseg.runtime.tensorrt.plugin) replaces it")
    return report
