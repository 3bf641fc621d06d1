"""scaseg-export: a SCASeg checkpoint -> a verified ONNX model (or an fp16/int8 ONNX, a TensorRT engine, a Triton repo).

Every export prints a TensorRT compatibility lint and a parity report against PyTorch; a parity failure exits
non-zero and leaves no output behind.

Over 400 lines: the command's 30-odd options and the steps they drive (check, load, export, precision, engine,
Triton) read top to bottom here; parsing them into one typed request the steps take is the next split.
"""
from __future__ import annotations

import contextlib
import importlib
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Literal, Optional

import typer

from scaseg.cli import SIZE_METAVAR, make_app, parse_imgsz, quiet_option, require_utf8
from scaseg.errors import EXTRAS, ScasegError, missing_package, run_cli, version_option
from scaseg.fileio import atomic_path, check_output, created_folders, refuse_overwrite, remove_stale, temp_token
from scaseg.progress import progress, write
from scaseg.suffixes import ENGINE_SUFFIX, ONNX_SUFFIX, ONNX_SUFFIXES

app = make_app(__doc__)


# Choices as Literal types: --help lists them as a|b|c and the parser refuses others (the values arrive as str).
ScaOp = Literal["decomposed", "function", "grid"]
Head = Literal["logits", "labels"]
CalibMethod = Literal["percentile", "minmax", "entropy"]
Int8Target = Literal["cpu", "tensorrt"]
Precision = Literal["fp32", "fp16", "int8"]
Format = Literal["onnx", "engine", "triton"]

WORK_PREFIX = ".scaseg-export-"


