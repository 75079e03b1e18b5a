"""Built-in calibration methods: pure functions ``Histogram -> amax``.

Every method receives the |x| histogram of one tensor (see
:mod:`quantbench.calibration.histograms`) and returns the amax of a symmetric int8
range ``[-amax, amax]`` (scale ``amax / 127``). Degenerate tensors (all zero,
constant, no finite value) never reach a method: :mod:`.registry` handles them.
"""

from __future__ import annotations

import functools

import numpy as np

from quantbench.calibration.histograms import Histogram

ENTROPY_BINS = 2048
"""TensorRT's EntropyCalibration2 histogram: 2048 bins over [0, absmax]."""
ENTROPY_FIRST_CANDIDATE = 128
"""Smallest number of bins a candidate threshold keeps (one per int8 level)."""
LEVELS = 128
"""Quantization levels on one side of zero for symmetric int8 (0..127)."""
MSE_BINS = 2048
_TABLE_ELEMENTS = 1 << 17
"""Elements of a search's (candidates x bins) table built at once: 1 MiB, so it stays in cache."""


def minmax(hist: Histogram) -> float:
    """The largest |x| seen: no value is ever clipped."""
    return hist.absmax


def percentile(hist: Histogram, percent: float = 99.99) -> float:
    """The |x| below which ``percent`` % of the values lie.

    Interpolates linearly inside the histogram bin where the cumulative count
    crosses the target (values are taken as uniform inside a bin), and never
    returns more than ``absmax``.

    Args:
        hist: the tensor's |x| histogram.
        percent: in (0, 100]; 100 gives ``absmax``.

    Raises:
        ValueError: ``percent`` is outside (0, 100].
    """
    if not 0.0 < percent <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percent}")
    cumulative = np.cumsum(hist.counts)
    target = cumulative[-1] * percent / 100.0
    k = int(np.searchsorted(cumulative, target, side="left"))
    k = min(k, hist.bins - 1)
    before = cumulative[k - 1] if k > 0 else 0.0
    inside = hist.counts[k]
    fraction = (target - before) / inside if inside > 0 else 1.0
    return float(min((k + fraction) * hist.bin_width, hist.absmax))


