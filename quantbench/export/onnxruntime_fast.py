"""The fast CPU flavour (``--cpu-flavour fast``): more tensors quantized, so ONNX Runtime runs the
quantized convolutions and the element-wise ops between them on its integer kernels.

The exact flavour (:mod:`quantbench.export.onnxruntime_flavour`) keeps the Q/DQ model's quantized
values, so a convolution whose output TensorRT keeps in float (one fused with a residual Add, one
followed by SiLU or HardSwish) runs in float on the CPU, with layout changes around it; ONNX Runtime's
only integer convolution with a wider output, ConvInteger, made the zoo's models 1.7-9x slower than
the float convolutions did. This flavour starts from the same Q/DQ model (per-channel affine nodes
behind quantized convolutions folded in first, :mod:`quantbench.export.conv_fold`) and, walking the
graph in order, quantizes:

1. the output of every quantized Conv, Gemm and MatMul that is not quantized yet (behind its Relu or
   Clip where that is its only reader), so it runs as one QLinearConv or QGemm, even where its readers
   run in float: a QLinearConv and a DequantizeLinear take less time than the float convolution and
   the layout changes around it (YOLOv8n's six last head convolutions: 0.3 ms of 9);
2. the output of every op of :data:`INTEGER_OPS` whose activation inputs are all quantized now, so it
   runs as QLinearAdd, QLinearMul, QLinearSigmoid, QLinearConcat...; where no reader of such an output
   then runs in integer, that quantization is dropped again (it would only round). An Add's or Mul's
   constant operand gets one int8 scale (QLinearAdd and QLinearMul take no float operand);
3. the outputs of :data:`SAME_SCALE_OPS` (Split, MaxPool, Reshape, Relu, Clip...) at their input's grid:
   they only move, pick or clip values already rounded, so nothing new is rounded (a Clip's bounds
   become codes). Where the judged model quantizes such an output on a grid of its own, it takes its
   input's grid instead when that grid is the same or finer (:data:`REGRID_LIMIT`); a Split output that
   keeps a grid of its own is written on the input's grid and moved to its own by an Add of zero, so
   that ONNX Runtime still splits the codes and requantizes on its integer Add.

Before the walk, a Softmax over a short axis other than the last is written out as the element-wise ops
it is made of (:mod:`quantbench.export.short_softmax`): no rounding, a faster float op. After it, a
division by a positive constant whose input the walk rounded anew and whose output the judged model
quantizes (HardSwish's ``/ 6``) is taken into the quantization of its input's writer: that writer
quantizes straight onto the output's grid at ``k`` times its step, one rounding instead of two, and the
division no longer runs in float.

Every reader of a newly quantized tensor reads it rounded; a reader of an already quantized tensor that
read it in float reads it rounded too where it now runs in integer. A tensor without a calibrated range,
a model output and a tensor computed from constants stay float. Scales are the run's amax / 127,
symmetric, except for one-sided tensors: a Relu's output, or a Clip's from 0 whose upper bound lies
beyond the tensor's range, takes the unsigned grid (``amax / 255`` steps from 0, uint8 zero point 0),
whose saturation does the activation's clipping: no Clip is left to run, and the steps are half as
large. That holds for the judged model's own quantized Relu outputs too, which change grid here.

Each such rounding is one the judged Q/DQ model does not do, so this flavour's outputs differ from the
judged model's: :func:`make_fast` names every tensor whose rounding is new or on another grid, its node
and the nodes that read it rounded, and :func:`measure_rounding` measures, on images, how far the
rounding moves each of those tensors. Fidelity is still judged on the Q/DQ model; how far this
flavour's outputs stray from it is measured when the variant is evaluated (``timed_model``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantbench.export.conv_fold import fold_into_convs
from quantbench.export.onnxruntime_flavour import ZERO_POINT, activation_chain, clip_bounds
from quantbench.export.qdq import QdqNames, new_qdq_names, node_label, qdq_nodes
from quantbench.export.short_softmax import write_out_short_softmaxes
from quantbench.graph import (
    cleanup,
    constant_tensors,
    constant_values,
    consumers,
    initializers,
    producers,
    reader_nodes,
    set_initializer,
    tensor_names,
    toposort,
    unique_name,
)

CPU_FLAVOURS = ("exact", "fast")
"""``--cpu-flavour``: the same quantized values as the judged model, or this module's faster model."""

COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
"""Quantized ops whose outputs this flavour quantizes (ONNX Runtime has no integer ConvTranspose)."""

INTEGER_OPS = frozenset(
    {"Add", "Mul", "Sigmoid", "LeakyRelu", "GlobalAveragePool", "AveragePool", "Concat"}
    | {"Div", "Sub", "HardSigmoid", "HardSwish", "Resize"}
)
"""Ops whose output this flavour quantizes when all their activation inputs are: ONNX Runtime runs the
first group on integer kernels, the second in float between a DequantizeLinear and a QuantizeLinear,
in the integer ops' layout."""

SAME_SCALE_OPS = frozenset(
    {"Split", "MaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Relu", "Clip"}
)
"""Ops that only move or pick values: their outputs take their input's scale, so quantizing them rounds
nothing (ONNX Runtime then runs them on the uint8 values)."""

FIRST_INPUT_OPS = frozenset({"Reshape", "Slice", "Split", "Squeeze", "Unsqueeze", "Resize", "Clip"})
"""Ops whose only activation input is the first: the others are shapes, indices, sizes or bounds, even
where nodes compute them at run time."""

CONSTANT_OPERAND_OPS = ("Add", "Mul")
"""Ops whose constant operand is quantized too (per tensor, symmetric int8), which ONNX Runtime's
QLinearAdd and QLinearMul need."""

UNSIGNED_ZERO_POINT = -128
"""The int8 zero point of the unsigned grid: codes -128..127 hold 0..255 steps."""

REGRID_LIMIT = 1.0
"""A same-scale op's output that the judged model quantizes on its own grid takes its input's grid (and
the op runs on the codes) where the input's steps are at most this many times its own: never coarser.
At 2.0, two of YOLOv8n's C2f Split halves took their input's grid and the fast model's detection F1
fell from 96.0 to 94.1 % on 48 held-out images (2.5: 88.0 %) for 0.1-0.3 ms."""

ACTIVATIONS = ("Relu", "Clip")
"""Activations the exact flavour already turns into an integer Clip behind a quantized output."""


@dataclass
class Rounding:
    """One tensor that the fast flavour's readers see rounded where the judged model's see it in float.

    Attributes:
        tensor: the tensor's name in the FP32 model.
        node: the node that writes it.
        op: that node's op type.
        readers: the nodes that now read it rounded.
        new: True where the tensor had no quantization at all; False where it had one (for other
            readers, or on the other grid).
        grid: ``int8`` (``amax / 127`` steps either side of 0, as the judged model's) or ``uint8``
            (``amax / 255`` steps from 0: one-sided tensors).
        rel_error: ``||x - dq(q(x))|| / ||x||`` on the images of :func:`measure_rounding` (None: not
            measured).
    """

    tensor: str
    node: str
    op: str
    readers: list[str]
    new: bool
    grid: str = "int8"
    rel_error: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "tensor": self.tensor,
            "node": self.node,
            "op": self.op,
            "readers": self.readers,
            "new": self.new,
            "grid": self.grid,
            "rel_error": self.rel_error,
        }


