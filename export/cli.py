"""scaseg-export: a SCASeg checkpoint -> a verified ONNX model (or an fp16/int8 ONNX, a TensorRT engine, a Triton repo).

Over 400 lines: the command's one signature (every option with its help) and the option groups it checks at the
edge; the work itself lives in the modules each step imports.

Every export prints a TensorRT compatibility lint and a parity report against PyTorch; a parity failure exits
non-zero and leaves no output behind.

The command function parses its options once, in groups (the graph, the calibration, the engine), into one
``ExportRequest``; everything a user can get wrong is refused there, before minutes of work. The steps below
(load, export, precision, engine, Triton) take the request and do not check it again.
"""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, List, Literal, Optional

import typer

from scaseg.cli import SIZE_METAVAR, make_app, parse_imgsz, parse_size, quiet_option, require_utf8
from scaseg.errors import ScasegError, run_cli, version_option
from scaseg.fileio import atomic_path, check_output, created_folders, refuse_overwrite, remove_stale, temp_token
from scaseg.export.triton import export_backend
from scaseg.progress import progress, write
from scaseg.suffixes import ENGINE_SUFFIX, ONNX_SUFFIX, ONNX_SUFFIXES

if TYPE_CHECKING:  # imported where used: an ONNX -> engine build runs without torch, and --help stays quick
    import onnx

    from scaseg.calibration.data import CalibrationSet
    from scaseg.calibration.precision import Calibration
    from scaseg.export.from_onnx import EngineRequest
    from scaseg.export.onnx_export import ExportOptions
    from scaseg.metadata import ModelInfo

app = make_app(__doc__)


# Choices as Literal types: --help lists them as a|b|c and the parser refuses others (the values arrive as str).
ScaOp = Literal["decomposed", "function", "grid"]
Head = Literal["logits", "labels"]
# scaseg.metadata.INPUT_TYPES: normalised float32 NCHW, or raw uint8 RGB frames NHWC (export/raw_input.py)
InputType = Literal["float", "uint8"]
CalibMethod = Literal["percentile", "minmax", "entropy"]
Int8Target = Literal["cpu", "tensorrt"]
# scaseg.metadata.PRECISIONS (tests/export/test_export_request.py checks they agree)
Precision = Literal["fp32", "fp16", "int8"]
Format = Literal["onnx", "engine", "triton"]
TritonBackend = Literal["auto", "onnxruntime", "tensorrt", "python"]

WORK_PREFIX = ".scaseg-export-"


@dataclass(frozen=True)
class ExportRequest:
    """What scaseg-export was asked, checked once by the command function; the steps below trust it."""

    source: Path  # a checkpoint, or an exported ONNX (--format engine)
    output: Optional[Path]  # the file (a folder for triton) to write; None only for an ONNX source: beside it
    fmt: str  # onnx | engine | triton
    precision: Optional[str]  # a scaseg.metadata.PRECISIONS word; None only for an ONNX source: the file's own
    graph: Optional[ExportOptions]  # a checkpoint source: the graph to export
    size_from_checkpoint: bool  # no --imgsz: the checkpoint's input size replaces graph.imgsz
    variant: Optional[str]
    allow_partial: bool
    parity_images: int
    tolerance: float
    max_batch: int  # the largest batch of a dynamic-batch engine or Triton model
    calibration: Optional[Calibration]  # --precision fp16 / int8 asked
    calibration_images: Optional[CalibrationSet]  # int8 from a checkpoint: the images, listed and checked
    engine: Optional[EngineRequest]  # --format engine
    triton_backend: str = "onnxruntime"  # --format triton: onnxruntime | python (runtime/triton_model.py)


def default_output(checkpoint: Path, fmt: str, precision: str) -> Path:
    """model.pth -> model.onnx / model.fp16.onnx / model.engine / model_triton/ beside the checkpoint."""
    stem = checkpoint.with_suffix("")
    if fmt == "engine":
        return stem.with_name(f"{stem.name}{'' if precision == 'fp32' else '.' + precision}{ENGINE_SUFFIX}")
    if fmt == "triton":
        return stem.with_name(f"{stem.name}_triton")
    return stem.with_name(f"{stem.name}{'' if precision == 'fp32' else '.' + precision}{ONNX_SUFFIX}")


