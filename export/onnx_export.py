"""PyTorch SCASeg -> ONNX: strip-attention mode, query tiling, logits or labels output, dynamic axes, metadata,
and the input: normalised float32 NCHW, or raw uint8 frames with the preprocessing in the graph (export/raw_input.py).

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. On this model it exports in a few seconds
(the dynamo exporter took ~3.4x longer, measured side by side at 64x128), a ``torch.autograd.Function.symbolic`` gives
exactly one ``scaseg::StripCrossAttention`` node per attention core, ``dynamic_axes`` covers batch and spatial
sizes without shape guards, and the traced graph is plain ops that onnxsim folds. torch marks this exporter
deprecated; everything exporter-specific lives in ``_trace`` below, so moving to dynamo (custom_translation_table
with an onnxscript function) touches one function. See docs/export.md.
"""
from __future__ import annotations

import io
import platform
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import onnx
import torch
from torch import Tensor, nn

from scaseg.export.simplify import decompose_layer_norm, simplify
from scaseg.export.sca import (MAX_GRID_POINTS, SCA_MODES, QueryChunk, attach_function, export_attention,
                               rows_per_tile)
from scaseg.cli import MIN_IMGSZ, parse_auto_or_count
from scaseg.errors import ScasegError
from scaseg.metadata import INPUT_TYPES, MAX_SIDE, SCA_DOMAIN, SCA_DOMAIN_VERSION, ModelInfo, write_onnx_metadata
from scaseg.models.decoder import StripCrossAttention

# The TorchScript exporter writes opsets up to 20; 17 is the floor (LayerNormalization-era ops, TensorRT 8.5's maximum).
MIN_OPSET, MAX_OPSET = 17, 20
DEFAULT_OPSET = 17
# A static graph takes any H, W from scaseg.cli's MIN_IMGSZ (one stride-32 cell) up as is: no padding, no multiple-of-32
# rule; the same minimum holds for scaseg-infer's and scaseg-bench's --imgsz.
MIN_SIDE = MIN_IMGSZ
OUTPUT_KINDS = ("logits", "labels")


@dataclass
class ExportOptions:
    """What the exported graph looks like."""

    imgsz: tuple[int, int] = (512, 512)
    batch: int = 1
    dynamic_batch: bool = False
    dynamic_spatial: bool = False
    opset: int = DEFAULT_OPSET
    sca_op: str = "decomposed"
    output: str = "logits"
    simplify: bool = True
    query_chunk: QueryChunk = "auto"
    grid_points: Optional[int] = None  # sca_op grid: points of the grid (chosen by the CLI from the spread when None)
    input_type: str = "float"  # float: normalised NCHW at imgsz; uint8: raw RGB frames NHWC at source_size
    source_size: Optional[tuple[int, int]] = None  # uint8: the frame size the graph takes (imgsz is the network's)
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "ExportOptions":
        """Raise ScasegError (one sentence) on an option the exporter cannot honour."""
        h, w = (int(v) for v in self.imgsz)
        if min(h, w) < MIN_SIDE:
            raise ScasegError(f"--imgsz {h}x{w} is too small: SCASeg needs at least {MIN_SIDE} pixels per side (stride 32)")
        if int(self.batch) < 1:
            raise ScasegError(f"--batch must be at least 1, got {self.batch}")
        if not MIN_OPSET <= int(self.opset) <= MAX_OPSET:
            raise ScasegError(f"--opset {self.opset} is not supported: expected {MIN_OPSET} to {MAX_OPSET}")
        if self.sca_op not in SCA_MODES:
            raise ScasegError(f"--sca-op {self.sca_op!r} is unknown: expected one of {', '.join(SCA_MODES)}")
        if self.grid_points is not None and not 2 <= int(self.grid_points) <= MAX_GRID_POINTS:
            raise ScasegError(f"--grid-points must be 2 to {MAX_GRID_POINTS}, got {self.grid_points}")
        if self.grid_points is not None and self.sca_op != "grid":
            raise ScasegError(f"--grid-points is for --sca-op grid, not {self.sca_op}")
        if self.output not in OUTPUT_KINDS:
            raise ScasegError(f"--head {self.output!r} is unknown: expected logits or labels")
        if self.query_chunk not in (None, "auto") and int(self.query_chunk) < 0:  # type: ignore[arg-type]
            raise ScasegError(f"--query-chunk must be a positive number of rows, 0 (off) or auto, got {self.query_chunk}")
        self.imgsz = (h, w)
        self._validate_input()
        return self

    def _validate_input(self) -> None:
        """--input and --source-size: a raw-frame graph takes a fixed frame size (resized to --imgsz in the graph)."""
        if self.input_type not in INPUT_TYPES:
            raise ScasegError(f"--input {self.input_type!r} is unknown: expected {' or '.join(INPUT_TYPES)}")
        if self.input_type == "float":
            if self.source_size is not None:
                raise ScasegError("--source-size is for --input uint8 (raw frames); a float graph takes --imgsz")
            return
        if self.source_size is None:
            raise ScasegError("--input uint8 needs --source-size HxW (the frame size the graph takes, e.g. 1080x1920)")
        sh, sw = (int(v) for v in self.source_size)
        if max(sh, sw) > MAX_SIDE:
            raise ScasegError(f"--source-size {sh}x{sw} is too large: at most {MAX_SIDE} pixels per side")
        if self.dynamic_spatial:
            raise ScasegError("--input uint8 takes frames of one size (--source-size); --dynamic spatial is for --input float")
        self.source_size = (sh, sw)


def parse_dynamic(text: Optional[str]) -> tuple[bool, bool]:
    """'batch', 'spatial', 'batch,spatial' (or 'all'/'none') -> (dynamic_batch, dynamic_spatial)."""
    if text is None or text.strip().lower() in ("", "none"):
        return False, False
    parts = {p.strip().lower() for p in text.replace("+", ",").split(",") if p.strip()}
    if "all" in parts:
        parts = {"batch", "spatial"}
    unknown = parts - {"batch", "spatial"}
    if unknown:
        raise ScasegError(f"--dynamic {text!r} is not understood: expected batch, spatial or batch,spatial")
    return "batch" in parts, "spatial" in parts


def parse_query_chunk(text: Optional[str]) -> QueryChunk:
    """'auto' -> 'auto'; '0' / 'off' -> None; 'N' -> N rows per tile."""
    rows = parse_auto_or_count(text, "--query-chunk", "rows", off=("0", "off", "none"))
    if isinstance(rows, int) and rows < 0:
        raise ScasegError(f"--query-chunk must be a positive number of rows, 0 (off) or auto, got {rows}")
    return rows or None  # "00" is 0 too


class _Deployable(nn.Module):
    """The graph the user gets: logits (B, K, H, W) float32, or labels (B, H, W) int32 (argmax in the graph)."""

    def __init__(self, model: nn.Module, output: str):
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, images: Tensor) -> Tensor:
        logits = self.model(images)
        if self.output == "labels":
            # int32, not ONNX ArgMax's int64: TensorRT 8.5 has no int64 tensors and a label map fits easily.
            return logits.argmax(dim=1).to(torch.int32)
        return logits


def _trace(module: nn.Module, example: Tensor, opts: ExportOptions) -> onnx.ModelProto:
    """Run the TorchScript exporter into memory and return the ModelProto."""
    # A uint8 graph is never spatially dynamic (validate), so only its batch axis (0) is named below.
    out_axes = {0: "batch", 2: "height", 3: "width"} if opts.output == "logits" else {0: "batch", 1: "height", 2: "width"}
    dynamic_axes: dict[str, dict[int, str]] = {"images": {}, "output": {}}
    if opts.dynamic_batch:
        dynamic_axes["images"][0] = dynamic_axes["output"][0] = "batch"
    if opts.dynamic_spatial:
        dynamic_axes["images"].update({2: "height", 3: "width"})
        dynamic_axes["output"].update({k: v for k, v in out_axes.items() if k != 0})
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The deprecation notice of this exporter and tracer notes about shape arithmetic are expected here.
        warnings.simplefilter("ignore")
        # torch annotates f as a path; a BytesIO works and keeps the model in memory.
        torch.onnx.export(
            module, (example,), buffer, dynamo=False, opset_version=int(opts.opset),  # type: ignore[arg-type]
            input_names=["images"], output_names=["output"],
            dynamic_axes={k: v for k, v in dynamic_axes.items() if v} or None,
            do_constant_folding=True,
            custom_opsets={SCA_DOMAIN: SCA_DOMAIN_VERSION} if opts.sca_op == "function" else None,
        )
    return onnx.load_from_string(buffer.getvalue())


