"""Model statistics: parameters, GFLOPs per variant, and the decoder attention cost of strip vs vanilla attention.

Convention: "FLOPs" here are multiply-accumulates (1 MAC = 1 FLOP), the fvcore / mmsegmentation ``get_flops``
convention that segmentation papers report. They are measured by ``torch.utils.flop_counter.FlopCounterMode``
(which counts 2 per MAC, so its totals are halved) on a model built on the meta device: shapes only, no memory,
no arithmetic, so 1024x2048 is as quick as 512x512. Counted ops are convolutions and matrix products (linear,
matmul, bmm); normalisation, activations, softmax, pooling and resizing are not counted, as in fvcore.

    python -m scaseg.stats --markdown            # print the variant table
    python -m scaseg.stats --readme README.md    # write it into the README (between its variants markers)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

import torch
import typer
from torch.utils.flop_counter import FlopCounterMode

from scaseg.models.model import VARIANTS, build
from scaseg.errors import ScasegError, run_cli
from scaseg.cli import SIZE_SYNTAX, parse_size

SIZES = ((512, 512), (1024, 2048))


@dataclass
class Cost:
    """Cost of one forward pass of one image: totals and the decoder's cross-attention modules (GMACs)."""

    variant: str
    size: tuple[int, int]
    attention: str
    params_m: float
    gflops: float
    decoder_gflops: float
    attention_gflops: float  # the four StripCrossAttention modules: q/k/v/out projections and both products


def count_params(model: torch.nn.Module) -> int:
    """Number of learnable parameters (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def _count(model: torch.nn.Module, size: Sequence[int]) -> FlopCounterMode:
    """The FLOP counter after one forward pass of ``model`` (eval mode) on one ``size`` (H, W) image."""
    device = next(model.parameters()).device
    x = torch.empty(1, 3, int(size[0]), int(size[1]), device=device)
    with FlopCounterMode(display=False, depth=64) as counter, torch.no_grad():
        model(x)
    return counter


def count_macs(model: torch.nn.Module, size: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass of ``model`` (in eval mode) on one ``size`` (H, W) image, counted as
    ``measure`` counts them; build the model on the meta device (``with torch.device("meta")``) to count for free."""
    return int(_count(model, size).get_total_flops()) // 2


def measure(variant: str, size: Sequence[int] = (512, 512), attention: str = "strip", lpm: bool = True) -> Cost:
    """Parameters and GMACs of ``variant`` on one ``size`` (H, W) image, counted on the meta device."""
    with torch.device("meta"):
        model = build(variant, num_classes=19, attention=attention, lpm=lpm).eval()
        counter = _count(model, size)
    counts = counter.get_flop_counts()
    root = type(model).__name__

    def gmacs(name: str) -> float:
        return sum(counts.get(name, {}).values()) / 2e9

    attn = sum(gmacs(f"{root}.decode_head.blocks.{i}.attn") for i in range(len(model.decode_head.blocks)))
    return Cost(
        variant=variant,
        size=(int(size[0]), int(size[1])),
        attention=attention,
        params_m=count_params(model) / 1e6,
        gflops=counter.get_total_flops() / 2e9,
        decoder_gflops=gmacs(f"{root}.decode_head"),
        attention_gflops=attn,
    )


def attention_saving(variant: str, size: Sequence[int] = (512, 512)) -> tuple[Cost, Cost, float]:
    """(strip cost, vanilla cost, fraction of the decoder attention GMACs that strip attention saves)."""
    strip = measure(variant, size, "strip")
    vanilla = measure(variant, size, "vanilla")
    return strip, vanilla, 1.0 - strip.attention_gflops / vanilla.attention_gflops


def variant_table(variants: Iterable[str] = tuple(VARIANTS), sizes: Sequence[Sequence[int]] = SIZES) -> List[dict]:
    """One row per variant: params, GMACs per size, decoder attention GMACs strip vs vanilla at the first size."""
    rows = []
    for name in variants:
        costs = [measure(name, s) for s in sizes]
        strip, vanilla, saving = attention_saving(name, sizes[0])
        rows.append({
            "variant": name,
            "encoder": _encoder_name(name),
            "params_m": costs[0].params_m,
            "gflops": {f"{s[0]}x{s[1]}": c.gflops for s, c in zip(sizes, costs)},
            "decoder_gflops": costs[0].decoder_gflops,
            "attention_gflops_strip": strip.attention_gflops,
            "attention_gflops_vanilla": vanilla.attention_gflops,
            "attention_saving": saving,
            "params_m_vanilla": vanilla.params_m,
        })
    return rows


