"""Activation ranges searched on what the model computes from them: each quantized tensor's amax chosen,
among candidates around its calibrated one, to minimise the error the model makes from that tensor up to
the next quantized tensors, with that tensor alone quantized.

A calibration method looks at the tensor's own values; what matters is what the layers reading it make of
its rounding. A tensor's *region* is every node reachable from its readers without passing through another
quantized tensor: the nodes whose outputs change when it is rounded, up to where the next Q/DQ rounds them
again (or a graph output). The region runs alone in ONNX Runtime (its inputs: the tensor and the FP32
tensors it reads from outside), once per candidate, the tensor quantized in numpy as the Q/DQ model
quantizes it (symmetric int8, scale amax / 127, half to even); a candidate's error is the sum over the
region's ends of their error energy over their FP32 energy, each summed over the samples. The calibrated
amax stays unless a candidate leaves at most ``1 - MIN_GAIN`` of its error.

Why: YOLOv8n's second SiLU output (|x| up to 178, half its values below 0.28) has an mse range of 116
(the tensor's own error); the convolution reading it does best near 100, but after its SiLU, at the next
quantized tensors, the error is half as large at 58; with the searched ranges the mse model's detection
F1 against FP32 on 256 held-out images goes from 90.3 % to 94.4 % (README, "Range search on the zoo").

The samples are the first fitting samples, at most :data:`SAMPLES` and :data:`SAMPLE_VALUES` input
values. Tensors are searched in graph order, in groups whose FP32 values one pass exposes, piece by piece
(:mod:`quantbench.export.passes`), so memory follows a piece of a group, not the samples.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.export import passes
from quantbench.export.qdq import fake_quantize

if TYPE_CHECKING:
    import onnx

    from quantbench.export.qdq import QdqPlan

FACTORS = (0.35, 0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0, 3.0)
"""Candidates: the calibrated amax times these, none above the largest |x| calibration saw (itself one)."""
MIN_GAIN = 0.02
"""A candidate replaces the calibrated amax only where it leaves at most 98 % of its error."""
SAMPLES = 16
"""Most fitting samples the search runs on (the first ones)."""
SAMPLE_VALUES = 16 * 3 * 320 * 320
"""Input values the samples searched on hold at most (16 samples of 3x320; 3 pages of 3x736x736), at
least two samples: a large page holds many positions, and each candidate runs the model's regions."""
GROUP = 16
"""Tensors whose FP32 values one pass exposes at a time."""


@dataclass(frozen=True)
class Region:
    """What a quantized tensor's rounding reaches before the next quantized tensors.

    Attributes:
        tensor: the quantized tensor.
        nodes: the region's node indices, graph order.
        fed: the tensors it reads from outside (the quantized tensor first), constants left out.
        ends: the quantized tensors and graph outputs it writes, where its error is measured.
    """

    tensor: str
    nodes: list[int]
    fed: list[str]
    ends: list[str]


@dataclass
class RangeSearch:
    """The searched ranges of one set and what the search did.

    Attributes:
        amax: every tensor's amax, searched ones replaced.
        tensors: per searched tensor: ``tensor``, ``calibrated``, ``searched`` amax, ``error_ratio`` (the
            searched amax's region error over the calibrated one's; 1.0 where it stayed).
        samples: samples searched on.
        seconds: wall time of the search, which served ``sets`` sets at once.
        sets: the sets of ranges one search served.
    """

    amax: dict[str, float]
    tensors: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0
    sets: int = 1

    def choose(
        self, tensor: str, calibrated: float, options: Sequence[float], errors: Mapping[float, float]
    ) -> None:
        """Keep ``calibrated`` for ``tensor``, or the option with the least error where it leaves at most
        ``1 - MIN_GAIN`` of calibrated's (``errors``: amax -> error), and record it."""
        best = min(options, key=lambda a: errors[a])
        own = errors[calibrated]
        moved = own > 0 and errors[best] <= (1 - MIN_GAIN) * own
        chosen = best if moved else calibrated
        self.amax[tensor] = chosen
        ratio = errors[best] / own if moved else 1.0
        self.tensors.append(
            {"tensor": tensor, "calibrated": calibrated, "searched": chosen, "error_ratio": ratio}
        )

    def details(self) -> dict[str, Any]:
        """JSON-ready summary for ``results.json``: the tensors whose amax changed, and counts."""
        changed = [t for t in self.tensors if t["searched"] != t["calibrated"]]
        return {
            "searched": len(self.tensors),
            "changed": changed,
            "samples": self.samples,
            "seconds": round(self.seconds, 3),
            "sets": self.sets,
        }


