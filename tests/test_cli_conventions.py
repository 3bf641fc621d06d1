"""One set of conventions across the commands: -o/--output (none for scaseg-serve, which writes no file),
-q/--quiet, sizes as N or HxW, a --help that
shows flags as flags, lists choices and gives every option a sentence and a default."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer

from scaseg.cli import parse_size
from scaseg.errors import ScasegError
from scaseg.runtime.backends import BACKENDS

COMMANDS = {
    "scaseg-export": "scaseg.export.cli",
    "scaseg-bench": "scaseg.runtime.bench",
    "scaseg-infer": "scaseg.runtime.infer",
    "scaseg-synth": "scaseg.data.synth.cli",
    "scaseg-train": "scaseg.train.cli",
    "scaseg-serve": "scaseg.runtime.serve",
    "scaseg-prune": "scaseg.prune.cli",
}
#: Commands that write no file of their own (scaseg-serve runs a server): no -o/--output.
WRITES_NOTHING = {"scaseg-serve"}


def _click_command(module: str):
    """The click command behind a Typer app (typer ships its own copy of click: no isinstance on click's classes)."""
    import importlib

    mod = importlib.import_module(module)
    app = mod._build_app() if hasattr(mod, "_build_app") else mod.app
    return typer.main.get_command(app)


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "200"}
    out = {}
    for name, module in COMMANDS.items():
        done = subprocess.run([sys.executable, "-c", f"from {module} import main; main()", "--help"],
                              capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        out[name] = done.stdout
    return out


@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_flags_as_flags_and_every_option_explained_with_its_default(name, helps):
    text = helps[name]
    assert "<bool>" not in text and "<str>..." not in text
    assert "-h, --help" in text
    command = _click_command(COMMANDS[name])
    ctx = command.context_class(command, info_name=name)
    for param in command.params:
        if param.param_type_name != "option" or param.hidden:
            continue
        names, help_text = param.get_help_record(ctx)
        first = names.split(" ")[0].rstrip(",")
        assert first in text, f"{name}: {names} missing from --help"
        assert param.help and len(param.help) > 10, f"{name} {names}: no explanation"
        if not param.is_flag and param.name not in ("version",):
            assert "[default:" in help_text or "[required]" in help_text, f"{name} {names}: no default shown"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_dash_o_output_and_dash_q_quiet(name):
    command = _click_command(COMMANDS[name])
    opts = {tuple(sorted(p.opts)): p for p in command.params if p.param_type_name == "option"}
    assert (("--output", "-o") in opts) != (name in WRITES_NOTHING), f"{name}: -o/--output"
    assert ("--quiet", "-q") in opts, f"{name} has no -q/--quiet"
    assert opts[("--quiet", "-q")].is_flag


@pytest.mark.parametrize("name, option, choices, args", [
    ("scaseg-export", "--calib-method", "percentile|minmax|entropy", ["x.pth"]),
    ("scaseg-export", "--int8-target", "cpu|tensorrt", ["x.pth"]),
    ("scaseg-export", "--head", "logits|labels", ["x.pth"]),
    ("scaseg-bench", "--backend", "|".join(BACKENDS), ["x.onnx"]),
    ("scaseg-infer", "--backend", "|".join(BACKENDS), ["x.mp4"]),
])
def test_choices_are_listed_and_enforced(name, option, choices, args, helps):
    assert f"{option} <{choices}>" in helps[name]
    done = subprocess.run([sys.executable, "-c", f"from {COMMANDS[name]} import main; main()", *args, option, "bogus"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "bogus" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("name, option", [
    ("scaseg-export", "--imgsz"), ("scaseg-bench", "--imgsz"), ("scaseg-infer", "--imgsz"),
    ("scaseg-synth", "--size"), ("scaseg-train", "--crop"), ("scaseg-train", "--val-size"),
    ("scaseg-prune", "--imgsz"),
])
def test_every_size_option_takes_one_value_in_the_one_syntax(name, option, helps):
    command = _click_command(COMMANDS[name])
    param = next(p for p in command.params if option in getattr(p, "opts", []))
    assert param.nargs == 1 and param.metavar == "N|HxW"
    assert f"{option} N|HxW" in helps[name]


@pytest.mark.parametrize("text, expected", [
    ("512", (512, 512)), ("512x1024", (512, 1024)), ("512X1024", (512, 1024)), (" 64x32 ", (64, 32)),
    (None, None), ("", None),
])
def test_parse_size_reads_n_and_hxw(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["512 1024", "512x", "x512", "0", "-4", "12x0", "1x2x3", "big", "512,1024", "5.5"])
def test_parse_size_refuses_anything_else_in_one_sentence(text):
    with pytest.raises(ScasegError, match=r"--crop .* is not a size: expected N \(square\) or HxW"):
        parse_size(text, "--crop")


def test_parse_size_minimum():
    assert parse_size("32", minimum=32) == (32, 32)
    with pytest.raises(ScasegError, match="too small: at least 32"):
        parse_size("32x16", minimum=32)
