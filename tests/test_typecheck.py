"""mypy over the whole package, with TensorRT's published stubs.

The package is checked where it lies: scaseg/runtime, scaseg/export and scaseg/calibration are links to the
top-level folders (docs/layout.md), so mypy gives each file one module name and follows the imports between the
four folders. Standard TensorRT 8.5 / 10.x / 11.x builds need a GPU, which this project has not had: mypy against
tensorrt-stubs is what checks those branches (the TensorRT-RTX ones also run in tests/export/engine/test_trt_build.py).
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _repair_stub(text: str) -> str:
    """tensorrt-stubs 10.13 does not parse as published: four methods name a parameter ``in`` and add_scale_nd puts
    a required parameter after defaulted ones. Rename/default those, leave every type as published."""
    out = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("def "):
            line = re.sub(r"([(,]\s*)in:", r"\1in_:", line)
            match = re.match(r"(\s*def \w+\()(.*)(\)\s*->.*)", line, re.S)
            if match:
                params, seen = [], False
                for param in match.group(2).split(", "):
                    if "=" in param:
                        seen = True
                    elif seen and ":" in param and not param.lstrip().startswith("*"):
                        param += " = ..."
                    params.append(param)
                line = match.group(1) + ", ".join(params) + match.group(3)
        out.append(line)
    return "".join(out)


def _tensorrt_stubs(folder: Path) -> Path:
    """A MYPYPATH folder with tensorrt-stubs, repaired: they ship without py.typed in tensorrt/, so mypy ignores them
    where they lie."""
    spec = importlib.util.find_spec("tensorrt_stubs")
    if spec is None or spec.origin is None:
        pytest.skip("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)")
    site = Path(spec.origin).resolve().parents[1]
    if not (site / "tensorrt" / "__init__.pyi").is_file():
        pytest.skip(f"tensorrt-stubs did not install tensorrt/__init__.pyi under {site}")
    for package in ("tensorrt", "tensorrt_bindings"):
        shutil.copytree(site / package, folder / package, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for pyi in folder.rglob("*.pyi"):
        pyi.write_text(_repair_stub(pyi.read_text(encoding="utf-8")), encoding="utf-8")
    return folder


@pytest.mark.slow
def test_every_module_of_the_package_type_checks(tmp_path: Path) -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed")
    stubs = _tensorrt_stubs(tmp_path / "stubs")
    # A canary that misuses the API: if mypy reports it, the stubs were really used (tensorrt is not Any).
    canary = tmp_path / "canary_trt.py"
    canary.write_text("def f() -> None:\n    import tensorrt as trt\n"
                      "    trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(b'').no_such_attr\n")
    env = dict(os.environ, MYPYPATH=str(stubs))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir",
         str(tmp_path / "cache"), "scaseg", str(canary)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    assert not any("errors prevented further checking" in ln for ln in lines), "\n".join(lines[:20])
    ours = [ln for ln in lines if ln.startswith("scaseg/")]
    assert not ours, "mypy errors in the package:\n" + "\n".join(ours)
    assert any(ln.startswith(str(canary)) and "no_such_attr" in ln for ln in lines), (
        "the canary passed, so tensorrt resolved to Any and nothing was checked:\n" + "\n".join(lines[:20]))
    # Every module was checked (runtime/, export/ and calibration/ as well as scaseg/), and the canary.
    modules = len({(Path(d) / f).resolve() for d, _, files in os.walk(ROOT / "scaseg", followlinks=True)
                   for f in files if f.endswith(".py")})  # the folder links followed, as mypy follows them
    assert f"(checked {modules + 1} source files)" in lines[-1], lines[-1]


def test_stub_repair_fixes_only_syntax() -> None:
    text = ("    def get_workspace_size(self, in: list[int], out: list[int]) -> int:\n"
            "    def add_scale_nd(self, input: ITensor, shift: Weights = None, channel_axis: int) -> IScaleLayer:\n"
            "    def keep(self, a: int, b: int = 1, *args: int) -> None:\n")
    fixed = _repair_stub(text).splitlines()
    assert fixed[0] == "    def get_workspace_size(self, in_: list[int], out: list[int]) -> int:"
    assert fixed[1] == ("    def add_scale_nd(self, input: ITensor, shift: Weights = None, "
                        "channel_axis: int = ...) -> IScaleLayer:")
    assert fixed[2] == "    def keep(self, a: int, b: int = 1, *args: int) -> None:"
