"""Triton model repositories: config.pbtxt checked against Triton's own model_config.proto and against the model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import np_to_triton_dtype

from scaseg.export.triton import write_triton_repository
from scaseg.errors import ScasegError
from scaseg.metadata import METADATA_KEY, ModelInfo

CLASSES = ["road", "sidewalk", "car", "sky"]


def make_onnx(path: Path, *, batch: int | str = "batch", size=(8, 12), output: str = "logits",
              spatial_dynamic: bool = False, metadata: bool = True, external: bool = False) -> Path:
    """A tiny segmentation-shaped ONNX: 1x1 conv to C classes, optional argmax (labels) in the graph."""
    h, w = ("height", "width") if spatial_dynamic else size
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((len(CLASSES), 3, 1, 1)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["images", "w"], ["logits" if output == "labels" else "output"])]
    if output == "labels":
        nodes.append(helper.make_node("ArgMax", ["logits"], ["output"], axis=1, keepdims=0))
        out = helper.make_tensor_value_info("output", TensorProto.INT64, [batch, h, w])
    else:
        out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, len(CLASSES), h, w])
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, h, w])],
                              [out], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        info = ModelInfo(variant="scaseg-t", num_classes=len(CLASSES), class_names=CLASSES, input_size=size,
                         dynamic_batch=isinstance(batch, str), dynamic_spatial=spatial_dynamic, output=output)
        helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    onnx.checker.check_model(model)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="tiny.weights", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


def make_engine(path: Path, *, dynamic_batch: bool, output: str = "logits", trt_version: str = "10.3.0",
                sca_op: str = "decomposed", side: bool = True, **facts: object) -> Path:
    """Fake plan bytes plus the `<engine>.json` ModelInfo side file a real build writes."""
    path.write_bytes(b"not a real plan: the tensorrt backend config needs only the side file")
    if side:
        info = ModelInfo(variant="scaseg-t", num_classes=len(CLASSES), class_names=CLASSES, input_size=(64, 128),
                         dynamic_batch=dynamic_batch, batch=1 if dynamic_batch else 2, output=output, sca_op=sca_op,
                         precision="fp16", extra={"tensorrt": {"trt_flavor": "standard", "trt_version": trt_version, "gpu": "Orin",
                                                               "compute_capability": [8, 7], **facts}})
        path.with_name(path.name + ".json").write_text(info.to_json())
    return path


def parse_config(model_dir: Path) -> mc.ModelConfig:
    """Parse config.pbtxt with Triton's own schema (unknown fields or bad enums raise here)."""
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())


def assert_triton_accepts(cfg: mc.ModelConfig) -> None:
    """The checks Triton's ValidateModelConfig / ValidateIOShape apply to a non-ensemble model."""
    assert cfg.name and cfg.backend in ("onnxruntime", "tensorrt")
    assert cfg.max_batch_size >= 0
    assert cfg.input and cfg.output
    for io in [*cfg.input, *cfg.output]:
        assert io.name and io.data_type != mc.TYPE_INVALID and len(io.dims) > 0
        assert all(d >= 1 or d == -1 for d in io.dims), io
    if cfg.HasField("dynamic_batching"):
        assert cfg.max_batch_size > 0
        assert all(0 < b <= cfg.max_batch_size for b in cfg.dynamic_batching.preferred_batch_size)
    for group in cfg.instance_group:
        assert group.count >= 1


def triton_type(ort_type: str) -> int:
    """Independent oracle: ORT's "tensor(float)" -> numpy -> tritonclient's own name -> the config enum."""
    np_type = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(float16)": np.float16}[ort_type]
    return mc.DataType.Value("TYPE_" + np_to_triton_dtype(np_type))


def ort_signature(onnx_path: Path) -> dict[str, tuple[list, int]]:
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return {t.name: ([d if isinstance(d, int) else -1 for d in t.shape], triton_type(t.type))
            for t in [*sess.get_inputs(), *sess.get_outputs()]}


