"""Q/DQ placement, the TensorRT-flavour graph, its numerics, and ONNX Runtime's flavour of it.

Numerics are checked against a float64 numpy reference that fake-quantizes like TensorRT: activations
``clip(round_half_even(x / s), -128, 127) * s`` with ``s = float32(amax / 127)``; weights per output
channel ``clip(round(w / s_c), -127, 127) * s_c`` with ``s_c = float32(max |w_c| / 127)``.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper

from quantbench.errors import QuantbenchError
from quantbench.export.onnxruntime_flavour import to_onnxruntime_flavour
from quantbench.export.qdq import build_qdq, match_excluded, plan_qdq, quantize_weight
from quantbench.model import expose_tensors, float_activations

F32 = TensorProto.FLOAT


# --- graphs ----------------------------------------------------------------------------------------------


def make_model(nodes, inputs, y_shape, inits, opset=13) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    """A checked model with output ``y``; ``inputs`` maps name -> shape."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name, F32, shape) for name, shape in inputs.items()],
        [helper.make_tensor_value_info("y", F32, y_shape)],
        [numpy_helper.from_array(value, name) for name, value in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def weights(seed: int, **shapes: tuple[tuple[int, ...], float]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0, std, shape).astype(np.float32) for name, (shape, std) in shapes.items()}


def conv_act_conv(act: str = "Relu", named: bool = False, opset: int = 13):  # type: ignore[no-untyped-def]
    """x -> Conv(w1, b1) -> y1 -> Relu | Clip(0, 6) -> a1 -> Conv(w2, b2) -> y."""
    w = weights(1, w1=((8, 3, 3, 3), 0.5), b1=((8,), 0.5), w2=((4, 8, 3, 3), 0.3), b2=((4,), 0.5))
    bounds = {"lo": np.float32(0.0), "hi": np.float32(6.0)} if act == "Clip" else {}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["y1"], "conv1" if named else "", pads=[1] * 4),
        helper.make_node(act, ["y1", *bounds], ["a1"], "act1" if named else ""),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["y"], "conv2" if named else "", pads=[1] * 4),
    ]
    return make_model(nodes, {"x": ["N", 3, 16, 16]}, ["N", 4, 16, 16], {**w, **bounds}, opset), w


def residual():  # type: ignore[no-untyped-def]
    """x -> Conv A -> Relu -> ra -> Conv B -> yb -> Add(yb, x) -> Relu -> y."""
    w = weights(2, wa=((4, 4, 3, 3), 0.4), ba=((4,), 0.3), wb=((4, 4, 3, 3), 0.3), bb=((4,), 0.3))
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["ya"], pads=[1] * 4),
        helper.make_node("Relu", ["ya"], ["ra"]),
        helper.make_node("Conv", ["ra", "wb", "bb"], ["yb"], pads=[1] * 4),
        helper.make_node("Add", ["yb", "x"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    return make_model(nodes, {"x": ["N", 4, 12, 12]}, ["N", 4, 12, 12], w), w


def gemm():  # type: ignore[no-untyped-def]
    """x -> Gemm(w1 [12, 16], transB=1) -> Relu -> r -> Gemm(w2 [12, 6], transB=0) -> y."""
    w = weights(3, w1=((12, 16), 0.4), b1=((12,), 0.3), w2=((12, 6), 0.4), b2=((6,), 0.3))
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=0),
    ]
    return make_model(nodes, {"x": ["N", 16]}, ["N", 6], w), w


def matmul():  # type: ignore[no-untyped-def]
    """x [N, 3, 8] @ w [8, 5] -> m; m @ u [N, 5, 4] -> y (two activations)."""
    w = weights(4, w=((8, 5), 0.5))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("MatMul", ["m", "u"], ["y"])]
    return make_model(nodes, {"x": ["N", 3, 8], "u": ["N", 5, 4]}, ["N", 3, 4], w), w


