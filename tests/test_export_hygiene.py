"""What the written models hold: no initializer or node that nothing reads, each quantized weight once,
and no activation Q/DQ (nor calibration range) on tensors computed from constants alone.

Numerics are checked against the float64 fake-quantization reference of ``tests/test_qdq.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from quantbench.export.bias_correction import correct_biases
from quantbench.export.int8 import build_int8_model
from quantbench.export.qdq import build_qdq, plan_qdq
from quantbench.export.variants import fp16_variant, int8_variant
from quantbench.graph import cleanup, constant_tensors, evaluate_constants
from quantbench.model import expose_tensors, float_activations, input_specs
from quantbench.ranges import DynamicRanges
from tests.test_qdq import FakeQuant, act_scale, conv2d, inputs, make_model, run, weights

DERIVED = ["b1", "c", "wt_t"]
"""The tensors of :func:`constant_heavy` that nodes compute from constants."""


def constant_heavy() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x [N, 3, 8, 8] -> Conv(W1, b1) -> y1 -> Relu -> r -> Conv(w2, b2) -> y2 -> Add(y2, c) -> s
    -> MatMul(s, wt_t) -> y [N, 4, 8, 5], written the way exporters write constants:

    W1 a Constant node, b1 a Reshape of a Constant, c a Mul of two initializers (a bias added by an Add
    right after a Conv), wt_t a Transpose of an initializer; with an initializer and a Constant node
    that nothing reads.
    """
    w = weights(
        7,
        W1=((8, 3, 3, 3), 0.5),
        b1_flat=((1, 8), 0.5),
        w2=((4, 8, 3, 3), 0.3),
        b2=((4,), 0.5),
        ci=((1, 4, 1, 1), 1.0),
        ck=((1, 4, 1, 1), 0.8),
        wt=((5, 8), 0.5),
        stale=((64, 64), 1.0),
    )
    const = lambda name, value: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=numpy_helper.from_array(value, name)
    )
    nodes = [
        const("W1", w["W1"]),
        const("b1_flat", w["b1_flat"]),
        const("b1_shape", np.array([8], np.int64)),
        helper.make_node("Reshape", ["b1_flat", "b1_shape"], ["b1"]),
        helper.make_node("Conv", ["x", "W1", "b1"], ["y1"], pads=[1] * 4),
        helper.make_node("Relu", ["y1"], ["r"]),
        helper.make_node("Conv", ["r", "w2", "b2"], ["y2"], pads=[1] * 4),
        helper.make_node("Mul", ["ci", "ck"], ["c"]),
        helper.make_node("Add", ["y2", "c"], ["s"]),
        helper.make_node("Transpose", ["wt"], ["wt_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["s", "wt_t"], ["y"]),
        const("unread", np.ones((32, 32), np.float32)),
    ]
    inits = {k: w[k] for k in ("w2", "b2", "ci", "ck", "wt", "stale")}
    return make_model(nodes, {"x": ["N", 3, 8, 8]}, ["N", 4, 8, 5], inits), w


def reference(
    x: np.ndarray, w: dict[str, np.ndarray], q: FakeQuant | None, conv2_float: bool = False
) -> np.ndarray:
    """float64 output of :func:`constant_heavy`, fake-quantized like TensorRT unless ``q`` is None;
    ``conv2_float`` keeps the second Conv (input and weights) in float."""
    float64 = lambda v, *_: v.astype(np.float64)  # noqa: E731
    act = (lambda v, name: q.act(v, name)) if q is not None else float64
    wq = (lambda v, axis: q.w(v, axis)) if q is not None else float64
    y1 = conv2d(act(x, "x"), wq(w["W1"], 0), w["b1_flat"].reshape(8))
    r = np.maximum(y1, 0)
    y2 = (
        conv2d(r, w["w2"].astype(np.float64), w["b2"])
        if conv2_float
        else conv2d(act(r, "r"), wq(w["w2"], 0), w["b2"])
    )
    s = y2 + (w["ci"] * w["ck"]).astype(np.float64)  # float32 Mul, then the float Add
    return act(s, "s") @ wq(w["wt"].T, 1)


def calibrate(model: onnx.ModelProto) -> dict[str, float]:
    """amax of every listed activation over one batch of the FP32 model."""
    names = float_activations(model)
    values = run(expose_tensors(model, names), inputs(model, seed=10))
    return {name: float(np.abs(v).max()) for name, v in zip(names, values)}


def unread(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """(initializers no node or graph output reads, nodes none of whose outputs is read), by hand."""
    graph = model.graph
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    inits = [i.name for i in graph.initializer if i.name not in read]
    nodes = [n.output[0] for n in graph.node if not any(o in read for o in n.output)]
    return inits, nodes


def load_warnings(path: Path, capfd: pytest.CaptureFixture[str]) -> list[str]:
    """ONNX Runtime's warnings about unused initializers when it loads ``path``."""
    capfd.readouterr()
    options = ort.SessionOptions()
    options.log_severity_level = 2
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    err = capfd.readouterr().err
    return [line for line in err.splitlines() if "not used by any node" in line]


# --- calibration and placement -----------------------------------------------------------------------


def test_constant_tensors_follow_any_chain() -> None:
    model, _ = constant_heavy()
    fixed = constant_tensors(model.graph)
    assert set(DERIVED) <= fixed and {"W1", "b1_flat", "w2", "ci", "unread"} <= fixed
    assert not fixed & {"x", "y1", "r", "y2", "s", "y"}


def test_calibration_lists_no_constant_derived_tensor() -> None:
    model, _ = constant_heavy()
    assert float_activations(model) == ["x", "y1", "r", "y2", "s", "y"]


def test_no_activation_qdq_on_constant_derived_tensors() -> None:
    model, w = constant_heavy()
    amax = {**calibrate(model), **{name: 1.0 for name in DERIVED}}  # ranges given for them all the same
    plan = plan_qdq(model, amax)
    by_output = {n.output[0]: i for i, n in enumerate(model.graph.node)}
    assert plan.activations == {
        "x": [(by_output["y1"], 0)],
        "r": [(by_output["y2"], 0)],
        "s": [(by_output["y"], 0)],
    }
    assert plan.residual_adds == [] and plan.missing == []
    assert plan.weights == [(by_output["y1"], 1, 0), (by_output["y2"], 1, 0), (by_output["y"], 1, 1)]
    np.testing.assert_array_equal(plan.folded["wt_t"], w["wt"].T)  # the MatMul's weight, evaluated
    trt, _ = build_qdq(model, amax, plan)
    quantized = [n.input[0] for n in trt.graph.node if n.op_type == "QuantizeLinear"]
    assert quantized == ["x", "r", "s"]


# --- what the built and written models hold --------------------------------------------------------------


def test_tensorrt_flavour_keeps_each_weight_once_and_matches_the_reference() -> None:
    model, w = constant_heavy()
    amax = calibrate(model)
    trt, _ = build_qdq(model, amax, plan_qdq(model, amax))
    assert unread(trt) == ([], [])
    inits = {i.name for i in trt.graph.initializer}
    constants = {n.output[0] for n in trt.graph.node if n.op_type == "Constant"}
    assert not {"W1", "w2", "wt", "wt_t", "stale", "unread"} & (inits | constants)  # float originals gone
    assert {"W1_int8", "w2_int8", "wt_t_int8", "b2", "ci", "ck"} <= inits
    assert not any(n.op_type == "Transpose" for n in trt.graph.node)
    feeds = inputs(model, seed=53, std=1.8, batch=2)  # wider than calibration: some inputs saturate
    q = FakeQuant(amax)
    expected = reference(feeds["x"], w, q)
    assert q.margin > 5e-4, "test data sits on a rounding boundary; pick another seed"
    (got,) = run(trt, feeds, optimize=False)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * act_scale(amax["y"]))


def test_every_written_model_holds_only_what_it_reads(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    model, w = constant_heavy()
    amax = calibrate(model)
    feeds = inputs(model, seed=53, std=1.8, batch=2)
    variants = [
        int8_variant(model, DynamicRanges(amax), "minmax", [], tmp_path),
        int8_variant(model, DynamicRanges(amax), "minmax-mixed", ["Conv:y2"], tmp_path),
        fp16_variant(model, {}, tmp_path),
    ]
    paths = {p for v in variants for p in (v.model, v.cpu_model)}
    built = build_int8_model(model, amax)
    targets = [n.output[0] for n in model.graph.node if n.op_type == "Conv"]
    correction = correct_biases(model, built.tensorrt, targets, [feeds])
    assert [c.output for c in correction.nodes] == ["y2"]  # y1's bias is computed: left as it is
    assert correction.skipped == [("Conv:y1", "the bias is not an initializer")]
    onnx.save(correction.model, str(tmp_path / "corrected.onnx"))
    paths.add(tmp_path / "corrected.onnx")
    assert len(paths) >= 6  # fp16.cpu.onnx too where the CPU emulates float16 ops
    for path in sorted(paths):
        written = onnx.load(str(path))
        assert unread(written) == ([], []), path.name
        assert not {"stale", "unread"} & {i.name for i in written.graph.initializer}, path.name
        assert load_warnings(path, capfd) == [], path.name
    # the float model is unchanged, and the FP16 model still computes it
    assert [i.name for i in model.graph.initializer] == ["w2", "b2", "ci", "ck", "wt", "stale"]
    exact = reference(feeds["x"], w, None)
    np.testing.assert_allclose(run(model, feeds)[0], exact, rtol=0, atol=1e-5 * np.abs(exact).max())
    (fp16,) = run(onnx.load(str(variants[2].cpu_model)), feeds)
    np.testing.assert_allclose(fp16, exact, rtol=0, atol=1e-2 * np.abs(exact).max())
    # both INT8 flavours, and the mixed model, run as written, compute the fake-quantized reference
    q = FakeQuant(amax)
    expected = {False: reference(feeds["x"], w, q), True: reference(feeds["x"], w, q, conv2_float=True)}
    assert q.margin > 5e-4, "test data sits on a rounding boundary; pick another seed"
    for variant, mixed in ((variants[0], False), (variants[1], True)):
        for path in (variant.model, variant.cpu_model):
            (got,) = run(onnx.load(str(path)), feeds, optimize=False)
            np.testing.assert_allclose(got, expected[mixed], rtol=0, atol=1e-4 * act_scale(amax["y"]))


def test_a_weight_read_by_two_nodes_is_stored_once() -> None:
    w = weights(8, w=((4, 4, 3, 3), 0.4))
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], pads=[1] * 4),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w"], ["y"], pads=[1] * 4),
    ]
    model = make_model(nodes, {"x": ["N", 4, 6, 6]}, ["N", 4, 6, 6], w)
    amax = calibrate(model)
    trt, _ = build_qdq(model, amax, plan_qdq(model, amax))
    int8 = [i.name for i in trt.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert sorted(int8) == ["r_zero_point", "w_int8", "w_zero_point", "x_zero_point"]
    convs = [n for n in trt.graph.node if n.op_type == "Conv"]
    assert convs[0].input[1] == convs[1].input[1] == "w_dequantized"
    feeds = inputs(model, seed=3, batch=2)
    q = FakeQuant(amax)
    wq = q.w(w["w"], 0)
    zero = np.zeros(4)
    expected = conv2d(q.act(np.maximum(conv2d(q.act(feeds["x"], "x"), wq, zero), 0), "r"), wq, zero)
    assert q.margin > 5e-4, "test data sits on a rounding boundary; pick another seed"
    (got,) = run(trt, feeds, optimize=False)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * act_scale(amax["y"]))


