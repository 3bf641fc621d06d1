"""PyTorch eager reference backend: runs a checkpoint directly (only where torch is installed; imported lazily)."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from scaseg.runtime.backends.base import Backend, InputMetadata, RunSettings, parse_device
from scaseg.runtime.backends.threads import auto_threads
from scaseg.errors import ScasegError
from scaseg.metadata import ModelInfo


class TorchBackend(Backend):
    """A .pth / .pt / .safetensors checkpoint loaded with scaseg.checkpoint.load_model and run in eval mode."""

    name = "torch"

    def __init__(self, path: str, info: Optional[ModelInfo] = None, settings: RunSettings = RunSettings()) -> None:
        try:
            import torch  # the runtime stays torch-free unless this reference backend is asked for
        except ImportError:
            raise ScasegError(f"running the checkpoint {path} needs PyTorch, which is not installed "
                              "(pip install \".[export]\" in the scaseg checkout, or export it to ONNX elsewhere)") from None
        from scaseg.checkpoint import load_model

        kind, index = parse_device(settings.device)
        if kind == "tensorrt":
            raise ScasegError("a PyTorch checkpoint cannot run on --device tensorrt; export it to ONNX or an engine first")
        if kind == "cuda" and not torch.cuda.is_available():
            raise ScasegError("--device cuda was asked for but this PyTorch build sees no CUDA device")
        use_cuda = kind == "cuda" or (kind == "auto" and torch.cuda.is_available())
        self._torch = torch
        self._device = torch.device(f"cuda:{index}" if use_cuda else "cpu")
        loaded: Any = load_model(path, map_location="cpu")
        model, ckpt_info = loaded[0], loaded[1]
        super().__init__(path, info or ckpt_info)
        self.requested_threads = settings.threads
        self.threads = settings.threads or auto_threads()
        torch.set_num_threads(self.threads)
        self.model = model.eval().to(self._device)

    def get_input_metadata(self) -> InputMetadata:
        # Eager mode takes any batch and size.
        return InputMetadata(self.info.input_name, np.dtype(np.float32), (None, 3, None, None))

    def set_threads(self, count: int) -> None:
        """PyTorch's intra-op threads (process-wide)."""
        self.threads = count
        self._torch.set_num_threads(count)

    @property
    def device(self) -> str:
        return "CUDA:%d" % (self._device.index or 0) if self._device.type == "cuda" else "CPU"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self._device))
        out = out.float() if self.info.output == "logits" else out
        return out.cpu().numpy()

    def close(self) -> None:
        self.__dict__.pop("model", None)
