"""Save and load SCASeg checkpoints: our format (.pth / .safetensors), mmsegmentation-style files, encoder weights.

Encoder weights come in any naming scaseg.models.pretrained knows (the original releases, mmsegmentation, Hugging
Face, as a file or a Hugging Face model folder) and load losslessly or not at all.

Checkpoints are untrusted input: ``torch.load(..., weights_only=True)`` or safetensors, never a full unpickle.

Our format is ``{"format": "scaseg", "version": 1, "config": {model config + ModelInfo fields}, "state_dict": ...}``;
a ``.safetensors`` file holds the same state dict with the config JSON in its metadata.

Over 400 lines: saving, reading and loading share the format's rules and the LoadReport, and apart they would
import each other.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, cast

import torch
from torch import Tensor, nn

from scaseg.models.model import NUM_HEADS, VARIANTS, SCASeg, build, from_config
from scaseg.models.widths import widths_problem
from scaseg.models.pretrained import NAMINGS, Encoder, check_complete, find_encoder, hf_folder_files
from scaseg.cli import require_file
from scaseg.errors import ScasegError
from scaseg.fileio import atomic_path, write_error
from scaseg.metadata import ModelInfo

logger = logging.getLogger(__name__)

FORMAT = "scaseg"
VERSION = 1


@dataclass
class LoadReport:
    """What a load did: keys the model wanted but the file lacked, keys the file had that the model has not."""

    source: str
    kind: str  # "scaseg", "mmseg", "encoder"
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # expected extras, e.g. an ImageNet classifier head
    naming: str = ""  # whose key names the encoder came in, e.g. "Hugging Face SegFormer"

    @property
    def clean(self) -> bool:
        return not self.missing and not self.unexpected

    def summary(self) -> str:
        parts = [f"{len(self.missing)} missing", f"{len(self.unexpected)} unexpected"]
        if self.ignored:
            parts.append(f"{len(self.ignored)} ignored ({_preview(self.ignored)})")
        named = f" ({self.naming} names)" if self.naming else ""
        text = f"loaded {self.kind} checkpoint {self.source}{named}: " + ", ".join(parts)
        if self.missing:
            text += f"; missing: {_preview(self.missing)}"
        if self.unexpected:
            text += f"; unexpected: {_preview(self.unexpected)}"
        return text


def _preview(keys: Sequence[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


# --------------------------------------------------------------------------------------------------- saving


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    class_names: Optional[Sequence[str]] = None,
    palette: Optional[Sequence[Sequence[int]]] = None,
    input_size: Optional[Sequence[int]] = None,
    extra: Optional[Mapping[str, Any]] = None,
    half: bool = False,
) -> Path:
    """Write ``model`` with its config embedded, atomically; ``.safetensors`` paths get safetensors. Returns the path.

    ``half``: store the float32 parameters as float16 (about half the file; buffers such as BatchNorm statistics
    stay float32). ``load_model`` builds a float32 model and upcasts them, so no caller needs to know.
    """
    model = getattr(model, "module", model)  # DDP / DataParallel wrappers
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "variant" not in config:
        raise ScasegError("save_checkpoint expects a SCASeg model built by scaseg.build (it carries no config)")
    info = ModelInfo(
        variant=config["variant"],
        num_classes=int(config["num_classes"]),
        class_names=list(class_names or []),
        palette=[tuple(c) for c in (palette or [])],  # type: ignore[misc]
        input_size=tuple(input_size) if input_size else None,  # type: ignore[arg-type]
        extra=dict(extra or {}),
    )
    full_config = {**info.to_dict(), **config}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        params = {name for name, _ in model.named_parameters()}
        state = {k: v.half() if k in params and v.dtype == torch.float32 else v for k, v in state.items()}
        overflow = [k for k in params if not torch.isfinite(state[k]).all()]
        if overflow:
            raise ScasegError(f"cannot store {overflow[0]} as float16: a value is beyond its range (65504); save without half")
    path = Path(path).expanduser()
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={"format": FORMAT, "version": str(VERSION), "config": json.dumps(full_config)})
        else:
            torch_save({"format": FORMAT, "version": VERSION, "config": full_config, "state_dict": state}, tmp, path)
    return path


def torch_save(obj: Any, tmp: Path, dest: Path) -> None:
    """torch.save to ``tmp`` (atomic_path's temporary for ``dest``); a failed write (full disk) is one sentence.

    PyTorch's zip writer reports a short write as a RuntimeError ("PytorchStreamWriter failed writing file").
    """
    try:
        torch.save(obj, tmp)
    except (OSError, RuntimeError) as exc:
        raise write_error(dest, exc) from None


# --------------------------------------------------------------------------------------------------- reading


def check_readable(path: str | os.PathLike) -> Path:
    """Refuse, in one sentence, a checkpoint path that is missing, a device or empty (before any work); a folder
    passes (a Hugging Face model folder; _read says what is wrong with any other folder)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    require_file(p, "checkpoint")
    if p.stat().st_size == 0:
        raise ScasegError(f"the checkpoint {p} is empty (0 bytes)")
    return p


# A pickle that names a function or class outside the allow-list: torch words it "Unsupported global: GLOBAL
# posix.system" (2.4-2.5) or "Trying to load unsupported GLOBAL posix.system whose module posix is blocked" (2.6+);
# compare without case. Random bytes fail with "Unsupported operand" instead: corrupt, not hostile.
_REFUSED_GLOBAL = re.compile(r"unsupported global|not an allowed global", re.I)


def _read(path: Path, map_location: Any) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """Return (top-level object, safetensors metadata) of a checkpoint file, or raise one clear sentence.

    A Hugging Face model folder reads as the tensors of its weight file(s).
    """
    if path.is_dir():
        merged: dict[str, Tensor] = {}
        for file in hf_folder_files(path):
            obj, _ = _read(file, map_location)
            merged.update(_tensors(obj, file))
        return merged, {}
    check_readable(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise ScasegError(f"cannot read {path}: not a valid safetensors file ({str(exc).splitlines()[0]})") from None
        if map_location not in (None, "cpu"):
            tensors = {k: v.to(map_location) for k, v in tensors.items()}
        return tensors, meta
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the one sentence below says enough
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # A well-formed pickle that names a class outside the allow-list, versus bytes that are no pickle at all.
        if _REFUSED_GLOBAL.search(str(exc)):
            raise ScasegError(
                f"refusing {path}: the file holds Python objects (classes or functions, not only tensors and plain "
                "data) that safe loading refuses to run; checkpoints are untrusted and loaded with weights_only=True"
            ) from None
        raise ScasegError(f"cannot read {path}: not a PyTorch checkpoint, or the file is corrupt") from None
    except MemoryError:
        raise
    except Exception:
        # Bytes that are no checkpoint make the unpickler fail in any way it can: IndexError (random bytes),
        # KeyError (text), struct.error, UnicodeDecodeError, RuntimeError (a broken zip)... all mean the same.
        raise ScasegError(f"cannot read {path}: not a PyTorch checkpoint, or the file is corrupt") from None
    if not isinstance(obj, Mapping):
        raise ScasegError(f"{path} is not a model checkpoint: it holds a {type(obj).__name__}, not a dict of weights")
    return obj, {}


# Where the weights sit in a wrapped file, best first. The averaged (EMA) weights of timm (state_dict_ema) and of
# DeiT/ConvNeXt-style files (model_ema) win over the raw ones. mmengine's EMAHook already swaps the averaged weights
# into state_dict and keeps the raw ones in ema_state_dict, so that one is read only when it is all there is.
WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model", "model_state", "ema_state_dict")


def _tensors(obj: Mapping[str, Any], path: Path) -> dict[str, Tensor]:
    """Find the state dict inside common wrappers (see WRAPPERS) and strip ``module.``."""
    for key in WRAPPERS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, Tensor) for v in inner.values()):
            # mmengine's averaged model counts its updates in "steps", beside the module.* weights.
            obj = {k: v for k, v in inner.items() if not (key == "ema_state_dict" and k == "steps")}
            break
    state = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise ScasegError(f"{path} is not a model checkpoint: it holds no weight tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def infer_variant(encoder_state: Mapping[str, Tensor]) -> Optional[str]:
    """Name the variant whose encoder matches these (our-name) weights, or None if none does."""
    if "patch_embed1.proj.0.weight" in encoder_state:
        family = "mscan"
    elif "patch_embed1.proj.weight" in encoder_state and any(k.endswith("attn.kv.weight") for k in encoder_state):
        family = "mit"
    else:
        return None
    try:
        dims = tuple(int(encoder_state[f"norm{i}.weight"].shape[0]) for i in range(1, 5))
    except KeyError:
        return None
    depths = []
    for i in range(1, 5):
        blocks = {int(m.group(1)) for k in encoder_state if (m := re.match(rf"block{i}\.(\d+)\.", k))}
        depths.append(max(blocks) + 1 if blocks else 0)
    for name, spec in VARIANTS.items():
        if spec["encoder"] == family and tuple(spec["embed_dims"]) == dims and tuple(spec["depths"]) == tuple(depths):
            return name
    return None


# --------------------------------------------------------------------------------------------------- loading


def _load_into(model: nn.Module, state: Mapping[str, Tensor], report: LoadReport, prefix: str = "") -> LoadReport:
    """load_state_dict(strict=False) after checking shapes; mismatched shapes are refused in one sentence."""
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        k = wrong[0]
        raise ScasegError(
            f"the checkpoint {report.source} does not fit this model: {len(wrong)} tensor(s) differ in shape "
            f"(first: {prefix}{k} is {tuple(state[k].shape)}, the model has {tuple(own[k].shape)})"
        )
    result = model.load_state_dict(dict(state), strict=False)
    report.missing = [prefix + k for k in result.missing_keys]
    report.unexpected = [prefix + k for k in result.unexpected_keys]
    if not report.clean:
        logger.warning(report.summary())
    return report


def load_backbone(model: nn.Module, path: str | os.PathLike, *, map_location: Any = "cpu") -> LoadReport:
    """Load encoder weights into ``model.backbone``, losslessly, from any accepted file or Hugging Face folder.

    Accepted: the original SegNeXt / SegFormer releases, mmsegmentation (MSCAN, MixVisionTransformer) and Hugging
    Face SegFormer names (scaseg.models.pretrained), encoder-only or inside a whole model (``backbone.`` /
    ``segformer.``), whose other parts are returned as ``ignored``. Every encoder tensor must be there with its
    shape, and usable (check_weights): anything less, or an encoder of another variant, is refused in one sentence.
    """
    path = Path(path).expanduser()
    obj, _ = _read(path, map_location)
    state = _tensors(obj, path)
    encoder = find_encoder(state)
    if encoder is None:
        raise ScasegError(f"{path} holds no MSCAN or MiT encoder weights: its keys (first: {next(iter(state))}) follow "
                          f"none of the accepted namings ({', '.join(n.name for n in NAMINGS)})")
    check_weights(encoder.state, path)  # what is loaded; the parts of a whole model that are ignored may be anything
    return _load_encoder(model, encoder, path)


def _load_encoder(model: nn.Module, encoder: Encoder, path: Path) -> LoadReport:
    """Encoder weights (read and checked) into ``model.backbone``, after checking they are its variant's, whole."""
    model = getattr(model, "module", model)
    backbone = cast(nn.Module, model.backbone)
    want = getattr(model, "config", {}).get("variant")
    found = infer_variant(encoder.state)
    if want and found and found != want and not _same_encoder(found, want):
        raise ScasegError(f"{path} holds the {found} encoder ({encoder.naming.name} names), but the model is {want}")
    check_complete(encoder, backbone.state_dict(), found, str(path))
    backbone.load_state_dict(encoder.state, strict=False)  # strict but for num_batches_tracked (check_complete)
    return LoadReport(str(path), "encoder", ignored=encoder.ignored, naming=encoder.naming.name)


def _same_encoder(a: str, b: str) -> bool:
    sa, sb = VARIANTS[a], VARIANTS[b]
    return sa["encoder"] == sb["encoder"] and sa["embed_dims"] == sb["embed_dims"] and sa["depths"] == sb["depths"]


def _mmseg_classes(meta: Any, num_classes: int) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and palette from an mmseg ``meta`` (0.x: CLASSES/PALETTE; 1.x: dataset_meta.classes/palette)."""
    if not isinstance(meta, Mapping):
        return [], []
    inner = meta.get("dataset_meta")
    src: Mapping[str, Any] = inner if isinstance(inner, Mapping) else meta
    names = src.get("classes") or src.get("CLASSES") or []
    palette = src.get("palette") or src.get("PALETTE") or []
    names = [str(n) for n in names] if len(names) == num_classes else []
    try:
        palette = [tuple(int(v) for v in c) for c in palette] if len(palette) >= num_classes else []
    except (TypeError, ValueError):
        palette = []
    return names, palette  # type: ignore[return-value]


def load_model(
    path: str | os.PathLike,
    *,
    variant: Optional[str] = None,
    num_classes: Optional[int] = None,
    map_location: Any = "cpu",
    strict: bool = True,
    allow_nonfinite: bool = False,
    **build_kwargs: Any,
) -> tuple[SCASeg, ModelInfo]:
    """Load a checkpoint as ``(model, info)``; the model is in eval mode and ``model.load_report`` says what loaded.

    Accepts our format (.pth/.safetensors), mmsegmentation-style SCASeg files (``state_dict`` with ``backbone.`` /
    ``decode_head.`` prefixes, ``meta``) and encoder weights in any naming ``load_backbone`` accepts, from an
    encoder-only file, another project's whole model (its decoder ignored) or a Hugging Face folder; the decoder is
    then left randomly initialised.
    ``variant`` / ``num_classes`` are inferred from the file; when given they must agree with it.
    ``strict``: refuse a file that lacks tensors of the model or holds tensors it has not (naming the first few),
    an encoder-only file included; ``strict=False`` loads what fits and reports the rest. ``allow_nonfinite``:
    accept weights check_weights refuses (NaN/Inf values, negative BatchNorm variances: refused by default, as
    such a model outputs garbage that no later check is sure to catch).
    ``build_kwargs`` (attention, lpm, dropout...) apply to files that carry no config.
    """
    path = Path(path).expanduser()
    obj, meta = _read(path, map_location)
    config = _scaseg_config(obj, meta, path)
    kind = FORMAT if config else ""
    state = _tensors(obj, path)
    if not allow_nonfinite:
        check_weights(state, path)
    encoder = find_encoder(state)
    # A decode head is ours only beside an encoder in our names; another project's model brings only its encoder.
    has_head = any(k.startswith("decode_head.") for k in state) and encoder is not None and encoder.naming.native
    if not kind:
        kind = "mmseg" if has_head else "encoder"

    found = _variant_of(config, encoder, path, variant)
    state, classes = _class_count(kind, config, state, path, num_classes)
    if kind == FORMAT:
        info = ModelInfo.from_dict({**config, "variant": found, "num_classes": classes}, path)
        model = from_config({**config, "num_classes": classes})
    else:
        names, palette = _mmseg_classes(obj.get("meta"), classes)
        info = ModelInfo.from_dict({"variant": found, "num_classes": classes, "class_names": names,
                                    "palette": palette}, path)
        model = build(found, classes, **build_kwargs)
    if strict:  # before loading, which logs the mismatch as a warning
        _check_strict(model, kind, state, path)
    model.load_report = _load_weights(model, kind, state, encoder, path)  # type: ignore[assignment]
    return model.eval(), info


def _variant_of(config: Mapping[str, Any], encoder: Optional[Encoder], path: Path, variant: Optional[str]) -> str:
    """The file's SCASeg variant (its config's, else its encoder's); refused where none matches or it is not
    ``variant``."""
    found = config.get("variant") or (infer_variant(encoder.state) if encoder else None)
    if found is None and encoder is not None:
        raise ScasegError(f"{path} follows the {encoder.naming.name} naming, but its encoder matches no SCASeg variant "
                          f"({', '.join(VARIANTS)})")
    if found is None:
        raise ScasegError(f"{path} holds no SCASeg, MSCAN or MiT weights that match a known variant ({', '.join(VARIANTS)})")
    if variant is not None and str(variant).lower() != found:
        raise ScasegError(f"{path} is a {found} checkpoint, not {variant}")
    return str(found)


def _class_count(kind: str, config: Mapping[str, Any], state: dict[str, Tensor], path: Path,
                 num_classes: Optional[int]) -> tuple[dict[str, Tensor], int]:
    """The state in our head's names and the number of classes (the file's, else ``num_classes``, else 19)."""
    if kind == "mmseg":
        # mmseg decode heads name their classifier conv_seg.
        state = {re.sub(r"^decode_head\.conv_seg\.", "decode_head.classifier.", k): v for k, v in state.items()}
    head_classes = state.get("decode_head.classifier.weight") if kind != "encoder" else None
    found_classes = config.get("num_classes") or (int(head_classes.shape[0]) if head_classes is not None else None)
    if num_classes is not None and found_classes is not None and int(num_classes) != int(found_classes):
        raise ScasegError(f"{path} was trained for {found_classes} classes, not {num_classes}")
    return state, int(found_classes or num_classes or 19)


def _check_strict(model: SCASeg, kind: str, state: Mapping[str, Tensor], path: Path) -> None:
    """Refuse an encoder-only file, or one whose tensors are not exactly the model's (the auxiliary head aside)."""
    own = set(model.state_dict())
    given = set(state) - {k for k in state if k.startswith("auxiliary_head.")}
    if kind == "encoder" or own != given:
        raise ScasegError(_partial_message(LoadReport(str(path), kind, missing=sorted(own - given),
                                                      unexpected=sorted(given - own))))


