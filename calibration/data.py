"""Calibration and held-out images -> network batches (the runtime's own preprocessing), and the statistics cache.

Sources: a plain image folder (any sizes and channel counts: the shared preprocessing converts them to RGB and
resizes them as the model's metadata says), or a dataset root in a standard layout (calibration from its train
split, labelled held-out images from its val split).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from scaseg.calibration.ranges import BINS, TensorStats
from scaseg.data.datasets import SegDataset, detect_kind, list_images, open_dataset
from scaseg.data.image_headers import ImageTooLarge, probe_image
from scaseg.data.images import read_image
from scaseg.errors import ScasegError
from scaseg.fileio import atomic_path
from scaseg.metadata import ModelInfo
from scaseg.progress import write
from scaseg.runtime.predictor import output_to_labels
from scaseg.runtime.preprocess import Geometry, preprocess, resize_image
from scaseg.suffixes import IMAGE_SUFFIXES

MIN_CALIB_IMAGES = 4
MIN_HELDOUT_IMAGES = 2
MAX_HELDOUT_IMAGES = 16
CACHE_VERSION = 1


@dataclass(frozen=True)
class Item:
    """One image (and its label when it comes from a labelled dataset split), read on demand."""

    path: Path
    dataset: Optional[SegDataset] = None
    index: int = -1

    def load(self) -> tuple[np.ndarray, Optional[np.ndarray]]:
        if self.dataset is None:
            return read_image(str(self.path)), None
        sample = self.dataset[self.index]
        return sample.image, sample.label


@dataclass
class CalibrationSet:
    """Which images calibrate, which are held out for the accuracy guard, and whether those have labels."""

    source: str  # "image folder" or the dataset kind
    calib: list[Item]
    heldout: list[Item]
    labelled: bool

    def describe(self) -> str:
        ref = "labels" if self.labelled else "the fp32 model's argmax"
        return f"{len(self.calib)} calibration + {len(self.heldout)} held-out images from the {self.source}; guard reference: {ref}"


def _items(ds: SegDataset) -> list[Item]:
    return [Item(Path(p), ds, i) for i, p in enumerate(ds.image_paths)]


def _split(items: list[Item], calib_num: int) -> tuple[list[Item], list[Item]]:
    """Hold out a few images (a fifth, 2..16) and calibrate on up to ``calib_num`` of the rest."""
    held = min(MAX_HELDOUT_IMAGES, max(MIN_HELDOUT_IMAGES, len(items) // 5))
    # Every k-th image is held out, so both sets span the folder (sorted names often follow a sequence).
    step = max(1, len(items) // held)
    held_idx = set(range(step - 1, len(items), step)[:held])
    rest = [it for i, it in enumerate(items) if i not in held_idx]
    return rest[:calib_num], [it for i, it in enumerate(items) if i in held_idx]


def _kind(root: Path) -> str:
    """A standard dataset layout, or "folder" for anything else (which must then hold images)."""
    try:
        return detect_kind(root)
    except ScasegError:
        return "folder"


def _open_source(source: str) -> tuple[Path, str, Optional[list[Item]]]:
    """The root folder, its kind, and its images when it is a plain image folder (None for a dataset layout)."""
    root = Path(source).expanduser()
    if not root.is_dir():
        raise ScasegError(f"calibration folder not found: {root}")
    kind = _kind(root)
    if kind == "folder" and not (root / "images").is_dir():
        return root, kind, [Item(p) for p in list_images(root)]
    return root, kind, None


_warned: set[tuple[str, tuple[str, ...]]] = set()  # scaseg-export opens the set twice (check, then calibration)


def _decodable(root: Path, items: list[Item], refuse_corrupt: bool = True) -> list[Item]:
    """The items whose image (and label) the memory rule lets decode, by their headers (nothing is decoded).

    An image too large to decode here is skipped with one warning line for the folder. Files that are not images
    (or whose header is corrupt) are named and refused before any work, as a wrong calibration folder would be.
    """
    kept, large, corrupt = [], [], []
    for it in items:
        label = None if it.dataset is None else it.dataset.label_paths[it.index]
        paths = [it.path] + ([] if label is None else [Path(label)])
        try:
            for p in paths:
                probe_image(p)
        except ImageTooLarge as exc:
            large.append((it.path.name, str(exc)))
            continue
        except ScasegError:
            if not refuse_corrupt:
                raise
            corrupt.append(it.path)
            continue
        kept.append(it)
    if corrupt:
        names = ", ".join(p.name for p in corrupt[:3]) + (f" and {len(corrupt) - 3} more" if len(corrupt) > 3 else "")
        count = "all" if len(corrupt) == len(items) else str(len(corrupt))
        raise ScasegError(f"{count} of the {len(items)} images in the calibration folder {root} are corrupt or not "
                          f"images ({names}); remove or replace them")
    key = (str(root), tuple(name for name, _ in large))
    if large and key not in _warned:
        _warned.add(key)
        more = f" (and {len(large) - 1} more: {', '.join(n for n, _ in large[1:4])}{' ...' if len(large) > 4 else ''})"
        write(f"warning: skipped {len(large)} of the {len(items)} images in the calibration folder {root}: "
              f"{large[0][1]}{more if len(large) > 1 else ''}", file=sys.stderr)
    return kept


def open_calibration(source: str, calib_num: int) -> CalibrationSet:
    """Find the calibration and held-out images of an image folder or a dataset root."""
    if calib_num < MIN_CALIB_IMAGES:
        raise ScasegError(f"--calib-num must be at least {MIN_CALIB_IMAGES}, got {calib_num}")
    root, kind, items = _open_source(source)
    if items is not None:
        need = MIN_CALIB_IMAGES + MIN_HELDOUT_IMAGES
        if not items:
            raise ScasegError(f"the calibration folder {root} holds no images (expected {', '.join(IMAGE_SUFFIXES)} files)")
        items = _decodable(root, items)
        if len(items) < need:
            raise ScasegError(f"the calibration folder {root} holds {len(items)} images; at least {need} are needed "
                              f"({MIN_CALIB_IMAGES} to calibrate, {MIN_HELDOUT_IMAGES} held out to check accuracy)")
        calib, held = _split(items, calib_num)
        return CalibrationSet("image folder", calib, held, labelled=False)
    val = open_dataset(root, kind, split="val")
    try:
        train: Optional[SegDataset] = open_dataset(root, kind, split="train")
    except ScasegError:
        train = None
    if train is not None and len(train) >= MIN_CALIB_IMAGES and len(val) >= MIN_HELDOUT_IMAGES:
        held = _items(val)
        step = max(1, len(held) // MAX_HELDOUT_IMAGES)
        calib, heldout = _items(train)[:calib_num], held[::step][:MAX_HELDOUT_IMAGES]
    else:  # one split only: hold out part of it
        if len(val) < MIN_CALIB_IMAGES + MIN_HELDOUT_IMAGES:
            raise ScasegError(f"the {kind} dataset at {root} has {len(val)} val images and no usable train split; "
                              f"at least {MIN_CALIB_IMAGES + MIN_HELDOUT_IMAGES} images are needed")
        calib, heldout = _split(_items(val), calib_num)
    calib, heldout = _decodable(root, calib, False), _decodable(root, heldout, False)
    if len(calib) < MIN_CALIB_IMAGES or len(heldout) < MIN_HELDOUT_IMAGES:
        raise ScasegError(f"the {kind} dataset at {root} leaves {len(calib)} calibration and {len(heldout)} held-out "
                          f"images that can be decoded here; at least {MIN_CALIB_IMAGES} and {MIN_HELDOUT_IMAGES} "
                          "are needed")
    return CalibrationSet(f"{kind} dataset", calib, heldout, labelled=val.has_labels)


def batch_size(info: ModelInfo) -> int:
    """Images per run: 1 for a dynamic batch axis, else the static batch the graph was exported with."""
    return 1 if info.dynamic_batch else max(1, int(info.batch))


def to_input(image: np.ndarray, info: ModelInfo) -> tuple[np.ndarray, Geometry]:
    """One RGB uint8 image -> the model's input layout (3, H, W) or (H, W, 3), exactly as the runtime does it; for a
    raw-frame graph (uint8 input) the frame at the graph's source size, which the graph itself normalises."""
    if info.input_type == "uint8":
        return resize_image(image, info.input_size, "stretch")
    x, geom = preprocess(image, info.input_size, info.mean, info.std, info.resize)
    return (np.ascontiguousarray(x.transpose(1, 2, 0)) if info.layout == "NHWC" else x), geom


