"""The variants step of ``quantbench run``: FP32, FP16 and one INT8 model per set of ranges, with bias
correction on the first calibration images where asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from quantbench.export.bias_correction import CorrectionData
    from quantbench.flows.context import RunContext
    from quantbench.flows.ranges import RunRanges
    from quantbench.variant import Variant

CORRECTION_BATCH = 16
MIN_CHECK_IMAGES = 8
"""Fewest calibration images held apart to judge bias correction on; with fewer left after the fitted
ones, it is judged on those it was fitted on."""


def correction_feeds(ctx: RunContext, ranges: RunRanges) -> CorrectionData | None:
    """The batches bias correction runs on: the first ``--bias-correction-images`` of the calibration
    order to fit the correction, and the calibration images after them (as many, where ``--n`` leaves
    that many) to judge it on; None where no INT8 model is corrected (a note says why when images are
    lacking). With too few calibration images left, the correction is judged on the images it was
    fitted on, and a note says so.
    """
    from quantbench.export.bias_correction import CorrectionData

    settings = ctx.settings
    spec, data = settings.variants, settings.data
    corrected = [label for label in ranges.range_sets if label not in ranges.native_labels]
    if not (spec.bias_correction and corrected and "int8" in spec.precisions):
        return None
    dataset = ctx.calibration_data
    if dataset is None:
        ctx.notes.append("bias correction skipped: --ranges without --images gives no images to correct on")
        return None
    if settings.calib.ranges is not None and data.eval_images is None:
        ctx.notes.append(
            f"bias correction ran on the first images of {data.images}, which the evaluation also uses; "
            "pass --eval-images with held-out images"
        )
    available = len(dataset.files) if dataset.kind == "images" else None
    if ranges.calibration is not None and data.n is not None:
        available = data.n if available is None else min(available, data.n)
    count = spec.bias_correction_images if available is None else min(spec.bias_correction_images, available)
    fit, next_start = _batches(ctx, count, 0)
    left = None if available is None else available - count
    check_count = count if left is None else min(count, left)
    if check_count < MIN_CHECK_IMAGES:
        ctx.notes.append(
            "bias correction is judged on the images it was fitted on: --n leaves fewer than "
            f"{MIN_CHECK_IMAGES} calibration images after the first {count}"
        )
        return CorrectionData(fit, fit, held_apart=False, task=ctx.task)
    check, _ = _batches(ctx, check_count, next_start)
    return CorrectionData(fit, check, held_apart=True, task=ctx.task)


def _batches(ctx: RunContext, count: int, start: int) -> tuple[list[dict[str, np.ndarray]], int]:
    """``count`` calibration samples from position ``start`` of the calibration order, in batches (of the
    model's fixed batch, rounded to whole batches, else of ``--batch``, else :data:`CORRECTION_BATCH`), and
    the position after them."""
    data = ctx.settings.data
    dataset = ctx.calibration_data
    assert dataset is not None
    fixed = ctx.model.fixed_batch
    if fixed:
        count = max(fixed, count - count % fixed)
    stream = dataset.batches(
        count,
        data.seed,
        fixed or ctx.settings.calib.batch or CORRECTION_BATCH,
        start=start,
        workers=data.workers,
    )
    batches = [batch.inputs for batch in stream]
    return batches, stream.report.next_start


def build_variants(ctx: RunContext, ranges: RunRanges, feeds: CorrectionData | None) -> list[Variant]:
    """FP32, then FP16 and one INT8 variant per set of ranges, as ``--precisions`` asks, written under
    ``<run>/models``; INT8 models of quantbench's ranges are bias-corrected on ``feeds`` (when given).

    Raises:
        QuantbenchError: a variant cannot be built.
    """
    from quantbench.export.variants import fp16_variant, fp32_variant, int8_variant

    spec = ctx.settings.variants
    variants = [fp32_variant(ctx.model.path)]
    int8_sets = ranges.range_sets if "int8" in spec.precisions else {}
    steps = ("fp16" in spec.precisions) + len(int8_sets)
    ctx.progress.start("building variants" if feeds is None else "building variants, bias correction", steps)
    try:
        if "fp16" in spec.precisions:
            if not ranges.absmax:
                ctx.notes.append(
                    "FP16 built without calibrated ranges: no tensor was checked for float16 overflow"
                )
            variants.append(fp16_variant(ctx.model.proto, ranges.absmax, ctx.models_dir))
            ctx.progress.advance()
        for label, table in int8_sets.items():
            own = feeds if label not in ranges.native_labels else None
            variant = int8_variant(
                ctx.model.proto, table, label, spec.exclude, ctx.models_dir, own, ctx.threads
            )
            variants.append(variant)
            ctx.progress.advance()
    finally:
        ctx.progress.finish()
    return variants
