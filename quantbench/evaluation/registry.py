"""The per-output metrics a run reports, in the order tables show them.

Each :class:`Metric` says what a metric is called in ``results.json`` (its key) and in tables (its label),
how its value prints, which outputs have it and which way is better. The values themselves come from the
accumulators of :mod:`quantbench.evaluation.metrics`:

* ``OutputErrors``: every output (rel_l2, cosine, snr_db, max_abs, mean_abs);
* ``TopKAgreement``: class scores (top1_agreement, top5_overlap);
* ``Accuracy``: class scores, when the run is given labels (top1_accuracy, top5_accuracy);

and from the accumulators of :mod:`quantbench.evaluation.tasks`, by output kind (detection, dense maps,
sequences, per-channel errors): :data:`KIND_METRICS`.

:data:`METRICS` holds them all and gives the tables' columns; :data:`RESULTS_ORDER` gives the columns of
``metrics.csv``. :func:`metric_by_key` finds one by its key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AppliesTo = Literal[
    "every output",
    "class scores",
    "labels",
    "detection",
    "dense classes",
    "dense mask",
    "sequence",
    "generic",
]
"""Which outputs have a metric: every compared output, outputs taken for class scores
(:func:`~quantbench.evaluation.metrics.is_class_scores`), class-score outputs of a run given labels, or
outputs of one group of :attr:`quantbench.evaluation.kinds.OutputKind.metric_group` (detection heads,
per-pixel class scores, probability maps, CTC sequences, generic outputs)."""


@dataclass(frozen=True)
class NumberFormat:
    """How a metric's value prints.

    Attributes:
        style: ``"percent"``: a fraction as a percentage with ``digits`` decimals and " %" (0.975 ->
            "97.5 %"); ``"significant"``: ``digits`` significant digits (0.012345 -> "0.01235" with 4);
            ``"decimals"``: ``digits`` decimals.
        digits: decimals or significant digits, as the style says.
    """

    style: Literal["percent", "significant", "decimals"]
    digits: int

    def __call__(self, value: float) -> str:
        """``value`` as text; NaN and infinities print as ``nan``, ``inf`` and ``-inf``."""
        if self.style == "percent":
            return f"{100.0 * value:.{self.digits}f} %"
        if self.style == "significant":
            return format(value, f".{self.digits}g")
        return f"{value:.{self.digits}f}"


@dataclass(frozen=True)
class Metric:
    """One per-output metric.

    Attributes:
        key: its name in ``results.json`` (``variants[].outputs[output][key]``) and in ``metrics.csv``.
        label: its column heading in tables.
        format: how its value prints in the report's tables.
        applies_to: which outputs have it (see :data:`AppliesTo`).
        higher_is_better: True where a higher value means closer to FP32 (or more accurate).
        reference_value: the value FP32 has against itself, for tables that show the reference next to
            the variants; None where FP32 has a figure of its own (accuracy against labels).
    """

    key: str
    label: str
    format: NumberFormat
    applies_to: AppliesTo
    higher_is_better: bool
    reference_value: float | None

    def applies(self, *, class_scores: bool, labels: bool, group: str | None = None) -> bool:
        """Whether an output has this metric.

        Args:
            class_scores: the output is taken for class scores.
            labels: the run was given a labels file.
            group: the output's :attr:`~quantbench.evaluation.kinds.OutputKind.metric_group`, where its
                kind is known; the metrics of a kind apply only to outputs of its group.
        """
        if self.applies_to == "every output":
            return True
        if self.applies_to == "class scores":
            return class_scores
        if self.applies_to == "labels":
            return class_scores and labels
        return group == self.applies_to


_PERCENT = NumberFormat("percent", 1)

_OUTPUT_METRICS: tuple[Metric, ...] = (
    Metric("top1_agreement", "top-1 agreement", _PERCENT, "class scores", True, 1.0),
    Metric("top5_overlap", "top-5 overlap", _PERCENT, "class scores", True, 1.0),
    Metric("top1_accuracy", "top-1 accuracy", _PERCENT, "labels", True, None),
    Metric("top5_accuracy", "top-5 accuracy", _PERCENT, "labels", True, None),
    Metric("rel_l2", "rel. L2", NumberFormat("significant", 4), "every output", False, 0.0),
    Metric("cosine", "cosine", NumberFormat("significant", 6), "every output", True, 1.0),
    Metric("snr_db", "SNR (dB)", NumberFormat("decimals", 1), "every output", True, float("inf")),
    Metric("max_abs", "max abs", NumberFormat("significant", 4), "every output", False, 0.0),
    Metric("mean_abs", "mean abs", NumberFormat("significant", 4), "every output", False, 0.0),
)
"""The metrics of every output and of class scores, in the order tables show them."""

_OUTPUT_RESULTS_ORDER: tuple[str, ...] = (
    "max_abs",
    "mean_abs",
    "rel_l2",
    "cosine",
    "snr_db",
    "top1_agreement",
    "top5_overlap",
    "top1_accuracy",
    "top5_accuracy",
)
"""The keys of :data:`_OUTPUT_METRICS` in the order the accumulators of
:mod:`quantbench.evaluation.metrics` compute them."""

_ERROR = NumberFormat("significant", 4)
_COUNT = NumberFormat("decimals", 0)

KIND_METRICS: tuple[Metric, ...] = (
    Metric("det_f1", "det. F1", _PERCENT, "detection", True, 1.0),
    Metric("det_precision", "det. precision", _PERCENT, "detection", True, 1.0),
    Metric("det_recall", "det. recall", _PERCENT, "detection", True, 1.0),
    Metric("det_map50", "det. mAP@0.5", _PERCENT, "detection", True, 1.0),
    Metric("det_mean_iou", "det. mean IoU", _PERCENT, "detection", True, 1.0),
    Metric("det_box_error", "det. box error", _ERROR, "detection", False, 0.0),
    Metric("det_score_error", "det. score error", _ERROR, "detection", False, 0.0),
    Metric("det_reference", "FP32 detections", _COUNT, "detection", False, None),
    Metric("det_candidate", "detections", _COUNT, "detection", False, None),
    Metric("mean_iou", "mean IoU", _PERCENT, "dense classes", True, 1.0),
    Metric("argmax_agreement", "pixel class agreement", _PERCENT, "dense classes", True, 1.0),
    Metric("mask_iou", "mask IoU", _PERCENT, "dense mask", True, 1.0),
    Metric("pixel_agreement", "mask pixel agreement", _PERCENT, "dense mask", True, 1.0),
    Metric("region_f1", "region F1", _PERCENT, "dense mask", True, 1.0),
    Metric("region_precision", "region precision", _PERCENT, "dense mask", True, 1.0),
    Metric("region_recall", "region recall", _PERCENT, "dense mask", True, 1.0),
    Metric("seq_agreement", "sequence agreement", _PERCENT, "sequence", True, 1.0),
    Metric("seq_edit_distance", "norm. edit distance", _ERROR, "sequence", False, 0.0),
    Metric("channel_rel_l2_mean", "channel rel. L2 (mean)", _ERROR, "generic", False, 0.0),
    Metric("channel_rel_l2_max", "channel rel. L2 (max)", _ERROR, "generic", False, 0.0),
    Metric("channel_rel_l2_worst_index", "worst channel", _COUNT, "generic", False, None),
)
"""The metrics by output kind (:mod:`quantbench.evaluation.tasks`), the last part of :data:`METRICS`, in
the order tables show them: the headline of each kind first. The generic kind's ``cosine`` is the
``cosine`` of every output. The counts (``det_reference``, ``det_candidate``) and the worst channel's
index are figures, not errors: ``higher_is_better`` is False and ``reference_value`` None for them."""

KIND_RESULTS_ORDER: tuple[str, ...] = (
    "det_precision",
    "det_recall",
    "det_f1",
    "det_map50",
    "det_mean_iou",
    "det_box_error",
    "det_score_error",
    "det_reference",
    "det_candidate",
    "argmax_agreement",
    "mean_iou",
    "mask_iou",
    "pixel_agreement",
    "region_precision",
    "region_recall",
    "region_f1",
    "seq_agreement",
    "seq_edit_distance",
    "channel_rel_l2_mean",
    "channel_rel_l2_max",
    "channel_rel_l2_worst_index",
)
"""The keys of :data:`KIND_METRICS` in the order the accumulators of :mod:`quantbench.evaluation.tasks`
compute them. Those accumulators also return ``top1_agreement``, ``top5_overlap`` and ``cosine`` (keys
of the metrics of every output and of class scores) and ``samples``."""

METRICS: tuple[Metric, ...] = (*_OUTPUT_METRICS, *KIND_METRICS)
"""Every per-output metric, in the order tables show them: those of every output and of class scores,
then those by output kind (:data:`KIND_METRICS`)."""

RESULTS_ORDER: tuple[str, ...] = (*_OUTPUT_RESULTS_ORDER, *KIND_RESULTS_ORDER)
"""The keys of :data:`METRICS` in the order the accumulators compute them: the order of an output's
entries in ``results.json`` and of the metric columns of ``metrics.csv`` (a column stays empty for an
output that has no such metric)."""

_BY_KEY = {metric.key: metric for metric in METRICS}


def metric_by_key(key: str) -> Metric:
    """The metric called ``key`` in ``results.json``.

    Raises:
        KeyError: no metric has that key.
    """
    return _BY_KEY[key]
