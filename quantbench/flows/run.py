"""``quantbench run``: calibrate, build FP32 / FP16 / INT8 variants, compare them on held-out images.

Run folder (``<out>/<model>-<timestamp>/``)::

    histograms/     |x| histograms of the calibration pass
    ranges/         <method>.cache / .txt / .json for every set of ranges used
    models/         fp16.onnx, int8-<method>.onnx (TensorRT), int8-<method>.onnxruntime.onnx (CPU)
    results.json    everything a report needs, with a manifest (see quantbench.report.results)
    metrics.csv     one row per variant and output
    report.html     the accuracy-vs-speed report (see quantbench.report)

The flow is :func:`run_flow`: check the settings, then ranges -> variants -> held-out -> [search] ->
compare -> write, each step reading the :class:`~quantbench.flows.context.RunContext`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantbench.errors import QuantbenchError
from quantbench.flows.context import api_signature

if TYPE_CHECKING:
    from quantbench.evaluation.compare import Comparison
    from quantbench.flows.context import RunContext, Settings
    from quantbench.flows.ranges import RunRanges
    from quantbench.progress import Progress
    from quantbench.variant import Variant

RUN_GROUPS = (
    "data",
    "preprocess",
    "calib[methods,ranges,force_ranges,batch]",
    "variants",
    "backend",
    "bench",
    "target",
    "verdict",
    "output",
)


@dataclass
class RunResult:
    """What :func:`run` produced.

    Attributes:
        run_dir: the run folder.
        results: the content of ``results.json``.
        variants: the variants compared, FP32 first.
    """

    run_dir: Path
    results: dict[str, Any]
    variants: list[Variant] = field(default_factory=list)

    def __repr__(self) -> str:
        names = [variant.name for variant in self.variants]
        return f"RunResult(run_dir={str(self.run_dir)!r}, variants={names!r})"

    def summary(self) -> list[dict[str, Any]]:
        """One row per variant: top-1 agreement, relative L2, ms per batch, speed-up over FP32."""
        from quantbench.report.results import summary_rows

        return summary_rows(self.results)


def check_settings(settings: Settings) -> None:
    """Refuse settings that cannot make a run, before any work.

    Raises:
        QuantbenchError: one line naming the option and what to do.
    """
    from quantbench.export.variants import parse_precisions
    from quantbench.search.mixed_precision import parse_target

    data, variants, bench = settings.data, settings.variants, settings.bench
    wanted = parse_precisions(variants.precisions)
    if data.images is None and data.eval_images is None:
        raise QuantbenchError("give --images (to calibrate and evaluate) or --eval-images")
    if data.images is None and settings.calib.ranges is None and "int8" in wanted:
        raise QuantbenchError("INT8 needs --images to calibrate on, or --ranges FILE")
    from quantbench.export.rounding import ROUNDING

    if variants.weight_rounding not in ROUNDING:
        raise QuantbenchError(
            f"--weight-rounding {variants.weight_rounding!r} is not one of {', '.join(ROUNDING)}"
        )
    from quantbench.export.onnxruntime_fast import CPU_FLAVOURS

    if variants.cpu_flavour not in CPU_FLAVOURS:
        raise QuantbenchError(
            f"--cpu-flavour {variants.cpu_flavour!r} is not one of {', '.join(CPU_FLAVOURS)}"
        )
    fitted = (
        variants.bias_correction
        or variants.weight_rounding == "adaptive"
        or variants.cpu_flavour == "fast"
        or variants.range_search
    )
    if fitted and variants.bias_correction_images < 1:
        raise QuantbenchError("--bias-correction-images must be at least 1")
    if variants.equalize and settings.calib.ranges is not None:
        raise QuantbenchError(
            "--equalize changes the tensors a --ranges file describes; calibrate the equalized model "
            "with --images instead"
        )
    if bench.runs < 1 or bench.seconds < 0 or not bench.batch or min(bench.batch) < 1:
        raise QuantbenchError("--bench-batch sizes and --bench-runs must be at least 1")
    target = parse_target(settings.target.agreement, settings.target.rel_l2, settings.target.headline)
    if settings.verdict.metric:  # a bad --metric fails before any work
        from quantbench.evaluation.plugins import load_metrics

        load_metrics(settings.verdict.metric)
    if target is not None and "int8" not in wanted:
        raise QuantbenchError("--target / --target-agreement / --target-rel-l2 need int8 in --precisions")


def run_flow(settings: Settings, progress: Progress | None = None) -> RunResult:
    """Calibrate the model, build its variants and compare them with FP32 on held-out images.

    Raises:
        QuantbenchError: bad model, images, ranges, options or a variant that cannot be built.
    """
    import dataclasses

    from quantbench.export.variants import parse_precisions
    from quantbench.flows.context import RunContext

    check_settings(settings)
    labels = check_inputs(settings)
    precisions = tuple(parse_precisions(settings.variants.precisions))
    settings = dataclasses.replace(
        settings, variants=dataclasses.replace(settings.variants, precisions=precisions)
    )
    with RunContext.open(settings, "quantbench", progress).finishing() as ctx:
        return _run_steps(ctx, labels)


def check_inputs(settings: Settings) -> dict[str, int] | None:
    """Check every file and folder the run reads, before any work: the model, the sample folders, the
    range file, plugin libraries, and the labels (read, and matched against the held-out folder).

    Returns:
        The labels (image name -> class index), or None without ``--labels``.

    Raises:
        QuantbenchError: one line naming the file or folder and its option.
    """
    from quantbench.evaluation.metrics import read_labels
    from quantbench.flows.checks import check_counts, check_file, check_files, check_labels, sample_files
    from quantbench.ranges import read_ranges

    data, calib = settings.data, settings.calib
    check_counts(data)
    check_file(settings.model, "--model", "model file")
    pools = {}
    for option, root in (("--images", data.images), ("--eval-images", data.eval_images)):
        if root is not None:
            pools[root] = sample_files(root, option)
    check_file(calib.ranges, "--ranges", "range file")
    if calib.ranges is not None:
        read_ranges(calib.ranges)  # a bad range file fails now, not after the model is loaded
    check_files(settings.backend.plugins, "--plugins", "plugin library")
    if data.labels is None:
        return None
    check_file(data.labels, "--labels", "labels file")
    labels = read_labels(data.labels)
    root = data.eval_images if data.eval_images is not None else data.images
    if root is not None:
        check_labels(labels, data.labels, pools[root], root)
    return labels


def _run_steps(ctx: RunContext, labels: dict[str, int] | None) -> RunResult:
    """The steps of :func:`run_flow` once the run folder exists: ranges -> variants -> held-out ->
    [search] -> compare -> write."""
    from quantbench.flows import evaluate
    from quantbench.flows.checks import unlabelled_note
    from quantbench.flows.ranges import gather_ranges
    from quantbench.flows.variants import (
        build_variants,
        correction_feeds,
        equalize_source,
        fit_rounding,
        search_ranges,
    )
    from quantbench.search.mixed_precision import HeldOut

    settings = ctx.settings
    ctx.backend  # noqa: B018  (made now: a backend that cannot run here fails before any work)
    equalize_source(ctx)  # with --equalize, calibration and the FP16 / INT8 models start from its model
    ranges = gather_ranges(ctx)
    feeds = correction_feeds(ctx, ranges)
    search_ranges(ctx, ranges, feeds)  # quantbench's sets searched in place, before anything reads them
    rounding = fit_rounding(ctx, ranges, feeds)  # one fit for every INT8 model of the run
    variants = build_variants(ctx, ranges, feeds, rounding)
    correction = feeds if settings.target.given and settings.variants.bias_correction else None
    del feeds  # the correction images (up to some 500 MiB on large inputs) go unless the search needs them
    start = evaluate.held_out_start(ctx, ranges)
    batches: Any = evaluate.held_out(ctx, start)
    search = None
    if settings.target.given:
        batches = HeldOut(batches)
        search, mixed = evaluate.mixed_search(ctx, ranges, batches, correction, rounding)
        variants.append(mixed)
    del correction
    comparison = evaluate.compare(ctx, variants, batches, labels)
    if labels is not None and settings.data.labels is not None:
        note = unlabelled_note(labels, settings.data.labels, comparison.names)
        if note is not None:
            ctx.notes.append(note)
    evaluation = {"root": str(ctx.eval_root), "start": start, **ctx.dataset(ctx.eval_root).describe()}
    results = write_run(ctx, ranges, variants, comparison, evaluation, search)
    return RunResult(ctx.run_dir, results, variants)


def arguments(settings: Settings, ranges: RunRanges) -> dict[str, Any]:
    """The run's settings as ``results.json`` records them (``manifest.arguments``)."""
    data, calib, spec, target = settings.data, settings.calib, settings.variants, settings.target
    backend, bench = settings.backend, settings.bench

    def text(path: Path | None) -> str | None:
        return str(path) if path is not None else None

    return {
        "model": str(settings.model),
        "images": text(data.images),
        "n": data.n,
        "seed": data.seed,
        "eval_images": text(data.eval_images),
        "eval_n": data.eval_n,
        "labels": text(data.labels),
        "precisions": list(spec.precisions),
        "methods": list(calib.methods) if calib.ranges is None else [],
        "ranges": text(calib.ranges),
        "exclude": list(spec.exclude),
        "target_agreement": target.agreement,
        "target_rel_l2": target.rel_l2,
        "target": target.headline,
        "sensitivity_n": target.sensitivity_n,
        "bias_correction": spec.bias_correction,
        "bias_correction_images": spec.bias_correction_images,
        "weight_rounding": spec.weight_rounding,
        "cpu_flavour": spec.cpu_flavour,
        "activation_offsets": spec.activation_offsets,
        "range_search": spec.range_search,
        "equalize": spec.equalize,
        "backend": backend.name,
        "plugins": [str(p) for p in backend.plugins],
        "cuda_graph": backend.cuda_graph,
        "compute_capability": backend.compute_capability,
        "bench_batch": list(bench.batch),
        "bench_runs": bench.runs,
        "bench_seconds": bench.seconds,
        "preset": settings.preprocess.preset,
        "preprocess": settings.preprocess.overrides(),
        "threads": backend.threads,
        "task": list(settings.verdict.task),
        "task_option": list(settings.verdict.task_option),
        "metric": list(settings.verdict.metric),
        "tolerance": settings.verdict.tolerance,
    }


