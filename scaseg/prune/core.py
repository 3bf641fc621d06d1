"""Structured channel pruning of a trained SCASeg to a MACs target or by per-stage ratios, with torch-pruning's
dependency graph.

The graph couples every channel that must go together: an MSCAN stage's residual stream (its patch embedding,
every block's norms, 1x1 convs and layer scales, the stage's LayerNorm, the next embedding and the decoder's
query, rho and fusion inputs), each block's MSCA and FFN widths, the rho outputs through the key/value
concatenations, the LPM widths and the fusion width. Ignored (never pruned): the strip queries and keys (one
channel per head) and the classifier. The value width is coupled with those queries and keys through the attention
product, so it stays as it is.

Pruning is one-shot: each prunable group loses a fraction of its channels (the least important by the chosen
criterion): the same fraction everywhere for a MACs target (the smallest whose model has at most the target MACs at
the given input size, found by bisection over widths alone, on the meta device), or per stage (``Ratios``). The
pruned model is then rebuilt from its widths (scaseg.models.widths) and checked to compute the same logits, so what
is saved is exactly what ``scaseg.load_model`` will build.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from scaseg.errors import ScasegError, missing_package
from scaseg.models.model import SCASeg, from_config
from scaseg.models.widths import width_layers, widths_of
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


@dataclass(frozen=True)
class Ratios:
    """The fraction of channels removed, per encoder stage. ``stage[i]``: from stage i+1's residual width C_i (with
    the stem's middle width for stage 1), every block's MSCA width and the stage's rho output widths; the fusion
    width counts as stage 1's (it runs at stride 4). ``hidden[i]``: from stage i+1's FFN and LPM hidden widths (4-8x
    the stage's width, at its resolution). Uniform pruning is the same ratio everywhere."""

    stage: tuple[float, float, float, float]
    hidden: tuple[float, float, float, float]

    @classmethod
    def uniform(cls, ratio: float) -> "Ratios":
        return cls((ratio,) * 4, (ratio,) * 4)

    def text(self) -> str:
        """How the summary line names it."""
        if len(set(self.stage + self.hidden)) == 1:
            return f"{self.stage[0]:.3f} of every prunable channel group removed"
        return ("removed per stage: " + ",".join(f"{r:g}" for r in self.stage) + " of the widths, "
                + ",".join(f"{r:g}" for r in self.hidden) + " of the hidden widths")


def _keep(n: int, ratio: float, round_to: int) -> int:
    """torch-pruning's rule for a local ratio: ``int(n * (1 - ratio))`` channels of n, rounded down to a multiple
    of ``round_to``; a group that would lose every channel (or none) is left as it is."""
    k = int(n * (1 - ratio))
    if k < 1 or k >= n:
        return n
    k -= k % round_to
    return k if k >= 1 else n


def shrunk(widths: dict[str, Any], ratios: "Ratios | float", round_to: int = 1) -> dict[str, Any]:
    """The widths left after removing ``ratios`` (a Ratios, or one uniform fraction) of every prunable group: each
    width by ``_keep`` with its stage's ratio. The value widths are not prunable (see the module's docstring)."""
    r = ratios if isinstance(ratios, Ratios) else Ratios.uniform(ratios)

    def keep(n: int, ratio: float) -> int:
        return _keep(n, ratio, round_to)

    return {
        "embed_dims": [keep(n, r.stage[i]) for i, n in enumerate(widths["embed_dims"])],
        "stem": keep(widths["stem"], r.stage[0]),
        "attn": [[keep(n, r.stage[i]) for n in stage] for i, stage in enumerate(widths["attn"])],
        "mlp": [[keep(n, r.hidden[i]) for n in stage] for i, stage in enumerate(widths["mlp"])],
        "pool_enc": [keep(n, r.stage[i]) for i, n in enumerate(widths["pool_enc"])],
        "pool_dec": [keep(n, r.stage[i + 1]) for i, n in enumerate(widths["pool_dec"])],
        "value": widths["value"],
        "lpm": None if widths["lpm"] is None else [keep(n, r.hidden[i]) for i, n in enumerate(widths["lpm"])],
        "fuse": keep(widths["fuse"], r.stage[0]),
    }


def _cost_of(config: dict[str, Any], widths: dict[str, Any], size: Sequence[int]) -> Cost:
    with torch.device("meta"):
        meta = from_config({**config, "widths": widths}).eval()
        return Cost(count_macs(meta, size), count_params(meta))


def cost_of_ratios(model: SCASeg, size: Sequence[int], ratios: Ratios, round_to: int = 1) -> tuple[Cost, Cost]:
    """(before, after) of pruning ``model`` by ``ratios``, counted on the meta device; refuses ratios that remove
    nothing."""
    start = widths_of(model)
    after_widths = shrunk(start, ratios, round_to)
    if after_widths == start:
        raise ScasegError("these ratios remove no channel (every width would stay, after rounding to whole channels"
                          + (f" and multiples of {round_to})" if round_to > 1 else ")"))
    return _cost_of(model.config, start, size), _cost_of(model.config, after_widths, size)


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


def _pairs(layers: Any, widths: Any) -> list[tuple[nn.Conv2d, int]]:
    """(root convolution, width to keep) for every layer of ``width_layers``, flattened."""
    if isinstance(layers, list):
        return [pair for layer, w in zip(layers, widths) for pair in _pairs(layer, w)]
    return [(layers, int(widths))]


def prune(model: SCASeg, ratios: "Ratios | float", *, importance: str = "l2", round_to: int = 1,
          gradients: Optional[Callable[[nn.Module], None]] = None) -> SCASeg:
    """A copy of ``model`` with ``ratios`` (a Ratios, or one uniform fraction: ``find_ratio`` gives the one of a
    MACs target) of every prunable channel group removed, the least important channels of each group by
    ``importance``, rebuilt from its widths.

    Each width is one group of torch-pruning's dependency graph, reached from the convolution that makes it (its
    root, ``scaseg.models.widths.width_layers``): every importance is computed first (on the unpruned model), then each group is pruned.
    ``gradients(model)``: fills the parameters' ``.grad`` (Taylor importance needs them).
    """
    if importance not in IMPORTANCE:
        raise ScasegError(f"unknown importance {importance!r}: expected {' or '.join(IMPORTANCE)}")
    check_prunable(model, model.config["variant"])
    tp = _tp()
    work = copy.deepcopy(model).eval()
    expected = shrunk(widths_of(work), ratios, round_to)
    scales = [(p, 0) for name, p in work.named_parameters() if "layer_scale" in name]
    graph = tp.DependencyGraph().build_dependency(work, torch.randn(1, 3, *TRACE_SIZE), unwrapped_parameters=scales)
    if gradients is not None:
        gradients(work)
    rank = _importance(importance)
    layers = width_layers(work)
    plan = []
    for key in layers:
        if key == "value":
            continue  # not prunable (the module's docstring)
        for conv, keep in _pairs(layers[key], expected[key]):
            n = conv.out_channels
            if keep < n:
                group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, list(range(n)))
                order = torch.argsort(rank(group).cpu())
                plan.append((conv, sorted(order[: n - keep].tolist())))
    for conv, idxs in plan:
        graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs).prune()
    work.zero_grad(set_to_none=True)
    if widths_of(work) != expected:  # pragma: no cover - a group reached more than its width
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