# --- running and the float64 reference -------------------------------------------------------------------


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimize: bool = True) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def inputs(model: onnx.ModelProto, seed: int, std: float = 1.5, batch: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = lambda v: [d.dim_value or batch for d in v.type.tensor_type.shape.dim]  # noqa: E731
    return {v.name: rng.normal(0, std, shape(v)).astype(np.float32) for v in model.graph.input}


def ranges(model: onnx.ModelProto) -> dict[str, float]:
    """amax of every float activation over one fixed calibration batch of the FP32 model."""
    names = float_activations(model)
    values = run(expose_tensors(model, names), inputs(model, seed=10))
    return {name: float(np.abs(v).max()) for name, v in zip(names, values)}


def act_scale(amax: float) -> float:
    return float(np.float32(amax / 127.0))


def weight_scales(w: np.ndarray, axis: int) -> np.ndarray:
    """float64 max |w| / 127 per channel along ``axis`` (1.0 for an all-zero channel)."""
    peaks = np.abs(np.moveaxis(w.astype(np.float64), axis, 0)).reshape(w.shape[axis], -1).max(axis=1)
    return np.where(peaks > 0, peaks / 127.0, 1.0)


def weight_codes(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int codes, float32-representable scales) the reference expects for a weight."""
    scales = weight_scales(w, axis).astype(np.float32).astype(np.float64)
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.clip(np.rint(w.astype(np.float64) / scales.reshape(shape)), -127, 127), scales.reshape(shape)


class FakeQuant:
    """TensorRT fake quantization in float64. ``margin`` is how close any unsaturated x / s came to a
    rounding boundary: above ~5e-4, float32 arithmetic in the model cannot round it the other way."""

    def __init__(self, amax: dict[str, float]) -> None:
        self.amax, self.margin = amax, 0.5

    def act(self, x: np.ndarray, name: str) -> np.ndarray:
        s = act_scale(self.amax[name])
        v = x.astype(np.float64) / s
        inside = np.abs(v) < 127.5
        if inside.any():
            self.margin = min(self.margin, float(np.abs(np.abs(v - np.floor(v)) - 0.5)[inside].min()))
        return np.clip(np.rint(v), -128, 127) * s

    @staticmethod
    def w(w: np.ndarray, axis: int) -> np.ndarray:
        codes, scales = weight_codes(w, axis)
        return codes * scales


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Stride 1, padding 1 (3x3 kernels), float64."""
    windows = sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), w.shape[2:], axis=(2, 3))
    return np.einsum("nchwij,ocij->nohw", windows, w) + b.astype(np.float64)[None, :, None, None]


def reference(case: str, f: dict[str, np.ndarray], w: dict[str, np.ndarray], q: FakeQuant) -> np.ndarray:
    if case in ("relu", "clip"):
        y1 = conv2d(q.act(f["x"], "x"), q.w(w["w1"], 0), w["b1"])
        a1 = np.maximum(y1, 0) if case == "relu" else np.clip(y1, 0, 6)
        return conv2d(q.act(a1, "a1"), q.w(w["w2"], 0), w["b2"])
    if case == "residual":
        x = q.act(f["x"], "x")  # one Q/DQ shared by Conv A and the Add
        ra = np.maximum(conv2d(x, q.w(w["wa"], 0), w["ba"]), 0)
        return np.maximum(conv2d(q.act(ra, "ra"), q.w(w["wb"], 0), w["bb"]) + x, 0)
    if case == "gemm":
        r = np.maximum(q.act(f["x"], "x") @ q.w(w["w1"], 0).T + w["b1"], 0)
        return q.act(r, "r") @ q.w(w["w2"], 1) + w["b2"]
    return q.act(q.act(f["x"], "x") @ q.w(w["w"], 1), "m") @ q.act(f["u"], "u")


BUILDERS = {
    "relu": lambda: conv_act_conv("Relu"),
    "clip": lambda: conv_act_conv("Clip"),
    "residual": residual,
    "gemm": gemm,
    "matmul": matmul,
}


@functools.cache
def quantized(case: str):  # type: ignore[no-untyped-def]
    """(fp32 model, weights, amax, plan, TensorRT flavour, names, ONNX Runtime flavour) of a case."""
    model, w = BUILDERS[case]()
    amax = ranges(model)
    plan = plan_qdq(model, amax)
    trt, names = build_qdq(model, amax, plan)
    return model, w, amax, plan, trt, names, to_onnxruntime_flavour(trt, names)


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


# --- 1. placement ----------------------------------------------------------------------------------------


