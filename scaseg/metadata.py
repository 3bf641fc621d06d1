"""What a deployed model says about itself: classes, palette, normalisation, input and output conventions.

One JSON document travels with every artefact:
- ONNX: the ``metadata_props`` entry ``scaseg``, read by ``read_onnx_metadata`` and written by
  ``write_onnx_metadata`` only (neither imports ``onnx``: the runtime reads it through ONNX Runtime);
- TensorRT engine: a side file ``<engine>.json`` (a plan file has no place for user metadata);
- PyTorch checkpoint: the ``config`` entry of the checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from scaseg.errors import ScasegError

METADATA_KEY = "scaseg"
SCHEMA_VERSION = 1

# ImageNet statistics on the 0..255 scale, RGB order (the paper's encoders are ImageNet-pretrained).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """A deterministic, well-separated RGB palette (the PASCAL VOC bit-interleaving scheme)."""
    palette = []
    for index in range(num_classes):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette.append((r, g, b))
    return palette


@dataclass
class ModelInfo:
    """Facts a runtime needs to feed a model and read its answer."""

    variant: str
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    palette: list[tuple[int, int, int]] = field(default_factory=list)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # (H, W) of a static graph, or the size the model was trained at for a dynamic one.
    input_size: Optional[tuple[int, int]] = None
    dynamic_batch: bool = False
    dynamic_spatial: bool = False
    batch: int = 1
    input_name: str = "images"
    output_name: str = "output"
    # "logits": float (B, C, H, W) at the input size; "labels": int (B, H, W) label map (argmax in the graph).
    output: str = "logits"
    layout: str = "NCHW"
    color: str = "RGB"
    # How an image of another size is brought to input_size: "stretch" (resize) or "letterbox" (keep ratio, pad).
    resize: str = "stretch"
    precision: str = "fp32"
    sca_op: str = "decomposed"
    # Free-form provenance: export options, package versions, calibration summary, TensorRT facts...
    extra: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.class_names:
            self.class_names = [f"class_{i}" for i in range(self.num_classes)]
        if not self.palette:
            self.palette = default_palette(self.num_classes)
        self.palette = [tuple(int(v) for v in c) for c in self.palette]  # type: ignore[misc]
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        if self.input_size is not None:
            self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        if len(self.class_names) != self.num_classes or len(self.palette) < self.num_classes:
            raise ScasegError(
                f"model metadata is inconsistent: {self.num_classes} classes but "
                f"{len(self.class_names)} names and {len(self.palette)} palette colours"
            )
        if self.output not in ("logits", "labels"):
            raise ScasegError(f"model metadata names an unknown output kind {self.output!r} (expected logits or labels)")
        if self.resize not in ("stretch", "letterbox"):
            raise ScasegError(f"model metadata names an unknown resize policy {self.resize!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["palette"] = [list(c) for c in self.palette]
        d["input_size"] = list(self.input_size) if self.input_size else None
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelInfo":
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("variant", "num_classes") if k not in d]
        if missing:
            raise ScasegError(f"model metadata lacks {', '.join(missing)}; was the model exported by scaseg-export?")
        kwargs = {k: v for k, v in d.items() if k in known}
        if kwargs.get("input_size") is not None:
            kwargs["input_size"] = tuple(kwargs["input_size"])
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "ModelInfo":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScasegError(f"model metadata is not valid JSON ({exc.msg})") from None
        if not isinstance(d, dict):
            raise ScasegError("model metadata is not a JSON object")
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> "ModelInfo":
        return dataclasses.replace(self, **changes)


def read_onnx_metadata(entries: Any, path: Any) -> ModelInfo:
    """The ModelInfo of an ONNX model: the one reader of its ``scaseg`` entry.

    ``entries``: the model's ``metadata_props`` (of an onnx.ModelProto) or ONNX Runtime's ``custom_metadata_map``
    (a dict), so that the runtime reads it without importing onnx. ``path`` names the model in the error.
    """
    props = dict(entries) if isinstance(entries, Mapping) else {p.key: p.value for p in entries}
    if METADATA_KEY not in props:
        raise ScasegError(f"the ONNX model {path} has no scaseg metadata; export it with scaseg-export")
    return ModelInfo.from_json(props[METADATA_KEY])


def write_onnx_metadata(model: Any, info: ModelInfo) -> None:
    """Store ``info`` as the ``scaseg`` entry of an onnx.ModelProto, replacing an older one: the one writer."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=METADATA_KEY, value=info.to_json())
