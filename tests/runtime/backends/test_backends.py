"""Backends behind open_backend: ONNX Runtime (fp32, fp16, int8, logits or labels), metadata checks, TensorRT/torch gates."""
from __future__ import annotations

import numpy as np
import pytest
from runtime_models import BLUE, GREEN, RED, conv_weights, halves, halves_labels, make_onnx

from scaseg.runtime.backends import Backend, InputMetadata, backend_for, model_file, open_backend
from scaseg.runtime.backends.onnxruntime import choose_providers, parse_device
from scaseg.errors import ScasegError
from scaseg.metadata import ModelInfo
from scaseg.cli import parse_size
from scaseg.runtime.predictor import Predictor
from scaseg.runtime.preprocess import preprocess


def _input(h=32, w=48, image=None):
    image = halves(h, w) if image is None else image
    x, _ = preprocess(image, None, ModelInfo("t", 3).mean, ModelInfo("t", 3).std)
    return x[None]


def test_onnx_logits_match_numpy(tmp_path):
    be = open_backend(make_onnx(tmp_path / "m.onnx", num_classes=4))
    x = _input()
    out = be.infer(x)
    expected = np.einsum("ck,bkhw->bchw", conv_weights(4)[:, :, 0, 0], x)
    assert out.dtype == np.float32 and out.shape == (1, 4, 32, 48)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert be.info.num_classes == 4 and be.info.variant == "tiny"
    assert be.name == "onnxruntime" and be.device == "CPU"
    assert be.fixed_batch == 1 and be.fixed_size == (32, 48)
    assert be.get_input_metadata() == InputMetadata("images", np.dtype(np.float32), (1, 3, 32, 48))


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_onnx_runs_and_agrees(tmp_path, precision):
    ref = open_backend(make_onnx(tmp_path / "fp32.onnx"))
    low = open_backend(make_onnx(tmp_path / f"{precision}.onnx", precision=precision))
    x = _input()
    a, b = ref.infer(x), low.infer(x)
    assert b.dtype == np.float32 and low.info.precision == precision
    assert (a.argmax(1) == b.argmax(1)).mean() == 1.0
    np.testing.assert_allclose(a, b, atol=0.1)


def test_labels_output_is_argmax(tmp_path):
    be = open_backend(make_onnx(tmp_path / "l.onnx", output="labels"))
    out = be.infer(_input())
    assert out.shape == (1, 32, 48) and out.dtype.kind in "iu"
    np.testing.assert_array_equal(out[0], halves_labels(32, 48))


def test_predictor_maps_back_to_odd_source_size(tmp_path):
    for name, output in (("a.onnx", "logits"), ("b.onnx", "labels")):
        pred = Predictor(open_backend(make_onnx(tmp_path / name, output=output)))
        image = halves(37, 53, left=BLUE, right=RED)
        labels = pred(image)
        assert labels.shape == (37, 53) and labels.dtype == np.uint8
        assert (labels[:, :20] == 2).all() and (labels[:, 33:] == 0).all()


def test_dynamic_model_uses_imgsz_and_native_size(tmp_path):
    path = make_onnx(tmp_path / "dyn.onnx", size=None, batch=None)
    be = open_backend(path)
    assert be.fixed_size is None and be.fixed_batch is None
    assert be.get_input_metadata().shape == (None, 3, None, None)
    assert Predictor(be).size is None  # no trained size in the metadata: native size
    assert Predictor(be, parse_size("16x24")).size == (16, 24)
    pred = Predictor(be, parse_size("16"), batch=3)
    tensors = [pred.prepare(halves(40, 40))[0] for _ in range(2)]
    out = pred.run(tensors)
    assert out.shape == (2, 3, 16, 16)


def test_static_batch_is_padded_and_enforced(tmp_path):
    be = open_backend(make_onnx(tmp_path / "b2.onnx", batch=2))
    pred = Predictor(be)
    assert pred.batch == 2
    out = pred.run([pred.prepare(halves(32, 48))[0]])  # one image in a batch-2 graph
    assert out.shape == (1, 3, 32, 48)
    with pytest.raises(ScasegError, match="fixed batch size of 2"):
        Predictor(be, batch=4)
    with pytest.raises(ScasegError, match="fixed input of 32x48"):
        Predictor(be, imgsz=(64, 64))


def test_model_without_metadata_needs_info(tmp_path):
    path = make_onnx(tmp_path / "bare.onnx", metadata=False)
    with pytest.raises(ScasegError, match="has no scaseg metadata"):
        open_backend(path)
    info = ModelInfo("given", 3, input_size=(32, 48), input_name="images", output_name="logits")
    be = open_backend(path, info=info)
    assert be.info.variant == "given" and be.infer(_input()).shape == (1, 3, 32, 48)


@pytest.mark.parametrize("changes, message", [
    ({"input_name": "pixels"}, "names input 'pixels'"),
    ({"output_name": "scores"}, "names output 'scores'"),
    ({"num_classes": 5, "class_names": [], "palette": []}, "says 5 classes"),
    ({"input_size": (64, 64)}, "says input size"),
    ({"output": "labels"}, "output is labels"),
])
def test_metadata_that_does_not_match_the_graph(tmp_path, changes, message):
    with pytest.raises(ScasegError, match=message):
        open_backend(make_onnx(tmp_path / "m.onnx", info_changes=changes))


