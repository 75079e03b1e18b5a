"""Which quantized nodes hurt INT8: per-tensor fidelity and per-node sensitivity, ranked.

Everything here compares against one FP32 reference pass over a fixed set of samples, and builds the
INT8 models it needs in memory (:func:`quantbench.export.qdq.plan_qdq`,
:func:`~quantbench.export.qdq.build_qdq`, the ONNX Runtime flavour) with the same placement
``quantbench run`` uses, so what is measured is what ``--exclude`` builds.

* **Per-tensor fidelity** (:func:`analyse_tensors`): for every tensor the INT8 model quantizes, the
  relative L2 error and SNR of the dequantized value its consumers read, against the FP32 tensor on the
  same samples (``accumulated``: its own quantization plus everything upstream), and of quantizing the
  FP32 tensor alone with its range (``own``). The INT8 model runs in its TensorRT flavour, as written
  (ONNX Runtime's graph optimizations off), with every dequantized tensor exposed as an output: these
  are the Q/DQ graph's own values, not those of ONNX Runtime's fused integer kernels, which can differ
  (e.g. ONNX Runtime quantizes a fused convolution's float bias at the accumulator's step).
* **Per-node sensitivity** (:func:`node_sensitivity`): for each quantized Conv/ConvTranspose/Gemm/MatMul,
  the error of the model output with *only* that node quantized, and (second view) with every node
  quantized *but* that one; ranked by the first (:func:`rank`).

Cost, for K quantized nodes and S samples: one FP32 pass (with every quantized tensor exposed when the
per-tensor view is wanted), one INT8 pass for the per-tensor view, and K models per sensitivity view,
each built in memory (:class:`quantbench.search.candidates.Candidates`), loaded into ONNX Runtime and run on
the S samples.
EfficientNet-Lite0 (K = 50) with S = 32 on an idle 2-core machine: FP32 and per-tensor passes 3 s,
only view 13 s (0.27 s a model), without view 18 s (its models are mostly INT8, which takes longer
to build).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.errors import QuantbenchError
from quantbench.evaluation.errors import ErrorEnergy
from quantbench.search.candidates import Candidates

if TYPE_CHECKING:
    import onnx

    from quantbench.evaluation.headline import Headline
    from quantbench.evaluation.tasks import Task
    from quantbench.export.qdq import QdqPlan
    from quantbench.progress import Progress

SAMPLES = 32
"""Samples each sensitivity model runs on by default."""

VIEWS = ("only", "without")
"""Sensitivity views: only this node quantized; every node quantized but this one."""


@dataclass(frozen=True)
class Score:
    """Fidelity of a model's main output against FP32.

    Attributes:
        rel_l2: ||q - f|| / ||f|| over every element.
        top1_agreement: fraction of samples whose top class matches FP32's (None: not class scores).
        headline: the main output's headline metric (:class:`quantbench.evaluation.headline.Headline`:
            top-1 agreement, detection F1, IoU, sequence agreement or mean per-channel error); None where
            not measured.
        higher_is_better: the headline's direction.
    """

    rel_l2: float
    top1_agreement: float | None
    headline: float | None = None
    higher_is_better: bool = True

    def badness(self) -> tuple[float, float]:
        """How far from FP32, worst last: the headline turned so that higher is worse, then relative L2
        (NaN counts as the worst)."""
        value = self.headline
        if value is None:
            first = 0.0
        elif math.isnan(value):
            first = math.inf
        else:
            first = -value if self.higher_is_better else value
        return first, self.rel_l2 if math.isfinite(self.rel_l2) else math.inf


def main_output(outputs: dict[str, np.ndarray], task: Task | None = None) -> tuple[Headline, bool]:
    """The output fidelity is measured on, as a run's verdict picks it (the first output whose kind is
    not generic, else the first; see :class:`quantbench.evaluation.headline.Headline`).

    Returns:
        (its headline, whether it holds class scores of 10 classes or more, for top-1 agreement).
    """
    from quantbench.evaluation.headline import Headline
    from quantbench.evaluation.metrics import is_class_scores

    headline = Headline.of(outputs, task)
    return headline, is_class_scores(outputs[headline.output].shape)


class Evaluator:
    """Scores models against one FP32 reference pass over fixed batches.

    Attributes:
        feeds: the input batches, in order.
        reference: FP32's main output for each batch.
        headline: the main output and its headline metric.
        output: the main output's name.
        class_scores: whether it holds class scores (top-1 agreement is measured then).
        threads: ONNX Runtime threads (0: every core).
        models_run: models scored so far.
    """

    def __init__(
        self,
        feeds: list[dict[str, np.ndarray]],
        reference: list[np.ndarray],
        headline: Headline,
        class_scores: bool,
        threads: int = 0,
    ) -> None:
        self.feeds = feeds
        self.reference = reference
        self.headline = headline
        self.output = headline.output
        self.class_scores = class_scores
        self.threads = threads
        self.models_run = 0

    @classmethod
    def from_fp32(
        cls,
        model: onnx.ModelProto,
        feeds: list[dict[str, np.ndarray]],
        threads: int = 0,
        task: Task | None = None,
    ) -> Evaluator:
        """Run the FP32 model once over ``feeds`` and keep its main output as the reference (``task``:
        what the outputs hold and how they are judged).

        Raises:
            QuantbenchError: no batches, or ONNX Runtime cannot run the model.
        """
        from quantbench.backends.onnxruntime import SessionSettings, make_session

        if not feeds:
            raise QuantbenchError("no samples to analyse; give held-out images (--eval-images)")
        # as written, like the candidates: one with every node in float computes FP32's values exactly
        settings = SessionSettings(threads=threads, optimize=False)
        session = make_session(model, settings, "the FP32 model")
        names = [o.name for o in session.get_outputs()]
        outputs = [dict(zip(names, session.run(names, feed), strict=True)) for feed in feeds]
        headline, class_scores = main_output(outputs[0], task)
        return cls(feeds, [o[headline.output] for o in outputs], headline, class_scores, threads)

    @property
    def samples(self) -> int:
        """Samples in the batches."""
        return sum(len(r) for r in self.reference)

    def head(self, samples: int) -> Evaluator:
        """An evaluator on the first ``samples`` samples only, sharing this one's reference."""
        feeds, reference, left = [], [], samples
        for feed, ref in zip(self.feeds, self.reference, strict=True):
            if left <= 0:
                break
            take = min(left, len(ref))
            feeds.append({k: v[:take] for k, v in feed.items()})
            reference.append(ref[:take])
            left -= take
        return Evaluator(feeds, reference, self.headline, self.class_scores, self.threads)

    def score_session(self, session: Any) -> Score:
        """Score a loaded model (an ONNX Runtime session) on every batch."""
        from quantbench.evaluation.metrics import OutputErrors, TopKAgreement

        errors = OutputErrors(self.output)
        agreement = TopKAgreement(self.output) if self.class_scores else None
        outputs = []
        for feed, ref in zip(self.feeds, self.reference, strict=True):
            got = session.run([self.output], feed)[0]
            outputs.append(got)
            errors.update(ref, got)
            if agreement is not None:
                agreement.update(ref, got)
        self.models_run += 1
        top1 = agreement.result()["top1_agreement"] if agreement is not None else None
        headline = self.headline.score(self.reference, outputs)
        higher = self.headline.higher_is_better
        return Score(float(errors.result()["rel_l2"]), top1, headline, higher)


