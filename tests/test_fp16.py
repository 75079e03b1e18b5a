"""FP16 conversion: types, Casts at region borders, kept-FP32 rules, numerics on ONNX Runtime CPU."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper

from quantbench.errors import QuantbenchError
from quantbench.export.fp16 import FP16_MAX, convert_to_fp16, runnable_on_cpu
from tests.conftest import tiny_conv_model

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


def make_model(nodes, inputs, outputs, inits=None, opset=13) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    """A checked model; ``inputs``/``outputs`` are (name, elem_type, shape) triples."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(*spec) for spec in inputs],
        [helper.make_tensor_value_info(*spec) for spec in outputs],
        [numpy_helper.from_array(value, name) for name, value in (inits or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def run(model: onnx.ModelProto, **feeds: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def emulate(model: onnx.ModelProto, **feeds: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Run a float16 model on the CPU provider through :func:`runnable_on_cpu`."""
    runnable, emulated = runnable_on_cpu(model)
    onnx.checker.check_model(runnable, full_check=True)
    return run(runnable, **feeds), emulated


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    return types | {i.name: i.data_type for i in graph.initializer}


def casts(model: onnx.ModelProto) -> list[tuple[str, int]]:
    """(input tensor, target type) of every Cast node."""
    return [(n.input[0], n.attribute[0].i) for n in model.graph.node if n.op_type == "Cast"]


def h(x: npt.ArrayLike) -> np.ndarray:
    """Round to float16."""
    return np.asarray(x).astype(np.float16)


def conv3x3(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A 'same' 3x3 convolution, NCHW, in float64."""
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    return np.einsum("nchwij,ocij->nohw", sliding_window_view(padded, (3, 3), axis=(2, 3)), w)


def test_conv_relu_conv_is_float16_inside_with_float32_io(tmp_path: Path) -> None:
    original = onnx.load(str(tiny_conv_model(tmp_path / "tiny.onnx")))
    result = convert_to_fp16(original)
    model = result.model
    onnx.checker.check_model(model, full_check=True)
    types = elem_types(model)
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == [
        "output"
    ]
    assert types["input"] == F32 and types["output"] == F32
    assert types["w1"] == types["w2"] == types["conv1"] == types["relu1"] == F16
    assert casts(model) == [("input", F16), (model.graph.node[-2].output[0], F32)]
    assert model.graph.node[0].op_type == "Cast" and model.graph.node[-1].output[0] == "output"
    assert result.kept_fp32 == [] and result.reasons == {}
    assert model.opset_import[0].version == 13


def test_keep_io_types_false_makes_inputs_and_outputs_float16(tmp_path: Path) -> None:
    model = convert_to_fp16(
        onnx.load(str(tiny_conv_model(tmp_path / "tiny.onnx"))), keep_io_types=False
    ).model
    onnx.checker.check_model(model, full_check=True)
    types = elem_types(model)
    assert types["input"] == types["output"] == F16
    assert casts(model) == []
    assert [n.op_type for n in model.graph.node] == ["Conv", "Relu", "Conv"]


def test_conv_emulated_on_cpu_rounds_like_float16(tmp_path: Path) -> None:
    original = onnx.load(str(tiny_conv_model(tmp_path / "tiny.onnx", batch=1)))
    w1, w2 = (numpy_helper.to_array(i) for i in original.graph.initializer)
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    out, emulated = emulate(convert_to_fp16(original).model, input=x)
    assert emulated == ["Conv", "Relu"]  # neither has a float16 kernel in ORT's CPU provider
    exact = conv3x3(np.maximum(conv3x3(x, w1), 0), w2)
    relu1 = h(np.maximum(h(conv3x3(h(x), h(w1))), 0))
    rounded = h(conv3x3(relu1, h(w2))).astype(np.float32)
    np.testing.assert_allclose(out, rounded, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(out, exact, rtol=1e-2, atol=1e-2 * np.abs(exact).max())
    assert out.dtype == np.float32 and not np.array_equal(out, exact.astype(np.float32))


def test_elementwise_chain_equals_numpy_float16() -> None:
    rng = np.random.default_rng(0)
    k = rng.normal(0, 1, 256).astype(np.float32)
    nodes = [
        helper.make_node("Add", ["x", "k"], ["a"], name="add"),
        helper.make_node("Mul", ["a", "x"], ["b"], name="mul"),
        helper.make_node("Sub", ["b", "k"], ["y"], name="sub"),
    ]
    model = make_model(nodes, [("x", F32, [256])], [("y", F32, [256])], {"k": k})
    x = (rng.normal(0, 10, 256)).astype(np.float32)
    out, emulated = emulate(convert_to_fp16(model).model, x=x)
    reference = ((h(x) + h(k)) * h(x) - h(k)).astype(np.float32)
    assert emulated == ["Add", "Mul", "Sub"]
    np.testing.assert_array_equal(out, reference)
    assert not np.array_equal(reference, h((x + k) * x - k).astype(np.float32))  # rounding matters here


def test_matmul_add_chain_close_to_float64() -> None:
    rng = np.random.default_rng(1)
    w1, b1 = rng.normal(0, 0.2, (32, 64)).astype(np.float32), rng.normal(0, 1, 64).astype(np.float32)
    w2, b2 = rng.normal(0, 0.2, (64, 16)).astype(np.float32), rng.normal(0, 1, 16).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["m2"]),
        helper.make_node("Add", ["m2", "b2"], ["y"]),
    ]
    inits = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    model = make_model(nodes, [("x", F32, [4, 32])], [("y", F32, [4, 16])], inits)
    converted = convert_to_fp16(model).model
    assert len(casts(converted)) == 2 and all(i.data_type == F16 for i in converted.graph.initializer)
    x = rng.normal(0, 1, (4, 32)).astype(np.float32)
    out, emulated = emulate(converted, x=x)
    exact = np.maximum(x.astype(np.float64) @ w1 + b1, 0) @ w2 + b2
    assert emulated == ["Add", "MatMul", "Relu"]
    np.testing.assert_allclose(out, exact, rtol=1e-2, atol=1e-2 * np.abs(exact).max())


def overflow_model() -> onnx.ModelProto:
    """x -> add(k) -> a -> mul(k) -> big (beyond float16) -> div(a) -> s -> mul(c) -> add(a) -> y."""
    nodes = [
        helper.make_node("Add", ["x", "k"], ["a"], name="A"),
        helper.make_node("Mul", ["a", "k"], ["big"], name="B"),
        helper.make_node("Div", ["big", "a"], ["s"], name="C"),
        helper.make_node("Mul", ["s", "c"], ["d"], name="D"),
        helper.make_node("Add", ["d", "a"], ["y"], name="E"),
    ]
    inits = {"k": np.full(8, 1000.0, np.float32), "c": np.full(8, 1e-3, np.float32)}
    return make_model(nodes, [("x", F32, [8])], [("y", F32, [8])], inits)


def test_absmax_keeps_nodes_float32_with_one_cast_per_tensor_and_direction() -> None:
    result = convert_to_fp16(overflow_model(), absmax={"big": 7.1e4, "a": 120.0})
    model = result.model
    onnx.checker.check_model(model, full_check=True)
    assert result.kept_fp32 == ["B", "C"]
    assert result.reasons["B"] == "absmax 7.1e+04 beyond float16's 65504 on tensor 'big'"
    assert result.reasons["C"] == result.reasons["B"]
    assert sorted(casts(model)) == sorted([("x", F16), ("a", F32), ("s", F16), ("y_fp16", F32)])
    nodes = {n.name: n for n in model.graph.node}
    types = elem_types(model)
    assert nodes["B"].input[0] == nodes["C"].input[1]  # one Cast of 'a' serves both
    assert types[nodes["A"].input[1]] == F16 and types[nodes["B"].input[1]] == F32  # 'k' in both types
    assert types["big"] == types["s"] == F32 and types["a"] == types["d"] == F16
    x = np.linspace(-100, 100, 8).astype(np.float32)
    out, _ = emulate(model, x=x)
    a16 = h(x) + h(1000.0)
    s = a16.astype(np.float32) * np.float32(1000) / a16.astype(np.float32)
    reference = (h(s) * h(1e-3) + a16).astype(np.float32)
    np.testing.assert_array_equal(out, reference)
    exact = (x + 1000.0) * 1000.0 / (x + 1000.0) * 1e-3 + x + 1000.0
    np.testing.assert_allclose(out, exact, rtol=1e-2)
    unguarded, _ = emulate(convert_to_fp16(overflow_model()).model, x=x)
    assert np.isinf(unguarded).all()  # the same graph all in float16 overflows


def test_initializer_beyond_float16_stays_float32() -> None:
    w = np.array([1.0, 2.0, 1e5, -3.0], np.float32)
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Mul", ["r", "w"], ["m"], name="scale"),
        helper.make_node("Sigmoid", ["m"], ["y"], name="sigmoid"),
    ]
    model = make_model(nodes, [("x", F32, [4])], [("y", F32, [4])], {"w": w})
    result = convert_to_fp16(model)
    onnx.checker.check_model(result.model, full_check=True)
    assert result.kept_fp32 == ["scale"]
    assert result.reasons["scale"] == "initializer 'w' holds 1e+05, beyond float16's 65504"
    (init,) = result.model.graph.initializer
    assert init.data_type == F32 and numpy_helper.to_array(init)[2] == 1e5
    x = np.array([0.5, 1.5, 0.25, -2.0], np.float32)
    out, _ = emulate(result.model, x=x)
    m = h(np.maximum(h(x), 0)).astype(np.float32) * w
    np.testing.assert_array_equal(out, h(1 / (1 + np.exp(-h(m).astype(np.float64)))).astype(np.float32))


def test_resize_keeps_scales_float32_and_shape_arithmetic_float32() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Resize", ["r", "", "scales"], ["up"], name="resize", mode="nearest"),
        helper.make_node("Shape", ["up"], ["shape"], name="shape"),
        helper.make_node("Constant", [], ["hw_index"], value=numpy_helper.from_array(np.array([2, 3]))),
        helper.make_node("Gather", ["shape", "hw_index"], ["hw"], name="gather"),
        helper.make_node("Cast", ["hw"], ["hw_f"], name="to_float", to=F32),
        helper.make_node("Mul", ["hw_f", "half"], ["half_f"], name="halve"),
        helper.make_node("Cast", ["half_f"], ["half_hw"], name="to_int", to=TensorProto.INT64),
        helper.make_node("Concat", ["nc", "half_hw"], ["sizes"], name="concat", axis=0),
        helper.make_node("Resize", ["up", "", "", "sizes"], ["down"], name="resize_back", mode="nearest"),
        helper.make_node("Add", ["down", "k"], ["y"], name="add"),
    ]
    inits = {
        "scales": np.array([1, 1, 2, 2], np.float32),
        "half": np.array([0.5, 0.5], np.float32),
        "nc": np.array([1, 2], np.int64),
        "k": np.float32(0.1),
    }
    model = make_model(nodes, [("x", F32, [1, 2, 4, 4])], [("y", F32, [1, 2, 4, 4])], inits)
    result = convert_to_fp16(model)
    onnx.checker.check_model(result.model, full_check=True)
    types = elem_types(result.model)
    assert result.kept_fp32 == ["to_float", "halve", "to_int"]
    assert result.reasons["halve"] == "computes on tensor shapes"
    assert types["scales"] == types["half"] == types["hw_f"] == F32
    assert types["up"] == types["down"] == types["k"] == F16
    assert sorted(casts(result.model)) == [
        ("half_f", TensorProto.INT64),
        ("hw", F32),
        ("x", F16),
        ("y_fp16", F32),
    ]
    x = np.random.default_rng(2).normal(0, 1, (1, 2, 4, 4)).astype(np.float32)
    out, emulated = emulate(result.model, x=x)
    assert "Resize" in emulated
    np.testing.assert_array_equal(out, (h(np.maximum(h(x), 0)) + h(0.1)).astype(np.float32))


def test_cast_to_float_is_retargeted_to_float16() -> None:
    nodes = [
        helper.make_node("Cast", ["pixels"], ["f"], name="to_float", to=F32),
        helper.make_node("Mul", ["f", "scale"], ["y"], name="scale"),
    ]
    model = make_model(
        nodes, [("pixels", TensorProto.UINT8, [6])], [("y", F32, [6])], {"scale": np.float32(1 / 255)}
    )
    model = convert_to_fp16(model).model
    onnx.checker.check_model(model, full_check=True)
    assert casts(model) == [("pixels", F16), ("y_fp16", F32)]
    pixels = np.array([0, 1, 17, 128, 200, 255], np.uint8)
    out, _ = emulate(model, pixels=pixels)
    np.testing.assert_array_equal(out, (h(pixels) * h(1 / 255)).astype(np.float32))


def test_keep_nodes_by_name_or_op_and_index() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["b"])]
    nodes.append(helper.make_node("Exp", ["b"], ["y"], name="exp"))
    model = make_model(nodes, [("x", F32, [3])], [("y", F32, [3])])
    result = convert_to_fp16(model, keep_nodes=["Neg#1", "exp"])
    onnx.checker.check_model(result.model, full_check=True)
    assert result.kept_fp32 == ["Neg#1", "exp"]
    assert result.reasons == {"Neg#1": "listed in keep_nodes", "exp": "listed in keep_nodes"}
    assert casts(result.model) == [("x", F16), ("a", F32)]
    assert elem_types(result.model)["y"] == F32
    with pytest.raises(QuantbenchError, match="Relu#7"):
        convert_to_fp16(model, keep_nodes=["Relu#7"])


