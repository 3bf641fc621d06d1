"""The one small interface every backend implements (ONNX Runtime, OpenVINO, TensorRT, PyTorch), and the settings
it opens with (``RunSettings``: device, threads, memory, checked once)."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

import numpy as np

from scaseg.cli import AUTO, parse_auto_or_count
from scaseg.errors import ScasegError
from scaseg.metadata import ModelInfo
from scaseg.runtime.backends.threads import cpu_cores, parse_threads
from scaseg.runtime.memory import Memory, MemorySettings, memory_settings

Shape = tuple[Optional[int], ...]


@dataclass(frozen=True)
class InputMetadata:
    """The image input of a loaded model as its graph declares it: name, dtype and shape (None: a dynamic axis)."""

    name: str
    dtype: np.dtype
    shape: Shape


DEVICES = ("auto", "cpu", "cuda", "tensorrt")


def parse_device(device: Optional[str]) -> tuple[str, int]:
    """"cuda:1" -> ("cuda", 1); None -> ("auto", 0). Unknown names raise ScasegError."""
    kind, _, index = (device or "auto").strip().lower().partition(":")
    if kind not in DEVICES or (index and not index.isdigit()):
        raise ScasegError(f"unknown device {device!r}: expected one of {', '.join(DEVICES)} (optionally cuda:N)")
    return kind, int(index or 0)


@dataclass(frozen=True)
class RunSettings:
    """Where and how a backend runs, checked once (``RunSettings.parse``, at the edge); the backends trust it.

    ``device``: auto | cpu | cuda[:N] | tensorrt. ``threads``: a count, or None for auto (the one encoding of
    auto below the command line; runtime/backends/threads.py chooses). ``memory``: the allocation settings.
    ``spin``: whether ONNX Runtime's idle CPU threads spin-wait for the next operator (its default: fastest when the
    model has the cores to itself, as in scaseg-bench); scaseg-infer turns it off, because its decode, render and
    encode threads need those cores (measured: benchmarks/bench_pipeline.py --spin, docs/performance.md).
    ``streams``: how many model calls may run at once (scaseg-infer --streams), the threads split between them; more
    than 1 only for ONNX Runtime on the CPU (``check_streams``). ``auto_streams``: --streams auto (streams is then
    1 until runtime/backends/threads.py has timed 1 against 2 streams at load).
    """

    device: str = "auto"
    threads: Optional[int] = None
    memory: MemorySettings = field(default_factory=lambda: memory_settings(None))
    spin: bool = True
    streams: int = 1
    auto_streams: bool = False

    def __post_init__(self) -> None:
        assert self.threads is None or (isinstance(self.threads, int) and self.threads >= 1), self.threads
        assert isinstance(self.streams, int) and self.streams >= 1, self.streams
        assert isinstance(self.memory, MemorySettings), self.memory

    @classmethod
    def parse(cls, device: Optional[str] = None, threads: Union[str, int, None] = None,
              memory: Memory = None, streams: Union[int, str] = 1) -> "RunSettings":
        """The one check of --device, --threads (auto|N), --memory and --streams (auto|N), as typed or as a library
        caller passes them."""
        parse_device(device)
        count = parse_threads(threads)
        wanted = parse_auto_or_count(streams, "--streams", "streams")
        if wanted == AUTO:
            return cls((device or "auto").strip().lower(), count, memory_settings(memory), auto_streams=True)
        return cls((device or "auto").strip().lower(), count, memory_settings(memory),
                   streams=check_streams(wanted, count))  # type: ignore[arg-type]


def check_streams(streams: int, threads: Optional[int]) -> int:
    """--streams: 1 to the thread count (given, or every core under auto): each stream runs on threads of its own."""
    limit = threads if threads is not None else cpu_cores()
    if not isinstance(streams, int) or isinstance(streams, bool) or not 1 <= streams <= limit:
        how = f"--threads {threads}" if threads is not None else f"the {limit} cores of this machine"
        raise ScasegError(f"--streams must be from 1 to {limit} ({how}: each stream needs a thread), got {streams}")
    return streams


def first_line(exc: BaseException) -> str:
    """The first line of a runtime library's exception, for a one-sentence error."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300].rstrip(".")


