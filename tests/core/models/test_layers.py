"""scaseg.models.layers: stochastic depth, the depthwise conv wrapper and the drop-path schedule."""
from __future__ import annotations

import pytest
import torch

from scaseg.models.layers import DropPath, DWConv, drop_path_rates


def test_drop_path_is_the_identity_in_eval_and_at_zero() -> None:
    x = torch.randn(4, 3, 5)
    assert DropPath(0.5).eval()(x) is x and DropPath(0.0).train()(x) is x


def test_drop_path_drops_whole_samples_and_keeps_the_expectation() -> None:
    torch.manual_seed(0)
    layer = DropPath(0.25).train()
    out = layer(torch.ones(4000, 2, 3))
    per_sample = out.flatten(1)
    # Each sample is all zeros or all 1 / keep: the whole branch goes, never single elements.
    assert per_sample.unique().tolist() == pytest.approx([0.0, 1 / 0.75])
    assert (per_sample == per_sample[:, :1]).all()
    assert (per_sample[:, 0] == 0).float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert out.mean().item() == pytest.approx(1.0, abs=0.05)
    assert "drop_prob=0.250" in repr(layer)


def test_dwconv_is_depthwise_3x3_under_the_upstream_key_names() -> None:
    conv = DWConv(6)
    assert set(conv.state_dict()) == {"dwconv.weight", "dwconv.bias"}
    assert conv.dwconv.groups == 6 and tuple(conv.dwconv.weight.shape) == (6, 1, 3, 3)
    x = torch.randn(1, 6, 7, 9)
    assert conv(x).shape == x.shape
    with torch.no_grad():  # channel c of the output reads channel c of the input only
        conv.dwconv.weight.zero_()
        conv.dwconv.bias.zero_()
        conv.dwconv.weight[2, 0, 1, 1] = 1.0
        out = conv(x)
    assert torch.equal(out[0, 2], x[0, 2]) and not out[0, [0, 1, 3, 4, 5]].any()


def test_drop_path_rates_rise_linearly_from_zero_to_the_rate() -> None:
    assert drop_path_rates(0.1, [2, 2, 1]) == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])
    assert drop_path_rates(0.3, (1,)) == [0.0] and drop_path_rates(0.3, []) == []
    assert drop_path_rates(0.0, [3, 3]) == [0.0] * 6
