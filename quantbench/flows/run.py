"""``quantbench run``: calibrate, build FP32 / FP16 / INT8 variants, compare them on held-out images.

Run folder (``<out>/<model>-<timestamp>/``)::

    histograms/     |x| histograms of the calibration pass
    ranges/         <method>.cache / .txt / .json for every set of ranges used
    models/         fp16.onnx, int8-<method>.onnx (TensorRT), int8-<method>.onnxruntime.onnx (CPU)
    results.json    everything a report needs, with a manifest (see quantbench.report.results)
    metrics.csv     one row per variant and output
    report.html     the accuracy-vs-speed report (see quantbench.report)
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantbench.errors import QuantbenchError
from quantbench.export.variants import Variant
from quantbench.flows.ranges import gather_ranges
from quantbench.progress import Progress, QuietProgress

DEFAULT_EVAL_CAP = 500
"""Held-out images evaluated when ``eval_n`` is not given."""

EVAL_BATCH = 8


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
        from quantbench.report.results import summary_rows

        return summary_rows(self.results)


def new_run_folder(out: str | os.PathLike[str], model: Path) -> Path:
    """``out/<model name>-<timestamp>``, with ``-1``, ``-2``... when that exists already (not created)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(out) / f"{model.stem}-{stamp}"
    path, k = base, 1
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


