"""ONNX Runtime sessions over in-memory models: plain runs, and runs that also return intermediate tensors."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from scaseg.runtime.backends.onnxruntime import make_session as ort_session


def make_session(model: onnx.ModelProto, *, threads: Optional[int] = None,
                 optimized_path: Optional[str] = None) -> ort.InferenceSession:
    """A CPU session for an in-memory model; ``optimized_path`` saves the graph ORT actually runs."""
    # log level 3: ORT warns about every unused Constant left behind by the rewrite
    return ort_session(model.SerializeToString(), threads=threads, optimized_path=optimized_path, log_level=3)


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
