"""Evaluation of model variants: output errors against an FP32 reference, class-score metrics, latency.

All accumulators are streaming: call ``update`` once per batch, then ``result`` once at the end. Sums are
kept in float64 whatever the dtype of the outputs.
"""

from __future__ import annotations

import csv
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from quantbench.errors import QuantbenchError
from quantbench.evaluation.errors import relative_l2, snr_db

MIN_CLASSES = 10
"""Fewest classes for :func:`is_class_scores` to treat an output as class scores. Outputs with fewer
columns (box coordinates, a handful of regression values) are compared only by :class:`OutputErrors`."""

TOP_K = 5

_INTEGER = re.compile(r"[+-]?[0-9]+")


def _label(output: str, variant: str) -> str:
    return f"output {output!r}" + (f" of variant {variant!r}" if variant else "")


def _same_shape(what: str, reference: np.ndarray, candidate: np.ndarray) -> None:
    if reference.shape != candidate.shape:
        raise QuantbenchError(
            f"{what}: shape {candidate.shape} differs from the reference's {reference.shape}; "
            "build both from the same model with the same batch size"
        )


def _no_data(what: str) -> QuantbenchError:
    return QuantbenchError(f"{what}: nothing compared; call update with at least one non-empty batch")


class OutputErrors:
    """Error of one output of one variant against the reference, accumulated over batches.

    NaN in either tensor is counted (``nan_count`` for the candidate, ``reference_nan_count`` for the
    reference) and makes every metric NaN: the error of a tensor with NaN in it is unknown. Infinite values
    are not special-cased and propagate by IEEE arithmetic.
    """

    def __init__(self, output: str, variant: str = "") -> None:
        self.output = output
        self.variant = variant
        self._elements = 0
        self._nan = 0
        self._ref_nan = 0
        self._max_abs = 0.0
        self._sum_abs = 0.0
        self._sum_r2 = 0.0
        self._sum_c2 = 0.0
        self._sum_rc = 0.0
        self._sum_d2 = 0.0

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Add one batch: the FP32 reference output and the variant's output for the same inputs.

        Raises:
            QuantbenchError: the two shapes differ.
        """
        r = np.asarray(reference, dtype=np.float64)
        c = np.asarray(candidate, dtype=np.float64)
        _same_shape(_label(self.output, self.variant), r, c)
        if r.size == 0:
            return
        self._elements += r.size
        self._nan += int(np.count_nonzero(np.isnan(c)))
        self._ref_nan += int(np.count_nonzero(np.isnan(r)))
        with np.errstate(invalid="ignore", over="ignore"):
            d = c - r
            ad = np.abs(d)
            self._max_abs = max(self._max_abs, float(np.max(ad)))
            self._sum_abs += float(np.sum(ad))
            self._sum_r2 += float(np.sum(r * r))
            self._sum_c2 += float(np.sum(c * c))
            self._sum_rc += float(np.sum(r * c))
            self._sum_d2 += float(np.sum(d * d))

    def result(self) -> dict[str, float]:
        """Metrics over every element seen.

        Returns:
            ``max_abs`` and ``mean_abs`` of candidate - reference; ``rel_l2`` = ||c - r|| / ||r||
            (0.0 when both norms are zero, inf when only ||r|| is); ``cosine`` of the flattened tensors
            (1.0 when both are all-zero, 0.0 when only one is); ``snr_db`` = 10 log10(sum r² / sum (c - r)²)
            (inf when the error is zero, else -inf when the reference is); ``nan_count``,
            ``reference_nan_count`` and ``elements``. With any NaN seen, the five metrics are NaN.

        Raises:
            QuantbenchError: no elements were given to :meth:`update`.
        """
        if self._elements == 0:
            raise _no_data(_label(self.output, self.variant))
        counts = {"nan_count": self._nan, "reference_nan_count": self._ref_nan, "elements": self._elements}
        if self._nan or self._ref_nan:
            names = ("max_abs", "mean_abs", "rel_l2", "cosine", "snr_db")
            return {**dict.fromkeys(names, math.nan), **counts}  # the error is unknown
        norm_r, norm_c = math.sqrt(self._sum_r2), math.sqrt(self._sum_c2)
        rel_l2 = relative_l2(self._sum_d2, self._sum_r2)
        if norm_r == 0.0 and norm_c == 0.0:
            cosine = 1.0
        elif norm_r == 0.0 or norm_c == 0.0:
            cosine = 0.0
        else:
            cosine = min(1.0, max(-1.0, self._sum_rc / norm_r / norm_c))
        snr = snr_db(self._sum_d2, self._sum_r2)
        return {
            "max_abs": self._max_abs,
            "mean_abs": self._sum_abs / self._elements,
            "rel_l2": rel_l2,
            "cosine": cosine,
            "snr_db": snr,
            **counts,
        }


def is_class_scores(shape: Sequence[int | str | None], *, min_classes: int = MIN_CLASSES) -> bool:
    """Whether an output shape is per-class scores: [N, C] or [N, C, 1, 1] with an integer C >= min_classes.

    The batch dimension N may be symbolic (a string or None). ``min_classes`` is 10 by default, so that small
    outputs such as four box coordinates are not taken for classes.
    """
    dims = list(shape)
    if len(dims) == 4 and dims[2:] == [1, 1]:
        dims = dims[:2]
    return len(dims) == 2 and isinstance(dims[1], int) and dims[1] >= min_classes


def _class_matrix(scores: np.ndarray, what: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 4 and s.shape[2:] == (1, 1):
        s = s.reshape(s.shape[:2])
    if s.ndim != 2 or s.shape[1] == 0:
        raise QuantbenchError(f"{what}: shape {s.shape} is not class scores; expected [N, C] or [N, C, 1, 1]")
    return s


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, highest first; ties go to the lower class index, NaN last."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


class TopKAgreement:
    """How often a variant ranks classes as the reference does.

    Classes are ranked by a stable sort of the negated scores, so equal scores rank by class index
    (lowest first) and NaN scores rank last.
    """

    def __init__(self, output: str = "scores", variant: str = "") -> None:
        self.output = output
        self.variant = variant
        self._samples = 0
        self._top1 = 0
        self._overlap = 0.0

    def update(self, reference_scores: np.ndarray, candidate_scores: np.ndarray) -> None:
        """Add one batch of scores shaped [N, C] or [N, C, 1, 1].

        Per sample: top-1 agrees when the first-ranked classes are equal; the top-5 overlap is
        |top-k(reference) ∩ top-k(candidate)| / k with k = min(5, C).

        Raises:
            QuantbenchError: the shapes differ or are not class scores.
        """
        what = _label(self.output, self.variant)
        r = _class_matrix(reference_scores, what)
        c = _class_matrix(candidate_scores, what)
        _same_shape(what, r, c)
        k = min(TOP_K, r.shape[1])
        top_r, top_c = _top_k(r, k), _top_k(c, k)
        self._samples += r.shape[0]
        self._top1 += int(np.count_nonzero(top_r[:, 0] == top_c[:, 0]))
        common = (top_r[:, :, None] == top_c[:, None, :]).any(axis=2).sum(axis=1)
        self._overlap += float(np.sum(common)) / k

    def result(self) -> dict[str, float]:
        """``top1_agreement`` and ``top5_overlap`` (fractions, 0 to 1) and ``samples``.

        Raises:
            QuantbenchError: no samples were given to :meth:`update`.
        """
        if self._samples == 0:
            raise _no_data(_label(self.output, self.variant))
        return {
            "top1_agreement": self._top1 / self._samples,
            "top5_overlap": self._overlap / self._samples,
            "samples": self._samples,
        }


def _posix(name: str | os.PathLike[str]) -> str:
    text = os.fspath(name).replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def read_labels(path: str | os.PathLike[str]) -> dict[str, int]:
    """Read a labels file: image name -> class index.

    Each line is ``name<sep>index``, where sep is ``,`` or ``;`` (read as CSV, so names may be quoted) or,
    on lines with neither, the last run of whitespace. Blank lines and lines starting with ``#`` are
    ignored. If the second field of the first such line is not an integer, that line is a header and is
    skipped. Names are kept as written, with ``\\`` turned into ``/`` and leading ``./`` removed; a name
    listed twice with the same index is accepted.

    Raises:
        QuantbenchError: the file is missing or unreadable, a line is not ``name,index``, an index is
            negative, a name is listed twice with different indices, or there are no labels.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise QuantbenchError(f"labels file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise QuantbenchError(f"{path}: cannot read labels file ({exc})") from None
    labels: dict[str, int] = {}
    first_line: dict[str, int] = {}
    first = True
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        sep = "," if "," in line else ";" if ";" in line else None
        fields = next(csv.reader([line], delimiter=sep)) if sep else line.rsplit(None, 1)
        fields = [f.strip() for f in fields]
        if len(fields) != 2 or not fields[0] or not fields[1]:
            raise QuantbenchError(f"{path}:{lineno}: expected 'name,index', got {line!r}")
        name, index_text = fields
        header, first = first, False
        if not _INTEGER.fullmatch(index_text):
            if header:
                continue
            raise QuantbenchError(f"{path}:{lineno}: class index {index_text!r} is not an integer")
        index = int(index_text)
        if index < 0:
            raise QuantbenchError(f"{path}:{lineno}: class index {index} is negative; indices start at 0")
        key = _posix(name)
        if key in labels and labels[key] != index:
            raise QuantbenchError(
                f"{path}:{lineno}: {key!r} has index {index} here but {labels[key]} on line {first_line[key]}"
            )
        labels[key] = index
        first_line.setdefault(key, lineno)
    if not labels:
        raise QuantbenchError(f"{path}: no labels found; expected lines 'name,index'")
    return labels


def label_for(labels: dict[str, int], relpath: str | os.PathLike[str]) -> int | None:
    """The class index of an image, looking up its relative POSIX path, then its basename; None if neither."""
    key = _posix(relpath)
    if key in labels:
        return labels[key]
    return labels.get(key.rsplit("/", 1)[-1])


class Accuracy:
    """Top-1 and top-5 accuracy of class scores against labels; samples without a label are counted apart."""

    def __init__(self, output: str = "scores", variant: str = "") -> None:
        self.output = output
        self.variant = variant
        self._labelled = 0
        self._unlabelled = 0
        self._top1 = 0
        self._top5 = 0

    def update(self, scores: np.ndarray, labels: Sequence[int | None]) -> None:
        """Add one batch: scores shaped [N, C] or [N, C, 1, 1] and N labels (None for unlabelled).

        A sample is top-5 correct when its label is among the k = min(5, C) highest scores, ranked as in
        :class:`TopKAgreement`.

        Raises:
            QuantbenchError: the scores are not class scores, the label count is not N, or a label is
                outside 0 to C - 1.
        """
        what = _label(self.output, self.variant)
        s = _class_matrix(scores, what)
        if len(labels) != s.shape[0]:
            raise QuantbenchError(f"{what}: {len(labels)} labels for a batch of {s.shape[0]} samples")
        classes = s.shape[1]
        rows = [i for i, label in enumerate(labels) if label is not None]
        self._unlabelled += len(labels) - len(rows)
        if not rows:
            return
        target = np.array([labels[i] for i in rows], dtype=np.int64)
        bad = target[(target < 0) | (target >= classes)]
        if bad.size:
            raise QuantbenchError(
                f"{what}: label {int(bad[0])} is outside 0..{classes - 1}; "
                "check that the labels file is for this model"
            )
        top = _top_k(s[rows], min(TOP_K, classes))
        self._labelled += len(rows)
        self._top1 += int(np.count_nonzero(top[:, 0] == target))
        self._top5 += int(np.count_nonzero((top == target[:, None]).any(axis=1)))

    def result(self) -> dict[str, float]:
        """``top1_accuracy`` and ``top5_accuracy`` (fractions; NaN when no sample had a label),
        ``labelled`` and ``unlabelled`` counts."""
        n = self._labelled
        return {
            "top1_accuracy": self._top1 / n if n else math.nan,
            "top5_accuracy": self._top5 / n if n else math.nan,
            "labelled": n,
            "unlabelled": self._unlabelled,
        }


@dataclass(frozen=True)
class LatencyStats:
    """Timing of repeated calls; times in milliseconds per call of ``batch`` images.

    ``total_s`` is the wall time of the timed phase; ``images_per_s`` is batch / median time.
    """

    batch: int
    runs: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    total_s: float
    images_per_s: float

    def to_dict(self) -> dict[str, float]:
        """The fields as a dict, in declaration order."""
        return asdict(self)


def measure_latency(
    run: Callable[[], object],
    *,
    batch: int,
    min_runs: int = 50,
    min_seconds: float = 2.0,
    warmup: int = 5,
    max_seconds: float | None = None,
) -> LatencyStats:
    """Time ``run()`` (e.g. one inference on a prepared batch of ``batch`` images) with time.perf_counter.

    ``warmup`` untimed calls come first. Timed calls then repeat until there have been at least
    ``min_runs`` and at least ``min_seconds`` of wall time has passed since the first timed call; or, if
    ``max_seconds`` is given, as soon as that much has passed, even if fewer than ``min_runs`` were made.
    The limit is checked after each call, so there is always at least one timed call, and a call is never
    interrupted. Percentiles are linear interpolations (numpy's default). Exceptions from ``run`` propagate.

    Raises:
        QuantbenchError: batch or min_runs is below 1, warmup or min_seconds is negative, or
            max_seconds is not positive.
    """
    checks = [
        (batch >= 1, f"batch must be at least 1, got {batch}"),
        (min_runs >= 1, f"min_runs must be at least 1, got {min_runs}"),
        (warmup >= 0, f"warmup must be 0 or more, got {warmup}"),
        (min_seconds >= 0, f"min_seconds must be 0 or more, got {min_seconds}"),
        (max_seconds is None or max_seconds > 0, f"max_seconds must be above 0, got {max_seconds}"),
    ]
    for ok, message in checks:
        if not ok:
            raise QuantbenchError(f"latency {message}")
    for _ in range(warmup):
        run()
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        run()
        t1 = time.perf_counter()
        times.append(t1 - t0)
        elapsed = t1 - start
        if max_seconds is not None and elapsed >= max_seconds:
            break
        if len(times) >= min_runs and elapsed >= min_seconds:
            break
    ms = np.array(times, dtype=np.float64) * 1000.0
    median, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    mean, low, high = float(np.mean(ms)), float(np.min(ms)), float(np.max(ms))
    rate = batch / (median / 1000.0) if median > 0 else math.inf
    return LatencyStats(batch, len(times), median, p90, p99, mean, low, high, elapsed, rate)
