"""Writing a Cityscapes-layout dataset (train/val of city "synth"), its label-id files, a video and synth.json."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from scaseg.data.synth.render import check_size, render_scene, render_video
from scaseg.data.synth.world import BUILDING, CAR, EGO, PERSON, ROAD, SIDEWALK, SKY, SYNTH_CLASSES, VEGETATION
from scaseg.errors import ScasegError
from scaseg.signals import starting_workers, worker_init
from scaseg.data.images import write_image
from scaseg.data.video import VideoFile
from scaseg.fileio import atomic_dir, check_dir_output, write_bytes

CITY = "synth"
GENERATOR = "scaseg-synth/2"

# train id -> Cityscapes label id, for the *_gtFine_labelIds.png files (255, the ego vehicle, is id 1).
_TRAIN_TO_ID = np.zeros(256, dtype=np.uint8)
for _train, _id in ((ROAD, 7), (SIDEWALK, 8), (BUILDING, 11), (VEGETATION, 21), (SKY, 23), (PERSON, 24),
                    (CAR, 26), (EGO, 1)):
    _TRAIN_TO_ID[_train] = _id


def _scene_seed(seed: int, i: int) -> int:
    return int(np.random.SeedSequence([seed, 0, i]).generate_state(1)[0])


def _write_scene(tmp: Path, seed: int, i: int, split: str, size: tuple[int, int]) -> np.ndarray:
    """Render scene ``i`` and write its image and both label files under ``tmp``; returns its label histogram."""
    image, label = render_scene(_scene_seed(seed, i), size)
    stem = f"{CITY}_{i:06d}_000019"
    write_image(tmp / "leftImg8bit" / split / CITY / f"{stem}_leftImg8bit.png", image[:, :, ::-1])
    gt = tmp / "gtFine" / split / CITY
    write_image(gt / f"{stem}_gtFine_labelTrainIds.png", label)
    write_image(gt / f"{stem}_gtFine_labelIds.png", _TRAIN_TO_ID[label])
    return np.bincount(label.ravel(), minlength=256)


def _write_scenes(tmp: Path, seed: int, splits: list[str], size: tuple[int, int], workers: int, bar) -> np.ndarray:
    """Every scene, in ``workers`` processes (1: this one); the files do not depend on the worker count."""
    counts = np.zeros(256, dtype=np.int64)
    if workers <= 1:
        for i, split in enumerate(splits):
            counts += _write_scene(tmp, seed, i, split, size)
            bar.update(1)
        return counts
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # Workers leave Ctrl-C, SIGTERM and SIGHUP to this process, which stops the pool (waiting for its workers, so
    # that none outlives the command) and removes the unfinished folder; they exit on their own if it is killed.
    with starting_workers():  # the pool starts the resource tracker (it ignores SIGINT and SIGTERM, not SIGHUP)
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=worker_init,
                                   initargs=(os.getpid(),))
    with pool:
        with starting_workers():  # the workers start on the first submits
            jobs = [pool.submit(_write_scene, tmp, seed, i, split, size) for i, split in enumerate(splits)]
        try:
            for job in as_completed(jobs):
                counts += job.result()
                bar.update(1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return counts


def _is_synth_output(folder: Path) -> bool:
    # Replacing a folder is only safe when it is a previous output of this generator.
    return (folder / "synth.json").is_file()


def write_dataset(
    out_dir,
    num: int,
    seed: int = 0,
    size: Sequence[int] = (256, 512),
    val_fraction: float = 0.2,
    video_frames: int = 60,
    fps: float = 10.0,
    progress: bool = True,
    workers: int = 1,
) -> dict:
    """Write ``num`` scenes as a Cityscapes-layout dataset (train/val of city "synth") and a video; returns a summary.

    Layout: leftImg8bit/{train,val}/synth/synth_<i>_000019_leftImg8bit.png, gtFine/.../*_gtFine_labelTrainIds.png
    and *_gtFine_labelIds.png, video/synth.mp4 with video/labels/<frame>.png, and synth.json. The same arguments
    give the same bytes (PNG files; the mp4 depends on the OpenCV build), with any number of ``workers`` (processes
    that render and write the scenes; the video is written by this one). The folder appears only when complete.
    """
    from scaseg.progress import progress as progress_bar

    h, w = check_size(size)
    if int(num) < 1:
        raise ScasegError(f"the number of images must be at least 1, got {num}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ScasegError(f"the validation fraction must be in [0, 1), got {val_fraction}")
    if int(video_frames) < 0:
        raise ScasegError(f"the number of video frames must be 0 or more, got {video_frames}")
    if not fps > 0:
        raise ScasegError(f"the video frame rate must be positive, got {fps}")
    if int(workers) < 1:
        raise ScasegError(f"the number of workers must be at least 1, got {workers}")
    num, video_frames = int(num), int(video_frames)
    num_val = int(round(num * float(val_fraction)))
    if val_fraction > 0 and num >= 2:
        num_val = min(max(num_val, 1), num - 1)
    out_dir = Path(out_dir).expanduser()
    check_dir_output(out_dir, owned=_is_synth_output, what="scaseg-synth dataset")
    start = time.perf_counter()
    with atomic_dir(out_dir, owned=_is_synth_output, what="scaseg-synth dataset") as tmp, progress_bar(total=num + video_frames, desc="scaseg-synth", unit="img",
                                          disable=not progress, file=sys.stderr) as bar:
        splits = ["train" if i < num - num_val else "val" for i in range(num)]
        counts = _write_scenes(tmp, int(seed), splits, (h, w), min(int(workers), num), bar)
        if video_frames:
            video = tmp / "video" / f"{CITY}.mp4"
            video.parent.mkdir(parents=True)
            writer = VideoFile(video, fps, name=str(out_dir / "video" / f"{CITY}.mp4"))
            try:
                for t, (image, label) in enumerate(render_video(seed, video_frames, (h, w))):
                    writer.write(image, rgb=True)
                    write_image(tmp / "video" / "labels" / f"{t:06d}.png", label)
                    bar.update(1)
            except BaseException:
                writer.close(check=False)
                raise
            writer.close()
        names = {v: k for k, v in SYNTH_CLASSES.items()}
        total = max(int(counts.sum()), 1)
        summary = {
            "generator": GENERATOR, "seed": int(seed), "size": [h, w], "num_train": num - num_val, "num_val": num_val,
            "video_frames": video_frames, "fps": float(fps), "city": CITY,
            "class_fraction": {names[k]: round(int(counts[k]) / total, 5) for k in sorted(names)},
            "ignored_fraction": round(int(counts[EGO]) / total, 5),
        }
        write_bytes(tmp / "synth.json", (json.dumps(summary, indent=2) + "\n").encode())
    summary["out_dir"] = str(out_dir)
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary
