"""What keeps memory flat on large inputs: tensors exposed in groups for the calibration pass and the
FP32 means, batches kept in temporary files beyond a limit, bias correction's cuts spilled alike."""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import quantbench.export.bias_correction as bias_correction
from quantbench.calibration import exposure as exposure_module
from quantbench.calibration.collect import collect_histograms
from quantbench.calibration.exposure import Exposure, plan_groups, tensor_bytes
from quantbench.data.store import BatchStore, keep
from quantbench.errors import QuantbenchError
from quantbench.export.bias_correction import correct_biases
from tests.test_bias_correction import branchy_qdq
from tests.test_histograms import assert_matches_reference


def chain() -> onnx.ModelProto:
    """x [N, 2, H, W] -> Relu -> a -> Mul(a, a) -> m -> MaxPool 2x2 -> p -> Concat(p, p) -> c -> Neg -> y:
    dynamic height and width, tensors of different sizes."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Mul", ["a", "a"], ["m"]),
        helper.make_node("MaxPool", ["m"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Concat", ["p", "p"], ["c"], axis=1),
        helper.make_node("Neg", ["c"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "h", "w"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def numpy_chain(x: np.ndarray) -> dict[str, np.ndarray]:
    a = np.maximum(x, 0)
    m = a * a
    n, ch, h, w = m.shape
    p = m.reshape(n, ch, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    c = np.concatenate([p, p], axis=1)
    return {"x": x, "a": a, "m": m, "p": p, "c": c, "y": -c}


def test_tensor_bytes_follow_the_batch_shapes_and_groups_stay_within_the_budget() -> None:
    model = chain()
    names = ["a", "m", "p", "c", "y"]
    sizes = tensor_bytes(model, {"x": (3, 2, 8, 12)}, names)
    assert sizes == [4 * 3 * 2 * 8 * 12] * 2 + [4 * 3 * 2 * 4 * 6] + [4 * 3 * 4 * 4 * 6] * 2
    assert plan_groups(names, [10, 10, 5, 20, 20], 25) == [["a", "m", "p"], ["c"], ["y"]]
    assert plan_groups(names, [30, 1, 1, 1, 1], 25) == [["a"], ["m", "p", "c", "y"]]  # a larger one alone


@pytest.mark.parametrize("budget", [1 << 30, 800])
def test_histograms_are_the_same_whether_tensors_are_run_together_or_in_groups(budget: int) -> None:
    model = chain()
    rng = np.random.default_rng(3)
    shapes = [(2, 2, 8, 12), (1, 2, 8, 12), (2, 2, 16, 20)]  # a larger batch shape re-plans the groups
    batches = [{"x": rng.normal(0, 2, shape).astype(np.float32)} for shape in shapes]
    names = ["x", "a", "m", "p", "c", "y"]
    exposure = Exposure(model, names, ["x"], threads=1, budget=budget)
    collection = collect_histograms(exposure, iter(batches), workers=2)
    assert collection.samples == 5
    expected = [numpy_chain(batch["x"]) for batch in batches]
    for name in names:
        assert_matches_reference(collection.histograms[name], [e[name].astype(np.float32) for e in expected])
    if budget < 1 << 20:  # per sample: a, m 768 bytes, p 192, c and y 384 at 8x12; p 640 at 16x20
        assert exposure.groups == [["a"], ["m"], ["p"], ["c"], ["y"]]  # re-planned on the last batch
        split = exposure._split
        assert split is not None and [part.group for part in split.parts] == exposure.groups
        assert [part.carried for part in split.parts] == [["a"], ["m"], ["p"], ["c"], []]
        assert [len(part.nodes) for part in split.parts] == [1, 1, 1, 1, 1]  # each node runs once
        first = Exposure(model, names, ["x"], threads=1, budget=budget)
        list(first.runs(batches[0]))
        assert first.groups == [["a"], ["m"], ["p", "c"], ["y"]]
        list(first.runs(batches[1]))  # a smaller batch keeps the groups
        assert first.groups == [["a"], ["m"], ["p", "c"], ["y"]]
    else:
        assert exposure.groups == [names[1:]]


def test_a_failing_batch_is_a_one_line_error_naming_the_purpose() -> None:
    exposure = Exposure(chain(), ["a"], ["x"], threads=1, purpose="bias correction")
    with pytest.raises(QuantbenchError, match="ONNX Runtime failed on a batch for bias correction") as err:
        list(exposure.runs({"x": np.zeros((1, 2, 3), np.float32)}))  # rank 3 for a rank-4 input
    assert "\n" not in str(err.value)


def test_store_keeps_arrays_to_the_bit_in_memory_up_to_its_limit_then_in_files() -> None:
    rng = np.random.default_rng(0)
    batches = [
        {"x": rng.normal(size=(2, 100)).astype(np.float32), "k": np.arange(5, dtype=np.int8)}
        for _ in range(4)
    ]
    store = keep(batches, limit=2 * 800 + 5)  # the first batch's arrays and the second's x
    assert store.in_memory == 2 * 800 + 5 and store.nbytes == 4 * 805 and store.spilled and len(store) == 4
    for got, want in zip(store, batches, strict=True):
        assert set(got) == {"x", "k"}
        for name in want:
            assert got[name].dtype == want[name].dtype
            np.testing.assert_array_equal(got[name], want[name])
    folder = store._folder
    assert folder is not None and len(list(folder.iterdir())) == 5  # 2 k's and 3 x's went to files
    store.drop(3, ["x"])
    store.update(0, {"x": np.ones(3, np.float64)})
    assert store.names(3) == ["k"] and store.get(0, ["x"])["x"].tolist() == [1.0, 1.0, 1.0]
    assert store.nbytes == 4 * 805 - 800 - 800 + 24 and len(list(folder.iterdir())) == 4
    del store
    gc.collect()
    assert not folder.exists()  # the folder goes with the store


def test_store_that_cannot_write_its_files_is_a_one_line_error(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    store = BatchStore(limit=0)
    with pytest.raises(QuantbenchError, match=r"cannot write the calibration batches .* TMPDIR") as err:
        store.append({"x": np.zeros(4, np.float32)})
    assert "\n" not in str(err.value) and str(tmp_path / "missing") in str(err.value)


def test_bias_correction_spilled_to_files_and_with_grouped_fp32_means_gives_the_same_model(
    monkeypatch,
) -> None:  # type: ignore[no-untyped-def]
    model, trt, targets, batches = branchy_qdq()
    in_memory = correct_biases(model, trt, targets, batches)
    monkeypatch.setattr(bias_correction, "CACHE_BYTES", 0)  # every cut tensor in a file
    monkeypatch.setattr(exposure_module, "GROUP_BYTES", 64)  # the FP32 means one output at a time
    written: list[Path] = []
    save = np.save

    def recording(path, array, **kwargs):  # type: ignore[no-untyped-def]
        written.append(Path(path))
        save(path, array, **kwargs)

    monkeypatch.setattr(np, "save", recording)
    spilled = correct_biases(model, trt, targets, keep(batches, limit=0))
    assert len(written) > 2 * len(batches)  # the inputs and the cuts went through files
    assert spilled.model.SerializeToString() == in_memory.model.SerializeToString()


def test_fp32_means_are_measured_once_for_every_model_that_shares_them(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    model, trt, targets, batches = branchy_qdq()
    shared: dict[str, np.ndarray] = {}
    first = correct_biases(model, trt, targets, batches, fp32_means=shared)
    assert sorted(shared) == sorted(targets)

    def no_second_pass(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("FP32 means measured again")

    monkeypatch.setattr(bias_correction, "_fp32_means", no_second_pass)
    second = correct_biases(model, trt, targets, batches, fp32_means=shared)
    assert second.model.SerializeToString() == first.model.SerializeToString()


def test_split_model_returns_each_tensor_once_across_multi_output_nodes_and_constants() -> None:
    """A Split whose outputs fall in two groups, a shape from a Constant node read late, a tensor carried
    past a part: every tensor comes back once, equal to numpy's."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node(
            "Constant", [], ["shape"], value=helper.make_tensor("s", TensorProto.INT64, [2], [0, -1])
        ),
        helper.make_node("Split", ["a"], ["s0", "s1"], axis=1, num_outputs=2),
        helper.make_node("Add", ["s0", "s0"], ["d"]),
        helper.make_node("Reshape", ["s1", "shape"], ["r"]),
        helper.make_node("Mul", ["d", "s1"], ["m"]),
    ]
    graph = helper.make_graph(
        nodes,
        "split",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3, 5])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("r", "m")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    x = np.random.default_rng(1).normal(size=(2, 4, 3, 5)).astype(np.float32)
    a = np.maximum(x, 0)
    s0, s1 = a[:, :2], a[:, 2:]
    d = s0 + s0
    expected = {"a": a, "s0": s0, "s1": s1, "d": d, "r": s1.reshape(2, -1), "m": d * s1}
    names = ["a", "s0", "s1", "d", "r", "m"]
    exposure = Exposure(model, names, ["x"], threads=1, budget=130)  # a: 240 bytes a sample, the others 120
    got: dict[str, np.ndarray] = {}
    for values in exposure.runs({"x": x}):
        assert not set(values) & set(got)
        got.update((name, np.array(array)) for name, (array, _) in values.items())
    assert exposure.groups == [[name] for name in names] and sorted(got) == sorted(names)
    assert exposure._split is not None and [p.group for p in exposure._split.parts][1] == ["s0", "s1"]
    for name in names:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