def _load_weights(model: SCASeg, kind: str, state: dict[str, Tensor], encoder: Optional[Encoder],
                  path: Path) -> LoadReport:
    """Load ``state`` (or, for an encoder-only file, its encoder) into ``model``; the report of what loaded."""
    if kind == "encoder":
        assert encoder is not None  # an encoder-only file names its variant through its encoder (_variant_of)
        report = _load_encoder(model, encoder, path)
        # The decoder stays randomly initialised: say so in the report rather than pass silently.
        report.missing += [f"decode_head.{k}" for k in model.decode_head.state_dict()]
        logger.warning(report.summary())
        return report
    ignored = sorted(k for k in state if k.startswith("auxiliary_head."))  # mmseg training-only head
    state = {k: v for k, v in state.items() if k not in set(ignored)}
    return _load_into(model, state, LoadReport(str(path), kind, ignored=ignored))


def _scaseg_config(obj: Mapping[str, Any], meta: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The embedded config of a checkpoint in our format, checked (ModelInfo fields, model options); {} for others."""
    if meta.get("format") != FORMAT and obj.get("format") != FORMAT:
        return {}
    try:
        config = json.loads(meta["config"]) if meta else dict(obj["config"])
    except (KeyError, TypeError, ValueError, RecursionError):
        config = None
    if not isinstance(config, dict) or "variant" not in config or "num_classes" not in config:
        raise ScasegError(f"{path} says it is a scaseg checkpoint but its config is missing or unreadable")
    ModelInfo.from_dict(config, path)
    why = _model_options_problem(config)
    if why:
        raise ScasegError(f"the model config of {path} is invalid: {why}")
    return config


def _model_options_problem(config: Mapping[str, Any]) -> Optional[str]:
    """Why the model options of a config (what from_config builds with) cannot build a model, or None."""
    if not isinstance(config.get("attention", "strip"), str):
        return f"attention must be a string, got {config['attention']!r}"
    if not isinstance(config.get("lpm", True), bool):
        return f"lpm must be true or false, got {config['lpm']!r}"
    for name in ("drop_path_rate", "dropout", "attn_drop"):
        value = config.get(name)
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and 0 <= value <= 1):
            return f"{name} must be a number from 0 to 1, got {value!r}"
    spec = VARIANTS.get(str(config.get("variant")).lower())
    if config.get("widths") is not None and spec is not None:  # a pruned model (scaseg-prune)
        return widths_problem(config["widths"], spec, config.get("lpm", True), NUM_HEADS)
    return None


def _partial_message(report: LoadReport) -> str:
    if report.kind == "encoder":
        return (f"{report.source} holds only encoder weights, so the decoder would be random; train it first "
                "(scaseg-train --pretrained), or load it anyway with strict=False (scaseg-export --allow-partial)")
    parts = []
    if report.missing:
        parts.append(f"lacks {len(report.missing)} of the model's tensors ({_preview(report.missing)})")
    if report.unexpected:
        parts.append(f"holds {len(report.unexpected)} the model has not ({_preview(report.unexpected)})")
    return (f"the checkpoint {report.source} does not match the {report.kind} model: it " + " and ".join(parts)
            + "; load it anyway with strict=False (scaseg-export --allow-partial)")


def check_weights(state: Mapping[str, Tensor], path: Path) -> None:
    """Refuse, naming the first bad tensor, weights that make a model output garbage: NaN or infinite values, or a
    BatchNorm ``running_var`` with negative entries (its square root at eval is NaN, and argmax of NaN is class 0).

    One pass over the state dict; integer buffers (``num_batches_tracked``) are skipped.
    """
    bad: list[tuple[str, str]] = []
    for key, value in state.items():
        if not value.is_floating_point():
            continue
        if not bool(torch.isfinite(value).all()):
            bad.append((key, "holds NaN or infinite values"))
        elif key.endswith("running_var") and bool((value < 0).any()):
            bad.append((key, "is a BatchNorm variance with negative entries"))
    if bad:
        key, why = bad[0]
        more = f" (and {len(bad) - 1} more tensor(s))" if len(bad) > 1 else ""
        raise ScasegError(f"the checkpoint {path} is unusable: its tensor {key} {why}{more}; "
                          "a model with such weights outputs garbage")
