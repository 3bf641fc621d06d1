"""The lightweight runtime: numpy, OpenCV, ONNX Runtime or TensorRT. Never imports torch or onnx."""
