"""Q/DQ INT8 models from dynamic ranges, placed the way TensorRT wants them.

Placement (TensorRT's explicit-quantization recommendations):

* the activation inputs of Conv, ConvTranspose, Gemm and MatMul get a QuantizeLinear ->
  DequantizeLinear pair (per-tensor, symmetric: scale = amax / 127, zero point 0);
* their weights become per-channel symmetric int8 initializers followed by a DequantizeLinear, on
  the output-channel axis (Conv 0, ConvTranspose 1, Gemm 0 or 1 by ``transB``, MatMul the last);
  one set per weight and axis, shared by the nodes that read it;
* an Add fed by a quantized Conv (its only consumer) also quantizes its other, residual input, so
  TensorRT can fuse the Add into the convolution;
* one Q/DQ pair per tensor, shared by every consumer that quantizes it; model outputs stay float;
* a node whose activation input has no range, or that ``exclude`` names, stays entirely in float.

Tensors computed from constants alone (initializers, Constant nodes and any chain of nodes reading
only those: :func:`quantbench.graph.constant_tensors`) are never activations and never get a Q/DQ
pair. As the second input of a Conv, ConvTranspose, Gemm or MatMul, a float32 one of two dimensions or
more is that node's weight: quantized as above, its value evaluated first when nodes compute it. Any
other stays in float: a bias, a constant operand of an Add (no residual fusion then), a weight of
another type or shape or that cannot be evaluated (its node stays float), a constant first input (its
node stays float).

The built model holds nothing it does not read (:func:`quantbench.graph.cleanup`): the float originals
of the quantized weights go, with the Constant nodes and nodes that only computed them.

The TensorRT flavour is this graph with int8 activations. ONNX Runtime's flavour
(:mod:`quantbench.export.onnxruntime_flavour`) reshapes it to run fast on the CPU with the same
quantized values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantbench.errors import QuantbenchError
from quantbench.graph import (
    cleanup,
    constant_tensors,
    constant_values,
    consumers,
    evaluate_constants,
    opset_version,
    producers,
    tensor_names,
    unique_name,
)

QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
"""Ops whose activation inputs (and weights) are quantized."""

MIN_OPSET = 13
"""Per-axis DequantizeLinear needs opset 13."""


@dataclass
class QdqPlan:
    """Where the Q/DQ nodes go.

    Attributes:
        activations: tensor -> the (node index, input index) uses that read it quantized, graph order.
        weights: (node index, input index, channel axis) of every weight quantized per channel.
        quantized_nodes: indices of the Conv/Gemm/MatMul nodes that run in INT8.
        residual_adds: indices of Add nodes whose residual input is quantized for fusion.
        missing: tensors that would be quantized but have no range (their consumers stay float).
        excluded: labels of the nodes kept in float by ``exclude``.
        folded: weight -> its value, for the weights of ``weights`` that nodes compute from constants
            (the others are initializers or Constant nodes).
    """

    activations: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    weights: list[tuple[int, int, int]] = field(default_factory=list)
    folded: dict[str, np.ndarray] = field(default_factory=dict)
    quantized_nodes: list[int] = field(default_factory=list)
    residual_adds: list[int] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)


def node_label(node: onnx.NodeProto, index: int) -> str:
    """A readable name for a node: its name, else ``<op type>:<first output>``, else ``<op>#<index>``."""
    if node.name:
        return node.name
    if node.output and node.output[0]:
        return f"{node.op_type}:{node.output[0]}"
    return f"{node.op_type}#{index}"