def write_run(
    ctx: RunContext,
    ranges: RunRanges,
    variants: list[Variant],
    comparison: Comparison,
    evaluation: dict[str, Any],
    search: Any,
) -> dict[str, Any]:
    """Write ``results.json``, ``metrics.csv`` and ``report.html``; returns the results."""
    from quantbench.evaluation.verdict import decide
    from quantbench.model import file_sha256
    from quantbench.report import write_report
    from quantbench.report.results import RunRecord, build_results, write_results

    settings = ctx.settings
    hashes = {"model": ctx.model.sha256}
    if settings.calib.ranges is not None:
        hashes["ranges"] = file_sha256(settings.calib.ranges)
    if settings.data.labels is not None:
        hashes["labels"] = file_sha256(settings.data.labels)
    command = settings.output.command
    record = RunRecord(
        run_dir=ctx.run_dir, model=ctx.model, backend=ctx.backend.describe(),
        arguments=arguments(settings, ranges), command=list(command) if command is not None else None,
        hashes=hashes, calibration=ranges.calibration, range_sets=ranges.range_sets,
        range_info=ranges.range_info, variants=variants, comparison=comparison, evaluation=evaluation,
        notes=ctx.notes, seconds=time.time() - ctx.started,
        sensitivity=search.to_json() if search is not None else None, equalization=ctx.equalization,
    )  # fmt: skip
    verdict = decide(comparison, settings.verdict.tolerance)
    record.verdict = verdict.to_json() if verdict is not None else None
    results = build_results(record)
    write_results(ctx.run_dir, results)
    write_report(ctx.run_dir, results)
    return results


