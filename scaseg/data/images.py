"""Image files in and out: decoding once for every reader, and writing that checks what it wrote.

Datasets, calibration, the runtime's sources and the benchmark all decode through here, with one flag
(IMREAD_UNCHANGED, then :func:`to_rgb_uint8`), so 16-bit, grayscale and RGBA files mean the same everywhere.
Every image a command writes goes through :func:`write_image` (videos: scaseg.data.video), which fails in one
sentence when the bytes did not arrive (OpenCV's writers report a full disk by returning False, or not at all).

Before anything is decoded, the file's header is read and the memory rule checked (scaseg.data.image_headers:
too many pixels, a file larger than its pixels explain, a decode the memory available cannot hold, refused as
ImageTooLarge); only then are the file's bytes read (exactly its size, once).
OpenCV's own bound (OPENCV_IO_MAX_IMAGE_PIXELS, 2**30 pixels by default) is not the rule: it lets a 30000x30000
PNG of 1 MB through to a 6.2 GB decode, knows neither the depth nor the memory left, and fails only inside the
decoder, after the whole file has been read; it is set to the same bound as a second guard.

Photos are returned as they are meant to be seen: the EXIF orientation of a JPEG (APP1), PNG (eXIf) or WebP (EXIF)
is applied here (IMREAD_UNCHANGED ignores it, IMREAD_COLOR would apply it but drop depth); OpenCV's TIFF decoder
applies a TIFF's own Orientation tag itself. Label maps are decoded raw (:func:`read_raw`): never rotated by EXIF.
Every file name handed to OpenCV goes through :func:`native_path` (OpenCV crashed on names that are not UTF-8).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

import cv2
import numpy as np

from scaseg.cli import is_utf8
from scaseg.data.image_headers import (EXIF_FORMATS, MAX_IMAGE_PIXELS, ImageHeader, ImageTooLarge, check_decodable,
                                       open_regular, parse_header, read_header)
from scaseg.errors import ScasegError
from scaseg.fileio import write_bytes

# OpenCV reads this when it first decodes: the same bound inside its decoders, should a header lie to ours.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels (H, W[, C]) into the picture an EXIF ``orientation`` (1..8) says, as OpenCV's IMREAD_COLOR
    does: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 270."""
    if orientation in (5, 6, 7, 8):
        image = image.swapaxes(0, 1)
    flip = {2: 1, 3: -1, 4: 0, 6: 1, 7: -1, 8: 0}.get(orientation)
    if flip in (1, -1):
        image = image[:, ::-1]
    if flip in (0, -1):
        image = image[::-1]
    return np.ascontiguousarray(image) if orientation != 1 else image


def to_rgb_uint8(image: np.ndarray, *, bgr: bool = False) -> np.ndarray:
    """Bring any decoded image to RGB uint8 (H, W, 3).

    Accepts grayscale (H, W) or (H, W, 1), 3-channel, and 4-channel (alpha dropped) arrays, in uint8,
    uint16 (scaled by 1/257) or float (0..1 assumed when max <= 1, else 0..255). ``bgr`` says the
    channel order of a colour input is OpenCV's BGR/BGRA.
    """
    if image is None or not isinstance(image, np.ndarray) or image.size == 0:
        raise ScasegError("the image is empty or could not be decoded")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ScasegError(f"cannot use an image of shape {tuple(image.shape)}: expected (H, W), (H, W, 3) or (H, W, 4)")
    if image.dtype == np.uint16:
        image = (image.astype(np.uint32) * 255 + 32767) // 65535
        image = image.astype(np.uint8)
    elif image.dtype.kind == "f":
        scale = 255.0 if float(np.nanmax(image)) <= 1.0 else 1.0
        image = np.clip(np.nan_to_num(image) * scale, 0, 255).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else np.ascontiguousarray(image)


