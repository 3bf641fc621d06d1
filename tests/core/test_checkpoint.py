"""Checkpoints: bit-exact round trips, official encoder files, mmseg-style files, and clear refusals."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import scaseg
from scaseg.checkpoint import infer_variant
from scaseg.errors import ScasegError


@pytest.fixture(scope="module")
def b0() -> scaseg.SCASeg:
    torch.manual_seed(0)
    model = scaseg.build("scaseg-b0", num_classes=4, attention="vanilla", lpm=False)
    # Non-default BatchNorm statistics so that buffers are part of what must round-trip.
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    return model.eval()


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip_is_bit_exact_and_keeps_the_config(b0: scaseg.SCASeg, tmp_path: Path, suffix: str) -> None:
    path = scaseg.save_checkpoint(b0, tmp_path / f"m{suffix}", class_names=["road", "car", "sky", "tree"],
                                  palette=[(1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12)], input_size=(64, 96),
                                  extra={"iteration": 7})
    assert [p.name for p in tmp_path.iterdir()] == [f"m{suffix}"]  # no temporary file left behind
    model, info = scaseg.load_model(path)
    _same_state(b0, model)
    assert model.config == b0.config and model.config["attention"] == "vanilla" and model.config["lpm"] is False
    assert (info.variant, info.num_classes, info.class_names) == ("scaseg-b0", 4, ["road", "car", "sky", "tree"])
    assert info.palette[3] == (10, 11, 12) and info.input_size == (64, 96) and info.extra == {"iteration": 7}
    assert model.load_report.clean and not model.training
    x = torch.randn(1, 3, 41, 57)
    with torch.no_grad():
        assert torch.equal(model(x), b0(x))


def test_a_failed_save_leaves_nothing_behind(b0: scaseg.SCASeg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_save(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(ScasegError, match="cannot write .*m.pth: disk full"):
        scaseg.save_checkpoint(b0, tmp_path / "m.pth")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ScasegError, match="built by scaseg.build"):
        scaseg.save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "x.pth")


def test_official_mit_encoder_file_loads_with_no_missing_keys(tmp_path: Path) -> None:
    source = scaseg.build("scaseg-b0").backbone.state_dict()
    official = dict(source, **{"head.weight": torch.zeros(1000, 256), "head.bias": torch.zeros(1000)})
    torch.save(official, tmp_path / "mit_b0.pth")
    model = scaseg.build("scaseg-b0", num_classes=19)
    report = scaseg.load_backbone(model, tmp_path / "mit_b0.pth")
    assert report.missing == [] and report.unexpected == []
    assert report.ignored == ["head.bias", "head.weight"]
    for k, v in source.items():
        assert torch.equal(model.backbone.state_dict()[k], v), k


def test_official_mscan_encoder_file_in_a_state_dict_wrapper_loads(tmp_path: Path) -> None:
    source = scaseg.build("scaseg-t").backbone.state_dict()
    torch.save({"state_dict": source, "meta": {"epoch": 300}}, tmp_path / "mscan_t.pth")
    model = scaseg.build("scaseg-t")
    report = scaseg.load_backbone(model, tmp_path / "mscan_t.pth")
    assert report.clean and report.kind == "encoder"
    assert torch.equal(model.backbone.block1[0].layer_scale_1, source["block1.0.layer_scale_1"])


def test_load_model_builds_the_variant_from_an_encoder_only_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.save(scaseg.build("scaseg-t").backbone.state_dict(), tmp_path / "enc.pth")
    with caplog.at_level(logging.WARNING, logger="scaseg.checkpoint"):
        model, info = scaseg.load_model(tmp_path / "enc.pth", num_classes=6, strict=False)
    assert info.variant == "scaseg-t" and info.num_classes == 6 and model.num_classes == 6
    assert model.load_report.missing and all(k.startswith("decode_head.") for k in model.load_report.missing)
    assert "missing" in caplog.text


def test_mmseg_style_file_loads_with_classes_from_meta(b0: scaseg.SCASeg, tmp_path: Path) -> None:
    state = {k.replace("decode_head.classifier.", "decode_head.conv_seg."): v for k, v in b0.state_dict().items()}
    state["auxiliary_head.conv_seg.weight"] = torch.zeros(4, 8, 1, 1)
    meta = {"dataset_meta": {"classes": ["a", "b", "c", "d"], "palette": [[9, 9, 9]] * 4}}
    torch.save({"state_dict": state, "meta": meta}, tmp_path / "mmseg.pth")
    model, info = scaseg.load_model(tmp_path / "mmseg.pth", attention="vanilla", lpm=False)
    _same_state(b0, model)
    assert info.class_names == ["a", "b", "c", "d"] and info.palette[0] == (9, 9, 9)
    assert model.load_report.kind == "mmseg" and model.load_report.clean
    assert model.load_report.ignored == ["auxiliary_head.conv_seg.weight"]


def test_missing_keys_are_reported_and_logged(b0: scaseg.SCASeg, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = dict(b0.state_dict())
    del state["decode_head.fuse.1.running_mean"]
    state["decode_head.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": state, "meta": {}}, tmp_path / "partial.pth")
    with caplog.at_level(logging.WARNING, logger="scaseg.checkpoint"):
        model, _ = scaseg.load_model(tmp_path / "partial.pth", attention="vanilla", lpm=False, strict=False)
    assert model.load_report.missing == ["decode_head.fuse.1.running_mean"]
    assert model.load_report.unexpected == ["decode_head.extra.weight"]
    assert "decode_head.fuse.1.running_mean" in caplog.text


def _one_sentence(exc: pytest.ExceptionInfo[ScasegError]) -> str:
    text = str(exc.value)
    assert text and "\n" not in text and "Traceback" not in text
    return text


def test_checkpoint_of_another_variant_or_class_count_is_refused(b0: scaseg.SCASeg, tmp_path: Path) -> None:
    path = scaseg.save_checkpoint(b0, tmp_path / "b0.pth")
    with pytest.raises(ScasegError) as exc:
        scaseg.load_model(path, variant="scaseg-t")
    assert "scaseg-b0" in _one_sentence(exc) and "scaseg-t" in str(exc.value)
    with pytest.raises(ScasegError) as exc:
        scaseg.load_model(path, num_classes=19)
    assert "4 classes" in _one_sentence(exc)
    torch.save(scaseg.build("scaseg-b1").backbone.state_dict(), tmp_path / "mit_b1.pth")
    with pytest.raises(ScasegError) as exc:
        scaseg.load_backbone(scaseg.build("scaseg-b0"), tmp_path / "mit_b1.pth")
    assert "scaseg-b1" in _one_sentence(exc)


def test_weights_that_do_not_fit_the_config_are_refused(b0: scaseg.SCASeg, tmp_path: Path) -> None:
    path = scaseg.save_checkpoint(b0, tmp_path / "b0.pth")
    obj = torch.load(path, weights_only=True)
    obj["config"]["attention"] = "strip"  # config now disagrees with the stored q/k shapes
    torch.save(obj, tmp_path / "lying.pth")
    with pytest.raises(ScasegError) as exc:
        scaseg.load_model(tmp_path / "lying.pth")
    assert "does not fit" in _one_sentence(exc)


def test_bad_files_give_one_clear_sentence(b0: scaseg.SCASeg, tmp_path: Path) -> None:
    good = scaseg.save_checkpoint(b0, tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(good[: len(good) // 2])
    (tmp_path / "noise.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "noise.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    torch.save({"weights": np.zeros(3)}, tmp_path / "objects.pth")  # numpy arrays are outside the allow-list
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    torch.save({"x": torch.zeros(2)}, tmp_path / "unrelated.pth")
    cases = {
        "missing.pth": "not found",
        "truncated.pth": "corrupt",
        "noise.pth": "corrupt",
        "noise.safetensors": "safetensors",
        "objects.pth": "weights_only",
        "list.pth": "not a model checkpoint",
        "unrelated.pth": "known variant",
    }
    for name, phrase in cases.items():
        with pytest.raises(ScasegError) as exc:
            scaseg.load_model(tmp_path / name)
        assert phrase in _one_sentence(exc), (name, str(exc.value))
    with pytest.raises(ScasegError, match="no MSCAN or MiT encoder"):
        scaseg.load_backbone(scaseg.build("scaseg-b0"), tmp_path / "unrelated.pth")


def test_variant_is_inferred_from_encoder_shapes() -> None:
    assert infer_variant(scaseg.build("scaseg-s").backbone.state_dict()) == "scaseg-s"
    assert infer_variant(scaseg.build("scaseg-b1").backbone.state_dict()) == "scaseg-b1"
    assert infer_variant({"x": torch.zeros(1)}) is None
