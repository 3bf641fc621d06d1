"""``scaseg-export MODEL.onnx --format engine``: an exported fp32 / fp16 / int8 ONNX -> a TensorRT engine, torch-free.

Also the engine options' one check (``check_engine_options`` -> ``EngineRequest``) and the engine step of a
checkpoint export (``build_exported``): every engine scaseg-export builds goes through ``build_loaded_engine``.

The Jetson workflow: export on the desktop, copy the ONNX, build on the device, where PyTorch is not installed.
The engine's precision is the ONNX's own (its metadata) unless --precision asks for another; fp16 and int8 from an
fp32 ONNX go through the calibration package (torch-free), into a temporary folder beside the output; the engine
and its side file appear only when the build succeeded.

The options were checked by scaseg-export (export/cli.py: no TensorRT or not the one asked for, no onnx package, an
unknown compute capability); what depends on the file is refused here before any work starts, each in one sentence:
a file that is not ONNX or carries no scaseg metadata, an int8 file placed for ONNX Runtime's CPU kernels (with the
command that builds the engine), int8 without --calib, a precision the file cannot give (the builder's precision
plan). The ONNX is read once and handed down to the conversion and the builder.
"""
from __future__ import annotations

import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, List, Optional

from scaseg.errors import ScasegError, require_package
from scaseg.export.engine.builder import build_loaded_engine
from scaseg.export.engine.graph import onnx_runtime_only
from scaseg.export.engine.profile import check_flavor_options, check_options
from scaseg.fileio import atomic_path, check_writable_dir, created_folders
from scaseg.metadata import read_onnx_model
from scaseg.runtime.tensorrt.installed import EXTRAS, TensorRT, require_tensorrt
from scaseg.suffixes import CHECKPOINT_SUFFIXES, ENGINE_SUFFIX

if TYPE_CHECKING:
    import onnx

    from scaseg.export.cli import ExportRequest
    from scaseg.export.onnx_export import ExportOptions
    from scaseg.metadata import ModelInfo


@dataclass(frozen=True)
class EngineRequest:
    """--format engine's options, checked: the TensorRT that builds the engine and what it builds for."""

    tensorrt: TensorRT
    compute_capabilities: Optional[list[str]]  # TensorRT-RTX: the checked targets; None with standard TensorRT
    workspace_gib: float
    timing_cache: Optional[Path]
    dla_core: Optional[int]
    verbose: bool


def check_engine_options(tensorrt: str, compute_capability: Optional[List[str]], workspace: float,
                         timing_cache: Optional[Path], dla_core: Optional[int], verbose: bool, *,
                         from_onnx: bool = False) -> EngineRequest:
    """--format engine's options, checked once: the TensorRT asked for is here (and onnx, to read an ONNX file)
    and builds for what was asked. The precision-dependent rules wait for the precision (profile.check_options)."""
    trt = require_tensorrt("--format engine", tensorrt)
    if from_onnx:
        require_package("onnx", "building an engine from an ONNX file", EXTRAS[trt.flavor])
    ccs = check_flavor_options(trt, compute_capability, dla_core)
    cache = timing_cache.expanduser() if timing_cache else None
    if cache is not None:
        check_writable_dir(cache)
    return EngineRequest(trt, ccs, workspace, cache, dla_core, verbose)


def build_exported(request: ExportRequest, graph: ExportOptions, onnx_path: Path, model: onnx.ModelProto,
                   info: ModelInfo, say: Callable[[str], None]) -> dict[str, Any]:
    """The engine of a checkpoint export, from the ONNX it just wrote (in memory and at ``onnx_path``), with a batch
    profile for a dynamic-batch graph; returns the build summary."""
    engine = request.engine
    assert engine is not None and request.precision is not None and request.output is not None
    h, w = graph.imgsz

    def shape(batch: int) -> tuple[int, int, int, int]:  # a raw-frame graph takes (B, H, W, 3) at the source size
        return (batch, *graph.source_size, 3) if graph.source_size else (batch, 3, h, w)  # type: ignore[return-value]

    profile = None
    if graph.dynamic_batch:
        profile = (shape(1), shape(graph.batch), shape(max(request.max_batch, graph.batch)))
    return build_loaded_engine(
        model, info, str(onnx_path), str(request.output), trt=engine.tensorrt, precision=request.precision,
        carried=info.precision, compute_capabilities=engine.compute_capabilities, profile=profile,
        workspace_gib=engine.workspace_gib, timing_cache=str(engine.timing_cache) if engine.timing_cache else None,
        dla_core=engine.dla_core, verbose=engine.verbose, report=say,
    )


