"""Cross-layer equalization: consecutive convolutions rescaled per channel so that what INT8 rounds evens
out across channels, the float model's outputs unchanged.

A pair is a Conv whose output reaches a second Conv through nodes that commute with a positive scale
per channel (none, ``Relu``, ``PRelu``, ``LeakyRelu``, ``Clip`` with a lower bound of 0, a
``BatchNormalization``, a ``Mul`` or ``Add`` of a constant with one value per channel or one for all).
Dividing the first Conv's output channel ``c`` by ``s_c`` (its weights and bias) and multiplying the
second Conv's input channel ``c`` by ``s_c`` computes the same function:

* ``Relu``, ``PRelu``, ``LeakyRelu``, a ``Mul``: ``f(y / s) = f(y) / s`` for ``s > 0``, unchanged;
* an ``Add`` of ``b``: ``b / s``; a ``BatchNormalization``: its mean and bias ``/ s``;
* ``Clip(y, 0, hi)``: ``Clip(y / s, 0, hi / s)``, one bound per channel, which ``Clip`` cannot hold: it
  becomes ``Relu(Min(y / s, hi / s))`` (the ``Relu`` keeps the Clip's output name).

Without measured activations, ``s_c = sqrt(r1_c / r2_c)`` (Nagel et al., "Data-Free Quantization
Through Weight Equalization and Bias Correction", 2019), with ``r1_c`` the largest ``|w|`` of the first
Conv's output channel ``c`` and ``r2_c`` that of the second Conv's input channel ``c``: both end at
``sqrt(r1_c r2_c)``. quantbench's weights have one scale per output channel, so the first Conv's ranges
do not matter to them; what ``s_c`` can still improve is the activation between the Convs (one range for
the whole tensor) and the second Conv's input channels. Given each channel's largest ``|x|`` of that
activation (:func:`channel_peaks`), ``s_c`` evens out the activation's channels where the second Conv is
depthwise, and balances them against the second Conv's input channels otherwise (:func:`_scales`). No
``s_c`` goes beyond :data:`MAX_SCALE`. Pairs that share a Conv (a pointwise, a depthwise, a pointwise
Conv) are equalized in turn until the scales settle.

A chain through anything else (SiLU, HardSwish, a tensor read twice) is not a pair.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantbench.export.conv_fold import AFFINE_OPS, channel_affine, channel_vector
from quantbench.export.onnxruntime_flavour import clip_bounds
from quantbench.graph import cleanup, constant_values, consumers, tensor_names, unique_name

BETWEEN_OPS = frozenset({"Relu", "PRelu", "LeakyRelu", "Clip", *AFFINE_OPS})
"""Every node a pair may have between its Convs (see the module docstring and :func:`_passes`)."""
ROUNDS = 50
"""The most rounds over the pairs; they end earlier once no scale moves by more than :data:`SETTLED`
(as a ratio)."""
SETTLED = 1e-4
MAX_SCALE = 16.0
"""No channel is divided or multiplied by more than this in all (``1 / MAX_SCALE <= s_c <= MAX_SCALE``):
a channel of nearly zero weights would otherwise take a scale of 1e-10 and grow the activation between
the Convs by as much, leaving its per-tensor range to that one channel."""


@dataclass
class Pair:
    """Two Convs equalized together.

    Attributes:
        first: the first Conv's node name (its output channels are divided).
        second: the second Conv's node name (its input channels are multiplied).
        between: the names of the nodes between them, in order.
        channels: the channels the pair rescales.
        tensor: the tensor the second Conv reads (quantized in the INT8 models).
        evenness: mean over channels of ``r2_c / max r2`` for the second Conv's input channels, before and
            after (1: every input channel as wide as the widest).
        activation_evenness: the same of the largest ``|x|`` per channel of ``tensor``, before and after,
            where the activations were measured (else empty).
        scales: the smallest and largest ``s_c`` applied, over all rounds.
        nodes: the indices in ``graph.node`` of the first Conv, the nodes between and the second Conv,
            when :func:`find_pairs` found the pair.
    """

    first: str
    second: str
    between: list[str]
    channels: int
    tensor: str = ""
    evenness: list[float] = field(default_factory=list)
    activation_evenness: list[float] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)
    nodes: list[int] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The pair as ``results.json`` records it."""
        return {
            "first": self.first,
            "second": self.second,
            "between": self.between,
            "channels": self.channels,
            "tensor": self.tensor,
            "evenness": [round(x, 4) for x in self.evenness],
            "activation_evenness": [round(x, 4) for x in self.activation_evenness],
            "scales": [float(f"{x:.4g}") for x in self.scales],
        }


