"""What a deployed model says about itself: classes, palette, normalisation, input and output conventions.

One JSON document travels with every artefact:
- ONNX: the ``metadata_props`` entry ``scaseg``, read by ``read_onnx_metadata`` and written by
  ``write_onnx_metadata`` only (neither imports ``onnx``: the runtime reads it through ONNX Runtime);
  ``read_onnx_model`` reads an ONNX file with it (and imports ``onnx`` when called);
- TensorRT engine: a side file ``<engine>.json`` (a plan file has no place for user metadata);
- PyTorch checkpoint: the ``config`` entry of the checkpoint.

All three are untrusted: every ModelInfo, read or built, passes ``metadata_problem`` (types, ranges and
vocabularies of every field a runtime uses), and a reader names its file in the one sentence of a refusal.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from scaseg.errors import ScasegError

METADATA_KEY = "scaseg"
SCHEMA_VERSION = 1
#: The strip cross-attention op of an ``--sca-op function`` export: the ONNX local function export/sca.py writes, the
#: nodes the engine builder tags for the TensorRT plugin, and the plugin's namespace and name (runtime/tensorrt/plugin.py).
SCA_DOMAIN = "scaseg"
SCA_OP = "StripCrossAttention"
SCA_DOMAIN_VERSION = 1

# ImageNet statistics on the 0..255 scale, RGB order (the paper's encoders are ImageNet-pretrained).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# The words each field may hold. The exporter, calibration and the TensorRT builder write them; the runtime reads them.
OUTPUTS = ("logits", "labels")
RESIZES = ("stretch", "letterbox")
LAYOUTS = ("NCHW", "NHWC")  # calibration feeds both (calibration/data.py); a float graph takes NCHW, a uint8 one NHWC
# What the graph's input is: "float" (normalised float32 NCHW at input_size, the runtime preprocesses) or "uint8"
# (raw frames: RGB uint8 NHWC at input_size, the source size; resize to network_size, normalisation and layout are in
# the graph, export/raw_input.py). A model written before this field existed is "float".
INPUT_TYPES = ("float", "uint8")
COLORS = ("RGB",)  # the one channel order the runtime and calibration feed
PRECISIONS = ("fp32", "fp16", "int8")  # the one precision vocabulary: --precision, ONNX files and engines
SCA_OPS = ("decomposed", "function", "grid")  # how strip attention is in the graph (export/sca.py)

# Bounds on numbers a runtime allocates by: beyond them a value is a lie, not a model.
MAX_CLASSES = 65536  # a predicted label map is uint16 at the widest (runtime/preprocess.label_dtype)
# 8192 per side holds an 8K frame (4320x7680) and the largest scene scaseg-synth renders (4096x8192); a float32
# input of 8192x8192 is already 768 MiB per image before the model's activations, so a larger size in metadata
# would only turn into an allocation no edge device survives.
MAX_SIDE = 8192
MAX_BATCH = 1024  # far above any batch a segmentation graph is exported or profiled at; calibration allocates it
# mean and std are statistics of 0..255 pixels: a mean lies in 0..255 and a std in (0, 255]. The floor keeps a std
# that float32 rounds to 0 (or nearly) out: (x - mean) / std would be infinite and every pixel class 0.
MIN_STD = 1e-3


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


def check_precision(precision: str, what: str = "precision") -> str:
    """The one membership check of the precision vocabulary (PRECISIONS): ``precision``, or one sentence naming
    ``what`` asked for it (e.g. "engine precision") and the words it may be."""
    if precision not in PRECISIONS:
        raise ScasegError(f"unknown {what} {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision


class InvalidMetadata(ScasegError):
    """ModelInfo fields no runtime can use; ``why`` names the field, readers add the file."""

    def __init__(self, why: str) -> None:
        super().__init__(f"the model metadata is invalid: {why}")
        self.why = why


def _shown(value: Any) -> str:
    """A field's value as the metadata spells it (JSON), cut short."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _ints_within(value: Any, count: int, low: int, high: int) -> bool:
    return _is_list(value) and len(value) == count and all(_is_int(v) and low <= v <= high for v in value)


def _numbers_within(value: Any, count: int, low: float, high: float) -> bool:
    return _is_list(value) and len(value) == count and all(_is_number(v) and low <= v <= high for v in value)