def print_line(text: str) -> None:
    """A report line on stdout (the progress bars and warnings go to stderr)."""
    write(text, file=sys.stdout)


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="SCASeg checkpoint (.pth / .safetensors, ours or mmseg-style), or an exported .onnx with --format engine (no torch needed).", metavar="CHECKPOINT"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file (folder for --format triton).", show_default="beside the checkpoint: model.onnx, model.fp16.onnx, model.engine, model_triton/"),
    imgsz: Optional[str] = typer.Option(None, "--imgsz", metavar=SIZE_METAVAR, help="Input size of the graph: N or HxW.", show_default="the checkpoint's size, else 512"),
    batch: int = typer.Option(1, "--batch", min=1, help="Batch size of the graph (the opt batch when dynamic)."),
    dynamic: Optional[str] = typer.Option(None, "--dynamic", metavar="batch|spatial|batch,spatial", help="Dynamic axes of the graph.", show_default="static shapes"),
    opset: int = typer.Option(17, "--opset", help="ONNX opset, 17..20 (TensorRT 8.5 reads up to 17)."),
    sca_op: ScaOp = typer.Option("decomposed", "--sca-op", help="Strip attention as plain ops, as the scaseg:StripCrossAttention local function, or grid (linear-time approximation, plain ops)."),
    grid_points: Optional[int] = typer.Option(None, "--grid-points", metavar="G", help="--sca-op grid: grid points, 2 to 4096.", show_default="the fewest the logit spread on the parity images allows"),
    head: Head = typer.Option("logits", "--head", help="Graph output: logits (B,K,H,W) float, or labels (B,H,W) int32 with argmax in the graph (uint8 at the source size with --input uint8)."),
    input_type: InputType = typer.Option("float", "--input", help="Graph input: float (normalised float32 NCHW at --imgsz) or uint8 (raw frames: RGB uint8 NHWC at --source-size; resize to --imgsz, normalisation and layout in the graph)."),
    source_size: Optional[str] = typer.Option(None, "--source-size", metavar=SIZE_METAVAR, help="--input uint8: the frame size the graph takes, N or HxW (e.g. 1080x1920).", show_default="needed for --input uint8"),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Simplify with onnxsim."),
    query_chunk: str = typer.Option("auto", "--query-chunk", metavar="N|auto|0", help="Query rows per attention tile (bounded memory): N, auto, or 0 for none."),
    parity_images: int = typer.Option(2, "--parity-images", help="Synthetic scenes for the parity check."),
    tolerance: float = typer.Option(1e-3, "--tolerance", help="Max |logit diff| ONNX Runtime vs PyTorch before the export fails."),
    variant: Optional[str] = typer.Option(None, "--variant", help="Refuse the checkpoint unless it is this variant.", show_default="any"),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="Export a checkpoint that lacks tensors of the model or holds extra ones (missing ones stay random); refused by default."),
    precision: Optional[Precision] = typer.Option(None, "--precision", help="fp32, fp16 or int8 (calibrated Q/DQ).", show_default="fp32; from an ONNX, the ONNX's own"),
    calib: Optional[Path] = typer.Option(None, "--calib", metavar="DIR", help="int8 calibration images: an image folder or a dataset root (train split calibrates, val split checks).", show_default="needed for int8"),
    calib_num: int = typer.Option(200, "--calib-num", min=1, help="Calibration images to use."),
    calib_method: CalibMethod = typer.Option("percentile", "--calib-method", help="How activation ranges are picked (docs/precision.md compares them)."),
    int8_target: Optional[Int8Target] = typer.Option(None, "--int8-target", help="Q/DQ placement: cpu (ONNX Runtime CPU) or tensorrt.", show_default="tensorrt when an engine is built (--format engine, --triton-backend tensorrt), else cpu"),
    calib_cache: Optional[Path] = typer.Option(None, "--calib-cache", metavar="DIR", help="int8: folder for the activation-statistics cache (reused when model and preprocessing match).", show_default="no cache"),
    max_miou_drop: float = typer.Option(1.0, "--max-miou-drop", help="int8: largest mIoU loss (points) accepted."),
    fmt: Format = typer.Option("onnx", "--format", help="onnx, engine (TensorRT plan) or triton (model repository)."),
    workspace: float = typer.Option(4.0, "--workspace", help="engine: TensorRT workspace limit in GiB."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="engine: timing cache file (read and updated).", show_default="none"),
    dla_core: Optional[int] = typer.Option(None, "--dla-core", help="engine: build for this DLA core (Jetson).", show_default="GPU"),
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="engine/triton: largest batch of a dynamic-batch model."),
    triton_backend: TritonBackend = typer.Option("auto", "--triton-backend", help="triton: onnxruntime serves the ONNX (auto); tensorrt serves a TensorRT engine built here (the engine options apply); python serves raw uint8 frames in, labels out through scaseg's own runtime (scaseg-serve runs it; docs/triton.md)."),
    tensorrt: str = typer.Option("auto", "--tensorrt", metavar="auto|standard|rtx", help="engine: which TensorRT builds it: standard (tensorrt) or rtx (tensorrt_rtx).", show_default="the one installed, standard if both"),
    compute_capability: Optional[List[str]] = typer.Option(None, "--compute-capability", metavar="CC", help="engine, TensorRT-RTX: GPU compute capability to build for, e.g. 8.6; repeat for several.", show_default="8.0 8.6 8.9 12.0"),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="engine: print TensorRT's own log (its warnings and errors are otherwise summed up in one line)."),
    quiet: bool = quiet_option(),
    version: bool = version_option("scaseg-export"),
) -> None:
    """Export CHECKPOINT to ONNX (and optionally on to fp16/int8, a TensorRT engine or a Triton repository)."""
    source = checkpoint.expanduser()
    builds_engine = fmt == "engine" or (fmt == "triton" and triton_backend == "tensorrt")
    target = int8_target if int8_target is not None else ("tensorrt" if builds_engine else "cpu")
    if source.suffix.lower() in ONNX_SUFFIXES:  # an exported ONNX -> engine: no torch, no re-export
        request = _with_onnx_engine(ExportRequest(source, output.expanduser() if output else None, fmt, precision,
                                                  None, False, variant, allow_partial, parity_images, tolerance,
                                                  max_batch, None, None, None, export_backend(fmt, triton_backend)),
                                    tensorrt, compute_capability, workspace, timing_cache, dla_core, verbose,
                                    input_type != "float" or source_size is not None)
        calibration = (_calibration_request(precision, fmt, target, calib, calib_num, calib_method, calib_cache,
                                            max_miou_drop) if precision not in (None, "fp32") else None)
        _engine_from_onnx(dataclasses.replace(request, calibration=calibration))
        return
    precision = precision or "fp32"
    size = parse_imgsz(imgsz)
    graph = _graph_options(size, batch, dynamic, opset, sca_op, grid_points, head, simplify, query_chunk,
                           input_type, source_size, fmt)
    if parity_images < 1:
        raise ScasegError(f"--parity-images must be at least 1, got {parity_images}")
    if not 0 <= tolerance < float("inf"):  # nan too: it passed "< 0" and then failed every parity comparison
        raise ScasegError(f"--tolerance must be a finite number >= 0 (the largest |logit diff| accepted), got {tolerance}")
    calibration = (_calibration_request(precision, fmt, target, calib, calib_num, calib_method, calib_cache,
                                        max_miou_drop) if precision != "fp32" else None)
    engine = _engine_options(fmt, precision, tensorrt, compute_capability, workspace, timing_cache, dla_core,
                             verbose) if builds_engine else None
    if fmt == "triton":
        import scaseg.export.triton  # noqa: F401  (a missing package is refused now, not after the export)
    import scaseg

    if variant is not None and variant not in scaseg.VARIANTS:
        raise ScasegError(f"unknown variant {variant!r} for --variant: expected one of {', '.join(scaseg.VARIANTS)}")
    request = ExportRequest(source, _checked_output(source, output, fmt, precision, calib, calib_cache, timing_cache),
                            fmt, precision, graph, size is None, variant, allow_partial, parity_images,
                            tolerance, max_batch, calibration, None, engine, export_backend(fmt, triton_backend))
    if calibration is not None and precision == "int8":  # lists and checks the images, reads none
        request = dataclasses.replace(request, calibration_images=calibration.open_images())
    _export_checkpoint(request)