@pytest.mark.parametrize("output", ["logits", "labels"])
def test_dynamic_batch_onnx_config_matches_model(tmp_path: Path, output: str) -> None:
    onnx_path = make_onnx(tmp_path / "seg.onnx", output=output)
    summary = write_triton_repository(str(onnx_path), str(tmp_path / "repo"), max_batch_size=16,
                                      preferred_batch_sizes=[8, 4], max_queue_delay_us=500, instances=2)
    model_dir = tmp_path / "repo" / "seg"
    cfg = parse_config(model_dir)
    assert_triton_accepts(cfg)
    assert (cfg.name, cfg.backend, cfg.max_batch_size) == ("seg", "onnxruntime", 16)
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_AUTO, 2)]
    # Batching model: Triton's dims leave the batch axis out; everything else equals what ORT sees in the file.
    sig = ort_signature(model_dir / "1" / "model.onnx")
    for io in [*cfg.input, *cfg.output]:
        shape, dtype = sig[io.name]
        assert shape[0] == -1 and list(io.dims) == shape[1:] and io.data_type == dtype
    assert {io.name for io in cfg.input} == {"images"} and {io.name for io in cfg.output} == {"output"}
    expected_out = mc.TYPE_FP32 if output == "logits" else mc.TYPE_INT64
    assert cfg.output[0].data_type == expected_out
    assert cfg.output[0].label_filename == "labels.txt"
    assert (model_dir / "labels.txt").read_text().splitlines() == CLASSES
    assert (model_dir / "1" / "model.onnx").read_bytes() == onnx_path.read_bytes()
    assert ModelInfo.from_json((model_dir / "scaseg.json").read_text()).class_names == CLASSES
    assert summary["max_batch_size"] == 16 and summary["dynamic_batching"] is True
    assert summary["config"] == str(model_dir / "config.pbtxt")


def test_static_batch_onnx_has_explicit_batch_dim_and_no_batcher(tmp_path: Path) -> None:
    onnx_path = make_onnx(tmp_path / "static.onnx", batch=2)
    summary = write_triton_repository(str(onnx_path), str(tmp_path / "repo"), kind="cpu")
    cfg = parse_config(tmp_path / "repo" / "static")
    assert_triton_accepts(cfg)
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims) == [2, 3, 8, 12]
    assert list(cfg.output[0].dims) == [2, len(CLASSES), 8, 12]
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert summary["dynamic_batching"] is False


def test_dynamic_spatial_axes_become_wildcards(tmp_path: Path) -> None:
    onnx_path = make_onnx(tmp_path / "any.onnx", spatial_dynamic=True, output="labels")
    write_triton_repository(str(onnx_path), str(tmp_path / "repo"), name="any_size", version=3)
    cfg = parse_config(tmp_path / "repo" / "any_size")
    assert_triton_accepts(cfg)
    assert list(cfg.input[0].dims) == [3, -1, -1] and list(cfg.output[0].dims) == [-1, -1]
    assert (tmp_path / "repo" / "any_size" / "3" / "model.onnx").is_file()


def test_external_weights_travel_with_the_model(tmp_path: Path) -> None:
    onnx_path = make_onnx(tmp_path / "big.onnx", external=True)
    write_triton_repository(str(onnx_path), str(tmp_path / "repo"))
    version_dir = tmp_path / "repo" / "big" / "1"
    assert (version_dir / "tiny.weights").read_bytes() == (tmp_path / "tiny.weights").read_bytes()
    # The copy runs from its new place: the weights were found beside it.
    sess = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"images": np.ones((1, 3, 8, 12), np.float32)})
    assert out.shape == (1, len(CLASSES), 8, 12)


