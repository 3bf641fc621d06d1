"""Running TensorRT engines, torch-free: which TensorRT is here and its rules, the runner, the plugin, CUDA.

- ``compat``: finds ``tensorrt`` (standard) or ``tensorrt_rtx`` (TensorRT for RTX), names the generation (8.5 /
  10.x / 11.x / rtx) and holds every rule that depends on it: precision plans, network flags, plugin support,
  compute capabilities, engine side files and the check that an engine can run here.
- The engine builder (ONNX -> engine + ``<engine>.json`` side file) is ``scaseg.export.engine``.
- ``runner``: ``TensorRTBackend``, the engine runner behind ``scaseg.runtime.backends.open_backend``.
- ``plugin``: the strip-attention plugin written with ``tensorrt.plugin`` (standard TensorRT >= 10.7).
- ``cuda``: the CUDA runtime calls the runner needs, one binding (ctypes to libcudart; why: see that module).

Submodules are imported on use; importing this package imports neither TensorRT nor onnx.

Polygraphy (NVIDIA's TensorRT toolbox; works with TensorRT-RTX when ``POLYGRAPHY_USE_TENSORRT_RTX=1``) was
considered for loading, building and ORT-vs-TensorRT comparison and is not used: the builder needs what Polygraphy's
loaders do not give in one place (the side file written atomically with the plan, the builder's verbose layer report
for ``layer_precisions``, the compute-capability list recorded for the runner's refusal), the runner must read and
check the side file before it deserialises anything, and a comparison run needs a GPU, which this project has not
had. Its CUDA wrapper is the model for ours (ctypes to libcudart), without adding the dependency.
"""