def _engine_options(fmt: str, precision: str, tensorrt: str, compute_capability: Optional[List[str]],
                    workspace: float, timing_cache: Optional[Path], dla_core: Optional[int],
                    verbose: bool) -> EngineRequest:
    """The engine a checkpoint export builds (--format engine, or the engine of a tensorrt Triton repository):
    no TensorRT, or options it cannot build, are refused before the export."""
    from scaseg.export.engine.profile import check_options
    from scaseg.export.from_onnx import check_engine_options

    engine = check_engine_options(tensorrt, compute_capability, workspace, timing_cache, dla_core, verbose)
    check_options(precision, workspace, dla_core)
    if fmt == "triton" and engine.tensorrt.flavor == "rtx":
        raise ScasegError("--triton-backend tensorrt needs standard TensorRT (Triton's tensorrt backend does not run "
                          "TensorRT-RTX engines), and the TensorRT here is TensorRT-RTX; use --triton-backend "
                          "onnxruntime, or build on a machine with tensorrt installed")
    return engine


def _graph_options(size: Optional[tuple[int, int]], batch: int, dynamic: Optional[str], opset: int, sca_op: str,
                   grid_points: Optional[int], head: str, simplify: bool, query_chunk: str, input_type: str = "float",
                   source_size: Optional[str] = None, fmt: str = "onnx") -> ExportOptions:
    """The exported graph's options (--imgsz, --batch, --dynamic, --opset, --sca-op, --grid-points, --head, --input,
    --source-size); a raw-frame graph is for ONNX files and engines."""
    from scaseg.export.onnx_export import ExportOptions, parse_dynamic, parse_query_chunk

    if input_type == "uint8" and fmt == "triton":
        raise ScasegError("--format triton serves float inputs; --input uint8 (raw frames) is for --format onnx or engine")
    dyn_batch, dyn_spatial = parse_dynamic(dynamic)
    return ExportOptions(
        imgsz=size or (512, 512), batch=batch, dynamic_batch=dyn_batch, dynamic_spatial=dyn_spatial,
        opset=opset, sca_op=sca_op, output=head, simplify=simplify, query_chunk=parse_query_chunk(query_chunk),
        grid_points=grid_points, input_type=input_type, source_size=parse_size(source_size, "--source-size"),
    ).validate()


