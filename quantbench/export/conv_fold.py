"""Per-channel affine nodes folded into the quantized convolution before them, without touching a weight
code.

A BatchNormalization reading a Conv's output computes ``a * y + b`` per channel, with
``a = gamma / sqrt(var + eps)`` and ``b = beta - a * mean``; a Mul by a constant with one value per
channel (or one for all) is ``a * y``, an Add of one is ``y + b`` (exporters write batch normalization,
biases and the branch weights of reparameterizable blocks so).
Where the Conv's weights are int8 codes times a per-output-channel scale ``s``,
``a * conv(x, codes * s) = conv(x, codes * (a * s))``: the fold gives the channel the scale ``|a| * s``
(negating its codes where ``a < 0``, which the symmetric grid allows) and the bias ``a * bias + b``. The
codes stay the ones judged; what changes is float rounding.

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

AFFINE_OPS = ("BatchNormalization", "Mul", "Add")
"""Nodes that fold into the quantized Conv before them when they are per-channel affine maps."""


def fold_into_convs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every foldable node of :data:`AFFINE_OPS` folded into its quantized Conv,
    chains of them (a Mul then an Add) one after the other.

    Foldable: the Conv's output read by that node alone and not a model output, the Conv's weight a
    DequantizeLinear of int8 codes (zero point 0) with one scale per output channel (axis 0) that no
    other node reads, its bias (if any) a constant; a BatchNormalization in inference mode with
    constant parameters; a Mul or Add whose other input is a constant of one value per channel (shape
    ``[C, 1, 1]`` or ``[1, C, 1, 1]`` for a 2-D Conv) or one value for all, none of its factors zero.

    Args:
        model: a Q/DQ model; not modified.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if not any(node.op_type in AFFINE_OPS for node in out.graph.node):
        return out
    constants = constant_values(out.graph)
    operands = {x for node in out.graph.node if node.op_type in ("Add", "Mul") for x in node.input}
    computed = sorted((constant_tensors(out.graph) - set(constants)) & operands)  # computed by nodes
    constants.update(evaluate_constants(out, computed) if computed else {})
    while _fold_once(out.graph, constants):
        pass
    return out


def _fold_once(graph: onnx.GraphProto, constants: dict[str, np.ndarray]) -> bool:
    """Fold every node whose Conv is found now (a chain's next node waits for the next pass)."""
    inits = initializers(graph)
    writer = producers(graph)
    uses = consumers(graph)
    outputs = {o.name for o in graph.output}
    taken = tensor_names(graph)
    dropped: set[int] = set()
    for i, node in enumerate(graph.node):
        if node.op_type not in AFFINE_OPS or len(node.output) != 1:
            continue
        y = next((x for x in node.input if x in writer and x not in constants), None)
        conv_at = writer.get(y) if y is not None else None
        if conv_at is None or conv_at in dropped or y in outputs or len(uses.get(y or "", [])) != 1:
            continue
        conv = graph.node[conv_at]
        dq_at = writer.get(conv.input[1]) if conv.op_type == "Conv" else None
        if dq_at is None or graph.node[dq_at].op_type != "DequantizeLinear" or len(uses[conv.input[1]]) != 1:
            continue
        weights = _weights(graph.node[dq_at], inits)
        if weights is None:
            continue
        channels, spatial = weights[0].shape[0], weights[0].ndim - 2
        bias = _bias(conv, constants, channels)
        affine = channel_affine(node, constants, channels, spatial)
        if bias is None or affine is None:
            continue
        (codes, scales), (a, b) = weights, affine
        sign = np.where(a < 0, -1, 1).astype(np.int8).reshape((-1,) + (1,) * (codes.ndim - 1))
        folded = (
            (codes * sign).astype(np.int8),
            (np.abs(a) * scales).astype(np.float32),
            (a * bias + b).astype(np.float32),
        )
        names = [unique_name(taken, f"{conv.output[0]}_folded_{part}") for part in ("codes", "scale", "bias")]
        for name, value in zip(names, folded, strict=True):
            graph.initializer.append(numpy_helper.from_array(value, name))
            constants[name] = value
        dq = graph.node[dq_at]
        dq.input[0], dq.input[1] = names[0], names[1]
        if len(conv.input) > 2:
            conv.input[2] = names[2]
        else:
            conv.input.append(names[2])
        conv.output[0] = node.output[0]
        dropped.add(i)
    if dropped:
        kept = [node for i, node in enumerate(graph.node) if i not in dropped]
        del graph.node[:]
        graph.node.extend(kept)
        cleanup(graph)
    return bool(dropped)


def _weights(dq: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> tuple[np.ndarray, np.ndarray] | None:
    """A Conv weight's int8 codes and per-output-channel scales, or None where they are not such."""
    if not all(n in inits for n in dq.input[:2]):
        return None
    zero_point = dq.input[2] if len(dq.input) > 2 else ""
    if zero_point and (zero_point not in inits or np.any(numpy_helper.to_array(inits[zero_point]) != 0)):
        return None
    codes = numpy_helper.to_array(inits[dq.input[0]])
    scales = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if codes.dtype != np.int8 or codes.ndim < 3 or axis != 0 or scales.shape != (codes.shape[0],):
        return None
    if codes.min(initial=0) < -127:  # -128 has no positive twin to flip to
        return None
    return codes, scales


def _bias(conv: onnx.NodeProto, constants: dict[str, np.ndarray], channels: int) -> np.ndarray | None:
    """The Conv's bias in float64 (zeros without one), or None where it is not a constant."""
    if len(conv.input) < 3 or not conv.input[2]:
        return np.zeros(channels)
    value = constants.get(conv.input[2])
    return None if value is None or value.shape != (channels,) else value.astype(np.float64)


def channel_vector(value: np.ndarray, channels: int, spatial: int) -> np.ndarray | None:
    """``value`` as one float64 value per channel, where it is a float32 constant that broadcasts against
    a Conv output of ``spatial`` spatial dims as one value per channel (shape ``[C, 1, ...]`` or
    ``[1, C, 1, ...]``) or as one value for all; else None."""
    shapes = {(channels,) + (1,) * spatial, (1, channels) + (1,) * spatial}
    one = value.size == 1 and value.ndim <= spatial + 2  # the same for every channel
    if value.dtype != np.float32 or not (value.shape in shapes or one):
        return None
    return np.broadcast_to(value.reshape(-1).astype(np.float64), (channels,))


def channel_affine(
    node: onnx.NodeProto, constants: dict[str, np.ndarray], channels: int, spatial: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(a, b)`` of the per-channel map ``a * y + b`` that ``node`` (of :data:`AFFINE_OPS`) computes on the
    output of a Conv with ``channels`` outputs and ``spatial`` spatial dims, or None (not such a map, a
    factor of 0, or a value that is not finite)."""
    if node.op_type == "BatchNormalization":
        params = node.input[1:5]
        if len(params) != 4 or not all(name in constants for name in params):
            return None
        if any(a.name == "training_mode" and a.i for a in node.attribute):
            return None
        gamma, beta, mean, var = (constants[name].astype(np.float64) for name in params)
        if any(p.shape != (channels,) for p in (gamma, beta, mean, var)):
            return None
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        a = gamma / np.sqrt(var + eps)
        b = beta - a * mean
    else:
        c = next((constants[x] for x in node.input if x in constants), None)
        c = channel_vector(c, channels, spatial) if c is not None else None
        if c is None:
            return None
        a, b = (c, np.zeros(channels)) if node.op_type == "Mul" else (np.ones(channels), c)
    if not np.all(np.isfinite(a)) or not np.all(np.isfinite(b)) or np.any(a == 0):
        return None
    return a, b
