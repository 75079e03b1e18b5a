"""Automatic mixed precision: keep the fewest most harmful nodes in float that meet a fidelity target.

The nodes are ranked once by :mod:`quantbench.search.sensitivity` (only-this-node-quantized view, on the first
``samples`` held-out samples); candidate ``k`` keeps the ``k`` first of the ranking in float (as
``--exclude`` would) and is scored on *every* held-out sample, the ones the run then reports on.
The search doubles ``k`` (0, 1, 2, 4, ...) until a candidate meets the target, then bisects between the
last that failed and the first that met it: about ``2 log2(k) + 1`` candidates instead of ``k + 1``.
The answer meets the target (measured) and ``k - 1`` does not (measured). Bisection assumes that
keeping more of the ranked nodes in float does not make the model worse; where the curve is not
monotonic a smaller ``k`` may also meet the target.

The target is met on the held-out images the search chose ``k`` on; on images it never saw the mixed
model can fall short of it (see the benchmark in the README). When the run corrects its INT8 biases,
every candidate of the search is corrected the same way (about 3 s each for a 50-conv CNN on 2 cores),
so that the model written is the one scored; the ranking is not corrected.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.errors import QuantbenchError
from quantbench.search.candidates import Candidates
from quantbench.search.sensitivity import SAMPLES, Evaluator, NodeSensitivity, Score

if TYPE_CHECKING:
    import onnx

    from quantbench.data.loader import Batch
    from quantbench.evaluation.tasks import Task
    from quantbench.export.judge import CorrectionData
    from quantbench.export.rounding import WeightRounding
    from quantbench.progress import Progress
    from quantbench.ranges import DynamicRanges
    from quantbench.variant import Variant


@dataclass(frozen=True)
class Target:
    """What the mixed model must reach on the held-out samples (every given bound).

    Attributes:
        top1_agreement: least top-1 agreement with FP32, as a fraction (None: no bound).
        rel_l2: largest relative L2 error of the main output (None: no bound).
        metric: the key of the main output's headline metric bounded by ``value`` (``--target
            METRIC=VALUE``; None: no bound); its direction comes from the metric registry.
        value: that bound, in the metric's own unit (fractions for agreements and F1).
    """

    top1_agreement: float | None = None
    rel_l2: float | None = None
    metric: str | None = None
    value: float | None = None

    def met(self, score: Score) -> bool:
        """Whether ``score`` meets every bound."""
        if self.top1_agreement is not None and (
            score.top1_agreement is None or score.top1_agreement < self.top1_agreement - 1e-9
        ):
            return False
        if self.rel_l2 is not None and not score.rel_l2 <= self.rel_l2:
            return False
        if self.metric is None or self.value is None:
            return True
        headline = score.headline
        if headline is None or math.isnan(headline):
            return False
        return headline >= self.value - 1e-9 if score.higher_is_better else headline <= self.value + 1e-9

    def describe(self) -> str:
        """E.g. ``top-1 agreement >= 99% and rel. L2 <= 0.05`` or ``det_f1 >= 0.9``."""
        parts = []
        if self.top1_agreement is not None:
            parts.append(f"top-1 agreement >= {100 * self.top1_agreement:g}%")
        if self.rel_l2 is not None:
            parts.append(f"rel. L2 <= {self.rel_l2:g}")
        if self.metric is not None and self.value is not None:
            from quantbench.evaluation.registry import metric_by_key

            higher = metric_by_key(self.metric).higher_is_better
            parts.append(f"{self.metric} {'>=' if higher else '<='} {self.value:g}")
        return " and ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """``{"top1_agreement": fraction or None, "rel_l2": float or None}``, with ``metric`` and ``value``
        where a headline bound is set."""
        bounds: dict[str, Any] = {"top1_agreement": self.top1_agreement, "rel_l2": self.rel_l2}
        if self.metric is not None:
            bounds.update(metric=self.metric, value=self.value)
        return bounds


def parse_target(
    agreement_percent: float | None, rel_l2: float | None, headline: str | None = None
) -> Target | None:
    """The target of ``--target-agreement`` (a percentage), ``--target-rel-l2`` and ``--target
    METRIC=VALUE`` (a bound on the main output's headline metric; ``top1_agreement=0.99`` and
    ``rel_l2=0.05`` are the two shorthands' bounds as fractions); None if none is given.

    Raises:
        QuantbenchError: a bound out of range, or a ``--target`` that is not ``METRIC=VALUE`` with a
            known metric.
    """
    metric, value = _headline_bound(headline)
    if metric == "top1_agreement":
        agreement_percent, metric = 100.0 * value, None  # type: ignore[operator]
    elif metric == "rel_l2":
        rel_l2, metric = value, None
    if agreement_percent is not None:
        if not 0 < agreement_percent <= 100:
            raise QuantbenchError(
                "--target-agreement is a percentage above 0 and at most 100 (e.g. 99); "
                f"got {agreement_percent:g}"
            )
        if agreement_percent <= 1:
            raise QuantbenchError(
                f"--target-agreement is a percentage: {agreement_percent:g} means {agreement_percent:g}%; "
                f"for {100 * agreement_percent:g}% give {100 * agreement_percent:g}"
            )
    if rel_l2 is not None and not 0 < rel_l2 < float("inf"):
        raise QuantbenchError(f"--target-rel-l2 must be a number above 0 (e.g. 0.05); got {rel_l2:g}")
    if agreement_percent is None and rel_l2 is None and metric is None:
        return None
    return Target(
        agreement_percent / 100.0 if agreement_percent is not None else None,
        rel_l2,
        metric,
        value if metric is not None else None,
    )


def _headline_bound(text: str | None) -> tuple[str | None, float | None]:
    """``METRIC=VALUE`` as (metric key, value); (None, None) for None."""
    if text is None:
        return None, None
    from quantbench.evaluation.registry import metric_by_key

    key, _, number = text.partition("=")
    key = key.strip()
    try:
        metric_by_key(key)
        value = float(number)
    except (KeyError, ValueError):
        raise QuantbenchError(
            f"--target takes METRIC=VALUE with a metric of results.json, e.g. det_f1=0.9 or "
            f"seq_agreement=0.8; got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise QuantbenchError(f"--target {text}: the value must be a finite number")
    return key, value


@dataclass
class CurvePoint:
    """One candidate of the search: the ``k`` first nodes of the ranking kept in float."""

    k: int
    excluded: list[str]
    score: Score
    median_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A ``curve`` entry of ``results.json``."""
        return {
            "k": self.k,
            "excluded": self.excluded,
            "top1_agreement": self.score.top1_agreement,
            "rel_l2": self.score.rel_l2,
            "median_ms": self.median_ms,
        }


@dataclass
class SearchResult:
    """The smallest ``k`` found and everything measured on the way.

    Attributes:
        method: the ranges' label.
        target: the target met.
        k: nodes kept in float.
        excluded: their ``--exclude`` names, most harmful first.
        curve: the candidates scored, by ``k``.
        ranking: every quantized node, most harmful first.
        seconds: time of the search (:func:`mixed_precision`: with the reference pass and the ranking).
        models_evaluated: models built and run (ranking and search).
    """

    method: str
    target: Target
    k: int
    excluded: list[str]
    curve: list[CurvePoint]
    ranking: list[NodeSensitivity]
    seconds: float = 0.0
    models_evaluated: int = 0

    def to_json(self) -> dict[str, Any]:
        """The ``sensitivity`` entry of ``results.json``."""
        return {
            "method": self.method,
            "target": self.target.to_json(),
            "excluded": list(self.excluded),
            "curve": [point.to_json() for point in self.curve],
            "ranking": [node.to_json() for node in self.ranking],
        }


@dataclass
class Timing:
    """How candidates are timed: feeds of one bench batch, repeated as ``measure_latency`` does."""

    feeds: dict[str, np.ndarray]
    batch: int
    runs: int = 50
    seconds: float = 2.0


def search(
    candidates: Candidates,
    ranking: Sequence[NodeSensitivity],
    evaluator: Evaluator,
    target: Target,
    *,
    method: str,
    timing: Timing | None = None,
    cache: dict[int, CurvePoint] | None = None,
    progress: Progress | None = None,
) -> SearchResult:
    """The smallest ``k`` whose model meets ``target`` (see the module docstring).

    Args:
        candidates: the model, its ranges and the ``--exclude`` patterns kept in float in every candidate.
        ranking: the quantized nodes, most harmful first.
        evaluator: the held-out samples and FP32 reference the target is checked on.
        target: what to reach.
        method: the ranges' label, for the result.
        timing: when given, each candidate's latency is measured too.
        cache: candidates already scored on the same evaluator (shared between targets), filled in.
        progress: receives one unit per candidate.

    Raises:
        QuantbenchError: agreement asked of a model without class scores, or no candidate that keeps a
            node in INT8 meets the target.
    """
    _check_output(target, evaluator)
    started = time.perf_counter()
    names = [node.node for node in ranking]
    curve = _Curve(candidates, evaluator, names, timing, cache if cache is not None else {}, progress)
    if progress is not None:
        progress.start("mixed precision", None)
    try:
        met = _smallest_k(lambda k: target.met(curve.point(k).score), len(names))
    finally:
        if progress is not None:
            progress.finish()
    k = _reached(target, met, curve.points, len(names))
    return SearchResult(
        method=method,
        target=target,
        k=k,
        excluded=names[:k],
        curve=[curve.points[key] for key in sorted(curve.points)],
        ranking=list(ranking),
        seconds=time.perf_counter() - started,
        models_evaluated=len(curve.points),
    )


@dataclass
class _Curve:
    """The candidates of a search, each built, scored (and timed) once.

    Attributes:
        candidates: builds and loads the candidates.
        evaluator: scores them.
        names: the ranking's ``--exclude`` names, most harmful first; candidate ``k`` keeps the ``k``
            first in float.
        timing: how to time each candidate, or None.
        points: the candidates scored so far, by ``k``.
        progress: receives one unit per candidate asked for.
    """

    candidates: Candidates
    evaluator: Evaluator
    names: list[str]
    timing: Timing | None
    points: dict[int, CurvePoint]
    progress: Progress | None

    def point(self, k: int) -> CurvePoint:
        """Candidate ``k``, measured on first use."""
        if k not in self.points:
            self.points[k] = self._measure(k)
        if self.progress is not None:
            self.progress.advance()
        return self.points[k]

    def _measure(self, k: int) -> CurvePoint:
        from quantbench.evaluation.metrics import measure_latency

        session = self.candidates.session(self.names[:k])
        point = CurvePoint(k, self.names[:k], self.evaluator.score_session(session))
        if self.timing is not None:
            timing = self.timing
            stats = measure_latency(
                lambda: session.run(None, timing.feeds),
                batch=timing.batch,
                min_runs=timing.runs,
                min_seconds=timing.seconds,
            )
            point.median_ms = stats.median_ms
        return point


def _smallest_k(meets: Callable[[int], bool], total: int) -> int | None:
    """The smallest ``k`` from 0 to ``total`` for which ``meets(k)``, assuming that once met it stays
    met: ``k`` doubles (0, 1, 2, 4, ...) until met, then bisects. None when even ``total`` fails."""
    failed, met = -1, None
    k = 0
    while met is None:
        if meets(k):
            met = k
        elif k == total:
            break
        else:
            failed, k = k, min(total, max(1, 2 * k))
    while met is not None and met - failed > 1:
        middle = (failed + met) // 2
        if meets(middle):
            met = middle
        else:
            failed = middle
    return met


def _reached(target: Target, met: int | None, points: dict[int, CurvePoint], total: int) -> int:
    """``met`` when it leaves a node in INT8.

    Raises:
        QuantbenchError: no candidate met the target, or only the one with every node in float.
    """
    if met is None:
        raise QuantbenchError(
            f"target {target.describe()} is out of reach even with all {total} quantized nodes in float "
            f"({_figures(points[total].score)}); lower the target"
        )
    if met == total:
        raise QuantbenchError(
            f"target {target.describe()} is met only with all {total} quantized nodes in float, i.e. with "
            f"no INT8 left ({total - 1} in float: {_figures(points[total - 1].score)}); lower the target"
        )
    return met


def _check_output(target: Target, evaluator: Evaluator) -> None:
    if target.top1_agreement is not None and not evaluator.class_scores:
        raise QuantbenchError(
            f"--target-agreement needs class scores ([N, C] with C >= 10); output {evaluator.output!r} is "
            "not; use --target-rel-l2"
        )
    if target.metric is not None and target.metric != evaluator.headline.metric:
        raise QuantbenchError(
            f"--target {target.metric}=...: the main output {evaluator.output!r} is judged by "
            f"{evaluator.headline.metric} ({evaluator.headline.kind.kind}); give --target "
            f"{evaluator.headline.metric}=VALUE"
        )


def _figures(score: Score | None) -> str:
    if score is None:
        return "-"
    top1 = f"top-1 agreement {100 * score.top1_agreement:.1f}%, " if score.top1_agreement is not None else ""
    headline = (
        f", headline {score.headline:.4g}"
        if score.headline is not None and score.top1_agreement is None
        else ""
    )
    return f"{top1}rel. L2 {score.rel_l2:.4g}{headline}"


class HeldOut:
    """Held-out batches kept in memory, iterable as often as needed, with the stream's ``report``."""

    def __init__(self, batches: Iterable[Batch]) -> None:
        self.batches = list(batches)
        self.report = getattr(batches, "report", None)
        self.total = sum(len(b.names) for b in self.batches)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)


