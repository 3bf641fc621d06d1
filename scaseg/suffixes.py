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
#: Videos written, with the codec per container: OpenCV's FFmpeg writes MPEG-4 part 2 everywhere, MJPG into AVI.
VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
VIDEO_OUTPUT_SUFFIXES = tuple(VIDEO_FOURCC)

#: ONNX models (ONNX Runtime), and the suffix scaseg-export writes.
ONNX_SUFFIX = ".onnx"
ONNX_SUFFIXES = (ONNX_SUFFIX,)
#: Serialized TensorRT engines, and the suffix scaseg-export writes.
ENGINE_SUFFIX = ".engine"
ENGINE_SUFFIXES = (".trt", ENGINE_SUFFIX, ".plan")
#: PyTorch checkpoints (ours or mmsegmentation-style).
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")