def test_default_names_keep_precision_tags_and_rewrite_replaces_only_that_model(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    fp32 = make_onnx(tmp_path / "seg.onnx")
    int8 = make_onnx(tmp_path / "seg.int8.onnx")
    write_triton_repository(str(fp32), str(repo), max_batch_size=4)
    write_triton_repository(str(int8), str(repo))
    assert sorted(p.name for p in repo.iterdir()) == ["seg", "seg_int8"]
    write_triton_repository(str(fp32), str(repo), max_batch_size=2)
    assert parse_config(repo / "seg").max_batch_size == 2
    assert parse_config(repo / "seg_int8").max_batch_size == 8
    assert [p.name for p in repo.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("trt_version,labels_type", [("8.5.2.2", mc.TYPE_INT32), ("10.3.0.30", mc.TYPE_INT64)])
def test_engine_labels_config_from_side_file(tmp_path: Path, trt_version: str, labels_type: int) -> None:
    engine = make_engine(tmp_path / "seg.engine", dynamic_batch=True, output="labels", trt_version=trt_version)
    summary = write_triton_repository(str(engine), str(tmp_path / "repo"), max_batch_size=4)
    model_dir = tmp_path / "repo" / "seg"
    cfg = parse_config(model_dir)
    assert_triton_accepts(cfg)
    assert (cfg.backend, cfg.default_model_filename, cfg.max_batch_size) == ("tensorrt", "model.plan", 4)
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert (cfg.input[0].name, cfg.input[0].data_type, list(cfg.input[0].dims)) == ("images", mc.TYPE_FP32, [3, 64, 128])
    assert (cfg.output[0].data_type, list(cfg.output[0].dims)) == (labels_type, [64, 128])
    assert (model_dir / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert summary["model_file"] == str(model_dir / "1" / "model.plan")


def test_engine_recorded_dtypes_win_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "seg.plan", dynamic_batch=True, output="labels", io_dtypes={"images": "float32", "output": "int32"})
    write_triton_repository(str(engine), str(tmp_path / "repo"))
    assert parse_config(tmp_path / "repo" / "seg").output[0].data_type == mc.TYPE_INT32
    odd = make_engine(tmp_path / "odd.plan", dynamic_batch=True, io_dtypes={"images": "fp4"})
    with pytest.raises(ScasegError, match="fp4"):
        write_triton_repository(str(odd), str(tmp_path / "repo"))
    assert not (tmp_path / "repo" / "odd").exists()


@pytest.mark.parametrize("sca_op,plugin,accepted", [("function", False, True), ("function", True, False),
                                                     ("function", None, False), ("decomposed", None, True)])
def test_engine_with_python_plugin_is_refused(tmp_path: Path, sca_op: str, plugin, accepted: bool) -> None:
    facts = {} if plugin is None else {"plugin": plugin}
    engine = make_engine(tmp_path / "seg.engine", dynamic_batch=True, sca_op=sca_op, **facts)
    if accepted:
        write_triton_repository(str(engine), str(tmp_path / "repo"))
        assert parse_config(tmp_path / "repo" / "seg").backend == "tensorrt"
    else:
        with pytest.raises(ScasegError, match="plugin"):
            write_triton_repository(str(engine), str(tmp_path / "repo"))
        assert not (tmp_path / "repo").exists()


def test_engine_profile_bounds_max_batch_size(tmp_path: Path) -> None:
    shapes = {"min": [1, 3, 64, 128], "opt": [2, 3, 64, 128], "max": [4, 3, 64, 128]}
    engine = make_engine(tmp_path / "seg.engine", dynamic_batch=True, input_shapes=shapes, max_batch=4)
    write_triton_repository(str(engine), str(tmp_path / "repo"), max_batch_size=4, preferred_batch_sizes=[2, 4])
    assert parse_config(tmp_path / "repo" / "seg").max_batch_size == 4
    with pytest.raises(ScasegError, match="largest batch"):
        write_triton_repository(str(engine), str(tmp_path / "repo"), max_batch_size=8)
    assert parse_config(tmp_path / "repo" / "seg").max_batch_size == 4  # the earlier repository is untouched
    no_single = make_engine(tmp_path / "big.engine", dynamic_batch=True, max_batch=8,
                            input_shapes={**shapes, "min": [2, 3, 64, 128], "max": [8, 3, 64, 128]})
    with pytest.raises(ScasegError, match="minimum batch is 1"):
        write_triton_repository(str(no_single), str(tmp_path / "repo"))


def test_static_engine_logits_config(tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "seg.trt", dynamic_batch=False)
    write_triton_repository(str(engine), str(tmp_path / "repo"), name="seg.fp16")
    cfg = parse_config(tmp_path / "repo" / "seg.fp16")
    assert_triton_accepts(cfg)
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims) == [2, 3, 64, 128]
    assert (cfg.output[0].data_type, list(cfg.output[0].dims)) == (mc.TYPE_FP32, [2, len(CLASSES), 64, 128])


def _no_output(repo: Path) -> bool:
    return not repo.exists() or not any(repo.iterdir())


@pytest.mark.parametrize("case", ["missing", "corrupt", "no_metadata", "bad_name", "bad_backend", "preferred_too_big",
                                  "preferred_static", "zero_batch", "bad_kind", "engine_on_cpu", "engine_no_side",
                                  "engine_function_op", "onnx_as_engine", "unknown_suffix", "missing_weights"])
def test_bad_input_is_one_sentence_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    repo = tmp_path / "repo"
    dyn = lambda: make_onnx(tmp_path / "m.onnx")  # noqa: E731
    calls = {
        "missing": lambda: write_triton_repository(str(tmp_path / "nope.onnx"), str(repo)),
        "corrupt": lambda: write_triton_repository(str(_write(tmp_path / "c.onnx", b"\x08garbage")), str(repo)),
        "no_metadata": lambda: write_triton_repository(str(make_onnx(tmp_path / "m.onnx", metadata=False)), str(repo)),
        "bad_name": lambda: write_triton_repository(str(dyn()), str(repo), name="../escape"),
        "bad_backend": lambda: write_triton_repository(str(dyn()), str(repo), backend="openvino"),
        "preferred_too_big": lambda: write_triton_repository(str(dyn()), str(repo), max_batch_size=4,
                                                             preferred_batch_sizes=[8]),
        "preferred_static": lambda: write_triton_repository(str(make_onnx(tmp_path / "s.onnx", batch=1)), str(repo),
                                                            preferred_batch_sizes=[2]),
        "zero_batch": lambda: write_triton_repository(str(dyn()), str(repo), max_batch_size=0),
        "bad_kind": lambda: write_triton_repository(str(dyn()), str(repo), kind="tpu"),
        "engine_on_cpu": lambda: write_triton_repository(str(make_engine(tmp_path / "e.engine", dynamic_batch=True)),
                                                         str(repo), kind="cpu"),
        "engine_no_side": lambda: write_triton_repository(
            str(make_engine(tmp_path / "e.engine", dynamic_batch=True, side=False)), str(repo)),
        "engine_function_op": lambda: write_triton_repository(
            str(make_engine(tmp_path / "e.engine", dynamic_batch=True, sca_op="function")), str(repo)),
        "onnx_as_engine": lambda: write_triton_repository(str(dyn()), str(repo), backend="tensorrt"),
        "unknown_suffix": lambda: write_triton_repository(str(_write(tmp_path / "m.bin", b"x")), str(repo)),
        # Fails inside the atomic folder, after the model was copied: the half-built folder must vanish.
        "missing_weights": lambda: write_triton_repository(str(_drop(make_onnx(tmp_path / "x.onnx", external=True),
                                                                     tmp_path / "tiny.weights")), str(repo)),
    }
    with pytest.raises(ScasegError) as err:
        calls[case]()
    message = str(err.value)
    assert message and "\n" not in message and "Traceback" not in message
    assert _no_output(repo)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _drop(keep: Path, remove: Path) -> Path:
    remove.unlink()
    return keep


def test_summary_is_json_serialisable(tmp_path: Path) -> None:
    summary = write_triton_repository(str(make_onnx(tmp_path / "m.onnx")), str(tmp_path / "repo"))
    assert json.loads(json.dumps(summary))["inputs"] == [{"name": "images", "data_type": "TYPE_FP32", "dims": [3, 8, 12]}]


# --- the python backend: raw frames in, labels out (served for real in tests/runtime/test_serve.py) -------------


def test_python_backend_repository(tmp_path: Path) -> None:
    onnx_path = make_onnx(tmp_path / "seg.onnx", output="labels", batch=1)
    summary = write_triton_repository(str(onnx_path), str(tmp_path / "repo"), backend="python", max_batch_size=16,
                                      preferred_batch_sizes=[4, 8], runtime="openvino", device="cpu")
    model_dir = tmp_path / "repo" / "seg"
    cfg = parse_config(model_dir)
    assert (cfg.backend, cfg.max_batch_size, cfg.default_model_filename) == ("python", 16, "model.py")
    # A fixed-batch ONNX still batches: the model splits Triton's batches into ones the ONNX takes.
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("FRAMES", mc.TYPE_UINT8, [-1, -1, 3])]
    assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [("LABELS", mc.TYPE_UINT8, [-1, -1])]
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    params = {key: value.string_value for key, value in cfg.parameters.items()}
    assert params["runtime"] == "openvino" and params["device"] == "cpu" and params["model_file"] == "model.onnx"
    assert ModelInfo.from_json(params["scaseg"]).class_names == CLASSES
    assert (model_dir / "1" / "model.onnx").read_bytes() == onnx_path.read_bytes()
    assert "from scaseg.runtime.triton_model import TritonPythonModel" in (model_dir / "1" / "model.py").read_text()
    assert summary["model_file"] == str(model_dir / "1" / "model.onnx")


