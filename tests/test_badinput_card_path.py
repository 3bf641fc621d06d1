"""The card's own path as a new user types it: an int8 ONNX -> an engine, a torch-free engine build, the install lines
of the docs, an int8 export whose guard kept blocks float, and an engine on a machine without a GPU.

Engines are built with the real TensorRT-RTX parser and builder (no GPU needed); where a module must be missing, the
command runs with ``sys.modules[name] = None``, which makes ``import name`` fail as an absent package does.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Sequence

import cv2
import onnx
import pytest

import scaseg
from badinput import command, env, one_line, refused, run, tree
from runtime_models import halves, make_onnx
from scaseg.errors import EXTRAS
from scaseg.metadata import read_onnx_metadata, write_onnx_metadata
from scaseg.runtime.tensorrt import installed
from scaseg.runtime.tensorrt.engine_info import side_file
from scaseg.runtime.tensorrt.cuda import driver_present

ROOT = Path(__file__).resolve().parents[1]
RTX = installed.find_tensorrt("rtx")
needs_rtx = pytest.mark.skipif(RTX is None, reason="TensorRT-RTX (tensorrt-rtx-cu12) is not installed")
SHIPPED_INT8 = Path(scaseg.default_model())  # the cpu-placed int8 file scaseg-infer and scaseg-bench run by default
CC = ["--compute-capability", "8.6"]  # one target: the build is quicker and the same code path
FAST_BENCH = ["--warmup", "0", "-n", "1", "-q", "--threads", "1"]
H, W = 64, 128


def hidden(prog: str, args: Sequence[object], cwd: Path, modules: Sequence[str]) -> subprocess.CompletedProcess:
    """Run ``prog`` with ``modules`` unimportable, as on a machine where those packages were never installed."""
    cmd = command(prog, args)
    cmd[2] = f"import sys; sys.modules.update(dict.fromkeys({list(modules)!r})); {cmd[2]}"
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env(), timeout=600)


def calib_images(folder: Path, count: int = 6) -> Path:
    from scaseg.data.synth import render_scene

    folder.mkdir()
    for i in range(count):
        rgb, _ = render_scene(i, (H, W))
        cv2.imwrite(str(folder / f"frame_{i:02d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.onnx: the shipped checkpoint exported fp32 at 64x128 by scaseg-export; calib/: six synthetic scenes."""
    root = tmp_path_factory.mktemp("card")
    done = run("scaseg-export", [scaseg.weights_path("scaseg-t-synth"), "--imgsz", f"{H}x{W}", "-o", "model.onnx",
                                 "--parity-images", "1", "-q"], root, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    calib_images(root / "calib")
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny int8 (tensorrt-ready Q/DQ) and fp16 ONNX files of tests/runtime_models.py, and a fp32 engine."""
    root = tmp_path_factory.mktemp("tiny")
    make_onnx(root / "tiny.int8.onnx", precision="int8")
    make_onnx(root / "tiny.fp16.onnx", precision="fp16")
    make_onnx(root / "tiny.onnx")
    cv2.imwrite(str(root / "frame.png"), cv2.cvtColor(halves(32, 48), cv2.COLOR_RGB2BGR))
    if RTX is not None:
        done = run("scaseg-export", ["tiny.onnx", "--format", "engine", *CC, "-q"], root)
        assert done.returncode == 0, done.stderr[-2000:]
    return root


def _side(engine: Path) -> dict:
    return json.loads(side_file(engine).read_text())


# --- 9: an int8 ONNX -> an engine ------------------------------------------------------------------------------


@needs_rtx
@pytest.mark.parametrize("name,precision", [("tiny.int8.onnx", "int8"), ("tiny.fp16.onnx", "fp16")])
def test_engine_precision_is_the_onnx_own_without_precision(tiny: Path, name: str, precision: str) -> None:
    done = run("scaseg-export", [name, "--format", "engine", *CC], tiny)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"building an {precision} engine" in done.stdout
    engine = tiny / name.replace(".onnx", ".engine")
    side = _side(engine)
    assert side["precision"] == precision and side["extra"]["tensorrt"]["precision"] == precision
    assert "[TensorRT]" not in done.stderr  # TensorRT's own log only with --verbose


@needs_rtx
def test_verbose_prints_tensorrt_own_log(tiny: Path, tmp_path: Path) -> None:
    done = run("scaseg-export", [tiny / "tiny.onnx", "--format", "engine", *CC, "-o", tmp_path / "v.engine", "-v"],
               tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[TensorRT]" in done.stderr


@needs_rtx
def test_a_parser_rejection_is_one_line_without_tensorrt_own_log(tiny: Path, tmp_path: Path) -> None:
    """A graph TensorRT's parser refuses (NonMaxSuppression on 4-D boxes): its own log lines stay behind --verbose."""
    model = onnx.load(str(tiny / "tiny.onnx"))
    model.graph.node.append(onnx.helper.make_node("NonMaxSuppression", ["logits", "logits"], ["selected"]))
    model.graph.output.append(onnx.helper.make_tensor_value_info("selected", onnx.TensorProto.INT64, None))
    onnx.save(model, str(tmp_path / "nms.onnx"))
    line = refused("scaseg-export", ["nms.onnx", "--format", "engine", *CC, "-o", "out/nms.engine"], tmp_path,
                   expect="TensorRT's ONNX parser rejected nms.onnx: node")
    assert "NonMaxSuppression" in line


@needs_rtx
@pytest.mark.slow
def test_cpu_placed_int8_is_refused_with_the_command_that_works(card: Path) -> None:
    """The default int8 file (cpu placement) beside its float ONNX: one sentence naming the command, which works."""
    (card / "model.int8.onnx").write_bytes(SHIPPED_INT8.read_bytes())
    lines = [refused("scaseg-export", ["model.int8.onnx", "--format", "engine", *extra], card)
             for extra in ([], ["--precision", "int8"], ["--precision", "int8", "-o", "out/m.engine"])]
    for line in lines:
        assert "ONNX Runtime's CPU kernels" in line and "CUDA driver" not in line, line
    suggested = re.search(r"with (scaseg-export .*? --calib DIR)", lines[0])
    assert suggested is not None and suggested.group(1) == (
        "scaseg-export model.onnx --format engine --precision int8 --calib DIR"), lines[0]
    args = shlex.split(suggested.group(1).replace("DIR", "calib"))[1:]
    done = run("scaseg-export", [*args, "--calib-num", "4", "--max-miou-drop", "100", *CC, "-q"], card, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    side = _side(card / "model.int8.engine")
    counts = side["extra"]["tensorrt"]["layer_precisions"]
    assert side["precision"] == "int8" and counts["int8"] >= 0.9 * sum(counts.values()), counts


@needs_rtx
def test_cpu_placed_int8_names_the_checkpoint_or_says_what_is_missing(tmp_path: Path) -> None:
    # The shipped file itself: its checkpoint lies beside it.
    line = refused("scaseg-export", [SHIPPED_INT8, "--format", "engine", "-o", "m.engine"], tmp_path)
    assert f"scaseg-export {SHIPPED_INT8.with_name('scaseg-t-synth.pth')} --format engine --precision int8" in line
    # A copy alone in a folder: the sentence says what MODEL.pth stands for.
    (tmp_path / "alone.int8.onnx").write_bytes(SHIPPED_INT8.read_bytes())
    line = refused("scaseg-export", ["alone.int8.onnx", "--format", "engine", "--precision", "fp16"], tmp_path)
    assert "scaseg-export MODEL.pth --format engine --precision fp16 (MODEL.pth: the checkpoint" in line


# --- 10: the torch-free engine build, and packages that are not installed ------------------------------------


@needs_rtx
def test_engine_build_without_the_onnx_package_is_one_sentence_naming_the_extra(tiny: Path) -> None:
    done = hidden("scaseg-export", ["tiny.onnx", "--format", "engine", "-o", "x.engine"], tiny, ["onnx", "torch"])
    assert done.returncode == 2, done.stderr
    line = one_line(done, "scaseg-export")
    assert "needs the onnx package" in line and 'pip install ".[tensorrt-rtx]"' in line, line
    assert not (tiny / "x.engine").exists()


@needs_rtx
def test_engine_build_runs_without_torch(tiny: Path, tmp_path: Path) -> None:
    done = hidden("scaseg-export", [tiny / "tiny.int8.onnx", "--format", "engine", *CC, "-o", tmp_path / "t.engine"],
                  tmp_path, ["torch"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert _side(tmp_path / "t.engine")["precision"] == "int8"


@pytest.mark.parametrize("prog,args,module,extra", [
    ("scaseg-export", [scaseg.weights_path("scaseg-t-synth"), "-o", "m.onnx"], "torch", "export"),
    ("scaseg-export", [scaseg.weights_path("scaseg-t-synth"), "-o", "m.onnx"], "onnx", "export"),
    ("scaseg-train", ["--data", "nowhere", "-o", "run"], "torch", "export"),
])
def test_a_missing_optional_package_is_one_sentence_naming_its_extra(tmp_path: Path, prog: str, args: list,
                                                                      module: str, extra: str) -> None:
    before = tree(tmp_path)
    done = hidden(prog, args, tmp_path, [module])
    assert done.returncode == 2, done.stderr[-2000:]
    line = one_line(done, prog)
    assert f"needs the {module} package" in line and f'pip install ".[{extra}]"' in line, line
    assert tree(tmp_path) == before


def _extras() -> dict[str, list[str]]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_extras_install_what_the_code_imports() -> None:
    extras = _extras()
    for flavor, extra in installed.EXTRAS.items():  # the engine build from an ONNX reads it with onnx
        assert {installed.MODULES[flavor].replace("_", "-"), "onnx"} <= {n.replace("-cu12", "") for n in
                                                                     _names(extras[extra])}, extra
    assert any(r.startswith("tritonclient[") and "http" in r.split("]")[0] for r in extras["triton"])
    for module, extra in EXTRAS.items():  # the extra each missing-package sentence names holds that package
        assert module.replace("_", "-") in {n.replace("-cu12", "") for n in _names(extras[extra])}, (module, extra)


# --- 11: every install line of the docs works as written -----------------------------------------------------

PIP_INSTALL = re.compile(r"pip install([^`#\n]*)")


def install_problems(text: str, extras: set[str]) -> list[str]:
    """What is wrong with the ``pip install`` lines of ``text``: an extra pyproject lacks, or scaseg from a registry."""
    problems = []
    for match in PIP_INSTALL.finditer(text):
        try:
            words = shlex.split(match.group(1))
        except ValueError:  # an inline example cut by a line break: the rest is on the next line
            words = match.group(1).split()
        skip = False
        for word in words:
            if skip or word.startswith("-"):
                skip = word in ("--index-url", "-i", "--extra-index-url", "-r")
                continue
            local = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", word)
            if local:
                problems += [f"{match.group(0).strip()}: no extra {e!r}" for e in (local.group(1) or "").split(",")
                             if e and e not in extras]
            elif re.split(r"[\[<>=!~@ ]", word, maxsplit=1)[0].lower() == "scaseg":
                problems.append(f"{match.group(0).strip()}: scaseg is in no registry; install the checkout")
    return problems


def test_the_install_line_check_can_fail() -> None:
    extras = set(_extras())
    assert install_problems('pip install scaseg\n`pip install "scaseg[export]"`', extras) == [
        "pip install scaseg: scaseg is in no registry; install the checkout",
        'pip install "scaseg[export]": scaseg is in no registry; install the checkout']
    assert install_problems('pip install ".[export,nope]"  # x', extras) == [
        "pip install \".[export,nope]\": no extra 'nope'"]
    assert install_problems('pip install . onnx\npip install ".[tensorrt-rtx]"\npip install torch==2.13.0 '
                            "--index-url https://x/cpu", extras) == []


@pytest.mark.parametrize("page", ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))])
def test_every_install_line_of_the_docs_works_as_written(page: str) -> None:
    assert install_problems((ROOT / page).read_text(encoding="utf-8"), set(_extras())) == []


# --- 12: an int8 export whose guard kept blocks float says so -----------------------------------------------


def _with_kept_float(src: Path, dest: Path, kept: object) -> Path:
    model = onnx.load(str(src))
    info = read_onnx_metadata(model.metadata_props, src)
    extra = dict(info.extra, calibration=dict(info.extra.get("calibration", {}), kept_float=kept))
    write_onnx_metadata(model, info.replace(extra=extra))
    onnx.save(model, str(dest))
    return dest


def test_bench_table_says_what_the_guard_kept_float(tmp_path: Path) -> None:
    kept = {"blocks_float": 20, "blocks": 44, "macs_float": 0.413, "macs_float_all_quantized": 0.1, "ms": 31.0,
            "ms_all_quantized": 22.5, "runs": 5}
    _with_kept_float(SHIPPED_INT8, tmp_path / "mixed.int8.onnx", kept)
    _with_kept_float(SHIPPED_INT8, tmp_path / "notime.int8.onnx", dict(kept, ms=None, ms_all_quantized=None))
    _with_kept_float(SHIPPED_INT8, tmp_path / "lying.int8.onnx", dict(kept, macs_float="most"))
    done = run("scaseg-bench", ["mixed.int8.onnx", "notime.int8.onnx", "lying.int8.onnx", SHIPPED_INT8, *FAST_BENCH],
               tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    notes = [line for line in done.stdout.splitlines() if "blocks float" in line]
    assert notes == [
        "mixed.int8.onnx: int8 with 20/44 blocks float (the accuracy guard's choice: 41.3% of MACs in float; 1.38x "
        "the time of every block quantized, at export)",
        "notime.int8.onnx: int8 with 20/44 blocks float (the accuracy guard's choice: 41.3% of MACs in float)"]


@pytest.mark.slow
def test_int8_export_says_how_much_compute_the_guard_kept_float(card: Path, tmp_path: Path) -> None:
    """--max-miou-drop 0 against the float model's labels: the guard keeps blocks float, and the export says so."""
    pth = scaseg.weights_path("scaseg-t-synth")
    base = ["--imgsz", f"{H}x{W}", "--precision", "int8", "--calib", card / "calib", "--calib-num", "4",
            "--parity-images", "1"]
    mixed = run("scaseg-export", [pth, *base, "--max-miou-drop", "0", "-o", "mixed.int8.onnx"], tmp_path, timeout=900)
    plain = run("scaseg-export", [pth, *base, "--max-miou-drop", "100", "-o", "plain.int8.onnx"], tmp_path, timeout=900)
    assert mixed.returncode == 0 and plain.returncode == 0, (mixed.stderr[-1500:], plain.stderr[-1500:])
    compute = re.search(r"int8: float_compute: (\d+) of (\d+) blocks kept float: ([\d.]+)% of the conv/GEMM "
                        r"multiply-accumulates run in float \(([\d.]+)% with every block quantized\)", mixed.stdout)
    assert compute is not None, mixed.stdout
    assert float(compute.group(3)) > float(compute.group(4)) > 0
    assert re.search(r"int8: float_cost: [\d.]+ ms per batch vs [\d.]+ ms with every block quantized", mixed.stdout)
    assert "float_compute" not in plain.stdout and "float_cost" not in plain.stdout
    info = read_onnx_metadata(onnx.load(str(tmp_path / "mixed.int8.onnx")).metadata_props, "mixed.int8.onnx")
    kept = info.extra["calibration"]["kept_float"]
    assert kept["blocks_float"] == int(compute.group(1)) and kept["blocks"] == int(compute.group(2))
    assert kept["ms"] > 0 and kept["ms_all_quantized"] > 0
    done = run("scaseg-bench", ["mixed.int8.onnx", "plain.int8.onnx", *FAST_BENCH], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    notes = [line for line in done.stdout.splitlines() if "blocks float" in line]
    assert len(notes) == 1 and notes[0].startswith(f"mixed.int8.onnx: int8 with {kept['blocks_float']}/"), notes


# --- 13: an engine where no GPU is ---------------------------------------------------------------------------


@needs_rtx
@pytest.mark.skipif(driver_present(), reason="an NVIDIA driver is installed here")
@pytest.mark.parametrize("prog,args", [
    ("scaseg-bench", ["tiny.engine", *FAST_BENCH]),
    ("scaseg-infer", ["frame.png", "--model", "tiny.engine", "-o", "out.png", "-q"]),
])
def test_an_engine_without_a_gpu_is_one_sentence_saying_so(tiny: Path, prog: str, args: list[str]) -> None:
    line = refused(prog, args, tiny, expect="no CUDA GPU is present")
    assert "driver version is insufficient" not in line and "tiny.engine" in line
