"""Checkpoints are untrusted when run: weights no model can run with (NaN or infinite values, negative BatchNorm
variances), a tampered config, and files that are no checkpoint at all are one sentence and exit 2 in every command
that loads them (scaseg-infer -m, scaseg-bench, scaseg-export, scaseg-train --pretrained), with nothing written."""
from __future__ import annotations

import json
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import scaseg
from badinput import refused, run

TRAIN = ["--crop", "32", "--batch", "1", "--workers", "0", "--val-interval", "0", "--iters", "1", "--threads", "1", "-q",
         "--data", "data"]


def _poisoned(state: dict[str, torch.Tensor], key: str, value: float) -> dict[str, torch.Tensor]:
    """A copy of ``state`` with every entry of ``key`` set to ``value``."""
    return {k: torch.full_like(v, value) if k == key else v.clone() for k, v in state.items()}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scaseg.data.synth import write_dataset

    root = tmp_path_factory.mktemp("checkpoint")
    torch.manual_seed(0)
    model = scaseg.build("scaseg-b0", 3).eval()
    scaseg.save_checkpoint(model, root / "good.pth", input_size=(64, 64))
    state = model.state_dict()
    variances = [k for k in state if k.endswith("running_var")]
    # Our format, through save_checkpoint's own layout (config embedded).
    for name, key, value in (("negvar", variances[0], -1.0), ("nan_weight", "decode_head.classifier.weight", float("nan")),
                             ("inf_mean", "decode_head.fuse.1.running_mean", float("inf"))):
        with torch.no_grad():
            bad = scaseg.build("scaseg-b0", 3).eval()
            bad.load_state_dict(_poisoned(state, key, value))
        scaseg.save_checkpoint(bad, root / f"{name}.pth", input_size=(64, 64))
    # An mmsegmentation-style file (no config): the same rule through the other reader.
    torch.save({"state_dict": _poisoned(state, variances[-1], -0.5)}, root / "mmseg_negvar.pth")
    # A tampered config: the ModelInfo fields a runtime uses, and the model options.
    saved = torch.load(root / "good.pth", weights_only=True)
    for name, changes in (("config_mean", {"mean": [1, 2]}), ("config_std", {"std": [0, 0, 0]}),
                          ("config_classes", {"num_classes": "3"}), ("config_dropout", {"dropout": "x"})):
        torch.save({**saved, "config": {**saved["config"], **changes}}, root / f"{name}.pth")
    # Encoder weights for --pretrained that are no usable encoder.
    torch.save(_poisoned(model.backbone.state_dict(), "block1.0.attn.q.weight", float("nan")), root / "nan_encoder.pth")
    mscan = scaseg.build("scaseg-t", 3).backbone.state_dict()  # MSCAN: BatchNorm inside the encoder
    torch.save(_poisoned(mscan, "block2.1.norm1.running_var", -2.0), root / "negvar_encoder.pth")
    # A whole model whose ignored decoder is broken but whose encoder is sound: --pretrained takes the encoder.
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
                | {"decode_head.x.running_var": torch.full((4,), -1.0)}}, root / "bad_head.pth")
    # Bytes that are no checkpoint, each failing the unpickler in another way (IndexError twice, struct.error,
    # UnicodeDecodeError with PyTorch 2.x): the kind is "not a checkpoint", whatever the unpickler raises.
    for name, seed in (("random_a", 7), ("random_b", 17)):
        rng = random.Random(seed)
        (root / f"{name}.pth").write_bytes(bytes(rng.getrandbits(8) for _ in range(4096)))
    (root / "truncated_pickle.pth").write_bytes(b"\x80\x02J\x01")  # BININT with 1 of its 4 bytes
    (root / "bad_utf8_pickle.pth").write_bytes(b"\x80\x02X\x02\x00\x00\x00\xff\xfe.")  # a string that is no UTF-8
    (root / "zero.pth").write_bytes(b"")
    (root / "text.pth").write_text("these are not the weights you are looking for\n")
    torch.save([1, 2, 3], root / "list.pth")
    torch.save({"lr": 0.1, "epoch": 3}, root / "no_tensors.pth")
    write_dataset(root / "data", 4, size=(32, 64), video_frames=0, progress=False)
    cv2.imwrite(str(root / "img.png"), np.full((40, 56, 3), 90, np.uint8))
    return root


def test_the_good_checkpoint_runs(work: Path) -> None:
    proc = run("scaseg-infer", ["img.png", "-m", "good.pth", "-o", "ok.png", "-q"], work)
    assert proc.returncode == 0, proc.stderr
    (work / "ok.png").unlink()