def regions(graph: onnx.GraphProto, quantized: Sequence[str]) -> list[Region]:
    """The region of each quantized tensor (see the module docstring), in the order of ``quantized``;
    tensors whose readers reach no quantized tensor or graph output are left out."""
    from quantbench.graph import constant_tensors, reader_nodes

    readers, constants = reader_nodes(graph), constant_tensors(graph)
    boundary, outputs = set(quantized), {o.name for o in graph.output}
    found = []
    for tensor in quantized:
        nodes: set[int] = set()
        ends: dict[str, None] = {}
        stack = [tensor]
        while stack:
            for i in readers.get(stack.pop(), []):
                if i in nodes:
                    continue
                nodes.add(i)
                for out in graph.node[i].output:
                    if out in boundary or out in outputs:
                        ends[out] = None
                    if out and out not in boundary:
                        stack.append(out)
        if not ends:
            continue
        order = sorted(nodes)
        inside = {o for i in order for o in graph.node[i].output}
        reads = dict.fromkeys(n for i in order for n in graph.node[i].input if n)
        fed = [n for n in reads if n not in inside and n not in constants and n != tensor]
        found.append(Region(tensor, order, [tensor, *fed], list(ends)))
    return found


def candidates(calibrated: float, peak: float) -> list[float]:
    """The amax values tried: :data:`FACTORS` of ``calibrated`` below ``peak``, and ``peak`` (calibrated
    itself always)."""
    tried = {calibrated * f for f in FACTORS if calibrated * f < peak} | {calibrated, max(peak, 0.0)}
    return sorted(a for a in tried if a > 0)


def _energy(values: np.ndarray) -> float:
    """Σ x² of a float array (0 for other types: an end that is not a float tensor is not measured)."""
    if values.dtype.kind != "f":
        return 0.0
    flat = values.ravel()
    return float(np.dot(flat, flat))


class _Group:
    """A group of regions: their sessions (made on the first piece, when the fed tensors' types are
    known) and each candidate's error, summed over the pieces."""

    def __init__(self, model: onnx.ModelProto, regions: list[Region], tried: Mapping[str, list[float]]):
        from quantbench.graph import constant_tensors, initializers

        self.model, self.regions, self.tried = model, regions, tried
        constants = constant_tensors(model.graph)
        self.writers = {o: node for node in model.graph.node for o in node.output if o in constants}
        self.inits = initializers(model.graph)
        self.sessions: list[Any] = []
        self.errors = {r.tensor: np.zeros((len(tried[r.tensor]), len(r.ends))) for r in regions}
        self.energy = {r.tensor: np.zeros(len(r.ends)) for r in regions}

    def names(self) -> list[str]:
        """The FP32 tensors a pass must expose for the group."""
        return list(dict.fromkeys(n for r in self.regions for n in (*r.fed, *r.ends)))

    def _session(self, region: Region, values: Mapping[str, np.ndarray], threads: int) -> Any:
        from quantbench.graph import constant_nodes_for, node_reads, sub_model

        graph = self.model.graph
        nodes = [graph.node[i] for i in region.nodes]
        reads = [n for node in nodes for n in node_reads(node)]
        ordered = constant_nodes_for(graph, self.writers, reads) + nodes
        needed = dict.fromkeys(n for node in ordered for n in node_reads(node))
        weights = [self.inits[n] for n in needed if n in self.inits]
        types = {n: values[n].dtype for n in region.fed}
        part = sub_model(self.model, ordered, types, region.ends, weights, "region")
        return passes.session(part, threads, "a region of the model", purpose="range search", release=True)

    def add(self, values: Mapping[str, np.ndarray], threads: int) -> None:
        """One piece's FP32 values: every candidate's error at every region's ends."""
        if not self.sessions:
            self.sessions = [self._session(r, values, threads) for r in self.regions]
        for region, session in zip(self.regions, self.sessions, strict=True):
            feed = {n: values[n] for n in region.fed}
            want = [values[e] for e in region.ends]
            self.energy[region.tensor] += [_energy(w) for w in want]
            rounded = np.empty_like(values[region.tensor])
            for k, amax in enumerate(self.tried[region.tensor]):
                feed[region.tensor] = fake_quantize(values[region.tensor], amax, rounded)
                got = session.run(region.ends, feed)
                self.errors[region.tensor][k] += [_energy(g - w) for g, w in zip(got, want, strict=True)]

    def relative_errors(self, region: Region) -> np.ndarray:
        """Per candidate: the sum over the region's ends of their error energy over their FP32 energy,
        over every piece so far."""
        return (self.errors[region.tensor] / np.maximum(self.energy[region.tensor], 1e-30)).sum(axis=1)