@dataclass
class Equalization:
    """What :func:`equalize` did.

    Attributes:
        pairs: the pairs equalized, in graph order.
        convs: the Conv nodes of the model.
        rounds: the rounds over the pairs until the scales settled.
    """

    pairs: list[Pair]
    convs: int
    rounds: int

    def to_json(self) -> dict[str, Any]:
        """``results.json``'s ``equalization``."""
        return {"convs": self.convs, "rounds": self.rounds, "pairs": [pair.to_json() for pair in self.pairs]}

    def summary(self) -> str:
        """One line: pairs among how many Convs, and how even their second Convs' input channels became."""
        if not self.pairs:
            return f"cross-layer equalization: no pair among {self.convs} Convs, the model unchanged"
        before = np.mean([pair.evenness[0] for pair in self.pairs])
        after = np.mean([pair.evenness[1] for pair in self.pairs])
        line = (
            f"cross-layer equalization: {len(self.pairs)} pairs among {self.convs} Convs; mean channel width "
            f"(of the widest) of the second Convs' inputs: weights {before:.2f} -> {after:.2f}"
        )
        measured = [pair.activation_evenness for pair in self.pairs if pair.activation_evenness]
        if measured:
            first, last = np.mean([m[0] for m in measured]), np.mean([m[1] for m in measured])
            line += f", activations {first:.2f} -> {last:.2f}"
        return line


def find_pairs(model: onnx.ModelProto) -> list[Pair]:
    """The pairs of ``model`` that :func:`equalize` can rescale exactly, in graph order.

    A pair's Convs have constant float weights (and biases) of at least 3 dims; the first Conv's output,
    and every tensor after it up to the second Conv, is read by one node only and is not a graph output;
    the nodes between are those of :data:`BETWEEN_OPS` reading that tensor first, their other operands
    constant (see :func:`_passes`); the second Conv reads the last of them as its input.
    """
    graph = model.graph
    values, uses = constant_values(graph), consumers(graph)
    for value in graph.input:  # an initializer a feed can override is not a constant
        values.pop(value.name, None)
    outputs = {value.name for value in graph.output}
    pairs = []
    for index, node in enumerate(graph.node):
        weight = _conv_weight(node, values)
        if weight is None:
            continue
        channels, rank = weight.shape[0], weight.ndim
        tensor, chain = node.output[0], [index]
        while len(uses.get(tensor, [])) == 1 and tensor not in outputs:
            reader, slot = uses[tensor][0]
            after = graph.node[reader]
            if after.op_type == "Conv" and slot == 0:
                second = _conv_weight(after, values)
                if second is not None and second.shape[1] * _group(after) == channels:
                    names = [_name(graph.node[i]) for i in [*chain, reader]]
                    pair = Pair(names[0], names[-1], names[1:-1], channels, tensor, nodes=[*chain, reader])
                    pairs.append(pair)
                break
            if slot != 0 or not _passes(after, channels, rank, values):
                break
            chain.append(reader)
            tensor = after.output[0]
    return pairs


def _name(node: onnx.NodeProto) -> str:
    """A node's name, or its first output's where it has none."""
    return node.name or node.output[0]


