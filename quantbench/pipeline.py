"""``quantbench run``: calibrate, build FP32 / FP16 / INT8 variants, compare them on held-out images.

Run folder (``<out>/<model>-<timestamp>/``)::

    histograms/     |x| histograms of the calibration pass
    ranges/         <method>.cache / .txt / .json for every set of ranges used
    models/         fp16.onnx, int8-<method>.onnx (TensorRT), int8-<method>.onnxruntime.onnx (CPU)
    results.json    everything a report needs, with a manifest (see quantbench.results)
    metrics.csv     one row per variant and output
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from quantbench.errors import QuantbenchError
from quantbench.ranges import DynamicRanges
from quantbench.variants import Variant

DEFAULT_EVAL_CAP = 500
"""Held-out images evaluated when ``eval_n`` is not given."""

EVAL_BATCH = 8


class Progress(Protocol):
    """Receives progress of the steps that take time (the CLI draws bars)."""

    def start(self, step: str, total: int | None) -> None:
        """A step begins; ``total`` units are expected (None: unknown)."""

    def advance(self, count: int = 1) -> None:
        """``count`` units of the current step are done."""

    def finish(self) -> None:
        """The current step is over."""


class _Quiet:
    def start(self, step: str, total: int | None) -> None:
        pass

    def advance(self, count: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass


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

    def summary(self) -> list[dict[str, Any]]:
        """One row per variant: top-1 agreement, relative L2, ms per batch, speed-up over FP32."""
        from quantbench.results import summary_rows

        return summary_rows(self.results)


def _run_folder(out: str | os.PathLike[str], model: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(out) / f"{model.stem}-{stamp}"
    path, k = base, 1
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


def _imported_ranges(path: Path, tensors: list[str]) -> tuple[DynamicRanges, dict[str, Any]]:
    """Read a range file and compare its names with the model's tensors."""
    from quantbench.backends.tensorrt import header_warnings
    from quantbench.ranges import read_ranges

    table = read_ranges(path)
    if not table.amax:
        raise QuantbenchError(f"{path}: no ranges in the file")
    known = set(tensors)
    info = {
        "file": str(path),
        "unknown": [name for name in table.amax if name not in known],
        "missing": [name for name in tensors if name not in table.amax],
        "warnings": header_warnings(table),
    }
    if not set(table.amax) & known:
        raise QuantbenchError(
            f"{path}: none of its {len(table.amax)} tensor names is in the model "
            f"(e.g. {next(iter(table.amax))!r}); were the ranges made for another model?"
        )
    return table, info


