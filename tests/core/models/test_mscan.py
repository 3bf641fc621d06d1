"""scaseg.models.mscan: the MSCAN encoder at a tiny width: stage shapes on odd sizes, the multi-scale strip
convolutions, the layer scales (the variants built whole: test_model.py)."""
from __future__ import annotations

import math

import pytest
import torch

from scaseg.models.mscan import MSCAN, MSCANBlock, MultiScaleConvAttention

DIMS = (8, 16, 24, 32)


@pytest.mark.parametrize("size", [(64, 96), (33, 50)])
def test_four_maps_at_strides_4_8_16_32_rounded_up(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = MSCAN(embed_dims=DIMS, depths=(1, 1, 1, 1), mlp_ratios=(2, 2, 2, 2)).eval()
    outs = model(torch.randn(2, 3, *size))
    h, w = math.ceil(size[0] / 4), math.ceil(size[1] / 4)
    shapes = [(2, DIMS[0], h, w)]
    for d in DIMS[1:]:
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        shapes.append((2, d, h, w))
    assert [tuple(o.shape) for o in outs] == shapes
    assert all(o.is_contiguous() for o in outs)
    # The stage norm is a LayerNorm over channels: each pixel's channels are normalised.
    with torch.no_grad():
        model.norm1.weight.fill_(1.0)
        model.norm1.bias.zero_()
        first = model(torch.randn(1, 3, *size))[0]
    assert first.mean(dim=1).abs().max() < 1e-4


def test_msca_strips_are_depthwise_1xk_then_kx1_and_gate_the_input() -> None:
    msca = MultiScaleConvAttention(4)
    for name, k in (("conv0_1", 7), ("conv1_1", 11), ("conv2_1", 21)):
        row, col = getattr(msca, name), getattr(msca, name.replace("_1", "_2"))
        assert row.kernel_size == (1, k) and col.kernel_size == (k, 1) and row.groups == col.groups == 4
    x = torch.randn(1, 4, 9, 13)
    with torch.no_grad():  # conv3 giving 1 everywhere: the gate passes the input through unchanged
        msca.conv3.weight.zero_()
        msca.conv3.bias.fill_(1.0)
        torch.testing.assert_close(msca(x), x)
        msca.conv3.bias.fill_(0.0)  # a closed gate: nothing passes
        assert not msca(x).any()


def test_layer_scales_start_small_and_at_zero_the_block_is_the_identity() -> None:
    block = MSCANBlock(8, 2.0).eval()
    assert torch.equal(block.layer_scale_1, torch.full((8,), 1e-2))
    x = torch.randn(1, 8, 5, 7)
    with torch.no_grad():
        assert 0 < (block(x) - x).abs().max() < 1.0
        block.layer_scale_1.zero_()
        block.layer_scale_2.zero_()
        assert torch.equal(block(x), x)