def _wrapped(model: nn.Module, info: ModelInfo, opts: ExportOptions) -> tuple[nn.Module, Tensor]:
    """The module to trace (the model with its input and output conventions) and its example input."""
    if opts.input_type == "uint8":
        from scaseg.export.raw_input import RawDeployable, check_raw_options, example_frames

        assert opts.source_size is not None
        check_raw_options(info)
        raw = RawDeployable(model, info, opts.imgsz, opts.source_size, opts.output).eval()
        return raw, example_frames(int(opts.batch), opts.source_size)
    h, w = opts.imgsz
    return _Deployable(model, opts.output).eval(), torch.randn(int(opts.batch), 3, h, w,
                                                                generator=torch.Generator().manual_seed(0))


def package_versions() -> dict[str, str]:
    """Versions of what produced the file (recorded in the metadata)."""
    import onnxruntime

    import scaseg

    versions = {"scaseg": scaseg.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}
    try:
        import onnxsim

        versions["onnxsim"] = str(onnxsim.__version__)
    except ImportError:
        pass
    return versions


def export_info(info: ModelInfo, opts: ExportOptions) -> ModelInfo:
    """The ModelInfo the exported file carries."""
    extra = {
        **info.extra,
        "export": {
            "opset": int(opts.opset), "simplified": bool(opts.simplify),
            "query_chunk": "grid" if opts.sca_op == "grid" else rows_per_tile(opts.query_chunk),
            **({"grid_points": int(opts.grid_points or 0)} if opts.sca_op == "grid" else {}),
            "exporter": "torch.onnx (TorchScript)", "layer_norm": "decomposed", **opts.extra,
        },
        "versions": package_versions(),
    }
    raw = opts.input_type == "uint8"
    return info.replace(
        input_size=tuple(opts.source_size if raw else opts.imgsz), batch=int(opts.batch),  # type: ignore[arg-type]
        dynamic_batch=opts.dynamic_batch, dynamic_spatial=opts.dynamic_spatial, input_name="images",
        output_name="output", output=opts.output, layout="NHWC" if raw else "NCHW", color="RGB", precision="fp32",
        sca_op=opts.sca_op, input_type=opts.input_type, network_size=tuple(opts.imgsz) if raw else None, extra=extra,
    )


def set_metadata(model: onnx.ModelProto, info: ModelInfo) -> None:
    """Write the ModelInfo JSON into metadata_props under 'scaseg' (replacing an older entry)."""
    write_onnx_metadata(model, info)
    model.producer_name, model.producer_version = "scaseg-export", info.extra.get("versions", {}).get("scaseg", "")


def to_onnx(model: nn.Module, info: ModelInfo, opts: ExportOptions) -> tuple[onnx.ModelProto, ModelInfo]:
    """Export an eval-mode SCASeg model; returns the (simplified, metadata-carrying) ModelProto and its ModelInfo."""
    opts.validate()
    if int(info.num_classes) != int(getattr(model, "num_classes", info.num_classes)):
        raise ScasegError(f"the checkpoint says {info.num_classes} classes but its model has {model.num_classes}")  # type: ignore[attr-defined]
    if opts.sca_op == "grid":
        if opts.grid_points is None:
            raise ScasegError("--sca-op grid needs a number of grid points (--grid-points)")
        if any(isinstance(m, StripCrossAttention) and m.attention != "strip" for m in model.modules()):
            raise ScasegError("--sca-op grid needs strip attention (one query/key channel per head); this model is vanilla")
    model = model.eval()
    wrapper, example = _wrapped(model, info, opts)
    with torch.no_grad(), export_attention(model, opts.sca_op, opts.query_chunk, opts.grid_points):
        proto = _trace(wrapper, example, opts)
    attach_function(proto)
    if opts.simplify:
        proto = simplify(proto)
    decompose_layer_norm(proto)
    out_info = export_info(info, opts)
    set_metadata(proto, out_info)
    return proto, out_info


__all__ = ["ExportOptions", "to_onnx", "parse_dynamic", "parse_query_chunk", "set_metadata", "export_info"]
