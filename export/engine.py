"""Build a TensorRT engine from an exported ONNX file: ``scaseg-export --format engine``.

UNEXECUTED: type-checked against tensorrt-stubs and tested up to the point where TensorRT is needed (argument
and ONNX checks, the precision plan, the plugin tagging, refusal without TensorRT). It has never built an engine in
this project's CI, which has no GPU and no TensorRT. See docs/tensorrt.md.

Steps, each a small function: read the ONNX and its ModelInfo -> decide the precision plan for this TensorRT
generation (runtime/trt_compat.py) -> prepare the graph for the parser (tag strip-attention nodes for the Python
plugin on TensorRT >= 10.7, otherwise inline the ONNX local functions, which TensorRT 8.5's parser cannot read)
-> parse -> configure (workspace, profile, timing cache, DLA, flags) -> build -> write the plan and its
``<engine>.json`` side file atomically.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import onnx

from scaseg.runtime import trt_compat
from scaseg.errors import ScasegError
from scaseg.fileio import atomic_path, check_writable_dir
from scaseg.metadata import METADATA_KEY, ModelInfo

SCA_DOMAIN = "scaseg"  # must match export/sca.py and runtime/trt_plugin.py
SCA_OP = "StripCrossAttention"

Shape = tuple[int, int, int, int]


# --- pure checks ------------------------------------------------------------------------------------------------


def _as_shape(value: Any, name: str) -> Shape:
    try:
        dims = tuple(int(d) for d in value)
    except (TypeError, ValueError):
        raise ScasegError(f"{name} must be four integers (B, 3, H, W), got {value!r}") from None
    if len(dims) != 4 or any(d < 1 for d in dims):
        raise ScasegError(f"{name} must be four positive integers (B, 3, H, W), got {value!r}")
    return (dims[0], dims[1], dims[2], dims[3])


def check_profile(min_shape: Any, opt_shape: Any, max_shape: Any) -> Optional[tuple[Shape, Shape, Shape]]:
    """Validate a min/opt/max profile: all three or none, four positive ints each, min <= opt <= max."""
    given = [s is not None for s in (min_shape, opt_shape, max_shape)]
    if not any(given):
        return None
    if not all(given):
        raise ScasegError("give all three of --min-shape, --opt-shape and --max-shape, or none of them")
    lo, opt, hi = (_as_shape(s, n) for s, n in ((min_shape, "min_shape"), (opt_shape, "opt_shape"),
                                                (max_shape, "max_shape")))
    if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise ScasegError(f"the profile must satisfy min <= opt <= max on every axis, got {lo}, {opt}, {hi}")
    return lo, opt, hi


def check_options(precision: str, workspace_gib: float, dla_core: Optional[int]) -> None:
    """One sentence for an option no TensorRT could honour."""
    if precision not in trt_compat.PRECISIONS:
        raise ScasegError(f"unknown engine precision {precision!r}: expected one of {', '.join(trt_compat.PRECISIONS)}")
    if not workspace_gib > 0:
        raise ScasegError(f"the workspace must be a positive number of GiB, got {workspace_gib}")
    if dla_core is not None:
        if int(dla_core) < 0:
            raise ScasegError(f"the DLA core index must be 0 or more, got {dla_core}")
        if precision == "fp32":
            raise ScasegError("DLA runs only fp16 or int8 layers: pass --precision fp16 or int8 with --dla-core")


def resolve_profile(onnx_shape: Sequence[int], info: ModelInfo,
                    profile: Optional[tuple[Shape, Shape, Shape]]) -> Optional[tuple[Shape, Shape, Shape]]:
    """The optimisation profile for the network input: None for a static input, else min/opt/max.

    ``onnx_shape`` uses -1 for dynamic axes. Without a user profile, a dynamic input is built for exactly the
    size and batch the metadata names (the shortest command works; pass a profile for a range).
    """
    dims = [int(d) for d in onnx_shape]
    if len(dims) != 4:
        raise ScasegError(f"the ONNX input has shape {tuple(dims)}; a SCASeg model takes (B, 3, H, W)")
    if -1 not in dims:
        if profile is not None and any(tuple(dims) != s for s in profile):
            raise ScasegError(f"this ONNX has the static input shape {tuple(dims)}, so the engine cannot take the "
                              f"profile {profile[0]}..{profile[2]}: re-export with --dynamic to build for a range")
        return None
    if profile is not None:
        for shape in profile:
            for axis, (want, got) in enumerate(zip(dims, shape)):
                if want != -1 and want != got:
                    raise ScasegError(f"axis {axis} of the ONNX input is fixed at {want}, but the profile asks "
                                      f"for {got}")
        return profile
    size = info.input_size
    fill = {0: int(info.batch), 1: 3}
    if size is not None:
        fill.update({2: int(size[0]), 3: int(size[1])})
    sized = [d if d != -1 else fill.get(axis, -1) for axis, d in enumerate(dims)]
    if -1 in sized:
        raise ScasegError("the ONNX input has dynamic axes the metadata does not size: pass --min-shape, "
                          "--opt-shape and --max-shape")
    static = (sized[0], sized[1], sized[2], sized[3])
    return static, static, static


# --- the ONNX side ----------------------------------------------------------------------------------------------


def load_onnx(onnx_path: str) -> tuple[onnx.ModelProto, ModelInfo]:
    """Read the ONNX file and its scaseg metadata; one sentence for a missing, broken or foreign file."""
    path = Path(onnx_path)
    if not path.is_file():
        raise ScasegError(f"ONNX model not found: {onnx_path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ValueError... for a damaged file
        raise ScasegError(f"cannot read the ONNX model {onnx_path}: {str(exc).splitlines()[0] if str(exc) else exc}"
                          ) from None
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ScasegError(f"the ONNX model {onnx_path} has no scaseg metadata; export it with scaseg-export")
    return model, ModelInfo.from_json(props[METADATA_KEY])


def graph_precision(model: onnx.ModelProto) -> str:
    """What the graph carries: "int8" (Q/DQ nodes), "fp16" (float16 tensors) or "fp32"."""
    graph = model.graph
    ops = [n.op_type for n in graph.node] + [n.op_type for f in model.functions for n in f.node]
    fp16 = onnx.TensorProto.FLOAT16
    half = any(t.data_type == fp16 for t in graph.initializer) or any(
        v.type.tensor_type.elem_type == fp16 for v in list(graph.value_info) + list(graph.input) + list(graph.output)
    ) or any(n.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in n.attribute) for n in graph.node)
    return trt_compat.onnx_precision(ops, half)


def strip_attention_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The scaseg::StripCrossAttention call nodes of the main graph."""
    return [n for n in model.graph.node if n.domain == SCA_DOMAIN and n.op_type == SCA_OP]


