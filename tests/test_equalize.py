"""Cross-layer equalization (``--equalize``): the equalized model computes what the given one computes
(against a float64 reference written here), the scales follow their rules (checked on the weights and on
the activations the equalized model really computes), what is not a pair, and a run that uses it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantbench.errors import QuantbenchError
from quantbench.export.equalize import MAX_SCALE, channel_peaks, equalize, find_pairs
from tests.graphs import conv64, make_model, run


def uneven(rng: np.random.Generator, shape: tuple[int, ...], spread: float = 8.0) -> np.ndarray:
    """Weights whose output channels (and input channels) differ in size by up to ``spread`` times."""
    w = rng.normal(0, 0.3, shape)
    w *= np.exp(rng.uniform(0, np.log(spread), shape[0])).reshape(-1, *[1] * (len(shape) - 1))
    if shape[1] > 1:
        w *= np.exp(rng.uniform(0, np.log(spread), shape[1])).reshape(1, -1, *[1] * (len(shape) - 2))
    return w.astype(np.float32)


def chain(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x [n,4,8,8] -> Conv a (3x3, pad 1, bias) -> BatchNormalization -> Clip(0, 6) -> Conv b (depthwise
    3x3, pad 1, bias) -> Relu -> Conv c (1x1) -> Add per channel -> PRelu -> Conv d (1x1, bias) -> y."""
    rng = np.random.default_rng(seed)
    v = {
        "wa": uneven(rng, (6, 4, 3, 3)) / 8, "ba": rng.normal(0, 0.2, 6).astype(np.float32),
        "gamma": rng.uniform(0.5, 2, 6).astype(np.float32), "beta": rng.normal(0, 0.3, 6).astype(np.float32),
        "mean": rng.normal(0, 0.3, 6).astype(np.float32), "var": rng.uniform(0.5, 2, 6).astype(np.float32),
        "lo": np.array(0, np.float32), "hi": np.array(6, np.float32),
        "wb": uneven(rng, (6, 1, 3, 3)), "bb": rng.normal(0, 0.2, 6).astype(np.float32),
        "wc": uneven(rng, (5, 6, 1, 1)), "add": rng.normal(0, 0.3, (5, 1, 1)).astype(np.float32),
        "slope": rng.uniform(0.05, 0.3, (5, 1, 1)).astype(np.float32),
        "wd": uneven(rng, (3, 5, 1, 1)), "bd": rng.normal(0, 0.2, 3).astype(np.float32),
    }  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], "conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["a", "gamma", "beta", "mean", "var"], ["bn"], "bn"),
        helper.make_node("Clip", ["bn", "lo", "hi"], ["r6"], "relu6"),
        helper.make_node("Conv", ["r6", "wb", "bb"], ["b"], "conv_b", pads=[1, 1, 1, 1], group=6),
        helper.make_node("Relu", ["b"], ["rb"], "relu"),
        helper.make_node("Conv", ["rb", "wc"], ["c"], "conv_c"),
        helper.make_node("Add", ["c", "add"], ["ca"], "add"),
        helper.make_node("PRelu", ["ca", "slope"], ["p"], "prelu"),
        helper.make_node("Conv", ["p", "wd", "bd"], ["y"], "conv_d"),
    ]
    value = helper.make_tensor_value_info
    x, y = value("x", TensorProto.FLOAT, ["n", 4, 8, 8]), value("y", TensorProto.FLOAT, ["n", 3, 8, 8])
    return make_model(nodes, [x], [y], v), v


def reference(x: np.ndarray, v: dict[str, np.ndarray]) -> np.ndarray:
    """:func:`chain`'s output in float64."""
    a = conv64(x, v["wa"], v["ba"], pads=(1, 1, 1, 1))
    shape = (1, -1, 1, 1)
    bn = (a - v["mean"].reshape(shape)) / np.sqrt(v["var"].reshape(shape) + 1e-5)
    bn = v["gamma"].reshape(shape) * bn + v["beta"].reshape(shape)
    rb = np.maximum(conv64(np.clip(bn, 0, 6), v["wb"], v["bb"], pads=(1, 1, 1, 1), group=6), 0)
    ca = conv64(rb, v["wc"], np.zeros(5)) + v["add"][None]
    p = np.where(ca >= 0, ca, v["slope"][None] * ca)
    return conv64(p, v["wd"], v["bd"])


