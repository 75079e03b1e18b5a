"""The fast CPU flavour (``--cpu-flavour fast``), the folds into quantized convolutions and graph order.

Numerics are checked against float64 numpy references that round what the flavour says it rounds;
what ONNX Runtime fuses is read from the graph its optimizer writes.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantbench.export import onnxruntime_fast
from quantbench.export.conv_fold import fold_into_convs
from quantbench.export.onnxruntime_fast import REGRID_LIMIT, make_fast, measure_rounding
from quantbench.export.onnxruntime_flavour import to_onnxruntime_flavour
from quantbench.export.qdq import build_qdq, plan_qdq
from quantbench.graph import toposort

C, H = 4, 5


def _model(
    nodes: list[onnx.NodeProto], weights: dict[str, np.ndarray], output: str = "out"
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, C, H, H])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _weights(rng: np.random.Generator, *names: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in names:
        out[f"w{name}"] = rng.normal(0, 0.6, (C, C, 1, 1))
        out[f"b{name}"] = rng.normal(0, 0.3, C)
    return out


def _conv(name: str, x: str, y: str) -> onnx.NodeProto:
    return helper.make_node("Conv", [x, f"w{name}", f"b{name}"], [y], name=f"conv_{name}")


def _hard_swish_product(w: dict[str, np.ndarray], x: str, y: str) -> list[onnx.NodeProto]:
    """``y = x * clip(x + 3, 0, 6)`` (HardSwish before its ``/ 6``) through ``t`` and ``c``; its constants
    go into ``w``."""
    w["three"], w["zero"], w["six"] = np.array(3.0), np.array(0.0), np.array(6.0)
    return [
        helper.make_node("Add", [x, "three"], ["t"]),
        helper.make_node("Clip", ["t", "zero", "six"], ["c"]),
        helper.make_node("Mul", [x, "c"], [y]),
    ]


def _session(model: onnx.ModelProto, optimize: bool, saved: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if saved is not None:
        options.optimized_model_filepath = str(saved)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _all_tensors(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every float tensor of a float model on ``x`` (for the ranges)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [o for n in model.graph.node for o in n.output if o not in {v.name for v in model.graph.output}]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    sess = _session(probe, optimize=False)
    wanted = [o.name for o in sess.get_outputs()]
    return {"x": x, **dict(zip(wanted, sess.run(None, {"x": x}), strict=True))}


def _ops(model: onnx.ModelProto, tmp_path: Path) -> collections.Counter[str]:
    """The op types of the graph ONNX Runtime's optimizer makes of ``model``."""
    saved = tmp_path / "optimized.onnx"
    _session(model, optimize=True, saved=saved)
    return collections.Counter(n.op_type for n in onnx.load(str(saved)).graph.node)


def _fq(t: np.ndarray, amax: float) -> np.ndarray:
    """Symmetric int8: ``amax / 127`` steps either side of 0."""
    s = np.float32(amax / 127.0)
    return np.clip(np.rint(t / s), -128, 127) * np.float64(s)


def _fq_unsigned(t: np.ndarray, amax: float) -> np.ndarray:
    """The unsigned grid: ``amax / 255`` steps from 0."""
    s = np.float32(amax / 255.0)
    return np.clip(np.rint(t / s), 0, 255) * np.float64(s)