def _encoder_name(variant: str) -> str:
    suffix = variant.split("-", 1)[1]
    return f"MSCAN-{suffix.upper()}" if VARIANTS[variant]["encoder"] == "mscan" else f"MiT-{suffix.upper()}"


def to_markdown(rows: List[dict], sizes: Sequence[Sequence[int]] = SIZES) -> str:
    """Render ``variant_table`` rows as the README's Markdown table."""
    first = f"{sizes[0][0]}x{sizes[0][1]}"
    head = ["variant", "encoder", "params (M)"] + [f"GFLOPs {s[0]}x{s[1]}" for s in sizes]
    head += [f"decoder GFLOPs {first}", f"attention GFLOPs strip / vanilla {first}", "attention saving"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"`{r['variant']}`", r["encoder"], f"{r['params_m']:.2f}"]
        cells += [f"{r['gflops'][f'{s[0]}x{s[1]}']:.1f}" for s in sizes]
        cells += [
            f"{r['decoder_gflops']:.2f}",
            f"{r['attention_gflops_strip']:.2f} / {r['attention_gflops_vanilla']:.2f}",
            f"{100 * r['attention_saving']:.1f}%",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Parameters and GFLOPs with a 19-class classifier. "
        "GFLOPs are multiply-accumulates (fvcore/mmseg convention) of one image, counted with "
        "`torch.utils.flop_counter` on the meta device (convolutions and matrix products only). "
        "Attention = the decoder's four cross-attention modules (projections and both products); "
        "saving = 1 - strip / vanilla. Generated by `python -m scaseg.stats --readme README.md`."
    )
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    """One --size; an empty one is refused like any other that is not a size."""
    parsed = parse_size(text, "--size", minimum=32)
    if parsed is None:
        raise ScasegError(f"--size {text!r} is not a size: expected {SIZE_SYNTAX}")
    return parsed


app = typer.Typer(add_completion=False, help="Parameters and GFLOPs of the SCASeg variants.")


@app.command()
def main_command(
    variant: Optional[List[str]] = typer.Option(None, "--variant", "-v", help="Variant(s) to measure (default: all)."),
    size: Optional[List[str]] = typer.Option(None, "--size", help="Input size(s), N or HxW, repeatable (default: 512x512 and 1024x2048)."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the README Markdown table."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON rows."),
    readme: Optional[str] = typer.Option(None, "--readme", help="Write the Markdown table between the <!-- variants:start/end --> markers of this file."),
) -> None:
    """Print parameters and GFLOPs per variant, and the strip vs vanilla attention cost."""
    names = [v.lower() for v in variant] if variant else list(VARIANTS)
    for name in names:
        if name not in VARIANTS:
            raise ScasegError(f"unknown model variant {name!r}: expected one of {', '.join(VARIANTS)}")
    sizes = [_size(s) for s in size] if size else list(SIZES)
    rows = variant_table(names, sizes)
    if readme:
        from scaseg.readme import replace_section

        replace_section(readme, "variants", to_markdown(rows, sizes))
        print(f"updated the variant table in {readme}")
    elif as_json:
        print(json.dumps(rows, indent=1))
    elif markdown:
        print(to_markdown(rows, sizes))
    else:
        for r in rows:
            flops = ", ".join(f"{k}: {v:.1f}" for k, v in r["gflops"].items())
            print(f"{r['variant']:10s} {r['params_m']:7.2f} M params  GFLOPs {flops}  "
                  f"attention strip {r['attention_gflops_strip']:.2f} vs vanilla {r['attention_gflops_vanilla']:.2f} "
                  f"({100 * r['attention_saving']:.1f}% less)")


def main() -> None:
    run_cli(app, prog="python -m scaseg.stats")


if __name__ == "__main__":
    main()
