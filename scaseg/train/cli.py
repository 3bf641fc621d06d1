"""`scaseg-train`: train any variant on any supported dataset, in one process or under torchrun."""
from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Tuple

import typer

from scaseg.cli import SIZE_METAVAR, make_app, parse_size, quiet_option, renamed_option
from scaseg.errors import ScasegError, run_cli, version_option

app = make_app("Train SCASeg. Under torchrun every process runs this same command (DDP with SyncBN).")

KINDS = ("auto", "cityscapes", "ade20k", "voc", "cocostuff", "folder")


def _parse_threads(value: str) -> int:
    """--threads auto|N at the edge, as scaseg-bench and scaseg-infer read it (runtime/backends/threads.py, with the
    bound every command's thread count has); auto -> 0, the training state's "PyTorch's default"."""
    from scaseg.runtime.backends.threads import parse_threads

    if str(value).strip() == "0":  # the spelling of auto before this release
        raise ScasegError("--threads 0 was renamed --threads auto (PyTorch's default)")
    return parse_threads(value) or 0


@app.command()
def main_command(
    ctx: typer.Context,
    data: Optional[str] = typer.Option(None, "--data", metavar="DIR", help="Dataset root folder.", show_default="required unless --resume"),
    dataset: str = typer.Option("auto", "--dataset", metavar="|".join(KINDS), help="Dataset layout (auto: detected from the folder)."),
    variant: str = typer.Option("scaseg-t", "--variant", help="scaseg-t/s/b/l (MSCAN) or scaseg-b0..b5 (MiT)."),
    iters: int = typer.Option(160_000, "--iters", help="Total optimisation steps. The default is the paper's GPU schedule: "
                              "on 2 idle CPU cores scaseg-t takes about 1.5 s per step of 4 128x256 crops in one process "
                              "(1.0 s as two torchrun ranks, as recipes/cpu_synth.sh trains; docs/training.md), so the default 2 crops of 512x512 "
                              "(4x the pixels) would take about 6 s per step, 11 days for 160000 steps."),
    out: Optional[str] = typer.Option(None, "-o", "--output", metavar="DIR", help="Output folder (checkpoints, training state, metrics).", show_default="required unless --resume"),
    batch: int = typer.Option(2, "--batch", help="Images per process and step."),
    crop: str = typer.Option("512x512", "--crop", metavar=SIZE_METAVAR, help="Training crop: N or HxW."),
    scale_range: Tuple[float, float] = typer.Option((0.5, 2.0), "--scale-range", metavar="LOW HIGH", help="Random rescale range (factors of --base-short)."),
    base_short: Optional[int] = typer.Option(None, "--base-short", help="Short side the scale range refers to.", show_default="each image's stored size"),
    lr: float = typer.Option(6e-5, "--lr", help="Peak AdamW learning rate of the encoder."),
    weight_decay: float = typer.Option(0.01, "--weight-decay", help="AdamW weight decay (not applied to norms, biases and other 1-D tensors)."),
    head_lr_mult: float = typer.Option(10.0, "--head-lr-mult", help="Decoder learning rate = lr times this."),
    warmup: int = typer.Option(1500, "--warmup-iters", help="Linear learning-rate warm-up iterations."),
    _warmup: Optional[str] = renamed_option("--warmup", "--warmup-iters"),  # --warmup is scaseg-bench's untimed runs
    power: float = typer.Option(1.0, "--power", help="Poly decay power."),
    val_interval: int = typer.Option(4000, "--val-interval", help="Validate every N iterations (0: never)."),
    ckpt_interval: int = typer.Option(0, "--ckpt-interval", help="Save the training state every N iterations (0: with validation)."),
    val_size: Optional[str] = typer.Option(None, "--val-size", metavar=SIZE_METAVAR, help="Network input size at validation: N or HxW.", show_default="the stored image size"),
    train_split: str = typer.Option("train", "--train-split", help="Split of the dataset to train on."),
    val_split: str = typer.Option("val", "--val-split", help="Split of the dataset to validate on."),
    workers: int = typer.Option(2, "--workers", help="DataLoader worker processes per training process."),
    amp: str = typer.Option("auto", "--amp", metavar="auto|off|bf16|fp16", help="Mixed precision: auto is fp16 on CUDA, fp32 on CPU."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", metavar="PATH", help="Encoder weights: a .pth/.bin/.safetensors file or a Hugging Face model folder (SegNeXt, SegFormer, mmsegmentation or Hugging Face names; see docs/model.md).", show_default="random initialisation"),
    init: Optional[str] = typer.Option(None, "--init", metavar="PATH", help="Start from this whole trained model (a scaseg checkpoint, pruned ones included: its variant, widths and classes), e.g. to fine-tune the output of scaseg-prune.", show_default="a new model"),
    distill: Optional[str] = typer.Option(None, "--distill", metavar="TEACHER", help="Add pixel-wise distillation from this checkpoint (same variant and classes, e.g. the model --init was pruned from): KL of temperature-softened logits (docs/pruning.md).", show_default="none"),
    distill_weight: float = typer.Option(1.0, "--distill-weight", metavar="W", help="With --distill: the loss is cross-entropy + W x the distillation term."),
    distill_temperature: float = typer.Option(1.0, "--distill-temperature", metavar="T", help="With --distill: both logits are divided by T before the softmax (the term is scaled by T^2)."),
    resume: Optional[str] = typer.Option(None, "--resume", metavar="DIR", help="Continue the run in this folder, writing only there (a scaseg-train run folder, or its train_state.pt; options typed here override).", show_default="a new run"),
    seed: int = typer.Option(0, "--seed", help="Random seed of initialisation, data order and augmentation (offset per process)."),
    device: str = typer.Option("auto", "--device", metavar="auto|cpu|cuda", help="Where to train (auto: CUDA when present)."),
    threads: str = typer.Option("auto", "--threads", metavar="auto|N", callback=_parse_threads, help="torch threads per process (auto: PyTorch's default, one per core; N: at most 4 per CPU)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="Keep the model and the batches in channels-last (NHWC) memory format: on a CPU the convolutions run faster (scaseg-t, 2 cores: measured in docs/training.md)."),
    class_weight: str = typer.Option("none", "--class-weight", metavar="none|balanced", help="Loss weight per class: balanced weighs rare classes up (ENet's 1/ln(1.02 + pixel share), from the train labels)."),
    ohem_thresh: float = typer.Option(0.0, "--ohem-thresh", metavar="P", help="Online hard-example mining: only pixels whose probability of their true class is below P count in the loss (SegNeXt's Cityscapes configs: 0.7); 0: every pixel."),
    ohem_min_kept: int = typer.Option(100_000, "--ohem-min-kept", metavar="N", help="With --ohem-thresh: keep at least the N hardest pixels of each step's batch."),
    logit_adjust: bool = typer.Option(False, "--logit-adjust", help="With --class-weight balanced: after the last step, subtract alpha x log(class weight) from the classifier's bias, alpha in 0, 0.1 .. 1 chosen for the best mIoU on --logit-adjust-images images of the train split (the weighted loss favours rare classes; docs/training.md)."),
    logit_adjust_images: int = typer.Option(128, "--logit-adjust-images", metavar="N", help="Train images the logit adjustment is fitted on (spread over the split)."),
    model_opt: List[str] = typer.Option([], "--model-opt", metavar="KEY=VALUE", help="Extra scaseg.build argument, repeatable (e.g. attention=vanilla).", show_default="none"),
    quiet: bool = quiet_option(),
    version: bool = version_option("scaseg-train"),
) -> None:
    """Train SCASeg; prints the final validation line."""
    from scaseg.train.loop import TrainConfig, train
    from scaseg.train.state import resumed_settings

    given = {k: v for k, v in ctx.params.items() if k not in ("model_opt",)}
    given["crop"] = parse_size(crop, "--crop")
    given["val_size"] = parse_size(val_size, "--val-size")
    given["model_kwargs"] = dict(_parse_opt(o) for o in model_opt)
    if resume:
        typed = {k for k in given if (src := ctx.get_parameter_source(k)) is not None and src.name == "COMMANDLINE"}
        cfg_dict = resumed_settings(resume, given, typed | ({"model_kwargs"} if model_opt else set()))
    else:
        if not data or not out:
            raise ScasegError("scaseg-train needs --data DIR and -o/--output DIR (or --resume OUT_DIR)")
        cfg_dict = given
    if cfg_dict["dataset"] not in KINDS:
        raise ScasegError(f"unknown --dataset {cfg_dict['dataset']!r} (expected one of {', '.join(KINDS)})")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    settings: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v)
                                for k, v in cfg_dict.items() if k in fields}
    cfg = TrainConfig(**settings)
    summary = train(cfg)
    if summary.get("is_main", True):
        line = f"scaseg-train: {cfg.variant}, {summary['iterations']} iterations, {summary['images_per_s']:.2f} images/s"
        if summary["final_miou"] is not None:
            line += f"; final val mIoU {100 * summary['final_miou']:.2f}% (best {100 * summary['best_miou']:.2f}%)"
        if summary.get("logit_alpha") is not None:
            line += f"; logit adjustment alpha {summary['logit_alpha']:.1f}"
        print(f"{line}; checkpoint {summary['last']}", flush=True)


def _parse_opt(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ScasegError(f"--model-opt expects KEY=VALUE, not {text!r}")
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(value.lower(), value)


def main() -> None:
    """Console entry point (scaseg-train)."""
    run_cli(app, prog="scaseg-train")


if __name__ == "__main__":
    main()