@dataclass
class FastModel:
    """A Q/DQ model with the fast flavour's extra quantization (not yet reshaped for ONNX Runtime).

    Attributes:
        model: the model: the judged Q/DQ model, with the roundings of ``changes``.
        names: tensor -> Q/DQ names, the judged model's and the new ones.
        changes: every rounding the judged model does not do, in graph order.
        scales: tensor -> its quantization scale, for each of ``changes``.
        zero_points: tensor -> its int8 zero point where not 0 (the unsigned grid's -128).
        images: how many images the roundings were measured on (None: not measured).
        rewritten: the float ops written another way (:mod:`quantbench.export.short_softmax`), a line
            each: the same function, other float rounding.
        divisions: the divisions by a constant taken into the quantization before them, a line each: one
            rounding fewer than the walk gave them.
    """

    model: onnx.ModelProto
    names: dict[str, QdqNames]
    changes: list[Rounding] = field(default_factory=list)
    scales: dict[str, float] = field(default_factory=dict)
    zero_points: dict[str, int] = field(default_factory=dict)
    images: int | None = None
    rewritten: list[str] = field(default_factory=list)
    divisions: list[str] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        """What ``results.json`` records: the flavour, every rounding it adds (largest error first where
        measured) and the images the errors were measured on (None: not measured)."""
        ordered = sorted(self.changes, key=lambda c: -(c.rel_error if c.rel_error is not None else -1.0))
        return {
            "name": "fast",
            "tensors_rounded": len(self.changes),
            "measured_on_images": self.images,
            "roundings": [c.as_dict() for c in ordered],
            "rewritten": list(self.rewritten),
            "divisions": list(self.divisions),
        }


class _Graph:
    """What the walk needs to know of the Q/DQ graph: who reads and writes what, and what is quantized."""

    def __init__(self, graph: onnx.GraphProto, names: Mapping[str, QdqNames], amax: Mapping[str, float]):
        self.graph = graph
        self.amax = dict(amax)
        self.exact: set[str] = set()
        self.fixed = constant_tensors(graph)
        self.outputs = {o.name for o in graph.output}
        self.uses = consumers(graph)
        self.reader_nodes = reader_nodes(graph)
        self.writer = producers(graph)  # node indices stay: the walk rewires inputs, inserts come last
        self.source = {qn.dequantized: tensor for tensor, qn in names.items()}
        self.quantized = set(names)
        self.constants = constant_values(graph)
        self.unsigned: set[str] = set()
        self.regrid: dict[str, str] = {}
        """A judged quantized output of a same-scale op -> the input whose grid it takes."""

    def one_sided(self, tensor: str, node: onnx.NodeProto) -> bool:
        """Whether ``tensor``, written by ``node``, is a Relu's or a Clip-from-0's output whose range lies
        within the activation's bounds: the unsigned grid's own saturation then does the clipping."""
        if node.op_type not in ACTIVATIONS:
            return False
        bounds = clip_bounds(self.constants, node)
        amax = self.amax.get(tensor)
        return bounds is not None and bounds[0] == 0 and amax is not None and bounds[1] >= amax

    def constant_operands(self, node: onnx.NodeProto) -> list[tuple[int, str]] | None:
        """The constant inputs of an Add or Mul, to quantize with it (empty for other ops); None where
        one cannot be (not a float32 value read from the graph, or all zero)."""
        if node.op_type not in CONSTANT_OPERAND_OPS:
            return []
        found = []
        for j, name in enumerate(node.input):
            if name in self.fixed:
                value = self.constants.get(name)
                if value is None or value.dtype != np.float32 or not np.abs(value).max(initial=0) > 0:
                    return None
                found.append((j, name))
        return found

    def reads(self, node: onnx.NodeProto) -> list[str]:
        """The float tensors behind ``node``'s activation inputs (a dequantized input counts as its
        tensor); a Clip's bounds, a Resize's sizes and other constants are not activations."""
        inputs = node.input[:1] if node.op_type in FIRST_INPUT_OPS else node.input
        return [self.source.get(x, x) for x in inputs if x and x not in self.fixed]

    def readers(self, tensor: str) -> list[int]:
        """Nodes reading ``tensor`` in float (not through its DequantizeLinear), once each."""
        return sorted(
            {i for i, _ in self.uses.get(tensor, []) if self.graph.node[i].op_type != "QuantizeLinear"}
        )

    def can_quantize(self, tensor: str) -> bool:
        value = self.amax.get(tensor)
        usable = value is not None and bool(np.isfinite(value)) and value > 0
        return (
            usable
            and tensor not in self.outputs
            and tensor not in self.fixed
            and tensor not in self.quantized
        )

    def can_regrid(self, tensor: str, source: str) -> bool:
        """Whether ``tensor``, a same-scale op's output that the judged model quantizes on its own grid,
        may take its input ``source``'s grid instead (so that the op runs on the codes): where the input's
        steps are at most ``REGRID_LIMIT`` times its own."""
        own, wide = self.amax.get(tensor), self.amax.get(source)
        if own is None or wide is None or not own > 0 or tensor in self.exact or tensor in self.regrid:
            return False
        own_step = own / (255.0 if tensor in self.unsigned else 127.0)
        wide_step = wide / (255.0 if source in self.unsigned else 127.0)
        return tensor in self.quantized and tensor in self.writer and wide_step <= REGRID_LIMIT * own_step

    def target(self, node: onnx.NodeProto) -> str:
        """The tensor to quantize behind a compute node: its output, or its activation's when that
        activation is the output's only reader (a Relu or Clip, or the Min of the output and a bound per
        channel that cross-layer equalization writes before the Relu of a ReLU6: the CPU model then takes
        that Min on the activation's codes, as the exact flavour does)."""
        y = node.output[0]
        chain = activation_chain(self.graph, self.reader_nodes, self.constants, self.outputs, y)
        return str(self.graph.node[chain[-1]].output[0]) if chain else str(y)


