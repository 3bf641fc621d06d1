"""benchmarks/perf_report.py and its modules: the FLOPs convention, the Markdown it writes, the README markers, bad input.

No measurement runs here (that takes minutes): the report is rendered from a hand-made result.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import types
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def perf():
    """The report's modules (perf_report, the CLI, and perf_machine / perf_measure / perf_render), as the script
    imports them: from the benchmarks folder."""
    sys.path.insert(0, str(BENCHMARKS))
    names = ("perf_machine", "perf_measure", "perf_render", "perf_report")
    try:
        yield types.SimpleNamespace(**{n.removeprefix("perf_"): importlib.import_module(n) for n in names})
    finally:
        sys.path.remove(str(BENCHMARKS))
        for n in names:
            sys.modules.pop(n, None)


def _report(perf, tmp_path):
    machine = {"cpu": "Test CPU", "family_model": "family 1 model 2", "hypervisor": None, "cores": 2,
               "threads_per_core": "1", "ghz": 2.5, "clock_source": "test", "simd": "avx2 fma",
               "flops_per_cycle": 32, "theoretical_gflops": 160.0, "memory_gib": 8.0, "python": "3.11",
               "onnxruntime": "1.0", "date": "2000-01-01 00:00", "load_before": (1.0, 1.0, 1.0)}
    rss = {"bare_mb": 30.0, "loaded_mb": 100.0, "peak_mb": 150.0}
    rows = [
        perf.measure.Row("ort-fp32", "onnxruntime", "fp32", tmp_path / "m.onnx", 2, size_mb=20.0, median_ms=100.0, miou=50.0, rss=rss),
        perf.measure.Row("ort-int8", "onnxruntime", "int8", tmp_path / "m.int8.onnx", 2, size_mb=5.0, median_ms=50.0, miou=49.5,
                 rss=rss, note="kept in float: none"),
    ]
    sweep = [{"size": [256, 256], "strip": {"median_ms": 40.0, "gmacs": 1.0, "rss": rss},
              "vanilla": {"median_ms": 60.0, "gmacs": 1.5, "rss": rss}},
             {"size": [512, 512], "strip": {"median_ms": 160.0, "gmacs": 4.0, "rss": rss},
              "vanilla": {"median_ms": 320.0, "gmacs": 8.0, "rss": rss}}]
    report = {
        "command": "python benchmarks/perf_report.py --quick", "machine": machine,
        "matmul": {"n": 1024, "median_ms": 25.0, "gflops": 80.0, "best_gflops": 90.0}, "threads": 2, "torch": "2",
        "plan": {"imgsz": [256, 512], "runs": 3, "sweep_runs": 3, "probe_runs": 1, "calib_num": 4,
                 "sweep": [[256, 256], [512, 512]]},
        "model": {"variant": "scaseg-t", "source": "test", "untrained": True}, "table_gmacs": 4.0,
        "data": "a test set", "miou_images": 4, "sweep": sweep, "load_after": (2.0, 1.0, 1.0), "wall_s": 60.0,
    }
    return report, rows


def _args(tmp_path, readme):
    return argparse.Namespace(doc=str(tmp_path / "docs" / "performance.md"), plot=str(tmp_path / "docs" / "plot.png"),
                              json=None, readme=str(readme) if readme else "")


def test_flops_are_two_per_mac(perf):
    assert perf.render.gflops_per_s(1.0, 1000.0) == pytest.approx(2.0)
    assert perf.render.gflops_per_s(4.0, 100.0) == pytest.approx(80.0)


def test_tables_carry_ratios_and_throughput(perf, tmp_path):
    report, rows = _report(perf, tmp_path)
    table = perf.render.backend_markdown(rows, report["table_gmacs"], report["matmul"]["gflops"])
    # int8 at 50 ms: 2x the fp32 row, 20 FPS, 2 * 4 GMACs / 0.05 s = 160 GFLOP/s = 200% of an 80 GFLOP/s peak.
    assert "| onnxruntime | int8 | 2 | 50.0 (2.00x) | 20.00 | 5.0 | 49.50 | 160.0 | 200% | 150 |" in table
    sweep = perf.render.sweep_markdown(report["sweep"], report["matmul"]["gflops"])
    # 2 * 4 GMACs / 0.16 s = 50 GFLOP/s strip, 2 * 8 / 0.32 = 50 vanilla; 50 / 80 = 62.5% -> "62%" (round half even).
    assert "| 512x512 | 160 | 320 | 2.00x | 4.00 / 8.00 | 50.0 / 50.0 | 62% | 150 / 150 |" in sweep


def test_writes_doc_plot_and_readme_section(perf, tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("# title\nkeep me\n<!-- perf:start -->\nstale figures\n<!-- perf:end -->\ntail\n")
    report, rows = _report(perf, tmp_path)
    perf.report.write_outputs(report, rows, _args(tmp_path, readme))
    text = readme.read_text()
    assert text.startswith("# title\nkeep me\n<!-- perf:start -->\n") and text.endswith("<!-- perf:end -->\ntail\n")
    assert "stale figures" not in text
    assert "![strip vs vanilla latency vs resolution](docs/plot.png)" in text
    assert "[docs/performance.md](docs/performance.md)" in text
    doc = (tmp_path / "docs" / "performance.md").read_text()
    assert "](plot.png)" in doc and "## Caveats" in doc and "python benchmarks/perf_report.py --quick" in doc
    assert "2 x 2.500 x 32 = 160 GFLOP/s" in doc
    assert "untrained" in doc
    assert (tmp_path / "docs" / "plot.png").read_bytes().startswith(b"\x89PNG")
    assert capsys.readouterr().out == ""


def test_readme_without_markers_is_left_alone(perf, tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    report, rows = _report(perf, tmp_path)
    perf.report.write_outputs(report, rows, _args(tmp_path, readme))
    assert readme.read_text() == "# no markers here\n"
    out = capsys.readouterr()
    assert "| onnxruntime | fp32 | 2 | 100.0 (1.00x) |" in out.out
    assert "no '<!-- perf:start -->'" in out.err


def test_bad_input_is_one_sentence_and_exit_2(perf, tmp_path, capsys):
    assert perf.report.main(["--data", str(tmp_path / "missing"), "--readme", ""]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    assert perf.report.main(["--quick", "--full"]) == 2
    assert "contradict" in capsys.readouterr().err
    assert perf.report.main(["--doc", str(tmp_path / "nowhere" / "p.md")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_thread_caveat_only_when_fewer_threads_won(perf, tmp_path):
    report, rows = _report(perf, tmp_path)
    one = perf.measure.Row("ort-fp32-1t", "onnxruntime", "fp32", rows[0].path, 1, median_ms=80.0)
    assert "fewer threads were faster (onnxruntime fp32 80 ms with 1 thread vs 100 ms with 2)" in \
        "".join(perf.render._thread_caveat(rows + [one]))
    one.median_ms = 150.0
    assert perf.render._thread_caveat(rows + [one]) == []


def test_render_only_rewrites_docs_from_json(perf, tmp_path):
    (tmp_path / "docs").mkdir()
    report, rows = _report(perf, tmp_path)
    report["backends"] = [{**r.__dict__, "path": r.path.name} for r in rows]
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(report))
    args = ["--render-only", str(saved), "--readme", "", "--doc", str(tmp_path / "docs" / "performance.md"),
            "--plot", str(tmp_path / "docs" / "plot.png")]
    assert perf.report.main(args) == 0
    assert "| onnxruntime | int8 | 2 | 50.0 (2.00x) |" in (tmp_path / "docs" / "performance.md").read_text()
    saved.write_text("{}")
    assert perf.report.main(args) == 2


def test_every_section_another_script_owns_survives_a_rewrite(perf, tmp_path):
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs" / "performance.md"
    owned = "## Scaling: grid attention\n\nintro\n\n<!-- grid-scaling:start -->\n| table |\n<!-- grid-scaling:end -->"
    runs = ("## Frames\n\n<!-- frame-path-new:start -->\nrun 1\n<!-- frame-path-new:end -->\n\nreading\n\n"
            "<!-- frame-ops:start -->\nrun 2\n<!-- frame-ops:end -->")  # any name; two blocks under one heading
    doc.write_text("# old page\nstale\n\n" + owned + "\n\n" + runs + "\n")
    report, rows = _report(perf, tmp_path)
    perf.report.write_outputs(report, rows, _args(tmp_path, None))
    text = doc.read_text()
    assert "stale" not in text and "## Caveats" in text
    assert text.count(owned) == 1 and text.index("## Caveats") < text.index(owned)
    assert text.count(runs) == 1 and text.index(owned) < text.index(runs)
