"""Softmax over a short axis that is not the last, written as the element-wise ops it is made of.

ONNX Runtime's CPU Softmax normalizes one row at a time along the last axis; for another axis it
transposes the tensor there and back. Where that axis is short, the rows are many and short and the
per-row overhead dominates: YOLOv8n's box head (DFL) takes the softmax of 16 values for each of 8,400
positions, 1.1 ms of a 10 ms model on 2 cores. ``ReduceMax -> Sub -> Exp -> ReduceSum -> Div`` along the
same axis is the same function, each op vectorized over the whole tensor (0.2 ms there). Its results
differ from the kernel's in the last bits of float (summation order), no more.

Only the fast CPU flavour uses this (:mod:`quantbench.export.onnxruntime_fast`); the judged model and
the exact flavour keep their Softmax.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantbench.graph import opset_version, tensor_names, unique_name

SHORT_AXIS = 64
"""A Softmax whose axis holds at most this many values (and is not the last) is written out."""

FIRST_OPSET = 13
"""Before opset 13 Softmax normalized over every axis from ``axis`` on; such models are left alone."""

REDUCE_AXES_INPUT = 18
"""From this opset on ReduceMax takes its axes as an input (ReduceSum from 13)."""


def _short_axis(shapes: dict[str, list[int | None]], node: onnx.NodeProto) -> int | None:
    """The axis (non-negative) of a Softmax over a short axis that is not its input's last; else None."""
    dims = shapes.get(node.input[0])
    if dims is None:
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    axis = axis + len(dims) if axis < 0 else axis
    if not 0 <= axis < len(dims) - 1:
        return None
    size = dims[axis]
    return axis if size is not None and 0 < size <= SHORT_AXIS else None


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Tensor -> dims (None where not a fixed number), from ONNX shape inference; empty where it fails.
    (Not :mod:`quantbench.model`'s cached inference: the model is edited right after.)"""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model shape inference cannot follow: nothing is rewritten
        return {}
    found: dict[str, list[int | None]] = {}
    graph = inferred.graph
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = info.type.tensor_type
        if tensor_type.HasField("shape"):
            dims = tensor_type.shape.dim
            found[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return found


def write_out_short_softmaxes(model: onnx.ModelProto) -> list[str]:
    """Replace, in place, every Softmax over a short axis other than the last by its element-wise ops.

    Args:
        model: the model (opset 13 or later; an older one is left as it is).

    Returns:
        One line per Softmax rewritten, naming it and its axis.
    """
    opset = opset_version(model)
    softmaxes = [n for n in model.graph.node if n.op_type == "Softmax" and n.domain in ("", "ai.onnx")]
    if opset < FIRST_OPSET or not softmaxes:
        return []
    shapes = _shapes(model)
    graph = model.graph
    taken = tensor_names(graph)
    nodes: list[onnx.NodeProto] = []
    notes = []
    for node in graph.node:
        axis = _short_axis(shapes, node) if node.op_type == "Softmax" else None
        if axis is None:
            nodes.append(node)
            continue
        x, y = node.input[0], node.output[0]
        axes, peak, shifted, exp, total = (unique_name(taken, f"{y}_{part}") for part in
                                           ("axes", "max", "shifted", "exp", "sum"))  # fmt: skip
        graph.initializer.append(numpy_helper.from_array(np.array([axis], np.int64), axes))
        if opset >= REDUCE_AXES_INPUT:
            reduce_max = helper.make_node("ReduceMax", [x, axes], [peak], keepdims=1)
        else:
            reduce_max = helper.make_node("ReduceMax", [x], [peak], axes=[axis], keepdims=1)
        name = node.name or y
        reduce_max.name = f"{name}/max"
        nodes += [
            reduce_max,
            helper.make_node("Sub", [x, peak], [shifted], name=f"{name}/shift"),
            helper.make_node("Exp", [shifted], [exp], name=f"{name}/exp"),
            helper.make_node("ReduceSum", [exp, axes], [total], name=f"{name}/sum", keepdims=1),
            helper.make_node("Div", [exp, total], [y], name=name),
        ]
        dims = shapes[x]
        notes.append(
            f"{name}: Softmax over axis {axis} of {len(dims)} ({dims[axis]} values) as its element-wise ops"
        )
    del graph.node[:]
    graph.node.extend(nodes)
    return notes
