"""Dataset readers on tiny fake datasets in each real on-disk layout, and their user errors."""
from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from scaseg.data.classes import VOC_FULL_PALETTE
from scaseg.data.datasets import DATASET_KINDS, detect_kind, list_images, open_dataset
from scaseg.errors import ScasegError

H, W = 6, 8


def _image(path: Path, seed: int = 0) -> np.ndarray:
    """Write a random RGB image (lossless PNG, or JPEG by suffix); return it as RGB."""
    rgb = np.random.default_rng(seed).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[:, :, ::-1])
    return rgb


def _label(path: Path, values) -> np.ndarray:
    lab = np.asarray(values, dtype=np.uint8).reshape(H, W)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), lab)
    return lab


def _ramp(top: int) -> np.ndarray:
    return (np.arange(H * W) % (top + 1)).reshape(H, W)


def _palette_png(path: Path, index: np.ndarray, palette) -> None:
    """A real 8-bit palette PNG (colour type 3), as the VOC SegmentationClass files are, written by hand."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w = index.shape
    raw = b"".join(b"\x00" + row.astype(np.uint8).tobytes() for row in index)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
           + chunk(b"PLTE", bytes(int(v) for rgb in palette for v in rgb)) + chunk(b"IDAT", zlib.compress(raw))
           + chunk(b"IEND", b""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


# --------------------------------------------------------------------------- Cityscapes


def _cityscapes(root: Path, split: str = "val", train_ids: bool = True, n: int = 2) -> dict:
    labels = {}
    for i in range(n):
        city = "aachen" if i % 2 == 0 else "bochum"
        name = f"{city}_{i:06d}_000019"
        _image(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", i)
        gt = root / "gtFine" / split / city
        if train_ids:
            labels[name] = _label(gt / f"{name}_gtFine_labelTrainIds.png", np.where(_ramp(19) == 19, 255, _ramp(19)))
        else:
            labels[name] = _label(gt / f"{name}_gtFine_labelIds.png", _ramp(33))
    return labels


def test_cityscapes_train_ids(tmp_path):
    labels = _cityscapes(tmp_path)
    ds = open_dataset(tmp_path)  # auto-detected, split "val"
    assert (ds.kind, ds.split, len(ds), ds.num_classes) == ("cityscapes", "val", 2, 19)
    assert ds.classes[0] == "road" and ds.classes[18] == "bicycle" and ds.palette[13] == (0, 0, 142)
    sample = ds[1]
    assert sample.name == "bochum_000001_000019"
    assert sample.image.shape == (H, W, 3) and sample.image.dtype == np.uint8
    np.testing.assert_array_equal(sample.image, np.random.default_rng(1).integers(0, 256, size=(H, W, 3), dtype=np.uint8))
    np.testing.assert_array_equal(sample.label, labels[sample.name])


def test_cityscapes_label_ids_are_mapped_with_the_official_table(tmp_path):
    _cityscapes(tmp_path, train_ids=False, n=1)
    label = open_dataset(tmp_path, "cityscapes", "val")[0].label
    ids = _ramp(33)
    # road 7->0, sidewalk 8->1, building 11->2, vegetation 21->8, sky 23->10, person 24->11, car 26->13, bicycle 33->18
    for raw, train in ((7, 0), (8, 1), (11, 2), (21, 8), (23, 10), (24, 11), (26, 13), (31, 16), (33, 18)):
        assert set(label[ids == raw].tolist()) == {train}
    for void in (0, 1, 4, 6, 9, 10, 14, 15, 16, 18, 29, 30):
        assert set(label[ids == void].tolist()) == {255}


def test_cityscapes_missing_pieces_are_named(tmp_path):
    _cityscapes(tmp_path, n=3)
    with pytest.raises(ScasegError, match=r"leftImg8bit/train"):
        open_dataset(tmp_path, "cityscapes", "train")
    (tmp_path / "gtFine/val/bochum/bochum_000001_000019_gtFine_labelTrainIds.png").unlink()
    with pytest.raises(ScasegError, match=r"1 of 3 images .* have no label .*bochum_000001_000019"):
        open_dataset(tmp_path, "cityscapes")
    _label(tmp_path / "gtFine/val/bochum/bochum_000001_000019_gtFine_labelTrainIds.png", np.zeros(H * W))
    _label(tmp_path / "gtFine/val/köln/köln_000009_000019_gtFine_labelTrainIds.png", np.zeros(H * W))
    with pytest.raises(ScasegError, match=r"1 labels .* have no image .*köln_000009_000019"):
        open_dataset(tmp_path, "cityscapes")


def test_label_values_outside_the_classes_name_the_file(tmp_path):
    _cityscapes(tmp_path, n=1)
    bad = tmp_path / "gtFine/val/aachen/aachen_000000_000019_gtFine_labelTrainIds.png"
    _label(bad, np.full(H * W, 19))
    ds = open_dataset(tmp_path)
    with pytest.raises(ScasegError, match=r"aachen_000000_000019_gtFine_labelTrainIds\.png holds the class id 19"):
        ds[0]


def test_unreadable_image_and_mismatched_label_name_the_file(tmp_path):
    _cityscapes(tmp_path, n=2)
    broken = tmp_path / "leftImg8bit/val/aachen/aachen_000000_000019_leftImg8bit.png"
    broken.write_bytes(b"not a png")
    ds = open_dataset(tmp_path)
    with pytest.raises(ScasegError, match=r"cannot decode the image .*aachen_000000_000019_leftImg8bit\.png"):
        ds[0]
    small = tmp_path / "gtFine/val/bochum/bochum_000001_000019_gtFine_labelTrainIds.png"
    cv2.imwrite(str(small), np.zeros((H - 1, W), np.uint8))
    with pytest.raises(ScasegError, match=r"label .*bochum_000001_000019_gtFine_labelTrainIds\.png is 5x8 but its image"):
        ds[1]


# --------------------------------------------------------------------------- ADE20K


def test_ade20k_zero_is_ignored_and_ids_shift_down(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    _image(base / "images/validation/ADE_val_00000001.jpg")
    raw = _ramp(150)
    _label(base / "annotations/validation/ADE_val_00000001.png", raw)
    for root in (tmp_path, base):  # the folder itself or its parent
        ds = open_dataset(root, split="val")
        assert ds.kind == "ade20k" and ds.num_classes == 150 and ds.classes[0] == "wall" and ds.classes[-1] == "flag"
        label = ds[0].label
        np.testing.assert_array_equal(label, np.where(raw == 0, 255, raw - 1))
        assert ds[0].image.shape == (H, W, 3)
    _label(base / "annotations/validation/ADE_val_00000001.png", np.full(H * W, 151))
    with pytest.raises(ScasegError, match=r"ADE_val_00000001\.png holds the class id 151"):
        open_dataset(tmp_path, "ade20k", "validation")[0]
    with pytest.raises(ScasegError, match=r"ADEChallengeData2016/images/training"):
        open_dataset(tmp_path, "ade20k", "train")


# --------------------------------------------------------------------------- Pascal VOC


def _voc(root: Path, ids=("2007_000032", "2007_000033")) -> dict:
    base = root / "VOCdevkit" / "VOC2012"
    labels = {}
    for k, i in enumerate(ids):
        _image(base / "JPEGImages" / f"{i}.jpg", k)
        index = _ramp(20)
        index[0, :] = 255  # object border
        _palette_png(base / "SegmentationClass" / f"{i}.png", index, VOC_FULL_PALETTE)
        labels[i] = index
    split = base / "ImageSets" / "Segmentation" / "val.txt"
    split.parent.mkdir(parents=True)
    split.write_text("\n".join(ids) + "\n")
    return labels


def test_voc_palette_pngs_decode_to_class_indices(tmp_path):
    labels = _voc(tmp_path)
    ds = open_dataset(tmp_path)
    assert ds.kind == "voc" and ds.num_classes == 21 and ds.classes[15] == "person"
    assert ds.palette[1] == (128, 0, 0)
    assert ds.names == ["2007_000032", "2007_000033"]
    np.testing.assert_array_equal(ds[0].label, labels["2007_000032"])


def test_voc_grayscale_index_labels_and_foreign_colours(tmp_path):
    _voc(tmp_path, ids=("a",))
    path = tmp_path / "VOCdevkit/VOC2012/SegmentationClass/a.png"
    _label(path, _ramp(20))  # SBD-style grayscale index PNG
    np.testing.assert_array_equal(open_dataset(tmp_path, "voc")[0].label, _ramp(20))
    colour = np.zeros((H, W, 3), np.uint8)
    colour[2, 3] = (1, 2, 3)
    cv2.imwrite(str(path), colour)
    with pytest.raises(ScasegError, match=r"a\.png has the colour RGB\(3, 2, 1\) at pixel \(2, 3\)"):
        open_dataset(tmp_path, "voc")[0]


def test_voc_missing_label_and_split_list(tmp_path):
    _voc(tmp_path)
    (tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000033.png").unlink()
    with pytest.raises(ScasegError, match=r"have no label .*2007_000033"):
        open_dataset(tmp_path, "voc")
    with pytest.raises(ScasegError, match=r"ImageSets/Segmentation/train\.txt"):
        open_dataset(tmp_path, "voc", "train")


# --------------------------------------------------------------------------- COCO-Stuff


def test_cocostuff_train_ids(tmp_path):
    _image(tmp_path / "images/val2017/000000000139.jpg")
    raw = np.where(_ramp(171) == 171, 255, _ramp(171))
    _label(tmp_path / "annotations/val2017/000000000139_labelTrainIds.png", raw)
    ds = open_dataset(tmp_path)
    assert ds.kind == "cocostuff" and ds.num_classes == 171 and ds.classes[0] == "person" and ds.classes[-1] == "wood"
    np.testing.assert_array_equal(ds[0].label, raw)
    _label(tmp_path / "annotations/val2017/000000000999_labelTrainIds.png", raw)
    with pytest.raises(ScasegError, match=r"have no image .*000000000999"):
        open_dataset(tmp_path, "cocostuff", "val")


# --------------------------------------------------------------------------- plain folders


def test_folder_with_labels_and_class_file(tmp_path):
    _image(tmp_path / "images/b.png", 1)
    _image(tmp_path / "images/sub/a.jpg", 2)
    lab_b = _label(tmp_path / "labels/b.png", np.where(_ramp(3) == 3, 255, _ramp(3)))
    _label(tmp_path / "labels/sub/a.png", _ramp(2))
    (tmp_path / "classes.txt").write_text("bg\nfg\nedge\n")
    ds = open_dataset(tmp_path)
    assert (ds.kind, ds.classes, ds.names) == ("folder", ["bg", "fg", "edge"], ["b", "sub/a"])
    assert len(ds.palette) == 3
    np.testing.assert_array_equal(ds[0].label, lab_b)
    with pytest.raises(ScasegError, match=r"labels/sub/a\.png holds the class id 2, outside the 2 classes"):
        open_dataset(tmp_path, "folder", classes=["x", "y"])[1]
    assert open_dataset(tmp_path, "folder", classes=4).classes == ["class0", "class1", "class2", "class3"]


def test_folder_errors(tmp_path):
    _image(tmp_path / "images/a.png")
    _image(tmp_path / "images/b.png")
    _label(tmp_path / "labels/a.png", np.zeros(H * W))
    with pytest.raises(ScasegError, match=r"1 of 2 images .* have no label .*: b"):
        open_dataset(tmp_path, "folder", classes=2)
    _label(tmp_path / "labels/b.png", np.zeros(H * W))
    with pytest.raises(ScasegError, match=r"no class list"):
        open_dataset(tmp_path, "folder")
    _image(tmp_path / "images/a.jpg")
    with pytest.raises(ScasegError, match=r"two image files share the name 'a'"):
        open_dataset(tmp_path, "folder", classes=2)


def test_flat_unlabelled_folder(tmp_path):
    rgb = _image(tmp_path / "x.png")
    ds = open_dataset(tmp_path)
    assert ds.kind == "folder" and len(ds) == 1 and not ds.has_labels
    sample = ds[0]
    assert sample.label is None and sample.name == "x"
    np.testing.assert_array_equal(sample.image, rgb)


def test_nested_unlabelled_folder_is_detected(tmp_path):
    _image(tmp_path / "day1/cam0/frame.png")
    ds = open_dataset(tmp_path)
    assert ds.kind == "folder" and ds.names == ["day1/cam0/frame"]


def test_folder_splits(tmp_path):
    for split in ("train", "val"):
        _image(tmp_path / f"images/{split}/{split}0.png")
        _label(tmp_path / f"labels/{split}/{split}0.png", np.zeros(H * W))
    assert open_dataset(tmp_path, "folder", "train", classes=1).names == ["train0"]
    assert open_dataset(tmp_path, "folder", "val", classes=1).names == ["val0"]


# --------------------------------------------------------------------------- shared behaviour


def test_list_images_sorted_recursive_and_skips_hidden_and_non_images(tmp_path):
    for rel in ("b.PNG", "a.jpg", "sub/c.jpeg", "sub/deeper/d.webp", ".tmp.png", "notes.txt", ".hidden/e.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == [
        "a.jpg", "b.PNG", "sub/c.jpeg", "sub/deeper/d.webp"]
    assert [p.name for p in list_images(tmp_path, recursive=False)] == ["a.jpg", "b.PNG"]
    with pytest.raises(ScasegError, match="image folder not found"):
        list_images(tmp_path / "nope")


def test_unknown_layout_missing_root_and_bad_kind(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScasegError, match=r"cannot tell the dataset layout .*leftImg8bit/"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(ScasegError, match="dataset folder not found"):
        open_dataset(tmp_path / "missing")
    with pytest.raises(ScasegError, match="unknown dataset kind 'kitti'"):
        open_dataset(tmp_path / "empty", "kitti")
    assert set(DATASET_KINDS) == {"cityscapes", "ade20k", "voc", "cocostuff", "folder"}


def test_detect_kind_for_every_layout(tmp_path):
    layouts = {"cityscapes": "leftImg8bit", "ade20k": "ADEChallengeData2016/images/training", "voc": "JPEGImages",
               "cocostuff": "images/train2017", "folder": "images"}
    for kind, sub in layouts.items():
        (tmp_path / kind / sub).mkdir(parents=True)
        assert detect_kind(tmp_path / kind) == kind


def test_datasets_pickle_small_and_read_the_same_after(tmp_path):
    _cityscapes(tmp_path, n=2)
    ds = open_dataset(tmp_path)
    blob = pickle.dumps(ds)
    assert len(blob) < 4000  # paths and names only, no pixels
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again[1].label, ds[1].label)
    sample_blob = pickle.dumps(ds[0])
    assert pickle.loads(sample_blob).name == ds[0].name
    assert "samples=2" in repr(ds)
    with pytest.raises(IndexError):
        ds[2]
