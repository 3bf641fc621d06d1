"""The SCASeg decoder head: strip cross-attention, Cross-Layer Blocks, pooled key/value pyramid, fusion.

Reconstructed from the paper's abstract (no official code); every choice the abstract leaves open is
listed in docs/model.md. Shapes: encoder features F_1..F_4 at strides 4, 8, 16, 32 with channels C_1..C_4.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_KINDS = ("strip", "vanilla")
MIN_GRID_POINTS = 2  # a grid needs both ends of the query range


def strip_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: float,
    query_chunk: Optional[int] = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """q (B, h, N, dq), k (B, h, M, dq), v (B, h, M, dv) -> (B, h, N, dv): softmax over M of scale * q @ k^T, times v.

    With ``query_chunk``, queries are processed in slices of that many rows: the N x M attention matrix is
    never held whole (bounded memory), and each row's softmax is unchanged, so the result is the same.
    ``dropout_p`` drops attention weights (training only; callers pass 0 in eval).
    """
    if query_chunk is None or query_chunk <= 0 or q.shape[2] <= query_chunk:
        return _attend(q, k, v, scale, dropout_p)
    return torch.cat([_attend(qc, k, v, scale, dropout_p) for qc in q.split(query_chunk, dim=2)], dim=2)


def _attend(q: Tensor, k: Tensor, v: Tensor, scale: float, dropout_p: float) -> Tensor:
    attn = (q * scale) @ k.transpose(-2, -1)  # B, h, N, M
    attn = attn.softmax(dim=-1)
    if dropout_p > 0.0:
        attn = F.dropout(attn, p=dropout_p, training=True)
    return attn @ v  # B, h, N, dv


def grid_attention(q: Tensor, k: Tensor, v: Tensor, scale: float, points: int) -> Tensor:
    """Strip attention (dq = 1) in O((N + M) G dv): exact on ``points`` values of a = scale * q, interpolated between.

    With one query channel, row i of the output is a smooth function of the scalar a_i:
    g(a) = softmax_j(a k_j) @ v. It is evaluated exactly on G points spread evenly over [min a, max a] of this input
    (per sample and head; a G x M softmax, no N x M matrix), and each query takes the linear interpolation between
    its two neighbouring points. An inference approximation: its error grows with (max a - min a) * (max k - min k)
    over G (docs/export.md has the measured rule). All queries equal (zero spread) is exact: they all sit on point 0.
    """
    if q.shape[-1] != 1 or k.shape[-1] != 1:
        raise ValueError(f"grid attention needs one query/key channel per head (strip attention), got {q.shape[-1]}")
    if points < MIN_GRID_POINTS:
        raise ValueError(f"grid attention needs at least {MIN_GRID_POINTS} points, got {points}")
    b, h, _, dv = q.shape[0], q.shape[1], q.shape[2], v.shape[-1]
    a = q * scale  # B, h, N, 1
    lo = a.amin(dim=2, keepdim=True)  # B, h, 1, 1
    span = a.amax(dim=2, keepdim=True) - lo
    steps = torch.linspace(0.0, 1.0, points, dtype=a.dtype, device=a.device).reshape(1, 1, points, 1)
    grid = lo + span * steps  # B, h, G, 1
    table = (grid @ k.transpose(-2, -1)).softmax(dim=-1) @ v  # B, h, G, dv
    # Zero spread: divide by 1 instead, so every query lands on point 0 (computed exactly) with weight 0 on point 1.
    pos = (a - lo) / torch.where(span > 0, span, torch.ones_like(span)) * (points - 1)  # B, h, N, 1 in [0, G-1]
    left = pos.floor().clamp(0, points - 2)
    frac = pos - left
    # One Gather on the flattened (B*h*G, dv) table with per-(sample, head) offsets: indices are (B, h, N), not N x dv.
    offsets = (torch.arange(b * h, device=a.device) * points).reshape(b, h, 1)
    index = left.squeeze(-1).long() + offsets  # B, h, N
    flat = table.reshape(-1, dv)
    below, above = flat[index], flat[index + 1]  # B, h, N, dv
    return below + frac * (above - below)


class StripAttentionCore(nn.Module):
    """Parameter-free attention kernel: the unit the exporter swaps for an ONNX function or a TensorRT plugin.

    ``grid_points`` (inference only): evaluate strip attention with ``grid_attention`` on that many points;
    training, and a core with None, use the exact softmax.
    """

    def __init__(self, scale: float, query_chunk: Optional[int] = None, attn_drop: float = 0.0,
                 grid_points: Optional[int] = None):
        super().__init__()
        self.scale = float(scale)
        self.query_chunk = query_chunk
        self.attn_drop = float(attn_drop)
        self.grid_points = grid_points

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self.grid_points and not self.training:
            return grid_attention(q, k, v, self.scale, self.grid_points)
        dropout_p = self.attn_drop if self.training else 0.0
        return strip_attention(q, k, v, self.scale, self.query_chunk, dropout_p)

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}, query_chunk={self.query_chunk}, grid_points={self.grid_points}"


class StripCrossAttention(nn.Module):
    """Cross-attention from ``dim``-wide queries to ``kv_dim``-wide keys/values.

    ``strip``: the query and the key are compressed to ONE channel per head, so the logits of a head are the
    outer product of two vectors; the value keeps its full width. ``vanilla``: q and k keep ``dim`` channels
    (dim // heads per head), for the ablation and to measure what the strip form saves. A pruned model narrows
    the value to ``value_dim`` channels (a multiple of the heads) and keeps the scale of its unpruned ``scale_dim``.
    """

    def __init__(self, dim: int, kv_dim: int, num_heads: int, attention: str = "strip", attn_drop: float = 0.0,
                 proj_drop: float = 0.0, value_dim: Optional[int] = None, scale_dim: Optional[int] = None):
        super().__init__()
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
        if dim % num_heads and attention != "strip":  # vanilla q and k split dim over the heads
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.attention = attention
        qk_dim = num_heads if attention == "strip" else dim
        self.q = nn.Linear(dim, qk_dim)
        self.k = nn.Linear(kv_dim, qk_dim)
        value_dim = dim if value_dim is None else value_dim
        if value_dim % num_heads:
            raise ValueError(f"value width {value_dim} is not divisible by num_heads {num_heads}")
        self.v = nn.Linear(kv_dim, value_dim)
        self.proj = nn.Linear(value_dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # The scale uses the full per-head width even for strip q/k (the paper's (C_i/heads)^-0.5).
        self.core = StripAttentionCore(((dim if scale_dim is None else scale_dim) // num_heads) ** -0.5,
                                       attn_drop=attn_drop)

    def forward(self, x: Tensor, kv: Tensor) -> Tensor:
        """x (B, N, dim) queries, kv (B, M, kv_dim) keys/values -> (B, N, dim)."""
        B, N, _ = x.shape
        M = kv.shape[1]
        h = self.num_heads
        q = self.q(x).reshape(B, N, h, -1).transpose(1, 2)  # B, h, N, dq (dq = 1 for strip)
        k = self.k(kv).reshape(B, M, h, -1).transpose(1, 2)  # B, h, M, dq
        v = self.v(kv).reshape(B, M, h, -1).transpose(1, 2)  # B, h, M, dim // h
        out = self.core(q, k, v)  # B, h, N, value_dim // h
        out = out.transpose(1, 2).reshape(B, N, self.proj.in_features)
        return self.proj_drop(self.proj(out))


class LocalPerception(nn.Module):
    """LPM, a convolutional feed-forward: 1x1 expand -> 3x3 depthwise -> GELU -> 1x1 project, on (B, C, H, W)."""

    def __init__(self, dim: int, ratio: int = 4, drop: float = 0.0, hidden: Optional[int] = None):
        super().__init__()
        hidden = dim * ratio if hidden is None else hidden
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.act(self.dwconv(self.fc1(x)))))


def _layer_norm_map(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    # LayerNorm over channels of a (B, C, H, W) map, through the token layout LayerNorm expects.
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class CrossLayerBlock(nn.Module):
    """CLB: Z = F + SCA(LN(F), LN(M)); D = Z + LPM(LN(Z)). ``lpm=False`` drops the second residual."""

    def __init__(self, dim: int, kv_dim: int, num_heads: int, attention: str = "strip", lpm: bool = True,
                 lpm_ratio: int = 4, attn_drop: float = 0.0, drop: float = 0.0, value_dim: Optional[int] = None,
                 lpm_hidden: Optional[int] = None, scale_dim: Optional[int] = None):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(kv_dim)
        self.attn = StripCrossAttention(dim, kv_dim, num_heads, attention, attn_drop, drop, value_dim, scale_dim)
        self.norm_lpm = nn.LayerNorm(dim) if lpm else None
        self.lpm = LocalPerception(dim, lpm_ratio, drop, lpm_hidden) if lpm else None

    def forward(self, feat: Tensor, memory: Tensor) -> Tensor:
        """feat (B, C, H, W) queries, memory (B, Cm, h, w) keys/values -> (B, C, H, W)."""
        B, C, H, W = feat.shape
        x = feat.flatten(2).transpose(1, 2)  # B, HW, C
        kv = self.norm_kv(memory.flatten(2).transpose(1, 2))  # B, hw, Cm
        x = x + self.attn(self.norm_q(x), kv)
        z = x.transpose(1, 2).reshape(B, C, H, W)
        if self.lpm is not None and self.norm_lpm is not None:
            z = z + self.lpm(_layer_norm_map(self.norm_lpm, z))
        return z


def pool_to_grid(x: Tensor, ratio: int) -> Tensor:
    """Average-pool (B, C, H, W) by ``ratio`` with ceil semantics: output ceil(H/ratio) x ceil(W/ratio).

    A partial window at the bottom/right edge averages only the pixels it covers (PyTorch's ceil_mode).
    Written as zero-pad to a multiple, pool, and divide by the pooled valid-pixel mask, because ONNX
    AveragePool with ceil_mode has disagreed with PyTorch on partial windows across runtimes; Pad,
    AveragePool (no ceil) and Div mean the same thing everywhere.
    """
    if ratio == 1:
        return x
    H, W = x.shape[-2:]
    pad_h = (ratio - H % ratio) % ratio
    pad_w = (ratio - W % ratio) % ratio
    if isinstance(pad_h, int) and isinstance(pad_w, int) and pad_h == 0 and pad_w == 0:
        return F.avg_pool2d(x, ratio, ratio)
    pooled = F.avg_pool2d(F.pad(x, (0, pad_w, 0, pad_h)), ratio, ratio)
    valid = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), (0, pad_w, 0, pad_h)), ratio, ratio)
    return pooled / valid


class GridPool(nn.Module):
    """rho: bring a stride-s map to the stride-32 grid (average pool by 32/s, then 1x1 conv); identity at s = 32."""

    def __init__(self, dim: int, ratio: int, out: Optional[int] = None):
        super().__init__()
        self.ratio = ratio
        self.proj = nn.Conv2d(dim, dim if out is None else out, 1) if ratio > 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(pool_to_grid(x, self.ratio))


class SCASegHead(nn.Module):
    """The SCASeg decoder: stage 4 down to 1, D_i = CLB_i(F_i, M_i), then fuse D_1..D_4 and classify at stride 4.

    M_i = Cat[rho(F_1)..rho(F_i), rho(D_{i+1})..rho(D_4)] on the stride-32 grid, C_1+..+C_4 channels.
    ``widths`` (a pruned model's, scaseg.models.widths): the rho output widths (``pool_enc`` of stages 1-3,
    ``pool_dec`` of stages 2-3; stage 4's rho is the identity), so each M_i has its own width, the value and LPM
    widths per block and the fusion width ``fuse`` (then ``embed_dim``); ``scale_dims``: the unpruned stage widths
    the attention scales come from.
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        num_classes: int,
        embed_dim: int = 256,
        num_heads: Sequence[int] = (1, 2, 5, 8),
        attention: str = "strip",
        lpm: bool = True,
        lpm_ratio: int = 4,
        strides: Sequence[int] = (4, 8, 16, 32),
        dropout: float = 0.1,
        attn_drop: float = 0.0,
        widths: Optional[Mapping[str, Any]] = None,
        scale_dims: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        if len(in_dims) != 4 or len(num_heads) != 4 or len(strides) != 4:
            raise ValueError("SCASegHead expects four stages (in_dims, num_heads, strides)")
        self.in_dims = tuple(in_dims)
        self.strides = tuple(strides)
        w: Mapping[str, Any] = widths or {}
        ratios = [strides[-1] // s for s in strides]
        enc = list(w["pool_enc"]) + [in_dims[3]] if w else list(in_dims)  # stage 4 is on the grid already
        dec = [0] + list(w["pool_dec"]) + [in_dims[3]] if w else [0] + list(in_dims[1:])
        # Separate rho for encoder features and decoder outputs of a stage: they are different signals.
        self.pool_enc = nn.ModuleList([GridPool(c, r, o) for c, r, o in zip(in_dims, ratios, enc)])
        # D_1 is decoded last and feeds no later M_i, so stage 1 has no decoder-side rho (an unused module would
        # also break DDP without find_unused_parameters).
        self.pool_dec = nn.ModuleList(
            [nn.Identity()] + [GridPool(c, r, o) for c, r, o in zip(in_dims[1:], ratios[1:], dec[1:])])
        scale_dims = list(in_dims) if scale_dims is None else list(scale_dims)
        self.blocks = nn.ModuleList(
            [CrossLayerBlock(c, sum(enc[: i + 1]) + sum(dec[i + 1:]), h, attention, lpm, lpm_ratio, attn_drop,
                             value_dim=w["value"][i] if w else None, lpm_hidden=w["lpm"][i] if w and lpm else None,
                             scale_dim=scale_dims[i])
             for i, (c, h) in enumerate(zip(in_dims, num_heads))]
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(sum(in_dims), embed_dim, 1, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """feats: F_1..F_4 (B, C_i, H_i, W_i) -> logits (B, num_classes, H_1, W_1) at stride 4."""
        pooled_enc = [pool(f) for pool, f in zip(self.pool_enc, feats)]
        decoded: list[Optional[Tensor]] = [None] * 4
        pooled_dec: list[Optional[Tensor]] = [None] * 4
        for i in range(3, -1, -1):
            memory = torch.cat(pooled_enc[: i + 1] + [p for p in pooled_dec[i + 1 :] if p is not None], dim=1)
            d = self.blocks[i](feats[i], memory)
            decoded[i] = d
            if i > 0:
                pooled_dec[i] = self.pool_dec[i](d)
        size = feats[0].shape[-2:]
        ups = [decoded[0]] + [
            F.interpolate(d, size=size, mode="bilinear", align_corners=False) for d in decoded[1:] if d is not None
        ]
        x = self.fuse(torch.cat(ups, dim=1))  # type: ignore[arg-type]
        return self.classifier(self.dropout(x))


def set_query_chunk(model: nn.Module, query_chunk: Optional[int]) -> int:
    """Set ``query_chunk`` on every StripAttentionCore in ``model``; returns how many were set."""
    return _set_on_cores(model, "query_chunk", query_chunk)


def _set_on_cores(model: nn.Module, name: str, value: Optional[int]) -> int:
    """Set attribute ``name`` on every StripAttentionCore of ``model``; returns how many."""
    cores = [m for m in model.modules() if isinstance(m, StripAttentionCore)]
    for core in cores:
        setattr(core, name, value)
    return len(cores)


def set_grid_points(model: nn.Module, points: Optional[int]) -> int:
    """Evaluate every StripAttentionCore of ``model`` on a grid of ``points`` in eval mode (None: exact); returns how many.

    Raises ValueError for a model with vanilla attention (the grid needs one query/key channel per head).
    """
    if points is not None and points < MIN_GRID_POINTS:
        raise ValueError(f"grid attention needs at least {MIN_GRID_POINTS} points, got {points}")
    if points is not None and any(isinstance(m, StripCrossAttention) and m.attention != "strip" for m in model.modules()):
        raise ValueError("grid attention needs strip attention (one query/key channel per head), not vanilla")
    return _set_on_cores(model, "grid_points", points)


def init_decoder_weights(module: nn.Module) -> None:
    """timm/SegFormer-style init: truncated-normal linears, unit LayerNorm/BatchNorm, fan-out convs."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, SCASegHead):
            # Small classifier weights start every class near equal probability (as mmseg's conv_seg init).
            nn.init.normal_(m.classifier.weight, 0.0, 0.01)
            if m.classifier.bias is not None:
                nn.init.zeros_(m.classifier.bias)
