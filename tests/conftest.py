"""Shared test configuration: the `gpu` marker runs only where TensorRT and a CUDA device exist."""
from __future__ import annotations

import os
import signal
from typing import Iterator

import pytest

# OpenMP threads that spin while they wait make PyTorch many times slower as soon as anything else wants the same
# cores (measured on this 2-core machine: a training step 4.8 vs 0.5 images/s). Set before torch is imported;
# on an idle machine passive waiting costs nothing measurable. An explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The Ctrl-C tests need SIGINT to reach Python, in this process (_thread.interrupt_main) and in the commands it
# starts. A shell that runs pytest in the background (`bash .ci/run &`, nohup) starts it with SIGINT ignored, and
# an ignored signal stays ignored across fork and exec: every Ctrl-C test would then see a command that runs to
# its end. Python's own handler here makes the children start with the default disposition again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Trace with one torch thread: the graph is the same at any thread count, and tracing a small input is a chain
    of tiny ops where a second thread only adds barrier waits (on a busy 2-core machine each costs a time slice;
    the trt_lint variant sweep ran about 1.5-2x faster this way)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tensorrt_and_cuda() -> bool:
    """True only where the TensorRT runtime imports (not just its type stubs) and a CUDA device answers."""
    from scaseg.runtime.tensorrt.installed import installed_flavors

    if not installed_flavors():
        return False
    try:
        from scaseg.runtime.tensorrt.cuda import load_cuda

        return load_cuda().device_count() > 0
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


@pytest.fixture(scope="session")
def fp32_onnx(tmp_path_factory: pytest.TempPathFactory):
    """A tiny scaseg-t exported as scaseg-export does it (tests/calibration_models.py), once per session."""
    pytest.importorskip("torch")
    from calibration_models import export_tiny

    return export_tiny(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory):
    """A folder of street scenes of mixed sizes and channel counts (tests/calibration_models.py)."""
    from calibration_models import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("calib"))
