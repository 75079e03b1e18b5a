"""The held-out steps of ``quantbench run``: which samples evaluate, the optional mixed-precision search,
and the comparison of every variant with FP32."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quantbench.errors import QuantbenchError

if TYPE_CHECKING:
    from quantbench.data import BatchStream
    from quantbench.evaluation.compare import Comparison
    from quantbench.flows.context import RunContext
    from quantbench.flows.ranges import RunRanges
    from quantbench.search.mixed_precision import HeldOut, SearchResult
    from quantbench.variant import Variant

DEFAULT_EVAL_CAP = 500
"""Held-out images evaluated when ``eval_n`` is not given."""


def held_out_start(ctx: RunContext, ranges: RunRanges) -> int:
    """Where held-out samples begin in the shuffled order of the evaluation folder: after the calibration
    images when they come from the same folder (with a note where none is left), else at 0."""
    data = ctx.settings.data
    if data.eval_images is not None or ranges.calibration is None:
        return 0
    start = ranges.calibration.next_start
    if start >= len(ctx.dataset(ctx.eval_root).files):
        ctx.notes.append(
            f"NOTE: every image under {ctx.eval_root} was used for calibration; the evaluation reuses the "
            "calibration images, which flatters INT8. Pass --eval-images with held-out images."
        )
        return 0
    return start


def held_out(ctx: RunContext, start: int) -> BatchStream:
    """The held-out batches: ``--eval-n`` samples (default: all left, at most 500) from ``start``.

    Raises:
        QuantbenchError: no image left to evaluate on.
    """
    data = ctx.settings.data
    dataset = ctx.dataset(ctx.eval_root)
    count = data.eval_n
    if count is None:
        left = len(dataset.files) - start
        count = min(DEFAULT_EVAL_CAP, left) if dataset.kind == "images" else None
        if count is not None and count < 1:
            raise QuantbenchError(f"no images under {ctx.eval_root} to evaluate on")
    return dataset.batches(count, data.seed, ctx.eval_batch, start=start, workers=data.workers)


def mixed_search(
    ctx: RunContext, ranges: RunRanges, batches: HeldOut, feeds: list[dict[str, Any]] | None
) -> tuple[SearchResult, Variant]:
    """Keep the fewest most harmful nodes of the first set of ranges in float to meet the target on the
    held-out batches: the search, and the ``int8-<label>-mixed`` variant.

    Raises:
        QuantbenchError: no ranges, or a target out of reach.
    """
    from quantbench.search.mixed_precision import Budget, Int8Build, mixed_precision, parse_target

    settings = ctx.settings
    target = parse_target(settings.target.agreement, settings.target.rel_l2)
    assert target is not None
    if not ranges.range_sets:
        raise QuantbenchError("--target-agreement / --target-rel-l2 need ranges to quantize with")
    label, table = next(iter(ranges.range_sets.items()))
    own_feeds = feeds if label not in ranges.native_labels else None
    build = Int8Build(settings.variants.exclude, ctx.models_dir, ctx.threads, own_feeds)
    size = ctx.model.fixed_batch or settings.bench.batch[0]
    budget = Budget(settings.target.sensitivity_n, (size, settings.bench.runs, settings.bench.seconds))
    search, mixed = mixed_precision(
        ctx.model.proto, table, label, batches, target, build, budget, ctx.progress
    )
    return search, mixed


def compare(
    ctx: RunContext, variants: list[Variant], batches: BatchStream | HeldOut, labels: dict[str, int] | None
) -> Comparison:
    """Prepare every variant on the backend, run them on the held-out batches against FP32, time them,
    and add what each runner measured beyond that to the variant's details.

    Raises:
        QuantbenchError: a variant cannot be prepared or run.
    """
    from quantbench.evaluation.compare import compare_variants

    bench = ctx.settings.bench
    runners = {}
    try:
        for variant in variants:
            runners[variant.name] = ctx.backend.prepare(variant)
        comparison = compare_variants(
            runners,
            batches,
            bench,
            label_map=labels,
            fixed_batch=ctx.model.fixed_batch,
            progress=ctx.progress,
        )
        timed = [ctx.model.fixed_batch] if ctx.model.fixed_batch else list(dict.fromkeys(bench.batch))
        for variant in variants:
            variant.details.update(runners[variant.name].extra_results(timed, bench.runs))
    finally:
        for runner in runners.values():
            runner.close()
    ctx.notes.extend(ctx.backend.notes)
    return comparison
