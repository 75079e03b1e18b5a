"""The range search (``--range-search``): regions of a graph, the chosen amax against a float64 reference
of the error at the next quantized tensors, batch-size invariance, and a run that records and writes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantbench.export.qdq import plan_qdq
from quantbench.export.range_search import MIN_GAIN, candidates, regions, search_ranges
from tests.graphs import make_model


def chain_model(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x -> Conv 1x1 (a) -> Relu -> t; t -> Conv 1x1 (b) -> u -> Sigmoid -> g and t -> Conv 1x1 (c) -> v ->
    Sigmoid -> h; y = g + h (graph output). The Sigmoids saturate: t's large values matter little there."""
    rng = np.random.default_rng(seed)
    weights = {
        "wa": rng.normal(0, 0.5, (4, 3, 1, 1)).astype(np.float32),
        "wb": rng.normal(0, 0.5, (5, 4, 1, 1)).astype(np.float32),
        "wc": rng.normal(0, 0.5, (5, 4, 1, 1)).astype(np.float32),
        "ba": rng.normal(0, 0.1, 4).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], "conv_a"),
        helper.make_node("Relu", ["a"], ["t"], "relu"),
        helper.make_node("Conv", ["t", "wb"], ["u"], "conv_b"),
        helper.make_node("Sigmoid", ["u"], ["g"], "sigmoid_b"),
        helper.make_node("Conv", ["t", "wc"], ["v"], "conv_c"),
        helper.make_node("Sigmoid", ["v"], ["h"], "sigmoid_c"),
        helper.make_node("Add", ["g", "h"], ["y"], "add"),
    ]
    value = helper.make_tensor_value_info
    x, y = value("x", TensorProto.FLOAT, ["n", 3, 6, 6]), value("y", TensorProto.FLOAT, ["n", 5, 6, 6])
    return make_model(nodes, [x], [y], weights), weights


