"""Can GELU stay in int8 on ONNX Runtime CPU? The float round trip against the sigmoid form and a 256-entry table.

Each MLP's GELU sits between two int8 convolutions. ONNX Runtime has no int8 GELU kernel, so the plain Q/DQ form
is DequantizeLinear -> Gelu -> QuantizeLinear (a float tensor). Two int8 forms: ``x * sigmoid(1.702 x)`` written
as Q/DQ around Sigmoid and Mul, which ONNX Runtime fuses into QLinearSigmoid (its own 256-entry table) and
QLinearMul: what the ``cpu`` placement writes (calibration/qdq_graph_rewrite.py, int8_gelu); and a table of the exact GELU's
256 levels read with Gather (Cast to int32/int64 indices first). This times the forms on one tensor, side by side
in one run (median of --runs, interleaved, after 3 warm-up runs), and prints how far each is from the float one.

    python benchmarks/bench_int8_gelu.py [--shape 1 256 128 128] [--threads 2 1] [--runs 15]

The default shape is scaseg-t's first-stage MLP hidden tensor at 512x512 (32 channels x mlp ratio 8, at 1/4 size).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from perf_machine import machine_line
from scaseg.calibration.qdq_graph_rewrite import SIGMOID_GELU
from scaseg.runtime.backends.onnxruntime import make_session

X_SCALE, X_ZERO, Y_SCALE, Y_ZERO = 0.05, 128, 0.03, 10  # a GELU input range of about -6.4..6.4


def _table() -> np.ndarray:
    """GELU of every uint8 input level, requantized: exactly what DQ -> Gelu -> Q computes level by level."""
    x = (np.arange(256) - X_ZERO) * X_SCALE
    gelu = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x])
    return np.clip(np.round(gelu / Y_SCALE) + Y_ZERO, 0, 255).astype(np.uint8)


def model(form: str, shape: list[int]) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, shape)
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, shape)
    consts = [numpy_helper.from_array(np.array(X_SCALE, np.float32), "xs"),
              numpy_helper.from_array(np.array(X_ZERO, np.uint8), "xz"),
              numpy_helper.from_array(np.array(Y_SCALE, np.float32), "ys"),
              numpy_helper.from_array(np.array(Y_ZERO, np.uint8), "yz")]
    if form == "float":
        nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["f"]),
                 helper.make_node("Gelu", ["f"], ["g"], domain="com.microsoft"),
                 helper.make_node("QuantizeLinear", ["g", "ys", "yz"], ["y"])]
    elif form == "sigmoid":
        consts += [numpy_helper.from_array(np.array(X_SCALE * SIGMOID_GELU, np.float32), "xs2"),
                   numpy_helper.from_array(np.array(1 / 255, np.float32), "ss"),
                   numpy_helper.from_array(np.array(0, np.uint8), "sz")]
        nodes = [helper.make_node("DequantizeLinear", ["x", "xs2", "xz"], ["f2"]),
                 helper.make_node("Sigmoid", ["f2"], ["s"]),
                 helper.make_node("QuantizeLinear", ["s", "ss", "sz"], ["sq"]),
                 helper.make_node("DequantizeLinear", ["sq", "ss", "sz"], ["sd"]),
                 helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["f"]),
                 helper.make_node("Mul", ["f", "sd"], ["g"]),
                 helper.make_node("QuantizeLinear", ["g", "ys", "yz"], ["y"])]
    else:
        index = {"table, int32": TensorProto.INT32, "table, int64": TensorProto.INT64}[form]
        consts = [numpy_helper.from_array(_table(), "table")]
        nodes = [helper.make_node("Cast", ["x"], ["i"], to=index),
                 helper.make_node("Gather", ["table", "i"], ["y"], axis=0)]
    graph = helper.make_graph(nodes, "gelu", [x], [y], consts)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    proto.ir_version = 8
    return proto.SerializeToString()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=4, default=[1, 256, 128, 128], metavar=("N", "C", "H", "W"))
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args(argv)
    print(f"# {machine_line()}; tensor {'x'.join(map(str, args.shape))} uint8")
    x = np.random.default_rng(0).integers(0, 256, args.shape, dtype=np.uint8)
    forms = ("float", "sigmoid", "table, int32", "table, int64")
    for threads in args.threads:
        sessions = {f: make_session(model(f, args.shape), threads=threads) for f in forms}
        outputs = {f: s.run(None, {"x": x})[0] for f, s in sessions.items()}
        for s in sessions.values():
            for _ in range(2):
                s.run(None, {"x": x})
        times: dict[str, list[float]] = {f: [] for f in forms}
        for _ in range(args.runs):  # interleaved: the forms see the same machine state
            for f, s in sessions.items():
                t = time.perf_counter()
                s.run(None, {"x": x})
                times[f].append(time.perf_counter() - t)
        base = statistics.median(times["float"])
        print(f"\n{threads} thread(s), median of {args.runs}")
        print(f"{'form':<48}{'ms':>8}{'x float':>9}{'max level diff':>16}{'mean':>7}")
        for f in forms:
            ms = statistics.median(times[f])
            diff = np.abs(outputs[f].astype(int) - outputs["float"].astype(int))
            name = {"float": "DQ -> Gelu -> Q (float)", "sigmoid": "QLinearSigmoid + QLinearMul (x sigmoid(1.702x))"
                    }.get(f, f"Cast -> Gather ({f})")
            print(f"{name:<48}{1000 * ms:>8.2f}{base / ms:>9.2f}{int(diff.max()):>16}{diff.mean():>7.3f}")


if __name__ == "__main__":
    main()
