"""Why scaseg-export uses the TorchScript exporter: it side by side with torch's dynamo exporter on the same model.

Both export the same randomly initialised model (weights change nothing here) at the same size and opset, in
alternating rounds; reported per exporter: median export time, node count, op set, the opset actually written,
the TensorRT lint of the raw graph and of the graph after scaseg's onnxsim + LayerNormalization rewrite, and the max
|logit difference| to PyTorch on ONNX Runtime. "torchscript" is torch.onnx.export(dynamo=False), the call
scaseg.export.onnx_export makes; "dynamo" is torch.onnx.export(dynamo=True) (torch.export + onnxscript).

    python benchmarks/bench_exporters.py                      # scaseg-t, 64x128, opset 17, 2 rounds, 1 torch thread
    python benchmarks/bench_exporters.py --variant scaseg-b0 --imgsz 256 --rounds 1
"""
from __future__ import annotations

import argparse
import datetime
import io
import logging
import os
import statistics
import sys
import time
import warnings
from typing import Any

import numpy as np
from tqdm import tqdm

from scaseg.cli import SIZE_METAVAR, size_type


def export(model: Any, x: Any, dynamo: bool, opset: int) -> Any:
    import onnx
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, input_names=["images"],
                                        output_names=["output"], verbose=False)
            return program.model_proto  # type: ignore[union-attr]
        buffer = io.BytesIO()
        torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=opset, input_names=["images"],  # type: ignore[arg-type]
                          output_names=["output"], do_constant_folding=True)
        return onnx.load_from_string(buffer.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--variant", default="scaseg-t")
    ap.add_argument("--imgsz", type=size_type, default=(64, 128), metavar=SIZE_METAVAR)
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads while tracing")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # the dynamo exporter logs its opset conversion and skipped torchvision ops

    import torch

    import scaseg
    from scaseg.export.simplify import decompose_layer_norm, simplify
    from scaseg.export.trt_lint import lint_tables as lint  # per-generation verdicts from the documented tables
    from scaseg.runtime.backends.onnxruntime import make_session

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = scaseg.build(args.variant, 19).eval()
    x = torch.randn(1, 3, *args.imgsz, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x).numpy()
    load0 = os.getloadavg()[0]
    times: dict[str, list[float]] = {"torchscript": [], "dynamo": []}
    protos: dict[str, Any] = {}
    errors: dict[str, str] = {}
    with tqdm(total=2 * args.rounds, desc="export", unit="export", file=sys.stderr) as bar:
        for r in range(args.rounds):
            for name in (("torchscript", "dynamo") if r % 2 == 0 else ("dynamo", "torchscript")):
                if name in errors:
                    bar.update()
                    continue
                t = time.perf_counter()
                try:
                    protos[name] = export(model, x, name == "dynamo", args.opset)
                    times[name].append(time.perf_counter() - t)
                except Exception as exc:  # report it: a failing exporter is a finding, not a crash
                    errors[name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"
                bar.update()
    load1 = os.getloadavg()[0]
    print(f"{args.variant} {args.imgsz[0]}x{args.imgsz[1]}, requested opset {args.opset}, torch {torch.__version__}, "
          f"{args.threads} torch thread(s), {args.rounds} alternating round(s); load average {load0:.1f} -> {load1:.1f}; "
          f"{datetime.datetime.now().isoformat(timespec='minutes')}")
    for name in times:
        if name in errors:
            print(f"{name}: failed: {errors[name]}")
            continue
        proto = protos[name]
        opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        ops = sorted({n.op_type for n in proto.graph.node})
        report = lint(proto)
        sess = make_session(proto.SerializeToString())
        diff = float(np.abs(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0] - ref).max())
        lint_text = "; ".join(f"TensorRT {t}: " + ("clean" if report.clean(t) else
                              ", ".join(sorted({f.op for f in report.findings if f.target == t}))) for t in ("8.5", "10.x", "11.x"))
        print(f"{name}: median {statistics.median(times[name]):.1f} s (runs: {', '.join(f'{t:.1f}' for t in times[name])}), "
              f"opset written {opset}, {len(proto.graph.node)} nodes, {len(proto.functions)} local functions, "
              f"max |diff| vs PyTorch {diff:.2g}")
        print(f"  ops: {' '.join(ops)}")
        print(f"  raw-graph lint: {lint_text}")
        done = simplify(proto)
        decompose_layer_norm(done)
        after = lint(done)
        print(f"  after scaseg's onnxsim + LayerNorm rewrite: {len(done.graph.node)} nodes, TensorRT lint "
              + ("clean for 8.5, 10.x and 11.x" if after.clean() else f"{len(after.findings)} finding(s)"))
    if not errors:
        ratio = statistics.median(times["dynamo"]) / statistics.median(times["torchscript"])
        print(f"dynamo / torchscript export time: x{ratio:.2f}")


if __name__ == "__main__":
    main()
