"""A Softmax over a short axis other than the last, written out as its element-wise ops (the fast CPU
flavour's rewrite), against a float64 softmax."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from quantbench.export.short_softmax import SHORT_AXIS, write_out_short_softmaxes


def _model(shape: list[int], axis: int, opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], name="soft", axis=axis)],
        "softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", *shape[1:]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", *shape[1:]])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def _softmax64(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x.astype(np.float64) - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("opset", [13, 17, 18])
@pytest.mark.parametrize("axis", [1, -3])
def test_short_softmax_written_out_computes_the_softmax(opset: int, axis: int) -> None:
    """The DFL shape of a YOLOv8 head: 16 values over axis 1 of (n, 16, 4, anchors)."""
    model = _model([2, 16, 4, 30], axis, opset)
    notes = write_out_short_softmaxes(model)
    assert len(notes) == 1 and "axis 1 of 4 (16 values)" in notes[0]
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["ReduceMax", "Sub", "Exp", "ReduceSum", "Div"]
    onnx.checker.check_model(model)
    x = (np.random.default_rng(0).normal(0, 4, (2, 16, 4, 30))).astype(np.float32)
    x[0, :, 0, 0] = 80.0  # equal large values: the shift by the maximum keeps exp finite
    got = _run(model, x)
    expected = _softmax64(x, 1)
    assert np.isfinite(got).all()
    assert np.abs(got - expected).max() < 1e-6
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "axis", "opset"),
    [
        ([2, 16, 30], -1, 13),  # the last axis: ONNX Runtime's kernel is at its best there
        ([2, 16, 30], 2, 13),
        ([2, SHORT_AXIS + 1, 30], 1, 13),  # a long axis
        ([2, 16, 4, 30], 1, 12),  # before opset 13, axis 1 normalized over every axis from 1 on
    ],
)
def test_other_softmaxes_are_left_alone(shape: list[int], axis: int, opset: int) -> None:
    model = _model(shape, axis, opset)
    before = model.SerializeToString()
    assert write_out_short_softmaxes(model) == []
    assert model.SerializeToString() == before


def test_an_axis_of_unknown_length_is_left_alone() -> None:
    model = _model([2, 16, 4, 30], 1, 13)
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "classes"
    assert write_out_short_softmaxes(model) == []
    assert [n.op_type for n in model.graph.node] == ["Softmax"]
