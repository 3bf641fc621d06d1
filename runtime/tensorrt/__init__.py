"""Running TensorRT engines, torch-free: which TensorRT is here, whether an engine can run, the runner, plugin, CUDA.

- ``installed``: finds ``tensorrt`` (standard) or ``tensorrt_rtx`` (TensorRT for RTX), its version and generation
  (8.5 / 10.x / 11.x / rtx), and whether it can run the Python plugin.
- ``engine_info``: an engine's side files and the check that it can run on this TensorRT and GPU.
- ``runner``: ``TensorRTBackend``, the engine runner behind ``scaseg.runtime.backends.open_backend``.
- ``plugin``: the strip-attention plugin written with ``tensorrt.plugin`` (standard TensorRT >= 10.7).
- ``cuda``: the CUDA runtime calls the runner needs, one binding (ctypes to libcudart; why: see that module).

Building an engine (ONNX -> plan + ``<engine>.json``, the precision plan of each generation) is
``scaseg.export.engine``: nothing here imports it.

Submodules are imported on use; importing this package imports neither TensorRT nor onnx.

Polygraphy (NVIDIA's TensorRT toolbox; works with TensorRT-RTX when ``POLYGRAPHY_USE_TENSORRT_RTX=1``) was
considered for loading, building and ORT-vs-TensorRT comparison and is not used: the builder needs what Polygraphy's
loaders do not give in one place (the side file written atomically with the plan, the builder's verbose layer report
for ``layer_precisions``, the compute-capability list recorded for the runner's refusal), the runner must read and
check the side file before it deserialises anything, and a comparison run needs a GPU, which this project has not
had. Its CUDA wrapper is the model for ours (ctypes to libcudart), without adding the dependency.
"""
