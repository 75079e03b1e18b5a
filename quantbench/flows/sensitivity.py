"""``quantbench sensitivity``: which nodes of a model hurt INT8, measured on held-out images.

Ranges are calibrated (one method) or imported as in ``quantbench run``; then, on ``eval_n`` held-out
images, the per-tensor fidelity of the INT8 model and the sensitivity of every quantized node (see
:mod:`quantbench.search.sensitivity`), written to ``<out>/<model>-<timestamp>/sensitivity.json`` beside the
run's ``histograms/`` and ``ranges/``. The models analysed are quantized as ``quantbench run`` builds
them, without bias correction: what each node's quantization does before anything compensates it.

``sensitivity.json`` (``"format": "quantbench-sensitivity"``, version 1): ``model``, ``method``,
``ranges`` (file), ``exclude``, ``output`` (the output compared), ``data`` (held-out images),
``cost`` (model runs and seconds per step), ``tensors`` (graph order) and ``ranking`` (most harmful
first; ``rel_l2`` / ``top1_agreement`` with only that node quantized, ``without_rel_l2`` /
``without_top1_agreement`` with every node but that one).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantbench import __version__
from quantbench.errors import QuantbenchError
from quantbench.search.sensitivity import SAMPLES, VIEWS, NodeSensitivity, TensorFidelity

if TYPE_CHECKING:
    from quantbench.progress import Progress

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


def _ranking_row(node: NodeSensitivity) -> dict[str, Any]:
    row: dict[str, Any] = {"node": node.node, "op_type": node.op_type}
    row["rel_l2"] = node.only.rel_l2 if node.only else None
    row["top1_agreement"] = node.only.top1_agreement if node.only else None
    row["without_rel_l2"] = node.without.rel_l2 if node.without else None
    row["without_top1_agreement"] = node.without.top1_agreement if node.without else None
    return row


def run_sensitivity(
    model: str | os.PathLike[str],
    images: str | os.PathLike[str] | None = None,
    *,
    n: int = 100,
    seed: int = 0,
    eval_images: str | os.PathLike[str] | None = None,
    eval_n: int = SAMPLES,
    method: str = "entropy",
    ranges: str | os.PathLike[str] | None = None,
    exclude: Sequence[str] = (),
    views: Sequence[str] = VIEWS,
    tensors: bool = True,
    batch: int | None = None,
    preset: str = "imagenet",
    preprocess: dict[str, Any] | None = None,
    threads: int = 0,
    workers: int = 2,
    out: str | os.PathLike[str] = "reports",
    progress: Progress | None = None,
    command: Sequence[str] | None = None,
) -> SensitivityRun:
    """Rank the quantized nodes of ``model`` by how much they hurt INT8 (see the module docstring).

    Args:
        model: the FP32 ONNX model.
        images: calibration images (held-out images come from here too when ``eval_images`` is not given).
        n: calibration images.
        seed: picks and orders the images.
        eval_images: held-out images.
        eval_n: held-out images analysed (each sensitivity model runs on all of them).
        method: one calibration method.
        ranges: a range file to use instead of calibrating.
        exclude: ``--exclude`` patterns: kept in float throughout, not ranked.
        views: ``only`` and/or ``without`` (see :func:`quantbench.search.sensitivity.node_sensitivity`).
        tensors: also measure per-tensor fidelity.
        batch: calibration batch (default: automatic).
        preset, preprocess: image preprocessing.
        threads: ONNX Runtime threads (0: every core).
        workers: image decoding threads.
        out: the folder the run folder is made in.
        progress: receives progress of the long steps.
        command: the command line, recorded in the results.

    Returns:
        A :class:`SensitivityRun`.

    Raises:
        QuantbenchError: bad model, images, method, ranges or options; no held-out image.
    """
    from quantbench.calibration.calibrate import calibrate
    from quantbench.calibration.registry import parse_method
    from quantbench.data import open_dataset
    from quantbench.export.qdq import at_least_opset13
    from quantbench.fileio import write_text_atomic
    from quantbench.flows.ranges import imported_ranges
    from quantbench.flows.run import EVAL_BATCH, new_run_folder
    from quantbench.model import file_sha256, float_activations, input_specs, load_model
    from quantbench.progress import QuietProgress
    from quantbench.report.results import json_safe
    from quantbench.search.candidates import Candidates
    from quantbench.search.sensitivity import Evaluator, analyse_tensors, node_sensitivity, rank

    started = time.perf_counter()
    report = progress or QuietProgress()
    if ranges is None:
        if "," in method:
            raise QuantbenchError(f"--method takes one calibration method here, got {method!r}")
        parse_method(method)  # an unknown method fails before any work
    if eval_n < 1:
        raise QuantbenchError(f"--eval-n must be at least 1, got {eval_n}")
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise QuantbenchError(f"--view takes only and/or without, got {', '.join(views) or 'nothing'}")
    model_path = Path(model)
    onnx_model = load_model(model_path)
    inputs = input_specs(onnx_model)
    if not inputs or not all(spec.is_float for spec in inputs):
        raise QuantbenchError(f"{model_path}: quantbench needs a model with float inputs")
    if ranges is None and images is None:
        raise QuantbenchError("give --images to calibrate on, or --ranges FILE")
    if images is None and eval_images is None:
        raise QuantbenchError("give --eval-images (held-out images to analyse on)")
    run_dir = new_run_folder(out, model_path)
    seconds: dict[str, float] = {}

    # ranges
    calibration = None
    if ranges is not None:
        table, _ = imported_ranges(Path(ranges), float_activations(onnx_model))
        label, range_file = Path(ranges).stem.replace(" ", "_") or "imported", str(ranges)
    else:
        report.start("calibrating", n)
        try:
            calibration = calibrate(
                model_path, images, n=n, seed=seed, methods=[method], batch=batch, preset=preset,  # type: ignore[arg-type]
                preprocess=preprocess, out=run_dir, workers=workers, threads=threads, on_batch=report.advance,
            )  # fmt: skip
        finally:
            report.finish()
        label, table = next(iter(calibration.ranges.items()))
        range_file = str(calibration.files[label][0])
        seconds["calibration"] = calibration.total_seconds

    # held-out images
    source = Path(eval_images) if eval_images is not None else Path(images)  # type: ignore[arg-type]
    dataset = open_dataset(source, inputs, preset=preset, **(preprocess or {}))
    start = calibration.next_start if eval_images is None and calibration is not None else 0
    count: int = eval_n
    if dataset.kind == "images":
        left = len(dataset.files) - start
        if left < 1:
            raise QuantbenchError(
                f"no held-out images: the {len(dataset.files)} images under {source} were all used to "
                "calibrate; pass --eval-images or a smaller --n"
            )
        count = min(eval_n, left)
    stream = dataset.batches(count, seed, inputs[0].fixed(0) or EVAL_BATCH, start=start, workers=workers)
    batches = list(stream)
    feeds = [b.inputs for b in batches]
    if not feeds:
        raise QuantbenchError(f"no held-out sample under {source} could be used")

    # analyses, on one FP32 reference pass
    model13 = at_least_opset13(onnx_model)
    amax = dict(table.amax)
    rows: list[TensorFidelity] = []
    step = time.perf_counter()
    if tensors:
        report.start("per-tensor fidelity", None)
        try:
            rows, evaluator = analyse_tensors(model13, amax, exclude, feeds, threads)
        finally:
            report.finish()
    else:
        evaluator = Evaluator.from_fp32(model13, feeds, threads)
    seconds["reference_and_tensors"] = time.perf_counter() - step
    step = time.perf_counter()
    nodes = node_sensitivity(Candidates(model13, amax, exclude, threads), evaluator, views, report)
    seconds["sensitivity"] = time.perf_counter() - step
    ranking = rank(nodes)
    seconds["total"] = time.perf_counter() - started

    results = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "quantbench": __version__,
        "model": {"name": model_path.stem, "path": str(model_path), "sha256": file_sha256(model_path)},
        "method": label,
        "ranges": range_file,
        "exclude": list(exclude),
        "output": evaluator.output,
        "class_scores": evaluator.class_scores,
        "data": {
            "root": str(source),
            "start": start,
            "samples": evaluator.samples,
            "names": [name for b in batches for name in b.names],
            "skipped": [list(item) for item in stream.report.skipped],
        },
        "cost": {
            "fp32_passes": 1,
            "int8_passes": 1 if tensors else 0,
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
    write_text_atomic(run_dir / "sensitivity.json", json.dumps(results, indent=1, allow_nan=False))
    return SensitivityRun(run_dir, results, rows, ranking)
