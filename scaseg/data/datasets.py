"""Segmentation datasets read from their standard on-disk layouts, without torch.

A `SegDataset` is a list of (image path, label path) pairs plus the class names and palette; it reads
files only on `__getitem__`, so it is cheap to build, to pickle into DataLoader workers and to shard.
Labels come back as uint8 train ids with 255 = ignore, whatever the dataset stores on disk.

Over 400 lines: five layouts, each with its one-sentence refusals, beside the label decoding they name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from scaseg.data import classes as dc
from scaseg.errors import ScasegError
from scaseg.metadata import default_palette
from scaseg.data.image_headers import ORIENTATIONS, probe_image
from scaseg.data.images import read_image_header, read_raw
from scaseg.suffixes import IMAGE_SUFFIXES, LABEL_SUFFIXES

DATASET_KINDS = ("cityscapes", "ade20k", "voc", "cocostuff", "folder")
IGNORE_INDEX = 255

# How a label file is turned into train ids (a name, not a function, so datasets pickle cheaply).
_TRAIN_IDS = "train_ids"  # stored as train ids already (Cityscapes *_labelTrainIds, COCO-Stuff 164k, folder)
_CITYSCAPES_IDS = "cityscapes_ids"  # Cityscapes *_labelIds: official id -> train id table
_ADE20K = "ade20k"  # 0 = "other" (ignored), class k stored as k + 1
_VOC = "voc"  # palette PNG (index = class, 255 = border) or a grayscale index PNG

_SPLIT_ALIASES = {
    "ade20k": {"train": "training", "val": "validation"},
    "cocostuff": {"train": "train2017", "val": "val2017"},
}


@dataclass
class Sample:
    """One image and its label map (train ids, 255 = ignore; None for unlabelled folders)."""

    image: np.ndarray  # RGB uint8 (H, W, 3)
    label: Optional[np.ndarray]  # uint8 (H, W)
    name: str  # unique within the split


@dataclass
class SegDataset:
    """A split of a segmentation dataset: file lists, class names and palette; files are read lazily."""

    kind: str
    split: str
    root: Path
    classes: list[str]
    palette: list[tuple[int, int, int]]
    image_paths: list[Path]
    label_paths: list[Optional[Path]]
    names: list[str]
    label_format: str = _TRAIN_IDS
    ignore_index: int = IGNORE_INDEX
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def has_labels(self) -> bool:
        return bool(self.label_paths) and all(p is not None for p in self.label_paths)

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        image, header = read_image_header(self.image_paths[i])
        label = self.load_label(i)
        if label is not None:
            self._check_orientation(i, header.orientation)
        if label is not None and label.shape != image.shape[:2]:
            raise ScasegError(
                f"the label {self.label_paths[i]} is {label.shape[0]}x{label.shape[1]} but its image "
                f"{self.image_paths[i]} is {image.shape[0]}x{image.shape[1]}"
            )
        return Sample(image=image, label=label, name=self.names[i])

    def _check_orientation(self, i: int, orientation: int) -> None:
        """A photo turned by its EXIF orientation and a label map that is not (labels are never turned): refused,
        since nothing says whether the label was drawn on the stored pixels or on the turned picture."""
        if orientation == 1:
            return
        path = self.label_paths[i]
        assert path is not None
        if probe_image(path, f"the label {path}").orientation == orientation:  # a TIFF label turned alike
            return
        raise ScasegError(
            f"the image {self.image_paths[i]} is {ORIENTATIONS[orientation]} by its EXIF orientation ({orientation}) "
            f"but its label {path} is not, so the pair cannot be aligned for sure; remove the tag if the label "
            f"matches the stored pixels (exiftool -Orientation= FILE), or save the image upright")

    def load_image(self, i: int) -> np.ndarray:
        """The RGB uint8 image of sample ``i``, upright (no label read)."""
        return read_image_header(self.image_paths[i])[0]

    def load_label(self, i: int) -> Optional[np.ndarray]:
        """The uint8 train-id label of sample ``i``, checked against the class range; None if unlabelled."""
        path = self.label_paths[i]
        if path is None:
            return None
        return decode_label(path, self.label_format, self.num_classes, self.ignore_index)

    def __repr__(self) -> str:
        return (f"SegDataset(kind={self.kind!r}, split={self.split!r}, root={str(self.root)!r}, "
                f"samples={len(self)}, classes={self.num_classes}, labelled={self.has_labels})")


# --------------------------------------------------------------------------- label decoding (pure)

_CITYSCAPES_LUT = np.full(256, IGNORE_INDEX, dtype=np.uint8)
_CITYSCAPES_LUT[: len(dc.CITYSCAPES_ID_TO_TRAINID)] = dc.CITYSCAPES_ID_TO_TRAINID
_ADE20K_LUT = ((np.arange(256) - 1) % 256).astype(np.uint8)  # 0 -> 255, k -> k - 1
_VOC_KEYS = np.array([(r << 16) | (g << 8) | b for r, g, b in dc.VOC_FULL_PALETTE], dtype=np.int64)
_VOC_ORDER = np.argsort(_VOC_KEYS)


def _read_raw_label(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ScasegError(f"label file not found: {path}")
    return read_raw(path, f"the label {path}")[0]  # the memory rule of every image; never turned by EXIF


def _single_channel(raw: np.ndarray, path: Path) -> np.ndarray:
    if raw.ndim == 2:
        return raw
    colour = raw[:, :, :3]
    # Some tools save a class-id map as grey RGB; accept it when all three channels agree.
    if np.array_equal(colour[:, :, 0], colour[:, :, 1]) and np.array_equal(colour[:, :, 0], colour[:, :, 2]):
        return np.ascontiguousarray(colour[:, :, 0])
    raise ScasegError(f"the label {path} is a colour image; expected a single-channel map of class ids")


def _voc_colours_to_index(bgr: np.ndarray, path: Path) -> np.ndarray:
    # OpenCV expands a palette PNG to colours; the 256 VOC colours are distinct, so mapping back is exact.
    b, g, r = (bgr[:, :, c].astype(np.int64) for c in range(3))
    keys = (r << 16) | (g << 8) | b
    pos = np.searchsorted(_VOC_KEYS[_VOC_ORDER], keys)
    pos = np.minimum(pos, len(_VOC_KEYS) - 1)
    index = _VOC_ORDER[pos]
    bad = _VOC_KEYS[index] != keys
    if bad.any():
        y, x = np.argwhere(bad)[0]
        raise ScasegError(
            f"the label {path} has the colour RGB{(int(r[y, x]), int(g[y, x]), int(b[y, x]))} at pixel "
            f"({y}, {x}), which is not in the Pascal VOC palette"
        )
    return index.astype(np.uint8)


def decode_label(path: Union[str, Path], label_format: str, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Read a label file as uint8 train ids; values outside 0..num_classes-1 (other than ignore) raise ScasegError."""
    path = Path(path)
    raw = _read_raw_label(path)
    if label_format == _VOC and raw.ndim == 3 and raw.shape[2] in (3, 4):
        ids = _voc_colours_to_index(raw, path)
    else:
        ids = _single_channel(raw, path)
        if ids.dtype != np.uint8:
            top = int(ids.max())
            if top > 255 or ids.dtype.kind not in "ui":
                raise ScasegError(f"the label {path} holds the value {top}, outside the {num_classes} classes "
                                  f"(0..{num_classes - 1}) and not the ignore index {ignore_index}")
            ids = ids.astype(np.uint8)
        if label_format == _CITYSCAPES_IDS:
            top = int(ids.max())
            if top >= len(dc.CITYSCAPES_ID_TO_TRAINID):
                raise ScasegError(f"the label {path} holds the id {top}, outside the Cityscapes label ids 0..33")
            ids = _CITYSCAPES_LUT[ids]
        elif label_format == _ADE20K:
            ids = _ADE20K_LUT[ids]
        elif label_format not in (_TRAIN_IDS, _VOC):
            raise ValueError(f"unknown label format {label_format!r}")
    bad = (ids >= num_classes) & (ids != ignore_index)
    if bad.any():
        value = int(ids[bad][0])
        if label_format == _ADE20K:
            value += 1  # report the value as stored in the file
        raise ScasegError(f"the label {path} holds the class id {value}, outside the {num_classes} classes "
                          f"(0..{num_classes - 1}) and not the ignore index {ignore_index}")
    return ids


