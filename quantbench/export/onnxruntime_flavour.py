"""ONNX Runtime's flavour of a Q/DQ model: the same quantized values, in a shape its CPU kernels fuse.

ONNX Runtime turns ``DequantizeLinear -> Conv -> QuantizeLinear`` into one integer QLinearConv (likewise
Gemm, MatMul, Add) but leaves a Conv whose output is not quantized, and any DequantizeLinear ->
Relu/Clip -> QuantizeLinear, in float. TensorRT's placement quantizes a convolution's *input* only,
so run as it is, the model is slower than FP32. This module reshapes it without changing what it
computes:

0. A BatchNormalization or per-channel constant Add behind a quantized Conv is folded into its weight
   scales and bias (:mod:`quantbench.export.conv_fold`; the codes stay), which ONNX Runtime does only
   for float convolutions.
1. Activations become uint8 with zero point 128 instead of int8 with zero point 0. Both store
   ``clamp(round(x / scale), -128, 127)``: the same grid, the integer shifted by 128. ONNX Runtime's
   x86 integer kernels are built for uint8 activations with int8 weights. (Any int8 zero point ``z``
   becomes ``z + 128``: the fast flavour's one-sided tensors have ``z = -128``, uint8 zero point 0.)
2. A Conv/Gemm/MatMul followed by Relu or Clip whose output is quantized gets that output's
   quantization moved before the activation, and the activation becomes an integer Clip on the
   quantized values. Rounding is monotonic, so ``round(clip(y, lo, hi) / s)`` equals
   ``clip(round(y / s), round(lo / s), round(hi / s))``: the stored integers are the same. Where the
   grid's own saturation already clips at those codes, no Clip is needed and none is written. A Min of
   one bound per channel before the activation (cross-layer equalization's ``Relu(Min(y, 6 / s_c))``)
   becomes an integer Min on the codes the same way: ``round(min(y, b) / s) = min(round(y / s),
   round(b / s))``.
3. The float bias of a quantized Conv/Gemm becomes int32 at scale ``s_x * s_w`` (the accumulator's
   own step), which ONNX Runtime's fusion requires; it moves the bias by at most half a step of the
   int32 accumulator. A channel whose weights are all but zero (``s_w`` ~ 1e-11, common after batch
   norm folding) would need a bias beyond int32; left as float, ONNX Runtime's optimizer quantizes it
   itself and overflows, and that channel's output is wrong (a float-weight Conv before a
   QuantizeLinear is no way out: the optimizer quantizes its weights per tensor and fuses it all the
   same). Such a channel gets a weight scale just large enough for its bias, its codes re-rounded
   (mostly to 0). That moves the channel's output by at most ``128 s_x sum |w - w'|``, far below one
   output step for such weights; where the bound reaches 1/1000 of a step, a note says so.

4. A quantized Conv that still cannot fuse (its output feeds an Add that TensorRT fuses into it, or
   a float op) reads a constant holding its dequantized weights instead of dequantizing every run.

What stays in float is what the TensorRT graph keeps in float too: such a convolution, computed from
the dequantized input exactly as the Q/DQ graph says, and every op outside the quantized set.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantbench.export.conv_fold import fold_into_convs
from quantbench.export.qdq import QdqNames, dequantize_weight
from quantbench.graph import (
    cleanup,
    constant_values,
    initializers,
    reader_nodes,
    set_initializer,
)

ZERO_POINT = 128
BIAS_LIMIT = 2**30
"""Largest int32 bias: half the int32 range, the other half for the products the kernel adds to it."""
NOTE_CHANGE = 1e-3
"""Output change, in output quantization steps, from re-scaling a channel for its bias that gets a note."""


def to_onnxruntime_flavour(
    model: onnx.ModelProto, names: dict[str, QdqNames], notes: list[str] | None = None
) -> onnx.ModelProto:
    """Reshape a TensorRT-flavour Q/DQ model (from :func:`quantbench.export.qdq.build_qdq`) for ONNX Runtime.

    Args:
        model: the TensorRT-flavour model; not modified.
        names: tensor -> Q/DQ names, as returned with it.
        notes: receives a line for every place where the flavour's values may differ from the model's
            by more than float rounding (step 3 of the module docstring).

    Returns:
        A new model with the same quantized values (see the module docstring).
    """
    out = fold_into_convs(model)
    graph = out.graph
    _integer_activations(graph, names)
    _float_weights(graph)
    _int32_bias(graph, names, notes if notes is not None else [])
    inits = initializers(graph)
    for qn in names.values():  # last: the steps above read the int8 zero points
        if qn.zero_point in inits:
            shifted = int(numpy_helper.to_array(inits[qn.zero_point])) + ZERO_POINT
            set_initializer(graph, qn.zero_point, np.array(shifted, np.uint8))
    return out


def _clip_codes(
    inits: dict[str, onnx.TensorProto], qn: QdqNames, bounds: tuple[float, float]
) -> tuple[int, int] | None:
    """A Clip's bounds as uint8 codes of ``qn``'s grid (its int8 zero point applied, then shifted by
    128); None where they clip nothing the grid holds (the Clip can go)."""
    scale = np.float32(numpy_helper.to_array(inits[qn.scale]))
    zero = int(numpy_helper.to_array(inits[qn.zero_point]))
    lo, hi = (int(np.clip(np.rint(np.float32(b) / scale) + zero, -128, 127)) for b in bounds)
    return None if (lo, hi) == (-128, 127) else (ZERO_POINT + lo, ZERO_POINT + hi)


def clip_bounds(constants: dict[str, np.ndarray], node: onnx.NodeProto) -> tuple[float, float] | None:
    """A Relu's or Clip's bounds (infinite where open); None where a bound is not a known constant."""
    if node.op_type == "Relu":
        return 0.0, float("inf")
    lo, hi = -float("inf"), float("inf")
    for attr in node.attribute:  # opset < 11
        if attr.name == "min":
            lo = attr.f
        elif attr.name == "max":
            hi = attr.f
    for k, name in enumerate(node.input[1:3]):
        if not name:
            continue
        value = constants.get(name)
        if value is None or value.size != 1:
            return None
        if k == 0:
            lo = float(value.reshape(()))
        else:
            hi = float(value.reshape(()))
    return lo, hi


def _feeds_one_quantize(graph: onnx.GraphProto, users: dict[str, list[int]], name: str) -> bool:
    """True when ``name``'s only reader is a QuantizeLinear: ONNX Runtime fuses its producer."""
    readers = users.get(name, [])
    return len(readers) == 1 and graph.node[readers[0]].op_type == "QuantizeLinear"


