"""The client side of a Triton server that serves a scaseg python-backend model: frames in, labels out.

``open_server(URL, name)`` connects (``http://host:port`` or ``grpc://host:port``), checks the model is one that
scaseg-export wrote with ``--triton-backend python`` (its config carries the model's ModelInfo) and returns a
ServerBackend; ``RemotePredictor`` wraps it with the Predictor's prepare/run/finish API, so scaseg-infer's pipeline
runs unchanged: prepare passes the RGB frame through, run sends the frames (one request per batch of same-size
frames), finish returns the labels the server computed at the frame's size.

HTTP speaks Triton's binary tensor extension over ``http.client`` (no tritonclient needed); gRPC uses
``tritonclient.grpc`` (``pip install ".[serve]"``). Every failure is one sentence (ScasegError).
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
from typing import Any, Optional, Sequence
from urllib.parse import quote, urlsplit

import numpy as np

from scaseg.errors import ScasegError, require_package
from scaseg.metadata import ModelInfo
from scaseg.runtime.backends.base import Backend, InputMetadata
from scaseg.runtime.predictor import Predictor
from scaseg.runtime.preprocess import Geometry
from scaseg.runtime.sources import Frame

INPUT_NAME, OUTPUT_NAME = "FRAMES", "LABELS"  # runtime/triton_model.py
INFO_PARAMETER = "scaseg"  # the config parameter that carries the model's ModelInfo (export/triton.py)
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
REQUEST_TIMEOUT_S = 60.0
#: numpy -> Triton data type names, for what a request sends (frames are uint8; the server refuses anything else).
_TRITON_TYPES = {"uint8": "UINT8", "uint16": "UINT16", "int32": "INT32", "int64": "INT64", "float16": "FP16",
                 "float32": "FP32", "float64": "FP64"}
START_HINT = "is it running? scaseg-serve REPO starts one"


def parse_server_url(url: str) -> tuple[str, str, int]:
    """``http://host:port`` / ``grpc://host:port`` -> (scheme, host, port); one sentence for anything else."""
    parts = urlsplit(url.strip())
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ScasegError(f"--server {url!r}: expected http://HOST:PORT or grpc://HOST:PORT (Triton's HTTP or gRPC "
                          "endpoint)")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ScasegError(f"--server {url!r}: the port is not a number from 1 to 65535") from None
    return parts.scheme, parts.hostname, port


def check_server_options(url: str, model_name: Optional[str], given: dict[str, bool]) -> None:
    """At a command's edge: a well-formed --server URL, and none of the options that belong to the server."""
    parse_server_url(url)
    clash = [option for option, present in given.items() if present]
    if clash:
        raise ScasegError(f"{', '.join(clash)} cannot be combined with --server: the server's model and runtime "
                          "decide them (scaseg-export --triton-backend python)")
    if model_name is not None and not model_name.strip():
        raise ScasegError("--model-name is empty: name the served model, or leave it out for the server's only one")


def _int(value: Any) -> int:
    return int(value or 0)  # gRPC's JSON gives 64-bit counters as strings


class HttpTransport:
    """Triton's HTTP/REST API (KServe v2 with the binary tensor extension), one connection per thread."""

    def __init__(self, host: str, port: int, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.url = f"http://{host}:{port}"
        self._local = threading.local()

    def _call(self, method: str, path: str, body: bytes = b"", headers: Optional[dict[str, str]] = None
              ) -> tuple[int, dict[str, str], bytes]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            answer = conn.getresponse()
            return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self._local.conn = None
            reason = "timed out" if isinstance(exc, socket.timeout) else (str(exc) or type(exc).__name__)
            raise ScasegError(f"cannot reach the Triton server at {self.url} ({reason}): {START_HINT}") from None

    def _json(self, method: str, path: str, what: str) -> Any:
        status, _, data = self._call(method, path)
        if status != 200:
            raise ScasegError(f"the Triton server at {self.url} refused {what}: {_error_text(data)}")
        return json.loads(data or b"{}")

    def ready(self) -> bool:
        return self._call("GET", "/v2/health/ready")[0] == 200

    def models(self) -> list[tuple[str, str]]:
        return [(m.get("name", ""), m.get("state", "")) for m in self._json("POST", "/v2/repository/index", "the model list")]

    def config(self, name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v2/models/{quote(name)}/config", f"the config of {name!r}"))

    def statistics(self, name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v2/models/{quote(name)}/stats", f"the statistics of {name!r}"))

    def infer(self, name: str, frames: np.ndarray, resize: str) -> np.ndarray:
        header = json.dumps({
            "inputs": [{"name": INPUT_NAME, "shape": list(frames.shape), "datatype": _triton_type(frames),
                        "parameters": {"binary_data_size": frames.nbytes}}],
            "outputs": [{"name": OUTPUT_NAME, "parameters": {"binary_data": True}}],
            "parameters": {"resize": resize}}).encode()
        status, headers, data = self._call("POST", f"/v2/models/{quote(name)}/infer", header + frames.tobytes(), {
            "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))})
        if status != 200:
            raise ScasegError(f"the Triton server at {self.url} refused the request: {_error_text(data)}")
        size = int(headers.get("inference-header-content-length", len(data)))
        meta = json.loads(data[:size])
        (out,) = [o for o in meta["outputs"] if o["name"] == OUTPUT_NAME]
        dtype = {"UINT8": np.uint8, "UINT16": np.uint16}[out["datatype"]]
        return np.frombuffer(data[size:size + out["parameters"]["binary_data_size"]], dtype).reshape(out["shape"])


def _triton_type(array: np.ndarray) -> str:
    name = _TRITON_TYPES.get(array.dtype.name)
    if name is None:
        raise ScasegError(f"cannot send {array.dtype} data to a Triton server")
    return name


def _error_text(data: bytes) -> str:
    try:
        text = str(json.loads(data).get("error", data.decode(errors="replace")))
    except (ValueError, AttributeError):
        text = data.decode(errors="replace")
    return " ".join(text.split()) or "no reason given"


class GrpcTransport:
    """Triton's gRPC API through tritonclient.grpc; one client per thread (a channel each)."""

    def __init__(self, host: str, port: int, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.grpc = require_package("tritonclient.grpc", "--server grpc://", "serve")
        self.utils = require_package("tritonclient.utils", "--server grpc://", "serve")
        self.url, self.target, self.timeout_s = f"grpc://{host}:{port}", f"{host}:{port}", timeout_s
        self._local = threading.local()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.grpc.InferenceServerClient(self.target)
        return client

    def _do(self, what: str, call: Any) -> Any:
        try:
            return call(self._client())
        except self.utils.InferenceServerException as exc:
            status, text = str(exc.status() or ""), " ".join(str(exc.message() or exc).split())
            if "UNAVAILABLE" in status or "DEADLINE_EXCEEDED" in status:
                raise ScasegError(f"cannot reach the Triton server at {self.url} ({text}): {START_HINT}") from None
            raise ScasegError(f"the Triton server at {self.url} refused {what}: {text}") from None

    def ready(self) -> bool:
        return bool(self._do("the health check", lambda c: c.is_server_ready(client_timeout=self.timeout_s)))

    def models(self) -> list[tuple[str, str]]:
        index = self._do("the model list", lambda c: c.get_model_repository_index(as_json=True))
        return [(m.get("name", ""), m.get("state", "")) for m in index.get("models", [])]

    def config(self, name: str) -> dict[str, Any]:
        return dict(self._do(f"the config of {name!r}", lambda c: c.get_model_config(name, as_json=True))["config"])

    def statistics(self, name: str) -> dict[str, Any]:
        return dict(self._do(f"the statistics of {name!r}", lambda c: c.get_inference_statistics(name, as_json=True)))

    def infer(self, name: str, frames: np.ndarray, resize: str) -> np.ndarray:
        tensor = self.grpc.InferInput(INPUT_NAME, list(frames.shape), _triton_type(frames))
        tensor.set_data_from_numpy(frames)
        wanted = [self.grpc.InferRequestedOutput(OUTPUT_NAME)]
        result = self._do("the request", lambda c: c.infer(name, [tensor], outputs=wanted, parameters={"resize": resize},
                                                          client_timeout=self.timeout_s))
        return np.asarray(result.as_numpy(OUTPUT_NAME))


Transport = HttpTransport | GrpcTransport


def connect(url: str, timeout_s: float = REQUEST_TIMEOUT_S) -> Transport:
    """A transport for ``url`` whose server answered ready; one sentence where none answers."""
    scheme, host, port = parse_server_url(url)
    transport: Transport = (HttpTransport if scheme == "http" else GrpcTransport)(host, port, timeout_s)
    if not transport.ready():
        raise ScasegError(f"the Triton server at {transport.url} answers but is not ready (a model still loading "
                          "or failed): see its log")
    return transport


def model_info(transport: Transport, name: Optional[str]) -> tuple[str, ModelInfo]:
    """The model to use (``name``, or the server's only ready one) and its ModelInfo from the config's parameters."""
    ready = [m for m, state in transport.models() if state == "READY"]
    if name is None:
        if len(ready) != 1:
            raise ScasegError(f"the Triton server at {transport.url} serves {len(ready)} models "
                              f"({', '.join(ready) or 'none ready'}): name one with --model-name")
        name = ready[0]
    elif name not in ready:
        raise ScasegError(f"the Triton server at {transport.url} has no ready model {name!r} (it serves: "
                          f"{', '.join(ready) or 'none'})")
    params = transport.config(name).get("parameters") or {}
    text = (params.get(INFO_PARAMETER) or {}).get("string_value")
    if not text:
        raise ScasegError(f"the model {name!r} on {transport.url} is not a scaseg frames-in, labels-out model: "
                          "write it with scaseg-export --format triton --triton-backend python")
    try:
        return name, ModelInfo.from_json(text)
    except (ValueError, TypeError, ScasegError) as exc:
        raise ScasegError(f"the model {name!r} on {transport.url} carries unreadable scaseg metadata ({exc})") from None


class ServerBackend(Backend):
    """A model served by Triton, as a Backend whose ``infer`` takes raw uint8 frames (N, H, W, 3), not tensors."""

    name = "triton"

    def __init__(self, transport: Transport, model_name: str, info: ModelInfo, resize: str = "letterbox") -> None:
        super().__init__(transport.url, info)
        self.transport, self.model_name, self.resize = transport, model_name, resize

    @property
    def device(self) -> str:
        return f"{self.transport.url}/{self.model_name}"

    def get_input_metadata(self) -> InputMetadata:
        return InputMetadata(INPUT_NAME, np.dtype(np.uint8), (None, None, None, 3))

    @property
    def fixed_size(self) -> Optional[tuple[int, int]]:
        return None  # the server takes frames of any size

    def infer(self, batch: np.ndarray) -> np.ndarray:
        labels = self.transport.infer(self.model_name, np.ascontiguousarray(batch, dtype=np.uint8), self.resize)
        if labels.shape != batch.shape[:3]:
            raise ScasegError(f"the model {self.model_name!r} on {self.transport.url} answered labels of shape "
                              f"{tuple(labels.shape)} for frames of shape {tuple(batch.shape)}")
        return labels

    def statistics(self) -> dict[str, int]:
        """The server's own counts for this model: requests, executions, frames, queue and compute time."""
        stats = (self.transport.statistics(self.model_name).get("model_stats") or [{}])[0]
        inference = stats.get("inference_stats") or {}
        return {"requests": _int((inference.get("success") or {}).get("count")),
                "failed": _int((inference.get("fail") or {}).get("count")),
                "frames": _int(stats.get("inference_count")), "executions": _int(stats.get("execution_count")),
                "queue_ns": _int((inference.get("queue") or {}).get("ns")),
                "compute_ns": _int((inference.get("compute_infer") or {}).get("ns"))}


def open_server(url: str, model_name: Optional[str] = None, resize: str = "letterbox",
                timeout_s: float = REQUEST_TIMEOUT_S) -> ServerBackend:
    """Connect to ``url`` and return its scaseg model (``model_name``, or the only one) as a ServerBackend."""
    transport = connect(url, timeout_s)
    name, info = model_info(transport, model_name)
    return ServerBackend(transport, name, info, resize)


class RemotePredictor(Predictor):
    """The Predictor's API over a ServerBackend: the server preprocesses, runs the model and postprocesses."""

    backend: ServerBackend

    def __init__(self, backend: ServerBackend, batch: Optional[int] = None) -> None:
        # Not Predictor.__init__: no local model, so no input size or batch rules of one.
        self.backend, self.info, self.resize = backend, backend.info, backend.resize
        self.size = tuple(backend.info.input_size) if backend.info.input_size else None  # type: ignore[assignment]
        self.imgsz_ignored, self.fixed_batch = False, None
        self.batch = batch or 1

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """The frame itself (the server preprocesses); its Geometry is the identity."""
        hw = (int(image.shape[0]), int(image.shape[1]))
        return image, Geometry(hw, hw, hw)

    def prepare_frame(self, frame: Frame) -> tuple[np.ndarray, Geometry]:
        """The server takes RGB frames: one given as planes is converted here."""
        assert frame.image is not None
        return self.prepare(frame.image)

    def run(self, tensors: Sequence[np.ndarray]) -> np.ndarray:
        """Label maps for the frames: one request per run of same-size frames (a list when sizes differ)."""
        out: list[np.ndarray] = []
        start = 0
        while start < len(tensors):
            end = start + 1
            while end < len(tensors) and tensors[end].shape == tensors[start].shape:
                end += 1
            out.extend(self.backend.infer(np.stack(tensors[start:end])))
            start = end
        return out  # type: ignore[return-value]  # the pipeline iterates it; frames of several sizes cannot stack

    def finish(self, output: np.ndarray, geom: Geometry, to_source: bool = True) -> np.ndarray:
        """The server's labels, already at the frame's size (so also what ``to_source=False`` asks for)."""
        return output
