"""Calibration from an image folder: collect histograms once, compute ranges by every method, write tables.

Layout of the output folder (``reports/<model name>/`` by default)::

    histograms/<key>.npz    |x| histograms of every float tensor (reused by later calls)
    histograms/<key>.json   what they were collected from: images used and skipped, time
    ranges/<label>.cache    TensorRT calibration cache
    ranges/<label>.txt      name:amax dynamic-range file
    ranges/<label>.json     ranges with their metadata

The histogram key hashes the model file, the preprocessing, the candidate file
list, ``n`` and ``seed`` — not the batch size, which does not change the result.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import resource
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantbench import __version__
from quantbench.calibration.histograms import FINE_BINS, TensorHistogram, load_histograms, save_histograms
from quantbench.calibration.registry import MethodSpec, apply_method, degenerate_amax, parse_method
from quantbench.errors import QuantbenchError
from quantbench.fileio import write_text_atomic
from quantbench.ranges import DynamicRanges, write_ranges

HISTOGRAM_FORMAT = 1
RANGE_FORMATS = ("cache", "txt", "json")


@dataclass
class CalibrationResult:
    """What :func:`calibrate` produced.

    Attributes:
        out_dir: the output folder.
        ranges: method label -> ranges, in the order the methods were given.
        files: method label -> the range files written for it.
        histogram_file: where the histograms are stored.
        reused: True when the histograms were loaded instead of collected.
        tensors: number of tensors ranged.
        images_used: samples that went into the histograms, in order.
        skipped: (file, reason) for every file left out.
        converted: (file, what) for every file converted on the way in.
        collect_seconds: time of the model pass (0 when reused).
        total_seconds: time of the whole call.
        peak_memory_mb: peak resident memory of the process.
        absmax: tensor -> the largest finite |x| seen, for comparing methods.
        warnings: degenerate tensors and other notes, one line each.
        next_start: position in the shuffled file order after the last file used,
            where held-out samples begin (``Dataset.batches(start=...)``).
    """

    out_dir: Path
    ranges: dict[str, DynamicRanges]
    files: dict[str, list[Path]]
    histogram_file: Path
    reused: bool
    tensors: int
    images_used: list[str]
    skipped: list[tuple[str, str]]
    converted: list[tuple[str, str]]
    collect_seconds: float
    total_seconds: float
    peak_memory_mb: float
    absmax: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    next_start: int = 0


def peak_memory_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def histogram_key(model_hash: str, dataset_fingerprint: str, n: int | None, seed: int) -> str:
    """The cache key of a histogram collection (see the module docstring)."""
    parts = {
        "format": HISTOGRAM_FORMAT,
        "bins": FINE_BINS,
        "model": model_hash,
        "dataset": dataset_fingerprint,
        "n": n,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


AUTO_BATCH_BYTES = 128 << 20
"""With ``batch=None``, as many samples as keep one batch's activations within 128 MiB."""
MAX_AUTO_BATCH = 32


