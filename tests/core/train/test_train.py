"""Training: augmentation, schedule, resumable sampler, exact resume, killed runs, DDP sync, bad input."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from scaseg.errors import ScasegError
from scaseg.train.data import Augment, StreamSampler, augment, unwrap
from scaseg.train.loop import STATE_FILE, TrainConfig, Trainer, lr_factor

SIZE = (64, 128)


def _write_cityscapes(root: Path, split: str, count: int, seed: int) -> None:
    """A tiny Cityscapes-layout split: a top band of class 10 ("sky") over class 0 ("road"), a noisy box of class 13."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        label = np.zeros(SIZE, np.uint8)
        label[: SIZE[0] // 3] = 10
        y, x = int(rng.integers(20, 40)), int(rng.integers(0, 90))
        label[y:y + 16, x:x + 30] = 13
        label[0, :4] = 255
        image = np.array([[128, 64, 128], [70, 130, 180], [0, 0, 142]], np.uint8)[np.searchsorted([0, 10, 13], np.minimum(label, 13))]
        image = np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)
        name = f"town_{i:06d}_000019"
        for folder, suffix, array in (("leftImg8bit", "leftImg8bit", image[:, :, ::-1]), ("gtFine", "gtFine_labelTrainIds", label)):
            path = root / folder / split / "town" / f"{name}_{suffix}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path), np.ascontiguousarray(array))


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes") / "data"
    _write_cityscapes(root, "train", 6, seed=3)
    _write_cityscapes(root, "val", 2, seed=4)
    return root


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), dataset="cityscapes", variant="scaseg-t", iters=4, batch=2,
                crop=(64, 64), lr=1e-3, warmup=2, val_interval=0, workers=0, seed=1, device="cpu", threads=1)
    base.update(kw)
    return TrainConfig(**base)


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    from scaseg.train.cli import main

    monkeypatch.setattr(sys, "argv", ["scaseg-train", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# -- pure parts ---------------------------------------------------------------------------------------------

def test_lr_warms_up_linearly_then_decays_poly():
    f = [lr_factor(i, total=100, warmup=10, warmup_ratio=0.0, power=1.0) for i in range(101)]
    assert f[0] == 0.0
    assert f[5] == pytest.approx(0.5 * 0.95)
    assert f[10] == pytest.approx(0.9)
    assert f[55] == pytest.approx(0.45)
    assert f[100] == 0.0
    assert all(a < b for a, b in zip(f[:10], f[1:11]))
    assert all(a > b for a, b in zip(f[10:100], f[11:101]))


def test_augment_keeps_image_and_label_aligned():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, size=(8, 12)).repeat(8, 0).repeat(8, 1).astype(np.uint8)  # 64x96 blocks
    colours = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200], [90, 90, 90]], np.uint8)
    image = colours[label]
    for scale, agree in ((1.0, 1.0), (0.7, 0.6), (1.6, 0.7)):
        cfg = Augment(crop=(40, 40), scale_range=(scale, scale))
        for seed in range(6):
            x, y = augment(image, label, cfg, np.random.default_rng(seed))
            assert x.shape == (3, 40, 40) and x.dtype == np.float32 and y.shape == (40, 40) and y.dtype == np.int64
            rgb = x.transpose(1, 2, 0) * np.array(cfg.std) + np.array(cfg.mean)
            # Exact at scale 1; after a resize, bilinear image and nearest label differ only on block edges.
            assert (np.abs(rgb - colours[y]).max(axis=2) < 0.5).mean() >= agree


def test_augment_flips_about_half_the_time():
    label = np.tile(np.arange(16, dtype=np.uint8), (8, 1))
    image = np.repeat(label[:, :, None], 3, axis=2)
    cfg = Augment(crop=(8, 16), scale_range=(1.0, 1.0))
    flipped = [bool(augment(image, label, cfg, np.random.default_rng(s))[1][0, 0] == 15) for s in range(40)]
    assert 10 < sum(flipped) < 30


def test_augment_pads_small_images_with_ignore():
    image = np.full((20, 30, 3), 10, np.uint8)
    label = np.ones((20, 30), np.uint8)
    x, y = augment(image, label, Augment(crop=(32, 40), scale_range=(1.0, 1.0), flip=False), np.random.default_rng(0))
    assert y.shape == (32, 40)
    assert (y[:20, :30] == 1).all() and (y[20:] == 255).all() and (y[:, 30:] == 255).all()
    assert np.abs(x[:, 20:, :]).max() < 0.01  # padding is the mean colour: zero after normalisation


