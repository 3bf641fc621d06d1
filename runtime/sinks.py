"""Output sinks for scaseg-infer: a video file (every frame checked on close) or one image file per frame."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

from scaseg.data.images import write_image
from scaseg.data.video import I420, VideoFile

#: What a sink writes: an RGB picture, a label map (H, W), or a picture as I420 planes.
Picture = Union[np.ndarray, I420]


class VideoSink:
    """Writes RGB frames (or I420 planes, encoded as they are) to a video (container and encoder from the suffix, or
    ``codec``); checked on close (see scaseg.data.video.VideoFile)."""

    def __init__(self, path: Path, fps: float, name: Optional[str] = None, codec: Optional[str] = None) -> None:
        self.path, self.fps = Path(path), fps
        self.video = VideoFile(path, fps, name=name, codec=codec)

    def write(self, name: str, image: Picture) -> None:
        self.video.write(image, rgb=isinstance(image, np.ndarray) and image.ndim == 3)

    def close(self, exact: bool = True) -> None:
        """Finalise the container (writes the index) and check every frame is in it: after this the file plays."""
        self.video.close(exact=exact)


class ImageSink:
    """Writes each frame as ``<folder>/<name><suffix>`` (or to one fixed file when ``file`` is given)."""

    def __init__(self, folder: Optional[Path] = None, suffix: str = ".png", file: Optional[Path] = None) -> None:
        self.folder, self.suffix, self.file = folder, suffix, file

    def write(self, name: str, image: Picture) -> None:
        if isinstance(image, I420):
            image = image.rgb()
        colour = image.ndim == 3
        out = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if colour else image
        target = self.file if self.file is not None else Path(self.folder or ".") / f"{name}{self.suffix}"
        write_image(target, out)

    def close(self, exact: bool = True) -> None:
        """Nothing buffered: each image is complete once written."""
