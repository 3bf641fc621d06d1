"""Memory: whether an allocation fits before it is made (images before decoding, scaseg-bench's batch,
scaseg-export's estimate), and what a failed allocation was doing, for run_cli's one sentence."""
from __future__ import annotations

import re
from typing import Optional

from scaseg.errors import ScasegError

GiB = 2**30
#: refuse an allocation above available / MEMORY_MARGIN: the sizes checked are estimates, and the process needs room
MEMORY_MARGIN = 1.10


def available_memory() -> Optional[int]:
    """Memory this process can still take, in bytes: MemAvailable, capped by a cgroup v2 limit; None where neither
    is known (then no allocation is refused for want of memory)."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:  # a container's limit (cgroup v2) can be far below the machine's free memory
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            found.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            import psutil  # type: ignore[import-not-found]

            found.append(int(psutil.virtual_memory().available))
        except ImportError:
            pass
    return min(found) if found else None


def format_bytes(n: float) -> str:
    """``1.5 GiB``, ``12.0 MiB``: sizes in the memory sentences."""
    return f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{n / 2**20:.1f} MiB"


def check_memory(nbytes: float, what: str, hint: str = "", error: type[ScasegError] = ScasegError) -> None:
    """Refuse, in one sentence and before it is made, an allocation of about ``nbytes`` that the memory available
    now cannot hold: ``<what> needs about X GiB of memory, but Y GiB is available<hint>``."""
    have = available_memory()
    if have is not None and nbytes * MEMORY_MARGIN > have:
        raise error(f"{what} needs about {format_bytes(nbytes)} of memory, but {format_bytes(have)} is available{hint}")


# What allocators say when they fail. Matched on the exception's class and module and on its message, never by
# importing the library (this module stays light): numpy's _ArrayMemoryError is a MemoryError; PyTorch raises a
# RuntimeError ("DefaultCPUAllocator: can't allocate memory", "CUDA out of memory"), OpenCV a cv2.error
# ("Insufficient memory", "Failed to allocate"), ONNX Runtime its own classes ("Failed to allocate memory",
# "bad allocation", "std::bad_alloc"); a shared library that cannot be mapped is an ImportError or OSError.
_ALLOCATOR_MESSAGE = re.compile(r"can't allocate memory|cannot allocate memory|failed to allocate|insufficient memory|"
                                r"out of memory|bad[_ ]alloc|failed to map segment", re.IGNORECASE)
_SIZE_IN_BYTES = re.compile(r"(?:allocate|size of|buffer of size)\s+(\d+)(?:\s*bytes)?", re.IGNORECASE)
_SIZE_WITH_UNIT = re.compile(r"allocate\s+([\d.]+)\s*([KMGTPE]?i?B)\b")
_LIBRARY = re.compile(r"([\w.+-]+\.(?:so|dylib|dll)[\w.]*)")
_LIBRARIES = (("torch", "PyTorch"), ("cv2", "OpenCV"), ("onnxruntime", "ONNX Runtime"), ("numpy", "numpy"),
              ("tensorrt", "TensorRT"))


def allocation_failure(exc: BaseException) -> Optional[str]:
    """For an allocation failure in ``exc`` or its causes: what was being done ("allocating 4 GiB in PyTorch")."""
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if not isinstance(current, ScasegError):  # our own sentences may speak of memory; they are not failures
            what = _describe_allocation(current)
            if what is not None:
                return what
        current = current.__cause__ or current.__context__
    return None


def _describe_allocation(exc: BaseException) -> Optional[str]:
    text = str(exc)
    module = type(exc).__module__ or ""
    where = next((label for prefix, label in _LIBRARIES if module.split(".")[0] == prefix), "")
    if isinstance(exc, (ImportError, OSError)):
        if "failed to map segment" not in text and getattr(exc, "errno", None) != 12:  # ENOMEM
            return None
        library = _LIBRARY.search(text)
        return f"loading {library.group(1)}" if library else "loading a shared library"
    if not isinstance(exc, MemoryError):
        if not _ALLOCATOR_MESSAGE.search(text):
            return None
        if not where and not isinstance(exc, RuntimeError):
            return None  # an unknown library's exception that happens to mention memory
        if not where:
            where = "PyTorch" if "Allocator" in text or "CUDA out of memory" in text else ""
    elif not where:
        where = "numpy" if type(exc).__name__ == "_ArrayMemoryError" else "Python"
    size = _allocation_size(text)
    return f"allocating {size + ' ' if size else ''}in {where or 'a library'}"


def _allocation_size(text: str) -> str:
    with_unit = _SIZE_WITH_UNIT.search(text)
    if with_unit:
        return f"{float(with_unit.group(1)):g} {with_unit.group(2)}"
    in_bytes = _SIZE_IN_BYTES.search(text)
    if in_bytes:
        n = float(in_bytes.group(1))
        for unit in ("bytes", "KiB", "MiB", "GiB"):
            if n < 1024 or unit == "GiB":
                return f"{n:.3g} {unit}" if unit != "bytes" else f"{int(n)} bytes"
            n /= 1024
    return ""