def test_bad_model_files(tmp_path):
    with pytest.raises(ScasegError, match="model not found"):
        open_backend(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(ScasegError, match="cannot load the ONNX model"):
        open_backend(tmp_path / "junk.onnx")
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(ScasegError, match="cannot tell what kind of model"):
        open_backend(tmp_path / "model.txt")
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(ScasegError, match="is a folder"):
        open_backend(tmp_path / "dir.onnx")
    with pytest.raises(ScasegError, match="unknown backend"):
        open_backend(make_onnx(tmp_path / "m.onnx"), backend="openvino:int4")


def test_the_interface_declares_what_callers_need(tmp_path):
    # A backend that does not say what its graph takes cannot be made: no hasattr probes downstream.
    class Silent(Backend):
        def infer(self, batch):
            return batch

    with pytest.raises(TypeError, match="get_input_metadata"):
        Silent("m.onnx", ModelInfo("t", 3))

    class Fixed(Silent):
        def get_input_metadata(self):
            return InputMetadata("x", np.dtype(np.float16), (4, 3, 8, 16))

    be = Fixed("m.onnx", ModelInfo("t", 3, input_size=(99, 99)))  # the graph wins over the metadata
    assert be.fixed_batch == 4 and be.fixed_size == (8, 16) and be.precision == "fp32"
    pred = Predictor(be, imgsz=(32, 32), keep_static_size=True)
    assert pred.size == (8, 16) and pred.imgsz_ignored and pred.batch == 4
    assert not Predictor(be, imgsz=(8, 16)).imgsz_ignored


def test_model_file_is_checked_once_at_the_edge(tmp_path):
    path = make_onnx(tmp_path / "m.onnx")
    checked = model_file(path)
    path.unlink()  # a ModelFile is trusted: open_backend does not look again
    with pytest.raises(ScasegError, match="cannot load the ONNX model"):
        open_backend(checked)
    with pytest.raises(ScasegError, match="model not found"):
        model_file(path)


def test_engine_without_side_file_is_one_sentence(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 64)
    with pytest.raises(ScasegError, match="has no side file m.engine.json"):
        open_backend(engine)
    with pytest.raises(ScasegError, match="only on a CUDA GPU"):
        open_backend(engine, device="cpu")


def test_device_choice():
    cpu_only = ["CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(None, cpu_only) == ["CPUExecutionProvider"]
    assert choose_providers("cpu", gpu) == ["CPUExecutionProvider"]
    assert [p[0] for p in choose_providers("auto", gpu)[:2]] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert choose_providers("cuda:1", gpu)[0] == ("CUDAExecutionProvider", {"device_id": 1})
    with pytest.raises(ScasegError, match="needs onnxruntime-gpu"):
        choose_providers("cuda", cpu_only)
    with pytest.raises(ScasegError, match="TensorRT execution provider"):
        choose_providers("tensorrt", cpu_only)
    with pytest.raises(ScasegError, match="unknown device"):
        parse_device("tpu")


def test_threads_option_reaches_the_session(tmp_path):
    be = open_backend(make_onnx(tmp_path / "m.onnx"), threads=1)
    assert be.session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(ScasegError, match="at least 1"):
        open_backend(make_onnx(tmp_path / "n.onnx"), threads=0)


def test_backend_for_suffixes():
    assert backend_for("a/b.ONNX") == "onnxruntime"
    assert {backend_for(f"m{s}") for s in (".trt", ".engine", ".plan")} == {"tensorrt"}
    assert {backend_for(f"m{s}") for s in (".pth", ".pt", ".safetensors")} == {"torch"}


def test_torch_reference_backend_runs_a_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    from scaseg import build, save_checkpoint

    torch.manual_seed(0)
    model = build("scaseg-t", num_classes=3).eval()
    path = save_checkpoint(model, tmp_path / "t.pth", class_names=["a", "b", "c"], input_size=(64, 64))
    be = open_backend(path, device="cpu", threads=1)
    assert be.name == "torch" and be.info.variant == "scaseg-t" and be.info.class_names == ["a", "b", "c"]
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    out = be.infer(x)
    assert out.shape == (1, 3, 64, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5)
    pred = Predictor(be)
    assert pred.size == (64, 64) and pred(halves(50, 70)).shape == (50, 70)
    with pytest.raises(ScasegError, match="cannot run on --device tensorrt"):
        open_backend(path, device="tensorrt")


def test_run_settings_are_checked_once_and_trusted(tmp_path):
    from scaseg.runtime.backends import RunSettings

    settings = RunSettings.parse("CPU", "2", "lean")
    assert (settings.device, settings.threads, settings.memory.mem_pattern) == ("cpu", 2, False)
    assert RunSettings.parse(None, "auto").threads is None and RunSettings.parse().device == "auto"
    for bad, expect in ((("tpu",), "unknown device"), ((None, "0"), "at least 1"), ((None, None, "huge"), "memory mode")):
        with pytest.raises(ScasegError, match=expect):
            RunSettings.parse(*bad)
    be = open_backend(make_onnx(tmp_path / "m.onnx"), settings=settings)
    assert be.requested_threads == 2 and be.session.get_session_options().intra_op_num_threads == 2
    assert not be.session.get_session_options().enable_mem_pattern
    with pytest.raises(AssertionError):  # one way in: checked settings, or the parts to check, never both
        open_backend(make_onnx(tmp_path / "n.onnx"), threads=1, settings=settings)


def test_every_onnx_runtime_session_is_made_in_one_place(tmp_path):
    from scaseg.runtime.backends.onnxruntime import make_session

    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ScasegError, match="ONNX Runtime cannot load the model: "):
        make_session(b"not a model")
    with pytest.raises(ScasegError, match="cannot load the ONNX model .*junk.onnx"):
        make_session(tmp_path / "junk.onnx")
    sess = make_session(make_onnx(tmp_path / "m.onnx"), threads=1, optimized_path=str(tmp_path / "opt.onnx"))
    assert sess.get_session_options().intra_op_num_threads == 1 and (tmp_path / "opt.onnx").is_file()
