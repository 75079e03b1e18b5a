"""Model helpers: which tensors the graph keeps at or above zero."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from quantbench.model import nonnegative_tensors


def _model(nodes, initializers, opset=13, extra_inputs=()):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])]
    inputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, []) for name in extra_inputs]
    outputs = [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None) for node in nodes]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("com.example", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _scalar(name: str, value: float):
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)


def test_relu_sigmoid_and_clips_with_a_constant_floor_at_or_above_zero():
    nodes = [
        helper.make_node("Relu", ["x"], ["relu"]),
        helper.make_node("Sigmoid", ["x"], ["sigmoid"]),
        helper.make_node("Clip", ["x", "zero", "six"], ["relu6"]),
        helper.make_node("Clip", ["x", "minus_one", "six"], ["clip_signed"]),
        helper.make_node("Clip", ["x", "", "six"], ["clip_no_floor"]),
        helper.make_node("Constant", [], ["half"], value=numpy_helper.from_array(np.array(0.5, np.float32))),
        helper.make_node("Clip", ["x", "half"], ["clip_constant_node"]),
        helper.make_node("Clip", ["x", "fed_floor"], ["clip_fed_floor"]),
        helper.make_node("Tanh", ["x"], ["tanh"]),
        helper.make_node("Add", ["relu", "sigmoid"], ["sum"]),  # non-negative, but not by its operator
        helper.make_node("Abs", ["x"], ["abs"], domain="ai.onnx"),
        helper.make_node("Relu", ["x"], ["custom_relu"], domain="com.example"),  # anyone's operator
    ]
    initializers = [_scalar(n, v) for n, v in [("zero", 0), ("six", 6), ("minus_one", -1), ("fed_floor", 0)]]
    # "fed_floor" is also a graph input, so a feed may replace it: not a constant
    model = _model(nodes, initializers, extra_inputs=["fed_floor"])
    assert nonnegative_tensors(model) == {"relu", "sigmoid", "relu6", "clip_constant_node", "abs"}


def test_opset_6_clip_reads_its_min_attribute():
    nodes = [
        helper.make_node("Clip", ["x"], ["relu6"], min=0.0, max=6.0),
        helper.make_node("Clip", ["x"], ["signed"], min=-6.0, max=6.0),
    ]
    assert nonnegative_tensors(_model(nodes, [], opset=6)) == {"relu6"}
