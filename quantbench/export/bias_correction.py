"""Sequential empirical bias correction of a Q/DQ INT8 model.

Quantizing weights and activations shifts the mean of each convolution's output. For every corrected
Conv, ConvTranspose or Gemm, in graph order, the per-output-channel mean of its output is measured in
the FP32 model and in the Q/DQ model on a few calibration samples, and ``mean_fp32 - mean_int8`` is
added to its float bias (divided by ``beta`` for Gemm). The Q/DQ means are measured with every earlier
correction applied: correcting all layers from one pass over-corrects, because each layer's shift
already contains the shifts of the layers before it.

Measuring layer by layer on the whole model would cost one full pass per layer. Instead the graph is
cut into segments at positions of the node list where few activation tensors are live (produced
before, read after): a cut just before and just after each corrected node, where the graph allows.
The tensors live at a cut are kept for the correction samples, so each segment runs on its own: once
per corrected node inside it (the biases are graph inputs, fed with their current values), then once
more to compute its outputs for the next segment. Between two corrected nodes, the cut is placed where
the live tensors take the fewest bytes: most often between a QuantizeLinear and its DequantizeLinear,
so the int8 codes are kept instead of the float values dequantized from them (a quarter of the memory;
the segment after the cut dequantizes them itself). With cuts both sides of every corrected node, the
whole correction costs about one pass of the model plus one more of each corrected node.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.calibration.means import ChannelMeans
from quantbench.data.store import BatchStore
from quantbench.errors import QuantbenchError
from quantbench.evaluation.errors import ErrorEnergy
from quantbench.export import passes
from quantbench.export.passes import pieces, run_whole
from quantbench.graph import (
    cleanup,
    constant_nodes_for,
    initializers,
    node_reads,
    producers,
    reader_nodes,
    set_initializer,
    sub_model,
    tensor_names,
    unique_name,
)

if TYPE_CHECKING:
    import onnx

    from quantbench.export.judge import CheckJudge, CorrectionData, Figures

CORRECTED_OPS = ("Conv", "ConvTranspose", "Gemm")
MAX_LIVE = 4
"""A position of the node list is a cut candidate when at most this many activation tensors cross it. With
2, PP-OCRv4 det (whose backbone keeps four scales alive for its neck) had 18 segments for 64 corrected
nodes and each node's run repeated most of one long segment: 29 s on 8 pages; with 4, 68 segments, 4 s,
the same corrected model."""
CACHE_BYTES = 384 << 20
"""The most bytes of tensors at the cuts kept in memory; more go to temporary files
(:class:`~quantbench.data.store.BatchStore`)."""


@dataclass
class NodeCorrection:
    """The correction of one node.

    Attributes:
        node: the node's label (its name, else ``<op>:<output>``).
        output: its output tensor.
        channels: output channels corrected.
        max_abs: the largest ``|mean_fp32 - mean_int8|`` added to a channel's bias (after ``/ beta``).
        relative: ``max_abs`` over the largest |bias| before correction (None for a zero bias).
        added_bias: the node had no bias and was given one.
    """

    node: str
    output: str
    channels: int
    max_abs: float
    relative: float | None
    added_bias: bool = False


@dataclass
class BiasCorrection:
    """What :func:`correct_biases` did.

    Attributes:
        model: the corrected Q/DQ model (a new model; the input is not modified), or with
            ``rejected`` the input model itself.
        nodes: one entry per corrected node, in graph order.
        skipped: (node label, reason) for the requested nodes left as they were.
        samples: correction samples used.
        segments: segments the graph was run in.
        seconds: wall-clock time of the correction.
        output_rel_l2: relative L2 error of the model outputs against FP32 on the check samples,
            before and after (from :func:`correct_if_better`).
        decision: the headline the keep-or-reject decision was made on, before and after, and the check
            samples (from :func:`correct_if_better`).
        rejected: the correction did not improve the headline, and the model was left as it was.
    """

    model: onnx.ModelProto
    nodes: list[NodeCorrection] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    samples: int = 0
    segments: int = 0
    seconds: float = 0.0
    output_rel_l2: tuple[float, float] | None = None
    decision: dict[str, Any] | None = None
    rejected: bool = False

    def details(self) -> dict[str, Any]:
        """A JSON-ready summary for a variant's details."""
        relative = [c.relative for c in self.nodes if c.relative is not None]
        before_after = self.output_rel_l2
        return {
            "applied": not self.rejected,
            "output_rel_l2_before": before_after[0] if before_after else None,
            "output_rel_l2_after": before_after[1] if before_after else None,
            "decision": self.decision,
            "images": self.samples,
            "nodes": len(self.nodes),
            "added_biases": sum(c.added_bias for c in self.nodes),
            "largest_relative_correction": max(relative, default=None),
            "segments": self.segments,
            "seconds": round(self.seconds, 3),
            "skipped": [f"{label}: {reason}" for label, reason in self.skipped],
        }