@dataclass(frozen=True)
class Int8Build:
    """How the search builds INT8 models: as the run builds its own.

    Attributes:
        exclude: the run's ``--exclude`` patterns (kept in float in every candidate).
        models_dir: where the mixed variant's files go.
        threads: ONNX Runtime threads.
        correction: the batches the run corrects its INT8 biases on (None: no correction). The
            candidates of the search and the variant are corrected on them too; the ranking is not (a
            correction per node would cost about one model pass each).
        cpu_flavour: the ONNX Runtime flavour the mixed variant is timed on (``--cpu-flavour``).
        offsets: activation offsets (``--activation-offsets``) in the search's candidates and the variant
            (the ranking keeps TensorRT's grids).
        rounding: adaptive weight codes offered to the search's candidates and the variant, each judged
            on ``correction``'s check images against nearest rounding as the run's INT8 models are (the
            ranking keeps nearest rounding); None: nearest rounding.
    """

    exclude: Sequence[str]
    models_dir: Path
    threads: int = 0
    correction: CorrectionData | None = None
    cpu_flavour: str = "exact"
    offsets: bool = False
    rounding: WeightRounding | None = None


@dataclass(frozen=True)
class Budget:
    """What the search may spend.

    Attributes:
        samples: held-out samples the ranking runs on (the first ones).
        timing: (batch size, runs, seconds) to time each candidate with; None: not timed.
        task: what the outputs hold and how they are judged, for the headline candidates are judged by
            (None: kinds detected, default settings).
    """

    samples: int = SAMPLES
    timing: tuple[int, int, float] | None = None
    task: Task | None = None


