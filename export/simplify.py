"""onnxsim simplification (constant folding, shape-op elimination) that never loses the model or its functions."""
from __future__ import annotations

import onnx

from scaseg.errors import ScasegError


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Simplify with onnxsim; the model's metadata and local functions are carried over.

    onnxsim's own output check is off (check_n=0): the parity step compares the final file with PyTorch instead,
    which is the check that matters.
    """
    try:
        import onnxsim
    except ImportError:
        raise ScasegError("onnxsim is not installed: install the export extra (pip install \".[export]\" in the scaseg checkout) or pass --no-simplify") from None
    functions = list(model.functions)
    try:
        simplified, ok = onnxsim.simplify(model, check_n=0)
    except Exception as exc:  # onnxsim raises bare RuntimeErrors from its C++ core
        raise ScasegError(f"onnxsim could not simplify the exported graph ({str(exc).splitlines()[0][:200]}); retry with --no-simplify") from None
    if not ok:
        raise ScasegError("onnxsim reported a failed simplification; retry with --no-simplify")
    if functions and not simplified.functions:
        simplified.functions.extend(functions)
    return simplified


def decompose_layer_norm(model: onnx.ModelProto) -> int:
    """Rewrite LayerNormalization (last axis) as ReduceMean/Sub/Pow/Add/Sqrt/Div; returns how many were rewritten.

    TensorRT 8.5 (JetPack 5) has no LayerNormalization importer. The square is Pow(x, 2), the form torch wrote for
    opsets below 17: ONNX Runtime's LayerNormFusion matches it and fuses it back at session load (with Mul(x, x) it
    does not; tests/export/test_export.py checks the fusion). Done after onnxsim, which fuses it otherwise.
    """
    from onnx import helper, numpy_helper

    import numpy as np

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    names = {i.name for i in model.graph.initializer}
    nodes: list[onnx.NodeProto] = []
    count = 0
    two = "layer_norm/two"
    while two in names:
        two += "_"
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        used_outputs = [o for o in node.output[1:] if o]
        if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx") or attrs.get("axis", -1) != -1 or used_outputs:
            nodes.append(node)
            continue
        count += 1
        if count == 1:
            model.graph.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), two))
        p = f"{node.name or node.output[0]}/ln{count}"
        eps_name, axes_name = f"{p}/eps", f"{p}/axes"
        while eps_name in names:
            eps_name += "_"
        model.graph.initializer.append(numpy_helper.from_array(np.array(attrs.get("epsilon", 1e-5), np.float32), eps_name))
        x = node.input[0]

        def reduce_mean(src: str, dst: str) -> onnx.NodeProto:
            if opset >= 18:
                return helper.make_node("ReduceMean", [src, axes_name], [dst], keepdims=1)
            return helper.make_node("ReduceMean", [src], [dst], axes=[-1], keepdims=1)

        if opset >= 18:
            model.graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), axes_name))
        nodes += [
            reduce_mean(x, f"{p}/mean"),
            helper.make_node("Sub", [x, f"{p}/mean"], [f"{p}/centred"]),
            helper.make_node("Pow", [f"{p}/centred", two], [f"{p}/square"]),
            reduce_mean(f"{p}/square", f"{p}/var"),
            helper.make_node("Add", [f"{p}/var", eps_name], [f"{p}/var_eps"]),
            helper.make_node("Sqrt", [f"{p}/var_eps"], [f"{p}/std"]),
            helper.make_node("Div", [f"{p}/centred", f"{p}/std"], [f"{p}/normed"]),
        ]
        has_bias = len(node.input) > 2 and node.input[2]
        nodes.append(helper.make_node("Mul", [f"{p}/normed", node.input[1]], [f"{p}/scaled" if has_bias else node.output[0]]))
        if has_bias:
            nodes.append(helper.make_node("Add", [f"{p}/scaled", node.input[2]], [node.output[0]]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count
