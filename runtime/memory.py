"""Memory of a running model: the ``--memory fast|lean|minimal`` settings, and the process's peak RSS (VmHWM).

Where the peak of scaseg-t at 1024x2048 on ONNX Runtime CPU comes from (benchmarks/bench_cpu_memory.py measures
it, docs/runtime.md has the table): not the attention, but the allocators. ONNX Runtime's CPU arena keeps every
block it ever grew to; its memory pattern plans one buffer for all activations up front; and glibc malloc keeps
freed large blocks in its heap once its dynamic mmap threshold has grown past them.
``lean`` plans no memory pattern (the arena keeps what one run needs and no more); ``minimal`` also turns
the arena off and pins glibc's mmap threshold at 1 MiB, so that large buffers are mapped and handed back on free
(the least memory, at the cost of page faults on every run).

``fast`` (the default) pins glibc the other way: blocks up to 32 MiB (a 2160p RGB frame is 24 MiB) come from its
heaps, and up to 1 GiB freed at the top of a heap is kept for the next allocation instead of handed back. A video
pipeline frees and allocates the same camera-sized buffers for every frame, several frames at once in several
threads; with glibc's dynamic default it handed them back and took them again as fresh pages, which the kernel
zeroes on a page fault (with this and frames freed at once, scaseg-infer's page faults per 1080p frame went from
about 1000 to 160-340: benchmarks/bench_pipeline.py, docs/performance.md). The peak is what the buffers alive at
once need, as before; what is kept stays with the process until it exits.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from scaseg.errors import ScasegError


@dataclass(frozen=True)
class MemorySettings:
    """How a backend allocates: ONNX Runtime's CPU arena and memory pattern, and glibc's mmap and trim thresholds."""

    cpu_arena: bool = True
    mem_pattern: bool = True
    #: bytes; malloc maps blocks of this size and up and unmaps them on free (None: glibc's dynamic default)
    mmap_threshold: Optional[int] = None
    #: bytes; free memory at the top of a malloc heap beyond this goes back to the system (None: glibc's default)
    trim_threshold: Optional[int] = None


MEMORY_MODES = {
    "fast": MemorySettings(mmap_threshold=32 << 20, trim_threshold=1 << 30),
    "lean": MemorySettings(mem_pattern=False),
    "minimal": MemorySettings(cpu_arena=False, mem_pattern=False, mmap_threshold=1 << 20),
}
#: chosen by benchmarks/bench_cpu_memory.py (docs/performance.md, "Memory"): only minimal stays under 1 GiB for
#: scaseg-t at 1024x2048, and it ran at about two thirds of fast's speed there; speed is the default. ``lean`` keeps
#: glibc's malloc defaults (the frames of a video then take fresh pages, as before ``fast`` pinned its thresholds)
DEFAULT_MEMORY = "fast"

Memory = Union[str, MemorySettings, None]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def memory_settings(memory: Memory) -> MemorySettings:
    """``--memory`` (lean | fast, None: the default) or explicit settings -> MemorySettings."""
    if isinstance(memory, MemorySettings):
        return memory
    name = DEFAULT_MEMORY if memory is None else str(memory).strip().lower()
    if name not in MEMORY_MODES:
        raise ScasegError(f"unknown memory mode {memory!r}: expected one of {', '.join(MEMORY_MODES)}")
    return MEMORY_MODES[name]


def _mallopt(param: int, value: int) -> bool:
    """glibc's mallopt (process-wide, never undone); False where the C library is not glibc or refuses the value.
    Setting either threshold turns glibc's dynamic mmap threshold off."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(param, int(value)))


def set_mmap_threshold(nbytes: int) -> bool:
    """Pin glibc malloc's mmap threshold: blocks of ``nbytes`` and up are mapped, and unmapped on free."""
    return _mallopt(_M_MMAP_THRESHOLD, nbytes)


def set_trim_threshold(nbytes: int) -> bool:
    """Pin glibc malloc's trim threshold: free memory at the top of a heap beyond ``nbytes`` goes back."""
    return _mallopt(_M_TRIM_THRESHOLD, nbytes)


def apply_process_settings(settings: MemorySettings) -> bool:
    """The part of the settings that belongs to the process rather than to one session: malloc's thresholds
    (open_backend applies them, for every backend: the frames a command handles are the process's too). Process-wide
    and never undone: a long-lived process keeps what ``fast`` keeps until it exits.

    The trim threshold is set only once the mmap threshold was taken: setting either turns glibc's dynamic mmap
    threshold off, and a refused 32 MiB (a C library with a lower limit) would leave it at 128 KiB, mapping every
    frame anew. Returns whether everything asked for was applied (True when nothing was asked)."""
    if settings.mmap_threshold is not None and not set_mmap_threshold(settings.mmap_threshold):
        return False
    if settings.trim_threshold is not None:
        return set_trim_threshold(settings.trim_threshold)
    return True


def _status_kib(key: str) -> Optional[int]:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def rss_mb() -> Optional[float]:
    """The process's resident set now, in MiB (None where /proc is absent)."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024


def peak_rss_mb() -> Optional[float]:
    """The process's peak resident set (VmHWM) in MiB: since it started, or since the last reset_peak_rss."""
    kib = _status_kib("VmHWM")
    return None if kib is None else kib / 1024


def reset_peak_rss() -> Optional[str]:
    """Reset the peak RSS to the current RSS (Linux >= 4.0: "5" into /proc/self/clear_refs); None, or why it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as exc:
        return f"/proc/self/clear_refs: {exc.strerror or exc}"
    return None