def _correction_batches(
    images: Path, inputs: list[Any], count: int, seed: int, preset: str, preprocess: Any, workers: int
) -> list[dict[str, Any]]:
    """The first ``count`` images of the calibration order, preprocessed, in batches."""
    from quantbench.data import open_dataset

    dataset = open_dataset(images, inputs, preset=preset, **(preprocess or {}))
    fixed = inputs[0].fixed(0)
    if dataset.kind == "images":
        count = min(count, len(dataset.files))
    if fixed:
        count = max(fixed, count - count % fixed)
    return [batch.inputs for batch in dataset.batches(count, seed, fixed or 16, workers=workers)]


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
    target_agreement: float | None = None,
    target_rel_l2: float | None = None,
    sensitivity_n: int = 32,
    bias_correction: bool = True,
    bias_correction_images: int = 32,
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
    plugins: Sequence[str | os.PathLike[str]] = (),
    cuda_graph: bool = False,
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
        target_agreement, target_rel_l2: a fidelity target (top-1 agreement in %, relative L2); when
            given, the nodes of the first set of ranges are ranked by sensitivity and the fewest most
            harmful are kept in float to meet it on the held-out images: variant ``int8-<label>-mixed``
            and ``results["sensitivity"]`` (see :mod:`quantbench.search.mixed_precision`).
        sensitivity_n: held-out images the sensitivity ranking runs on.
        bias_correction: correct the biases of every INT8 model's quantized Conv/Gemm nodes so that their
            per-channel output means match FP32's (see :mod:`quantbench.export.bias_correction`); needs
            images.
        bias_correction_images: the first images of the calibration order the correction runs on.
        backend: ``auto``, ``onnxruntime`` or ``tensorrt``.
        out: the folder the run folder is made in.
        batch: calibration batch (default: automatic; ranges do not depend on it).
        bench_batch: batch sizes to time.
        bench_runs, bench_seconds: each timing repeats until both are reached.
        preset, preprocess: image preprocessing (see ``quantbench calibrate``).
        threads: ONNX Runtime threads (0: every core).
        workers: image decoding threads.
        plugins: TensorRT plugin libraries loaded before parsing (``--backend tensorrt``).
        cuda_graph: also time TensorRT engines replayed from a CUDA graph.
        progress: receives progress of the long steps.
        command: the command line, recorded in the manifest.

    Returns:
        A :class:`RunResult`; ``results.json``, ``metrics.csv`` and ``report.html`` are in its ``run_dir``.

    Raises:
        QuantbenchError: bad model, images, ranges, options or a variant that cannot be built.
    """
    from quantbench.backends import resolve_backend
    from quantbench.data import open_dataset
    from quantbench.evaluation.metrics import read_labels
    from quantbench.export.variants import fp16_variant, fp32_variant, int8_variant, parse_precisions
    from quantbench.model import file_sha256, float_activations, input_specs, load_model
    from quantbench.report.results import build_results, write_results

    started = time.time()
    report = progress or QuietProgress()
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
    if bias_correction and bias_correction_images < 1:
        raise QuantbenchError("--bias-correction-images must be at least 1")
    if bench_runs < 1 or bench_seconds < 0 or not bench_batch or min(bench_batch) < 1:
        raise QuantbenchError("--bench-batch sizes and --bench-runs must be at least 1")
    from quantbench.search.mixed_precision import parse_target

    target = parse_target(target_agreement, target_rel_l2)
    if target is not None and "int8" not in wanted:
        raise QuantbenchError("--target-agreement / --target-rel-l2 need int8 in --precisions")
    label_map = read_labels(labels) if labels is not None else None
    engine = resolve_backend(backend, threads=threads, plugins=plugins, cuda_graph=cuda_graph)
    from quantbench.backends.tensorrt import run_steps as trt_steps

    own_methods, native_methods = trt_steps.check_methods(methods, engine)
    run_dir = new_run_folder(out, model_path)
    models_dir = run_dir / "models"
    notes: list[str] = []

    # 1. ranges: imported, calibrated by quantbench, or by TensorRT's own calibrators
    tensors = float_activations(onnx_model)
    step = gather_ranges(
        engine,
        model_path=model_path,
        inputs=inputs,
        tensors=tensors,
        run_dir=run_dir,
        wanted=wanted,
        images=images,
        ranges=ranges,
        own_methods=own_methods,
        native_methods=native_methods,
        n=n,
        seed=seed,
        batch=batch,
        bench_batch=bench_batch,
        eval_batch=inputs[0].fixed(0) or EVAL_BATCH,
        preset=preset,
        preprocess=preprocess,
        workers=workers,
        threads=threads,
        progress=report,
    )
    range_sets, range_info, calibration = step.range_sets, step.range_info, step.calibration
    notes.extend(step.notes)

    # 2. variants
    variants = [fp32_variant(model_path)]
    bias_feeds = None
    corrected = [label for label in range_sets if label not in step.native_labels] if "int8" in wanted else []
    if bias_correction and corrected:
        if images is None:
            notes.append("bias correction skipped: --ranges without --images gives no images to correct on")
            corrected = []
        else:
            first = bias_correction_images if calibration is None else min(n, bias_correction_images)
            bias_feeds = _correction_batches(Path(images), inputs, first, seed, preset, preprocess, workers)
            if ranges is not None and eval_images is None:
                notes.append(
                    f"bias correction ran on the first images of {images}, which the evaluation also uses; "
                    "pass --eval-images with held-out images"
                )
    else:
        corrected = []
    build_steps = ("fp16" in wanted) + ("int8" in wanted) * len(range_sets)
    report.start("building variants" if not corrected else "building variants, bias correction", build_steps)
    try:
        if "fp16" in wanted:
            if not step.absmax:
                notes.append(
                    "FP16 built without calibrated ranges: no tensor was checked for float16 overflow"
                )
            variants.append(fp16_variant(onnx_model, step.absmax, models_dir))
            report.advance()
        if "int8" in wanted:
            for label, table in range_sets.items():
                feeds = bias_feeds if label in corrected else None
                variants.append(int8_variant(onnx_model, table, label, exclude, models_dir, feeds, threads))
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

    from quantbench.evaluation.compare import compare_variants

    held_out = dataset.batches(count, seed, inputs[0].fixed(0) or EVAL_BATCH, start=start, workers=workers)
    search = None
    if target is not None:
        from quantbench.search.mixed_precision import mixed_precision

        if not range_sets:
            raise QuantbenchError("--target-agreement / --target-rel-l2 need ranges to quantize with")
        label, table = next(iter(range_sets.items()))
        size = inputs[0].fixed(0) or bench_batch[0]
        held_out, search, mixed = mixed_precision(  # type: ignore[assignment]
            onnx_model, table, label, exclude, models_dir, held_out, target, samples=sensitivity_n,
            threads=threads, bias_feeds=bias_feeds if label in corrected else None,
            timing=(size, bench_runs, bench_seconds), progress=report,
        )  # fmt: skip
        variants.append(mixed)
    runners = {}
    try:
        for variant in variants:
            runners[variant.name] = engine.prepare(variant)
        comparison = compare_variants(
            runners,
            held_out,
            label_map=label_map,
            bench_batch=bench_batch,
            fixed_batch=inputs[0].fixed(0),
            bench_runs=bench_runs,
            bench_seconds=bench_seconds,
            progress=report,
        )
        timed = [inputs[0].fixed(0)] if inputs[0].fixed(0) else list(dict.fromkeys(bench_batch))
        for variant in variants:  # backend-specific results (TensorRT: layers, GPU timings)
            extra = getattr(runners[variant.name], "extra_results", None)
            if callable(extra):
                variant.details.update(extra(timed, bench_runs))
    finally:
        for runner in runners.values():
            runner.close()
    notes.extend(getattr(engine, "notes", []))

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
        "target_agreement": target_agreement,
        "target_rel_l2": target_rel_l2,
        "sensitivity_n": sensitivity_n,
        "bias_correction": bias_correction,
        "bias_correction_images": bias_correction_images,
        "backend": backend,
        "plugins": [str(p) for p in plugins],
        "cuda_graph": cuda_graph,
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
        sensitivity=search.to_json() if search is not None else None,
    )
    write_results(run_dir, results)
    from quantbench.report import write_report

    write_report(run_dir, results)
    return RunResult(run_dir, results, variants)
