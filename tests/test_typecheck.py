"""mypy over every module of the package (scaseg/, runtime/, export/, calibration/), TensorRT against its stubs.

mypy cannot follow the folder-to-import mapping of pyproject's package-dir (scaseg.runtime is runtime/), so the
package is laid out as it installs, from that mapping, with links in a temporary folder: imports between the four
folders are then checked like any other, instead of resolving to Any.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
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


def _package_folders() -> dict[str, str]:
    """Import package -> folder of the checkout, from pyproject's package-dir (the one home of that mapping)."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        setuptools = tomllib.load(f).get("tool", {}).get("setuptools", {})
    return {"scaseg": "scaseg", **setuptools.get("package-dir", {})}


def _lay_out(stage: Path, folders: dict[str, str]) -> None:
    """Links under ``stage`` that place each folder at its import path (scaseg/runtime -> runtime/, ...)."""
    for package, folder in sorted(folders.items(), key=lambda item: item[0].count(".")):
        target = stage.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for entry in (ROOT / folder).iterdir():
            link = target / entry.name
            if entry.name != "__pycache__" and not link.exists():
                link.symlink_to(entry, target_is_directory=entry.is_dir())


def _in_checkout(line: str, folders: dict[str, str]) -> str:
    """A mypy line about the laid-out package, with the path of the file in the checkout."""
    for package, folder in sorted(folders.items(), key=lambda item: -item[0].count(".")):
        prefix = package.replace(".", "/") + "/"
        if line.startswith(prefix):
            return folder + "/" + line[len(prefix):]
    return line


@pytest.mark.slow
def test_every_module_of_the_package_type_checks(tmp_path: Path) -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed")
    stubs = _tensorrt_stubs(tmp_path / "stubs")
    folders = _package_folders()
    stage = tmp_path / "stage"
    _lay_out(stage, folders)
    # A canary that misuses the API: if mypy reports it, the stubs were really used (tensorrt is not Any).
    canary = tmp_path / "canary_trt.py"
    canary.write_text("def f() -> None:\n    import tensorrt as trt\n"
                      "    trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(b'').no_such_attr\n")
    env = dict(os.environ, MYPYPATH=str(stubs))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir",
         str(tmp_path / "cache"), "scaseg", str(canary)],
        cwd=stage, env=env, capture_output=True, text=True, timeout=600,
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    assert not any("errors prevented further checking" in ln for ln in lines), "\n".join(lines[:20])
    ours = [_in_checkout(ln, folders) for ln in lines if ln.startswith("scaseg/")]
    assert not ours, "mypy errors in the package:\n" + "\n".join(ours)
    assert any(ln.startswith(str(canary)) and "no_such_attr" in ln for ln in lines), (
        "the canary passed, so tensorrt resolved to Any and nothing was checked:\n" + "\n".join(lines[:20]))
    # Every module was checked (runtime/, export/ and calibration/ as well as scaseg/), and the canary.
    modules = len({p.resolve() for folder in folders.values() for p in (ROOT / folder).rglob("*.py")})
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
