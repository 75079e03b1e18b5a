"""Graph helpers (quantbench.graph) and the one relative L2 / SNR (quantbench.evaluation.errors).

Graph queries are checked against answers written out by hand for a small graph; the error figures
against float64 numpy computed here from the arrays themselves.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantbench.evaluation.errors import CHUNK, ErrorEnergy, relative_l2, snr_db, sum_squares_float32
from quantbench.graph import (
    cleanup,
    constant_tensors,
    constant_values,
    consumers,
    drop_unused_initializers,
    initializers,
    node_reads,
    producers,
    reader_nodes,
    set_initializer,
    tensor_names,
    unique_name,
)

F32 = TensorProto.FLOAT


def small_graph() -> onnx.GraphProto:
    """x -> Mul(x, x) -> sq;  Clip(sq, '', hi) -> c;  Add(c, w) -> y;  two Constants, one unused weight."""
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["sq"], "square"),
        helper.make_node("Constant", [], ["hi"], value=numpy_helper.from_array(np.array(6.0, np.float32))),
        helper.make_node("Constant", [], ["three"], value_float=3.0),
        helper.make_node("Clip", ["sq", "", "hi"], ["c"], "clip"),
        helper.make_node("Add", ["c", "w"], ["y"], "add"),
    ]
    inits = [
        numpy_helper.from_array(np.array([1.0, -2.0], np.float32), "w"),
        numpy_helper.from_array(np.array([7], np.int64), "unused"),
    ]
    return helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", F32, [2]),
            helper.make_tensor_value_info("unused", TensorProto.INT64, [1]),
        ],
        [helper.make_tensor_value_info("y", F32, [2])],
        inits,
    )


def test_producers_and_consumers() -> None:
    graph = small_graph()
    assert producers(graph) == {"sq": 0, "hi": 1, "three": 2, "c": 3, "y": 4}
    assert consumers(graph) == {
        "x": [(0, 0), (0, 1)],
        "sq": [(3, 0)],
        "hi": [(3, 2)],
        "c": [(4, 0)],
        "w": [(4, 1)],
    }
    assert reader_nodes(graph) == {"x": [0, 0], "sq": [3], "hi": [3], "c": [4], "w": [4]}


def test_constant_values_and_initializers() -> None:
    graph = small_graph()
    values = constant_values(graph)
    assert sorted(values) == ["hi", "unused", "w"]  # a Constant written with value_float is not read
    np.testing.assert_array_equal(values["w"], np.array([1.0, -2.0], np.float32))
    assert values["hi"].dtype == np.float32 and float(values["hi"]) == 6.0
    assert values["unused"].dtype == np.int64

    inits = initializers(graph)
    assert list(inits) == ["w", "unused"]
    inits["w"].name = "renamed"  # the protos themselves
    assert graph.initializer[0].name == "renamed"


def test_set_initializer_replaces_value_and_type() -> None:
    graph = small_graph()
    set_initializer(graph, "w", np.arange(3, dtype=np.int32))
    w = graph.initializer[0]
    assert w.name == "w" and w.data_type == TensorProto.INT32 and list(w.dims) == [3]
    np.testing.assert_array_equal(numpy_helper.to_array(w), [0, 1, 2])
    with pytest.raises(KeyError):
        set_initializer(graph, "nope", np.zeros(1))


def test_unique_names() -> None:
    graph = small_graph()
    taken = tensor_names(graph)
    assert {"x", "sq", "hi", "three", "c", "y", "w", "unused"} <= taken
    assert "square" not in taken  # node names are not tensor names
    assert unique_name(taken, "fresh") == "fresh"
    assert unique_name(taken, "fresh") == "fresh_1"
    taken.add("w_2")
    assert unique_name(taken, "w") == "w_1"
    assert unique_name(taken, "w") == "w_3"
    assert {"fresh", "fresh_1", "w_1", "w_3"} <= taken


def test_drop_unused_initializers_keeps_what_nodes_or_outputs_read() -> None:
    graph = small_graph()
    graph.initializer.append(numpy_helper.from_array(np.zeros(2, np.float32), "z"))
    graph.output.append(helper.make_tensor_value_info("z", F32, [2]))  # read by an output only
    drop_unused_initializers(graph)
    assert [i.name for i in graph.initializer] == ["w", "z"]
    assert [v.name for v in graph.input] == ["x"]  # the dropped initializer's graph input goes too


def with_if(graph: onnx.GraphProto) -> onnx.GraphProto:
    """``graph`` plus ``If(cond)`` whose branches read the outer ``k`` (an initializer) and ``x``."""
    branch = lambda name, op: helper.make_graph(  # noqa: E731
        [helper.make_node(op, ["k", "x"], [f"{name}_out"])],
        name,
        [],
        [helper.make_tensor_value_info(f"{name}_out", F32, [2])],
    )
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([3.0, 4.0], np.float32), "k"),
            numpy_helper.from_array(np.array(True), "cond"),
        ]
    )
    node = helper.make_node(
        "If", ["cond"], ["z"], then_branch=branch("then", "Add"), else_branch=branch("else", "Mul")
    )
    graph.node.append(node)
    return graph


def test_node_reads_include_what_subgraphs_read() -> None:
    graph = with_if(small_graph())
    assert node_reads(graph.node[-1]) == ["cond", "k", "x", "k", "x"]
    assert node_reads(graph.node[3]) == ["sq", "hi"]  # empty optional inputs left out


def test_constant_tensors() -> None:
    graph = with_if(small_graph())
    graph.node.extend(
        [
            helper.make_node("Neg", ["w"], ["neg_w"]),
            helper.make_node("Mul", ["neg_w", "hi"], ["scaled"]),
            helper.make_node("Add", ["scaled", "x"], ["mixed"]),
            helper.make_node("RandomNormalLike", ["w"], ["noise"]),
            helper.make_node("Custom", ["w"], ["custom"], domain="example.ops"),
        ]
    )
    # initializers (also one listed as a graph input), Constants, and what only they feed;
    # never a random op, another domain, a node with a subgraph or anything reading x
    assert constant_tensors(graph) == {"w", "unused", "k", "cond", "hi", "three", "neg_w", "scaled"}


def test_cleanup_drops_unread_nodes_and_initializers_but_keeps_subgraph_reads() -> None:
    graph = with_if(small_graph())
    graph.output.append(helper.make_tensor_value_info("z", F32, [2]))
    graph.node.append(helper.make_node("Neg", ["three"], ["minus_three"]))  # read by nothing
    graph.value_info.append(helper.make_tensor_value_info("minus_three", F32, []))
    graph.value_info.append(helper.make_tensor_value_info("sq", F32, [2]))
    cleanup(graph)
    assert [n.output[0] for n in graph.node] == ["sq", "hi", "c", "y", "z"]  # "three" went with its reader
    assert [i.name for i in graph.initializer] == ["w", "k", "cond"]  # k is read inside the If only
    assert [v.name for v in graph.value_info] == ["sq"]


# --- relative L2 and SNR -------------------------------------------------------------------------------


def test_zero_sums_follow_one_convention() -> None:
    assert relative_l2(0.0, 0.0) == 0.0 and snr_db(0.0, 0.0) == math.inf
    assert relative_l2(4.0, 0.0) == math.inf and snr_db(4.0, 0.0) == -math.inf
    assert relative_l2(0.0, 9.0) == 0.0 and snr_db(0.0, 9.0) == math.inf
    assert math.isnan(relative_l2(math.nan, 1.0)) and math.isnan(snr_db(math.nan, 1.0))


def _reference(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """float64 (rel_l2, snr_db) over every pair, from the concatenated arrays."""
    r = np.concatenate([a.astype(np.float64).ravel() for a, _ in pairs])
    c = np.concatenate([b.astype(np.float64).ravel() for _, b in pairs])
    rel = np.linalg.norm(c - r) / np.linalg.norm(r)
    return float(rel), float(10 * np.log10(np.sum(r**2) / np.sum((c - r) ** 2)))


def _batches(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for shape in [(3, 7, 11, 13), (CHUNK + 5,), (2, 3)]:  # one spans several chunks, with a remainder
        r = rng.normal(0, 2, shape).astype(np.float32)
        pairs.append((r, (r + rng.normal(0, 0.05, shape)).astype(np.float32)))
    return pairs


@pytest.mark.parametrize(("exact", "tolerance"), [(False, 1e-5), (True, 1e-12)])
def test_error_energy_matches_float64(exact: bool, tolerance: float) -> None:
    pairs = _batches(1)
    energy = ErrorEnergy(exact=exact)
    for r, c in pairs:
        energy.update(r, c)
    rel, snr = _reference(pairs)
    assert energy.rel_l2() == pytest.approx(rel, rel=tolerance)
    assert energy.snr_db() == pytest.approx(snr, rel=tolerance)
    assert energy.result() == (energy.rel_l2(), energy.snr_db())
    assert 0.01 < rel < 0.1  # the data is what the test means it to be


def test_error_energy_all_zero_reference() -> None:
    energy = ErrorEnergy()
    energy.update(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))
    assert energy.result() == (0.0, math.inf)
    energy.update(np.zeros(4, np.float32), np.full(4, 0.5, np.float32))
    assert energy.result() == (math.inf, -math.inf)


def test_float32_sum_of_squares() -> None:
    values = np.random.default_rng(2).normal(0, 3, 3 * CHUNK + 17).astype(np.float32)
    expected = float(np.sum(values.astype(np.float64) ** 2))
    assert sum_squares_float32(values) == pytest.approx(expected, rel=1e-6)
    assert sum_squares_float32(values.reshape(-1, 1)) == sum_squares_float32(values)
    assert sum_squares_float32(np.zeros(0, np.float32)) == 0.0


def test_output_errors_use_the_same_convention() -> None:
    from quantbench.evaluation.metrics import OutputErrors

    zero = OutputErrors("y")
    zero.update(np.zeros((2, 4)), np.ones((2, 4)))
    assert zero.result()["rel_l2"] == math.inf and zero.result()["snr_db"] == -math.inf
    some = OutputErrors("y")
    pairs = _batches(3)
    for r, c in pairs:
        some.update(r, c)
    rel, snr = _reference(pairs)
    assert some.result()["rel_l2"] == pytest.approx(rel, rel=1e-12)
    assert some.result()["snr_db"] == pytest.approx(snr, rel=1e-12)


def _plus(value: float) -> onnx.ModelProto:
    """y = x + value."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["y"])],
        "plus",
        [helper.make_tensor_value_info("x", F32, [2, 3])],
        [helper.make_tensor_value_info("y", F32, [2, 3])],
        [numpy_helper.from_array(np.full(3, value, np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_bias_correction_output_error_against_an_all_zero_reference() -> None:
    from quantbench.export.bias_correction import output_rel_l2

    feeds = [{"x": np.zeros((2, 3), np.float32)}]
    zeros = [[np.zeros((2, 3), np.float32)]]
    assert output_rel_l2(_plus(0.0), zeros, feeds, threads=1) == 0.0
    assert output_rel_l2(_plus(0.5), zeros, feeds, threads=1) == math.inf  # once sqrt(error): 1.22
    x = np.random.default_rng(4).normal(0, 1, (2, 3)).astype(np.float32)
    got = output_rel_l2(_plus(0.25), [[x]], [{"x": x}], threads=1)
    assert got == pytest.approx(float(np.linalg.norm(np.full((2, 3), 0.25)) / np.linalg.norm(x)), rel=1e-6)
