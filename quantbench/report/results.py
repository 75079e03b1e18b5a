"""``results.json`` and ``metrics.csv`` of a run, and the summary rows printed at its end.

``results.json`` (``"format": "quantbench-results"``, version 1) holds:

* ``manifest``: quantbench / ONNX Runtime / TensorRT versions, Python, platform, CPU and GPU, the
  arguments and command line, SHA-256 of the input files and of every model written, date, duration;
* ``model``: name, path, hash, inputs, outputs, number of float tensors;
* ``data``: calibration images used / skipped / converted, held-out images evaluated / skipped, and
  the sample shapes each saw per input;
* ``calibration``: methods, time, peak memory, warnings, each tensor's absmax (null with ``--ranges``);
  ``histograms``: for the ``HISTOGRAMS_KEPT`` tensors where the methods disagree most
  (:func:`range_spread`), the |x| histogram summed into at most ``HISTOGRAM_BINS`` bins over
  ``[0, absmax]`` (``tensor``, ``absmax``, ``bin_width``, exact integer ``counts``);
* ``ranges``: per set of ranges its file, amax per tensor, tensors of the model without a range and
  names unknown to the model, header warnings;
* ``variants``: per variant its files, build details, per-output metrics and latency;
* ``notes``: things the reader must know (e.g. evaluation on the calibration images);
* ``verdict``: the headline of every variant and the one to ship
  (:meth:`quantbench.evaluation.verdict.Verdict.to_json`; null where no output was compared, absent from
  files written before runs recorded one);
* ``equalization``: what ``--equalize`` did (null without it): ``convs``, ``rounds``, ``pairs`` (see
  :meth:`quantbench.export.equalize.Equalization.to_json`), the calibration ``images`` its activations
  were measured on, its ``seconds``, and ``model``, the equalized model's file (relative to the run
  folder) and SHA-256, where a pair was found;
* ``sensitivity``: the mixed-precision search of ``--target-agreement`` / ``--target-rel-l2`` (null
  without one): ``method``, ``target``, ``excluded``, ``curve`` and ``ranking``
  (see :meth:`quantbench.search.mixed_precision.SearchResult.to_json`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantbench import __version__
from quantbench.evaluation.registry import RESULTS_ORDER
from quantbench.fileio import write_text_atomic

if TYPE_CHECKING:
    from quantbench.calibration.calibrate import CalibrationResult
    from quantbench.evaluation.compare import Comparison
    from quantbench.model import LoadedModel
    from quantbench.ranges import DynamicRanges
    from quantbench.variant import Variant

FORMAT = "quantbench-results"
FORMAT_VERSION = 1
HISTOGRAMS_KEPT = 8
"""Tensors whose |x| histogram ``results.json`` keeps (those where the methods disagree most)."""
HISTOGRAM_BINS = 256
"""Most bins of a kept histogram."""
METRIC_COLUMNS = RESULTS_ORDER
"""The metric columns of ``metrics.csv``: every registered metric, in ``results.json``'s order (those by
output kind last; a cell stays empty where an output has no such metric)."""


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def json_safe(value: Any) -> Any:
    """Floats JSON cannot hold (inf, nan) as strings, so the file stays standard JSON."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _io(values: Any) -> list[dict[str, Any]]:
    out = []
    for v in values:
        dims = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in v.type.tensor_type.shape.dim
        ]
        out.append({"name": v.name, "shape": dims, "elem_type": v.type.tensor_type.elem_type})
    return out