def test_layer_normalization_kept_float32_by_op() -> None:
    nodes = [
        helper.make_node("Add", ["x", "x"], ["a"], name="add"),
        helper.make_node("LayerNormalization", ["a", "gamma", "beta"], ["y"], name="ln"),
    ]
    inits = {"gamma": np.ones(4, np.float32), "beta": np.zeros(4, np.float32)}
    model = make_model(nodes, [("x", F32, [2, 4])], [("y", F32, [2, 4])], inits, opset=17)
    result = convert_to_fp16(model)
    onnx.checker.check_model(result.model, full_check=True)
    assert result.kept_fp32 == ["ln"] and "LayerNormalization" in result.reasons["ln"]
    assert elem_types(result.model)["gamma"] == F32
    assert casts(result.model) == [("x", F16), ("a", F32)]


def test_errors_are_one_line() -> None:
    identity = [helper.make_node("Identity", ["x"], ["y"])]
    half = make_model(identity, [("x", F16, [2])], [("y", F16, [2])])
    ints = make_model(identity, [("x", TensorProto.INT64, [2])], [("y", TensorProto.INT64, [2])])
    for model, words in ((half, "already has 16-bit float"), (ints, "no float32 tensors")):
        with pytest.raises(QuantbenchError, match=words) as caught:
            convert_to_fp16(model)
        assert "\n" not in str(caught.value)


