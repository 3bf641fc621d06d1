"""scaseg.runtime.options: the options scaseg-bench and scaseg-infer share, parsed by a small app built from them."""
from __future__ import annotations

import json
from typing import Any, List, Optional

import pytest
import typer
from typer.testing import CliRunner

from scaseg.runtime import options as O
from scaseg.runtime.backends import BACKENDS
from scaseg.runtime.backends.threads import MAX_THREADS_PER_CPU, PROBE_MAX_PIXELS
from scaseg.runtime.memory import DEFAULT_MEMORY, MEMORY_MODES


def _app(repeat: bool) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def main(backend: Any = O.backend_option(repeat), memory: O.MemoryMode = O.memory_option(),  # type: ignore[valid-type]
             device: str = O.device_option(), threads: str = O.threads_option(),
             imgsz: Optional[str] = O.imgsz_option(), batch: Optional[int] = O.batch_option("Images")) -> None:
        names = [b.value for b in backend] if isinstance(backend, list) else backend.value
        print(json.dumps({"backend": names, "memory": memory.value, "device": device, "threads": threads,
                          "imgsz": imgsz, "batch": batch}))

    main.__annotations__["backend"] = List[O.BackendName] if repeat else O.BackendName  # type: ignore[valid-type]
    return app


def _run(args: list[str], repeat: bool = False) -> Any:
    result = CliRunner().invoke(_app(repeat), args)
    return result.exit_code, (json.loads(result.stdout) if result.exit_code == 0 else result.output)


def test_the_choices_are_the_one_list_of_backends_and_memory_modes() -> None:
    assert [b.value for b in O.BackendName] == list(BACKENDS)
    assert [m.value for m in O.MemoryMode] == list(MEMORY_MODES)


def test_defaults_say_auto_and_the_default_memory_mode() -> None:
    code, got = _run([])
    assert code == 0, got
    assert got == {"backend": "auto", "memory": DEFAULT_MEMORY, "device": "auto", "threads": "auto", "imgsz": None,
                   "batch": None}


def test_one_backend_or_several_when_repeated() -> None:
    assert _run(["--backend", "openvino:bf16"])[1]["backend"] == "openvino:bf16"
    code, got = _run(["--backend", "onnxruntime", "--backend", "openvino"], repeat=True)
    assert code == 0 and got["backend"] == ["onnxruntime", "openvino"]
    assert _run([], repeat=True)[1]["backend"] == ["auto"]


@pytest.mark.parametrize("args", [["--backend", "tflite"], ["--memory", "huge"], ["--batch", "0"], ["-b", "-1"]])
def test_values_outside_the_choices_are_refused_by_the_parser(args: list[str]) -> None:
    code, output = _run(args)
    assert code == 2 and "Invalid value" in output


def test_help_names_the_rules_it_enforces() -> None:
    result = CliRunner().invoke(_app(True), ["--help"], env={"COLUMNS": "300"})
    text = " ".join(result.output.split())
    assert f"{PROBE_MAX_PIXELS // 1024}K pixels" in text and f"1 to {MAX_THREADS_PER_CPU} per CPU" in text
    assert O.DEVICE_METAVAR in text and "auto|N" in text and "Images per inference call" in text
    assert "|".join(BACKENDS) in text  # the repeated option's metavar lists the choices as a single one does
