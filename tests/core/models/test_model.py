"""The SCASeg model: shapes for every variant, odd sizes, official encoder key names, attention, training step."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import scaseg
from scaseg.models.decoder import (
    SCASegHead,
    StripAttentionCore,
    StripCrossAttention,
    grid_attention,
    pool_to_grid,
    set_grid_points,
    set_query_chunk,
    strip_attention,
)
from scaseg.errors import ScasegError


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)


BIG = {"scaseg-l", "scaseg-b3", "scaseg-b4", "scaseg-b5"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in scaseg.VARIANTS])
def test_every_variant_returns_logits_at_the_input_size(name: str) -> None:
    model = scaseg.build(name, num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 65, 97))
    assert out.shape == (1, 5, 65, 97)
    assert torch.isfinite(out).all()
    assert model.config["variant"] == name and model.config["num_classes"] == 5


@pytest.mark.parametrize("size", [(375, 500), (33, 47), (64, 64)])
def test_odd_sizes_work(size: tuple[int, int]) -> None:
    model = scaseg.build("scaseg-b0", num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 3, *size)


def test_pooled_key_value_maps_share_one_grid_for_odd_sizes() -> None:
    model = scaseg.build("scaseg-t", num_classes=3).eval()
    grids: list[tuple[int, ...]] = []
    hooks = [p.register_forward_hook(lambda m, i, o: grids.append(tuple(o.shape[-2:])))
             for p in list(model.decode_head.pool_enc) + list(model.decode_head.pool_dec)]
    with torch.no_grad():
        model(torch.randn(1, 3, 375, 500))
    for h in hooks:
        h.remove()
    assert len(grids) == 7  # rho(F_1..F_4), rho(D_2..D_4)
    assert set(grids) == {(math.ceil(375 / 32), math.ceil(500 / 32))}


@pytest.mark.parametrize("shape,ratio", [((2, 3, 7, 9), 4), ((1, 2, 17, 5), 8), ((1, 1, 16, 16), 2), ((1, 4, 3, 3), 1)])
def test_pool_to_grid_matches_ceil_mode_average_pooling(shape: tuple[int, ...], ratio: int) -> None:
    x = torch.randn(*shape)
    expected = F.avg_pool2d(x, ratio, ratio, ceil_mode=True) if ratio > 1 else x
    torch.testing.assert_close(pool_to_grid(x, ratio), expected, rtol=1e-6, atol=1e-6)


def test_strip_attention_is_softmax_of_scaled_logits_times_values() -> None:
    q, k, v = torch.randn(2, 3, 10, 1), torch.randn(2, 3, 6, 1), torch.randn(2, 3, 6, 4)
    weights = torch.exp(0.5 * q * k.transpose(-2, -1))
    expected = (weights / weights.sum(-1, keepdim=True)) @ v
    torch.testing.assert_close(strip_attention(q, k, v, 0.5), expected)


@pytest.mark.parametrize("dq", [1, 8])
def test_query_chunk_gives_the_unchunked_result(dq: int) -> None:
    q, k, v = torch.randn(2, 2, 101, dq), torch.randn(2, 2, 30, dq), torch.randn(2, 2, 30, 16)
    full = strip_attention(q, k, v, 0.25)
    for chunk in (1, 7, 100, 101, 500):
        torch.testing.assert_close(strip_attention(q, k, v, 0.25, query_chunk=chunk), full, rtol=1e-6, atol=1e-6)


def test_set_query_chunk_reaches_every_core_and_keeps_outputs() -> None:
    model = scaseg.build("scaseg-b0", num_classes=4).eval()
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        ref = model(x)
        assert set_query_chunk(model, 50) == 4
        chunked = model(x)
    assert all(m.query_chunk == 50 for m in model.modules() if isinstance(m, StripAttentionCore))
    torch.testing.assert_close(chunked, ref, rtol=1e-5, atol=1e-5)


def test_strip_attention_compresses_query_and_key_to_one_channel_per_head() -> None:
    strip = StripCrossAttention(64, 480, num_heads=2, attention="strip")
    vanilla = StripCrossAttention(64, 480, num_heads=2, attention="vanilla")
    assert strip.q.out_features == 2 and strip.k.out_features == 2
    assert vanilla.q.out_features == 64 and vanilla.k.out_features == 64
    assert strip.v.out_features == vanilla.v.out_features == 64
    assert strip.core.scale == pytest.approx(32 ** -0.5)
    x, kv = torch.randn(2, 50, 64), torch.randn(2, 12, 480)
    assert strip(x, kv).shape == vanilla(x, kv).shape == (2, 50, 64)


def test_ablation_switches_change_the_model() -> None:
    base = scaseg.build("scaseg-b0", num_classes=3)
    no_lpm = scaseg.build("scaseg-b0", num_classes=3, lpm=False)
    vanilla = scaseg.build("scaseg-b0", num_classes=3, attention="vanilla")
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(no_lpm) < n(base) < n(vanilla)
    assert all(b.lpm is None for b in no_lpm.decode_head.blocks)
    assert vanilla.config["attention"] == "vanilla" and no_lpm.config["lpm"] is False
    with torch.no_grad():
        assert no_lpm.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_head_runs_from_stage_four_down_with_the_mixed_key_value_pyramid() -> None:
    head = SCASegHead((8, 16, 24, 32), num_classes=2, embed_dim=16, num_heads=(1, 2, 2, 4)).eval()
    feats = [torch.randn(1, c, s, s) for c, s in zip((8, 16, 24, 32), (16, 8, 4, 2))]
    order: list[int] = []
    hooks = [b.register_forward_pre_hook(lambda m, a, i=i: order.append((i, a[1].shape[1]))) for i, b in enumerate(head.blocks)]
    with torch.no_grad():
        out = head(feats)
    for h in hooks:
        h.remove()
    assert out.shape == (1, 2, 16, 16)
    assert order == [(3, 80), (2, 80), (1, 80), (0, 80)]  # every M_i has C1+C2+C3+C4 channels


def test_build_rejects_unknown_variants_naming_the_known_ones() -> None:
    with pytest.raises(ScasegError, match="scaseg-b0") as info:
        scaseg.build("scaseg-xl")
    assert "\n" not in str(info.value)
    with pytest.raises(ScasegError, match="attention"):
        scaseg.build("scaseg-t", attention="linear")
    with pytest.raises(ScasegError, match="unknown build option"):
        scaseg.build("scaseg-t", widht=3)


MIT_OFFICIAL_KEYS = [
    "patch_embed1.proj.weight", "patch_embed1.norm.bias", "patch_embed4.proj.weight",
    "block1.0.norm1.weight", "block1.0.attn.q.weight", "block1.0.attn.kv.bias", "block1.0.attn.proj.weight",
    "block1.0.attn.sr.weight", "block1.0.attn.norm.weight", "block1.1.mlp.fc1.weight",
    "block1.1.mlp.dwconv.dwconv.weight", "block1.1.mlp.fc2.bias", "block4.1.norm2.weight", "norm1.weight", "norm4.bias",
]
MSCAN_OFFICIAL_KEYS = [
    "patch_embed1.proj.0.weight", "patch_embed1.proj.1.running_var", "patch_embed1.proj.3.weight",
    "patch_embed1.proj.4.num_batches_tracked", "patch_embed2.proj.weight", "patch_embed2.norm.running_mean",
    "block1.0.norm1.weight", "block1.0.attn.proj_1.weight", "block1.0.attn.spatial_gating_unit.conv0.weight",
    "block1.0.attn.spatial_gating_unit.conv0_1.weight", "block1.0.attn.spatial_gating_unit.conv2_2.bias",
    "block1.0.attn.spatial_gating_unit.conv3.weight", "block1.0.attn.proj_2.bias", "block1.0.layer_scale_1",
    "block1.0.layer_scale_2", "block1.0.mlp.fc1.weight", "block1.0.mlp.dwconv.dwconv.weight", "block4.1.norm2.running_var",
    "norm1.weight", "norm4.bias",
]


def test_encoder_state_dicts_use_the_official_key_names() -> None:
    mit = scaseg.build("scaseg-b0").backbone.state_dict()
    mscan = scaseg.build("scaseg-t").backbone.state_dict()
    assert set(MIT_OFFICIAL_KEYS) <= set(mit)
    assert set(MSCAN_OFFICIAL_KEYS) <= set(mscan)
    assert "block4.0.attn.sr.weight" not in mit  # stage 4 has no spatial reduction (sr ratio 1)
    assert mit["block1.0.attn.sr.weight"].shape == (32, 32, 8, 8)
    assert mscan["block1.0.attn.spatial_gating_unit.conv2_1.weight"].shape == (32, 1, 1, 21)
    assert mscan["block1.0.mlp.fc1.weight"].shape == (256, 32, 1, 1)  # mlp ratio 8 in stage 1
    assert sum(1 for k in mscan if k.endswith("layer_scale_1")) == 3 + 3 + 5 + 2


def test_mscan_batchnorm_converts_to_syncbn_with_the_same_keys() -> None:
    model = scaseg.build("scaseg-t")
    keys = list(model.state_dict())
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    n_sync = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.backbone.modules())
    assert n_sync == 2 + 3 + 2 * (3 + 3 + 5 + 2)  # stem, patch embeds 2-4, two per block
    assert list(synced.state_dict()) == keys


def test_one_optimiser_step_on_a_fixed_batch_lowers_the_loss() -> None:
    model = scaseg.build("scaseg-b0", num_classes=3, drop_path_rate=0.0, dropout=0.0).train()
    x = torch.randn(2, 3, 64, 64)
    y = torch.randint(0, 3, (2, 64, 64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)  # SegFormer-style recipe scale
    before = F.cross_entropy(model(x), y)
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = F.cross_entropy(model(x), y)
    assert before.item() == pytest.approx(math.log(3), abs=0.05)  # the classifier starts near uniform
    assert after.item() < before.item() - 1e-4
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("decode_head.")), "unused decoder weights"


@pytest.mark.slow
def test_pool_to_grid_exports_to_onnx_matching_ceil_mode_on_odd_sizes(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")

    class Pool(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return pool_to_grid(x, 8)

    dims = {2: torch.export.Dim("h", min=8, max=4096), 3: torch.export.Dim("w", min=8, max=4096)}
    path = tmp_path / "pool.onnx"
    torch.onnx.export(Pool().eval(), (torch.randn(1, 3, 47, 95),), str(path), dynamo=True, dynamic_shapes=(dims,))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for shape in [(1, 3, 47, 95), (1, 3, 64, 64), (1, 3, 9, 17), (1, 3, 375, 500)]:
        x = torch.randn(*shape)
        got = session.run(None, {name: x.numpy()})[0]
        torch.testing.assert_close(torch.from_numpy(got), F.avg_pool2d(x, 8, 8, ceil_mode=True), rtol=1e-5, atol=1e-6)


def test_grid_attention_converges_to_exact_attention_at_second_order() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(2, 3, 500, 1, generator=g), torch.randn(2, 3, 80, 1, generator=g), torch.randn(2, 3, 80, 8, generator=g)
    exact = strip_attention(q, k, v, 0.5)
    errors = [float((grid_attention(q, k, v, 0.5, n) - exact).abs().max()) for n in (17, 33, 65, 129)]
    assert errors[-1] < 5e-4
    # linear interpolation of a smooth function: halving the step quarters the error (allow 3x for the higher terms)
    assert all(a > 3 * b for a, b in zip(errors, errors[1:])), errors


def test_grid_attention_ranges_are_per_sample_and_head_and_zero_spread_is_exact() -> None:
    g = torch.Generator().manual_seed(1)
    q = torch.randn(3, 2, 200, 1, generator=g) * torch.tensor([0.1, 1.0, 5.0]).reshape(3, 1, 1, 1)
    k, v = torch.randn(3, 2, 40, 1, generator=g), torch.randn(3, 2, 40, 6, generator=g)
    q[1, 0] = 0.7  # every query of one (sample, head) equal: no spread at all
    together = grid_attention(q, k, v, 0.4, 64)
    alone = torch.cat([grid_attention(q[i : i + 1], k[i : i + 1], v[i : i + 1], 0.4, 64) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)
    torch.testing.assert_close(together[1, 0], strip_attention(q, k, v, 0.4)[1, 0], rtol=0, atol=1e-6)
    assert not torch.isnan(together).any()
    with pytest.raises(ValueError, match="one query/key channel"):
        grid_attention(torch.randn(1, 1, 5, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 2), 0.5, 16)


def test_grid_points_apply_in_eval_only_and_refuse_vanilla_attention() -> None:
    torch.manual_seed(0)
    model = scaseg.build("scaseg-b0", num_classes=4)
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        exact = model.eval()(x)
        assert set_grid_points(model, 2) == 4
        coarse = model(x)
        set_grid_points(model, 256)
        fine = model(x)
        model.train()
        torch.manual_seed(1)
        trained_grid = model(x)
        set_grid_points(model, None)
        torch.manual_seed(1)
        trained_exact = model(x)
    assert float((coarse - exact).abs().max()) > 10 * float((fine - exact).abs().max())
    torch.testing.assert_close(fine, exact, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(trained_grid, trained_exact)  # training keeps the exact softmax
    with pytest.raises(ValueError, match="vanilla"):
        set_grid_points(scaseg.build("scaseg-b0", num_classes=4, attention="vanilla"), 64)
