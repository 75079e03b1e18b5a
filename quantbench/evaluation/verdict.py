"""The verdict of a run: one headline figure per variant, and the variant to ship.

The headline is the task metric of the main output (the first metric of your own, else the first output
whose kind is not generic, else the first output; see :mod:`quantbench.evaluation.kinds` and
:mod:`quantbench.evaluation.plugins`): the declared headline of your metric, top-1 agreement for classes,
detection F1 for detectors, IoU for dense maps, sequence agreement for CTC outputs, the mean per-channel
relative L2 error otherwise. A variant is within tolerance when its headline falls short of FP32's (1 for
an agreement, 0 for an error, the declared reference for your metric) by at most the tolerance; the
variant recommended is the fastest of those, timed at the first batch size. FP32 always qualifies, so
there is always a recommendation; where no other variant qualifies, the verdict says which came closest
and by how much it falls short.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from quantbench.evaluation.registry import NumberFormat, metric_by_key

if TYPE_CHECKING:
    from quantbench.evaluation.compare import Comparison

REFERENCE = "fp32"

DEFAULT_TOLERANCE: dict[str, float] = {
    "classes": 0.01,
    "detection": 0.05,
    "dense": 0.02,
    "sequence": 0.05,
    "generic": 0.05,
    "plugin": 0.01,
}
"""How far a headline may fall short of FP32's by default, per kind of the main output: one point of
top-1 agreement, 0.05 of detection F1, 0.02 of IoU, five points of sequence agreement, 0.05 of mean
per-channel relative error, 0.01 of the headline of a metric of your own."""

PLUGIN_FORMAT = NumberFormat("significant", 4)
"""How the headline of a metric of your own prints in the verdict's reason."""


@dataclass
class Verdict:
    """The headline of every variant and the recommendation.

    Attributes:
        output: the main output; kind: what it holds.
        metric: the headline's key; label: its name in tables; higher_is_better: its direction.
        reference: FP32's value of the headline (1 for an agreement, 0 for an error, the declared
            reference for a metric of your own).
        tolerance: how far short of ``reference`` a variant may be; tolerance_default: whether that is
            the kind's default.
        values: variant -> its headline (None where it has none).
        within: the variants within tolerance, in run order.
        recommended: the variant to ship; reason: why, in one sentence.
        closest: the best variant other than FP32 and how far short of the tolerance it falls, where none
            is within it.
    """

    output: str
    kind: str
    metric: str
    label: str
    higher_is_better: bool
    reference: float
    tolerance: float
    tolerance_default: bool
    values: dict[str, float | None] = field(default_factory=dict)
    within: list[str] = field(default_factory=list)
    recommended: str = REFERENCE
    reason: str = ""
    closest: dict[str, Any] | None = None

    def shortfall(self, value: float | None) -> float:
        """How far ``value`` is from FP32's headline in the worse direction (inf for None or NaN)."""
        if value is None or not math.isfinite(value):
            return math.inf
        gap = self.reference - value if self.higher_is_better else value - self.reference
        return max(0.0, gap)

    def to_json(self) -> dict[str, Any]:
        """The ``verdict`` entry of ``results.json``."""
        return asdict(self)


def main_output(outputs: dict[str, dict[str, Any]]) -> str | None:
    """The output the verdict is about: the first metric of your own (kind ``plugin``), else the first
    output whose kind is not generic, else the first."""
    for name, info in outputs.items():
        if info.get("kind") == "plugin":
            return name
    for name, info in outputs.items():
        if info.get("kind", "generic") != "generic":
            return name
    return next(iter(outputs), None)


def decide(comparison: Comparison, tolerance: float | None = None) -> Verdict | None:
    """The verdict of a comparison (see the module docstring); None where no output was compared.

    Args:
        comparison: the held-out comparison, with latency.
        tolerance: how far a headline may fall short of FP32's (None: the main output's kind's default).
    """
    output = main_output(comparison.outputs)
    if output is None:
        return None
    info = comparison.outputs[output]
    label, shown, reference = _headline(info)
    verdict = Verdict(
        output=output,
        kind=info["kind"],
        metric=info["headline"],
        label=label,
        higher_is_better=bool(info["higher_is_better"]),
        reference=reference,
        tolerance=tolerance if tolerance is not None else DEFAULT_TOLERANCE[info["kind"]],
        tolerance_default=tolerance is None,
    )
    for name, per_output in comparison.metrics.items():
        value = reference if name == REFERENCE else per_output.get(output, {}).get(verdict.metric)
        verdict.values[name] = value
        if verdict.shortfall(value) <= verdict.tolerance + 1e-12:
            verdict.within.append(name)
    _recommend(verdict, comparison, shown)
    return verdict