def test_conv_relu_conv_placement() -> None:
    _, _, _, plan, trt, _, _ = quantized("relu")
    assert plan.activations == {"x": [(0, 0)], "a1": [(2, 0)]}
    assert plan.weights == [(0, 1, 0), (2, 1, 0)]
    assert plan.quantized_nodes == [0, 2] and plan.missing == [] and plan.residual_adds == []
    assert [n.input[0] for n in trt.graph.node if n.op_type == "QuantizeLinear"] == ["x", "a1"]
    assert [n.output[0] for n in trt.graph.node if n.op_type == "Conv"][-1] == "y"  # no Q/DQ after it
    assert not [n for n in trt.graph.node if "y" in n.input]


def test_residual_placement_shares_one_qdq() -> None:
    _, _, _, plan, trt, names, _ = quantized("residual")
    assert plan.activations == {"x": [(0, 0), (3, 1)], "ra": [(2, 0)]}
    assert plan.residual_adds == [3] and plan.quantized_nodes == [0, 2]
    assert [n.input[0] for n in trt.graph.node if n.op_type == "QuantizeLinear"] == ["x", "ra"]
    add = next(n for n in trt.graph.node if n.op_type == "Add")
    conv_a = next(n for n in trt.graph.node if n.op_type == "Conv")
    assert list(add.input) == ["yb", names["x"].dequantized] and conv_a.input[0] == add.input[1]


def test_gemm_and_matmul_placement() -> None:
    plan = quantized("gemm")[3]
    assert plan.activations == {"x": [(0, 0)], "r": [(2, 0)]}
    assert plan.weights == [(0, 1, 0), (2, 1, 1)]  # transB=1 -> axis 0, transB=0 -> axis 1
    plan = quantized("matmul")[3]
    assert plan.activations == {"x": [(0, 0)], "m": [(1, 0)], "u": [(1, 1)]}
    assert plan.weights == [(0, 1, 1)] and plan.quantized_nodes == [0, 1]


@pytest.mark.parametrize("a1_amax", [None, 0.0, float("nan")])
def test_tensor_without_range_stays_float(a1_amax: float | None) -> None:
    model, *_ = conv_act_conv()
    amax = {"x": 3.0, **({} if a1_amax is None else {"a1": a1_amax})}
    plan = plan_qdq(model, amax)
    assert plan.missing == ["a1"] and plan.quantized_nodes == [0]
    assert plan.activations == {"x": [(0, 0)]} and plan.weights == [(0, 1, 0)]
    built, _ = build_qdq(model, amax, plan)
    assert list(built.graph.node[-1].input[:2]) == ["a1", "w2"]  # second conv: float input and weight


@pytest.mark.parametrize(
    ("named", "pattern", "excluded", "nodes", "acts"),
    [
        (True, "conv2", ["conv2"], [0], ["x"]),
        (True, "Conv", ["conv1", "conv2"], [], []),
        (True, "conv[2-9]", ["conv2"], [0], ["x"]),
        (True, "act.*", ["act1"], [0, 2], ["x", "a1"]),
        (False, "y1", ["Conv:y1"], [2], ["a1"]),
    ],
)
def test_exclude(named: bool, pattern: str, excluded: list[str], nodes: list[int], acts: list[str]) -> None:
    model, _ = conv_act_conv(named=named)
    plan = plan_qdq(model, {"x": 3.0, "y1": 9.0, "a1": 9.0}, exclude=[pattern])
    assert plan.excluded == excluded and plan.quantized_nodes == nodes and list(plan.activations) == acts


@pytest.mark.parametrize("pattern", ["no_such_node", "conv[", "(unclosed"])
def test_bad_exclude_pattern_raises(pattern: str) -> None:
    model, _ = conv_act_conv(named=True)
    with pytest.raises(QuantbenchError) as exc:
        match_excluded(model.graph, [pattern])
    assert pattern in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(QuantbenchError, match="exclude"):
        plan_qdq(model, {"x": 1.0}, exclude=["conv1", pattern])


# --- 2. the TensorRT-flavour graph -----------------------------------------------------------------------


