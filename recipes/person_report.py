"""Where a model's person errors are: the people of a scaseg-synth split by height, and how many of their pixels a
checkpoint finds; the person precision and what the false positives are labelled.

    python recipes/person_report.py DATA_DIR                      # the split's people only
    python recipes/person_report.py DATA_DIR --model scaseg/weights/scaseg-t-synth.pth

People are counted as connected person regions of the label (touching people are one region); heights are in
pixels of the stored label. The model runs as the trainer validates (scaseg.train.evaluate: stretched to the
checkpoint's input size, labels brought back to the stored size).
"""
from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from scaseg.data.datasets import IGNORE_INDEX, open_dataset
from scaseg.data.synth.world import PERSON
from scaseg.errors import ScasegError

BINS = (0, 16, 32, 48, 64, 96, 128, 10_000)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="a scaseg-synth (Cityscapes-layout) dataset folder")
    p.add_argument("--split", default="val")
    p.add_argument("--model", help="a checkpoint to score (optional)")
    args = p.parse_args()
    try:
        data = open_dataset(args.data, "cityscapes", args.split)
        predict = _predictor(args.model) if args.model else None
    except ScasegError as exc:
        print(f"person_report: error: {exc}", file=sys.stderr)
        sys.exit(2)
    found, total, regions = np.zeros(len(BINS) - 1), np.zeros(len(BINS) - 1), np.zeros(len(BINS) - 1, int)
    pixels = valid = 0
    predicted_as_person = np.zeros(256, np.int64)
    for i in range(len(data)):
        sample = data[i]
        label = sample.label
        mask = label == PERSON
        pixels += int(mask.sum())
        valid += int((label != IGNORE_INDEX).sum())
        pred = predict(sample.image) if predict else None
        if pred is not None:
            predicted_as_person += np.bincount(label[pred == PERSON].ravel(), minlength=256)
        n, comp, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
        for k in range(1, n):
            b = int(np.searchsorted(BINS, stats[k, cv2.CC_STAT_HEIGHT], side="right")) - 1
            region = comp == k
            regions[b] += 1
            total[b] += region.sum()
            if pred is not None:
                found[b] += (pred[region] == PERSON).sum()
    print(f"{args.data} ({args.split}, {len(data)} images): people are {100 * pixels / max(valid, 1):.2f}% of the "
          f"labelled pixels, {int(regions.sum())} person regions")
    print("height (px)   regions  pixels  share" + ("  found" if predict else ""))
    for b in range(len(BINS) - 1):
        span = f"{BINS[b]}-{BINS[b + 1] - 1}" if BINS[b + 1] < 10_000 else f">= {BINS[b]}"
        line = f"{span:>11}  {regions[b]:8d}  {int(total[b]):6d}  {100 * total[b] / max(total.sum(), 1):4.0f}%"
        if predict:
            line += f"  {100 * found[b] / max(total[b], 1):4.1f}%"
        print(line)
    if predict:
        tp = predicted_as_person[PERSON]
        print(f"person recall {100 * found.sum() / max(total.sum(), 1):.1f}%, precision "
              f"{100 * tp / max(predicted_as_person[:IGNORE_INDEX].sum(), 1):.1f}%; predicted person where the label is: "
              + ", ".join(f"{data.classes[c]} {int(v)}" for c, v in enumerate(predicted_as_person[:len(data.classes)])
                          if v and c != PERSON))


def _predictor(path: str):
    import torch

    import scaseg
    from scaseg.train.evaluate import predict_labels

    torch.set_num_threads(1)
    model, info = scaseg.load_model(path)
    model.eval()
    return lambda image: predict_labels(model, image, info.input_size, info.mean, info.std, num_classes=info.num_classes)


if __name__ == "__main__":
    main()
