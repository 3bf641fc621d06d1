"""scaseg-export's options parsed once (issue 23): one precision vocabulary, each check and the ONNX read once, one
sentence per rule whichever path (checkpoint or exported ONNX) reaches it, one home for "model file missing"."""
from __future__ import annotations

import os
import sys
import typing
from pathlib import Path

import onnx
import pytest

import scaseg
from badinput import one_line, refused, run, tree
from runtime_models import make_onnx
from scaseg.calibration import precision as calibration_precision
from scaseg.export import cli
from scaseg.metadata import PRECISIONS
from scaseg.export.engine import precision as engine_precision
from scaseg.runtime.tensorrt import installed

RTX = installed.find_tensorrt("rtx")
needs_rtx = pytest.mark.skipif(RTX is None, reason="TensorRT-RTX (tensorrt-rtx-cu12) is not installed")
CC = ["--compute-capability", "8.6"]


def test_one_precision_vocabulary() -> None:
    assert typing.get_args(cli.Precision) == PRECISIONS  # what --precision accepts is the metadata's words
    assert calibration_precision.CONVERTED == tuple(p for p in PRECISIONS if p != "fp32")
    assert engine_precision.PRECISIONS is PRECISIONS  # the engine builder's, imported, not a copy
    assert calibration_precision.PRECISIONS is PRECISIONS  # imported, not a second table


def _run_in_process(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["scaseg-export", *args])
    try:
        cli.main()
    except SystemExit as exc:
        return int(exc.code or 0), capsys.readouterr().err
    return 0, capsys.readouterr().err


@needs_rtx
@pytest.mark.parametrize("name, precision", [("tiny.onnx", "fp32"), ("tiny.int8.onnx", "int8")])
def test_an_onnx_to_engine_build_reads_the_file_once_and_checks_each_option_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str,
        precision: str) -> None:
    source = make_onnx(tmp_path / name, precision=precision)
    calls: dict[str, int] = {"onnx.load": 0, "find_tensorrt": 0}
    real_load, real_find = onnx.load, installed.find_tensorrt

    def counted_load(*args: object, **kwargs: object) -> onnx.ModelProto:
        calls["onnx.load"] += 1
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    def counted_find(*args: object, **kwargs: object) -> object:
        calls["find_tensorrt"] += 1
        return real_find(*args, **kwargs)  # type: ignore[arg-type]

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the precision comes from the metadata, not from a second look at the graph")

    from scaseg.export.engine import builder

    monkeypatch.setattr(onnx, "load", counted_load)
    monkeypatch.setattr(installed, "find_tensorrt", counted_find)
    monkeypatch.setattr(builder, "graph_precision", never)
    code, err = _run_in_process([str(source), "--format", "engine", *CC, "-o", str(tmp_path / "m.engine"), "-q"],
                                monkeypatch, capsys)
    assert code == 0, err[-2000:]
    assert calls == {"onnx.load": 1, "find_tensorrt": 1}
    assert (tmp_path / "m.engine").is_file()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("request")
    (root / "ck.pth").write_bytes(Path(scaseg.weights_path("scaseg-t-synth")).read_bytes())
    make_onnx(root / "model.onnx")
    (root / "folder.onnx").mkdir()
    os.mkfifo(root / "fifo.onnx")
    (root / "garbage.onnx").write_bytes(b"\x08\x07garbage, not protobuf" * 20)
    return root


@pytest.mark.parametrize("args", [
    ["ck.pth", "--precision", "int8"],
    ["ck.pth", "--precision", "int8", "--format", "engine", "--tensorrt", "rtx"],
    pytest.param(["model.onnx", "--format", "engine", "--precision", "int8", *CC], marks=needs_rtx),
])
def test_int8_without_calib_is_the_same_sentence_from_a_checkpoint_and_from_an_onnx(work: Path, args: list) -> None:
    if "--tensorrt" in args and RTX is None:
        pytest.skip("TensorRT-RTX is not installed")
    line = refused("scaseg-export", [*args, "-q"], work)
    assert line == f"scaseg-export: error: {calibration_precision.INT8_NEEDS_CALIB}"


@needs_rtx
@pytest.mark.parametrize("name, words", [
    ("absent.onnx", "ONNX model not found: absent.onnx"),
    ("folder.onnx", "the ONNX model path folder.onnx is a folder; expected an ONNX model file"),
    ("fifo.onnx", "the ONNX model path fifo.onnx is a FIFO (named pipe); expected an ONNX model file"),
    ("garbage.onnx", "cannot read the ONNX model garbage.onnx: not an ONNX model"),
])
def test_an_onnx_that_cannot_be_read_is_one_sentence_from_the_one_reader(work: Path, name: str, words: str) -> None:
    line = refused("scaseg-export", [name, "--format", "engine", *CC, "-q"], work)
    assert words in line, line


@pytest.mark.parametrize("prog, args", [
    ("scaseg-bench", ["fifo.onnx", "-n", "1", "--warmup", "0", "-q"]),
    ("scaseg-bench", ["folder.onnx", "-n", "1", "--warmup", "0", "-q"]),
])
def test_the_runtime_says_the_same_of_a_model_path_that_is_not_a_file(work: Path, prog: str, args: list) -> None:
    line = refused(prog, args, work)
    assert "expected a model file" in line, line


@pytest.mark.parametrize("args, words", [
    (["ck.pth", "--format", "engine", "--tensorrt", "rtx", "--workspace", "0"], "workspace must be a positive"),
    (["ck.pth", "--format", "engine", "--tensorrt", "rtx", "--precision", "fp16", "--dla-core", "0"],
     "has no DLA support"),
    (["ck.pth", "--format", "engine", "--tensorrt", "rtx", "--dla-core", "-1"], "has no DLA support"),
])
def test_engine_options_are_refused_before_the_export(work: Path, args: list, words: str) -> None:
    if RTX is None:
        pytest.skip("TensorRT-RTX is not installed")
    before = tree(work)
    proc = run("scaseg-export", args, work)
    assert proc.returncode == 2 and words in one_line(proc, "scaseg-export"), proc.stderr
    assert proc.stdout == ""  # no lint or parity line: refused before the export, not after it
    assert tree(work) == before
