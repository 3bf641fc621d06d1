"""Where the tests find the repository: one home for paths, so a test module may live in any folder under tests/."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
BENCHMARKS = ROOT / "benchmarks"


def benchmark(name: str) -> ModuleType:
    """The script benchmarks/<name>.py as a module, so a test uses the benchmark's own function rather than a copy.

    Loaded from its file under a private name (``bench.<name>``); its ``main`` does not run."""
    key = f"bench.{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None, name
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
