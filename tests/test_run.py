"""``quantbench run``: variants, held-out evaluation, artifacts, imported ranges and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import quantbench
from quantbench.cli import app
from quantbench.config import PreprocessSpec
from quantbench.errors import QuantbenchError
from tests.conftest import photo_folder

FAST = {"bench_runs": 3, "bench_seconds": 0.0}


def tiny_classifier(path: Path, classes: int = 12) -> Path:
    """Conv -> Relu -> Conv -> Add(residual) -> GlobalAveragePool -> Flatten -> Gemm: class scores."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.4, (6, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, 6).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (6, 6, 1, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.5, (classes, 6)).astype(np.float32), "wf"),
        numpy_helper.from_array(rng.normal(0, 0.1, classes).astype(np.float32), "bf"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], "conv2"),
        helper.make_node("Add", ["c2", "r1"], ["sum"], "add"),
        helper.make_node("GlobalAveragePool", ["sum"], ["pool"], "pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], "flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["scores"], "fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return tiny_classifier(root / "tiny.onnx"), photo_folder(root / "images", 40, size=20)


def _fp32_scores(model: Path, dataset_root: Path, names: list[str]) -> np.ndarray:
    """Independent FP32 pass: preprocess each named file and run the model in ONNX Runtime."""
    import onnxruntime as ort

    from quantbench.data import open_dataset
    from quantbench.model import input_specs, load_model

    dataset = open_dataset(dataset_root, input_specs(load_model(model)), PreprocessSpec(preset="imagenet"))
    batch = np.stack([dataset.load(name)[0][0][1]["input"] for name in names])
    return ort.InferenceSession(str(model)).run(None, {"input": batch})[0]


def test_run_writes_every_artifact_and_consistent_metrics(tiny, tmp_path):
    model, images = tiny
    result = quantbench.run(model, images, n=16, methods=["minmax", "percentile"], out=tmp_path, **FAST)
    run_dir = result.run_dir
    assert run_dir.parent == tmp_path and run_dir.name.startswith("tiny-")
    for rel in (
        "results.json",
        "metrics.csv",
        "models/fp16.onnx",
        "models/int8-minmax.onnx",
        "models/int8-minmax.onnxruntime.onnx",
        "models/int8-percentile.onnx",
        "ranges/minmax.cache",
    ):
        assert (run_dir / rel).is_file(), rel
    results = json.loads((run_dir / "results.json").read_text())
    assert [v["name"] for v in results["variants"]] == ["fp32", "fp16", "int8-minmax", "int8-percentile"]
    manifest = results["manifest"]
    assert manifest["quantbench"] == quantbench.__version__ and manifest["onnxruntime"]
    assert manifest["files"]["inputs"]["model"] == results["model"]["sha256"]
    assert "models/int8-minmax.onnx" in manifest["files"]["outputs"]
    # held-out images are the 24 not used for calibration, none of them a calibration image
    evaluation = results["data"]["evaluation"]
    assert evaluation["samples"] == 24
    assert not set(evaluation["names"]) & set(results["data"]["calibration"]["used"])
    # the recorded error of one variant agrees with an independent float64 computation
    import onnxruntime as ort

    from quantbench.data import open_dataset
    from quantbench.model import input_specs, load_model

    dataset = open_dataset(images, input_specs(load_model(model)))
    x = np.stack([dataset.load(name)[0][0][1]["input"] for name in evaluation["names"]])
    ref = ort.InferenceSession(str(model)).run(None, {"input": x})[0].astype(np.float64)
    # judged: the Q/DQ model that ships, run as written (no optimization refolds its pairs)
    as_written = ort.SessionOptions()
    as_written.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    qdq = ort.InferenceSession(str(run_dir / "models/int8-minmax.onnx"), as_written)
    got = qdq.run(None, {"input": x})[0]
    metrics = results["variants"][2]["outputs"]["scores"]
    assert metrics["rel_l2"] == pytest.approx(np.linalg.norm(got - ref) / np.linalg.norm(ref), rel=1e-4)
    agree = float(np.mean(got.argmax(1) == ref.argmax(1)))
    assert metrics["top1_agreement"] == pytest.approx(agree)
    # timed: the ONNX Runtime flavour, whose distance from the judged model is recorded
    flavour = ort.InferenceSession(str(run_dir / "models/int8-minmax.onnxruntime.onnx")).run(
        None, {"input": x}
    )
    timed = results["variants"][2]["timed_model"]
    assert timed["model"] == "models/int8-minmax.onnxruntime.onnx"
    assert timed["judged_model"] == "models/int8-minmax.onnx"
    distance = np.linalg.norm(flavour[0] - got.astype(np.float64)) / np.linalg.norm(got.astype(np.float64))
    assert timed["outputs"]["scores"]["rel_l2"] == pytest.approx(distance, rel=1e-4, abs=1e-9)
    assert timed["within_bound"] == (distance <= timed["bound_rel_l2"])
    # metrics.csv: a row per variant and output, matching results.json
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [(r["variant"], r["output"]) for r in rows] == [
        (v, "scores") for v in ("fp32", "fp16", "int8-minmax", "int8-percentile")
    ]
    assert float(rows[2]["rel_l2"]) == pytest.approx(metrics["rel_l2"])
    latency = results["variants"][0]["latency"][0]
    assert latency["batch"] == 1 and latency["runs"] >= 3 and latency["median_ms"] > 0
    # the summary has one row per variant with a speed-up against FP32
    rows = result.summary()
    assert rows[0]["speedup"] == pytest.approx(1.0) and rows[2]["rel_l2"] == metrics["rel_l2"]
    assert rows[2]["top1_agreement"] == metrics["top1_agreement"]  # a fraction, as in results.json


def test_labels_give_accuracy_against_an_independent_fp32_pass(tiny, tmp_path):
    model, images = tiny
    names = sorted(p.name for p in images.iterdir())
    scores = _fp32_scores(model, images, names)
    labels = tmp_path / "labels.csv"
    # half the labels are FP32's own prediction, half its second choice: FP32 accuracy is 50% top-1
    lines = ["name,label"]
    for i, (name, row) in enumerate(zip(names, scores, strict=True)):
        order = np.argsort(-row, kind="stable")
        lines.append(f"{name},{order[0] if i % 2 == 0 else order[1]}")
    labels.write_text("\n".join(lines) + "\n")
    result = quantbench.run(
        model, eval_images=images, labels=labels, precisions=["fp32"], out=tmp_path, **FAST
    )
    metrics = result.results["variants"][0]["outputs"]["scores"]
    assert metrics["top1_accuracy"] == pytest.approx(0.5)
    assert metrics["top5_accuracy"] == pytest.approx(1.0)


def test_ranges_file_round_trip_builds_the_same_int8_model(tiny, tmp_path):
    model, images = tiny
    first = quantbench.run(
        model, images, n=16, methods=["percentile"], precisions=["int8"], out=tmp_path, **FAST
    )
    text = first.run_dir / "ranges" / "percentile.txt"
    second = quantbench.run(
        model, images, ranges=text, precisions=["int8"], bias_correction_images=16, out=tmp_path, **FAST
    )  # the bias correction runs on the same 16 images as the first run's
    a = onnx.load(str(first.run_dir / "models/int8-percentile.onnx"))
    b = onnx.load(str(second.run_dir / "models/int8-percentile.onnx"))
    assert a.graph.SerializeToString() == b.graph.SerializeToString()
    assert second.results["calibration"] is None
    assert second.results["ranges"]["percentile"]["unknown"] == []


def test_imported_ranges_with_unknown_and_missing_names_are_listed(tiny, tmp_path):
    model, images = tiny
    ranges = tmp_path / "ranges.txt"
    ranges.write_text("input:2.5\nr1:3.0\nnot_in_model:1.0\n")
    result = quantbench.run(
        model, eval_images=images, ranges=ranges, precisions=["int8"], out=tmp_path, **FAST
    )
    info = result.results["ranges"]["ranges"]
    assert info["unknown"] == ["not_in_model"]
    assert "c1" in info["missing"] and "flat" in info["missing"]
    variant = result.results["variants"][1]
    assert variant["name"] == "int8-ranges"
    assert "flat" in variant["tensors_without_range"]  # the Gemm's input: the Gemm stays float
    assert variant["quantized_tensors"] == ["input", "r1"]


def test_cache_header_for_another_version_is_a_warning(tiny, tmp_path):
    model, images = tiny
    cache = tmp_path / "old.cache"
    cache.write_text("TRT-8601-EntropyCalibration2\ninput: 3c810204\nr1: 3c810204\n")
    result = quantbench.run(
        model, eval_images=images, ranges=cache, precisions=["int8"], out=tmp_path, **FAST
    )
    warnings = result.results["ranges"]["old"]["warnings"]
    assert any("8.6.1" in w for w in warnings)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "old.cache"),
        ("TRT-100300-EntropyCalibration2\n", "old.cache"),
        ("TRT-100300-EntropyCalibration2\ninput: zz\n", "old.cache"),
        ("other_a:1.0\nother_b:2.0\n", "none of its 2 tensor names"),
    ],
)
def test_bad_ranges_files_are_one_line_errors(tiny, tmp_path, content, message):
    model, images = tiny
    path = tmp_path / ("old.cache" if content.startswith("TRT") or not content else "bad.txt")
    path.write_text(content)
    with pytest.raises(QuantbenchError, match=message) as info:
        quantbench.run(model, eval_images=images, ranges=path, precisions=["int8"], out=tmp_path, **FAST)
    assert "\n" not in str(info.value)
    assert not any(tmp_path.glob("tiny-*/results.json"))


