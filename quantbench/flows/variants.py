"""The variants step of ``quantbench run``: FP32, FP16 and one INT8 model per set of ranges, with bias
correction on the first calibration images where asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from quantbench.flows.context import RunContext
    from quantbench.flows.ranges import RunRanges
    from quantbench.variant import Variant

CORRECTION_BATCH = 16


def correction_feeds(ctx: RunContext, ranges: RunRanges) -> list[dict[str, np.ndarray]] | None:
    """The batches bias correction runs on: the first ``--bias-correction-images`` of the calibration
    order, preprocessed; None where no INT8 model is corrected (a note says why when images are lacking).
    """
    settings = ctx.settings
    spec, data = settings.variants, settings.data
    corrected = [label for label in ranges.range_sets if label not in ranges.native_labels]
    if not (spec.bias_correction and corrected and "int8" in spec.precisions):
        return None
    dataset = ctx.calibration_data
    if dataset is None:
        ctx.notes.append("bias correction skipped: --ranges without --images gives no images to correct on")
        return None
    count = spec.bias_correction_images
    if ranges.calibration is not None and data.n is not None:
        count = min(data.n, count)
    if settings.calib.ranges is not None and data.eval_images is None:
        ctx.notes.append(
            f"bias correction ran on the first images of {data.images}, which the evaluation also uses; "
            "pass --eval-images with held-out images"
        )
    fixed = ctx.model.fixed_batch
    if dataset.kind == "images":
        count = min(count, len(dataset.files))
    if fixed:
        count = max(fixed, count - count % fixed)
    batches = dataset.batches(count, data.seed, fixed or CORRECTION_BATCH, workers=data.workers)
    return [batch.inputs for batch in batches]


def build_variants(ctx: RunContext, ranges: RunRanges, feeds: list[dict[str, Any]] | None) -> list[Variant]:
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
