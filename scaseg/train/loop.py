"""The trainer: AdamW, linear warm-up then poly decay, cross-entropy, periodic mIoU, atomic checkpoints, exact resume.

Output folder:
- ``last.pth`` / ``best.pth``: model checkpoints (fp32 state dict + embedded config, scaseg.save_checkpoint);
- ``train_state.pt``: everything ``--resume`` needs (model, optimizer, grad scaler, iteration, RNG states);
- ``metrics.json``: the validation history.
Every file is written under a temporary name and renamed, so a killed run never leaves a corrupt one. Which
folder a run may write, and how a state is read back, is scaseg.train.state's.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

import scaseg
from scaseg.data.datasets import IGNORE_INDEX, SegDataset, open_dataset
from scaseg.checkpoint import torch_save
from scaseg.errors import Interrupted, ScasegError
from scaseg.fileio import atomic_path, created_folders, refuse_overwrite
from scaseg.progress import progress as progress_bar, write
from scaseg.train import dist as D, distill, logit_adjust
from scaseg.train.config import TrainConfig
from scaseg.train.data import Augment, StreamSampler, TrainSet, collate, unwrap
from scaseg.train.evaluate import evaluate
from scaseg.train.loss import balanced_class_weights, segmentation_loss
from scaseg.train.state import (OUTPUT_FILES, STATE_FILE, STATE_FORMAT, STATE_VERSION, FolderLock, check_classes,
                                check_new_output, check_resume_output, check_same_run, load_state, restore_model,
                                restore_optimizer, run_folder)


def lr_factor(it: int, *, total: int, warmup: int, warmup_ratio: float = 1e-6, power: float = 1.0) -> float:
    """Learning-rate multiplier at iteration ``it``: poly decay (1 - it/total)^power, scaled linearly from warmup_ratio to 1 over the first ``warmup`` iterations (mmseg's convention)."""
    poly = (1.0 - min(it, total) / total) ** power
    if it < warmup:
        return poly * (warmup_ratio + (1.0 - warmup_ratio) * it / warmup)
    return poly


def param_groups(model: nn.Module, weight_decay: float, head_lr_mult: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on norms, biases and other 1-D tensors; the decoder learns head_lr_mult times faster."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim > 1 and "pos_block" not in name
        head = not name.startswith("backbone.")
        groups.setdefault((decay, head), []).append(p)
    return [
        {"params": ps, "weight_decay": weight_decay if decay else 0.0, "lr_mult": head_lr_mult if head else 1.0}
        for (decay, head), ps in sorted(groups.items())
    ]


def resolve_amp(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype, or None for full fp32. auto: fp16 on CUDA; fp32 on CPU (bf16 is only fast where the CPU has bf16 instructions)."""
    if amp == "auto":
        return torch.float16 if device.type == "cuda" else None
    if amp == "off":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ScasegError("--amp fp16 needs a CUDA GPU; use --amp bf16 or --amp off on a CPU")
    return torch.float16 if amp == "fp16" else torch.bfloat16


def _open_labelled(data: str, kind: str, split: str) -> SegDataset:
    """A dataset split training can use: labelled, with at least one class; else one sentence naming the problem."""
    ds = open_dataset(data, kind, split)
    if len(ds) == 0:
        raise ScasegError(f"the {split} split of the {ds.kind} dataset at {data} holds no images")
    if not ds.has_labels:
        raise ScasegError(f"the {ds.kind} dataset at {data} has no labels for its {split} split; training needs "
                          "labelled images (layouts: docs/data.md)")
    if ds.num_classes < 1:
        raise ScasegError(f"the {ds.kind} dataset at {data} names no classes (an empty classes.txt?)")
    return ds


def _rng_state(env: D.DistEnv) -> list[Any]:
    """Every rank's torch RNG state (dropout, drop-path), gathered on all ranks."""
    mine = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if env.device.type == "cuda" else None}
    if not env.distributed:
        return [mine]
    everyone: list[Any] = [None] * env.world_size
    torch.distributed.all_gather_object(everyone, mine)
    return everyone


class Trainer:
    """One training run; ``run()`` returns a summary dict (iterations, best and final mIoU, checkpoint paths)."""

    def __init__(self, cfg: TrainConfig, env: D.DistEnv) -> None:
        self.cfg, self.env = cfg.checked(), env
        self.lock: Optional[FolderLock] = None
        self.state: Optional[dict[str, Any]] = None
        if cfg.resume:
            # The run continues in the folder it was given, never in the one its state recorded: a copied or moved
            # run must not write into the original.
            self.out = run_folder(cfg.resume)
            check_resume_output(self.out, cfg.out)
            self._hold_folder()  # before reading: a state another writer is replacing would be stale
            self.state = load_state(self.out)
            check_same_run(self.state["config"], self.cfg)
        else:
            self.out = Path(cfg.out).expanduser()
        # Inputs first, then the output: a run refused for its data leaves no folder behind. A new run's folder
        # appears when training starts and goes again if the run ends before its first checkpoint.
        self.train_data = _open_labelled(cfg.data, cfg.dataset, cfg.train_split)
        self.val_data = _open_labelled(cfg.data, cfg.dataset, cfg.val_split) if cfg.val_interval else None
        self.num_classes = self.train_data.num_classes
        if cfg.pretrained or cfg.init or cfg.distill:
            refuse_overwrite([self.out / n for n in OUTPUT_FILES], [cfg.pretrained, cfg.init, cfg.distill])
        if self.state is None:
            check_new_output(self.out)
        torch.manual_seed(cfg.seed + env.rank)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.saved_iteration: Optional[int] = None
        self.class_weight = (balanced_class_weights(self.train_data, self.num_classes).to(env.device)
                             if cfg.class_weight == "balanced" else None)
        model = distill.student(cfg, self.state, self.num_classes, self.out / STATE_FILE)
        self.teacher = distill.load_teacher(cfg.distill, model, env.device, cfg.channels_last) if cfg.distill else None
        if cfg.pretrained and self.state is None:
            report = scaseg.load_backbone(model, cfg.pretrained)
            if env.is_main:  # a result, not progress: printed with -q too
                print(f"scaseg-train: {report.summary()}", file=sys.stderr, flush=True)
        self.model = D.prepare_model(model, env, channels_last=cfg.channels_last)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.amp = resolve_amp(cfg.amp, env.device)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg.weight_decay, cfg.head_lr_mult), lr=cfg.lr,
                                           betas=(0.9, 0.999))
        self.scaler = torch.amp.GradScaler(env.device.type, enabled=self.amp == torch.float16)
        self.iteration = 0
        self.samples = 0  # global count of training samples drawn from the stream, all ranks together
        self.best_miou = -1.0
        self.history: list[dict[str, Any]] = []
        self.logit_adjustment: Optional[dict[str, Any]] = None  # logit_adjust.fit's result once applied
        if self.state is not None:
            self._restore(self.state)

    # -- the output folder ----------------------------------------------------------------------------------

    def _hold_folder(self) -> None:
        """Rank 0 holds the run folder's lock while it writes there: a second run into it is refused."""
        if self.env.is_main:
            if self.lock is None:
                self.lock = FolderLock(self.out)
            self.lock.acquire()

    def _release_folder(self) -> None:
        if self.lock is not None:
            self.lock.release()

    # -- resume ---------------------------------------------------------------------------------------------

    def _restore(self, state: dict[str, Any]) -> None:
        """Continue from a checked state (scaseg.train.state.load_state); what does not fit this run is one sentence."""
        source = self.out / STATE_FILE
        check_classes(state, list(self.train_data.classes), self.cfg.data)
        restore_model(D.unwrap_model(self.model), state["model"], source, self.cfg.variant)
        restore_optimizer(self.optimizer, state["optimizer"], source)
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.samples = int(state["samples"])
        self.best_miou = float(state["best_miou"])
        self.history = list(state["history"])
        self.logit_adjustment = state.get("logit_adjustment")
        rngs = state["rng"]
        if len(rngs) == self.env.world_size:  # another world size cannot replay the same dropout draws anyway
            torch.set_rng_state(rngs[self.env.rank]["cpu"])
            if self.env.device.type == "cuda" and rngs[self.env.rank]["cuda"] is not None:
                try:
                    torch.cuda.set_rng_state(rngs[self.env.rank]["cuda"])
                except RuntimeError:  # another GPU model's generator: its draws cannot be replayed here
                    pass

    # -- checkpoints ----------------------------------------------------------------------------------------

    def _save_model(self, name: str) -> Path:
        path = self.out / name
        data = self.train_data
        scaseg.save_checkpoint(D.unwrap_model(self.model), path, class_names=list(data.classes),
                               palette=list(data.palette), input_size=tuple(self.cfg.crop),
                               extra={"iteration": self.iteration, "dataset": self.cfg.dataset,
                                      "best_miou": self.best_miou, "logit_adjustment": self.logit_adjustment})
        return path

    def _save_state(self, rngs: list[Any]) -> None:
        # Absolute paths, so that a resume from another directory finds the data; the output folder is a note
        # only (a resume writes where it is pointed).
        config = {**dataclasses.asdict(self.cfg), "out": str(self.out.absolute()),
                  **{k: str(Path(v).expanduser().absolute())
                     for k in ("data", "init", "distill") if (v := getattr(self.cfg, k))}}
        state = {
            "format": STATE_FORMAT, "version": STATE_VERSION, "iteration": self.iteration, "samples": self.samples,
            "num_classes": self.num_classes, "classes": list(self.train_data.classes),
            "config": config, "model": D.unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": rngs, "best_miou": self.best_miou, "history": self.history,
            "logit_adjustment": self.logit_adjustment, "model_config": D.unwrap_model(self.model).config,
        }
        with atomic_path(self.out / STATE_FILE) as tmp:
            torch_save(state, tmp, self.out / STATE_FILE)
        # The model file comes second: a kill between the two leaves a state one step ahead, never behind.
        self._save_model("last.pth")
        with atomic_path(self.out / "metrics.json") as tmp:
            tmp.write_text(json.dumps(self.history, indent=1))

    def checkpoint(self) -> None:
        rngs = _rng_state(self.env)  # a collective: every rank takes part
        if self.env.is_main:
            self._save_state(rngs)
        D.barrier(self.env)
        self.saved_iteration = self.iteration

    def _score_val(self) -> dict[str, Any]:
        assert self.val_data is not None
        return evaluate(D.unwrap_model(self.model), self.val_data, self.env, size=self.cfg.val_size, amp=self.amp,
                        progress=not self.cfg.quiet)

    def validate(self) -> dict[str, Any]:
        result = self._score_val()
        miou = float(result["miou"])
        improved = miou > self.best_miou
        self.best_miou = max(self.best_miou, miou)
        self.history.append({"iteration": self.iteration, "miou": miou, "pixel_acc": float(result["pixel_acc"]),
                             "iou": [None if math.isnan(v) else float(v) for v in result["iou"]]})
        if improved and self.saved_iteration is None and self.state is None:
            # A new run's first file is its state (what marks the folder as a scaseg-train run), so best.pth waits.
            self.checkpoint()
        if self.env.is_main:
            if improved:
                self._save_model("best.pth")
            write(f"iter {self.iteration}: val mIoU {100 * miou:.2f}% pixel acc {100 * result['pixel_acc']:.2f}% "
                       f"(best {100 * self.best_miou:.2f}%)", file=sys.stderr)
        return result

    def adjust_logits(self) -> dict[str, Any]:
        """Fit the logit adjustment on the train split and fold it into the classifier (every rank alike)."""
        assert self.class_weight is not None
        model = D.unwrap_model(self.model)
        # The validation mIoU the shift is removed from, for the record.
        unadjusted = float(self._score_val()["miou"]) if self.val_data is not None else None
        result = logit_adjust.fit(model, self.train_data, self.class_weight, self.env, images=self.cfg.logit_adjust_images,
                                  size=self.cfg.val_size, amp=self.amp, progress=not self.cfg.quiet)
        logit_adjust.apply(model, self.class_weight, result["alpha"])
        result["iteration"] = self.iteration
        result["val_miou_unadjusted"] = unadjusted
        self.logit_adjustment = result
        if self.env.is_main:
            scores = dict(zip(result["alphas"], result["miou"]))
            write(f"iter {self.iteration}: logit adjustment alpha {result['alpha']:.1f} (train mIoU on {result['images']} "
                  f"images {100 * scores.get(0.0, float('nan')):.2f}% unadjusted, {100 * scores[result['alpha']]:.2f}% "
                  f"adjusted" + ("" if unadjusted is None else f"; val mIoU unadjusted {100 * unadjusted:.2f}%") + ")",
                  file=sys.stderr)
        return result

    def _kept(self) -> str:
        """What an interrupted run leaves, for the one line scaseg-train prints."""
        if self.saved_iteration is None:
            if (self.out / STATE_FILE).is_file():
                return f" at iteration {self.iteration}; {self.out} keeps the state it was resumed from"
            return f" at iteration {self.iteration}, before the first checkpoint; nothing was saved"
        return (f" at iteration {self.iteration}; kept {self.out / 'last.pth'} and the training state of iteration "
                f"{self.saved_iteration} (continue with --resume {self.out})")

    # -- the loop -------------------------------------------------------------------------------------------

    def _loader(self) -> DataLoader:
        cfg, env = self.cfg, self.env
        (crop_h, crop_w), (low, high) = cfg.crop, cfg.scale_range
        aug = Augment(crop=(crop_h, crop_w), scale_range=(low, high), base_short=cfg.base_short,
                      ignore_index=IGNORE_INDEX)
        sampler = StreamSampler(len(self.train_data), seed=cfg.seed, rank=env.rank, world_size=env.world_size,
                                start=self.samples)
        if cfg.workers:
            # Workers are forked. A fork taken while OpenCV's thread pool is busy inherits its locks held, and the
            # child hangs for good on its first pool call (seen: cv2.setNumThreads in a worker, stuck in
            # pthread_cond_destroy). With the pool off in this process, there is nothing to inherit; this process
            # only resizes validation images, so the cost is nil.
            import cv2

            cv2.setNumThreads(0)
        return DataLoader(TrainSet(self.train_data, aug), batch_size=cfg.batch, sampler=sampler, drop_last=True,
                          num_workers=cfg.workers, collate_fn=collate, pin_memory=env.device.type == "cuda",
                          worker_init_fn=_worker_init, persistent_workers=False,
                          # Its own generator: drawing worker seeds must not advance the global RNG (exact resume).
                          generator=torch.Generator().manual_seed(cfg.seed),
                          prefetch_factor=4 if cfg.workers else None)

    def step(self, image: torch.Tensor, label: torch.Tensor) -> float:
        """One optimisation step; returns the loss."""
        factor = lr_factor(self.iteration, total=self.cfg.iters, warmup=self.cfg.warmup,
                           warmup_ratio=self.cfg.warmup_ratio, power=self.cfg.power)
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * group["lr_mult"] * factor
        image = image.to(self.env.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        label = label.to(self.env.device, non_blocking=True)
        autocast = torch.autocast(self.env.device.type, dtype=self.amp) if self.amp else nullcontext()
        with autocast:
            logits = self.model(image)
        loss = segmentation_loss(logits, label, self.class_weight, ohem_thresh=self.cfg.ohem_thresh,
                                 ohem_min_kept=self.cfg.ohem_min_kept)
        if self.teacher is not None:
            loss = loss + distill.teacher_term(self.teacher, image, logits, self.cfg, self.amp)
        if not torch.isfinite(loss):
            raise ScasegError(f"the loss is {loss.item()} at iteration {self.iteration}; lower --lr or check the labels")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.iteration += 1
        self.samples += self.cfg.batch * self.env.world_size
        return float(loss.detach())

    def run(self, until: Optional[int] = None) -> dict[str, Any]:
        """Train to cfg.iters, or stop after iteration ``until`` with the state saved there (a planned pause)."""
        cfg, env = self.cfg, self.env
        stop = cfg.iters if until is None else min(until, cfg.iters)
        val_every = cfg.val_interval
        ckpt_every = cfg.ckpt_interval or val_every
        self.model.train()
        start, start_it = time.perf_counter(), self.iteration
        # A new folder that the run leaves empty (refused, failed or interrupted before its first checkpoint) goes.
        with created_folders(self.out):
            self._hold_folder()
            if self.env.is_main and self.state is None and self.saved_iteration is None:
                check_new_output(self.out)  # again, under the lock: another run may have claimed it meanwhile
            try:
                self._train_until(stop, val_every, ckpt_every)
            finally:
                self._release_folder()
        elapsed = time.perf_counter() - start
        done = self.iteration - start_it
        final = self.history[-1] if self.history and self.history[-1]["iteration"] == self.iteration else None
        return {
            "is_main": env.is_main,
            "iterations": self.iteration,
            "seconds": elapsed,
            "images_per_s": done * cfg.batch * env.world_size / elapsed if elapsed > 0 else float("nan"),
            "final_miou": final["miou"] if final else None,
            "best_miou": self.best_miou if self.history else None,
            "last": str(self.out / "last.pth"),
            "best": str(self.out / "best.pth") if self.history else None,
            "logit_alpha": self.logit_adjustment["alpha"] if self.logit_adjustment else None,
        }

    def _train_until(self, stop: int, val_every: int, ckpt_every: int) -> None:
        cfg = self.cfg
        batches = iter(self._loader())
        bar = progress_bar(total=cfg.iters, initial=self.iteration, desc="train", unit="it", file=sys.stderr,
                           dynamic_ncols=True, disable=not self.env.is_main or cfg.quiet)
        try:
            while self.iteration < stop:
                image, label = unwrap(next(batches))
                loss = self.step(image, label)
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}", refresh=False)
                bar.update(1)
                last = self.iteration == cfg.iters
                if last and cfg.logit_adjust and self.logit_adjustment is None:
                    self.adjust_logits()
                if val_every and (self.iteration % val_every == 0 or last):
                    self.validate()
                due = last or self.iteration == stop or (ckpt_every and self.iteration % ckpt_every == 0)
                if due and self.saved_iteration != self.iteration:  # validate() may have saved it already
                    self.checkpoint()
        except KeyboardInterrupt:
            bar.close()
            raise Interrupted(self._kept()) from None
        finally:
            bar.close()


def _worker_init(_: int) -> None:
    # Each loader worker is one more process on the same cores: keep torch single-threaded there (OpenCV's pool
    # is already off, see Trainer._loader).
    torch.set_num_threads(1)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training as this process's share of the job torchrun describes (one process without torchrun)."""
    env = D.setup(cfg.device)
    try:
        return Trainer(cfg, env).run()
    finally:
        D.teardown()


__all__ = ["TrainConfig", "Trainer", "train", "evaluate", "lr_factor", "param_groups", "resolve_amp"]