@dataclass
class TensorFidelity:
    """How one quantized tensor compares with FP32 (see the module docstring).

    Attributes:
        tensor: its name.
        producer: the node writing it (its ``--exclude`` name), or ``"(graph input)"``.
        op_type: that node's op type (empty for a graph input).
        consumers: the nodes reading it quantized.
        amax: its range.
        rel_l2, snr_db: accumulated error of the value its consumers read.
        own_rel_l2, own_snr_db: error of quantizing the FP32 tensor alone.
    """

    tensor: str
    producer: str
    op_type: str
    consumers: list[str]
    amax: float
    rel_l2: float
    snr_db: float
    own_rel_l2: float
    own_snr_db: float


def _exposed(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose outputs are its own followed by the float tensors ``names``."""
    import onnx
    from onnx import TensorProto, helper

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in present:
            exposed.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return exposed


def analyse_tensors(
    model: onnx.ModelProto,
    amax: dict[str, float],
    exclude: Iterable[str],
    feeds: list[dict[str, np.ndarray]],
    threads: int = 0,
    task: Task | None = None,
) -> tuple[list[TensorFidelity], Evaluator]:
    """Per-tensor fidelity of the INT8 model, and the FP32 reference pass it shares (one pass;
    ``task``: what the outputs hold and how they are judged).

    Args:
        model: the FP32 model, opset 13 or more.
        amax: tensor -> amax.
        exclude: ``--exclude`` patterns.
        feeds: input batches.
        threads: ONNX Runtime threads.

    Returns:
        (one row per quantized tensor in graph order, an evaluator holding FP32's outputs on ``feeds``).

    Raises:
        QuantbenchError: no batches, or no node can be quantized.
    """
    from quantbench.backends.onnxruntime import SessionSettings, make_session
    from quantbench.export.qdq import build_qdq, fake_quantize, plan_qdq
    from quantbench.graph import producers

    if not feeds:
        raise QuantbenchError("no samples to analyse; give held-out images (--eval-images)")
    plan = plan_qdq(model, amax, exclude)
    if not plan.quantized_nodes:
        raise QuantbenchError("no Conv, ConvTranspose, Gemm or MatMul of the model can be quantized")
    producer = producers(model.graph)
    tensors = sorted(plan.activations, key=lambda t: producer.get(t, -1))
    qdq_model, names = build_qdq(model, amax, plan)
    dequantized = [names[t].dequantized for t in tensors]
    fp32 = make_session(_exposed(model, tensors), SessionSettings(threads=threads), "the FP32 model")
    as_written = SessionSettings(threads=threads, optimize=False)
    int8 = make_session(_exposed(qdq_model, dequantized), as_written, "a model built for the analysis")
    outputs = [o.name for o in model.graph.output]
    accumulated = {t: ErrorEnergy() for t in tensors}
    own = {t: ErrorEnergy() for t in tensors}
    reference: list[dict[str, np.ndarray]] = []
    for feed in feeds:
        ref = dict(zip([*outputs, *tensors], fp32.run([*outputs, *tensors], feed), strict=True))
        for t, value in zip(tensors, int8.run(dequantized, feed), strict=True):
            accumulated[t].update(ref[t], value)
            own[t].update(ref[t], fake_quantize(ref[t], amax[t]))
        reference.append({name: ref[name] for name in outputs})
    rows = [
        _fidelity(model.graph, plan, t, producer.get(t), amax[t], (accumulated[t], own[t])) for t in tensors
    ]
    headline, class_scores = main_output(reference[0], task)
    evaluator = Evaluator(feeds, [r[headline.output] for r in reference], headline, class_scores, threads)
    return rows, evaluator


def _fidelity(
    graph: onnx.GraphProto,
    plan: QdqPlan,
    tensor: str,
    producer: int | None,
    amax: float,
    errors: tuple[ErrorEnergy, ErrorEnergy],
) -> TensorFidelity:
    """The row of ``tensor``, written by node ``producer`` (None: a graph input), from its accumulated
    and own errors."""
    from quantbench.export.qdq import node_label

    (rel_l2, snr_db), (own_rel_l2, own_snr_db) = errors[0].result(), errors[1].result()
    return TensorFidelity(
        tensor=tensor,
        producer=node_label(graph.node[producer], producer) if producer is not None else "(graph input)",
        op_type=graph.node[producer].op_type if producer is not None else "",
        consumers=[node_label(graph.node[i], i) for i, _ in plan.activations[tensor]],
        amax=float(amax),
        rel_l2=rel_l2,
        snr_db=snr_db,
        own_rel_l2=own_rel_l2,
        own_snr_db=own_snr_db,
    )


@dataclass
class NodeSensitivity:
    """How much one quantized node hurts.

    Attributes:
        node: the node's ``--exclude`` name (its label: name, else ``<op type>:<first output>``).
        op_type: its op type.
        index: its position in the graph.
        only: the output's fidelity with only this node quantized.
        without: the output's fidelity with every quantized node but this one (None: not measured).
    """

    node: str
    op_type: str
    index: int
    only: Score | None = None
    without: Score | None = None

    def to_json(self) -> dict[str, Any]:
        """The ranking entry of ``results.json``: node, op_type, rel_l2, top1_agreement and the headline
        (only view)."""
        score = self.only if self.only is not None else self.without
        assert score is not None
        return {
            "node": self.node,
            "op_type": self.op_type,
            "rel_l2": score.rel_l2,
            "top1_agreement": score.top1_agreement,
            "headline": score.headline,
        }


def node_sensitivity(
    candidates: Candidates,
    evaluator: Evaluator,
    views: Sequence[str] = ("only",),
    progress: Progress | None = None,
) -> list[NodeSensitivity]:
    """Measure every quantized node in the chosen views (see the module docstring), in graph order.

    Args:
        candidates: the model, its ranges and the ``--exclude`` patterns (those nodes stay in float
            throughout and are not measured).
        evaluator: the samples and FP32 reference to score against.
        views: ``only`` and/or ``without``.
        progress: receives one unit per model built.

    Raises:
        QuantbenchError: an unknown view, or no node can be quantized.
    """
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        given = unknown[0] if unknown else ""
        raise QuantbenchError(f"unknown sensitivity view {given!r}; use only and/or without")
    nodes = [NodeSensitivity(name, op_type, index) for index, name, op_type in candidates.nodes()]
    if progress is not None:
        progress.start("sensitivity", len(nodes) * len(views))
    try:
        for node in nodes:
            for view in views:
                kept = [other.node for other in nodes if other is not node] if view == "only" else [node.node]
                setattr(node, view, evaluator.score_session(candidates.session(kept)))
                if progress is not None:
                    progress.advance()
    finally:
        if progress is not None:
            progress.finish()
    return nodes


def rank(nodes: Sequence[NodeSensitivity]) -> list[NodeSensitivity]:
    """Most harmful first: by the only view's headline (worst first), relative L2 breaking ties (highest
    first); else by the without view's (best first: keeping that node in float helps most); ties keep
    graph order."""

    def key(node: NodeSensitivity) -> tuple[float, float]:
        if node.only is not None:
            first, second = node.only.badness()
            return -first, -second
        if node.without is not None:
            return node.without.badness()
        raise QuantbenchError(f"node {node.node} was not measured")

    return sorted(nodes, key=key)