def match_excluded(graph: onnx.GraphProto, patterns: Iterable[str], source: str = "the model") -> set[int]:
    """Indices of the nodes named by ``patterns``.

    A pattern matches a node whose name, op type, label (:func:`node_label`, as results list nodes) or
    an output tensor equals it, or, failing any exact match in the graph, whose name or an output
    tensor it matches as a whole regular expression.

    Raises:
        QuantbenchError: a pattern is not a valid regular expression or matches no node.
    """
    matched: set[int] = set()
    for pattern in patterns:
        exact = {
            i
            for i, node in enumerate(graph.node)
            if pattern in (node.name, node.op_type, node_label(node, i)) or pattern in node.output
        }
        if not exact:
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise QuantbenchError(
                    f"--exclude {pattern!r} is not a valid regular expression: {exc}"
                ) from None
            exact = {
                i
                for i, node in enumerate(graph.node)
                if any(regex.fullmatch(text) for text in [node.name, *node.output] if text)
            }
        if not exact:
            raise QuantbenchError(
                f"--exclude '{pattern}' matches no node name, op type or output tensor of {source}"
            )
        matched |= exact
    return matched


def _weight_axis(node: onnx.NodeProto, input_index: int, ndim: int) -> int:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return ndim - 1  # MatMul: output features are the last axis of B


def _weight_value(
    model: onnx.ModelProto, name: str, constants: Mapping[str, np.ndarray], folded: dict[str, np.ndarray]
) -> np.ndarray | None:
    """The value of ``name``, a tensor of :func:`quantbench.graph.constant_tensors`, when it can be a
    quantized weight (float32, two dimensions or more), else None.

    A value computed by nodes is evaluated (:func:`quantbench.graph.evaluate_constants`) and kept in
    ``folded``; one the evaluator cannot compute is None.
    """
    value = constants.get(name, folded.get(name))
    if value is None:
        value = evaluate_constants(model, [name]).get(name)
        if value is not None:
            folded[name] = value
    if value is None or value.dtype != np.float32 or value.ndim < 2:
        return None
    return value


def plan_qdq(model: onnx.ModelProto, amax: Mapping[str, float], exclude: Iterable[str] = ()) -> QdqPlan:
    """Decide which tensors and weights get Q/DQ (see the module docstring).

    Args:
        model: the FP32 model.
        amax: tensor name -> calibrated amax.
        exclude: node names, op types or regular expressions of nodes to keep in float.

    Raises:
        QuantbenchError: a bad ``exclude`` pattern, or an opset below 13 that cannot be converted.
    """
    source = at_least_opset13(model)
    graph = source.graph
    constants = constant_values(graph)
    fixed = constant_tensors(graph)
    uses = consumers(graph)
    producer = producers(graph)
    excluded = match_excluded(graph, exclude)
    plan = QdqPlan(excluded=[node_label(graph.node[i], i) for i in sorted(excluded)])
    missing: dict[str, None] = {}

    def has_range(name: str) -> bool:
        value = amax.get(name)
        if value is not None and np.isfinite(value) and value > 0:
            return True
        missing[name] = None
        return False

    def quantize_use(name: str, use: tuple[int, int]) -> None:
        plan.activations.setdefault(name, []).append(use)

    for i, node in enumerate(graph.node):
        if node.op_type not in QUANTIZED_OPS or i in excluded or len(node.input) < 2:
            continue
        a, b = node.input[0], node.input[1]
        if a in fixed or not has_range(a):
            continue
        weight = _weight_value(source, b, constants, plan.folded) if b in fixed else None
        if weight is None and (b in fixed or not (node.op_type == "MatMul" and has_range(b))):
            continue
        quantize_use(a, (i, 0))
        if weight is not None:
            plan.weights.append((i, 1, _weight_axis(node, 1, weight.ndim)))
        else:
            quantize_use(b, (i, 1))
        plan.quantized_nodes.append(i)

    quantized = set(plan.quantized_nodes)
    for i, node in enumerate(graph.node):
        if node.op_type != "Add" or i in excluded or len(node.input) != 2:
            continue
        fusable = [
            j
            for j, name in enumerate(node.input)
            if producer.get(name) in quantized
            and graph.node[producer[name]].op_type == "Conv"
            and len(uses.get(name, [])) == 1
        ]
        if not fusable:
            continue
        conv_side = max(fusable, key=lambda j: producer[node.input[j]])  # the later conv fuses
        residual = node.input[1 - conv_side]
        if residual in fixed or not has_range(residual):
            continue
        quantize_use(residual, (i, 1 - conv_side))
        plan.residual_adds.append(i)

    plan.missing = [name for name in missing if name not in plan.activations]
    return plan


