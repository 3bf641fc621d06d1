"""runtime/backends/threads.py: the --threads auto rule, explicit counts honoured, bad values refused in one line."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

import pytest

from badinput import refused
from runtime_models import make_onnx
from scaseg.errors import ScasegError
from scaseg.metadata import ModelInfo
from scaseg.runtime.backends import RunSettings, open_backend
from scaseg.runtime.backends import threads as T
from scaseg.runtime.predictor import Predictor


def _session_threads(backend) -> int:
    return backend.session.get_session_options().intra_op_num_threads


@pytest.mark.parametrize("value,expect", [(None, None), ("auto", None), ("AUTO", None), ("3", 3), (2, 2)])
def test_parse_threads_accepts_auto_and_counts(value, expect) -> None:
    assert T.parse_threads(value) == expect


@pytest.mark.parametrize("value,expect", [("0", "at least 1"), (-1, "at least 1"), ("many", "whole number"),
                                          ("1.5", "whole number")])
def test_parse_threads_refuses_the_rest(value, expect) -> None:
    with pytest.raises(ScasegError, match=expect):
        T.parse_threads(value)


def test_auto_without_a_measurement_is_every_core(tmp_path: Path) -> None:
    assert T.auto_threads(cores=8) == 8 and T.auto_threads(cores=0) == 1
    assert isinstance(T.auto_threads(), int) and T.auto_threads() == T.cpu_cores()
    be = open_backend(make_onnx(tmp_path / "s.onnx", size=(32, 48)))
    assert be.threads == T.cpu_cores() and _session_threads(be) == be.threads and be.requested_threads is None


def test_explicit_counts_reach_the_session_and_stay(tmp_path: Path) -> None:
    given = open_backend(make_onnx(tmp_path / "g.onnx", size=(32, 48)), threads=1)
    assert given.threads == 1 and _session_threads(given) == 1 and given.requested_threads == 1
    assert T.apply_auto_threads(given, (32, 48), 1) == "1 (given)" and _session_threads(given) == 1


class _Slow:
    """A CPU backend whose calls take ``ms[threads]`` milliseconds."""

    device = "CPU"
    streams = 1
    auto_streams = False
    info = ModelInfo(variant="tiny", num_classes=3)  # a float model: the probe feeds float32 NCHW

    def __init__(self, ms: dict[int, float]) -> None:
        self.ms, self.threads, self.requested_threads, self.shapes = ms, 2, None, set()

    def set_threads(self, count: int) -> None:
        self.threads = count

    def infer(self, x):
        self.shapes.add(x.shape)
        time.sleep(self.ms[self.threads] / 1000)
        return x


@pytest.mark.parametrize("ms,faster", [({1: 30.0, 2: 5.0}, 2), ({1: 5.0, 2: 30.0}, 1)])
def test_apply_auto_threads_times_both_counts_on_the_real_shape_and_keeps_the_faster(monkeypatch, ms, faster) -> None:
    monkeypatch.setattr(T, "cpu_cores", lambda: 2)
    be = _Slow(ms)
    said = T.apply_auto_threads(be, (32, 48), 2)
    assert be.threads == faster and said.startswith(f"{faster} (auto: timed 1 vs 2 threads at load")
    assert be.shapes == {(2, 3, 32, 48)}


def test_apply_auto_threads_uses_every_core_for_large_or_unknown_sizes(monkeypatch) -> None:
    monkeypatch.setattr(T, "cpu_cores", lambda: 2)
    be = _Slow({1: 1.0, 2: 50.0})  # would win with 1 thread, but large calls are not timed
    big = int(T.PROBE_MAX_PIXELS ** 0.5) + 1
    assert T.apply_auto_threads(be, (big, big), 1).startswith("2 (auto: every core") and be.shapes == set()
    assert T.apply_auto_threads(be, None, 1) == "2 (auto: every core)" and be.threads == 2


def test_with_streams_auto_threads_are_every_core_split_between_them_untimed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(T, "cpu_cores", lambda: 2)
    be = open_backend(make_onnx(tmp_path / "d.onnx", size=None), settings=RunSettings.parse("cpu", None, None, 2))
    said = T.apply_auto_threads(be, (32, 32), 1)
    assert said == "2 (auto: every core, 1 per stream x 2 streams)" and be.threads == 2 and _session_threads(be) == 1
    given = open_backend(make_onnx(tmp_path / "d.onnx", size=None), settings=RunSettings.parse("cpu", 4, None, 2))
    assert T.apply_auto_threads(given, (32, 32), 1) == "4 (given, 2 per stream x 2 streams)" and _session_threads(given) == 2


def test_apply_auto_threads_on_a_real_session_reopens_it_with_the_chosen_count(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(T, "cpu_cores", lambda: 2)
    be = open_backend(make_onnx(tmp_path / "d.onnx", size=None))
    pred = Predictor(be, (32, 32))
    said = T.apply_auto_threads(be, pred.size, pred.batch)
    assert be.threads in (1, 2) and _session_threads(be) == be.threads and said.startswith(f"{be.threads} (auto")
    assert be.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3, 32, 32)


def test_help_shows_the_default(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from scaseg.runtime.bench import app

    out = CliRunner().invoke(app, ["--help"], terminal_width=200).output
    assert "auto|N" in out and "[default: auto]" in out


def test_infer_refuses_a_bad_count_in_one_line(tmp_path: Path) -> None:
    make_onnx(tmp_path / "m.onnx")
    (tmp_path / "a.png").write_bytes(b"")
    refused("scaseg-infer", ["a.png", "-m", "m.onnx", "--threads", "0", "-q"], tmp_path, expect="--threads must be")


@pytest.mark.parametrize("prog", ["bench", "infer"])
def test_the_commands_read_threads_once_and_the_backends_trust_it(tmp_path: Path, monkeypatch, capsys, prog) -> None:
    """--threads is parsed at the edge only (it was parsed three times by scaseg-bench); the backend keeps the count."""
    from runtime_models import run_main

    from scaseg.runtime import bench, infer
    from scaseg.runtime.backends import base

    calls: list[object] = []
    real = T.parse_threads
    monkeypatch.setattr(base, "parse_threads", lambda value, *a: calls.append(value) or real(value, *a))
    monkeypatch.setattr(T, "parse_threads", lambda *a: pytest.fail("parse_threads called below the edge"))
    model = make_onnx(tmp_path / "m.onnx", size=(32, 48))
    cv2 = pytest.importorskip("cv2")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((24, 32, 3), np.uint8))
    args = {"bench": [model, "--warmup", "0", "--runs", "1", "--threads", "1", "-q", "-o", tmp_path / "r.json"],
            "infer": [tmp_path / "a.png", "-m", model, "--threads", "1", "-q", "-o", tmp_path / "o.png"]}[prog]
    code, _, err = run_main({"bench": bench.main, "infer": infer.main}[prog], args, capsys, monkeypatch)
    assert code == 0, err
    assert calls == ["1"], calls
    if prog == "bench":  # the backend ran with the count as given
        assert json.loads((tmp_path / "r.json").read_text())["models"][0]["threads"] == 1


class _Streams:
    """A CPU backend on 2 given threads under --streams auto: a call takes ``ms[streams]`` milliseconds, and with 2
    streams two calls run at once (sleeping, as a library call releases the GIL)."""

    device = "CPU"
    auto_streams = True
    info = ModelInfo(variant="tiny", num_classes=3)

    def __init__(self, ms: dict[int, float]) -> None:
        self.ms, self.threads, self.requested_threads, self.streams, self.calls = ms, 2, 2, 1, 0

    def set_streams(self, streams: int) -> None:
        self.streams = streams

    def infer(self, x):
        self.calls += 1
        time.sleep(self.ms[self.streams] / 1000)
        return x


@pytest.mark.parametrize("ms,kept", [({1: 10.0, 2: 12.0}, 2),   # 2 at once: 167 vs 100 frames/s
                                     ({1: 10.0, 2: 25.0}, 1)])  # 2 at once: 80 vs 100 frames/s
def test_streams_auto_times_one_and_two_streams_and_keeps_two_only_when_faster(ms, kept) -> None:
    be = _Streams(ms)
    said = T.apply_auto_threads(be, (32, 48), 1)
    assert be.streams == kept and said.startswith(f"2 (given); streams {kept} (auto: timed 1 vs 2 at load: ")
    assert ("1 thread each" in said) == (kept == 2) and be.calls == 3 * (1 + 2 * T.PROBE_RUNS)


def test_streams_auto_is_not_timed_for_large_calls_one_thread_or_given_streams(tmp_path: Path) -> None:
    big = int(T.PROBE_MAX_PIXELS ** 0.5) + 1
    be = _Streams({1: 1.0, 2: 1.0})
    assert T.apply_auto_threads(be, (big, big), 1) == "2 (given)" and be.calls == 0 and be.streams == 1
    one = open_backend(make_onnx(tmp_path / "o.onnx", size=(32, 48)), settings=RunSettings.parse("cpu", 1, None, "auto"))
    assert one.auto_streams and T.apply_auto_threads(one, (32, 48), 1) == "1 (given)" and one.streams == 1
    given = open_backend(make_onnx(tmp_path / "g.onnx", size=(32, 48)), settings=RunSettings.parse("cpu", 2, None, 1))
    assert not given.auto_streams and T.apply_auto_threads(given, (32, 48), 1) == "2 (given)"


def test_streams_auto_on_a_real_session_reopens_it_for_the_streams_kept(tmp_path: Path) -> None:
    settings = RunSettings.parse("cpu", 2, None, "auto")
    assert settings.auto_streams and settings.streams == 1
    be = open_backend(make_onnx(tmp_path / "r.onnx", size=(32, 48)), settings=settings)
    said = T.apply_auto_threads(be, (32, 48), 1)
    assert be.streams in (1, 2) and f"streams {be.streams} (auto: timed 1 vs 2" in said
    assert _session_threads(be) == T.per_stream(2, be.streams)


@pytest.mark.parametrize("value,expect", [("x", "--streams must be auto or a whole number of streams"),
                                          (0, "--streams must be from 1 to")])
def test_streams_is_auto_or_a_count(value, expect) -> None:
    with pytest.raises(ScasegError, match=expect):
        RunSettings.parse("cpu", 2, None, value)