@pytest.mark.parametrize("case", list(BUILDERS))
def test_trt_graph_is_valid_int8(case: str) -> None:
    _, w, amax, plan, trt, names, _ = quantized(case)
    onnx.checker.check_model(trt, full_check=True)
    assert next(o.version for o in trt.opset_import if o.domain in ("", "ai.onnx")) >= 13
    inits = initializers(trt)
    assert set(names) == set(plan.activations)
    for tensor, qn in names.items():
        scale, zero = inits[qn.scale], inits[qn.zero_point]
        assert scale.dtype == np.float32 and scale == np.float32(amax[tensor] / 127.0)
        assert zero.dtype == np.int8 and zero.shape == () and zero == 0
    for node in trt.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[0] in names:
            assert list(node.input[1:]) == [names[node.input[0]].scale, names[node.input[0]].zero_point]
    weight_dqs = [n for n in trt.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    quantized_weights = [dq.input[0].removesuffix("_int8") for dq in weight_dqs]
    assert len(weight_dqs) == len(plan.weights) and set(quantized_weights) <= set(w)
    assert not set(quantized_weights) & ({i for n in trt.graph.node for i in n.input} | set(inits))
    for dq, name, (_, _, axis) in zip(weight_dqs, quantized_weights, plan.weights):
        original = w[name]
        q, s, z = (inits[i] for i in dq.input)
        assert helper.get_attribute_value(dq.attribute[0]) == axis and q.dtype == np.int8
        assert s.dtype == np.float32 and s.shape == (original.shape[axis],)
        np.testing.assert_allclose(s, weight_scales(original, axis), rtol=1e-7)
        np.testing.assert_array_equal(q, weight_codes(original, axis)[0])
        assert z.dtype == np.int8 and not z.any()


# --- 3. numerics against the float64 reference ------------------------------------------------------------


@pytest.mark.parametrize("case", list(BUILDERS))
def test_trt_numerics_match_fake_quant_reference(case: str) -> None:
    model, w, amax, _, trt, _, _ = quantized(case)
    feeds = inputs(model, seed=52, std=1.8, batch=1)  # wider than calibration: some inputs saturate
    q = FakeQuant(amax)
    expected = reference(case, feeds, w, q)
    assert q.margin > 5e-4, "test data sits on a rounding boundary; pick another seed"
    # The graph as built, unoptimized: ONNX Runtime's own optimizer would quantize float Conv biases
    # to int32. Float32 accumulation stays well under 1e-4 of one output quantization step.
    (got,) = run(trt, feeds, optimize=False)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * act_scale(amax["y"]))
    fp32 = run(model, feeds)[0]
    assert np.abs(fp32 - expected).max() > 1e-3 * act_scale(amax["y"])  # the reference is not FP32


# --- 4. ONNX Runtime flavour -----------------------------------------------------------------------------


def assert_integer_clip(model: onnx.ModelProto, qn, producer_op: str, lo: int, hi: int) -> None:  # type: ignore[no-untyped-def]
    nodes = {out: n for n in model.graph.node for out in n.output}
    inits, clip = initializers(model), nodes[qn.quantized]
    quantize = nodes[clip.input[0]]
    assert clip.op_type == "Clip"
    assert quantize.op_type == "QuantizeLinear" and list(quantize.input[1:]) == [qn.scale, qn.zero_point]
    assert nodes[quantize.input[0]].op_type == producer_op
    assert inits[clip.input[1]].dtype == np.uint8 and int(inits[clip.input[1]]) == 128 + lo
    assert inits[clip.input[2]].dtype == np.uint8 and int(inits[clip.input[2]]) == 128 + hi