def inputs(count: int = 6, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).normal(0, 0.3, (count, 4, 8, 8))).astype(np.float32)


def test_the_equalized_model_computes_what_the_model_computes():
    model, values = chain()
    x = inputs()
    truth = reference(x, values)
    plain = run(model, x)[0]
    assert np.abs(plain - truth).max() < 1e-4 * np.abs(truth).max()  # the reference is the model
    for activations in (None, channel_peaks(model, ["r6", "rb", "p"], [{"x": x}])):
        equalized, found = equalize(model, activations)
        onnx.checker.check_model(equalized, full_check=True)
        assert [(p.first, p.second, p.between) for p in found.pairs] == [
            ("conv_a", "conv_b", ["bn", "relu6"]),
            ("conv_b", "conv_c", ["relu"]),
            ("conv_c", "conv_d", ["add", "prelu"]),
        ]
        assert max(p.scales[1] / p.scales[0] for p in found.pairs) > 1.5  # the weights did change
        out = run(equalized, x)[0]
        assert np.abs(out - truth).max() < 1e-4 * np.abs(truth).max()
        ops = [node.op_type for node in equalized.graph.node]
        assert "Clip" not in ops and ops.count("Min") == 1  # Clip(0, 6) -> Relu(Min(x, 6 / s)), per channel
        bound = next(node for node in equalized.graph.node if node.op_type == "Min").input[1]
        bounds = {i.name: numpy_helper.to_array(i) for i in equalized.graph.initializer}[bound]
        assert bounds.shape == (6, 1, 1) and np.ptp(bounds) > 0


def test_without_activations_each_channel_ends_as_wide_in_both_convs():
    model, values = chain()
    equalized, found = equalize(model)
    weights = {i.name: numpy_helper.to_array(i) for i in equalized.graph.initializer}
    by_node = {node.name: node for node in equalized.graph.node}
    # conv_c -> conv_d ends the chain: conv_d's input channels are scaled by this pair alone, and conv_c's
    # output channels by it alone (conv_c's input channels belong to the pair before)
    wc, wd = weights[by_node["conv_c"].input[1]], weights[by_node["conv_d"].input[1]]
    rows, columns = np.abs(wc).reshape(5, -1).max(axis=1), np.abs(wd).max(axis=(0, 2, 3))
    np.testing.assert_allclose(rows, columns, rtol=1e-4)
    assert found.rounds > 1
    assert all(1 / MAX_SCALE <= s <= MAX_SCALE for p in found.pairs for s in p.scales)
    before = np.abs(values["wd"]).max(axis=(0, 2, 3))
    assert np.ptp(columns) / columns.max() < np.ptp(before) / before.max()  # evener than given


def test_with_activations_a_depthwise_input_is_evened_out_and_a_pointwise_one_balanced():
    model, _ = chain()
    x = inputs(8)
    peaks = channel_peaks(model, ["r6", "rb"], [{"x": x[:4]}, {"x": x[4:]}])
    equalized, found = equalize(model, peaks)
    r6, rb = run(equalized, x, ["r6", "rb"])[1:]
    # r6 feeds the depthwise conv_b: every channel as wide as the others (as measured in the equalized model)
    widths, live = np.abs(r6).max(axis=(0, 2, 3)), peaks["r6"] > 0
    assert np.ptp(peaks["r6"][live]) / peaks["r6"].max() > 0.5 and live.sum() == 5  # one channel never fires
    np.testing.assert_allclose(widths[live], widths[live].mean(), rtol=1e-3)
    assert found.pairs[0].activation_evenness[1] == pytest.approx(5 / 6, rel=1e-3)
    # rb feeds the pointwise conv_c: activation width in proportion to conv_c's input-channel width
    wc = {i.name: numpy_helper.to_array(i) for i in equalized.graph.initializer}[
        next(n for n in equalized.graph.node if n.name == "conv_c").input[1]
    ]
    live = peaks["rb"] > 0
    ratio = np.abs(rb).max(axis=(0, 2, 3))[live] / np.abs(wc).max(axis=(0, 2, 3))[live]
    np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-3)


