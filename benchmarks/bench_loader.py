"""Is the data loader the bottleneck? Loader throughput (read + augment + normalise) next to training-step throughput.

Both are measured in one run on the same data, crop and batch; each figure is the median over several
timed rounds. The loader is measured alone (no training competing for the cores) in one process and with
--workers processes; the training step on a fixed batch already in memory.

    python benchmarks/bench_loader.py                      # makes a small synthetic dataset in a temp folder
    python benchmarks/bench_loader.py --data DIR --dataset cityscapes --crop 512 1024 --batch 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from itertools import islice

import torch
from torch.utils.data import DataLoader

import scaseg
from scaseg.cli import SIZE_METAVAR, size_type
from scaseg.data.datasets import open_dataset
from scaseg.train.data import Augment, StreamSampler, TrainSet, collate, unwrap
from scaseg.train.loop import param_groups
from scaseg.train.loss import segmentation_loss


def loader_rate(data, aug: Augment, batch: int, workers: int, rounds: int, batches: int) -> float:
    """Median images/s of the training DataLoader, first batch (worker start-up) excluded."""
    rates = []
    loader = DataLoader(TrainSet(data, aug), batch_size=batch, sampler=StreamSampler(len(data), seed=0),
                        num_workers=workers, collate_fn=collate, drop_last=True,
                        prefetch_factor=4 if workers else None, persistent_workers=bool(workers))
    it = iter(loader)
    unwrap(next(it))
    for _ in range(rounds):
        t = time.perf_counter()
        for b in islice(it, batches):
            unwrap(b)
        rates.append(batches * batch / (time.perf_counter() - t))
    del it
    return statistics.median(rates)


def step_rate(variant: str, num_classes: int, image: torch.Tensor, label: torch.Tensor, rounds: int,
              channels_last: bool = False) -> float:
    """Median images/s of forward + loss + backward + AdamW step on one batch (channels-last: as
    scaseg-train --channels-last keeps the model and the batch)."""
    torch.manual_seed(0)
    model = scaseg.build(variant, num_classes=num_classes).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(param_groups(model, 0.01, 1.0), lr=1e-4)

    def step() -> None:
        loss = segmentation_loss(model(image), label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return image.shape[0] / statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="dataset root (default: a fresh synthetic dataset)")
    p.add_argument("--dataset", default="auto")
    p.add_argument("--variant", default="scaseg-t")
    p.add_argument("--crop", type=size_type, default=(128, 256), metavar=SIZE_METAVAR)
    p.add_argument("--size", type=size_type, default=(128, 256), metavar=SIZE_METAVAR, help="synthetic image size when --data is not given")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            from scaseg.data.synth import write_dataset

            root = f"{tmp}/synth"
            write_dataset(root, num=40, seed=0, size=tuple(args.size), video_frames=0)
        data = open_dataset(root, args.dataset, "train")
        aug = Augment(crop=tuple(args.crop))
        one = loader_rate(data, aug, args.batch, 0, args.rounds, 2)
        many = loader_rate(data, aug, args.batch, args.workers, args.rounds, 4) if args.workers else float("nan")
        image, label = unwrap(next(iter(DataLoader(TrainSet(data, aug), batch_size=args.batch, collate_fn=collate,
                                                   sampler=StreamSampler(len(data), seed=1)))))
        train = step_rate(args.variant, data.num_classes, image, label, args.rounds)
        nhwc = step_rate(args.variant, data.num_classes, image, label, args.rounds, channels_last=True)

    print(f"{args.variant}, crop {args.crop[0]}x{args.crop[1]}, batch {args.batch}, torch threads {torch.get_num_threads()}, "
          f"{args.rounds} rounds (medians)")
    print(f"{'stage':<32}{'images/s':>10}{'x train step':>14}")
    rows = [("loader, 1 process", one), (f"loader, {args.workers} workers", many), ("train step (fwd+bwd+AdamW)", train),
            ("train step, channels-last", nhwc)]
    for name, rate in rows:
        print(f"{name:<32}{rate:>10.2f}{rate / train:>14.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