def _calibration_request(precision: str, fmt: str, target: str, calib: Optional[Path], calib_num: int,
                         calib_method: str, calib_cache: Optional[Path], max_miou_drop: float) -> Calibration:
    """--precision fp16 / int8's options (--calib*, --int8-target, --max-miou-drop), checked."""
    if fmt == "engine" and precision == "int8" and target == "cpu":
        # The cpu placement fuses GELU into com.microsoft.Gelu, an ONNX Runtime op TensorRT's parser rejects.
        raise ScasegError("--format engine needs --int8-target tensorrt (the cpu placement uses ONNX Runtime-only ops)")
    from scaseg.calibration.precision import Calibration

    calibration = Calibration(calib.expanduser() if calib else None, calib_num, calib_method, target, max_miou_drop,
                              calib_cache.expanduser() if calib_cache else None)
    calibration.check(precision)
    return calibration


def _checked_output(checkpoint: Path, output: Optional[Path], fmt: str, precision: str, calib: Optional[Path],
                    calib_cache: Optional[Path], timing_cache: Optional[Path]) -> Path:
    """The checkpoint readable and the output writable, and no output that is an input; returns the output."""
    from scaseg.checkpoint import check_readable

    check_readable(checkpoint)
    dest = output.expanduser() if output else default_output(checkpoint, fmt, precision)
    require_utf8(dest, "the output")
    if fmt == "triton":  # a model repository: other models in it stay, ours is replaced as a whole
        check_output(dest, folder=True)
    else:
        if dest.is_dir():
            raise ScasegError(f"the output {dest} is a folder; name a file (e.g. {dest / 'model.onnx'})")
        check_output(dest)
    refuse_overwrite([dest, calib_cache], [checkpoint, calib])
    if timing_cache is not None:
        refuse_overwrite([timing_cache], [checkpoint, dest])
    return dest


def _export_checkpoint(request: ExportRequest) -> None:
    """Load, export and verify the fp32 ONNX, then convert it, build the engine or write the Triton repository."""
    dest = request.output
    assert dest is not None
    # Temporaries of an earlier run that was killed (out of memory, SIGKILL) cannot clean themselves up.
    remove_stale(dest.parent, WORK_PREFIX)
    remove_stale(dest.parent, f".{dest.name}.")
    bar = "{l_bar}{bar}| {n}/{total} [{elapsed}<{remaining}, {rate_fmt}]"
    # A context manager so that an error closes the bar first and prints on a line of its own.
    with progress(total=4, desc="export", unit="step", file=sys.stderr, bar_format=bar) as steps:
        model, info, graph = _load(request, steps)
        with created_folders(dest.parent), _work_dir(dest.parent) as work:
            direct = request.fmt == "onnx" and request.precision == "fp32"
            onnx_dest = dest if direct else Path(work) / "model.fp32.onnx"
            summary, proto, onnx_info = _export_fp32(model, info, graph, onnx_dest, request, steps)
            final_onnx, proto, onnx_info = _precision(request, proto, onnx_info, onnx_dest, work)
            if request.engine is not None:  # --format engine, or a tensorrt Triton repository's engine
                from scaseg.export.from_onnx import build_exported

                built = dest if request.fmt == "engine" else Path(work) / f"{request.source.stem}.engine"
                _report("engine", build_exported(dataclasses.replace(request, output=built), graph, final_onnx, proto,
                                                 onnx_info, say=print_line))
            if request.fmt == "triton":
                _triton(request, built if request.engine is not None else final_onnx)
    _wrote(dest, f"{summary}, {request.precision}")


