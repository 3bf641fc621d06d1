"""scaseg.models.pretrained as functions on small hand-made state dicts: the renames and the tensor reshapes of each
naming, the whole-model prefixes, the completeness check, Hugging Face folders (real files from the real projects
through scaseg.load_backbone: test_pretrained.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scaseg.errors import ScasegError
from scaseg.models import pretrained as P

# One characteristic key per naming, in NAMINGS' order.
SAMPLES = {
    "mmsegmentation MSCAN": "block1.0.mlp.dwconv.weight",
    "SegNeXt MSCAN (original release)": "patch_embed1.proj.0.weight",
    "SegFormer MiT (NVlabs release)": "block1.0.attn.kv.weight",
    "mmsegmentation MiT": "layers.0.1.0.attn.attn.in_proj_weight",
    "Hugging Face SegFormer": "encoder.block.0.0.attention.self.query.weight",
    "Hugging Face SegFormer (transformers 5 module names)": "stages.0.blocks.0.attention.q_proj.weight",
}


def test_each_marker_recognises_its_own_naming_and_no_other() -> None:
    assert [n.name for n in P.NAMINGS] == list(SAMPLES)
    for naming in P.NAMINGS:
        assert [n.name for n in P.NAMINGS if n.recognises([SAMPLES[naming.name]])] == [naming.name]
        assert P.detect(["unrelated.weight", SAMPLES[naming.name]]) is naming
    assert P.detect(["conv1.weight", "fc.bias"]) is None
    assert [n.native for n in P.NAMINGS] == [False, True, True, False, False, False]


def _naming(name: str) -> P.Naming:
    return next(n for n in P.NAMINGS if n.name == name)


def test_mmseg_mit_stages_count_from_one_and_qkv_and_1x1_convs_are_reshaped() -> None:
    d = 4
    qkv = torch.arange(3 * d * d, dtype=torch.float32).reshape(3 * d, d)
    state = {"layers.0.1.0.attn.attn.in_proj_weight": qkv,
             "layers.0.1.0.ffn.layers.0.weight": torch.ones(8, d, 1, 1),
             "layers.1.0.projection.weight": torch.ones(2), "layers.3.2.weight": torch.ones(1),
             "layers.0.1.0.ffn.layers.1.weight": torch.ones(8, 1, 3, 3)}
    ours = _naming("mmsegmentation MiT").to_ours(state)
    assert set(ours) == {"block1.0.attn.q.weight", "block1.0.attn.kv.weight", "block1.0.mlp.fc1.weight",
                         "patch_embed2.proj.weight", "norm4.weight", "block1.0.mlp.dwconv.dwconv.weight"}
    assert torch.equal(ours["block1.0.attn.q.weight"], qkv[:d]) and torch.equal(ours["block1.0.attn.kv.weight"], qkv[d:])
    assert ours["block1.0.mlp.fc1.weight"].shape == (8, d)  # 1x1 conv -> linear
    assert ours["block1.0.mlp.dwconv.dwconv.weight"].shape == (8, 1, 3, 3)  # a real 3x3 conv stays


def test_hugging_face_keys_and_values_fuse_into_one_kv_and_a_lone_key_keeps_its_name() -> None:
    k, v = torch.zeros(4, 4), torch.ones(4, 4)
    ours = _naming("Hugging Face SegFormer").to_ours({
        "encoder.block.1.0.attention.self.key.weight": k, "encoder.block.1.0.attention.self.value.weight": v,
        "encoder.block.2.0.attention.self.key.bias": torch.zeros(4)})
    assert set(ours) == {"block2.0.attn.kv.weight", "block3.0.attn.k.bias"}
    assert torch.equal(ours["block2.0.attn.kv.weight"], torch.cat([k, v]))


def test_mmseg_mscan_wraps_the_depthwise_conv_and_native_names_pass_unchanged() -> None:
    w = torch.ones(2, 1, 3, 3)
    assert list(_naming("mmsegmentation MSCAN").to_ours({"block2.1.mlp.dwconv.bias": w})) == [
        "block2.1.mlp.dwconv.dwconv.bias"]
    native = {"patch_embed1.proj.0.weight": w}
    assert _naming("SegNeXt MSCAN (original release)").to_ours(native) == native


def test_whole_model_prefixes_and_the_classifier_are_set_aside() -> None:
    t = torch.zeros(1)
    inside, ignored = P.split_whole_model({"backbone.block1.0.attn.kv.weight": t, "decode_head.conv.weight": t})
    assert list(inside) == ["block1.0.attn.kv.weight"] and ignored == ["decode_head.conv.weight"]
    inside, ignored = P.split_whole_model({"block1.0.attn.kv.weight": t, "head.weight": t, "head.bias": t})
    assert list(inside) == ["block1.0.attn.kv.weight"] and ignored == ["head.bias", "head.weight"]
    found = P.find_encoder({"segformer.encoder.block.0.0.attention.self.query.weight": t, "classifier.weight": t})
    assert found is not None and found.naming.name == "Hugging Face SegFormer"
    assert list(found.state) == ["block1.0.attn.q.weight"] and found.ignored == ["classifier.weight"]
    assert P.find_encoder({"fc.weight": t}) is None


def test_check_complete_demands_every_tensor_with_its_shape_and_nothing_more() -> None:
    naming = _naming("SegFormer MiT (NVlabs release)")
    want = {"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(1), "bn.num_batches_tracked": torch.zeros(())}
    full = {"a": torch.ones(2), "b": torch.ones(3), "c": torch.ones(1)}
    P.check_complete(P.Encoder(full, naming), want, "scaseg-b0", "w.pth")  # the BN counter may be absent
    cases = [({"a": torch.ones(2)}, "lacks the encoder tensor b (and 1 more): refusing a partial load"),
             ({**full, "b": torch.ones(4)}, "its b is (4,) where the model has (3,)"),
             ({**full, "z": torch.ones(1)}, "its tensor z has no place in the model's encoder")]
    for state, words in cases:
        with pytest.raises(ScasegError, match=r"w\.pth follows the SegFormer MiT \(NVlabs release\) naming and "
                                              r"matches no SCASeg variant, but ") as refusal:
            P.check_complete(P.Encoder(state, naming), want, None, "w.pth")
        assert words in str(refusal.value)


def test_hugging_face_folders_give_their_weight_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "segformer", "num_attention_heads": [1, 2, 5, 8]}))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-2.safetensors", "b": "model-1.safetensors", "c": "model-2.safetensors"}}))
    assert P.hf_folder_files(tmp_path) == [tmp_path / "model-1.safetensors", tmp_path / "model-2.safetensors"]
    (tmp_path / "pytorch_model.bin").write_bytes(b"")  # one whole file comes before an index
    assert P.hf_folder_files(tmp_path) == [tmp_path / "pytorch_model.bin"]


@pytest.mark.parametrize("config, index, words", [
    ("{not json", None, "config.json: not valid JSON"), ("[1, 2]", None, "holds no model configuration"),
    ('{"model_type": "segformer", "num_attention_heads": [1, 2, 4, 8]}', None, "with [1, 2, 4, 8] attention heads"),
    ("{}", '{"weights": {}}', "not a valid weight index"), ("{}", "[]", "not a valid weight index"),
    ("{}", None, "holds no weights (model.safetensors or pytorch_model.bin is missing)"),
])
def test_a_folder_that_cannot_be_read_is_one_sentence(tmp_path: Path, config: str, index, words: str) -> None:
    (tmp_path / "config.json").write_text(config)
    if index is not None:
        (tmp_path / "pytorch_model.bin.index.json").write_text(index)
    with pytest.raises(ScasegError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        P.hf_folder_files(tmp_path)
