"""Sequential bias correction: a float64 reference, segmented against whole-model passes, the real CNN."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import quantbench.export.bias_correction as bias_correction
import quantbench.export.passes as passes
from quantbench.config import PreprocessSpec
from quantbench.errors import QuantbenchError
from quantbench.evaluation.tasks import Task
from quantbench.export.bias_correction import correct_biases, correct_if_better
from quantbench.export.judge import CorrectionData
from quantbench.export.qdq import build_qdq, plan_qdq
from quantbench.model import expose_tensors
from tests.test_qdq import FakeQuant, conv2d, inputs, make_model, quantized, run, weights

# --- the float64 reference: the obvious loop, one fake-quantized forward pass per corrected node ----------


def forward(
    case: str, x: np.ndarray, w: dict[str, np.ndarray], b: dict[str, np.ndarray], q: FakeQuant | None
):
    """Outputs of the corrected nodes, float64; fake-quantized like TensorRT unless ``q`` is None."""
    act = (lambda v, name: q.act(v, name)) if q is not None else (lambda v, name: v.astype(np.float64))
    wq = (lambda v, axis: q.w(v, axis)) if q is not None else (lambda v, axis: v.astype(np.float64))
    if case == "relu":
        y1 = conv2d(act(x, "x"), wq(w["w1"], 0), b["y1"])
        return {"y1": y1, "y": conv2d(act(np.maximum(y1, 0), "a1"), wq(w["w2"], 0), b["y"])}
    if case == "residual":
        ya = conv2d(act(x, "x"), wq(w["wa"], 0), b["ya"])
        return {"ya": ya, "yb": conv2d(act(np.maximum(ya, 0), "ra"), wq(w["wb"], 0), b["yb"])}
    h = act(x, "x") @ wq(w["w1"], 0).T + b["h"]  # gemm
    return {"h": h, "y": act(np.maximum(h, 0), "r") @ wq(w["w2"], 1) + b["y"]}


BIASES = {
    "relu": {"y1": "b1", "y": "b2"},
    "residual": {"ya": "ba", "yb": "bb"},
    "gemm": {"h": "b1", "y": "b2"},
}


def channel_mean(y: np.ndarray) -> np.ndarray:
    return y.mean(axis=(0, 2, 3)) if y.ndim == 4 else y.mean(axis=0)


@pytest.mark.parametrize("case", ["relu", "residual", "gemm"])
def test_corrected_biases_equal_the_sequential_float64_reference(case: str) -> None:
    model, w, amax, _, trt, _, _ = quantized(case)
    batches = [inputs(model, seed=20 + k, std=1.5, batch=4) for k in range(2)]
    x = np.concatenate([batch["x"] for batch in batches])
    bias = {out: w[name].astype(np.float64) for out, name in BIASES[case].items()}
    fp32 = forward(case, x, w, bias, None)
    q = FakeQuant(amax)
    for out in BIASES[case]:  # in graph order, each measured with the earlier corrections applied
        bias[out] = bias[out] + channel_mean(fp32[out]) - channel_mean(forward(case, x, w, bias, q)[out])

    corrected = correct_biases(model, trt, list(BIASES[case]), batches)
    got = {i.name: numpy_helper.to_array(i) for i in corrected.model.graph.initializer}
    for out, name in BIASES[case].items():
        assert got[name].dtype == np.float32
        tolerance = 1e-6 * np.abs(w[name]).max()  # float32 sums; a rounding flip would move a mean by ~1e-4
        np.testing.assert_allclose(got[name], bias[out], rtol=0, atol=tolerance)
        assert np.abs(bias[out] - w[name]).max() > 100 * tolerance  # a real change
    assert [c.output for c in corrected.nodes] == list(BIASES[case]) and corrected.samples == 8
    unchanged = {i.name: numpy_helper.to_array(i) for i in trt.graph.initializer}
    for name in BIASES[case].values():
        np.testing.assert_array_equal(unchanged[name], w[name])  # the input model is left as it was


# --- a graph with two inputs, a residual, a bias-less Conv, a shared bias and a Gemm ------------------------


def branchy() -> onnx.ModelProto:
    """x -> Conv(b1) -> Relu -> r1 -> Conv(no bias) + r1 -> Relu -> r2;  u -> Conv(b1 again) -> c3;
    r2 * c3 -> Conv(b4) -> GlobalAveragePool -> Flatten -> Gemm(bf) -> y."""
    w = weights(5, w1=((4, 4, 3, 3), 0.4), b1=((4,), 0.3), w2=((4, 4, 3, 3), 0.3), w3=((4, 3, 3, 3), 0.4))
    w |= weights(6, w4=((6, 4, 3, 3), 0.3), b4=((6,), 0.3), wf=((10, 6), 0.5), bf=((10,), 0.2))
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1] * 4),
        helper.make_node("Add", ["c2", "r1"], ["s2"]),
        helper.make_node("Relu", ["s2"], ["r2"]),
        helper.make_node("Conv", ["u", "w3", "b1"], ["c3"], pads=[1] * 4),
        helper.make_node("Mul", ["r2", "c3"], ["m"]),
        helper.make_node("Conv", ["m", "w4", "b4"], ["c4"], pads=[1] * 4),
        helper.make_node("GlobalAveragePool", ["c4"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1, beta=0.5),
    ]
    return make_model(nodes, {"x": ["N", 4, 10, 10], "u": ["N", 3, 10, 10]}, ["N", 10], w)


def branchy_qdq() -> tuple[onnx.ModelProto, onnx.ModelProto, list[str], list[dict[str, np.ndarray]]]:
    model = branchy()
    tensors = ["x", "u", "r1", "r2", "m", "f"]
    values = run(expose_tensors(model, tensors), inputs(model, seed=30, batch=8))
    amax = {name: float(np.abs(v).max()) for name, v in zip(tensors, values)}
    plan = plan_qdq(model, amax)
    trt, _ = build_qdq(model, amax, plan)
    targets = [model.graph.node[i].output[0] for i in plan.quantized_nodes]
    return model, trt, targets, [inputs(model, seed=40 + k, batch=3) for k in range(3)]


def test_segments_give_the_same_model_as_whole_model_passes() -> None:
    model, trt, targets, batches = branchy_qdq()
    assert targets == ["c1", "c2", "c3", "c4", "y"]
    segmented = correct_biases(model, trt, targets, batches)
    whole = correct_biases(model, trt, targets, batches, max_live=0)
    assert whole.segments == 1 and segmented.segments >= len(targets)
    assert segmented.model.SerializeToString() == whole.model.SerializeToString()
    assert [c.output for c in segmented.nodes] == targets
    assert [c.added_bias for c in segmented.nodes] == [False, True, False, False, False]
    inits = {i.name: numpy_helper.to_array(i) for i in segmented.model.graph.initializer}
    convs = {n.output[0]: n for n in segmented.model.graph.node if n.op_type in ("Conv", "Gemm")}
    assert len(convs["c2"].input) == 3 and inits[convs["c2"].input[2]].shape == (4,)
    assert convs["c1"].input[2] != convs["c3"].input[2]  # the shared bias was split
    onnx.checker.check_model(segmented.model, full_check=True)


def test_tensors_without_a_batch_axis_never_cross_a_cut() -> None:
    """A shape from Shape(x) and a float scale computed from the input's height are made at the top and
    read at the bottom, so every position between the corrected Convs has them live: every piece must
    compute them again, so no cut may keep them (sliced as if batched, the 2-vector would keep only its
    first entry and the 0-d scale cannot be sliced)."""
    w = weights(7, w1=((4, 3, 3, 3), 0.5), b1=((4,), 0.3), w2=((4, 4, 3, 3), 0.4), b2=((4,), 0.3))
    w |= {"zero": np.array([0], np.int64), "two": np.array(2, np.int64), "flat": np.array([-1], np.int64)}
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Concat", ["n", "flat"], ["shape"], axis=0),
        helper.make_node("Gather", ["s", "two"], ["h"], axis=0),
        helper.make_node("Cast", ["h"], ["hf"], to=TensorProto.FLOAT),
        helper.make_node("Reciprocal", ["hf"], ["scale"]),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1] * 4),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Mul", ["r2", "scale"], ["m2"]),
        helper.make_node("Reshape", ["m2", "shape"], ["y"]),
    ]
    model = make_model(nodes, {"x": ["N", 3, 6, 6]}, ["N", 144], w)
    tensors = ["x", "r1", "r2"]
    values = run(expose_tensors(model, tensors), inputs(model, seed=3, batch=5))
    amax = {name: float(np.abs(v).max()) for name, v in zip(tensors, values)}
    trt, _ = build_qdq(model, amax, plan_qdq(model, amax))
    batches = [inputs(model, seed=50 + k, batch=5) for k in range(2)]  # pieces of 2, 2 and 1
    segmented = correct_biases(model, trt, ["c1", "c2"], batches, max_live=16)
    whole = correct_biases(model, trt, ["c1", "c2"], batches, max_live=0)
    assert segmented.model.SerializeToString() == whole.model.SerializeToString()


def test_cuts_keep_int8_codes_rather_than_the_values_dequantized_from_them(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Between two corrected nodes the cut goes where the live tensors take the fewest bytes: the
    quantized codes are kept, never the float tensors a DequantizeLinear makes of them."""
    from quantbench.export import bias_correction

    model, trt, targets, batches = branchy_qdq()
    dequantized = {n.output[0] for n in trt.graph.node if n.op_type == "DequantizeLinear"}
    kept: list[dict[str, np.dtype]] = []
    advance = bias_correction._Segments.advance

    def recording(self, segment, session, end):  # type: ignore[no-untyped-def]
        advance(self, segment, session, end)
        kept.append({name: value.dtype for name, value in self.cache[0].items()})

    monkeypatch.setattr(bias_correction._Segments, "advance", recording)
    correct_biases(model, trt, targets, batches)
    crossing = {name: dtype for cut in kept for name, dtype in cut.items()}
    assert not set(crossing) & dequantized
    assert any(dtype == np.int8 for dtype in crossing.values())


