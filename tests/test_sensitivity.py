"""Sensitivity analysis and automatic mixed precision: ranking, search, replay, bad input, the real CNN."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import quantbench
from quantbench.cli import app
from quantbench.config import PreprocessSpec
from quantbench.errors import QuantbenchError
from tests.conftest import photo_folder, tiny_conv_model

FAST = {"bench_runs": 3, "bench_seconds": 0.0}
CLASSES = 12
TARGET_REL_L2 = 0.05  # plain INT8 (bias-corrected): about 0.08; with conv2 in float: about 0.005
SCHEMA = {"method", "target", "excluded", "curve", "ranking"}


def outlier_weights() -> dict[str, np.ndarray]:
    """Weights of :func:`outlier_classifier`; channel 5 of conv1 is 2000x the others and unused by conv2,
    so quantizing conv2's input with its full range rounds every other channel to zero."""
    rng = np.random.default_rng(3)
    w1 = rng.normal(0, 0.5, (6, 3, 1, 1)).astype(np.float32)
    w1[5] = np.abs(w1[5]) * 2000
    w2 = rng.normal(0, 0.5, (6, 6, 1, 1)).astype(np.float32)
    w2[:, 5] = 0
    return {
        "w1": w1,
        "b1": rng.normal(0, 0.1, 6).astype(np.float32),
        "w2": w2,
        "b2": rng.normal(0, 0.1, 6).astype(np.float32),
        "w3": rng.normal(0, 0.5, (6, 6, 1, 1)).astype(np.float32),
        "b3": rng.normal(0, 0.1, 6).astype(np.float32),
        "wf": rng.normal(0, 0.5, (CLASSES, 6)).astype(np.float32),
        "bf": rng.normal(0, 0.1, CLASSES).astype(np.float32),
    }


