"""Image headers: width, height, channels and depth of an image file read without decoding it, and the memory
rule that every reader checks with them before it decodes (scaseg.data.images).

The toolkit reads PNG, JPEG, BMP, TIFF and WebP (scaseg.suffixes.IMAGE_SUFFIXES); :func:`read_header` knows each by
its first bytes (PNG IHDR, JPEG SOF, BMP DIB header, TIFF IFD0, WebP VP8/VP8L/VP8X) and reads a few hundred bytes,
at most HEADER_READ_LIMIT, with the EXIF orientation on the way (JPEG APP1, PNG eXIf, WebP EXIF, a TIFF's tag 274).
:func:`check_decodable` refuses (ImageTooLarge) more than MAX_IMAGE_PIXELS, a file larger than its pixels can explain
(a sparse or padded file: reading it would be the allocation), and a decode the memory available now cannot hold
(scaseg.memory.check_memory). No cv2 here: nothing is decoded.
"""
from __future__ import annotations

import contextlib
import io
import os
import stat
import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Optional, Union

from scaseg.cli import special_file
from scaseg.errors import ScasegError
from scaseg.memory import check_memory, format_bytes

#: The most pixels an image may have to be decoded at all: 2**27, e.g. 16384x8192 (a 100-megapixel frame fits).
MAX_IMAGE_PIXELS = 1 << 27
#: A file may be at most this much larger than twice its decoded size (EXIF, ICC profiles, embedded previews):
#: beyond it the bytes are not this image (a sparse or padded file), and reading them would be the allocation.
FILE_SLACK = 16 << 20
#: Decodes that hold less than this are not checked against the memory available: asking (/proc/meminfo, the
#: cgroup) costs about 0.1 ms, more than decoding a small JPEG, in every frame scaseg-bench times end to end.
ASK_MEMORY_ABOVE = 64 << 20
#: Bytes the header parser may read to find the size (JPEG APP segments before SOF, PNG chunks before IDAT).
HEADER_READ_LIMIT = 4 << 20
_MAX_SEGMENTS = 4096  # JPEG markers, PNG or WebP chunks walked before giving up
_MAX_IFD_ENTRIES = 4096
#: EXIF orientation -> what it does to the stored pixels, for messages.
ORIENTATIONS = {1: "upright", 2: "mirrored", 3: "rotated 180 degrees", 4: "flipped upside down",
                5: "transposed", 6: "rotated 90 degrees", 7: "transversed", 8: "rotated 270 degrees"}
#: Formats whose EXIF orientation scaseg.data.images applies (OpenCV's TIFF decoder applies a TIFF's tag itself).
EXIF_FORMATS = ("jpeg", "png", "webp")


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
        if mark != 0xFF:  # stray bytes before a marker: libjpeg warns and skips them, and so does this
            window = r.at(offset, min(1 << 16, r.size - offset))
            offset += window.index(b"\xff") if b"\xff" in window else len(window)
            continue
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


def parse_header(f: BinaryIO, size: int, what: str) -> ImageHeader:
    """The header of the image in ``f`` (``size`` bytes), by its first bytes; ScasegError naming ``what`` if none."""
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
        return parse_header(io.BytesIO(bytes(source)), len(source), what or "the image")
    with open_regular(source, what or f"the image {source}") as (f, size):
        return parse_header(f, size, what or f"the image {source}")


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
    if header.peak_bytes(file_size) > ASK_MEMORY_ABOVE:
        check_memory(header.peak_bytes(file_size), f"decoding {what} ({header.describe()})",
                     "; it was not decoded", error=ImageTooLarge)


@contextlib.contextmanager
def open_regular(path: Union[str, os.PathLike], what: str) -> Iterator[tuple[BinaryIO, int]]:
    """``with open_regular(path, what) as (file, size)``: a regular file open for reading, or one sentence why not
    (a FIFO or a device is refused before it is opened: opening one could block)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ScasegError(f"{what} is {special_file(path) or 'a folder'}, not a file")
        f = open(path, "rb")
    except FileNotFoundError:
        raise ScasegError(f"image not found: {path}") from None
    except OSError as exc:
        raise ScasegError(f"cannot read {what}: {exc.strerror or exc}") from None
    with f:
        yield f, os.fstat(f.fileno()).st_size


def probe_image(path: Union[str, os.PathLike], what: Optional[str] = None) -> ImageHeader:
    """Header and memory rule of an image file, nothing decoded: what folder readers check before they list it."""
    what = what or f"the image {path}"
    with open_regular(path, what) as (f, size):
        header = parse_header(f, size, what)
    check_decodable(header, size, what)
    return header