def _class_problem(num_classes: Any, class_names: Any, palette: Any) -> Optional[str]:
    if not _is_int(num_classes) or not 1 <= num_classes <= MAX_CLASSES:
        return f"num_classes must be a whole number from 1 to {MAX_CLASSES}, got {_shown(num_classes)}"
    # Empty names or palette: the defaults are generated.
    if not _is_list(class_names) or (class_names and (len(class_names) != num_classes
                                                      or not all(isinstance(n, str) for n in class_names))):
        return f"class_names must be {num_classes} strings (one per class), got {_shown(class_names)}"
    if not _is_list(palette) or (palette and len(palette) < num_classes):
        return f"palette must hold a colour for each of the {num_classes} classes, got {_shown(palette)}"
    bad = next((c for c in palette if not _ints_within(c, 3, 0, 255)), None)
    if bad is not None:
        return f"palette colours must each be 3 whole numbers from 0 to 255, got {_shown(bad)}"
    return None


def _words_problem(fields: Mapping[str, Any]) -> Optional[str]:
    for name in ("variant", "input_name", "output_name"):
        if not isinstance(fields[name], str) or not fields[name]:
            return f"{name} must be a non-empty string, got {_shown(fields[name])}"
    vocabularies = (("output", OUTPUTS), ("resize", RESIZES), ("layout", LAYOUTS), ("color", COLORS),
                    ("precision", PRECISIONS), ("sca_op", SCA_OPS), ("input_type", INPUT_TYPES))
    for name, words in vocabularies:
        if not isinstance(fields[name], str) or fields[name] not in words:
            return f"{name} must be one of {', '.join(words)}, got {_shown(fields[name])}"
    return None


def _shape_problem(fields: Mapping[str, Any]) -> Optional[str]:
    size = fields["input_size"]
    if size is not None and not _ints_within(size, 2, 1, MAX_SIDE):
        return f"input_size must be null or [height, width], each from 1 to {MAX_SIDE} pixels, got {_shown(size)}"
    if not _is_int(fields["batch"]) or not 1 <= fields["batch"] <= MAX_BATCH:
        return f"batch must be a whole number from 1 to {MAX_BATCH}, got {_shown(fields['batch'])}"
    for name in ("dynamic_batch", "dynamic_spatial"):
        if not isinstance(fields[name], bool):
            return f"{name} must be true or false, got {_shown(fields[name])}"
    return None


def _raw_input_problem(fields: Mapping[str, Any]) -> Optional[str]:
    """A uint8 (raw-frame) graph: NHWC at a fixed source size, stretched to network_size in the graph."""
    net = fields["network_size"]
    if fields["input_type"] == "float":
        return None if net is None else f"network_size must be null for a float input, got {_shown(net)}"
    if not _ints_within(net, 2, 1, MAX_SIDE):
        return f"network_size must be [height, width], each from 1 to {MAX_SIDE} pixels, for a uint8 input, got {_shown(net)}"
    if fields["input_size"] is None or fields["dynamic_spatial"]:
        return "a uint8 input needs a fixed input_size (the source size) and dynamic_spatial false"
    if fields["layout"] != "NHWC" or fields["resize"] != "stretch":
        return f"a uint8 input is NHWC and stretched, got layout {_shown(fields['layout'])}, resize {_shown(fields['resize'])}"
    return None


def _normalisation_problem(mean: Any, std: Any) -> Optional[str]:
    if not _numbers_within(mean, 3, 0, 255):
        return f"mean must be 3 finite numbers from 0 to 255 (RGB, on the 0..255 scale), got {_shown(mean)}"
    if not _numbers_within(std, 3, MIN_STD, 255):
        return f"std must be 3 finite numbers from {MIN_STD:g} to 255 (RGB, on the 0..255 scale), got {_shown(std)}"
    return None


