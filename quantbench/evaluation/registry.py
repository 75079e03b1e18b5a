"""The per-output metrics a run reports, in the order tables show them.

Each :class:`Metric` says what a metric is called in ``results.json`` (its key) and in tables (its label),
how its value prints, which outputs have it and which way is better. The values themselves come from the
accumulators of :mod:`quantbench.evaluation.metrics`:

* ``OutputErrors``: every output (rel_l2, cosine, snr_db, max_abs, mean_abs);
* ``TopKAgreement``: class scores (top1_agreement, top5_overlap);
* ``Accuracy``: class scores, when the run is given labels (top1_accuracy, top5_accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AppliesTo = Literal["every output", "class scores", "labels"]
"""Which outputs have a metric: every compared output, outputs taken for class scores
(:func:`~quantbench.evaluation.metrics.is_class_scores`), or class-score outputs of a run given labels."""


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

    def applies(self, *, class_scores: bool, labels: bool) -> bool:
        """Whether an output has this metric.

        Args:
            class_scores: the output is taken for class scores.
            labels: the run was given a labels file.
        """
        if self.applies_to == "every output":
            return True
        if self.applies_to == "class scores":
            return class_scores
        return class_scores and labels


_PERCENT = NumberFormat("percent", 1)

METRICS: tuple[Metric, ...] = (
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
"""Every per-output metric, in the order tables show them."""

RESULTS_ORDER: tuple[str, ...] = (
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
"""The keys of :data:`METRICS` in the order the accumulators compute them: the order of an output's
entries in ``results.json`` and of the metric columns of ``metrics.csv``."""

_BY_KEY = {metric.key: metric for metric in METRICS}


def metric_by_key(key: str) -> Metric:
    """The metric called ``key`` in ``results.json``.

    Raises:
        KeyError: no metric has that key.
    """
    return _BY_KEY[key]