def outlier_classifier(path: Path) -> Path:
    """1x1 Conv -> Relu -> Conv (the bad one) -> Relu -> Conv -> Relu -> GlobalAveragePool -> Gemm."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(v, k) for k, v in outlier_weights().items()]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], "conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], "conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], "conv3"),
        helper.make_node("Relu", ["c3"], ["r3"], "relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["pool"], "pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], "flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["scores"], "fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "outlier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


# --- an independent float64 simulation of the outlier model under Q/DQ -------------------------------


def _fq(x: np.ndarray, amax: float) -> np.ndarray:
    """Symmetric int8 quantize-dequantize of an activation, in float64 (scale rounded to float32)."""
    scale = float(np.float32(amax / 127.0))
    return np.clip(np.round(x / scale), -128, 127) * scale


def _fq_weight(w: np.ndarray) -> np.ndarray:
    """Per-output-channel symmetric int8 quantize-dequantize (axis 0), in float64."""
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    scale = np.float32(np.abs(flat).max(axis=1) / np.float32(127.0)).astype(np.float64)[:, None]
    return (np.clip(np.round(flat / scale), -127, 127) * scale).reshape(w.shape)


def _conv1x1(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (
        np.einsum("nchw,oc->nohw", x, w.reshape(w.shape[0], -1).astype(np.float64)) + b[None, :, None, None]
    )


def simulate(x: np.ndarray, amax: dict[str, float], quantized: set[str]) -> dict[str, np.ndarray]:
    """Every tensor of the outlier model with the nodes in ``quantized`` under Q/DQ, in float64."""
    w = {k: v.astype(np.float64) for k, v in outlier_weights().items()}

    def conv(name: str, inp: np.ndarray, tensor: str, wk: str, bk: str) -> np.ndarray:
        if name in quantized:
            return _conv1x1(_fq(inp, amax[tensor]), _fq_weight(w[wk]), w[bk])
        return _conv1x1(inp, w[wk], w[bk])

    t = {"input": x.astype(np.float64)}
    t["r1"] = np.maximum(conv("conv1", t["input"], "input", "w1", "b1"), 0)
    t["r2"] = np.maximum(conv("conv2", t["r1"], "r1", "w2", "b2"), 0)
    t["r3"] = np.maximum(conv("conv3", t["r2"], "r2", "w3", "b3"), 0)
    t["flat"] = t["r3"].mean(axis=(2, 3))
    wf = _fq_weight(w["wf"]) if "fc" in quantized else w["wf"]
    flat = _fq(t["flat"], amax["flat"]) if "fc" in quantized else t["flat"]
    t["scores"] = flat @ wf.T + w["bf"]
    return t


def _samples(model: Path, images: Path, names: list[str], preset: str = "imagenet") -> np.ndarray:
    from quantbench.data import open_dataset
    from quantbench.model import input_specs, load_model

    dataset = open_dataset(images, input_specs(load_model(model)), PreprocessSpec(preset=preset))
    return np.stack([dataset.load(name)[0][0][1]["input"] for name in names])


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def outlier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("outlier")
    return outlier_classifier(root / "outlier.onnx"), photo_folder(root / "images", 40, size=20)


@pytest.fixture(scope="module")
def mixed_run(outlier, tmp_path_factory):
    model, images = outlier
    return quantbench.run(
        model,
        images,
        n=16,
        methods=["minmax"],
        precisions=["fp32", "int8"],
        target_rel_l2=TARGET_REL_L2,
        sensitivity_n=8,
        out=tmp_path_factory.mktemp("mixed"),
        **FAST,
    )


def test_bad_layer_ranks_first_and_is_the_one_kept_in_float(mixed_run):
    results = mixed_run.results
    search = results["sensitivity"]
    assert set(search) == SCHEMA
    assert search["method"] == "minmax"
    assert search["target"] == {"top1_agreement": None, "rel_l2": TARGET_REL_L2}
    assert search["ranking"][0]["node"] == "conv2"
    assert sorted(row["node"] for row in search["ranking"]) == ["conv1", "conv2", "conv3", "fc"]
    for row in search["ranking"]:
        assert set(row) == {"node", "op_type", "rel_l2", "top1_agreement", "headline"}
        assert 0.0 <= row["top1_agreement"] <= 1.0
    assert search["excluded"] == ["conv2"]
    for point in search["curve"]:
        assert set(point) == {"k", "excluded", "top1_agreement", "rel_l2", "median_ms"}
        assert point["excluded"] == [row["node"] for row in search["ranking"][: point["k"]]]
        assert point["median_ms"] > 0
    by_k = {point["k"]: point for point in search["curve"]}
    assert by_k[1]["rel_l2"] <= TARGET_REL_L2 < by_k[0]["rel_l2"]  # k = 1 meets it, k = 0 does not

    variants = {v["name"]: v for v in results["variants"]}
    assert list(variants) == ["fp32", "int8-minmax", "int8-minmax-mixed"]
    mixed, plain = variants["int8-minmax-mixed"], variants["int8-minmax"]
    assert mixed["method"] == "minmax"
    assert mixed["excluded_nodes"] == ["conv2"]
    assert mixed["quantized_nodes"] == ["conv1", "conv3", "fc"]
    assert mixed["outputs"]["scores"]["rel_l2"] <= TARGET_REL_L2 < plain["outputs"]["scores"]["rel_l2"]
    # the comparison scores the written model on the same held-out images as the search did
    assert mixed["outputs"]["scores"]["rel_l2"] == pytest.approx(by_k[1]["rel_l2"], rel=1e-6)
    assert plain["outputs"]["scores"]["rel_l2"] == pytest.approx(by_k[0]["rel_l2"], rel=1e-6)
    assert [row["variant"] for row in mixed_run.summary()][-1] == "int8-minmax-mixed"
    saved = json.loads((mixed_run.run_dir / "results.json").read_text())
    assert saved["sensitivity"]["excluded"] == ["conv2"]


def test_only_view_matches_a_float64_simulation(outlier, mixed_run):
    """Each node's only-this-one-quantized error against an independent numpy model of the Q/DQ graph."""
    model, images = outlier
    results = mixed_run.results
    amax = results["ranges"]["minmax"]["amax"]
    names = results["data"]["evaluation"]["names"][:8]
    x = _samples(model, images, names)
    reference = simulate(x, amax, set())["scores"]
    for row in results["sensitivity"]["ranking"]:
        expected = simulate(x, amax, {row["node"]})["scores"]
        assert row["rel_l2"] == pytest.approx(_rel_l2(expected, reference), rel=0.02, abs=1e-4), row["node"]
        agreement = float(np.mean(expected.argmax(1) == reference.argmax(1)))
        assert row["top1_agreement"] == pytest.approx(agreement), row["node"]
    assert results["sensitivity"]["ranking"][0]["rel_l2"] > 0.5  # conv2 alone wipes out its input


