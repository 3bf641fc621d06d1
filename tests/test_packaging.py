"""The built wheel: one `scaseg` namespace, every subpackage, the shipped checkpoint, working entry points."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools reuses a checkout's build/ folder, where a module that was moved or removed
    # since the last build would still sit and land in the wheel.
    src = tmp_path_factory.mktemp("src") / "scaseg"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns("build", ".git", "*.egg-info", "__pycache__", ".venv",
                                                               "demo_out", "runs", ".mypy_cache", ".pytest_cache"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (whl,) = out.glob("scaseg-*.whl")
    return whl


def test_wheel_holds_one_namespace_and_every_module(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"scaseg"}, top
    for folder in ("runtime", "export", "calibration"):
        sources = sorted(p.name for p in (ROOT / folder).glob("*.py"))
        packed = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith(f"scaseg/{folder}/") and n.count("/") == 2)
        assert packed == sources, folder
    assert "scaseg/runtime/tensorrt/runner.py" in names and "scaseg/train/loop.py" in names
    shipped = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "scaseg" / "weights").glob("*.*")
                     if p.suffix in (".pth", ".json", ".onnx"))
    assert shipped and all(s in names for s in shipped)
    assert "scaseg/weights/scaseg-t-synth.int8.onnx" in names  # the default model of scaseg-infer / scaseg-bench
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for cmd in ("scaseg-export", "scaseg-bench", "scaseg-infer", "scaseg-synth", "scaseg-train"):
        assert f"{cmd} = " in entry_points


def test_installed_wheel_runs_from_site_packages(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    code = ("import sys, scaseg, scaseg.runtime.bench; from scaseg.runtime.infer import main; "
            "print(scaseg.__file__); print(scaseg.weights_path('scaseg-t-synth')); "
            "print('torch' in sys.modules); sys.argv = ['scaseg-infer', '--version']; main()")
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    where, weights, torch_loaded, version = run.stdout.splitlines()
    assert Path(where).is_relative_to(target) and Path(weights).is_relative_to(target) and Path(weights).is_file()
    assert torch_loaded == "False"
    assert version.startswith("scaseg-infer ")
