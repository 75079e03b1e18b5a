"""Offset grids for activations bounded below: twice the resolution on TensorRT's symmetric INT8 grid.

TensorRT quantizes an activation on a symmetric grid, ``[-amax, amax]`` in steps of ``amax / 127``. A
tensor that a ReLU or a Clip bounds below at ``L`` (0 for ReLU, ReLU6) never takes the values below
``L``, so about half of the grid is never used. Shifted by ``c = (amax + L) / 2`` the tensor lies in
``[-h, h]`` with ``h = (amax - L) / 2``, and its grid step is ``h / 127``: half the step where ``L`` is 0.
The bound itself, ``-h``, lies on the grid.

The shift is written into the float model so that its outputs do not change, and TensorRT needs
nothing it does not already run:

* the node that feeds the activation (Conv, Gemm or BatchNormalization, read by the activation alone)
  subtracts ``c`` from its bias, and the activation's bounds move by ``-c`` (a ReLU becomes a Clip with
  only a lower bound, ``-c``), as does the bound of a Min with a constant between them (cross-layer
  equalization writes ``Relu(Min(y, b))`` for a ReLU6 whose bound became one per channel);
* every reader (Conv, Gemm) adds ``c`` times the sum of its weights over its input to its bias; a
  padded convolution reads the tensor through a ``Pad`` of value ``-c`` (the shifted zero, on the grid)
  and pads no more itself, so its border sees what it saw before.

A tensor is shifted only where all of this holds: it is not a graph output, it has a calibrated range
above ``L``, every reader is a Conv (2-D or not, no ``auto_pad``) or a Gemm (``transA`` 0, ``beta`` not 0)
reading it as its data input with constant weights, and at least one reader is quantized. The
producer's and readers' biases are made their own first where other nodes share them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

    from quantbench.export.qdq import QdqNames

FEEDERS = ("Conv", "Gemm", "BatchNormalization")
"""Ops whose bias can take the shift before the activation."""

READERS = ("Conv", "Gemm")
"""Ops that can take the shift back into their bias."""

LARGEST_SPAN = 1.5
"""A tensor is shifted only where its span ``amax - L`` is at most this many times ``amax`` (a lower
bound above ``-amax / 2``): below that the grid gains less than a third of a bit."""


@dataclass(frozen=True)
class Offset:
    """One shifted tensor.

    Attributes:
        tensor: its name (the activation's output).
        shift: ``c``, subtracted from the tensor.
        half_range: ``h``, its new amax.
        bound: ``L``, the activation's lower bound.
        feeder: the label of the node whose bias took ``-c``; ``feeder_output`` its output.
        readers: the labels of the nodes whose biases took ``+c`` times their weight sums;
            ``reader_outputs`` their first outputs.
        padded: the readers that now read it through a Pad of value ``-c``.
    """

    tensor: str
    shift: float
    half_range: float
    bound: float
    feeder: str
    feeder_output: str
    readers: tuple[str, ...]
    reader_outputs: tuple[str, ...]
    padded: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready record for ``results.json``."""
        return {
            "tensor": self.tensor,
            "shift": self.shift,
            "amax": self.half_range,
            "lower_bound": self.bound,
            "feeder": self.feeder,
            "readers": list(self.readers),
            "padded_readers": list(self.padded),
        }


@dataclass
class OffsetModel:
    """The float model with its shifts written in, and its ranges.

    Attributes:
        model: the shifted FP32 model (a copy; same outputs as the model it came from, to float
            rounding).
        amax: its ranges: those given, with each shifted tensor (and its padded copy) at ``h``.
        offsets: the shifted tensors.
    """

    model: onnx.ModelProto
    amax: dict[str, float]
    offsets: list[Offset] = field(default_factory=list)

    def shifted_outputs(self) -> dict[str, float]:
        """Output name -> the constant now subtracted from it, for every node output that moved (the
        feeders that are Conv or Gemm; a BatchNormalization feeder's own input did not move)."""
        return {o.feeder_output: o.shift for o in self.offsets if o.feeder_output}


# --- which tensors ---------------------------------------------------------------------------------


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _lower_bound(node: onnx.NodeProto, constants: Mapping[str, np.ndarray]) -> float | None:
    """The constant lower bound a ReLU or Clip puts on its output; None for other nodes, or a bound
    (or a Clip's upper bound) that is not a constant."""
    if node.op_type == "Relu":
        return 0.0
    if node.op_type != "Clip" or len(node.input) < 2 or not node.input[1]:
        return None
    if len(node.input) > 2 and node.input[2] and node.input[2] not in constants:
        return None
    value = constants.get(node.input[1])
    return None if value is None or value.size != 1 else float(value.reshape(-1)[0])


def _constant_bias(node: onnx.NodeProto, constants: Mapping[str, np.ndarray]) -> bool:
    """Whether the node's bias (third input) is a constant or absent."""
    return len(node.input) < 3 or not node.input[2] or node.input[2] in constants


def _beta(node: onnx.NodeProto) -> float:
    """What a node's bias is multiplied by: a Gemm's ``beta``, else 1."""
    return float(_attributes(node).get("beta", 1.0)) if node.op_type == "Gemm" else 1.0


def _reader_ok(node: onnx.NodeProto, slot: int, constants: Mapping[str, np.ndarray]) -> bool:
    """Whether a reader can take the shift back into its bias."""
    if slot != 0 or node.op_type not in READERS or len(node.input) < 2 or node.input[1] not in constants:
        return False
    if not _constant_bias(node, constants):
        return False
    a = _attributes(node)
    if node.op_type == "Conv":
        return a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET") and constants[node.input[1]].ndim >= 3
    return not a.get("transA", 0) and _beta(node) != 0.0 and constants[node.input[1]].ndim == 2


def _feeder_ok(node: onnx.NodeProto, constants: Mapping[str, np.ndarray]) -> bool:
    """Whether a feeder can take the shift into its bias."""
    if node.op_type not in FEEDERS:
        return False
    if node.op_type == "BatchNormalization":
        return len(node.input) >= 5 and node.input[2] in constants and len(node.output) == 1
    if _beta(node) == 0.0 or len(node.input) < 2 or node.input[1] not in constants:
        return False
    return _constant_bias(node, constants)


def bias_sums(node: onnx.NodeProto, weight: np.ndarray) -> np.ndarray:
    """What a reader's bias gains per unit of shift of its input: the sum of each output channel's
    weights (a Gemm's scaled by ``alpha / beta``, as its bias is scaled by ``beta``), float64."""
    weight = np.asarray(weight, np.float64)
    if node.op_type != "Gemm":
        return weight.reshape(weight.shape[0], -1).sum(axis=1)
    a = _attributes(node)
    sums = weight.sum(axis=1) if a.get("transB", 0) else weight.sum(axis=0)
    return sums * float(a.get("alpha", 1.0)) / _beta(node)


# --- the rewrite ----------------------------------------------------------------------------------


class _Rewrite:
    """The shifts of one model, written one tensor at a time."""

    def __init__(self, model: onnx.ModelProto, amax: Mapping[str, float], exclude: Iterable[str]) -> None:
        from quantbench.export.qdq import match_excluded
        from quantbench.graph import constant_values, tensor_names

        self.graph = model.graph
        self.amax = dict(amax)
        self.constants = constant_values(self.graph)
        self.taken = tensor_names(self.graph)
        self.excluded = match_excluded(self.graph, exclude)
        self.offsets: list[Offset] = []
        self.pads: dict[int, onnx.NodeProto] = {}  # reader index -> the Pad that goes before it

    def candidates(self) -> list[tuple[int, int | None, int, list[int], float]]:
        """(feeder index, index of a Min between it and the activation or None, activation index, reader
        indices, lower bound) of every tensor to shift."""
        from quantbench.graph import consumers, producers

        graph = self.graph
        uses, producer = consumers(graph), producers(graph)
        outputs = {o.name for o in graph.output}
        found = []
        for k, node in enumerate(graph.node):
            bound = _lower_bound(node, self.constants)
            tensor = node.output[0] if node.output else ""
            amax = self.amax.get(tensor)
            if bound is None or tensor in outputs or amax is None or not np.isfinite(amax):
                continue
            if amax <= bound or amax - bound > LARGEST_SPAN * amax:
                continue
            source, between = self._feeder(node.input[0], uses, producer, outputs), None
            if source is not None and self._bounded_above(graph.node[source]):
                between, source = source, self._feeder(graph.node[source].input[0], uses, producer, outputs)
            if source is None or not _feeder_ok(graph.node[source], self.constants):
                continue
            reads = uses.get(tensor, [])
            if not reads or not all(_reader_ok(graph.node[i], j, self.constants) for i, j in reads):
                continue
            if all(i in self.excluded for i, _ in reads):
                continue
            found.append((source, between, k, [i for i, _ in reads], bound))
        return found

    def _feeder(
        self, name: str, uses: Mapping[str, list], producer: Mapping[str, int], outputs: set[str]
    ) -> int | None:
        """The index of the node writing ``name`` where ``name`` is read once and is not a graph output."""
        if name in outputs or len(uses.get(name, [])) != 1:
            return None
        return producer.get(name)

    def _bounded_above(self, node: onnx.NodeProto) -> bool:
        """Whether ``node`` is a Min of its data and a constant bound (one per channel after cross-layer
        equalization, :mod:`quantbench.export.equalize`): the shift moves that bound too."""
        return node.op_type == "Min" and len(node.input) == 2 and node.input[1] in self.constants

    def own(self, node: onnx.NodeProto, slot: int, channels: int, stem: str) -> np.ndarray:
        """The node's constant input ``slot`` (a bias) as an initializer of its own, float32, created as
        zeros of ``channels`` where the node has none; returns its current value (written back with
        :meth:`set`)."""
        from onnx import numpy_helper

        name = node.input[slot] if len(node.input) > slot else ""
        value = np.zeros(channels, np.float32) if not name else np.asarray(self.constants[name], np.float32)
        private = self._unique(f"{stem}_offset")
        self.graph.initializer.append(numpy_helper.from_array(value.copy(), private))
        while len(node.input) <= slot:
            node.input.append("")
        node.input[slot] = private
        self.constants[private] = value
        return value

    def set(self, node: onnx.NodeProto, slot: int, value: np.ndarray) -> None:
        """Write a value into the node's constant input ``slot`` (one :meth:`own` made)."""
        from quantbench.graph import set_initializer

        name = node.input[slot]
        set_initializer(self.graph, name, np.asarray(value, np.float32))
        self.constants[name] = np.asarray(value, np.float32)

    def _unique(self, name: str) -> str:
        from quantbench.graph import unique_name

        return unique_name(self.taken, name)

    def shift_feeder(self, feeder: onnx.NodeProto, c: float) -> None:
        """Subtract ``c`` from the feeder's output through its bias."""
        if feeder.op_type == "BatchNormalization":
            self.set(feeder, 2, self.own(feeder, 2, 0, feeder.input[2]) - c)
            return
        weight = self.constants[feeder.input[1]]
        channels = weight.shape[0]  # a Conv's output channels, a Gemm's columns where transB
        if feeder.op_type == "Gemm" and not _attributes(feeder).get("transB", 0):
            channels = weight.shape[1]
        self.set(feeder, 2, self.own(feeder, 2, channels, feeder.output[0]) - c / _beta(feeder))

    def shift_bound(self, node: onnx.NodeProto, c: float) -> None:
        """Move a Min's constant bound by ``-c``."""
        value = self.own(node, 1, 0, node.output[0])
        self.set(node, 1, value - c)

    def shift_activation(self, node: onnx.NodeProto, c: float, bound: float) -> None:
        """Move the activation's bounds by ``-c`` (a ReLU becomes ``Clip(min=bound - c)``)."""
        from onnx import numpy_helper

        low = self._unique(f"{node.output[0]}_offset_min")
        self.graph.initializer.append(numpy_helper.from_array(np.array(bound - c, np.float32), low))
        high = ""
        if node.op_type == "Clip" and len(node.input) > 2 and node.input[2]:
            top = float(self.constants[node.input[2]].reshape(-1)[0])
            high = self._unique(f"{node.output[0]}_offset_max")
            self.graph.initializer.append(numpy_helper.from_array(np.array(top - c, np.float32), high))
        data = node.input[0]
        del node.input[:]
        node.input.extend([data, low, high] if high else [data, low])
        if node.op_type == "Relu":
            node.op_type = "Clip"
            del node.attribute[:]

    def shift_reader(self, i: int, c: float, h: float) -> bool:
        """Add ``c`` times the weight sums to the bias of reader ``i``; a padded convolution gets a Pad of
        ``-c`` before it. Returns whether a Pad was added."""
        node = self.graph.node[i]
        sums = bias_sums(node, self.constants[node.input[1]])
        bias = self.own(node, 2, sums.shape[0], node.output[0])
        self.set(node, 2, bias + c * sums)
        pads = list(_attributes(node).get("pads", []))
        if node.op_type == "Gemm" or not any(pads):
            return False
        self._pad_before(i, pads, c, h)
        return True

    def _pad_before(self, i: int, pads: list[int], c: float, h: float) -> None:
        """Read the input of convolution ``i`` through ``Pad(value=-c)`` and zero its own pads."""
        from onnx import helper, numpy_helper

        node = self.graph.node[i]
        rank = len(pads) // 2
        begins, ends = pads[:rank], pads[rank:]
        data = node.input[0]
        padded = self._unique(f"{data}_padded")
        widths, value = self._unique(f"{padded}_pads"), self._unique(f"{padded}_value")
        self.graph.initializer.append(
            numpy_helper.from_array(np.array([0, 0, *begins, 0, 0, *ends], np.int64), widths)
        )
        self.graph.initializer.append(numpy_helper.from_array(np.array(-c, np.float32), value))
        pad = helper.make_node(
            "Pad", [data, widths, value], [padded], name=self._unique(f"{padded}_node"), mode="constant"
        )
        node.input[0] = padded
        for attribute in node.attribute:
            if attribute.name == "pads":
                attribute.ints[:] = [0] * len(pads)
        self.amax[padded] = h
        self.pads[i] = pad

    def insert_pads(self) -> None:
        """Put each Pad right before its reader."""
        if not self.pads:
            return
        nodes = []
        for i, node in enumerate(self.graph.node):
            if i in self.pads:
                nodes.append(self.pads[i])
            nodes.append(node)
        del self.graph.node[:]
        self.graph.node.extend(nodes)


def offset_activations(
    model: onnx.ModelProto, amax: Mapping[str, float], exclude: Iterable[str] = ()
) -> OffsetModel:
    """Shift every activation bounded below that can be (see the module docstring) by half its range.

    Args:
        model: the FP32 model (opset 13 or later: Pad takes its widths as an input); not changed.
        amax: tensor -> calibrated amax.
        exclude: ``--exclude`` patterns: a tensor only excluded nodes read is left alone.

    Returns:
        The shifted copy, its ranges and the shifts (none: a copy of ``model`` and ``amax``).
    """
    import onnx

    from quantbench.export.qdq import node_label
    from quantbench.graph import drop_unused_initializers

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    rewrite = _Rewrite(copy, amax, exclude)
    for source, between, k, readers, bound in rewrite.candidates():
        graph = copy.graph
        activation = graph.node[k]
        tensor = activation.output[0]
        top = float(rewrite.amax[tensor])
        c, h = (top + bound) / 2.0, (top - bound) / 2.0
        feeder = graph.node[source]
        rewrite.shift_feeder(feeder, c)
        if between is not None:
            rewrite.shift_bound(graph.node[between], c)
        rewrite.shift_activation(activation, c, bound)
        padded = [node_label(graph.node[i], i) for i in readers if rewrite.shift_reader(i, c, h)]
        rewrite.amax[tensor] = h
        rewrite.offsets.append(
            Offset(
                tensor, c, h, bound, node_label(feeder, source),
                feeder.output[0] if feeder.op_type != "BatchNormalization" else "",
                tuple(node_label(graph.node[i], i) for i in readers),
                tuple(graph.node[i].output[0] for i in readers), tuple(padded),
            )
        )  # fmt: skip
    rewrite.insert_pads()
    drop_unused_initializers(copy.graph)
    return OffsetModel(copy, rewrite.amax, rewrite.offsets)


def restore_weight_errors(
    qdq_model: onnx.ModelProto, shifted: OffsetModel, folded: Mapping[str, np.ndarray]
) -> None:
    """Make the shift leave the quantized weights' errors as they were, in place.

    A reader's bias took ``c`` times the sums of its float weights; its quantized weights ``ŵ`` sum to
    something else, so the INT8 model would compute ``Σ ŵ (x - c) + c Σ w`` where it computed ``Σ ŵ x``
    unshifted: its weight error ``Σ (ŵ - w) x`` would become ``Σ (ŵ - w)(x - c)``, which is larger where
    ``x`` lies closer to 0 than to ``c``. Adding ``c Σ (ŵ - w)`` to each quantized reader's bias gives
    back ``Σ ŵ x`` exactly: the offset changes the activation grid and nothing else.

    Args:
        qdq_model: a Q/DQ model built from ``shifted.model`` (its readers keep their outputs' names, each
            quantized weight read through a DequantizeLinear).
        shifted: the offsets.
        folded: the plan's weights computed from constants (``QdqPlan.folded``).
    """
    from quantbench.graph import constant_values, producers, set_initializer

    graph = qdq_model.graph
    constants = constant_values(graph)
    writer = producers(graph)
    floats = constant_values(shifted.model.graph)
    source = {node.output[0]: node for node in shifted.model.graph.node if node.output}
    for offset in shifted.offsets:
        for output in offset.reader_outputs:
            node = graph.node[writer[output]]
            dq = graph.node[writer[node.input[1]]] if node.input[1] in writer else None
            if dq is None or dq.op_type != "DequantizeLinear":
                continue  # a reader kept in float computes with its float weights
            name = source[output].input[1]
            weight = np.asarray(folded[name] if name in folded else floats[name], np.float64)
            error = bias_sums(node, _computed_weight(graph, node, constants, writer) - weight)
            bias = constants[node.input[2]].astype(np.float64)
            set_initializer(graph, node.input[2], (bias + offset.shift * error).astype(np.float32))


def with_zero_points(
    qdq_model: onnx.ModelProto, names: Mapping[str, QdqNames], shifted: OffsetModel
) -> tuple[onnx.ModelProto, dict[str, QdqNames], dict[str, float]]:
    """The same quantized model without its shifts, for ONNX Runtime: each tensor shifted from a lower
    bound of 0 goes back to its own values, on the same grid written with zero point -127.

    The shifted tensor's codes ``q`` stand for ``x - c = q s`` with ``c = 127 s``, so they are the codes of
    ``x`` itself with zero point -127. So the feeder's bias and the activation's bounds take ``c`` back,
    the Pad goes and its convolution pads its input itself (a quantized convolution pads with its zero
    point, which is 0 of ``x``), and each reader's bias gives back ``c`` times the sums of the weights it
    computes with: every value the model computes is the one it computed shifted, to float rounding, and
    ONNX Runtime fuses the convolutions again. Tensors shifted from another bound (whose ``c / s`` is not
    a whole number), and tensors quantized both through a Pad and directly, stay as they are.

    Args:
        qdq_model: a Q/DQ model built from ``shifted.model`` (not modified).
        names: its tensor -> Q/DQ names.
        shifted: the offsets.

    Returns:
        (the model, its tensor -> Q/DQ names, its ranges: each tensor given back its values at its
        calibrated amax ``c + h``).
    """
    import onnx

    from quantbench.graph import constant_values, producers, reader_nodes, set_initializer

    out = onnx.ModelProto()
    out.CopyFrom(qdq_model)
    graph = out.graph
    constants, writer, users = constant_values(graph), producers(graph), reader_nodes(graph)
    names, amax = dict(names), dict(shifted.amax)
    dropped: set[int] = set()

    def add(node: onnx.NodeProto, slot: int, delta: np.ndarray | float) -> None:
        value = constants[node.input[slot]].astype(np.float64) + delta
        set_initializer(graph, node.input[slot], value.astype(np.float32))
        constants[node.input[slot]] = value.astype(np.float32)

    for offset in shifted.offsets:
        pads = [i for i in users.get(offset.tensor, []) if graph.node[i].op_type == "Pad"]
        if offset.bound != 0.0 or (pads and offset.tensor in names):
            continue  # c / s not whole, or the tensor quantized both padded and not
        c = offset.shift
        activation = graph.node[writer[offset.tensor]]
        feeder = graph.node[writer[activation.input[0]]]
        if feeder.op_type == "Min":  # a bound between the feeder and the activation takes c back too
            add(feeder, 1, c)
            feeder = graph.node[writer[feeder.input[0]]]
        add(feeder, 2, c / _beta(feeder))
        for slot in range(1, len(activation.input)):
            if activation.input[slot]:
                add(activation, slot, c)
        for i in pads:
            dropped.add(i)
            _drop_pad(graph, graph.node[i], constants, users, names)
        for output in offset.reader_outputs:
            reader = graph.node[writer[output]]
            add(reader, 2, -c * bias_sums(reader, _computed_weight(graph, reader, constants, writer)))
        qn = names[offset.tensor]
        set_initializer(graph, qn.zero_point, np.array(-127, np.int8))
        amax[offset.tensor] = c + offset.half_range
    nodes = [node for i, node in enumerate(graph.node) if i not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    return out, names, amax


def _drop_pad(
    graph: onnx.GraphProto,
    pad: onnx.NodeProto,
    constants: Mapping[str, np.ndarray],
    users: Mapping[str, list[int]],
    names: dict[str, QdqNames],
) -> None:
    """Wire the Pad's readers (its Q, or a float convolution) to its input, give the convolutions behind
    it their pads back, and file the Q/DQ names under the Pad's input."""
    widths = [int(w) for w in constants[pad.input[1]]]
    rank = len(widths) // 2
    pads = [*widths[2:rank], *widths[rank + 2 :]]
    source, padded = pad.input[0], pad.output[0]
    convolutions = []
    for i in users.get(padded, []):
        node = graph.node[i]
        node.input[:] = [source if name == padded else name for name in node.input]
        convolutions.append(node)
    if padded in names:
        qn = names.pop(padded)
        names[source] = qn
        convolutions = [graph.node[i] for i in users.get(qn.dequantized, [])]
    for node in convolutions:
        for attribute in node.attribute:
            if attribute.name == "pads":
                attribute.ints[:] = pads


def _computed_weight(
    graph: onnx.GraphProto,
    node: onnx.NodeProto,
    constants: Mapping[str, np.ndarray],
    writer: Mapping[str, int],
) -> np.ndarray:
    """The weight a reader multiplies with: its dequantized codes, or its float constant."""
    name = node.input[1]
    if name in constants:
        return np.asarray(constants[name], np.float64)
    from quantbench.export.qdq import dequantize_weight

    dq = graph.node[writer[name]]
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    return dequantize_weight(constants[dq.input[0]], constants[dq.input[1]], axis, np.float64)