def _need(module: str, what: str) -> Any:
    """Import a module another part of the toolkit provides, or say in one sentence that it (or a package) is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in EXTRAS:
            raise missing_package(exc.name or "", what) from None  # an optional package: name the extra
        raise ScasegError(f"{what} needs {module}, which cannot be imported here ({exc})") from None


def default_output(checkpoint: Path, fmt: str, precision: str) -> Path:
    """model.pth -> model.onnx / model.fp16.onnx / model.engine / model_triton/ beside the checkpoint."""
    stem = checkpoint.with_suffix("")
    if fmt == "engine":
        return stem.with_name(f"{stem.name}{'' if precision == 'fp32' else '.' + precision}{ENGINE_SUFFIX}")
    if fmt == "triton":
        return stem.with_name(f"{stem.name}_triton")
    return stem.with_name(f"{stem.name}{'' if precision == 'fp32' else '.' + precision}{ONNX_SUFFIX}")


def _say(text: str) -> None:
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
    head: Head = typer.Option("logits", "--head", help="Graph output: logits (B,K,H,W) float, or labels (B,H,W) int32 with argmax in the graph."),
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
    int8_target: Optional[Int8Target] = typer.Option(None, "--int8-target", help="Q/DQ placement: cpu (ONNX Runtime CPU) or tensorrt.", show_default="tensorrt for --format engine, else cpu"),
    calib_cache: Optional[Path] = typer.Option(None, "--calib-cache", metavar="DIR", help="int8: folder for the activation-statistics cache (reused when model and preprocessing match).", show_default="no cache"),
    max_miou_drop: float = typer.Option(1.0, "--max-miou-drop", help="int8: largest mIoU loss (points) accepted."),
    fmt: Format = typer.Option("onnx", "--format", help="onnx, engine (TensorRT plan) or triton (model repository)."),
    workspace: float = typer.Option(4.0, "--workspace", help="engine: TensorRT workspace limit in GiB."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="engine: timing cache file (read and updated).", show_default="none"),
    dla_core: Optional[int] = typer.Option(None, "--dla-core", help="engine: build for this DLA core (Jetson).", show_default="GPU"),
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="engine/triton: largest batch of a dynamic-batch model."),
    tensorrt: str = typer.Option("auto", "--tensorrt", metavar="auto|standard|rtx", help="engine: which TensorRT builds it: standard (tensorrt) or rtx (tensorrt_rtx).", show_default="the one installed, standard if both"),
    compute_capability: Optional[List[str]] = typer.Option(None, "--compute-capability", metavar="CC", help="engine, TensorRT-RTX: GPU compute capability to build for, e.g. 8.6; repeat for several.", show_default="8.0 8.6 8.9 12.0"),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="engine: print TensorRT's own log (its warnings and errors are otherwise summed up in one line)."),
    quiet: bool = quiet_option(),
    version: bool = version_option("scaseg-export"),
) -> None:
    """Export CHECKPOINT to ONNX (and optionally on to fp16/int8, a TensorRT engine or a Triton repository)."""
    o = Args(**{name: value for name, value in locals().items() if name not in ("quiet", "version")})
    if o.checkpoint.suffix.lower() in ONNX_SUFFIXES:  # an exported ONNX -> engine: no torch, no re-export
        _engine_from_onnx(o)
        return
    o.precision = o.precision or "fp32"
    plan = _check_inputs(o)
    bar = "{l_bar}{bar}| {n}/{total} [{elapsed}<{remaining}, {rate_fmt}]"
    # A context manager so that an error closes the bar first and prints on a line of its own.
    with progress(total=4, desc="export", unit="step", file=sys.stderr, bar_format=bar) as steps:
        model, info = _load(o, plan, steps)
        dest = plan.dest
        with created_folders(dest.parent), _work_dir(dest.parent) as work:
            onnx_dest = dest if (o.fmt == "onnx" and o.precision == "fp32") else Path(work) / "model.fp32.onnx"
            summary = _export_fp32(model, info, plan.opts, onnx_dest, o.parity_images, o.tolerance, steps)
            final_onnx = _precision(o, plan, onnx_dest, work)
            if o.fmt == "engine":
                _engine(o, plan, final_onnx)
            elif o.fmt == "triton":
                _triton(o, plan, final_onnx)
    _wrote(dest, f"{summary}, {o.precision}")


@dataclass
class Args:
    """scaseg-export's options as typed: one record, so that each step below takes what it needs from it."""

    checkpoint: Path
    output: Optional[Path]
    imgsz: Optional[str]
    batch: int
    dynamic: Optional[str]
    opset: int
    sca_op: str
    grid_points: Optional[int]
    head: str
    simplify: bool
    query_chunk: str
    parity_images: int
    tolerance: float
    variant: Optional[str]
    allow_partial: bool
    precision: Optional[str]  # None: fp32 from a checkpoint, the file's own from an ONNX
    calib: Optional[Path]
    calib_num: int
    calib_method: str
    int8_target: Optional[str]
    calib_cache: Optional[Path]
    max_miou_drop: float
    fmt: str
    workspace: float
    timing_cache: Optional[Path]
    dla_core: Optional[int]
    max_batch: int
    tensorrt: str
    compute_capability: Optional[List[str]]
    verbose: bool


@dataclass
class Plan:
    """What the checked options decide: the graph options, the int8 placement, the checkpoint and the output."""

    opts: Any  # scaseg.export.onnx_export.ExportOptions
    input_hw: Optional[tuple[int, int]]  # --imgsz, None: the checkpoint's size
    target: str  # int8 Q/DQ placement: cpu | tensorrt
    checkpoint: Path
    dest: Path


def _report(prefix: str, result: Optional[dict[str, Any]]) -> None:
    for key, value in (result or {}).items():
        _say(f"{prefix}: {key}: {value}")


def _wrote(dest: Path, what: str) -> None:
    size = (sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) if dest.is_dir() else dest.stat().st_size)
    _say(f"wrote {dest}  ({what}, {size / 2**20:.1f} MiB)")


