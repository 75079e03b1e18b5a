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
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench import __version__
from quantbench.calibration.histograms import FINE_BINS, TensorHistogram, load_histograms, save_histograms
from quantbench.calibration.registry import MethodSpec, apply_method, degenerate_amax, parse_method
from quantbench.errors import QuantbenchError
from quantbench.fileio import write_text_atomic
from quantbench.progress import Progress, QuietProgress
from quantbench.ranges import DynamicRanges, write_ranges
from quantbench.ranges.formats import registered

if TYPE_CHECKING:
    from quantbench.calibration.means import FirstSamples
    from quantbench.config import CalibSpec, DataSpec
    from quantbench.data import Dataset
    from quantbench.model import LoadedModel

HISTOGRAM_FORMAT = 1


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
        shapes: the sample shapes seen per input (``LoadReport.shapes_seen``).
        first_means: per-channel means of the tensors ``first`` asked for, over the first
            ``images_used[:first_count]`` samples (empty when the histograms were reused or none was asked).
        first_count: the samples ``first_means`` hold.
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
    shapes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    first_means: dict[str, np.ndarray] = field(default_factory=dict)
    first_count: int = 0

    def __repr__(self) -> str:
        return (
            f"CalibrationResult(out_dir={str(self.out_dir)!r}, methods={list(self.ranges)!r}, "
            f"tensors={self.tensors}, images={len(self.images_used)}, reused={self.reused})"
        )


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


def calibrate_dataset(
    model: LoadedModel,
    dataset: Dataset,
    data: DataSpec,
    calib: CalibSpec,
    out_dir: Path,
    threads: int = 0,
    progress: Progress | None = None,
    first: FirstSamples | None = None,
) -> CalibrationResult:
    """Calibrate ``model`` on ``dataset`` and write range tables for each of ``calib.methods``.

    Args:
        model: the FP32 model, loaded.
        dataset: its calibration images or tensor files, opened.
        data: ``n`` (None: every sample), ``seed`` and decoding ``workers``.
        calib: the methods, the batch and ``force`` (collect again even if stored histograms match).
        out_dir: where ``histograms/`` and ``ranges/`` go.
        threads: ONNX Runtime intra-op threads (0: all cores).
        progress: a ``collecting`` step, one unit per sample, while the model runs (not when the
            histograms are reused).
        first: per-channel means to gather on the first samples while the model runs (filled in place;
            untouched when the histograms are reused).

    Returns:
        A :class:`CalibrationResult`.

    Raises:
        QuantbenchError: a bad method or option.
    """
    started = time.perf_counter()
    specs = [parse_method(text) for text in calib.methods]  # fail on a bad method before any work
    if not specs:
        raise QuantbenchError("no calibration method given; use --method entropy,minmax,percentile,mse")
    key = histogram_key(model.sha256, dataset.fingerprint(), data.n, data.seed)
    hist_file = out_dir / "histograms" / f"{key[:16]}.npz"
    meta_file = hist_file.with_suffix(".json")

    hists = None if calib.force else load_histograms(hist_file, key)
    sidecar: dict[str, Any] = {}
    if hists is not None and meta_file.is_file():
        sidecar = json.loads(meta_file.read_text(encoding="utf-8"))
    reused = hists is not None and bool(sidecar)
    if not reused:
        hists, sidecar = _collect(
            model, dataset, data, calib.batch, threads, progress or QuietProgress(), first
        )
        if not sidecar["used"]:  # nothing to calibrate on: no table of default ranges is written
            skipped = sidecar["skipped"]
            why = f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
            raise QuantbenchError(
                f"none of the {len(skipped)} files under {dataset.root} could be read{why}; point --images "
                "at a folder of readable images or .npy/.npz files"
            )
        sidecar = {"key": key, **sidecar}
        save_histograms(hist_file, hists, key)
        write_text_atomic(meta_file, json.dumps(sidecar, indent=2))
    assert hists is not None
    metadata = {
        "model_hash": model.sha256,
        "preprocessing": dataset.describe().get("preprocessing") or {},
        "image_count": len(sidecar["used"]),
        "quantbench_version": __version__,
    }
    ranges, warnings = compute_ranges(hists, specs, metadata)
    files: dict[str, list[Path]] = {}
    for label, table in ranges.items():
        files[label] = [out_dir / "ranges" / f"{label}{fmt.suffixes[0]}" for fmt in registered()]
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
        shapes=dict(sidecar.get("shapes") or {}),
        first_means=first.result() if first is not None else {},  # untouched (empty) when reused
        first_count=first.covered if first is not None else 0,
    )


def split_at(feeds: Iterable[dict[str, np.ndarray]], at: int) -> Iterator[dict[str, np.ndarray]]:
    """``feeds`` with the batch that holds samples on both sides of sample ``at`` split in two there (so
    that the first ``at`` samples are whole batches; batches cut along their first axis)."""
    seen = 0
    for feed in feeds:
        size = len(next(iter(feed.values()))) if feed else 0
        if seen < at < seen + size:
            cut = at - seen
            yield {name: value[:cut] for name, value in feed.items()}
            yield {name: value[cut:] for name, value in feed.items()}
        else:
            yield feed
        seen += size


def _collect(
    model: LoadedModel,
    dataset: Dataset,
    data: DataSpec,
    batch: int | None,
    threads: int,
    progress: Progress,
    first: FirstSamples | None = None,
) -> tuple[dict[str, TensorHistogram], dict[str, Any]]:
    """One pass of the model over the samples: the histograms, and the sidecar that describes them."""
    from quantbench.calibration.collect import collect_histograms
    from quantbench.calibration.exposure import Exposure
    from quantbench.model import elements_per_sample, nonnegative_tensors

    tensors = model.tensors
    elements = elements_per_sample(model.proto, tensors)
    batch_size = batch_size_for(model.fixed_batch, batch, elements * 4 if elements else None)
    if data.n is not None and batch_size > 1 and model.fixed_batch and data.n % batch_size:
        raise QuantbenchError(
            f"{model.path} has a fixed batch of {batch_size}; use an --n that is a multiple of it"
        )
    exposure = Exposure(model.proto, tensors, [s.name for s in model.inputs], threads)
    stream = dataset.batches(data.n, data.seed, batch_size, workers=data.workers)
    feeds: Iterable[dict[str, np.ndarray]] = (b.inputs for b in stream)
    if first is not None and not model.fixed_batch:
        feeds = split_at(feeds, first.samples)
    progress.start("collecting", stream.total)
    try:
        collection = collect_histograms(
            exposure,
            feeds,
            progress.advance,
            data.workers,
            nonnegative_tensors(model.proto),
            first,
        )
    finally:
        progress.finish()
    report = stream.report
    sidecar = {
        "model": str(model.path),
        "model_hash": model.sha256,
        "dataset": dataset.describe(),
        "n": data.n,
        "seed": data.seed,
        "batch": batch_size,
        "used": report.used,
        "skipped": [list(item) for item in report.skipped],
        "converted": [list(item) for item in report.converted],
        "next_start": report.next_start,
        "shapes": report.shapes_seen(),
        "collect_seconds": collection.seconds,
        "non_float_tensors": collection.skipped_tensors,
        "quantbench_version": __version__,
    }
    return collection.histograms, sidecar