def _label(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type}:{node.output[0]}"


@dataclass
class _Target:
    """A node whose bias is corrected.

    Attributes:
        node: the node, in the model being corrected.
        bias: its bias initializer; None for a node without a bias until :func:`_private_biases`
            gives it one.
        scale: 1 / beta, what a change of the output's mean is multiplied by to move the bias.
        axis: the channel axis of its output (-1 for Gemm, else 1).
    """

    node: onnx.NodeProto
    bias: str | None
    scale: float
    axis: int


def _bias_input(node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto]) -> tuple[str | None, float, str]:
    """(bias name or None when it has to be added, 1/beta, '' or the reason to skip it)."""
    from onnx import TensorProto, helper

    if node.op_type not in CORRECTED_OPS:
        return None, 1.0, f"{node.op_type} has no bias input"
    beta = 1.0
    if node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        beta = float(attrs.get("beta", 1.0))
        if beta == 0.0:
            return None, 1.0, "Gemm with beta 0 ignores its bias"
    bias = node.input[2] if len(node.input) > 2 else ""
    if not bias:
        return None, 1.0 / beta, ""
    init = inits.get(bias)
    if init is None:
        return None, 1.0, "the bias is not an initializer"
    if init.data_type != TensorProto.FLOAT or len(init.dims) != 1:
        return None, 1.0, "the bias is not a 1-D float32 initializer"
    return bias, 1.0 / beta, ""


def _constant_biases_to_initializers(graph: onnx.GraphProto) -> None:
    """Turn each Constant node that only feeds the bias input of Conv, ConvTranspose or Gemm nodes into
    an initializer of the same name and value, so that bias can be corrected like any other (exporters
    write biases either way)."""
    from onnx import numpy_helper

    readers = reader_nodes(graph)
    bias_inputs = {n.input[2] for n in graph.node if n.op_type in CORRECTED_OPS and len(n.input) > 2}
    folded = []
    for index, node in enumerate(graph.node):
        if node.op_type != "Constant" or len(node.output) != 1 or node.output[0] not in bias_inputs:
            continue
        readers_of = [graph.node[i] for i in readers.get(node.output[0], [])]
        value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
        if value is None or not all(r.op_type in CORRECTED_OPS for r in readers_of):
            continue
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(value), node.output[0]))
        folded.append(index)
    for index in reversed(folded):
        del graph.node[index]


def correctable_outputs(model: onnx.ModelProto) -> dict[str, int]:
    """Output name -> channel axis of every node whose bias this module can correct (by op type; the
    bias itself is checked when correcting)."""
    return {
        node.output[0]: _channel_axis(node)
        for node in model.graph.node
        if node.op_type in CORRECTED_OPS and node.domain in ("", "ai.onnx") and node.output
    }


def _channel_axis(node: onnx.NodeProto) -> int:
    """The channel axis of a corrected node's output: the last for Gemm, 1 for convolutions."""
    return -1 if node.op_type == "Gemm" else 1


