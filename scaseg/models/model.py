"""The assembled SCASeg model (encoder + SCASeg head), its variants as data, and ``build``.

``SCASeg.state_dict()`` keys are ``backbone.*`` (official encoder names) and ``decode_head.*``, the
mmsegmentation layout, so mmseg-style whole-model files map onto it one to one.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from scaseg.models.decoder import ATTENTION_KINDS, SCASegHead, init_decoder_weights
from scaseg.models.mit import MixVisionTransformer
from scaseg.models.mscan import MSCAN
from scaseg.models.widths import plain, widths_problem
from scaseg.errors import ScasegError

_MSCAN_WIDE = (64, 128, 320, 512)
_MIT_WIDE = (64, 128, 320, 512)

# A variant is data: encoder family and its dimensions, plus the decoder width E.
VARIANTS: dict[str, dict[str, Any]] = {
    "scaseg-t": dict(encoder="mscan", embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2), mlp_ratios=(8, 8, 4, 4), decoder_dim=128, drop_path_rate=0.1),
    "scaseg-s": dict(encoder="mscan", embed_dims=_MSCAN_WIDE, depths=(2, 2, 4, 2), mlp_ratios=(8, 8, 4, 4), decoder_dim=256, drop_path_rate=0.1),
    "scaseg-b": dict(encoder="mscan", embed_dims=_MSCAN_WIDE, depths=(3, 3, 12, 3), mlp_ratios=(8, 8, 4, 4), decoder_dim=256, drop_path_rate=0.1),
    "scaseg-l": dict(encoder="mscan", embed_dims=_MSCAN_WIDE, depths=(3, 5, 27, 3), mlp_ratios=(8, 8, 4, 4), decoder_dim=512, drop_path_rate=0.3),
    "scaseg-b0": dict(encoder="mit", embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2), decoder_dim=128, drop_path_rate=0.1),
    "scaseg-b1": dict(encoder="mit", embed_dims=_MIT_WIDE, depths=(2, 2, 2, 2), decoder_dim=256, drop_path_rate=0.1),
    "scaseg-b2": dict(encoder="mit", embed_dims=_MIT_WIDE, depths=(3, 4, 6, 3), decoder_dim=256, drop_path_rate=0.1),
    "scaseg-b3": dict(encoder="mit", embed_dims=_MIT_WIDE, depths=(3, 4, 18, 3), decoder_dim=256, drop_path_rate=0.1),
    "scaseg-b4": dict(encoder="mit", embed_dims=_MIT_WIDE, depths=(3, 8, 27, 3), decoder_dim=256, drop_path_rate=0.1),
    "scaseg-b5": dict(encoder="mit", embed_dims=_MIT_WIDE, depths=(3, 6, 40, 3), decoder_dim=256, drop_path_rate=0.1),
}
# Heads per stage for the MiT encoder and for the decoder's cross-attention (stages 1..4).
NUM_HEADS = (1, 2, 5, 8)
MIT_SR_RATIOS = (8, 4, 2, 1)


def build_encoder(spec: dict[str, Any], drop_path_rate: float | None = None,
                  widths: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """Build the encoder a variant names; its state-dict keys are the official checkpoint names.

    ``widths``: a pruned model's channel widths (scaseg.models.widths; MSCAN only).
    """
    dpr = spec["drop_path_rate"] if drop_path_rate is None else drop_path_rate
    if spec["encoder"] == "mscan":
        dims = widths["embed_dims"] if widths else spec["embed_dims"]
        return MSCAN(dims, spec["depths"], spec["mlp_ratios"], drop_path_rate=dpr, widths=widths)
    return MixVisionTransformer(spec["embed_dims"], spec["depths"], NUM_HEADS, MIT_SR_RATIOS, (4, 4, 4, 4), drop_path_rate=dpr)


class SCASeg(nn.Module):
    """Encoder + SCASeg decoder; ``forward`` returns logits (B, num_classes, H, W) at the input size."""

    def __init__(
        self,
        variant: str,
        num_classes: int = 19,
        attention: str = "strip",
        lpm: bool = True,
        drop_path_rate: float | None = None,
        dropout: float = 0.1,
        attn_drop: float = 0.0,
        widths: Optional[Mapping[str, Any]] = None,
    ):
        super().__init__()
        spec = _variant_spec(variant)
        if widths is not None:
            why = widths_problem(widths, spec, bool(lpm), NUM_HEADS)
            if why:
                raise ScasegError(f"cannot build a pruned {variant}: {why}")
            widths = plain(widths)
        if attention not in ATTENTION_KINDS:
            raise ScasegError(f"unknown attention {attention!r}: expected one of {', '.join(ATTENTION_KINDS)}")
        if int(num_classes) < 1:
            raise ScasegError(f"num_classes must be a positive integer, got {num_classes}")
        dpr = spec["drop_path_rate"] if drop_path_rate is None else float(drop_path_rate)
        self.config: dict[str, Any] = {
            "variant": variant,
            "num_classes": int(num_classes),
            "attention": attention,
            "lpm": bool(lpm),
            "drop_path_rate": dpr,
            "dropout": float(dropout),
            "attn_drop": float(attn_drop),
        }
        if widths is not None:  # a pruned model (scaseg-prune); the unpruned config has no such entry
            self.config["widths"] = widths
        self.num_classes = int(num_classes)
        self.backbone = build_encoder(spec, dpr, widths)
        self.decode_head = SCASegHead(
            widths["embed_dims"] if widths else spec["embed_dims"], int(num_classes),
            widths["fuse"] if widths else spec["decoder_dim"], NUM_HEADS, attention, bool(lpm),
            dropout=dropout, attn_drop=attn_drop, widths=widths, scale_dims=spec["embed_dims"],
        )
        init_decoder_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.decode_head(self.backbone(x))  # B, K, H/4, W/4 (rounded up)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _variant_spec(name: str) -> dict[str, Any]:
    key = str(name).lower()
    if key not in VARIANTS:
        raise ScasegError(f"unknown model variant {name!r}: expected one of {', '.join(VARIANTS)}")
    return copy.deepcopy(VARIANTS[key])


def build(name: str, num_classes: int = 19, attention: str = "strip", lpm: bool = True, **kwargs: Any) -> SCASeg:
    """Build a SCASeg variant (``scaseg-t/s/b/l`` on MSCAN, ``scaseg-b0``..``b5`` on MiT), randomly initialised.

    kwargs: ``drop_path_rate``, ``dropout`` (before the classifier), ``attn_drop``, ``widths`` (a pruned model's
    channel widths, scaseg.models.widths).
    """
    known = {"drop_path_rate", "dropout", "attn_drop", "widths"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ScasegError(f"unknown build option(s) {', '.join(unknown)}: expected any of {', '.join(sorted(known))}")
    return SCASeg(str(name).lower(), num_classes, attention, lpm, **kwargs)


def from_config(config: dict[str, Any]) -> SCASeg:
    """Rebuild a model from its ``config`` dict (as embedded in a checkpoint); unknown entries are ignored."""
    opts = {k: config[k] for k in ("drop_path_rate", "dropout", "attn_drop", "widths") if config.get(k) is not None}
    return build(
        config["variant"], int(config["num_classes"]), config.get("attention", "strip"), bool(config.get("lpm", True)), **opts
    )
