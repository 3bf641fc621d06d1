"""Image files in and out: decoding once for every reader, and writing that checks what it wrote.

Datasets, calibration, the runtime's sources and the benchmark all decode through here, with one flag
(IMREAD_UNCHANGED, then :func:`to_rgb_uint8`), so 16-bit, grayscale and RGBA files mean the same everywhere.
Every image and video a command writes goes through :func:`write_image` / :class:`VideoFile`, which fail in one
sentence when the bytes did not arrive (OpenCV's writers report a full disk by returning False, or not at all).

Before anything is decoded, :func:`read_header` reads the size from the file's header (PNG IHDR, JPEG SOF, BMP,
TIFF IFD0, WebP VP8/VP8L/VP8X; a few KiB, nothing decoded) and :func:`check_decodable` refuses an image of more
than MAX_IMAGE_PIXELS, one whose decoding would not fit in the memory available (scaseg.errors.check_memory), and
a file larger than its header's pixels can explain; only then are the file's bytes read (exactly its size, once).
OpenCV's own bound (OPENCV_IO_MAX_IMAGE_PIXELS, 2**30 pixels by default) is not the rule: it lets a 30000x30000
PNG of 1 MB through to a 6.2 GB decode, knows neither the depth nor the memory left, and fails only inside the
decoder, after the whole file has been read; it is set to the same bound as a second guard.

Photos are returned as they are meant to be seen: the EXIF orientation of a JPEG (APP1), PNG (eXIf) or WebP (EXIF)
is applied here (IMREAD_UNCHANGED ignores it, IMREAD_COLOR would apply it but drop depth); OpenCV's TIFF decoder
applies a TIFF's own Orientation tag itself. Label maps are decoded raw (:func:`read_raw`): never rotated by EXIF.
"""
from __future__ import annotations

import io
import os
import stat
import struct

import cv2
import numpy as np

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional, Union

from scaseg.errors import ScasegError, check_memory, format_bytes
from scaseg.fileio import write_bytes
from scaseg.suffixes import VIDEO_FOURCC

#: The most pixels an image may have to be decoded at all: 2**27, e.g. 16384x8192 (a 100-megapixel frame fits).
MAX_IMAGE_PIXELS = 1 << 27
# OpenCV reads this when it first decodes: the same bound inside its decoders, should a header lie to ours.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))
#: A file may be at most this much larger than twice its decoded size (EXIF, ICC profiles, embedded previews):
#: beyond it the bytes are not this image (a sparse or padded file), and reading them would be the allocation.
FILE_SLACK = 16 << 20
#: Bytes the header parser may read to find the size (JPEG APP segments before SOF, PNG chunks before IDAT).
HEADER_READ_LIMIT = 4 << 20
_MAX_SEGMENTS = 4096  # JPEG markers, PNG or WebP chunks walked before giving up
_MAX_IFD_ENTRIES = 4096
#: EXIF orientation -> what it does to the stored pixels, for messages.
ORIENTATIONS = {1: "upright", 2: "mirrored", 3: "rotated 180 degrees", 4: "flipped upside down",
                5: "transposed", 6: "rotated 90 degrees", 7: "transversed", 8: "rotated 270 degrees"}
_EXIF_FORMATS = ("jpeg", "png", "webp")  # where the orientation is ours to apply (TIFF: OpenCV applies it)


class ImageTooLarge(ScasegError):
    """An image whose decoding the memory rule refuses: too many pixels, too little memory, or a file too big for
    its pixels. Folder readers skip it with a warning; a single image named by the user is refused."""


