"""Streaming histograms: exactness, batch invariance, degenerate tensors, persistence.

Every test here runs twice, once on each path of :mod:`quantbench.calibration._kernels`
(the numba kernel, skipped where numba is not installed, and the numpy/OpenCV path), and the
tests below ``reference`` compare both against a direct float64 definition of the histogram.
"""

from __future__ import annotations

import itertools
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from quantbench.calibration import _kernels
from quantbench.calibration.histograms import (
    FINE_BINS,
    TensorHistogram,
    load_histograms,
    save_histograms,
)
from quantbench.errors import QuantbenchError


@pytest.fixture(autouse=True, params=["numba", "numba-blocks", "numpy"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs the test on one histogram path, and checks that the path was the one taken.

    ``numba`` counts small tensors one value at a time and large ones by blocks;
    ``numba-blocks`` counts every tensor by blocks.
    """
    if request.param != "numpy":
        pytest.importorskip("numba")
    if request.param == "numba-blocks":
        monkeypatch.setattr(_kernels, "SMALL", 0)
    monkeypatch.setenv(_kernels.KERNEL_VARIABLE, request.param.split("-")[0])
    calls = []
    fold = _kernels.fold

    def counting_fold(*args, **kwargs):
        calls.append(1)
        return fold(*args, **kwargs)

    monkeypatch.setattr(_kernels, "fold", counting_fold)
    yield request.param
    if os.environ[_kernels.KERNEL_VARIABLE] == "numpy":  # unless the test switched paths itself
        assert not calls


def reference(batches: list[np.ndarray]) -> dict:
    """The histogram by its definition: every finite |x| in float64, binned at once at the final top."""
    values = np.concatenate([np.asarray(b, dtype=np.float64).reshape(-1) for b in batches] + [np.zeros(0)])
    mags = np.abs(values[np.isfinite(values)])
    absmax = float(mags.max()) if mags.size else 0.0
    counts = np.zeros(FINE_BINS, dtype=np.int64)
    top = 0.0
    if absmax > 0.0:
        top = 1.0  # the smallest power of two strictly above absmax
        while top <= absmax:
            top *= 2.0
        while top / 2.0 > absmax:
            top /= 2.0
        for index in np.floor(mags * FINE_BINS / top).astype(np.int64):
            counts[index] += 1
    else:
        counts[0] = mags.size
    nan = int(np.count_nonzero(np.isnan(values)))
    return {
        "counts": counts,
        "top": top,
        "absmax": absmax,
        "count": int(mags.size),
        "nan": nan,
        "inf": int(values.size - mags.size - nan),
    }


def assert_matches_reference(acc: TensorHistogram, batches: list[np.ndarray]) -> None:
    """Counts, top, absmax and the NaN/inf/finite tallies equal the float64 definition's."""
    expected = reference(batches)
    assert np.array_equal(acc.counts, expected["counts"])
    assert (acc.top, acc.absmax, acc.count, acc.nan, acc.inf) == (
        expected["top"],
        expected["absmax"],
        expected["count"],
        expected["nan"],
        expected["inf"],
    )


def _fold_all(batches: list[np.ndarray], nonnegative: bool = False) -> TensorHistogram:
    acc = TensorHistogram()
    for batch in batches:
        acc.update(batch.copy(), nonnegative=nonnegative)
    return acc


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


def test_special_values_match_the_reference():
    values = np.array(
        [0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 1.0, -1.0, 2.5, -3.75, 1e-45, -1e-40, 7.999999],
        dtype=np.float32,
    )
    assert_matches_reference(_fold_all([values]), [values])


def test_values_on_bin_edges_and_just_below_them_match_the_reference():
    top = 8.0  # set by the 7.5 below
    edges = (np.arange(0, FINE_BINS, 37) * (top / FINE_BINS)).astype(np.float32)
    below = np.nextafter(edges, np.float32(0))
    values = np.concatenate([edges, -edges, below, -below, [np.float32(7.5)]]).astype(np.float32)
    acc = _fold_all([values])
    assert_matches_reference(acc, [values])
    assert acc.top == top
    assert acc.counts[37] == 2 and acc.counts[36] == 2  # +-edge 37 in bin 37; +-just below it in bin 36


def test_every_top_doubling_matches_the_reference_after_each_batch():
    batches = [
        np.array([0.0, -0.0], np.float32),  # all zero: no top yet
        np.zeros((0, 4), np.float32),  # empty
        np.array([1e-3, -2e-3], np.float32),
        np.array([0.75, -0.5, 1e-3], np.float32),
        np.array([4.0], np.float32),  # exactly a power of two: the top must pass it
        np.array([-1e6, 3.0], np.float32),  # a jump past FINE_BINS times the top: all earlier in bin 0
        np.array([np.inf, np.nan, 5e5], np.float32),
        np.array([np.float32(3.0e38)], np.float32),  # top 2**128, beyond float32's range
    ]
    acc = TensorHistogram()
    for i, batch in enumerate(batches):
        acc.update(batch.copy())
        assert_matches_reference(acc, batches[: i + 1])
    assert acc.top == 2.0**128


def test_empty_tensors_change_nothing():
    acc = _fold_all([np.zeros(0, np.float32), np.zeros((3, 0), np.float32)])
    assert acc.top == 0.0 and acc.count == 0 and acc.counts.sum() == 0
    assert_matches_reference(acc, [])


def test_subnormal_only_tensors_match_the_reference():
    values = np.array([1e-45, -3e-42, 0.0, 2e-39], np.float32)  # tops of 2**-148 and below 1e-30
    acc = TensorHistogram()
    acc.update(values[:1].copy())
    assert_matches_reference(acc, [values[:1]])
    acc.update(values[1:].copy())
    assert_matches_reference(acc, [values])


def test_non_contiguous_and_float16_inputs_match_the_reference():
    rng = np.random.default_rng(3)
    wide = rng.normal(0, 2, (64, 10)).astype(np.float32)
    half = rng.normal(0, 2, 500).astype(np.float16)
    acc = TensorHistogram()
    acc.update(wide[:, ::3])
    acc.update(wide.T)
    acc.update(half)
    assert_matches_reference(acc, [wide[:, ::3], wide, half])


def test_long_real_like_stream_matches_the_reference_and_is_batch_invariant():
    rng = np.random.default_rng(7)
    values = (rng.standard_t(3, 300_000) * np.linspace(0.01, 20, 300_000)).astype(np.float32)
    values[rng.integers(0, values.size, 100)] = 0.0
    values[::9973] = np.nan
    expected = reference([values])
    for batch in (1000, 4097, 300_000):
        acc = _fold_all([values[i : i + batch] for i in range(0, values.size, batch)])
        assert np.array_equal(acc.counts, expected["counts"])
        assert (acc.top, acc.absmax, acc.nan, acc.count) == (
            expected["top"],
            expected["absmax"],
            expected["nan"],
            expected["count"],
        )


def test_nonnegative_tensors_match_the_reference():
    rng = np.random.default_rng(11)
    values = np.maximum(rng.normal(0, 3, 20_000), 0).astype(np.float32)
    values[:2] = [-0.0, np.nan]
    batches = [values[i : i + 3000] for i in range(0, values.size, 3000)]
    assert_matches_reference(_fold_all(batches, nonnegative=True), batches)


def test_kernel_calls_split_in_chunks_count_alike(monkeypatch, path):
    monkeypatch.setattr(_kernels, "_CHUNK", 1000)
    rng = np.random.default_rng(2)
    values = rng.normal(0, 1, 10_001).astype(np.float32)
    values[5000] = np.inf
    assert_matches_reference(_fold_all([values]), [values])


def test_float64_inputs_match_the_reference():
    values = np.array([1.0, -2.5, 1e-300, np.nan, 3.0e300, 0.0], np.float64)
    assert_matches_reference(_fold_all([values]), [values])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=hnp.arrays(np.float32, st.integers(0, 300), elements=st.floats(width=32)),
    cuts=st.lists(st.integers(0, 300), max_size=4),
)
def test_any_float32_stream_matches_the_reference(values, cuts):
    bounds = [0, *sorted(c for c in cuts if c <= values.size), values.size]
    batches = [values[a:b] for a, b in itertools.pairwise(bounds)]
    assert_matches_reference(_fold_all(batches), batches)


def test_both_paths_and_a_switch_between_them_give_identical_histograms(monkeypatch, path):
    if path != "numba":
        pytest.skip("chooses its paths itself")
    pytest.importorskip("numba")
    rng = np.random.default_rng(4)
    batches = [(rng.normal(0, 1, 5000) * scale).astype(np.float32) for scale in (0.1, 1, 10, 0.5, 300)]
    results = []
    for paths in (["numpy"] * 5, ["numba"] * 5, ["numpy", "numba", "numpy", "numba", "numba"]):
        acc = TensorHistogram()
        for batch, chosen in zip(batches, paths):
            monkeypatch.setenv(_kernels.KERNEL_VARIABLE, chosen)
            acc.update(batch.copy())
        results.append(acc)
    for acc in results:
        assert_matches_reference(acc, batches)


def test_auto_uses_numpy_until_warm_up_loads_numba(monkeypatch, path):
    if path != "numba":
        pytest.skip("chooses its paths itself")
    monkeypatch.setenv(_kernels.KERNEL_VARIABLE, "auto")
    monkeypatch.setattr(_kernels, "_loaded", [])
    assert _kernels.kernel() is None  # auto never imports numba by itself
    _kernels.warm_up()
    numba_installed = _kernels.expected()
    assert (_kernels.kernel() is not None) == numba_installed


def test_without_numba_auto_falls_back_to_numpy_silently(monkeypatch, path):
    if path != "numba":
        pytest.skip("chooses its paths itself")
    monkeypatch.setenv(_kernels.KERNEL_VARIABLE, "auto")
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now fails, as where it is missing
    monkeypatch.setattr(_kernels, "_loaded", [])
    assert not _kernels.expected()
    _kernels.warm_up()
    assert _kernels.kernel() is None
    values = np.array([1.0, -3.0, np.nan], np.float32)
    assert_matches_reference(_fold_all([values]), [values])


def test_kernel_setting_errors(monkeypatch, path):
    if path != "numba":
        pytest.skip("chooses its paths itself")
    monkeypatch.setenv(_kernels.KERNEL_VARIABLE, "fastest")
    with pytest.raises(QuantbenchError, match="auto, numpy or numba"):
        TensorHistogram().update(np.ones(3, np.float32))
    monkeypatch.setenv(_kernels.KERNEL_VARIABLE, "numba")
    monkeypatch.setattr(_kernels, "_loaded", [None])  # as where numba cannot be imported
    with pytest.raises(QuantbenchError, match="numba cannot be imported"):
        TensorHistogram().update(np.ones(3, np.float32))


@pytest.mark.parametrize("overlap_bytes", [0, 1 << 30])  # ONNX Runtime waits for the folding, or not
def test_collection_counts_alike_on_both_paths_and_before_numba_loads(monkeypatch, path, overlap_bytes):
    import onnx
    from onnx import TensorProto, helper

    from quantbench.calibration import collect
    from quantbench.calibration.collect import collect_histograms
    from quantbench.calibration.exposure import Exposure

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["x", "x"], ["m"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 300])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", 300]) for name in ("r", "m")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    rng = np.random.default_rng(5)
    batches = [{"x": (rng.normal(0, 1, (4, 300)) * (i + 1)).astype(np.float32)} for i in range(6)]
    inputs = [b["x"] for b in batches]
    expected = {"x": inputs, "r": [np.maximum(x, 0) for x in inputs], "m": [x * x for x in inputs]}
    monkeypatch.setenv(_kernels.KERNEL_VARIABLE, "numpy" if path == "numpy" else "auto")
    monkeypatch.setattr(_kernels, "_loaded", [])
    monkeypatch.setattr(_kernels, "WARM_UP_AFTER", 3 * 4 * 300 * 3)  # numba loads after three batches
    monkeypatch.setattr(collect, "OVERLAP_BYTES", overlap_bytes)
    exposure = Exposure(model, ["x", "r", "m"], ["x"], threads=1)
    collection = collect_histograms(exposure, iter(batches), workers=2, nonnegative={"r", "m"})
    assert collection.samples == 24
    if path != "numpy":
        assert _kernels.kernel() is not None  # loaded during the collection
    for name, arrays in expected.items():
        assert_matches_reference(collection.histograms[name], arrays)
