"""Build a TensorRT engine from an exported ONNX file (``scaseg-export MODEL.onnx --format engine``), torch-free.

Executed in CI with TensorRT-RTX (its builder needs no GPU). The standard-TensorRT branches (8.5 / 10.x / 11.x) are
type-checked against tensorrt-stubs only: building with standard TensorRT needs a GPU, and none was lent.

Steps, each a small function: check the options (profile.py) -> read the ONNX and its ModelInfo (graph.py) ->
decide the precision plan for this TensorRT (precision.py) -> prepare the graph for the parser (graph.py: tag
strip-attention nodes for the Python plugin on standard TensorRT >= 10.7, otherwise inline the ONNX local
functions) -> parse -> configure (workspace, profile, compute capabilities or timing cache and DLA, flags, DETAILED
profiling) -> build -> read the layer table (layers.py: which data type each convolution/GEMM takes) -> write the
plan and its ``<engine>.json`` side file atomically. This module holds the TensorRT calls and the writing.

``onnx`` is imported inside the functions that need it, never at import time.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from scaseg.errors import ScasegError
from scaseg.export.engine.graph import graph_precision, input_shape, load_onnx, prepare_for_parser, requested_precisions
from scaseg.export.engine.layers import (Layer, layer_precisions, layers_from_inspector, layers_from_log,
                                         precision_summary, wider_than_asked)
from scaseg.export.engine.precision import PrecisionPlan, needs_explicit_batch_flag, network_flags, precision_plan
from scaseg.export.engine.profile import (Shape, check_flavor_options, check_options, check_profile, resolve_profile,
                                          rtx_capabilities)
from scaseg.fileio import atomic_path, check_writable_dir
from scaseg.metadata import PRECISIONS, ModelInfo
from scaseg.runtime.tensorrt.engine_info import FACTS_KEY, side_file
from scaseg.runtime.tensorrt.installed import TensorRT, require_tensorrt

if TYPE_CHECKING:  # pragma: no cover
    import onnx


def _logger(trt_module: Any, verbose: bool) -> Any:
    """An ILogger that keeps the builder's "Layers:" report, its errors and warnings; prints all of it only if verbose.

    Without verbose, TensorRT's own lines never reach the terminal: a refusal is one sentence (the parser's or the
    builder's last error) and a build that warned says so in one line (see ``_warned``).
    """

    class Logger(trt_module.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt_module.ILogger.__init__(self)
            self.layer_report = ""
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if msg.startswith("Layers:"):
                self.layer_report = msg
            sev = trt_module.ILogger.Severity
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                self.errors.append(msg)
            elif severity == sev.WARNING:
                self.warnings.append(msg)
            if verbose:
                print(f"[TensorRT] {msg}", file=sys.stderr)

    return Logger()


def _warned(logger: Any, verbose: bool) -> Optional[str]:
    """One line for the warnings and errors TensorRT logged during a build that succeeded, or None."""
    count = len(logger.warnings) + len(logger.errors)
    if not count or verbose:
        return None
    return f"TensorRT logged {count} warning(s) or error(s) during the build; --verbose prints them"


def _quiet_logger(trt_module: Any) -> Any:
    """An ILogger that drops everything: the parser's errors are read back through its own API."""

    class Quiet(trt_module.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt_module.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            return None

    return Quiet()


def _parser_errors(parser: Any) -> list[str]:
    """The ONNX parser's own errors, one line each: "node NAME (OP): description"."""
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = ""
        name, op = err.node_name(), err.node_operator()
        if name or op:
            where = f"node {name or err.node()} ({op}): " if op else f"node {name}: "
        stack = [str(s) for s in (err.local_function_stack() if err.local_function_stack_size() else [])]
        inside = f" (inside local function {' > '.join(stack)})" if stack else ""
        out.append(f"{where}{' '.join(str(err.desc()).split())}{inside}")
    return out


def parse_errors(model: onnx.ModelProto, trt: TensorRT) -> list[str]:
    """Parse ``model`` with this TensorRT's ONNX parser; its errors (empty when it parsed). No GPU needed."""
    if TYPE_CHECKING:  # type-checked against tensorrt-stubs; tensorrt_rtx has the same API here
        import tensorrt as trt_module
    else:
        trt_module = trt.module
    logger = _quiet_logger(trt_module)
    builder = trt_module.Builder(logger)
    flags = 1 << int(trt_module.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if needs_explicit_batch_flag(
        trt) else 0
    network = builder.create_network(flags)
    parser = trt_module.OnnxParser(network, logger)
    if parser.parse(model.SerializeToString()):
        return []
    return _parser_errors(parser) or ["the parser refused the model without saying why"]


def _progress_monitor(trt_module: Any) -> Any:
    """Build progress through IProgressMonitor (TensorRT >= 10): bars on a terminal, plain lines otherwise."""
    if not hasattr(trt_module, "IProgressMonitor"):
        return None
    tty = sys.stderr.isatty()

    class Progress(trt_module.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt_module.IProgressMonitor.__init__(self)
            self.bars: dict[str, Any] = {}

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            if not tty:
                if parent_phase is None:
                    print(f"building: {phase_name}", file=sys.stderr)
                return
            from tqdm import tqdm

            self.bars[phase_name] = tqdm(total=num_steps, desc=phase_name, file=sys.stderr, leave=parent_phase is None,
                                         position=len(self.bars), dynamic_ncols=True)

        def step_complete(self, phase_name: str, step: int) -> bool:
            bar = self.bars.get(phase_name)
            if bar is not None:
                bar.update(step + 1 - bar.n)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return Progress()


def _parse(trt_module: Any, network: Any, logger: Any, model: onnx.ModelProto, onnx_path: str) -> None:
    parser = trt_module.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString(), str(Path(onnx_path).resolve())):
        errors = _parser_errors(parser)
        first = errors[0] if errors else "no detail"
        raise ScasegError(f"TensorRT's ONNX parser rejected {onnx_path}: {first}"
                          f"{f' (and {len(errors) - 1} more)' if len(errors) > 1 else ''}")


def builds_without_gpu(trt: TensorRT) -> bool:
    """TensorRT-RTX compiles ahead of time for chosen compute capabilities; standard TensorRT times tactics on a GPU."""
    return trt.flavor == "rtx"


def _gpu_facts(device: int = 0) -> tuple[str, tuple[int, int]]:
    from scaseg.runtime.tensorrt.cuda import open_device

    cuda = open_device(device)
    return cuda.device_name(device), cuda.compute_capability(device)


def _configure(trt: TensorRT, builder: Any, plan: PrecisionPlan, workspace_gib: float, input_name: str,
               shapes: Optional[tuple[Shape, Shape, Shape]], ccs: Optional[list[str]], dla_core: Optional[int],
               gpu_fallback: bool, timing_cache: Optional[str]) -> Any:
    """Builder config: workspace, precision flags, profile, compute capabilities / DLA, timing cache, progress."""
    if TYPE_CHECKING:  # type-checked against tensorrt-stubs; tensorrt_rtx has the same API here
        import tensorrt as trt_module
    else:
        trt_module = trt.module
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt_module.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    config.profiling_verbosity = trt_module.ProfilingVerbosity.DETAILED  # the layer table with types and ONNX names
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt_module.BuilderFlag, flag))
    if shapes is not None:
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, trt_module.Dims(list(shapes[0])), trt_module.Dims(list(shapes[1])),
                          trt_module.Dims(list(shapes[2])))
        config.add_optimization_profile(profile)
    if ccs is not None:  # TensorRT-RTX only: not in standard TensorRT's API (nor its stubs)
        rtx_config: Any = config
        members = rtx_capabilities(trt.module)
        rtx_config.num_compute_capabilities = len(ccs)
        for index, cc in enumerate(ccs):
            if not rtx_config.set_compute_capability(members[cc], index):
                raise ScasegError(f"{trt.label} refused compute capability {cc}")
    if dla_core is not None:
        cores = builder.num_DLA_cores
        if int(dla_core) >= cores:
            raise ScasegError(f"DLA core {dla_core} does not exist: this device has {cores} DLA core(s) "
                              "(Jetson Xavier and Orin modules have DLA, except Orin Nano)")
        config.default_device_type = trt_module.DeviceType.DLA
        config.DLA_core = int(dla_core)
        if gpu_fallback:
            config.set_flag(trt_module.BuilderFlag.GPU_FALLBACK)
    if timing_cache is not None:
        cache_file = Path(timing_cache)
        cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
        config.set_timing_cache(cache, False)  # ignore_mismatch=False: a cache from another GPU is not reused
    monitor = _progress_monitor(trt_module)
    if monitor is not None:
        config.progress_monitor = monitor
    return config