class _Corrupt(Exception):
    """The header is not one of the formats read here, or is cut short."""


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, before any decoding."""

    format: str  # png, jpeg, bmp, tiff, webp
    width: int
    height: int
    channels: int  # as OpenCV decodes it with IMREAD_UNCHANGED (an upper bound where it depends on the content)
    sample_bytes: int = 1  # 2 for 16-bit, 4/8 for float TIFFs
    orientation: int = 1  # EXIF / TIFF Orientation, 1..8
    extra_bytes: int = 0  # what the decoder holds besides the image (a progressive JPEG's coefficients)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decoded_bytes(self) -> int:
        return self.pixels * self.channels * self.sample_bytes

    def peak_bytes(self, file_size: int) -> int:
        """Memory a read holds at its peak: the file's bytes, the decoded array, its conversion to RGB uint8
        (deep images pass through a wider temporary) and the rotated copy."""
        convert = 2 * self.decoded_bytes if self.sample_bytes > 1 else 0
        return file_size + self.decoded_bytes + self.extra_bytes + convert + 2 * self.pixels * 3

    def describe(self) -> str:
        depth = f", {8 * self.sample_bytes}-bit" if self.sample_bytes > 1 else ""
        return f"{self.width}x{self.height} {self.format.upper()}, {self.channels} channel(s){depth}"


class _Reader:
    """Random access to a file or a buffer that reads only the bytes asked for, at most HEADER_READ_LIMIT in all."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.size, self.read = f, size, 0

    def at(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size or self.read + n > HEADER_READ_LIMIT:
            raise _Corrupt
        self.f.seek(offset)
        data = self.f.read(n)
        if len(data) != n:
            raise _Corrupt
        self.read += n
        return data

    def unpack(self, fmt: str, offset: int) -> tuple:
        return struct.unpack(fmt, self.at(offset, struct.calcsize(fmt)))


def _png(r: _Reader) -> ImageHeader:
    length, kind = r.unpack(">I4s", 8)
    if kind != b"IHDR" or length != 13:
        raise _Corrupt
    width, height, depth, colour = r.unpack(">IIBB", 16)
    channels = {0: 1, 2: 3, 3: 4, 4: 4, 6: 4}.get(colour)  # palette and grey+alpha may come out as BGRA
    if channels is None:
        raise _Corrupt
    orientation, offset = 1, 33
    try:  # an eXIf chunk comes before the image data
        for _ in range(_MAX_SEGMENTS):
            length, kind = r.unpack(">I4s", offset)
            if kind in (b"IDAT", b"IEND"):
                break
            if kind == b"eXIf":
                orientation = _exif_orientation(r.at(offset + 8, length))
                break
            offset += 12 + length
    except _Corrupt:
        pass
    return ImageHeader("png", width, height, channels, 2 if depth == 16 else 1, orientation)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}


def _jpeg(r: _Reader) -> ImageHeader:
    offset, orientation = 2, 1
    for _ in range(_MAX_SEGMENTS):
        mark, code = r.at(offset, 2)
        if mark != 0xFF:
            raise _Corrupt
        if code == 0xFF:  # fill byte
            offset += 1
            continue
        if code == 0x01 or 0xD0 <= code <= 0xD8:  # markers without a length
            offset += 2
            continue
        if code in (0xD9, 0xDA):  # end of image, or the scan, before a frame header
            raise _Corrupt
        (length,) = r.unpack(">H", offset + 2)
        if length < 2:
            raise _Corrupt
        if code in _SOF:
            precision, height, width, components = r.unpack(">BHHB", offset + 4)
            extra = 2 * width * height * components if code in _PROGRESSIVE else 0  # libjpeg's coefficient buffer
            return ImageHeader("jpeg", width, height, 1 if components == 1 else 3, 2 if precision > 8 else 1,
                               orientation, extra)
        if code == 0xE1 and orientation == 1:
            body = r.at(offset + 4, length - 2)
            if body.startswith(b"Exif\0\0"):
                orientation = _exif_orientation(body[6:])
        offset += 2 + length
    raise _Corrupt


def _bmp(r: _Reader) -> ImageHeader:
    (dib,) = r.unpack("<I", 14)
    if dib == 12:
        width, height, _, bits = r.unpack("<HHHH", 18)
    elif dib >= 40:
        width, height, _, bits = r.unpack("<iiHH", 18)
    else:
        raise _Corrupt
    return ImageHeader("bmp", width, abs(height), 4 if bits == 32 else 3)


