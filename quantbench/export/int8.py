"""One INT8 model from an FP32 model and its ranges: Q/DQ placement (with nearest or adaptive weight codes),
bias correction, ONNX Runtime flavour.

:func:`build_int8_model` is the path every INT8 model takes, in memory: the variants of a run write its
result (:func:`quantbench.export.variants.int8_variant`) and the sensitivity analysis loads it
(:mod:`quantbench.search.candidates`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

    from quantbench.export.bias_correction import BiasCorrection
    from quantbench.export.judge import CheckJudge, CorrectionData, Figures
    from quantbench.export.offsets import Offset, OffsetModel
    from quantbench.export.qdq import QdqNames, QdqPlan
    from quantbench.export.rounding import WeightRounding


@dataclass(frozen=True)
class Int8Fitting:
    """What an INT8 model is fitted with besides its ranges.

    Attributes:
        data: the batches to fit on and the batches to judge each fitted step on (None: nothing is
            fitted).
        bias_correction: correct the quantized nodes' biases on ``data``
            (:func:`quantbench.export.bias_correction.correct_if_better`).
        rounding: adaptive weight codes (:func:`quantbench.export.rounding.fit_rounding`), kept where
            they judge better on ``data.check`` than nearest rounding; None, or a weight without codes
            there: nearest rounding.
        threads: ONNX Runtime threads for the fitted steps (0: every core).
        judge: a judge of ``data`` shared by the INT8 models of a run (FP32's outputs on the check images
            computed once); None: one is made for this model when a step needs it.
        offsets: put the activations a ReLU or Clip bounds below on grids shifted by half their range
            (:mod:`quantbench.export.offsets`), before every other step.
    """

    data: CorrectionData | None = None
    bias_correction: bool = True
    rounding: WeightRounding | None = None
    threads: int = 0
    judge: CheckJudge | None = None
    offsets: bool = False


@dataclass
class Int8Model:
    """An INT8 model in both flavours and how it was built.

    Attributes:
        source: the FP32 model it was built from, at opset 13 or more, with its activation offsets
            written in where there are some (the node indices of ``plan`` are its nodes').
        plan: where the Q/DQ nodes went.
        names: tensor -> the names of its Q/DQ nodes.
        tensorrt: the TensorRT-flavour Q/DQ model, bias-corrected when the correction helped.
        onnxruntime: ONNX Runtime's flavour of it (:mod:`quantbench.export.onnxruntime_flavour`), or of
            its faster relative with ``--cpu-flavour fast`` (:mod:`quantbench.export.onnxruntime_fast`).
        flavour_notes: where the ONNX Runtime flavour's values may differ from the TensorRT flavour's by
            more than float rounding.
        correction: what the bias correction did; None when it was not asked for or nothing was quantized.
        rounding: the adaptive weight codes offered to the model; None: nearest rounding.
        rounding_applied: whether the model took them (they judged better than nearest rounding).
        rounding_decision: the judgement (:meth:`quantbench.export.judge.CheckJudge.decision`).
        cpu_flavour: which flavour ``onnxruntime`` is and, for ``fast``, the roundings it adds.
        offsets: the activations shifted onto offset grids (None: not asked for).
    """

    source: onnx.ModelProto
    plan: QdqPlan
    names: dict[str, QdqNames]
    tensorrt: onnx.ModelProto
    onnxruntime: onnx.ModelProto
    flavour_notes: list[str] = field(default_factory=list)
    correction: BiasCorrection | None = None
    rounding: WeightRounding | None = None
    rounding_applied: bool = False
    rounding_decision: dict[str, Any] | None = None
    cpu_flavour: dict[str, Any] = field(default_factory=lambda: {"name": "exact"})
    offsets: list[Offset] | None = None

    def details(self) -> dict[str, Any]:
        """What the build did, JSON-ready: quantized tensors and nodes, fused residual Adds, tensors
        without a range, excluded nodes, the flavour's notes and the bias correction."""
        from quantbench.export.qdq import node_label

        nodes = self.source.graph.node
        return {
            "quantized_tensors": list(self.plan.activations),
            "quantized_nodes": [node_label(nodes[i], i) for i in self.plan.quantized_nodes],
            "residual_adds": [node_label(nodes[i], i) for i in self.plan.residual_adds],
            "tensors_without_range": self.plan.missing,
            "excluded_nodes": self.plan.excluded,
            "onnxruntime_flavour_notes": self.flavour_notes,
            "cpu_flavour": self.cpu_flavour,
            "weight_rounding": self._rounding_details(),
            "activation_offsets": None
            if self.offsets is None
            else {"tensors": [o.to_json() for o in self.offsets]},
            "bias_correction": self.correction.details()
            if self.correction is not None
            else {"applied": False},
        }

    def _rounding_details(self) -> dict[str, Any]:
        if self.rounding is None:
            return {"method": "nearest"}
        fit = self.rounding.details()
        return {**fit, "applied": self.rounding_applied, "decision": self.rounding_decision}


def build_int8_model(
    model: onnx.ModelProto,
    amax: Mapping[str, float],
    exclude: Iterable[str] = (),
    fitting: Int8Fitting | None = None,
    cpu_flavour: str = "exact",
) -> Int8Model:
    """Plan and build the Q/DQ model (with adaptive weight codes where given), correct its biases when
    asked, and make its ONNX Runtime flavour.

    Args:
        model: the FP32 model (converted to opset 13 first when older).
        amax: tensor -> calibrated amax.
        exclude: node names, op types or regular expressions of nodes to keep in float.
        fitting: adaptive weight codes and the bias correction, each kept only where it improves the
            headline on ``fitting.data.check`` (:mod:`quantbench.export.judge`); None: nearest
            rounding, no correction.
        cpu_flavour: ``exact`` or ``fast``: the ONNX Runtime flavour to make (``--cpu-flavour``).

    Returns:
        Both flavours with the plan; a model with nothing quantized when no node could be.

    Raises:
        QuantbenchError: a bad ``exclude`` pattern, an opset below 13 that cannot be converted, or a
            model ONNX Runtime cannot run for the bias correction.
    """
    from quantbench.export.qdq import at_least_opset13, build_qdq, plan_qdq

    fitting = fitting or Int8Fitting()
    model = at_least_opset13(model)
    offsets = None
    if fitting.offsets:
        from quantbench.export.offsets import offset_activations

        offsets = offset_activations(model, amax, exclude)
        model, amax = offsets.model, offsets.amax
    plan = plan_qdq(model, amax, exclude)

    def build(
        codes: Mapping[tuple[str, int], Any] | None = None,
    ) -> tuple[onnx.ModelProto, dict[str, QdqNames]]:
        built, names = build_qdq(model, amax, plan, codes)
        if offsets is not None:
            from quantbench.export.offsets import restore_weight_errors

            restore_weight_errors(built, offsets, plan.folded)
        return built, names

    qdq_model, names = build()
    judged = _Judged(model, fitting)
    applied, decision = False, None
    if fitting.rounding is not None and plan.quantized_nodes:
        rounded, _ = build(fitting.rounding.codes)
        applied, decision = judged.choose(qdq_model, rounded)
        qdq_model = rounded if applied else qdq_model
    corrected = None
    if fitting.bias_correction and fitting.data is not None and plan.quantized_nodes:
        from quantbench.export.bias_correction import correct_if_better

        targets = [model.graph.node[i].output[0] for i in plan.quantized_nodes]
        corrected = correct_if_better(
            model, qdq_model, targets, fitting.data, threads=fitting.threads, judge=judged.judge,
            before=judged.kept, shifted=offsets.shifted_outputs() if offsets else None,
        )  # fmt: skip
        qdq_model = corrected.model
    notes: list[str] = []
    cpu_model, flavour = _cpu_flavour(qdq_model, names, amax, offsets, cpu_flavour, fitting, notes)
    built = Int8Model(model, plan, names, qdq_model, cpu_model, notes, corrected, fitting.rounding)
    built.rounding_applied, built.rounding_decision = applied, decision
    built.cpu_flavour = flavour
    built.offsets = offsets.offsets if offsets else None
    return built


def _cpu_flavour(
    qdq_model: onnx.ModelProto,
    names: dict[str, QdqNames],
    amax: Mapping[str, float],
    offsets: OffsetModel | None,
    flavour: str,
    fitting: Int8Fitting,
    notes: list[str],
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """ONNX Runtime's flavour of the judged model (``exact``), or of its faster relative (``fast``, see
    :mod:`quantbench.export.onnxruntime_fast`, its roundings measured on the check images where there
    are some); and what ``results.json`` records of it. A model with activation offsets is first written
    back with zero points (:func:`quantbench.export.offsets.with_zero_points`)."""
    from quantbench.export.onnxruntime_flavour import to_onnxruntime_flavour

    if offsets is not None:
        from quantbench.export.offsets import with_zero_points

        qdq_model, names, amax = with_zero_points(qdq_model, names, offsets)

    if flavour != "fast":
        return to_onnxruntime_flavour(qdq_model, names, notes), {"name": "exact"}
    from quantbench.export.onnxruntime_fast import make_fast, measure_rounding

    fast = make_fast(qdq_model, names, amax)
    if fitting.data is not None:
        measure_rounding(qdq_model, fast, fitting.data.check, fitting.threads)
    return to_onnxruntime_flavour(fast.model, fast.names, notes), fast.details()


class _Judged:
    """The judge of one INT8 model's fitted steps (the run's, or one of its own; none without check
    images), and the figures of the model kept so far."""

    def __init__(self, model: onnx.ModelProto, fitting: Int8Fitting) -> None:
        from quantbench.export.judge import CheckJudge

        data = fitting.data
        self.judge = fitting.judge or (CheckJudge(model, data, fitting.threads) if data is not None else None)
        self.kept: Figures | None = None

    def choose(self, before: onnx.ModelProto, after: onnx.ModelProto) -> tuple[bool, dict[str, Any] | None]:
        """Whether ``after`` (a step applied to ``before``) is kept, and the decision; without check
        images it is kept, undecided."""
        if self.judge is None:
            return True, None
        first, second = self.kept or self.judge.figures(before), self.judge.figures(after)
        keep = self.judge.prefers(second, first)
        self.kept = second if keep else first
        return keep, self.judge.decision(first, second)
