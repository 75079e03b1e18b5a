"""What the report reads out of ``results.json``: numbers, the headline metric, the accuracy-vs-speed points
and their Pareto front, layers per precision, and which tensors the range table shows. Plain Python, no
plotting or table library."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from quantbench.evaluation.registry import metric_by_key
from quantbench.report.results import main_output, range_spread

REFERENCE = "fp32"
TENSOR_ROWS = 200
"""Most tensors in the dynamic-range table."""


def number(value: Any) -> float | None:
    """A metric value as a float.

    Args:
        value: a number, or one of the strings ``results.json`` uses for values JSON cannot hold
            (``"nan"``, ``"inf"``, ``"-inf"``).

    Returns:
        The float, or None for anything else (missing, null, booleans, other text).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    return None


def finite(value: Any) -> float | None:
    """:func:`number`, but None for NaN and infinities as well."""
    x = number(value)
    return x if x is not None and math.isfinite(x) else None


def headline_metric(results: dict[str, Any]) -> tuple[str | None, str]:
    """The output and metric of the accuracy axis.

    Returns:
        ``(output, "top1_agreement")`` for a class-score output, else ``(output, "rel_l2")``.
    """
    output = main_output(results)
    info = results["model"]["comparison_outputs"].get(output) or {}
    return output, ("top1_agreement" if info.get("class_scores") else "rel_l2")


@dataclass(frozen=True)
class Point:
    """One variant on the accuracy-vs-speed plane.

    Attributes:
        variant: the variant's name.
        precision: ``fp32``, ``fp16``, ``int8`` (or what a backend reports).
        quality: top-1 agreement (0 to 1) or relative L2 error of the headline output; FP32, the reference,
            has 1.0 and 0.0 by definition; None where the variant has no such figure.
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
    output, metric = headline_metric(results)
    out = []
    for variant in results.get("variants", []):
        name = str(variant.get("name", "?"))
        metrics = (variant.get("outputs") or {}).get(output) or {}
        quality = finite(metrics.get(metric))
        if name == REFERENCE and output is not None:
            quality = metric_by_key(metric).reference_value
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