def _choose(g: _Graph) -> tuple[dict[str, int], set[int]]:
    """The tensors to quantize (-> the node that writes them) and the nodes that run in integer."""
    writer = g.writer
    added: dict[str, int] = {}
    integer: set[int] = set()
    judged = set(g.quantized)
    g.unsigned = {t for t in judged if t in writer and g.one_sided(t, g.graph.node[writer[t]])}
    for i, node in enumerate(g.graph.node):
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or node.domain not in ("", "ai.onnx"):
            continue
        reads = g.reads(node)
        if not reads or not all(x in g.quantized for x in reads) or g.constant_operands(node) is None:
            continue
        if node.op_type in COMPUTE_OPS:
            targets = [g.target(node)]
        elif node.op_type in SAME_SCALE_OPS:
            targets = [name for name in node.output if name]
            for name in targets:
                if name not in g.quantized and reads[0] in g.amax:
                    g.amax[name] = g.amax[reads[0]]
                    g.exact.add(name)
                    if reads[0] in g.unsigned:
                        g.unsigned.add(name)
                elif g.can_regrid(name, reads[0]):
                    g.amax[name] = g.amax[reads[0]]
                    g.regrid[name] = reads[0]
                    g.unsigned.discard(name)
                    if reads[0] in g.unsigned:
                        g.unsigned.add(name)
        elif node.op_type in INTEGER_OPS and len(node.output) == 1:
            targets = [node.output[0]]
        else:
            continue
        for target in targets:
            if g.can_quantize(target):
                g.quantized.add(target)
                added[target] = writer[target]
                if node.op_type in COMPUTE_OPS and g.one_sided(target, g.graph.node[writer[target]]):
                    g.unsigned.add(target)
        if all(target in g.quantized for target in targets):
            integer.add(i)
    # an element-wise output none of whose readers runs in integer is only rounded: drop it, and with
    # it the integer state of the nodes that read it, until nothing changes (a compute op's output
    # stays: its op runs in integer)
    changed = True
    while changed:
        changed = False
        for tensor, i in list(added.items()):
            compute = g.graph.node[i].op_type in COMPUTE_OPS
            if not compute and not any(r in integer for r in g.readers(tensor)):
                del added[tensor]
                g.quantized.discard(tensor)
                integer.discard(i)
                changed = True
        for i in list(integer):
            if not all(x in g.quantized for x in g.reads(g.graph.node[i])):
                integer.discard(i)
                changed = True
    g.unsigned &= judged | set(added)
    return added, integer


