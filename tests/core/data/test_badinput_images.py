"""Images that lie about their size, files that are not images, batches that cannot fit, and EXIF orientation,
through the public commands: one sentence (exit 2) for a single image, a warning and the rest of the folder done for
a folder, nothing decoded or read whole that the memory rule refuses (scaseg.data.images, scaseg.memory.check_memory).
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from badinput import refused, run, tree
from runtime_models import halves, make_onnx

INFER, BENCH, EXPORT = "scaseg-infer", "scaseg-bench", "scaseg-export"
SPARSE = 64 << 30  # truncate -s 64G


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of_zeros(w: int, h: int, channels: int = 3, depth: int = 8) -> bytes:
    """A valid PNG of w x h black pixels that holds a few MB whatever its size: the deflate block of one zero row,
    compressed once after a first row and repeated (its back-references only ever reach zeros)."""
    row = bytes(1 + w * channels * depth // 8)
    c = zlib.compressobj(9)
    first = c.compress(row) + c.flush(zlib.Z_SYNC_FLUSH)
    again = c.compress(row) + c.flush(zlib.Z_SYNC_FLUSH)
    n = len(row) * h  # adler32 of n zero bytes: a = 1, b = n
    stream = first + again * (h - 1) + b"\x03\x00" + struct.pack(">I", ((n % 65521) << 16) | 1)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, {1: 0, 3: 2, 4: 6}[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


def exif_tiff(orientation: int, endian: str = "<") -> bytes:
    """An EXIF block (a TIFF structure) whose IFD0 holds one entry: Orientation (274, SHORT)."""
    mark = b"II" if endian == "<" else b"MM"
    return (mark + struct.pack(endian + "HI", 42, 8) + struct.pack(endian + "H", 1)
            + struct.pack(endian + "HHI", 274, 3, 1) + struct.pack(endian + "HH", orientation, 0) + struct.pack(endian + "I", 0))


def jpeg_with_orientation(bgr: np.ndarray, orientation: int, endian: str = "<") -> bytes:
    """cv2's JPEG with an APP1 Exif segment (written here, byte by byte) after its APP0 JFIF segment."""
    data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    body = b"Exif\0\0" + exif_tiff(orientation, endian)
    app1 = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    cut = 2 + (2 + struct.unpack(">H", data[4:6])[0] if data[2:4] == b"\xff\xe0" else 0)
    return data[:cut] + app1 + data[cut:]


def png_with_orientation(bgr: np.ndarray, orientation: int) -> bytes:
    """cv2's PNG with an eXIf chunk (written here) right after IHDR."""
    data = cv2.imencode(".png", bgr)[1].tobytes()
    return data[:33] + _chunk(b"eXIf", exif_tiff(orientation, ">")) + data[33:]


def sparse(path: Path, keep: bytes = b"") -> Path:
    """``keep`` followed by zeros up to 64 GiB, as truncate -s 64G leaves it (no block written)."""
    path.write_bytes(keep)
    os.truncate(path, SPARSE)
    return path


def bgr(h: int = 40, w: int = 64) -> np.ndarray:
    return cv2.cvtColor(halves(h, w), cv2.COLOR_RGB2BGR)  # left red (class 0), right green (class 1)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    make_onnx(root / "m.onnx", size=None, batch=None)
    make_onnx(root / "labels.onnx", size=None, batch=None, output="labels")
    (root / "huge.png").write_bytes(png_of_zeros(30000, 30000))
    (root / "huge16.png").write_bytes(png_of_zeros(20000, 12000, channels=1, depth=16))
    small = cv2.imencode(".jpg", bgr())[1].tobytes()  # a real JPEG whose frame header says 60000 x 50000
    sof = small.index(b"\xff\xc0")
    (root / "huge.jpg").write_bytes(small[:sof + 5] + struct.pack(">HH", 50000, 60000) + small[sof + 9:])
    sparse(root / "sparse.png")
    sparse(root / "padded.png", cv2.imencode(".png", bgr())[1].tobytes())
    (root / "r6.jpg").write_bytes(jpeg_with_orientation(bgr(), 6))
    (root / "r8.jpg").write_bytes(jpeg_with_orientation(bgr(), 8, ">"))
    (root / "r3.png").write_bytes(png_with_orientation(bgr(), 3))
    pics = root / "pics"
    pics.mkdir()
    for i in range(2):
        cv2.imwrite(str(pics / f"ok{i}.png"), bgr())
    for name in ("huge.png", "huge.jpg"):
        (pics / name).write_bytes((root / name).read_bytes())
    sparse(pics / "sparse.png")
    sparse(pics / "padded.png", cv2.imencode(".png", bgr())[1].tobytes())
    return root