def heavy_tailed(count: int, seed: int = 1) -> np.ndarray:
    """Inputs with a few large values: the Relu output's largest |x| far above most of it."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (count, 3, 6, 6)).astype(np.float32)
    spots = rng.random(x.shape) < 0.01
    x[spots] *= 25
    return x


def conv1x1(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    out = np.einsum("oc,nchw->nohw", w[:, :, 0, 0].astype(np.float64), x.astype(np.float64))
    return out if b is None else out + b.astype(np.float64)[None, :, None, None]


def fake(x: np.ndarray, amax: float) -> np.ndarray:
    scale = np.float32(amax / 127.0)
    return (np.clip(np.rint(x / scale), -128, 127) * scale).astype(np.float32)


def reference_choice(x: np.ndarray, weights: dict[str, np.ndarray], calibrated: float, peak: float) -> float:
    """The amax for t a slow float64 search picks: least error energy of y over y's energy, only t
    rounded; the calibrated amax unless another leaves at most 1 - MIN_GAIN of its error."""
    t = np.maximum(conv1x1(x, weights["wa"], weights["ba"]), 0).astype(np.float32)

    def y_of(t_used: np.ndarray) -> np.ndarray:
        u, v = conv1x1(t_used, weights["wb"]), conv1x1(t_used, weights["wc"])
        return 1 / (1 + np.exp(-u)) + 1 / (1 + np.exp(-v))

    reference = y_of(t)
    tried = candidates(calibrated, peak)
    errors = [np.sum((y_of(fake(t, a)) - reference) ** 2) / np.sum(reference**2) for a in tried]
    own = errors[tried.index(calibrated)]
    best = int(np.argmin(errors))
    return tried[best] if errors[best] <= (1 - MIN_GAIN) * own else calibrated


def saved_chain(tmp_path: Path, folder: str, count: int, seed: int) -> tuple[Path, Path]:
    """:func:`chain_model` saved under ``tmp_path``, and a folder of ``count`` heavy-tailed ``.npy``
    samples."""
    model, _ = chain_model()
    model_path = tmp_path / "chain.onnx"
    onnx.save(model, model_path)
    samples = tmp_path / folder
    samples.mkdir()
    for i, sample in enumerate(heavy_tailed(count, seed=seed)):
        np.save(samples / f"{i:03d}.npy", sample)
    return model_path, samples


def test_regions_run_from_a_tensor_to_the_next_quantized_tensors_and_outputs():
    model, _ = chain_model()
    found = {r.tensor: r for r in regions(model.graph, ["x", "t"])}
    names = [n.name for n in model.graph.node]
    assert [names[i] for i in found["x"].nodes] == ["conv_a", "relu"]
    assert found["x"].ends == ["t"] and found["x"].fed == ["x"]
    assert [names[i] for i in found["t"].nodes] == ["conv_b", "sigmoid_b", "conv_c", "sigmoid_c", "add"]
    assert found["t"].ends == ["y"] and found["t"].fed == ["t"]
    # with u quantized too, t's region stops at u and goes on to y through Conv c; u's region reads h
    # from outside
    found = {r.tensor: r for r in regions(model.graph, ["x", "t", "u"])}
    assert sorted(found["t"].ends) == ["u", "y"]
    assert [names[i] for i in found["u"].nodes] == ["sigmoid_b", "add"]
    assert found["u"].fed == ["u", "h"] and found["u"].ends == ["y"]


def test_the_search_picks_the_float64_references_amax_and_moves_a_heavy_tailed_range():
    model, weights = chain_model()
    x = heavy_tailed(16)
    t = np.maximum(conv1x1(x, weights["wa"], weights["ba"]), 0)
    peak = float(np.abs(t).max())
    amax = {"x": float(np.abs(x).max()), "t": peak}
    plan = plan_qdq(model, amax, [])
    assert set(plan.activations) == {"x", "t"}
    found = search_ranges(
        model, {"set": amax}, plan, [{"x": x[:8]}, {"x": x[8:]}], {"t": peak, "x": amax["x"]}
    )["set"]
    expected = reference_choice(x, weights, peak, peak)
    assert found.amax["t"] == pytest.approx(expected, rel=1e-12)
    assert expected < peak  # the largest |x| is not the best range here
    record = next(r for r in found.tensors if r["tensor"] == "t")
    assert record["calibrated"] == peak and record["searched"] == found.amax["t"]
    assert record["error_ratio"] <= 1 - MIN_GAIN
    assert found.samples == 16
    assert found.details()["changed"][0]["tensor"] in ("x", "t")


def test_one_search_for_several_sets_gives_each_what_its_own_search_gives():
    model, weights = chain_model()
    x = heavy_tailed(16)
    t = np.maximum(conv1x1(x, weights["wa"], weights["ba"]), 0)
    peak = float(np.abs(t).max())
    tables = {"a": {"x": 3.0, "t": peak}, "b": {"x": 5.0, "t": peak / 3}, "c": {"x": 4.0, "t": 0.9 * peak}}
    peaks = {"t": peak, "x": float(np.abs(x).max())}
    plan = plan_qdq(model, tables["a"], [])
    together = search_ranges(model, tables, plan, [{"x": x}], peaks)
    for label, table in tables.items():
        alone = search_ranges(model, {label: table}, plan, [{"x": x}], peaks)[label]
        assert together[label].amax == alone.amax
        assert together[label].tensors == alone.tensors
        assert together[label].sets == 3 and alone.sets == 1
        assert together[label].amax["t"] == pytest.approx(
            reference_choice(x, weights, table["t"], peak), rel=1e-12
        )


def test_the_search_does_not_depend_on_how_the_samples_are_batched():
    model, _ = chain_model(3)
    x = heavy_tailed(16, seed=4)
    amax = {"x": float(np.abs(x).max()), "t": 5.0}
    plan = plan_qdq(model, amax, [])
    one = search_ranges(model, {"set": amax}, plan, [{"x": x}], {})["set"]
    many = search_ranges(model, {"set": amax}, plan, [{"x": x[:3]}, {"x": x[3:10]}, {"x": x[10:]}], {})["set"]
    assert one.amax == many.amax
    for a, b in zip(one.tensors, many.tensors, strict=True):
        assert a["error_ratio"] == pytest.approx(b["error_ratio"], rel=1e-6)


def test_a_calibrated_range_that_is_already_best_stays():
    model, weights = chain_model(5)
    x = np.random.default_rng(6).normal(0, 1, (16, 3, 6, 6)).astype(np.float32)
    t = np.maximum(conv1x1(x, weights["wa"], weights["ba"]), 0)
    peak = float(np.abs(t).max())
    best = reference_choice(x, weights, peak, peak)
    amax = {"x": float(np.abs(x).max()), "t": best}
    found = search_ranges(model, {"set": amax}, plan_qdq(model, amax, []), [{"x": x}], {"t": peak})["set"]
    assert found.amax["t"] == best


def test_a_run_with_range_search_writes_the_searched_ranges_into_the_model_and_results(tmp_path):
    import quantbench
    from quantbench.ranges import read_ranges

    model_path, images = saved_chain(tmp_path, "calib", 24, seed=7)
    result = quantbench.run(
        model_path, images, n=24, methods=["minmax"], precisions=["fp32", "int8"], range_search=True,
        bias_correction=False, bias_correction_images=16, bench_runs=1, out=tmp_path / "out",
    )  # fmt: skip
    results = json.loads((result.run_dir / "results.json").read_text())
    assert results["manifest"]["arguments"]["range_search"] is True
    search = results["ranges"]["minmax"]["search"]
    assert search["samples"] == 16 and search["searched"] >= 1
    searched = results["ranges"]["minmax"]["amax"]
    assert read_ranges(result.run_dir / "ranges" / "minmax.json").amax == pytest.approx(searched)
    written = onnx.load(result.run_dir / "models" / "int8-minmax.onnx")
    inits = {i.name: numpy_helper.to_array(i) for i in written.graph.initializer}
    for node in written.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in searched:
            assert float(inits[node.input[1]]) * 127 == pytest.approx(searched[node.input[0]], rel=1e-6)
    for change in search["changed"]:
        assert searched[change["tensor"]] == change["searched"] != change["calibrated"]


def test_large_pages_are_searched_on_fewer_samples():
    from quantbench.export.range_search import SAMPLES, sample_count

    def feeds(shape: tuple[int, ...], batches: int = 2) -> list[dict[str, np.ndarray]]:
        return [{"x": np.zeros((16, *shape), np.float32)} for _ in range(batches)]

    assert sample_count(feeds((3, 224, 224))) == SAMPLES
    assert sample_count(feeds((3, 320, 320))) == 16
    assert sample_count(feeds((3, 736, 736))) == 3
    assert sample_count(feeds((3, 2048, 2048))) == 2
    assert sample_count([]) == 0


def test_range_search_without_images_to_fit_on_says_so(tmp_path):
    import quantbench

    model_path, held_out = saved_chain(tmp_path, "held_out", 4, seed=8)
    ranges = tmp_path / "ranges.txt"
    ranges.write_text("x:4.0\nt:6.0\n")
    result = quantbench.run(
        model_path, None, eval_images=held_out, ranges=ranges, precisions=["fp32", "int8"], range_search=True,
        bias_correction=False, bench_runs=1, out=tmp_path / "out",
    )  # fmt: skip
    notes = json.loads((result.run_dir / "results.json").read_text())["notes"]
    assert "range search skipped: --ranges without --images gives no images to fit on" in notes
    assert "search" not in json.loads((result.run_dir / "results.json").read_text())["ranges"]["ranges"]
