"""What the report reads out of ``results.json``: numbers, the headline (the verdict's, or top-1 agreement
or relative L2 error for a file without one), the accuracy-vs-speed points and their Pareto front, the
metric group of an output's kind, layers per precision, and which tensors the range table shows. Plain
Python, no plotting or table library."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from quantbench.evaluation.registry import NumberFormat, metric_by_key
from quantbench.report.results import main_output, number, range_spread

REFERENCE = "fp32"
TENSOR_ROWS = 200
"""Most tensors in the dynamic-range table."""


def finite(value: Any) -> float | None:
    """:func:`number`, but None for NaN and infinities as well."""
    x = number(value)
    return x if x is not None and math.isfinite(x) else None


PLAIN_FORMAT = NumberFormat("significant", 4)
"""How a headline the registry does not know (a metric of your own) prints."""


@dataclass(frozen=True)
class Headline:
    """The figure the accuracy axis, its Pareto front and the verdict judge each variant by.

    Attributes:
        output: the output it is measured on; None where no output was compared.
        metric: its key in ``results.json``.
        label: its name in tables.
        higher_is_better: its direction.
        reference: FP32's value (1 for an agreement, 0 for an error); None where unknown.
        tolerance: how far short of ``reference`` a variant may fall (the verdict's); None without one.
        values: variant -> its value, as the verdict records it; empty without a verdict.
        from_verdict: True where it is the verdict's headline, False where ``results.json`` has no verdict
            and the report falls back on top-1 agreement (class scores) or relative L2 error.
    """

    output: str | None
    metric: str
    label: str
    higher_is_better: bool
    reference: float | None
    tolerance: float | None = None
    values: dict[str, Any] = field(default_factory=dict)
    from_verdict: bool = False

    @property
    def number_format(self) -> NumberFormat:
        """How its values print: the registry's format, or 4 significant digits for a metric it lacks."""
        try:
            return metric_by_key(self.metric).format
        except KeyError:
            return PLAIN_FORMAT

    @property
    def percent(self) -> bool:
        """Whether its values are fractions shown as percentages."""
        return self.number_format.style == "percent"

    @property
    def description(self) -> str:
        """What it measures, in words: ``top-1 agreement with FP32``, ``det. F1 against FP32``..."""
        if self.metric == "top1_agreement":
            return "top-1 agreement with FP32"
        if self.metric == "rel_l2":
            return "relative L2 error against FP32"
        return f"{self.label} against FP32"

    @property
    def axis(self) -> str:
        """The label of the accuracy axis."""
        if self.metric == "top1_agreement":
            return "top-1 agreement with FP32 (%)"
        if self.metric == "rel_l2":
            return "relative L2 error (lower is better)"
        unit = "%, " if self.percent else ""
        return f"{self.label} against FP32 ({unit}{'higher' if self.higher_is_better else 'lower'} is better)"

    @property
    def bound(self) -> float | None:
        """The worst value within tolerance, where the verdict gives a tolerance."""
        if self.reference is None or self.tolerance is None:
            return None
        return self.reference - self.tolerance if self.higher_is_better else self.reference + self.tolerance

    def shortfall(self, value: float | None) -> float | None:
        """How far ``value`` falls short of FP32's in the worse direction (0 where it does not; NaN for
        NaN); None where either is unknown."""
        if value is None or self.reference is None:
            return None
        gap = self.reference - value if self.higher_is_better else value - self.reference
        return max(0.0, gap) if not math.isnan(gap) else gap

    def text(self, value: Any) -> str:
        """``value`` printed in the headline's format; ``–`` when missing."""
        x = number(value)
        return "–" if x is None else self.number_format(x)

    def value(self, variant: dict[str, Any]) -> float | None:
        """A variant's value (NaN and infinities kept): FP32's is the reference, the others' are the
        verdict's where it records them, else read from the variant's metrics of the output."""
        if self.output is None:
            return None
        name = str(variant.get("name", "?"))
        if name == REFERENCE:
            return self.reference
        if name in self.values:
            return number(self.values[name])
        return number(((variant.get("outputs") or {}).get(self.output) or {}).get(self.metric))


def headline(results: dict[str, Any]) -> Headline:
    """The headline of a run: the verdict's where ``results.json`` has one, else top-1 agreement of the
    first class-score output, or relative L2 error of the first output where none holds class scores."""
    verdict = results.get("verdict")
    if isinstance(verdict, dict) and isinstance(verdict.get("metric"), str):
        metric = verdict["metric"]
        higher = verdict.get("higher_is_better")
        return Headline(
            output=str(verdict["output"]) if verdict.get("output") is not None else None,
            metric=metric,
            label=str(verdict.get("label") or metric),
            higher_is_better=bool(higher) if isinstance(higher, bool) else _registered_direction(metric),
            reference=finite(verdict.get("reference")),
            tolerance=finite(verdict.get("tolerance")),
            values=dict(verdict.get("values") or {}),
            from_verdict=True,
        )
    output = main_output(results)
    info = results["model"]["comparison_outputs"].get(output) or {}
    registered = metric_by_key("top1_agreement" if info.get("class_scores") else "rel_l2")
    return Headline(
        output=output,
        metric=registered.key,
        label=registered.label,
        higher_is_better=registered.higher_is_better,
        reference=registered.reference_value,
    )


def _registered_direction(metric: str) -> bool:
    """Whether higher is better for ``metric``, as the registry says (True for a metric it lacks)."""
    try:
        return metric_by_key(metric).higher_is_better
    except KeyError:
        return True


def metric_group(info: dict[str, Any]) -> str | None:
    """The metric group of an output of ``results.json`` (``model.comparison_outputs[output]``), as
    :attr:`quantbench.evaluation.kinds.OutputKind.metric_group` names it; None where its kind is not
    recorded or is none of the known kinds."""
    from quantbench.evaluation.kinds import KINDS, OutputKind

    kind = info.get("kind")
    if kind not in KINDS:
        return None
    shape = info.get("shape") or []
    channels = shape[0] if kind == "dense" and shape and isinstance(shape[0], int) else 0
    return OutputKind(kind, "", channels=channels).metric_group


@dataclass(frozen=True)
class Point:
    """One variant on the accuracy-vs-speed plane.

    Attributes:
        variant: the variant's name.
        precision: ``fp32``, ``fp16``, ``int8`` (or what a backend reports).
        quality: the headline (:func:`headline`) of the variant; FP32, the reference, has the headline's
            reference value; None where the variant has no finite figure.
        batch: the bench batch size of ``ms``.
        ms: median milliseconds per batch at the first bench batch size (None: not timed).
        images_per_s: images per second at that batch size.
        representative: False where the latency is emulated and says little about the target.
    """

    variant: str
    precision: str
    quality: float | None
    batch: int | None
    ms: float | None
    images_per_s: float | None
    representative: bool

    @property
    def reference(self) -> bool:
        """True for FP32, the reference every other variant is compared with."""
        return self.variant == REFERENCE


def points(results: dict[str, Any]) -> list[Point]:
    """The accuracy-vs-speed point of every variant, in the order of ``results["variants"]``.

    Args:
        results: the content of ``results.json``.
    """
    head = headline(results)
    out = []
    for variant in results.get("variants", []):
        name = str(variant.get("name", "?"))
        quality = finite(head.value(variant))
        latency = (variant.get("latency") or [{}])[0] or {}
        batch = latency.get("batch")
        out.append(
            Point(
                variant=name,
                precision=str(variant.get("precision", "")),
                quality=quality,
                batch=int(batch) if isinstance(batch, int) else None,
                ms=finite(latency.get("median_ms")),
                images_per_s=finite(latency.get("images_per_s")),
                representative=bool(variant.get("latency_representative", True)),
            )
        )
    return out


def pareto_front(candidates: list[Point], higher_is_better: bool) -> list[str]:
    """The variants no other variant beats on both speed and accuracy.

    Only points with a quality, a latency and a representative latency take part. A point is on the front
    when no other point is at least as fast and at least as accurate while being strictly better on one.

    Args:
        candidates: the points.
        higher_is_better: True for agreement (higher is better), False for an error.

    Returns:
        The names on the front, fastest first.
    """
    usable = [p for p in candidates if p.quality is not None and p.ms is not None and p.representative]
    sign = 1.0 if higher_is_better else -1.0
    usable.sort(key=lambda p: (p.ms, -sign * p.quality))  # type: ignore[operator]
    front: list[str] = []
    best = -math.inf
    for p in usable:
        score = sign * p.quality  # type: ignore[operator]
        if score > best:
            front.append(p.variant)
            best = score
    return front


def layer_precisions(variant: dict[str, Any]) -> dict[str, int] | None:
    """How many layers run in each precision, from a backend's per-layer data.

    Args:
        variant: one entry of ``results["variants"]``.

    Returns:
        precision -> layer count (most common first), or None when the variant has no ``layers`` list.
    """
    layers = variant.get("layers")
    if not isinstance(layers, list):
        return None
    counts: dict[str, int] = {}
    for layer in layers:
        precision = layer.get("precision") if isinstance(layer, dict) else None
        key = str(precision) if precision not in (None, "") else "unknown"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def tensors_shown(results: dict[str, Any], limit: int = TENSOR_ROWS) -> tuple[list[str], int]:
    """The tensors of the dynamic-range table: all of them in graph order, or when there are more than
    ``limit``, the ``limit`` where the sets of ranges disagree most, still in graph order.

    Returns:
        (tensors shown, tensors with a range in all).
    """
    amax_sets = {label: info.get("amax") or {} for label, info in results["ranges"].items()}
    absmax = (results.get("calibration") or {}).get("absmax") or {}
    ranked = [name for name, _ in range_spread(amax_sets, absmax)]
    ranged = set(ranked)
    order = [name for name in results["model"].get("tensor_order") or [] if name in ranged]
    listed = set(order)
    order += [name for name in ranked if name not in listed]  # names the model did not list
    kept = set(ranked[:limit])
    return [name for name in order if name in kept], len(order)


def shorten(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis in the middle, for figure labels."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]