def test_augment_rescales_by_the_drawn_factor():
    image = np.zeros((100, 80, 3), np.uint8)
    label = np.zeros((100, 80), np.uint8)
    _, y = augment(image, label, Augment(crop=(64, 64), scale_range=(0.5, 0.5), flip=False), np.random.default_rng(4))
    assert (y != 255).sum() == 50 * 40
    _, y = augment(image, label, Augment(crop=(64, 64), scale_range=(0.5, 0.5), base_short=160, flip=False),
                   np.random.default_rng(4))
    assert (y != 255).sum() == 64 * 64  # base_short 160 first doubles the image, then 0.5 halves it


def test_stream_sampler_is_resumable_and_sharded():
    full = list(zip(range(30), StreamSampler(7, seed=5)))
    keys = [k for _, k in full]
    # An epoch is a permutation of the images.
    assert sorted(i for i, _ in keys[:7]) == list(range(7))
    assert sorted(i for i, _ in keys[7:14]) == list(range(7))
    # Resuming at position p continues the same stream.
    tail = [k for _, k in zip(range(10), StreamSampler(7, seed=5, start=13))]
    assert tail == keys[13:23]
    # Two ranks split the stream: interleaved, they give back the one-process stream.
    r0 = [k for _, k in zip(range(8), StreamSampler(7, seed=5, rank=0, world_size=2))]
    r1 = [k for _, k in zip(range(8), StreamSampler(7, seed=5, rank=1, world_size=2))]
    assert [k for pair in zip(r0, r1) for k in pair] == keys[:16]
    assert keys != [k for _, k in zip(range(30), StreamSampler(7, seed=6))]


# -- training runs ------------------------------------------------------------------------------------------

def _model_state(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)["model"]


