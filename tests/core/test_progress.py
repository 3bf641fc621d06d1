"""Progress on a pipe or in a log file is a few plain lines, never carriage-return redraws or escape codes."""
from __future__ import annotations

import io
import os
import subprocess
import sys

from scaseg import progress as P
from runtime_models import make_onnx


def _plain(stderr: str) -> None:
    assert "\r" not in stderr and "\x1b" not in stderr, repr(stderr[:300])


def test_plain_progress_prints_start_quarters_and_end():
    out = io.StringIO()
    with P.progress(total=8, desc="work", unit="img", file=out) as bar:
        for _ in range(8):
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert lines[0] == "work: 0/8 img"
    assert [line.split()[1] for line in lines[1:4]] == ["25%", "50%", "75%"]
    assert lines[-1].startswith("work: done: 100%, 8/8 img in ") and len(lines) == 5
    _plain(out.getvalue())


def test_plain_progress_iterates_says_when_stopped_early_and_honours_quiet():
    out = io.StringIO()
    bar = P.progress(range(100), desc="it", file=out)
    for i in bar:
        if i == 9:
            break
    bar.close()
    assert out.getvalue().splitlines()[-1].startswith("it: stopped: 9%, 9/100 it")
    quiet = io.StringIO()
    P.set_quiet(True)
    try:
        list(P.progress(range(5), desc="q", file=quiet))
    finally:
        P.set_quiet(False)
    assert quiet.getvalue() == ""


def test_quiet_ends_with_the_command(tmp_path, capsys, monkeypatch):
    from runtime_models import run_main

    from scaseg.runtime.bench import main

    code, _, err = run_main(main, [make_onnx(tmp_path / "m.onnx"), "--runs", "2", "-q"], capsys, monkeypatch)
    assert code == 0 and "model-only" not in err
    out = io.StringIO()
    list(P.progress(range(4), desc="after", file=out))
    assert out.getvalue().startswith("after: 0/4 it")


def test_synth_with_stderr_on_a_pipe_logs_plain_lines(tmp_path):
    done = subprocess.run([sys.executable, "-c", "from scaseg.data.synth.cli import main; main()", str(tmp_path / "d"),
                           "--num", "8", "--size", "48x96", "--video-frames", "4"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    _plain(done.stderr)
    lines = done.stderr.splitlines()
    assert lines[0].startswith("scaseg-synth: 0/12 img") and "done: 100%" in lines[-1] and len(lines) <= 6


def test_bench_and_infer_with_stderr_on_a_pipe_log_plain_lines(tmp_path):
    model = make_onnx(tmp_path / "m.onnx")
    done = subprocess.run([sys.executable, "-c", "from scaseg.runtime.bench import main; main()", str(model),
                           "--warmup", "1", "--runs", "8"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    _plain(done.stderr)
    assert "model-only: done: 100%, 8/8 run" in done.stderr and "end-to-end: done: 100%" in done.stderr
    import cv2
    import numpy as np

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(5):
        cv2.imwrite(str(frames / f"{i}.png"), np.full((32, 48, 3), 40 * i, np.uint8))
    done = subprocess.run([sys.executable, "-c", "from scaseg.runtime.infer import main; main()", str(frames),
                           "-m", str(model)], capture_output=True, text=True, timeout=300, env={**os.environ})
    assert done.returncode == 0, done.stderr
    _plain(done.stderr)
    assert "done: 100%, 5/5 frame" in done.stderr