def small(nodes: list[onnx.NodeProto], extra: dict[str, np.ndarray], outputs: list[str]) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    values = {"w1": uneven(rng, (4, 3, 1, 1)), "w2": uneven(rng, (2, 4, 1, 1)), **extra}
    value = helper.make_tensor_value_info
    ends = [value(name, TensorProto.FLOAT, None) for name in outputs]
    return make_model(nodes, [value("x", TensorProto.FLOAT, [1, 3, 4, 4])], ends, values)


def test_what_is_not_a_pair():
    first = helper.make_node("Conv", ["x", "w1"], ["a"], "c1")
    second = helper.make_node("Conv", ["s"], ["y"], "c2")
    second.input.append("w2")
    silu = [helper.make_node("Sigmoid", ["a"], ["g"]), helper.make_node("Mul", ["a", "g"], ["s"])]
    assert find_pairs(small([first, *silu, second], {}, ["y"])) == []  # read twice (SiLU)
    relu = helper.make_node("Relu", ["a"], ["s"])
    assert len(find_pairs(small([first, relu, second], {}, ["y"]))) == 1
    assert find_pairs(small([first, relu, second], {}, ["y", "a"])) == []  # a graph output between
    low = {"lo": np.array(-1, np.float32), "hi": np.array(1, np.float32)}
    clip = helper.make_node("Clip", ["a", "lo", "hi"], ["s"])
    assert find_pairs(small([first, clip, second], low, ["y"])) == []  # a lower bound other than 0
    mixed = {"m": np.ones((1, 4, 2, 1), np.float32)}
    mul = helper.make_node("Mul", ["a", "m"], ["s"])
    assert find_pairs(small([first, mul, second], mixed, ["y"])) == []  # not one value per channel
    fed = small([first, relu, second], {}, ["y"])
    fed.graph.input.append(helper.make_tensor_value_info("w1", TensorProto.FLOAT, [4, 3, 1, 1]))
    assert find_pairs(fed) == []  # weights a feed may override


def saved(tmp_path: Path, gain: float = 1.0) -> tuple[Path, Path]:
    """:func:`chain` saved, and a folder of 20 samples of :func:`inputs` times ``gain``."""
    model, _ = chain()
    path = tmp_path / "chain.onnx"
    onnx.save(model, path)
    samples = tmp_path / "calib"
    samples.mkdir()
    for i, sample in enumerate(inputs(20, seed=3) * np.float32(gain)):
        np.save(samples / f"{i:03d}.npy", sample)
    return path, samples


def test_a_run_calibrates_and_builds_int8_from_the_equalized_model(tmp_path):
    import quantbench

    path, samples = saved(tmp_path)
    result = quantbench.run(
        path, samples, n=20, methods=["minmax"], precisions=["fp32", "int8"], equalize=True,
        bias_correction=False, bias_correction_images=8, bench_runs=1, out=tmp_path / "out",
    )  # fmt: skip
    results = json.loads((result.run_dir / "results.json").read_text())
    assert results["manifest"]["arguments"]["equalize"] is True
    record = results["equalization"]
    assert len(record["pairs"]) == 3 and record["model"]["file"] == "models/equalized.onnx"
    assert all(len(pair["activation_evenness"]) == 2 for pair in record["pairs"])
    assert record["images"] == 8 and record["seconds"] > 0
    assert any(note.startswith("cross-layer equalization: 3 pairs") for note in results["notes"])
    assert result.variants[0].model == path  # FP32 stays the given model
    int8 = onnx.load(result.run_dir / "models" / "int8-minmax.onnx")
    assert "Min" in [node.op_type for node in int8.graph.node]
    equalized = onnx.load(result.run_dir / "models" / "equalized.onnx")
    peak = np.abs(run(equalized, inputs(20, seed=3), ["r6"])[1]).max()
    assert results["ranges"]["minmax"]["amax"]["r6"] == pytest.approx(float(peak), rel=1e-5)