def run(
    model: str | os.PathLike[str],
    images: str | os.PathLike[str] | None = None,
    *,
    n: int = 100,
    seed: int = 0,
    eval_images: str | os.PathLike[str] | None = None,
    eval_n: int | None = None,
    labels: str | os.PathLike[str] | None = None,
    precisions: Sequence[str] = ("fp32", "fp16", "int8"),
    methods: Sequence[str] = ("entropy", "minmax", "percentile"),
    ranges: str | os.PathLike[str] | None = None,
    exclude: Sequence[str] = (),
    backend: str = "auto",
    out: str | os.PathLike[str] = "reports",
    batch: int | None = None,
    bench_batch: Sequence[int] = (1,),
    bench_runs: int = 50,
    bench_seconds: float = 2.0,
    preset: str = "imagenet",
    preprocess: dict[str, Any] | None = None,
    threads: int = 0,
    workers: int = 2,
    progress: Progress | None = None,
    command: Sequence[str] | None = None,
) -> RunResult:
    """Calibrate ``model``, build its variants and compare them with FP32 on held-out images.

    Args:
        model: the FP32 ONNX model.
        images: calibration images (also the held-out pool when ``eval_images`` is not given).
        n: calibration images.
        seed: picks and orders the images.
        eval_images: held-out images; default: the images of ``images`` not used for calibration.
        eval_n: held-out images to evaluate (default: all, at most 500).
        labels: file mapping image names to class indices, for top-1/top-5 accuracy.
        precisions: any of ``fp32``, ``fp16``, ``int8`` (FP32, the reference, is always built).
        methods: calibration methods, one INT8 variant each (see ``quantbench methods``).
        ranges: a range file (TensorRT cache, ``name:amax`` text or JSON) to use instead of calibrating.
        exclude: node names, op types or regular expressions kept in float in INT8 models.
        backend: ``auto``, ``onnxruntime`` or ``tensorrt``.
        out: the folder the run folder is made in.
        batch: calibration batch (default: automatic; ranges do not depend on it).
        bench_batch: batch sizes to time.
        bench_runs, bench_seconds: each timing repeats until both are reached.
        preset, preprocess: image preprocessing (see ``quantbench calibrate``).
        threads: ONNX Runtime threads (0: every core).
        workers: image decoding threads.
        progress: receives progress of the long steps.
        command: the command line, recorded in the manifest.

    Returns:
        A :class:`RunResult`; ``results.json`` and ``metrics.csv`` are in its ``run_dir``.

    Raises:
        QuantbenchError: bad model, images, ranges, options or a variant that cannot be built.
    """
    from quantbench.backends import resolve_backend
    from quantbench.calibration import calibrate
    from quantbench.datasets import open_dataset
    from quantbench.evaluate import read_labels
    from quantbench.model import file_sha256, float_activations, input_specs, load_model
    from quantbench.results import build_results, write_results
    from quantbench.variants import fp16_variant, fp32_variant, int8_variant, parse_precisions

    started = time.time()
    report = progress or _Quiet()
    wanted = parse_precisions(precisions)
    model_path = Path(model)
    onnx_model = load_model(model_path)
    inputs = input_specs(onnx_model)
    if not inputs or not all(spec.is_float for spec in inputs):
        raise QuantbenchError(
            f"{model_path}: quantbench needs a model with float inputs; its inputs are "
            + (", ".join(f"{s.name} ({s.dtype})" for s in inputs) or "none")
        )
    if images is None and eval_images is None:
        raise QuantbenchError("give --images (to calibrate and evaluate) or --eval-images")
    if images is None and ranges is None and "int8" in wanted:
        raise QuantbenchError("INT8 needs --images to calibrate on, or --ranges FILE")
    if bench_runs < 1 or bench_seconds < 0 or not bench_batch or min(bench_batch) < 1:
        raise QuantbenchError("--bench-batch sizes and --bench-runs must be at least 1")
    label_map = read_labels(labels) if labels is not None else None
    engine = resolve_backend(backend, threads=threads)
    run_dir = _run_folder(out, model_path)
    models_dir = run_dir / "models"
    notes: list[str] = []

    # 1. ranges: imported or calibrated
    tensors = float_activations(onnx_model)
    range_sets: dict[str, DynamicRanges] = {}
    range_info: dict[str, dict[str, Any]] = {}
    calibration = None
    absmax: dict[str, float] = {}
    if ranges is not None:
        table, info = _imported_ranges(Path(ranges), tensors)
        label = Path(ranges).stem.replace(" ", "_") or "imported"
        range_sets[label] = table
        range_info[label] = info
        absmax = dict(table.amax)
    elif images is not None and ({"int8", "fp16"} & set(wanted)):
        report.start("calibrating", n)
        try:
            calibration = calibrate(
                model_path,
                images,
                n=n,
                seed=seed,
                methods=methods if "int8" in wanted else ("minmax",),
                batch=batch,
                preset=preset,
                preprocess=preprocess,
                out=run_dir,
                workers=workers,
                threads=threads,
                on_batch=report.advance,
            )
        finally:
            report.finish()
        absmax = calibration.absmax
        if "int8" in wanted:
            range_sets = calibration.ranges
            for label, files in calibration.files.items():
                range_info[label] = {"file": str(files[0]), "unknown": [], "missing": [], "warnings": []}

    # 2. variants
    variants = [fp32_variant(model_path)]
    build_steps = ("fp16" in wanted) + ("int8" in wanted) * len(range_sets)
    report.start("building variants", build_steps)
    try:
        if "fp16" in wanted:
            if not absmax:
                notes.append(
                    "FP16 built without calibrated ranges: no tensor was checked for float16 overflow"
                )
            variants.append(fp16_variant(onnx_model, absmax, models_dir))
            report.advance()
        if "int8" in wanted:
            for label, table in range_sets.items():
                variants.append(int8_variant(onnx_model, table, label, exclude, models_dir))
                report.advance()
    finally:
        report.finish()

    # 3. held-out data
    source = Path(eval_images) if eval_images is not None else Path(images)  # type: ignore[arg-type]
    dataset = open_dataset(source, inputs, preset=preset, **(preprocess or {}))
    start = 0
    if eval_images is None and calibration is not None:
        start = calibration.next_start
        if start >= len(dataset.files):
            start = 0
            notes.append(
                f"NOTE: every image under {source} was used for calibration; the evaluation reuses the "
                "calibration images, which flatters INT8. Pass --eval-images with held-out images."
            )
    count = eval_n
    if count is None:
        left = len(dataset.files) - start
        count = min(DEFAULT_EVAL_CAP, left) if dataset.kind == "images" else None
        if count is not None and count < 1:
            raise QuantbenchError(f"no images under {source} to evaluate on")

    from quantbench.comparison import compare_variants

    runners = {}
    try:
        for variant in variants:
            runners[variant.name] = engine.prepare(variant)
        comparison = compare_variants(
            runners,
            dataset.batches(count, seed, inputs[0].fixed(0) or EVAL_BATCH, start=start, workers=workers),
            label_map=label_map,
            bench_batch=bench_batch,
            fixed_batch=inputs[0].fixed(0),
            bench_runs=bench_runs,
            bench_seconds=bench_seconds,
            progress=report,
        )
    finally:
        for runner in runners.values():
            runner.close()

    arguments = {
        "model": str(model_path),
        "images": str(images) if images is not None else None,
        "n": n,
        "seed": seed,
        "eval_images": str(eval_images) if eval_images is not None else None,
        "eval_n": eval_n,
        "labels": str(labels) if labels is not None else None,
        "precisions": wanted,
        "methods": list(methods) if ranges is None else [],
        "ranges": str(ranges) if ranges is not None else None,
        "exclude": list(exclude),
        "backend": backend,
        "bench_batch": list(bench_batch),
        "bench_runs": bench_runs,
        "bench_seconds": bench_seconds,
        "preset": preset,
        "preprocess": preprocess or {},
        "threads": threads,
    }
    hashes = {"model": file_sha256(model_path)}
    if ranges is not None:
        hashes["ranges"] = file_sha256(ranges)
    if labels is not None:
        hashes["labels"] = file_sha256(labels)
    results = build_results(
        run_dir=run_dir,
        onnx_model=onnx_model,
        model_path=model_path,
        tensors=tensors,
        backend=engine.describe(),
        arguments=arguments,
        command=list(command) if command is not None else None,
        hashes=hashes,
        calibration=calibration,
        range_sets=range_sets,
        range_info=range_info,
        variants=variants,
        comparison=comparison,
        evaluation={"root": str(source), "start": start, **dataset.describe()},
        notes=notes,
        seconds=time.time() - started,
    )
    write_results(run_dir, results)
    return RunResult(run_dir, results, variants)