def make_fast(model: onnx.ModelProto, names: Mapping[str, QdqNames], amax: Mapping[str, float]) -> FastModel:
    """The judged Q/DQ model with the fast flavour's extra quantization (see the module docstring).

    Args:
        model: the Q/DQ model (TensorRT flavour, as written and judged); not modified.
        names: tensor -> Q/DQ names of ``model``.
        amax: tensor -> calibrated amax (the ranges the model was built from).

    Returns:
        The model to reshape with :func:`quantbench.export.onnxruntime_flavour.to_onnxruntime_flavour`,
        its names and the roundings it adds.
    """
    out = fold_into_convs(model)  # as the flavour will: so the walk sees the convolutions' readers
    rewritten = write_out_short_softmaxes(out)
    graph = out.graph
    g = _Graph(graph, names, amax)
    added, integer = _choose(g)
    all_names = dict(names)
    taken = tensor_names(graph)
    inserts: dict[int, list[onnx.NodeProto]] = {}
    for tensor, i in added.items():
        all_names[tensor] = new_qdq_names(graph, tensor, g.amax[tensor] / 127.0, taken)
        inserts.setdefault(i, []).extend(qdq_nodes(tensor, all_names[tensor]))
    changes = _rewire(g, all_names, added, integer)
    for change in changes:
        change.grid = "uint8" if change.tensor in g.unsigned else "int8"
    changes += _unsigned_grid(g, all_names, {c.tensor for c in changes})
    changes += _regrid(g, all_names, changes)
    inits = initializers(graph)  # after the grids changed
    scales = {c.tensor: float(numpy_helper.to_array(inits[all_names[c.tensor].scale])) for c in changes}
    changes += _quantize_constants(g, integer, taken, inserts)
    nodes = list(inserts.get(-1, []))
    for i, node in enumerate(graph.node):
        nodes.append(node)
        nodes.extend(inserts.get(i, []))
    del graph.node[:]
    graph.node.extend(nodes)
    toposort(graph)  # an old Q/DQ pair sits before its first quantized reader, maybe after a new one
    divisions = _absorb_divisions(graph, all_names, {c.tensor for c in changes if c.new})
    for tensor in divisions:
        del all_names[tensor]
        scales.pop(tensor, None)
        g.unsigned.discard(tensor)
    changes = [c for c in changes if c.tensor not in divisions]
    _split_on_codes(graph, all_names)
    cleanup(graph)
    zero_points = {t: UNSIGNED_ZERO_POINT for t in g.unsigned}
    return FastModel(
        out, all_names, changes, scales, zero_points, rewritten=rewritten, divisions=list(divisions.values())
    )


def _split_on_codes(graph: onnx.GraphProto, names: Mapping[str, QdqNames]) -> None:
    """Let a Split of a quantized tensor run on its codes where outputs of it go on grids of their own
    (YOLOv8n's C2f halves, each quantized for its convolution): such an output is written on the input's
    grid, which rounds nothing (its values are the input's), and added to zero before its own
    QuantizeLinear, which then reads the same values as before. ONNX Runtime splits the codes and moves
    those outputs to their grids on its integer Add, instead of dequantizing the whole input, splitting it
    in float and quantizing every output. Only where each output's one reader is a QuantizeLinear."""
    source = {qn.dequantized: qn for qn in names.values()}
    uses, inits, taken = reader_nodes(graph), initializers(graph), tensor_names(graph)
    inserts: dict[int, list[onnx.NodeProto]] = {}
    for i, node in enumerate(graph.node):
        if node.op_type != "Split" or node.input[0] not in source:
            continue
        qn, readers = source[node.input[0]], [uses.get(name, []) for name in node.output]
        if any(len(r) != 1 or graph.node[r[0]].op_type != "QuantizeLinear" for r in readers):
            continue
        grid = [inits[qn.scale], inits[qn.zero_point]]
        off_grid = [j for j, r in enumerate(readers) if not _same_grid(graph.node[r[0]], grid, inits)]
        if not off_grid:
            continue  # ONNX Runtime splits the codes already
        zero = unique_name(taken, f"{node.output[0]}_zero")
        graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
        nodes = _quantize_pair(zero, qn, taken)
        for j in off_grid:
            name = node.output[j]
            on_grid = unique_name(taken, f"{name}_on_input_grid")
            node.output[j] = on_grid
            nodes += _quantize_pair(on_grid, qn, taken)
            nodes.append(
                helper.make_node(
                    "Add", [nodes[-1].output[0], nodes[1].output[0]], [name], f"{on_grid}_requantize"
                )
            )
        inserts[i] = nodes
    ordered = []
    for i, node in enumerate(graph.node):
        ordered.append(node)
        ordered.extend(inserts.get(i, []))
    del graph.node[:]
    graph.node.extend(ordered)