def mixed_precision(
    model: onnx.ModelProto,
    ranges: DynamicRanges,
    label: str,
    held: HeldOut,
    target: Target,
    build: Int8Build,
    budget: Budget = Budget(),
    progress: Progress | None = None,
) -> tuple[SearchResult, Variant]:
    """Rank the nodes, search the smallest ``k`` for ``target`` and write the ``int8-<label>-mixed`` variant.

    Args:
        model: the FP32 model.
        ranges: the ranges to quantize with.
        label: their label (the method, or the imported file's name).
        held: the held-out batches the run compares on.
        target: what to reach.
        build: how INT8 models are built (see :class:`Int8Build`).
        budget: ranking samples and candidate timing (see :class:`Budget`).
        progress: receives progress of the ranking and the search.

    Returns:
        (the search result, the mixed variant).

    Raises:
        QuantbenchError: no held-out sample, a target that needs class scores, or one out of reach.
    """
    from quantbench.evaluation.compare import stack_feeds
    from quantbench.export.int8 import Int8Fitting
    from quantbench.export.qdq import at_least_opset13
    from quantbench.export.variants import int8_variant
    from quantbench.search.sensitivity import node_sensitivity, rank

    if budget.samples < 1:
        raise QuantbenchError(f"the sensitivity ranking needs at least 1 sample, not {budget.samples}")
    started = time.perf_counter()
    model = at_least_opset13(model)
    evaluator = Evaluator.from_fp32(model, [b.inputs for b in held.batches], build.threads, budget.task)
    _check_output(target, evaluator)
    seconds = {"reference": time.perf_counter() - started}
    subset = evaluator.head(budget.samples)
    ranked = Candidates(model, ranges.amax, build.exclude, build.threads)
    ranking = rank(node_sensitivity(ranked, subset, ("only",), progress))
    candidates = ranked
    if build.correction is not None or build.offsets:
        candidates = Candidates(
            model, ranges.amax, build.exclude, build.threads, build.correction, build.rounding, build.offsets
        )
    seconds["ranking"] = time.perf_counter() - started - seconds["reference"]
    bench = None
    if budget.timing is not None:
        size, runs, duration = budget.timing
        bench = Timing(stack_feeds(held.batches[0].inputs, size), size, runs, duration)
    result = search(candidates, ranking, evaluator, target, method=label, timing=bench, progress=progress)
    seconds["search"] = result.seconds
    result.seconds = time.perf_counter() - started
    result.models_evaluated = ranked.built + (candidates.built if candidates is not ranked else 0)
    kept = [*build.exclude, *result.excluded]
    fitting = Int8Fitting(build.correction, True, build.rounding, build.threads, offsets=build.offsets)
    variant = int8_variant(
        model, ranges, f"{label}-mixed", kept, build.models_dir, fitting, build.cpu_flavour
    )
    variant.method = label
    variant.details["mixed_precision"] = {
        "target": target.to_json(),
        "kept_in_float": result.excluded,
        "ranking_samples": subset.samples,
        "search_samples": evaluator.samples,
        "candidates": len(result.curve),
        "models_evaluated": result.models_evaluated,
        "seconds": {key: round(value, 3) for key, value in {**seconds, "total": result.seconds}.items()},
    }
    return result, variant