def quantize_weight(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8: returns (int8 values, float32 scales along ``axis``).

    scale = max |w| of the channel / 127 (1.0 for an all-zero channel); values round half to even.
    """
    moved = np.moveaxis(weight.astype(np.float32), axis, 0)
    peaks = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1) if moved.size else np.zeros(0)
    scales = np.where(peaks > 0, peaks / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    q = np.clip(np.rint(weight / scales.reshape(shape)), -127, 127).astype(np.int8)
    return q, scales


def fake_quantize(values: np.ndarray, amax: float, out: np.ndarray | None = None) -> np.ndarray:
    """Symmetric int8 quantize-dequantize as an activation's Q/DQ pair computes it (scale ``amax / 127``,
    float32, round half to even, codes in [-128, 127]), into the float32 array ``out`` where given."""
    scale = np.float32(amax / 127.0)
    out = np.divide(values, scale, out=out, dtype=np.float32)
    np.rint(out, out=out)
    np.clip(out, -128, 127, out=out)
    out *= scale
    return out


def dequantize_weight(
    codes: np.ndarray, scales: np.ndarray, axis: int, dtype: type = np.float32
) -> np.ndarray:
    """``codes * scales`` with the scales along ``axis`` (the inverse of :func:`quantize_weight`), computed
    in ``dtype``."""
    shape = [1] * codes.ndim
    shape[axis] = -1
    return codes.astype(dtype) * np.asarray(scales).astype(dtype).reshape(shape)


@dataclass
class QdqNames:
    """The names the Q/DQ of one activation tensor use in the built model."""

    scale: str
    zero_point: str
    quantized: str
    dequantized: str


def build_qdq(
    model: onnx.ModelProto,
    amax: Mapping[str, float],
    plan: QdqPlan,
    codes: Mapping[tuple[str, int], np.ndarray] | None = None,
) -> tuple[onnx.ModelProto, dict[str, QdqNames]]:
    """The TensorRT-flavour Q/DQ model: int8 activations with zero point 0, int8 per-channel weights.

    Args:
        model: the FP32 model (not modified).
        amax: tensor name -> amax for every tensor in ``plan.activations``.
        plan: from :func:`plan_qdq` on the same model.
        codes: (weight, axis) -> its int8 codes, instead of rounding to nearest (the scales stay those
            of :func:`quantize_weight`; see :mod:`quantbench.export.rounding`).

    Returns:
        (the new model, tensor -> names of its Q/DQ), the second for reshaping the graph further.

    Raises:
        QuantbenchError: the model's opset is below 13 and cannot be converted.
    """
    out = onnx.ModelProto()
    out.CopyFrom(at_least_opset13(model))
    graph = out.graph
    taken = tensor_names(graph)
    inserts: dict[int, list[onnx.NodeProto]] = {}  # node index -> Q/DQ nodes to put before it
    names = _quantize_activations(graph, amax, plan, taken, inserts)
    _quantize_weights(graph, plan, taken, inserts, codes or {})
    nodes = []
    for i, node in enumerate(graph.node):
        nodes.extend(inserts.get(i, []))
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    cleanup(graph)  # the float originals of the quantized weights, and what only computed them
    return out, names


def _quantize_activations(
    graph: onnx.GraphProto,
    amax: Mapping[str, float],
    plan: QdqPlan,
    taken: set[str],
    inserts: dict[int, list[onnx.NodeProto]],
) -> dict[str, QdqNames]:
    """Give every tensor of ``plan.activations`` one Q/DQ pair, read by each planned use.

    The scale and zero point become initializers of ``graph`` and each planned use is rewired to the
    dequantized tensor; the Q/DQ nodes are added to ``inserts`` under the first use, for the caller to
    put in place.

    Returns:
        tensor -> the names its Q/DQ uses.
    """
    names: dict[str, QdqNames] = {}
    for tensor, uses in plan.activations.items():
        qn = names[tensor] = new_qdq_names(graph, tensor, amax[tensor] / 127.0, taken)
        inserts.setdefault(min(i for i, _ in uses), []).extend(qdq_nodes(tensor, qn))
        for i, j in uses:
            graph.node[i].input[j] = qn.dequantized
    return names


def new_qdq_names(graph: onnx.GraphProto, tensor: str, scale: float, taken: set[str]) -> QdqNames:
    """Names for a Q/DQ pair of ``tensor`` not yet in ``taken`` (added to it), with ``scale`` (as float32)
    and the int8 zero point 0 added to ``graph`` as initializers."""
    qn = QdqNames(
        scale=unique_name(taken, f"{tensor}_scale"),
        zero_point=unique_name(taken, f"{tensor}_zero_point"),
        quantized=unique_name(taken, f"{tensor}_quantized"),
        dequantized=unique_name(taken, f"{tensor}_dequantized"),
    )
    graph.initializer.append(numpy_helper.from_array(np.array(scale, np.float32), qn.scale))
    graph.initializer.append(numpy_helper.from_array(np.array(0, np.int8), qn.zero_point))
    return qn


def qdq_nodes(tensor: str, qn: QdqNames) -> list[onnx.NodeProto]:
    """The QuantizeLinear and the DequantizeLinear of ``tensor`` with ``qn``'s names."""
    return [
        helper.make_node("QuantizeLinear", [tensor, qn.scale, qn.zero_point], [qn.quantized], f"{tensor}_Q"),
        helper.make_node(
            "DequantizeLinear", [qn.quantized, qn.scale, qn.zero_point], [qn.dequantized], f"{tensor}_DQ"
        ),
    ]