def _conv1x1(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("nchw,oc->nohw", x, w[:, :, 0, 0]) + b[None, :, None, None]


def _weight_codes(qdq: onnx.ModelProto, dequantize: bool = False) -> dict[str, np.ndarray]:
    """Each conv's weight codes (or codes x scales) as the Q/DQ model stores them, by conv name."""
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    dq = {n.output[0]: n for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    out = {}
    for node in qdq.graph.node:
        if node.op_type == "Conv":
            d = dq[node.input[1]]
            codes, scales = inits[d.input[0]], inits[d.input[1]].astype(np.float64)
            out[node.name] = codes * scales[:, None, None, None] if dequantize else codes
    return out


def _dequantized_weights(qdq: onnx.ModelProto) -> dict[str, np.ndarray]:
    return _weight_codes(qdq, dequantize=True)


@pytest.fixture
def residual() -> tuple[onnx.ModelProto, dict[str, np.ndarray], np.ndarray]:
    """Conv a -> Relu -> Conv b -> Add(ra) -> Relu -> Conv c: Conv b's output is float in the judged
    model (TensorRT fuses the Add), so the fast flavour rounds it."""
    rng = np.random.default_rng(3)
    w = _weights(rng, "a", "b", "c")
    nodes = [
        _conv("a", "x", "ya"),
        helper.make_node("Relu", ["ya"], ["ra"]),
        _conv("b", "ra", "yb"),
        helper.make_node("Add", ["yb", "ra"], ["s"]),
        helper.make_node("Relu", ["s"], ["rs"]),
        _conv("c", "rs", "out"),
    ]
    return _model(nodes, w), w, rng.normal(0, 1, (2, C, H, H)).astype(np.float32)


def _quantized(model: onnx.ModelProto, x: np.ndarray):  # type: ignore[no-untyped-def]
    tensors = _all_tensors(model, x)
    amax = {k: float(np.abs(v).max()) for k, v in tensors.items()}
    qdq, names = build_qdq(model, amax, plan_qdq(model, amax))
    return qdq, names, amax, tensors


def test_fast_flavour_rounds_the_fused_conv_output_as_its_reference_says(residual, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, w, x = residual
    qdq, names, amax, tensors = _quantized(model, x)
    fast = make_fast(qdq, names, amax)
    changed = {c.tensor: c for c in fast.changes}
    assert set(changed) == {"yb", "s", "ra", "rs"}
    assert [changed[t].new for t in ("yb", "s", "ra", "rs")] == [True, True, False, False]
    assert [changed[t].grid for t in ("yb", "s", "ra", "rs")] == ["int8", "int8", "uint8", "uint8"]
    assert changed["yb"].readers == ["Add:s"] and changed["s"].readers == ["Relu:rs"]
    assert changed["ra"].readers == ["conv_b", "Add:s"]
    # float64 reference of the fast model: yb and s rounded too, the Relu outputs on the unsigned grid
    dw = _dequantized_weights(qdq)
    xq = _fq(x.astype(np.float64), amax["x"])
    raq = _fq_unsigned(np.maximum(_conv1x1(xq, dw["conv_a"], w["ba"]), 0), amax["ra"])
    yb = _conv1x1(raq, dw["conv_b"], w["bb"])
    s = _fq(_fq(yb, amax["yb"]) + raq, amax["s"])
    reference = _conv1x1(_fq_unsigned(np.maximum(s, 0), amax["rs"]), dw["conv_c"], w["bc"])
    (got,) = _session(fast.model, optimize=False).run(None, {"x": x})
    (judged,) = _session(qdq, optimize=False).run(None, {"x": x})
    error = np.linalg.norm(got - reference) / np.linalg.norm(reference)
    assert error < 1e-3
    assert error < 0.2 * np.linalg.norm(judged - reference) / np.linalg.norm(reference)  # it did round
    # the rounding errors measured on the judged model, against numpy's
    judged_ra = _fq(np.maximum(_conv1x1(xq, dw["conv_a"], w["ba"]), 0), amax["ra"])
    judged_yb = _conv1x1(judged_ra, dw["conv_b"], w["bb"])
    measure_rounding(qdq, fast, [{"x": x}], threads=1)
    for tensor, value in (("yb", judged_yb), ("s", judged_yb + judged_ra)):
        expected = np.linalg.norm(_fq(value, amax[tensor]) - value) / np.linalg.norm(value)
        assert changed[tensor].rel_error == pytest.approx(expected, rel=1e-3, abs=1e-6)
    ra = np.maximum(_conv1x1(xq, dw["conv_a"], w["ba"]), 0)
    expected = np.linalg.norm(_fq_unsigned(ra, amax["ra"]) - ra) / np.linalg.norm(ra)
    assert changed["ra"].rel_error == pytest.approx(expected, rel=1e-3, abs=1e-6)
    assert fast.images == 2
    # ONNX Runtime now runs Conv b and the Add on integer kernels; the exact flavour leaves Conv b float
    fast_ops = _ops(to_onnxruntime_flavour(fast.model, fast.names), tmp_path)
    exact_ops = _ops(to_onnxruntime_flavour(qdq, names), tmp_path)
    assert fast_ops["QLinearConv"] == 2 and fast_ops["QLinearAdd"] == 1
    assert exact_ops["QLinearConv"] == 1 and exact_ops["QLinearAdd"] == 0
    assert "out" not in changed and tensors["out"] is not None  # a model output stays float


def test_new_relu_outputs_take_the_unsigned_grid_and_are_measured_on_it(tmp_path: Path) -> None:
    """relu(conv a) + relu(conv b) -> Conv c: the judged model keeps both Relu outputs float (the Add
    reads them); the fast flavour quantizes them on the unsigned grid, with no Clip left to run."""
    rng = np.random.default_rng(12)
    nodes = [
        _conv("a", "x", "ya"),
        helper.make_node("Relu", ["ya"], ["ra"]),
        _conv("b", "x", "yb"),
        helper.make_node("Relu", ["yb"], ["rb"]),
        helper.make_node("Add", ["ra", "rb"], ["s"]),
        _conv("c", "s", "out"),
    ]
    w = _weights(rng, "a", "b", "c")
    model = _model(nodes, w)
    x = rng.normal(0, 1, (2, C, H, H)).astype(np.float32)
    qdq, names, amax, _ = _quantized(model, x)
    assert "ra" not in names and "rb" not in names
    fast = make_fast(qdq, names, amax)
    changed = {c.tensor: c for c in fast.changes}
    assert set(changed) == {"ra", "rb"} and all(c.new and c.grid == "uint8" for c in changed.values())
    measure_rounding(qdq, fast, [{"x": x}], threads=1)
    dw = _dequantized_weights(qdq)
    xq = _fq(x.astype(np.float64), amax["x"])
    for tensor, conv, bias in (("ra", "conv_a", "ba"), ("rb", "conv_b", "bb")):
        value = np.maximum(_conv1x1(xq, dw[conv], w[bias]), 0)
        expected = np.linalg.norm(_fq_unsigned(value, amax[tensor]) - value) / np.linalg.norm(value)
        assert changed[tensor].rel_error == pytest.approx(expected, rel=1e-3, abs=1e-6)
    ops = _ops(to_onnxruntime_flavour(fast.model, fast.names), tmp_path)
    assert ops["QLinearConv"] == 2 and ops["QLinearAdd"] == 1 and ops["Clip"] == 0 and ops["Relu"] == 0


def test_fast_flavour_runs_silu_on_integer_kernels(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    nodes = [
        _conv("a", "x", "y"),
        helper.make_node("Sigmoid", ["y"], ["g"]),
        helper.make_node("Mul", ["y", "g"], ["m"]),
        _conv("b", "m", "out"),
    ]
    model = _model(nodes, _weights(rng, "a", "b"))
    qdq, names, amax, _ = _quantized(model, rng.normal(0, 1, (2, C, H, H)).astype(np.float32))
    fast = make_fast(qdq, names, amax)
    assert {c.tensor for c in fast.changes} == {"y", "g"}  # m was quantized already, for Conv b
    ops = _ops(to_onnxruntime_flavour(fast.model, fast.names), tmp_path)
    assert ops["QLinearSigmoid"] == 1 and ops["QLinearMul"] == 1 and ops["QLinearConv"] == 1
    assert ops["Sigmoid"] == 0 and ops["Mul"] == 0


def test_fast_flavour_leaves_what_no_integer_op_reads(tmp_path: Path) -> None:
    """A Sigmoid read only by a Softmax (no integer kernel) would only be rounded: it stays float; the
    conv before it runs in integer all the same, its output dequantized for the Sigmoid."""
    rng = np.random.default_rng(6)
    nodes = [
        _conv("a", "x", "y"),
        helper.make_node("Sigmoid", ["y"], ["g"]),
        helper.make_node("Softmax", ["g"], ["out"], axis=1),
    ]
    model = _model(nodes, _weights(rng, "a"))
    qdq, names, amax, _ = _quantized(model, rng.normal(0, 1, (2, C, H, H)).astype(np.float32))
    fast = make_fast(qdq, names, amax)
    assert [(c.tensor, c.new, c.readers) for c in fast.changes] == [("y", True, ["Sigmoid:g"])]
    assert set(fast.names) == set(names) | {"y"}
    ops = _ops(to_onnxruntime_flavour(fast.model, fast.names), tmp_path)
    assert ops["QLinearConv"] == 1 and ops["Sigmoid"] == 1 and ops["QLinearSigmoid"] == 0


def test_fast_flavour_hard_swish_constant_and_integer_clip(tmp_path: Path) -> None:
    """x * clip(x + 3, 0, 6): the constant 3 is quantized exactly (one code), the Clip runs on codes at
    its input's scale, and the flavour computes what its Q/DQ model says."""
    rng = np.random.default_rng(7)
    w = _weights(rng, "a", "b")
    nodes = [_conv("a", "x", "y"), *_hard_swish_product(w, "y", "m"), _conv("b", "m", "out")]
    model = _model(nodes, w)
    x = rng.normal(0, 2, (2, C, H, H)).astype(np.float32)
    qdq, names, amax, _ = _quantized(model, x)
    fast = make_fast(qdq, names, amax)
    changed = {c.tensor: c for c in fast.changes}
    assert set(changed) == {"y", "t", "three"}  # c takes t's codes: no rounding of its own
    assert (
        changed["three"].rel_error < 1e-7 and changed["three"].op == "Constant"
    )  # the scale's float rounding
    flavour = to_onnxruntime_flavour(fast.model, fast.names)
    clips = [n for n in flavour.graph.node if n.op_type == "Clip"]
    assert len(clips) == 1 and clips[0].input[0] == fast.names["t"].quantized  # on codes
    ops = _ops(flavour, tmp_path)
    assert ops["QLinearAdd"] == 1 and ops["QLinearMul"] == 1 and ops["QLinearConv"] == 1
    (expected,) = _session(fast.model, optimize=False).run(None, {"x": x})
    (got,) = _session(flavour, optimize=True).run(None, {"x": x})
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 2e-2  # int32 bias may tip a code
    assert np.mean(np.isclose(got, expected, rtol=1e-4, atol=1e-5)) >= 0.9


@pytest.mark.parametrize("negative", [False, True])
def test_batch_norm_folds_into_the_quantized_conv_keeping_its_codes(negative: bool) -> None:
    rng = np.random.default_rng(8)
    w = _weights(rng, "a")
    gamma = rng.uniform(0.5, 2.0, C) * (np.array([1, -1, 1, -1]) if negative else 1)
    w.update(gamma=gamma, beta=rng.normal(0, 1, C), mean=rng.normal(0, 1, C), var=rng.uniform(0.1, 2, C))
    nodes = [
        _conv("a", "x", "y"),
        helper.make_node("BatchNormalization", ["y", "gamma", "beta", "mean", "var"], ["out"], epsilon=1e-3),
    ]
    model = _model(nodes, w)
    x = rng.normal(0, 1, (2, C, H, H)).astype(np.float32)
    qdq, _, _, _ = _quantized(model, x)
    folded = fold_into_convs(qdq)
    assert "BatchNormalization" not in {n.op_type for n in folded.graph.node}
    before, after = _dequantized_weights(qdq)["conv_a"], _dequantized_weights(folded)["conv_a"]
    before_codes, after_codes = _weight_codes(qdq)["conv_a"], _weight_codes(folded)["conv_a"]
    sign = np.where(gamma < 0, -1, 1)[:, None, None, None]
    np.testing.assert_array_equal(after_codes, before_codes * sign)  # the codes judged stay
    a = gamma / np.sqrt(w["var"] + 1e-3)
    np.testing.assert_allclose(after, before * a[:, None, None, None], rtol=1e-6)
    (want,) = _session(qdq, optimize=False).run(None, {"x": x})  # ONNX Runtime's BatchNormalization
    (got,) = _session(folded, optimize=False).run(None, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_constant_mul_and_add_fold_into_the_conv_only_per_channel() -> None:
    """A batch normalization written as Mul then Add folds in two steps; an Add broadcast along the
    width is no bias and stays."""
    rng = np.random.default_rng(9)
    w = _weights(rng, "a", "b")
    w["factor"] = rng.uniform(0.5, 2, (C, 1, 1)) * np.array([1, -1, 1, 1])[:, None, None]
    w["per_channel"] = rng.normal(0, 1, (1, C, 1, 1))
    w["per_column"] = rng.normal(0, 1, (H,))  # broadcasts along the width: not a bias
    nodes = [
        _conv("a", "x", "ya"),
        helper.make_node("Mul", ["factor", "ya"], ["ma"]),
        helper.make_node("Add", ["ma", "per_channel"], ["za"]),
        _conv("b", "za", "yb"),
        helper.make_node("Add", ["yb", "per_column"], ["out"]),
    ]
    model = _model(nodes, w)
    x = rng.normal(0, 1, (2, C, H, H)).astype(np.float32)
    qdq, _, _, _ = _quantized(model, x)
    folded = fold_into_convs(qdq)
    affine = [n for n in folded.graph.node if n.op_type in ("Add", "Mul")]
    assert [(n.op_type, n.input[1]) for n in affine] == [("Add", "per_column")]
    sign = np.sign(w["factor"].reshape(-1))[:, None, None, None]
    np.testing.assert_array_equal(_weight_codes(folded)["conv_a"], _weight_codes(qdq)["conv_a"] * sign)
    (want,) = _session(qdq, optimize=False).run(None, {"x": x})
    (got,) = _session(folded, optimize=False).run(None, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_toposort_puts_writers_first_and_keeps_a_sorted_graph() -> None:
    nodes = [
        helper.make_node("Relu", ["b"], ["c"], name="third"),
        helper.make_node("Relu", ["x"], ["a"], name="first"),
        helper.make_node("Add", ["a", "x"], ["b"], name="second"),
        helper.make_node("Relu", ["x"], ["d"], name="free"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [])
    toposort(graph)
    assert [n.name for n in graph.node] == ["first", "second", "third", "free"]
    toposort(graph)
    assert [n.name for n in graph.node] == ["first", "second", "third", "free"]
    graph.node[0].input[0] = "c"  # first reads third's output: a cycle
    with pytest.raises(ValueError, match="cycle"):
        toposort(graph)


def test_a_run_times_the_fast_flavour_and_lists_its_roundings(tmp_path: Path) -> None:
    """``quantbench.run(cpu_flavour="fast")``: results.json names the flavour and its measured roundings,
    the judged model is the exact run's, and the summary and the report say so."""
    import json

    import quantbench
    from quantbench.cli.summary import _flavour_lines
    from tests.conftest import photo_folder

    rng = np.random.default_rng(11)
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["ya"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["ya"], ["g"]),
        helper.make_node("Mul", ["ya", "g"], ["m"]),
        helper.make_node("Conv", ["m", "wb", "bb"], ["out"], pads=[1, 1, 1, 1]),
    ]
    weights = {"wa": rng.normal(0, 0.5, (C, 3, 3, 3)), "ba": rng.normal(0, 0.2, C)}
    weights.update(wb=rng.normal(0, 0.5, (2, C, 3, 3)), bb=rng.normal(0, 0.2, 2))
    graph = helper.make_graph(
        nodes,
        "silu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2, 16, 16])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "silu.onnx"))
    images = photo_folder(tmp_path / "images", 24, size=16)
    runs = {}
    for flavour in ("exact", "fast"):
        result = quantbench.run(
            tmp_path / "silu.onnx", images, n=16, eval_n=8, methods=["minmax"], precisions=["fp32", "int8"],
            bias_correction=False, bias_correction_images=8, cpu_flavour=flavour, preset="raw",
            bench_runs=1, bench_seconds=0, out=tmp_path / flavour,
        )  # fmt: skip
        run_dir = Path(result.run_dir)
        runs[flavour] = (run_dir, json.loads((run_dir / "results.json").read_text()))
    (exact_dir, exact), (fast_dir, fast) = runs["exact"], runs["fast"]
    assert fast["manifest"]["arguments"]["cpu_flavour"] == "fast"
    assert exact["variants"][1]["cpu_flavour"] == {"name": "exact"}
    flavour = fast["variants"][1]["cpu_flavour"]
    assert flavour["name"] == "fast" and flavour["measured_on_images"] == 8
    assert {r["tensor"] for r in flavour["roundings"]} == {"ya", "g"}
    assert all(0 < r["rel_error"] < 0.05 for r in flavour["roundings"])
    assert fast["variants"][1]["timed_model"]["flavour"] == "fast"
    # the judged model is the same either way; only the timed one differs
    judged = [
        onnx.load(str(d / "models" / "int8-minmax.onnx")).SerializeToString() for d in (exact_dir, fast_dir)
    ]
    assert judged[0] == judged[1]
    assert fast["variants"][1]["outputs"] == exact["variants"][1]["outputs"]  # judged alike
    timed = onnx.load(str(fast_dir / "models" / "int8-minmax.onnxruntime.onnx"))
    assert {"Sigmoid", "Mul"} <= {n.op_type for n in timed.graph.node}
    assert sum(n.op_type == "QuantizeLinear" for n in timed.graph.node) > sum(
        n.op_type == "QuantizeLinear"
        for n in onnx.load(str(exact_dir / "models" / "int8-minmax.onnxruntime.onnx")).graph.node
    )
    (line,) = _flavour_lines(fast)
    assert "int8-minmax: fast, 2 tensors rounded" in line
    assert flavour["rewritten"] == [] and "Softmax" not in line
    report = (fast_dir / "report.html").read_text()
    assert "--cpu-flavour fast" in report and "ya" in report


@pytest.mark.parametrize(("ratio", "limit"), [(1.5, 2.0), (3.0, 2.0), (1.5, REGRID_LIMIT)])
def test_a_split_output_takes_its_input_grid_within_the_limit(
    ratio: float, limit: float, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Conv a -> Split into halves -> Conv b, Conv c -> Add: the judged model quantizes each half on its
    own grid (they are conv inputs). Where the input's steps are at most ``limit`` times a half's, that
    half takes the input's grid; where not, both keep their grids: the half is rounded again, from Conv
    a's rounded output onto its own grid, by an Add of zero that ONNX Runtime runs on its integer kernel.
    Either way ONNX Runtime splits Conv a's codes. By default no grid gets coarser (YOLOv8n's C2f halves
    within 2x of their input cost detections)."""
    monkeypatch.setattr(onnxruntime_fast, "REGRID_LIMIT", limit)
    rng = np.random.default_rng(21)
    w = {
        "wa": rng.normal(0, 0.6, (C, C, 1, 1)),
        "ba": np.zeros(C),
        "wb": rng.normal(0, 0.6, (C, C // 2, 1, 1)),
        "bb": rng.normal(0, 0.3, C),
        "wc": rng.normal(0, 0.6, (C, C // 2, 1, 1)),
        "bc": rng.normal(0, 0.3, C),
    }
    x = rng.normal(0, 1, (2, C, H, H)).astype(np.float32)
    ya = _conv1x1(x.astype(np.float64), w["wa"], w["ba"])
    # the second half's range set to 1 / ratio of the first's
    w["wa"][C // 2 :] *= np.abs(ya[:, : C // 2]).max() / np.abs(ya[:, C // 2 :]).max() / ratio
    nodes = [
        _conv("a", "x", "ya"),
        helper.make_node("Split", ["ya"], ["s0", "s1"], axis=1),
        _conv("b", "s0", "yb"),
        _conv("c", "s1", "yc"),
        helper.make_node("Add", ["yb", "yc"], ["out"]),
    ]
    model = _model(nodes, w)
    qdq, names, amax, _ = _quantized(model, x)
    assert amax["s1"] * ratio == pytest.approx(amax["s0"], rel=1e-5) and amax["ya"] == amax["s0"]
    fast = make_fast(qdq, names, amax)
    inits = {i.name: float(numpy_helper.to_array(i)) for i in fast.model.graph.initializer if not i.dims}
    scale = {t: inits[fast.names[t].scale] for t in ("ya", "s0", "s1")}
    changed = {c.tensor: c for c in fast.changes}
    regridded = ratio <= limit
    assert scale["s0"] == scale["ya"]  # the wider half's own grid is the input's: nothing changes
    assert (scale["s1"] == scale["ya"]) is regridded
    assert ("s1" in changed) is regridded and "s0" not in changed
    if regridded:
        assert changed["s1"].op == "Split" and not changed["s1"].new and changed["s1"].readers == ["conv_c"]
    # float64 reference of the fast model: Conv a's output rounded on its grid, then split
    dw = _dequantized_weights(qdq)
    xq = _fq(x.astype(np.float64), amax["x"])
    yaq = _fq(_conv1x1(xq, dw["conv_a"], w["ba"]), amax["ya"])
    s1 = yaq[:, C // 2 :] if regridded else _fq(yaq[:, C // 2 :], amax["s1"])  # rounded again on its grid
    yb, yc = _conv1x1(yaq[:, : C // 2], dw["conv_b"], w["bb"]), _conv1x1(s1, dw["conv_c"], w["bc"])
    reference = _fq(yb, amax["yb"]) + _fq(yc, amax["yc"])  # both convolutions run in integer
    (got,) = _session(fast.model, optimize=False).run(None, {"x": x})
    assert np.linalg.norm(got - reference) / np.linalg.norm(reference) < 1e-5
    assert any(n.op_type == "Add" and n.output[0] == "s1" for n in fast.model.graph.node) is not regridded
    # what ONNX Runtime's optimizer makes of it: the Split reads Conv a's codes, and an integer Add moves
    # the finer half to its grid
    saved = tmp_path / "optimized.onnx"
    flavour = to_onnxruntime_flavour(fast.model, fast.names)
    _session(flavour, optimize=True, saved=saved)
    graph = onnx.load(str(saved)).graph
    writer = {o: n.op_type for n in graph.node for o in n.output}
    (split,) = [n for n in graph.node if n.op_type == "Split"]
    assert writer[split.input[0]] == "QLinearConv"
    assert (
        "QLinearAdd" in [writer[x] for n in graph.node if n.op_type == "QLinearConv" for x in n.input[:1]]
    ) is (not regridded)
    (optimized,) = _session(flavour, optimize=True).run(None, {"x": x})
    assert np.linalg.norm(optimized - got) / np.linalg.norm(got) < 2e-2  # int32 bias may tip a code


def test_a_short_softmax_behind_a_conv_is_written_out_and_said(tmp_path: Path) -> None:
    """Conv -> Softmax over the 4 channels: the fast flavour writes the Softmax as its element-wise ops
    (the same outputs as the judged model's, to float rounding), records it, and the summary says so."""
    from quantbench.cli.summary import _flavour_lines

    rng = np.random.default_rng(8)
    nodes = [_conv("a", "x", "y"), helper.make_node("Softmax", ["y"], ["out"], axis=1, name="soft")]
    w = _weights(rng, "a")
    model = _model(nodes, w)
    x = rng.normal(0, 1, (2, C, H, H)).astype(np.float32)
    qdq, names, amax, _ = _quantized(model, x)
    fast = make_fast(qdq, names, amax)
    assert fast.rewritten == ["soft: Softmax over axis 1 of 4 (4 values) as its element-wise ops"]
    assert "Softmax" not in {n.op_type for n in fast.model.graph.node}
    assert fast.details()["rewritten"] == fast.rewritten
    assert [c.tensor for c in fast.changes] == ["y"]  # the conv runs in integer, its output rounded
    # float64 reference: the softmax over channels of the rounded conv output
    yq = _fq(
        _conv1x1(_fq(x.astype(np.float64), amax["x"]), _dequantized_weights(qdq)["conv_a"], w["ba"]),
        amax["y"],
    )
    e = np.exp(yq - yq.max(axis=1, keepdims=True))
    (got,) = _session(fast.model, optimize=False).run(None, {"x": x})
    assert np.abs(got - e / e.sum(axis=1, keepdims=True)).max() < 1e-6
    results = {"variants": [{"name": "int8-minmax", "cpu_flavour": fast.details()}]}
    (line,) = _flavour_lines(results)
    assert "1 Softmax over a short axis written as element-wise ops" in line


def test_a_regridded_half_lists_its_judged_and_its_integer_readers(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Conv a -> Split -> s1 read by Conv b and by a Concat with Conv b's output, which the judged model
    reads in float and the fast one in integer: s1's record names both readers of its new grid."""
    monkeypatch.setattr(onnxruntime_fast, "REGRID_LIMIT", 2.0)
    rng = np.random.default_rng(23)
    half = C // 2
    w = {
        "wa": rng.normal(0, 0.6, (C, C, 1, 1)),
        "ba": np.zeros(C),
        "wb": rng.normal(0, 0.6, (half, half, 1, 1)),
        "bb": rng.normal(0, 0.3, half),
        "wc": rng.normal(0, 0.6, (C, C, 1, 1)),
        "bc": rng.normal(0, 0.3, C),
    }
    x = rng.normal(0, 1, (2, C, H, H)).astype(np.float32)
    ya = _conv1x1(x.astype(np.float64), w["wa"], w["ba"])
    w["wa"][half:] *= np.abs(ya[:, :half]).max() / np.abs(ya[:, half:]).max() / 1.5
    nodes = [
        _conv("a", "x", "ya"),
        helper.make_node("Split", ["ya"], ["s0", "s1"], axis=1),
        _conv("b", "s1", "yb"),
        helper.make_node("Concat", ["yb", "s1"], ["s"], axis=1, name="concat"),
        _conv("c", "s", "out"),
    ]
    qdq, names, amax, _ = _quantized(_model(nodes, w), x)
    changed = {c.tensor: c for c in make_fast(qdq, names, amax).changes}
    judged_readers = [n.name for n in qdq.graph.node if names["s1"].dequantized in n.input]
    assert judged_readers == ["conv_b"]  # the judged model's Concat reads s1 in float
    assert sorted(changed["s1"].readers) == ["concat", "conv_b"]


def test_a_division_by_a_constant_is_taken_into_the_quantization_before_it(tmp_path: Path) -> None:
    """HardSwish as written out, ``y * clip(y + 3, 0, 6) / 6``: the Mul's output would be rounded anew and
    divided in float; instead the Mul quantizes onto the Div output's grid at six times its step, so that
    output is rounded once (against numpy's rounding of the Mul's float output / 6) and no Div is left."""
    rng = np.random.default_rng(11)
    w = _weights(rng, "a", "b")
    divisor = numpy_helper.from_array(np.array([6.0], np.float32))  # of shape (1,), in a Constant node
    nodes = [
        helper.make_node("Constant", [], ["divisor"], value=divisor),
        _conv("a", "x", "y"),
        *_hard_swish_product(w, "y", "m"),
        helper.make_node("Div", ["m", "divisor"], ["h"]),
        _conv("b", "h", "out"),
    ]
    model = _model(nodes, w)
    x = rng.normal(0, 2, (2, C, H, H)).astype(np.float32)
    qdq, names, amax, _ = _quantized(model, x)
    fast = make_fast(qdq, names, amax)
    assert "m" not in {c.tensor for c in fast.changes} and "m" not in fast.names
    assert "Div" not in [n.op_type for n in fast.model.graph.node]
    assert fast.divisions == ["Div:h: the division by 6 taken into m's quantization"] and not fast.rewritten
    assert fast.details()["divisions"] == fast.divisions
    from quantbench.cli.summary import _flavour_lines

    (line,) = _flavour_lines({"variants": [{"name": "int8-minmax", "cpu_flavour": fast.details()}]})
    assert "1 division by a constant taken into the quantization before it" in line and "Softmax" not in line
    probe = onnx.ModelProto()
    probe.CopyFrom(fast.model)
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in ("m", names["h"].dequantized))
    _, m, h = _session(probe, optimize=False).run(None, {"x": x})
    step = np.float64(np.float32(amax["h"] / 127.0))
    expected = np.clip(np.rint(m.astype(np.float64) / 6 / step), -128, 127) * step
    assert np.mean(np.isclose(h, expected, rtol=0, atol=1e-6)) >= 0.999  # a tie may round either way
    assert np.abs(h - expected).max() <= step * 1.001
    flavour = to_onnxruntime_flavour(fast.model, fast.names)
    ops = _ops(flavour, tmp_path)
    assert ops["Div"] == 0 and ops["QLinearMul"] == 1 and ops["QLinearAdd"] == 1
    (expected_out,) = _session(fast.model, optimize=False).run(None, {"x": x})
    (got,) = _session(flavour, optimize=True).run(None, {"x": x})
    assert np.linalg.norm(got - expected_out) / np.linalg.norm(expected_out) < 2e-2
