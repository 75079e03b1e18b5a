"""The compiled histogram kernel: one pass per tensor, numba when it is installed.

:func:`fold` bins every value whose magnitude lies in ``[lo, top)`` into the
``FINE_BINS`` bins over ``[0, top)`` and returns the largest finite magnitude
(which tells the caller whether a larger ``top`` is needed) and the numbers of
NaN and infinite values, in one pass over the data. The bin index is computed
exactly as the numpy path of :mod:`.histograms` computes it (``|x|`` times a
power of two in float32, truncated), so both give identical counts.

numba is optional (the ``fast`` extra) and imported only by :func:`warm_up`.
The compiled code is cached on disk (``cache=True``, in ``__pycache__`` beside
this file, or numba's user cache folder where that is not writable) so that
later processes load it (about 0.3 s with numba's import) instead of compiling it
again (about 0.8 s).

The environment variable ``QUANTBENCH_HISTOGRAM_KERNEL`` picks the path:

* ``auto`` (or unset): the compiled kernel once :func:`warm_up` has loaded it
  (the collection calls it after its first ``WARM_UP_AFTER`` values, so that
  short runs never pay for numba), numpy before that or when numba is missing;
* ``numpy``: always the numpy/OpenCV path;
* ``numba``: always the compiled kernel (an error when numba is missing).

float64 values always take the numpy path.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable

import numpy as np

from quantbench.errors import QuantbenchError

KERNEL_VARIABLE = "QUANTBENCH_HISTOGRAM_KERNEL"
"""Environment variable that picks the histogram path: ``auto``, ``numpy`` or ``numba``."""

BLOCK = 2048
"""Values whose bin indices are computed together (vectorized) before they are counted."""

SUBS = 4
"""Interleaved partial histograms: consecutive values that fall into one bin do not wait on each other."""

ABS_MASK = 0x7FFFFFFF
"""Clears the sign bit of a float32 bit pattern."""

FLOAT32_INF_BITS = 0x7F800000
"""Bit pattern of float32 +inf: magnitudes at or above it are infinite or NaN."""

WARM_UP_AFTER = 1 << 27
"""Values the numpy path folds before the collection loads numba: about what numba's import and
cache load cost (some 0.3 s of CPU) saves at 1.2 ns a value, so that short runs are not slowed."""

FLOAT32_SCALE_LIMIT = 1e30
"""Bin scales (``FINE_BINS / top``) from here on are applied in float64 (float32 would overflow)."""

SMALL = 1 << 12
"""Tensors up to this many values are counted without partial histograms."""

_FLOAT32_BEYOND = 2.0**128
"""The smallest power of two that float32 cannot hold."""

_CHUNK = 1 << 30
"""Values per kernel call at most, so that no int32 partial count can overflow."""

Fold = Callable[..., tuple[int, int]]

_lock = threading.Lock()
_loaded: list[Fold | None] = []
"""Empty until :func:`warm_up` has imported numba; then the compiled kernel, or None if it failed."""


def _fold(
    flat: np.ndarray,
    bits: np.ndarray,
    lo: np.float32,
    top: np.float32,
    scale: np.floating,
    counts: np.ndarray,
    small: int,
) -> tuple[int, int]:
    """Count the values with ``lo <= |x| < top`` into ``counts`` (compiled by numba).

    Up to ``small`` values are counted one by one. Larger tensors go by blocks,
    each through three loops: the peak of the magnitudes' bit patterns and the
    bin indices (both vectorized), then the counting, spread over ``SUBS``
    partial histograms. Indices are unsigned, which spares numba's negative-index
    checks. Values outside ``[lo, top)`` get the extra index ``len(counts)``,
    counted apart.

    Args:
        flat: contiguous float32 values.
        bits: the same memory viewed as int32.
        lo: lower bound of the magnitudes to count.
        top: upper bound (exclusive); NaN and infinite values always fail it.
        scale: ``len(counts) / top``, a power of two (float32, or float64 for tiny tops).
        counts: int64 counts, updated in place.
        small: the number of values up to which they are counted one by one.

    Returns:
        the largest ``|x|`` bit pattern (sign cleared), and the number of values counted.
    """
    bins = counts.size
    mask = np.int32(ABS_MASK)
    peak = np.int32(0)
    if flat.size <= small:  # straight into the counts: no partial histograms to make and add up
        counted = 0
        for j in range(flat.size):
            peak = max(peak, bits[j] & mask)
            magnitude = abs(flat[j])
            if (magnitude >= lo) & (magnitude < top):
                counts[min(np.uint64(magnitude * scale), np.uint64(bins - 1))] += 1
                counted += 1
        return int(peak), counted
    stride = np.uint64(bins + 1)  # each partial histogram has one extra bin for the values left out
    partial = np.zeros(SUBS * (bins + 1), np.int32)
    index = np.empty(BLOCK, np.uint32)
    left_out = np.float32(bins)
    limit = np.uint32(bins)  # never reached by a value inside [lo, top); a guard for memory safety
    for start in range(0, flat.size, BLOCK):
        block = flat[start : start + BLOCK]
        block_bits = bits[start : start + BLOCK]
        size = block.size
        for j in range(size):
            magnitude_bits = block_bits[j] & mask
            if magnitude_bits > peak:
                peak = magnitude_bits
        for j in range(size):
            magnitude = abs(block[j])
            inside = (magnitude >= lo) & (magnitude < top)
            index[j] = min(np.uint32(magnitude * scale if inside else left_out), limit)
        for j in range(0, size - SUBS + 1, SUBS):
            for sub in range(SUBS):
                partial[np.uint64(sub) * stride + np.uint64(index[j + sub])] += 1
        for j in range(size - size % SUBS, size):
            partial[np.uint64(index[j])] += 1
    outside = 0
    for sub in range(SUBS):
        offset = sub * (bins + 1)
        for j in range(bins):
            counts[j] += partial[offset + j]
        outside += partial[offset + bins]
    return int(peak), flat.size - outside


def _compile() -> Fold | None:
    """numba's compiled :func:`_fold` (cached on disk where a cache folder is writable), or None.

    None when numba is missing or unusable here (a version that does not match numpy's,
    say): the numpy path then does the work.
    """
    try:
        import numba
    except ImportError:
        return None
    try:
        try:
            compiled = numba.njit(nogil=True, cache=True, boundscheck=False)(_fold)
        except RuntimeError:  # no writable cache location: compile in memory only
            compiled = numba.njit(nogil=True, boundscheck=False)(_fold)
        one = np.zeros(1, np.float32)
        one_bin = np.zeros(1, np.int64)
        compiled(one, one.view(np.int32), np.float32(0), np.float32(1), np.float32(1), one_bin, 0)
    except Exception:  # an LLVM or typing error on an unusual platform: the numpy path still works
        return None
    return compiled  # type: ignore[no-any-return]


def choice() -> str:
    """The path asked for by ``QUANTBENCH_HISTOGRAM_KERNEL``: ``auto``, ``numpy`` or ``numba``.

    Raises:
        QuantbenchError: the variable has another value.
    """
    value = os.environ.get(KERNEL_VARIABLE, "").strip().lower() or "auto"
    if value not in ("auto", "numpy", "numba"):
        raise QuantbenchError(f"{KERNEL_VARIABLE} must be auto, numpy or numba, not {value!r}")
    return value


def expected() -> bool:
    """Whether the settings will use the compiled kernel, told without importing numba."""
    if choice() == "numpy":
        return False
    try:
        return importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):  # a broken or blocked installation
        return False


def kernel() -> Fold | None:
    """The compiled kernel if it is loaded, else None (the numpy path).

    With ``auto``, only :func:`warm_up` loads it, so a process that never calls
    that never imports numba; with ``numba``, the first call loads it.

    Raises:
        QuantbenchError: the variable asks for ``numba`` and numba cannot be used, or
            has a value other than ``auto``, ``numpy`` and ``numba``.
    """
    wanted = choice()
    if wanted == "numpy":
        return None
    if wanted == "numba":
        warm_up()
        if _loaded[0] is None:
            raise QuantbenchError(
                f"{KERNEL_VARIABLE}=numba, but numba cannot be imported or compile here "
                "(install quantbench[fast], or unset the variable)"
            )
    return _loaded[0] if _loaded else None


def warm_up() -> None:
    """Import numba and compile the kernel (or load it from the disk cache), once per process.

    Does nothing when the settings ask for the numpy path. Other threads keep
    using the numpy path until it is done.

    Raises:
        QuantbenchError: ``QUANTBENCH_HISTOGRAM_KERNEL`` has an unknown value.
    """
    if choice() == "numpy" or _loaded:
        return
    with _lock:
        if not _loaded:
            _loaded.append(_compile())


def fold(
    flat: np.ndarray, compiled: Fold, lo: float, top: float, counts: np.ndarray
) -> tuple[float, int, int, int]:
    """Bin the finite float32 values with ``lo <= |x| < top``; find the peak and NaN/inf counts.

    Args:
        flat: contiguous one-dimensional float32 values (left unchanged).
        compiled: the kernel from :func:`kernel`.
        lo: lower bound of the magnitudes to count (0 counts from zero).
        top: upper bound (exclusive), a power of two; 0 counts nothing.
        counts: int64 counts of the bins over ``[0, top)``, updated in place.

    Returns:
        the largest finite ``|x|`` (0 when none), the number of values counted, and
        the numbers of NaN and of infinite values.
    """
    scale = counts.size / top if top > 0.0 else 0.0
    # float32 as the numpy path; float64 where float32 cannot hold the scale (then numba compiles
    # a second version of the kernel, once)
    scale_type = np.float32 if scale < FLOAT32_SCALE_LIMIT else np.float64
    # a top of 2**128 is inf in float32: still above every finite value
    top32 = np.float32(top) if top < _FLOAT32_BEYOND else np.float32(np.inf)
    peak_bits = counted = 0
    for start in range(0, flat.size, _CHUNK):  # the partial counts are int32
        chunk = flat[start : start + _CHUNK]
        bits, more = compiled(
            chunk, chunk.view(np.int32), np.float32(lo), top32, scale_type(scale), counts, SMALL
        )
        peak_bits = max(peak_bits, bits)
        counted += more
    if peak_bits < FLOAT32_INF_BITS:  # every value is finite: the peak is the largest magnitude
        return float(np.int32(peak_bits).view(np.float32)), counted, 0, 0
    finite = flat[np.isfinite(flat)]
    peak = float(np.abs(finite).max()) if finite.size else 0.0
    nan = int(np.count_nonzero(np.isnan(flat)))
    return peak, counted, nan, flat.size - finite.size - nan