def search_ranges(
    model: onnx.ModelProto,
    tables: Mapping[str, Mapping[str, float]],
    plan: QdqPlan,
    feeds: Sequence[Mapping[str, np.ndarray]],
    peaks: Mapping[str, float],
    threads: int = 0,
) -> dict[str, RangeSearch]:
    """The amax of every activation ``plan`` quantizes, for each set of ``tables``, searched on the first
    samples of ``feeds`` (:func:`sample_count`; see the module docstring). One search serves every set: a
    candidate's error does not depend on the set it came from, so each is measured once.

    Args:
        model: the FP32 model ``plan`` was made for.
        tables: label -> the calibrated ranges (tensor -> amax) of one set.
        plan: the Q/DQ plan: its activations are the tensors searched and the regions' ends.
        feeds: the fitting batches.
        peaks: tensor -> largest |x| seen in calibration (the largest candidate); missing: three times
            the calibrated amax.
        threads: ONNX Runtime threads (0: every core).

    Returns:
        label -> that set's search.

    Raises:
        QuantbenchError: ONNX Runtime cannot run the model or a region of it.
    """
    from quantbench.model import expose_tensors

    started = time.time()
    options = {
        label: {
            tensor: candidates(amax, peaks.get(tensor, 3 * amax))
            for tensor, amax in table.items()
            if amax > 0
        }
        for label, table in tables.items()
    }
    found = [
        r
        for r in regions(model.graph, list(plan.activations))
        if any(r.tensor in o for o in options.values())
    ]
    tried = {r.tensor: sorted({a for o in options.values() for a in o.get(r.tensor, [])}) for r in found}
    results = {label: RangeSearch(dict(table), sets=len(tables)) for label, table in tables.items()}
    samples = 0
    for start in range(0, len(found), GROUP):
        group = _Group(model, found[start : start + GROUP], tried)
        names = group.names()
        runner = passes.session(
            expose_tensors(model, names), threads, "the FP32 model", purpose="range search", release=True
        )
        samples = 0
        for batch in _first(feeds, sample_count(feeds)):
            for piece in passes.pieces(batch):
                group.add(dict(zip(names, runner.run(names, piece), strict=True)), threads)
                samples += passes.batch_size(piece)
        del runner
        for region in group.regions:
            errors = dict(zip(tried[region.tensor], group.relative_errors(region), strict=True))
            for label, table in tables.items():
                if region.tensor in options[label]:
                    results[label].choose(
                        region.tensor, table[region.tensor], options[label][region.tensor], errors
                    )
    for result in results.values():
        result.samples, result.seconds = samples, time.time() - started
    return results


def sample_count(feeds: Sequence[Mapping[str, np.ndarray]]) -> int:
    """How many of the first samples of ``feeds`` the search runs on (:data:`SAMPLES`,
    :data:`SAMPLE_VALUES`)."""
    if not feeds:
        return 0
    per_sample = sum(int(np.prod(value.shape[1:])) for value in feeds[0].values())
    return max(2, min(SAMPLES, SAMPLE_VALUES // max(per_sample, 1)))


def _first(feeds: Sequence[Mapping[str, np.ndarray]], count: int) -> list[dict[str, np.ndarray]]:
    """The first ``count`` samples of ``feeds``, as batches."""
    out, left = [], count
    for batch in feeds:
        if left <= 0:
            break
        size = passes.batch_size(batch)
        out.append({name: value[:left] for name, value in batch.items()})
        left -= min(size, left)
    return out
