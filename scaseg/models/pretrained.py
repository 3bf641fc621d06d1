"""Encoder weights under other projects' key names, renamed to ours: losslessly, or refused.

A user brings MSCAN or MiT weights from the original SegNeXt / SegFormer releases (our own names),
mmsegmentation (its MSCAN and MixVisionTransformer classes) or Hugging Face transformers (SegFormer).
``find_encoder`` strips whole-model prefixes, detects the naming from the keys and renames (splitting or
fusing tensors where the layouts differ); ``check_complete`` then demands every encoder tensor of the model,
with its shape. Each naming is one table of renames below.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import torch
from torch import Tensor

from scaseg.errors import ScasegError

Renames = Sequence[tuple[str, str]]  # (regex on their key, replacement giving ours), first match wins


def _stage(match: re.Match[str], template: str) -> str:
    """Fill a template; ``{s}`` is the 0-based stage of group ``s`` plus one (their stages count from 0)."""
    groups = match.groupdict()
    return template.format(**{**groups, "s": int(groups["s"]) + 1} if "s" in groups else groups)


def _qkv_split(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """mmseg's nn.MultiheadAttention in_proj (q; k; v stacked) -> our q and kv (k; v stacked)."""
    out = {}
    for key, value in state.items():
        m = re.match(r"^(.*\.attn)\.qkv\.(weight|bias)$", key)
        if m is None:
            out[key] = value
            continue
        dim = value.shape[0] // 3
        out[f"{m.group(1)}.q.{m.group(2)}"] = value[:dim]
        out[f"{m.group(1)}.kv.{m.group(2)}"] = value[dim:]
    return out


