"""The overlay at the network's resolution: the same picture as colouring the labels at the frame's size."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from scaseg.metadata import default_palette
from scaseg.data.video import I420
from scaseg.runtime.overlay import (blend, colorize, draw_legend, palette_lut, palette_planes, render_overlay,
                                    render_overlay_planes)
from scaseg.runtime.predictor import output_to_labels
from scaseg.runtime.preprocess import labels_to_source, resize_image


def _frame_size_overlay(image, labels_full, palette, alpha):
    """The picture as it was made before: a 65536-entry table indexed by labels at the frame's size, then blended."""
    return blend(image, palette_lut(palette)[labels_full.astype(np.intp)], alpha)


@pytest.mark.parametrize("src_hw, net_hw, policy", [
    ((1080, 1920), (192, 384), "letterbox"),   # up, with padding cut off
    ((1080, 1920), (192, 384), "stretch"),
    ((721, 1283), (96, 160), "letterbox"),     # odd sizes
    ((60, 90), (128, 256), "stretch"),         # down: the frame is smaller than the network's input
    ((64, 128), (64, 128), "stretch"),         # same size: no scaling at all
])
def test_the_small_overlay_is_the_frame_size_picture(src_hw, net_hw, policy):
    rng = np.random.default_rng(sum(src_hw))
    image = rng.integers(0, 256, (*src_hw, 3), dtype=np.uint8)
    _, geom = resize_image(image, net_hw, policy)
    logits = rng.standard_normal((19, *net_hw)).astype(np.float32)
    small = output_to_labels(logits, geom, 19, to_source=False)
    full = output_to_labels(logits, geom, 19)
    assert small.shape == tuple(geom.content_hw) and full.shape == src_hw
    palette = default_palette(19)
    new = render_overlay(image, small, palette, 0.4)
    old = _frame_size_overlay(image, full, palette, 0.4)
    assert new.shape == old.shape and int((new != old).any(axis=-1).sum()) == 0


def test_colorize_lut_matches_the_table_index_and_blacks_out_ids_without_a_colour():
    palette = default_palette(19)
    labels = np.random.default_rng(0).integers(0, 256, (37, 53), dtype=np.uint8)
    mask = colorize(labels, palette)
    assert (mask == palette_lut(palette, 256)[labels]).all()
    assert (mask[labels >= 19] == 0).all() and mask.flags.c_contiguous
    wide = labels.astype(np.uint16) + 300  # ids past 255 (a model of many classes): the wide table
    assert (colorize(wide, palette) == palette_lut(palette)[wide]).all()


def test_the_legend_lists_the_classes_of_the_small_labels():
    palette = default_palette(3)
    image = np.zeros((400, 600, 3), np.uint8)
    small = np.zeros((40, 60), np.uint8)
    small[:, 30:] = 2
    up = cv2.resize(small, (600, 400), interpolation=cv2.INTER_NEAREST)
    names = ["road", "car", "sky"]
    assert (render_overlay(image, small, palette, 0.5, names) == render_overlay(image, up, palette, 0.5, names)).all()
    # the same legend: labels scaled up first hold the same classes
    assert (labels_to_source(small, resize_image(image, (40, 60), "stretch")[1]) == up).all()


def test_the_legend_draws_on_a_copy_unless_told_the_picture_is_the_callers():
    palette, names = default_palette(3), ["road", "car", "sky"]
    image = np.full((200, 300, 3), 90, np.uint8)
    drawn = draw_legend(image, names, palette)
    assert (image == 90).all() and drawn is not image and (drawn != 90).any()
    in_place = draw_legend(image, names, palette, copy=False)
    assert in_place is image and np.array_equal(image, drawn)


@pytest.mark.parametrize("src_hw, net_hw, policy", [((1080, 1920), (192, 384), "stretch"),
                                                   ((720, 1280), (96, 160), "letterbox"),
                                                   ((64, 128), (64, 128), "stretch")])
def test_the_overlay_drawn_in_planes_is_the_rgb_overlay_the_writer_would_encode(src_hw, net_hw, policy):
    rng = np.random.default_rng(sum(src_hw))
    image = cv2.GaussianBlur(rng.integers(0, 256, (*src_hw, 3), dtype=np.uint8), (0, 0), 3)
    planes = I420.from_rgb(image)
    _, geom = resize_image(image, net_hw, policy)
    small = output_to_labels(rng.standard_normal((19, *net_hw)).astype(np.float32), geom, 19, to_source=False)
    palette = default_palette(19)
    got = render_overlay_planes(planes, small, palette_planes(palette), 0.4)
    want = I420.from_rgb(render_overlay(planes.rgb(), small, palette, 0.4))  # as scaseg-infer wrote it before
    assert got.hw == src_hw
    for name, g, w in zip("YUV", got.split(), want.split()):
        off = np.abs(g.astype(int) - w)
        # Rounding once instead of three times; a frame's YUV outside the RGB cube is kept instead of clipped.
        assert (off > 1).mean() < 0.002 and off.max() <= 24, name
    assert (render_overlay_planes(planes, small, palette_planes(palette), 0.0).planes == planes.planes).all()


def test_the_palettes_planes_are_the_writers_conversion_of_each_colour():
    palette = default_palette(19)
    table = palette_planes(palette)
    assert table.shape == (3, 256) and table.dtype == np.uint8
    for cid in (0, 5, 18):
        block = I420.from_rgb(np.full((2, 2, 3), palette[cid], np.uint8))
        y, u, v = block.split()
        assert (table[:, cid] == [y[0, 0], u[0, 0], v[0, 0]]).all()
    assert (table[:, 19:] == table[:, 255:256]).all()  # ids without a colour: black, as palette_lut makes them
    with pytest.raises(ValueError, match="uint8 label maps"):
        render_overlay_planes(I420(np.zeros((6, 4), np.uint8)), np.zeros((2, 2), np.uint16), table)
