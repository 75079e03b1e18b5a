"""Activation offsets (quantbench/export/offsets.py): the shifted float model against the model itself, the
INT8 model against a float64 reference of offset-grid quantization written here (convolutions by explicit
window sums), the ONNX Runtime form against the judged model, and the tensors left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantbench.export.int8 import Int8Fitting, build_int8_model
from quantbench.export.judge import CorrectionData
from quantbench.export.offsets import offset_activations, with_zero_points
from tests.graphs import conv64, make_model, run


def conv_chain(seed: int = 0) -> onnx.ModelProto:
    """Conv (3x3, padded) -> Relu -> depthwise Conv (3x3, padded) -> Clip(0, 6) -> Conv (1x1)."""
    rng = np.random.default_rng(seed)
    weights = {
        "wa": rng.normal(0, 0.5, (4, 3, 3, 3)),
        "ba": rng.normal(0, 0.2, 4),
        "wb": rng.normal(0, 0.8, (4, 1, 3, 3)),
        "bb": rng.normal(0, 0.2, 4),
        "wc": rng.normal(0, 0.5, (5, 4, 1, 1)),
        "bc": rng.normal(0, 0.2, 5),
        "lo": np.array(0.0),
        "hi": np.array(6.0),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], "conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["t1"], "relu"),
        helper.make_node("Conv", ["t1", "wb", "bb"], ["b"], "conv_b", group=4, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["b", "lo", "hi"], ["t2"], "clip"),
        helper.make_node("Conv", ["t2", "wc", "bc"], ["y"], "conv_c"),
    ]
    value = helper.make_tensor_value_info
    return make_model(
        nodes, [value("x", TensorProto.FLOAT, ["N", 3, 6, 7])], [value("y", TensorProto.FLOAT, None)], weights
    )


def gemm_chain(seed: int = 0) -> onnx.ModelProto:
    """Gemm (transB) -> Relu -> Gemm (alpha 0.5, beta 2)."""
    rng = np.random.default_rng(seed)
    weights = {
        "wd": rng.normal(0, 0.5, (8, 6)),
        "bd": rng.normal(0, 0.2, 8),
        "we": rng.normal(0, 0.5, (8, 3)),
        "be": rng.normal(0, 0.2, 3),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "wd", "bd"], ["d"], "gemm_d", transB=1),
        helper.make_node("Relu", ["d"], ["t4"], "relu"),
        helper.make_node("Gemm", ["t4", "we", "be"], ["y"], "gemm_e", alpha=0.5, beta=2.0),
    ]
    value = helper.make_tensor_value_info
    return make_model(
        nodes, [value("x", TensorProto.FLOAT, ["N", 6])], [value("y", TensorProto.FLOAT, None)], weights
    )


def amax_of(model: onnx.ModelProto, x: np.ndarray, names: list[str]) -> dict[str, float]:
    """Each tensor's largest |value| on ``x``."""
    values = run(model, x, names)[1:]
    return {n: float(np.abs(v).max()) for n, v in zip(names, values, strict=True)}


# --- float64 reference --------------------------------------------------------------------------


def symmetric(x, amax):
    """TensorRT's grid: int8, zero point 0, scale amax / 127 (saturating at -128, 127)."""
    s = amax / 127.0
    return np.clip(np.rint(x / s), -128, 127) * s


def offset(x, amax):
    """The offset grid of a tensor bounded below by 0: centre amax / 2, step amax / 254."""
    c = amax / 2.0
    s = c / 127.0
    return np.clip(np.rint((x - c) / s), -128, 127) * s + c


def per_channel(w):
    """Nearest per-output-channel int8 weights, dequantized (float64)."""
    flat = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    s = (flat / 127.0).reshape(-1, *([1] * (w.ndim - 1)))
    return np.clip(np.rint(w / s), -127, 127) * s


def weights_of(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}


# --- the tests ----------------------------------------------------------------------------------


