"""Triton Inference Server model repository: ``<repo>/<name>/config.pbtxt`` plus ``<version>/model.onnx|model.plan``.

Inputs and outputs come from export/triton_signature.py (the ONNX graph, or a TensorRT plan's ModelInfo side
file). The config text is written by hand (it is a
small, flat protobuf text message) so that exporting does not need tritonclient; the tests parse it with
Triton's own ``model_config.proto`` (``tritonclient.grpc.model_config_pb2``).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

from scaseg.cli import require_file
from scaseg.errors import ScasegError
from scaseg.export.triton_signature import TensorSpec, engine_signature, external_files, onnx_signature
from scaseg.fileio import atomic_dir
from scaseg.metadata import ModelInfo
from scaseg.suffixes import ENGINE_SUFFIXES, ONNX_SUFFIXES

BACKENDS = ("auto", "onnxruntime", "tensorrt", "python")
#: What a python-backend model runs its ONNX file on (scaseg.runtime.backends names).
PYTHON_RUNTIMES = ("onnxruntime", "openvino", "openvino:bf16")
KINDS = ("auto", "gpu", "cpu")
#: Triton's default file name per backend (``default_model_filename`` is written too, for readers).
MODEL_FILENAMES = {"onnxruntime": "model.onnx", "tensorrt": "model.plan", "python": "model.py"}
#: The python backend's model.py: the project's own model class (runtime/triton_model.py) does the work.
#: The stub ignores PYTHONPATH; scaseg-serve names the scaseg it runs in SCASEG_SERVE_PATH (absent elsewhere: the
#: server's Python must have scaseg installed, e.g. pip install in Triton's container).
PYTHON_MODEL_PY = '''"""Triton python-backend model written by scaseg-export: raw uint8 frames in, labels out (docs/triton.md)."""
import os
import sys

for _path in reversed(os.environ.get("SCASEG_SERVE_PATH", "").split(os.pathsep)):
    if _path and _path not in sys.path:
        sys.path.insert(0, _path)
if os.environ.get("PYTHONDONTWRITEBYTECODE"):  # the stub ignores it as it ignores PYTHONPATH: honour it here
    sys.dont_write_bytecode = True

from scaseg.runtime.triton_model import TritonPythonModel  # noqa: E402,F401
'''
LABELS_FILENAME = "labels.txt"
#: The model's full ModelInfo JSON, beside config.pbtxt, for clients (normalisation, palette, input size).
INFO_FILENAME = "scaseg.json"

#: The python backend's tensors (runtime/triton_model.py reads them) and where its ONNX file and ModelInfo go.
FRAMES_INPUT, LABELS_OUTPUT = "FRAMES", "LABELS"
PYTHON_MODEL_FILE = "model.onnx"
INFO_PARAMETER = "scaseg"
_DEVICE_OK = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")
_NAME_OK = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


# --- the config ------------------------------------------------------------------------------------------------


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _tensor_block(spec: TensorSpec, dims: Sequence[int], label_filename: Optional[str]) -> list[str]:
    lines = ["  {", f"    name: {_quote(spec.name)}", f"    data_type: {spec.data_type}",
             f"    dims: [ {', '.join(str(d) for d in dims)} ]"]
    if label_filename:
        lines.append(f"    label_filename: {_quote(label_filename)}")
    return lines + ["  }"]


def render_config(*, name: str, backend: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                  max_batch_size: int, preferred_batch_sizes: Sequence[int] = (), max_queue_delay_us: int = 100,
                  instance_kind: str = "KIND_GPU", instances: int = 1, label_output: Optional[str] = None,
                  parameters: Optional[dict[str, str]] = None) -> str:
    """The config.pbtxt text; with max_batch_size > 0 the batch axis is left out of ``dims`` (Triton's rule)."""
    skip = 1 if max_batch_size > 0 else 0
    lines = [f"name: {_quote(name)}", f"backend: {_quote(backend)}",
             f"default_model_filename: {_quote(MODEL_FILENAMES[backend])}",
             f"max_batch_size: {max_batch_size}",
             "version_policy: { latest: { num_versions: 1 } }"]
    for field, specs in (("input", inputs), ("output", outputs)):
        blocks: list[str] = []
        for i, spec in enumerate(specs):
            labels = LABELS_FILENAME if spec.name == label_output else None
            blocks += _tensor_block(spec, spec.shape[skip:], labels)
            if i < len(specs) - 1:
                blocks[-1] += ","
        lines += [f"{field} ["] + blocks + ["]"]
    lines += ["instance_group [", "  {", f"    count: {instances}", f"    kind: {instance_kind}", "  }", "]"]
    if max_batch_size > 0:
        lines.append("dynamic_batching {")
        if preferred_batch_sizes:
            lines.append(f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred_batch_sizes)} ]")
        lines += [f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}"]
    for key, value in (parameters or {}).items():
        lines.append(f"parameters {{ key: {_quote(key)} value: {{ string_value: {_quote(value)} }} }}")
    return "\n".join(lines) + "\n"