def _report(prefix: str, result: Optional[dict[str, Any]]) -> None:
    for key, value in (result or {}).items():
        print_line(f"{prefix}: {key}: {value}")


def _wrote(dest: Path, what: str) -> None:
    size = (sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) if dest.is_dir() else dest.stat().st_size)
    print_line(f"wrote {dest}  ({what}, {size / 2**20:.1f} MiB)")


def _with_onnx_engine(request: ExportRequest, tensorrt: str, compute_capability: Optional[List[str]],
                      workspace: float, timing_cache: Optional[Path], dla_core: Optional[int],
                      verbose: bool, input_options: bool = False) -> ExportRequest:
    """An exported ONNX -> engine request: its names and engine options checked once (``input_options``: --input
    or --source-size was given, which only an export from a checkpoint takes)."""
    if input_options:
        raise ScasegError("--input and --source-size shape an export from a checkpoint; an ONNX model keeps its own input")
    if request.fmt != "engine":
        raise ScasegError(f"{request.source.name} is an ONNX model: scaseg-export builds engines from ONNX files "
                          "(--format engine); export a checkpoint for --format onnx or triton")
    require_utf8(request.source, "the ONNX model")
    if request.output:  # the default output is the source's name with another suffix
        require_utf8(request.output, "the output")
    from scaseg.export.from_onnx import check_engine_options

    engine = check_engine_options(tensorrt, compute_capability, workspace, timing_cache, dla_core, verbose,
                                  from_onnx=True)
    return dataclasses.replace(request, engine=engine)


def _engine_from_onnx(request: ExportRequest) -> None:
    """An exported ONNX -> a TensorRT engine (scaseg.export.from_onnx), beside it unless -o says otherwise."""
    from scaseg.export.from_onnx import build_from_onnx

    dest, precision, summary = build_from_onnx(request, say=print_line)
    _report("engine", summary)
    _wrote(dest, precision)


def _load(request: ExportRequest, steps: Any) -> tuple[Any, ModelInfo, ExportOptions]:
    """The model, its ModelInfo and the graph options (the size from the checkpoint unless --imgsz); memory and
    grid checked."""
    import scaseg
    from scaseg.export.memory import check_export_memory

    assert request.graph is not None  # a checkpoint request
    steps.set_postfix_str("loading checkpoint")
    model, info = scaseg.load_model(request.source, variant=request.variant, strict=not request.allow_partial)
    report = getattr(model, "load_report", None)
    if report is not None and (not report.clean or report.kind == "encoder"):
        write(f"warning: {report.summary()}" + ("; the decoder is randomly initialised" if report.kind == "encoder" else ""), file=sys.stderr)
    graph = dataclasses.replace(request.graph, extra=dict(request.graph.extra))
    if request.size_from_checkpoint and info.input_size:
        height, width = info.input_size
        graph = dataclasses.replace(graph, imgsz=(height, width)).validate()
    if info.variant in scaseg.VARIANTS:  # before tracing: a size that cannot fit is refused, not OOM-killed
        check_export_memory(model, scaseg.VARIANTS[info.variant], info.num_classes, graph.imgsz, graph.batch,
                            info.variant)
    if graph.sca_op == "grid":
        graph = _plan_grid(model, info, graph, request.parity_images)
    steps.update()
    return model, info, graph


def _precision(request: ExportRequest, fp32: onnx.ModelProto, fp32_info: ModelInfo, onnx_dest: Path,
               work: str) -> tuple[Path, onnx.ModelProto, ModelInfo]:
    """The fp16 / int8 ONNX made from the verified fp32 model; returns the ONNX to go on with (file, model, info)."""
    if request.calibration is None:
        return onnx_dest, fp32, fp32_info
    from scaseg.calibration.precision import check_fp32, convert

    precision = request.precision
    assert precision is not None
    final_onnx = request.output if request.fmt == "onnx" and request.output else Path(work) / f"model.{precision}.onnx"
    with atomic_path(final_onnx) as tmp:
        model, info, result = convert(check_fp32(fp32, fp32_info, onnx_dest), fp32_info, tmp, precision,
                                      request.calibration, request.calibration_images, onnx_dest.stem)
    _report(precision, result)
    return final_onnx, model, info


