"""Real TensorRT, executed: TensorRT-RTX's ONNX parser and builder (no GPU needed) on this project's exports.

Builds scaseg-t and scaseg-b0 engines in fp32, fp16 and int8 (tensorrt Q/DQ placement) at 64x128 and checks from
the engines' own layer report that the precision the ONNX asks for is the one TensorRT runs the convolutions and
GEMMs in; parses every variant; runs ``scaseg-export MODEL.onnx --format engine`` with torch made unimportable;
checks each bad input costs one sentence, exit 2 and no file. Skipped where TensorRT-RTX is not installed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import onnx
import pytest
from paths import ROOT

from scaseg.metadata import METADATA_KEY, ModelInfo
from scaseg.export.engine import builder, layers as trt_layers
from scaseg.export.engine.profile import RTX_DEFAULT_CCS
from scaseg.runtime.tensorrt import installed
from scaseg.runtime.tensorrt.engine_info import side_file

RTX = installed.find_tensorrt("rtx")
pytestmark = [pytest.mark.skipif(RTX is None, reason="TensorRT-RTX (tensorrt-rtx-cu12) is not installed"),
              pytest.mark.usefixtures("one_torch_thread")]
H, W = 64, 128

# Runs scaseg-export with the named top-level modules unimportable (a meta path finder that raises ImportError).
BLOCKED_MAIN = """
import sys
blocked = set(sys.argv[1].split(","))
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["scaseg-export"] + sys.argv[2:]
from scaseg.export.cli import main
main()
"""


def export_cli(args: list[str], block: str = "torch", cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", BLOCKED_MAIN, block, *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def _export(variant: str, path: Path, **kw: object) -> Path:
    import torch

    import scaseg
    from scaseg.export.onnx_export import ExportOptions, to_onnx

    torch.manual_seed(0)
    model = scaseg.build(variant, 19).eval()
    proto, _ = to_onnx(model, ModelInfo(variant, 19, input_size=(H, W)), ExportOptions(imgsz=(H, W), **kw))
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scaseg.data.synth import render_scene

    folder = tmp_path_factory.mktemp("calib")
    for i in range(6):
        rgb, _ = render_scene(i, (H, W))
        cv2.imwrite(str(folder / f"frame_{i:02d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory, calib_dir: Path) -> dict[tuple[str, str], Path]:
    """fp32 exports of scaseg-t and scaseg-b0 and their fp16 and int8 (tensorrt placement) conversions."""
    from scaseg.calibration.precision import make_precision

    folder = tmp_path_factory.mktemp("onnx")
    files = {}
    for variant in ("scaseg-t", "scaseg-b0"):
        fp32 = _export(variant, folder / f"{variant}.onnx")
        files[(variant, "fp32")] = fp32
        files[(variant, "fp16")] = folder / f"{variant}.fp16.onnx"
        make_precision(str(fp32), str(files[(variant, "fp16")]), "fp16", calib_dir=None)
        files[(variant, "int8")] = folder / f"{variant}.int8.onnx"
        make_precision(str(fp32), str(files[(variant, "int8")]), "int8", calib_dir=str(calib_dir), calib_num=4,
                       target="tensorrt", max_miou_drop=100.0)
    return files


@pytest.fixture(scope="module")
def engines(onnx_files: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict]:
    folder = tmp_path_factory.mktemp("engines")
    out = {}
    for (variant, precision), path in onnx_files.items():
        out[(variant, precision)] = builder.build_engine(str(path), str(folder / f"{variant}.{precision}.engine"),
                                                         precision=precision, tensorrt="rtx",
                                                         compute_capabilities=["8.6"], report=lambda line: None)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["scaseg-t", "scaseg-b0"])
def test_engines_run_their_convolutions_in_the_precision_asked_for(engines: dict, variant: str) -> None:
    for precision in ("fp32", "fp16", "int8"):
        summary = engines[(variant, precision)]
        counts = summary["layer_precisions"]
        total = sum(counts.values())
        assert total >= 20, (precision, counts)  # every stage's patch embeds, MLPs and the decoder
        assert counts[precision] >= 0.9 * total, f"{variant} {precision}: {counts}"
        side = json.loads(Path(summary["side_file"]).read_text())
        facts = side["extra"]["tensorrt"]
        assert (facts["trt_flavor"], facts["trt_version"]) == ("rtx", RTX.version_text if RTX else "")
        assert facts["compute_capabilities"] == ["8.6"] and facts["layer_precisions"] == counts
        assert side["precision"] == precision and Path(summary["engine"]).stat().st_size > 0


def test_layer_report_is_parsed_from_the_builders_log() -> None:
    line = ("Name: conv_myl0_1, LayerType: correlation, Inputs: [ { Name: a, Dimensions: [1,3,8,8], Datatype: Int8, "
            "Format: (NHWC) } ], Constants: [ { Name: w, Datatype: Int8 } ], Outputs: [ { Name: b, Datatype: Half } ], "
            "TacticName: x, StreamId: 0, Metadata: [ONNX Layer: /conv/Conv][ONNX Layer: /act/Relu]")
    gemm = line.replace("correlation", "gemm").replace("Int8", "Float").replace("/conv/Conv", "/fc/MatMul")
    move = line.replace("correlation", "kgen")
    layers = trt_layers.layers_from_log("Layers:\n" + "\n".join([line, gemm, move]) + "\n\nI/O Tensors:\n")
    assert [(x.kind, x.dtype, x.onnx_nodes[0]) for x in layers] == [
        ("correlation", "int8", "/conv/Conv"), ("gemm", "fp32", "/fc/MatMul"), ("kgen", "int8", "/conv/Conv")]
    assert trt_layers.layer_precisions(layers) == {"int8": 1, "fp16": 0, "fp32": 1}
    wider = trt_layers.wider_than_asked(layers, {"/conv/Conv": "int8", "/fc/MatMul": "int8"})
    assert wider == [("/fc/MatMul", "fp32", "int8")]
    assert "/fc/MatMul: fp32 (the ONNX asks for int8)" in "\n".join(trt_layers.precision_summary({"int8": 1}, wider))


def _variants() -> list[str]:
    from scaseg.models.model import VARIANTS

    return list(VARIANTS)


@pytest.mark.slow
@pytest.mark.parametrize("variant", _variants())
def test_parser_accepts_every_variant(variant: str, tmp_path: Path) -> None:
    """Every variant's default export parses clean. The dynamic-batch, labels-output form adds the same dynamic axes
    and ArgMax to every variant (export/onnx_export.py): it is parsed for one variant of each encoder family."""
    from scaseg.export.trt_lint import lint

    forms: list[dict] = [{}]
    if variant in ("scaseg-t", "scaseg-b0"):
        forms.append({"dynamic_batch": True, "output": "labels"})
    for kw in forms:
        path = _export(variant, tmp_path / "m.onnx", **kw)
        report = lint(onnx.load(str(path)))
        assert report.source == "parser" and report.clean(), (variant, kw, report.summary())


@pytest.mark.slow
def test_function_form_builds(tmp_path: Path) -> None:
    path = _export("scaseg-t", tmp_path / "fn.onnx", sca_op="function")
    assert onnx.load(str(path)).functions
    summary = builder.build_engine(str(path), str(tmp_path / "fn.engine"), tensorrt="rtx", report=lambda line: None)
    assert summary["plugin"] is False  # TensorRT-RTX has no plugins: its parser inlines the function
    assert summary["compute_capabilities"] == list(RTX_DEFAULT_CCS)
    assert summary["layer_precisions"]["fp32"] >= 20


# --- scaseg-export MODEL.onnx --format engine, without torch ---------------------------------------------------


@pytest.mark.slow
def test_engine_from_onnx_without_torch_fp16_and_int8(onnx_files: dict, calib_dir: Path, tmp_path: Path) -> None:
    fp32 = onnx_files[("scaseg-t", "fp32")]
    for precision, extra in (("fp16", []), ("int8", ["--calib", str(calib_dir), "--calib-num", "4",
                                                     "--max-miou-drop", "100"])):
        dest = tmp_path / f"t.{precision}.engine"
        done = export_cli([str(fp32), "--format", "engine", "--precision", precision, "-o", str(dest),
                           "--compute-capability", "8.6", "--compute-capability", "12.0", *extra])
        assert done.returncode == 0, done.stderr[-2000:]
        assert "conv/GEMM layers by input type" in done.stdout
        facts = json.loads(side_file(dest).read_text())["extra"]["tensorrt"]
        assert facts["compute_capabilities"] == ["8.6", "12.0"]
        counts = facts["layer_precisions"]
        assert counts[precision] >= 0.9 * sum(counts.values()), counts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.fp16.engine", "t.fp16.engine.json", "t.int8.engine",
                                                          "t.int8.engine.json"]


def _foreign(path: Path, src: Path) -> Path:
    model = onnx.load(str(src))
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(path))
    return path


@pytest.mark.slow
def test_bad_input_is_one_sentence_exit_2_and_nothing_written(onnx_files: dict, tmp_path: Path) -> None:
    fp32 = onnx_files[("scaseg-t", "fp32")]
    inputs = tmp_path / "in"
    inputs.mkdir()
    corrupt = inputs / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage, not protobuf" * 20)
    foreign = _foreign(inputs / "foreign.onnx", fp32)
    out = tmp_path / "out"
    out.mkdir()
    cases = [
        ([str(foreign)], "torch", "has no scaseg metadata"),
        ([str(corrupt)], "torch", "cannot read the ONNX model"),
        ([str(fp32), "--precision", "int8"], "torch", "--precision int8 needs --calib DIR"),
        ([str(fp32), "--compute-capability", "9.0"], "torch", "cannot build for compute capability 9.0"),
        ([str(fp32), "--compute-capability", "ampere"], "torch", "cannot read the compute capability 'ampere'"),
        ([str(fp32), "--tensorrt", "standard"], "torch", "TensorRT is not installed"),
        ([str(fp32), "--tensorrt", "rtx"], "torch,tensorrt_rtx", "TensorRT-RTX is not installed"),
        ([str(fp32)], "torch,tensorrt,tensorrt_rtx", "TensorRT is not installed"),
    ]
    for args, block, message in cases:
        done = export_cli([*args, "--format", "engine", "-o", str(out / "m.engine")], block=block)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (args, done.stderr[-1500:])
        assert len(lines) == 1 and lines[0].startswith("scaseg-export: error: ") and message in lines[0], (args, lines)
        assert not any(out.iterdir()), (args, list(out.iterdir()))
    assert sorted(p.name for p in inputs.iterdir()) == ["corrupt.onnx", "foreign.onnx"]


def test_cli_refuses_an_onnx_for_other_formats(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    done = export_cli([str(model), "--format", "onnx"])
    assert done.returncode == 2 and "builds engines from ONNX files (--format engine)" in done.stderr