def _conv_weight(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> np.ndarray | None:
    """A Conv's weights where they (and its bias) are float32 constants, else None."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return None
    if len(node.input) > 2 and node.input[2] and node.input[2] not in values:
        return None
    weight = values.get(node.input[1])
    return weight if weight is not None and weight.dtype == np.float32 and weight.ndim >= 3 else None


def _group(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def _passes(node: onnx.NodeProto, channels: int, rank: int, values: dict[str, np.ndarray]) -> bool:
    """Whether ``node`` (reading the pair's tensor as its first input) may sit between a pair's Convs: a
    per-channel affine map (:func:`~quantbench.export.conv_fold.channel_affine`), a Relu or LeakyRelu, a
    PRelu with one slope per channel or one for all, a ``Clip(x, 0, hi)``."""
    if node.op_type not in BETWEEN_OPS or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return False
    named = [name for name in node.input[1:] if name]
    if not all(name in values for name in named):
        return False
    if node.op_type in ("Relu", "LeakyRelu"):
        return True
    if node.op_type in AFFINE_OPS:
        return channel_affine(node, values, channels, rank - 2) is not None
    if node.op_type == "PRelu":
        return bool(named) and channel_vector(values[named[0]], channels, rank - 2) is not None
    bounds = clip_bounds(values, node)
    return bounds is not None and bounds[0] == 0.0 and 0.0 < bounds[1] < np.inf


def equalize(
    model: onnx.ModelProto, activations: Mapping[str, np.ndarray] | None = None
) -> tuple[onnx.ModelProto, Equalization]:
    """A copy of ``model`` with every pair of :func:`find_pairs` equalized, and what was done.

    The copy computes what ``model`` computes, to within float rounding (tested against float64).

    Args:
        model: an FP32 model; not modified.
        activations: the largest ``|x|`` of each channel of the tensors between pairs (``Pair.tensor``),
            measured on the model as given: a pair whose tensor has one is equalized with it (see
            :func:`_scales`), the others by their weights alone.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    pairs = find_pairs(out)
    values = constant_values(graph)
    convs = sorted({i for pair in pairs for i in (pair.nodes[0], pair.nodes[-1])})
    weights = {i: values[graph.node[i].input[1]].astype(np.float64) for i in convs}
    seen = [None if activations is None else activations.get(pair.tensor) for pair in pairs]
    before = [_spread(pair, weights, None, peaks) for pair, peaks in zip(pairs, seen, strict=True)]
    totals, rounds = _solve(pairs, weights, seen)
    taken = tensor_names(graph) | {node.name for node in graph.node}
    inserted: dict[int, onnx.NodeProto] = {}  # Clip index -> the Min to put before it
    for pair, total, peaks, first in zip(pairs, totals, seen, before, strict=True):
        after = _spread(pair, weights, total, peaks)
        pair.evenness = [first[0], after[0]]
        pair.activation_evenness = [first[1], after[1]] if peaks is not None else []
        pair.scales = [float(total.min()), float(total.max())]
        inserted.update(_divide_between(graph, pair, total, values, taken))
    for i in convs:
        _replace(graph.node[i], 1, weights[i], graph, taken)
    nodes = [
        new for i, node in enumerate(graph.node) for new in ([inserted[i]] if i in inserted else []) + [node]
    ]
    del graph.node[:]
    graph.node.extend(nodes)
    cleanup(graph)
    count = sum(node.op_type == "Conv" for node in graph.node)
    return out, Equalization(pairs, count, rounds)


def _solve(
    pairs: list[Pair], weights: dict[int, np.ndarray], activations: list[np.ndarray | None]
) -> tuple[list[np.ndarray], int]:
    """Rescale ``weights`` in place, pair after pair, until no scale moves by more than :data:`SETTLED`
    (at most :data:`ROUNDS` rounds); the total ``s_c`` of each pair and the rounds taken."""
    totals = [np.ones(pair.channels) for pair in pairs]
    rounds = 0
    while pairs and rounds < ROUNDS:
        rounds += 1
        moved = 0.0
        for pair, total, peaks in zip(pairs, totals, activations, strict=True):
            first, second = weights[pair.nodes[0]], weights[pair.nodes[-1]]
            group = pair.channels // second.shape[1]
            scale = _scales(first, second, group, None if peaks is None else peaks / total)
            scale = np.clip(total * scale, 1 / MAX_SCALE, MAX_SCALE) / total
            first /= scale.reshape(-1, *[1] * (first.ndim - 1))
            _scale_inputs(second, scale, group)
            total *= scale
            moved = max(moved, float(np.abs(np.log(scale)).max()))
        if moved < SETTLED:
            break
    return totals, rounds


def _spread(
    pair: Pair, weights: dict[int, np.ndarray], total: np.ndarray | None, peaks: np.ndarray | None
) -> tuple[float, float]:
    """How even the second Conv's input channels and the activation's channels are (``total``: the scales
    applied so far, None before any)."""
    second = weights[pair.nodes[-1]]
    wide = _evenness(_input_ranges(second, pair.channels // second.shape[1]))
    if peaks is None:
        return wide, 1.0
    return wide, _evenness(peaks / (total if total is not None else 1.0))


def channel_peaks(
    model: onnx.ModelProto, tensors: list[str], batches: Iterable[Mapping[str, np.ndarray]], threads: int = 0
) -> dict[str, np.ndarray]:
    """The largest ``|x|`` of each channel (axis 1) of ``tensors`` over ``batches``, from the FP32 model.

    Raises:
        QuantbenchError: ONNX Runtime cannot run the model.
    """
    from quantbench.calibration.exposure import Exposure
    from quantbench.model import input_specs

    inputs = [spec.name for spec in input_specs(model)]
    exposure = Exposure(model, tensors, inputs, threads, purpose="equalization")
    peaks: dict[str, np.ndarray] = {}
    for feed in batches:
        for values in exposure.runs(feed):
            for name, (array, _) in values.items():
                axes = tuple(axis for axis in range(array.ndim) if axis != 1)
                peak = np.abs(array).max(axis=axes).astype(np.float64)
                peaks[name] = np.maximum(peaks[name], peak) if name in peaks else peak
    return peaks


def _input_ranges(weight: np.ndarray, group: int) -> np.ndarray:
    """The largest ``|w|`` of each input channel of a Conv with ``group`` groups (over the output channels
    of its group)."""
    outputs, per_group = weight.shape[0], weight.shape[1]
    return np.abs(weight).reshape(group, outputs // group, per_group, -1).max(axis=(1, 3)).reshape(-1)


def _scale_inputs(weight: np.ndarray, scale: np.ndarray, group: int) -> None:
    """Multiply input channel ``c`` of a Conv's weights by ``scale[c]``, in place."""
    outputs, per_group = weight.shape[0], weight.shape[1]
    view = weight.reshape(group, outputs // group, per_group, -1)
    view *= scale.reshape(group, 1, per_group, 1)


def _scales(first: np.ndarray, second: np.ndarray, group: int, peaks: np.ndarray | None) -> np.ndarray:
    """The scale of each channel, one round (1 where a range is 0).

    Without ``peaks`` (the activation's largest ``|x|`` per channel, as now scaled), Nagel et al.'s
    ``sqrt(r1 / r2)``, ``r1`` the first Conv's output channel ranges, ``r2`` the second's input channel
    ranges. With them, for the weights quantbench writes (one scale per output channel, so the first
    Conv's ranges do not matter): where the second Conv has one input channel per group (depthwise), its
    weights do not care either, and ``s = peaks / g`` makes every channel of the activation as wide
    (``g`` their geometric mean, which keeps the scales about 1); otherwise ``s = t / g`` with
    ``t = sqrt(peaks / r2)`` leaves the activation's channels and the second Conv's input channels both
    in proportion to ``sqrt(peaks r2)``.
    """
    r2 = _input_ranges(second, group)
    if peaks is None:
        r1 = np.abs(first).reshape(first.shape[0], -1).max(axis=1)
        scale = np.ones_like(r1)
        live = (r1 > 0) & (r2 > 0)
        scale[live] = np.sqrt(r1[live] / r2[live])
        return scale
    scale = np.ones_like(r2)
    live = (peaks > 0) & (r2 > 0)
    if live.any():
        wanted = peaks[live] if second.shape[1] == 1 else np.sqrt(peaks[live] / r2[live])
        scale[live] = wanted / np.exp(np.log(wanted).mean())
    return scale


def _evenness(ranges: np.ndarray) -> float:
    top = float(ranges.max())
    return float(ranges.mean() / top) if top > 0 else 1.0


def _divide_between(
    graph: onnx.GraphProto, pair: Pair, scale: np.ndarray, values: dict[str, np.ndarray], taken: set[str]
) -> dict[int, onnx.NodeProto]:
    """Divide the first Conv's bias and what the nodes between the pair add by ``scale`` per channel; each
    changed constant is a new initializer of the node that reads it. Returns the Min nodes to insert, by
    the index of the Clip each goes before (:func:`_clip_to_min_relu`)."""
    first = graph.node[pair.nodes[0]]
    rank = values[first.input[1]].ndim
    if len(first.input) > 2 and first.input[2]:
        _replace(first, 2, values[first.input[2]] / scale, graph, taken)
    inserted = {}
    for index in pair.nodes[1:-1]:
        node = graph.node[index]
        if node.op_type == "Add":
            operand = np.broadcast_to(values[node.input[1]].reshape(-1), scale.shape) / scale
            _replace(node, 1, operand.reshape(-1, *[1] * (rank - 2)), graph, taken)
        elif node.op_type == "BatchNormalization":
            _replace(node, 2, values[node.input[2]] / scale, graph, taken)  # bias
            _replace(node, 3, values[node.input[3]] / scale, graph, taken)  # mean
        elif node.op_type == "Clip":
            inserted[index] = _clip_to_min_relu(node, scale, rank, values, graph, taken)
    return inserted


def _replace(
    node: onnx.NodeProto, slot: int, value: np.ndarray, graph: onnx.GraphProto, taken: set[str]
) -> None:
    """Give ``node`` a new float32 initializer ``value`` at input ``slot``."""
    name = unique_name(taken, f"{node.input[slot]}_equalized")
    graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
    node.input[slot] = name


def _clip_to_min_relu(
    node: onnx.NodeProto,
    scale: np.ndarray,
    rank: int,
    values: dict[str, np.ndarray],
    graph: onnx.GraphProto,
    taken: set[str],
) -> onnx.NodeProto:
    """Turn ``Clip(x, 0, hi)`` into ``Relu(Min(x, hi / scale))`` (``hi / scale`` one bound per channel); the
    Relu keeps the Clip's name and output. Returns the Min node, which the caller puts before it."""
    bounds = clip_bounds(values, node)
    assert bounds is not None
    high = bounds[1]
    bound = unique_name(taken, f"{_name(node)}_bound")
    clipped = unique_name(taken, f"{node.output[0]}_min")
    graph.initializer.append(
        numpy_helper.from_array((high / scale).reshape(-1, *[1] * (rank - 2)).astype(np.float32), bound)
    )
    minimum = helper.make_node(
        "Min", [node.input[0], bound], [clipped], unique_name(taken, f"{_name(node)}_min")
    )
    node.CopyFrom(helper.make_node("Relu", [clipped], list(node.output), node.name))
    return minimum