def _find_targets(
    graph: onnx.GraphProto, nodes: Iterable[str], skipped: list[tuple[str, str]]
) -> dict[str, _Target]:
    """Output name -> target, for the nodes of ``nodes`` that can be corrected; the others are added to
    ``skipped`` with the reason.

    Raises:
        QuantbenchError: a name that no node outputs first.
    """
    producer = producers(graph)
    inits = initializers(graph)
    targets: dict[str, _Target] = {}
    for name in dict.fromkeys(nodes):
        index = producer.get(name)
        node = graph.node[index] if index is not None else None
        if node is None or node.output[0] != name:
            raise QuantbenchError(f"bias correction: no node of the model outputs {name!r}")
        bias, scale, reason = _bias_input(node, inits)
        if reason:
            skipped.append((_label(node), reason))
        else:
            targets[name] = _Target(node, bias, scale, _channel_axis(node))
    return targets


def _fp32_means(
    fp32_model: onnx.ModelProto,
    targets: dict[str, _Target],
    feeds: Sequence[Mapping[str, np.ndarray]],
    threads: int,
) -> dict[str, np.ndarray]:
    """Per-channel means of every target's output in the FP32 model, over ``feeds`` in runs of
    :data:`~quantbench.export.passes.PIECE` samples: one pass where a piece's target outputs are small,
    else one pass per group of them (:class:`~quantbench.calibration.exposure.Exposure`)."""
    from quantbench.calibration.exposure import Exposure

    names = list(targets)
    means = {name: ChannelMeans() for name in names}
    graph_inputs = [v.name for v in fp32_model.graph.input]
    exposure = Exposure(fp32_model, names, graph_inputs, threads, purpose="bias correction")
    for batch in feeds:
        for piece in pieces(batch):
            for values in exposure.runs(piece):
                for name, (y, _) in values.items():
                    means[name].add(y, targets[name].axis)
                values.clear()  # this group's outputs go before the next part runs
    return {name: m.mean() for name, m in means.items()}


def _private_biases(
    graph: onnx.GraphProto, targets: dict[str, _Target], expected: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], set[str]]:
    """Give every target a bias of its own, to be fed as a graph input while correcting.

    A bias read by that node alone stays where it is; a bias shared with other nodes is copied, and a
    node without one gets a new one of zeros (as long as its output has channels). Each target's
    ``bias`` is set to the private one.

    Returns:
        (private bias name -> its current value in float32, outputs of the nodes given a new bias).
    """
    from onnx import numpy_helper

    inits = initializers(graph)
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node_reads(node):
            uses[name] = uses.get(name, 0) + 1
    taken = tensor_names(graph)
    biases: dict[str, np.ndarray] = {}
    added: set[str] = set()
    for name, target in targets.items():
        bias = target.bias
        if bias is not None and uses.get(bias, 0) == 1:
            private = bias
        else:
            private = unique_name(taken, f"{name}_bias")
            graph.initializer.append(numpy_helper.from_array(np.zeros(0, np.float32), private))
            while len(target.node.input) < 3:
                target.node.input.append("")
            target.node.input[2] = private
        if bias is None:
            added.add(name)
        start = numpy_helper.to_array(inits[bias]) if bias is not None else np.zeros(len(expected[name]))
        biases[private] = start.astype(np.float32).reshape(-1)
        target.bias = private
    return biases, added


@dataclass
class _Layout:
    """Where the graph is cut into segments (see the module docstring).

    Attributes:
        dynamic: the nodes that depend on the graph inputs or on the biases, in graph order. Cuts are
            positions in this list: cut ``p`` comes just before ``dynamic[p]``.
        constants: tensors computed from initializers alone (initializers other than the biases, and
            the outputs of the nodes that read only those).
        last: tensor -> position of the last dynamic node that reads it.
        bounds: the cuts, sorted, from 0 to ``len(dynamic)``.
    """

    dynamic: list[onnx.NodeProto]
    constants: set[str]
    last: dict[str, int]
    bounds: list[int]


SHAPE_OPS = frozenset({"Shape", "Size"})
"""Ops whose output describes their input rather than holding its values: no batch axis."""