def metadata_problem(fields: Mapping[str, Any]) -> Optional[str]:
    """Why these ModelInfo field values cannot describe a model a runtime can feed (one clause naming the field), or None."""
    why = (_class_problem(fields["num_classes"], fields["class_names"], fields["palette"])
           or _words_problem(fields) or _shape_problem(fields) or _raw_input_problem(fields)
           or _normalisation_problem(fields["mean"], fields["std"]))
    if why:
        return why
    if not isinstance(fields["extra"], dict):
        return f"extra must be a JSON object, got {_shown(fields['extra'])}"
    if not _is_int(fields["schema"]) or fields["schema"] < 1:
        return f"schema must be a positive whole number, got {_shown(fields['schema'])}"
    return None


@dataclass
class ModelInfo:
    """Facts a runtime needs to feed a model and read its answer."""

    variant: str
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    palette: list[tuple[int, int, int]] = field(default_factory=list)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # (H, W) of a static graph's input (for a uint8 input: the source size), or the trained size for a dynamic one.
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
    # "float": normalised float32 NCHW; "uint8": raw RGB frames NHWC at input_size, resized in the graph to
    # network_size (the size the network itself runs at; null for a float input).
    input_type: str = "float"
    network_size: Optional[tuple[int, int]] = None
    # Free-form provenance: export options, package versions, calibration summary, TensorRT facts...
    extra: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        why = metadata_problem({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        if why:
            raise InvalidMetadata(why)
        if not self.class_names:
            self.class_names = [f"class_{i}" for i in range(self.num_classes)]
        if not self.palette:
            self.palette = default_palette(self.num_classes)
        self.class_names = list(self.class_names)
        self.palette = [tuple(int(v) for v in c) for c in self.palette]  # type: ignore[misc]
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        if self.input_size is not None:
            self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        if self.network_size is not None:
            self.network_size = (int(self.network_size[0]), int(self.network_size[1]))
        self.num_classes, self.batch = int(self.num_classes), int(self.batch)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["palette"] = [list(c) for c in self.palette]
        d["input_size"] = list(self.input_size) if self.input_size else None
        d["network_size"] = list(self.network_size) if self.network_size else None
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Any, source: Any = None) -> "ModelInfo":
        """Read the fields of ``d``, refusing in one sentence what no runtime can use; ``source`` names the file."""
        where = f"the model metadata of {source}" if source is not None else "the model metadata"
        if not isinstance(d, Mapping):
            raise ScasegError(f"{where} is not a JSON object")
        missing = [k for k in ("variant", "num_classes") if k not in d]
        if missing:
            raise ScasegError(f"{where} lacks {', '.join(missing)}; was the model exported by scaseg-export?")
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except InvalidMetadata as exc:
            raise ScasegError(f"{where} is invalid: {exc.why}") from None

    @classmethod
    def from_json(cls, text: str, source: Any = None) -> "ModelInfo":
        where = f"the model metadata of {source}" if source is not None else "the model metadata"
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScasegError(f"{where} is not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise ScasegError(f"{where} is not valid JSON (nested too deeply)") from None
        return cls.from_dict(d, source)

    def spatial(self, shape: Any) -> tuple[Any, Any]:
        """The (H, W) axes of an input shape in this model's layout (NHWC for a raw-frame graph, else NCHW)."""
        return (shape[1], shape[2]) if self.layout == "NHWC" else (shape[2], shape[3])

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
    return ModelInfo.from_json(props[METADATA_KEY], path)


def read_onnx_model(path: Any) -> tuple[Any, ModelInfo]:
    """Read an ONNX model file and its ModelInfo: the one reader of an ONNX file (``onnx`` is imported here only).

    One sentence for a missing, unreadable, damaged or foreign file.
    """
    import onnx

    from scaseg.cli import require_file

    where = require_file(path, "ONNX model")
    try:
        model = onnx.load(where)
    except Exception as exc:  # protobuf's DecodeError, OSError, ValueError...: no useful common base class
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ScasegError(f"cannot read the ONNX model {where}: not an ONNX model ({detail})") from None
    if not model.graph.node:
        raise ScasegError(f"cannot read the ONNX model {where}: it holds no graph (not an ONNX model?)")
    return model, read_onnx_metadata(model.metadata_props, where)


def write_onnx_metadata(model: Any, info: ModelInfo) -> None:
    """Store ``info`` as the ``scaseg`` entry of an onnx.ModelProto, replacing an older one: the one writer."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=METADATA_KEY, value=info.to_json())
