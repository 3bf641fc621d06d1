"""Synthetic scenes: how fast they are made and read back, and how far colour alone gets on them.

Measured in one run, medians over --rounds:
- render: scenes/s of `render_scene` (no file output), and its CPU time per scene (process time, which other
  jobs on a shared machine do not inflate);
- write: images/s of `write_dataset` (render + three PNGs per image, no video);
- read: samples/s of the cityscapes reader on that output (decode image + label, range check);
- metrics: megapixels/s of `SegMetrics.update` on 19 classes;
- difficulty: mIoU on the val split of the best per-pixel colour lookup (quantised-RGB histogram classifier fitted
  on the train split), alone and with the image row as a crude context cue. A model must beat these by far.

    python benchmarks/bench_synth.py                  # 256x512, 60 images
    python benchmarks/bench_synth.py --num 200 --size 512 1024
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from scaseg.cli import SIZE_METAVAR, size_type

from scaseg.data.datasets import open_dataset
from scaseg.data.metrics import SegMetrics
from scaseg.data.synth import render_scene, write_dataset


def _median_rate(work, count: int, rounds: int) -> float:
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def colour_lookup_miou(train, test, bits: int = 5, rows: int = 1) -> float:
    """mIoU of a per-(colour bin, row band) majority-class lookup fitted on ``train`` and scored on ``test``."""
    shift = 8 - bits

    def keys(img):
        q = (img >> shift).astype(np.int64)
        band = (np.arange(img.shape[0]) * rows // img.shape[0])[:, None]
        return ((q[..., 0] << (2 * bits)) | (q[..., 1] << bits) | q[..., 2]) + band * (1 << (3 * bits))

    counts = np.zeros(((1 << (3 * bits)) * rows, 256), np.int64)
    for img, lab in train:
        np.add.at(counts, (keys(img).ravel(), lab.ravel()), 1)
    counts[:, 255] = 0
    table = counts.argmax(1)
    table[counts.sum(1) == 0] = counts.sum(0).argmax()
    metrics = SegMetrics(19)
    for img, lab in test:
        metrics.update(table[keys(img)], lab)
    return metrics.compute()["miou"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num", type=int, default=60, help="images written (train + val)")
    p.add_argument("--size", type=size_type, default=(256, 512), metavar=SIZE_METAVAR)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    size = tuple(args.size)
    print(f"scenes {size[0]}x{size[1]}, {args.num} images, median of {args.rounds} rounds")

    render = _median_rate(lambda: [render_scene(s, size) for s in range(20)], 20, args.rounds)
    cpu = []
    for _ in range(args.rounds):
        start = time.process_time()
        for s in range(20):
            render_scene(s, size)
        cpu.append((time.process_time() - start) / 20 * 1000)
    with tempfile.TemporaryDirectory() as tmp:
        root = f"{tmp}/synth"
        write = _median_rate(lambda: write_dataset(root, args.num, seed=0, size=size, video_frames=0, progress=False),
                             args.num, args.rounds)
        train, val = open_dataset(root, "cityscapes", "train"), open_dataset(root, "cityscapes", "val")
        read = _median_rate(lambda: [train[i] for i in range(len(train))], len(train), args.rounds)
        train_pairs = [(s.image, s.label) for s in (train[i] for i in range(len(train)))]
        val_pairs = [(s.image, s.label) for s in (val[i] for i in range(len(val)))]

    rng = np.random.default_rng(0)
    pred = rng.integers(0, 19, size=(4, *size), dtype=np.uint8)
    label = rng.integers(0, 19, size=(4, *size), dtype=np.uint8)
    metrics = SegMetrics(19)
    mpix = _median_rate(lambda: metrics.update(pred, label), 4 * size[0] * size[1] / 1e6, args.rounds)

    colour = colour_lookup_miou(train_pairs, val_pairs)
    colour_row = colour_lookup_miou(train_pairs, val_pairs, rows=8)
    print(f"{'render_scene':<28} {render:8.1f} scenes/s   ({statistics.median(cpu):.1f} ms CPU per scene)")
    print(f"{'write_dataset (3 PNGs each)':<28} {write:8.1f} images/s")
    print(f"{'cityscapes reader':<28} {read:8.1f} samples/s   ({read / write:.1f}x the writing rate)")
    print(f"{'SegMetrics.update':<28} {mpix:8.1f} Mpixel/s")
    print(f"colour-only lookup mIoU on val ({len(train_pairs)} train images): {100 * colour:.1f}%")
    print(f"colour + row-band lookup mIoU on val:                 {100 * colour_row:.1f}%")


if __name__ == "__main__":
    main()