BAD_WEIGHTS = [
    ("negvar", "running_var is a BatchNorm variance with negative entries"),
    ("nan_weight", "decode_head.classifier.weight holds NaN or infinite values"),
    ("inf_mean", "decode_head.fuse.1.running_mean holds NaN or infinite values"),
]


@pytest.mark.parametrize("name,expect", BAD_WEIGHTS, ids=[n for n, _ in BAD_WEIGHTS])
def test_infer_refuses_weights_no_model_can_run_with(work: Path, name: str, expect: str) -> None:
    line = refused("scaseg-infer", ["img.png", "-m", f"{name}.pth", "-o", "out.png", "-q"], work, expect=expect)
    assert f"the checkpoint {name}.pth is unusable: its tensor " in line
    assert not (work / "out.png").exists(), line


def test_an_mmseg_file_with_a_negative_variance_is_refused(work: Path) -> None:
    refused("scaseg-infer", ["img.png", "-m", "mmseg_negvar.pth", "-o", "out.png", "-q"], work,
            expect="mmseg_negvar.pth is unusable: its tensor decode_head.fuse.1.running_var is a BatchNorm variance")


@pytest.mark.parametrize("name", ["negvar", "nan_weight"])
def test_export_refuses_them_at_load(work: Path, name: str) -> None:
    refused("scaseg-export", [f"{name}.pth", "-o", "m.onnx", "-q"], work, expect=f"the checkpoint {name}.pth is unusable")


def test_bench_refuses_them_at_load(work: Path) -> None:
    refused("scaseg-bench", ["negvar.pth", "--warmup", "0", "-n", "1", "-q"], work, expect="negvar.pth is unusable")


@pytest.mark.parametrize("name,expect", [
    ("config_mean", "the model metadata of config_mean.pth is invalid: mean"),
    ("config_std", "the model metadata of config_std.pth is invalid: std"),
    ("config_classes", "the model metadata of config_classes.pth is invalid: num_classes"),
    ("config_dropout", "the model config of config_dropout.pth is invalid: dropout"),
])
def test_a_tampered_checkpoint_config_is_refused(work: Path, name: str, expect: str) -> None:
    refused("scaseg-infer", ["img.png", "-m", f"{name}.pth", "-o", "out.png", "-q"], work, expect=expect)


@pytest.mark.parametrize("name,expect", [
    ("random_a", "not a PyTorch checkpoint, or the file is corrupt"),
    ("random_b", "not a PyTorch checkpoint, or the file is corrupt"),
    ("truncated_pickle", "not a PyTorch checkpoint, or the file is corrupt"),
    ("bad_utf8_pickle", "not a PyTorch checkpoint, or the file is corrupt"),
    ("text", "not a PyTorch checkpoint, or the file is corrupt"),
    ("zero", "is empty"),
    ("list", "holds a list, not a dict of weights"),
    ("no_tensors", "holds no weight tensors"),
    ("nan_encoder", "block1.0.attn.q.weight holds NaN or infinite values"),
    ("negvar_encoder", "block2.1.norm1.running_var is a BatchNorm variance with negative entries"),
])
@pytest.mark.slow
def test_train_refuses_pretrained_weights_it_cannot_use(work: Path, name: str, expect: str) -> None:
    variant = "scaseg-t" if name == "negvar_encoder" else "scaseg-b0"
    refused("scaseg-train", [*TRAIN, "-o", "run", "--variant", variant, "--pretrained", f"{name}.pth"], work,
            expect=expect)
    assert not (work / "run").exists()


@pytest.mark.slow
def test_train_takes_the_sound_encoder_of_a_model_whose_ignored_head_is_broken(work: Path) -> None:
    proc = run("scaseg-train", [*TRAIN, "-o", "head_run", "--variant", "scaseg-b0", "--pretrained", "bad_head.pth"],
               work)
    assert proc.returncode == 0, proc.stderr
    assert (work / "head_run" / "last.pth").is_file()


def test_tampered_configs_differ_from_the_good_one_only_where_named(work: Path) -> None:
    good = torch.load(work / "good.pth", weights_only=True)["config"]
    config = torch.load(work / "config_mean.pth", weights_only=True)["config"]
    assert config["mean"] == [1, 2] and json.dumps({**config, "mean": good["mean"]}, sort_keys=True) == \
        json.dumps(good, sort_keys=True)