def test_biases_written_as_constant_nodes_are_corrected_like_initializers() -> None:
    model, trt, targets, batches = branchy_qdq()
    as_initializers = correct_biases(model, trt, targets, batches)
    gemm = next(n for n in trt.graph.node if n.op_type == "Gemm")
    bias = gemm.input[2]
    constant = onnx.ModelProto()
    constant.CopyFrom(trt)
    init = next(i for i in constant.graph.initializer if i.name == bias)
    constant.graph.node.insert(0, helper.make_node("Constant", [], [bias], value=init))
    constant.graph.initializer.remove(init)
    as_constants = correct_biases(model, constant, targets, batches)
    assert "y" in [c.output for c in as_constants.nodes] and not as_constants.skipped
    corrected = {i.name: numpy_helper.to_array(i) for i in as_constants.model.graph.initializer}
    expected = {i.name: numpy_helper.to_array(i) for i in as_initializers.model.graph.initializer}
    np.testing.assert_allclose(corrected[bias], expected[bias], rtol=1e-6, atol=1e-7)
    assert not any(n.op_type == "Constant" for n in as_constants.model.graph.node)


def test_every_corrected_output_has_the_fp32_channel_means() -> None:
    model, trt, targets, batches = branchy_qdq()

    def mean_errors(qdq: onnx.ModelProto) -> dict[str, np.ndarray]:
        errors = {}
        for feeds in batches:
            fp32 = run(expose_tensors(model, targets), feeds)
            # as written: ONNX Runtime's optimizer rounds constant biases to int32 accumulator steps
            int8 = run(expose_tensors(qdq, targets), feeds, optimize=False)
            for name, a, b in zip(targets, fp32, int8):
                errors[name] = errors.get(name, 0) + channel_mean(a.astype(np.float64) - b) / len(batches)
        return errors

    before, after = mean_errors(trt), mean_errors(correct_biases(model, trt, targets, batches).model)
    for name in targets:
        assert np.abs(before[name]).max() > 1e-4, name
        assert np.abs(after[name]).max() < 1e-3 * np.abs(before[name]).max(), name


