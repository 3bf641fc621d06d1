"""scaseg.export.from_onnx directly: where an engine goes by default, the command that rebuilds a CPU-placed int8
file, the engine options' one check and the file-dependent refusals of build_from_onnx (which happen before any
TensorRT call). Whole builds through scaseg-export: test_export_request.py and tests/test_badinput_card_path.py."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
from onnx import helper

from runtime_models import make_onnx
from scaseg.errors import ScasegError
from scaseg.export import from_onnx
from scaseg.runtime.tensorrt import installed

RTX = installed.find_tensorrt("rtx")


@pytest.mark.parametrize("name, precision, expect", [
    ("model.onnx", "fp32", "model.engine"), ("model.onnx", "fp16", "model.fp16.engine"),
    ("model.onnx", "int8", "model.int8.engine"), ("model.int8.onnx", "int8", "model.int8.engine"),
    ("model.fp16.onnx", "fp16", "model.fp16.engine"), ("a.b.onnx", "fp32", "a.b.engine"),
])
def test_the_default_engine_sits_beside_the_onnx_named_by_its_precision(name: str, precision: str, expect: str) -> None:
    assert from_onnx._default_dest(Path("/m") / name, precision) == Path("/m") / expect


def test_the_rebuild_command_names_the_float_model_beside_the_file(tmp_path: Path) -> None:
    int8 = tmp_path / "my model.int8.onnx"
    alone = from_onnx._rebuild_command(int8, "int8")
    assert alone == ("scaseg-export MODEL.pth --format engine --precision int8 --calib DIR (MODEL.pth: the checkpoint "
                     "it was exported from; DIR: a folder of calibration images)")
    (tmp_path / "my model.pth").write_bytes(b"")
    assert from_onnx._rebuild_command(int8, "fp16") == (
        f"scaseg-export '{tmp_path / 'my model.pth'}' --format engine --precision fp16")
    (tmp_path / "my model.onnx").write_bytes(b"")  # the fp32 ONNX comes before a checkpoint
    assert from_onnx._rebuild_command(int8, "int8").startswith(f"scaseg-export '{tmp_path / 'my model.onnx'}' ")


def _request(source: Path, output, precision=None, workspace: float = 1.0) -> SimpleNamespace:
    engine = SimpleNamespace(workspace_gib=workspace, dla_core=None, tensorrt=None)
    return SimpleNamespace(source=source, output=output, precision=precision, engine=engine, calibration=None)


def _no_say(line: str) -> None:
    raise AssertionError(f"refused only after announcing a build: {line}")


def test_file_dependent_refusals_come_before_any_build(tmp_path: Path) -> None:
    model = make_onnx(tmp_path / "m.onnx")
    (tmp_path / "out").mkdir()
    cases = [(_request(model, tmp_path / "out"), "is a folder; name a file"),
             (_request(model, model), "is the input ONNX; name another file"),
             (_request(model, None, precision="bf16"), "unknown engine precision 'bf16'"),
             (_request(model, None, workspace=0), "workspace must be a positive")]
    for request, words in cases:
        with pytest.raises(ScasegError, match=words):
            from_onnx.build_from_onnx(request, _no_say)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "out"]


def test_an_int8_file_placed_for_onnx_runtime_is_refused_with_the_command_that_builds_it(tmp_path: Path) -> None:
    path = make_onnx(tmp_path / "m.int8.onnx", precision="int8")
    model = onnx.load(str(path))
    model.graph.node.append(helper.make_node("FusedMatMul", [model.graph.output[0].name, model.graph.output[0].name],
                                             ["unused"], domain="com.microsoft"))
    onnx.save(model, str(path))
    (tmp_path / "m.onnx").write_bytes(b"")
    with pytest.raises(ScasegError) as refusal:
        from_onnx.build_from_onnx(_request(path, None), _no_say)  # type: ignore[arg-type]
    text = str(refusal.value)
    assert "placed for ONNX Runtime's CPU kernels (com.microsoft.FusedMatMul)" in text
    assert text.endswith(f"scaseg-export {tmp_path / 'm.onnx'} --format engine --precision int8 --calib DIR "
                         "(DIR: a folder of calibration images)")


@pytest.mark.skipif(RTX is None, reason="TensorRT-RTX (tensorrt-rtx-cu12) is not installed")
def test_engine_options_are_checked_into_one_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    request = from_onnx.check_engine_options("rtx", None, 2.0, Path("~/cache.bin"), None, True, from_onnx=True)
    assert request.tensorrt.flavor == "rtx" and request.compute_capabilities == ["8.0", "8.6", "8.9", "12.0"]
    assert request.timing_cache == tmp_path / "cache.bin" and request.workspace_gib == 2.0 and request.verbose
    assert from_onnx.check_engine_options("rtx", ["8.6"], 1.0, None, None, False).compute_capabilities == ["8.6"]
    with pytest.raises(ScasegError, match="has no DLA support"):
        from_onnx.check_engine_options("rtx", None, 1.0, None, 0, False)
    with pytest.raises(ScasegError, match="compute capabilit"):
        from_onnx.check_engine_options("rtx", ["1.0"], 1.0, None, None, False)
