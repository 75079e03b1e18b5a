"""Relative L2 error and SNR of a candidate tensor against a reference, from sums of squares.

One definition for every place that reports them. With ``error_sq`` = sum (c - r)² and
``reference_sq`` = sum r² over every element compared:

* ``relative_l2`` = ||c - r|| / ||r||: 0.0 when both sums are zero, inf when only the reference's is;
* ``snr_db`` = 10 log10(reference_sq / error_sq): inf when the error is zero, else -inf when the
  reference is zero.

NaN in a sum gives NaN. :class:`ErrorEnergy` accumulates the two sums over batches.
"""

from __future__ import annotations

import math

import numpy as np

CHUNK = 16384
"""Elements per float32 dot product in :class:`ErrorEnergy`; the chunks are summed in float64."""


def relative_l2(error_sq: float, reference_sq: float) -> float:
    """||c - r|| / ||r|| from sum (c - r)² and sum r² (see the module docstring for zero sums)."""
    norm_error, norm_reference = math.sqrt(error_sq), math.sqrt(reference_sq)
    if norm_reference:
        return norm_error / norm_reference
    return 0.0 if norm_error == 0.0 else math.inf


def snr_db(error_sq: float, reference_sq: float) -> float:
    """10 log10(sum r² / sum (c - r)²) in decibels (see the module docstring for zero sums)."""
    if error_sq == 0.0 or reference_sq == 0.0:
        return math.inf if error_sq == 0.0 else -math.inf
    return 10.0 * math.log10(reference_sq / error_sq)


def sum_squares_float32(values: np.ndarray) -> float:
    """Sum of the squares of ``values`` in float32: dot products over chunks of :data:`CHUNK` elements,
    the chunks added in float64 (relative error below 1e-6)."""
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    return sum(
        float(np.dot(part, part)) for part in (flat[i : i + CHUNK] for i in range(0, flat.size, CHUNK))
    )


class ErrorEnergy:
    """Sum of squares of a reference and of a candidate's error against it, accumulated over batches.

    Only the two sums :func:`relative_l2` and :func:`snr_db` need are kept, where
    :class:`quantbench.evaluation.metrics.OutputErrors` computes eight statistics in float64: cheap
    enough to compare every quantized tensor of a model (about 7 million values per image on a
    50-conv CNN).

    Args:
        exact: False sums in float32 (:func:`sum_squares_float32`, on the candidate minus the reference
            computed in float32); True converts both to float64 and sums each batch with numpy's
            pairwise float64 sum.

    Attributes:
        reference: sum r² so far.
        error: sum (c - r)² so far.
    """

    def __init__(self, exact: bool = False) -> None:
        self.exact = exact
        self.reference = 0.0
        self.error = 0.0

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Add one batch (same shapes)."""
        if self.exact:
            r = np.asarray(reference, dtype=np.float64)
            diff = np.asarray(candidate, dtype=np.float64) - r
            self.error += float(np.sum(diff * diff))
            self.reference += float(np.sum(r * r))
        else:
            r = np.asarray(reference, dtype=np.float32)
            self.reference += sum_squares_float32(r)
            self.error += sum_squares_float32(np.asarray(candidate, dtype=np.float32) - r)

    def rel_l2(self) -> float:
        """:func:`relative_l2` of the sums so far."""
        return relative_l2(self.error, self.reference)

    def snr_db(self) -> float:
        """:func:`snr_db` of the sums so far."""
        return snr_db(self.error, self.reference)

    def result(self) -> tuple[float, float]:
        """(``rel_l2``, ``snr_db``) of the sums so far."""
        return self.rel_l2(), self.snr_db()
