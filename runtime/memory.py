"""Memory of a running model: the ``--memory fast|lean|minimal`` settings, and the process's peak RSS (VmHWM).

Where the peak of scaseg-t at 1024x2048 on ONNX Runtime CPU comes from (benchmarks/bench_cpu_memory.py measures
it, docs/runtime.md has the table): not the attention, but the allocators. ONNX Runtime's CPU arena keeps every
block it ever grew to; its memory pattern plans one buffer for all activations up front; and glibc malloc keeps
freed large blocks in its heap once its dynamic mmap threshold has grown past them.
``lean`` plans no memory pattern (the arena keeps what one run needs and no more); ``minimal`` also turns
the arena off and pins glibc's mmap threshold at 1 MiB, so that large buffers are mapped and handed back on free
(the least memory, at the cost of page faults on every run).
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
    """How a backend allocates: ONNX Runtime's CPU arena and memory pattern, and glibc's mmap threshold."""

    cpu_arena: bool = True
    mem_pattern: bool = True
    #: bytes; malloc maps blocks of this size and up and unmaps them on free (None: glibc's dynamic default)
    mmap_threshold: Optional[int] = None


MEMORY_MODES = {
    "fast": MemorySettings(),
    "lean": MemorySettings(mem_pattern=False),
    "minimal": MemorySettings(cpu_arena=False, mem_pattern=False, mmap_threshold=1 << 20),
}
#: chosen by benchmarks/bench_cpu_memory.py (docs/performance.md, "Memory"): only minimal stays under 1 GiB for
#: scaseg-t at 1024x2048, and it ran about 0.7x as fast as fast there and at 512x512; speed is the default
DEFAULT_MEMORY = "fast"

Memory = Union[str, MemorySettings, None]

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def memory_settings(memory: Memory) -> MemorySettings:
    """``--memory`` (lean | fast, None: the default) or explicit settings -> MemorySettings."""
    if isinstance(memory, MemorySettings):
        return memory
    name = DEFAULT_MEMORY if memory is None else str(memory).strip().lower()
    if name not in MEMORY_MODES:
        raise ScasegError(f"unknown memory mode {memory!r}: expected one of {', '.join(MEMORY_MODES)}")
    return MEMORY_MODES[name]


def set_mmap_threshold(nbytes: int) -> bool:
    """Pin glibc malloc's mmap threshold (process-wide, never undone); False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(nbytes)))


def apply_process_settings(settings: MemorySettings) -> None:
    """The part of the settings that belongs to the process rather than to one session: malloc's threshold."""
    if settings.mmap_threshold is not None:
        set_mmap_threshold(settings.mmap_threshold)


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
