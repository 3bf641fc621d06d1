"""scaseg.runtime.backends.torch: the eager reference backend, opened directly (through open_backend and against
the model's own output: test_backends.py::test_torch_reference_backend_runs_a_checkpoint)."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scaseg.errors import ScasegError  # noqa: E402
from scaseg.runtime.backends import RunSettings  # noqa: E402
from scaseg.runtime.backends.threads import auto_threads  # noqa: E402
from scaseg.runtime.backends.torch import TorchBackend  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scaseg import build, save_checkpoint

    torch.manual_seed(0)
    model = build("scaseg-t", num_classes=2).eval()
    return Path(save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "t.pth", class_names=["a", "b"],
                                input_size=(32, 32)))


@pytest.fixture
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_auto_uses_every_core_and_set_threads_reaches_torch(checkpoint: Path, keep_torch_threads) -> None:
    be = TorchBackend(str(checkpoint), settings=RunSettings.parse("cpu", "auto"))
    assert be.requested_threads is None and be.threads == auto_threads() == torch.get_num_threads()
    be.set_threads(1)
    assert be.threads == 1 and torch.get_num_threads() == 1
    given = TorchBackend(str(checkpoint), settings=RunSettings.parse("cpu", "1"))
    assert given.requested_threads == given.threads == 1


def test_any_batch_and_size_and_float64_input(checkpoint: Path, keep_torch_threads) -> None:
    be = TorchBackend(str(checkpoint), settings=RunSettings.parse("cpu", "1"))
    meta = be.get_input_metadata()
    assert meta.shape == (None, 3, None, None) and meta.dtype == np.float32 and meta.name == be.info.input_name
    assert be.device == "CPU" and be.name == "torch"
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 64))
    out = be.infer(x)  # float64 in: converted, not refused
    assert out.shape == (2, 2, 32, 64) and out.dtype == np.float32
    np.testing.assert_allclose(be.infer(x.astype(np.float32)), out)
    be.close()
    assert not hasattr(be, "model")
    be.close()  # twice is harmless


def test_given_metadata_replaces_the_checkpoints(checkpoint: Path, keep_torch_threads) -> None:
    own = TorchBackend(str(checkpoint), settings=RunSettings.parse("cpu", "1")).info
    assert own.class_names == ["a", "b"] and own.input_size == (32, 32)
    other = dataclasses.replace(own, class_names=["x", "y"])
    assert TorchBackend(str(checkpoint), other, RunSettings.parse("cpu", "1")).info.class_names == ["x", "y"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_without_cuda_is_one_sentence(checkpoint: Path) -> None:
    with pytest.raises(ScasegError, match="sees no CUDA device"):
        TorchBackend(str(checkpoint), settings=RunSettings.parse("cuda", "1"))


def test_no_pytorch_is_one_sentence_with_the_way_out(checkpoint: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ScasegError, match=r"needs PyTorch, which is not installed .*export it to ONNX elsewhere"):
        TorchBackend(str(checkpoint))