@dataclass
class RunRecord:
    """Everything a run produced that ``results.json`` records.

    Attributes:
        run_dir: the run folder (model paths are recorded relative to it).
        model: the FP32 model (``quantbench.model.LoadedModel``).
        backend: the backend's description.
        arguments: the run's settings, by keyword.
        command: the command line, if run from one.
        hashes: SHA-256 of the input files (model, ranges, labels) by role.
        calibration: quantbench's calibration, when it ran.
        range_sets: label -> ranges; range_info: label -> file, unknown and missing names, warnings.
        variants: the variants compared; comparison: their comparison with FP32.
        evaluation: where the held-out samples came from.
        notes: the run's notes.
        seconds: the run's duration.
        sensitivity: the mixed-precision search, when it ran.
        equalization: what ``--equalize`` did, when it ran.
        verdict: the headline of every variant and the one to ship
            (:class:`quantbench.evaluation.verdict.Verdict`).
    """

    run_dir: Path
    model: LoadedModel
    backend: dict[str, Any]
    arguments: dict[str, Any]
    command: list[str] | None
    hashes: dict[str, str]
    calibration: CalibrationResult | None
    range_sets: dict[str, DynamicRanges]
    range_info: dict[str, dict[str, Any]]
    variants: list[Variant]
    comparison: Comparison
    evaluation: dict[str, Any]
    notes: list[str]
    seconds: float = 0.0
    sensitivity: dict[str, Any] | None = None
    equalization: dict[str, Any] | None = None
    verdict: dict[str, Any] | None = None


def build_results(record: RunRecord) -> dict[str, Any]:
    """Assemble the content of ``results.json`` (see the module docstring)."""
    data, calibration = _data_and_calibration(record)
    results = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "manifest": _manifest(record),
        "model": _model(record),
        "data": data,
        "calibration": calibration,
        "ranges": {
            label: {**record.range_info.get(label, {}), "amax": table.amax, "method": table.method or label}
            for label, table in record.range_sets.items()
        },
        "variants": [_variant_row(record, variant) for variant in record.variants],
        "notes": record.notes,
        "equalization": record.equalization,
        "sensitivity": record.sensitivity,
        "verdict": record.verdict,
    }
    return json_safe(results)  # type: ignore[no-any-return]