def test_the_huge_png_is_a_real_image(tmp_path: Path) -> None:
    """The generator's PNGs decode (checked at sizes that fit), so a refusal is about the size, not a corrupt file."""
    for w, h, c, d in ((300, 200, 3, 8), (7, 5, 1, 16)):
        data = png_of_zeros(w, h, c, d)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert image.shape[:2] == (h, w) and not image.any()
        assert zlib.decompress(data[41:-16]) == bytes((1 + w * c * d // 8) * h)  # the IDAT stream, its adler32 included


@pytest.mark.parametrize("name,expect", [("huge.png", "30000x30000"), ("huge16.png", "20000x12000"),
                                         ("huge.jpg", "60000x50000")])
def test_a_single_image_too_large_to_decode_is_refused_in_one_sentence(work: Path, name: str, expect: str) -> None:
    line = refused(INFER, [name, "-m", "m.onnx", "-q"], work, expect="megapixels")
    assert expect in line and name in line


@pytest.mark.parametrize("name,expect", [("sparse.png", "not an image"), ("padded.png", "64.0 GiB on disk")])
def test_a_sparse_64g_file_named_png_is_refused_without_reading_it(work: Path, name: str, expect: str) -> None:
    refused(INFER, [name, "-m", "m.onnx", "-q"], work, expect=expect, timeout=60)


def test_inside_a_folder_they_are_skipped_with_a_warning_and_the_rest_is_done(work: Path) -> None:
    before = tree(work / "pics")
    proc = run(INFER, ["pics", "-m", "m.onnx", "--output-kind", "labels", "-o", "seg", "-q"], work, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "skipped 4" in warnings[0], proc.stderr
    assert all(n in warnings[0] for n in ("huge", "sparse", "padded")), warnings[0]
    assert "(the first: " in warnings[0] and "megapixels" in warnings[0], warnings[0]  # why, not only which
    assert sorted(p.name for p in (work / "seg").iterdir()) == ["ok0.png", "ok1.png", "scaseg-infer.json"]
    assert tree(work / "pics") == before


@pytest.mark.parametrize("args", [["m.onnx", "--batch", "100000", "--imgsz", "512x1024"],
                                  ["m.onnx", "--batch", "20000", "--imgsz", "1024x2048"],
                                  ["labels.onnx", "--batch", "100000", "--imgsz", "1024x2048"]])
def test_a_batch_that_cannot_fit_in_memory_is_refused_before_it_is_allocated(work: Path, args: list[str]) -> None:
    line = refused(BENCH, [*args, "--warmup", "0", "-n", "1", "-q"], work, expect="GiB is available", timeout=60)
    assert f"--batch {args[2]}" in line and "smaller --batch" in line


def _labels_of(work: Path, name: str, model: str = "m.onnx") -> np.ndarray:
    out = work / f"{name}.labels.png"
    proc = run(INFER, [name, "-m", model, "--output-kind", "labels", "-o", out.name, "-q"], work)
    assert proc.returncode == 0, proc.stderr
    labels = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    out.unlink()
    return labels


@pytest.mark.parametrize("name,first", [("r6.jpg", 0), ("r8.jpg", 1)])
def test_a_jpeg_turned_by_its_exif_orientation_is_read_upright_by_infer(work: Path, name: str, first: int) -> None:
    """Stored 40x64, left red | right green; orientation 6 (90 clockwise) shows red on top, 8 (270) green on top."""
    labels = _labels_of(work, name)
    assert labels.shape == (64, 40)
    assert (labels[:28] == first).all() and (labels[36:] == 1 - first).all()


def test_a_png_exif_orientation_is_applied_too(work: Path) -> None:
    labels = _labels_of(work, "r3.png")  # 180 degrees: green left, red right
    assert labels.shape == (40, 64)
    assert (labels[:, :28] == 1).all() and (labels[:, 36:] == 0).all()


def test_the_calibration_reader_turns_photos_alike(work: Path, tmp_path: Path) -> None:
    from scaseg.calibration.data import open_calibration

    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i}.png"), bgr())
    for name in ("r6.jpg", "r8.jpg"):
        (folder / name).write_bytes((work / name).read_bytes())
    cset = open_calibration(str(folder), 8)
    loaded = {it.path.name: it.load()[0] for it in cset.calib + cset.heldout}
    assert loaded["r6.jpg"].shape == (64, 40, 3) and loaded["0.png"].shape == (40, 64, 3)
    assert loaded["r6.jpg"][:28, :, 0].min() > 200 and loaded["r6.jpg"][36:, :, 1].min() > 200  # red on top
    assert loaded["r8.jpg"][:28, :, 1].min() > 200 and loaded["r8.jpg"][36:, :, 0].min() > 200  # green on top


def _labelled_folder(root: Path, image: bytes, suffix: str) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(2):
        cv2.imwrite(str(root / "images" / f"{i}.png"), bgr())
        cv2.imwrite(str(root / "labels" / f"{i}.png"), (halves(40, 64)[:, :, 1] > 0).astype(np.uint8))
    (root / "images" / f"turned{suffix}").write_bytes(image)
    cv2.imwrite(str(root / "labels" / "turned.png"), (halves(40, 64)[:, :, 1] > 0).astype(np.uint8))
    return root


@pytest.mark.parametrize("name", ["r6.jpg", "r3.png"])
def test_a_turned_photo_with_an_unturned_label_is_refused_as_a_pair(work: Path, tmp_path: Path, name: str) -> None:
    """Which pixels the label was drawn on cannot be told (r3, turned 180 degrees, keeps the shape: only pixels move)."""
    data = _labelled_folder(tmp_path / "ds", (work / name).read_bytes(), Path(name).suffix)
    line = refused(BENCH, [str(work / "m.onnx"), "--data", str(data), "--warmup", "0", "-n", "1", "-q"], tmp_path,
                   expect="EXIF orientation")
    assert "turned" in line and "exiftool" in line


@pytest.mark.slow
def test_int8_calibration_skips_images_too_large_to_decode(work: Path, tmp_path: Path) -> None:
    import scaseg
    import torch

    torch.manual_seed(0)
    scaseg.save_checkpoint(scaseg.build("scaseg-b0", 3), tmp_path / "ck.pth", input_size=(64, 64))
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(6):
        cv2.imwrite(str(calib / f"{i}.png"), np.full((32, 32, 3), 40 * i, np.uint8))
    (calib / "huge.png").write_bytes((work / "huge.png").read_bytes())
    sparse(calib / "padded.png", cv2.imencode(".png", bgr())[1].tobytes())
    proc = run(EXPORT, ["ck.pth", "--precision", "int8", "--calib", "calib", "-o", "m8.onnx", "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: skipped")]
    assert len(warnings) == 1, proc.stderr
    assert "2 of the 8 images" in warnings[0] and "huge.png" in warnings[0] and "padded.png" in warnings[0]
    assert (tmp_path / "m8.onnx").is_file()


def test_calibration_still_refuses_files_that_are_not_images(tmp_path: Path, work: Path) -> None:
    """A folder of images and a sparse file that is not one: named before the export, as any corrupt file is."""
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(6):
        cv2.imwrite(str(calib / f"{i}.png"), bgr())
    sparse(calib / "sparse.png")
    from scaseg.calibration.data import open_calibration
    from scaseg.errors import ScasegError

    with pytest.raises(ScasegError, match="1 of the 7 images .* corrupt or not images \\(sparse.png\\)"):
        open_calibration(str(calib), 8)


def test_a_dataset_calibrates_without_the_pairs_too_large_to_decode(tmp_path: Path, work: Path, capsys) -> None:
    from scaseg.calibration.data import open_calibration

    root = tmp_path / "ds"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(5):
            cv2.imwrite(str(root / "images" / split / f"{i}.png"), bgr())
            cv2.imwrite(str(root / "labels" / split / f"{i}.png"), np.zeros((40, 64), np.uint8))
    (root / "classes.txt").write_text("a\nb\nc\n")
    (root / "images" / "train" / "big.png").write_bytes((work / "huge.png").read_bytes())
    cv2.imwrite(str(root / "labels" / "train" / "big.png"), np.zeros((4, 4), np.uint8))
    (root / "labels" / "val" / "4.png").unlink()  # a label too large to decode skips its pair as well
    (root / "labels" / "val" / "4.png").write_bytes(png_of_zeros(20000, 20000, channels=1))
    cset = open_calibration(str(root), 8)
    names = sorted(it.path.name for it in cset.calib)
    assert "big.png" not in names and len(names) == 5
    assert "4.png" not in [it.path.name for it in cset.heldout] and cset.labelled
    err = capsys.readouterr().err
    assert "warning: skipped 1 of the 6 images" in err and "big.png" in err and "30000x30000" in err
    assert "20000x20000" in err


@pytest.mark.parametrize("name,expect", [("padded.png", "64.0 GiB on disk"), ("huge.png", "megapixels")])
def test_scaseg_bench_refuses_a_dataset_image_too_large_to_decode(work: Path, tmp_path: Path, name: str,
                                                                   expect: str) -> None:
    """Its first image is the one timed (read whole before, a 64 GB allocation), and every image is scored."""
    data = _labelled_folder(tmp_path / "ds", cv2.imencode(".png", bgr())[1].tobytes(), ".png")
    target = data / "images" / "0.png"
    target.unlink()
    if name == "padded.png":
        sparse(target, cv2.imencode(".png", bgr())[1].tobytes())
    else:
        target.write_bytes((work / name).read_bytes())
    line = refused(BENCH, [str(work / "m.onnx"), "--data", str(data), "--warmup", "0", "-n", "1", "-q"], tmp_path,
                   expect=expect, timeout=60)
    assert "0.png" in line
