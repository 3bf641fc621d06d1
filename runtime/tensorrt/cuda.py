"""The few CUDA runtime calls the TensorRT runner needs (memory, streams, copies, graphs): ctypes to libcudart.

One binding, chosen: a ctypes wrapper of the CUDA runtime library, as Polygraphy does (polygraphy/cuda), not
cuda-python. Why: every machine that runs a TensorRT engine already has ``libcudart.so`` (the CUDA toolkit, JetPack,
or the nvidia-cuda-runtime wheel that TensorRT's pip wheels pull in), so this adds no dependency; cuda-python must
match the installed CUDA major version and moved its runtime module twice (``cuda.cudart`` -> ``cuda.bindings.runtime``),
and keeping both paths meant two implementations of the same eighteen calls with only one ever exercised. No
compiled code of our own. It needs CUDA 11.4+ (cudaGraphInstantiateWithFlags, whose signature did not change in
CUDA 12 unlike cudaGraphInstantiate's).

Pointers, streams and graphs are plain ints (``Handle``); :meth:`CudaRuntime.as_int` gives what TensorRT's
``execute_async_v3`` wants. CUDA errors become ScasegError with one sentence.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from scaseg.errors import ScasegError

Handle = Any

# enum values from cuda_runtime_api.h (stable across CUDA 11 and 12)
MEMCPY_HOST_TO_DEVICE = 1
MEMCPY_DEVICE_TO_HOST = 2
CAPTURE_MODE_THREAD_LOCAL = 1  # capture only this thread's work: scaseg-infer decodes frames on other threads
ATTR_CC_MAJOR = 75  # cudaDevAttrComputeCapabilityMajor
ATTR_CC_MINOR = 76  # cudaDevAttrComputeCapabilityMinor
ERROR_INSUFFICIENT_DRIVER = 35  # cudaErrorInsufficientDriver: also what the runtime says where no driver is installed
ERROR_NO_DEVICE = 100  # cudaErrorNoDevice
# The NVIDIA driver's user-space library: libcudart loads it by this name, so where it does not load there is no GPU.
LIBCUDA_NAMES: Sequence[str] = ("libcuda.so.1", "libcuda.so")
NO_GPU = "no CUDA GPU is present"

# Shared-library names tried, newest first; SCASEG_LIBCUDART overrides.
LIBCUDART_NAMES: Sequence[str] = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0")


class CudaRuntime:
    """The CUDA runtime calls the TensorRT runner needs, made into libcudart through ctypes."""

    name = "ctypes"

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        vp, sz, i = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
        pvp = ctypes.POINTER(ctypes.c_void_p)
        # Declared so that 64-bit pointers are never truncated to C int.
        signatures: dict[str, list[Any]] = {
            "cudaGetDeviceCount": [ctypes.POINTER(i)],
            "cudaSetDevice": [i],
            "cudaDeviceGetAttribute": [ctypes.POINTER(i), i, i],
            "cudaGetDeviceProperties": [ctypes.c_char_p, i],
            "cudaMalloc": [pvp, sz],
            "cudaFree": [vp],
            "cudaMallocHost": [pvp, sz],
            "cudaFreeHost": [vp],
            "cudaMemcpyAsync": [vp, vp, sz, i, vp],
            "cudaStreamCreate": [pvp],
            "cudaStreamSynchronize": [vp],
            "cudaStreamDestroy": [vp],
            "cudaStreamBeginCapture": [vp, i],
            "cudaStreamEndCapture": [vp, pvp],
            "cudaGraphInstantiateWithFlags": [pvp, vp, ctypes.c_ulonglong],
            "cudaGraphLaunch": [vp, vp],
            "cudaGraphDestroy": [vp],
            "cudaGraphExecDestroy": [vp],
        }
        for fname, argtypes in signatures.items():
            fn = getattr(lib, fname)
            fn.argtypes = argtypes
            fn.restype = i
        lib.cudaGetErrorString.argtypes = [i]
        lib.cudaGetErrorString.restype = ctypes.c_char_p

    def _check(self, err: int, call: str) -> None:
        if err != 0:
            text = self.lib.cudaGetErrorString(err) or b"unknown error"
            raise ScasegError(f"CUDA call {call} failed: {text.decode(errors='replace')} (error {err})")

    def _out_ptr(self, fname: str, *args: Any) -> int:
        out = ctypes.c_void_p()
        self._check(getattr(self.lib, fname)(ctypes.byref(out), *args), fname)
        return int(out.value or 0)

    def device_count(self) -> int:
        """CUDA devices here; 0 where the driver sees none or where no NVIDIA driver is installed at all."""
        count = ctypes.c_int(0)
        err = self.lib.cudaGetDeviceCount(ctypes.byref(count))
        if err == ERROR_NO_DEVICE or (err == ERROR_INSUFFICIENT_DRIVER and not driver_present()):
            return 0
        self._check(err, "cudaGetDeviceCount")
        return int(count.value)

    def set_device(self, device: int) -> None:
        self._check(self.lib.cudaSetDevice(int(device)), "cudaSetDevice")

    def device_name(self, device: int) -> str:
        # cudaDeviceProp starts with char name[256] in every CUDA version; the buffer is larger than the whole
        # struct (about 1 KiB in CUDA 12) so the call never writes past it.
        buf = ctypes.create_string_buffer(16384)
        self._check(self.lib.cudaGetDeviceProperties(buf, int(device)), "cudaGetDeviceProperties")
        return buf.raw[:256].split(b"\0", 1)[0].decode(errors="replace").strip()

    def compute_capability(self, device: int) -> tuple[int, int]:
        values = []
        for attr in (ATTR_CC_MAJOR, ATTR_CC_MINOR):
            value = ctypes.c_int(0)
            self._check(self.lib.cudaDeviceGetAttribute(ctypes.byref(value), attr, int(device)),
                        "cudaDeviceGetAttribute")
            values.append(int(value.value))
        return values[0], values[1]

    def malloc(self, nbytes: int) -> int:
        return self._out_ptr("cudaMalloc", int(nbytes))

    def free(self, ptr: int) -> None:
        self._check(self.lib.cudaFree(ctypes.c_void_p(ptr)), "cudaFree")

    def malloc_host(self, nbytes: int) -> int:
        return self._out_ptr("cudaMallocHost", int(nbytes))

    def free_host(self, ptr: int) -> None:
        self._check(self.lib.cudaFreeHost(ctypes.c_void_p(ptr)), "cudaFreeHost")

    def memcpy_async(self, dst: int, src: int, nbytes: int, kind: int, stream: Handle) -> None:
        err = self.lib.cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(src), int(nbytes), int(kind),
                                       ctypes.c_void_p(self.as_int(stream)))
        self._check(err, "cudaMemcpyAsync")

    def stream_create(self) -> Handle:
        return self._out_ptr("cudaStreamCreate")

    def stream_synchronize(self, stream: Handle) -> None:
        self._check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(self.as_int(stream))), "cudaStreamSynchronize")

    def stream_destroy(self, stream: Handle) -> None:
        self._check(self.lib.cudaStreamDestroy(ctypes.c_void_p(self.as_int(stream))), "cudaStreamDestroy")

    def begin_capture(self, stream: Handle) -> None:
        err = self.lib.cudaStreamBeginCapture(ctypes.c_void_p(self.as_int(stream)), CAPTURE_MODE_THREAD_LOCAL)
        self._check(err, "cudaStreamBeginCapture")

    def end_capture(self, stream: Handle) -> Handle:
        graph = ctypes.c_void_p()
        err = self.lib.cudaStreamEndCapture(ctypes.c_void_p(self.as_int(stream)), ctypes.byref(graph))
        self._check(err, "cudaStreamEndCapture")
        return int(graph.value or 0)

    def graph_instantiate(self, graph: Handle) -> Handle:
        return self._out_ptr("cudaGraphInstantiateWithFlags", ctypes.c_void_p(self.as_int(graph)), 0)

    def graph_launch(self, graph_exec: Handle, stream: Handle) -> None:
        err = self.lib.cudaGraphLaunch(ctypes.c_void_p(self.as_int(graph_exec)), ctypes.c_void_p(self.as_int(stream)))
        self._check(err, "cudaGraphLaunch")

    def graph_destroy(self, graph: Handle) -> None:
        self._check(self.lib.cudaGraphDestroy(ctypes.c_void_p(self.as_int(graph))), "cudaGraphDestroy")

    def graph_exec_destroy(self, graph_exec: Handle) -> None:
        self._check(self.lib.cudaGraphExecDestroy(ctypes.c_void_p(self.as_int(graph_exec))), "cudaGraphExecDestroy")

    @staticmethod
    def as_int(handle: Handle) -> int:
        """The integer value of a stream/graph handle (what TensorRT's execute_async_v3 takes)."""
        return 0 if handle is None else int(handle)

    def memcpy_htod_async(self, dst: int, src: int, nbytes: int, stream: Handle) -> None:
        self.memcpy_async(dst, src, nbytes, MEMCPY_HOST_TO_DEVICE, stream)

    def memcpy_dtoh_async(self, dst: int, src: int, nbytes: int, stream: Handle) -> None:
        self.memcpy_async(dst, src, nbytes, MEMCPY_DEVICE_TO_HOST, stream)


# --- finding libcudart ------------------------------------------------------------------------------------------


def _libcudart_candidates() -> list[str]:
    """Library names/paths to try: the override, the system names, then the copy pip wheels ship (nvidia-*)."""
    names = [os.environ["SCASEG_LIBCUDART"]] if os.environ.get("SCASEG_LIBCUDART") else []
    names += list(LIBCUDART_NAMES)
    found = ctypes.util.find_library("cudart")
    if found:
        names.append(found)
    for base in sys.path:  # TensorRT's pip wheels pull in nvidia-cuda-runtime-cuXX, which is not on the loader path
        lib_dir = Path(base) / "nvidia" / "cuda_runtime" / "lib"
        if lib_dir.is_dir():
            names += [str(p) for p in sorted(lib_dir.glob("libcudart.so*"), reverse=True)]
    return names


def load_cuda(candidates: Optional[Sequence[str]] = None) -> CudaRuntime:
    """Open libcudart through ctypes, or raise one sentence naming what was tried."""
    tried = list(candidates) if candidates is not None else _libcudart_candidates()
    for name in tried:
        try:
            return CudaRuntime(ctypes.CDLL(name))
        except (OSError, AttributeError):  # AttributeError: a library without the CUDA 11.4+ graph entry points
            continue
    raise ScasegError(
        "the CUDA runtime is not available: make libcudart.so findable (CUDA toolkit, JetPack, or pip install "
        f"nvidia-cuda-runtime-cu12;  tried {', '.join(tried) or 'nothing'}; set SCASEG_LIBCUDART to its path)"
    )


def driver_present(names: Sequence[str] = LIBCUDA_NAMES) -> bool:
    """Whether the NVIDIA driver's library (libcuda) loads here."""
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def require_device(cuda: CudaRuntime, device: int) -> None:
    """Select ``device`` or raise one sentence when it does not exist (NO_GPU where there is none at all)."""
    try:
        count = cuda.device_count()
    except ScasegError as exc:
        raise ScasegError(f"no usable CUDA device: {exc}") from None
    if count == 0:
        why = "the NVIDIA driver sees no GPU" if driver_present() else "no NVIDIA driver is installed"
        raise ScasegError(f"{NO_GPU} on this machine ({why})")
    if not 0 <= int(device) < count:
        raise ScasegError(f"CUDA device {device} does not exist: this machine has {count} CUDA device(s)")
    cuda.set_device(int(device))


def open_device(device: int = 0) -> CudaRuntime:
    """The CUDA runtime with ``device`` selected; one sentence where there is no GPU, no runtime or no such device.

    No NVIDIA driver means no GPU, whatever the CUDA runtime would say about it ("driver version is insufficient").
    """
    if not driver_present():
        raise ScasegError(f"{NO_GPU} on this machine (no NVIDIA driver is installed)")
    cuda = load_cuda()
    require_device(cuda, device)
    return cuda