# --------------------------------------------------------------------------- file listing


def list_images(folder: Union[str, Path], *, recursive: bool = True) -> list[Path]:
    """Image files (IMAGE_SUFFIXES, any case) in a folder, sorted by relative path; hidden files are skipped."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ScasegError(f"image folder not found: {folder}")
    return _list_files(folder, IMAGE_SUFFIXES, recursive)


def _list_files(folder: Path, extensions: Sequence[str], recursive: bool) -> list[Path]:
    found = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            found += [Path(dirpath) / f for f in filenames if _wanted(f, extensions)]
    else:
        found = [p for p in folder.iterdir() if p.is_file() and _wanted(p.name, extensions)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _wanted(filename: str, extensions: Sequence[str]) -> bool:
    # Hidden names include the temporary files of atomic writes in progress.
    return not filename.startswith(".") and os.path.splitext(filename)[1].lower() in extensions


def _has_image(folder: Path) -> bool:
    """Whether any image lies in the folder or below it (stops at the first one)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(_wanted(f, IMAGE_SUFFIXES) for f in filenames):
            return True
    return False


def _stem_map(folder: Path, files: list[Path], what: str) -> dict[str, Path]:
    """Relative path without extension -> file; two files with one stem are ambiguous."""
    out: dict[str, Path] = {}
    for path in files:
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in out:
            raise ScasegError(f"two {what} files share the name {key!r} in {folder}: {out[key].name} and {path.name}")
        out[key] = path
    return out


