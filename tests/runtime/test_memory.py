"""runtime/memory.py: the --memory settings reach the ONNX Runtime session, and the peak RSS is read and reset."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from runtime_models import make_onnx, run_main

from scaseg.errors import ScasegError
from scaseg.runtime import memory
from scaseg.runtime.backends import open_backend
from scaseg.runtime.bench import main as bench_main


@pytest.mark.parametrize("mode, arena, pattern", [("fast", True, True), ("lean", True, False), ("minimal", False, False)])
def test_memory_mode_reaches_the_session_options(tmp_path, mode, arena, pattern):
    be = open_backend(make_onnx(tmp_path / "m.onnx"), memory=mode)
    opts = be.session.get_session_options()
    assert (opts.enable_cpu_mem_arena, opts.enable_mem_pattern) == (arena, pattern)
    assert be.memory == memory.MEMORY_MODES[mode]


def test_the_default_and_explicit_settings(tmp_path):
    assert memory.memory_settings(None) == memory.MEMORY_MODES[memory.DEFAULT_MEMORY]
    own = memory.MemorySettings(cpu_arena=False, mem_pattern=True)
    opts = open_backend(make_onnx(tmp_path / "m.onnx"), memory=own).session.get_session_options()
    assert (opts.enable_cpu_mem_arena, opts.enable_mem_pattern) == (False, True)
    with pytest.raises(ScasegError, match="unknown memory mode 'tiny'"):
        memory.memory_settings("tiny")


def test_peak_rss_is_read_and_reset_in_a_fresh_process():
    # A fresh interpreter: 200 MiB touched and freed raise the peak; the reset brings it back to the current RSS.
    code = (
        "import json, numpy as np\n"
        "from scaseg.runtime import memory\n"
        "before = memory.peak_rss_mb()\n"
        "a = np.ones(200 * 2**20 // 8); del a\n"
        "high = memory.peak_rss_mb()\n"
        "why = memory.reset_peak_rss()\n"
        "print(json.dumps([before, high, why, memory.peak_rss_mb(), memory.rss_mb()]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    before, high, why, after, now = json.loads(proc.stdout)
    assert high >= before + 190
    if why is not None:
        pytest.skip(f"this kernel does not let the peak be reset: {why}")
    assert after < high - 150 and abs(after - now) < 20


def test_the_malloc_thresholds_are_set_on_glibc():
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    fast = memory.MEMORY_MODES["fast"]  # what open_backend sets in this process anyway
    assert memory.set_mmap_threshold(fast.mmap_threshold) is True
    assert memory.set_trim_threshold(fast.trim_threshold) is True
    assert memory.apply_process_settings(fast) is True and memory.apply_process_settings(memory.MemorySettings())


_FRAME_ROUNDS = """
import json, resource, sys
import numpy as np
from scaseg.runtime import memory
np._core.multiarray._set_madvise_hugepage(False)  # 4 KiB pages: the count does not hang on huge-page settings
applied = sys.argv[1] == "glibc" or memory.apply_process_settings(memory.MEMORY_MODES[sys.argv[1]])
def rounds(n):  # what a video pipeline does: a few camera frames alive at once, freed, then the next ones
    for _ in range(n):
        frames = [np.empty((1080, 1920, 3), np.uint8) for _ in range(8)]
        for f in frames:
            f.fill(1)
        del frames
rounds(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(10)
print(json.dumps([applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before]))
"""


def test_fast_memory_reuses_freed_frames_where_glibc_hands_them_back():
    # Each mode in a fresh process (mallopt is process-wide and never undone); page faults of ten rounds of eight
    # 1080p frames after a first round, on 4 KiB pages: glibc's dynamic default trims its heap and takes fresh pages
    # every round, minimal maps every frame anew, fast keeps what was freed.
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    faults = {}
    for mode in ("glibc", "fast", "minimal"):
        proc = subprocess.run([sys.executable, "-c", _FRAME_ROUNDS, mode], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        applied, faults[mode] = json.loads(proc.stdout)
        if not applied:
            pytest.skip(f"this C library refuses {mode}'s malloc thresholds (not glibc?)")
    assert faults["fast"] * 4 < min(faults["glibc"], faults["minimal"]), faults


def test_open_backend_applies_the_process_settings(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("scaseg.runtime.backends.apply_process_settings", seen.append)
    open_backend(make_onnx(tmp_path / "m.onnx"), memory="minimal")
    open_backend(make_onnx(tmp_path / "m.onnx"))
    assert seen == [memory.MEMORY_MODES["minimal"], memory.MEMORY_MODES["fast"]]


def test_bench_reports_a_plausible_peak_rss_per_model(tmp_path, capsys, monkeypatch):
    big = make_onnx(tmp_path / "big.onnx", size=(2048, 2048))  # input and logits of 48 MiB each, per call
    small = make_onnx(tmp_path / "small.onnx", size=(32, 48))
    code, out, err = run_main(bench_main, [big, small, "--warmup", "0", "-n", "2", "-q", "-o", tmp_path / "r.json"],
                              capsys, monkeypatch)
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    peaks = [m["peak_rss_mb"] for m in report["models"]]
    assert all(isinstance(p, float) and 30 < p < 16384 for p in peaks)
    head, *rows = out.strip().splitlines()
    assert head.split()[-3:] == ["Peak", "RSS", "(MB)"]
    assert [row.split()[-1] for row in rows] == [f"{p:.0f}" for p in peaks]
    if report["settings"]["peak_rss"] != "per model":
        pytest.skip(f"the peak cannot be reset here: {report['settings']['peak_rss']}")
    # Reset between models: the small model's row does not carry the big one's peak.
    assert peaks[1] < peaks[0] - 100, peaks


@pytest.mark.parametrize("mode, arena", [("fast", True), ("minimal", False)])
def test_the_command_line_option_reaches_the_session(tmp_path, capsys, monkeypatch, mode, arena):
    import scaseg.runtime.bench as bench

    opened = []

    def spy(*args, **kwargs):
        be = open_backend(*args, **kwargs)
        opened.append(be.session.get_session_options().enable_cpu_mem_arena)  # closed (and dropped) after the run
        return be

    monkeypatch.setattr(bench, "open_backend", spy)
    code, _, err = run_main(bench_main, [make_onnx(tmp_path / "m.onnx"), "--memory", mode, "--warmup", "0", "-n", "1",
                                         "-q"], capsys, monkeypatch)
    assert code == 0, err
    assert opened == [arena]
