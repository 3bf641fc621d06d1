"""The options scaseg-bench and scaseg-infer share: backend, device, threads, memory, input size and batch, said once.

What they parse into is checked once, at the command's edge: device, threads and memory into
``runtime.backends.RunSettings``, the rest into each command's request (``BenchRequest``, ``InferRequest``)."""
from __future__ import annotations

from enum import Enum
from typing import Any

import typer

from scaseg.cli import AUTO, SIZE_METAVAR
from scaseg.runtime.backends import BACKENDS
from scaseg.runtime.backends.threads import MAX_THREADS_PER_CPU, PROBE_MAX_PIXELS
from scaseg.runtime.memory import DEFAULT_MEMORY, MEMORY_MODES

# An Enum so that --help lists the choices and the parser refuses others; built from the one list of backends.
BackendName = Enum("BackendName", {name: name for name in BACKENDS}, type=str)  # type: ignore[misc]
MemoryMode = Enum("MemoryMode", {name: name for name in MEMORY_MODES}, type=str)  # type: ignore[misc]

BACKEND_HELP = ("Runtime: auto picks it from the model file's suffix (.onnx: onnxruntime, .trt/.engine/.plan: "
                "tensorrt, .pth: torch); openvino runs an .onnx on OpenVINO's CPU plugin (pip install "
                "\".[openvino]\"), openvino:bf16 in bf16 where the CPU has it.")

DEVICE_METAVAR = "auto|cpu|cuda[:N]|tensorrt"


def backend_option(repeat: bool = False) -> Any:
    """--backend; ``repeat``: scaseg-bench takes several and times every model on each."""
    if repeat:
        # The metavar as a single --backend shows it (typer writes "<list[...]>" for a list).
        return typer.Option([BackendName("auto")], "--backend", show_default="auto", metavar=f"<{'|'.join(BACKENDS)}>",
                            help=BACKEND_HELP + " Repeat it to compare runtimes in one table.")
    return typer.Option(BackendName("auto"), "--backend", help=BACKEND_HELP)


def memory_option() -> Any:
    return typer.Option(MemoryMode(DEFAULT_MEMORY), "--memory",
                        help="How the runtime allocates (ONNX Runtime's settings, and malloc's for every backend). "
                        "fast: ONNX Runtime's defaults, and malloc keeps freed blocks for reuse (video frames: no "
                        "fresh pages per frame); lean: no memory pattern planned up front (ONNX Runtime's arena "
                        "keeps what a run needs; malloc's defaults); minimal: also no arena, and malloc hands large blocks back to the "
                        "system (the least memory, slower: fresh pages every run). Measured: docs/performance.md.")


def device_option() -> Any:
    return typer.Option("auto", "--device", metavar=DEVICE_METAVAR,
                        help="Where to run: auto takes the fastest present (TensorRT, then CUDA, then CPU); "
                        "tensorrt is ONNX Runtime's TensorRT provider.")


def threads_option() -> Any:
    return typer.Option(AUTO, "--threads", metavar="auto|N",
                        help="CPU threads for inference (ONNX Runtime, PyTorch, OpenVINO). auto: for inputs up to "
                        f"{PROBE_MAX_PIXELS // 1024}K pixels (batch x H x W) 1 thread and every core are timed at "
                        "load and the faster is kept; larger inputs use every core. The choice is printed. "
                        "OpenVINO takes N; with auto it keeps its own thread count. N: 1 to "
                        f"{MAX_THREADS_PER_CPU} per CPU.")


def imgsz_option() -> Any:
    return typer.Option(None, "--imgsz", metavar=SIZE_METAVAR,
                        help="Network input size for models with dynamic H/W (static models keep theirs).",
                        show_default="the size the model was trained at, else the image's")


def batch_option(what: str) -> Any:
    return typer.Option(None, "--batch", "-b", min=1, help=f"{what} per inference call (dynamic-batch models).",
                        show_default="the model's batch, or 1")


SERVER_HELP = ("a Triton server (http://HOST:PORT or grpc://HOST:PORT) serving a frames-in, labels-out scaseg model (the "
               "python backend of scaseg-export's Triton repositories; scaseg-serve runs one; docs/triton.md)")
SERVER_OWNS = "the runtime, device, thread count and input size are the server's then"


def server_option(what: str, after: str) -> Any:
    """--server URL: run through a Triton server instead of a local model (scaseg-infer, scaseg-bench)."""
    return typer.Option(None, "--server", metavar="URL", help=f"{what} {SERVER_HELP}; {after}.",
                        show_default="none: the model runs here")


def model_name_option() -> Any:
    return typer.Option(None, "--model-name", metavar="NAME", help="With --server: the served model.",
                        show_default="the server's only model")