def tag_for_plugin(model: onnx.ModelProto) -> int:
    """Mark strip-attention nodes so the ONNX parser imports them as the Python plugin; returns how many.

    The parser (TensorRT >= 10.7) looks a node up by op_type and the ``plugin_namespace``/``plugin_version``
    attributes; with ``plugin_namespace`` set it prefers a registered plugin over the node's local function.
    """
    nodes = strip_attention_nodes(model)
    for node in nodes:
        present = {a.name for a in node.attribute}
        if "plugin_namespace" not in present:
            node.attribute.append(onnx.helper.make_attribute("plugin_namespace", SCA_DOMAIN))
        if "plugin_version" not in present:
            node.attribute.append(onnx.helper.make_attribute("plugin_version", "1"))
    return len(nodes)


def inline_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every local-function call by its body (TensorRT 8.5's parser has no local-function support)."""
    if not model.functions:
        return model
    try:
        from onnx import inliner
    except ImportError:
        raise ScasegError(f"inlining the strip-attention function needs onnx >= 1.16 (this is {onnx.__version__}): "
                          "upgrade onnx, or export with --sca-op decomposed") from None
    return inliner.inline_local_functions(model)


def input_shape(model: onnx.ModelProto) -> tuple[str, tuple[int, ...]]:
    """Name and shape (-1 for symbolic axes) of the single graph input that is not an initializer."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in inits]
    if len(inputs) != 1:
        raise ScasegError(f"a SCASeg ONNX has one input, this one has {[v.name for v in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    return inputs[0].name, tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in dims)


def prepare_for_parser(model: onnx.ModelProto, version: trt_compat.Version) -> tuple[onnx.ModelProto, bool]:
    """Tag strip-attention nodes for the Python plugin (TensorRT >= 10.7, plugin registrable) or inline them.

    Returns the model the parser should see and whether the plugin is used.
    """
    if strip_attention_nodes(model) and trt_compat.has_python_plugins(version):
        from scaseg.runtime import trt_plugin

        try:
            trt_plugin.register_strip_attention()
            return model, tag_for_plugin(model) > 0
        except ScasegError as exc:  # e.g. no CuPy: the function body still builds, just without the plugin
            print(f"note: building without the strip-attention plugin ({exc}); its ONNX function is inlined",
                  file=sys.stderr)
    return inline_functions(model), False


def network_flags(trt: Any, version: trt_compat.Version, plan: trt_compat.PrecisionPlan) -> int:
    """create_network flags: EXPLICIT_BATCH before TensorRT 10, STRONGLY_TYPED on 10 when the plan wants it."""
    flags = 0
    if trt_compat.needs_explicit_batch_flag(version):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if plan.strongly_typed and version[0] < 11:  # 11 is strongly typed whatever the flags say
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


# --- TensorRT ---------------------------------------------------------------------------------------------------


def _progress_monitor(trt: Any) -> Any:
    """A tqdm bar per build phase through IProgressMonitor (TensorRT >= 10); None where it does not exist."""
    if not hasattr(trt, "IProgressMonitor"):
        return None
    from tqdm import tqdm

    class TqdmProgress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, Any] = {}

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
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

    return TqdmProgress()


def _parse(trt: Any, network: Any, logger: Any, model: onnx.ModelProto, onnx_path: str) -> None:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString(), str(Path(onnx_path).resolve())):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        first = errors[0].desc() if errors else "no detail"
        raise ScasegError(f"TensorRT's ONNX parser rejected {onnx_path}: {first}"
                          f"{f' (and {len(errors) - 1} more)' if len(errors) > 1 else ''}")


def _gpu_facts(device: int = 0) -> tuple[str, tuple[int, int]]:
    from scaseg.runtime.cuda import load_cuda, require_device

    cuda = load_cuda()
    require_device(cuda, device)
    return cuda.device_name(device), cuda.compute_capability(device)


def _configure(trt: Any, builder: Any, plan: trt_compat.PrecisionPlan, workspace_gib: float, input_name: str,
               shapes: Optional[tuple[Shape, Shape, Shape]], dla_core: Optional[int], gpu_fallback: bool,
               timing_cache: Optional[str]) -> Any:
    """Builder config: workspace, precision flags, profile, DLA, timing cache, progress bars."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if shapes is not None:
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, trt.Dims(list(shapes[0])), trt.Dims(list(shapes[1])), trt.Dims(list(shapes[2])))
        config.add_optimization_profile(profile)
    if dla_core is not None:
        cores = builder.num_DLA_cores
        if int(dla_core) >= cores:
            raise ScasegError(f"DLA core {dla_core} does not exist: this device has {cores} DLA core(s) "
                              "(Jetson Xavier and Orin modules have DLA, except Orin Nano)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        if gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if timing_cache is not None:
        cache_file = Path(timing_cache)
        cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
        config.set_timing_cache(cache, False)  # ignore_mismatch=False: a cache from another GPU is not reused
    monitor = _progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor
    return config


def _write_outputs(engine_path: str, info: ModelInfo, serialized: Any, timing_cache: Optional[str],
                   config: Any) -> Path:
    """Side file and plan, each atomically, the plan renamed first; then the timing cache. Returns the side file."""
    side = trt_compat.side_file(engine_path)
    with atomic_path(side) as side_tmp:
        side_tmp.write_text(json.dumps(info.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        with atomic_path(engine_path) as engine_tmp:
            engine_tmp.write_bytes(memoryview(serialized))
    if timing_cache is not None:
        with atomic_path(timing_cache) as cache_tmp:
            cache_tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return side


def build_engine(onnx_path: str, engine_path: str, *, precision: str = "fp32",  # fp32|fp16|int8 (int8 = Q/DQ ONNX)
                 workspace_gib: float = 4.0, timing_cache: str | None = None,
                 min_shape: Any = None, opt_shape: Any = None, max_shape: Any = None,  # (B, 3, H, W), dynamic inputs
                 dla_core: int | None = None, gpu_fallback: bool = True, verbose: bool = False) -> dict:
    """Build ``engine_path`` (+ ``<engine_path>.json``) from ``onnx_path`` with TensorRT; returns a summary.

    Raises ScasegError for bad options, a foreign or unreadable ONNX, a missing TensorRT, a precision this
    TensorRT cannot build from this ONNX, or a failed build; nothing is written then.
    """
    check_options(precision, workspace_gib, dla_core)
    profile = check_profile(min_shape, opt_shape, max_shape)
    trt_version_text = trt_compat.require_tensorrt("building an engine")
    model, info = load_onnx(onnx_path)
    check_writable_dir(engine_path)  # before minutes of building, not after
    if timing_cache is not None:
        check_writable_dir(timing_cache)
    import tensorrt as trt

    version = trt_compat.parse_version(trt_version_text)
    plan = trt_compat.precision_plan(version, precision, graph_precision(model))
    input_name, onnx_shape = input_shape(model)
    shapes = resolve_profile(onnx_shape, info, profile)
    gpu_name, capability = _gpu_facts(0)

    model, use_plugin = prepare_for_parser(model, version)
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, version, plan))
    _parse(trt, network, logger, model, onnx_path)

    config = _configure(trt, builder, plan, workspace_gib, input_name, shapes, dla_core, gpu_fallback, timing_cache)
    if not hasattr(config, "progress_monitor"):
        print(f"building the engine with TensorRT {trt_version_text} (no progress report before TensorRT 10; "
              "this can take minutes)", file=sys.stderr)

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise ScasegError(f"TensorRT could not build an engine from {onnx_path}; its messages above say why "
                          "(rerun with --verbose for details)")
    io_dtypes = {}
    for tensor in [network.get_input(i) for i in range(network.num_inputs)] + [
            network.get_output(i) for i in range(network.num_outputs)]:
        io_dtypes[tensor.name] = np.dtype(trt.nptype(tensor.dtype)).name

    facts = {
        "version": trt_version_text, "gpu": gpu_name, "compute_capability": list(capability),
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
                               "extra": {**info.extra, trt_compat.FACTS_KEY: facts}}
    if shapes is not None:
        lo, opt, hi = shapes
        changes.update(batch=int(opt[0]), dynamic_batch=lo[0] != hi[0], dynamic_spatial=lo[2:] != hi[2:])
        if lo[2:] == hi[2:]:
            changes["input_size"] = (int(opt[2]), int(opt[3]))
    return info.replace(**changes)
