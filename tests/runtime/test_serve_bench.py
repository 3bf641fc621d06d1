"""scaseg.runtime.serve_bench without a server: the statistics a load test reports count every request it sent."""
from __future__ import annotations

import pytest

from scaseg.runtime import serve_bench


class _LaggingServer:
    """Statistics as Triton gives them: a request is counted a little after its answer went out."""

    def __init__(self, counted: list[int]) -> None:
        self.counted, self.reads = counted, 0

    def statistics(self) -> dict[str, int]:
        requests = self.counted[min(self.reads, len(self.counted) - 1)]
        self.reads += 1
        return {"requests": requests, "failed": 0, "frames": requests, "executions": max(1, requests // 4),
                "queue_ns": 1000 * requests, "compute_ns": 5000 * requests}


def test_the_run_statistics_wait_for_the_last_request_to_be_counted() -> None:
    server = _LaggingServer([10 + 479, 10 + 479, 10 + 480])
    stats = serve_bench._settled_statistics(server, {"requests": 10, "frames": 10, "executions": 3}, 480)
    assert stats["requests"] == 480 and server.reads == 3


def test_statistics_that_never_count_every_request_are_taken_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve_bench, "STATS_SETTLE_S", 0.1)
    server = _LaggingServer([470])
    stats = serve_bench._settled_statistics(server, {}, 480)
    assert stats["requests"] == 470 and 2 <= server.reads <= 10  # it waited, then gave up
