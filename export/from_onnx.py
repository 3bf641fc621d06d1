"""``scaseg-export MODEL.onnx --format engine``: an exported fp32 (or fp16 / Q/DQ) ONNX -> a TensorRT engine, torch-free.

The Jetson workflow: export on the desktop, copy the ONNX, build on the device, where PyTorch is not installed.
fp16 and int8 from an fp32 ONNX go through the calibration package (torch-free), into a temporary folder beside
the output; the engine and its side file appear only when the build succeeded.

Everything that can be refused is refused before any work starts, each in one sentence: no TensorRT (or not the one
asked for), an unknown compute capability, a file that is not ONNX or carries no scaseg metadata, int8 without
--calib, a precision the file cannot give.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from scaseg.errors import ScasegError
from scaseg.fileio import atomic_path, check_writable_dir, created_folders
from scaseg.suffixes import ENGINE_SUFFIX


def build_from_onnx(onnx_path: Path, dest: Path, *, precision: str, tensorrt: str,
                    compute_capabilities: Optional[Sequence[str]], calib: Optional[Path], calib_num: int,
                    calib_method: str, calib_cache: Optional[Path], max_miou_drop: float, workspace_gib: float,
                    timing_cache: Optional[Path], dla_core: Optional[int], say: Callable[[str], None]) -> dict[str, Any]:
    """Check everything, convert the ONNX to ``precision`` when it is fp32, build ``dest``; returns the build summary."""
    from scaseg.runtime.tensorrt import builder, compat, graph, profile

    profile.check_options(precision, workspace_gib, dla_core)
    trt = compat.require_tensorrt("--format engine", tensorrt)
    profile.check_flavor_options(trt, compute_capabilities, dla_core)
    model, _info = graph.load_onnx(str(onnx_path))
    carried = graph.graph_precision(model)
    del model
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
            return builder.build_engine(
                str(source), str(dest), precision=precision, tensorrt=trt.flavor,
                compute_capabilities=compute_capabilities, workspace_gib=workspace_gib,
                timing_cache=str(timing_cache) if timing_cache else None, dla_core=dla_core, report=say,
            )