def _require_dir(path: Path, expected: str) -> Path:
    if not path.is_dir():
        raise ScasegError(f"expected {expected} at {path}, but that folder does not exist")
    return path


def _few(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(str(n) for n in list(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _pair_up(images: dict[str, Path], labels: dict[str, Path], image_dir: Path, label_dir: Path,
             expected_label: str) -> tuple[list[str], list[Path], list[Path]]:
    """Match images to labels by name; any image without label or label without image is an error."""
    no_label = [n for n in images if n not in labels]
    if no_label:
        raise ScasegError(f"{len(no_label)} of {len(images)} images in {image_dir} have no label in {label_dir} "
                          f"(expected {expected_label}): {_few(no_label)}")
    no_image = [n for n in labels if n not in images]
    if no_image:
        raise ScasegError(f"{len(no_image)} labels in {label_dir} have no image in {image_dir}: {_few(no_image)}")
    names = sorted(images)
    return names, [images[n] for n in names], [labels[n] for n in names]


def _check_classes(kind: str, default: Sequence[str], classes: Optional[Sequence[str]]) -> list[str]:
    if classes is None:
        return list(default)
    classes = list(classes)
    if len(classes) != len(default):
        raise ScasegError(f"{kind} has {len(default)} classes but {len(classes)} class names were given")
    return [str(c) for c in classes]


# --------------------------------------------------------------------------- layouts


def _open_cityscapes(root: Path, split: str, classes: Optional[Sequence[str]]) -> SegDataset:
    image_dir = _require_dir(root / "leftImg8bit" / split,
                             f"Cityscapes images for split {split!r} (leftImg8bit/{split}/<city>/*_leftImg8bit.png)")
    label_dir = _require_dir(root / "gtFine" / split,
                             f"Cityscapes labels for split {split!r} (gtFine/{split}/<city>/*_gtFine_labelTrainIds.png)")
    images = {p.parent.name + "/" + p.name[: -len("_leftImg8bit.png")]: p
              for p in sorted(image_dir.glob("*/*_leftImg8bit.png"))}
    if not images:
        raise ScasegError(f"no Cityscapes images in {image_dir}: expected <city>/<city>_<seq>_<frame>_leftImg8bit.png files")
    labels: dict[str, Path] = {}
    formats: dict[str, str] = {}
    # Train ids win over raw ids when both exist: they are what the user prepared for training.
    for suffix, fmt in (("_gtFine_labelIds.png", _CITYSCAPES_IDS), ("_gtFine_labelTrainIds.png", _TRAIN_IDS)):
        for p in sorted(label_dir.glob(f"*/*{suffix}")):
            key = p.parent.name + "/" + p.name[: -len(suffix)]
            labels[key], formats[key] = p, fmt
    names, image_paths, label_paths = _pair_up(images, labels, image_dir, label_dir,
                                               "<name>_gtFine_labelTrainIds.png or <name>_gtFine_labelIds.png")
    used = {formats[n] for n in names}
    if len(used) > 1:
        # One format per dataset keeps decoding a plain attribute; mixed folders are unusual enough to refuse.
        mixed = [n for n in names if formats[n] == _CITYSCAPES_IDS]
        raise ScasegError(f"{label_dir} mixes *_labelTrainIds.png and *_labelIds.png-only samples "
                          f"(e.g. {_few(mixed)}): create train ids for all, or for none")
    return SegDataset("cityscapes", split, root, _check_classes("cityscapes", dc.CITYSCAPES_CLASSES, classes),
                      list(dc.CITYSCAPES_PALETTE), image_paths, list(label_paths),
                      [n.split("/", 1)[1] for n in names], label_format=used.pop())


def _ade20k_root(root: Path) -> Path:
    return root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root


def _split_folders(image_dir: Path, label_dir: Path, image_what: str, label_what: str,
                   expected: str) -> tuple[Path, Path, dict[str, Path]]:
    """A split's image and label folders (each must exist) and its images by stem, refused when there are none."""
    image_dir, label_dir = _require_dir(image_dir, image_what), _require_dir(label_dir, label_what)
    images = _stem_map(image_dir, _list_files(image_dir, IMAGE_SUFFIXES, False), "image")
    if not images:
        raise ScasegError(f"no images in {image_dir}: expected {expected} files")
    return image_dir, label_dir, images


def _open_ade20k(root: Path, split: str, classes: Optional[Sequence[str]]) -> SegDataset:
    base = _ade20k_root(root)
    folder = _SPLIT_ALIASES["ade20k"].get(split, split)
    image_dir, label_dir, images = _split_folders(
        base / "images" / folder, base / "annotations" / folder,
        f"ADE20K images (ADEChallengeData2016/images/{folder}/ADE_*.jpg)",
        f"ADE20K annotations (ADEChallengeData2016/annotations/{folder}/ADE_*.png)", "ADE_*.jpg")
    labels = _stem_map(label_dir, _list_files(label_dir, LABEL_SUFFIXES, False), "label")
    names, image_paths, label_paths = _pair_up(images, labels, image_dir, label_dir, "<name>.png")
    return SegDataset("ade20k", split, base, _check_classes("ade20k", dc.ADE20K_CLASSES, classes),
                      list(dc.ADE20K_PALETTE), image_paths, list(label_paths), names, label_format=_ADE20K)


def _voc_root(root: Path) -> Path:
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir():
            return cand
    return root


def _open_voc(root: Path, split: str, classes: Optional[Sequence[str]]) -> SegDataset:
    base = _voc_root(root)
    image_dir = _require_dir(base / "JPEGImages", "Pascal VOC images (JPEGImages/*.jpg)")
    label_dir = _require_dir(base / "SegmentationClass", "Pascal VOC labels (SegmentationClass/*.png)")
    list_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_file.is_file():
        raise ScasegError(f"expected the Pascal VOC split list {list_file} (one image id per line), but it does not exist")
    ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise ScasegError(f"the Pascal VOC split list {list_file} is empty")
    image_paths = [image_dir / f"{i}.jpg" for i in ids]
    label_paths = [label_dir / f"{i}.png" for i in ids]
    no_image = [i for i, p in zip(ids, image_paths) if not p.is_file()]
    if no_image:
        raise ScasegError(f"{len(no_image)} ids listed in {list_file} have no image {image_dir}/<id>.jpg: {_few(no_image)}")
    no_label = [i for i, p in zip(ids, label_paths) if not p.is_file()]
    if no_label:
        raise ScasegError(f"{len(no_label)} images listed in {list_file} have no label {label_dir}/<id>.png: {_few(no_label)}")
    return SegDataset("voc", split, base, _check_classes("voc", dc.VOC_CLASSES, classes), list(dc.VOC_PALETTE),
                      image_paths, list(label_paths), ids, label_format=_VOC)


def _open_cocostuff(root: Path, split: str, classes: Optional[Sequence[str]]) -> SegDataset:
    folder = _SPLIT_ALIASES["cocostuff"].get(split, split)
    image_dir, label_dir, images = _split_folders(
        root / "images" / folder, root / "annotations" / folder, f"COCO-Stuff images (images/{folder}/*.jpg)",
        f"COCO-Stuff labels (annotations/{folder}/*_labelTrainIds.png)", "<id>.jpg")
    suffix = "_labelTrainIds.png"
    labels = {p.name[: -len(suffix)]: p for p in sorted(label_dir.glob(f"*{suffix}"))}
    names, image_paths, label_paths = _pair_up(images, labels, image_dir, label_dir, f"<id>{suffix}")
    return SegDataset("cocostuff", split, root, _check_classes("cocostuff", dc.COCOSTUFF_CLASSES, classes),
                      list(dc.COCOSTUFF_PALETTE), image_paths, list(label_paths), names)


def _folder_classes(root: Path, classes: Union[Sequence[str], int, None], labelled: bool) -> list[str]:
    if isinstance(classes, int):
        return [f"class{i}" for i in range(classes)]
    if classes is not None:
        return [str(c) for c in classes]
    names_file = root / "classes.txt"
    if names_file.is_file():
        return [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    if labelled:
        raise ScasegError(f"the labelled folder {root} has no class list: write {names_file} (one class name per line) "
                          "or pass the class names")
    return []


def _open_folder(root: Path, split: str, classes: Union[Sequence[str], int, None]) -> SegDataset:
    # images/<split>/ + labels/<split>/, else images/ + labels/ (one split), else a flat folder of images.
    if (root / "images" / split).is_dir():
        image_dir, label_dir = root / "images" / split, root / "labels" / split
    elif (root / "images").is_dir():
        image_dir, label_dir = root / "images", root / "labels"
    else:
        image_dir, label_dir = root, None
    images = _stem_map(image_dir, list_images(image_dir), "image")
    if not images:
        raise ScasegError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
    if label_dir is not None and label_dir.is_dir():
        labels = _stem_map(label_dir, _list_files(label_dir, LABEL_SUFFIXES, True), "label")
        names, image_paths, label_paths = _pair_up(images, labels, image_dir, label_dir, "a .png of the same name")
        paths: list[Optional[Path]] = list(label_paths)
    else:
        names = sorted(images)
        image_paths, paths = [images[n] for n in names], [None] * len(names)
    names_list = _folder_classes(root, classes, paths[0] is not None)
    return SegDataset("folder", split, root, names_list, default_palette(len(names_list)), image_paths, paths, names)


_OPENERS = {"cityscapes": _open_cityscapes, "ade20k": _open_ade20k, "voc": _open_voc,
            "cocostuff": _open_cocostuff, "folder": _open_folder}


def detect_kind(root: Union[str, Path]) -> str:
    """Guess the layout of a dataset folder from the sub-folders each standard layout has."""
    root = Path(root).expanduser()
    if (root / "leftImg8bit").is_dir():
        return "cityscapes"
    ade = _ade20k_root(root)
    if (ade / "images" / "training").is_dir() or (ade / "images" / "validation").is_dir():
        return "ade20k"
    if (_voc_root(root) / "JPEGImages").is_dir():
        return "voc"
    if (root / "images" / "train2017").is_dir() or (root / "images" / "val2017").is_dir():
        return "cocostuff"
    if (root / "images").is_dir() or _has_image(root):
        return "folder"
    raise ScasegError(
        f"cannot tell the dataset layout of {root}: expected leftImg8bit/ + gtFine/ (Cityscapes), "
        "ADEChallengeData2016/images/ (ADE20K), JPEGImages/ + SegmentationClass/ (Pascal VOC), "
        "images/train2017/ + annotations/ (COCO-Stuff), images/ + labels/ or image files (folder)"
    )


def open_dataset(root: Union[str, Path], kind: str = "auto", split: str = "val", *,
                 classes: Union[Sequence[str], int, None] = None) -> SegDataset:
    """Open one split of a dataset folder; ``kind="auto"`` detects the layout.

    ``split`` is "train" or "val" (mapped to each dataset's own folder names) or a dataset's own split name.
    ``classes`` names the classes of a "folder" dataset (or gives their number); for the standard datasets it
    only renames them.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ScasegError(f"dataset folder not found: {root}")
    if kind == "auto":
        kind = detect_kind(root)
    if kind not in _OPENERS:
        raise ScasegError(f"unknown dataset kind {kind!r} (expected auto or one of {', '.join(DATASET_KINDS)})")
    if kind != "folder" and isinstance(classes, int):
        raise ScasegError(f"{kind} has a fixed class list; pass class names, not a number")
    return _OPENERS[kind](root, split, classes)  # type: ignore[arg-type]
