"""Model statistics: FLOP counting convention, strip vs vanilla attention cost, the README table command."""
from __future__ import annotations

import subprocess
import sys

import pytest
from paths import ROOT

import scaseg
from scaseg.stats import count_params, measure, to_markdown, variant_table


def test_params_on_the_meta_device_match_a_real_model() -> None:
    cost = measure("scaseg-b0", (64, 64))
    assert cost.params_m == pytest.approx(count_params(scaseg.build("scaseg-b0")) / 1e6)


def test_flops_are_multiply_accumulates_of_convs_and_matmuls() -> None:
    a = measure("scaseg-b0", (128, 128))
    b = measure("scaseg-b0", (256, 256))
    # Convolutions and projections scale with pixels; attention of stage i scales with N_i * M, i.e. pixels^2.
    assert 4.0 <= b.gflops / a.gflops < 4.5
    assert b.attention_gflops / a.attention_gflops > 4.0
    fuse_and_classifier = (4 * 128 * 128 + 128 * 19) * (128 // 4) ** 2 / 1e9  # two 1x1 convs at stride 4, in MACs
    assert fuse_and_classifier < a.decoder_gflops < 2 * fuse_and_classifier + a.attention_gflops * 4


def test_strip_attention_costs_fewer_flops_than_vanilla() -> None:
    for size in ((128, 128), (64, 96)):
        strip = measure("scaseg-t", size, "strip")
        vanilla = measure("scaseg-t", size, "vanilla")
        assert strip.attention_gflops < vanilla.attention_gflops
        assert strip.gflops < vanilla.gflops and strip.params_m < vanilla.params_m


def test_strip_attention_flops_match_a_hand_count() -> None:
    # scaseg-b0 decoder at 64x64: stage grids 16, 8, 4, 2 (squared), keys on the 2x2 grid, C = 32/64/160/256.
    dims, heads, sides = (32, 64, 160, 256), (1, 2, 5, 8), (16, 8, 4, 2)
    kv, m = sum(dims), 2 * 2
    expected = 0.0
    for c, h, s in zip(dims, heads, sides):
        n = s * s
        expected += n * c * h + m * kv * h + m * kv * c  # q, k, v projections (one q/k channel per head)
        expected += n * m * h + n * m * c + n * c * c  # q k^T, attn v, output projection
    assert measure("scaseg-b0", (64, 64)).attention_gflops == pytest.approx(expected / 1e9, rel=1e-9)


@pytest.mark.slow
def test_markdown_table_has_a_row_per_variant() -> None:
    rows = variant_table(["scaseg-b0", "scaseg-t"], [(64, 64), (96, 128)])
    text = to_markdown(rows, [(64, 64), (96, 128)])
    lines = text.splitlines()
    assert lines[0].startswith("| variant |") and "GFLOPs 96x128" in lines[0]
    assert lines[2].startswith("| `scaseg-b0` | MiT-B0 |") and lines[3].startswith("| `scaseg-t` | MSCAN-T |")
    assert "python -m scaseg.stats --readme README.md" in text
    assert all(0.0 < r["attention_saving"] < 1.0 for r in rows)


@pytest.mark.slow
def test_command_line_prints_the_table_and_rejects_bad_input() -> None:
    run = [sys.executable, "-m", "scaseg.stats", "--variant", "scaseg-b0", "--size", "64x64", "--markdown"]
    out = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| `scaseg-b0` | MiT-B0 |" in out.stdout
    bad = subprocess.run(run[:3] + ["--variant", "scaseg-z"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown model variant" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_readme_variant_table_is_the_generated_one() -> None:
    from scaseg.stats import SIZES, VARIANTS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("<!-- variants:start -->")[1].split("<!-- variants:end -->")[0]
    assert section.strip() == to_markdown(variant_table(list(VARIANTS), SIZES), SIZES).strip(), \
        "README's variant table is stale: run python -m scaseg.stats --readme README.md"
