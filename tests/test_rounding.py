"""Adaptive rounding of INT8 weights (quantbench/export/rounding.py), against slow float64 references written
here: image patches by explicit loops, layer outputs by ONNX Runtime, output errors from the samples
themselves, and the best codes by exhaustive search on small rows."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantbench.export import rounding as R
from quantbench.export.qdq import at_least_opset13, build_qdq, plan_qdq, quantize_weight


def patches_by_loops(x: np.ndarray, weight_shape: tuple[int, ...], group: int, strides, pads, dilations):
    """(groups, positions, d) patches of an NCHW input, one position at a time, in float64."""
    n, c, h, w = x.shape
    kh, kw = weight_shape[2:]
    top, left, bottom, right = pads
    padded = np.zeros((n, c, h + top + bottom, w + left + right))
    padded[:, :, top : top + h, left : left + w] = x
    oh = (h + top + bottom - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (w + left + right - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    per_group = c // group
    out = np.zeros((group, n * oh * ow, per_group * kh * kw))
    for g in range(group):
        row = 0
        for b in range(n):
            for i in range(oh):
                for j in range(ow):
                    values = []
                    for ch in range(g * per_group, (g + 1) * per_group):
                        for a in range(kh):
                            for e in range(kw):
                                values.append(
                                    padded[
                                        b,
                                        ch,
                                        i * strides[0] + a * dilations[0],
                                        j * strides[1] + e * dilations[1],
                                    ]
                                )
                    out[g, row] = values
                    row += 1
    return out


@pytest.mark.parametrize(
    ("group", "strides", "pads", "dilations"),
    [(1, [1, 1], [1, 1, 1, 1], [1, 1]), (2, [2, 1], [0, 1, 2, 0], [1, 2]), (4, [2, 2], [1, 0, 1, 1], [1, 1])],
)
def test_input_vectors_are_the_patches_each_output_reads(group, strides, pads, dilations) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 7, 6)).astype(np.float32)
    weight_shape = (8, 4 // group, 3, 2)
    site = R.WeightSite(
        "w",
        0,
        "conv",
        "Conv",
        "x",
        {"group": group, "strides": strides, "pads": pads, "dilations": dilations},
    )
    got = R.input_vectors(x, site, weight_shape)
    np.testing.assert_array_equal(got, patches_by_loops(x, weight_shape, group, strides, pads, dilations))


def conv_model(weight: np.ndarray, group: int, pads: list[int]) -> onnx.ModelProto:
    value = helper.make_tensor_value_info
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=group, pads=pads, name="conv")
    graph = helper.make_graph(
        [node], "g", [value("x", TensorProto.FLOAT, ["N", weight.shape[1] * group, 9, 9])],
        [value("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(weight, "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_weight_rows_times_input_vectors_give_the_convolution() -> None:
    """Rows and patches laid out alike: their products are ONNX Runtime's Conv outputs."""
    import onnxruntime as ort

    rng = np.random.default_rng(2)
    weight = rng.normal(size=(6, 2, 3, 3)).astype(np.float32)
    x = rng.normal(size=(1, 6, 9, 9)).astype(np.float32)
    model = conv_model(weight, 3, [1, 1, 1, 1])
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    site = R.WeightSite("w", 0, "conv", "Conv", "x", {"group": 3, "pads": [1, 1, 1, 1]})
    rows, vectors = R.weight_rows(weight.astype(np.float64), site), R.input_vectors(x, site, weight.shape)
    products = np.matmul(vectors.astype(np.float64), rows.transpose(0, 2, 1))  # (g, positions, rows)
    expected = y[0].reshape(3, 2, 81).transpose(0, 2, 1)
    np.testing.assert_allclose(products, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(R.from_rows(rows, weight, site), weight)


def test_gemm_and_matmul_rows_are_output_channels() -> None:
    w = np.arange(12.0).reshape(3, 4)
    gemm_t = R.WeightSite("w", 0, "g", "Gemm", "x", {"transB": 1})
    assert R.weight_rows(w, gemm_t)[0].tolist() == w.tolist()  # [out, in]
    matmul = R.WeightSite("w", 1, "m", "MatMul", "x", {})
    assert R.weight_rows(w, matmul)[0].tolist() == w.T.tolist()  # [in, out] -> rows of out
    for site in (gemm_t, matmul):
        np.testing.assert_array_equal(R.from_rows(R.weight_rows(w, site), w, site), w)


def output_error_by_samples(rows, codes, scales, vectors) -> np.ndarray:
    """Σ over samples of (x · (w - s q))², per (group, row)."""
    delta = rows - codes * scales[..., None]
    return np.array(
        [
            [np.sum((vectors[g] @ delta[g, r]) ** 2) for r in range(rows.shape[1])]
            for g in range(rows.shape[0])
        ]
    )


def test_output_error_is_the_error_of_the_layer_outputs() -> None:
    rng = np.random.default_rng(3)
    rows, vectors = rng.normal(size=(2, 3, 5)), rng.normal(size=(2, 40, 5))
    scales = np.abs(rows).max(axis=2) / 127
    codes = R.nearest_codes(rows, scales)
    hessian = np.matmul(vectors.transpose(0, 2, 1), vectors)
    np.testing.assert_allclose(
        R.output_error(rows, codes, scales, hessian),
        output_error_by_samples(rows, codes, scales, vectors),
        rtol=1e-9,
    )


def best_codes(row: np.ndarray, scale: float, hessian: np.ndarray) -> float:
    """The least output error over every code within 2 of nearest rounding, exhaustively."""
    nearest = np.clip(np.rint(row / scale), -127, 127)
    best = np.inf
    for offsets in itertools.product(range(-2, 3), repeat=row.size):
        q = np.clip(nearest + np.array(offsets), -127, 127)
        delta = row - q * scale
        best = min(best, float(delta @ hessian @ delta))
    return best


def test_adaptive_codes_are_never_worse_than_nearest_and_near_the_best() -> None:
    """Correlated inputs (where choosing codes together pays): on 30 small random layers the chosen codes'
    error is at most nearest rounding's, and on average far closer to the exhaustive optimum."""
    rng = np.random.default_rng(4)
    gaps_adaptive, gaps_nearest = [], []
    for _ in range(30):
        mix = rng.normal(size=(4, 4))
        vectors = rng.normal(size=(1, 200, 4)) @ mix
        hessian = np.matmul(vectors.transpose(0, 2, 1), vectors)
        rows = rng.normal(size=(1, 2, 4))
        scales = np.abs(rows).max(axis=2) / 127 * 40  # coarse steps, so rounding matters
        codes, chosen, nearest = R.round_rows(rows, scales, hessian)
        assert np.all(np.abs(codes) <= 127) and np.all(codes == np.rint(codes))
        np.testing.assert_allclose(chosen, R.output_error(rows, codes, scales, hessian))
        assert np.all(chosen <= nearest + 1e-12)
        for r in range(2):
            best = best_codes(rows[0, r], scales[0, r], hessian[0])
            gaps_adaptive.append(chosen[0, r] - best)
            gaps_nearest.append(nearest[0, r] - best)
    assert min(gaps_adaptive) >= -1e-9
    assert np.mean(gaps_adaptive) < 0.3 * np.mean(gaps_nearest)


def test_dead_inputs_and_rank_deficient_hessians_give_finite_codes() -> None:
    rng = np.random.default_rng(5)
    vectors = np.zeros((3, 6, 8))
    vectors[:, :, :5] = rng.normal(size=(3, 6, 5))  # 3 inputs never fire; 6 samples for 8 dimensions
    hessian = np.matmul(vectors.transpose(0, 2, 1), vectors)
    rows = rng.normal(size=(3, 2, 8))
    scales = np.abs(rows).max(axis=2) / 127
    codes, chosen, nearest = R.round_rows(rows, scales, hessian)
    assert np.isfinite(codes).all() and np.all(chosen <= nearest + 1e-12)


def two_conv_model(path: Path) -> onnx.ModelProto:
    from tests.conftest import tiny_conv_model

    return at_least_opset13(onnx.load(str(tiny_conv_model(path))))


def test_fit_rounding_keeps_the_scales_and_lowers_each_layer_s_error(tmp_path: Path) -> None:
    """On the two-Conv test model: codes for both convolutions, the Q/DQ model's scales those of nearest
    rounding, and each layer's output error on the fitting samples (computed here from the FP32 inputs)
    no higher than with nearest codes."""
    import onnxruntime as ort

    model = two_conv_model(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(6)
    feeds = [{"input": rng.normal(size=(4, 3, 16, 16)).astype(np.float32)} for _ in range(2)]
    amax = {"input": 3.0, "relu1": 4.0}
    plan = plan_qdq(model, amax)
    rounding = R.fit_rounding(model, plan, feeds)
    assert rounding.images == 8 and not rounding.skipped
    assert sorted(rounding.codes) == [("w1", 0), ("w2", 0)]
    details = rounding.details()
    assert details["method"] == "adaptive" and {n["node"] for n in details["nodes"]} == {
        "Conv:conv1",
        "Conv:output",
    }
    qdq, _ = build_qdq(model, amax, plan, rounding.codes)
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    exposed = onnx.ModelProto.FromString(model.SerializeToString())
    exposed.graph.output.append(helper.make_tensor_value_info("relu1", TensorProto.FLOAT, None))
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    relu1 = np.concatenate([session.run(["relu1"], f)[0] for f in feeds])
    x = np.concatenate([f["input"] for f in feeds])
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for name, data, pads in (("w1", x, [1, 1, 1, 1]), ("w2", relu1, [1, 1, 1, 1])):
        nearest, scales = quantize_weight(weights[name], 0)
        np.testing.assert_array_equal(inits[f"{name}_scale"], scales)
        chosen = inits[f"{name}_int8"]
        assert chosen.dtype == np.int8 and np.abs(chosen.astype(int)).max() <= 127
        site = R.WeightSite(name, 0, name, "Conv", "x", {"pads": pads})
        vectors = R.input_vectors(data, site, weights[name].shape).astype(np.float64)
        rows = R.weight_rows(weights[name].astype(np.float64), site)
        s = scales.astype(np.float64).reshape(rows.shape[:2])
        error = {
            label: output_error_by_samples(
                rows, R.weight_rows(codes.astype(np.float64), site), s, vectors
            ).sum()
            for label, codes in (("nearest", nearest), ("adaptive", chosen))
        }
        assert error["adaptive"] <= error["nearest"] * (1 + 1e-9), name
        assert not np.array_equal(chosen, nearest)  # coarse random weights: some codes move


def test_shared_and_unsupported_weights_keep_nearest_rounding() -> None:
    """A weight read by two Conv nodes, and a ConvTranspose's, are left to nearest rounding, each said so."""
    rng = np.random.default_rng(7)
    value = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="first", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w"], ["b"], name="second", pads=[1, 1, 1, 1]),
        helper.make_node("ConvTranspose", ["b", "t"], ["y"], name="up", strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes, "g", [value("x", TensorProto.FLOAT, ["N", 3, 8, 8])], [value("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(rng.normal(size=(3, 3, 3, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.normal(size=(3, 2, 2, 2)).astype(np.float32), "t")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    plan = plan_qdq(model, {"x": 3.0, "r": 4.0, "b": 5.0})
    sites, skipped = R.weight_sites(model, plan)
    assert sites == []
    assert skipped == {
        "first": "weight read by more than one node",
        "second": "weight read by more than one node",
        "up": "ConvTranspose weights",
    }


def test_a_run_records_its_weight_rounding(tmp_path: Path) -> None:
    """``quantbench.run(weight_rounding="adaptive")``: every INT8 variant of the run takes the adaptive codes
    (one fit for both methods), results.json says so, and the codes written are those the fit chose."""
    import json

    import quantbench
    from tests.conftest import photo_folder, tiny_conv_model

    model = tiny_conv_model(tmp_path / "tiny.onnx")
    images = photo_folder(tmp_path / "images", 24, size=16)
    runs = {}
    for rounding in ("nearest", "adaptive"):
        result = quantbench.run(
            model, images, n=16, eval_n=8, methods=["minmax", "mse"], precisions=["fp32", "int8"],
            bias_correction=False, bias_correction_images=8, weight_rounding=rounding, preset="raw",
            bench_runs=1, bench_seconds=0, out=tmp_path / rounding,
        )  # fmt: skip
        runs[rounding] = (
            Path(result.run_dir),
            json.loads((Path(result.run_dir) / "results.json").read_text()),
        )
    for rounding, (_, results) in runs.items():
        assert results["manifest"]["arguments"]["weight_rounding"] == rounding
        for variant in results["variants"][1:]:
            assert variant["weight_rounding"]["method"] == rounding, variant["name"]
    adaptive = runs["adaptive"][1]["variants"][1]["weight_rounding"]
    assert adaptive["images"] == 8 and len(adaptive["nodes"]) == 2
    codes = {}
    for rounding, (run_dir, _) in runs.items():
        for method in ("minmax", "mse"):
            qdq = onnx.load(str(run_dir / "models" / f"int8-{method}.onnx"))
            codes[rounding, method] = {
                i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer if i.name.endswith("_int8")
            }
    taken = []
    for variant in runs["adaptive"][1]["variants"][1:]:  # judged on the 8 images after the fitted ones
        rounding, method = variant["weight_rounding"], variant["name"].removeprefix("int8-")
        decision = rounding["decision"]
        assert decision["images"] == 8 and decision["held_apart"]
        assert (
            decision["metric"] == runs["adaptive"][1]["verdict"]["metric"] == "mean_iou"
        )  # higher is better
        if rounding["applied"]:
            assert decision["after"] >= decision["before"], variant["name"]
        else:
            assert decision["after"] <= decision["before"], variant["name"]
        same = all(
            np.array_equal(codes["adaptive", method][n], codes["nearest", method][n])
            for n in ("w1_int8", "w2_int8")
        )
        assert same != rounding["applied"]  # nearest codes exactly where the adaptive ones were not kept
        if rounding["applied"]:
            taken.append(method)
    if len(taken) == 2:  # one fit for both: the same codes, whatever the activation ranges
        for name in ("w1_int8", "w2_int8"):
            np.testing.assert_array_equal(codes["adaptive", "mse"][name], codes["adaptive", "minmax"][name])


@pytest.mark.parametrize(
    ("shape", "group", "strides", "pads", "size"),
    [
        ((8, 4, 1, 1), 1, [1, 1], [0, 0, 0, 0], 7),  # pointwise: products from the input as it lies
        ((8, 4, 1, 1), 1, [2, 1], [0, 0, 0, 0], 7),
        ((8, 4, 1, 1), 1, [1, 1], [0, 0, 0, 0], 90),  # beyond MAX_POSITIONS: a strided grid
        ((8, 2, 3, 3), 2, [1, 1], [1, 1, 1, 1], 7),  # patches
    ],
)
def test_input_products_are_the_sums_of_patch_outer_products(shape, group, strides, pads, size) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 4, size, size)).astype(np.float32)
    attributes = {"group": group, "strides": strides, "pads": pads, "dilations": [1, 1]}
    site = R.WeightSite("w", 0, "conv", "Conv", "x", attributes)
    step = 1
    if size == 90:  # the grid input_vectors keeps: every step-th position of each axis
        step = int(np.ceil(np.sqrt(size * size / R.MAX_POSITIONS)))
        assert step > 1
    patches = patches_by_loops(x.astype(np.float64), shape, group, strides, pads, [1, 1])
    if step > 1:
        keep = np.zeros((3, size, size), bool)
        keep[:, ::step, ::step] = True
        patches = patches[:, keep.reshape(-1)]
    want = np.matmul(patches.transpose(0, 2, 1), patches)
    got = R.input_products(x, site, shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