def _quantize_pair(tensor: str, qn: QdqNames, taken: set[str]) -> list[onnx.NodeProto]:
    """A QuantizeLinear and a DequantizeLinear of ``tensor`` on ``qn``'s grid (new names for both outputs)."""
    codes, values = unique_name(taken, f"{tensor}_codes"), unique_name(taken, f"{tensor}_values")
    return qdq_nodes(tensor, QdqNames(qn.scale, qn.zero_point, codes, values))


def _same_grid(
    quantize: onnx.NodeProto, grid: list[onnx.TensorProto], inits: Mapping[str, onnx.TensorProto]
) -> bool:
    """Whether ``quantize`` uses the scale and zero point of ``grid`` (the same values, maybe other
    initializers)."""
    mine = [inits.get(name) for name in quantize.input[1:3]]
    return all(
        a is not None
        and a.data_type == b.data_type
        and np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))
        for a, b in zip(mine, grid, strict=True)
    )


def _absorb_divisions(graph: onnx.GraphProto, names: Mapping[str, QdqNames], new: set[str]) -> dict[str, str]:
    """Take each division by a positive constant ``k`` whose input ``t`` this flavour rounds anew and whose
    output ``z`` the judged model quantizes (HardSwish's ``/ 6``) into the quantization of ``t``'s writer:
    ``t`` is quantized on ``z``'s grid at ``k`` times its step, which gives ``z``'s codes with one rounding
    instead of two (``t``'s, then ``z``'s), and the division, ``t``'s DequantizeLinear and ``z``'s
    QuantizeLinear go. Returns ``t`` -> a line saying so, for each division taken; the nodes are dropped
    here, what they alone read is left to :func:`quantbench.graph.cleanup`."""
    writer, uses, constants = producers(graph), reader_nodes(graph), constant_values(graph)
    inits, outputs, taken = initializers(graph), {o.name for o in graph.output}, tensor_names(graph)
    behind = {qn.dequantized: t for t, qn in names.items() if t in new}
    drop: set[int] = set()
    absorbed: dict[str, str] = {}
    for i, node in enumerate(graph.node):
        k = _constant_divisor(node, constants)
        t, z = behind.get(node.input[0]) if k is not None else None, node.output[0]
        if t is None or k is None or z not in names or z in outputs or t in outputs:
            continue
        qt, qz = names[t], names[z]
        readers = {name: uses.get(name, []) for name in (qt.quantized, qt.dequantized, z)}
        if readers[qt.dequantized] != [i] or len(readers[qt.quantized]) != 1 or len(readers[z]) != 1:
            continue
        quantize_z = graph.node[readers[z][0]]
        if quantize_z.op_type != "QuantizeLinear" or quantize_z.output[0] != qz.quantized:
            continue
        step = float(numpy_helper.to_array(inits[qz.scale]))
        scale = unique_name(taken, f"{z}_scale_times_divisor")
        graph.initializer.append(numpy_helper.from_array(np.array(step * k, np.float32), scale))
        quantize_t = graph.node[writer[qt.quantized]]
        quantize_t.input[1], quantize_t.input[2] = scale, qz.zero_point
        quantize_t.output[0] = qz.quantized
        drop |= {writer[qt.dequantized], i, readers[z][0]}
        absorbed[t] = f"{node_label(node, i)}: the division by {k:g} taken into {t}'s quantization"
    kept = [node for i, node in enumerate(graph.node) if i not in drop]
    del graph.node[:]
    graph.node.extend(kept)
    return absorbed


