"""Structured channel pruning of a trained SCASeg to a MACs target, with torch-pruning's dependency graph.

The graph couples every channel that must go together: an MSCAN stage's residual stream (its patch embedding,
every block's norms, 1x1 convs and layer scales, the stage's LayerNorm, the next embedding and the decoder's
query, rho and fusion inputs), each block's MSCA and FFN widths, the rho outputs through the key/value
concatenations, the LPM widths and the fusion width. Ignored (never pruned): the strip queries and keys (one
channel per head) and the classifier. The value width is coupled with those queries and keys through the attention
product, so it stays as it is.

Pruning is uniform and one-shot: one step removes the same fraction of every prunable group (the least important
channels by the chosen criterion), the smallest fraction whose model has at most the target MACs at the given input
size (found by bisection over widths alone, on the meta device); the pruned model is then rebuilt from its widths
(scaseg.models.widths) and checked to compute
the same logits, so what is saved is exactly what ``scaseg.load_model`` will build.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from scaseg.errors import ScasegError, missing_package
from scaseg.models.model import NUM_HEADS, SCASeg, from_config
from scaseg.models.widths import widths_of
from scaseg.stats import count_macs, count_params

RESOLUTION = 0.001  # the uniform ratio is searched to this precision
MAX_RATIO = 0.9  # never remove more than this fraction of a group
TRACE_SIZE = (64, 64)  # the input the dependency graph is traced with (the graph does not depend on the size)
IMPORTANCE = ("l2", "taylor")


@dataclass
class Cost:
    """MACs (one image at ``size``) and parameters of a model."""

    macs: int
    params: int


def cost(model: nn.Module, size: Sequence[int]) -> Cost:
    """MACs at ``size`` (counted on a meta-device copy built from the config: no arithmetic) and parameters."""
    config = dict(getattr(model, "config"))
    if "widths" not in config:
        config["widths"] = widths_of(model)
    with torch.device("meta"):
        meta = from_config(config).eval()
        return Cost(count_macs(meta, size), count_params(meta))


def _tp() -> Any:
    try:
        import torch_pruning
    except ImportError:
        raise missing_package("torch_pruning", "scaseg-prune", "prune") from None
    return torch_pruning


def _importance(kind: str) -> Any:
    tp = _tp()
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=2)


def check_prunable(model: SCASeg, source: Any) -> None:
    """Refuse, in one sentence, a model this pruner does not handle (a MiT encoder, vanilla attention)."""
    config, backbone = model.config, getattr(model, "backbone")
    if not hasattr(backbone, "block1") or not hasattr(backbone.block1[0], "layer_scale_1"):
        raise ScasegError(f"{source} is a {config['variant']} model; scaseg-prune prunes the MSCAN variants "
                          "(scaseg-t/s/b/l) only")
    if config.get("attention", "strip") != "strip":
        raise ScasegError(f"{source} uses {config['attention']} attention; scaseg-prune prunes strip attention models "
                          "only (their one-channel queries and keys stay, the rest is pruned)")


def _pruner(model: SCASeg, importance: Any, ratio: float, round_to: int) -> Any:
    """torch-pruning's MetaPruner over ``model``: one step removing ``ratio`` of every prunable group."""
    tp = _tp()
    head: Any = model.decode_head
    ignored: list[nn.Module] = [head.classifier]
    for block in head.blocks:
        ignored += [block.attn.q, block.attn.k]  # one channel per head: nothing to prune
    scales = [(p, 0) for name, p in model.named_parameters() if "layer_scale" in name]
    return tp.pruner.MetaPruner(
        model, torch.randn(1, 3, *TRACE_SIZE), importance=importance, pruning_ratio=ratio,
        iterative_steps=1, ignored_layers=ignored, unwrapped_parameters=scales,
        round_to=round_to if round_to > 1 else None,
        num_heads={b.attn.v: h for b, h in zip(head.blocks, NUM_HEADS)},
    )


def shrunk(widths: dict[str, Any], ratio: float, round_to: int = 1) -> dict[str, Any]:
    """The widths torch-pruning leaves after removing ``ratio`` of every prunable group in one step: ``int(n * (1 -
    ratio))`` channels of n (its rule for a local, uniform ratio), rounded down to a multiple of ``round_to`` where
    the group is pruned at all; a group that would lose every channel is left as it is. The value widths are not
    prunable (see the module's docstring). Checked against torch-pruning 1.6 at ratios 0.05 to 0.85."""
    def shrink(v: Any) -> Any:
        if isinstance(v, list):
            return [shrink(x) for x in v]
        n = int(v * (1 - ratio))
        if n < 1 or n >= v:
            return v
        n -= n % round_to
        return n if n >= 1 else v

    return {k: v if k == "value" or v is None else shrink(v) for k, v in widths.items()}


