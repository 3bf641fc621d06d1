"""scaseg-prune on the shipped scaseg-t-synth: the MACs drop as asked, the pruned checkpoint records its widths and
loads as any model, exports with parity and runs in scaseg-bench; the widths record is validated like the rest of a
checkpoint; Taylor importance from a dataset's gradients; scaseg-infer runs the pruned .pth."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch

import scaseg
from badinput import run
from scaseg.errors import ScasegError
from scaseg.models.widths import full_widths, widths_of
from scaseg.models.model import VARIANTS
from scaseg.prune.core import Ratios, cost, shrunk

pytest.importorskip("torch_pruning")

SHIPPED = scaseg.weights_path("scaseg-t-synth")
SIZE = (64, 128)
# The achieved fraction is at most the target and, with a uniform ratio on whole channels, within this of it
# (a step of the ratio can take a channel from several groups at once).
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("prune")
    out = folder / "half.pth"
    proc = run("scaseg-prune", [SHIPPED, "-o", out, "--macs", "0.5", "--imgsz", "64x128"], folder)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


@pytest.mark.slow
def test_macs_drop_as_asked_and_the_checkpoint_loads_with_its_widths(pruned):
    path, stdout = pruned
    original, _ = scaseg.load_model(SHIPPED)
    model, info = scaseg.load_model(path)
    assert info.variant == "scaseg-t" and info.num_classes == 19 and info.class_names
    widths = model.config["widths"]
    assert widths == widths_of(model)
    assert widths["embed_dims"][0] < 32 and widths["value"] == [32, 64, 160, 256]  # value: not prunable
    before, after = cost(original, SIZE), cost(model, SIZE)
    kept = after.macs / before.macs
    assert 0.5 - TOLERANCE <= kept <= 0.5
    assert after.params < before.params
    record = info.extra["pruning"]
    assert record["macs_after"] == after.macs and record["macs_before"] == before.macs and record["imgsz"] == [64, 128]
    assert f"{before.macs / 1e9:.3f} -> {after.macs / 1e9:.3f} GMACs" in stdout
    assert f"{before.params / 1e6:.2f} -> {after.params / 1e6:.2f} M params" in stdout
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model(x).shape == original(x).shape == (1, 19, *SIZE)


@pytest.fixture(scope="module")
def narrow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A narrow scaseg-t built from widths alone (no pruning): the checkpoint a pruned model is, random weights."""
    model = scaseg.build("scaseg-t", num_classes=3, widths=shrunk(full_widths(VARIANTS["scaseg-t"], True), 0.313))
    return scaseg.save_checkpoint(model, tmp_path_factory.mktemp("narrow") / "narrow.pth", input_size=SIZE)


def test_a_checkpoint_with_widths_loads_as_that_architecture(narrow):
    model, info = scaseg.load_model(narrow)
    assert model.config["widths"] == widths_of(model) and widths_of(model)["embed_dims"] == [21, 43, 109, 175]
    with torch.no_grad():
        assert model(torch.zeros(1, 3, *SIZE)).shape == (1, 3, *SIZE)
    unpruned, _ = scaseg.load_model(SHIPPED)
    assert "widths" not in unpruned.config  # an unpruned checkpoint is unchanged


def test_the_widths_rule_is_torch_prunings():
    full = full_widths(VARIANTS["scaseg-t"], True)
    w = shrunk(full, 0.313)
    assert w["embed_dims"] == [21, 43, 109, 175] and w["stem"] == 10 and w["fuse"] == 87 and w["value"] == full["value"]


@pytest.mark.slow
def test_pruned_model_exports_with_parity_runs_in_bench_and_builds_an_engine(pruned, tmp_path):
    path, _ = pruned
    onnx_path = tmp_path / "half.onnx"
    proc = run("scaseg-export", [path, "-o", onnx_path, "--imgsz", "64x128", "--parity-images", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "PASS" in proc.stdout + proc.stderr and onnx_path.is_file()
    proc = run("scaseg-bench", [onnx_path, "--runs", "2", "--warmup", "1", "--threads", "1", "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "half.onnx" in proc.stdout and "1x64x128" in proc.stdout
    if importlib.util.find_spec("tensorrt_rtx") is not None:  # builds on a CPU machine; running it needs a GPU
        engine = tmp_path / "half.engine"
        proc = run("scaseg-export", [onnx_path, "--format", "engine", "--tensorrt", "rtx",
                                     "--compute-capability", "8.6", "-o", engine, "-q"], tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert engine.stat().st_size > 1_000_000


@pytest.mark.parametrize("change, expect", [
    (lambda w: w.update(embed_dims=[64, 64, 160, 256]), "embed_dims[0] is 64, not a whole number from 1 to 32"),
    (lambda w: w.update(fuse="87"), "fuse is '87'"),
    (lambda w: w["mlp"].pop(), "mlp must be a list of 4"),
    (lambda w: w.update(value=[32, 63, 160, 256]), "value[1] is 63, not a multiple"),
    (lambda w: w.pop("stem"), "exactly"),
])
def test_a_damaged_widths_record_is_refused_in_one_sentence(narrow, tmp_path, change, expect):
    ckpt = torch.load(narrow, weights_only=True)
    change(ckpt["config"]["widths"])
    bad = tmp_path / "bad.pth"
    torch.save(ckpt, bad)
    with pytest.raises(ScasegError, match="model config of .* is invalid") as err:
        scaseg.load_model(bad)
    assert expect in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_taylor_importance_prunes_from_a_datasets_gradients(tmp_path):
    data = tmp_path / "synth"
    proc = run("scaseg-synth", [data, "--num", "4", "--val-fraction", "0.25", "--size", "64x128", "--video-frames", "0",
                                "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "taylor.pth"
    proc = run("scaseg-prune", [SHIPPED, "-o", out, "--macs", "0.75", "--imgsz", "64x128", "--importance", "taylor",
                                "--data", data, "--images", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    model, info = scaseg.load_model(out)
    assert info.extra["pruning"]["importance"] == "taylor"
    assert 0.75 - TOLERANCE <= info.extra["pruning"]["macs_kept"] <= 0.75


@pytest.mark.slow
def test_scaseg_infer_segments_with_the_pruned_checkpoint(pruned, tmp_path):
    import cv2

    from scaseg.data.synth import render_scene

    path, _ = pruned
    image, _ = render_scene(7, SIZE)
    assert cv2.imwrite(str(tmp_path / "scene.png"), image[:, :, ::-1])
    proc = run("scaseg-infer", [tmp_path / "scene.png", "-m", path, "-o", tmp_path / "out.png", "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    overlay = cv2.imread(str(tmp_path / "out.png"))
    assert overlay is not None and overlay.shape[:2] == SIZE


def _flat(widths: dict) -> list[int]:
    """Every prunable width of a widths record (the value widths are not prunable), in a fixed order."""
    out: list[int] = []
    for key in ("embed_dims", "stem", "attn", "mlp", "pool_enc", "pool_dec", "lpm", "fuse"):
        stack = [widths[key]]
        while stack:
            item = stack.pop()
            stack.extend(item) if isinstance(item, list) else out.append(item)
    return out


@pytest.mark.slow
def test_round_to_keeps_every_pruned_width_a_multiple():
    from scaseg.prune.core import find_ratio, prune

    model, _ = scaseg.load_model(SHIPPED)
    ratio, before, after = find_ratio(model, SIZE, 0.5, round_to=8)
    assert after.macs <= 0.5 * before.macs
    pruned = prune(model, ratio, round_to=8)  # raises if torch-pruning left other widths than predicted
    full = _flat(full_widths(VARIANTS["scaseg-t"], True))
    kept = _flat(widths_of(pruned))
    assert all(n % 8 == 0 or n == f for n, f in zip(kept, full)) and kept != full
    assert cost(pruned, SIZE).macs == after.macs


@pytest.mark.slow
def test_uniform_pruning_removes_the_channels_torch_prunings_metapruner_removes():
    """Our per-group loop against torch-pruning's own MetaPruner (local, one step, the same importance and ignored
    layers): the same channels go, so the same weights are left."""
    import torch_pruning as tp

    from scaseg.models.model import NUM_HEADS
    from scaseg.prune.core import TRACE_SIZE, prune

    model, _ = scaseg.load_model(SHIPPED)
    ours = prune(model, 0.34, round_to=8)
    theirs = copy.deepcopy(model).eval()
    head = theirs.decode_head
    ignored = [head.classifier] + [m for b in head.blocks for m in (b.attn.q, b.attn.k)]
    tp.pruner.MetaPruner(
        theirs, torch.randn(1, 3, *TRACE_SIZE), importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=0.34, iterative_steps=1, ignored_layers=ignored, round_to=8,
        unwrapped_parameters=[(p, 0) for n, p in theirs.named_parameters() if "layer_scale" in n],
        num_heads={b.attn.v: h for b, h in zip(head.blocks, NUM_HEADS)}).step()
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stage_ratios_shrink_each_stage_by_its_own_fraction():
    full = full_widths(VARIANTS["scaseg-t"], True)
    w = shrunk(full, Ratios((0.5, 0.5, 0.25, 0.0), (0.75, 0.75, 0.5, 0.0)), round_to=8)
    assert w["embed_dims"] == [16, 32, 120, 256] and w["stem"] == 8 and w["fuse"] == 64
    assert [s[0] for s in w["attn"]] == [16, 32, 120, 256] and [s[0] for s in w["mlp"]] == [64, 128, 320, 1024]
    assert w["pool_enc"] == [16, 32, 120] and w["pool_dec"] == [32, 120] and w["lpm"] == [32, 64, 320, 1024]
    assert w["value"] == full["value"]
    assert shrunk(full, Ratios.uniform(0.313)) == shrunk(full, 0.313)


@pytest.mark.slow
def test_scaseg_prune_by_stage_ratios(tmp_path):
    out = tmp_path / "stages.pth"
    proc = run("scaseg-prune", [SHIPPED, "-o", out, "--stage-ratios", "0.5,0.5,0.25,0", "--hidden-ratios",
                                "0.75,0.75,0.5,0", "--round-to", "8", "--imgsz", "64x128"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    model, info = scaseg.load_model(out)
    widths = widths_of(model)
    assert widths["embed_dims"] == [16, 32, 120, 256] and [s[0] for s in widths["mlp"]] == [64, 128, 320, 1024]
    record = info.extra["pruning"]
    assert record["stage_ratios"] == [0.5, 0.5, 0.25, 0] and record["hidden_ratios"] == [0.75, 0.75, 0.5, 0]
    assert "macs_asked" in record and record["macs_asked"] is None and "ratio" not in record
    original, _ = scaseg.load_model(SHIPPED)
    kept = cost(model, SIZE).macs / cost(original, SIZE).macs
    assert f"({kept:.4f} of them)" in proc.stdout and "removed per stage: 0.5,0.5,0.25,0 of the widths" in proc.stdout
