"""Reduced precision: calibrated INT8 (explicit Q/DQ) and FP16 ONNX. Never imports torch."""
