"""Encoder weights from Hugging Face and mmsegmentation, checked against the reference implementations themselves.

Each test builds the reference encoder from its public package, sets every parameter and BatchNorm statistic to
random non-trivial values, saves it the way that project saves it, loads it through scaseg's loader and compares our
encoder's four feature maps with the reference's own forward pass.

How the references are imported (pyproject's dev extra installs them; CPU only, no second torch):
- Hugging Face: ``transformers`` (SegformerModel, SegformerForSemanticSegmentation; ``save_pretrained``).
- mmsegmentation 1.2.2 with mmengine and mmcv-lite (mmcv without compiled ops). ``import mmseg.models`` imports every
  model of mmseg, and some need mmcv's compiled ops, which mmcv-lite lacks. The backbone files themselves need only
  mmcv.cnn, mmengine and mmseg.registry, so ``_mmseg_backbones`` registers the three package folders
  ``mmseg.models``, ``mmseg.models.utils`` and ``mmseg.models.backbones`` as empty packages (their __init__ files,
  which import everything, are skipped) and then imports mmseg's own ``backbones/mit.py``, ``backbones/mscan.py``
  and the two utils modules they use, unchanged, from the installed package.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

import scaseg
from scaseg.errors import ScasegError


@pytest.fixture(autouse=True)
def _one_thread_no_grad():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        yield
    torch.set_num_threads(before)


def _jitter(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random non-trivial values in every parameter and every BatchNorm statistic."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=g))
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.5 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            m.num_batches_tracked.fill_(1000)
    return module.eval()


def _assert_same_maps(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> None:
    assert len(ours) == len(theirs) == 4
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        assert b.abs().max() > 0.1, i  # the comparison means something only on maps that are not near zero
        assert (a - b).abs().max().item() < 1e-4, (i, (a - b).abs().max().item())


def _image(h: int = 64, w: int = 96) -> torch.Tensor:
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(7))


# ----------------------------------------------------------------------------------------------- Hugging Face

transformers = pytest.importorskip("transformers", reason="transformers (the Hugging Face reference) is not installed")

# The hub's nvidia/mit-b0 and mit-b1 configs (SegformerConfig's defaults are mit-b0's).
HF_CONFIGS = {
    "scaseg-b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], decoder_hidden_size=256),
    "scaseg-b1": dict(hidden_sizes=[64, 128, 320, 512], depths=[2, 2, 2, 2], decoder_hidden_size=256),
}


def _hf_model(variant: str, task: bool = False) -> Any:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerModel

    torch.manual_seed(0)
    config = SegformerConfig(**HF_CONFIGS[variant], num_labels=5)
    return _jitter((SegformerForSemanticSegmentation if task else SegformerModel)(config), seed=1)


def _hf_maps(hf: Any, x: torch.Tensor) -> list[torch.Tensor]:
    encoder = getattr(hf, "segformer", hf)
    return list(encoder(pixel_values=x, output_hidden_states=True).hidden_states)


@pytest.mark.parametrize("variant", ["scaseg-b0", "scaseg-b1"])
def test_hugging_face_folder_loads_and_matches_segformer(variant: str, tmp_path: Path) -> None:
    hf = _hf_model(variant)
    hf.save_pretrained(tmp_path / "hf")
    model = scaseg.build(variant)
    report = scaseg.load_backbone(model, tmp_path / "hf")
    assert report.naming == "Hugging Face SegFormer" and report.clean and report.ignored == []
    assert "Hugging Face SegFormer" in report.summary()
    x = _image()
    _assert_same_maps(model.backbone.eval()(x), _hf_maps(hf, x))


def test_hugging_face_single_files_bin_and_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    hf = _hf_model("scaseg-b0")
    hf.save_pretrained(tmp_path / "hf")
    state = load_file(tmp_path / "hf" / "model.safetensors")  # the layout the hub's files have
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "hf" / "model.safetensors").rename(tmp_path / "mit-b0.safetensors")
    x = _image()
    want = _hf_maps(hf, x)
    for path in (tmp_path / "pytorch_model.bin", tmp_path / "mit-b0.safetensors"):
        model = scaseg.build("scaseg-b0")
        assert scaseg.load_backbone(model, path).naming == "Hugging Face SegFormer"
        _assert_same_maps(model.backbone.eval()(x), want)
    # A folder whose weights are a pytorch_model.bin, as older hub repositories have.
    (tmp_path / "pytorch_model.bin").rename(tmp_path / "hf" / "pytorch_model.bin")
    model = scaseg.build("scaseg-b0")
    scaseg.load_backbone(model, tmp_path / "hf")
    _assert_same_maps(model.backbone.eval()(x), want)


def test_hugging_face_transformers5_module_names(tmp_path: Path) -> None:
    hf = _hf_model("scaseg-b0")
    torch.save(hf.state_dict(), tmp_path / "hf5.pth")  # what torch.save of a transformers 5 model holds
    model = scaseg.build("scaseg-b0")
    report = scaseg.load_backbone(model, tmp_path / "hf5.pth")
    assert report.naming.startswith("Hugging Face SegFormer (transformers 5")
    x = _image()
    _assert_same_maps(model.backbone.eval()(x), _hf_maps(hf, x))


def test_hugging_face_segmentation_model_loads_its_encoder_and_ignores_its_head(tmp_path: Path) -> None:
    hf = _hf_model("scaseg-b0", task=True)
    hf.save_pretrained(tmp_path / "seg", max_shard_size="300KB")  # sharded: model.safetensors.index.json
    assert (tmp_path / "seg" / "model.safetensors.index.json").is_file()
    model, info = scaseg.load_model(tmp_path / "seg", num_classes=3, strict=False)  # its decoder is not ours
    report = model.load_report
    assert (info.variant, info.num_classes, report.kind, report.naming) == ("scaseg-b0", 3, "encoder", "Hugging Face SegFormer")
    assert report.ignored and all(k.startswith("decode_head.") for k in report.ignored)
    assert report.missing and all(k.startswith("decode_head.") for k in report.missing)  # our decoder: random
    x = _image()
    _assert_same_maps(model.backbone(x), _hf_maps(hf, x))
    # load_backbone takes the same folder.
    other = scaseg.build("scaseg-b0")
    assert "decode_head.classifier.weight" in scaseg.load_backbone(other, tmp_path / "seg").ignored


# ----------------------------------------------------------------------------------------------- mmsegmentation


def _mmseg_backbones() -> types.SimpleNamespace:
    """mmseg's own MixVisionTransformer and MSCAN classes, imported without mmseg.models' __init__ (module doc)."""
    for name in ("mmengine", "mmcv", "mmseg"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed (the mmsegmentation reference needs mmsegmentation, mmengine, mmcv-lite)")
    import mmseg.registry  # noqa: F401  (mmengine registries only)

    root = Path(next(iter(importlib.util.find_spec("mmseg").submodule_search_locations)))
    for name in ("mmseg.models", "mmseg.models.utils", "mmseg.models.backbones"):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
            sys.modules[name] = package
    utils = sys.modules["mmseg.models.utils"]
    embed = importlib.import_module("mmseg.models.utils.embed")
    shape = importlib.import_module("mmseg.models.utils.shape_convert")
    utils.PatchEmbed, utils.nchw_to_nlc, utils.nlc_to_nchw = embed.PatchEmbed, shape.nchw_to_nlc, shape.nlc_to_nchw  # type: ignore[attr-defined]
    mit = importlib.import_module("mmseg.models.backbones.mit")
    mscan = importlib.import_module("mmseg.models.backbones.mscan")
    return types.SimpleNamespace(MixVisionTransformer=mit.MixVisionTransformer, MSCAN=mscan.MSCAN)


def _mmseg_mit_b0() -> torch.nn.Module:
    # mmseg's configs/_base_/models/segformer_mit-b0.py backbone.
    torch.manual_seed(0)
    mit = _mmseg_backbones().MixVisionTransformer(
        in_channels=3, embed_dims=32, num_stages=4, num_layers=[2, 2, 2, 2], num_heads=[1, 2, 5, 8],
        patch_sizes=[7, 3, 3, 3], sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=4, qkv_bias=True,
    )
    return _jitter(mit, seed=2)


def _mmseg_mscan_t() -> torch.nn.Module:
    # mmseg's configs/segnext/segnext_mscan-t backbone (BN instead of SyncBN: same tensors, one process).
    torch.manual_seed(0)
    mscan = _mmseg_backbones().MSCAN(
        embed_dims=[32, 64, 160, 256], mlp_ratios=[8, 8, 4, 4], depths=[3, 3, 5, 2], drop_path_rate=0.0,
        norm_cfg=dict(type="BN", requires_grad=True),
    )
    return _jitter(mscan, seed=3)


def test_mmseg_mit_whole_segmentor_checkpoint_matches_mmseg(tmp_path: Path) -> None:
    mit = _mmseg_mit_b0()
    state = {f"backbone.{k}": v for k, v in mit.state_dict().items()}
    state["decode_head.conv_seg.weight"] = torch.zeros(19, 256, 1, 1)  # SegFormer's head: not ours, ignored
    torch.save({"meta": {"mmseg_version": "1.2.2"}, "state_dict": state}, tmp_path / "segformer_mit-b0.pth")
    model = scaseg.build("scaseg-b0")
    report = scaseg.load_backbone(model, tmp_path / "segformer_mit-b0.pth")
    assert report.naming == "mmsegmentation MiT" and report.ignored == ["decode_head.conv_seg.weight"]
    x = _image()
    _assert_same_maps(model.backbone.eval()(x), list(mit(x)))
    # load_model: an mmseg SegFormer is not a SCASeg; it brings its encoder only.
    loaded, info = scaseg.load_model(tmp_path / "segformer_mit-b0.pth", strict=False)
    assert info.variant == "scaseg-b0" and loaded.load_report.kind == "encoder"
    _assert_same_maps(loaded.backbone(x), list(mit(x)))


def test_mmseg_mscan_file_matches_mmseg_and_loads_every_depthwise_conv(tmp_path: Path) -> None:
    mscan = _mmseg_mscan_t()
    torch.save(mscan.state_dict(), tmp_path / "mscan_t.pth")
    model = scaseg.build("scaseg-t")
    report = scaseg.load_backbone(model, tmp_path / "mscan_t.pth")
    assert report.naming == "mmsegmentation MSCAN" and report.clean
    x = _image()
    _assert_same_maps(model.backbone.eval()(x), list(mscan(x)))


def test_ema_and_module_wrappers(tmp_path: Path) -> None:
    mscan = _mmseg_mscan_t()
    good = {f"module.{k}": v for k, v in mscan.state_dict().items()}
    stale = {k: torch.zeros_like(v) for k, v in good.items()}
    x = _image()
    want = list(mscan(x))
    # timm: the averaged weights beside the raw ones; mmengine: state_dict already holds the averaged ones.
    for name, obj in {"timm": {"state_dict": stale, "state_dict_ema": good},
                      "deit": {"model": stale, "model_ema": good},
                      "mmengine": {"state_dict": good, "ema_state_dict": {**stale, "steps": torch.tensor(5)}}}.items():
        torch.save(obj, tmp_path / f"{name}.pth")
        model = scaseg.build("scaseg-t")
        scaseg.load_backbone(model, tmp_path / f"{name}.pth")
        _assert_same_maps(model.backbone.eval()(x), want)


# ----------------------------------------------------------------------------------------------- refusals


def _one_sentence(exc: pytest.ExceptionInfo[ScasegError]) -> str:
    text = str(exc.value)
    assert text and "\n" not in text and "Traceback" not in text
    return text


def test_partial_or_foreign_weights_are_refused_in_one_sentence(tmp_path: Path) -> None:
    mit = _mmseg_mit_b0()
    state = dict(mit.state_dict())
    del state["layers.1.1.0.ffn.layers.1.weight"]  # one depthwise conv short
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ScasegError) as exc:
        scaseg.load_backbone(scaseg.build("scaseg-b0"), tmp_path / "partial.pth")
    text = _one_sentence(exc)
    assert "mmsegmentation MiT" in text and "scaseg-b0" in text and "block2.0.mlp.dwconv.dwconv.weight" in text

    hf = _hf_model("scaseg-b0")
    hf.save_pretrained(tmp_path / "hf")
    with pytest.raises(ScasegError) as exc:  # MiT-B0 weights into an MSCAN model
        scaseg.load_backbone(scaseg.build("scaseg-t"), tmp_path / "hf")
    assert "scaseg-b0" in _one_sentence(exc) and "Hugging Face SegFormer" in str(exc.value)

    from transformers import SegformerConfig, SegformerModel

    b2 = SegformerModel(SegformerConfig(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3]))  # nvidia/mit-b2
    b2.save_pretrained(tmp_path / "b2")
    with pytest.raises(ScasegError) as exc:
        scaseg.load_backbone(scaseg.build("scaseg-b0"), tmp_path / "b2")
    assert "scaseg-b2" in _one_sentence(exc) and "scaseg-b0" in str(exc.value)

    # Heads do not show in tensor shapes: a SegFormer with other heads is refused from its config.
    SegformerModel(SegformerConfig(num_attention_heads=[1, 2, 4, 8])).save_pretrained(tmp_path / "heads")
    with pytest.raises(ScasegError) as exc:
        scaseg.load_backbone(scaseg.build("scaseg-b0"), tmp_path / "heads")
    assert "attention heads" in _one_sentence(exc)


def test_bad_inputs_each_give_one_sentence(tmp_path: Path) -> None:
    from transformers import ResNetConfig, ResNetModel

    # A classification backbone that is neither MSCAN nor MiT: the hub's microsoft/resnet-18 layout.
    resnet = ResNetModel(ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512])).state_dict()
    torch.save(resnet, tmp_path / "resnet.pth")
    (tmp_path / "empty_hf").mkdir()
    (tmp_path / "empty_hf" / "config.json").write_text(json.dumps({"model_type": "segformer"}))
    (tmp_path / "plain_dir").mkdir()
    (tmp_path / "corrupt.safetensors").write_bytes(b"\xff\xff\xff\xff\x00\x00\x00\x00{\"a\": 1}")
    torch.save({"encoder.patch_embeddings.0.weight": torch.zeros(3)}, tmp_path / "unknown.pth")
    cases = {
        "resnet.pth": "no MSCAN or MiT encoder",
        "empty_hf": "holds no weights",
        "plain_dir": "no config.json",
        "corrupt.safetensors": "not a valid safetensors file",
        "unknown.pth": "none of the accepted namings",
    }
    for name, phrase in cases.items():
        with pytest.raises(ScasegError) as exc:
            scaseg.load_backbone(scaseg.build("scaseg-b0"), tmp_path / name)
        assert phrase in _one_sentence(exc), (name, str(exc.value))
        with pytest.raises(ScasegError):
            scaseg.load_model(tmp_path / name)


def _error_lines(stderr: str, prog: str) -> int:
    assert "Traceback" not in stderr, stderr
    return sum(line.startswith(f"{prog}: error: ") for line in stderr.splitlines())


@pytest.mark.slow
def test_commands_refuse_bad_weights_with_exit_2_and_write_nothing(tmp_path: Path) -> None:
    from transformers import SegformerConfig, SegformerModel

    SegformerModel(SegformerConfig(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3])).save_pretrained(tmp_path / "b2")
    (tmp_path / "data").mkdir()
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "scaseg-synth"), str(tmp_path / "data"), "--num", "3", "--size", "64x128",
                    "--video-frames", "0", "-q"], check=True, capture_output=True, timeout=300)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    train = subprocess.run([str(bin_dir / "scaseg-train"), "--data", str(tmp_path / "data"), "--variant", "scaseg-b0",
                            "-o", str(tmp_path / "run"), "--iters", "1", "--pretrained", str(tmp_path / "b2")],
                           capture_output=True, text=True, timeout=300)
    assert train.returncode == 2, train.stderr
    assert _error_lines(train.stderr, "scaseg-train") == 1 and "scaseg-b2" in train.stderr
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    export = subprocess.run([str(bin_dir / "scaseg-export"), str(tmp_path / "bad.safetensors")],
                            capture_output=True, text=True, timeout=300)
    assert export.returncode == 2, export.stderr
    assert _error_lines(export.stderr, "scaseg-export") == 1 and "safetensors" in export.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == sorted(before + [Path("bad.safetensors")])
