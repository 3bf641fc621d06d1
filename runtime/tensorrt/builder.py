"""Build a TensorRT engine from an exported ONNX file (``scaseg-export MODEL.onnx --format engine``), torch-free.

Executed in CI with TensorRT-RTX (its builder needs no GPU). The standard-TensorRT branches (8.5 / 10.x / 11.x) are
type-checked against tensorrt-stubs only: building with standard TensorRT needs a GPU, and none was lent.

Steps, each a small function: read the ONNX and its ModelInfo -> decide the precision plan for this TensorRT
(compat.py) -> prepare the graph for the parser (tag strip-attention nodes for the Python plugin on standard
TensorRT >= 10.7, otherwise inline the ONNX local functions) -> parse -> configure (workspace, profile, compute
capabilities or timing cache and DLA, flags, DETAILED profiling) -> build -> read the layer table (which data type
each convolution/GEMM takes) -> write the plan and its ``<engine>.json`` side file atomically.

``onnx`` is imported inside the functions that need it: ``scaseg.runtime`` never imports it at import time.
"""
from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from scaseg.errors import ScasegError
from scaseg.fileio import atomic_path, check_writable_dir
from scaseg.metadata import ModelInfo, read_onnx_metadata
from scaseg.runtime.tensorrt import compat
from scaseg.runtime.tensorrt.compat import TensorRT

if TYPE_CHECKING:  # pragma: no cover
    import onnx

SCA_DOMAIN = "scaseg"  # must match export/sca.py and runtime/tensorrt/plugin.py
SCA_OP = "StripCrossAttention"
#: ONNX ops that become the convolution / matrix-multiply layers counted in ``layer_precisions``.
MATH_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
#: Layer types (TensorRT-RTX's "correlation"/"gemm", standard TensorRT's Cask* kernels) counted as conv/GEMM.
_MATH_LAYER = re.compile(r"conv|correlation|gemm|matrixmultiply", re.IGNORECASE)
#: Data type words in TensorRT's layer information -> our precision names.
_DTYPE_WORDS = (("int8", "int8"), ("half", "fp16"), ("fp16", "fp16"), ("bfloat16", "bf16"), ("bf16", "bf16"),
                ("float", "fp32"), ("fp32", "fp32"))
_WIDTH = {"int8": 0, "fp16": 1, "bf16": 1, "fp32": 2}

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
        raise ScasegError("give all three of min_shape, opt_shape and max_shape, or none of them")
    lo, opt, hi = (_as_shape(s, n) for s, n in ((min_shape, "min_shape"), (opt_shape, "opt_shape"),
                                                (max_shape, "max_shape")))
    if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise ScasegError(f"the profile must satisfy min <= opt <= max on every axis, got {lo}, {opt}, {hi}")
    return lo, opt, hi


def check_options(precision: str, workspace_gib: float, dla_core: Optional[int]) -> None:
    """One sentence for an option no TensorRT could honour."""
    if precision not in compat.PRECISIONS:
        raise ScasegError(f"unknown engine precision {precision!r}: expected one of {', '.join(compat.PRECISIONS)}")
    if not workspace_gib > 0:
        raise ScasegError(f"the workspace must be a positive number of GiB, got {workspace_gib}")
    if dla_core is not None:
        if int(dla_core) < 0:
            raise ScasegError(f"the DLA core index must be 0 or more, got {dla_core}")
        if precision == "fp32":
            raise ScasegError("DLA runs only fp16 or int8 layers: pass --precision fp16 or int8 with --dla-core")


