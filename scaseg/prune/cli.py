"""`scaseg-prune`: structured channel pruning of a trained SCASeg checkpoint to a fraction of its MACs, or by given
fractions per encoder stage.

Options are checked here, at the edge, into a ``PruneRequest``; ``run`` loads, prunes (scaseg.prune.core) and
writes the pruned checkpoint atomically (its config records the channel widths, so scaseg.load_model, scaseg-export,
scaseg-bench and scaseg-infer take it like any other model). docs/pruning.md.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from scaseg.cli import SIZE_METAVAR, make_app, parse_imgsz, quiet_option
from scaseg.errors import ScasegError, run_cli, version_option
from scaseg.suffixes import CHECKPOINT_SUFFIXES

if TYPE_CHECKING:
    from scaseg.prune.core import Ratios

app = make_app("Prune a trained SCASeg checkpoint (MSCAN variants) to a fraction of its MACs, or by given fractions "
               "per stage; docs/pruning.md.")

IMPORTANCE = ("l2", "taylor")


@dataclass(frozen=True)
class PruneRequest:
    """What scaseg-prune was asked, checked."""

    source: Path
    output: Path
    macs: Optional[float]  # the fraction of the MACs to keep, in (0, 1); None: ``ratios`` says what to remove
    imgsz: Optional[tuple[int, int]]  # None: the checkpoint's trained size
    importance: str  # l2 | taylor
    data: Optional[Path]  # taylor: the dataset whose images give the gradients
    images: int
    round_to: int  # pruned widths rounded down to a multiple of this (1: no rounding)
    ratios: Optional["Ratios"] = None  # --stage-ratios / --hidden-ratios (exactly when macs is None)


def parse_ratios(text: str, option: str) -> tuple[float, float, float, float]:
    """Four comma-separated fractions R1,R2,R3,R4, each from 0 to MAX_RATIO, in one sentence when not."""
    from scaseg.prune.core import MAX_RATIO

    why = (f"{option} takes four fractions R1,R2,R3,R4 from 0 to {MAX_RATIO:g} (the share of each encoder stage's "
           f"channels to remove), not {text!r}")
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ScasegError(why) from None
    if len(values) != 4 or not all(0 <= v <= MAX_RATIO for v in values):
        raise ScasegError(why)
    return values  # type: ignore[return-value]


def target_ratios(macs: Optional[float], stage: Optional[str], hidden: Optional[str]) -> Optional["Ratios"]:
    """The explicit ratios of --stage-ratios / --hidden-ratios (None with --macs); exactly one way must be given.
    The hidden widths follow the stage ratios unless --hidden-ratios says otherwise; a stage not named loses
    nothing."""
    if macs is None and stage is None and hidden is None:
        raise ScasegError("give the target: --macs FRACTION, or --stage-ratios R1,R2,R3,R4 (and/or --hidden-ratios)")
    if macs is not None and (stage is not None or hidden is not None):
        raise ScasegError("--macs and --stage-ratios/--hidden-ratios are two ways to give the target; give one")
    if macs is not None:
        return None
    from scaseg.prune.core import Ratios

    widths = parse_ratios(stage, "--stage-ratios") if stage is not None else (0.0,) * 4
    return Ratios(widths, parse_ratios(hidden, "--hidden-ratios") if hidden is not None else widths)  # type: ignore[arg-type]


def check_request(source: str, output: str, macs: Optional[float], imgsz: Optional[str], importance: str,
                  data: Optional[str], images: int, round_to: int = 1, stage_ratios: Optional[str] = None,
                  hidden_ratios: Optional[str] = None) -> PruneRequest:
    """Every option checked once, in one sentence each; nothing is read beyond the file system's metadata."""
    from scaseg.checkpoint import check_readable
    from scaseg.fileio import check_output, refuse_overwrite

    ratios = target_ratios(macs, stage_ratios, hidden_ratios)
    if macs is not None and not 0 < macs < 1:
        raise ScasegError(f"--macs is the fraction of the MACs to keep, above 0 and below 1, not {macs:g}")
    if importance not in IMPORTANCE:
        raise ScasegError(f"--importance must be {' or '.join(IMPORTANCE)}, not {importance!r}")
    if importance == "taylor" and not data:
        raise ScasegError("--importance taylor needs --data DIR (the images whose gradients rank the channels)")
    if data and importance != "taylor":
        raise ScasegError("--data is read only by --importance taylor; leave it out for l2")
    if data and not Path(data).expanduser().is_dir():
        raise ScasegError(f"--data {data} is not a folder")
    if images < 1:
        raise ScasegError(f"--images must be at least 1, not {images}")
    if not 1 <= round_to <= 64:
        raise ScasegError(f"--round-to must be from 1 (no rounding) to 64, not {round_to}")
    out = Path(output).expanduser()
    if out.suffix not in CHECKPOINT_SUFFIXES:
        raise ScasegError(f"-o/--output {output} must end in {', '.join(CHECKPOINT_SUFFIXES)} (a checkpoint)")
    src = check_readable(source)
    refuse_overwrite([out], [src])
    check_output(out)
    return PruneRequest(src, out, None if macs is None else float(macs), parse_imgsz(imgsz), importance,
                        Path(data).expanduser() if data else None, int(images), int(round_to), ratios)