def _rel_l2(model: onnx.ModelProto, qdq: onnx.ModelProto, batches: list[dict[str, np.ndarray]]) -> float:
    """float64 relative L2 of every output over the batches, both models run here (the Q/DQ model as
    written: no graph optimization refolds its pairs)."""
    err = ref = 0.0
    for feeds in batches:
        for want, got in zip(run(model, feeds), run(qdq, feeds, optimize=False)):
            err += float(np.sum((got.astype(np.float64) - want) ** 2))
            ref += float(np.sum(want.astype(np.float64) ** 2))
    return float(np.sqrt(err / ref))


def test_correction_is_kept_when_it_lowers_the_output_error() -> None:
    model, trt, targets, batches = branchy_qdq()
    kept = correct_if_better(model, trt, targets, CorrectionData(batches, batches, held_apart=False))
    assert not kept.rejected and kept.output_rel_l2 is not None
    before, after = kept.output_rel_l2
    assert before == pytest.approx(_rel_l2(model, trt, batches), rel=1e-6)
    assert after == pytest.approx(_rel_l2(model, kept.model, batches), rel=1e-6)
    assert after < before
    plain = correct_biases(model, trt, targets, batches).model
    assert kept.model.SerializeToString() == plain.SerializeToString()
    assert kept.details()["applied"] is True


