"""Synthetic street scenes with exact labels, written as a Cityscapes-layout dataset plus a short video.

A scene is a small 3-D world (a straight street: road, sidewalks, facades with windows, trees, hedges, cars,
people) seen by a pinhole camera 1.5 m above the road. Every shape is projected with the same camera, so sizes
follow the depth, and each polygon is filled into the image and into the label map with the same raster call:
labels are exact. The image then gets what the label does not see: shadows, textures, lane markings, window
panes, lighting and colour casts, blur and sensor noise. Class colours overlap on purpose (grey cars, grey
asphalt, grey concrete and overcast skies; green cars and green trees; blue glass and blue sky), so a model has to
use shape and context. Labels use the real Cityscapes train ids, so the cityscapes reader opens the output with the
19 official classes.

One module per job: ``world`` (the scene model), ``canvas`` (camera and raster), ``render`` (painting a scene or
a video), ``writer`` (the dataset on disk) and ``cli`` (``scaseg-synth``).
"""
from __future__ import annotations

from scaseg.data.synth.cli import main
from scaseg.data.synth.render import render_scene, render_video
from scaseg.data.synth.world import (BUILDING, CAR, EGO, PERSON, ROAD, SIDEWALK, SKY, SYNTH_CLASSES,
                                     VEGETATION)
from scaseg.data.synth.writer import CITY, GENERATOR, write_dataset

__all__ = ["main", "render_scene", "render_video", "write_dataset", "SYNTH_CLASSES", "CITY", "GENERATOR",
           "ROAD", "SIDEWALK", "BUILDING", "VEGETATION", "SKY", "PERSON", "CAR", "EGO"]
