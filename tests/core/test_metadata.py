"""scaseg.metadata: the model metadata round trip, its validation, the default palette."""
from __future__ import annotations

import pytest

from scaseg.errors import ScasegError
from scaseg.metadata import ModelInfo, default_palette


def test_model_info_round_trip_and_validation():
    info = ModelInfo(variant="scaseg-t", num_classes=3, input_size=(64, 128), extra={"opset": 17})
    again = ModelInfo.from_json(info.to_json())
    assert again == info
    assert again.palette == default_palette(3)
    with pytest.raises(ScasegError):
        ModelInfo(variant="x", num_classes=2, class_names=["a"])
    with pytest.raises(ScasegError):
        ModelInfo.from_json('{"num_classes": 2}')
    with pytest.raises(ScasegError):
        ModelInfo.from_json("{not json")


def test_default_palette_is_distinct():
    pal = default_palette(150)
    assert len(set(pal)) == 150 and pal[0] == (0, 0, 0)


def test_onnx_entry_has_one_writer_and_one_reader(tmp_path):
    onnx = pytest.importorskip("onnx")
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from scaseg.metadata import read_onnx_metadata, write_onnx_metadata

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"other": "kept", "scaseg": "{}"})
    info = ModelInfo(variant="t", num_classes=3)
    write_onnx_metadata(model, info)
    write_onnx_metadata(model, info.replace(precision="int8"))  # replaces, never duplicates
    assert sorted(p.key for p in model.metadata_props) == ["other", "scaseg"]
    assert read_onnx_metadata(model.metadata_props, "m.onnx").precision == "int8"
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert read_onnx_metadata(session.get_modelmeta().custom_metadata_map, path).precision == "int8"
    del model.metadata_props[:]
    with pytest.raises(ScasegError, match=r"the ONNX model m.onnx has no scaseg metadata; export it with scaseg-export"):
        read_onnx_metadata(model.metadata_props, "m.onnx")


def test_check_precision_is_the_one_membership_check_of_the_vocabulary() -> None:
    from scaseg.metadata import PRECISIONS, check_precision

    assert [check_precision(p) for p in PRECISIONS] == ["fp32", "fp16", "int8"]
    with pytest.raises(ScasegError, match=r"^unknown engine precision 'bf16': expected one of fp32, fp16, int8$"):
        check_precision("bf16", "engine precision")
    with pytest.raises(ScasegError, match=r"^unknown precision 'FP16'"):
        check_precision("FP16")  # exact words: the command line lower-cases nothing behind the user's back