def test_correction_that_raises_the_output_error_is_rejected(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    model, trt, targets, batches = branchy_qdq()
    real = bias_correction.correct_biases

    def harmful(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = real(*args, **kwargs)
        for init in result.model.graph.initializer:  # push every corrected bias far off
            if init.name.endswith("_bias") or init.name.startswith("b"):
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 50.0, init.name))
        return result

    monkeypatch.setattr(bias_correction, "correct_biases", harmful)
    rejected = correct_if_better(model, trt, targets, CorrectionData(batches, batches, held_apart=False))
    assert rejected.rejected and rejected.model is trt
    before, after = rejected.output_rel_l2  # type: ignore[misc]
    assert after > before == pytest.approx(_rel_l2(model, trt, batches), rel=1e-6)
    assert rejected.details()["applied"] is False


def test_a_correction_that_lowers_rel_l2_but_hurts_the_headline_is_rejected(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two channels of very different scale: whole-output relative L2 is the large one's, the headline
    (mean per-channel relative error) sees the small one too."""
    model, trt, targets, batches = branchy_qdq()
    fp32 = [run(model, feeds) for feeds in batches]
    scale = np.ones_like(fp32[0][0])
    scale[:, 1:] = 1e-3  # every channel but the first is tiny next to it
    reference = [[out * scale for out in outs] for outs in fp32]
    before = [[ref * 1.03 for ref in outs] for outs in reference]  # 3 % off everywhere
    after = [[ref.copy() for ref in outs] for outs in reference]
    for outs in after:  # the large channel exact, the tiny ones six times their value
        outs[0][:, 1:] *= 6.0
    calls = iter([reference, before, after])

    corrected = bias_correction.BiasCorrection(
        model, [bias_correction.NodeCorrection("conv", "c", 1, 0.1, None)]
    )  # stands for the corrected model: only the outputs below decide
    monkeypatch.setattr(bias_correction, "correct_biases", lambda *a, **k: corrected)
    monkeypatch.setattr(passes, "session", lambda *a, **k: _Replay(next(calls)))  # FP32, before, after
    data = CorrectionData(batches, batches, held_apart=False, task=Task(("generic",)))  # a regression output
    result = correct_if_better(model, trt, targets, data)
    l2_before, l2_after = result.output_rel_l2  # type: ignore[misc]
    assert l2_after < l2_before  # the whole-tensor figure says the correction helped ...
    decision = result.decision
    assert decision is not None and decision["metric"] == "channel_rel_l2_mean"
    assert decision["after"] > decision["before"]  # ... the headline says it did not
    assert result.rejected and result.model is trt and result.details()["applied"] is False


class _Replay:
    """A session that answers each batch with stored outputs, in whatever slices it is run on."""

    def __init__(self, outputs: list[list[np.ndarray]]) -> None:
        self._outputs = outputs
        self._count = len(outputs[0])
        self._batch, self._offset = 0, 0

    def get_outputs(self) -> list[Any]:
        from types import SimpleNamespace

        return [SimpleNamespace(name=f"out{i}") for i in range(self._count)]

    def run(self, names: Any, feeds: Any) -> list[np.ndarray]:
        size = len(next(iter(feeds.values())))
        stored = self._outputs[self._batch]
        got = [value[self._offset : self._offset + size] for value in stored]
        self._offset += size
        if self._offset >= len(stored[0]):
            self._batch, self._offset = self._batch + 1, 0
        return got


def test_bad_input_is_a_one_line_error() -> None:
    model, trt, targets, batches = branchy_qdq()
    for args, message in [
        ((["nope"], batches), "no node of the model outputs 'nope'"),
        ((targets, []), "at least one batch"),
        ((targets, [{"x": batches[0]["x"]}]), "no value for input 'u'"),
    ]:
        with pytest.raises(QuantbenchError, match=message) as exc:
            correct_biases(model, trt, *args)  # type: ignore[arg-type]
        assert "\n" not in str(exc.value)


def test_matmul_is_skipped_with_its_reason() -> None:
    model, *_, trt, _, _ = quantized("matmul")
    result = correct_biases(model, trt, ["m", "y"], [inputs(model, seed=3)])
    assert result.nodes == [] and [reason for _, reason in result.skipped] == ["MatMul has no bias input"] * 2
    assert result.model.SerializeToString() == trt.SerializeToString()


# --- the real CNN -------------------------------------------------------------------------------------------


def test_real_cnn_held_out_error_drops(sample, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import quantbench
    from quantbench.data import open_dataset
    from quantbench.model import input_specs

    model_path, images = sample
    calibration = quantbench.calibrate(
        model_path, images, n=32, methods=["percentile"], preset="inception", out=tmp_path
    )
    model = onnx.load(str(model_path))
    amax = calibration.ranges["percentile"].amax
    plan = plan_qdq(model, amax)
    trt, _ = build_qdq(model, amax, plan)
    dataset = open_dataset(images, input_specs(model), PreprocessSpec(preset="inception"))
    feeds = [b.inputs for b in dataset.batches(32, 0, 16)]
    held_out = np.concatenate(
        [b.inputs["input"] for b in dataset.batches(40, 0, 40, start=calibration.next_start)]
    )
    targets = [model.graph.node[i].output[0] for i in plan.quantized_nodes]
    result = correct_biases(model, trt, targets, feeds)
    assert len(result.nodes) == len(targets) == 50 and not result.skipped

    reference = run(model, {"input": held_out})[0]

    def rel_l2(qdq: onnx.ModelProto) -> float:
        out = run(qdq, {"input": held_out})[0]
        return float(np.linalg.norm(out - reference) / np.linalg.norm(reference))

    before, after = rel_l2(trt), rel_l2(result.model)
    assert after < 0.85 * before, (before, after)


# --- quantbench run ---------------------------------------------------------------------------------------


def test_run_corrects_by_default_and_records_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import quantbench
    from tests.conftest import photo_folder
    from tests.test_run import FAST, tiny_classifier

    model, images = tiny_classifier(tmp_path / "tiny.onnx"), photo_folder(tmp_path / "images", 24, size=20)
    common = {"precisions": ["int8"], "methods": ["percentile"], "out": tmp_path, **FAST}
    on = quantbench.run(model, images, n=16, bias_correction_images=8, **common).results
    (variant,) = [v for v in on["variants"] if v["precision"] == "int8"]
    details = variant["bias_correction"]
    assert variant["name"] == "int8-percentile" and details["applied"] and details["images"] == 8
    assert (
        details["nodes"] == 3 and details["added_biases"] == 1 and details["largest_relative_correction"] > 0
    )
    arguments = on["manifest"]["arguments"]
    assert arguments["bias_correction"] is True and arguments["bias_correction_images"] == 8

    off = quantbench.run(model, images, n=16, bias_correction=False, **common).results
    assert off["variants"][-1]["bias_correction"] == {"applied": False}
    assert off["manifest"]["arguments"]["bias_correction"] is False
    text = next(tmp_path.glob("*/ranges/percentile.txt"))
    imported = quantbench.run(model, eval_images=images, ranges=text, **{**common, "methods": []}).results
    assert imported["variants"][-1]["bias_correction"] == {"applied": False}
    assert any("bias correction skipped" in note for note in imported["notes"])
