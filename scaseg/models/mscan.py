"""MSCAN (Multi-Scale Convolutional Attention Network, SegNeXt) encoders T/S/B/L.

Module names follow the official ImageNet checkpoints (``patch_embed1.proj.0``, ``block1.0.attn.proj_1``,
``block1.0.attn.spatial_gating_unit.conv0_1``, ``block1.0.layer_scale_1``, ``norm1``...), so those files load
without remapping. Normalisation inside the stages is BatchNorm (nn.SyncBatchNorm.convert_sync_batchnorm turns
it into SyncBN for multi-GPU training); the per-stage output norm is LayerNorm. Written from the paper.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from scaseg.models.layers import DropPath, DWConv, drop_path_rates


class StemConv(nn.Module):
    """Stage-1 embedding: two 3x3 stride-2 convs with BN (GELU between), stride 4 in all."""

    def __init__(self, in_chans: int, dim: int, mid: Optional[int] = None):
        super().__init__()
        mid = dim // 2 if mid is None else mid
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, mid, 3, 2, 1),
            nn.BatchNorm2d(mid),
            nn.GELU(),
            nn.Conv2d(mid, dim, 3, 2, 1),
            nn.BatchNorm2d(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class PatchEmbed(nn.Module):
    """Stages 2-4 embedding: 3x3 stride-2 conv then BN."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, 3, 2, 1)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x))


def _strip_pair(dim: int, k: int) -> tuple[nn.Conv2d, nn.Conv2d]:
    return (
        nn.Conv2d(dim, dim, (1, k), padding=(0, k // 2), groups=dim),
        nn.Conv2d(dim, dim, (k, 1), padding=(k // 2, 0), groups=dim),
    )


class MultiScaleConvAttention(nn.Module):
    """MSCA: a 5x5 depthwise conv, three strip-conv branches (1xk then kx1, k = 7, 11, 21), summed,
    mixed by a 1x1 conv, and used as a multiplicative gate on the input."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        # Three strip branches, 1xk then kx1 depthwise, k = 7, 11, 21.
        self.conv0_1, self.conv0_2 = _strip_pair(dim, 7)
        self.conv1_1, self.conv1_2 = _strip_pair(dim, 11)
        self.conv2_1, self.conv2_2 = _strip_pair(dim, 21)
        self.conv3 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        attn = self.conv0(x)
        attn = (
            attn
            + self.conv0_2(self.conv0_1(attn))
            + self.conv1_2(self.conv1_1(attn))
            + self.conv2_2(self.conv2_1(attn))
        )
        return self.conv3(attn) * x


class SpatialAttention(nn.Module):
    """1x1 conv -> GELU -> MSCA -> 1x1 conv, with an inner residual; ``inner`` (default ``dim``): the MSCA width."""

    def __init__(self, dim: int, inner: Optional[int] = None):
        super().__init__()
        inner = dim if inner is None else inner
        self.proj_1 = nn.Conv2d(dim, inner, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = MultiScaleConvAttention(inner)
        self.proj_2 = nn.Conv2d(inner, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))


class ConvFFN(nn.Module):
    """1x1 expand -> 3x3 depthwise -> GELU -> 1x1 project, on (B, C, H, W)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.dwconv(self.fc1(x))))))


class MSCANBlock(nn.Module):
    """x + ls1 * attn(BN(x)), then x + ls2 * ffn(BN(x)); layer scales start at 1e-2."""

    def __init__(self, dim: int, mlp_ratio: float, drop: float = 0.0, drop_path: float = 0.0,
                 attn_dim: Optional[int] = None, hidden: Optional[int] = None):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim, attn_dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio) if hidden is None else hidden, drop)
        self.layer_scale_1 = nn.Parameter(1e-2 * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(1e-2 * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


class MSCAN(nn.Module):
    """Four stages of conv embedding + MSCAN blocks; returns maps at strides 4, 8, 16, 32.

    ``widths`` (a pruned model's, scaseg.models.widths): ``stem`` (the stem's middle width), ``attn`` and ``mlp``
    (per stage, per block: the MSCA width and the FFN hidden width); ``embed_dims`` then holds the pruned stage widths.
    """

    def __init__(
        self,
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        depths: Sequence[int] = (3, 3, 12, 3),
        mlp_ratios: Sequence[float] = (8, 8, 4, 4),
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        widths: Optional[Mapping[str, Any]] = None,
    ):
        super().__init__()
        self.embed_dims = tuple(embed_dims)
        dpr = drop_path_rates(drop_path_rate, list(depths))
        cur = 0
        w: Mapping[str, Any] = widths or {}
        for i in range(4):
            embed = (StemConv(in_chans, embed_dims[0], w.get("stem")) if i == 0
                     else PatchEmbed(embed_dims[i - 1], embed_dims[i]))
            setattr(self, f"patch_embed{i + 1}", embed)
            blocks = [MSCANBlock(embed_dims[i], mlp_ratios[i], drop_rate, dpr[cur + j],
                                 w["attn"][i][j] if w else None, w["mlp"][i][j] if w else None)
                      for j in range(depths[i])]
            setattr(self, f"block{i + 1}", nn.ModuleList(blocks))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i]))
            cur += depths[i]

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x)
            # Stage output norm is a LayerNorm over channels (upstream applies it on tokens).
            x = getattr(self, f"norm{i}")(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs
