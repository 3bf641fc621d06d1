"""scaseg-prune's bad input: one sentence, exit 2, nothing written (badinput.refused checks the folder tree)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import scaseg
from badinput import refused

pytest.importorskip("torch_pruning")

SHIPPED = scaseg.weights_path("scaseg-t-synth")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("badprune")
    (folder / "notes.pth").write_text("not a checkpoint\n")
    model = scaseg.build("scaseg-t", num_classes=3)
    torch.save(model.backbone.state_dict(), folder / "encoder.pth")  # an encoder-only file: no trained decoder
    scaseg.save_checkpoint(scaseg.build("scaseg-b0", num_classes=3), folder / "mit.pth", input_size=(64, 64))
    scaseg.save_checkpoint(scaseg.build("scaseg-t", num_classes=3, attention="vanilla"), folder / "vanilla.pth",
                           input_size=(64, 64))
    return folder


@pytest.mark.parametrize("args, expect", [
    ([SHIPPED, "-o", "out.pth", "--macs", "1.5"], "--macs is the fraction of the MACs to keep"),
    pytest.param([SHIPPED, "-o", "out.pth", "--macs", "0.01", "--imgsz", "64"], "cannot prune to 0.01 of the MACs",
                 marks=pytest.mark.slow),
    ([SHIPPED, "-o", "out.onnx", "--macs", "0.5"], "must end in"),
    ([SHIPPED, "-o", "out.pth", "--macs", "0.5", "--round-to", "0"], "--round-to must be from 1"),
    ([SHIPPED, "-o", "out.pth", "--macs", "0.5", "--importance", "taylor"], "needs --data"),
    (["notes.pth", "-o", "out.pth", "--macs", "0.5"], "not a PyTorch checkpoint"),
    (["encoder.pth", "-o", "out.pth", "--macs", "0.5"], "holds only encoder weights"),
    (["mit.pth", "-o", "out.pth", "--macs", "0.5"], "prunes the MSCAN variants"),
    (["vanilla.pth", "-o", "out.pth", "--macs", "0.5"], "strip attention models only"),
    (["mit.pth", "-o", "mit.pth", "--macs", "0.5"], "is the input"),
    ([SHIPPED, "-o", "out.pth"], "give the target: --macs FRACTION, or --stage-ratios"),
    ([SHIPPED, "-o", "out.pth", "--macs", "0.5", "--hidden-ratios", "0,0,0,0.5"], "two ways to give the target"),
    ([SHIPPED, "-o", "out.pth", "--stage-ratios", "0.5,0.5,0.5"], "takes four fractions R1,R2,R3,R4 from 0 to 0.9"),
    ([SHIPPED, "-o", "out.pth", "--stage-ratios", "0.5,x,0,0"], "not '0.5,x,0,0'"),
    ([SHIPPED, "-o", "out.pth", "--hidden-ratios", "0,0,0,0.95"], "--hidden-ratios takes four fractions"),
    ([SHIPPED, "-o", "out.pth", "--stage-ratios", "0,0,0,0"], "these ratios remove no channel"),
])
def test_refused_in_one_sentence_and_nothing_written(files, args, expect):
    refused("scaseg-prune", args, files, expect=expect)
