"""scaseg.data.images: decoding any image file to RGB uint8, errors that name the file, the header parser and the
memory rule checked before decoding, and EXIF orientation."""
from __future__ import annotations

import os
import struct

import cv2
import numpy as np
import pytest

from scaseg.data import image_headers
from scaseg.data.image_headers import ImageTooLarge, check_decodable, probe_image, read_header
from scaseg.data.images import apply_orientation, decode_image, read_image, read_raw, to_rgb_uint8
from scaseg.errors import ScasegError
from test_badinput_images import exif_tiff, jpeg_with_orientation, png_of_zeros, png_with_orientation


def test_to_rgb_handles_gray_rgba_16bit_float_and_bgr():
    gray = np.full((4, 5), 200, np.uint8)
    assert to_rgb_uint8(gray).shape == (4, 5, 3)
    assert (to_rgb_uint8(gray[:, :, None]) == 200).all()
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 255
    assert to_rgb_uint8(rgba)[0, 0].tolist() == [255, 0, 0]
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV order
    assert to_rgb_uint8(bgr, bgr=True)[0, 0].tolist() == [0, 0, 255]
    deep = np.full((2, 2, 3), 65535, np.uint16)
    assert (to_rgb_uint8(deep) == 255).all()
    assert (to_rgb_uint8(np.full((2, 2, 3), 0.5, np.float32)) == 128).all()
    with pytest.raises(ScasegError):
        to_rgb_uint8(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ScasegError):
        to_rgb_uint8(np.zeros((0, 3, 3), np.uint8))


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(ScasegError, match="not found"):
        read_image(str(tmp_path / "missing.png"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ScasegError, match="bad.png"):
        read_image(str(bad))


# ----------------------------------------------------------------------------- the header parser and the memory rule

def _encoded(suffix, image, params=()):
    ok, data = cv2.imencode(suffix, image, list(params))
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("suffix,image,params,fmt", [
    (".png", np.zeros((23, 41, 3), np.uint8), (), "png"),
    (".png", np.zeros((23, 41), np.uint16), (), "png"),
    (".png", np.zeros((23, 41, 4), np.uint8), (), "png"),
    (".jpg", np.zeros((23, 41, 3), np.uint8), (), "jpeg"),
    (".jpg", np.zeros((23, 41), np.uint8), (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), "jpeg"),
    (".bmp", np.zeros((23, 41, 3), np.uint8), (), "bmp"),
    (".tif", np.zeros((23, 41, 3), np.uint8), (), "tiff"),
    (".tif", np.zeros((23, 41), np.uint16), (), "tiff"),
    (".webp", np.zeros((23, 41, 3), np.uint8), (), "webp"),
    (".webp", np.zeros((23, 41, 4), np.uint8), (cv2.IMWRITE_WEBP_QUALITY, 101), "webp"),
])
def test_the_header_gives_the_size_opencv_decodes(suffix, image, params, fmt):
    data = _encoded(suffix, image, params)
    header = read_header(data)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert header.format == fmt and (header.height, header.width) == decoded.shape[:2] == (23, 41)
    assert header.channels >= (1 if decoded.ndim == 2 else decoded.shape[2])
    assert header.sample_bytes >= decoded.dtype.itemsize
    assert header.decoded_bytes >= decoded.nbytes


def test_a_header_is_read_without_reading_the_file(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_of_zeros(30000, 30000))
    reads = []
    real = image_headers._Reader.at

    def counted(self, offset, n):
        reads.append(n)
        return real(self, offset, n)

    image_headers._Reader.at = counted
    try:
        header = read_header(path)
    finally:
        image_headers._Reader.at = real
    assert (header.width, header.height, header.channels) == (30000, 30000, 3) and sum(reads) < 1024


@pytest.mark.parametrize("data", [
    b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHD",  # cut in IHDR
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 5 + b"\xff\xda\x00\x02",  # a scan before any frame header
    b"\xff\xd8\xff\xe1\xff\xff",  # a segment longer than the file
    b"II*\x00\xff\xff\xff\x7f",  # the first IFD far past the end
    b"MM\x00*\x00\x00\x00\x08\x00\x00",  # an IFD without width and height
    b"BM" + b"\x00" * 12 + struct.pack("<I", 5),  # an unknown DIB header
    b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 14,  # no VP8 start code
    b"\x00" * 4096,  # what truncate -s leaves
])
def test_what_is_not_a_header_of_ours_is_one_sentence(data):
    with pytest.raises(ScasegError, match="not an image, or corrupt"):
        read_header(data)
    with pytest.raises(ScasegError, match="not an image, or corrupt"):
        decode_image(data)


def test_stray_bytes_between_jpeg_segments_are_skipped_as_libjpeg_does():
    data = _encoded(".jpg", np.zeros((23, 41, 3), np.uint8))
    cut = 2 + 2 + struct.unpack(">H", data[4:6])[0]  # after APP0
    junk = data[:cut] + b"\x00junk" + data[cut:]
    assert cv2.imdecode(np.frombuffer(junk, np.uint8), cv2.IMREAD_UNCHANGED).shape == (23, 41, 3)
    assert (read_header(junk).height, read_header(junk).width) == (23, 41)
    assert decode_image(junk).shape == (23, 41, 3)


def test_a_header_of_zero_pixels_is_refused():
    header = png_of_zeros(4, 4)
    data = header[:16] + struct.pack(">II", 0, 4) + header[24:]
    with pytest.raises(ScasegError, match="0x4 pixels"):
        read_header(data)


def test_the_memory_rule(monkeypatch):
    header = read_header(png_of_zeros(20000, 7000))  # 140 megapixels
    with pytest.raises(ImageTooLarge, match="20000x7000 \\(140 megapixels\\), more than the 134 megapixels"):
        check_decodable(header, 1000, "the image x")
    small = read_header(png_of_zeros(100, 100))
    check_decodable(small, 1000, "the image x")
    with pytest.raises(ImageTooLarge, match="on disk, more than a 100x100 PNG"):
        check_decodable(small, 2 * small.decoded_bytes + image_headers.FILE_SLACK + 1, "the image x")
    monkeypatch.setattr("scaseg.memory.available_memory", lambda: 1 << 30)  # the shared rule, 1 GiB left
    check_decodable(small, 1000, "the image x")
    mid = read_header(png_of_zeros(16000, 8000))  # 384 MB decoded, 1.1 GB at the peak
    with pytest.raises(ImageTooLarge, match="decoding the image x \\(16000x8000 PNG, 3 channel\\(s\\)\\) needs about "
                                            "1.1 GiB of memory, but 1.0 GiB is available; it was not decoded"):
        check_decodable(mid, 1000, "the image x")


def test_a_probe_reads_only_the_header_of_a_sparse_file(tmp_path):
    path = tmp_path / "padded.png"
    path.write_bytes(png_of_zeros(10, 10))
    os.truncate(path, 64 << 30)
    with pytest.raises(ImageTooLarge, match="64.0 GiB on disk"):
        probe_image(path)
    with pytest.raises(ImageTooLarge, match="64.0 GiB on disk"):
        read_image(str(path))
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ScasegError, match="is a FIFO"):
        read_image(str(fifo))  # never opened: opening a FIFO for reading would block


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("endian", ["<", ">"])
def test_exif_orientation_is_applied_as_opencv_shows_the_photo(orientation, endian):
    rng = np.random.default_rng(orientation)
    bgr = cv2.GaussianBlur(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8), (0, 0), 2)
    data = jpeg_with_orientation(bgr, orientation, endian)
    assert read_header(data).orientation == orientation
    shown = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # OpenCV applies EXIF here
    assert np.array_equal(decode_image(data), cv2.cvtColor(shown, cv2.COLOR_BGR2RGB))
    assert np.array_equal(apply_orientation(np.arange(6).reshape(2, 3), orientation).shape,
                          (3, 2) if orientation >= 5 else (2, 3))


def test_png_exif_turns_photos_and_never_labels(tmp_path):
    label = np.zeros((10, 30), np.uint8)
    label[:, :5] = 1
    path = tmp_path / "l.png"
    path.write_bytes(png_with_orientation(label, 6))
    assert read_header(path).orientation == 6
    raw, header = read_raw(path, "the label")
    assert raw.shape == (10, 30) and header.orientation == 6
    assert read_image(str(path)).shape == (30, 10, 3)
    assert read_header(png_with_orientation(label, 9)).orientation == 1  # out of range: ignored
    body = b"Exif\0\0" + exif_tiff(6, ">")
    assert image_headers._exif_orientation(body) == 6 and image_headers._exif_orientation(body[:20]) == 1  # cut short: ignored
