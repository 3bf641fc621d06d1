"""benchmarks/bench_prune.py's own logic: the model part every exported node is counted in (the profile of "Where the
time goes"), and the target line of the curve's table."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from paths import benchmark

import scaseg

bench = benchmark("bench_prune")


def test_every_node_onnx_runtime_runs_falls_in_a_named_part(tmp_path: Path) -> None:
    """The exporter names nodes after modules and ONNX Runtime's own nodes (layout reorders, fusions) follow the
    node they feed: if either stopped, the profile would lump the model into one part."""
    import onnxruntime as ort

    from scaseg.export.onnx_export import ExportOptions, to_onnx

    model, info = scaseg.load_model(scaseg.weights_path("scaseg-t-synth"))
    proto, _ = to_onnx(model, info, ExportOptions(imgsz=(64, 128)))
    onnx.save(proto, str(tmp_path / "m.onnx"))
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tmp_path / "m.onnx"), opts, providers=["CPUExecutionProvider"])
    nodes = list(onnx.load(opts.optimized_model_filepath).graph.node)
    parts = bench.graph_parts(nodes)
    assert set(parts.values()) == set(bench.PARTS) - {"other"}
    assert bench.part_of("/model/backbone/block1.0/mlp/fc1/Conv") == "encoder stage 1"
    assert bench.part_of("/model/decode_head/blocks.0/lpm/fc1/Conv") == "decoder LPM"
    assert bench.part_of("ReorderInput_token_604") is None


def _result(miou: float, fp32_ms: float) -> dict:
    rows = [{"model": "scaseg-t-synth", "gmacs": 14.2, "params_m": 5.2, "miou": 81.0},
            {"model": "half plain", "gmacs": 4.75, "params_m": 1.47, "miou": miou}]
    return {"rows": rows, "imgsz": "512x1024", "val_size": "192x384", "val_images": 60, "threads": 2, "runs": 20,
            "latency_ms": {"scaseg-t-synth.fp32.onnx": 300.0, "half-plain.fp32.onnx": fp32_ms}}


@pytest.mark.parametrize("miou, fp32_ms, verdict", [
    (80.0, 150.0, "met by half plain (2.00x, 1.00 points lost)"),
    (79.4, 150.0, "not met by any point"),   # 1.6 points lost
    (80.0, 151.0, "not met by any point"),   # 1.99x
    (81.5, 140.0, "met by half plain (2.14x, 0.50 points gained)"),
])
def test_the_target_line_names_the_points_that_meet_it(miou: float, fp32_ms: float, verdict: str) -> None:
    text = bench.render(_result(miou, fp32_ms), None, None)
    assert f"| half plain | 4.75 | 1.47 | {miou:.2f}% | {fp32_ms:.1f} | {300 / fp32_ms:.2f}x | - |" in text
    assert text.rstrip().endswith(verdict + ".")