def replay_arguments(patterns: Sequence[str]) -> str:
    """``--exclude`` options for ``patterns``, quoted for a POSIX shell."""
    import shlex

    return " ".join(f"--exclude {shlex.quote(pattern)}" for pattern in patterns)


def summary_lines(results: dict[str, Any]) -> list[str]:
    """What the run summary prints about the search in ``results["sensitivity"]``: the choice, and the
    ``--exclude`` options that build the same model again (the run's own ``--exclude`` first)."""
    search = results["sensitivity"]
    target = Target(**search["target"])
    excluded = list(search["excluded"])
    chosen = next((p for p in search["curve"] if p["k"] == len(excluded)), None)
    reached = ""
    if chosen is not None:
        top1 = chosen.get("top1_agreement")
        reached = (f"top-1 agreement {100 * top1:.1f}%, " if isinstance(top1, float) else "") + (
            f"rel. L2 {chosen['rel_l2']:.4f}" if isinstance(chosen.get("rel_l2"), float) else ""
        )
    details: dict[str, Any] = next(
        (v["mixed_precision"] for v in results["variants"] if "mixed_precision" in v), {}
    )
    took = details.get("seconds", {}).get("total")
    lines = [
        f"mixed precision ({search['method']}): {len(excluded)} of {len(search['ranking'])} quantized nodes "
        f"kept in float for {target.describe()} ({reached}; {len(search['curve'])} candidates scored"
        + (f", {took:.1f} s" if isinstance(took, float) else "")
        + ")"
    ]
    own = list(results["manifest"]["arguments"].get("exclude") or [])
    if own or excluded:
        lines.append(f"same model again: {replay_arguments([*own, *excluded])}")
    return lines