def test_runnable_on_cpu_emulates_an_op_that_fails_to_load() -> None:
    import onnxruntime as ort

    nodes = [
        helper.make_node("HannWindow", ["size"], ["window"], name="hann", output_datatype=F16),
        helper.make_node("Mul", ["window", "x"], ["y"], name="mul"),
    ]
    model = make_model(
        nodes, [("x", F16, [16])], [("y", F16, [16])], {"size": np.array(16, np.int64)}, opset=19
    )  # at opsets 17-18, ORT 1.31 loads it by upcasting HannWindow itself
    with pytest.raises(Exception, match=r"Could not find an implementation for HannWindow\(17\)"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.linspace(-2, 2, 16).astype(np.float16)
    out, emulated = emulate(model, x=x)
    assert emulated == ["HannWindow", "Mul"]
    window = h(np.sin(np.pi * np.arange(16) / 16) ** 2)
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), (window * x).astype(np.float32), rtol=1e-3, atol=1e-4)


def test_a_producer_run_in_float32_is_emulated_not_its_emulated_consumer() -> None:
    """YOLOv8's DFL head: Softmax -> 1x1 Conv. Once the Conv is emulated (it reads float32 through a Cast),
    ONNX Runtime runs the float16 Softmax in float32 and merges its own output Cast with that one, which
    rewires the Conv's input: the Softmax must be emulated next, and the result keep float16 rounding."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((1, 4, 1, 1)).astype(np.float16)
    nodes = [
        helper.make_node("Softmax", ["x"], ["p"], name="softmax", axis=1),
        helper.make_node("Conv", ["p", "w"], ["y"], name="conv"),
    ]
    model = make_model(nodes, [("x", F16, [1, 4, 3, 5])], [("y", F16, [1, 1, 3, 5])], {"w": w}, opset=13)
    x = rng.standard_normal((1, 4, 3, 5)).astype(np.float16)
    out, emulated = emulate(model, x=x)
    assert {"Conv", "Softmax"} <= set(emulated)
    e = np.exp(x.astype(np.float64) - x.astype(np.float64).max(axis=1, keepdims=True))
    p = h(e / e.sum(axis=1, keepdims=True)).astype(np.float64)
    expected = h(np.einsum("nchw,oc->nohw", p, w[:, :, 0, 0].astype(np.float64)))
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float64), expected.astype(np.float64), rtol=2e-3, atol=2e-3)


def test_runnable_on_cpu_reports_other_load_errors() -> None:
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", F16, [2])],
        [helper.make_tensor_value_info("y", F16, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    with pytest.raises(QuantbenchError, match="cannot load the float16 model") as caught:
        runnable_on_cpu(model)
    assert "\n" not in str(caught.value)


def test_sample_cnn_float16_logits_match_float32(sample: tuple[Path, Path]) -> None:
    model_path, _ = sample
    original = onnx.load(str(model_path))
    result = convert_to_fp16(original)
    onnx.checker.check_model(result.model, full_check=True)
    assert result.kept_fp32 == []
    assert Counter(i.data_type for i in result.model.graph.initializer) == {
        F16: len(original.graph.initializer)
    }
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    logits, emulated = emulate(result.model, input=x)
    assert "Conv" in emulated
    reference = run(original, input=x)
    assert np.linalg.norm(logits - reference) / np.linalg.norm(reference) < 0.05
    assert logits.argmax() == reference.argmax()
    assert np.abs(logits).max() < FP16_MAX