def test_model_without_float_inputs_is_refused(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["ids"], ["out"], to=TensorProto.FLOAT)],
        "ints",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "ints.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(QuantbenchError, match="float inputs"):
        quantbench.run(path, photo_folder(tmp_path / "img", 2), out=tmp_path)


def test_eval_folder_without_images_is_refused(tiny, tmp_path):
    model, images = tiny
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(QuantbenchError, match="empty"):
        quantbench.run(model, images, n=8, eval_images=empty, out=tmp_path, **FAST)


def test_backends_tensorrt_is_a_one_line_error_and_auto_is_onnxruntime(tiny, tmp_path):
    from quantbench.backends.registry import create
    from quantbench.config import BackendSpec

    assert create(BackendSpec("auto")).name == "onnxruntime"
    with pytest.raises(QuantbenchError, match="TensorRT is not installed"):
        create(BackendSpec("tensorrt"))
    with pytest.raises(QuantbenchError, match="--backend must be one of"):
        create(BackendSpec("tvm"))


def test_exclude_keeps_nodes_in_float_and_lists_them(tiny, tmp_path):
    model, images = tiny
    result = quantbench.run(
        model,
        images,
        n=16,
        methods=["minmax"],
        precisions=["int8"],
        exclude=["Gemm", "conv2"],
        out=tmp_path,
        **FAST,
    )
    variant = result.results["variants"][1]
    assert variant["excluded_nodes"] == ["conv2", "fc"]
    assert variant["quantized_nodes"] == ["conv1"]
    int8 = onnx.load(str(result.run_dir / "models/int8-minmax.onnx"))
    fc = next(n for n in int8.graph.node if n.name == "fc")
    assert fc.input[0] == "flat"