def _tiff_kind(r: _Reader) -> tuple[str, bool]:
    """Byte order and BigTIFF-ness of a TIFF structure at offset 0 of ``r``."""
    head = r.at(0, 4)
    endian = {b"II": "<", b"MM": ">"}.get(head[:2])
    if endian is None:
        raise _Corrupt
    (version,) = struct.unpack(endian + "H", head[2:])
    if version not in (42, 43):
        raise _Corrupt
    return endian, version == 43


def _ifd0(r: _Reader, endian: str, big: bool, tags: set[int]) -> dict[int, int]:
    """The first value of each of ``tags`` (integer types only) in the first IFD of a TIFF structure."""
    if big:
        (offset,) = r.unpack(endian + "Q", 8)
        (count,) = r.unpack(endian + "Q", offset)
        start, size, field = offset + 8, 20, 8
    else:
        (offset,) = r.unpack(endian + "I", 4)
        (count,) = r.unpack(endian + "H", offset)
        start, size, field = offset + 2, 12, 4
    if count > _MAX_IFD_ENTRIES:
        raise _Corrupt
    table = r.at(start, count * size)
    found: dict[int, int] = {}
    for i in range(count):
        entry = table[i * size:(i + 1) * size]
        tag, kind = struct.unpack(endian + "HH", entry[:4])
        width = {1: 1, 3: 2, 4: 4, 16: 8}.get(kind)  # BYTE, SHORT, LONG, LONG8
        if tag not in tags or width is None:
            continue
        (n,) = struct.unpack(endian + ("Q" if big else "I"), entry[4:4 + field])
        value = entry[4 + field:]
        if n * width > field:  # stored elsewhere: the first value is enough
            (where,) = struct.unpack(endian + ("Q" if big else "I"), value)
            value = r.at(where, width)
        found[tag] = struct.unpack(endian + {1: "B", 2: "H", 4: "I", 8: "Q"}[width], value[:width])[0]
    return found


