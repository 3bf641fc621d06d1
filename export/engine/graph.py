"""The ONNX side of an engine build: read the file and its metadata, tell its precision, prepare it for the parser.

Preparing means tagging the strip-attention nodes for the Python plugin (standard TensorRT >= 10.7) or inlining
the ONNX local functions; ``requested_precisions`` says which data type each conv/GEMM node asks for.
``onnx`` is imported inside the functions, never at import time.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from scaseg.errors import ScasegError
from scaseg.metadata import SCA_DOMAIN, SCA_OP, ModelInfo, read_onnx_model
from scaseg.export.engine.precision import onnx_precision
from scaseg.runtime.tensorrt.installed import TensorRT, has_python_plugins

if TYPE_CHECKING:  # pragma: no cover
    import onnx

#: ONNX ops that become the convolution / matrix-multiply layers counted in ``layers.layer_precisions``.
MATH_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def load_onnx(onnx_path: str) -> tuple[onnx.ModelProto, ModelInfo]:
    """Read the ONNX file and its scaseg metadata (metadata.read_onnx_model: one sentence for a bad file)."""
    return read_onnx_model(onnx_path)


def graph_precision(model: onnx.ModelProto) -> str:
    """What the graph carries: "int8" (Q/DQ nodes), "fp16" (float16 tensors) or "fp32"."""
    import onnx

    graph = model.graph
    ops = [n.op_type for n in graph.node] + [n.op_type for f in model.functions for n in f.node]
    fp16 = onnx.TensorProto.FLOAT16
    half = any(t.data_type == fp16 for t in graph.initializer) or any(
        v.type.tensor_type.elem_type == fp16 for v in list(graph.value_info) + list(graph.input) + list(graph.output)
    ) or any(n.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in n.attribute) for n in graph.node)
    return onnx_precision(ops, half)


def onnx_runtime_only(model: onnx.ModelProto) -> list[str]:
    """What in this graph only ONNX Runtime runs (the int8 ``cpu`` placement writes all three); empty when none.

    TensorRT's parser takes symmetric int8 Q/DQ with float biases and standard ops only: it refuses int32 bias
    DequantizeLinear, uint8 Q/DQ and ``com.microsoft`` ops.
    """
    import onnx

    found = []
    custom = sorted({f"{n.domain}.{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx", SCA_DOMAIN)})
    if custom:
        found.append(", ".join(custom))
    dtypes = {t.name: t.data_type for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if any(n.op_type == "DequantizeLinear" and dtypes.get(n.input[0]) == onnx.TensorProto.INT32 for n in qdq):
        found.append("int32 biases")
    if any(len(n.input) > 2 and dtypes.get(n.input[2]) == onnx.TensorProto.UINT8 for n in qdq):
        found.append("uint8 activations")
    return found


def strip_attention_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The scaseg::StripCrossAttention call nodes of the main graph."""
    return [n for n in model.graph.node if n.domain == SCA_DOMAIN and n.op_type == SCA_OP]


def tag_for_plugin(model: onnx.ModelProto) -> int:
    """Mark strip-attention nodes so the ONNX parser imports them as the Python plugin; returns how many.

    The parser (TensorRT >= 10.7) looks a node up by op_type and the ``plugin_namespace``/``plugin_version``
    attributes; with ``plugin_namespace`` set it prefers a registered plugin over the node's local function.
    """
    import onnx

    nodes = strip_attention_nodes(model)
    for node in nodes:
        present = {a.name for a in node.attribute}
        if "plugin_namespace" not in present:
            node.attribute.append(onnx.helper.make_attribute("plugin_namespace", SCA_DOMAIN))
        if "plugin_version" not in present:
            node.attribute.append(onnx.helper.make_attribute("plugin_version", "1"))
    return len(nodes)


def inline_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every local-function call by its body (TensorRT 8.5's parser has no local-function support)."""
    import onnx

    if not model.functions:
        return model
    try:
        from onnx import inliner
    except ImportError:
        raise ScasegError(f"inlining the strip-attention function needs onnx >= 1.16 (this is {onnx.__version__}): "
                          "upgrade onnx, or export with --sca-op decomposed") from None
    return inliner.inline_local_functions(model)


def input_shape(model: onnx.ModelProto) -> tuple[str, tuple[int, ...]]:
    """Name and shape (-1 for symbolic axes) of the single graph input that is not an initializer."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in inits]
    if len(inputs) != 1:
        raise ScasegError(f"a SCASeg ONNX has one input, this one has {[v.name for v in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    return inputs[0].name, tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in dims)


def prepare_for_parser(model: onnx.ModelProto, trt: TensorRT) -> tuple[onnx.ModelProto, bool]:
    """Tag strip-attention nodes for the Python plugin (standard TensorRT >= 10.7, plugin registrable) or inline them.

    Returns the model the parser should see and whether the plugin is used.
    """
    if strip_attention_nodes(model) and has_python_plugins(trt):
        from scaseg.runtime.tensorrt import plugin

        try:
            plugin.register_strip_attention()
            return model, tag_for_plugin(model) > 0
        except ScasegError as exc:  # e.g. no CuPy: the function body still builds, just without the plugin
            print(f"note: building without the strip-attention plugin ({exc}); its ONNX function is inlined",
                  file=sys.stderr)
    return inline_functions(model), False


def requested_precisions(model: onnx.ModelProto) -> dict[str, str]:
    """ONNX conv/GEMM node name -> the data type the file asks its input to have ("int8", "fp16" or "fp32").

    int8: the data input comes from a DequantizeLinear (a Q/DQ pair in front); fp16: the input tensor is float16
    (after ONNX shape inference); otherwise fp32. Local functions must be inlined first.
    """
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a graph shape inference cannot follow: types stay unknown, i.e. fp32 unless Q/DQ
        inferred = model
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(graph.value_info) + list(graph.input)}
    types.update({t.name: t.data_type for t in graph.initializer})
    dequantized = {out for n in graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    asked = {}
    for node in graph.node:
        if node.op_type not in MATH_OPS or not node.input:
            continue
        name = node.name or node.output[0]
        if node.input[0] in dequantized:
            asked[name] = "int8"
        elif types.get(node.input[0]) == onnx.TensorProto.FLOAT16:
            asked[name] = "fp16"
        else:
            asked[name] = "fp32"
    return asked
