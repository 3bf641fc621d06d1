"""Accuracy guard: measure the INT8 model's mIoU against the float model on held-out images and, while the drop
exceeds the budget, keep the most sensitive blocks in float.

mIoU is measured as scaseg-bench measures it (``scaseg.data.metrics``): predictions brought back to each image's
source size, against its label there, or against the float model's prediction there when the images have no labels.

Sensitivity of a block = the output noise (squared logit error relative to the float logits, on the held-out
images) when that block alone is quantized. Blocks are the model's modules as their ONNX node names show them
(``/model/backbone/block1.0/...`` -> ``/model/backbone/block1.0``, see block_of); nodes without a scoped name are
blocks of their own.

When blocks stay float, ``float_cost`` says how much of the compute they keep in float and, for the cpu placement,
what that costs in ONNX Runtime CPU time against the fully quantized file: the export prints it and stores it.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import onnx
from scaseg.progress import progress

from scaseg.calibration import int8
from scaseg.calibration.data import HeldOut
from scaseg.calibration.session import first_output
from scaseg.data.metrics import SegMetrics

BAR = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"


def block_of(node_name: str) -> str:
    """The module a node belongs to: the first two scopes of its name, after scaseg-export's wrapper scope.

    ``/model/backbone/block2.1/attn/proj_1/Conv`` -> ``/model/backbone/block2.1`` (``model`` is the wrapper the
    exporter traces); ``/backbone/block2.1/mlp/fc1/Conv`` -> ``/backbone/block2.1``.
    """
    parts = [p for p in node_name.split("/") if p]
    depth = 3 if parts[:1] == ["model"] else 2
    return "/" + "/".join(parts[:depth]) if node_name.startswith("/") and len(parts) > depth else node_name


def miou(preds: Sequence[np.ndarray], refs: Sequence[np.ndarray], num_classes: int,
         ignore_index: Optional[int] = 255) -> float:
    """mIoU in points (0..100) of label maps against reference label maps of the same sizes."""
    metrics = SegMetrics(num_classes, ignore_index=ignore_index)
    for p, r in zip(preds, refs):
        metrics.update(p, r)
    value = metrics.compute()["miou"]
    return 100.0 * float(value) if np.isfinite(value) else 0.0


@dataclass
class GuardResult:
    """What the guard measured and decided."""

    model: onnx.ModelProto
    reference: str  # "labels" or "fp32 argmax"
    miou_fp32: float
    miou_int8_all: float  # every placed op quantized
    miou_int8: float  # final model
    kept_float_blocks: list[str] = field(default_factory=list)
    kept_float_nodes: list[str] = field(default_factory=list)
    ranking: list[tuple[str, float]] = field(default_factory=list)  # (block, sensitivity), most sensitive first
    # When blocks were kept float: what stays float and what it costs (see float_cost); None otherwise.
    kept_float: Optional[dict[str, Any]] = None

    @property
    def drop(self) -> float:
        return self.miou_fp32 - self.miou_int8

    def float_summary(self) -> dict[str, str]:
        """The export report's lines about the blocks kept float (empty when none were)."""
        kept = self.kept_float
        if not kept:
            return {}
        lines = {"float_compute": (
            f"{kept['blocks_float']} of {kept['blocks']} blocks kept float: {100 * kept['macs_float']:.1f}% of the "
            f"conv/GEMM multiply-accumulates run in float ({100 * kept['macs_float_all_quantized']:.1f}% with every "
            "block quantized)")}
        if kept.get("ms") and kept.get("ms_all_quantized"):
            lines["float_cost"] = (
                f"{kept['ms']:.1f} ms per batch vs {kept['ms_all_quantized']:.1f} ms with every block quantized "
                f"({kept['ms'] / kept['ms_all_quantized']:.2f}x; ONNX Runtime CPU on a calibration batch, median of "
                f"{kept['runs']} runs)")
        return lines