def _layout(
    graph: onnx.GraphProto,
    graph_inputs: list[str],
    feed_names: set[str],
    targets: dict[str, _Target],
    max_live: int,
) -> _Layout:
    """Split the nodes into constant-only and dynamic ones, and cut the dynamic ones around the targets
    where at most ``max_live`` activation tensors cross, none of them without a batch axis.

    Segments run on pieces of a batch, each cached tensor sliced along its first axis, so a tensor that
    has no batch axis must not cross a cut: one computed from shapes alone (a Shape's output, the anchor
    grid a detector computes from its input's size) is computed again by each piece's segment. A tensor
    has a batch axis where it is a graph input or some input of the node writing it has one, unless that
    node is one of :data:`SHAPE_OPS`."""
    constants = {init.name for init in graph.initializer if init.name not in feed_names}
    dynamic: list[onnx.NodeProto] = []
    for node in graph.node:
        reads = node_reads(node)
        constant = all(n in constants for n in reads) and not any(a.HasField("g") for a in node.attribute)
        if constant and (reads or node.op_type == "Constant"):
            constants.update(o for o in node.output if o)
        else:
            dynamic.append(node)
    batched = set(graph_inputs)
    for node in dynamic:
        if node.op_type not in SHAPE_OPS and any(n in batched for n in node_reads(node)):
            batched.update(o for o in node.output if o)
    made = {name: -1 for name in graph_inputs}
    last: dict[str, int] = {}
    for i, node in enumerate(dynamic):
        for name in node_reads(node):
            if name not in constants and name not in feed_names:
                last[name] = i
        made.update((o, i) for o in node.output if o)
    narrow = {node.output[0] for node in dynamic if node.op_type == "QuantizeLinear"}
    crossing = np.zeros(len(dynamic) + 2, np.int64)  # tensors live at position p (before dynamic[p])
    blocked = np.zeros(len(dynamic) + 2, np.int64)  # and those of them without a batch axis
    load = np.zeros(len(dynamic) + 2, np.int64)  # and their bytes per value, summed
    for name, end in last.items():
        start, size = made.get(name, -1) + 1, 1 if name in narrow else 4
        crossing[start] += 1
        crossing[end + 1] -= 1
        if name not in batched:
            blocked[start] += 1
            blocked[end + 1] -= 1
        load[start] += size
        load[end + 1] -= size
    crossing, load, blocked = np.cumsum(crossing), np.cumsum(load), np.cumsum(blocked)
    allowed = [
        p
        for p in range(len(dynamic) + 1)
        if p in (0, len(dynamic)) or (crossing[p] <= max_live and not blocked[p])
    ]
    position = {id(node): i for i, node in enumerate(dynamic)}
    at = sorted(position[id(target.node)] for target in targets.values())
    cuts = {0, len(dynamic)}
    for k, i in enumerate(at):
        # between the neighbouring targets, the cut whose tensors take the fewest bytes (int8 codes
        # rather than the float values dequantized from them), nearest the target on a tie
        before = [p for p in allowed if (at[k - 1] if k else -1) < p <= i] or [
            max(p for p in allowed if p <= i)
        ]
        after = [p for p in allowed if i < p <= (at[k + 1] if k + 1 < len(at) else len(dynamic))]
        cuts.add(min(before, key=lambda p: (load[p], -p)))
        cuts.add(min(after or [min(p for p in allowed if p > i)], key=lambda p: (load[p], p)))
    return _Layout(dynamic, constants, last, sorted(cuts))


@dataclass
class _Segment:
    """The dynamic nodes between two cuts, as a model of their own.

    Attributes:
        model: those nodes, after the constant-only nodes they need.
        fed: its graph inputs (tensors of earlier segments, graph inputs, biases), in reading order.
        outputs: the tensors it computes that later segments read.
        targets: outputs of the corrected nodes in it, in graph order.
    """

    model: onnx.ModelProto
    fed: list[str]
    outputs: list[str]
    targets: list[str]