def _kv_fuse(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Separate key and value projections (Hugging Face) -> our one kv projection (k rows, then v rows)."""
    out = {}
    for key, value in state.items():
        m = re.match(r"^(.*\.attn)\.([kv])\.(weight|bias)$", key)
        if m is None:
            out[key] = value
        elif m.group(2) == "k":
            other = state.get(f"{m.group(1)}.v.{m.group(3)}")
            if other is None:
                out[key] = value  # left under a name of its own: the completeness check names it
            else:
                out[f"{m.group(1)}.kv.{m.group(3)}"] = torch.cat([value, other], 0)
        elif f"{m.group(1)}.k.{m.group(3)}" not in state:
            out[key] = value
    return out


def _conv1x1_to_linear(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """mmseg's MixFFN uses 1x1 convolutions where ours (and the original) use linear layers: same numbers."""
    return {
        k: v[:, :, 0, 0] if re.search(r"\.mlp\.fc[12]\.weight$", k) and v.dim() == 4 and v.shape[2:] == (1, 1) else v
        for k, v in state.items()
    }


@dataclass(frozen=True)
class Naming:
    """One project's key names for an encoder: how to recognise them and how to rename them to ours."""

    name: str  # as the load report and errors say it
    family: str  # "mscan" or "mit"
    marker: str  # regex that some key of this naming, and of no other, matches
    renames: Renames = ()
    reshape: tuple[Callable[[dict[str, Tensor]], dict[str, Tensor]], ...] = ()

    @property
    def native(self) -> bool:
        """True for the original releases, whose names are ours."""
        return not self.renames and not self.reshape

    def recognises(self, keys: Sequence[str]) -> bool:
        return any(re.match(self.marker, k) for k in keys)

    def to_ours(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        rules = [(re.compile(p), t) for p, t in self.renames]
        out: dict[str, Tensor] = {}
        for key, value in state.items():
            for pattern, template in rules:
                m = pattern.match(key)
                if m:
                    key = _stage(m, template)
                    break
            out[key] = value
        for step in self.reshape:
            out = step(out)
        return out


_BLOCK = r"(?P<s>\d+)\.(?P<j>\d+)"
_P = r"(?P<p>weight|bias|running_mean|running_var|num_batches_tracked)"

# The order matters only in that each marker is tested in turn; no key matches two markers.
NAMINGS: tuple[Naming, ...] = (
    Naming(
        "mmsegmentation MSCAN", "mscan", r"^block\d+\.\d+\.mlp\.dwconv\.(weight|bias)$",
        # mmseg's Mlp holds the depthwise conv itself; the SegNeXt release wraps it (mlp.dwconv.dwconv).
        renames=[(rf"^block(?P<b>\d+)\.(?P<j>\d+)\.mlp\.dwconv\.{_P}$", "block{b}.{j}.mlp.dwconv.dwconv.{p}")],
    ),
    Naming("SegNeXt MSCAN (original release)", "mscan", r"^patch_embed1\.proj\.0\.weight$"),
    Naming("SegFormer MiT (NVlabs release)", "mit", r"^block\d+\.\d+\.attn\.kv\.weight$"),
    Naming(
        "mmsegmentation MiT", "mit", r"^layers\.\d+\.1\.\d+\.attn\.attn\.in_proj_weight$",
        renames=[
            (rf"^layers\.(?P<s>\d+)\.0\.projection\.{_P}$", "patch_embed{s}.proj.{p}"),
            (rf"^layers\.(?P<s>\d+)\.0\.norm\.{_P}$", "patch_embed{s}.norm.{p}"),
            (rf"^layers\.(?P<s>\d+)\.1\.(?P<j>\d+)\.attn\.attn\.in_proj_(?P<p>weight|bias)$", "block{s}.{j}.attn.qkv.{p}"),
            (rf"^layers\.(?P<s>\d+)\.1\.(?P<j>\d+)\.attn\.attn\.out_proj\.{_P}$", "block{s}.{j}.attn.proj.{p}"),
            (rf"^layers\.(?P<s>\d+)\.1\.(?P<j>\d+)\.attn\.(?P<m>sr|norm)\.{_P}$", "block{s}.{j}.attn.{m}.{p}"),
            (rf"^layers\.(?P<s>\d+)\.1\.(?P<j>\d+)\.(?P<m>norm1|norm2)\.{_P}$", "block{s}.{j}.{m}.{p}"),
            (rf"^layers\.(?P<s>\d+)\.1\.(?P<j>\d+)\.ffn\.layers\.0\.{_P}$", "block{s}.{j}.mlp.fc1.{p}"),
            (rf"^layers\.(?P<s>\d+)\.1\.(?P<j>\d+)\.ffn\.layers\.1\.{_P}$", "block{s}.{j}.mlp.dwconv.dwconv.{p}"),
            (rf"^layers\.(?P<s>\d+)\.1\.(?P<j>\d+)\.ffn\.layers\.4\.{_P}$", "block{s}.{j}.mlp.fc2.{p}"),
            (rf"^layers\.(?P<s>\d+)\.2\.{_P}$", "norm{s}.{p}"),
        ],
        reshape=(_qkv_split, _conv1x1_to_linear),
    ),
    Naming(
        "Hugging Face SegFormer", "mit", r"^encoder\.block\.\d+\.\d+\.attention\.self\.query\.weight$",
        renames=[
            (rf"^encoder\.patch_embeddings\.(?P<s>\d+)\.proj\.{_P}$", "patch_embed{s}.proj.{p}"),
            (rf"^encoder\.patch_embeddings\.(?P<s>\d+)\.layer_norm\.{_P}$", "patch_embed{s}.norm.{p}"),
            (rf"^encoder\.block\.{_BLOCK}\.layer_norm_(?P<n>[12])\.{_P}$", "block{s}.{j}.norm{n}.{p}"),
            (rf"^encoder\.block\.{_BLOCK}\.attention\.self\.query\.{_P}$", "block{s}.{j}.attn.q.{p}"),
            (rf"^encoder\.block\.{_BLOCK}\.attention\.self\.key\.{_P}$", "block{s}.{j}.attn.k.{p}"),
            (rf"^encoder\.block\.{_BLOCK}\.attention\.self\.value\.{_P}$", "block{s}.{j}.attn.v.{p}"),
            (rf"^encoder\.block\.{_BLOCK}\.attention\.self\.sr\.{_P}$", "block{s}.{j}.attn.sr.{p}"),
            (rf"^encoder\.block\.{_BLOCK}\.attention\.self\.layer_norm\.{_P}$", "block{s}.{j}.attn.norm.{p}"),
            (rf"^encoder\.block\.{_BLOCK}\.attention\.output\.dense\.{_P}$", "block{s}.{j}.attn.proj.{p}"),
            (rf"^encoder\.block\.{_BLOCK}\.mlp\.dense1\.{_P}$", "block{s}.{j}.mlp.fc1.{p}"),
            (rf"^encoder\.block\.{_BLOCK}\.mlp\.dwconv\.dwconv\.{_P}$", "block{s}.{j}.mlp.dwconv.dwconv.{p}"),
            (rf"^encoder\.block\.{_BLOCK}\.mlp\.dense2\.{_P}$", "block{s}.{j}.mlp.fc2.{p}"),
            (rf"^encoder\.layer_norm\.(?P<s>\d+)\.{_P}$", "norm{s}.{p}"),
        ],
        reshape=(_kv_fuse,),
    ),
    Naming(
        # transformers 5 renamed the modules in memory; save_pretrained still writes the names above, but a
        # torch.save(model.state_dict()) of a transformers 5 model holds these.
        "Hugging Face SegFormer (transformers 5 module names)", "mit", r"^stages\.\d+\.blocks\.\d+\.attention\.q_proj\.weight$",
        renames=[
            (rf"^stages\.(?P<s>\d+)\.patch_embeddings\.proj\.{_P}$", "patch_embed{s}.proj.{p}"),
            (rf"^stages\.(?P<s>\d+)\.patch_embeddings\.layer_norm\.{_P}$", "patch_embed{s}.norm.{p}"),
            (rf"^stages\.(?P<s>\d+)\.blocks\.(?P<j>\d+)\.layernorm_before\.{_P}$", "block{s}.{j}.norm1.{p}"),
            (rf"^stages\.(?P<s>\d+)\.blocks\.(?P<j>\d+)\.layernorm_after\.{_P}$", "block{s}.{j}.norm2.{p}"),
            (rf"^stages\.(?P<s>\d+)\.blocks\.(?P<j>\d+)\.attention\.(?P<m>[qkv])_proj\.{_P}$", "block{s}.{j}.attn.{m}.{p}"),
            (rf"^stages\.(?P<s>\d+)\.blocks\.(?P<j>\d+)\.attention\.o_proj\.{_P}$", "block{s}.{j}.attn.proj.{p}"),
            (rf"^stages\.(?P<s>\d+)\.blocks\.(?P<j>\d+)\.attention\.sequence_reduction\.sequence_reduction\.{_P}$",
             "block{s}.{j}.attn.sr.{p}"),
            (rf"^stages\.(?P<s>\d+)\.blocks\.(?P<j>\d+)\.attention\.sequence_reduction\.layer_norm\.{_P}$",
             "block{s}.{j}.attn.norm.{p}"),
            (rf"^stages\.(?P<s>\d+)\.blocks\.(?P<j>\d+)\.mlp\.(?P<m>fc1|fc2|dwconv\.dwconv)\.{_P}$", "block{s}.{j}.mlp.{m}.{p}"),
            (rf"^stages\.(?P<s>\d+)\.layer_norm\.{_P}$", "norm{s}.{p}"),
        ],
        reshape=(_kv_fuse,),
    ),
)

# Whole-model prefixes: mmsegmentation segmentors keep the encoder under backbone., Hugging Face task models
# (SegformerForSemanticSegmentation, SegformerForImageClassification) under segformer.
WHOLE_MODEL_PREFIXES = ("backbone.", "segformer.")
# What an encoder-only file may carry beside the encoder: the ImageNet classifier of the original releases.
CLASSIFIER = re.compile(r"^head\.")


@dataclass
class Encoder:
    """Encoder tensors under our names, the naming they came in, and the file's keys that were not encoder."""

    state: dict[str, Tensor]
    naming: Naming
    ignored: list[str] = field(default_factory=list)


def split_whole_model(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """(encoder part with the whole-model prefix stripped, keys outside it), or the state as is if it has none."""
    for prefix in WHOLE_MODEL_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            inside = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            return inside, sorted(k for k in state if not k.startswith(prefix))
    ignored = sorted(k for k in state if CLASSIFIER.match(k))
    return {k: v for k, v in state.items() if not CLASSIFIER.match(k)}, ignored


def detect(keys: Sequence[str]) -> Optional[Naming]:
    """The naming these (prefix-stripped) encoder keys follow, or None."""
    return next((n for n in NAMINGS if n.recognises(keys)), None)


def find_encoder(state: Mapping[str, Tensor]) -> Optional[Encoder]:
    """Encoder weights under our names from any accepted file's state dict, or None if no naming matches."""
    inside, ignored = split_whole_model(state)
    naming = detect(list(inside))
    if naming is None:
        return None
    return Encoder(naming.to_ours(inside), naming, ignored)


def check_complete(encoder: Encoder, want: Mapping[str, Tensor], variant: Optional[str], source: str) -> None:
    """Refuse, in one sentence, unless every tensor of ``want`` is in ``encoder`` with its shape and nothing is left over.

    BatchNorm's ``num_batches_tracked`` counter may be absent: it is no weight, and eval never reads it.
    """
    found = f"matches {variant}" if variant else "matches no SCASeg variant"
    where = f"{source} follows the {encoder.naming.name} naming and {found}"
    missing = [k for k in want if k not in encoder.state and not k.endswith("num_batches_tracked")]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ScasegError(f"{where}, but it lacks the encoder tensor {missing[0]}{more}: refusing a partial load")
    wrong = [k for k, v in encoder.state.items() if k in want and tuple(v.shape) != tuple(want[k].shape)]
    if wrong:
        k = wrong[0]
        raise ScasegError(f"{where}, but its {k} is {tuple(encoder.state[k].shape)} where the model has "
                          f"{tuple(want[k].shape)}: refusing a partial load")
    extra = [k for k in encoder.state if k not in want]
    if extra:
        raise ScasegError(f"{where}, but its tensor {extra[0]} has no place in the model's encoder: refusing a partial load")


# ------------------------------------------------------------------------------------------ Hugging Face folders

HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
HF_INDEX = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
MIT_HEADS = (1, 2, 5, 8)  # SCASeg's MiT heads per stage (scaseg.models.model.NUM_HEADS); not visible in shapes


def hf_folder_files(folder: Path) -> list[Path]:
    """The weight file(s) of a Hugging Face model folder (config.json + model.safetensors / pytorch_model.bin,
    or a sharded index), after checking what shapes cannot show (the attention heads); one sentence otherwise."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ScasegError(f"{folder} is a folder, but not a Hugging Face model folder (it has no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        raise ScasegError(f"cannot read {config_path}: not valid JSON") from None
    if not isinstance(config, dict):
        raise ScasegError(f"cannot read {config_path}: it holds no model configuration")
    heads = config.get("num_attention_heads")
    if config.get("model_type") == "segformer" and heads not in (None, list(MIT_HEADS)):
        raise ScasegError(f"{folder} is a SegFormer with {heads} attention heads per stage; SCASeg's MiT "
                          f"encoders have {list(MIT_HEADS)}")
    for name in HF_WEIGHTS:
        if (folder / name).is_file():
            return [folder / name]
    for name in HF_INDEX:
        if (folder / name).is_file():
            try:
                weight_map = json.loads((folder / name).read_text())["weight_map"]
                return [folder / f for f in sorted(set(weight_map.values()))]
            except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
                raise ScasegError(f"cannot read {folder / name}: not a valid weight index") from None
    raise ScasegError(f"the Hugging Face model folder {folder} holds no weights "
                      f"({' or '.join(HF_WEIGHTS)} is missing)")