def batch_size_for(model_batch: int | None, requested: int | None, bytes_per_sample: int | None) -> int:
    """The batch to feed.

    Args:
        model_batch: the model's fixed batch dimension, if it has one; it wins.
        requested: the user's batch size, or None for automatic.
        bytes_per_sample: activation bytes of one sample (None if unknown: 1 sample).

    Raises:
        QuantbenchError: ``requested`` is below 1.
    """
    if requested is not None and requested < 1:
        raise QuantbenchError(f"--batch must be at least 1, got {requested}")
    if model_batch is not None:
        return model_batch
    if requested is not None:
        return requested
    if not bytes_per_sample:
        return 1
    return max(1, min(MAX_AUTO_BATCH, AUTO_BATCH_BYTES // bytes_per_sample))


def compute_ranges(
    hists: dict[str, TensorHistogram], specs: Sequence[MethodSpec], metadata: dict[str, Any]
) -> tuple[dict[str, DynamicRanges], list[str]]:
    """Every method's ranges from the same histograms, plus warnings on degenerate tensors.

    Degenerate tensors get the same documented range under every method
    (:func:`quantbench.calibration.registry.degenerate_amax`); their warnings
    are reported once, not once per method.
    """
    fixed: dict[str, float] = {}
    warnings: list[str] = []
    snapshots = {}
    for name, acc in hists.items():
        snapshot = acc.snapshot()
        amax, notes = degenerate_amax(name, snapshot, acc.count)
        warnings.extend(notes)
        if amax is not None:
            fixed[name] = amax
        else:
            snapshots[name] = snapshot
    results = {}
    with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:  # numpy releases the GIL
        for spec in specs:
            run = functools.partial(apply_method, spec)
            computed = dict(zip(snapshots, pool.map(run, snapshots, snapshots.values())))
            amax_by_name = {name: fixed[name] if name in fixed else computed[name] for name in hists}
            results[spec.label] = DynamicRanges(amax=amax_by_name, method=spec.label, **metadata)
    return results, warnings


def calibrate(
    model: str | os.PathLike[str],
    images: str | os.PathLike[str],
    *,
    n: int | None = None,
    seed: int = 0,
    methods: Sequence[str] = ("entropy",),
    batch: int | None = None,
    preset: str = "imagenet",
    preprocess: dict[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    workers: int = 2,
    threads: int = 0,
    on_start: Callable[[int | None], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> CalibrationResult:
    """Calibrate ``model`` on images (or tensor files) and write range tables for each method.

    Args:
        model: path of the FP32 ONNX model.
        images: folder of images, or of ``.npy``/``.npz`` tensor files.
        n: number of samples (None: all of them).
        seed: selects and orders the samples.
        methods: method specs, e.g. ``["entropy", "percentile:99.9", "my.py:fn"]``.
        batch: calibration batch size for models with a dynamic batch dimension;
            None picks one that keeps a batch's activations within 128 MiB.
            The ranges do not depend on it.
        preset: preprocessing preset (``imagenet``, ``inception``, ``yolo``, ``raw``).
        preprocess: explicit preprocessing options overriding the preset.
        out: output folder (default ``reports/<model name>``).
        force: collect histograms again even if stored ones match.
        workers: decoding threads.
        threads: ONNX Runtime intra-op threads (0: all cores).
        on_start: called once with the number of samples to expect (None if unknown)
            when the model pass begins; not called when histograms are reused.
        on_batch: called with each batch's sample count during the model pass.

    Returns:
        A :class:`CalibrationResult`.

    Raises:
        QuantbenchError: bad model, images, method or options.
    """
    from quantbench.calibration.collect import collect_histograms, open_session
    from quantbench.data import open_dataset
    from quantbench.model import (
        elements_per_sample,
        expose_tensors,
        file_sha256,
        float_activations,
        input_specs,
        load_model,
        nonnegative_tensors,
    )

    started = time.perf_counter()
    specs = [parse_method(text) for text in methods]  # fail on a bad method before any work
    if not specs:
        raise QuantbenchError("no calibration method given; use --method entropy,minmax,percentile,mse")
    model_path = Path(model)
    onnx_model = load_model(model_path)
    inputs = input_specs(onnx_model)
    if not inputs or not all(spec.is_float for spec in inputs):
        raise QuantbenchError(
            f"{model_path}: calibration needs float inputs; inputs are "
            + ", ".join(f"{s.name} ({s.dtype})" for s in inputs)
        )
    dataset = open_dataset(images, inputs, preset=preset, **(preprocess or {}))
    model_hash = file_sha256(model_path)
    key = histogram_key(model_hash, dataset.fingerprint(), n, seed)
    out_dir = Path(out) if out is not None else Path("reports") / model_path.stem
    hist_file = out_dir / "histograms" / f"{key[:16]}.npz"
    meta_file = hist_file.with_suffix(".json")

    hists = None if force else load_histograms(hist_file, key)
    sidecar: dict[str, Any] = {}
    if hists is not None and meta_file.is_file():
        sidecar = json.loads(meta_file.read_text(encoding="utf-8"))
    if hists is None or not sidecar:
        tensors = float_activations(onnx_model)
        elements = elements_per_sample(onnx_model, tensors)
        batch_size = batch_size_for(inputs[0].fixed(0), batch, elements * 4 if elements else None)
        if n is not None and batch_size > 1 and inputs[0].fixed(0) and n % batch_size:
            raise QuantbenchError(
                f"{model_path} has a fixed batch of {batch_size}; use an --n that is a multiple of it"
            )
        session = open_session(expose_tensors(onnx_model, tensors).SerializeToString(), threads)
        stream = dataset.batches(n, seed, batch_size, workers=workers)
        if on_start is not None:
            on_start(stream.total)
        collection = collect_histograms(
            session,
            tensors,
            [s.name for s in inputs],
            (b.inputs for b in stream),
            on_batch,
            workers,
            nonnegative_tensors(onnx_model),
        )
        hists = collection.histograms
        report = stream.report
        sidecar = {
            "key": key,
            "model": str(model_path),
            "model_hash": model_hash,
            "dataset": dataset.describe(),
            "n": n,
            "seed": seed,
            "batch": batch_size,
            "used": report.used,
            "skipped": [list(item) for item in report.skipped],
            "converted": [list(item) for item in report.converted],
            "next_start": report.next_start,
            "collect_seconds": collection.seconds,
            "non_float_tensors": collection.skipped_tensors,
            "quantbench_version": __version__,
        }
        save_histograms(hist_file, hists, key)
        write_text_atomic(meta_file, json.dumps(sidecar, indent=2))
        reused = False
    else:
        reused = True

    metadata = {
        "model_hash": model_hash,
        "preprocessing": dataset.describe().get("preprocessing") or {},
        "image_count": len(sidecar["used"]),
        "quantbench_version": __version__,
    }
    ranges, warnings = compute_ranges(hists, specs, metadata)
    files: dict[str, list[Path]] = {}
    for label, table in ranges.items():
        files[label] = [out_dir / "ranges" / f"{label}.{fmt}" for fmt in RANGE_FORMATS]
        for path in files[label]:
            write_ranges(table, path)
    return CalibrationResult(
        out_dir=out_dir,
        ranges=ranges,
        files=files,
        histogram_file=hist_file,
        reused=reused,
        tensors=len(hists),
        images_used=list(sidecar["used"]),
        skipped=[tuple(item) for item in sidecar["skipped"]],  # type: ignore[misc]
        converted=[tuple(item) for item in sidecar["converted"]],  # type: ignore[misc]
        collect_seconds=0.0 if reused else float(sidecar["collect_seconds"]),
        total_seconds=time.perf_counter() - started,
        peak_memory_mb=peak_memory_mb(),
        absmax={name: acc.absmax for name, acc in hists.items()},
        warnings=warnings,
        next_start=int(sidecar.get("next_start") or 0),
    )
