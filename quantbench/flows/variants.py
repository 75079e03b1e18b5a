"""The variants step of ``quantbench run``: FP32, FP16 and one INT8 model per set of ranges, with adaptive
weight rounding and bias correction fitted on the first calibration images where asked for, and the
FP16 / INT8 models built from the equalized model with ``--equalize``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from quantbench.config import VariantSpec
    from quantbench.data.loader import LoadReport
    from quantbench.data.store import BatchStore
    from quantbench.export.judge import CorrectionData
    from quantbench.export.rounding import WeightRounding
    from quantbench.flows.context import RunContext
    from quantbench.flows.ranges import RunRanges
    from quantbench.variant import Variant

CORRECTION_BATCH = 16
MIN_CHECK_IMAGES = 8
"""Fewest calibration images held apart to judge bias correction on; with fewer left after the fitted
ones, it is judged on those it was fitted on."""


def correction_feeds(ctx: RunContext, ranges: RunRanges) -> CorrectionData | None:
    """The batches bias correction and adaptive rounding run on: the first ``--bias-correction-images``
    of the calibration order to fit them, and the calibration images after them (as many, where ``--n``
    leaves that many) to judge the correction on (and to measure the fast CPU flavour's roundings on);
    None where none of these applies to any INT8 model (a note says why when images are lacking for a
    fitted step). With too few calibration images left, the correction is judged on the images it was
    fitted on, and a note says so.
    """
    from quantbench.export.judge import CorrectionData

    settings = ctx.settings
    spec, data = settings.variants, settings.data
    corrected = [label for label in ranges.range_sets if label not in ranges.native_labels]
    fitted = spec.bias_correction or spec.weight_rounding == "adaptive" or spec.range_search
    measured = spec.cpu_flavour == "fast"
    if not ((fitted or measured) and corrected and "int8" in spec.precisions):
        return None
    dataset = ctx.calibration_data
    if dataset is None and not fitted:
        return None  # the fast flavour's roundings go unmeasured: results.json says so
    if dataset is None:
        ctx.notes.append(
            f"{_fitted_steps(spec)} skipped: --ranges without --images gives no images to fit on"
        )
        return None
    if fitted and settings.calib.ranges is not None and data.eval_images is None:
        ctx.notes.append(
            f"{_fitted_steps(spec)} ran on the first images of {data.images}, which the evaluation also "
            "uses; pass --eval-images with held-out images"
        )
    available = len(dataset.files) if dataset.kind == "images" else None
    if ranges.calibration is not None and data.n is not None:
        available = data.n if available is None else min(available, data.n)
    count = spec.bias_correction_images if available is None else min(spec.bias_correction_images, available)
    fit, report = _batches(ctx, count, 0)
    means = _measured_means(ctx, report.used)
    next_start = report.next_start
    left = None if available is None else available - count
    check_count = count if left is None else min(count, left)
    if check_count < MIN_CHECK_IMAGES:
        if fitted:
            ctx.notes.append(
                "bias correction is judged on the images it was fitted on: --n leaves fewer than "
                f"{MIN_CHECK_IMAGES} calibration images after the first {count}"
            )
        return CorrectionData(fit, fit, held_apart=False, task=ctx.task, fit_means=means)
    check, _ = _batches(ctx, check_count, next_start)
    return CorrectionData(fit, check, held_apart=True, task=ctx.task, fit_means=means)


def _fitted_steps(spec: VariantSpec) -> str:
    """The fitted steps asked for, in words: ``bias correction, adaptive rounding and range search``."""
    steps = [
        name
        for name, asked in (
            ("bias correction", spec.bias_correction),
            ("adaptive rounding", spec.weight_rounding == "adaptive"),
            ("range search", spec.range_search),
        )
        if asked
    ]
    return ", ".join(steps[:-1]) + (" and " if len(steps) > 1 else "") + steps[-1]


def _measured_means(ctx: RunContext, used: list[str]) -> dict[str, np.ndarray]:
    """The FP32 means the calibration pass gathered for bias correction
    (:func:`quantbench.flows.ranges.correction_means`), where it gathered them on exactly the samples
    ``used`` to fit on; else none (bias correction measures them)."""
    calibration = ctx.calibration
    if calibration is None or not calibration.first_count:
        return {}
    if calibration.images_used[: calibration.first_count] != list(used):
        return {}
    return dict(calibration.first_means)


def _batches(ctx: RunContext, count: int, start: int) -> tuple[BatchStore, LoadReport]:
    """``count`` calibration samples from position ``start`` of the calibration order, in batches (of the
    model's fixed batch, rounded to whole batches, else of ``--batch``, else :data:`CORRECTION_BATCH` or
    fewer for large samples, see :meth:`~quantbench.flows.context.RunContext.automatic_batch`), kept in
    memory or, where large, in a temporary folder (:func:`quantbench.data.store.keep`); and what was
    read (the samples used, the position after them)."""
    from quantbench.data.store import keep

    stream = _stream(ctx, count, start, ctx.automatic_batch(CORRECTION_BATCH))
    batches = keep(batch.inputs for batch in stream)
    return batches, stream.report


def _stream(ctx: RunContext, count: int, start: int, most: int) -> Any:
    """The stream of :func:`_batches`, read as it goes: batches of the model's fixed batch (``count``
    rounded to whole ones), else of ``--batch``, else of ``most``."""
    data = ctx.settings.data
    dataset = ctx.calibration_data
    assert dataset is not None
    fixed = ctx.model.fixed_batch
    if fixed:
        count = max(fixed, count - count % fixed)
    size = fixed or ctx.settings.calib.batch or most
    return dataset.batches(count, data.seed, size, start=start, workers=data.workers)


def equalize_source(ctx: RunContext) -> None:
    """With ``--equalize`` (and INT8 wanted): the model with cross-layer equalization
    (:mod:`quantbench.export.equalize`), its activations' channels measured on the first
    ``--bias-correction-images`` calibration images (one a run, unless the model's batch is fixed or
    ``--batch`` is given), written as ``models/equalized.onnx`` and made
    ``ctx.source``; what was done goes to ``ctx.equalization`` and a note sums it up.

    Raises:
        QuantbenchError: the equalized model fails ``onnx.checker``.
    """
    import time

    from quantbench.export.equalize import channel_peaks, equalize, find_pairs
    from quantbench.export.variants import save_model
    from quantbench.model import LoadedModel

    spec = ctx.settings.variants
    if not spec.equalize or "int8" not in spec.precisions:
        return
    started = time.perf_counter()
    ctx.progress.start("equalization", 1)
    try:
        tensors = list(dict.fromkeys(pair.tensor for pair in find_pairs(ctx.model.proto)))
        peaks, stream = {}, None
        if tensors and ctx.calibration_data is not None:  # one sample a run: sizes are not known yet
            stream = _stream(ctx, spec.bias_correction_images, 0, 1)
            peaks = channel_peaks(ctx.model.proto, tensors, (batch.inputs for batch in stream), ctx.threads)
        model, found = equalize(ctx.model.proto, peaks)
    finally:
        ctx.progress.finish()
    ctx.equalization = {
        **found.to_json(),
        "images": len(stream.report.used) if stream is not None else 0,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if found.pairs:
        path = save_model(model, ctx.models_dir / "equalized.onnx")
        ctx.source = LoadedModel(path, "quantbench")
        ctx.equalization["model"] = {"file": "models/equalized.onnx", "sha256": ctx.source.sha256}
    ctx.notes.append(found.summary())


def search_ranges(ctx: RunContext, ranges: RunRanges, feeds: CorrectionData | None) -> None:
    """With ``--range-search``: quantbench's sets of ranges (not the backend's) searched on ``feeds.fit``
    in one search (:mod:`quantbench.export.range_search`), in place: the set, its files under
    ``ranges/`` and its ``range_info`` (``search``: what changed) then hold the searched ranges.

    Raises:
        QuantbenchError: ONNX Runtime cannot run the model.
    """
    import dataclasses

    from quantbench.export.qdq import at_least_opset13, plan_qdq
    from quantbench.export.range_search import search_ranges as search
    from quantbench.ranges import write_ranges

    spec = ctx.settings.variants
    own = [label for label in ranges.range_sets if label not in ranges.native_labels]
    if not spec.range_search or feeds is None or not own or "int8" not in spec.precisions:
        return
    model = at_least_opset13(ctx.source.proto)
    tables = {label: ranges.range_sets[label].amax for label in own}
    ctx.progress.start("range search", 1)
    try:
        plan = plan_qdq(model, tables[own[0]], spec.exclude)
        found = search(model, tables, plan, feeds.fit, ranges.absmax, ctx.threads)
    finally:
        ctx.progress.finish()
    calibration = ranges.calibration
    for label in own:
        ranges.range_sets[label] = dataclasses.replace(ranges.range_sets[label], amax=found[label].amax)
        for path in calibration.files.get(label, []) if calibration is not None else []:
            write_ranges(ranges.range_sets[label], path)
        ranges.range_info.setdefault(label, {})["search"] = found[label].details()


def fit_rounding(ctx: RunContext, ranges: RunRanges, feeds: CorrectionData | None) -> WeightRounding | None:
    """Adaptive weight codes for the INT8 models of quantbench's ranges, fitted once on ``feeds.fit`` (the
    weights and their scales do not depend on the activation ranges); None with ``--weight-rounding
    nearest`` or without fitting images.

    Raises:
        QuantbenchError: ONNX Runtime cannot run the model.
    """
    from quantbench.export.qdq import at_least_opset13, plan_qdq
    from quantbench.export.rounding import fit_rounding as fit

    spec = ctx.settings.variants
    own = [table for label, table in ranges.range_sets.items() if label not in ranges.native_labels]
    if spec.weight_rounding != "adaptive" or feeds is None or not own or "int8" not in spec.precisions:
        return None
    model = at_least_opset13(ctx.source.proto)
    ctx.progress.start("adaptive rounding", 1)
    try:
        return fit(model, plan_qdq(model, own[0].amax, spec.exclude), feeds.fit, ctx.threads)
    finally:
        ctx.progress.finish()


def build_variants(
    ctx: RunContext, ranges: RunRanges, feeds: CorrectionData | None, rounding: WeightRounding | None = None
) -> list[Variant]:
    """FP32, then FP16 and one INT8 variant per set of ranges, as ``--precisions`` asks, written under
    ``<run>/models``; INT8 models of quantbench's ranges are offered ``rounding`` (the run's adaptive
    weight codes, :func:`fit_rounding`) and are bias-corrected on ``feeds`` (each where asked for and
    ``feeds`` are given).

    Raises:
        QuantbenchError: a variant cannot be built.
    """
    from quantbench.export.int8 import Int8Fitting
    from quantbench.export.judge import CheckJudge
    from quantbench.export.qdq import at_least_opset13
    from quantbench.export.variants import fp16_variant, fp32_variant, int8_variant

    spec = ctx.settings.variants
    judge = None  # one for every INT8 variant: FP32's outputs on the check images computed once
    if feeds is not None:
        judge = CheckJudge(at_least_opset13(ctx.source.proto), feeds, ctx.threads)
    variants = [fp32_variant(ctx.model.path)]
    int8_sets = ranges.range_sets if "int8" in spec.precisions else {}
    steps = ("fp16" in spec.precisions) + len(int8_sets)
    label = "building variants"
    if rounding is not None:
        label += ", judging adaptive rounding"
    if feeds is not None and spec.bias_correction:
        label += ", bias correction"
    ctx.progress.start(label, steps)
    try:
        if "fp16" in spec.precisions:
            if not ranges.absmax:
                ctx.notes.append(
                    "FP16 built without calibrated ranges: no tensor was checked for float16 overflow"
                )
            variants.append(fp16_variant(ctx.source.proto, ranges.absmax, ctx.models_dir))
            ctx.progress.advance()
        for label, table in int8_sets.items():
            native = label in ranges.native_labels
            variant = int8_variant(
                ctx.source.proto, table, label, spec.exclude, ctx.models_dir,
                Int8Fitting(None, threads=ctx.threads)
                if native
                else Int8Fitting(
                    feeds, spec.bias_correction, rounding, ctx.threads, judge, spec.activation_offsets
                ),
                spec.cpu_flavour,
            )  # fmt: skip
            variants.append(variant)
            ctx.progress.advance()
    finally:
        ctx.progress.finish()
    return variants
