"""The package layout and the runtime's import boundary (ARCHITECTURE.md §2)."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        check=True, capture_output=True, text=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_scaseg_does_not_import_torch():
    mods = _modules_after("import scaseg")
    assert "torch" not in mods
    assert "onnx" not in mods


def test_runtime_never_imports_torch_or_onnx():
    mods = _modules_after(
        "import scaseg.runtime, pkgutil, importlib\n"
        "for m in pkgutil.walk_packages(scaseg.runtime.__path__, 'scaseg.runtime.'):\n"
        "    importlib.import_module(m.name)\n"
    )
    assert "scaseg.runtime.preprocess" in mods
    assert "torch" not in mods, "a runtime module imports torch at import time"
    assert "onnx" not in mods, "a runtime module imports onnx at import time"


def test_calibration_never_imports_torch():
    mods = _modules_after(
        "import scaseg.calibration, pkgutil, importlib\n"
        "for m in pkgutil.walk_packages(scaseg.calibration.__path__, 'scaseg.calibration.'):\n"
        "    importlib.import_module(m.name)\n"
    )
    assert "torch" not in mods


def test_nothing_generic_in_site_packages():
    import scaseg.calibration
    import scaseg.export
    import scaseg.runtime

    for mod in (scaseg.runtime, scaseg.export, scaseg.calibration):
        assert mod.__name__.startswith("scaseg.")
    # What the install puts on sys.path, without a PYTHONPATH that may name a checkout (whose root holds runtime/).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", "import runtime"], capture_output=True, text=True, cwd="/", env=env)
    assert out.returncode != 0, "a top-level `runtime` package is importable: the namespace mapping leaked"
