"""The layer table of a built engine: which data type each convolution / GEMM runs in, against what the ONNX asks.

Read from the builder's verbose "Layers:" report (TensorRT-RTX) or the engine inspector's JSON (standard
TensorRT); pure parsing, no TensorRT call.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

#: Layer types (TensorRT-RTX's "correlation"/"gemm", standard TensorRT's Cask* kernels) counted as conv/GEMM.
_MATH_LAYER = re.compile(r"conv|correlation|gemm|matrixmultiply", re.IGNORECASE)
#: Data type words in TensorRT's layer information -> our precision names.
_DTYPE_WORDS = (("int8", "int8"), ("half", "fp16"), ("fp16", "fp16"), ("bfloat16", "bf16"), ("bf16", "bf16"),
                ("float", "fp32"), ("fp32", "fp32"))
_WIDTH = {"int8": 0, "fp16": 1, "bf16": 1, "fp32": 2}


@dataclass(frozen=True)
class Layer:
    """One layer of a built engine: its name, type, the data type of its first input, the ONNX nodes it came from."""

    name: str
    kind: str
    dtype: Optional[str]
    onnx_nodes: tuple[str, ...]

    @property
    def is_math(self) -> bool:
        return bool(_MATH_LAYER.search(self.kind))


def _dtype_word(text: str) -> Optional[str]:
    low = text.lower()
    for word, name in _DTYPE_WORDS:
        if word in low:
            return name
    return None


def _onnx_nodes(metadata: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in re.findall(r"\[ONNX Layer: ([^\]]+)\]", metadata or ""))


def layers_from_log(text: str) -> list[Layer]:
    """Parse the builder's verbose "Layers:" report (one line per layer; TensorRT-RTX with DETAILED profiling).

    Line shape: ``Name: N, LayerType: T, Inputs: [ { ..., Datatype: Half, ... } ], Constants: [ ... ], Outputs:
    [ ... ], TacticName: ..., StreamId: 0, Metadata: [ONNX Layer: a][ONNX Layer: b]``.
    """
    layers = []
    pattern = re.compile(r"^Name: (?P<name>.*?), LayerType: (?P<kind>[^,]+), Inputs: \[(?P<inputs>.*?)\], "
                         r"Constants: \[(?P<consts>.*?)\], Outputs:.*?Metadata: ?(?P<meta>.*)$")
    for line in text.splitlines():
        match = pattern.match(line.strip())
        if not match:
            continue
        dtypes = re.findall(r"Datatype: (\w+)", match.group("inputs")) or re.findall(r"Datatype: (\w+)",
                                                                                      match.group("consts"))
        layers.append(Layer(match.group("name"), match.group("kind").strip(),
                            _dtype_word(dtypes[0]) if dtypes else None, _onnx_nodes(match.group("meta"))))
    return layers


def layers_from_inspector(info: Mapping[str, Any]) -> list[Layer]:
    """Layers from IEngineInspector's JSON (standard TensorRT, DETAILED profiling): ``{"Layers": [{...}, ...]}``."""
    layers = []
    for entry in info.get("Layers", []):
        if not isinstance(entry, Mapping):  # LAYER_NAMES_ONLY gives strings: nothing to count
            continue
        inputs = entry.get("Inputs") or []
        first = inputs[0] if inputs and isinstance(inputs[0], Mapping) else {}
        dtype_text = str(first.get("Format/Datatype", first.get("Datatype", "")))
        layers.append(Layer(str(entry.get("Name", "")), str(entry.get("LayerType", "")), _dtype_word(dtype_text),
                            _onnx_nodes(str(entry.get("Metadata", "")))))
    return layers


def layer_precisions(layers: Sequence[Layer]) -> dict[str, int]:
    """Convolution and matrix-multiply layers counted by the data type of their input: {"int8", "fp16", "fp32"}."""
    counts = {"int8": 0, "fp16": 0, "fp32": 0}
    for layer in layers:
        if layer.is_math and layer.dtype is not None:
            key = "fp16" if layer.dtype == "bf16" else layer.dtype
            counts[key] = counts.get(key, 0) + 1
    return counts


def wider_than_asked(layers: Sequence[Layer], asked: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(ONNX node, type the engine runs it in, type the ONNX asks for) for conv/GEMMs that stayed wider."""
    out = []
    for layer in layers:
        if not layer.is_math or layer.dtype is None:
            continue
        for node in layer.onnx_nodes:
            want = asked.get(node)
            if want is not None and _WIDTH[layer.dtype] > _WIDTH[want]:
                out.append((node, layer.dtype, want))
                break
    return out


def precision_summary(counts: Mapping[str, int], wider: Sequence[tuple[str, str, str]], limit: int = 10) -> list[str]:
    """The lines a build prints about where its conv/GEMM layers run."""
    total = sum(counts.values())
    lines = [f"conv/GEMM layers by input type: int8 {counts.get('int8', 0)}, fp16 {counts.get('fp16', 0)}, "
             f"fp32 {counts.get('fp32', 0)} (of {total})"]
    if wider:
        lines.append(f"{len(wider)} ONNX conv/GEMM node(s) run in a wider type than the file asks for:")
        lines += [f"  - {node}: {got} (the ONNX asks for {want})" for node, got, want in wider[:limit]]
        if len(wider) > limit:
            lines.append(f"  - ... and {len(wider) - limit} more")
    else:
        lines.append("every conv/GEMM runs in the type the ONNX asks for")
    return lines