def _decode(data: bytes, header: ImageHeader, what: str) -> np.ndarray:
    """imdecode with IMREAD_UNCHANGED; an allocation that fails after all is the memory sentence, not a traceback."""
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    except MemoryError:
        raise ImageTooLarge(f"not enough memory to decode {what} ({header.describe()})") from None
    except cv2.error as exc:
        if "memory" in str(exc).lower() or "allocate" in str(exc).lower():
            raise ImageTooLarge(f"not enough memory to decode {what} ({header.describe()})") from None
        image = None
    if image is None:
        raise ScasegError(f"cannot decode {what} (not an image, or corrupt)")
    return image


def _to_picture(image: np.ndarray, header: ImageHeader) -> np.ndarray:
    rgb = to_rgb_uint8(image, bgr=True)
    return apply_orientation(rgb, header.orientation) if header.format in EXIF_FORMATS else rgb


def decode_image(data: bytes, what: str = "the image") -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, ...) to RGB uint8, upright; the memory rule first; undecodable bytes
    raise ScasegError naming ``what``."""
    header = read_header(data, what)
    check_decodable(header, len(data), what)
    return _to_picture(_decode(data, header, what), header)


def _read_checked(path: Union[str, os.PathLike], what: str) -> tuple[bytes, ImageHeader]:
    """The file's header, the memory rule, then its bytes: exactly its size, read once."""
    with open_regular(path, what) as (f, size):
        header = parse_header(f, size, what)
        check_decodable(header, size, what)
        f.seek(0)
        try:
            return f.read(size), header
        except OSError as exc:
            raise ScasegError(f"cannot read {what}: {exc.strerror or exc}") from None


def read_encoded(path: Union[str, os.PathLike]) -> bytes:
    """An image file's encoded bytes, read under the memory rule (for :func:`decode_image` later, e.g. timed)."""
    return _read_checked(path, f"the image {path}")[0]


def _read(path: Union[str, os.PathLike], what: str) -> tuple[np.ndarray, ImageHeader]:
    data, header = _read_checked(path, what)
    return _decode(data, header, what), header


def read_image_header(path: Union[str, os.PathLike], what: Optional[str] = None) -> tuple[np.ndarray, ImageHeader]:
    """:func:`read_image` and the file's header (its orientation says whether the pixels were turned)."""
    image, header = _read(path, what or f"the image {path}")
    return _to_picture(image, header), header


def read_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read an image file as RGB uint8, upright (EXIF orientation applied); unreadable files raise ScasegError
    naming the path, images the memory rule refuses ImageTooLarge."""
    return read_image_header(path)[0]


def read_raw(path: Union[str, os.PathLike], what: str) -> tuple[np.ndarray, ImageHeader]:
    """A file as OpenCV decodes it with IMREAD_UNCHANGED (label maps: class ids, never turned by EXIF), under the
    same memory rule."""
    return _read(path, what)


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode ``image`` (OpenCV channel order) in the format of the suffix (.png if none) and write it, checked."""
    p = Path(path)
    ok, data = cv2.imencode(p.suffix or ".png", image)
    if not ok:
        raise ScasegError(f"OpenCV cannot encode a {image.dtype} image of shape {tuple(image.shape)} as {p.suffix or '.png'}")
    write_bytes(p, data.tobytes())


@contextlib.contextmanager
def native_path(path: str | os.PathLike) -> Iterator[str]:
    """``path`` as text OpenCV can take: itself when it is valid UTF-8, else a link with an ASCII name to it.

    The link lives in a private temporary folder, removed on exit: open the file (cv2.VideoCapture, cv2.VideoWriter)
    inside the ``with``; the open file stays usable after the link is gone.
    """
    text = os.fspath(path)
    if is_utf8(text):
        yield text
        return
    suffix = os.path.splitext(text)[1]
    folder = ""
    try:
        folder = tempfile.mkdtemp(prefix="scaseg-name-")
        link = os.path.join(folder, "file" + (suffix if suffix.isascii() else ""))
        if not is_utf8(link):
            raise OSError("the temporary folder is not named in UTF-8")
        os.symlink(os.path.abspath(text), link)
    except OSError as exc:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        raise ScasegError(f"cannot open {text}: OpenCV takes only UTF-8 file names and no link to it could be "
                          f"made ({exc.strerror or exc}); rename it") from None
    try:
        yield link
    finally:
        shutil.rmtree(folder, ignore_errors=True)