def check_flavor_options(trt: TensorRT, compute_capabilities: Optional[Sequence[str]],
                         dla_core: Optional[int]) -> Optional[list[str]]:
    """Options that only one flavor has; returns the compute capabilities to build for (TensorRT-RTX) or None."""
    if trt.flavor == "standard":
        if compute_capabilities:
            raise ScasegError(f"--compute-capability is for TensorRT-RTX builds; {trt.label} builds for the GPU it "
                              "runs on (pass --tensorrt rtx to build for other GPUs)")
        return None
    if dla_core is not None:
        raise ScasegError(f"{trt.label} has no DLA support: build DLA engines on the Jetson with standard TensorRT")
    known = list(compat.rtx_capabilities(trt.module)) if trt.module is not None else list(compat.RTX_DEFAULT_CCS)
    return compat.check_compute_capabilities(compute_capabilities or compat.RTX_DEFAULT_CCS, known, trt.label)


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
        raise ScasegError("the ONNX input has dynamic axes the metadata does not size: pass min_shape, opt_shape "
                          "and max_shape to build_engine")
    static = (sized[0], sized[1], sized[2], sized[3])
    return static, static, static


# --- the ONNX side ----------------------------------------------------------------------------------------------


def load_onnx(onnx_path: str) -> tuple[onnx.ModelProto, ModelInfo]:
    """Read the ONNX file and its scaseg metadata; one sentence for a missing, broken or foreign file."""
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise ScasegError(f"ONNX model not found: {onnx_path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ValueError... for a damaged file
        raise ScasegError(f"cannot read the ONNX model {onnx_path}: {str(exc).splitlines()[0] if str(exc) else exc}"
                          ) from None
    if not model.graph.node:
        raise ScasegError(f"cannot read the ONNX model {onnx_path}: it holds no graph (not an ONNX file?)")
    return model, read_onnx_metadata(model.metadata_props, onnx_path)


def graph_precision(model: onnx.ModelProto) -> str:
    """What the graph carries: "int8" (Q/DQ nodes), "fp16" (float16 tensors) or "fp32"."""
    import onnx

    graph = model.graph
    ops = [n.op_type for n in graph.node] + [n.op_type for f in model.functions for n in f.node]
    fp16 = onnx.TensorProto.FLOAT16
    half = any(t.data_type == fp16 for t in graph.initializer) or any(
        v.type.tensor_type.elem_type == fp16 for v in list(graph.value_info) + list(graph.input) + list(graph.output)
    ) or any(n.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in n.attribute) for n in graph.node)
    return compat.onnx_precision(ops, half)


def strip_attention_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The scaseg::StripCrossAttention call nodes of the main graph."""
    return [n for n in model.graph.node if n.domain == SCA_DOMAIN and n.op_type == SCA_OP]


def tag_for_plugin(model: onnx.ModelProto) -> int:
    """Mark strip-attention nodes so the ONNX parser imports them as the Python plugin; returns how many.

    The parser (TensorRT >= 10.7) looks a node up by op_type and the ``plugin_namespace``/``plugin_version``
    attributes; with ``plugin_namespace`` set it prefers a registered plugin over the node's local function.
    """
    import onnx

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
    import onnx

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


def prepare_for_parser(model: onnx.ModelProto, trt: TensorRT) -> tuple[onnx.ModelProto, bool]:
    """Tag strip-attention nodes for the Python plugin (standard TensorRT >= 10.7, plugin registrable) or inline them.

    Returns the model the parser should see and whether the plugin is used.
    """
    if strip_attention_nodes(model) and compat.has_python_plugins(trt):
        from scaseg.runtime.tensorrt import plugin

        try:
            plugin.register_strip_attention()
            return model, tag_for_plugin(model) > 0
        except ScasegError as exc:  # e.g. no CuPy: the function body still builds, just without the plugin
            print(f"note: building without the strip-attention plugin ({exc}); its ONNX function is inlined",
                  file=sys.stderr)
    return inline_functions(model), False


def requested_precisions(model: onnx.ModelProto) -> dict[str, str]:
    """ONNX conv/GEMM node name -> the data type the file asks its input to have ("int8", "fp16" or "fp32").

    int8: the data input comes from a DequantizeLinear (a Q/DQ pair in front); fp16: the input tensor is float16
    (after ONNX shape inference); otherwise fp32. Local functions must be inlined first.
    """
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a graph shape inference cannot follow: types stay unknown, i.e. fp32 unless Q/DQ
        inferred = model
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(graph.value_info) + list(graph.input)}
    types.update({t.name: t.data_type for t in graph.initializer})
    dequantized = {out for n in graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    asked = {}
    for node in graph.node:
        if node.op_type not in MATH_OPS or not node.input:
            continue
        name = node.name or node.output[0]
        if node.input[0] in dequantized:
            asked[name] = "int8"
        elif types.get(node.input[0]) == onnx.TensorProto.FLOAT16:
            asked[name] = "fp16"
        else:
            asked[name] = "fp32"
    return asked


# --- layer information ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One layer of a built engine: its name, type, the data type of its first input, the ONNX nodes it came from."""

    name: str
    kind: str
    dtype: Optional[str]
    onnx_nodes: tuple[str, ...]

    @property
    def is_math(self) -> bool:
        return bool(_MATH_LAYER.search(self.kind))