def test_cli_run_prints_the_summary_table(tiny, tmp_path):
    model, images = tiny
    out = CliRunner().invoke(
        app,
        [
            "run",
            "--model",
            str(model),
            "--images",
            str(images),
            "--n",
            "16",
            "--method",
            "minmax",
            "--bench-runs",
            "2",
            "--bench-seconds",
            "0",
            "--out",
            str(tmp_path),
        ],
    )
    assert out.exit_code == 0, out.output
    assert "int8-minmax" in out.output and "speed-up" in out.output
    assert "not representative of a GPU" in out.output  # fp16 is emulated on this CPU


def test_end_to_end_on_the_real_cnn_keeps_top1_agreement(sample, tmp_path):
    model, images = sample
    result = quantbench.run(
        model,
        images,
        n=40,
        preset="inception",
        methods=["percentile", "mse"],
        precisions=["fp32", "int8"],
        out=tmp_path,
        **FAST,
    )
    evaluation = result.results["data"]["evaluation"]
    assert evaluation["samples"] == 80
    best = max(
        v["outputs"]["logits"]["top1_agreement"]
        for v in result.results["variants"]
        if v["precision"] == "int8"
    )
    assert best >= 0.90


def test_a_backend_in_one_file_runs_from_the_command_line(tiny, tmp_path):
    from typer.testing import CliRunner

    from quantbench.backends.registry import BackendEntry, register, unregister
    from quantbench.cli import app

    model, images = tiny
    register(BackendEntry("onnxruntime-exact", "tests.exact_backend:ExactBackend", available=lambda: True))
    try:
        argv = ["run", "--model", str(model), "--images", str(images), "--n", "16", "--eval-n", "8"]
        argv += ["--method", "minmax", "--precisions", "fp32,int8", "--no-bias-correction"]
        argv += ["--backend", "onnxruntime-exact", "--bench-runs", "1", "--bench-seconds", "0"]
        out = CliRunner().invoke(app, [*argv, "--out", str(tmp_path)])
        assert out.exit_code == 0, out.output
        with pytest.raises(QuantbenchError, match="method trt-minmax is TensorRT's own calibrator"):
            quantbench.run(model, images, methods=["trt-minmax"], backend="onnxruntime-exact", out=tmp_path)
    finally:
        unregister("onnxruntime-exact")
    results = json.loads(next(tmp_path.glob("*/results.json")).read_text())
    assert results["manifest"]["backend"] == {"name": "onnxruntime-exact", "graph_optimizations": False}
    int8 = results["variants"][1]
    assert int8["exact_model"] == "int8-minmax.onnx"  # the Q/DQ model ran, not the CPU flavour
    # the Q/DQ model run as written: its error is that of an independent unoptimized session of that file
    import onnxruntime as ort

    from quantbench.data import open_dataset
    from quantbench.model import input_specs, load_model

    evaluation = results["data"]["evaluation"]
    dataset = open_dataset(images, input_specs(load_model(model)))
    batches = list(dataset.batches(8, 0, 8, start=evaluation["start"]))
    assert [name for b in batches for name in b.names] == evaluation["names"]
    feeds = np.concatenate([b.inputs["input"] for b in batches])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    qdq = ort.InferenceSession(str(next(tmp_path.glob("*/models/int8-minmax.onnx"))), options)
    q = qdq.run(None, {"input": feeds})[0].astype(np.float64)
    f = ort.InferenceSession(str(model)).run(None, {"input": feeds})[0].astype(np.float64)
    (output,) = int8["outputs"]
    assert int8["outputs"][output]["rel_l2"] == pytest.approx(
        np.linalg.norm(q - f) / np.linalg.norm(f), rel=1e-5
    )


def test_an_installed_backend_is_found_through_its_entry_point(tiny, tmp_path, monkeypatch):
    import importlib.metadata

    from quantbench.backends import registry

    point = importlib.metadata.EntryPoint(
        "exact", "tests.exact_backend:ExactBackend", registry.ENTRY_POINT_GROUP
    )
    real = importlib.metadata.entry_points

    def entry_points(**selection):
        return [point] if selection.get("group") == registry.ENTRY_POINT_GROUP else real(**selection)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    model, images = tiny
    try:
        assert "exact" in registry.names()
        result = quantbench.run(
            model, images, n=16, eval_n=8, methods=["minmax"], precisions=["fp32", "int8"],
            bias_correction=False, backend="exact", out=tmp_path, **FAST,
        )  # fmt: skip
    finally:
        registry.unregister("exact")
    assert result.results["manifest"]["backend"]["name"] == "onnxruntime-exact"
    assert result.results["variants"][1]["exact_model"] == "int8-minmax.onnx"
    monkeypatch.undo()  # uninstalled: the name is unknown again
    with pytest.raises(QuantbenchError, match="--backend must be one of auto, onnxruntime, tensorrt"):
        quantbench.run(model, images, backend="exact", out=tmp_path, **FAST)
