"""How each strip-attention core goes into the ONNX graph: plain ops (``decomposed``), one ONNX local function
(``function``), or the linear-time grid evaluation in plain ops (``grid``).

``function`` mode: every ``StripAttentionCore`` call becomes a node ``scaseg::StripCrossAttention(q, k, v)`` with a
float attribute ``scale``, and the model carries the ONNX local function of that name, so ONNX Runtime runs the file
as is (it inlines the function) and TensorRT >= 10.7 swaps in a registered plugin of the same name (export/trt_plugin).

``grid`` mode: every core becomes ``grid_attention`` (scaseg.models.decoder): a G x M softmax on G points of the
query range, then a Gather and a lerp per query; no N x M matrix, so no tiling. An approximation whose error is set by
the logit spread over G: ``measure_spread`` and ``grid_points_for`` below are the exporter's rule for choosing G.

Bounded memory: the queries are cut into tiles along N, so one tile's N/tiles x M attention matrix is the most that is
ever held. Each row's softmax only sees its own row, so tiling changes nothing but memory (and float rounding order).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Optional, Union

import onnx
import torch
from onnx import helper
from torch import Tensor, nn

from scaseg.errors import ScasegError
from scaseg.metadata import SCA_DOMAIN, SCA_DOMAIN_VERSION, SCA_OP
from scaseg.metadata import SCA_OPS as SCA_MODES  # the metadata's sca_op words
from scaseg.models.decoder import StripAttentionCore, grid_attention, strip_attention

# "auto" tiling keeps one tile's attention matrix (batch * heads * rows * M float32 values) under this budget.
AUTO_TILE_BYTES = 64 * 2**20

QueryChunk = Union[int, str, None]  # rows per tile, "auto", or None / 0 for no tiling


def plan_tiles(n: int, m: int, heads: int, batch: int, query_chunk: QueryChunk) -> int:
    """How many query tiles one attention of N queries x M keys is cut into (1 = untiled)."""
    if query_chunk is None or query_chunk == 0 or n <= 1:
        return 1
    if query_chunk == "auto":
        rows = max(1, AUTO_TILE_BYTES // (4 * max(1, batch) * max(1, heads) * max(1, m)))
    else:
        rows = int(query_chunk)
    return max(1, math.ceil(n / rows))


def tiled(attend: Callable[[Tensor, Tensor, Tensor], Tensor], q: Tensor, k: Tensor, v: Tensor, tiles: int) -> Tensor:
    """attend(q, k, v) with the queries (dim 2) cut into ``tiles`` slices of ceil(N / tiles) rows, then concatenated.

    The slice bounds are computed from q's runtime size, so a graph traced with dynamic spatial axes keeps the same
    number of tiles at any size (each tile grows with the input) instead of baking the export size in.
    """
    if tiles <= 1:
        return attend(q, k, v)
    n = q.shape[2]
    step = (n + tiles - 1) // tiles
    return torch.cat([attend(q[:, :, i * step : (i + 1) * step], k, v) for i in range(tiles)], dim=2)


class _FunctionNode(torch.autograd.Function):
    """Runs the attention in PyTorch while tracing; the ONNX exporter records it as one scaseg node."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        return strip_attention(q, k, v, scale)

    @staticmethod
    def symbolic(g: Any, q: Any, k: Any, v: Any, scale: float) -> Any:
        out = g.op(f"{SCA_DOMAIN}::{SCA_OP}", q, k, v, scale_f=float(scale))
        # The exporter cannot infer a custom op's output; say it is float like v, shape (B, h, N, dv).
        q_sizes, v_sizes = q.type().varyingSizes(), v.type().varyingSizes()
        if q_sizes is not None and v_sizes is not None and len(q_sizes) == 4 and len(v_sizes) == 4:
            out.setType(v.type().with_sizes([q_sizes[0], q_sizes[1], q_sizes[2], v_sizes[3]]))
        else:
            out.setType(v.type())
        return out