def _dequantizers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Output tensor -> the DequantizeLinear node that writes it."""
    return {node.output[0]: node for node in graph.node if node.op_type == "DequantizeLinear"}


def _rebuild(graph: onnx.GraphProto, replaced: dict[int, list[onnx.NodeProto]]) -> None:
    """Replace node i by ``replaced[i]`` (an empty list drops it); nodes (a weight's DequantizeLinear,
    a float bias's Constant) and initializers nothing reads any more go too
    (:func:`quantbench.graph.cleanup`)."""
    nodes = []
    for i, node in enumerate(graph.node):
        nodes.extend(replaced.get(i, [node]))
    del graph.node[:]
    graph.node.extend(nodes)
    cleanup(graph)


def _integer_activations(graph: onnx.GraphProto, names: dict[str, QdqNames]) -> None:
    """Step 2 of the module docstring."""
    outputs = {o.name for o in graph.output}
    consumers = reader_nodes(graph)
    inits = initializers(graph)
    constants = constant_values(graph)
    replaced: dict[int, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        y = node.output[0]
        chain = activation_chain(graph, consumers, constants, outputs, y)
        if chain is None:
            continue
        act = graph.node[chain[-1]]
        z = act.output[0]
        bounds = clip_bounds(constants, act)
        z_users = consumers.get(z, [])
        if bounds is None or z not in names or z in outputs or len(z_users) != 1:
            continue
        qn = names[z]
        z_quantize = graph.node[z_users[0]]
        if z_quantize.op_type != "QuantizeLinear" or z_quantize.output[0] != qn.quantized:
            continue
        new = [helper.make_node("QuantizeLinear", [y, qn.scale, qn.zero_point], [f"{y}_quantized"], f"{y}_Q")]
        if len(chain) == 2:  # Min(y, bound per channel) first: Q(min(y, b)) = min(Q(y), Q(b))
            min_codes = _min_codes(inits, qn, constants[graph.node[chain[0]].input[1]])
            if min_codes.min() < 255:  # else every bound lies at or beyond the grid's top: no Min to run
                new.append(_integer_min(graph, z, min_codes, f"{y}_quantized", f"{y}_min"))
        codes = _clip_codes(inits, qn, bounds)
        if codes is not None:  # else the grid's own saturation clips
            new.append(_integer_clip(graph, z, codes, new[-1].output[0], qn.quantized))
        new[-1].output[0] = qn.quantized  # the last node now writes z's quantized values
        replaced[chain[0]] = new
        for index in [*chain[1:], z_users[0]]:
            replaced[index] = []
    _clips_between_quantized(graph, names, constants, consumers, replaced)
    _rebuild(graph, replaced)


def activation_chain(
    graph: onnx.GraphProto,
    consumers: dict[str, list[int]],
    constants: dict[str, np.ndarray],
    outputs: set[str],
    y: str,
) -> list[int] | None:
    """The node indices from ``y``'s only reader to the Relu or Clip of step 2: that node alone, or a
    ``Min`` of ``y`` and a constant with one bound per channel (what cross-layer equalization writes for
    ``Clip(x, 0, 6)``, :mod:`quantbench.export.equalize`) and the Relu or Clip reading it; None where
    ``y`` does not go on so."""
    chain: list[int] = []
    name = y
    while True:
        users = consumers.get(name, [])
        if name in outputs or len(users) != 1:
            return None
        node = graph.node[users[0]]
        if node.op_type in ("Relu", "Clip"):
            return [*chain, users[0]]
        bound = constants.get(node.input[1]) if node.op_type == "Min" and len(node.input) == 2 else None
        if chain or node.input[0] != name or bound is None or bound.dtype != np.float32:
            return None
        chain.append(users[0])
        name = node.output[0]


def _min_codes(inits: dict[str, onnx.TensorProto], qn: QdqNames, bound: np.ndarray) -> np.ndarray:
    """A Min's constant bound as uint8 codes of ``qn``'s grid (its int8 zero point applied, then shifted by
    128), its shape kept."""
    scale = np.float32(numpy_helper.to_array(inits[qn.scale]))
    zero = int(numpy_helper.to_array(inits[qn.zero_point]))
    codes = np.clip(np.rint(bound.astype(np.float32) / scale) + zero, -128, 127) + ZERO_POINT
    return codes.astype(np.uint8)


def _integer_min(
    graph: onnx.GraphProto, z: str, codes: np.ndarray, source: str, target: str
) -> onnx.NodeProto:
    """A Min of the uint8 codes ``source`` and ``codes`` (an initializer named after the activation's output
    ``z``), writing ``target``."""
    graph.initializer.append(numpy_helper.from_array(codes, f"{z}_min_codes"))
    return helper.make_node("Min", [source, f"{z}_min_codes"], [target], f"{z}_integer_min")


def _integer_clip(
    graph: onnx.GraphProto, z: str, codes: tuple[int, int], source: str, target: str
) -> onnx.NodeProto:
    """A Clip of the uint8 codes ``source`` to ``codes`` (its bounds become initializers named after the
    activation's output ``z``), writing ``target``."""
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(codes[0], np.uint8), f"{z}_clip_min"),
            numpy_helper.from_array(np.array(codes[1], np.uint8), f"{z}_clip_max"),
        ]
    )
    return helper.make_node("Clip", [source, f"{z}_clip_min", f"{z}_clip_max"], [target], f"{z}_integer_clip")