def check_graph(info: ModelInfo, where: str, inputs: Mapping[str, Shape], outputs: Mapping[str, Shape]) -> None:
    """Compare a loaded graph's inputs and outputs (name -> shape, None for a dynamic axis) with its metadata."""
    if info.input_name not in inputs:
        raise ScasegError(f"the metadata of {where} names input {info.input_name!r} but the graph has {sorted(inputs)}")
    if info.output_name not in outputs:
        raise ScasegError(f"the metadata of {where} names output {info.output_name!r} but the graph has {sorted(outputs)}")
    shape = inputs[info.input_name]
    nhwc = info.layout == "NHWC"  # a raw-frame (uint8) graph takes frames as they are
    if len(shape) != 4 or shape[3 if nhwc else 1] not in (None, 3):
        raise ScasegError(f"the input of {where} has shape {_words(shape)}; expected "
                          f"{'(batch, height, width, 3)' if nhwc else '(batch, 3, height, width)'}")
    static_hw = info.spatial(shape)
    if None not in static_hw and info.input_size is not None and tuple(static_hw) != tuple(info.input_size):
        raise ScasegError(f"the metadata of {where} says input size {tuple(info.input_size)} but the graph takes {tuple(static_hw)}")
    out = outputs[info.output_name]
    want_rank = 4 if info.output == "logits" else 3
    if len(out) != want_rank:
        raise ScasegError(f"the metadata of {where} says the output is {info.output} but the output has rank {len(out)}")
    if info.output == "logits" and out[1] not in (None, info.num_classes):
        raise ScasegError(f"the metadata of {where} says {info.num_classes} classes but the model outputs {out[1]}")


def _words(shape: Shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


class Backend(abc.ABC):
    """A loaded model that maps a preprocessed batch to the model's output.

    ``infer`` takes float32 NCHW (already normalised, at the model's input size), or for a raw-frame model
    (``info.input_type`` uint8) uint8 NHWC frames at its source size, and returns
    float32 logits (B, C, H, W) or integer labels (B, H, W), as ``info.output`` says.
    ``get_input_metadata`` says what the graph takes; ``fixed_batch`` and ``fixed_size`` follow from it.
    Backends are context managers; ``close`` releases device memory and sessions.
    """

    #: short name shown in tables: "onnxruntime", "openvino", "tensorrt", "torch"
    name: str = "backend"
    #: CPU threads the backend runs with, where it has a count of its own (ONNX Runtime and PyTorch always,
    #: OpenVINO when one was given); None: it has none (TensorRT) or leaves it to the library
    threads: Optional[int] = None
    #: the count asked for (kept), or None: --threads auto, so runtime/backends/threads.py may change ``threads``
    requested_threads: Optional[int] = None
    #: how many ``infer`` calls may run at once from different threads (RunSettings.streams); 1: one at a time
    streams: int = 1
    #: --streams auto on a backend that can run calls side by side (ONNX Runtime on the CPU): threads.py may change
    #: ``streams`` with ``set_streams``
    auto_streams: bool = False

    def __init__(self, path: str, info: ModelInfo) -> None:
        self.path = path
        self.info = info

    @property
    def device(self) -> str:
        """Where it runs, in words: "CPU", "CUDA:0", "TensorRT EP"..."""
        return "CPU"

    @property
    def precision(self) -> str:
        """The arithmetic it runs in: the file's precision unless the backend runs it in another (OpenVINO bf16)."""
        return self.info.precision

    @abc.abstractmethod
    def get_input_metadata(self) -> InputMetadata:
        """The image input the loaded graph declares (its real shape, not what the metadata promises)."""

    @property
    def fixed_batch(self) -> Optional[int]:
        """The batch size the graph insists on, or None when it takes any."""
        return self.get_input_metadata().shape[0]

    @property
    def fixed_size(self) -> Optional[tuple[int, int]]:
        """(H, W) the graph insists on, or None when a spatial axis is dynamic."""
        h, w = self.info.spatial(self.get_input_metadata().shape)
        return None if h is None or w is None else (h, w)

    def set_threads(self, count: int) -> None:
        """Run with ``count`` CPU threads from now on; only backends that choose under ``auto`` offer it."""
        raise ScasegError(f"the {self.name} backend does not change its thread count")

    def set_streams(self, streams: int) -> None:
        """Take ``streams`` calls at once from now on, the threads split between them; only backends with
        ``auto_streams`` offer it."""
        raise ScasegError(f"the {self.name} backend runs one call at a time")

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; blocks until the result is on the host."""

    def close(self) -> None:
        """Release resources; safe to call twice."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