# --- the repository --------------------------------------------------------------------------------------------


def export_backend(fmt: str, choice: str) -> str:
    """scaseg-export's --triton-backend, checked at its edge: the backend its repository gets (auto: onnxruntime)."""
    if choice != "auto" and fmt != "triton":
        raise ScasegError(f"--triton-backend applies to --format triton, not --format {fmt}")
    return "onnxruntime" if choice == "auto" else choice


def _choose_backend(path: Path, backend: str) -> str:
    if backend not in BACKENDS:
        raise ScasegError(f"unknown Triton backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnxruntime"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    raise ScasegError(f"cannot tell the Triton backend from {path.name}: expected a .onnx model or a "
                      f"{'/'.join(ENGINE_SUFFIXES)} TensorRT engine (or pass backend explicitly)")


def _model_name(path: Path, name: Optional[str]) -> str:
    if name is None:
        # "model.int8.onnx" -> "model_int8": precision tags stay in the name so variants do not collide.
        return re.sub(r"[^A-Za-z0-9_-]", "_", path.stem).strip("_-") or "scaseg"
    if not _NAME_OK.match(name):
        raise ScasegError(f"the Triton model name {name!r} must be letters, digits, '_', '-' or '.', "
                          "not starting with '.' or '-'")
    return name


def _batching(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], where: str) -> bool:
    """True when every tensor's first axis is free (the model batches); refuse a mix Triton cannot describe."""
    free = [spec.shape[0] == -1 for spec in (*inputs, *outputs) if spec.shape]
    if any(len(spec.shape) == 0 for spec in (*inputs, *outputs)):
        raise ScasegError(f"{where} has a scalar input or output; Triton needs tensors with a batch axis")
    if any(free) and not all(free):
        raise ScasegError(f"{where} has a free batch axis on some inputs/outputs and a fixed one on others; "
                          "export it with the batch axis dynamic everywhere or nowhere")
    return all(free)


def _check_engine_batch_range(info: ModelInfo, max_batch_size: int, path: Path) -> None:
    """Triton sends any batch from 1 to max_batch_size: the engine's optimisation profile must cover all of them."""
    from scaseg.runtime.tensorrt.engine_info import engine_facts

    facts = engine_facts(info)
    recorded = facts.get("input_shapes")
    shapes: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    low = (shapes.get("min") or [1])[0]
    high = facts.get("max_batch", (shapes.get("max") or [None])[0])
    if isinstance(low, int) and low > 1:
        raise ScasegError(f"the engine {path.name} was built for batches of at least {low}, but Triton also sends "
                          "single images: rebuild it with a profile whose minimum batch is 1")
    if isinstance(high, int) and max_batch_size > high:
        raise ScasegError(f"max_batch_size {max_batch_size} exceeds the largest batch ({high}) the engine "
                          f"{path.name} was built for; pass max_batch_size <= {high} or rebuild with a larger profile")