def _clips_between_quantized(
    graph: onnx.GraphProto,
    names: dict[str, QdqNames],
    constants: dict[str, np.ndarray],
    consumers: dict[str, list[int]],
    replaced: dict[int, list[onnx.NodeProto]],
) -> None:
    """Step 2 where the activation reads a dequantized tensor and its output's only reader quantizes
    it at the same scale (the fast flavour writes such pairs): an integer Clip on the input's codes."""
    inits = initializers(graph)
    by_dequantized = {qn.dequantized: (tensor, qn) for tensor, qn in names.items()}
    for i, act in enumerate(graph.node):
        if act.op_type not in ("Relu", "Clip") or act.input[0] not in by_dequantized or i in replaced:
            continue
        _, xn = by_dequantized[act.input[0]]
        z = act.output[0]
        z_users = consumers.get(z, [])
        if z not in names or len(z_users) != 1 or z_users[0] in replaced:
            continue
        zn, z_quantize = names[z], graph.node[z_users[0]]
        if z_quantize.op_type != "QuantizeLinear" or z_quantize.output[0] != zn.quantized:
            continue
        bounds = clip_bounds(constants, act)
        grid = [
            (float(numpy_helper.to_array(inits[q.scale])), int(numpy_helper.to_array(inits[q.zero_point])))
            for q in (xn, zn)
        ]
        if bounds is None or grid[0] != grid[1]:
            continue
        codes = _clip_codes(inits, zn, bounds) or (0, 255)
        replaced[i] = [_integer_clip(graph, z, codes, xn.quantized, zn.quantized)]
        replaced[z_users[0]] = []