@pytest.mark.parametrize(
    ("case", "z", "last", "axis", "producer"),
    [("clip", "a1", "w2", 0, "Conv"), ("residual", "ra", "wb", 0, "Conv"), ("gemm", "r", "w2", 1, "Gemm")],
)
def test_onnxruntime_flavour(case: str, z: str, last: str, axis: int, producer: str) -> None:
    model, w, amax, _, trt, names, ortq = quantized(case)
    onnx.checker.check_model(ortq, full_check=True)
    inits = initializers(ortq)
    # (a) activations are uint8 with zero point 128; weights stay int8 and biases int32, zero point 0
    for node in (n for n in ortq.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")):
        zero, const = inits[node.input[2]], inits.get(node.input[0])
        if const is None:
            assert zero.dtype == np.uint8 and zero.shape == () and int(zero) == 128
        else:
            assert const.dtype in (np.int8, np.int32) and zero.dtype == const.dtype and not zero.any()
    # (b) the float activation after the conv/gemm is gone, replaced by a Clip on the quantized values
    nodes = {out: n for n in ortq.graph.node for out in n.output}
    assert z not in nodes
    assert_integer_clip(ortq, names[z], producer, 0, 127)
    if case == "residual":  # the Add and the last Relu stay float; Conv B reads dequantized weights
        assert nodes["y"].op_type == "Relu" and list(nodes["s"].input) == ["yb", names["x"].dequantized]
        assert inits[nodes["yb"].input[1]].dtype == np.float32
    # (c) the same outputs as the TensorRT flavour, both run (optimized) by ONNX Runtime
    feeds = inputs(model, seed=30)
    (z_trt, y_trt), (z_ort, y_ort) = (
        run(expose_tensors(m, [names[z].quantized, "y"]), feeds) for m in (trt, ortq)
    )
    dz = np.abs(z_trt.astype(np.int32) - (z_ort.astype(np.int32) - 128)).astype(np.float64)
    assert dz.max() <= 1 and dz.mean() <= 1e-3
    # ONNX Runtime runs the first layer of the ONNX Runtime flavour as an integer kernel (int32
    # accumulation and bias, float requantization): a code of `z` may differ by one where the float
    # result sits on a rounding boundary. Such a step moves the outputs by at most s_z * |w| along the
    # last layer's weights (Relu and the residual Add do not enlarge it): below, |dz| propagated through
    # |w|. Either flavour's last layer may also round its bias to the int32 accumulator step (ONNX
    # Runtime's optimizer does so for Conv; this module for Gemm): half of s_z * s_w. What remains is
    # float32 summation order, a few ulps of the largest output.
    codes, scales = weight_codes(w[last], axis)
    s_z, magnitude = act_scale(amax[z]), np.abs(codes * scales)
    spread = dz @ magnitude if case == "gemm" else conv2d(dz, magnitude, np.zeros(len(magnitude)))
    bias_step = s_z * scales.reshape(-1) / 2
    bias_step = bias_step if case == "gemm" else bias_step[None, :, None, None]
    tiny = 1e-6 * amax["y"]
    diff = np.abs(y_ort - y_trt)
    assert np.all(diff <= s_z * spread + bias_step + tiny)
    assert np.mean(diff <= bias_step + tiny) >= 0.99
    if case != "gemm":
        assert np.mean(diff <= tiny) >= 0.99


def test_onnxruntime_flavour_stores_the_same_codes() -> None:
    model, _, _, _, trt, names, ortq = quantized("clip")
    feeds = inputs(model, seed=40)
    (int8,) = run(expose_tensors(trt, [names["a1"].quantized]), feeds)
    (uint8,) = run(expose_tensors(ortq, [names["a1"].quantized]), feeds)
    assert int8.dtype == np.int8 and uint8.dtype == np.uint8
    diff = int8.astype(np.int32) - (uint8.astype(np.int32) - 128)
    assert np.mean(diff == 0) >= 0.999 and np.abs(diff).max() <= 1
    assert (int8 == 127).any() and (int8 == 0).any()  # both Clip bounds were exercised


@pytest.mark.parametrize(("weight_factor", "bias", "noted"), [(1e-9, 0.8, False), (1e-3, 1e6, True)])
def test_onnxruntime_flavour_channel_with_near_zero_weights(
    weight_factor: float, bias: float, noted: bool
) -> None:
    # A channel whose weights are all but zero (as batch-norm folding leaves them) with a real bias:
    # its bias at the accumulator step s_x * s_w is far beyond int32. Left float, ONNX Runtime's
    # optimizer quantizes it to int32 itself and overflows, and the channel's outputs come out wrong.
    model, _ = conv_act_conv("Clip")
    assert [i.name for i in model.graph.initializer[:2]] == ["w1", "b1"]
    w1, b1 = (numpy_helper.to_array(i).copy() for i in model.graph.initializer[:2])
    w1[0] *= weight_factor
    b1[0] = bias
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w1, "w1"))
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(b1, "b1"))
    amax = ranges(model)
    trt, names = build_qdq(model, amax, plan_qdq(model, amax))
    notes: list[str] = []
    ortq = to_onnxruntime_flavour(trt, names, notes)
    onnx.checker.check_model(ortq, full_check=True)
    producers = {out: n for n in ortq.graph.node for out in n.output}
    bias_dq = producers[next(n for n in ortq.graph.node if n.op_type == "Conv").input[2]]
    first_bias = initializers(ortq)[bias_dq.input[0]]
    assert first_bias.dtype == np.int32 and np.abs(first_bias).max() <= 2**30
    assert bool(notes) is noted  # the second channel's weights are large enough to be worth a note
    feeds = inputs(model, seed=31)
    (a_trt,) = run(expose_tensors(trt, [names["a1"].quantized]), feeds, optimize=False)
    (a_ort,) = run(expose_tensors(ortq, [names["a1"].quantized]), feeds)
    diff = np.abs(a_trt.astype(np.int32) - (a_ort.astype(np.int32) - 128))
    assert diff[:, 0].max() == 0  # the channel itself: exactly the TensorRT flavour's codes
    assert diff.max() <= 1 and diff.mean() <= 2e-3  # elsewhere: ties of the int32 bias rounding