def _manifest(record: RunRecord) -> dict[str, Any]:
    """Versions, machine, settings, input and output file hashes, date and duration."""
    from quantbench.model import file_sha256

    model_files = {}
    for variant in record.variants:
        for path in {variant.model, variant.cpu_model}:
            if path.is_relative_to(record.run_dir):
                model_files[str(path.relative_to(record.run_dir))] = file_sha256(path)
    return {
        "quantbench": __version__,
        "onnxruntime": _version("onnxruntime"),
        "tensorrt": _version("tensorrt"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": record.backend.get("gpu"),
        "backend": record.backend,
        "arguments": record.arguments,
        "command": record.command,
        "files": {"inputs": record.hashes, "outputs": model_files},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(record.seconds, 3),
    }


def _model(record: RunRecord) -> dict[str, Any]:
    """The FP32 model: name, path, hash, inputs, outputs, float tensors, outputs compared."""
    proto = record.model.proto
    initializers = {init.name for init in proto.graph.initializer}
    return {
        "name": record.model.path.stem,
        "path": str(record.model.path),
        "sha256": record.hashes["model"],
        "inputs": [
            {"name": s.name, "shape": list(s.shape), "dtype": str(s.dtype)} for s in record.model.inputs
        ],
        "outputs": _io(o for o in proto.graph.output if o.name not in initializers),
        "float_tensors": len(record.model.tensors),
        "tensor_order": record.model.tensors,
        "comparison_outputs": record.comparison.outputs,
    }


def preprocessing_line(evaluation: dict[str, Any]) -> str:
    """The held-out samples' preprocessing in one line, with the sample shapes seen."""
    text = evaluation.get("preprocessing_text") or "none (tensor files fed as they are)"
    shapes = [
        f"{name} "
        + ", ".join("x".join(map(str, item["shape"])) + f" ({item['samples']})" for item in seen[:4])
        + (f" and {len(seen) - 4} more" if len(seen) > 4 else "")
        for name, seen in (evaluation.get("shapes") or {}).items()
    ]
    return text + (f"; shapes {'; '.join(shapes)}" if shapes else "")


def _data_and_calibration(record: RunRecord) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The samples evaluated (and calibrated on), and quantbench's calibration when it ran."""
    comparison, calibration = record.comparison, record.calibration
    data: dict[str, Any] = {
        "evaluation": {
            **record.evaluation,
            "samples": comparison.samples,
            "names": comparison.names,
            "skipped": [list(item) for item in comparison.skipped],
            "shapes": comparison.shapes,
        }
    }
    if calibration is None:
        return data, None
    data["calibration"] = {
        "used": calibration.images_used,
        "skipped": [list(item) for item in calibration.skipped],
        "converted": [list(item) for item in calibration.converted],
        "shapes": calibration.shapes,
    }
    calib = {
        "methods": list(calibration.ranges),
        "collect_seconds": calibration.collect_seconds,
        "total_seconds": calibration.total_seconds,
        "peak_memory_mb": calibration.peak_memory_mb,
        "warnings": calibration.warnings,
        "absmax": calibration.absmax,
        "histograms": _kept_histograms(calibration),
    }
    return data, calib


def _variant_row(record: RunRecord, variant: Variant) -> dict[str, Any]:
    """One variant: its files, what its build did, its metrics and latency."""
    comparison = record.comparison
    return {
        "name": variant.name,
        "precision": variant.precision,
        "method": variant.method,
        "model": _relative(variant.model, record.run_dir),
        "cpu_model": _relative(variant.cpu_model, record.run_dir),
        "emulated_ops": variant.emulated,
        "latency_representative": comparison.representative.get(variant.name, True),
        **variant.details,
        "outputs": comparison.metrics.get(variant.name, {}),
        "latency": comparison.latency.get(variant.name, []),
    }


def range_spread(
    amax_sets: Mapping[str, Mapping[str, Any]], absmax: Mapping[str, Any] | None = None
) -> list[tuple[str, float]]:
    """Tensors ordered by how much the sets of ranges disagree on them, most first.

    Args:
        amax_sets: label -> tensor -> amax (e.g. one entry per calibration method).
        absmax: tensor -> largest |x| seen; breaks ties, the tensor clipped most (absmax / smallest amax)
            first, so a single set of ranges still ranks its tensors.

    Returns:
        (tensor, largest amax / smallest amax) for every tensor with a positive finite amax in at least one
        set; ties keep the order of first appearance.
    """
    values: dict[str, list[float]] = {}
    for table in amax_sets.values():
        for name, amax in table.items():
            if isinstance(amax, int | float) and 0.0 < amax < float("inf"):
                values.setdefault(name, []).append(float(amax))
    ranked = []
    for name, amaxes in values.items():
        top = absmax.get(name) if absmax else None
        clip = top / min(amaxes) if isinstance(top, int | float) and top > 0.0 else 1.0
        ranked.append((name, max(amaxes) / min(amaxes), clip))
    ranked.sort(key=lambda item: (-item[1], -item[2]))  # stable: ties stay in order of appearance
    return [(name, spread) for name, spread, _ in ranked]


def histogram_digest(path: Path, names: Sequence[str], bins: int = HISTOGRAM_BINS) -> list[dict[str, Any]]:
    """Compact |x| histograms of ``names`` from a stored histogram file.

    The fine bins that cover ``[0, absmax]`` are summed in groups of equal size, so at most ``bins`` of
    them remain and every count stays an exact integer.

    Args:
        path: a histogram file written by :func:`quantbench.calibration.histograms.save_histograms`.
        names: the tensors to keep, in the order wanted; names not in the file are left out.
        bins: the most bins per tensor.

    Returns:
        One ``{"tensor", "absmax", "bin_width", "counts"}`` per tensor found (bin ``k`` covers
        ``[k, k+1) * bin_width``); empty when the file cannot be read.
    """
    import numpy as np

    from quantbench.calibration.histograms import load_histograms

    try:
        with np.load(path, allow_pickle=False) as data:
            key = str(data["key"])
    except (OSError, KeyError, ValueError, EOFError):
        return []
    hists = load_histograms(path, key) or {}
    out = []
    for name in names:
        if name not in hists:
            continue
        snapshot = hists[name].snapshot()
        used = min(snapshot.bins, int(snapshot.absmax / snapshot.bin_width) + 1)
        group = -(-used // bins)
        coarse = np.zeros(-(-used // group) * group, dtype=np.int64)
        coarse[:used] = snapshot.counts[:used]
        out.append(
            {
                "tensor": name,
                "absmax": snapshot.absmax,
                "bin_width": snapshot.bin_width * group,
                "counts": [int(c) for c in coarse.reshape(-1, group).sum(axis=1)],
            }
        )
    return out


def _kept_histograms(calibration: CalibrationResult) -> list[dict[str, Any]]:
    amax_sets = {label: table.amax for label, table in calibration.ranges.items()}
    ranked = range_spread(amax_sets, calibration.absmax)[:HISTOGRAMS_KEPT]
    return histogram_digest(calibration.histogram_file, [name for name, _ in ranked])


def _relative(path: Path, run_dir: Path) -> str:
    return str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path)


def number(value: Any) -> float | None:
    """A metric value as a float.

    Args:
        value: a number, or one of the strings ``results.json`` uses for values JSON cannot hold
            (``"nan"``, ``"inf"``, ``"-inf"``).

    Returns:
        The float, or None for anything else (missing, null, booleans, other text).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    return None


def main_output(results: dict[str, Any]) -> str | None:
    """The output the summary is about: the verdict's, else the first class-score output, else the first
    output."""
    verdict = results.get("verdict")
    if isinstance(verdict, dict) and verdict.get("output") is not None:
        return str(verdict["output"])
    outputs = results["model"]["comparison_outputs"]
    for name, info in outputs.items():
        if info.get("class_scores"):
            return str(name)
    return next(iter(outputs), None)


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per variant: top-1 agreement and relative L2 of :func:`main_output`, the verdict's headline (NaN
    kept), ms per batch and speed-up over FP32 at the first bench batch size; None where a figure does not
    apply or ``results.json`` has no verdict. Agreements are fractions, as in ``results.json``."""

    output = main_output(results)
    verdict = results.get("verdict")
    headlines = (verdict.get("values") or {}) if isinstance(verdict, dict) else {}
    reference = next((v for v in results["variants"] if v["name"] == "fp32"), None)
    ref_ms = reference["latency"][0]["median_ms"] if reference and reference["latency"] else None
    rows = []
    for variant in results["variants"]:
        metrics = variant["outputs"].get(output, {}) if output else {}
        latency = variant["latency"][0] if variant["latency"] else None
        agreement = metrics.get("top1_agreement")
        rows.append(
            {
                "variant": variant["name"],
                "top1_agreement": agreement if isinstance(agreement, float) else None,
                "rel_l2": metrics.get("rel_l2"),
                "headline": number(headlines.get(variant["name"])),
                "batch": latency["batch"] if latency else None,
                "ms": latency["median_ms"] if latency else None,
                "speedup": ref_ms / latency["median_ms"] if latency and ref_ms else None,
                "representative": variant["latency_representative"],
            }
        )
    return rows


def metrics_csv(results: dict[str, Any]) -> str:
    """``metrics.csv``: one row per variant and output, with the first bench batch's latency."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["variant", "precision", "output", *METRIC_COLUMNS, "batch", "median_ms", "images_per_s"])
    for variant in results["variants"]:
        latency = variant["latency"][0] if variant["latency"] else {}
        for output, metrics in variant["outputs"].items():
            writer.writerow(
                [
                    variant["name"],
                    variant["precision"],
                    output,
                    *(metrics.get(col, "") for col in METRIC_COLUMNS),
                    latency.get("batch", ""),
                    latency.get("median_ms", ""),
                    latency.get("images_per_s", ""),
                ]
            )
    return buffer.getvalue()


def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    """Write ``results.json`` and ``metrics.csv`` atomically."""
    write_text_atomic(run_dir / "results.json", json.dumps(results, indent=1, allow_nan=False))
    write_text_atomic(run_dir / "metrics.csv", metrics_csv(results))