# --- the graph helpers ------------------------------------------------------------------------------------


def test_evaluate_constants_and_cleanup() -> None:
    model, w = constant_heavy()
    values = evaluate_constants(model, ["c", "wt_t", "b1"])
    np.testing.assert_array_equal(values["c"], w["ci"] * w["ck"])
    np.testing.assert_array_equal(values["wt_t"], w["wt"].T)
    np.testing.assert_array_equal(values["b1"], w["b1_flat"].reshape(8))
    assert evaluate_constants(model, ["y1"]) == {}  # needs the graph input: cannot be evaluated
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    cleanup(graph)
    assert unread(onnx.helper.make_model(graph)) == ([], [])
    assert len(graph.node) == len(model.graph.node) - 1  # only the unread Constant went
    assert [i.name for i in graph.initializer] == ["w2", "b2", "ci", "ck", "wt"]


# --- the sample CNN -------------------------------------------------------------------------------------


def as_constant_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every initializer written as a Constant node instead (as Paddle's exporter does)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    constants = [helper.make_node("Constant", [], [i.name], value=i) for i in out.graph.initializer]
    del out.graph.initializer[:]
    nodes = [*constants, *out.graph.node]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def test_sample_int8_model_stores_int8_weights_only(
    sample: tuple[Path, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    model_path, _ = sample
    model = onnx.load(str(model_path))
    spec = input_specs(model)[0]
    names = float_activations(model)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 224, 224)).astype(np.float32)
    values = run(expose_tensors(model, names), {spec.name: x})
    amax = {name: float(np.abs(v).max()) for name, v in zip(names, values)}
    fp32_size = model_path.stat().st_size
    sizes = {}
    for label, source in (("initializers", model), ("constants", as_constant_nodes(model))):
        variant = int8_variant(source, DynamicRanges(amax), label, [], tmp_path)
        sizes[label] = variant.model.stat().st_size
        for path in (variant.model, variant.cpu_model):
            assert unread(onnx.load(str(path))) == ([], []), path.name
            assert load_warnings(path, capfd) == [], path.name
    # int8 codes are a quarter of the float32 weights; scales, biases and Q/DQ add a few percent
    assert sizes["initializers"] < 0.3 * fp32_size
    assert sizes["constants"] < 1.01 * sizes["initializers"]
