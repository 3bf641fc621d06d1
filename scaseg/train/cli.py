"""`scaseg-train`: train any variant on any supported dataset, in one process or under torchrun."""
from __future__ import annotations

import dataclasses
import signal
import sys
from typing import Any, List, Optional, Tuple

import typer

from scaseg.errors import ScasegError, run_cli, version_option

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  help="Train SCASeg. Under torchrun every process runs this same command (DDP with SyncBN).")

KINDS = ("auto", "cityscapes", "ade20k", "voc", "cocostuff", "folder")


def _on_sigterm(signum: int, frame: Any) -> None:
    # torchrun and job schedulers stop workers with SIGTERM: unwind like Ctrl-C so temporary files are removed.
    raise KeyboardInterrupt


@app.command()
def main_command(
    ctx: typer.Context,
    data: Optional[str] = typer.Option(None, "--data", help="Dataset root folder."),
    dataset: str = typer.Option("auto", "--dataset", help="Layout: " + "|".join(KINDS) + "."),
    variant: str = typer.Option("scaseg-t", "--variant", help="scaseg-t/s/b/l (MSCAN) or scaseg-b0..b5 (MiT)."),
    iters: int = typer.Option(160_000, "--iters", help="Total optimisation steps."),
    out: Optional[str] = typer.Option(None, "--out", help="Output folder (checkpoints, training state, metrics)."),
    batch: int = typer.Option(2, "--batch", help="Images per process and step."),
    crop: Tuple[int, int] = typer.Option((512, 512), "--crop", help="Training crop H W."),
    scale_range: Tuple[float, float] = typer.Option((0.5, 2.0), "--scale-range", help="Random rescale range."),
    base_short: Optional[int] = typer.Option(None, "--base-short", help="Short side the scale range refers to (default: stored size)."),
    lr: float = typer.Option(6e-5, "--lr", help="Peak AdamW learning rate of the encoder."),
    weight_decay: float = typer.Option(0.01, "--weight-decay"),
    head_lr_mult: float = typer.Option(10.0, "--head-lr-mult", help="Decoder learning rate = lr times this."),
    warmup: int = typer.Option(1500, "--warmup", help="Linear warm-up iterations."),
    power: float = typer.Option(1.0, "--power", help="Poly decay power."),
    val_interval: int = typer.Option(4000, "--val-interval", help="Validate every N iterations (0: never)."),
    ckpt_interval: int = typer.Option(0, "--ckpt-interval", help="Save the training state every N iterations (0: with validation)."),
    val_size: Optional[Tuple[int, int]] = typer.Option(None, "--val-size", help="Validate at H W (default: stored size)."),
    train_split: str = typer.Option("train", "--train-split"),
    val_split: str = typer.Option("val", "--val-split"),
    workers: int = typer.Option(2, "--workers", help="DataLoader worker processes per training process."),
    amp: str = typer.Option("auto", "--amp", help="auto (fp16 on CUDA, fp32 on CPU) | off | bf16 | fp16."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Official ImageNet backbone weights file."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue the run in this output folder (options given here override)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    threads: int = typer.Option(0, "--threads", help="torch threads per process (0: default)."),
    model_opt: List[str] = typer.Option([], "--model-opt", help="Extra scaseg.build argument KEY=VALUE (e.g. attention=vanilla)."),
    version: bool = version_option("scaseg-train"),
) -> None:
    """Train SCASeg; prints the final validation line."""
    from scaseg.train.loop import TrainConfig, _load_state, train

    given = {k: v for k, v in ctx.params.items() if k not in ("model_opt",)}
    given["model_kwargs"] = dict(_parse_opt(o) for o in model_opt)
    if resume:
        # The saved run's settings, overridden by the options typed on this command line.
        saved = _load_state(resume)["config"]
        typed = {k for k in given if (src := ctx.get_parameter_source(k)) is not None and src.name == "COMMANDLINE"}
        merged = {**saved, **{k: given[k] for k in typed}, "resume": resume}
        if not model_opt:
            merged["model_kwargs"] = saved.get("model_kwargs", {})
        if "out" not in typed:
            merged["out"] = saved["out"]
        cfg_dict = merged
    else:
        if not data or not out:
            raise ScasegError("scaseg-train needs --data DIR and --out DIR (or --resume OUT_DIR)")
        cfg_dict = given
    if cfg_dict["dataset"] not in KINDS:
        raise ScasegError(f"unknown --dataset {cfg_dict['dataset']!r} (expected one of {', '.join(KINDS)})")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg_dict.items() if k in fields})
    signal.signal(signal.SIGTERM, _on_sigterm)
    summary = train(cfg)
    if summary.get("is_main", True):
        line = f"scaseg-train: {cfg.variant}, {summary['iterations']} iterations, {summary['images_per_s']:.2f} images/s"
        if summary["final_miou"] is not None:
            line += f"; final val mIoU {100 * summary['final_miou']:.2f}% (best {100 * summary['best_miou']:.2f}%)"
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
    sys.exit(main())
