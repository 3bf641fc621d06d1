"""How many CPU threads inference uses: the one rule behind ``--threads auto`` (the default) for the ONNX Runtime and
PyTorch backends (OpenVINO keeps its own count under auto).

Measured with ``benchmarks/bench_threads.py`` (docs/runtime.md): on an idle 2-core machine 2 threads beat 1 at
every size from 128x256 (40.5 vs 49.3 ms) to 512x512; on a loaded one a 2-thread ONNX Runtime pool waits on
cores other jobs hold (30-44 ms instead of 15 ms with 1 thread at 128x256, as the issue measured). No size
rule is right in both cases, so for calls small enough to time cheaply (up to ``PROBE_MAX_PIXELS``) ``apply_auto_threads``
times 1 thread and every core on the real input shape when the model is loaded and keeps the faster; larger
calls use every core (the faster choice at every such size measured, and the runtimes' own default).

``--threads`` is parsed once, at the edge (``parse_threads``, into ``RunSettings.threads``): a count, or None for
auto, the one encoding of auto below the command line. Backends keep it as ``requested_threads``, open with
``auto_threads`` under auto and offer ``Backend.set_threads``; scaseg-bench and scaseg-infer call
``apply_auto_threads`` with the size and batch a Predictor runs. An explicit count is used as given, up to
``MAX_THREADS_PER_CPU`` per CPU (``check_thread_count``, also scaseg-train's bound).

``--streams auto`` (scaseg-infer's default, ``RunSettings.auto_streams``) is chosen here too, after the threads:
1 stream against 2 splitting the same threads, timed on the real shape at load (``_choose_streams``), for the same
reason: how much a second call side by side gains depends on the model and on what else holds the cores.
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Optional, Union

import numpy as np

from scaseg.cli import AUTO, parse_auto_or_count
from scaseg.errors import ScasegError

if TYPE_CHECKING:  # pragma: no cover
    from scaseg.runtime.backends.base import Backend

#: Calls of at most this many pixels (batch x H x W) are timed with 1 thread and with every core at load under
#: ``auto`` (about 2 s for scaseg-t at 512x512 on 2 cores); larger calls use every core.
PROBE_MAX_PIXELS = 512 * 512
PROBE_RUNS = 3
#: --streams auto keeps 2 streams when they finish at least this many times the frames per second of 1 at load
#: (measured: docs/performance.md, "More than one model call at a time": 1.2x for the shipped model)
STREAMS_GAIN = 1.1
#: The bound of an explicit count. More threads than CPUs only time-slice the same CPUs (ONNX Runtime's pool threads
#: spin while they wait), so a count past the CPUs is only ever an experiment on that cost; a few per CPU still
#: measures it, thousands never finish starting (--threads 10000 hung infer, bench and train).
MAX_THREADS_PER_CPU = 4


def cpu_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def max_threads() -> int:
    """The most threads a command takes: MAX_THREADS_PER_CPU x the machine's logical CPUs."""
    return MAX_THREADS_PER_CPU * max(cpu_cores(), os.cpu_count() or 1)


def check_thread_count(count: int, option: str = "--threads", zero: Optional[str] = None) -> int:
    """A thread count typed by a user, checked against 1..max_threads(); ``zero`` names what 0 means where it is
    allowed (scaseg-train: "PyTorch's default"). The one bound of every command's --threads."""
    limit = max_threads()
    if (zero is not None and count == 0) or 1 <= count <= limit:
        return count
    if count > limit:
        raise ScasegError(f"{option} {count} is more than {MAX_THREADS_PER_CPU} per CPU of this machine "
                          f"({limit // MAX_THREADS_PER_CPU} CPUs): at most {limit}")
    raise ScasegError(f"{option} must be {f'0 ({zero})' if zero is not None else 'auto'} or at least 1, got {count}")


def parse_threads(value: Union[str, int, None], option: str = "--threads") -> Optional[int]:
    """``"auto"``/None -> None (the rule decides); 1..max_threads() -> itself; anything else: ScasegError."""
    count = parse_auto_or_count(value, option, "threads")
    return None if count == AUTO else check_thread_count(int(count), option)  # type: ignore[arg-type]


def auto_threads(cores: Optional[int] = None) -> int:
    """The ``auto`` choice without a measurement: every core (the faster count at every size timed on an idle
    machine, and the runtimes' own default)."""
    return cpu_cores() if cores is None else max(1, int(cores))