def _constant_divisor(node: onnx.NodeProto, constants: Mapping[str, np.ndarray]) -> float | None:
    """The divisor of a Div by one positive, finite float32 constant; None for any other node."""
    if node.op_type != "Div" or len(node.input) != 2:
        return None
    value = constants.get(node.input[1])
    if value is None or value.size != 1 or value.dtype != np.float32:
        return None
    k = float(value.reshape(-1)[0])
    return k if 0 < k < np.inf else None


def _quantize_constants(
    g: _Graph, integer: set[int], taken: set[str], inserts: dict[int, list[onnx.NodeProto]]
) -> list[Rounding]:
    """Give the constant operands of the integer Add and Mul nodes int8 codes (per tensor, symmetric) and
    a DequantizeLinear, put first in the graph; one per constant, shared by its readers."""
    graph = g.graph
    made: dict[str, Rounding] = {}
    dequantized: dict[str, str] = {}
    for i in sorted(integer):
        node = graph.node[i]
        for j, name in g.constant_operands(node) or []:
            if name not in made:
                value = g.constants[name]
                scale = np.float32(np.abs(value).max() / 127.0)
                codes = np.clip(np.rint(value / scale), -127, 127).astype(np.int8)
                base = unique_name(taken, f"{name}_quantized")
                out = unique_name(taken, f"{name}_dequantized")
                graph.initializer.extend(  # uint8 with zero point 128, as the flavour stores activations
                    [
                        numpy_helper.from_array((codes.astype(np.int16) + ZERO_POINT).astype(np.uint8), base),
                        numpy_helper.from_array(np.array(scale, np.float32), f"{base}_scale"),
                        numpy_helper.from_array(np.array(ZERO_POINT, np.uint8), f"{base}_zero_point"),
                    ]
                )
                taken.update({f"{base}_scale", f"{base}_zero_point"})
                inserts.setdefault(-1, []).append(
                    helper.make_node(
                        "DequantizeLinear", [base, f"{base}_scale", f"{base}_zero_point"], [out], f"{base}_DQ"
                    )
                )
                error = np.linalg.norm(codes.astype(np.float64) * float(scale) - value) / np.linalg.norm(
                    value
                )
                made[name] = Rounding(name, name, "Constant", [], True, rel_error=float(error))
                dequantized[name] = out
            node.input[j] = dequantized[name]
            made[name].readers.append(node_label(node, i))
    return list(made.values())


def _unsigned_grid(g: _Graph, names: Mapping[str, QdqNames], recorded: set[str]) -> list[Rounding]:
    """Give the one-sided tensors (:meth:`_Graph.one_sided`, and what takes their codes unchanged) the
    unsigned grid: ``amax / 255`` steps from 0, int8 zero point -128 (uint8 0 in the flavour). Returns
    the roundings of the judged model's tensors that change grid and were not recorded yet."""
    graph, writer = g.graph, g.writer
    changes = []
    for tensor in sorted(g.unsigned, key=lambda t: writer.get(t, -1)):
        qn = names[tensor]
        set_initializer(graph, qn.scale, np.array(g.amax[tensor] / 255.0, np.float32))
        set_initializer(graph, qn.zero_point, np.array(UNSIGNED_ZERO_POINT, np.int8))
        if tensor in recorded or tensor in g.exact:
            continue
        changes.append(_grid_change(g, tensor, qn, "uint8"))
    return changes


def _grid_change(g: _Graph, tensor: str, qn: QdqNames, grid: str) -> Rounding:
    """The rounding of a judged model's quantized ``tensor`` that changes grid, read by the judged
    model's readers of its DequantizeLinear."""
    graph, w = g.graph, g.writer[tensor]
    readers = sorted({i for i, _ in g.uses.get(qn.dequantized, [])})
    labels = [node_label(graph.node[r], r) for r in readers]
    return Rounding(tensor, node_label(graph.node[w], w), graph.node[w].op_type, labels, False, grid=grid)