def _headline(info: dict[str, Any]) -> tuple[str, Callable[[float], str], float]:
    """The label, number format and FP32 value of an output's headline.

    A metric of your own (kind ``plugin``) is labelled by its headline's key and has the ``reference``
    it declares; a built-in headline is looked up in :mod:`quantbench.evaluation.registry`.
    """
    if info["kind"] == "plugin":
        return str(info["headline"]), PLUGIN_FORMAT, float(info["reference"])
    metric = metric_by_key(info["headline"])
    reference = metric.reference_value if metric.reference_value is not None else 1.0
    return metric.label, metric.format, reference


def _median_ms(comparison: Comparison, name: str) -> float:
    timings = comparison.latency.get(name) or []
    return float(timings[0]["median_ms"]) if timings else math.inf


def _recommend(verdict: Verdict, comparison: Comparison, shown: Callable[[float], str]) -> None:
    """Fill in ``recommended``, ``reason`` (which does not repeat the variant's name) and ``closest``;
    ``shown`` prints a value of the headline.

    Only variants whose latency is representative of the target are ranked by speed (a float16 model
    emulated on a CPU is not); FP32 is the fallback.
    """
    timed = [name for name in verdict.within if comparison.representative.get(name, True)]
    fastest = min(timed, key=lambda name: _median_ms(comparison, name), default=REFERENCE)
    verdict.recommended = fastest
    bound = f"within {verdict.tolerance:g} of FP32's {shown(verdict.reference)}"
    untimed = [name for name in verdict.within if name not in timed]
    aside = (
        f"; {_untimed_text(untimed)} within it too, but {_why_untimed(untimed, comparison)}"
        if untimed
        else ""
    )
    if fastest != REFERENCE:
        value = verdict.values[fastest]
        speed = _median_ms(comparison, REFERENCE) / _median_ms(comparison, fastest)
        pace = f", {speed:.2f}x FP32's speed as timed here" if math.isfinite(speed) else ""
        verdict.reason = (
            f"the fastest variant whose {verdict.label} on {verdict.output} is {bound}: "
            f"{shown(value) if value is not None else '-'}{pace}{aside}"
        )
        return
    others = [name for name in verdict.values if name != REFERENCE]
    if not others:
        verdict.reason = "only FP32 was built"
        return
    parts = []
    slower = [name for name in timed if name != REFERENCE]
    if slower:
        are = "is" if len(slower) == 1 else "are"
        parts.append(f"{', '.join(slower)} {are} {bound} but slower than FP32 as timed here")
    outside = [name for name in others if name not in verdict.within]
    if outside and not slower:
        best = min(outside, key=lambda name: verdict.shortfall(verdict.values[name]))
        beyond = verdict.shortfall(verdict.values[best]) - verdict.tolerance
        verdict.closest = {"variant": best, "value": verdict.values[best], "short_by": beyond}
        value = verdict.values[best]
        figure = shown(value) if value is not None else "-"
        parts.append(
            f"no other variant timed here has its {verdict.label} on {verdict.output} {bound}; the closest, "
            f"{best}, has {figure}, {beyond:.3g} beyond the tolerance"
        )
    if untimed:
        parts.append(f"{_untimed_text(untimed)} within it, but {_why_untimed(untimed, comparison)}")
    verdict.reason = "; ".join(parts)


def _untimed_text(names: list[str]) -> str:
    """``a, b are`` (``a is``)."""
    return f"{', '.join(names)} {'is' if len(names) == 1 else 'are'}"


def _why_untimed(names: list[str], comparison: Comparison) -> str:
    """Why variants within the tolerance are not ranked by speed: not timed at all, or timed on an
    emulation."""
    if all(not comparison.latency.get(name) for name in names):
        return "not timed here"
    return "timed on an emulation that says nothing of the target"
