"""scaseg-bench --server URL --streams N: throughput and latency of a Triton server under N concurrent streams.

Each stream is a thread with its own connection (runtime/remote.py) that sends one frame per request, waiting for
each answer before the next, as a camera client does. The server's own statistics for the model (requests,
executions, frames, queue and compute time) are read before and after: their difference says how many requests
dynamic batching merged into one execution.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from scaseg.errors import ScasegError
from scaseg.runtime.remote import ServerBackend, open_server


@dataclass
class _Stream:
    latencies: list[float] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    error: Optional[BaseException] = None


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _run_stream(url: str, model_name: str, resize: str, frames: Sequence[np.ndarray], warmup: int, keep: bool,
                gates: tuple[threading.Barrier, threading.Barrier], out: _Stream) -> None:
    try:
        backend = open_server(url, model_name, resize)  # a connection of its own
        for i in range(warmup):
            backend.infer(frames[i % len(frames)][None])
        for gate in gates:  # all warmed up; then all go, once the caller has read the server's statistics
            gate.wait()
        for frame in frames:
            t0 = time.perf_counter()
            labels = backend.infer(frame[None])[0]
            out.latencies.append(time.perf_counter() - t0)
            if keep:
                out.labels.append(labels)
    except BaseException as exc:  # reported by the caller, in the caller's thread
        out.error = exc
        for gate in gates:
            gate.abort()


def server_stats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    """What the server did between two statistics readings, with the average batch and queue time."""
    delta: dict[str, Any] = {key: after[key] - before.get(key, 0) for key in after}
    executions, requests = delta["executions"], delta["requests"]
    delta["average_batch"] = delta["frames"] / executions if executions else float("nan")
    delta["queue_ms"] = delta["queue_ns"] / requests / 1e6 if requests else float("nan")
    delta["compute_ms"] = delta["compute_ns"] / executions / 1e6 if executions else float("nan")
    return delta


#: How long load_test waits for the server's statistics to count every request it answered.
STATS_SETTLE_S = 2.0


def _settled_statistics(backend: ServerBackend, before: dict[str, int], requests: int) -> dict[str, Any]:
    """The server's statistics since ``before``, once they count the run's ``requests``: Triton records a request
    after its response has gone, so a reading taken as the last answer arrives can miss it (479 of 480 requests,
    seen in tests/runtime/test_serve.py). Waits up to STATS_SETTLE_S, then takes what the server says."""
    deadline = time.monotonic() + STATS_SETTLE_S
    while True:
        stats = server_stats_delta(before, backend.statistics())
        if stats["requests"] >= requests or time.monotonic() >= deadline:
            return stats
        time.sleep(0.02)


def load_test(backend: ServerBackend, url: str, streams: int, frames: Sequence[np.ndarray], warmup: int = 1,
              keep: bool = False) -> dict[str, Any]:
    """``streams`` threads each send every frame of ``frames`` (one request each) after ``warmup`` untimed ones.

    Returns throughput (frames/s over the timed part), p50/p99 latency (ms), the server's statistics over the run
    and, with ``keep``, every stream's labels in order (``labels``: one list per stream). Any failed request ends
    the run with its one sentence.
    """
    results = [_Stream() for _ in range(streams)]
    gates = (threading.Barrier(streams + 1), threading.Barrier(streams + 1))
    threads = [threading.Thread(target=_run_stream, name=f"scaseg-stream-{i}", daemon=True,
                                args=(url, backend.model_name, backend.resize, frames, warmup, keep, gates, r))
               for i, r in enumerate(results)]
    for thread in threads:
        thread.start()
    try:
        gates[0].wait()
        before = backend.statistics()
        t0 = time.perf_counter()
        gates[1].wait()
    except threading.BrokenBarrierError:
        before, t0 = {}, time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - t0
    for r in results:
        if r.error is not None:
            raise r.error if isinstance(r.error, (ScasegError, KeyboardInterrupt)) else ScasegError(
                f"a stream failed: {type(r.error).__name__}: {r.error}")
    latencies = [x for r in results for x in r.latencies]
    stats = _settled_statistics(backend, before, len(latencies))
    record: dict[str, Any] = {
        "server": url, "model": backend.model_name, "streams": streams, "frames": len(latencies),
        "frame_hw": list(frames[0].shape[:2]), "seconds": seconds,
        "fps": len(latencies) / seconds if seconds > 0 else float("nan"),
        "p50_ms": _percentile(latencies, 50) * 1e3, "p99_ms": _percentile(latencies, 99) * 1e3,
        "server_stats": stats,
    }
    if keep:
        record["labels"] = [r.labels for r in results]
    return record


def format_load(record: dict[str, Any]) -> str:
    """The table scaseg-bench --server prints: the client's figures beside the server's own."""
    s = record["server_stats"]
    head = ["Streams", "Frames", "Frame", "FPS", "p50 ms", "p99 ms", "Requests", "Executions", "Avg batch",
            "Queue ms", "Compute ms"]
    row = [str(record["streams"]), str(record["frames"]), "x".join(map(str, record["frame_hw"])),
           f"{record['fps']:.1f}", f"{record['p50_ms']:.1f}", f"{record['p99_ms']:.1f}", str(s["requests"]),
           str(s["executions"]), f"{s['average_batch']:.2f}", f"{s['queue_ms']:.2f}", f"{s['compute_ms']:.1f}"]
    widths = [max(len(h), len(c)) for h, c in zip(head, row)]
    lines = ["  ".join(x.rjust(w) for x, w in zip(line, widths)) for line in (head, row)]
    return f"{record['model']} on {record['server']}\n" + "\n".join(lines)
