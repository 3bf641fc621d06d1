"""The Triton python-backend model scaseg-export writes (``--triton-backend python``): raw frames in, labels out.

Each model version folder holds the model file and a two-line ``model.py`` that imports ``TritonPythonModel``
from here, so the server runs the project's own torch-free runtime (ONNX Runtime or OpenVINO through
scaseg.runtime.backends) and its own pre- and post-processing (scaseg.runtime.predictor.Predictor).

Tensors (docs/triton.md): input ``FRAMES`` uint8 ``(N, H, W, 3)`` RGB frames of any size (N up to max_batch_size;
the frames of one request share their size), output ``LABELS`` uint8 ``(N, H, W)`` (uint16 for models of more
than 256 classes) at the frames' own size. A request parameter ``resize`` (``letterbox`` or ``stretch``) overrides
the config's. Triton's dynamic batcher hands ``execute`` several requests at once: their frames are preprocessed
and run through the model together, in batches the model accepts.

Tensors cross the stub by DLPack, never by ``Tensor.as_numpy()`` / ``Tensor(name, array)``: the stub that
nvidia-pytriton 0.7.0 ships (Triton 2.51) was built with a pybind11 that reads a numpy dtype's item size at its
numpy-1 place in ``PyArray_Descr``; under numpy 2 that field moved, every tensor comes out as 0 bytes and each
inference fails (``output tensor shape does not match size of output``). DLPack carries dtype and shape itself.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from scaseg.errors import ScasegError
from scaseg.runtime.backends import open_backend
from scaseg.runtime.predictor import Predictor

INPUT_NAME = "FRAMES"
OUTPUT_NAME = "LABELS"
RESIZES = ("letterbox", "stretch")


def config_parameters(config: dict[str, Any]) -> dict[str, str]:
    """The ``parameters`` of a model config (as Triton hands it to ``initialize``, or serves it): name -> text."""
    params = config.get("parameters") or {}
    return {key: str(value.get("string_value", "")) for key, value in params.items()}


def build_predictor(model_dir: Path, params: dict[str, str]) -> Predictor:
    """The Predictor a python-backend model runs: the model file of its version folder on the configured runtime."""
    model_file = model_dir / params.get("model_file", "model.onnx")
    threads: Optional[str] = params.get("threads") or "auto"
    backend = open_backend(str(model_file), params.get("runtime", "onnxruntime"), device=params.get("device", "auto"),
                           threads=None if threads == "auto" else threads)
    return Predictor(backend, resize=params.get("resize") or None)


def segment_frames(predictor: Predictor, groups: list[np.ndarray], resizes: list[str]) -> list[np.ndarray]:
    """Label maps for each request's frames ((N, H, W, 3) uint8 -> (N, H, W)), all run through the model together.

    Network inputs of one size are stacked, up to the model's fixed batch where it has one; a dynamic-batch model
    takes them all in one call.
    """
    prepared = []  # (request index, tensor, geometry), in request order
    for index, (frames, resize) in enumerate(zip(groups, resizes)):
        for frame in frames:
            tensor, geom = _prepare(predictor, frame, resize)
            prepared.append((index, tensor, geom))
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, (_, tensor, _) in enumerate(prepared):
        by_shape.setdefault(tensor.shape, []).append(i)
    outputs: list[Any] = [None] * len(prepared)
    step = predictor.fixed_batch or max(1, len(prepared))
    for rows in by_shape.values():
        for start in range(0, len(rows), step):
            chunk = rows[start:start + step]
            for i, out in zip(chunk, predictor.run([prepared[i][1] for i in chunk])):
                outputs[i] = out
    labels: list[list[np.ndarray]] = [[] for _ in groups]
    for (index, _, geom), out in zip(prepared, outputs):
        labels[index].append(predictor.finish(out, geom))
    return [np.stack(maps) if maps else np.zeros((0, 0, 0), np.uint8) for maps in labels]


def _prepare(predictor: Predictor, frame: np.ndarray, resize: str) -> Any:
    if resize == predictor.resize:
        return predictor.prepare(frame)
    previous = predictor.resize
    predictor.resize = resize  # one thread runs execute (one model instance per stub process)
    try:
        return predictor.prepare(frame)
    finally:
        predictor.resize = previous


def request_resize(parameters: str, default: str) -> str:
    """The ``resize`` a request asks for (its JSON parameters), else ``default``; refused when not a known policy."""
    asked = json.loads(parameters or "{}").get("resize", default) if parameters else default
    if asked not in RESIZES:
        raise ScasegError(f"unknown resize {asked!r}: expected one of {', '.join(RESIZES)}")
    return str(asked)


class TritonPythonModel:
    """Triton's python-backend entry points (``initialize``, ``execute``, ``finalize``)."""

    predictor: Predictor

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        model_dir = Path(args["model_repository"]) / args["model_version"]
        self.predictor = build_predictor(model_dir, config_parameters(config))

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils  # only inside Triton's python-backend stub

        groups: list[np.ndarray] = []
        resizes: list[str] = []
        errors: list[Optional[str]] = []
        for request in requests:
            try:
                tensor = pb_utils.get_input_tensor_by_name(request, INPUT_NAME)
                groups.append(np.from_dlpack(tensor).copy())
                parameters = request.parameters() if hasattr(request, "parameters") else ""  # Triton >= 23.xx
                resizes.append(request_resize(parameters, self.predictor.resize))
                errors.append(None)
            except (ScasegError, ValueError, TypeError) as exc:
                groups.append(np.zeros((0, 1, 1, 3), np.uint8))
                resizes.append(self.predictor.resize)
                errors.append(str(exc))
        try:
            labels = segment_frames(self.predictor, groups, resizes)
        except Exception as exc:  # the server answers each request with the reason instead of dying
            message = f"scaseg model failed: {' '.join(str(exc).split()) or type(exc).__name__}"
            return [pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
                    for _ in requests]
        responses = []
        for maps, error in zip(labels, errors):
            if error is not None:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(error)))
            else:
                out = np.ascontiguousarray(maps)
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor.from_dlpack(OUTPUT_NAME, out.__dlpack__())]))
        return responses

    def finalize(self) -> None:
        backend = getattr(getattr(self, "predictor", None), "backend", None)
        if backend is not None:
            backend.close()