def test_python_backend_names_agree_with_the_runtime_side() -> None:
    """export/ writes the names; runtime/ (which may not import export/) reads them."""
    from scaseg.export import triton
    from scaseg.runtime import remote, triton_model

    assert (triton.FRAMES_INPUT, triton.LABELS_OUTPUT) == (triton_model.INPUT_NAME, triton_model.OUTPUT_NAME)
    assert (remote.INPUT_NAME, remote.OUTPUT_NAME, remote.INFO_PARAMETER) == (
        triton.FRAMES_INPUT, triton.LABELS_OUTPUT, triton.INFO_PARAMETER)


@pytest.mark.parametrize("case,expect", [("engine", "needs a .onnx"), ("runtime", "unknown runtime"),
                                         ("device", "unknown device")])
def test_python_backend_bad_input(tmp_path: Path, case: str, expect: str) -> None:
    repo = tmp_path / "repo"
    kwargs = {"runtime": "tensorrt"} if case == "runtime" else {"device": "tpu"} if case == "device" else {}
    model = make_engine(tmp_path / "e.engine", dynamic_batch=True) if case == "engine" else make_onnx(tmp_path / "m.onnx")
    with pytest.raises(ScasegError, match=expect):
        write_triton_repository(str(model), str(repo), backend="python", **kwargs)
    assert _no_output(repo)


