"""The held-out steps of ``quantbench run``: which samples evaluate, the optional mixed-precision search,
and the comparison of every variant with FP32."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quantbench.errors import QuantbenchError

if TYPE_CHECKING:
    from quantbench.backends.base import Runner
    from quantbench.calibration.calibrate import CalibrationResult
    from quantbench.data import BatchStream
    from quantbench.evaluation.compare import Comparison
    from quantbench.export.judge import CorrectionData
    from quantbench.export.rounding import WeightRounding
    from quantbench.flows.context import RunContext
    from quantbench.flows.ranges import RunRanges
    from quantbench.search.mixed_precision import HeldOut, SearchResult
    from quantbench.variant import Variant

DEFAULT_EVAL_CAP = 500
"""Held-out images evaluated when ``eval_n`` is not given."""

FLAVOUR_BOUND = 0.02
"""The relative L2 distance between a variant's timed model and the model it is judged on above which the
run's notes say so."""


def held_out_position(ctx: RunContext, calibration: CalibrationResult | None) -> int | None:
    """Where held-out samples begin in the shuffled order of the evaluation folder: after the calibration
    images when they come from the same folder, else at 0; None where calibration used every image."""
    if ctx.settings.data.eval_images is not None or calibration is None:
        return 0
    start = calibration.next_start
    return None if start >= len(ctx.dataset(ctx.eval_root).files) else start


def held_out_start(ctx: RunContext, ranges: RunRanges) -> int:
    """:func:`held_out_position`, with a note where calibration used every image (the evaluation then
    starts at 0, on the calibration images)."""
    start = held_out_position(ctx, ranges.calibration)
    if start is None:
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
    ctx: RunContext,
    ranges: RunRanges,
    batches: HeldOut,
    feeds: CorrectionData | None,
    rounding: WeightRounding | None = None,
) -> tuple[SearchResult, Variant]:
    """Keep the fewest most harmful nodes of the first set of ranges in float to meet the target on the
    held-out batches: the search, and the ``int8-<label>-mixed`` variant. The candidates are corrected on
    ``feeds`` and offered ``rounding`` (the run's adaptive codes), as the run's INT8 models are, where
    those are quantbench's ranges and ``feeds`` are given.

    Raises:
        QuantbenchError: no ranges, or a target out of reach.
    """
    from quantbench.search.mixed_precision import Budget, Int8Build, mixed_precision, parse_target

    settings = ctx.settings
    target = parse_target(settings.target.agreement, settings.target.rel_l2, settings.target.headline)
    assert target is not None
    if not ranges.range_sets:
        raise QuantbenchError("--target-agreement / --target-rel-l2 need ranges to quantize with")
    label, table = next(iter(ranges.range_sets.items()))
    own = label not in ranges.native_labels  # quantbench's ranges, not a TensorRT calibrator's
    own_feeds = feeds if own else None
    spec = settings.variants
    build = Int8Build(
        spec.exclude, ctx.models_dir, ctx.threads, own_feeds, spec.cpu_flavour,
        offsets=spec.activation_offsets and own, rounding=rounding if own_feeds is not None else None,
    )  # fmt: skip
    size = ctx.model.fixed_batch or settings.bench.batch[0]
    timing = (size, settings.bench.runs, settings.bench.seconds)
    budget = Budget(settings.target.sensitivity_n, timing, ctx.task)
    search, mixed = mixed_precision(
        ctx.source.proto, table, label, batches, target, build, budget, ctx.progress
    )
    return search, mixed


def compare(
    ctx: RunContext, variants: list[Variant], batches: BatchStream | HeldOut, labels: dict[str, int] | None
) -> Comparison:
    """Prepare every variant on the backend (and a reference runner where the backend times another model
    than the one that ships), judge them on the held-out batches against FP32, time them, and add what
    each runner measured beyond that to the variant's details.

    Raises:
        QuantbenchError: a variant cannot be prepared or run.
    """
    from quantbench.evaluation.compare import Judging, compare_variants

    bench, backend = ctx.settings.bench, ctx.backend
    runners: dict[str, Runner] = {}
    references: dict[str, Runner] = {}
    try:
        for variant in variants:
            runners[variant.name] = backend.prepare(variant)
            reference = backend.reference(variant)
            if reference is not None:
                references[variant.name] = reference
        fixed, progress = ctx.model.fixed_batch, ctx.progress
        comparison = compare_variants(
            runners, batches, bench, references=references, fixed_batch=fixed, progress=progress,
            judging=Judging(labels, ctx.task, metrics=ctx.settings.verdict.metric),
        )  # fmt: skip
        timed = [ctx.model.fixed_batch] if ctx.model.fixed_batch else list(dict.fromkeys(bench.batch))
        for variant in variants:
            variant.details.update(runners[variant.name].extra_results(timed, bench.runs))
    finally:
        for runner in [*runners.values(), *references.values()]:
            runner.close()
    for variant in variants:
        if variant.name in comparison.flavour:
            variant.details["timed_model"] = _timed_model(ctx, variant, comparison.flavour[variant.name])
    ctx.notes.extend(backend.notes)
    return comparison


def _timed_model(ctx: RunContext, variant: Variant, distance: dict[str, dict[str, float]]) -> dict[str, Any]:
    """What ``results.json`` says of a variant timed on another model than the one judged (ONNX Runtime's
    CPU flavour of an INT8 variant), with a note when its outputs stray beyond :data:`FLAVOUR_BOUND`."""
    worst = max((errors.get("rel_l2", 0.0) for errors in distance.values()), default=0.0)
    flavour = (variant.details.get("cpu_flavour") or {}).get("name", "exact")
    if not worst <= FLAVOUR_BOUND:
        why = (
            "--cpu-flavour fast rounds tensors that the judged model keeps in float or rounds otherwise"
            if flavour == "fast"
            else "its latency is that of a slightly different model"
        )
        ctx.notes.append(
            f"{variant.name}: the model timed ({variant.cpu_model.name}) differs from the Q/DQ model judged "
            f"({variant.model.name}) by relative L2 {worst:.3g} on its outputs, above {FLAVOUR_BOUND:g}; "
            + why
        )
    return {
        "flavour": flavour,
        "model": str(variant.cpu_model.relative_to(ctx.run_dir)),
        "judged_model": str(variant.model.relative_to(ctx.run_dir)),
        "outputs": {out: {k: errors[k] for k in ("rel_l2", "max_abs")} for out, errors in distance.items()},
        "bound_rel_l2": FLAVOUR_BOUND,
        "within_bound": worst <= FLAVOUR_BOUND,
    }