def _dtype_word(text: str) -> Optional[str]:
    low = text.lower()
    for word, name in _DTYPE_WORDS:
        if word in low:
            return name
    return None


def _onnx_nodes(metadata: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in re.findall(r"\[ONNX Layer: ([^\]]+)\]", metadata or ""))


def layers_from_log(text: str) -> list[Layer]:
    """Parse the builder's verbose "Layers:" report (one line per layer; TensorRT-RTX with DETAILED profiling).

    Line shape: ``Name: N, LayerType: T, Inputs: [ { ..., Datatype: Half, ... } ], Constants: [ ... ], Outputs:
    [ ... ], TacticName: ..., StreamId: 0, Metadata: [ONNX Layer: a][ONNX Layer: b]``.
    """
    layers = []
    pattern = re.compile(r"^Name: (?P<name>.*?), LayerType: (?P<kind>[^,]+), Inputs: \[(?P<inputs>.*?)\], "
                         r"Constants: \[(?P<consts>.*?)\], Outputs:.*?Metadata: ?(?P<meta>.*)$")
    for line in text.splitlines():
        match = pattern.match(line.strip())
        if not match:
            continue
        dtypes = re.findall(r"Datatype: (\w+)", match.group("inputs")) or re.findall(r"Datatype: (\w+)",
                                                                                      match.group("consts"))
        layers.append(Layer(match.group("name"), match.group("kind").strip(),
                            _dtype_word(dtypes[0]) if dtypes else None, _onnx_nodes(match.group("meta"))))
    return layers


def layers_from_inspector(info: Mapping[str, Any]) -> list[Layer]:
    """Layers from IEngineInspector's JSON (standard TensorRT, DETAILED profiling): ``{"Layers": [{...}, ...]}``."""
    layers = []
    for entry in info.get("Layers", []):
        if not isinstance(entry, Mapping):  # LAYER_NAMES_ONLY gives strings: nothing to count
            continue
        inputs = entry.get("Inputs") or []
        first = inputs[0] if inputs and isinstance(inputs[0], Mapping) else {}
        dtype_text = str(first.get("Format/Datatype", first.get("Datatype", "")))
        layers.append(Layer(str(entry.get("Name", "")), str(entry.get("LayerType", "")), _dtype_word(dtype_text),
                            _onnx_nodes(str(entry.get("Metadata", "")))))
    return layers


def layer_precisions(layers: Sequence[Layer]) -> dict[str, int]:
    """Convolution and matrix-multiply layers counted by the data type of their input: {"int8", "fp16", "fp32"}."""
    counts = {"int8": 0, "fp16": 0, "fp32": 0}
    for layer in layers:
        if layer.is_math and layer.dtype is not None:
            key = "fp16" if layer.dtype == "bf16" else layer.dtype
            counts[key] = counts.get(key, 0) + 1
    return counts


