"""Training data: augmentation in numpy/OpenCV over the torch-free datasets, and a resumable sharded sampler.

Each sample's augmentation draws from its own generator, seeded by (run seed, position in the sample
stream). The stream itself is a pure function of (seed, epoch), so a resumed run sees exactly the
images and crops it would have seen, whatever the number of DataLoader workers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate

from scaseg.errors import ScasegError
from scaseg.metadata import IMAGENET_MEAN, IMAGENET_STD
from scaseg.runtime.preprocess import normalize

if TYPE_CHECKING:  # pragma: no cover
    from scaseg.data.datasets import SegDataset


@dataclass(frozen=True)
class Augment:
    """Random scale, random crop (padded with ignore where the image is smaller), random horizontal flip."""

    crop: tuple[int, int] = (512, 512)  # (H, W) of the network input
    scale_range: tuple[float, float] = (0.5, 2.0)  # times the base size
    base_short: Optional[int] = None  # short side the scale range refers to; None: the image as stored
    flip: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    ignore_index: int = 255


def augment(image: np.ndarray, label: np.ndarray, cfg: Augment, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (H, W, 3) and label (H, W) -> normalised float32 (3, h, w) and int64 (h, w) at the crop size."""
    h, w = label.shape[:2]
    base = 1.0 if cfg.base_short is None else cfg.base_short / min(h, w)
    scale = base * rng.uniform(*cfg.scale_range)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (nw, nh), interpolation=cv2.INTER_NEAREST)
    ch, cw = cfg.crop
    ph, pw = max(ch - nh, 0), max(cw - nw, 0)
    if ph or pw:
        # Image padding takes the mean colour (0 after normalisation); label padding is ignored by the loss.
        fill = [round(v) for v in cfg.mean]
        image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=fill)
        label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=cfg.ignore_index)
    y = int(rng.integers(0, label.shape[0] - ch + 1))
    x = int(rng.integers(0, label.shape[1] - cw + 1))
    image, label = image[y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]
    if cfg.flip and rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return normalize(np.ascontiguousarray(image), cfg.mean, cfg.std), np.ascontiguousarray(label, dtype=np.int64)


def check_label(label: Optional[np.ndarray], num_classes: int, ignore_index: int, name: str) -> np.ndarray:
    """Refuse a missing label or one with train ids outside 0..num_classes-1 (ignore_index aside)."""
    if label is None:
        raise ScasegError(f"training needs labels, but the image {name} has none")
    bad = (label >= num_classes) & (label != ignore_index)
    if bad.any():
        value = int(label[bad][0])
        raise ScasegError(
            f"the label of {name} holds class id {value}, outside 0..{num_classes - 1} (and not {ignore_index})"
        )
    return label


class _Failed:
    """A user error met inside a DataLoader worker, carried to the main process as data.

    Torch re-raises worker exceptions with the worker's traceback folded into the message; handing the
    one sentence back as a value keeps the user's error message exactly as the datasets module wrote it.
    """

    def __init__(self, message: str) -> None:
        self.message = message


class TrainSet(Dataset):
    """Indexed by (image index, augmentation seed) pairs, which `StreamSampler` produces."""

    def __init__(self, data: SegDataset, cfg: Augment) -> None:
        self.data = data
        self.cfg = cfg
        self.num_classes = data.num_classes

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        try:
            sample = self.data[index]
            label = check_label(sample.label, self.num_classes, self.cfg.ignore_index, sample.name)
            image, label = augment(sample.image, label, self.cfg, np.random.default_rng(seed))
        except ScasegError as exc:
            return _Failed(str(exc))
        return torch.from_numpy(image), torch.from_numpy(label)


def collate(items: list[Any]) -> Any:
    """Stack samples; if any failed, the batch is that failure."""
    for item in items:
        if isinstance(item, _Failed):
            return item
    return default_collate(items)


def unwrap(batch: Any) -> Any:
    """Raise the user error a worker reported, or pass the batch through."""
    if isinstance(batch, _Failed):
        raise ScasegError(batch.message)
    return batch


class StreamSampler(Sampler):
    """An endless, sharded, resumable stream of (index, seed) keys.

    Epoch e is the permutation of range(n) drawn from (seed, e); global position p is shard p % world,
    so ranks see disjoint samples as with DistributedSampler, but a run can restart at any position
    (``start`` counts global samples already consumed) and reproduce the same stream.
    """

    def __init__(self, n: int, *, seed: int, rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        if n < 1:
            raise ScasegError("the training split holds no images")
        self.n, self.seed, self.rank, self.world, self.start = n, seed, rank, world_size, start

    def __len__(self) -> int:  # endless; DataLoader only needs a number
        return 2**62

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pos = self.start + self.rank
        while True:
            epoch, offset = divmod(pos, self.n)
            order = np.random.default_rng((self.seed, epoch)).permutation(self.n)
            while offset < self.n:
                yield int(order[offset]), int(np.random.SeedSequence((self.seed, 1, pos)).generate_state(1)[0])
                pos += self.world
                offset += self.world
            # The stride may step over the epoch's end: continue at the right offset of the next one.