def _int32_bias(graph: onnx.GraphProto, names: dict[str, QdqNames], notes: list[str]) -> None:
    """Step 3 of the module docstring."""
    consumers = reader_nodes(graph)
    inits = initializers(graph)
    by_dequantized = {qn.dequantized: qn for qn in names.values()}
    dq_of = _dequantizers(graph)
    replaced: dict[int, list[onnx.NodeProto]] = {}
    for i, node in enumerate(graph.node):
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or not node.input[2]:
            continue
        x, w, b = node.input[0], node.input[1], node.input[2]
        if x not in by_dequantized or w not in dq_of or b not in inits:
            continue
        if node.op_type == "Conv" and not _feeds_one_quantize(graph, consumers, node.output[0]):
            continue  # runs in float: keeps its float bias
        bias = numpy_helper.to_array(inits[b]).astype(np.float32)
        s_x = np.float32(numpy_helper.to_array(inits[by_dequantized[x].scale]))
        s_w = numpy_helper.to_array(inits[dq_of[w].input[1]]).astype(np.float32)
        if bias.ndim != 1 or s_w.shape not in ((bias.shape[0],), ()):
            continue
        step = (s_x * s_w * np.ones_like(bias)).astype(np.float32)
        q = np.rint(bias.astype(np.float64) / step)
        if np.abs(q).max(initial=0) > BIAS_LIMIT:
            x_zero = int(numpy_helper.to_array(inits[by_dequantized[x].zero_point]))
            peak = float(s_x) * max(128 + x_zero, 127 - x_zero)
            moved = _rescale_for_bias(graph, inits, consumers, dq_of[w], bias, s_x, peak)
            output_scale = _output_scale(graph, consumers, inits, node)
            where = f"{node.name or node.output[0]} ({node.op_type})"
            if moved is None:
                notes.append(f"{where}: a bias beyond int32 at the accumulator step, on shared weights")
                continue
            if output_scale is not None and moved >= NOTE_CHANGE * output_scale:
                notes.append(
                    f"{where}: weights of channels with a bias beyond int32 re-quantized; outputs may move "
                    f"by up to {moved / output_scale:.3g} quantization steps"
                )
            s_w = numpy_helper.to_array(inits[dq_of[w].input[1]]).astype(np.float32)
            step = (s_x * s_w * np.ones_like(bias)).astype(np.float32)
            q = np.rint(bias.astype(np.float64) / step)
        base = f"{b}_{node.output[0]}"
        graph.initializer.extend(
            [
                numpy_helper.from_array(q.astype(np.int32), f"{base}_int32"),
                numpy_helper.from_array(step, f"{base}_scale"),
                numpy_helper.from_array(np.zeros(step.shape, np.int32), f"{base}_zero_point"),
            ]
        )
        dq = helper.make_node(
            "DequantizeLinear",
            [f"{base}_int32", f"{base}_scale", f"{base}_zero_point"],
            [f"{base}_dequantized"],
            f"{base}_DQ",
            axis=0,
        )
        fused = onnx.NodeProto()
        fused.CopyFrom(node)
        fused.input[2] = dq.output[0]
        replaced[i] = [dq, fused]
    _rebuild(graph, replaced)