def test_onnxruntime_flavour_has_no_dead_nodes() -> None:
    ortq = quantized("clip")[-1]
    used = {name for n in ortq.graph.node for name in n.input} | {o.name for o in ortq.graph.output}
    assert [n.name for n in ortq.graph.node if not set(n.output) & used] == []


# --- 6. quantize_weight ----------------------------------------------------------------------------------


def test_quantize_weight_zero_channel_and_half_even() -> None:
    # scales 1, 1 and 2: every quotient is exact
    w = np.array([[0, 0, 0, 0, 0], [127, 0.5, 1.5, 2.5, -2.5], [-254, -1, -3, 5, 253]], np.float32)
    for axis, data in ((0, w), (1, w.T)):
        q, s = quantize_weight(data, axis)
        assert q.dtype == np.int8 and s.dtype == np.float32
        np.testing.assert_array_equal(s, [1.0, 1.0, 2.0])
        expected = np.array([[0, 0, 0, 0, 0], [127, 0, 2, 2, -2], [-127, 0, -2, 2, 126]])
        np.testing.assert_array_equal(q, expected if axis == 0 else expected.T)


@pytest.mark.parametrize(("shape", "axis"), [((6, 3, 3, 3), 0), ((4, 6, 3, 3), 1), ((10, 7), 1)])
def test_quantize_weight_matches_reference(shape: tuple[int, ...], axis: int) -> None:
    w = np.random.default_rng(5).normal(0, 0.2, shape).astype(np.float32)
    q, s = quantize_weight(w, axis)
    np.testing.assert_array_equal(q, weight_codes(w, axis)[0])
    np.testing.assert_allclose(s, weight_scales(w, axis), rtol=1e-7)
    assert np.abs(q).max() == 127 and q.min() >= -127


# --- 7. old opsets ---------------------------------------------------------------------------------------


def test_opset_11_model_is_converted() -> None:
    old, _ = conv_act_conv(opset=11)
    new, _ = conv_act_conv(opset=13)
    amax = ranges(new)
    built_old, _ = build_qdq(old, amax, plan_qdq(old, amax))
    built_new, _ = build_qdq(new, amax, plan_qdq(new, amax))
    onnx.checker.check_model(built_old, full_check=True)
    assert next(o.version for o in built_old.opset_import if o.domain in ("", "ai.onnx")) >= 13
    feeds = inputs(new, seed=50)
    np.testing.assert_array_equal(run(built_old, feeds)[0], run(built_new, feeds)[0])


def test_opset_11_conversion_that_adds_nodes() -> None:
    w = weights(6, w=((2, 1, 3, 3), 0.5))
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["r"], axes=[1], keepdims=1),  # axes become an input at 13
        helper.make_node("Conv", ["r", "w"], ["y"]),
    ]
    model = make_model(nodes, {"x": [1, 3, 6, 6]}, [1, 2, 4, 4], w, opset=11)
    amax = {"x": 4.0, "r": 6.0}
    built, _ = build_qdq(model, amax, plan_qdq(model, amax))
    onnx.checker.check_model(built, full_check=True)
    assert [n.input[0] for n in built.graph.node if n.op_type == "QuantizeLinear"] == ["r"]
