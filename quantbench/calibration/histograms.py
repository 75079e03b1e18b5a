"""Streaming |x| histograms whose contents do not depend on how the data was batched.

Each tensor gets ``FINE_BINS`` equal bins over ``[0, top)``, where ``top`` is always
a power of two strictly above every |x| seen so far. When a batch brings a larger
value, ``top`` doubles (as often as needed) and neighbouring bins are summed in
pairs. Because the bin index of a value is ``floor(|x| * FINE_BINS / top)`` and
scaling by a power of two is exact in floating point, the final histogram is
exactly the one that a single pass at the final ``top`` would give: the same
images at batch 1, 4 or 16 produce identical counts (up to the float rounding of
the model itself), unlike calibrators that fix their range on the first batch.

Calibration methods receive a :class:`Histogram` (an immutable snapshot) and may
:meth:`Histogram.resample` it onto the coarser grids their algorithms define.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from quantbench.calibration import _kernels
from quantbench.fileio import atomic_path

FINE_BINS = 1 << 14
"""Bins per tensor while collecting: at least 8192 of them cover [0, absmax]."""


_EXACT_FLOAT32 = 1 << 24
"""OpenCV counts in float32, exact up to 2**24: pending counts are flushed before that."""


@dataclass(frozen=True)
class Histogram:
    """An immutable |x| histogram of one tensor, the input of every calibration method.

    Attributes:
        counts: float64 counts per bin; bin ``k`` covers ``[k, k+1) * top / len(counts)``.
        top: upper edge of the last bin.
        absmax: the largest finite |x| seen (exact, not rounded to a bin).
        nan: number of NaN values seen (not in ``counts``).
        inf: number of infinite values seen (not in ``counts``).
    """

    counts: np.ndarray
    top: float
    absmax: float
    nan: int = 0
    inf: int = 0

    @property
    def bins(self) -> int:
        """Number of bins."""
        return int(self.counts.size)

    @property
    def bin_width(self) -> float:
        """Width of one bin."""
        return self.top / self.bins

    @property
    def edges(self) -> np.ndarray:
        """The ``bins + 1`` bin edges, from 0 to ``top``."""
        return np.linspace(0.0, self.top, self.bins + 1)

    @property
    def total(self) -> float:
        """Number of finite values counted."""
        return float(self.counts.sum())

    def resample(self, bins: int, upper: float | None = None) -> Histogram:
        """The same data on ``bins`` equal bins over ``[0, upper]`` (default: ``[0, absmax]``).

        Mass is assumed uniform inside each source bin, clipped at ``absmax``
        (no value lies above it), and split proportionally across the new edges.
        Mass above ``upper`` is dropped, so pass ``upper >= absmax`` to keep all of it.
        """
        upper = self.absmax if upper is None else upper
        if upper <= 0.0 or self.top <= 0.0:
            counts = np.zeros(bins)
            counts[0] = self.total
            return Histogram(counts, upper if upper > 0 else 1.0, self.absmax, self.nan, self.inf)
        width = self.bin_width
        last = min(int(self.absmax / width), self.bins - 1)
        xp = np.append(np.arange(last + 1) * width, self.absmax)
        fp = np.append(0.0, np.cumsum(self.counts[: last + 1], dtype=np.float64))
        if xp[-1] <= xp[-2]:  # absmax sits exactly on an edge: that bin is a point mass there
            xp = np.delete(xp, -2)
            fp = np.delete(fp, -2)
        cdf = np.interp(np.linspace(0.0, upper, bins + 1), xp, fp)
        return Histogram(np.diff(cdf), upper, self.absmax, self.nan, self.inf)


class TensorHistogram:
    """Accumulates the |x| histogram, absmax and counts of one tensor, batch after batch.

    Two paths give identical counts (see :mod:`._kernels`, and its
    ``QUANTBENCH_HISTOGRAM_KERNEL`` variable to pick one):

    * float32 values go through a compiled kernel when numba is installed: one
      pass that takes |x|, the peak and the bin indices and counts them, without
      the GIL, so histogram threads run in parallel;
    * otherwise numpy computes |x|, the peak and 16-bit bin indices, and OpenCV's
      ``calcHist`` counts them (exact, about 3x faster than ``np.bincount``, and
      it releases the GIL too). It accumulates into a float32 buffer, which is
      folded into the int64 ``counts`` before it could hold 2**24 in one bin.

    Attributes:
        counts: int64 counts of the ``FINE_BINS`` bins over ``[0, top)``.
        top: a power of two above every |x| seen (0 while every value was zero).
        absmax: the largest finite |x| seen.
        count: finite values seen.
        nan: NaN values seen.
        inf: infinite values seen.
    """

    def __init__(
        self,
        counts: np.ndarray | None = None,
        top: float = 0.0,
        absmax: float = 0.0,
        count: int = 0,
        nan: int = 0,
        inf: int = 0,
    ) -> None:
        self._counts = counts if counts is not None else np.zeros(FINE_BINS, dtype=np.int64)
        self.top = top
        self.absmax = absmax
        self.count = count
        self.nan = nan
        self.inf = inf
        self._pending: np.ndarray | None = None  # OpenCV's float32 counts, made on first use
        self._pending_total = 0

    @property
    def counts(self) -> np.ndarray:
        """Exact int64 counts per bin (pending OpenCV counts included)."""
        self._flush()
        return self._counts

    def _flush(self) -> None:
        if self._pending is not None and self._pending_total:
            self._counts += self._pending.reshape(-1).astype(np.int64)
        self._pending = None  # made again if the numpy path runs again
        self._pending_total = 0

    def _add_indices(self, index: np.ndarray) -> None:
        import cv2

        for start in range(0, index.size, _EXACT_FLOAT32 // 2):
            chunk = index[start : start + _EXACT_FLOAT32 // 2]
            if self._pending_total + chunk.size >= _EXACT_FLOAT32:
                self._flush()
            if self._pending is None:
                self._pending = np.zeros((FINE_BINS, 1), dtype=np.float32)
            cv2.calcHist(
                [chunk.reshape(-1, 1)],
                [0],
                None,
                [FINE_BINS],
                [0, FINE_BINS],
                hist=self._pending,
                accumulate=True,
            )
            self._pending_total += chunk.size

    def update(
        self, values: np.ndarray, scratch: np.ndarray | None = None, nonnegative: bool = False
    ) -> None:
        """Add every element of ``values`` (any shape, any float dtype).

        Args:
            values: the tensor; it may be overwritten (used as scratch space).
            scratch: an optional ``uint16`` buffer of at least ``values.size``
                elements for the bin indices of the numpy path, reused across
                calls to save allocations.
            nonnegative: the caller guarantees that no value is below zero (the
                output of a Relu, say), so the numpy path skips its |x| pass. A
                negative value would then be binned wrongly. (The compiled path
                takes |x| at no cost and ignores this.)

        NaN and infinite values are counted apart and left out of the histogram.
        """
        flat = values.reshape(-1)
        if flat.dtype != np.float32 and flat.dtype != np.float64:
            flat = flat.astype(np.float32)
        if flat.size == 0:
            return
        compiled = _kernels.kernel() if flat.dtype == np.float32 else None
        if compiled is not None:
            self._update_compiled(np.ascontiguousarray(flat), compiled)
        else:
            self._update_numpy(flat, scratch, nonnegative)

    def _update_compiled(self, flat: np.ndarray, compiled: _kernels.Fold) -> None:
        """Add contiguous float32 values with the compiled kernel.

        Values below the current ``top`` are counted at once; if the batch raises
        ``top``, the bins are merged and only the values above the old ``top`` are
        counted again, at the new one (the same counts as binning them all there).
        """
        self._flush()  # frees OpenCV's buffer, if the numpy path ran before
        old_top = self.top
        peak, _, nan, inf = _kernels.fold(flat, compiled, 0.0, old_top, self._counts)
        finite = flat.size - nan - inf
        self.nan += nan
        self.inf += inf
        self.count += finite
        self.absmax = max(self.absmax, peak)
        if peak >= self.top and peak > 0.0:
            self._grow(peak)
            _kernels.fold(flat, compiled, old_top, self.top, self._counts)
        if self.top == 0.0:
            self._counts[0] += finite  # every value so far is zero

    def _update_numpy(self, flat: np.ndarray, scratch: np.ndarray | None, nonnegative: bool) -> None:
        """Add float32 or float64 values with numpy and OpenCV (see :meth:`update`)."""
        mags = flat
        if not nonnegative:
            mags = np.abs(flat, out=flat) if flat.flags.writeable else np.abs(flat)
        peak = float(mags.max())
        if not math.isfinite(peak):
            finite = np.isfinite(mags)
            nan = int(np.count_nonzero(np.isnan(mags)))
            self.nan += nan
            self.inf += mags.size - int(np.count_nonzero(finite)) - nan
            mags = mags[finite]
            peak = float(mags.max()) if mags.size else 0.0
        self.count += int(mags.size)
        self.absmax = max(self.absmax, peak)
        if peak >= self.top and peak > 0.0:
            self._grow(peak)
        if self.top == 0.0:
            self._counts[0] += mags.size  # every value so far is zero
            return
        if scratch is None or scratch.size < mags.size:
            scratch = np.empty(mags.size, dtype=np.uint16)
        index = scratch[: mags.size]
        scale = FINE_BINS / self.top  # a power of two: the product is exact, truncation is floor
        if scale < _kernels.FLOAT32_SCALE_LIMIT and mags.dtype == np.float32:
            np.multiply(mags, np.float32(scale), out=index, casting="unsafe")
        else:
            np.multiply(mags, scale, out=index, casting="unsafe", dtype=np.float64)
        self._add_indices(index)

    def _grow(self, peak: float) -> None:
        """Raise ``top`` to the smallest power of two above ``peak``, merging bins."""
        new_top = math.ldexp(1.0, math.frexp(peak)[1])  # frexp mantissa < 1, so new_top > peak
        self._flush()
        if self.top > 0.0:
            factor = round(new_top / self.top)
            if factor >= FINE_BINS:
                merged = np.zeros(FINE_BINS, dtype=np.int64)
                merged[0] = self.counts.sum()
            else:
                merged = np.zeros(FINE_BINS, dtype=np.int64)
                merged[: FINE_BINS // factor] = self.counts.reshape(-1, factor).sum(axis=1)
            self._counts = merged
        self.top = new_top

    def snapshot(self) -> Histogram:
        """An immutable :class:`Histogram` of everything seen so far."""
        top = self.top if self.top > 0.0 else 1.0
        return Histogram(self.counts.astype(np.float64), top, self.absmax, self.nan, self.inf)


def save_histograms(path: str | os.PathLike[str], hists: dict[str, TensorHistogram], key: str) -> None:
    """Write every tensor's histogram to one compressed ``.npz`` file, atomically.

    Args:
        path: destination file.
        hists: tensor name -> accumulated histogram, in graph order.
        key: the cache key the histograms were collected under; stored for checking.
    """
    names = list(hists)
    arrays = {
        "key": np.array(key),
        "names": np.array(names, dtype=str),
        "counts": np.stack([hists[n].counts for n in names]) if names else np.zeros((0, FINE_BINS), np.int64),
        "top": np.array([hists[n].top for n in names], dtype=np.float64),
        "absmax": np.array([hists[n].absmax for n in names], dtype=np.float64),
        "stats": np.array([[hists[n].count, hists[n].nan, hists[n].inf] for n in names], np.int64).reshape(
            -1, 3
        ),
    }
    # the .npz layout np.load reads, with fast compression (the counts are mostly zeros)
    with (
        atomic_path(path) as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
    ):
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def load_histograms(path: str | os.PathLike[str], key: str) -> dict[str, TensorHistogram] | None:
    """Read histograms written by :func:`save_histograms`.

    Returns:
        tensor name -> histogram, or None when the file is missing, unreadable or
        was collected under another key (the caller then collects afresh).
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in ("key", "names", "counts", "top", "absmax", "stats")}
    except (OSError, KeyError, ValueError, EOFError):
        return None
    if str(arrays["key"]) != key or arrays["counts"].shape[1:] != (FINE_BINS,):
        return None
    hists = {}
    for i, name in enumerate(arrays["names"].tolist()):
        count, nan, inf = (int(v) for v in arrays["stats"][i])
        hists[name] = TensorHistogram(
            arrays["counts"][i].astype(np.int64),
            float(arrays["top"][i]),
            float(arrays["absmax"][i]),
            count,
            nan,
            inf,
        )
    return hists