def _grouped(arrays: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    group: list[np.ndarray] = []
    for a in arrays:
        group.append(a)
        if len(group) == size:
            yield np.stack(group)
            group = []
    if group:  # a static batch axis is filled by repeating the last image
        yield np.stack(group + [group[-1]] * (size - len(group)))


def batches(items: Sequence[Item], info: ModelInfo) -> Iterator[np.ndarray]:
    """Preprocessed float32 batches of ``items`` (images of other sizes are resized by the shared preprocessing)."""
    return _grouped((to_input(it.load()[0], info)[0] for it in items), batch_size(info))


@dataclass
class HeldOut:
    """Held-out images as the model sees them, and what it takes to score them as scaseg-bench does."""

    batches: list[np.ndarray]  # network inputs, one (B, ...) array per run
    geometry: list[Geometry]  # per image: how it was resized, to bring a prediction back to its source size
    labels: Optional[list[np.ndarray]]  # per image at its source size, when every image has one

    def to_source(self, outputs: Sequence[np.ndarray], num_classes: int) -> list[np.ndarray]:
        """Model outputs, (B, C, h, w) logits or (B, h, w) labels per batch -> one label map per image at its source
        size, exactly as scaseg-bench's predictor makes it. The images that fill a static batch are dropped."""
        flat = [o for batch in outputs for o in batch][: len(self.geometry)]
        return [output_to_labels(o, g, num_classes) for o, g in zip(flat, self.geometry)]


def heldout_data(items: Sequence[Item], info: ModelInfo) -> HeldOut:
    """Held-out batches, the geometry of each image, and its label at the source size when every image has one."""
    xs, geometry, ys = [], [], []
    for it in items:
        image, label = it.load()
        x, geom = to_input(image, info)
        xs.append(x)
        geometry.append(geom)
        ys.append(label)
    labels = None if any(y is None for y in ys) else ys
    return HeldOut(list(_grouped(iter(xs), batch_size(info))), geometry, labels)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- statistics cache


def cache_key(graph_bytes: bytes, info: ModelInfo, items: Sequence[Item]) -> dict:
    """What cached statistics depend on: the graph, the preprocessing, and the calibration images."""
    files = hashlib.sha256()
    for it in items:
        try:
            st = it.path.stat()
            files.update(os.fsencode(f"{it.path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n"))
        except OSError:
            files.update(os.fsencode(f"{it.path}|missing\n"))
    return {
        "version": CACHE_VERSION,
        "model": hashlib.sha256(graph_bytes).hexdigest(),
        "preprocessing": {"input_size": list(info.input_size) if info.input_size else None, "input_type": info.input_type,
                          "mean": list(info.mean),
                          "std": list(info.std), "resize": info.resize, "layout": info.layout, "color": info.color},
        "images": files.hexdigest(),
        "num_images": len(items),
        "bins": BINS,
    }


def _mismatch(cached: dict, key: dict) -> Optional[str]:
    for field, what in (("version", "an older cache format"), ("model", "another model"),
                        ("preprocessing", "other preprocessing"), ("images", "other calibration images"),
                        ("num_images", "another number of images"), ("bins", "another histogram size")):
        if cached.get(field) != key[field]:
            return what
    return None


def load_stats(path: Path, key: dict) -> tuple[Optional[TensorStats], str]:
    """Cached statistics if ``path`` holds them for exactly ``key``; else None and why (refused or missing)."""
    if not path.is_file():
        return None, "miss"
    try:
        with np.load(path, allow_pickle=False) as z:
            cached = json.loads(str(z["key"]))
            why = _mismatch(cached, key)
            if why:
                return None, f"refused ({path.name} was made for {why}); recalibrated"
            return TensorStats([str(n) for n in z["names"]], z["absmax"].astype(np.float64),
                               z["hist"].astype(np.float64)), "hit"
    except (OSError, ValueError, KeyError):
        return None, f"refused ({path.name} is unreadable); recalibrated"


def save_stats(path: Path, key: dict, stats: TensorStats) -> None:
    """Write the statistics cache atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, key=np.array(json.dumps(key, sort_keys=True)), names=np.array(stats.names),
                                absmax=stats.absmax, hist=stats.hist.astype(np.float32))


def sample_items(source: str, count: int) -> list[Item]:
    """Up to ``count`` images of a folder or dataset (val split), spread over it; for parity checks."""
    root, kind, items = _open_source(source)
    if items is None:
        items = _items(open_dataset(root, kind, split="val"))
    if not items:
        raise ScasegError(f"the calibration folder {root} holds no images")
    step = max(1, len(items) // count)
    items = _decodable(root, items[::step][:count], refuse_corrupt=False)
    if not items:
        raise ScasegError(f"the calibration folder {root} holds no image that can be decoded here")
    return items
