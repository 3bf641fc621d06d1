"""Model metadata is untrusted input: a tampered ``scaseg`` entry of an ONNX model, or a tampered engine side file,
is one sentence naming the file and the field (exit 2, nothing written), in every command that reads it."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from badinput import refused, run
from runtime_models import make_onnx
from scaseg.errors import ScasegError
from scaseg.metadata import METADATA_KEY, ModelInfo
from scaseg.runtime.tensorrt import engine_info

FAST_BENCH = ["--warmup", "0", "-n", "1", "-q"]

# (name, change to the metadata JSON, the field the sentence must name)
TAMPERED = [
    ("classes_as_string", {"num_classes": "3"}, "num_classes"),
    ("classes_as_bool", {"num_classes": True}, "num_classes"),
    ("classes_huge", {"num_classes": 10**9}, "num_classes"),
    ("size_negative", {"input_size": [-32, 48]}, "input_size"),
    ("size_one_element", {"input_size": [32]}, "input_size"),
    ("size_huge", {"input_size": [100000, 100000]}, "input_size"),
    ("size_strings", {"input_size": ["32", "48"]}, "input_size"),
    ("mean_two_entries", {"mean": [1, 2]}, "mean"),
    ("mean_null", {"mean": None}, "mean"),
    ("mean_infinite", {"mean": [1e400, 0, 0]}, "mean"),
    ("std_zeros", {"std": [0, 0, 0]}, "std"),
    ("std_underflows_float32", {"std": [1e-46, 1, 1]}, "std"),
    ("palette_above_255", {"palette": [[0, 0, 300], [1, 2, 3], [4, 5, 6]]}, "palette"),
    ("palette_negative", {"palette": [[0, 0, -1], [1, 2, 3], [4, 5, 6]]}, "palette"),
    ("names_wrong_count", {"class_names": ["a"]}, "class_names"),
    ("names_not_strings", {"class_names": [1, 2, 3]}, "class_names"),
    ("batch_zero", {"batch": 0}, "batch"),
    ("dynamic_as_string", {"dynamic_spatial": "yes"}, "dynamic_spatial"),
    ("output_name_number", {"output_name": 5}, "output_name"),
    ("unknown_precision", {"precision": "int4"}, "precision"),
    ("unknown_resize", {"resize": "crop"}, "resize"),
    ("extra_a_list", {"extra": []}, "extra"),
]


def tamper(path: Path, dest: Path, changes: dict) -> Path:
    """Copy an ONNX model with its ``scaseg`` metadata entry changed (as a hostile or broken tool would)."""
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = json.dumps({**json.loads(prop.value), **changes})
    onnx.save(model, str(dest))
    return dest


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("metadata")
    make_onnx(root / "m.onnx", size=None)  # dynamic H/W: the runtime resizes to the metadata's input_size
    for name, changes, _ in TAMPERED:
        tamper(root / "m.onnx", root / f"{name}.onnx", changes)
    cv2.imwrite(str(root / "img.png"), np.full((40, 56, 3), 90, np.uint8))
    return root


def test_the_untampered_model_runs(work: Path) -> None:
    proc = run("scaseg-infer", ["img.png", "-m", "m.onnx", "-o", "ok.png", "-q"], work)
    assert proc.returncode == 0, proc.stderr
    (work / "ok.png").unlink()


@pytest.mark.parametrize("name,field", [(n, f) for n, _, f in TAMPERED], ids=[n for n, _, _ in TAMPERED])
def test_infer_refuses_tampered_metadata(work: Path, name: str, field: str) -> None:
    line = refused("scaseg-infer", ["img.png", "-m", f"{name}.onnx", "-o", "out.png", "-q"], work,
                   expect=f"the model metadata of {name}.onnx is invalid: {field}")
    assert not (work / "out.png").exists(), line


@pytest.mark.parametrize("name,field", [(n, f) for n, _, f in TAMPERED[::3]], ids=[n for n, _, _ in TAMPERED[::3]])
def test_bench_refuses_tampered_metadata(work: Path, name: str, field: str) -> None:
    refused("scaseg-bench", [f"{name}.onnx", *FAST_BENCH], work, expect=f"{name}.onnx is invalid: {field}")


def test_json_that_is_no_object_or_too_deep_is_refused(work: Path) -> None:
    for name, text in (("list", "[1, 2]"), ("deep", "[" * 100000 + "]" * 100000)):
        model = onnx.load(str(work / "m.onnx"))
        for prop in model.metadata_props:
            if prop.key == METADATA_KEY:
                prop.value = text
        onnx.save(model, str(work / f"{name}.onnx"))
        refused("scaseg-infer", ["img.png", "-m", f"{name}.onnx", "-o", "out.png", "-q"], work,
                expect=f"the model metadata of {name}.onnx is")


# --- engine side files: read before TensorRT is looked for, so these hold on a machine without a GPU -----------


def _engine(folder: Path, name: str, **changes: object) -> Path:
    """Fake plan bytes and a side file as the builder writes it, with ``changes`` made to its JSON."""
    engine = folder / f"{name}.engine"
    engine.write_bytes(b"not a real plan: the side file is read first")
    info = ModelInfo(variant="scaseg-t", num_classes=3, input_size=(64, 64), precision="fp16",
                     extra={"tensorrt": {"trt_flavor": "standard", "trt_version": "10.3.0", "gpu": "Orin",
                                         "compute_capability": [8, 7], "plugin": False, "max_batch": 1}})
    side = info.to_dict()
    for key, value in changes.items():
        if key.startswith("tensorrt."):
            side["extra"]["tensorrt"][key.split(".", 1)[1]] = value
        else:
            side[key] = value
    engine_info.side_file(engine).write_text(json.dumps(side), encoding="utf-8")
    return engine


ENGINE_CASES = [
    ("batch_string", {"batch": "2"}, "batch"),
    ("size_null_entries", {"input_size": [None, 64]}, "input_size"),
    ("std_zero", {"std": [0, 1, 1]}, "std"),
    ("classes_float", {"num_classes": 3.5}, "num_classes"),
    ("cc_string", {"tensorrt.compute_capability": "87"}, "extra.tensorrt.compute_capability"),
    ("ccs_number", {"tensorrt.compute_capabilities": 86}, "extra.tensorrt.compute_capabilities"),
    ("plugin_string", {"tensorrt.plugin": "yes"}, "extra.tensorrt.plugin"),
    ("max_batch_list", {"tensorrt.max_batch": [4]}, "extra.tensorrt.max_batch"),
    ("shapes_short", {"tensorrt.input_shapes": {"min": [1], "opt": [1], "max": [1]}}, "extra.tensorrt.input_shapes"),
    ("facts_a_string", {"extra": {"tensorrt": "10.3"}}, "extra.tensorrt"),
]


@pytest.mark.parametrize("name,changes,field", ENGINE_CASES, ids=[c[0] for c in ENGINE_CASES])
def test_engine_side_file_with_wrong_types_is_one_sentence(tmp_path: Path, name: str, changes: dict,
                                                           field: str) -> None:
    engine = _engine(tmp_path, name, **changes)
    with pytest.raises(ScasegError) as caught:
        engine_info.read_engine_info(engine)
    assert str(caught.value).startswith(f"the model metadata of {engine_info.side_file(engine)} is invalid: {field} "), \
        caught.value


def test_a_good_side_file_reads(tmp_path: Path) -> None:
    info = engine_info.read_engine_info(_engine(tmp_path, "good"))
    assert info.precision == "fp16" and engine_info.engine_facts(info)["compute_capability"] == [8, 7]


@pytest.mark.parametrize("name,changes,field", [ENGINE_CASES[0], ENGINE_CASES[4], ENGINE_CASES[-1]],
                         ids=["batch_string", "cc_string", "facts_a_string"])
def test_bench_refuses_an_engine_whose_side_file_lies(tmp_path: Path, name: str, changes: dict, field: str) -> None:
    _engine(tmp_path, name, **changes)
    refused("scaseg-bench", [f"{name}.engine", *FAST_BENCH], tmp_path,
            expect=f"{name}.engine.json is invalid: {field}")