def _output_scale(
    graph: onnx.GraphProto,
    consumers: dict[str, list[int]],
    inits: dict[str, onnx.TensorProto],
    node: onnx.NodeProto,
) -> float | None:
    """The scale of the QuantizeLinear that reads ``node``'s output, when it has exactly one."""
    readers = consumers.get(node.output[0], [])
    if len(readers) != 1 or graph.node[readers[0]].op_type != "QuantizeLinear":
        return None
    scale = inits.get(graph.node[readers[0]].input[1])
    return float(numpy_helper.to_array(scale)) if scale is not None else None


def _rescale_for_bias(
    graph: onnx.GraphProto,
    inits: dict[str, onnx.TensorProto],
    consumers: dict[str, list[int]],
    weight_dq: onnx.NodeProto,
    bias: np.ndarray,
    s_x: np.float32,
    x_peak: float,
) -> float | None:
    """Raise the weight scale of the channels whose int32 bias would overflow (step 3); ``x_peak`` is the
    largest |x| the input's grid holds.

    Returns:
        The most any output of the node can move, or None (nothing changed) when the weights are
        shared with another node or not per output channel.
    """
    if len(consumers.get(weight_dq.output[0], [])) != 1 or not all(n in inits for n in weight_dq.input):
        return None
    codes = numpy_helper.to_array(inits[weight_dq.input[0]])
    scales = numpy_helper.to_array(inits[weight_dq.input[1]]).astype(np.float32)
    axis = next((a.i for a in weight_dq.attribute if a.name == "axis"), 1)
    if codes.ndim < 2 or scales.shape != bias.shape or codes.shape[axis] != bias.shape[0]:
        return None
    needed = (np.abs(bias.astype(np.float64)) / (float(s_x) * BIAS_LIMIT)).astype(np.float32)
    new_scales = np.maximum(scales, np.nextafter(needed, np.float32(np.inf)))
    flat = np.moveaxis(codes, axis, 0).reshape(codes.shape[axis], -1).astype(np.float64)
    new_codes = np.clip(np.rint(flat * scales[:, None] / new_scales[:, None]), -127, 127)
    # |x| <= x_peak on the input's grid: the most any channel's output can move
    moved = x_peak * np.abs(flat * scales[:, None] - new_codes * new_scales[:, None]).sum(axis=1)
    shape = np.moveaxis(codes, axis, 0).shape
    set_initializer(graph, weight_dq.input[0], np.moveaxis(new_codes.reshape(shape), 0, axis).astype(np.int8))
    set_initializer(graph, weight_dq.input[1], new_scales)
    return float(moved.max(initial=0))


def _float_weight(graph: onnx.GraphProto, inits: dict[str, onnx.TensorProto], dq: onnx.NodeProto) -> str:
    """A constant holding ``dq``'s dequantized weights (``int8 * scale``); returns its name."""
    name = f"{dq.output[0]}_constant"
    if name not in inits:
        q, scale = (numpy_helper.to_array(inits[n]) for n in dq.input[:2])
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        graph.initializer.append(numpy_helper.from_array(dequantize_weight(q, scale, axis), name))
    return name


def _float_weights(graph: onnx.GraphProto) -> None:
    """Step 4: a quantized Conv that ONNX Runtime cannot fuse reads its dequantized weights as a constant.

    Its output feeds something other than one QuantizeLinear, so it runs in float on the dequantized
    input; a constant holding ``int8 * scale`` (the values DequantizeLinear would compute each run)
    saves the per-run dequantization.
    """
    consumers = reader_nodes(graph)
    inits = initializers(graph)
    dq_of = _dequantizers(graph)
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or node.input[1] not in dq_of:
            continue
        if _feeds_one_quantize(graph, consumers, node.output[0]):
            continue
        dq = dq_of[node.input[1]]
        if all(name in inits for name in dq.input):
            node.input[1] = _float_weight(graph, inits, dq)
    _rebuild(graph, {})
