"""export/engine/ (``scaseg.export.engine``): the engine build's rules, checked without TensorRT.

The options refused before any work, the ONNX side (reading, precision, preparation for the parser), the precision
plan and network flags of every TensorRT generation, the optimisation profile and the side file's ModelInfo. The
real builds with TensorRT-RTX are tests/export/engine/test_trt_build.py; the GPU round trips
tests/runtime/tensorrt/test_runtime_tensorrt.py.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from scaseg.errors import ScasegError
from scaseg.export.engine import builder as engine_mod, graph as trt_graph, precision as trt_precision
from scaseg.export.engine import profile as trt_profile
from scaseg.runtime.tensorrt import engine_info
from scaseg.runtime.tensorrt.installed import installed_flavors
from tensorrt_models import (FACTS, attention_model, conv_model, fake_trt, heavy_loaded_by, model_info,
                             reference_attention, save, sca_function)

HAS_TRT = bool(installed_flavors())


# --- what is refused before any work -----------------------------------------------------------------------------


def test_engine_build_modules_import_without_tensorrt_torch_onnx_or_cupy() -> None:
    # A Jetson builds engines from a copied ONNX without PyTorch installed; onnx is read inside the functions.
    modules = [f"scaseg.export.engine.{m}" for m in ("builder", "graph", "layers", "precision", "profile")]
    assert heavy_loaded_by(modules) == []


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here; the refusal path is for machines without it")
def test_build_engine_without_tensorrt_raises_one_sentence_and_writes_nothing(tmp_path: Path) -> None:
    onnx_path = save(conv_model(model_info()), tmp_path / "model.onnx")
    with pytest.raises(ScasegError, match="^TensorRT is not installed: building an engine needs") as err:
        engine_mod.build_engine(str(onnx_path), str(tmp_path / "out" / "model.engine"), precision="fp16",
                                timing_cache=str(tmp_path / "out" / "timing.cache"))
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["model.onnx"]


@pytest.mark.parametrize("kwargs, message", [
    ({"precision": "int4"}, "unknown engine precision 'int4'"),
    ({"workspace_gib": 0}, "workspace must be a positive"),
    ({"dla_core": 0}, "DLA runs only fp16 or int8"),
    ({"dla_core": -1, "precision": "fp16"}, "DLA core index must be 0 or more"),
    ({"min_shape": (1, 3, 8, 8)}, "give all three of min_shape"),
    ({"min_shape": (2, 3, 8, 8), "opt_shape": (1, 3, 8, 8), "max_shape": (4, 3, 8, 8)}, "min <= opt <= max"),
    ({"min_shape": (1, 3, 8), "opt_shape": (1, 3, 8, 8), "max_shape": (1, 3, 8, 8)}, "four positive integers"),
])
def test_build_engine_rejects_bad_options_before_anything_else(tmp_path: Path, kwargs: dict, message: str) -> None:
    onnx_path = save(conv_model(model_info()), tmp_path / "model.onnx")
    with pytest.raises(ScasegError, match=re.escape(message)):
        engine_mod.build_engine(str(onnx_path), str(tmp_path / "model.engine"), **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_load_onnx_refuses_missing_damaged_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ScasegError, match="ONNX model not found"):
        trt_graph.load_onnx(str(tmp_path / "absent.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xffnot protobuf at all" * 10)
    with pytest.raises(ScasegError, match="cannot read the ONNX model"):
        trt_graph.load_onnx(str(tmp_path / "junk.onnx"))
    foreign = conv_model(model_info())
    del foreign.metadata_props[:]
    with pytest.raises(ScasegError, match="has no scaseg metadata"):
        trt_graph.load_onnx(str(save(foreign, tmp_path / "foreign.onnx")))
    model, info = trt_graph.load_onnx(str(save(conv_model(model_info(num_classes=5)), tmp_path / "ok.onnx")))
    assert info.num_classes == 5 and trt_graph.input_shape(model) == ("images", (1, 3, 8, 8))


def test_graph_precision_reads_what_the_onnx_carries() -> None:
    assert trt_graph.graph_precision(conv_model(model_info())) == "fp32"
    assert trt_graph.graph_precision(conv_model(model_info(), fp16=True)) == "fp16"
    assert trt_graph.graph_precision(conv_model(model_info(), qdq=True)) == "int8"


@pytest.mark.parametrize("version, precision, graph, strongly, flags", [
    ("8.5.2", "fp32", "fp32", False, ()),
    ("8.5.2", "fp16", "fp32", False, ("FP16",)),
    ("8.5.2", "fp16", "fp16", False, ("FP16",)),  # no STRONGLY_TYPED before 9/10
    ("8.5.2", "int8", "int8", False, ("INT8",)),  # 8.5 wants the flag even with Q/DQ
    ("10.3.0", "fp16", "fp32", False, ("FP16",)),
    ("10.3.0", "fp16", "fp16", True, ()),
    ("10.13.0", "int8", "int8", False, ("INT8",)),
    ("11.0.0", "fp32", "fp32", True, ()),
    ("11.0.0", "fp16", "fp16", True, ()),
    ("11.4.0", "int8", "int8", True, ()),
    ("rtx 1.7.1", "fp16", "fp16", True, ()),
    ("rtx 1.7.1", "int8", "int8", True, ()),
])
def test_precision_plan_per_generation(version, precision, graph, strongly, flags) -> None:
    trt = fake_trt(version.split()[-1], "rtx" if version.startswith("rtx") else "standard")
    plan = trt_precision.precision_plan(trt, precision, graph)
    assert (plan.precision, plan.strongly_typed, plan.builder_flags) == (precision, strongly, flags)


@pytest.mark.parametrize("version, precision, graph, message", [
    ("11.0.0", "fp16", "fp32", "--format engine --precision fp16 converts it first"),
    ("rtx 1.7.1", "fp16", "fp32", "TensorRT-RTX 1.7.1 builds only strongly typed networks"),
    ("10.3.0", "int8", "fp32", "pass --calib DIR"),
    ("8.5.2", "fp16", "int8", "builds only an int8 engine"),
    ("10.3.0", "fp32", "fp16", "already fp16"),
    ("10.3.0", "bf16", "fp32", "unknown engine precision"),
])
def test_precision_plan_refuses_what_a_generation_cannot_build(version, precision, graph, message) -> None:
    trt = fake_trt(version.split()[-1], "rtx" if version.startswith("rtx") else "standard")
    with pytest.raises(ScasegError, match=re.escape(message)):
        trt_precision.precision_plan(trt, precision, graph)


def test_network_flags_per_generation() -> None:
    from types import SimpleNamespace

    # Enum values as tensorrt-stubs 10.13 declares them: EXPLICIT_BATCH = 0, STRONGLY_TYPED = 1.
    trt = SimpleNamespace(NetworkDefinitionCreationFlag=SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1))
    weak, strong = trt_precision.PrecisionPlan("fp16", False, ("FP16",), ""), trt_precision.PrecisionPlan("fp16", True, (), "")
    assert trt_precision.network_flags(trt, fake_trt("8.5.2"), weak) == 1
    assert trt_precision.network_flags(trt, fake_trt("10.3.0"), weak) == 0
    assert trt_precision.network_flags(trt, fake_trt("10.3.0"), strong) == 2
    assert trt_precision.network_flags(trt, fake_trt("11.0.0"), strong) == 0
    assert trt_precision.network_flags(trt, fake_trt("1.7.1", "rtx"), strong) == 0
    assert trt_precision.needs_explicit_batch_flag(fake_trt("8.5.2"))
    assert not trt_precision.needs_explicit_batch_flag(fake_trt("10.0"))
    assert not trt_precision.needs_explicit_batch_flag(fake_trt("1.7.1", "rtx"))


def test_compute_capabilities_are_normalised_and_unknown_ones_refused() -> None:
    assert trt_profile.check_compute_capabilities(["12.0", "86", "8.6"], ["8.6", "12.0"], "X") == ["8.6", "12.0"]
    with pytest.raises(ScasegError, match="X cannot build for compute capability 9.0: it knows 8.6, 12.0"):
        trt_profile.check_compute_capabilities(["9.0"], ["12.0", "8.6"], "X")


def test_resolve_profile_static_dynamic_and_defaults() -> None:
    info = model_info(batch=2, input_size=(64, 128))
    assert trt_profile.resolve_profile((1, 3, 8, 8), info, None) is None
    with pytest.raises(ScasegError, match="static input shape"):
        trt_profile.resolve_profile((1, 3, 8, 8), info, ((1, 3, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8)))
    # A dynamic ONNX without a profile builds exactly the metadata's batch and size.
    assert trt_profile.resolve_profile((-1, 3, -1, -1), info, None) == ((2, 3, 64, 128),) * 3
    wanted = ((1, 3, 32, 32), (2, 3, 64, 64), (4, 3, 128, 128))
    assert trt_profile.resolve_profile((-1, 3, -1, -1), info, wanted) == wanted
    with pytest.raises(ScasegError, match="axis 1 of the ONNX input is fixed at 3"):
        trt_profile.resolve_profile((-1, 3, -1, -1), info, ((1, 4, 8, 8),) * 3)
    with pytest.raises(ScasegError, match="does not size"):
        trt_profile.resolve_profile((-1, 3, -1, -1), model_info(input_size=None), None)


def test_engine_model_info_records_ranges_and_facts() -> None:
    info = model_info(input_size=(64, 64))
    ranged = engine_mod.engine_model_info(info, "fp16", ((1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64)), dict(FACTS))
    assert (ranged.precision, ranged.batch, ranged.dynamic_batch, ranged.dynamic_spatial) == ("fp16", 4, True, False)
    assert ranged.input_size == (64, 64) and engine_info.engine_facts(ranged) == FACTS
    spatial = engine_mod.engine_model_info(info, "fp32", ((1, 3, 32, 32), (1, 3, 64, 64), (1, 3, 96, 96)), {})
    assert (spatial.dynamic_batch, spatial.dynamic_spatial) == (False, True)


def test_engine_side_file_is_what_the_triton_writer_reads(tmp_path: Path) -> None:
    triton_signature = pytest.importorskip("scaseg.export.triton_signature")
    info = engine_mod.engine_model_info(model_info(input_size=(64, 64)), "fp16",
                                        ((1, 3, 64, 64), (2, 3, 64, 64), (8, 3, 64, 64)),
                                        {**FACTS, "io_dtypes": {"images": "float32", "output": "float32"},
                                         "max_batch": 8, "plugin": False})
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    engine_info.side_file(engine).write_text(info.to_json(), encoding="utf-8")
    read, inputs, outputs = triton_signature.engine_signature(engine)
    assert read.precision == "fp16"
    assert [(s.name, s.shape) for s in inputs] == [("images", (-1, 3, 64, 64))]
    assert [(s.name, s.data_type) for s in outputs] == [("output", "TYPE_FP32")]


@pytest.mark.slow
def test_strip_attention_function_inlines_and_tags_for_the_plugin(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    scale = 0.7
    model = attention_model(sca_function(), scale)
    images = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    expected = reference_attention(images, scale)

    def run(m: onnx.ModelProto) -> np.ndarray:
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"images": images})[0]

    np.testing.assert_allclose(run(model), expected, rtol=1e-5, atol=1e-6)
    # TensorRT < 10.7 path: the function body replaces the node; same numbers, no scaseg node left.
    inlined = trt_graph.inline_functions(model)
    assert not inlined.functions and not trt_graph.strip_attention_nodes(inlined)
    np.testing.assert_allclose(run(inlined), expected, rtol=1e-5, atol=1e-6)
    # TensorRT >= 10.7 path: nodes keep the function but say which plugin namespace/version to use.
    assert trt_graph.tag_for_plugin(model) == 1
    attrs = {a.name: helper.get_attribute_value(a) for a in trt_graph.strip_attention_nodes(model)[0].attribute}
    assert attrs == {"scale": pytest.approx(scale), "plugin_namespace": b"scaseg", "plugin_version": b"1"}
    assert trt_graph.tag_for_plugin(model) == 1  # idempotent: no duplicate attributes
    assert len(trt_graph.strip_attention_nodes(model)[0].attribute) == 3


@pytest.mark.slow
def test_parser_preparation_per_generation(capsys: pytest.CaptureFixture[str]) -> None:
    model = attention_model(sca_function(), 0.5)
    old, used = trt_graph.prepare_for_parser(onnx.ModelProto.FromString(model.SerializeToString()), fake_trt("10.3.0"))
    assert used is False and not old.functions and not trt_graph.strip_attention_nodes(old)
    if not HAS_TRT:  # 10.7+ but the plugin cannot be registered here: say so, then inline
        new, used = trt_graph.prepare_for_parser(model, fake_trt("10.13.0"))
        assert used is False and not new.functions
        assert "building without the strip-attention plugin (TensorRT is not installed" in capsys.readouterr().err


def test_the_engine_options_and_the_precision_plan_share_the_one_precision_check() -> None:
    from scaseg.metadata import check_precision

    assert trt_profile.check_precision is check_precision and trt_precision.check_precision is check_precision
    for refuse in (lambda: trt_profile.check_options("int4", 1.0, None),
                   lambda: trt_precision.precision_plan(fake_trt("10.3.0"), "int4", "fp32")):
        with pytest.raises(ScasegError, match=r"^unknown engine precision 'int4': expected one of fp32, fp16, int8$"):
            refuse()
