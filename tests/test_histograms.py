"""Streaming histograms: exactness, batch invariance, degenerate tensors, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from quantbench.calibration.histograms import (
    FINE_BINS,
    TensorHistogram,
    load_histograms,
    save_histograms,
)


def _stream(values: np.ndarray, batch: int) -> TensorHistogram:
    acc = TensorHistogram()
    for start in range(0, len(values), batch):
        acc.update(values[start : start + batch].copy())
    return acc


def test_counts_equal_a_direct_float64_histogram_at_the_final_range():
    rng = np.random.default_rng(0)
    values = (rng.standard_t(4, 50_000) * 3).astype(np.float32)
    acc = _stream(values, 777)
    mags = np.abs(values.astype(np.float64))
    expected_top = 2.0 ** np.ceil(np.log2(mags.max()))
    if expected_top <= mags.max():
        expected_top *= 2
    assert acc.top == expected_top
    direct = np.floor(mags * FINE_BINS / expected_top).astype(np.int64)
    assert np.array_equal(acc.counts, np.bincount(direct, minlength=FINE_BINS))
    assert acc.absmax == float(np.abs(values).max())
    assert acc.count == values.size


@pytest.mark.parametrize("batches", [(1, 4, 16), (3, 1000, 50_000)])
def test_batch_size_does_not_change_the_histogram(batches):
    rng = np.random.default_rng(1)
    # growing magnitudes force several range doublings at small batch sizes
    values = (rng.normal(0, 1, 40_000) * np.linspace(0.01, 50, 40_000)).astype(np.float32)
    first = _stream(values, batches[0])
    for batch in batches[1:]:
        other = _stream(values, batch)
        assert np.array_equal(first.counts, other.counts)
        assert (first.top, first.absmax, first.count) == (other.top, other.absmax, other.count)


def test_nonnegative_shortcut_counts_like_a_direct_float64_histogram():
    rng = np.random.default_rng(5)
    values = np.maximum(rng.normal(0.3, 2.0, 30_000), 0.0).astype(np.float32)  # ~44% exact zeros
    values[:3] = [-0.0, 5.999, np.nan]
    acc = TensorHistogram()
    for start in range(0, values.size, 1000):
        acc.update(values[start : start + 1000].copy(), nonnegative=True)
    finite = values[np.isfinite(values)].astype(np.float64)
    top = 2.0 ** np.floor(np.log2(finite.max()) + 1)
    direct = np.floor(finite * FINE_BINS / top).astype(np.int64)
    assert acc.top == top
    assert np.array_equal(acc.counts, np.bincount(direct, minlength=FINE_BINS))
    assert (acc.nan, acc.count, acc.absmax) == (1, finite.size, float(finite.max()))


def test_nan_and_inf_are_counted_apart_and_left_out():
    values = np.array([1.0, np.nan, -np.inf, 2.0, np.inf, -3.0], dtype=np.float32)
    acc = TensorHistogram()
    acc.update(values)
    assert (acc.nan, acc.inf, acc.count, acc.absmax) == (1, 2, 3, 3.0)
    assert acc.counts.sum() == 3
    hist = acc.snapshot()
    assert np.isfinite(hist.counts).all()


def test_all_zero_tensor_keeps_every_value_in_bin_zero_until_a_range_appears():
    acc = TensorHistogram()
    acc.update(np.zeros(100, np.float32))
    assert acc.top == 0.0 and acc.counts[0] == 100
    acc.update(np.array([0.0, 5.0], np.float32))
    assert acc.top == 8.0
    assert acc.counts[0] == 101 and acc.counts[5 * FINE_BINS // 8] == 1


def test_float16_and_float64_inputs():
    acc = TensorHistogram()
    acc.update(np.array([0.5, -1.5], np.float16))
    acc.update(np.array([0.25], np.float64))
    assert acc.absmax == 1.5 and acc.count == 3


def test_resample_preserves_mass_and_matches_uniform_bins():
    acc = TensorHistogram()
    acc.update(np.linspace(-10, 10, 100_001, dtype=np.float32))
    coarse = acc.snapshot().resample(2048)
    assert coarse.total == pytest.approx(100_001)
    assert coarse.top == pytest.approx(10.0)
    # a uniform distribution stays uniform: every coarse bin holds 1/2048 of the mass
    assert np.allclose(coarse.counts[1:-1], 100_001 / 2048, rtol=0.05)  # 48 or 50 points a bin


def test_save_and_load_round_trip_and_key_check(tmp_path):
    acc = TensorHistogram()
    acc.update(np.array([1.0, -2.0, np.nan], np.float32))
    path = tmp_path / "h.npz"
    save_histograms(path, {"a": acc, "b:0": TensorHistogram()}, key="k1")
    loaded = load_histograms(path, "k1")
    assert loaded is not None and list(loaded) == ["a", "b:0"]
    assert np.array_equal(loaded["a"].counts, acc.counts)
    assert (loaded["a"].top, loaded["a"].absmax, loaded["a"].nan, loaded["a"].count) == (4.0, 2.0, 1, 2)
    assert load_histograms(path, "another key") is None
    assert load_histograms(tmp_path / "missing.npz", "k1") is None
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert load_histograms(tmp_path / "bad.npz", "k1") is None
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