def entropy_threshold_bin(counts: np.ndarray) -> tuple[int, np.ndarray]:
    """TensorRT EntropyCalibration2's search on a 2048-bin |x| histogram.

    For every candidate ``i`` in 128..len(counts)-1 (the number of bins kept):

    * P is ``counts[:i]`` with all the mass of ``counts[i:]`` (the values that
      would be clipped) added to its last bin;
    * Q merges ``counts[:i]`` into 128 levels (bin ``k`` belongs to level
      ``floor(128 k / i)``, which spreads any remainder evenly), then spreads each
      level's mass evenly over the bins of that level where P is non-zero; Q is
      zero where P is zero;
    * the divergence is KL(P || Q) of the two normalised distributions, infinite
      when Q is zero somewhere that P is not.

    The sums are evaluated with prefix sums, so the search costs a few vector
    operations on a (candidates x 128) table instead of a loop over candidates.

    Returns:
        The candidate with the smallest divergence (the largest such ``i`` on a
        tie: clipping less is the safer choice) and the divergence of every
        candidate, in candidate order.
    """
    h = np.asarray(counts, dtype=np.float64)
    n_bins = h.size
    total = h.sum()
    if n_bins <= ENTROPY_FIRST_CANDIDATE or total <= 0:
        return n_bins, np.zeros(0)
    cands, starts = _level_starts(n_bins)
    csum = np.concatenate(([0.0], np.cumsum(h)))
    nonzero = np.concatenate(([0.0], np.cumsum(h > 0, dtype=np.float64)))
    hlogh = np.zeros_like(h)
    np.multiply(h, np.log(h, where=h > 0, out=np.zeros_like(h)), out=hlogh)
    hlogh_sum = np.concatenate(([0.0], np.cumsum(hlogh)))

    outliers = total - csum[cands]  # mass at or beyond bin i
    last_raw = h[cands - 1]
    last_p = last_raw + outliers  # P's last bin
    kept = csum[cands]  # mass of Q, the raw first i bins

    # sum_k P_k log Q_k, over a block of candidates at a time (the tables stay in cache)
    cross = np.empty(cands.size)
    last_mass = np.empty(cands.size)  # raw mass of the last level
    last_nonzero_change = (last_p > 0).astype(np.float64) - (last_raw > 0).astype(np.float64)
    rows = max(1, _TABLE_ELEMENTS // LEVELS)
    for start in range(0, cands.size, rows):
        block = slice(start, start + rows)
        ends = csum[starts[block]]
        level_mass = ends[:, 1:] - ends[:, :-1]  # M_j: raw mass of each level
        ends = nonzero[starts[block]]
        level_nonzero = ends[:, 1:] - ends[:, :-1]  # bins of each level where P is non-zero
        level_nonzero[:, -1] += last_nonzero_change[block]
        # log of Q's value in each level, log(M_j / nonzero_j); an empty level gets a
        # finite stand-in, multiplied by its zero mass below
        log_q = np.maximum(level_mass, np.finfo(np.float64).tiny)
        np.divide(log_q, np.maximum(level_nonzero, 1.0), out=log_q)
        np.log(log_q, out=log_q)
        # P's mass per level is M_j, plus the outliers in the last level
        cross[block] = np.einsum("ij,ij->i", level_mass, log_q) + outliers[block] * log_q[:, -1]
        last_mass[block] = level_mass[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        p_log_p = hlogh_sum[cands - 1] + np.where(last_p > 0, last_p * np.log(last_p), 0.0)
        kl = (p_log_p - cross) / total - np.log(total) + np.log(kept)
    # Q is zero where P is not only when outliers land in an empty last level
    impossible = ((outliers > 0) & (last_mass <= 0)) | (kept <= 0)
    kl = np.where(impossible | ~np.isfinite(kl), np.inf, kl)
    if not np.isfinite(kl).any():
        return n_bins, kl
    best = kl.size - 1 - int(np.argmin(kl[::-1]))
    return int(cands[best]), kl


@functools.cache
def _level_starts(n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidates 128..n_bins-1 and, per candidate, where each of its 128 levels starts.

    Level ``j`` of candidate ``i`` covers bins ``[ceil(j i / 128), ceil((j + 1) i / 128))``;
    the last column is ``i`` itself.
    """
    cands = np.arange(ENTROPY_FIRST_CANDIDATE, n_bins)
    starts = (np.arange(LEVELS + 1)[None, :] * cands[:, None] + LEVELS - 1) // LEVELS
    cands.flags.writeable = starts.flags.writeable = False  # shared by every call
    return cands, starts


def entropy(hist: Histogram) -> float:
    """TensorRT's EntropyCalibration2: the threshold that minimises KL(P || Q).

    The histogram is resampled to 2048 bins over [0, absmax] and searched with
    :func:`entropy_threshold_bin`. The threshold for a candidate that keeps ``i``
    bins is the upper edge of its last kept bin, ``i * absmax / 2048``: P
    describes exactly the values in ``[0, i * width)`` with everything beyond
    folded onto its edge, which is what saturating at that edge does. (NVIDIA's
    2017 slides place it at ``(i + 0.5) * width``, half a bin into the clipped
    region; the two differ by at most absmax/4096.) When every candidate has
    infinite divergence (all mass beyond bin 128, say), the result is absmax.

    Before the search the first bin's count is replaced by the second's, as NVIDIA's own reference
    implementation (pytorch-quantization, carried into ModelOpt) does: the outputs of ReLU-family
    activations hold a spike of exact zeros, and left in, the cost of merging that spike with its
    neighbours dominates the divergence and drives the threshold far down (on a ReLU6 tensor of the
    sample CNN, 0.70 instead of about 6).
    """
    bins = hist.resample(ENTROPY_BINS)
    counts = np.array(bins.counts, dtype=np.float64)
    if counts.size > 1:
        counts[0] = counts[1]
    best, _ = entropy_threshold_bin(counts)
    return float(best * bins.bin_width)


def fake_quant_sq_error(values: np.ndarray, weights: np.ndarray, amax: np.ndarray) -> np.ndarray:
    """Weighted squared error of symmetric int8 fake-quantization, for each amax.

    Args:
        values: |x| values (bin centres), shape (m,).
        weights: how many values each entry stands for, shape (m,).
        amax: candidate thresholds, shape (c,).

    Returns:
        shape (c,): ``sum_k weights_k * (values_k - fq(values_k))**2`` where
        ``fq(v) = min(round(v / s), 127) * s`` with ``s = amax / 127``
        (round half to even, as ONNX QuantizeLinear does).
    """
    total = np.empty(amax.size)
    rows = max(1, _TABLE_ELEMENTS // max(1, values.size))  # a block of candidates at a time
    for start in range(0, amax.size, rows):
        step = (amax[start : start + rows] / 127.0)[:, None]
        error = values / step  # updated in place
        np.rint(error, out=error)
        np.minimum(error, 127.0, out=error)
        error *= step
        np.subtract(values, error, out=error)
        np.square(error, out=error)
        total[start : start + rows] = np.einsum("ij,j->i", error, weights)
    return total


MSE_STRIDE = 8
"""The search scans every 8th candidate, then every candidate near the best few."""


def mse(hist: Histogram) -> float:
    """The amax that minimises the expected squared error of int8 fake-quantization.

    The histogram is resampled to 2048 bins over [0, absmax]; each bin's values
    are represented by its centre. Candidates are the 2048 bin upper edges; the
    error counts both rounding inside the range and clipping beyond it. The
    search scans every 8th candidate, then every candidate within 8 of the three
    best, which finds the minimum of the smooth error curves seen in practice at
    an eighth of the cost. On a tie the largest candidate wins.
    """
    bins = hist.resample(MSE_BINS)
    occupied = bins.counts > 0
    centres = ((np.arange(bins.bins) + 0.5) * bins.bin_width)[occupied]
    weights = bins.counts[occupied]
    candidates = np.arange(1, bins.bins + 1) * bins.bin_width

    def errors(indices: np.ndarray) -> np.ndarray:
        return fake_quant_sq_error(centres, weights, candidates[indices])

    coarse = np.arange(MSE_STRIDE - 1, bins.bins, MSE_STRIDE)
    coarse_errors = errors(coarse)
    near: set[int] = set()
    for best in coarse[np.argsort(coarse_errors, kind="stable")[:3]]:
        near.update(range(max(0, best - MSE_STRIDE), min(bins.bins, best + MSE_STRIDE + 1)))
    scanned = dict(zip(coarse.tolist(), coarse_errors.tolist()))
    extra = np.array(sorted(near - scanned.keys()), dtype=np.int64)
    scanned.update(zip(extra.tolist(), errors(extra).tolist()))
    order = sorted(scanned)
    values = np.array([scanned[i] for i in order])
    best = values.size - 1 - int(np.argmin(values[::-1]))
    return float(candidates[order[best]])