def taylor_images(data: Path, size: tuple[int, int], count: int, num_classes: int) -> list[Any]:
    """(image tensor at the network size, label tensor at the image's size) of ``count`` train images spread over
    the split, preprocessed as validation does (scaseg.runtime.preprocess)."""
    import torch

    from scaseg.data.datasets import open_dataset
    from scaseg.metadata import IMAGENET_MEAN, IMAGENET_STD
    from scaseg.runtime.preprocess import preprocess

    ds = open_dataset(data, "auto", "train")
    if len(ds) == 0 or not ds.has_labels:
        raise ScasegError(f"the train split of {data} holds no labelled images; --importance taylor needs them")
    if ds.num_classes != num_classes:
        raise ScasegError(f"the dataset {data} has {ds.num_classes} classes and the model {num_classes}; "
                          "--importance taylor needs the model's own data")
    step = max(1, len(ds) // count)
    pairs = []
    for i in range(0, len(ds), step)[:count]:
        sample = ds[i]
        if sample.label is None:
            raise ScasegError(f"the train image {sample.name} of {data} has no label; --importance taylor needs them")
        x, _ = preprocess(sample.image, size, IMAGENET_MEAN, IMAGENET_STD, "stretch")
        pairs.append((torch.from_numpy(x), torch.from_numpy(sample.label.astype("int64"))))
    return pairs


def run(req: PruneRequest) -> str:
    """Load, prune, save; the one summary line."""
    import scaseg
    from scaseg.progress import progress
    from scaseg.prune.core import Ratios, check_prunable, cost_of_ratios, find_ratio, prune, taylor_gradients

    model, info = scaseg.load_model(req.source)
    size = req.imgsz or info.input_size
    if size is None:
        raise ScasegError(f"{req.source} records no input size; pass --imgsz N|HxW (the size the MACs are counted at)")
    size = (int(size[0]), int(size[1]))
    check_prunable(model, req.source)
    how: dict[str, Any]
    if req.macs is not None:
        ratio, b, a = find_ratio(model, size, req.macs, req.round_to)  # refuses a target that cannot be met
        ratios, how = Ratios.uniform(ratio), {"ratio": ratio}
    else:
        assert req.ratios is not None
        ratios, (b, a) = req.ratios, cost_of_ratios(model, size, req.ratios, req.round_to)
        how = {"stage_ratios": list(ratios.stage), "hidden_ratios": list(ratios.hidden)}
    grads = None
    if req.data is not None:
        grads = taylor_gradients(taylor_images(req.data, size, req.images, info.num_classes))
    extra = {**info.extra, "pruning": {
        "source": req.source.name, "macs_kept": a.macs / b.macs, "macs_asked": req.macs, "imgsz": list(size),
        **how, "importance": req.importance, "round_to": req.round_to, "macs_before": b.macs,
        "macs_after": a.macs, "params_before": b.params, "params_after": a.params}}
    # A context manager so that an error closes the bar first and prints on a line of its own.
    with progress(total=2, desc="prune", unit="step", file=sys.stderr) as steps:
        pruned = prune(model, ratios, importance=req.importance, round_to=req.round_to, gradients=grads)
        steps.update(1)
        scaseg.save_checkpoint(pruned, req.output, class_names=info.class_names, palette=info.palette,
                               input_size=info.input_size, extra=extra)
        steps.update(1)
    return (f"scaseg-prune: {info.variant} at {size[0]}x{size[1]}: {b.macs / 1e9:.3f} -> {a.macs / 1e9:.3f} GMACs "
            f"({a.macs / b.macs:.4f} of them" + (f", asked {req.macs:g}" if req.macs is not None else "") + "), "
            f"{b.params / 1e6:.2f} -> {a.params / 1e6:.2f} M params; "
            f"{ratios.text()} ({req.importance}"
            + (f", widths multiples of {req.round_to}" if req.round_to > 1 else "") + f"); wrote {req.output}")


@app.command()
def main_command(
    model: str = typer.Argument(..., metavar="MODEL", help="A trained SCASeg checkpoint (.pth or .safetensors)."),
    output: str = typer.Option(..., "-o", "--output", metavar="FILE", help="The pruned checkpoint to write (.pth or .safetensors).", show_default="required"),
    macs: Optional[float] = typer.Option(None, "--macs", metavar="FRACTION", help="Keep at most this fraction of the MACs (0.5: half), counted at --imgsz: the same fraction is removed from every prunable channel group.", show_default="none: give --macs or --stage-ratios"),
    stage_ratios: Optional[str] = typer.Option(None, "--stage-ratios", metavar="R1,R2,R3,R4", help="Instead of --macs: remove these fractions (0 to 0.9) of each encoder stage's channels (its width, MSCA widths, rho outputs; the stem and the fusion width count as stage 1's).", show_default="none"),
    hidden_ratios: Optional[str] = typer.Option(None, "--hidden-ratios", metavar="R1,R2,R3,R4", help="Instead of --macs: remove these fractions of each stage's FFN and LPM hidden widths.", show_default="the --stage-ratios"),
    imgsz: Optional[str] = typer.Option(None, "--imgsz", metavar=SIZE_METAVAR, help="Input size the MACs are counted at: N or HxW.", show_default="the checkpoint's trained size"),
    importance: str = typer.Option("l2", "--importance", metavar="|".join(IMPORTANCE), help="How channels are ranked: l2 (the L2 norm of their weights) or taylor (|weight x gradient| of the loss on --images train images of --data)."),
    data: Optional[str] = typer.Option(None, "--data", metavar="DIR", help="Dataset folder (as scaseg-train reads) for --importance taylor.", show_default="none"),
    images: int = typer.Option(8, "--images", metavar="N", help="Train images the taylor gradients are summed over (spread over the split)."),
    round_to: int = typer.Option(1, "--round-to", metavar="N", help="Round every pruned width down to a multiple of N (8 suits tensor cores and SIMD lanes); a width that would round to 0 stays unpruned. 1: no rounding."),
    quiet: bool = quiet_option(),
    version: bool = version_option("scaseg-prune"),
) -> None:
    """Prune MODEL's channels (structured, torch-pruning) to --macs of its MACs, or by --stage-ratios /
    --hidden-ratios; prints the before/after line."""
    print(run(check_request(model, output, macs, imgsz, importance, data, images, round_to, stage_ratios,
                            hidden_ratios)), flush=True)


def main() -> None:
    """Console entry point (scaseg-prune)."""
    run_cli(app, prog="scaseg-prune")


if __name__ == "__main__":
    main()