@pytest.mark.slow
def test_resume_continues_exactly(synth: Path, tmp_path: Path):
    straight = Trainer(_cfg(synth, tmp_path / "a"), _cpu()).run()
    assert straight["iterations"] == 4
    paused = Trainer(_cfg(synth, tmp_path / "b"), _cpu())
    assert paused.run(until=2)["iterations"] == 2
    resumed = Trainer(_cfg(synth, tmp_path / "b", resume=str(tmp_path / "b")), _cpu())
    assert resumed.iteration == 2
    resumed.run()
    a, b = _model_state(tmp_path / "a"), _model_state(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Not trivially equal: training moved the weights away from a fresh model's.
    torch.manual_seed(1)
    import scaseg

    fresh = scaseg.build("scaseg-t", num_classes=19).state_dict()
    assert any(not torch.equal(fresh[k], a[k]) for k in a if a[k].is_floating_point())


def test_cli_trains_validates_and_writes_loadable_checkpoints(synth, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    code, stdout, err = _run_cli(["--data", str(synth), "--dataset", "cityscapes", "-o", str(out), "--iters", "3",
                                  "--batch", "2", "--crop", "64", "--val-interval", "2", "--workers", "1",
                                  "--device", "cpu", "--threads", "1"], capsys, monkeypatch)
    assert code == 0, err
    assert "3 iterations" in stdout and "final val mIoU" in stdout
    assert "it/s" in err or "s/it" in err  # tqdm rate
    import json

    import scaseg

    history = json.loads((out / "metrics.json").read_text())
    assert [h["iteration"] for h in history] == [2, 3]
    assert all(0.0 <= h["miou"] <= 1.0 for h in history)
    model, info = scaseg.load_model(out / "last.pth")
    assert info.variant == "scaseg-t" and info.num_classes == 19
    assert (out / "best.pth").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind
    # The same folder is not silently overwritten.
    code, _, err = _run_cli(["--data", str(synth), "-o", str(out), "--iters", "3"], capsys, monkeypatch)
    assert code == 2 and "--resume" in err and "Traceback" not in err


@pytest.mark.slow
def test_killed_run_leaves_valid_state_and_resumes(synth, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "scaseg.train.cli", "--data", str(synth), "--dataset", "cityscapes", "-o", str(out),
           "--batch", "1", "--crop", "64", "--val-interval", "0", "--ckpt-interval", "1", "--workers", "0",
           "--device", "cpu", "--threads", "1"]
    proc = subprocess.Popen([*cmd, "--iters", "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / STATE_FILE).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.7)  # a few more checkpoints: the kill lands at a random point, quite possibly mid-write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    import scaseg

    state = torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)
    done = state["iteration"]
    assert done >= 1
    scaseg.load_model(out / "last.pth")
    res = subprocess.run([*cmd, "--resume", str(out), "--iters", str(done + 2)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)["iteration"] == done + 2
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from scaseg.train import dist as D

    env = D.setup("cpu", "gloo")
    try:
        trainer = Trainer(_cfg(Path(data), Path(out), iters=2, batch=1, val_interval=2), env)
        trainer.run()
        model = D.unwrap_model(trainer.model)
        synced = any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
        params = {k: v.detach().clone() for k, v in model.named_parameters()}
        torch.save({"params": params, "syncbn": synced}, Path(out) / f"rank{rank}.pt")
    finally:
        D.teardown()


@pytest.mark.slow
def test_two_gloo_ranks_stay_in_sync(synth, tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(synth), str(tmp_path)), nprocs=2, start_method="spawn")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert not r0["syncbn"] and not r1["syncbn"]  # SyncBatchNorm is CUDA-only in PyTorch; see dist.prepare_model
    assert r0["params"].keys() == r1["params"].keys()
    assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in r0["params"])
    # The checkpoint (written by rank 0 only) holds those parameters, and they moved away from the start.
    saved = _model_state(tmp_path)
    assert all(torch.equal(saved[k], v) for k, v in r0["params"].items())
    torch.manual_seed(1)
    import scaseg

    fresh = dict(scaseg.build("scaseg-t", num_classes=19).named_parameters())
    assert any(not torch.equal(fresh[k], v) for k, v in r0["params"].items())


def _cpu():
    from scaseg.train.dist import DistEnv

    return DistEnv()


# -- bad input ----------------------------------------------------------------------------------------------

def _one_error(err: str) -> bool:
    """Exactly one `scaseg-train: error:` sentence, and nothing that looks like a traceback."""
    lines = [line for line in err.splitlines() if "error:" in line]
    return len(lines) == 1 and lines[0].count(". ") == 0 and "Traceback" not in err and 'File "' not in err


def _copy_synth(synth: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(synth, dest)
    return dest


def _first_train_label(root: Path) -> Path:
    return sorted((root / "gtFine" / "train").rglob("*_labelTrainIds.png"))[0]


def _first_train_image(root: Path) -> Path:
    return sorted((root / "leftImg8bit" / "train").rglob("*.png"))[0]


def _args(root: Path, out: Path, workers: int = 1) -> list[str]:
    return ["--data", str(root), "--dataset", "cityscapes", "-o", str(out), "--iters", "8", "--batch", "2",
            "--crop", "64", "--val-interval", "0", "--workers", str(workers), "--device", "cpu", "--threads", "1"]


def test_missing_data_folder_is_one_sentence(tmp_path, capsys, monkeypatch):
    code, _, err = _run_cli(_args(tmp_path / "nowhere", tmp_path / "out"), capsys, monkeypatch)
    assert code == 2 and _one_error(err) and "Traceback" not in err
    assert not (tmp_path / "out" / STATE_FILE).exists()


def test_label_outside_class_range_from_a_worker_is_one_sentence(synth, tmp_path, capsys, monkeypatch):
    root = _copy_synth(synth, tmp_path / "data")
    for path in (root / "gtFine" / "train").rglob("*_labelTrainIds.png"):
        label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        label[:4, :4] = 40  # Cityscapes has 19 classes
        cv2.imwrite(str(path), label)
    code, _, err = _run_cli(_args(root, tmp_path / "out"), capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err and "worker" not in err.lower()
    assert _one_error(err) and "40" in err and "labelTrainIds" in err


def test_unreadable_image_from_a_worker_is_one_sentence(synth, tmp_path, capsys, monkeypatch):
    root = _copy_synth(synth, tmp_path / "data")
    for path in (root / "leftImg8bit" / "train").rglob("*.png"):
        path.write_bytes(b"not a png")
    code, _, err = _run_cli(_args(root, tmp_path / "out"), capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err and _one_error(err)
    assert "leftImg8bit" in err


def test_labels_without_images_is_one_sentence(synth, tmp_path, capsys, monkeypatch):
    root = _copy_synth(synth, tmp_path / "data")
    _first_train_image(root).unlink()
    code, _, err = _run_cli(_args(root, tmp_path / "out", workers=0), capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err and _one_error(err)


def test_resume_from_a_foreign_file_is_one_sentence(tmp_path, capsys, monkeypatch):
    bogus = tmp_path / "state.pt"
    bogus.write_bytes(b"\x00garbage")
    code, _, err = _run_cli(["--resume", str(bogus)], capsys, monkeypatch)
    assert code == 2 and "cannot resume" in err and "Traceback" not in err


def test_config_refuses_impossible_values(tmp_path):
    with pytest.raises(ScasegError, match="--crop"):
        _cfg(tmp_path, tmp_path, crop=(16, 16)).checked()
    with pytest.raises(ScasegError, match="--amp"):
        _cfg(tmp_path, tmp_path, amp="fp8").checked()


def test_balanced_class_weights_weigh_rare_classes_up(synth):
    from scaseg.data.datasets import open_dataset
    from scaseg.train.loss import balanced_class_weights

    data = open_dataset(synth, "cityscapes", "train")
    weight = balanced_class_weights(data, 19).numpy()
    counts = np.zeros(19)
    for i in range(len(data)):
        counts += np.bincount(data.load_label(i).ravel(), minlength=256)[:19]
    freq = counts / counts.sum()
    assert set(np.flatnonzero(weight)) == {0, 10, 13}  # the classes present; the others weigh nothing
    assert weight[13] > weight[10] > weight[0]  # the box (rarest) up, the road (commonest) down
    assert weight[13] / weight[0] == pytest.approx(np.log(1.02 + freq[0]) / np.log(1.02 + freq[13]), rel=1e-5)
    assert float((weight * freq).sum()) == pytest.approx(1.0, rel=1e-5)


def test_class_weight_option_trains_and_refuses_unknown_values(synth, tmp_path):
    trainer = Trainer(_cfg(synth, tmp_path / "bal", class_weight="balanced", iters=2), _cpu())
    assert trainer.class_weight is not None and float(trainer.class_weight[13]) > float(trainer.class_weight[0])
    assert trainer.run()["iterations"] == 2
    with pytest.raises(ScasegError, match="--class-weight must be none or balanced"):
        _cfg(synth, tmp_path, class_weight="inverse").checked()


def test_ohem_options_train_and_refuse_impossible_values(synth, tmp_path):
    trainer = Trainer(_cfg(synth, tmp_path / "ohem", ohem_thresh=0.7, ohem_min_kept=256, iters=2), _cpu())
    assert trainer.run()["iterations"] == 2
    with pytest.raises(ScasegError, match="--ohem-thresh"):
        _cfg(synth, tmp_path, ohem_thresh=1.5).checked()
    with pytest.raises(ScasegError, match="--ohem-min-kept"):
        _cfg(synth, tmp_path, ohem_thresh=0.7, ohem_min_kept=0).checked()


def test_channels_last_keeps_model_and_batches_nhwc_with_the_same_losses(synth, tmp_path):
    still = {"drop_path_rate": 0.0, "dropout": 0.0}  # no random draws in the forward pass: the two see the same net
    plain = Trainer(_cfg(synth, tmp_path / "a", iters=2, model_kwargs=still), _cpu())
    nhwc = Trainer(_cfg(synth, tmp_path / "b", iters=2, channels_last=True, model_kwargs=still), _cpu())
    kernels = [p for p in nhwc.model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                           for p in kernels)
    image, label = unwrap(next(iter(plain._loader())))
    for tolerance in (1e-5, 1e-3):  # the first step sees identical weights; the second one step of AdamW later
        assert abs(plain.step(image, label) - nhwc.step(image, label)) < tolerance
    assert Trainer(_cfg(synth, tmp_path / "c", iters=1, channels_last=True), _cpu()).run()["iterations"] == 1
    import scaseg

    model, _ = scaseg.load_model(tmp_path / "c" / "last.pth")
    assert all(p.is_contiguous() for p in model.parameters())  # the checkpoint loads as any other