def _tiff(r: _Reader) -> ImageHeader:
    endian, big = _tiff_kind(r)
    tags = _ifd0(r, endian, big, {256, 257, 258, 262, 274, 277})
    if 256 not in tags or 257 not in tags:
        raise _Corrupt
    samples, photometric = tags.get(277, 1), tags.get(262, 1)
    # Grey stays one channel; anything else may go through libtiff's RGBA path.
    channels = 1 if samples == 1 and photometric in (0, 1) else max(4, samples)
    orientation = tags.get(274, 1)
    return ImageHeader("tiff", tags[256], tags[257], channels, max(1, (tags.get(258, 1) + 7) // 8),
                       orientation if 1 <= orientation <= 8 else 1)


def _webp(r: _Reader) -> ImageHeader:
    if r.at(8, 4) != b"WEBP":
        raise _Corrupt
    kind, length = r.unpack("<4sI", 12)
    if kind == b"VP8 ":
        if r.at(23, 3) != b"\x9d\x01\x2a":
            raise _Corrupt
        width, height = r.unpack("<HH", 26)
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF, 3)
    if kind == b"VP8L":
        if r.at(20, 1) != b"\x2f":
            raise _Corrupt
        (bits,) = r.unpack("<I", 21)
        return ImageHeader("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 4)
    if kind != b"VP8X":
        raise _Corrupt
    flags = r.at(20, 1)[0]
    width = 1 + int.from_bytes(r.at(24, 3), "little")
    height = 1 + int.from_bytes(r.at(27, 3), "little")
    orientation, offset = 1, 20 + length + (length & 1)
    try:
        for _ in range(_MAX_SEGMENTS if flags & 0x08 else 0):  # the EXIF flag
            kind, length = r.unpack("<4sI", offset)
            if kind == b"EXIF":
                orientation = _exif_orientation(r.at(offset + 8, length))
                break
            offset += 8 + length + (length & 1)
    except _Corrupt:
        pass
    return ImageHeader("webp", width, height, 4 if flags & 0x10 else 3, 1, orientation)


def _exif_orientation(payload: bytes) -> int:
    """The Orientation (tag 274) of an EXIF block (a TIFF structure, maybe after ``Exif\\0\\0``); 1 if absent."""
    if payload.startswith(b"Exif\0\0"):
        payload = payload[6:]
    try:
        r = _Reader(io.BytesIO(payload), len(payload))
        value = _ifd0(r, *_tiff_kind(r), {274}).get(274, 1)
    except (_Corrupt, struct.error):
        return 1
    return value if 1 <= value <= 8 else 1


_FORMATS = ((b"\x89PNG\r\n\x1a\n", _png), (b"\xff\xd8", _jpeg), (b"BM", _bmp), (b"II", _tiff), (b"MM", _tiff),
            (b"RIFF", _webp))


def _parse(f: BinaryIO, size: int, what: str) -> ImageHeader:
    r = _Reader(f, size)
    try:
        start = r.at(0, min(size, 8))
        for magic, parse in _FORMATS:
            if start.startswith(magic):
                header = parse(r)
                break
        else:
            raise _Corrupt
    except (_Corrupt, struct.error):
        raise ScasegError(f"cannot decode {what} (not an image, or corrupt: not a PNG, JPEG, BMP, TIFF or WebP "
                          "header)") from None
    if header.width <= 0 or header.height <= 0:
        raise ScasegError(f"cannot decode {what} (not an image, or corrupt: its header says "
                          f"{header.width}x{header.height} pixels)")
    return header


def read_header(source: Union[str, os.PathLike, bytes], what: Optional[str] = None) -> ImageHeader:
    """The header of an image file (or of encoded bytes), read without decoding; ScasegError if it is none."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _parse(io.BytesIO(bytes(source)), len(source), what or "the image")
    with _open(source, what or f"the image {source}") as (f, size):
        return _parse(f, size, what or f"the image {source}")


def check_decodable(header: ImageHeader, file_size: int, what: str) -> None:
    """The memory rule, before decoding: refuse (ImageTooLarge) too many pixels, a file too big for its pixels,
    and a decode the memory available now cannot hold."""
    if header.pixels > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(f"{what} is {header.width}x{header.height} ({header.pixels / 1e6:.0f} megapixels), more "
                            f"than the {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels an image may have; it was not decoded "
                            "(downscale or tile it)")
    most = 2 * header.decoded_bytes + FILE_SLACK
    if file_size > most:
        raise ImageTooLarge(f"{what} is {format_bytes(file_size)} on disk, more than a {header.describe()} image "
                            f"can take ({format_bytes(most)} at most); it was not read (a padded or sparse file?)")
    check_memory(header.peak_bytes(file_size), f"decoding {what} ({header.describe()})",
                 "; it was not decoded", error=ImageTooLarge)


class _open:
    """``with _open(path, what) as (file, size)``: a regular file opened for reading, or one sentence why not."""

    def __init__(self, path: Union[str, os.PathLike], what: str) -> None:
        self.path, self.what = path, what
        self.f: Optional[BinaryIO] = None

    def __enter__(self) -> tuple[BinaryIO, int]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise ScasegError(f"image not found: {self.path}") from None
        except OSError as exc:
            raise ScasegError(f"cannot read {self.what}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ScasegError(f"image not found: {self.path} (not a regular file)")
        try:
            self.f = open(self.path, "rb")
        except OSError as exc:
            raise ScasegError(f"cannot read {self.what}: {exc.strerror or exc}") from None
        return self.f, os.fstat(self.f.fileno()).st_size

    def __exit__(self, *exc: object) -> None:
        if self.f is not None:
            self.f.close()


def probe_image(path: Union[str, os.PathLike], what: Optional[str] = None) -> ImageHeader:
    """Header and memory rule of an image file, nothing decoded: what folder readers check before they list it."""
    what = what or f"the image {path}"
    with _open(path, what) as (f, size):
        header = _parse(f, size, what)
    check_decodable(header, size, what)
    return header


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
    return apply_orientation(rgb, header.orientation) if header.format in _EXIF_FORMATS else rgb


def decode_image(data: bytes, what: str = "the image") -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, ...) to RGB uint8, upright; the memory rule first; undecodable bytes
    raise ScasegError naming ``what``."""
    header = read_header(data, what)
    check_decodable(header, len(data), what)
    return _to_picture(_decode(data, header, what), header)


def _read(path: Union[str, os.PathLike], what: str) -> tuple[np.ndarray, ImageHeader]:
    """The file's header, the memory rule, then its bytes (exactly its size, read once) decoded IMREAD_UNCHANGED."""
    with _open(path, what) as (f, size):
        header = _parse(f, size, what)
        check_decodable(header, size, what)
        f.seek(0)
        try:
            data = f.read(size)
        except OSError as exc:
            raise ScasegError(f"cannot read {what}: {exc.strerror or exc}") from None
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


class VideoFile:
    """cv2.VideoWriter that opens at the first frame's size and, on close, checks that the file plays.

    OpenCV's writer drops frames silently when the disk fills and leaves a file without its index: ``close``
    reopens the file and compares its frame count with the frames written, and raises one sentence if they differ.
    ``name`` is the destination shown in messages (the file written may be a temporary beside it).
    """

    def __init__(self, path: str | os.PathLike, fps: float, name: Optional[str] = None, suffix: str = "") -> None:
        self.path, self.fps, self.name = Path(path), float(fps), name or str(path)
        self.writer: Optional[cv2.VideoWriter] = None
        self.size: Optional[tuple[int, int]] = None
        self.frames = 0
        ext = (suffix or self.path.suffix.lower().split(".tmp")[-1] or ".mp4").lower()
        self.fourcc = VIDEO_FOURCC.get(ext, "mp4v")

    def write(self, bgr: np.ndarray) -> None:
        """Append one frame (BGR or grayscale uint8); a frame of another size is resized to the first one's."""
        if self.writer is None:
            self.size = (bgr.shape[1], bgr.shape[0])
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*self.fourcc), self.fps, self.size)
            if not self.writer.isOpened():
                raise ScasegError(f"OpenCV cannot write a {self.fourcc} video of {self.size[0]}x{self.size[1]} to "
                                  f"{self.name}")
        if (bgr.shape[1], bgr.shape[0]) != self.size:  # a camera that changed resolution mid-stream
            bgr = cv2.resize(bgr, self.size, interpolation=cv2.INTER_LINEAR)
        self.writer.write(np.ascontiguousarray(bgr))
        self.frames += 1

    def close(self, check: bool = True, exact: bool = True) -> None:
        """Finalise the container (writes the index) and check it holds every frame written.

        ``exact=False`` after Ctrl-C: the interrupt may have fallen between a frame's write and its count.
        """
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        if check:
            check_video(self.path, self.frames, self.name, slack=0 if exact else 1)


def check_video(path: str | os.PathLike, frames: int, name: Optional[str] = None, slack: int = 0) -> None:
    """Raise ScasegError unless ``path`` opens as a video of ``frames`` (+- ``slack``) frames."""
    shown = name or str(path)
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    cap = cv2.VideoCapture(str(path)) if size else None
    try:
        if cap is None or not cap.isOpened():
            raise ScasegError(f"cannot write {shown}: the video file is incomplete ({size} bytes; disk full?); "
                              "nothing was written")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if count <= 0:  # a container without a frame count in its header: count by decoding
            while cap.grab():
                count += 1
        if abs(count - frames) > slack or count == 0:
            raise ScasegError(f"cannot write {shown}: the video holds {count} of the {frames} frames written "
                              "(disk full?); nothing was written")
    finally:
        if cap is not None:
            cap.release()