def _triton(request: ExportRequest, final_onnx: Path) -> None:
    """The Triton model repository at the output, serving the ONNX with ONNX Runtime or scaseg's python model."""
    from scaseg.export.triton import write_triton_repository

    result = write_triton_repository(str(final_onnx), str(request.output), name=request.source.with_suffix("").name,
                                     backend=request.triton_backend, max_batch_size=request.max_batch)
    _report("triton", result)


@contextlib.contextmanager
def _work_dir(parent: Path) -> Iterator[str]:
    """A temporary folder beside the output (same file system: the final rename cannot fail on a full /tmp)."""
    try:
        work = tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{temp_token()}.", dir=parent)
    except OSError as exc:
        raise ScasegError(f"cannot write to the output folder {parent}: {exc.strerror or exc}") from None
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _plan_grid(model: Any, info: ModelInfo, graph: ExportOptions, parity_images: int) -> ExportOptions:
    """The graph options with grid_points from the logit spread on the parity scenes (or a refusal); says which."""
    from scaseg.export.parity import plan_grid
    from scaseg.export.sca import RULE_MIN_POINTS, SPREAD_PER_STEP

    requested = graph.grid_points
    points, spread = plan_grid(model, info, graph.imgsz, parity_images, requested)
    graph = dataclasses.replace(graph, grid_points=points, extra={**graph.extra, "grid_spread": round(spread, 4)})
    how = "as requested" if requested else f"the fewest with spread / (G - 1) <= {SPREAD_PER_STEP:g}, at least {RULE_MIN_POINTS}"
    print_line(f"grid attention: logit spread {spread:.3g} on {parity_images} parity scene(s) -> G = {points} ({how})")
    return graph


def _export_fp32(model: Any, info: ModelInfo, graph: ExportOptions, dest: Path, request: ExportRequest,
                 steps: Any) -> tuple[str, onnx.ModelProto, ModelInfo]:
    """Export (traced and simplified by to_onnx), lint, check parity and only then let ``dest`` appear.

    Returns a one-line summary of the graph, the model written and its ModelInfo.
    """
    import onnx

    from scaseg.export.onnx_export import to_onnx
    from scaseg.export.trt_lint import lint

    steps.set_postfix_str("tracing to ONNX")
    proto, out_info = to_onnx(model, info, graph)
    steps.update()
    with atomic_path(dest) as tmp:
        try:
            onnx.save(proto, str(tmp))
        except OSError as exc:  # disk full, quota: one sentence, and atomic_path removes the partial file
            raise ScasegError(f"cannot write {dest}: {exc.strerror or exc}") from None
        steps.set_postfix_str("TensorRT lint")
        lint_report = lint(proto)
        steps.update()
        print_line(lint_report.summary())
        _parity(tmp, model, out_info, request.parity_images, request.tolerance, steps)
    h, w = graph.imgsz
    raw = f"uint8 frames {graph.source_size[0]}x{graph.source_size[1]} -> " if graph.source_size else ""
    summary = (f"{out_info.variant}, {raw}{h}x{w}, batch {'dynamic' if graph.dynamic_batch else graph.batch}"
               f"{', dynamic H/W' if graph.dynamic_spatial else ''}, sca-op {graph.sca_op}, output {graph.output}, "
               f"opset {graph.opset}")
    return summary, proto, out_info


def _parity(onnx_path: Path, model: Any, info: ModelInfo, parity_images: int, tolerance: float, steps: Any) -> None:
    """ONNX Runtime against PyTorch on synthetic scenes; a disagreement or a non-finite value refuses the export."""
    from scaseg.export.parity import check_parity, refuse_disagreement

    steps.set_postfix_str("parity vs PyTorch")
    parity = check_parity(str(onnx_path), model, info, images=parity_images, tolerance=tolerance)
    steps.update()
    print_line(parity.summary())
    refuse_disagreement(parity, tolerance)


def main() -> None:
    """Console entry point (scaseg-export)."""
    run_cli(app, prog="scaseg-export", interrupted="; nothing was written (temporary files removed)")


if __name__ == "__main__":
    main()