def test_equalize_with_a_range_file_is_refused(tmp_path):
    import quantbench

    path, samples = saved(tmp_path)
    ranges = tmp_path / "ranges.txt"
    ranges.write_text("x:4.0\nr6:6.0\n")
    with pytest.raises(QuantbenchError, match="--equalize changes the tensors a --ranges file describes"):
        quantbench.run(path, samples, ranges=ranges, equalize=True, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_onnxruntime_flavour_runs_the_per_channel_bound_on_the_codes():
    """Q(min(y, b)) = min(Q(y), Q(b)): the CPU flavour quantizes conv_a's output (the batch normalization
    folded into it) and takes the Min and the Relu on its codes, storing the codes the Q/DQ model stores."""
    from quantbench.export.onnxruntime_flavour import to_onnxruntime_flavour
    from quantbench.export.qdq import build_qdq, plan_qdq
    from quantbench.model import expose_tensors

    model, _ = chain()
    x = inputs(8)
    equalized, _ = equalize(model, channel_peaks(model, ["r6", "rb", "p"], [{"x": x}]))
    big = x * 8  # drives channels into their bound 6 / s_c
    seen = run(equalized, big, ["x", "r6", "rb", "p"])[1:]
    amax = {
        name: float(np.abs(value).max()) for name, value in zip(["x", "r6", "rb", "p"], seen, strict=True)
    }
    trt, names = build_qdq(equalized, amax, plan_qdq(equalized, amax))
    cpu = to_onnxruntime_flavour(trt, names)
    ops = {node.output[0]: node for node in cpu.graph.node}
    minimum = ops[ops[names["r6"].quantized].input[0]]  # the Relu's integer Clip reads the integer Min
    assert minimum.op_type == "Min" and ops[minimum.input[0]].op_type == "QuantizeLinear"
    bound = {i.name: numpy_helper.to_array(i) for i in cpu.graph.initializer}[minimum.input[1]]
    assert bound.dtype == np.uint8 and bound.shape == (6, 1, 1) and np.ptp(bound) > 0
    (int8,) = run(expose_tensors(trt, [names["r6"].quantized]), big)
    (uint8,) = run(expose_tensors(cpu, [names["r6"].quantized]), big)
    diff = int8.astype(np.int32) - (uint8.astype(np.int32) - 128)
    assert np.mean(diff == 0) >= 0.999 and np.abs(diff).max() <= 1
    at_bound = uint8 == bound[None]
    assert at_bound.mean() > 0.05 and (bound < 255).sum() >= 2  # the bounds were exercised


def test_fast_flavour_takes_the_per_channel_bound_on_the_codes_too():
    """The fast flavour quantizes a convolution's output behind its activation, and a Min with a bound per
    channel then a Relu is an activation too: no new rounding of conv_a's own output (its range is the
    batch normalization's, far wider than the Relu's), the Min runs on r6's codes, and r6 in the CPU model
    is the Q/DQ model's r6 within one of its steps."""
    from quantbench.export.onnxruntime_fast import make_fast
    from quantbench.export.onnxruntime_flavour import to_onnxruntime_flavour
    from quantbench.export.qdq import build_qdq, plan_qdq
    from quantbench.model import expose_tensors

    model, _ = chain()
    x = inputs(8)
    equalized, _ = equalize(model, channel_peaks(model, ["r6", "rb", "p"], [{"x": x}]))
    big = x * 8
    names_all = [node.output[0] for node in equalized.graph.node]
    seen = dict(zip(names_all, run(equalized, big, names_all)[1:], strict=True))
    amax = {name: float(np.abs(value).max()) for name, value in [("x", big), *seen.items()]}
    minimum = next(node for node in equalized.graph.node if node.op_type == "Min")
    trt, names = build_qdq(equalized, amax, plan_qdq(equalized, amax))
    fast = make_fast(trt, names, amax)
    assert minimum.input[0] not in {change.tensor for change in fast.changes}
    cpu = to_onnxruntime_flavour(fast.model, fast.names)
    ops = {node.output[0]: node for node in cpu.graph.node}
    integer_min = next(node for node in cpu.graph.node if node.op_type == "Min")
    assert ops[integer_min.input[0]].op_type == "QuantizeLinear"
    (judged,) = run(expose_tensors(trt, [names["r6"].dequantized]), big)
    (timed,) = run(expose_tensors(cpu, [fast.names["r6"].dequantized]), big)
    assert np.abs(timed - judged).max() <= amax["r6"] / 127 * 1.001
    assert (seen["r6"] >= min_bound(equalized)[None] * 0.999).mean() > 0.05  # the bounds were exercised


def test_a_bound_beyond_every_code_leaves_no_min_to_run():
    """Where every channel's bound lies at or beyond the top of the activation's grid, min(Q(y), Q(b)) is
    Q(y): the CPU flavour runs no Min, and stores the codes the Q/DQ model stores."""
    from quantbench.export.onnxruntime_flavour import to_onnxruntime_flavour
    from quantbench.export.qdq import build_qdq, plan_qdq
    from quantbench.model import expose_tensors

    model, _ = chain()
    x = inputs(8)
    equalized, _ = equalize(model, channel_peaks(model, ["r6", "rb", "p"], [{"x": x}]))
    seen = run(equalized, x, ["x", "r6", "rb", "p"])[1:]
    amax = {
        name: float(np.abs(value).max()) for name, value in zip(["x", "r6", "rb", "p"], seen, strict=True)
    }
    assert amax["r6"] < min_bound(equalized).min()  # no channel reaches its bound on these inputs
    trt, names = build_qdq(equalized, amax, plan_qdq(equalized, amax))
    cpu = to_onnxruntime_flavour(trt, names)
    assert "Min" not in [node.op_type for node in cpu.graph.node]
    (int8,) = run(expose_tensors(trt, [names["r6"].quantized]), x)
    (uint8,) = run(expose_tensors(cpu, [names["r6"].quantized]), x)
    diff = int8.astype(np.int32) - (uint8.astype(np.int32) - 128)
    assert np.mean(diff == 0) >= 0.999 and np.abs(diff).max() <= 1


def min_bound(model: onnx.ModelProto) -> np.ndarray:
    """The constant bound of the model's (one) Min."""
    name = next(node for node in model.graph.node if node.op_type == "Min").input[1]
    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def test_activation_offsets_shift_the_per_channel_bound_too(tmp_path):
    """A ReLU6 made Relu(Min(y, b)) by equalization is still shifted by its offset: the feeder's bias, the
    Min's bound and the Relu's floor all move by -c, the float model's outputs do not; the CPU flavour
    (offsets given back as zero points) stores the Q/DQ model's codes."""
    import quantbench
    from quantbench.export.offsets import offset_activations

    model, _ = chain()
    x = inputs(8)
    equalized, _ = equalize(model, channel_peaks(model, ["r6", "rb", "p"], [{"x": x}]))
    seen = run(equalized, x, ["r6", "rb", "p"])[1:]
    amax = {name: float(np.abs(value).max()) for name, value in zip(["r6", "rb", "p"], seen, strict=True)}
    shifted = offset_activations(equalized, amax)
    offset = next(o for o in shifted.offsets if o.tensor == "r6")
    bounds = [min_bound(m) for m in (equalized, shifted.model)]
    np.testing.assert_allclose(bounds[1], bounds[0] - offset.shift, rtol=1e-6)
    truth = run(equalized, x)[0]
    assert np.abs(run(shifted.model, x)[0] - truth).max() < 1e-4 * np.abs(truth).max()

    path, samples = saved(tmp_path, gain=8.0)  # channels of r6 reach their bounds 6 / s_c
    result = quantbench.run(
        path, samples, n=20, methods=["minmax"], precisions=["fp32", "int8"], equalize=True,
        activation_offsets=True, bias_correction=False, bias_correction_images=8, bench_runs=1,
        out=tmp_path / "out",
    )  # fmt: skip
    variant = json.loads((result.run_dir / "results.json").read_text())["variants"][1]
    assert "r6" in [t["tensor"] for t in variant["activation_offsets"]["tensors"]]
    judged, timed = (onnx.load(result.run_dir / variant[key]) for key in ("model", "cpu_model"))
    feed = inputs(20, seed=3) * np.float32(8)
    equalized = onnx.load(result.run_dir / "models" / "equalized.onnx")
    assert (run(equalized, feed, ["r6"])[1] >= min_bound(equalized)[None] * 0.999).mean() > 0.05  # they clip
    a, b = run(judged, feed)[0], run(timed, feed)[0]
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.02
