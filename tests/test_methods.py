"""Calibration methods against slow, obvious references on synthetic distributions."""

from __future__ import annotations

import functools
import math
import zlib

import numpy as np
import pytest

from quantbench.calibration import methods
from quantbench.calibration.histograms import TensorHistogram

N = 200_000


def _gaussian(rng):
    return rng.normal(0.0, 1.0, N)


def _laplace(rng):
    return rng.laplace(0.0, 1.0, N)


def _relu_with_zero_spike(rng):
    return np.maximum(rng.normal(0.2, 1.0, N), 0.0)  # ~42% exact zeros


def _heavy_tail_with_outliers(rng):
    x = rng.standard_t(3, N)
    x[rng.choice(N, 20, replace=False)] = rng.uniform(40, 80, 20)  # rare large outliers
    return x


def _bimodal(rng):
    return np.concatenate([rng.normal(-3.0, 0.5, N // 2), rng.normal(2.0, 0.3, N - N // 2)])


DISTRIBUTIONS = {
    "gaussian": _gaussian,
    "laplace": _laplace,
    "relu-spike": _relu_with_zero_spike,
    "heavy-tail": _heavy_tail_with_outliers,
    "bimodal": _bimodal,
}


@functools.cache
def _reference_divergences(name: str, zero_bin_as_next: bool = False) -> tuple[float, dict[int, float]]:
    values = np.abs(_samples(name))
    absmax = float(values.max())
    counts, _ = np.histogram(values, bins=2048, range=(0.0, absmax))
    if zero_bin_as_next:  # NVIDIA's reference replaces the first bin's count by the second's
        counts = counts.astype(np.float64)
        counts[0] = counts[1]
    return absmax, slow_kl_divergences(counts)


def _samples(name: str) -> np.ndarray:
    return DISTRIBUTIONS[name](np.random.default_rng(zlib.crc32(name.encode()))).astype(np.float32)


def _histogram(values: np.ndarray):
    acc = TensorHistogram()
    acc.update(values.copy())
    return acc.snapshot()


# --- slow references, written from the definitions ---------------------------------------------


def slow_kl_divergences(counts_in: np.ndarray) -> dict[int, float]:
    """KL(P||Q) for every candidate i in 128..len-1, with plain loops (EntropyCalibration2)."""
    counts = [float(c) for c in counts_in]
    out = {}
    for i in range(128, len(counts)):
        p = counts[:i]
        p[-1] += sum(counts[i:])
        raw = counts[:i]
        q = [0.0] * i
        members: dict[int, list[int]] = {}
        for k in range(i):
            members.setdefault(k * 128 // i, []).append(k)
        for level_bins in members.values():
            mass = sum(raw[k] for k in level_bins)
            nonzero = [k for k in level_bins if p[k] > 0]
            for k in nonzero:
                q[k] = mass / len(nonzero)
        sp, sq = sum(p), sum(q)
        kl = 0.0
        for pk, qk in zip(p, q):
            if pk > 0:
                if qk == 0:
                    kl = math.inf
                    break
                kl += (pk / sp) * math.log((pk / sp) / (qk / sq))
        out[i] = kl
    return out


def sample_fake_quant_mse(values: np.ndarray, amax: float) -> float:
    """Mean squared error of symmetric int8 fake quantization, on the raw samples (float64)."""
    x = values.astype(np.float64)
    scale = amax / 127.0
    q = np.clip(np.rint(x / scale), -127, 127) * scale
    return float(np.mean((x - q) ** 2))


# --- entropy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_entropy_search_matches_slow_reference_on_the_same_bins(name):
    values = np.abs(_samples(name))
    counts, _ = np.histogram(values, bins=2048, range=(0.0, float(values.max())))
    _, reference = _reference_divergences(name)
    best, divergences = methods.entropy_threshold_bin(counts)
    finite = {i: kl for i, kl in reference.items() if math.isfinite(kl)}
    ref_best_kl = min(finite.values())
    # the same candidate, or a tie to within float rounding
    assert best in finite
    assert finite[best] - ref_best_kl <= 1e-9 * max(1.0, ref_best_kl)
    # and every candidate's divergence agrees with the loop
    for i, kl in list(finite.items())[::97]:
        assert divergences[i - 128] == pytest.approx(kl, rel=1e-6, abs=1e-9)


def test_entropy_search_on_a_small_hand_checked_histogram():
    # all mass in bins 0..127 except one outlier far out: keeping exactly the
    # occupied bins (i = 128) makes P == Q, a divergence of zero
    counts = np.zeros(2048)
    counts[:128] = 10.0
    counts[2000] = 0.0
    best, divergences = methods.entropy_threshold_bin(counts)
    assert divergences[0] == pytest.approx(0.0, abs=1e-12)
    assert best >= 128


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_entropy_amax_from_streamed_histogram_is_close_to_direct_reference(name):
    values = _samples(name)
    absmax, reference = _reference_divergences(name, zero_bin_as_next=True)
    finite = {i: kl for i, kl in reference.items() if math.isfinite(kl)}
    ref_amax = max(i for i, kl in finite.items() if kl == min(finite.values())) * absmax / 2048
    ours = methods.entropy(_histogram(values))
    # the streamed histogram is resampled from finer bins, so the KL landscape can
    # shift slightly; the chosen threshold must be as good as the reference's
    ours_bin = round(ours / absmax * 2048)
    assert (
        finite.get(ours_bin, math.inf) <= min(finite.values()) * 1.02 + 1e-6
        or abs(ours - ref_amax) <= 0.01 * absmax
    )


def test_entropy_clips_rare_outliers():
    values = _samples("heavy-tail")
    absmax = float(np.abs(values).max())
    assert methods.entropy(_histogram(values)) < 0.5 * absmax


# --- minmax and percentile ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_minmax_is_exact_absmax(name):
    values = _samples(name)
    assert methods.minmax(_histogram(values)) == float(np.abs(values).max())


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
@pytest.mark.parametrize("percent", [50.0, 99.0, 99.9, 99.99])
def test_percentile_matches_numpy_within_one_bin(name, percent):
    values = _samples(name)
    hist = _histogram(values)
    expected = float(np.percentile(np.abs(values).astype(np.float64), percent))
    assert abs(methods.percentile(hist, percent) - expected) <= hist.bin_width


def test_percentile_100_is_absmax_and_bad_percent_is_rejected():
    values = _samples("gaussian")
    hist = _histogram(values)
    assert methods.percentile(hist, 100.0) == pytest.approx(float(np.abs(values).max()))
    with pytest.raises(ValueError):
        methods.percentile(hist, 0.0)
    with pytest.raises(ValueError):
        methods.percentile(hist, 101.0)


# --- mse ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_mse_amax_is_as_good_as_a_brute_force_search_on_raw_samples(name):
    values = _samples(name)
    absmax = float(np.abs(values).max())
    grid = np.linspace(absmax / 400, absmax, 400)
    best_reference = min(sample_fake_quant_mse(values, t) for t in grid)
    ours = methods.mse(_histogram(values))
    assert 0 < ours <= absmax
    assert sample_fake_quant_mse(values, ours) <= best_reference * 1.02


def test_fake_quant_error_against_a_hand_computed_case():
    # amax 127 -> step 1: 0.4 rounds to 0 (error .16), 2.5 rounds to 2 (half to even, .25),
    # 200 clips to 127 (73^2); weights multiply
    error = methods.fake_quant_sq_error(
        np.array([0.4, 2.5, 200.0]), np.array([1.0, 2.0, 1.0]), np.array([127.0])
    )
    assert error[0] == pytest.approx(0.16 + 2 * 0.25 + 73.0**2)


def test_entropy_is_not_dragged_down_by_the_zero_spike_of_relu6_outputs():
    rng = np.random.default_rng(3)
    x = np.clip(rng.normal(-1.0, 1.5, 200_000), 0, 6).astype(np.float32)  # ~75% exact zeros
    amax = methods.entropy(_histogram(x))
    # the threshold keeps the bulk of the non-zero values instead of chasing the spike at 0
    assert amax >= np.quantile(x[x > 0], 0.9)
