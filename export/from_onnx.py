"""``scaseg-export MODEL.onnx --format engine``: an exported fp32 / fp16 / int8 ONNX -> a TensorRT engine, torch-free.

The Jetson workflow: export on the desktop, copy the ONNX, build on the device, where PyTorch is not installed.
The engine's precision is the ONNX's own (its metadata) unless --precision asks for another; fp16 and int8 from an
fp32 ONNX go through the calibration package (torch-free), into a temporary folder beside the output; the engine
and its side file appear only when the build succeeded.

Everything that can be refused is refused before any work starts, each in one sentence: no TensorRT (or not the one
asked for), no onnx package, an unknown compute capability, a file that is not ONNX or carries no scaseg metadata,
an int8 file placed for ONNX Runtime's CPU kernels (with the command that builds the engine), int8 without --calib,
a precision the file cannot give.
"""
from __future__ import annotations

import shlex
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from scaseg.errors import ScasegError, require_package
from scaseg.fileio import atomic_path, check_writable_dir, created_folders
from scaseg.suffixes import CHECKPOINT_SUFFIXES, ENGINE_SUFFIX


def build_from_onnx(onnx_path: Path, output: Optional[Path], *, precision: Optional[str], tensorrt: str,
                    compute_capabilities: Optional[Sequence[str]], calib: Optional[Path], calib_num: int,
                    calib_method: str, calib_cache: Optional[Path], max_miou_drop: float, workspace_gib: float,
                    timing_cache: Optional[Path], dla_core: Optional[int], verbose: bool,
                    say: Callable[[str], None]) -> tuple[Path, str, dict[str, Any]]:
    """Check everything, convert the ONNX when it is fp32 and another precision is asked, build the engine.

    ``precision`` None: the ONNX's own. ``output`` None: beside the ONNX (model.onnx -> model.engine, model.int8.onnx
    -> model.int8.engine). Returns the engine's path, its precision and the build summary.
    """
    from scaseg.export.engine import builder, graph, profile
    from scaseg.metadata import PRECISIONS
    from scaseg.runtime.tensorrt import installed

    trt = installed.require_tensorrt("--format engine", tensorrt)
    require_package("onnx", "building an engine from an ONNX file", installed.EXTRAS[trt.flavor])
    profile.check_flavor_options(trt, compute_capabilities, dla_core)
    model, info = graph.load_onnx(str(onnx_path))
    carried = graph.graph_precision(model)
    precision = precision or (info.precision if info.precision in PRECISIONS else carried)
    profile.check_options(precision, workspace_gib, dla_core)
    runtime_only = graph.onnx_runtime_only(model)
    del model
    if runtime_only:
        raise ScasegError(f"{onnx_path.name} is placed for ONNX Runtime's CPU kernels ({'; '.join(runtime_only)}), "
                          "which TensorRT cannot parse: build the engine from the float model with "
                          f"{_rebuild_command(onnx_path, precision)}")
    dest = output if output is not None else _default_dest(onnx_path, precision)
    if precision == "int8" and carried != "int8":
        if calib is None:
            raise ScasegError("--precision int8 needs --calib DIR, a folder of calibration images, to quantize "
                              f"{onnx_path.name}")
        if not calib.expanduser().is_dir():
            raise ScasegError(f"calibration folder not found: {calib}")
    if dest.is_dir():
        raise ScasegError(f"the output {dest} is a folder; name a file (e.g. {dest / ('model' + ENGINE_SUFFIX)})")
    if dest.resolve() == onnx_path.resolve():
        raise ScasegError(f"the output {dest} is the input ONNX; name another file (e.g. {dest.with_suffix(ENGINE_SUFFIX)})")
    check_writable_dir(dest)
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
            if precision != "fp32" and carried == "fp32":
                from scaseg.calibration import api

                source = Path(work) / f"{onnx_path.stem}.{precision}.onnx"
                with atomic_path(source) as tmp:
                    result = api.make_precision(
                        str(onnx_path), str(tmp), precision, calib_dir=str(calib) if calib else None, calib_num=calib_num,
                        method=calib_method, target="tensorrt", max_miou_drop=max_miou_drop,
                        cache_dir=str(calib_cache) if calib_cache else None,
                    )
                for key, value in (result or {}).items():
                    say(f"{precision}: {key}: {value}")
            summary = builder.build_engine(
                str(source), str(dest), precision=precision, tensorrt=trt.flavor,
                compute_capabilities=compute_capabilities, workspace_gib=workspace_gib,
                timing_cache=str(timing_cache) if timing_cache else None, dla_core=dla_core, verbose=verbose,
                report=say,
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