def _quantize_weights(
    graph: onnx.GraphProto,
    plan: QdqPlan,
    taken: set[str],
    inserts: dict[int, list[onnx.NodeProto]],
    codes: Mapping[tuple[str, int], np.ndarray],
) -> None:
    """Replace every weight of ``plan.weights`` by int8 codes (nearest, or those of ``codes``) and
    per-channel scales (initializers of ``graph``) and a DequantizeLinear, added to ``inserts`` under the
    first node that reads it; nodes that read one weight on the same axis share its DequantizeLinear."""
    constants = constant_values(graph)
    done: dict[tuple[str, int], str] = {}  # (weight, axis) -> its dequantized tensor
    for i, j, axis in plan.weights:
        node = graph.node[i]
        name = node.input[j]
        if (name, axis) in done:
            node.input[j] = done[name, axis]
            continue
        q, scales = quantize_weight(plan.folded[name] if name in plan.folded else constants[name], axis)
        if (name, axis) in codes and codes[name, axis].shape == q.shape:
            q = codes[name, axis].astype(np.int8)
        q_name = unique_name(taken, f"{name}_int8")
        s_name = unique_name(taken, f"{name}_scale")
        z_name = unique_name(taken, f"{name}_zero_point")
        dq_name = unique_name(taken, f"{name}_dequantized")
        graph.initializer.extend(
            [
                numpy_helper.from_array(q, q_name),
                numpy_helper.from_array(scales, s_name),
                numpy_helper.from_array(np.zeros(scales.shape, np.int8), z_name),
            ]
        )
        inserts.setdefault(i, []).append(
            helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [dq_name], f"{name}_DQ", axis=axis)
        )
        node.input[j] = done[name, axis] = dq_name


def at_least_opset13(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` itself when its opset is 13 or more, else a converted copy.

    The conversion is deterministic, so plans made on the result match models built from it.

    Raises:
        QuantbenchError: the conversion fails.
    """
    version = opset_version(model)
    if version >= MIN_OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:
        raise QuantbenchError(
            f"the model uses opset {version}; Q/DQ needs {MIN_OPSET} and the conversion failed ({exc})"
        ) from None
