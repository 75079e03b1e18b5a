"""Batch normalizations and bias additions folded into the quantized convolution before them, without
touching a weight code.

A BatchNormalization reading a Conv's output computes ``a * y + b`` per channel, with
``a = gamma / sqrt(var + eps)`` and ``b = beta - a * mean``. Where the Conv's weights are int8 codes times
a per-output-channel scale ``s``, ``a * conv(x, codes * s) = conv(x, codes * (a * s))``: the fold gives
the channel the scale ``|a| * s`` (and negates its codes where ``a < 0``, which the symmetric grid
allows) and the bias ``a * bias + b``. The codes stay the ones judged; what changes is float rounding.

An Add of a constant with one value per channel (a bias that an exporter wrote as its own node) folds
into the bias alike: ``conv(x) + c``, with ``c`` added to the bias.

ONNX Runtime folds these into a float convolution itself, but not into one whose weights are quantized,
so without this a quantized Conv followed by one (PP-OCR's paddle exports have dozens) cannot become an
integer QLinearConv on the CPU, and runs in float.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from quantbench.graph import (
    cleanup,
    constant_tensors,
    constant_values,
    consumers,
    evaluate_constants,
    initializers,
    producers,
    tensor_names,
    unique_name,
)


def fold_into_convs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every foldable BatchNormalization or constant Add folded into its
    quantized Conv.

    Foldable: the Conv's output read by that node alone and not a model output, the Conv's weight a
    DequantizeLinear of int8 codes with one scale per output channel (axis 0) that no other node
    reads, its bias (if any) a constant; a BatchNormalization in inference mode with constant
    parameters; an Add whose other input is a constant of one value per channel (shape ``[C, 1, 1]``
    or ``[1, C, 1, 1]`` for a 2-D Conv).

    Args:
        model: a Q/DQ model; not modified.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = initializers(graph)
    constants = constant_values(graph)
    added = {x for node in graph.node if node.op_type == "Add" for x in node.input}
    computed = sorted((constant_tensors(graph) - set(constants)) & added)  # constants some nodes compute
    constants.update(evaluate_constants(out, computed) if computed else {})
    writer = producers(graph)
    uses = consumers(graph)
    outputs = {o.name for o in graph.output}
    taken = tensor_names(graph)
    dropped: set[int] = set()
    for i, bn in enumerate(graph.node):
        if bn.op_type not in ("BatchNormalization", "Add") or len(bn.output) != 1:
            continue
        y = bn.input[0] if bn.input[0] in writer and bn.op_type == "BatchNormalization" else None
        if bn.op_type == "Add":
            y = next((x for x in bn.input if x not in constants), None)
        conv_at = writer.get(y) if y is not None else None
        if (
            y is None
            or conv_at is None
            or graph.node[conv_at].op_type != "Conv"
            or y in outputs
            or len(uses.get(y, [])) != 1
        ):
            continue
        conv = graph.node[conv_at]
        dq_at = writer.get(conv.input[1])
        if dq_at is None or graph.node[dq_at].op_type != "DequantizeLinear" or len(uses[conv.input[1]]) != 1:
            continue
        folded = _folded(graph.node[dq_at], conv, bn, inits, constants)
        if folded is None:
            continue
        codes, scales, bias = folded
        dq = graph.node[dq_at]
        names = [unique_name(taken, f"{conv.output[0]}_bn_{part}") for part in ("codes", "scale", "bias")]
        for name, value in zip(names, (codes, scales, bias), strict=True):
            graph.initializer.append(numpy_helper.from_array(value, name))
        dq.input[0], dq.input[1] = names[0], names[1]
        if len(conv.input) > 2:
            conv.input[2] = names[2]
        else:
            conv.input.append(names[2])
        conv.output[0] = bn.output[0]
        dropped.add(i)
    if dropped:
        kept = [node for i, node in enumerate(graph.node) if i not in dropped]
        del graph.node[:]
        graph.node.extend(kept)
        cleanup(graph)
    return out


def _folded(
    dq: onnx.NodeProto,
    conv: onnx.NodeProto,
    bn: onnx.NodeProto,
    inits: dict[str, onnx.TensorProto],
    constants: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The Conv's new codes, scales and bias with ``bn`` (a BatchNormalization or an Add) folded in, or
    None where it cannot be."""
    if bn.op_type == "Add":
        return _added(dq, conv, bn, inits, constants)
    params = bn.input[1:5]
    if (
        len(params) != 4
        or not all(name in constants for name in params)
        or not all(n in inits for n in dq.input[:2])
    ):
        return None
    if any(a.name == "training_mode" and a.i for a in bn.attribute):
        return None
    zero_point = dq.input[2] if len(dq.input) > 2 else ""
    if zero_point and (zero_point not in inits or np.any(numpy_helper.to_array(inits[zero_point]) != 0)):
        return None
    codes = numpy_helper.to_array(inits[dq.input[0]])
    scales = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    channels = codes.shape[0] if codes.ndim else 0
    if codes.dtype != np.int8 or axis != 0 or scales.shape != (channels,) or codes.min(initial=0) < -127:
        return None
    gamma, beta, mean, var = (constants[name].astype(np.float64) for name in params)
    if any(p.shape != (channels,) for p in (gamma, beta, mean, var)):
        return None
    eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
    a = gamma / np.sqrt(var + eps)
    if not np.all(np.isfinite(a)) or np.any(a == 0):
        return None
    bias = np.zeros(channels)
    if len(conv.input) > 2 and conv.input[2]:
        if conv.input[2] not in constants:
            return None
        bias = constants[conv.input[2]].astype(np.float64)
    sign = np.where(a < 0, -1, 1).astype(np.int8).reshape((-1,) + (1,) * (codes.ndim - 1))
    new_codes = (codes * sign).astype(np.int8)
    new_scales = (np.abs(a) * scales).astype(np.float32)
    new_bias = (a * bias + beta - a * mean).astype(np.float32)
    return new_codes, new_scales, new_bias


def _added(
    dq: onnx.NodeProto,
    conv: onnx.NodeProto,
    add: onnx.NodeProto,
    inits: dict[str, onnx.TensorProto],
    constants: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The Conv's codes, scales and its bias plus the Add's per-channel constant, or None."""
    if not all(n in inits for n in dq.input[:2]):
        return None
    codes = numpy_helper.to_array(inits[dq.input[0]])
    scales = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
    c = next((constants[x] for x in add.input if x in constants), None)
    channels = codes.shape[0] if codes.ndim else 0
    spatial = codes.ndim - 2
    shapes = {(channels,) + (1,) * spatial, (1, channels) + (1,) * spatial}
    if c is None or c.dtype != np.float32 or c.shape not in shapes:
        return None
    bias = np.zeros(channels, np.float32)
    if len(conv.input) > 2 and conv.input[2]:
        if conv.input[2] not in constants:
            return None
        bias = constants[conv.input[2]].astype(np.float32)
    return codes, scales, (bias + c.reshape(-1)).astype(np.float32)
