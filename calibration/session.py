"""ONNX Runtime sessions over in-memory models: plain runs, and runs that also return intermediate tensors."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from scaseg.errors import ScasegError


def make_session(model: onnx.ModelProto, *, threads: Optional[int] = None,
                 optimized_path: Optional[str] = None) -> ort.InferenceSession:
    """A CPU session for an in-memory model; ``optimized_path`` saves the graph ORT actually runs."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # ORT warns about every unused Constant left behind by the rewrite
    if threads:
        opts.intra_op_num_threads = threads
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    try:
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for invalid graphs
        raise ScasegError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from None


def runner(model: onnx.ModelProto, tensors: Sequence[str] = (), *, threads: Optional[int] = None
           ) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """batch -> {name: value} for the model's first output plus ``tensors`` (made extra graph outputs)."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    present = {o.name for o in work.graph.output}
    for name in tensors:
        if name not in present:
            # Type left open: ORT infers it; shape-free outputs are legal ONNX.
            work.graph.output.append(helper.make_empty_tensor_value_info(name))
    sess = make_session(work, threads=threads)
    input_name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, sess.run(names, {input_name: batch})))

    return run


def first_output(model: onnx.ModelProto, *, threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    """batch -> the model's first output."""
    sess = make_session(model, threads=threads)
    input_name = sess.get_inputs()[0].name
    output_name = sess.get_outputs()[0].name
    return lambda batch: sess.run([output_name], {input_name: batch})[0]