def _engine_from_onnx(o: Args) -> None:
    """An exported ONNX -> a TensorRT engine (scaseg.export.from_onnx), beside it unless -o says otherwise."""
    if o.fmt != "engine":
        raise ScasegError(f"{o.checkpoint.name} is an ONNX model: scaseg-export builds engines from ONNX files "
                          "(--format engine); export a checkpoint for --format onnx or triton")
    from scaseg.export.from_onnx import build_from_onnx

    source = o.checkpoint.expanduser()
    require_utf8(source, "the ONNX model")
    if o.output:  # the default output is the source's name with another suffix
        require_utf8(o.output.expanduser(), "the output")
    dest, precision, summary = build_from_onnx(
        source, o.output.expanduser() if o.output else None, precision=o.precision,
        tensorrt=o.tensorrt, compute_capabilities=o.compute_capability, calib=o.calib, calib_num=o.calib_num,
        calib_method=o.calib_method, calib_cache=o.calib_cache, max_miou_drop=o.max_miou_drop,
        workspace_gib=o.workspace, timing_cache=o.timing_cache, dla_core=o.dla_core, verbose=o.verbose, say=_say)
    _report("engine", summary)
    _wrote(dest, precision)


def _check_inputs(o: Args) -> Plan:
    """Every option, tool and path checked before minutes of work, not after; stale temporaries removed."""
    from scaseg.export.onnx_export import ExportOptions, parse_dynamic, parse_query_chunk

    dyn_batch, dyn_spatial = parse_dynamic(o.dynamic)
    input_hw = parse_imgsz(o.imgsz)
    opts = ExportOptions(
        imgsz=input_hw or (512, 512), batch=o.batch, dynamic_batch=dyn_batch, dynamic_spatial=dyn_spatial,
        opset=o.opset, sca_op=o.sca_op, output=o.head, simplify=o.simplify,
        query_chunk=parse_query_chunk(o.query_chunk), grid_points=o.grid_points,
    )
    opts.validate()
    if o.parity_images < 1:
        raise ScasegError(f"--parity-images must be at least 1, got {o.parity_images}")
    if not 0 <= o.tolerance < float("inf"):  # nan too: it passed "< 0" and then failed every parity comparison
        raise ScasegError(f"--tolerance must be a finite number >= 0 (the largest |logit diff| accepted), got {o.tolerance}")
    prec, form = o.precision, o.fmt
    assert prec is not None  # export() settled it: fp32 unless asked
    target = o.int8_target if o.int8_target is not None else ("tensorrt" if form == "engine" else "cpu")
    if form == "engine" and prec == "int8" and target == "cpu":
        # The cpu placement fuses GELU into com.microsoft.Gelu, an ONNX Runtime op TensorRT's parser rejects.
        raise ScasegError("--format engine needs --int8-target tensorrt (the cpu placement uses ONNX Runtime-only ops)")
    if form != "onnx":
        _need("scaseg.export.engine.builder" if form == "engine" else "scaseg.export.triton", f"--format {form}")
    if form == "engine":  # no TensorRT, or a compute capability it cannot build for: say so before the export
        from scaseg.export.engine import profile as trt_profile
        from scaseg.runtime.tensorrt import installed as trt_installed

        trt_profile.check_flavor_options(trt_installed.require_tensorrt("--format engine", o.tensorrt),
                                         o.compute_capability, o.dla_core)
    import scaseg

    if o.variant is not None and o.variant not in scaseg.VARIANTS:
        raise ScasegError(f"unknown variant {o.variant!r} for --variant: expected one of {', '.join(scaseg.VARIANTS)}")
    checkpoint = o.checkpoint.expanduser()
    from scaseg.checkpoint import check_readable

    check_readable(checkpoint)
    if prec != "fp32":
        api = _need("scaseg.calibration.api", f"--precision {prec}")
        api.check_args(prec, o.calib_num, o.calib_method, target, o.max_miou_drop)
        if prec == "int8":
            if o.calib is None:
                raise ScasegError("--precision int8 needs --calib DIR, a folder of calibration images")
            api.data.open_calibration(str(o.calib.expanduser()), o.calib_num)  # lists and checks the images, reads none
    dest = (o.output.expanduser() if o.output else default_output(checkpoint, form, prec))
    require_utf8(dest, "the output")
    if form == "triton":  # a model repository: other models in it stay, ours is replaced as a whole
        check_output(dest, folder=True)
    else:
        if dest.is_dir():
            raise ScasegError(f"the output {dest} is a folder; name a file (e.g. {dest / 'model.onnx'})")
        check_output(dest)
    side_outputs = [p for p in (o.calib_cache,) if p is not None]
    refuse_overwrite([dest, *side_outputs], [checkpoint, o.calib])
    if o.timing_cache is not None:
        refuse_overwrite([o.timing_cache], [checkpoint, dest])
    # Temporaries of an earlier run that was killed (out of memory, SIGKILL) cannot clean themselves up.
    remove_stale(dest.parent, WORK_PREFIX)
    remove_stale(dest.parent, f".{dest.name}.")
    return Plan(opts, input_hw, target, checkpoint, dest)