def _core_forward(core: StripAttentionCore, sca_op: str, query_chunk: QueryChunk,
                  grid_points: Optional[int] = None) -> Callable[..., Tensor]:
    if sca_op == "grid":
        points = int(grid_points or 0)
        return lambda q, k, v: grid_attention(q, k, v, core.scale, points)

    def attend_plain(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return strip_attention(q, k, v, core.scale)

    def attend_node(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return _FunctionNode.apply(q, k, v, core.scale)  # type: ignore[no-any-return]

    attend = attend_node if sca_op == "function" else attend_plain

    def forward(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, h, n, _ = (int(s) for s in q.shape)
        tiles = plan_tiles(n, int(k.shape[2]), h, b, query_chunk)
        return tiled(attend, q, k, v, tiles)

    return forward


@contextlib.contextmanager
def export_attention(model: nn.Module, sca_op: str, query_chunk: QueryChunk,
                     grid_points: Optional[int] = None) -> Iterator[int]:
    """Within the block, every StripAttentionCore of ``model`` exports as ``sca_op`` (query tiling, or ``grid_points``
    for grid); yields the count."""
    if sca_op not in SCA_MODES:
        raise ValueError(f"sca_op must be one of {SCA_MODES}, got {sca_op!r}")
    if sca_op == "grid" and (grid_points is None or grid_points < 2):
        raise ValueError(f"sca_op grid needs grid_points >= 2, got {grid_points}")
    cores = [m for m in model.modules() if isinstance(m, StripAttentionCore)]
    for core in cores:
        core.forward = _core_forward(core, sca_op, query_chunk, grid_points)  # type: ignore[method-assign]
    try:
        yield len(cores)
    finally:
        for core in cores:
            del core.forward  # back to the class's method


def function_proto(opset: int) -> onnx.FunctionProto:
    """The ONNX local function scaseg::StripCrossAttention(q, k, v) -> out, attribute ``scale`` (float).

    out = Softmax(scale * q @ k^T, axis=-1) @ v for q (B, h, N, dq), k (B, h, M, dq), v (B, h, M, dv).
    """
    scale_ref = helper.make_attribute_ref("value_float", onnx.AttributeProto.FLOAT)
    scale_ref.ref_attr_name = "scale"
    scale_node = helper.make_node("Constant", [], ["scale_value"])
    scale_node.attribute.append(scale_ref)
    nodes = [
        scale_node,
        helper.make_node("Mul", ["q", "scale_value"], ["q_scaled"]),
        helper.make_node("Transpose", ["k"], ["k_t"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q_scaled", "k_t"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["weights"], axis=-1),
        helper.make_node("MatMul", ["weights", "v"], ["out"]),
    ]
    return helper.make_function(
        SCA_DOMAIN, SCA_OP, ["q", "k", "v"], ["out"], nodes,
        [helper.make_opsetid("", opset)], attributes=["scale"],
        doc_string="Strip cross-attention: Softmax(scale * q @ k^T) @ v (see scaseg docs/export.md).",
    )


def attach_function(model: onnx.ModelProto) -> int:
    """Add the StripCrossAttention function definition to a model that uses the node; returns how many nodes use it."""
    uses = sum(1 for n in model.graph.node if n.domain == SCA_DOMAIN and n.op_type == SCA_OP)
    if not uses:
        return 0
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    del model.functions[:]
    model.functions.append(function_proto(opset))
    if not any(o.domain == SCA_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(SCA_DOMAIN, SCA_DOMAIN_VERSION))
    return uses


def rows_per_tile(query_chunk: Optional[QueryChunk]) -> str:
    """Human text for a query_chunk setting (for reports and metadata)."""
    if query_chunk in (None, 0):
        return "off"
    return "auto" if query_chunk == "auto" else f"{int(query_chunk)} rows"


# The grid rule (benchmarks/bench_grid_accuracy.py measured it; docs/export.md has the figures): G points keep labels
# agreeing with exact attention on >= 99.99% of pixels while spread / (G - 1) <= SPREAD_PER_STEP, where spread is the
# largest (max a - min a) * (max k - min k) of any head on the parity images. Between the grid points of one step, the
# logits a * k_j of a head move by at most that much, so it bounds how sharply the softmax can turn inside one step.
SPREAD_PER_STEP = 0.25
RULE_MIN_POINTS = 64  # the least the rule picks: below it the table is too small to matter for speed
MAX_GRID_POINTS = 4096  # beyond it the G x M table costs about what the exact N x M softmax does at common sizes


def measure_spread(model: nn.Module, batches: list[Tensor]) -> float:
    """The largest logit spread (max a - min a) * (max k - min k) of any head of any strip core over ``batches``."""
    spreads: list[float] = []

    def hook(core: nn.Module, args: tuple[Tensor, ...]) -> None:
        q, k = args[0], args[1]
        a = q * core.scale  # type: ignore[operator]
        a_range = a.amax(dim=2) - a.amin(dim=2)  # B, h, dq
        k_range = k.amax(dim=2) - k.amin(dim=2)
        spreads.append(float((a_range * k_range).max()))

    cores = [m for m in model.modules() if isinstance(m, StripAttentionCore)]
    handles = [c.register_forward_pre_hook(hook) for c in cores]
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for h in handles:
            h.remove()
    return max(spreads, default=0.0)


def grid_points_needed(spread: float) -> int:
    """The fewest grid points the rule allows for ``spread`` (at least RULE_MIN_POINTS)."""
    return max(RULE_MIN_POINTS, 1 + math.ceil(spread / SPREAD_PER_STEP))


def grid_points_for(spread: float, requested: Optional[int] = None) -> int:
    """G for a grid export: ``requested`` if the rule allows it, else the rule's G; ScasegError when out of reach."""
    needed = grid_points_needed(spread)
    if requested is not None:
        if requested < 2 or requested > MAX_GRID_POINTS:
            raise ScasegError(f"--grid-points must be 2 to {MAX_GRID_POINTS}, got {requested}")
        if requested < needed:
            raise ScasegError(f"--grid-points {requested} is too few for the logit spread {spread:.3g} measured on the "
                              f"parity images: labels need at least {needed} points to agree with exact attention")
        return requested
    if needed > MAX_GRID_POINTS:
        raise ScasegError(f"--sca-op grid is refused: the logit spread {spread:.3g} measured on the parity images needs "
                          f"{needed} grid points (more than {MAX_GRID_POINTS}); use --sca-op decomposed")
    return needed
