"""Channel widths of a pruned SCASeg (``scaseg-prune``): the record a checkpoint's config carries, checked, and read
off a model.

A pruned model is its variant with narrower channels; the widths say which. Keys (all whole numbers):

- ``embed_dims``: the four stage widths C_1..C_4 (the residual stream of each encoder stage, and the decoder's
  query width and D_i);
- ``stem``: the middle width of the stage-1 stem (two stride-2 convs);
- ``attn``, ``mlp``: per stage, per block, the MSCA width (proj_1's output) and the FFN hidden width (fc1's);
- ``pool_enc`` (stages 1-3) and ``pool_dec`` (stages 2-3): the output width of each rho 1x1 conv (stage 4's rho
  is the identity), so each M_i has its own width;
- ``value``: per decoder block, the value width (a multiple of its heads); ``lpm``: the LPM hidden widths
  (None for a model without LPM); ``fuse``: the fusion width E.

Checkpoints are untrusted: ``widths_problem`` refuses anything but whole numbers from 1 to the unpruned width in
the right places, so a file cannot make a model larger than its variant. Only the MSCAN variants have widths.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from torch import nn

LIST_KEYS = ("embed_dims", "pool_enc", "pool_dec", "value")
KEYS = ("embed_dims", "stem", "attn", "mlp", "pool_enc", "pool_dec", "value", "lpm", "fuse")


def full_widths(spec: Mapping[str, Any], lpm: bool) -> dict[str, Any]:
    """The widths of the unpruned variant ``spec`` (scaseg.models.model.VARIANTS): the upper bound of each width."""
    dims = list(spec["embed_dims"])
    return {
        "embed_dims": dims,
        "stem": dims[0] // 2,
        "attn": [[c] * d for c, d in zip(dims, spec["depths"])],
        "mlp": [[int(c * r)] * d for c, r, d in zip(dims, spec["mlp_ratios"], spec["depths"])],
        "pool_enc": dims[:3],
        "pool_dec": dims[1:3],
        "value": dims,
        "lpm": [4 * c for c in dims] if lpm else None,
        "fuse": int(spec["decoder_dim"]),
    }


def widths_problem(widths: Any, spec: Mapping[str, Any], lpm: bool, heads: Any) -> Optional[str]:
    """Why ``widths`` cannot be a pruned model of the variant ``spec``, or None."""
    if spec["encoder"] != "mscan":
        return "channel widths (a pruned model) exist only for the MSCAN variants (scaseg-t/s/b/l)"
    if not isinstance(widths, Mapping) or set(widths) != set(KEYS):
        return f"widths must be a table of exactly {', '.join(KEYS)}"
    full = full_widths(spec, lpm)
    if (widths["lpm"] is None) != (full["lpm"] is None):
        return "widths' lpm must be given exactly when the model has LPM (none for lpm=false)"
    for key in KEYS:
        why = _fits(widths[key], full[key], key)
        if why:
            return why
    for i, (v, h) in enumerate(zip(widths["value"], heads)):
        if v % h:
            return f"widths' value[{i}] is {v}, not a multiple of the block's {h} heads"
    return None


def _fits(value: Any, bound: Any, where: str) -> Optional[str]:
    """Whether ``value`` has the nesting of ``bound`` with whole numbers from 1 to the bound's at every place."""
    if bound is None:
        return None
    if isinstance(bound, list):
        if not isinstance(value, (list, tuple)) or len(value) != len(bound):
            return f"widths' {where} must be a list of {len(bound)} entries"
        for i, (v, b) in enumerate(zip(value, bound)):
            why = _fits(v, b, f"{where}[{i}]")
            if why:
                return why
        return None
    if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= bound):
        return f"widths' {where} is {value!r:.40}, not a whole number from 1 to {bound} (the unpruned width)"
    return None


def plain(widths: Mapping[str, Any]) -> dict[str, Any]:
    """``widths`` as lists and ints only (what a checkpoint's config and JSON hold)."""
    def conv(v: Any) -> Any:
        return [conv(x) for x in v] if isinstance(v, (list, tuple)) else (None if v is None else int(v))

    return {k: conv(widths[k]) for k in KEYS}


def width_layers(model: nn.Module) -> dict[str, Any]:
    """The layer whose output channels are each width, in the widths' nesting: a convolution for every prunable
    width (the root of its channel group, scaseg.prune.core), the value projection (a Linear) for the value widths;
    ``lpm`` None without LPM."""
    enc: Any = getattr(model, "backbone")
    head: Any = getattr(model, "decode_head")
    blocks = [list(getattr(enc, f"block{i}")) for i in range(1, 5)]
    return {
        "embed_dims": [enc.patch_embed1.proj[3]] + [getattr(enc, f"patch_embed{i}").proj for i in range(2, 5)],
        "stem": enc.patch_embed1.proj[0],
        "attn": [[b.attn.proj_1 for b in stage] for stage in blocks],
        "mlp": [[b.mlp.fc1 for b in stage] for stage in blocks],
        "pool_enc": [head.pool_enc[i].proj for i in range(3)],
        "pool_dec": [head.pool_dec[i].proj for i in (1, 2)],
        "value": [b.attn.v for b in head.blocks],
        "lpm": None if head.blocks[0].lpm is None else [b.lpm.fc1 for b in head.blocks],
        "fuse": head.fuse[0],
    }


def widths_of(model: nn.Module) -> dict[str, Any]:
    """The widths of an MSCAN SCASeg as its modules are now (after structured pruning), read off ``width_layers``."""
    def width(layer: Any) -> Any:
        if isinstance(layer, list):
            return [width(x) for x in layer]
        return None if layer is None else int(getattr(layer, "out_channels", None) or layer.out_features)

    return {key: width(layer) for key, layer in width_layers(model).items()}