def per_stream(count: int, streams: int) -> int:
    """The threads each of ``streams`` side-by-side model calls gets out of ``count`` (RunSettings.streams)."""
    return max(1, count // streams)


def describe(count: int, how: str) -> str:
    """One phrase for outputs: ``2 (given)``, ``1 (auto: timed 1 vs 2 threads at load: 15.1 vs 38.0 ms)``."""
    return f"{count} ({how})"


def _probe(backend: "Backend", x: np.ndarray, counts: list[int]) -> dict[int, float]:
    """Median ms of PROBE_RUNS calls on ``x`` (after one warm-up call) per thread count."""
    ms: dict[int, float] = {}
    for count in counts:
        backend.set_threads(count)
        backend.infer(x)
        times = []
        for _ in range(PROBE_RUNS):
            start = time.perf_counter()
            backend.infer(x)
            times.append(time.perf_counter() - start)
        ms[count] = 1000 * float(np.median(times))
    return ms


def apply_auto_threads(backend: "Backend", size: Optional[tuple[int, int]], batch: int) -> str:
    """Apply ``auto`` to the calls a Predictor will make (its input size and batch); returns what to print.

    Small calls: 1 thread and every core are timed on the real shape and the faster is kept. Backends without
    a thread count (TensorRT, GPU providers, OpenVINO under auto) answer ``"-"``. Then --streams auto
    (``backend.auto_streams``): see ``_choose_streams``.
    """
    said = _apply_threads(backend, size, batch)
    streams = _choose_streams(backend, size, batch)
    return f"{said}; {streams}" if streams else said


def _rate(backend: "Backend", x: np.ndarray, callers: int) -> float:
    """Calls per second of ``callers`` threads calling the model at once, 2 x PROBE_RUNS calls each (after one
    warm-up call each): all calls / wall time."""
    from concurrent.futures import ThreadPoolExecutor

    def calls(n: int) -> None:
        for _ in range(n):
            backend.infer(x)

    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(calls, [1] * callers))
        start = time.perf_counter()
        list(pool.map(calls, [2 * PROBE_RUNS] * callers))
        return callers * 2 * PROBE_RUNS / (time.perf_counter() - start)


def _choose_streams(backend: "Backend", size: Optional[tuple[int, int]], batch: int) -> str:
    """--streams auto: on a backend that can run calls side by side, with at least 2 threads chosen and a call small
    enough to time (up to PROBE_MAX_PIXELS), the calls are timed one at a time on all those threads and as 2 streams
    splitting them; 2 streams are kept when they finish STREAMS_GAIN times the frames per second or more (a small
    model whose one call does not keep the cores busy), else 1 (each frame sooner). Returns what to print, or "" when
    there was nothing to choose."""
    threads = backend.threads
    pixels = None if size is None else batch * size[0] * size[1]
    if not backend.auto_streams or threads is None or threads < 2 or pixels is None or pixels > PROBE_MAX_PIXELS:
        return ""
    assert size is not None
    x = _zero_input(backend, size, batch)
    one = batch * _rate(backend, x, 1)  # frames, not calls
    backend.set_streams(2)
    two = batch * _rate(backend, x, 2)
    if two < STREAMS_GAIN * one:
        backend.set_streams(1)
    each = per_stream(threads, 2)
    split = f", {each} thread{'' if each == 1 else 's'} each" if backend.streams == 2 else ""
    return f"streams {backend.streams} (auto: timed 1 vs 2 at load: {one:.1f} vs {two:.1f} frames/s{split})"


def _zero_input(backend: "Backend", size: tuple[int, int], batch: int) -> np.ndarray:
    """A zero input of a call on ``batch`` frames of ``size``: float32 NCHW, or uint8 NHWC for raw-frame graphs."""
    shape = (batch, size[0], size[1], 3) if backend.info.layout == "NHWC" else (batch, 3, size[0], size[1])
    return np.zeros(shape, np.uint8 if backend.info.input_type == "uint8" else np.float32)


def _apply_threads(backend: "Backend", size: Optional[tuple[int, int]], batch: int) -> str:
    """apply_auto_threads for the thread count."""
    count = backend.threads
    if count is None or backend.device != "CPU":
        return "-"
    split = "" if backend.streams == 1 else f", {per_stream(count, backend.streams)} per stream x {backend.streams} streams"
    if backend.requested_threads is not None:
        return describe(count, "given" + split)
    cores = cpu_cores()
    if backend.streams > 1:  # the streams share every core; timing 1 thread against all answers another question
        backend.set_threads(cores)
        return describe(cores, "auto: every core" + split)
    pixels = None if size is None else batch * size[0] * size[1]
    if pixels is None or pixels > PROBE_MAX_PIXELS or cores == 1:
        backend.set_threads(cores)
        return describe(cores, "auto: every core" + ("" if pixels is None else f" for {pixels} px per call"))
    assert size is not None
    ms = _probe(backend, _zero_input(backend, size, batch), sorted({1, cores}))
    best = min(ms, key=lambda k: ms[k])
    backend.set_threads(best)
    timed = " vs ".join(f"{ms[k]:.1f}" for k in sorted(ms))
    return describe(best, f"auto: timed {' vs '.join(str(k) for k in sorted(ms))} threads at load: {timed} ms")
