"""Shared test configuration: the `gpu` marker runs only where TensorRT and a CUDA device exist."""
from __future__ import annotations

import importlib.util
import os

import pytest


def _tensorrt_and_cuda() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:  # a CUDA device must answer, not merely a driver library be present
        from cuda import cudart  # type: ignore[import-not-found]

        err, count = cudart.cudaGetDeviceCount()
        return int(err) == 0 and count > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _tensorrt_and_cuda():
        return
    skip = pytest.mark.skip(reason="needs TensorRT and a CUDA GPU (not present on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CI machine has 2 cores; keep numerical libraries from oversubscribing them.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