def _load(o: Args, plan: Plan, steps: Any) -> tuple[Any, Any]:
    """The model and its ModelInfo from the checkpoint; the graph size from it unless --imgsz; memory and grid checked."""
    import scaseg

    steps.set_postfix_str("loading checkpoint")
    model, info = scaseg.load_model(plan.checkpoint, variant=o.variant, strict=not o.allow_partial)
    report = getattr(model, "load_report", None)
    if report is not None and (not report.clean or report.kind == "encoder"):
        write(f"warning: {report.summary()}" + ("; the decoder is randomly initialised" if report.kind == "encoder" else ""), file=sys.stderr)
    opts = plan.opts
    if plan.input_hw is None and info.input_size:
        opts.imgsz = tuple(info.input_size)
        opts.validate()
    if info.variant in scaseg.VARIANTS:  # before tracing: a size that cannot fit is refused, not OOM-killed
        from scaseg.export.memory import check_export_memory

        check_export_memory(model, scaseg.VARIANTS[info.variant], info.num_classes, opts.imgsz, opts.batch,
                            info.variant)
    if opts.sca_op == "grid":
        _plan_grid(model, info, opts, o.parity_images)
    steps.update()
    return model, info


def _precision(o: Args, plan: Plan, onnx_dest: Path, work: str) -> Path:
    """The fp16 / int8 ONNX made from the verified fp32 one (scaseg.calibration.api); returns the ONNX to go on with."""
    prec = o.precision
    if prec is None or prec == "fp32":
        return onnx_dest
    api = _need("scaseg.calibration.api", f"--precision {prec}")
    final_onnx = plan.dest if o.fmt == "onnx" else Path(work) / f"model.{prec}.onnx"
    with atomic_path(final_onnx) as tmp:
        result = api.make_precision(
            str(onnx_dest), str(tmp), prec, calib_dir=str(o.calib) if o.calib else None, calib_num=o.calib_num,
            method=o.calib_method, target=plan.target, max_miou_drop=o.max_miou_drop,
            cache_dir=str(o.calib_cache) if o.calib_cache else None,
        )
    _report(prec, result)
    return final_onnx


def _engine(o: Args, plan: Plan, final_onnx: Path) -> None:
    """The TensorRT engine at the output, with a batch profile for a dynamic-batch graph."""
    engine = _need("scaseg.export.engine.builder", "--format engine")
    opts = plan.opts
    h, w = opts.imgsz
    shape_kw: dict[str, Any] = {}
    if opts.dynamic_batch:
        shape_kw = {"min_shape": (1, 3, h, w), "opt_shape": (opts.batch, 3, h, w), "max_shape": (max(o.max_batch, opts.batch), 3, h, w)}
    result = engine.build_engine(
        str(final_onnx), str(plan.dest), precision=o.precision, workspace_gib=o.workspace, tensorrt=o.tensorrt,
        compute_capabilities=o.compute_capability, report=_say, verbose=o.verbose,
        timing_cache=str(o.timing_cache) if o.timing_cache else None, dla_core=o.dla_core, **shape_kw,
    )
    _report("engine", result)