def run_guard(
    fp32: onnx.ModelProto,
    thresholds: dict[str, float],
    target: str,
    heldout: HeldOut,
    num_classes: int,
    output_kind: str,
    max_miou_drop: float,
    *,
    threads: Optional[int] = None,
) -> GuardResult:
    """Quantize ``fp32`` for ``target`` and keep blocks float until the held-out mIoU drop <= ``max_miou_drop``."""

    def outputs(model: onnx.ModelProto) -> list[np.ndarray]:
        run: Callable[[np.ndarray], np.ndarray] = first_output(model, threads=threads)
        return [run(b) for b in heldout.batches]

    ref_out = outputs(fp32)
    ref_labels = heldout.to_source(ref_out, num_classes)
    if heldout.labels is not None:
        reference, truth, ignore = "labels", heldout.labels, 255
        miou_fp32 = miou(ref_labels, truth, num_classes)
    else:  # every pixel of the float model's prediction is a class, 255 included when there are 256
        reference, truth, ignore = "fp32 argmax", ref_labels, None
        miou_fp32 = 100.0  # the float model agrees with itself

    def score(model: onnx.ModelProto) -> float:
        return miou(heldout.to_source(outputs(model), num_classes), truth, num_classes, ignore)

    model = all_quantized = int8.quantize(fp32, thresholds, target)
    miou_all = score(model)
    result = GuardResult(model, reference, miou_fp32, miou_all, miou_all)
    if miou_fp32 - miou_all <= max_miou_drop:
        return result

    placed = [t.node for t in int8.plan(fp32, target)]
    blocks: dict[str, list[str]] = {}
    for name in placed:
        blocks.setdefault(block_of(name), []).append(name)

    def noise(model: onnx.ModelProto) -> float:
        outs = outputs(model)
        if output_kind == "labels":
            return float(np.mean([np.mean(o != r) for o, r in zip(outs, ref_out)]))
        num = sum(float(np.sum((o - r) ** 2)) for o, r in zip(outs, ref_out))
        den = sum(float(np.sum(r ** 2)) for r in ref_out) or 1.0
        return num / den

    ranking = []
    for block in progress(blocks, desc="guard: rank blocks", unit="block", file=sys.stderr, bar_format=BAR):
        others = [n for b, names in blocks.items() if b != block for n in names]
        ranking.append((block, noise(int8.quantize(fp32, thresholds, target, keep_float=others))))
    ranking.sort(key=lambda kv: -kv[1])
    result.ranking = ranking

    keep: list[str] = []
    with progress(total=len(ranking), desc="guard: keep float", unit="block", file=sys.stderr, bar_format=BAR) as bar:
        for block, _ in ranking:
            result.kept_float_blocks.append(block)
            keep += blocks[block]
            model = int8.quantize(fp32, thresholds, target, keep_float=keep)
            result.model, result.miou_int8 = model, score(model)
            bar.update()
            bar.set_postfix_str(f"drop {miou_fp32 - result.miou_int8:.2f}")
            if miou_fp32 - result.miou_int8 <= max_miou_drop:
                break
    result.kept_float_nodes = keep
    result.kept_float = float_cost(fp32, all_quantized, result.model, target, heldout.batches[0], threads=threads)
    result.kept_float.update(blocks_float=len(result.kept_float_blocks), blocks=len(blocks))
    return result


#: Timed runs of each file in float_cost: enough for a median at export, short next to the guard's own runs.
COST_RUNS = 5


def float_cost(fp32: onnx.ModelProto, all_quantized: onnx.ModelProto, mixed: onnx.ModelProto, target: str,
               batch: np.ndarray, *, threads: Optional[int] = None) -> dict[str, Any]:
    """How much of the compute ``mixed`` runs in float, against ``all_quantized``, and (cpu) what it costs in time.

    macs_float / macs_float_all_quantized: shares (0..1) of the conv/GEMM multiply-accumulates of ``fp32`` (one
    run on ``batch``) left in float. ms / ms_all_quantized: median ONNX Runtime CPU time of one run on ``batch``,
    the two files interleaved after one untimed run each; only for the cpu placement (the tensorrt one runs in
    TensorRT, timed by scaseg-bench on the engine), else None.
    """
    macs = int8.weighted_macs(fp32, tuple(batch.shape))
    cost: dict[str, Any] = {"macs_float": round(int8.float_share(macs, mixed), 4),
                            "macs_float_all_quantized": round(int8.float_share(macs, all_quantized), 4),
                            "ms": None, "ms_all_quantized": None, "runs": COST_RUNS}
    if target != "cpu":
        return cost
    runs = [first_output(m, threads=threads) for m in (mixed, all_quantized)]
    laps: list[list[float]] = [[], []]
    for run in runs:
        run(batch)
    for _ in range(COST_RUNS):
        for run, lap in zip(runs, laps):
            start = time.perf_counter()
            run(batch)
            lap.append(1000 * (time.perf_counter() - start))
    cost["ms"], cost["ms_all_quantized"] = (round(float(np.median(lap)), 2) for lap in laps)
    return cost
