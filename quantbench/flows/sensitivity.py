"""``quantbench sensitivity``: which nodes of a model hurt INT8, measured on held-out images.

Ranges are calibrated (one method) or imported as in ``quantbench run``; then, on ``eval_n`` held-out
images, the per-tensor fidelity of the INT8 model and the sensitivity of every quantized node (see
:mod:`quantbench.search.sensitivity`), written to ``<out>/<model>-<timestamp>/sensitivity.json`` beside the
run's ``histograms/`` and ``ranges/``. The models analysed are quantized as ``quantbench run`` builds
them, without bias correction: what each node's quantization does before anything compensates it.

``sensitivity.json`` (``"format": "quantbench-sensitivity"``, version 1): ``model``, ``method``,
``ranges`` (file), ``exclude``, ``output`` (the output compared), ``data`` (held-out images),
``cost`` (model runs and seconds per step), ``tensors`` (graph order) and ``ranking`` (most harmful
first by the main output's headline, then relative L2; ``rel_l2`` / ``top1_agreement`` / ``headline``
with only that node quantized, ``without_rel_l2`` / ``without_top1_agreement`` / ``without_headline``
with every node but that one), and ``headline`` (the metric, the output's kind and why).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantbench import __version__
from quantbench.errors import QuantbenchError
from quantbench.flows.context import api_signature
from quantbench.search.sensitivity import SAMPLES, VIEWS, Evaluator, NodeSensitivity, TensorFidelity

if TYPE_CHECKING:
    from quantbench.data import Batch
    from quantbench.flows.context import RunContext, Settings
    from quantbench.progress import Progress
    from quantbench.ranges import DynamicRanges

FORMAT = "quantbench-sensitivity"
FORMAT_VERSION = 1


@dataclass
class SensitivityRun:
    """What :func:`run_sensitivity` produced.

    Attributes:
        run_dir: the run folder.
        results: the content of ``sensitivity.json``.
        tensors: per-tensor fidelity, graph order (empty when not asked for).
        ranking: the quantized nodes, most harmful first.
    """

    run_dir: Path
    results: dict[str, Any]
    tensors: list[TensorFidelity]
    ranking: list[NodeSensitivity]

    def __repr__(self) -> str:
        first = [node.node for node in self.ranking[:3]]
        where = str(self.run_dir)
        return f"SensitivityRun(run_dir={where!r}, nodes={len(self.ranking)}, most_harmful={first!r})"


def _ranking_row(node: NodeSensitivity) -> dict[str, Any]:
    row: dict[str, Any] = {"node": node.node, "op_type": node.op_type}
    row["rel_l2"] = node.only.rel_l2 if node.only else None
    row["top1_agreement"] = node.only.top1_agreement if node.only else None
    row["without_rel_l2"] = node.without.rel_l2 if node.without else None
    row["without_top1_agreement"] = node.without.top1_agreement if node.without else None
    row["headline"] = node.only.headline if node.only else None
    row["without_headline"] = node.without.headline if node.without else None
    return row


def check_settings(settings: Settings) -> None:
    """Refuse settings that cannot make an analysis, before any work.

    Raises:
        QuantbenchError: one line naming the option and what to do.
    """
    from quantbench.calibration.registry import parse_method

    calib, data, views = settings.calib, settings.data, settings.sensitivity.views
    if calib.ranges is None:
        if len(calib.methods) != 1 or "," in calib.methods[0]:
            raise QuantbenchError(
                f"--method takes one calibration method here, got {','.join(calib.methods)!r}"
            )
        parse_method(calib.methods[0])  # an unknown method fails before any work
    if data.eval_n is not None and data.eval_n < 1:
        raise QuantbenchError(f"--eval-n must be at least 1, got {data.eval_n}")
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise QuantbenchError(f"--view takes only and/or without, got {', '.join(views) or 'nothing'}")


def sensitivity_ranges(ctx: RunContext) -> tuple[str, DynamicRanges, str, float | None]:
    """The one set of ranges analysed: (label, ranges, file, calibration seconds or None)."""
    from quantbench.flows.ranges import calibrate_run, imported_label, imported_ranges

    path = ctx.settings.calib.ranges
    if path is not None:
        table, _ = imported_ranges(path, ctx)
        return imported_label(path), table, str(path), None
    calibration = ctx.calibration = calibrate_run(ctx, list(ctx.settings.calib.methods))
    label, table = next(iter(calibration.ranges.items()))
    return label, table, str(calibration.files[label][0]), calibration.total_seconds


def held_out(ctx: RunContext) -> tuple[list[Batch], Any, int]:
    """(the held-out batches, their stream's load report, where they start).

    Raises:
        QuantbenchError: no held-out image is left or usable.
    """
    data = ctx.settings.data
    source = ctx.eval_root
    dataset = ctx.dataset(source)
    calibration = ctx.calibration
    start = calibration.next_start if data.eval_images is None and calibration is not None else 0
    count = data.eval_n if data.eval_n is not None else SAMPLES
    if dataset.kind == "images":
        left = len(dataset.files) - start
        if left < 1:
            raise QuantbenchError(
                f"no held-out images: the {len(dataset.files)} images under {source} were all used to "
                "calibrate; pass --eval-images or a smaller --n"
            )
        count = min(count, left)
    stream = dataset.batches(count, data.seed, ctx.eval_batch, start=start, workers=data.workers)
    batches = list(stream)
    if not batches:
        raise QuantbenchError(f"no held-out sample under {source} could be used")
    return batches, stream.report, start


def analyse(
    ctx: RunContext, amax: dict[str, float], feeds: list[Any], seconds: dict[str, float]
) -> tuple[list[TensorFidelity], list[NodeSensitivity], Evaluator]:
    """Per-tensor fidelity (when asked for) and per-node sensitivity on one FP32 reference pass."""
    from quantbench.export.qdq import at_least_opset13
    from quantbench.search.candidates import Candidates
    from quantbench.search.sensitivity import analyse_tensors, node_sensitivity

    spec, exclude, threads = ctx.settings.sensitivity, ctx.settings.variants.exclude, ctx.threads
    model13 = at_least_opset13(ctx.model.proto)
    rows: list[TensorFidelity] = []
    step = time.perf_counter()
    if spec.tensors:
        ctx.progress.start("per-tensor fidelity", None)
        try:
            rows, evaluator = analyse_tensors(model13, amax, exclude, feeds, threads, ctx.task)
        finally:
            ctx.progress.finish()
    else:
        evaluator = Evaluator.from_fp32(model13, feeds, threads, ctx.task)
    seconds["reference_and_tensors"] = time.perf_counter() - step
    step = time.perf_counter()
    candidates = Candidates(model13, amax, exclude, threads)
    nodes = node_sensitivity(candidates, evaluator, spec.views, ctx.progress)
    seconds["sensitivity"] = time.perf_counter() - step
    return rows, nodes, evaluator


def sensitivity_flow(settings: Settings, progress: Progress | None = None) -> SensitivityRun:
    """Rank the quantized nodes of the model by how much they hurt INT8 (see the module docstring).

    Raises:
        QuantbenchError: bad model, images, method, ranges or options; no held-out image.
    """
    from quantbench.flows.context import RunContext
    from quantbench.flows.run import check_inputs

    check_settings(settings)
    if settings.calib.ranges is None and settings.data.images is None:
        raise QuantbenchError("give --images to calibrate on, or --ranges FILE")
    if settings.data.images is None and settings.data.eval_images is None:
        raise QuantbenchError("give --eval-images (held-out images to analyse on)")
    check_inputs(settings)
    with RunContext.open(settings, "quantbench", progress).finishing("sensitivity.json") as ctx:
        return _sensitivity_steps(ctx)


def _sensitivity_steps(ctx: RunContext) -> SensitivityRun:
    """The steps of :func:`sensitivity_flow` once the run folder exists: ranges -> held-out -> analysis
    -> ``sensitivity.json``."""
    from quantbench.search.sensitivity import rank

    started, seconds = time.perf_counter(), {}
    label, table, range_file, calibration_seconds = sensitivity_ranges(ctx)
    if calibration_seconds is not None:
        seconds["calibration"] = calibration_seconds
    batches, load_report, start = held_out(ctx)
    rows, nodes, evaluator = analyse(ctx, dict(table.amax), [b.inputs for b in batches], seconds)
    ranking = rank(nodes)
    seconds["total"] = time.perf_counter() - started
    data = {
        "root": str(ctx.eval_root),
        "start": start,
        "samples": evaluator.samples,
        "names": [name for b in batches for name in b.names],
        "skipped": [list(item) for item in load_report.skipped],
    }
    results = _results(ctx, (label, range_file), evaluator, data, (rows, nodes, ranking), seconds)
    return SensitivityRun(ctx.run_dir, results, rows, ranking)


def _results(
    ctx: RunContext,
    ranges: tuple[str, str],
    evaluator: Evaluator,
    data: dict[str, Any],
    analysis: tuple[list[TensorFidelity], list[NodeSensitivity], list[NodeSensitivity]],
    seconds: dict[str, float],
) -> dict[str, Any]:
    """Write ``sensitivity.json``; returns its content."""
    from quantbench.fileio import write_text_atomic
    from quantbench.report.results import json_safe

    rows, nodes, ranking = analysis
    views, command = ctx.settings.sensitivity.views, ctx.settings.output.command
    results = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "quantbench": __version__,
        "model": {"name": ctx.model.path.stem, "path": str(ctx.model.path), "sha256": ctx.model.sha256},
        "method": ranges[0],
        "ranges": ranges[1],
        "exclude": list(ctx.settings.variants.exclude),
        "output": evaluator.output,
        "class_scores": evaluator.class_scores,
        "headline": {
            "metric": evaluator.headline.metric,
            "kind": evaluator.headline.kind.kind,
            "kind_reason": evaluator.headline.kind.reason,
            "higher_is_better": evaluator.headline.higher_is_better,
        },
        "data": data,
        "cost": {
            "fp32_passes": 1,
            "int8_passes": 1 if ctx.settings.sensitivity.tensors else 0,
            "sensitivity_models": len(nodes) * len(views),
            "views": list(views),
            "samples_per_model": evaluator.samples,
            "seconds": {key: round(value, 3) for key, value in seconds.items()},
        },
        "tensors": [asdict(row) for row in rows],
        "ranking": [_ranking_row(node) for node in ranking],
        "command": list(command) if command is not None else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    results = json_safe(results)
    write_text_atomic(ctx.run_dir / "sensitivity.json", json.dumps(results, indent=1, allow_nan=False))
    return results  # type: ignore[no-any-return]


GROUPS = (
    "data",
    "preprocess",
    "calib[methods,ranges,force_ranges,batch]",
    "variants[exclude]",
    "backend[threads]",
    "output",
    "verdict[task,task_option]",
    "sensitivity",
)
DEFAULTS: dict[str, Any] = {"methods": ("entropy",), "eval_n": SAMPLES}


def run_sensitivity(model: Any, images: Any = None, **keywords: Any) -> SensitivityRun:
    """Rank the quantized nodes of ``model`` by how much they hurt INT8 (see the module docstring).

    Keywords are the settings of ``quantbench sensitivity`` (see :mod:`quantbench.config`): data
    (``n``, ``seed``, ``eval_images``, ``eval_n``, ``workers``), preprocessing (``preset`` and its
    overrides, or a ``preprocess`` dict), ``methods`` (one method) or ``ranges``, ``batch``,
    ``exclude``, ``threads``, ``views``, ``tensors``, ``out``, ``command`` and ``progress``.

    Raises:
        QuantbenchError: bad model, images, method, ranges or options; no held-out image.
    """
    from quantbench.flows.context import settings_from_keywords

    if "method" in keywords:
        keywords["methods"] = [keywords.pop("method")]
    settings, progress = settings_from_keywords(model, images, keywords, GROUPS, DEFAULTS)
    return sensitivity_flow(settings, progress)


run_sensitivity.__signature__ = api_signature(GROUPS, DEFAULTS)  # type: ignore[attr-defined]