def _cost_of(config: dict[str, Any], widths: dict[str, Any], size: Sequence[int]) -> Cost:
    with torch.device("meta"):
        meta = from_config({**config, "widths": widths}).eval()
        return Cost(count_macs(meta, size), count_params(meta))


def find_ratio(model: SCASeg, size: Sequence[int], keep: float, round_to: int = 1) -> tuple[float, Cost, Cost]:
    """The smallest uniform ratio (to RESOLUTION) whose pruned model has at most ``keep`` of ``model``'s MACs at
    ``size``: a bisection over models built on the meta device (shapes only). Returns (ratio, before, after)."""
    start = widths_of(model)
    before = _cost_of(model.config, start, size)
    target = keep * before.macs
    high = round(MAX_RATIO / RESOLUTION)
    after = _cost_of(model.config, shrunk(start, high * RESOLUTION, round_to), size)
    if after.macs > target:
        raise ScasegError(f"cannot prune to {keep:g} of the MACs: removing {MAX_RATIO:.0%} of every prunable channel "
                          f"group leaves {after.macs / before.macs:.3f} of them")
    low = 0  # invariant: low misses the target (or is 0), high meets it
    while high - low > 1:
        mid = (low + high) // 2
        cost_mid = _cost_of(model.config, shrunk(start, mid * RESOLUTION, round_to), size)
        if cost_mid.macs <= target:
            high, after = mid, cost_mid
        else:
            low = mid
    return high * RESOLUTION, before, after


def prune(model: SCASeg, ratio: float, *, importance: str = "l2", round_to: int = 1,
          gradients: Optional[Callable[[nn.Module], None]] = None) -> SCASeg:
    """A copy of ``model`` with ``ratio`` of every prunable channel group removed (``find_ratio`` gives the ratio of a
    MACs target), the least important channels by ``importance``, rebuilt from its widths.

    ``gradients(model)``: fills the parameters' ``.grad`` (Taylor importance needs them).
    """
    if importance not in IMPORTANCE:
        raise ScasegError(f"unknown importance {importance!r}: expected {' or '.join(IMPORTANCE)}")
    check_prunable(model, model.config["variant"])
    work = copy.deepcopy(model).eval()
    expected = shrunk(widths_of(work), ratio, round_to)
    pruner = _pruner(work, _importance(importance), ratio, round_to)
    if gradients is not None:
        gradients(work)
    pruner.step()
    work.zero_grad(set_to_none=True)
    if widths_of(work) != expected:  # pragma: no cover - torch-pruning changed its rule
        raise RuntimeError(f"torch-pruning left other widths than predicted: {widths_of(work)} vs {expected}")
    return rebuild(work)


def rebuild(pruned: nn.Module) -> SCASeg:
    """The model ``scaseg.load_model`` builds from the pruned one's config and widths, holding its weights; checked to
    compute the same logits (a width the record missed would fail here, not in a user's hands)."""
    config = {**getattr(pruned, "config"), "widths": widths_of(pruned)}
    model = from_config(config).eval()
    model.load_state_dict(pruned.state_dict())
    x = torch.randn(1, 3, *TRACE_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        same = torch.allclose(model(x), pruned.eval()(x), rtol=1e-4, atol=1e-4)
    if not same:  # pragma: no cover - a bug in the widths record, not bad input
        raise RuntimeError("the model rebuilt from the pruned widths computes other logits than the pruned model")
    return model


def taylor_gradients(images: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Callable[[nn.Module], None]:
    """A ``gradients`` callback for ``prune``: the summed cross-entropy gradients over ``images`` (network-size image
    tensors (3, H, W) and label maps (h, w) at any size, 255 ignored), the model in eval mode (BatchNorm statistics
    fixed, as they will be in use)."""
    from scaseg.train.loss import segmentation_loss

    def fill(model: nn.Module) -> None:
        model.eval()
        model.zero_grad(set_to_none=True)
        for image, label in images:
            loss = segmentation_loss(model(image[None]), label[None].long())
            loss.backward()

    return fill