def wider_than_asked(layers: Sequence[Layer], asked: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(ONNX node, type the engine runs it in, type the ONNX asks for) for conv/GEMMs that stayed wider."""
    out = []
    for layer in layers:
        if not layer.is_math or layer.dtype is None:
            continue
        for node in layer.onnx_nodes:
            want = asked.get(node)
            if want is not None and _WIDTH[layer.dtype] > _WIDTH[want]:
                out.append((node, layer.dtype, want))
                break
    return out


def precision_summary(counts: Mapping[str, int], wider: Sequence[tuple[str, str, str]], limit: int = 10) -> list[str]:
    """The lines a build prints about where its conv/GEMM layers run."""
    total = sum(counts.values())
    lines = [f"conv/GEMM layers by input type: int8 {counts.get('int8', 0)}, fp16 {counts.get('fp16', 0)}, "
             f"fp32 {counts.get('fp32', 0)} (of {total})"]
    if wider:
        lines.append(f"{len(wider)} ONNX conv/GEMM node(s) run in a wider type than the file asks for:")
        lines += [f"  - {node}: {got} (the ONNX asks for {want})" for node, got, want in wider[:limit]]
        if len(wider) > limit:
            lines.append(f"  - ... and {len(wider) - limit} more")
    else:
        lines.append("every conv/GEMM runs in the type the ONNX asks for")
    return lines


# --- TensorRT ---------------------------------------------------------------------------------------------------


def _logger(trt_module: Any, verbose: bool) -> Any:
    """An ILogger that keeps the builder's "Layers:" report and prints warnings/errors (everything with verbose)."""

    class Logger(trt_module.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt_module.ILogger.__init__(self)
            self.layer_report = ""
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if msg.startswith("Layers:"):
                self.layer_report = msg
            sev = trt_module.ILogger.Severity
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                self.errors.append(msg)
            if verbose or severity in (sev.INTERNAL_ERROR, sev.ERROR, sev.WARNING):
                print(f"[TensorRT] {msg}", file=sys.stderr)

    return Logger()


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
    flags = 1 << int(trt_module.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if compat.needs_explicit_batch_flag(
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


def _gpu_facts(device: int = 0) -> tuple[str, tuple[int, int]]:
    from scaseg.runtime.tensorrt.cuda import load_cuda, require_device

    cuda = load_cuda()
    require_device(cuda, device)
    return cuda.device_name(device), cuda.compute_capability(device)


def _configure(trt: TensorRT, builder: Any, plan: compat.PrecisionPlan, workspace_gib: float, input_name: str,
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
        members = compat.rtx_capabilities(trt.module)
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
    side = compat.side_file(engine_path)
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
    say = report or (lambda line: print(line, file=sys.stderr))
    check_options(precision, workspace_gib, dla_core)
    profile = check_profile(min_shape, opt_shape, max_shape)
    trt = compat.require_tensorrt("building an engine", tensorrt)
    ccs = check_flavor_options(trt, compute_capabilities, dla_core)
    model, info = load_onnx(onnx_path)
    check_writable_dir(engine_path)  # before minutes of building, not after
    if timing_cache is not None:
        check_writable_dir(timing_cache)
    if TYPE_CHECKING:  # type-checked against tensorrt-stubs; tensorrt_rtx has the same API here
        import tensorrt as trt_module
    else:
        trt_module = trt.module

    plan = compat.precision_plan(trt, precision, graph_precision(model))
    input_name, onnx_shape = input_shape(model)
    shapes = resolve_profile(onnx_shape, info, profile)
    gpu = None if compat.builds_without_gpu(trt) else _gpu_facts(0)

    model, use_plugin = prepare_for_parser(model, trt)
    logger = _logger(trt_module, verbose)
    builder = trt_module.Builder(logger)
    network = builder.create_network(compat.network_flags(trt_module, trt, plan))
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
                               "extra": {**info.extra, compat.FACTS_KEY: facts}}
    if shapes is not None:
        lo, opt, hi = shapes
        changes.update(batch=int(opt[0]), dynamic_batch=lo[0] != hi[0], dynamic_spatial=lo[2:] != hi[2:])
        if lo[2:] == hi[2:]:
            changes["input_size"] = (int(opt[2]), int(opt[3]))
    return info.replace(**changes)
