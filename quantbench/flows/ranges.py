"""The ranges a run quantizes with: imported from a file, calibrated by quantbench, or by the backend's own
calibrators (``trt-*`` with ``--backend tensorrt``).

``--ranges FILE`` skips calibration; otherwise quantbench's methods share one pass over the calibration
images, and the backend's calibrators run afterwards on the same images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantbench.errors import QuantbenchError
from quantbench.ranges import DynamicRanges

if TYPE_CHECKING:
    import numpy as np

    from quantbench.calibration.calibrate import CalibrationResult
    from quantbench.calibration.means import FirstSamples
    from quantbench.data import Batch
    from quantbench.flows.context import RunContext

MAX_CALIBRATION_BATCH = 32


@dataclass
class RunRanges:
    """What the ranges step produced.

    Attributes:
        range_sets: label -> ranges, one INT8 variant each.
        range_info: label -> file, unknown names, tensors without a range, header warnings, and
            ``search`` where ``--range-search`` changed the set (:mod:`quantbench.export.range_search`).
        calibration: quantbench's calibration, when it ran.
        absmax: tensor -> largest |x| seen (or imported amax), for the FP16 overflow check.
        native_labels: the labels whose ranges came from the backend's own calibrators.
        own_methods: quantbench's methods asked for; native_methods: the backend's.
    """

    range_sets: dict[str, DynamicRanges] = field(default_factory=dict)
    range_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibration: CalibrationResult | None = None
    absmax: dict[str, float] = field(default_factory=dict)
    native_labels: set[str] = field(default_factory=set)
    own_methods: list[str] = field(default_factory=list)
    native_methods: list[str] = field(default_factory=list)


def header_warnings(ranges: DynamicRanges) -> list[str]:
    """Why TensorRT would ignore the cache these ranges came from (empty for text or JSON files).

    The version is checked against the installed TensorRT, or, where none is installed, against
    TensorRT 10 (the last version with calibration caches); the algorithm must be one TensorRT knows.
    quantbench itself uses the ranges either way.
    """
    from quantbench.ranges import trt_header_problems, trt_version_string
    from quantbench.tensorrt_install import installed_version

    installed = installed_version()
    problems = trt_header_problems(ranges, expect_version=installed, expect_algorithm=None)
    version = ranges.trt_version
    if installed is None and version is not None and not 100000 <= version < 110000:
        problems.append(
            f"{ranges.source}: cache header is for TensorRT {trt_version_string(version)}; TensorRT 10 "
            "silently ignores caches from other versions (quantbench uses its ranges as they are)"
        )
    return problems


def imported_ranges(path: Path, ctx: RunContext) -> tuple[DynamicRanges, dict[str, Any]]:
    """Read a range file, check it was made for this model and preprocessing (:func:`check_made_for`)
    and compare its names with the model's tensors.

    Returns:
        The ranges, and their file, unknown names, tensors without a range and header warnings.

    Raises:
        QuantbenchError: an unreadable or empty file, one made for another model or preprocessing
            (without ``--force-ranges``), or one none of whose names is in the model.
    """
    from quantbench.ranges import read_ranges

    tensors = ctx.model.tensors
    table = read_ranges(path)
    if not ctx.settings.calib.force_ranges:
        check_made_for(table, path, ctx)
    if not table.amax:
        raise QuantbenchError(f"{path}: no ranges in the file")
    known = set(tensors)
    if not set(table.amax) & known:
        raise QuantbenchError(
            f"{path}: none of its {len(table.amax)} tensor names is in the model "
            f"(e.g. {next(iter(table.amax))!r}); were the ranges made for another model?"
        )
    return table, _info(str(path), table, tensors, header_warnings(table))


def check_made_for(table: DynamicRanges, path: Path, ctx: RunContext) -> None:
    """Refuse ranges whose file says they were made for another model file, or from images preprocessed
    otherwise than this run's images are (files that do not say, as TensorRT caches, pass).

    Raises:
        QuantbenchError: one line naming the difference and ``--force-ranges``.
    """
    force = "; pass --force-ranges to use them anyway"
    if table.model_hash and table.model_hash != ctx.model.sha256:
        raise QuantbenchError(
            f"--ranges {path}: made for another model file (SHA-256 {table.model_hash[:12]}..., "
            f"{ctx.model.path.name} has {ctx.model.sha256[:12]}...){force}"
        )
    data = ctx.settings.data
    root = data.images if data.images is not None else data.eval_images
    ours = ctx.dataset(root).preprocessing if root is not None else None
    if not table.preprocessing or ours is None:
        return
    theirs, mine = table.preprocessing, ours.to_dict()
    differ = [key for key in mine if key != "preset" and key in theirs and theirs[key] != mine[key]]
    if differ:
        shown = ", ".join(f"{key} {theirs[key]} there, {mine[key]} here" for key in differ[:3])
        raise QuantbenchError(
            f"--ranges {path}: made from images preprocessed otherwise ({theirs.get('preset')} preset; "
            f"{shown}){force}"
        )


def _info(file: str, table: DynamicRanges, tensors: list[str], warnings: list[str]) -> dict[str, Any]:
    known = set(tensors)
    return {
        "file": file,
        "unknown": [name for name in table.amax if name not in known],
        "missing": [name for name in tensors if name not in table.amax],
        "warnings": warnings,
    }


def imported_label(path: Path) -> str:
    """The label of ranges read from ``path``: its name without the suffix."""
    return path.stem.replace(" ", "_") or "imported"


def calibrate_run(
    ctx: RunContext, methods: list[str], first: FirstSamples | None = None
) -> CalibrationResult:
    """quantbench's calibration pass of a command with ``methods``, written under the run folder (also
    kept as ``ctx.calibration``); ``first``: means to gather on the first samples on the way."""
    from quantbench.calibration.calibrate import calibrate_dataset

    data, calib = ctx.settings.data, ctx.settings.calib
    dataset = ctx.calibration_data
    assert dataset is not None
    calib = dataclasses.replace(calib, methods=tuple(methods))
    ctx.calibration = calibrate_dataset(
        ctx.source, dataset, data, calib, ctx.run_dir, ctx.threads, ctx.progress, first
    )
    return ctx.calibration


def correction_means(ctx: RunContext) -> FirstSamples | None:
    """Where the run corrects biases: the FP32 means its correction needs, to gather in the calibration
    pass (the correction's fitting images are that pass's first samples); else None."""
    from quantbench.calibration.means import FirstSamples
    from quantbench.export.bias_correction import correctable_outputs

    spec = ctx.settings.variants
    if not (spec.bias_correction and "int8" in spec.precisions):
        return None
    exposed = set(ctx.source.tensors)
    axes = {name: axis for name, axis in correctable_outputs(ctx.source.proto).items() if name in exposed}
    return FirstSamples(axes, spec.bias_correction_images) if axes else None


def gather_ranges(ctx: RunContext) -> RunRanges:
    """Import or calibrate the ranges of a run.

    Calibration runs when INT8 or FP16 is wanted and images are given: FP16 needs only absmax, so
    without INT8 (or with the backend's calibrators alone) the pass computes minmax only.

    Raises:
        QuantbenchError: a bad range file, calibration or backend calibration failure.
    """
    from quantbench.backends.base import RunPlan
    from quantbench.backends.registry import split_methods

    settings = ctx.settings
    wanted, ranges = settings.variants.precisions, settings.calib.ranges
    out = RunRanges()
    out.own_methods, out.native_methods = split_methods(settings.calib.methods, ctx.backend)
    if ranges is not None:
        table, info = imported_ranges(ranges, ctx)
        out.range_sets[imported_label(ranges)] = table
        out.range_info[imported_label(ranges)] = info
        out.absmax = dict(table.amax)
    elif settings.data.images is not None and ({"int8", "fp16"} & set(wanted)):
        int8 = "int8" in wanted
        methods = (out.own_methods or ["minmax"]) if int8 else ["minmax"]
        out.calibration = calibrate_run(ctx, methods, correction_means(ctx) if out.own_methods else None)
        out.absmax = out.calibration.absmax
        if int8 and out.own_methods:  # else the minmax pass only gave FP16 its absmax
            out.range_sets = dict(out.calibration.ranges)
            for label, files in out.calibration.files.items():
                out.range_info[label] = {"file": str(files[0]), "unknown": [], "missing": [], "warnings": []}
    imported = out.range_sets if ranges is not None else {}
    seen = out.calibration.shapes if out.calibration is not None else {}
    samples = {name: [tuple(s["shape"]) for s in shapes] for name, shapes in seen.items()}
    if ctx.backend.capabilities.gpu and _dynamic_beyond_batch(ctx):  # engines built for these shapes
        for name, shapes in held_out_shapes(ctx, out.calibration).items():
            samples[name] = [*samples.get(name, []), *(s for s in shapes if s not in samples.get(name, []))]
    plan = RunPlan(
        ctx.source.path, ctx.source.inputs, ctx.run_dir, ctx.source.sha256, settings.bench.batch,
        ctx.eval_batch, settings.calib.batch, dict(imported), samples,
    )  # fmt: skip
    ctx.backend.begin(plan)
    if out.native_methods and "int8" in wanted and settings.data.images is not None and ranges is None:
        native_ranges(ctx, out)
    return out


def _dynamic_beyond_batch(ctx: RunContext) -> bool:
    """Whether a model input has a dynamic dimension other than the batch."""
    return any(not isinstance(d, int) or d < 0 for spec in ctx.model.inputs for d in spec.shape[1:])


def held_out_shapes(
    ctx: RunContext, calibration: CalibrationResult | None
) -> dict[str, list[tuple[int, ...]]]:
    """The shapes of the held-out samples by input, from a pass that only loads and preprocesses them, so
    that engines built for a range of shapes cover the samples they are judged on too.

    Raises:
        QuantbenchError: the held-out samples cannot be loaded.
    """
    from quantbench.flows.evaluate import held_out, held_out_position

    with held_out(ctx, held_out_position(ctx, calibration) or 0) as stream:
        for _ in stream:
            pass
    return {name: list(seen) for name, seen in stream.report.shapes.items()}


def calibration_batch(n: int, model_batch: int | None, requested: int | None) -> int:
    """The batch a backend's calibrators run with: the model's fixed batch, else ``--batch``, else the
    largest divisor of ``n`` up to 32 (so no image is left out of a full batch).

    Raises:
        QuantbenchError: ``--batch`` below 1.
    """
    if requested is not None and requested < 1:
        raise QuantbenchError(f"--batch must be at least 1, got {requested}")
    if model_batch:
        return model_batch
    if requested:
        return requested
    return max(size for size in range(1, min(n, MAX_CALIBRATION_BATCH) + 1) if n % size == 0)


def full_batches(
    batches: Iterable[Batch], size: int, dropped: list[int]
) -> Iterator[Mapping[str, np.ndarray]]:
    """The inputs of each batch of exactly ``size`` samples; the samples of a short last batch are
    counted in ``dropped`` (backend calibrators take one fixed batch shape)."""
    for batch in batches:
        count = len(batch.names)
        if count == size:
            yield batch.inputs
        else:
            dropped.append(count)


def native_ranges(ctx: RunContext, out: RunRanges) -> None:
    """Calibrate with the backend's own calibrators on the first ``n`` images (the ones quantbench's
    methods use), write each result as ``ranges/<label>.txt`` and ``.json`` beside the backend's cache,
    and add them to ``out``.

    Raises:
        QuantbenchError: calibration fails.
    """
    from quantbench.ranges import write_ranges

    data = ctx.settings.data
    dataset = ctx.calibration_data
    assert dataset is not None
    n = data.n if data.n is not None else len(dataset.files)
    size = calibration_batch(n, ctx.model.fixed_batch, ctx.settings.calib.batch)
    dropped: list[int] = []

    def stream() -> Iterator[Mapping[str, np.ndarray]]:
        dropped.clear()
        return full_batches(dataset.batches(n, data.seed, size, workers=data.workers), size, dropped)

    preprocessing = dataset.describe().get("preprocessing") or {}
    ctx.progress.start("TensorRT calibration", len(out.native_methods))
    try:
        tables = ctx.backend.calibrate_native(out.native_methods, stream, size, preprocessing)
    finally:
        ctx.progress.finish()
    for label, table in tables.items():
        for fmt in ("txt", "json"):
            write_ranges(table, ctx.run_dir / "ranges" / f"{label}.{fmt}")
        cache = ctx.run_dir / "ranges" / f"{label}.cache"
        out.range_info[label] = _info(str(cache), table, ctx.source.tensors, [])
    if dropped:
        ctx.notes.append(
            f"TensorRT calibration left out {sum(dropped)} image(s) that did not fill a batch of {size}"
        )
    out.native_labels = set(tables)
    out.range_sets.update(tables)