class _Segments:
    """Runs the segments of a layout in order on the correction samples.

    The tensors that cross the next cut are kept per batch (``cache``); the biases are fed from
    ``biases`` as they are at each run, so that every run sees the corrections made before it.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        layout: _Layout,
        biases: dict[str, np.ndarray],
        cache: BatchStore,
        corrected: set[str],
        threads: int,
    ) -> None:
        self.model = model
        self.layout = layout
        self.biases = biases
        self.cache = cache
        self.corrected = corrected
        self.threads = threads
        self.inits = initializers(model.graph)
        self.const_producer = {
            o: node for node in model.graph.node for o in node.output if o in layout.constants
        }

    def build(self, begin: int, end: int) -> _Segment:
        """The segment between cuts ``begin`` and ``end``."""
        layout = self.layout
        part = layout.dynamic[begin:end]
        produced = {o for node in part for o in node.output if o}
        reads = list(dict.fromkeys(n for node in part for n in node_reads(node)))
        outputs = [n for n in dict.fromkeys(produced) if layout.last.get(n, -1) >= end]
        seg_targets = [o for node in part for o in node.output[:1] if o in self.corrected]
        ordered = constant_nodes_for(self.model.graph, self.const_producer, reads) + part
        all_reads = {n for node in ordered for n in node_reads(node)}
        fed = [n for n in reads if n not in produced and n not in layout.constants]
        first = self.cache.get(0, [n for n in fed if n not in self.biases])
        dtype = {n: self.biases[n].dtype if n in self.biases else first[n].dtype for n in fed}
        del first
        weights = [self.inits[n] for n in all_reads if n in self.inits and n not in self.biases]
        outputs_and_targets = list(dict.fromkeys([*outputs, *seg_targets]))
        segment = sub_model(self.model, ordered, dtype, outputs_and_targets, weights, f"segment_{begin}")
        return _Segment(segment, fed, outputs, seg_targets)

    def up_to(self, segment: _Segment, target: str) -> _Segment:
        """``segment`` with only the nodes ``target`` depends on. A segment may hold many corrected nodes
        where no cut is allowed between them (YOLOv8n's detection head: 21 in one segment), and each of
        their runs computes only what its node reads, not every branch of the segment."""
        import onnx

        model = onnx.ModelProto()
        model.CopyFrom(segment.model)
        del model.graph.output[:]
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(target))
        cleanup(model.graph)
        reads = {n for node in model.graph.node for n in node_reads(node)}
        inputs = [v for v in model.graph.input if v.name in reads]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
        return _Segment(model, [n for n in segment.fed if n in reads], [], [target])

    def session(self, segment: _Segment) -> Any:
        """An ONNX Runtime session of ``segment``, or None when it has nothing to compute."""
        if not segment.outputs and not segment.targets:
            return None
        return passes.session(
            segment.model, self.threads, "a segment of the model", as_written=True, release=True
        )

    def _feeds(self, segment: _Segment, index: int) -> Iterator[dict[str, np.ndarray]]:
        """The pieces of cached batch ``index`` (:func:`~quantbench.export.passes.pieces`), each with the
        biases' current values."""
        cached = self.cache.get(index, [n for n in segment.fed if n not in self.biases])
        for piece in pieces(cached):
            yield {n: self.biases[n] if n in self.biases else piece[n] for n in segment.fed}

    def run(self, segment: _Segment, session: Any, names: list[str]) -> Iterator[list[np.ndarray]]:
        """``names`` computed by ``session`` for each piece of each batch, with the biases' current
        values."""
        for index in range(len(self.cache)):
            for feeds in self._feeds(segment, index):
                yield session.run(names, feeds)

    def advance(self, segment: _Segment, session: Any, end: int) -> None:
        """Keep what later segments read of ``segment``'s outputs; forget what no segment reads again.

        Batch by batch: a batch's stale tensors go as soon as its new ones are computed, so the cache
        holds the tensors of both cuts for one batch at a time, not for every batch."""
        for index in range(len(self.cache)):
            if segment.outputs:
                parts = [session.run(segment.outputs, feeds) for feeds in self._feeds(segment, index)]
                joined = (np.concatenate(p) for p in zip(*parts, strict=True))
                self.cache.update(index, dict(zip(segment.outputs, joined)))
                del parts
            self.cache.drop(index, [n for n in self.cache.names(index) if self.layout.last.get(n, -1) < end])


def _correct(
    name: str,
    target: _Target,
    expected: np.ndarray,
    outputs: Iterable[list[np.ndarray]],
    biases: dict[str, np.ndarray],
    added: bool,
) -> NodeCorrection:
    """Add ``(expected - mean) * target.scale`` to ``target``'s bias in ``biases``, where ``mean`` is the
    per-channel mean of its output over ``outputs`` (per batch, a one-element list holding that output).

    Returns:
        The node's entry of the summary.
    """
    assert target.bias is not None  # every target has a private bias by now
    means = ChannelMeans()
    for (y,) in outputs:
        means.add(y, target.axis)
    delta = (expected - means.mean()) * target.scale
    before = biases[target.bias].astype(np.float64)
    biases[target.bias] = (before + delta).astype(np.float32)
    peak = float(np.abs(before).max()) if before.size else 0.0
    largest = float(np.abs(delta).max())
    return NodeCorrection(
        _label(target.node), name, len(delta), largest, largest / peak if peak > 0 else None, added
    )


def correct_biases(
    fp32_model: onnx.ModelProto,
    qdq_model: onnx.ModelProto,
    nodes: Iterable[str],
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    threads: int = 0,
    max_live: int = MAX_LIVE,
    on_node: Callable[[], None] | None = None,
    fp32_means: dict[str, np.ndarray] | None = None,
) -> BiasCorrection:
    """Correct the biases of ``nodes`` of ``qdq_model`` sequentially (see the module docstring).

    Args:
        fp32_model: the FP32 model ``qdq_model`` was built from (its node outputs keep their names).
        qdq_model: the Q/DQ model (TensorRT flavour); not modified.
        nodes: output tensor names of the nodes to correct. Conv and ConvTranspose (channel axis 1) and
            Gemm (last axis) are corrected; a node without a bias gets a zero bias first (a Gemm's only
            as a 1-D bias of its N outputs); others, and biases that are not 1-D float32 initializers,
            are listed as skipped.
        feeds: the correction batches: input name -> array, the same inputs in every batch.
        threads: ONNX Runtime intra-op threads (0: every core).
        max_live: the most activation tensors a cut may cross (0: no cuts, one pass of the whole model
            per corrected node).
        on_node: called after each node is corrected.
        fp32_means: per-channel means of FP32 outputs on ``feeds`` measured before, by output name; the
            means measured here are added to it (a run shares one between its INT8 models).

    Returns:
        The corrected model with a summary per node.

    Raises:
        QuantbenchError: no batches, a batch without one of the model's inputs, a name in ``nodes``
            that no node of ``qdq_model`` outputs, or a model ONNX Runtime cannot run.
    """
    import onnx

    started = time.time()
    model = onnx.ModelProto()
    model.CopyFrom(qdq_model)
    graph = model.graph
    _constant_biases_to_initializers(graph)
    inits = initializers(graph)
    graph_inputs = [v.name for v in graph.input if v.name not in inits]
    if not feeds:
        raise QuantbenchError("bias correction needs at least one batch of samples")
    cache = BatchStore(CACHE_BYTES)  # the inputs, then the tensors at each cut
    samples = 0
    for batch in feeds:
        missing = [name for name in graph_inputs if name not in batch]
        if missing:
            raise QuantbenchError(f"bias correction: a batch has no value for input {missing[0]!r}")
        cache.append({name: batch[name] for name in graph_inputs})
        samples += len(batch[graph_inputs[0]]) if graph_inputs else 0
    result = BiasCorrection(model, samples=samples)
    targets = _find_targets(graph, nodes, result.skipped)
    if not targets:
        result.seconds = time.time() - started
        return result

    known = {} if fp32_means is None else fp32_means
    unmeasured = {name: target for name, target in targets.items() if name not in known}
    if unmeasured:
        known.update(_fp32_means(fp32_model, unmeasured, feeds, threads))
    expected = {name: known[name] for name in targets}
    biases, added = _private_biases(graph, targets, expected)
    layout = _layout(graph, graph_inputs, set(biases), targets, max_live)
    result.segments = len(layout.bounds) - 1
    segments = _Segments(model, layout, biases, cache, set(targets), threads)
    for begin, end in itertools.pairwise(layout.bounds):
        segment = segments.build(begin, end)
        session = segments.session(segment)
        for name in segment.targets:
            part = segments.up_to(segment, name) if len(segment.targets) > 1 else segment
            outputs = segments.run(part, session if part is segment else segments.session(part), [name])
            result.nodes.append(_correct(name, targets[name], expected[name], outputs, biases, name in added))
            if on_node is not None:
                on_node()
        segments.advance(segment, session, end)
        del session

    for bias, value in biases.items():
        set_initializer(graph, bias, value)
    cleanup(graph)  # a bias shared with an uncorrected node was copied
    result.seconds = time.time() - started
    return result


def output_rel_l2(
    model: onnx.ModelProto,
    reference: list[list[np.ndarray]],
    feeds: Sequence[Mapping[str, np.ndarray]],
    threads: int,
) -> float:
    """Relative L2 error of every output of ``model`` over ``feeds`` against ``reference``.

    The sums of squares are float64, over every element of every output; an all-zero reference gives
    the convention of :func:`quantbench.evaluation.errors.relative_l2` (0.0 when the outputs are all
    zero too, else inf).

    Args:
        model: the model to run.
        reference: per batch, the reference outputs in the model's output order.
        feeds: the batches.
        threads: ONNX Runtime intra-op threads (0: every core).
    """
    session = passes.session(model, threads, "a Q/DQ model", as_written=True, release=True)
    energy = ErrorEnergy(exact=True)
    for batch, expected in zip(feeds, reference):
        for got, want in zip(run_whole(session, None, batch), expected):
            energy.update(want, got)
    return energy.rel_l2()


def correct_if_better(
    fp32_model: onnx.ModelProto,
    qdq_model: onnx.ModelProto,
    nodes: Iterable[str],
    data: CorrectionData,
    *,
    threads: int = 0,
    judge: CheckJudge | None = None,
    before: Figures | None = None,
    shifted: Mapping[str, float] | None = None,
) -> BiasCorrection:
    """:func:`correct_biases` on ``data.fit``, kept only where it improves the headline on ``data.check``.

    Matching each layer's mean is not always what the outputs need: heavily clipped ranges (e.g. from
    ``entropy``) can come out worse, and on a detector the correction can improve the relative L2 error
    of the whole output (dominated by box coordinates) while class scores fall and detections vanish. So
    the corrected and the uncorrected model are judged against FP32 by the headline of the main output
    on the check batches (:class:`quantbench.export.judge.CheckJudge`); the corrected model is kept when
    its headline is better, or the same with a lower relative L2 error of the outputs (the finer figure
    breaks a tie). ``decision`` records both figures of both models.

    Args:
        judge: a judge of ``data`` made before (its FP32 outputs are reused); None: one is made.
        before: ``qdq_model``'s figures, where ``judge`` already has them.
        shifted: output name -> the constant ``fp32_model`` subtracts from that output where the judge's
            FP32 model does not (activation offsets, :mod:`quantbench.export.offsets`): the judge's
            means of those outputs are moved by it, and the means measured here of them are not kept
            for other models.

    Raises:
        QuantbenchError: as :func:`correct_biases`; a bad ``--task`` item.
    """
    from quantbench.export.judge import CheckJudge

    judge = judge or CheckJudge(fp32_model, data, threads)
    known = judge.fit_means
    if shifted:  # the judge's means of the outputs that moved, moved with them
        known = {name: mean - shifted[name] if name in shifted else mean for name, mean in known.items()}
    result = correct_biases(fp32_model, qdq_model, nodes, data.fit, threads=threads, fp32_means=known)
    if shifted:
        judge.fit_means.update({name: mean for name, mean in known.items() if name not in shifted})
    if not result.nodes:
        return result
    started = time.time()
    before = before or judge.figures(qdq_model)
    after = judge.figures(result.model)
    result.output_rel_l2 = (before.rel_l2, after.rel_l2)
    result.decision = judge.decision(before, after)
    if not judge.prefers(after, before):
        result.model, result.rejected = qdq_model, True
    result.seconds += time.time() - started
    return result