def _engine_layers(trt: TensorRT, serialized: Any, logger: Any) -> list[Layer]:
    """The built engine's layers: from the builder's log (TensorRT-RTX; no GPU needed) or the engine inspector."""
    if logger.layer_report:
        return layers_from_log(logger.layer_report)
    if trt.flavor == "rtx":
        return []  # the inspector needs a deserialised engine, i.e. a GPU
    if TYPE_CHECKING:
        import tensorrt as trt_module
    else:
        trt_module = trt.module
    runtime = trt_module.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        return []
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(trt_module.LayerInformationFormat.JSON)
    try:
        return layers_from_inspector(json.loads(text))
    except ValueError:
        return []


def _write_outputs(engine_path: str, info: ModelInfo, serialized: Any, timing_cache: Optional[str],
                   config: Any) -> Path:
    """Side file and plan, each atomically, the plan renamed first; then the timing cache. Returns the side file."""
    side = side_file(engine_path)
    with atomic_path(side) as side_tmp:
        side_tmp.write_text(json.dumps(info.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        with atomic_path(engine_path) as engine_tmp:
            engine_tmp.write_bytes(memoryview(serialized))
    if timing_cache is not None:
        with atomic_path(timing_cache) as cache_tmp:
            cache_tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return side


def build_engine(onnx_path: str, engine_path: str, *, precision: str = "fp32",  # fp32|fp16|int8 (int8 = Q/DQ ONNX)
                 tensorrt: str = "auto",  # auto|standard|rtx
                 compute_capabilities: Optional[Sequence[str]] = None,  # TensorRT-RTX targets, e.g. ["8.6", "12.0"]
                 workspace_gib: float = 4.0, timing_cache: str | None = None,
                 min_shape: Any = None, opt_shape: Any = None, max_shape: Any = None,  # (B, 3, H, W), dynamic inputs
                 dla_core: int | None = None, gpu_fallback: bool = True, verbose: bool = False,
                 report: Any = None) -> dict:
    """Build ``engine_path`` (+ ``<engine_path>.json``) from ``onnx_path`` with TensorRT; returns a summary.

    ``report`` (a callable taking one line) receives the layer-precision summary; default: print to stderr.
    Raises ScasegError for bad options, a foreign or unreadable ONNX, a missing TensorRT, a precision this
    TensorRT cannot build from this ONNX, or a failed build; nothing is written then.
    """
    check_options(precision, workspace_gib, dla_core)
    profile = check_profile(min_shape, opt_shape, max_shape)
    trt = require_tensorrt("building an engine", tensorrt)
    ccs = check_flavor_options(trt, compute_capabilities, dla_core)
    model, info = load_onnx(onnx_path)
    check_writable_dir(engine_path)  # before minutes of building, not after
    if timing_cache is not None:
        check_writable_dir(timing_cache)
    return build_loaded_engine(model, info, onnx_path, engine_path, trt=trt, precision=precision,
                               carried=graph_precision(model), compute_capabilities=ccs, profile=profile,
                               workspace_gib=workspace_gib, timing_cache=timing_cache, dla_core=dla_core,
                               gpu_fallback=gpu_fallback, verbose=verbose, report=report)


def build_loaded_engine(model: onnx.ModelProto, info: ModelInfo, onnx_path: str, engine_path: str, *, trt: TensorRT,
                        precision: str, carried: str, compute_capabilities: Optional[list[str]],
                        profile: Optional[tuple[Shape, Shape, Shape]], workspace_gib: float,
                        timing_cache: str | None, dla_core: int | None, gpu_fallback: bool = True,
                        verbose: bool = False, report: Any = None) -> dict:
    """The build itself, from an ONNX already read (``onnx_path`` is its file) and options already checked.

    ``carried``: the precision the ONNX holds; ``compute_capabilities``: check_flavor_options' answer. scaseg-export
    checks its options once and reads the ONNX once, then calls this; ``build_engine`` does both for other callers.
    """
    assert isinstance(trt, TensorRT) and precision in PRECISIONS and carried in PRECISIONS
    say = report or (lambda line: print(line, file=sys.stderr))
    ccs = compute_capabilities
    if TYPE_CHECKING:  # type-checked against tensorrt-stubs; tensorrt_rtx has the same API here
        import tensorrt as trt_module
    else:
        trt_module = trt.module

    plan = precision_plan(trt, precision, carried)
    input_name, onnx_shape = input_shape(model)
    shapes = resolve_profile(onnx_shape, info, profile)
    gpu = None if builds_without_gpu(trt) else _gpu_facts(0)

    model, use_plugin = prepare_for_parser(model, trt)
    logger = _logger(trt_module, verbose)
    builder = trt_module.Builder(logger)
    network = builder.create_network(network_flags(trt_module, trt, plan))
    _parse(trt_module, network, logger, model, onnx_path)

    config = _configure(trt, builder, plan, workspace_gib, input_name, shapes, ccs, dla_core, gpu_fallback,
                        timing_cache)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        why = f": {logger.errors[-1]}" if logger.errors else "; rerun with --verbose for its messages"
        raise ScasegError(f"{trt.label} could not build an engine from {onnx_path}{why}")
    io_dtypes = {}
    for tensor in [network.get_input(i) for i in range(network.num_inputs)] + [
            network.get_output(i) for i in range(network.num_outputs)]:
        io_dtypes[tensor.name] = np.dtype(trt_module.nptype(tensor.dtype)).name
    layers = _engine_layers(trt, serialized, logger)
    counts = layer_precisions(layers)
    for line in precision_summary(counts, wider_than_asked(layers, requested_precisions(model))):
        say(line)
    warned = _warned(logger, verbose)
    if warned:
        say(warned)

    target: dict[str, Any] = ({"compute_capabilities": ccs} if ccs is not None else
                              {"gpu": gpu[0] if gpu else None, "compute_capability": list(gpu[1]) if gpu else None})
    facts = {
        "trt_flavor": trt.flavor, "trt_version": trt.version_text, **target, "layer_precisions": counts,
        "precision": precision, "strongly_typed": plan.strongly_typed, "builder_flags": list(plan.builder_flags),
        "precision_note": plan.note, "plugin": use_plugin, "io_dtypes": io_dtypes,
        "input_shapes": None if shapes is None else {"min": list(shapes[0]), "opt": list(shapes[1]),
                                                     "max": list(shapes[2])},
        "max_batch": int(shapes[2][0]) if shapes is not None else int(onnx_shape[0]),
        "workspace_gib": workspace_gib, "dla_core": dla_core, "gpu_fallback": bool(gpu_fallback and dla_core is not None),
        "timing_cache": timing_cache, "onnx": Path(onnx_path).name, "build_seconds": round(seconds, 1),
    }
    engine_info = engine_model_info(info, precision, shapes, facts)
    side = _write_outputs(engine_path, engine_info, serialized, timing_cache, config)
    size_mb = Path(engine_path).stat().st_size / 2**20
    return {"engine": str(engine_path), "side_file": str(side), "size_mb": round(size_mb, 2), **facts}


def engine_model_info(info: ModelInfo, precision: str, shapes: Optional[tuple[Shape, Shape, Shape]],
                      facts: dict[str, Any]) -> ModelInfo:
    """The ModelInfo an engine carries: the ONNX's, with the engine's precision, batch/size ranges and facts."""
    changes: dict[str, Any] = {"precision": precision,
                               "extra": {**info.extra, FACTS_KEY: facts}}
    if shapes is not None:
        lo, opt, hi = shapes
        lo_hw, opt_hw, hi_hw = (info.spatial(s) for s in shapes)  # (H, W) in the input's layout
        changes.update(batch=int(opt[0]), dynamic_batch=lo[0] != hi[0], dynamic_spatial=lo_hw != hi_hw)
        if lo_hw == hi_hw:
            changes["input_size"] = (int(opt_hw[0]), int(opt_hw[1]))
    return info.replace(**changes)