def _regrid(g: _Graph, names: Mapping[str, QdqNames], recorded: Sequence[Rounding]) -> list[Rounding]:
    """Give each of :attr:`_Graph.regrid`'s tensors its input's scale and zero point (copied, so that
    ONNX Runtime sees one grid and runs the op on the codes). A rounding already ``recorded`` for such a
    tensor gets every reader of its new grid; returns the roundings not recorded yet."""
    graph, writer = g.graph, g.writer
    inits = initializers(graph)
    known = {c.tensor: c for c in recorded}
    changes = []
    for tensor in sorted(g.regrid, key=lambda t: writer[t]):  # an input regridded itself comes first
        qn, source = names[tensor], names[g.regrid[tensor]]
        own, wide = ([numpy_helper.to_array(inits[name]).copy() for name in (n.scale, n.zero_point)]
                     for n in (qn, source))  # fmt: skip
        set_initializer(graph, qn.scale, wide[0])
        set_initializer(graph, qn.zero_point, wide[1])
        if all(np.array_equal(a, b) for a, b in zip(own, wide, strict=True)):
            continue  # the same grid (a Flatten of one tensor, say): nothing changes
        change = _grid_change(g, tensor, qn, "uint8" if tensor in g.unsigned else "int8")
        if tensor in known:  # recorded for its new integer readers: the judged ones read the new grid too
            earlier = known[tensor].readers
            known[tensor].readers = [*change.readers, *(r for r in earlier if r not in change.readers)]
        else:
            changes.append(change)
    return changes


def _rewire(
    g: _Graph, names: Mapping[str, QdqNames], added: Mapping[str, int], integer: set[int]
) -> list[Rounding]:
    """Point the readers that now see a tensor rounded at its DequantizeLinear: every reader of a new
    one, the integer readers of an old one. Returns the roundings, in the order of their tensors' writers."""
    graph, writer = g.graph, g.writer
    changes: list[Rounding] = []
    tensors = sorted(
        {t for t in names if t in added or any(r in integer for r in g.readers(t))},
        key=lambda t: writer.get(t, -1),
    )
    for tensor in tensors:
        new = tensor in added
        readers = [r for r in g.readers(tensor) if new or r in integer]
        if not readers:
            continue
        for r in readers:
            node = graph.node[r]
            for j, x in enumerate(node.input):
                if x == tensor:
                    node.input[j] = names[tensor].dequantized
        if tensor in g.exact:
            continue  # its values were rounded already: it takes its input's codes unchanged
        w = writer.get(tensor)
        node_name = node_label(graph.node[w], w) if w is not None else tensor
        op = graph.node[w].op_type if w is not None else "input"
        changes.append(Rounding(tensor, node_name, op, [node_label(graph.node[r], r) for r in readers], new))
    return changes


def measure_rounding(
    model: onnx.ModelProto,
    fast: FastModel,
    feeds: Sequence[Mapping[str, np.ndarray]],
    threads: int = 0,
) -> None:
    """Fill each change's ``rel_error``: the judged Q/DQ ``model`` run as written on ``feeds`` with the
    changed tensors as outputs, each rounded at its scale (int8, symmetric) and compared with itself.

    Raises:
        QuantbenchError: ONNX Runtime cannot run the model.
    """
    from quantbench.evaluation.errors import ErrorEnergy
    from quantbench.export import passes
    from quantbench.model import expose_tensors

    tensors = [c.tensor for c in fast.changes if c.tensor in fast.scales]
    if not tensors:
        return
    probe = expose_tensors(model, tensors)
    runner = passes.session(
        probe, threads, "the Q/DQ model", purpose="the fast CPU flavour", as_written=True, release=True
    )
    energy = {t: ErrorEnergy(exact=True) for t in tensors}
    for batch in feeds:
        for piece in passes.pieces(batch):
            for t, value in zip(tensors, runner.run(tensors, piece), strict=True):
                scale, zero = np.float32(fast.scales[t]), fast.zero_points.get(t, 0)
                rounded = (np.clip(np.rint(value / scale) + zero, -128, 127) - zero).astype(
                    np.float32
                ) * scale
                energy[t].update(value, rounded)
    for change in fast.changes:
        if change.tensor in energy:
            change.rel_error = energy[change.tensor].rel_l2()
    fast.images = sum(passes.batch_size(batch) for batch in feeds)
