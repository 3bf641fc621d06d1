"""Export: PyTorch SCASeg -> ONNX (strip-attention op handling, onnxsim, parity), engines, Triton repositories."""
