"""Raw-frame models (``scaseg-export --input uint8``): bytes moved per frame, and label agreement with the numpy path.

Bytes (arithmetic, not timings): per frame, what crosses host -> device and back.
- float path: float32 NCHW at the network size in; float32 logits (--head logits) or int32 labels (--head labels)
  at the network size out; the host resizes, normalises, transposes, takes the argmax and upsamples the labels.
- in-graph path: the uint8 RGB frame (H, W, 3) in; uint8 labels at the source size out (--head labels).
``transfer_bytes`` is the one formula (benchmarks/bench_pipeline.py may call it).

Agreement: the raw-frame graph on the runtime (Predictor: frames in, labels out) against the numpy path of the same
network: runtime/preprocess.py (OpenCV resize, normalisation) -> the graph's network part with the in-graph
preprocessing and label upsampling cut off (``float_core``) -> argmax and nearest upsampling on the host
(runtime/predictor.py). For fp32 the network part is the float model itself; for int8 it is the same int8 network
(same scales, same layers kept float), so the figure measures only what moved into the graph. The scenes are
scaseg-synth street scenes at the source size; int8 calibrates on other scenes of that size.

    python benchmarks/bench_raw_input.py --bytes-only                      # the bytes table, no model
    python benchmarks/bench_raw_input.py --source-size 1080x1920 --scenes 8 --precisions fp32 int8
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from scaseg.cli import SIZE_METAVAR, size_type

# Ops between a raw-frame graph's ArgMax and its output (export/raw_input.py labels_at).
POST_OPS = ("Cast", "Resize", "Unsqueeze", "Squeeze", "Gather")


def transfer_bytes(source_hw: Sequence[int], network_hw: Sequence[int], num_classes: int) -> dict[str, int]:
    """Bytes host -> device and back for one frame: float path (logits or labels out) and in-graph path."""
    sh, sw = (int(v) for v in source_hw)
    nh, nw = (int(v) for v in network_hw)
    float_in = 3 * nh * nw * 4
    return {
        "float_in": float_in, "float_logits_out": int(num_classes) * nh * nw * 4, "float_labels_out": nh * nw * 4,
        "raw_in": sh * sw * 3, "raw_labels_out": sh * sw * (1 if num_classes <= 256 else 4),
        "raw_logits_out": int(num_classes) * nh * nw * 4,
    }


def bytes_table(source_hw: Sequence[int], network_sizes: Sequence[Sequence[int]], num_classes: int) -> str:
    """The bytes of ``transfer_bytes`` for each network size, as a markdown table (MB = 10^6 bytes)."""
    sh, sw = source_hw
    rows = [f"| network size | float in | float logits out | float labels (int32) out | uint8 frame in "
            f"| uint8 labels out | in: float / uint8 | in+out: float logits / uint8 labels |",
            "|---|---|---|---|---|---|---|---|"]
    for nh, nw in network_sizes:
        b = transfer_bytes((sh, sw), (nh, nw), num_classes)
        mb = {k: f"{v / 1e6:.2f} MB" for k, v in b.items()}
        rows.append(f"| {nh}x{nw} | {mb['float_in']} | {mb['float_logits_out']} | {mb['float_labels_out']} "
                    f"| {mb['raw_in']} | {mb['raw_labels_out']} | {b['float_in'] / b['raw_in']:.2f}x "
                    f"| {(b['float_in'] + b['float_logits_out']) / (b['raw_in'] + b['raw_labels_out']):.1f}x |")
    return "\n".join(rows)


def _producers(graph: Any, start: str, ops: Sequence[str]) -> str:
    """Follow the producers of tensor ``start`` back while they are nodes of ``ops``; the tensor reached."""
    producer = {o: n for n in graph.node for o in n.output}
    current = start
    while True:
        node = producer.get(current)
        if node is None or node.op_type not in ops:
            return current
        current = node.input[0]


def float_core(proto: Any) -> Any:
    """The network part of a raw-frame graph, for the runtime's numpy path: its input is the image resized to the
    network size (float NCHW on the 0..255 scale: the normalisation stays in the graph, where onnxsim folded the
    1/std into the first convolution; the metadata says mean 0, std 1), its output the ArgMax's labels (B, h, w) at
    the network size (a labels graph) or the logits (a logits graph)."""
    import onnx
    from onnx import TensorProto, helper

    from scaseg.metadata import read_onnx_metadata, write_onnx_metadata

    info = read_onnx_metadata(proto.metadata_props, "the raw-frame model")
    assert info.input_type == "uint8" and info.network_size is not None
    core = onnx.shape_inference.infer_shapes(proto)
    graph = core.graph
    # The resized image: the NHWC -> NCHW transpose of RawFrames (the exporter names its nodes /pre/...).
    resized = [n for n in graph.node if n.op_type == "Transpose" and n.name.startswith("/pre/")][-1].output[0]
    types = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    out = graph.output[0].name
    labels = _producers(graph, out, POST_OPS) if info.output == "labels" else out
    b = graph.input[0].type.tensor_type.shape.dim[0]
    new_in = helper.make_tensor_value_info("resized", types.get(resized, TensorProto.FLOAT),
                                           [b.dim_param or b.dim_value, 3, *info.network_size])
    for node in graph.node:
        node.input[:] = ["resized" if i == resized else i for i in node.input]
    new_out = helper.make_tensor_value_info(labels, types.get(labels, TensorProto.FLOAT), None)
    del graph.input[:], graph.output[:], graph.value_info[:]
    graph.input.append(new_in)
    graph.output.append(new_out)
    producer = {o: n for n in graph.node for o in n.output}
    needed: set[int] = set()
    todo = [labels]
    while todo:  # the nodes the new output needs: the frame's cast, transpose, resize and the label upsampling drop out
        node = producer.get(todo.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            todo.extend(node.input)
    kept = [n for n in graph.node if id(n) in needed]
    del graph.node[:]
    graph.node.extend(kept)
    write_onnx_metadata(core, info.replace(input_type="float", network_size=None, layout="NCHW", mean=(0, 0, 0),
                                           std=(1, 1, 1), input_size=info.network_size, input_name="resized",
                                           output_name=labels))
    return core


def agreement(raw_path: str, reference_path: str, frames: Sequence[np.ndarray]) -> float:
    """Share of pixels whose label agrees: the raw-frame graph on the runtime (uint8 frames in) vs the float-input
    model ``reference_path`` on the runtime's numpy path (resized with OpenCV by stretching)."""
    from scaseg.runtime.backends import open_backend
    from scaseg.runtime.predictor import Predictor

    raw = Predictor(open_backend(raw_path, "onnxruntime"))
    host = Predictor(open_backend(reference_path, "onnxruntime"), resize="stretch")
    same = total = 0
    for frame in frames:
        a, b = raw(frame), host(frame)
        same += int((a == b).sum())
        total += a.size
    return same / total