def _triton(o: Args, plan: Plan, final_onnx: Path) -> None:
    """The Triton model repository at the output, serving the ONNX with ONNX Runtime."""
    triton = _need("scaseg.export.triton", "--format triton")
    result = triton.write_triton_repository(str(final_onnx), str(plan.dest), name=plan.checkpoint.with_suffix("").name,
                                            backend="onnxruntime", max_batch_size=o.max_batch)
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


def _plan_grid(model: Any, info: Any, opts: Any, parity_images: int) -> None:
    """Set opts.grid_points from the logit spread on the parity scenes (or refuse), and say what was chosen."""
    from scaseg.export.parity import plan_grid
    from scaseg.export.sca import RULE_MIN_POINTS, SPREAD_PER_STEP

    requested = opts.grid_points
    opts.grid_points, spread = plan_grid(model, info, opts.imgsz, parity_images, requested)
    opts.extra["grid_spread"] = round(spread, 4)
    how = "as requested" if requested else f"the fewest with spread / (G - 1) <= {SPREAD_PER_STEP:g}, at least {RULE_MIN_POINTS}"
    _say(f"grid attention: logit spread {spread:.3g} on {parity_images} parity scene(s) -> G = {opts.grid_points} ({how})")


def _export_fp32(model: Any, info: Any, opts: Any, dest: Path, parity_images: int, tolerance: float, steps: Any) -> str:
    """Export (traced and simplified by to_onnx), lint, check parity and only then let ``dest`` appear.

    Returns a one-line summary of the graph.
    """
    import onnx

    from scaseg.export.onnx_export import to_onnx
    from scaseg.export.trt_lint import lint

    steps.set_postfix_str("tracing to ONNX")
    proto, out_info = to_onnx(model, info, opts)
    steps.update()
    with atomic_path(dest) as tmp:
        try:
            onnx.save(proto, str(tmp))
        except OSError as exc:  # disk full, quota: one sentence, and atomic_path removes the partial file
            raise ScasegError(f"cannot write {dest}: {exc.strerror or exc}") from None
        steps.set_postfix_str("TensorRT lint")
        lint_report = lint(proto)
        steps.update()
        _say(lint_report.summary())
        _parity(tmp, model, out_info, parity_images, tolerance, steps)
    h, w = opts.imgsz
    return (f"{out_info.variant}, {h}x{w}, batch {'dynamic' if opts.dynamic_batch else opts.batch}"
            f"{', dynamic H/W' if opts.dynamic_spatial else ''}, sca-op {opts.sca_op}, output {opts.output}, "
            f"opset {opts.opset}")


def _parity(onnx_path: Path, model: Any, info: Any, parity_images: int, tolerance: float, steps: Any) -> None:
    """ONNX Runtime against PyTorch on synthetic scenes; a disagreement or a non-finite value refuses the export."""
    from scaseg.export.parity import check_parity

    steps.set_postfix_str("parity vs PyTorch")
    parity = check_parity(str(onnx_path), model, info, images=parity_images, tolerance=tolerance)
    steps.update()
    _say(parity.summary())
    if parity.nonfinite:
        raise ScasegError(f"the parity check found {parity.nonfinite} NaN or infinite output value(s) (PyTorch or "
                          "ONNX Runtime): the model computes garbage; nothing was written")
    if not parity.ok:
        what = (f"max |logit diff| {parity.max_abs:.3g}" if parity.max_abs is not None
                else f"{parity.confident_mismatches} confidently-labelled pixel(s) changed")
        raise ScasegError(f"the ONNX model disagrees with PyTorch beyond --tolerance {tolerance:g} ({what}); "
                          "nothing was written")


def main() -> None:
    """Console entry point (scaseg-export)."""
    run_cli(app, prog="scaseg-export", interrupted="; nothing was written (temporary files removed)")


if __name__ == "__main__":
    main()
