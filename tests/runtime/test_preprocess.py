"""scaseg.runtime.preprocess: normalisation, resize and back, logits to labels (the one preprocessing)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from scaseg.metadata import IMAGENET_MEAN, IMAGENET_STD
from scaseg.data.video import I420
from scaseg.runtime.preprocess import (fit, label_dtype, labels_to_source, logits_to_labels, normalize, preprocess,
                                      preprocess_planes, resize_image, resize_nearest)
from scaseg.runtime.preprocess import _chroma_maps


def test_normalize_matches_definition():
    img = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    x = normalize(img, IMAGENET_MEAN, IMAGENET_STD)
    assert x.shape == (3, 6, 7) and x.dtype == np.float32 and x.flags.c_contiguous
    ref = (img[2, 3, 1] - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    assert abs(float(x[1, 2, 3]) - ref) < 1e-5
    # Plane by plane, the same float32 operations as on the interleaved image: the same bits, views included.
    for image in (img, img[:, ::-1], np.random.default_rng(1).integers(0, 256, (192, 384, 3), dtype=np.uint8)):
        want = image.astype(np.float32)
        want -= np.asarray(IMAGENET_MEAN, np.float32)
        want *= 1.0 / np.asarray(IMAGENET_STD, np.float32)
        assert np.array_equal(normalize(image, IMAGENET_MEAN, IMAGENET_STD), want.transpose(2, 0, 1))


@pytest.mark.parametrize("policy", ["stretch", "letterbox"])
def test_resize_and_back_recovers_label_layout(policy):
    labels = np.zeros((375, 500), np.uint8)
    labels[:, 250:] = 3
    _, geom = resize_image(np.zeros((375, 500, 3), np.uint8), (128, 128), policy)
    small = np.zeros((128, 128), np.uint8)
    ch, cw = geom.content_hw
    small[:ch, cw // 2 : cw] = 3
    back = labels_to_source(small, geom)
    assert back.shape == (375, 500)
    assert (back == labels).mean() > 0.99
    if policy == "letterbox":
        assert geom.content_hw == (96, 128)


@pytest.mark.parametrize("src_hw", [(192, 384), (97, 131), (1, 1), (5, 3), (360, 640)])
@pytest.mark.parametrize("dst_hw", [(1080, 1920), (2160, 3840), (1081, 1919), (300, 200), (7, 5), (100, 50),
                                    (192, 1000)])
def test_resize_nearest_picks_the_pixels_opencv_picks(src_hw, dst_hw):
    rng = np.random.default_rng(sum(src_hw) + sum(dst_hw))
    for image in (rng.integers(0, 256, (*src_hw, 3), dtype=np.uint8), rng.integers(0, 300, src_hw).astype(np.int32),
                  rng.integers(0, 9, src_hw).astype(np.uint16)):
        ours = resize_nearest(image, dst_hw)
        theirs = cv2.resize(image, dst_hw[::-1], interpolation=cv2.INTER_NEAREST)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape and np.array_equal(ours, theirs)
    same = rng.integers(0, 256, (*src_hw, 3), dtype=np.uint8)
    assert resize_nearest(same, src_hw) is same


def test_preprocess_keeps_size_when_dynamic():
    x, geom = preprocess(np.zeros((33, 47, 3), np.uint8), None, IMAGENET_MEAN, IMAGENET_STD)
    assert x.shape == (3, 33, 47) and geom.src_hw == geom.dst_hw == (33, 47)


def _smooth(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([128 + 100 * np.sin(xx / 37.0), 128 + 100 * np.cos(yy / 29.0), (xx + yy) * 200 // (h + w)],
                    -1).astype(np.uint8)


@pytest.mark.parametrize("hw, size, policy", [((1080, 1920), (192, 384), "stretch"),
                                              ((1080, 1920), (192, 384), "letterbox"),  # odd content width: 341
                                              ((720, 1280), (512, 512), "letterbox"),
                                              ((96, 160), (192, 384), "stretch"),  # scaled up
                                              ((96, 160), None, "stretch")])  # a dynamic model: the frame's own size
def test_planes_make_the_input_their_rgb_picture_makes(hw, size, policy):
    planes = I420.from_rgb(_smooth(*hw))
    got, geom = preprocess_planes(planes, size, IMAGENET_MEAN, IMAGENET_STD, policy)
    want, want_geom = preprocess(planes.rgb(), size, IMAGENET_MEAN, IMAGENET_STD, policy)
    assert geom == want_geom and got.shape == want.shape and got.dtype == np.float32
    levels = np.abs(got - want) * np.asarray(IMAGENET_STD, np.float32)[:, None, None]  # on the 0..255 scale
    assert levels.mean() < 1.0 and levels.max() < 8  # resized before or after the conversion: rounding apart
    ch, cw = geom.content_hw
    assert (got[:, ch:, :] == want[:, ch:, :]).all() and (got[:, :, cw:] == want[:, :, cw:]).all()  # the padding


@pytest.mark.parametrize("hw, content_hw", [((1080, 1920), (192, 384)), ((1080, 1920), (192, 341)),
                                            ((96, 160), (192, 384)), ((720, 1280), (720, 1280)), ((2, 2), (5, 3))])
def test_chroma_is_sampled_where_the_resize_of_the_repeated_chroma_reads_it(hw, content_hw):
    rng = np.random.default_rng(0)
    chroma = rng.integers(0, 256, (hw[0] // 2, hw[1] // 2), dtype=np.uint8)  # noise: every sample an edge
    map_x, map_y = _chroma_maps(hw, content_hw)
    got = cv2.remap(chroma, map_x, map_y, cv2.INTER_LINEAR)
    repeated = cv2.resize(chroma, hw[::-1], interpolation=cv2.INTER_NEAREST)  # I420.rgb()'s 2x2 repetition
    want = cv2.resize(repeated, content_hw[::-1], interpolation=cv2.INTER_LINEAR)
    # cv2.remap places a sample in steps of 1/32: at most 255 / 64 off across an edge, and rounding
    assert got.shape == want.shape and np.abs(got.astype(int) - want).max() <= 5


def test_fit_is_the_rule_resize_image_follows():
    assert fit((1080, 1920), (192, 384), "stretch").content_hw == (192, 384)
    assert fit((1080, 1920), (192, 384), "letterbox").content_hw == (192, 341)
    assert fit((10, 4000), (64, 64), "letterbox").content_hw == (1, 64)  # never zero rows
    with pytest.raises(Exception, match="unknown resize policy"):
        fit((10, 10), (8, 8), "crop")


def test_logits_to_labels_batch_and_single():
    logits = np.zeros((2, 4, 3, 3), np.float32)
    logits[0, 2] = 1
    logits[1, 3] = 1
    assert logits_to_labels(logits).tolist()[0][0] == [2, 2, 2]
    assert (logits_to_labels(logits[1]) == 3).all()


def test_logits_to_labels_equals_argmax_first_max_wins():
    rng = np.random.default_rng(3)
    logits = rng.integers(0, 4, (2, 7, 9, 11)).astype(np.float32)  # many ties
    assert (logits_to_labels(logits) == np.argmax(logits, axis=1)).all()
    assert (logits_to_labels(logits[0]) == np.argmax(logits[0], axis=0)).all()
    assert logits_to_labels(np.zeros((300, 2, 2), np.float32)).dtype == np.uint16


def test_label_dtype_holds_every_class_id():
    assert label_dtype(19) == np.uint8 and label_dtype(256) == np.uint8  # ids 0..255 fit a byte
    assert label_dtype(257) == np.uint16
    assert np.iinfo(label_dtype(256)).max == 255 and np.iinfo(label_dtype(65536)).max == 65535