def core_agreement(raw_path: str, frames: Sequence[np.ndarray]) -> float:
    """``agreement`` against the raw graph's own network part (``float_core``): the same weights and, for int8,
    the same scales, so only what moved into the graph (resize, layout, label upsampling) can differ."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        core_path = os.path.join(tmp, "core.onnx")
        onnx.save(float_core(onnx.load(raw_path)), core_path)
        return agreement(raw_path, core_path, frames)


def _export(checkpoint: str, out: Path, imgsz: Optional[tuple[int, int]], precision: str, calib: Path,
            source: Optional[tuple[int, int]], int8_target: str = "cpu") -> None:
    """scaseg-export with a labels head: a raw-frame graph at ``source``, or (None) the float-input graph."""
    cmd = [sys.executable, "-m", "scaseg.export.cli", checkpoint, "-o", str(out), "--head", "labels",
           "--precision", precision, "-q"]
    cmd += ["--input", "uint8", "--source-size", f"{source[0]}x{source[1]}"] if source else []
    cmd += ["--imgsz", f"{imgsz[0]}x{imgsz[1]}"] if imgsz else []
    cmd += ["--calib", str(calib), "--calib-num", "8", "--int8-target", int8_target] if precision == "int8" else []
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="shipped", help="a checkpoint, or 'shipped' (scaseg-t-synth)")
    ap.add_argument("--source-size", type=size_type, default=(1080, 1920), metavar=SIZE_METAVAR)
    ap.add_argument("--imgsz", type=size_type, default=None, metavar=SIZE_METAVAR, help="network size (default: the checkpoint's)")
    ap.add_argument("--scenes", type=int, default=8, help="synthetic scenes to compare on")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "fp16", "int8"])
    ap.add_argument("--int8-target", choices=["cpu", "tensorrt"], default="cpu", help="int8 Q/DQ placement")
    ap.add_argument("--network-sizes", type=size_type, nargs="+", default=[(192, 384), (512, 1024), (1024, 2048)],
                    metavar=SIZE_METAVAR, help="network sizes of the bytes table")
    ap.add_argument("--classes", type=int, default=19, help="classes of the bytes table")
    ap.add_argument("--bytes-only", action="store_true", help="print the bytes table only")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from perf_machine import machine_line

    print(machine_line())
    print(f"bytes host -> device and back per {args.source_size[0]}x{args.source_size[1]} frame, {args.classes} classes:")
    print(bytes_table(args.source_size, args.network_sizes, args.classes))
    if args.bytes_only:
        return
    import cv2

    import scaseg
    from scaseg.data.synth import render_scene

    checkpoint = scaseg.weights_path("scaseg-t-synth") if args.checkpoint == "shipped" else args.checkpoint
    frames = [render_scene(1000 + i, args.source_size)[0] for i in range(args.scenes)]
    with tempfile.TemporaryDirectory() as tmp:
        calib = Path(tmp) / "calib"
        calib.mkdir()
        for i in range(10):
            cv2.imwrite(str(calib / f"{i:02d}.png"), render_scene(i, args.source_size)[0][..., ::-1])
        float_model = Path(tmp) / "float.fp32.onnx"
        _export(checkpoint, float_model, args.imgsz, "fp32", calib, None)
        for precision in args.precisions:
            out = Path(tmp) / f"raw.{precision}.onnx"
            _export(checkpoint, out, args.imgsz, precision, calib, args.source_size, args.int8_target)
            where = f"{args.scenes} scenes at {args.source_size[0]}x{args.source_size[1]}"
            own = core_agreement(str(out), frames)
            label = f"{precision}, {args.int8_target} placement" if precision == "int8" else precision
            print(f"{label}: raw-frame graph vs the numpy path of its own network ({precision}), {where}: "
                  f"label agreement {100 * own:.4f}%")
            fp32 = agreement(str(out), str(float_model), frames)
            print(f"{label}: raw-frame graph vs the numpy path of the fp32 float-input model, {where}: "
                  f"label agreement {100 * fp32:.4f}%")


if __name__ == "__main__":
    main()