def test_the_shifted_float_model_computes_what_the_model_computes() -> None:
    for model, x in (
        (conv_chain(), np.random.default_rng(1).normal(size=(3, 3, 6, 7))),
        (gemm_chain(), np.random.default_rng(1).normal(size=(5, 6))),
    ):
        x = x.astype(np.float32)
        names = [n.output[0] for n in model.graph.node if n.op_type in ("Relu", "Clip")]
        amax = amax_of(model, x, names)
        shifted = offset_activations(model, amax)
        assert [o.tensor for o in shifted.offsets] == names
        for o in shifted.offsets:
            assert o.shift == pytest.approx(amax[o.tensor] / 2) and shifted.amax[o.tensor] == pytest.approx(
                o.shift
            )
        (want,), (got,) = run(model, x), run(shifted.model, x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    padded = [o.padded for o in offset_activations(conv_chain(), {"t1": 2.0, "t2": 6.0}).offsets]
    assert padded == [("conv_b",), ()]
    assert [n.op_type for n in offset_activations(conv_chain(), {"t1": 2.0}).model.graph.node].count(
        "Pad"
    ) == 1


def test_the_int8_model_quantizes_bounded_tensors_on_offset_grids() -> None:
    """Conv chain: input and weights on TensorRT's grids, Relu and Clip outputs on offset grids; the Q/DQ
    model against float64 window sums with those grids."""
    model = conv_chain()
    x = np.random.default_rng(1).normal(size=(2, 3, 6, 7)).astype(np.float32)
    amax = amax_of(model, x, ["x", "t1", "t2"])
    amax["t2"] = min(amax["t2"], 6.0) * 0.8  # a clipped range
    built = build_int8_model(model, amax, fitting=Int8Fitting(offsets=True))
    assert set(built.plan.activations) == {"x", "t1_padded", "t2"}
    (got,) = run(built.tensorrt, x)
    w = weights_of(model)
    a = conv64(symmetric(x.astype(np.float64), amax["x"]), per_channel(w["wa"]), w["ba"], (1, 1, 1, 1))
    t1 = offset(np.maximum(a, 0), amax["t1"])
    b = conv64(t1, per_channel(w["wb"]), w["bb"], (1, 1, 1, 1), group=4)
    t2 = offset(np.clip(b, 0, 6), amax["t2"])
    want = conv64(t2, per_channel(w["wc"]), w["bc"])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert built.details()["activation_offsets"]["tensors"][0]["padded_readers"] == ["conv_b"]


def test_offset_grids_come_closer_to_float_than_tensorrt_grids() -> None:
    model, errors = conv_chain(), []
    x = np.random.default_rng(1).normal(size=(4, 3, 6, 7)).astype(np.float32)
    amax, (exact,) = amax_of(model, x, ["x", "t1", "t2"]), run(model, x)
    for offsets in (True, False):
        (got,) = run(build_int8_model(model, amax, fitting=Int8Fitting(offsets=offsets)).tensorrt, x)
        errors.append(np.linalg.norm(got - exact))
    assert errors[0] < 0.95 * errors[1]


def test_gemm_readers_and_feeders_take_the_shift() -> None:
    model = gemm_chain()
    x = np.random.default_rng(1).normal(size=(16, 6)).astype(np.float32)
    amax = amax_of(model, x, ["x", "t4"])
    (got,) = run(build_int8_model(model, amax, fitting=Int8Fitting(offsets=True)).tensorrt, x)
    w = weights_of(model)
    d = symmetric(x.astype(np.float64), amax["x"]) @ per_channel(w["wd"]).T + w["bd"]
    t4 = offset(np.maximum(d, 0), amax["t4"])
    we = per_channel(w["we"].T).T  # channels along the output axis, 1
    want = 0.5 * t4 @ we + 2.0 * w["be"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_onnxruntime_form_has_zero_points_no_pads_and_the_same_values() -> None:
    model = conv_chain()
    x = np.random.default_rng(1).normal(size=(2, 3, 6, 7)).astype(np.float32)
    amax = amax_of(model, x, ["x", "t1", "t2"])
    built = build_int8_model(model, amax, fitting=Int8Fitting(offsets=True))
    shifted = offset_activations(at_least(model), amax)
    plain, plain_names, plain_amax = with_zero_points(built.tensorrt, built.names, shifted)
    assert "Pad" not in [n.op_type for n in plain.graph.node]
    zero_points = {
        i.name: int(numpy_helper.to_array(i))
        for i in plain.graph.initializer
        if i.name.endswith("_zero_point") and i.dims == []
    }
    assert (
        zero_points[plain_names["t1"].zero_point] == -127
        and zero_points[plain_names["t2"].zero_point] == -127
    )
    assert plain_amax["t1"] == pytest.approx(amax["t1"])
    (want,), (got,) = run(built.tensorrt, x), run(plain, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    session = ort.InferenceSession(built.onnxruntime.SerializeToString(), providers=["CPUExecutionProvider"])
    fused = session.run(None, {"x": x})[0]
    assert np.linalg.norm(fused - want) < 0.02 * np.linalg.norm(want)
    assert "Pad" not in [n.op_type for n in built.onnxruntime.graph.node]


def at_least(model: onnx.ModelProto) -> onnx.ModelProto:
    from quantbench.export.qdq import at_least_opset13

    return at_least_opset13(model)


def test_tensors_that_cannot_take_the_shift_are_left_alone() -> None:
    rng = np.random.default_rng(2)
    value = helper.make_tensor_value_info
    weights = {
        "w": rng.normal(size=(3, 3, 1, 1)),
        "v": rng.normal(size=(3, 3, 1, 1)),
        "b0": rng.normal(size=3),
        "zero": np.array(0.0),
    }
    inputs = [value("x", TensorProto.FLOAT, ["N", 3, 4, 4])]
    cases = {
        "an Add reads it": [
            helper.make_node("Conv", ["x", "w"], ["c"], "conv"),
            helper.make_node("Relu", ["c"], ["r"], "relu"),
            helper.make_node("Conv", ["r", "v"], ["d"], "reader"),
            helper.make_node("Add", ["r", "d"], ["y"], "add"),
        ],
        "the feeder's output has another reader": [
            helper.make_node("Conv", ["x", "w"], ["c"], "conv"),
            helper.make_node("Relu", ["c"], ["r"], "relu"),
            helper.make_node("Conv", ["r", "v"], ["d"], "reader"),
            helper.make_node("Add", ["c", "d"], ["y"], "add"),
        ],
        "its feeder's bias is computed": [
            helper.make_node("Add", ["b0", "b0"], ["b"], "bias"),
            helper.make_node("Conv", ["x", "w", "b"], ["c"], "conv"),
            helper.make_node("Relu", ["c"], ["r"], "relu"),
            helper.make_node("Conv", ["r", "v"], ["y"], "reader"),
        ],
        "its Clip's upper bound is computed": [
            helper.make_node("Add", ["b0", "b0"], ["top"], "top"),
            helper.make_node("Conv", ["x", "w"], ["c"], "conv"),
            helper.make_node("Clip", ["c", "zero", "top"], ["r"], "clip"),
            helper.make_node("Conv", ["r", "v"], ["y"], "reader"),
        ],
        "no node with a bias feeds it": [
            helper.make_node("Add", ["x", "x"], ["c"], "add"),
            helper.make_node("Relu", ["c"], ["r"], "relu"),
            helper.make_node("Conv", ["r", "v"], ["y"], "reader"),
        ],
    }
    for why, nodes in cases.items():
        model = make_model(nodes, inputs, [value("y", TensorProto.FLOAT, None)], weights)
        assert offset_activations(model, {"r": 1.0, "x": 1.0}).offsets == [], why
    chain = conv_chain()
    assert offset_activations(chain, {"t1": 1.0}, exclude=["conv_b"]).offsets == []  # only a float reader
    assert [o.tensor for o in offset_activations(chain, {"t2": 1.0}).offsets] == ["t2"]  # t1 has no range
    with_output = onnx.ModelProto.FromString(chain.SerializeToString())
    with_output.graph.output.append(value("t1", TensorProto.FLOAT, None))
    assert [o.tensor for o in offset_activations(with_output, {"t1": 1.0, "t2": 1.0}).offsets] == ["t2"]
    clipped_below = offset_activations(chain, {"t1": 1.0, "t2": 6.0}).offsets  # ReLU6 at 6: half range 3
    assert clipped_below[1].half_range == pytest.approx(3.0)


def test_bias_correction_moves_the_shared_means_with_the_shift() -> None:
    """Means of FP32 outputs measured on the unshifted model and handed in give the correction that
    measuring them on the shifted model gives."""
    model = conv_chain()
    rng = np.random.default_rng(3)
    batches = [{"x": rng.normal(size=(4, 3, 6, 7)).astype(np.float32)} for _ in range(2)]
    x = np.concatenate([b["x"] for b in batches])
    amax = amax_of(model, x, ["x", "t1", "t2"])
    outputs = run(model, x, ["a", "b", "y"])[1:]
    means = {
        n: v.mean(axis=(0, 2, 3)).astype(np.float64) for n, v in zip(["a", "b", "y"], outputs, strict=True)
    }
    models = []
    for known in (means, {}):
        data = CorrectionData(batches, batches, held_apart=False, fit_means=known)
        built = build_int8_model(model, amax, fitting=Int8Fitting(data, offsets=True))
        assert built.correction is not None and len(built.correction.nodes) == 3
        models.append(built.correction.model)
    one, two = (weights_of(m) for m in models)
    for name in one:
        np.testing.assert_allclose(one[name], two[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_run_records_its_offsets(tmp_path: Path) -> None:
    import json

    import quantbench
    from tests.conftest import photo_folder, tiny_conv_model

    model = tiny_conv_model(tmp_path / "tiny.onnx")
    images = photo_folder(tmp_path / "images", 12, size=20)
    result = quantbench.run(
        model, images, n=8, methods=["minmax"], precisions=["fp32", "int8"], activation_offsets=True,
        bench_runs=2, bench_seconds=0.0, out=tmp_path / "runs",
    )  # fmt: skip
    results = json.loads((result.run_dir / "results.json").read_text())
    assert results["manifest"]["arguments"]["activation_offsets"] is True
    int8 = next(v for v in results["variants"] if v["precision"] == "int8")
    tensors = int8["activation_offsets"]["tensors"]
    assert [t["tensor"] for t in tensors] == ["relu1"] and tensors[0]["padded_readers"]


def test_a_batch_norm_feeder_and_readers_padded_and_not() -> None:
    """Conv -> BatchNormalization -> Relu read by a padded and an unpadded convolution: the float model
    unchanged, the INT8 model against float64 window sums, and ONNX Runtime's form keeping this tensor
    shifted (it is quantized both through a Pad and directly)."""
    rng = np.random.default_rng(4)
    weights = {
        "w": rng.normal(0, 0.5, (4, 3, 1, 1)),
        "scale": rng.uniform(0.5, 1.5, 4),
        "beta": rng.normal(0, 0.3, 4),
        "mean": rng.normal(0, 0.1, 4),
        "var": rng.uniform(0.5, 1.5, 4),
        "wp": rng.normal(0, 0.5, (2, 4, 3, 3)),
        "bp": rng.normal(0, 0.2, 2),
        "wq": rng.normal(0, 0.5, (2, 4, 1, 1)),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], "conv"),
        helper.make_node("BatchNormalization", ["c", "scale", "beta", "mean", "var"], ["n"], "bn"),
        helper.make_node("Relu", ["n"], ["t"], "relu"),
        helper.make_node("Conv", ["t", "wp", "bp"], ["p"], "padded", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["t", "wq"], ["q"], "plain"),
        helper.make_node("Add", ["p", "q"], ["y"], "add"),
    ]
    value = helper.make_tensor_value_info
    model = make_model(
        nodes, [value("x", TensorProto.FLOAT, ["N", 3, 5, 6])], [value("y", TensorProto.FLOAT, None)], weights
    )
    x = rng.normal(size=(2, 3, 5, 6)).astype(np.float32)
    amax = amax_of(model, x, ["x", "t"])
    shifted = offset_activations(model, amax)
    assert [(o.feeder, o.padded) for o in shifted.offsets] == [("bn", ("padded",))]
    assert shifted.shifted_outputs() == {}  # the batch norm's input did not move
    (want,), (got,) = run(model, x), run(shifted.model, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    built = build_int8_model(model, amax, fitting=Int8Fitting(offsets=True))
    w = weights_of(model)
    c = conv64(symmetric(x.astype(np.float64), amax["x"]), per_channel(w["w"]), np.zeros(4))
    gain = w["scale"] / np.sqrt(w["var"] + 1e-5)
    n = (c - w["mean"][None, :, None, None]) * gain[None, :, None, None] + w["beta"][None, :, None, None]
    t = offset(np.maximum(n, 0), amax["t"])
    expected = conv64(t, per_channel(w["wp"]), w["bp"], (1, 1, 1, 1)) + conv64(
        t, per_channel(w["wq"]), np.zeros(2)
    )
    (int8,) = run(built.tensorrt, x)
    np.testing.assert_allclose(int8, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    plain, _, _ = with_zero_points(built.tensorrt, built.names, shifted)
    assert "Pad" in [node.op_type for node in plain.graph.node]
    np.testing.assert_allclose(run(plain, x)[0], int8, rtol=1e-6, atol=1e-6 * np.abs(int8).max())
