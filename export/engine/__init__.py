"""``--format engine``: an exported ONNX -> a TensorRT engine and its ``<engine>.json`` side file, torch-free.

- ``builder``: ``build_engine`` (parse, configure, build, write plan + side file atomically) and ``parse_errors``
  (the lint's parser run).
- ``profile``: the build options checked before any work (with the compute capabilities a TensorRT-RTX engine is
  built for) and the optimisation profile.
- ``precision``: the precision plan of each TensorRT generation (network typing, builder flags) and network flags.
- ``graph``: the ONNX side: read the file and its metadata, tell its precision, prepare it for the parser.
- ``layers``: the built engine's layer table and the layer-precision report.

What runs an engine (the runner, CUDA, the plugin, which TensorRT is installed, whether an engine can run here) is
``scaseg.runtime.tensorrt``, which this package imports and which never imports this one. A Jetson builds engines
from a copied ONNX without PyTorch: nothing here imports torch, and ``onnx`` only inside the functions that read one.
"""