def write_triton_repository(model_path: str, out_dir: str, *, name: Optional[str] = None, backend: str = "auto",
                            max_batch_size: int = 8, preferred_batch_sizes: Optional[Sequence[int]] = None,
                            max_queue_delay_us: int = 100, instances: int = 1, kind: str = "auto",
                            version: int = 1, runtime: str = "onnxruntime", device: str = "auto") -> dict[str, Any]:
    """Write ``out_dir/<name>/`` (config.pbtxt, labels, scaseg.json, ``<version>/model.*``) for Triton; returns a summary.

    A model whose batch axis is dynamic gets ``max_batch_size`` and dynamic batching; a fixed-batch model gets
    ``max_batch_size: 0`` with the batch axis written in ``dims`` and no batcher (Triton cannot batch it).
    The ``<name>`` folder is replaced as a whole, atomically; other models in ``out_dir`` are left alone.
    ``backend="python"``: a python-backend model (runtime/triton_model.py) that runs the ONNX file on ``runtime``
    (onnxruntime, openvino, openvino:bf16) on ``device``, taking raw uint8 frames and answering labels; it always
    batches (Triton's dynamic batcher merges requests; the model splits them into batches the ONNX accepts).
    """
    path = Path(require_file(Path(model_path).expanduser(), "model"))
    backend = _choose_backend(path, backend)
    model_name = _model_name(path, name)
    instance_kind = _instance_kind(kind, backend)
    for label, value in (("instances", instances), ("version", version)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ScasegError(f"{label} must be a whole number of at least 1, got {value!r}")
    if isinstance(max_queue_delay_us, bool) or not isinstance(max_queue_delay_us, int) or max_queue_delay_us < 0:
        raise ScasegError(f"max_queue_delay_us must be a whole number of microseconds >= 0, got {max_queue_delay_us!r}")

    info, inputs, outputs, extra_files = _read_signature(path, backend)
    parameters = None
    if backend == "python":
        inputs, outputs, parameters = _python_model(info, runtime, device)
    triton_max_batch, preferred = _triton_batching(path, backend, info, inputs, outputs, max_batch_size,
                                                   preferred_batch_sizes)
    config = render_config(name=model_name, backend=backend, inputs=inputs, outputs=outputs,
                           max_batch_size=triton_max_batch, preferred_batch_sizes=preferred,
                           max_queue_delay_us=max_queue_delay_us, instance_kind=instance_kind, instances=instances,
                           label_output=None if backend == "python" else info.output_name, parameters=parameters)
    repo = Path(out_dir).expanduser()
    if repo.exists() and not repo.is_dir():
        raise ScasegError(f"the Triton repository {repo} exists and is not a folder")
    model_file = MODEL_FILENAMES[backend]
    _write_model_folder(repo / model_name, path, version, PYTHON_MODEL_FILE if backend == "python" else model_file,
                        extra_files, config, info, PYTHON_MODEL_PY if backend == "python" else None)

    model_dir = repo / model_name
    skip = 1 if triton_max_batch > 0 else 0
    return {
        "repository": str(repo), "name": model_name, "model_dir": str(model_dir), "backend": backend,
        "config": str(model_dir / "config.pbtxt"), "model_file": str(model_dir / str(version) / (PYTHON_MODEL_FILE if backend == "python" else model_file)),
        "labels_file": str(model_dir / LABELS_FILENAME), "version": version,
        "max_batch_size": triton_max_batch, "dynamic_batching": triton_max_batch > 0,
        "preferred_batch_sizes": preferred, "instance_kind": instance_kind, "instances": instances,
        "inputs": [{"name": s.name, "data_type": s.data_type, "dims": list(s.shape[skip:])} for s in inputs],
        "outputs": [{"name": s.name, "data_type": s.data_type, "dims": list(s.shape[skip:])} for s in outputs],
    }

def _instance_kind(kind: str, backend: str) -> str:
    """Triton's instance kind for ``kind`` (auto, gpu or cpu) on ``backend``."""
    if kind not in KINDS:
        raise ScasegError(f"unknown instance kind {kind!r}: expected one of {', '.join(KINDS)}")
    if backend == "tensorrt" and kind == "cpu":
        raise ScasegError("a TensorRT plan runs only on a GPU: use kind 'gpu' or 'auto' for the tensorrt backend")
    if backend == "python":  # the stub runs on the CPU; the model's own runtime picks its device (``device``)
        return "KIND_GPU" if kind == "gpu" else "KIND_CPU"
    # auto: a plan needs a GPU; an ONNX model goes wherever Triton finds one (KIND_AUTO: GPUs if present, else CPU).
    return {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}.get(kind, "KIND_GPU" if backend == "tensorrt" else "KIND_AUTO")


def _read_signature(path: Path, backend: str) -> tuple[ModelInfo, list[TensorSpec], list[TensorSpec], list[str]]:
    """The model's metadata, inputs and outputs, and the external data files an ONNX model keeps beside it;
    refused where the file does not suit ``backend`` or names an input or output the model does not have."""
    if backend in ("onnxruntime", "python"):
        if path.suffix.lower() in ENGINE_SUFFIXES:
            raise ScasegError(f"{path.name} looks like a TensorRT engine; the {backend} backend needs a .onnx model")
        info, inputs, outputs = onnx_signature(path)
        extra_files = external_files(path)
    else:
        if path.suffix.lower() in ONNX_SUFFIXES:
            raise ScasegError(f"{path.name} is an ONNX model; the tensorrt backend needs an engine built from it "
                              "(scaseg-export --format engine)")
        if path.stat().st_size == 0:
            raise ScasegError(f"the engine {path} is empty")
        info, inputs, outputs = engine_signature(path)
        extra_files = []
        _check_engine_for_triton(info, path)
    for label, wanted, specs in (("input", info.input_name, inputs), ("output", info.output_name, outputs)):
        if wanted not in {s.name for s in specs}:
            raise ScasegError(f"the metadata of {path} names {label} {wanted!r} but the model has "
                              f"{sorted(s.name for s in specs)}")
    return info, inputs, outputs, extra_files


def _check_engine_for_triton(info: ModelInfo, path: Path) -> None:
    """Refuse an engine Triton's TensorRT backend cannot run: a TensorRT-RTX one, or one that may use the plugin."""
    from scaseg.runtime.tensorrt.engine_info import engine_facts

    # The Python strip-attention plugin lives in the scaseg runtime process; Triton's TensorRT backend cannot
    # load it. The builder records whether it used the plugin; a function export without that record may.
    facts = engine_facts(info)
    if facts.get("trt_flavor") == "rtx":
        raise ScasegError(f"{path.name} is a TensorRT-RTX engine, and Triton's tensorrt backend runs standard "
                          "TensorRT plans: build the engine with --tensorrt standard, or serve the ONNX model")
    uses_plugin = facts.get("plugin")
    if uses_plugin or (uses_plugin is None and info.sca_op == "function"):
        raise ScasegError("this engine uses (or may use) the Python strip-attention plugin, which Triton's "
                          "TensorRT backend cannot load: build the engine from a --sca-op decomposed export")


def _triton_batching(path: Path, backend: str, info: ModelInfo, inputs: list[TensorSpec], outputs: list[TensorSpec],
                     max_batch_size: int, preferred_batch_sizes: Optional[Sequence[int]]) -> tuple[int, list[int]]:
    """(config's max_batch_size, preferred batch sizes): 0 and none for a fixed-batch model."""
    where = f"the model {path}"
    batches = _batching(inputs, outputs, where)
    preferred = sorted(set(int(b) for b in preferred_batch_sizes)) if preferred_batch_sizes else []
    if not batches:
        if preferred:
            raise ScasegError(f"{where} has a fixed batch of {inputs[0].shape[0]}, so Triton cannot batch it and "
                              "preferred batch sizes do not apply; export with a dynamic batch axis to batch")
        return 0, preferred
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise ScasegError(f"max_batch_size must be at least 1 for a model with a dynamic batch axis, got "
                          f"{max_batch_size!r}")
    if any(b < 1 or b > max_batch_size for b in preferred):
        raise ScasegError(f"preferred batch sizes {preferred} must lie between 1 and max_batch_size "
                          f"{max_batch_size}")
    if backend == "tensorrt":
        _check_engine_batch_range(info, max_batch_size, path)
    return max_batch_size, preferred


def _python_model(info: ModelInfo, runtime: str, device: str) -> tuple[list[TensorSpec], list[TensorSpec],
                                                                      dict[str, str]]:
    """The python-backend model's tensors (frames in, labels out, batch axis free) and its config parameters."""
    if runtime not in PYTHON_RUNTIMES:
        raise ScasegError(f"unknown runtime {runtime!r} for the python backend: expected one of "
                          f"{', '.join(PYTHON_RUNTIMES)}")
    if not _DEVICE_OK.match(device):
        raise ScasegError(f"unknown device {device!r}: expected auto, cpu or cuda[:N]")
    labels_type = "TYPE_UINT8" if info.num_classes <= 256 else "TYPE_UINT16"
    inputs = [TensorSpec(FRAMES_INPUT, "TYPE_UINT8", (-1, -1, -1, 3))]
    outputs = [TensorSpec(LABELS_OUTPUT, labels_type, (-1, -1, -1))]
    parameters = {"runtime": runtime, "device": device, "threads": "auto", "resize": "letterbox",
                  "model_file": PYTHON_MODEL_FILE, INFO_PARAMETER: info.to_json()}
    return inputs, outputs, parameters


def _write_model_folder(model_dir: Path, path: Path, version: int, model_file: str, extra_files: list[str],
                        config: str, info: ModelInfo, model_py: Optional[str] = None) -> None:
    """Replace ``model_dir`` as a whole: the model (and its external data) in ``<version>/``, config, labels, info."""
    # One class name a line, line i = class i; a line break inside a name would shift every later class.
    labels = "".join(" ".join(str(c).split()) + "\n" for c in info.class_names)
    with atomic_dir(model_dir, owned=lambda p: (p / INFO_FILENAME).is_file(),
                    what="Triton model folder written by scaseg") as tmp:
        version_dir = tmp / str(version)
        version_dir.mkdir()
        shutil.copyfile(path, version_dir / model_file)
        for rel in extra_files:
            source = path.parent / rel
            if not source.is_file():
                raise ScasegError(f"the ONNX model {path} keeps weights in {rel}, which is missing beside it")
            (version_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, version_dir / rel)
        if model_py is not None:
            (version_dir / MODEL_FILENAMES["python"]).write_text(model_py, encoding="utf-8")
        (tmp / "config.pbtxt").write_text(config, encoding="utf-8")
        (tmp / LABELS_FILENAME).write_text(labels, encoding="utf-8")
        (tmp / INFO_FILENAME).write_text(json.dumps(info.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