def run(model: Any, images: Any = None, **keywords: Any) -> RunResult:
    """Calibrate ``model``, build its variants and compare them with FP32 on held-out images.

    Keywords are the settings of ``quantbench run`` (see :mod:`quantbench.config` for each group):
    data (``n``, ``seed``, ``eval_images``, ``eval_n``, ``labels``, ``workers``), preprocessing
    (``preset`` and its overrides, or a ``preprocess`` dict), calibration (``methods``, ``ranges``,
    ``batch``), variants (``precisions``, ``exclude``, ``bias_correction``, ``bias_correction_images``,
    ``weight_rounding``, ``cpu_flavour``, ``activation_offsets``, ``range_search``, ``equalize``),
    the backend (``backend``, ``threads``, ``plugins``, ``cuda_graph``), timing (``bench_batch``,
    ``bench_runs``, ``bench_seconds``), a mixed-precision target (``target_agreement``,
    ``target_rel_l2``, ``sensitivity_n``), output (``out``, ``command``) and ``progress`` (a
    :class:`quantbench.progress.Progress`).

    Returns:
        A :class:`RunResult`; ``results.json``, ``metrics.csv`` and ``report.html`` are in its ``run_dir``.

    Raises:
        QuantbenchError: bad model, images, ranges, options or a variant that cannot be built.
    """
    from quantbench.flows.context import settings_from_keywords

    settings, progress = settings_from_keywords(model, images, keywords, RUN_GROUPS)
    return run_flow(settings, progress)


run.__signature__ = api_signature(RUN_GROUPS)  # type: ignore[attr-defined]