def test_export_backend_option() -> None:
    from scaseg.export.triton import export_backend

    assert export_backend("triton", "auto") == "onnxruntime" and export_backend("triton", "python") == "python"
    assert export_backend("onnx", "auto") == "onnxruntime"
    with pytest.raises(ScasegError, match="applies to --format triton"):
        export_backend("onnx", "python")
    assert export_backend("triton", "tensorrt") == "tensorrt"


def test_a_tensorrt_repository_needs_standard_tensorrt_and_is_refused_before_the_export(tmp_path: Path) -> None:
    # Triton's tensorrt backend runs standard TensorRT plans; with only TensorRT-RTX here, the command refuses before
    # minutes of export and build (on a machine with tensorrt it builds the engine into the repository: not run here).
    from scaseg.runtime.tensorrt.installed import installed_flavors

    if installed_flavors() != ["rtx"]:
        pytest.skip(f"TensorRT here: {installed_flavors() or 'none'} (the refusal needs TensorRT-RTX alone)")
    from badinput import refused

    import scaseg

    scaseg.save_checkpoint(scaseg.build("scaseg-t", 5), tmp_path / "ck.pth", input_size=(64, 128))
    refused("scaseg-export", ["ck.pth", "--format", "triton", "--triton-backend", "tensorrt", "-o", "repo"], tmp_path,
            expect="needs standard TensorRT")


def test_export_cli_refuses_triton_backend_without_triton(tmp_path: Path) -> None:
    from badinput import refused

    onnx_path = make_onnx(tmp_path / "m.onnx")
    refused("scaseg-export", [onnx_path, "--format", "engine", "--triton-backend", "python"], tmp_path,
            expect="--triton-backend applies to --format triton")