def build_from_onnx(request: ExportRequest, say: Callable[[str], None]) -> tuple[Path, str, dict[str, Any]]:
    """Read the ONNX (once), convert it when it is fp32 and another precision is asked, build the engine.

    ``request``: checked by scaseg-export (its TensorRT found, its options valid); what depends on the file is
    checked here. ``request.precision`` None: the ONNX's own. ``request.output`` None: beside the ONNX
    (model.onnx -> model.engine, model.int8.onnx -> model.int8.engine). Returns the engine's path, its precision
    and the build summary.
    """
    engine = request.engine
    assert engine is not None
    onnx_path = request.source
    model, info = read_onnx_model(onnx_path)
    carried = info.precision  # what the metadata says; scaseg-export and the calibration write it
    precision = request.precision or carried
    check_options(precision, engine.workspace_gib, engine.dla_core)
    runtime_only = onnx_runtime_only(model)
    if runtime_only:
        raise ScasegError(f"{onnx_path.name} is placed for ONNX Runtime's CPU kernels ({'; '.join(runtime_only)}), "
                          "which TensorRT cannot parse: build the engine from the float model with "
                          f"{_rebuild_command(onnx_path, precision)}")
    dest = request.output if request.output is not None else _default_dest(onnx_path, precision)
    convert_to = precision if precision != "fp32" and carried == "fp32" else None
    calibration = request.calibration
    images = None
    if convert_to is not None:
        assert calibration is not None  # a precision other than the file's was asked: its options were checked
        images = calibration.open_images() if convert_to == "int8" else None
    if dest.is_dir():
        raise ScasegError(f"the output {dest} is a folder; name a file (e.g. {dest / ('model' + ENGINE_SUFFIX)})")
    if dest.resolve() == onnx_path.resolve():
        raise ScasegError(f"the output {dest} is the input ONNX; name another file (e.g. {dest.with_suffix(ENGINE_SUFFIX)})")
    check_writable_dir(dest)
    trt = engine.tensorrt
    say(f"{trt.label} ({trt.generation}): building an {precision} engine from {onnx_path.name} "
        f"(the ONNX carries {carried})")
    # The output's folder appears only for the build (and goes again if it fails); the work folder beside it.
    with created_folders(dest.parent):
        try:  # the first write: os.access can say yes where a write fails (a read-only mount)
            work_dir = tempfile.TemporaryDirectory(prefix=".scaseg-engine-", dir=dest.parent)
        except OSError as exc:
            raise ScasegError(f"cannot write to the output folder {dest.parent}: {exc.strerror or exc}") from None
        with work_dir as work:
            source = onnx_path
            if convert_to is not None:
                from scaseg.calibration.precision import check_fp32, convert

                assert calibration is not None
                source = Path(work) / f"{onnx_path.stem}.{convert_to}.onnx"
                with atomic_path(source) as tmp:
                    model, info, result = convert(check_fp32(model, info, onnx_path), info, tmp, convert_to,
                                                  calibration, images, onnx_path.stem)
                for key, value in result.items():
                    say(f"{convert_to}: {key}: {value}")
            summary = build_loaded_engine(
                model, info, str(source), str(dest), trt=trt, precision=precision, carried=info.precision,
                compute_capabilities=engine.compute_capabilities, profile=None, workspace_gib=engine.workspace_gib,
                timing_cache=str(engine.timing_cache) if engine.timing_cache else None, dla_core=engine.dla_core,
                verbose=engine.verbose, report=say,
            )
    return dest, precision, summary


def _default_dest(onnx_path: Path, precision: str) -> Path:
    """model.onnx -> model.engine (model.fp16.engine for fp16), model.int8.onnx -> model.int8.engine."""
    from scaseg.export.cli import default_output

    if onnx_path.stem.endswith(f".{precision}"):
        return onnx_path.with_suffix(ENGINE_SUFFIX)
    return default_output(onnx_path, "engine", precision)


def _rebuild_command(onnx_path: Path, precision: str) -> str:
    """The command that builds this engine from the float model: its fp32 ONNX or checkpoint beside it, if there."""
    stem = onnx_path.name[: -len(onnx_path.suffix)]
    for tag in (".int8", ".fp16"):
        stem = stem[: -len(tag)] if stem.endswith(tag) else stem
    found = [p for p in (onnx_path.with_name(stem + onnx_path.suffix), *(onnx_path.with_name(stem + suffix)
                                                                           for suffix in CHECKPOINT_SUFFIXES))
             if p != onnx_path and p.is_file()]
    source = shlex.quote(str(found[0])) if found else "MODEL.pth"
    calib = " --calib DIR" if precision == "int8" else ""
    notes = ([] if found else ["MODEL.pth: the checkpoint it was exported from"]) + (
        ["DIR: a folder of calibration images"] if calib else [])
    where = f" ({'; '.join(notes)})" if notes else ""
    return f"scaseg-export {source} --format engine --precision {precision}{calib}{where}"
