"""scaseg.models.mit: the MiT encoder at a tiny width: stage shapes on odd sizes, spatial-reduction attention
against a direct computation, the drop-path schedule (the variants built whole: test_model.py)."""
from __future__ import annotations

import math

import pytest
import torch

from scaseg.models.layers import DropPath
from scaseg.models.mit import EfficientAttention, MixVisionTransformer, OverlapPatchEmbed

DIMS = (8, 16, 24, 32)


def _tiny(**kwargs) -> MixVisionTransformer:
    torch.manual_seed(0)
    return MixVisionTransformer(embed_dims=DIMS, depths=(1, 2, 1, 1), num_heads=(1, 2, 3, 4), **kwargs).eval()


@pytest.mark.parametrize("size", [(64, 96), (33, 50)])
def test_four_maps_at_strides_4_8_16_32_rounded_up(size: tuple[int, int]) -> None:
    outs = _tiny()(torch.randn(2, 3, *size))
    h, w = size
    expect = [(math.ceil(h / 4), math.ceil(w / 4))]
    for _ in range(3):
        expect.append((math.ceil(expect[-1][0] / 2), math.ceil(expect[-1][1] / 2)))
    assert [tuple(o.shape) for o in outs] == [(2, d, *hw) for d, hw in zip(DIMS, expect)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_patch_embedding_returns_tokens_and_the_grid() -> None:
    tokens, h, w = OverlapPatchEmbed(3, 8, 7, 4)(torch.randn(1, 3, 33, 50))
    assert (h, w) == (9, 13) and tuple(tokens.shape) == (1, 9 * 13, 8)


def _direct_attention(att: EfficientAttention, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, n, c = x.shape
    heads = att.num_heads
    kv_in = x
    if att.sr_ratio > 1:
        kv_in = att.norm(att.sr(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2))
    q = att.q(x).view(b, n, heads, -1).transpose(1, 2)
    k, v = att.kv(kv_in).split(c, dim=-1)
    k, v = (t.view(b, -1, heads, c // heads).transpose(1, 2) for t in (k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // heads), dim=-1)
    return att.proj((weights @ v).transpose(1, 2).reshape(b, n, c))


@pytest.mark.parametrize("sr_ratio", [1, 2])
def test_efficient_attention_is_softmax_attention_over_the_reduced_map(sr_ratio: int) -> None:
    torch.manual_seed(1)
    att = EfficientAttention(12, 3, sr_ratio).eval()
    x = torch.randn(2, 6 * 8, 12)
    with torch.no_grad():
        torch.testing.assert_close(att(x, 6, 8), _direct_attention(att, x, 6, 8))
    assert hasattr(att, "sr") == (sr_ratio > 1)
    if sr_ratio > 1:
        assert att.norm.eps == 1e-5  # upstream's default-eps LayerNorm here, unlike the blocks'


def test_drop_path_grows_over_the_blocks_and_eval_is_deterministic() -> None:
    model = _tiny(drop_path_rate=0.4)
    rates = [blk.drop_path.drop_prob if isinstance(blk.drop_path, DropPath) else 0.0
             for i in range(1, 5) for blk in getattr(model, f"block{i}")]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    x = torch.randn(1, 3, 32, 32)
    assert all(torch.equal(a, b) for a, b in zip(model(x), model(x)))
    assert all(n.eps == 1e-6 for n in (model.norm1, model.block1[0].norm1))
