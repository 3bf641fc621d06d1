"""The signature of a model as Triton sees it: its inputs and outputs (name, Triton data type, shape).

Read from the ONNX graph, or, for a TensorRT plan (no readable signature without TensorRT), from the engine's
ModelInfo side file. export/triton.py writes the repository from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaseg.errors import ScasegError
from scaseg.metadata import ModelInfo, read_onnx_metadata

# ONNX TensorProto.DataType numbers -> Triton DataType names (model_config.proto). Numbers, not onnx.TensorProto
# attributes, so this table reads without onnx installed.
_ONNX_TO_TRITON = {
    1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
    7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32",
    13: "TYPE_UINT64", 16: "TYPE_BF16",
}
# Names a TensorRT side file may use for a tensor's data type (numpy or TensorRT spelling) -> Triton.
_NAMED_TO_TRITON = {
    "float32": "TYPE_FP32", "float": "TYPE_FP32", "fp32": "TYPE_FP32", "float16": "TYPE_FP16", "half": "TYPE_FP16",
    "fp16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "bf16": "TYPE_BF16", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8",
    "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL",
}

@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as Triton sees it; -1 marks a dimension the model leaves free."""

    name: str
    data_type: str
    shape: tuple[int, ...]


# --- reading the model's signature-----------------------------------------------------------------------------


def _onnx_tensor(value: Any, where: str) -> TensorSpec:
    if not value.type.HasField("tensor_type"):
        raise ScasegError(f"the ONNX model {where} has a non-tensor input or output {value.name!r}; Triton needs tensors")
    tensor_type = value.type.tensor_type
    data_type = _ONNX_TO_TRITON.get(int(tensor_type.elem_type))
    if data_type is None:
        raise ScasegError(f"the ONNX model {where} has tensor {value.name!r} of a data type Triton cannot serve "
                          f"(ONNX type {tensor_type.elem_type})")
    if not tensor_type.HasField("shape"):
        raise ScasegError(f"the ONNX model {where} does not declare the rank of {value.name!r}; re-export it with shapes")
    # A symbolic (dim_param) or missing dim_value is free: Triton's -1.
    shape = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor_type.shape.dim)
    return TensorSpec(value.name, data_type, shape)


def _load_onnx(path: Path) -> Any:
    import onnx  # export/ may import onnx; kept local so importing this module stays cheap

    try:
        # Only the graph signature is needed here; weights stored outside the file are copied, not read.
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and onnx's own errors share no useful base class
        raise ScasegError(f"cannot read {path} as an ONNX model ({type(exc).__name__})") from None


def onnx_signature(path: str | Path) -> tuple[ModelInfo, list[TensorSpec], list[TensorSpec]]:
    """ModelInfo (metadata_props "scaseg"), inputs and outputs of an ONNX model."""
    path = Path(path)
    model = _load_onnx(path)
    info = read_onnx_metadata(model.metadata_props, path)
    weights = {t.name for t in model.graph.initializer}
    inputs = [_onnx_tensor(v, str(path)) for v in model.graph.input if v.name not in weights]
    outputs = [_onnx_tensor(v, str(path)) for v in model.graph.output]
    return info, inputs, outputs


def external_files(path: Path) -> list[str]:
    """Relative locations of weight files an ONNX model keeps outside itself (models over 2 GB)."""
    model = _load_onnx(path)
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    locations = []
    for tensor in tensors:
        if tensor.data_location != 1:  # TensorProto.EXTERNAL
            continue
        entry = {e.key: e.value for e in tensor.external_data}
        location = entry.get("location", "")
        if not location or Path(location).is_absolute() or ".." in Path(location).parts:
            raise ScasegError(f"the ONNX model {path} points to weights at {location!r}; expected a file beside it")
        if location not in locations:
            locations.append(location)
    return locations


def _trt_labels_type(facts: dict[str, Any]) -> str:
    # Assumption (no TensorRT here to check): TensorRT 8.x casts ONNX int64 tensors down to int32, TensorRT >= 10
    # has a native INT64 type and keeps the ArgMax output int64. A side file that records the real dtype wins.
    from scaseg.runtime.tensorrt.installed import generation_of, parse_version

    version, flavor = facts.get("trt_version"), facts.get("trt_flavor", "standard")
    generation = generation_of(str(flavor), parse_version(str(version))) if version else "10.x"
    return "TYPE_INT32" if generation == "8.5" else "TYPE_INT64"


def engine_signature(path: str | Path) -> tuple[ModelInfo, list[TensorSpec], list[TensorSpec]]:
    """ModelInfo, inputs and outputs of a TensorRT engine, from its ``<engine>.json`` side file.

    A plan cannot be opened without TensorRT, so shapes come from the metadata: input (B, 3, H, W), output
    (B, C, H, W) logits or (B, H, W) labels, with -1 where the engine was built for a range.
    """
    from scaseg.runtime.tensorrt.engine_info import engine_facts, read_engine_info

    info = read_engine_info(path)
    facts = engine_facts(info)
    batch = -1 if info.dynamic_batch else int(info.batch)
    if info.dynamic_spatial or info.input_size is None:
        height = width = -1
    else:
        height, width = info.input_size
    # Explicit tensor dtypes recorded by the builder ({"images": "float32", ...}) win over the defaults:
    # engines keep float32 inputs and logits at every precision (the fp16/int8 ONNX keep float32 I/O).
    io_dtypes = facts.get("io_dtypes")
    recorded: dict[str, Any] = io_dtypes if isinstance(io_dtypes, dict) else {}

    def dtype(name: str, default: str) -> str:
        text = recorded.get(name)
        if text is None:
            return default
        key = str(text).lower()
        if key not in _NAMED_TO_TRITON:
            raise ScasegError(f"the engine side file of {path} gives tensor {name!r} the data type {text!r}, "
                              "which Triton cannot serve")
        return _NAMED_TO_TRITON[key]

    inputs = [TensorSpec(info.input_name, dtype(info.input_name, "TYPE_FP32"), (batch, 3, height, width))]
    if info.output == "logits":
        out = TensorSpec(info.output_name, dtype(info.output_name, "TYPE_FP32"), (batch, info.num_classes, height, width))
    else:
        out = TensorSpec(info.output_name, dtype(info.output_name, _trt_labels_type(facts)), (batch, height, width))
    return info, inputs, [out]
