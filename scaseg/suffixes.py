"""File suffixes: which files are images, label maps, videos, ONNX models, TensorRT engines and checkpoints.

The one table every command and module uses; all lower case, compared with ``Path(p).suffix.lower()``.
"""
from __future__ import annotations

#: Images read (datasets, calibration folders, scaseg-infer sources) and written (scaseg-infer's one-image output).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Label maps read: lossless only, since a JPEG label would hold invented class ids along every edge.
LABEL_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
#: Label maps scaseg-infer writes: lossless and able to hold 16-bit ids, which BMP is not.
LABEL_OUTPUT_SUFFIXES = (".png", ".tif", ".tiff")
#: Videos a source may be (read through OpenCV's FFmpeg).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
#: Videos written (through PyAV, FFmpeg's libraries): the container FFmpeg writes for each suffix and its default
#: encoder: H.264 (libx264), which every player and browser opens, and Motion JPEG in AVI (scaseg.data.video).
VIDEO_CONTAINERS = {".mp4": ("mp4", "libx264"), ".m4v": ("mp4", "libx264"), ".mov": ("mov", "libx264"),
                    ".mkv": ("matroska", "libx264"), ".avi": ("avi", "mjpeg")}
VIDEO_OUTPUT_SUFFIXES = tuple(VIDEO_CONTAINERS)

#: ONNX models (ONNX Runtime), and the suffix scaseg-export writes.
ONNX_SUFFIX = ".onnx"
ONNX_SUFFIXES = (ONNX_SUFFIX,)
#: Serialized TensorRT engines, and the suffix scaseg-export writes.
ENGINE_SUFFIX = ".engine"
ENGINE_SUFFIXES = (".trt", ENGINE_SUFFIX, ".plan")
#: PyTorch checkpoints (ours or mmsegmentation-style).
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")
