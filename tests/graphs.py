"""Small ONNX graphs for the tests: a model from nodes and weights, run as written, and a float64
convolution to check them against."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes, inputs, outputs, weights) -> onnx.ModelProto:
    """An opset-13 model of ``nodes``, ``weights`` (cast to float32) its initializers."""
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def run(model: onnx.ModelProto, x: np.ndarray, names: list[str] | None = None) -> list[np.ndarray]:
    """The model as written (no graph optimization), with ``names`` exposed."""
    if names:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        model.graph.output.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def conv64(x, w, b, pads=(0, 0, 0, 0), group=1, pad_value=0.0):
    """2-D convolution, stride 1, by explicit window sums in float64."""
    n, c, h, wd = x.shape
    o, per, kh, kw = w.shape
    top, left, bottom, right = pads
    padded = np.full((n, c, h + top + bottom, wd + left + right), pad_value, np.float64)
    padded[:, :, top : top + h, left : left + wd] = x
    oh, ow = padded.shape[2] - kh + 1, padded.shape[3] - kw + 1
    out = np.zeros((n, o, oh, ow))
    per_out = o // group
    for k in range(o):
        g = k // per_out
        for i in range(kh):
            for j in range(kw):
                window = padded[:, g * per : (g + 1) * per, i : i + oh, j : j + ow]
                out[:, k] += np.einsum("nchw,c->nhw", window, w[k, :, i, j])
        out[:, k] += b[k]
    return out