def test_printed_exclude_options_rebuild_the_same_model(outlier, mixed_run, tmp_path):
    from rich.console import Console

    from quantbench.cli.summary import print_run_summary

    console = Console(record=True, width=300)
    print_run_summary(console, mixed_run)
    printed = console.export_text()
    assert "int8-minmax-mixed" in printed and "1 of 4 quantized nodes kept in float" in printed
    line = next(line for line in printed.splitlines() if line.startswith("same model again: "))
    replay = shlex.split(line.split(": ", 1)[1])
    assert replay == ["--exclude", "conv2"]
    model, images = outlier
    args = ["run", "--model", str(model), "--images", str(images), "--n", "16", "--method", "minmax"]
    args += ["--precisions", "fp32,int8", "--bench-runs", "2", "--bench-seconds", "0", *replay]
    out = CliRunner().invoke(app, [*args, "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    (replayed,) = tmp_path.iterdir()
    for suffix in (".onnx", ".onnxruntime.onnx"):
        mixed = (mixed_run.run_dir / "models" / f"int8-minmax-mixed{suffix}").read_bytes()
        assert mixed == (replayed / "models" / f"int8-minmax{suffix}").read_bytes()
        assert mixed != (mixed_run.run_dir / "models" / f"int8-minmax{suffix}").read_bytes()


def test_cli_run_takes_the_target_options(outlier, tmp_path):
    model, images = outlier
    base = ["run", "--model", str(model), "--images", str(images), "--out", str(tmp_path)]
    for option, value, message in (
        ("--target-agreement", "150", "percentage above 0 and at most 100"),
        ("--target-rel-l2", "-1", "--target-rel-l2 must be a number above 0"),
    ):
        out = CliRunner().invoke(app, [*base, option, value])
        assert out.exit_code != 0 and message in str(out.exception)
    assert "--target-agreement" in CliRunner().invoke(app, ["run", "--help"]).output


def test_sensitivity_command_writes_tensors_and_both_views(outlier, tmp_path):
    model, images = outlier
    args = ["sensitivity", "--model", str(model), "--images", str(images), "--n", "16"]
    out = CliRunner().invoke(app, [*args, "--method", "minmax", "--eval-n", "8", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "--exclude conv2" in out.output
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "ranges" / "minmax.txt").is_file()
    result = json.loads((run_dir / "sensitivity.json").read_text())
    assert result["format"] == "quantbench-sensitivity" and result["output"] == "scores"
    assert result["cost"]["sensitivity_models"] == 8 and result["cost"]["samples_per_model"] == 8
    ranking = result["ranking"]
    assert ranking[0]["node"] == "conv2"
    without = {row["node"]: row["without_rel_l2"] for row in ranking}
    assert min(without, key=without.__getitem__) == "conv2"  # keeping it in float helps most

    amax = json.loads((run_dir / "ranges" / "minmax.json").read_text())["ranges"]
    x = _samples(model, images, result["data"]["names"])
    fp32 = simulate(x, amax, set())
    int8 = simulate(x, amax, {"conv1", "conv2", "conv3", "fc"})
    rows = {row["tensor"]: row for row in result["tensors"]}
    assert list(rows) == ["input", "r1", "r2", "flat"]  # graph order
    assert rows["r1"]["producer"] == "relu1" and rows["r1"]["consumers"] == ["conv2"]
    for name, row in rows.items():
        own = _rel_l2(_fq(fp32[name], amax[name]), fp32[name])
        assert row["own_rel_l2"] == pytest.approx(own, rel=1e-3), name
        seen = _fq(int8[name], amax[name])  # what the consumers read in the INT8 model
        assert row["rel_l2"] == pytest.approx(_rel_l2(seen, fp32[name]), rel=0.02, abs=1e-4), name
        assert row["snr_db"] == pytest.approx(-20 * math.log10(row["rel_l2"]), abs=1e-6)
    assert rows["input"]["rel_l2"] == pytest.approx(rows["input"]["own_rel_l2"], rel=1e-6)
    # r1's range is the outlier's, so its other channels round to zero: r2, computed from them, is lost,
    # although quantizing r2 itself costs little
    assert rows["r2"]["rel_l2"] > 0.5 > 0.05 > rows["r2"]["own_rel_l2"]


def test_candidates_run_exactly_the_model_exclude_builds(outlier):
    import onnxruntime as ort

    from quantbench.model import load_model
    from quantbench.search.candidates import Candidates, build_int8

    model_path, _ = outlier
    model = load_model(model_path)
    amax = {"input": 2.5, "r1": 3000.0, "r2": 4.0, "flat": 3.0}
    candidates = Candidates(model, amax)
    x = np.random.default_rng(0).normal(0, 1, (4, 3, 16, 16)).astype(np.float32)
    for kept in ([], ["conv2"], ["conv1", "conv3", "fc"], ["conv1", "conv2", "conv3", "fc"]):
        fast = candidates.session(kept).run(None, {"input": x})[0]
        full, _ = build_int8(model, amax, kept)
        as_written = ort.SessionOptions()
        as_written.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        slow = ort.InferenceSession(full.SerializeToString(), as_written, providers=["CPUExecutionProvider"])
        np.testing.assert_array_equal(fast, slow.run(None, {"input": x})[0])


class _FakeCandidates:
    def session(self, kept: list[str]) -> int:
        return len(kept)


class _FakeEvaluator:
    """Scores a 'session' (the number of nodes kept in float) from a fixed curve."""

    class_scores = True
    output = "scores"

    def __init__(self, curve: list[float]) -> None:
        self.curve = curve
        self.asked: list[int] = []

    def score_session(self, k: int):  # type: ignore[no-untyped-def]
        from quantbench.search.sensitivity import Score

        self.asked.append(k)
        return Score(1.0 - self.curve[k], self.curve[k])


def test_search_finds_the_smallest_k_with_few_candidates():
    from quantbench.search.mixed_precision import Target, search
    from quantbench.search.sensitivity import NodeSensitivity

    total = 40
    ranking = [NodeSensitivity(f"n{i}", "Conv", i) for i in range(total)]
    curve = [0.80 + 0.2 * (k / total) ** 0.5 for k in range(total + 1)]  # monotonic, FP32 at k = total
    for goal in (0.80, 0.85, 0.9, 0.95, 0.99, 0.997):
        evaluator = _FakeEvaluator(curve)
        result = search(_FakeCandidates(), ranking, evaluator, Target(goal), method="m")  # type: ignore[arg-type]
        smallest = next(k for k, value in enumerate(curve) if value >= goal - 1e-9)  # brute force
        assert result.k == smallest and result.excluded == [f"n{i}" for i in range(smallest)]
        assert len(set(evaluator.asked)) <= 2 * math.ceil(math.log2(max(smallest, 1))) + 2
        assert [p.k for p in result.curve] == sorted(set(evaluator.asked))
    with pytest.raises(QuantbenchError, match="met only with all 40 quantized nodes in float"):
        search(_FakeCandidates(), ranking, _FakeEvaluator(curve), Target(1.0), method="m")  # type: ignore[arg-type]
    flat = [0.8] * (total + 1)
    with pytest.raises(QuantbenchError, match="out of reach even with all 40 quantized nodes in float"):
        search(_FakeCandidates(), ranking, _FakeEvaluator(flat), Target(0.9), method="m")  # type: ignore[arg-type]


def test_unnamed_nodes_are_excluded_by_the_label_results_list(tmp_path):
    from quantbench.export.qdq import match_excluded
    from quantbench.search.candidates import replay_name

    model = onnx.load(str(tiny_conv_model(tmp_path / "tiny.onnx")))  # nodes without names
    assert match_excluded(model.graph, ["Conv:output"]) == {2}
    assert replay_name(model.graph, 0) == "Conv:conv1"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target_agreement": 150}, "percentage above 0 and at most 100"),
        ({"target_agreement": 0.99}, "for 99% give 99"),
        ({"target_rel_l2": 0.0}, "--target-rel-l2 must be a number above 0"),
        ({"target_rel_l2": 1e-12}, "met only with all 4 quantized nodes in float"),
        ({"target_rel_l2": 0.1, "precisions": ["fp32"]}, "need int8 in --precisions"),
    ],
)
def test_bad_targets_are_one_line_errors(outlier, tmp_path, options, message):
    model, images = outlier
    with pytest.raises(QuantbenchError, match=message) as info:
        quantbench.run(
            model, images, n=16, methods=["minmax"], sensitivity_n=4, out=tmp_path, **FAST, **options
        )
    assert "\n" not in str(info.value)


def test_agreement_target_needs_class_scores(tmp_path):
    model = tiny_conv_model(tmp_path / "tiny.onnx")
    images = photo_folder(tmp_path / "images", 24, size=20)
    with pytest.raises(QuantbenchError, match="--target-agreement needs class scores"):
        quantbench.run(
            model,
            images,
            n=16,
            methods=["minmax"],
            precisions=["int8"],
            target_agreement=99,
            out=tmp_path,
            **FAST,
        )


def test_sensitivity_command_bad_input(outlier, tmp_path):
    model, images = outlier
    base = ["sensitivity", "--model", str(model), "--images", str(images), "--out", str(tmp_path)]
    cases = [
        (["--method", "bogus"], "unknown calibration method 'bogus'"),
        (["--n", "40"], "no held-out images"),
        (["--eval-n", "0"], "--eval-n must be at least 1"),
        (["--view", "sideways"], "--view takes only and/or without"),
    ]
    for extra, message in cases:
        out = CliRunner().invoke(app, [*base, *extra])
        assert out.exit_code != 0
        assert isinstance(out.exception, QuantbenchError) and message in str(out.exception), extra
    assert not any(tmp_path.glob("*/sensitivity.json"))


def test_real_cnn_mixed_model_meets_its_target(sample, tmp_path):
    """EfficientNet-Lite0: the first convolutions hurt most, and the mixed model meets 95 % agreement.

    Without bias correction, which corrects every candidate of the search on the calibration images (a few
    seconds each here) and already lifts plain INT8 to about 95 % on these 40 images; the tests on the
    small graph run with it.
    """
    model, images = sample
    result = quantbench.run(
        model,
        images,
        n=40,
        eval_n=40,
        preset="inception",
        methods=["minmax"],
        precisions=["fp32", "int8"],
        bias_correction=False,
        target_agreement=95,
        sensitivity_n=8,
        out=tmp_path,
        **FAST,
    )
    search = result.results["sensitivity"]
    assert search["ranking"][0]["node"] == "Conv:conv1"  # reads conv0_relu6, the worst error on its own
    assert len(search["ranking"]) == 50 and 1 <= len(search["excluded"]) < 50
    variants = {v["name"]: v for v in result.results["variants"]}
    mixed, plain = variants["int8-minmax-mixed"], variants["int8-minmax"]
    assert plain["outputs"]["logits"]["top1_agreement"] < 0.95
    assert mixed["outputs"]["logits"]["top1_agreement"] >= 0.95
    assert sorted(mixed["excluded_nodes"]) == sorted(search["excluded"])  # graph order there
    # Speed (mixed against INT8 and FP32) is measured side by side in benchmarks/sensitivity.py, not here:
    # unit-test timings on a shared machine are noise.
    float_convs = {n for n in search["excluded"] if n.startswith("Conv:")}
    assert float_convs == set(search["excluded"]) and len(float_convs) < 10


def test_ranking_follows_the_headline_and_relative_l2_only_breaks_ties() -> None:
    from quantbench.search.sensitivity import NodeSensitivity, Score, rank

    # a detector's F1 (higher is better): node b hurts detections most though its rel. L2 is the lowest
    nodes = [
        NodeSensitivity("a", "Conv", 0, only=Score(0.30, None, 0.95, True)),
        NodeSensitivity("b", "Conv", 1, only=Score(0.01, None, 0.40, True)),
        NodeSensitivity("c", "Conv", 2, only=Score(0.20, None, 0.95, True)),
        NodeSensitivity("d", "Conv", 3, only=Score(0.10, None, float("nan"), True)),
    ]
    assert [n.node for n in rank(nodes)] == ["d", "b", "a", "c"]  # NaN worst; a and c tie on F1
    # an error headline (lower is better), in the without view: keeping the best node in float helps most
    errors = [
        NodeSensitivity("x", "Conv", 0, without=Score(0.5, None, 0.30, False)),
        NodeSensitivity("y", "Conv", 1, without=Score(0.9, None, 0.05, False)),
    ]
    assert [n.node for n in rank(errors)] == ["y", "x"]


def test_a_headline_target_is_met_in_its_direction_and_refuses_other_metrics() -> None:
    from quantbench.search.mixed_precision import parse_target
    from quantbench.search.sensitivity import Score

    target = parse_target(None, None, "det_f1=0.9")
    assert target is not None and target.metric == "det_f1" and target.describe() == "det_f1 >= 0.9"
    assert target.met(Score(0.5, None, 0.92, True)) and not target.met(Score(0.01, None, 0.89, True))
    assert not target.met(Score(0.0, None, float("nan"), True))
    errors = parse_target(None, None, "channel_rel_l2_mean=0.05")
    assert errors is not None and errors.met(Score(1.0, None, 0.04, False))
    assert not errors.met(Score(0.0, None, 0.06, False))
    shorthand = parse_target(None, None, "top1_agreement=0.99")
    assert (
        shorthand is not None and shorthand.top1_agreement == pytest.approx(0.99) and shorthand.metric is None
    )
    for bad in ("f1=0.9", "det_f1", "det_f1=high", "det_f1=inf"):
        with pytest.raises(QuantbenchError, match="--target"):
            parse_target(None, None, bad)


def test_the_search_scores_the_models_the_run_writes_with_offsets_and_adaptive_rounding(outlier, tmp_path):
    """With activation offsets and adaptive rounding, the search's k = 0 candidate is the run's INT8
    variant and its chosen candidate the mixed variant, figure for figure."""
    model, images = outlier
    run = quantbench.run(
        model, images, n=24, methods=["minmax"], precisions=["fp32", "int8"], target_rel_l2=TARGET_REL_L2,
        sensitivity_n=8, activation_offsets=True, weight_rounding="adaptive", bias_correction_images=12,
        out=tmp_path, **FAST,
    )  # fmt: skip
    search = run.results["sensitivity"]
    by_k = {point["k"]: point for point in search["curve"]}
    variants = {v["name"]: v for v in run.results["variants"]}
    plain, mixed = variants["int8-minmax"], variants["int8-minmax-mixed"]
    assert plain["activation_offsets"]["tensors"] and mixed["activation_offsets"]["tensors"]
    assert plain["weight_rounding"]["method"] == mixed["weight_rounding"]["method"] == "adaptive"
    assert plain["outputs"]["scores"]["rel_l2"] == pytest.approx(by_k[0]["rel_l2"], rel=1e-6)
    chosen = len(search["excluded"])
    assert mixed["outputs"]["scores"]["rel_l2"] == pytest.approx(by_k[chosen]["rel_l2"], rel=1e-6)
