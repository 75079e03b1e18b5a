"""The HTML report: rendering from stored and freshly made results.json files of several shapes, the
histograms results.json keeps for it, the metric registry in its tables, metrics.csv and the terminal
summary, bad files, the command line, and the page in a real browser."""

from __future__ import annotations

import copy
import csv
import html
import io
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import quantbench
from quantbench.cli import app
from quantbench.errors import QuantbenchError
from quantbench.evaluation.registry import METRICS, RESULTS_ORDER, metric_by_key
from quantbench.report import load_results, render_report, sections, tables, write_report
from quantbench.report.analysis import Point, metric_group, pareto_front, points
from quantbench.report.results import histogram_digest, metrics_csv, range_spread, summary_rows
from tests.conftest import photo_folder
from tests.test_run import tiny_classifier

FIXTURES = Path(__file__).parent / "fixtures" / "report"
FAST = {"bench_runs": 3, "bench_seconds": 0.0}
SCRIPT = "<script>alert(1)</script>"
QUOTES = "he said \"hi\" & 'bye'"
MAX_BYTES = 5 * 1024 * 1024


def stored() -> dict[str, Any]:
    """results.json of a real run: EfficientNet-Lite0 (95 float tensors), four methods, 100 images."""
    return json.loads((FIXTURES / "efficientnet_lite0.results.json").read_text())


def with_sensitivity_and_layers(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` with a mixed-precision search and per-layer precisions from the stored fixture."""
    extra = json.loads((FIXTURES / "sensitivity_and_layers.json").read_text())
    out = copy.deepcopy(results)
    out["sensitivity"] = extra["sensitivity"]
    for variant in out["variants"]:
        if variant["name"] in extra["layers"]:
            variant["layers"] = extra["layers"][variant["name"]]
    return out


def figures_in(page: str) -> list[str]:
    """The SVG documents embedded in a report, decoded."""
    import base64

    uris = re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', page)
    return [base64.b64decode(uri).decode("utf-8") for uri in uris]


def section(page: str, anchor: str) -> str:
    """The HTML of one section of the report."""
    start = page.index(f'<section id="{anchor}">')
    return page[start : page.index("</section>", start)]


def table_rows(fragment: str) -> list[list[str]]:
    """Cells (unescaped text) of every body row of the tables in ``fragment``."""
    rows = []
    for body in re.findall(r"<tbody>(.*?)</tbody>", fragment, re.S):
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S):
            rows.append([html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)])
    return rows


def rename(value: Any, names: dict[str, str]) -> Any:
    """``value`` with every string (keys included) equal to a key of ``names`` replaced."""
    if isinstance(value, dict):
        return {names.get(k, k): rename(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [rename(v, names) for v in value]
    return names.get(value, value) if isinstance(value, str) else value


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-report")
    return tiny_classifier(root / "tiny.onnx"), photo_folder(root / "images", 40, size=20)


@pytest.fixture(scope="module")
def tiny_run(tiny, tmp_path_factory) -> quantbench.flows.run.RunResult:
    model, images = tiny
    out = tmp_path_factory.mktemp("runs")
    return quantbench.run(model, images, n=16, methods=["minmax", "percentile", "entropy"], out=out, **FAST)


# --- results.json: the histograms kept for the report ---------------------------------------------


def test_range_spread_orders_by_disagreement_then_clipping():
    sets = {"a": {"x": 1.0, "y": 2.0, "z": 4.0, "w": 0.0}, "b": {"x": 3.0, "y": 2.0, "z": 4.0}}
    absmax = {"x": 3.0, "y": 8.0, "z": 4.0}
    ranked = range_spread(sets, absmax)
    assert ranked == [("x", 3.0), ("y", 1.0), ("z", 1.0)]  # y clips 8 -> 2, z not at all; w has no range


def test_histogram_digest_counts_match_numpy_on_the_coarse_bins(tmp_path):
    from quantbench.calibration.histograms import TensorHistogram, save_histograms

    rng = np.random.default_rng(3)
    data = {
        "wide": rng.lognormal(0.0, 1.5, 200_000).astype(np.float32) * rng.choice([-1, 1], 200_000),
        "relu": np.maximum(rng.normal(0.0, 2.0, 50_000), 0.0).astype(np.float32),
        "zeros": np.zeros(1000, np.float32),
    }
    hists = {}
    for name, values in data.items():
        hists[name] = TensorHistogram()
        for chunk in np.array_split(values, 7):
            hists[name].update(chunk.copy())
    path = tmp_path / "h.npz"
    save_histograms(path, hists, "k")
    digest = histogram_digest(path, ["relu", "missing", "wide", "zeros"], bins=256)
    assert [d["tensor"] for d in digest] == ["relu", "wide", "zeros"]
    for item in digest:
        values = np.abs(data[item["tensor"]].astype(np.float64))
        counts = np.array(item["counts"])
        assert len(counts) <= 256 and counts.sum() == values.size
        assert item["absmax"] == pytest.approx(values.max())
        assert len(counts) * item["bin_width"] > values.max()  # the bins cover [0, absmax]
        expected = np.bincount(np.floor(values / item["bin_width"]).astype(np.int64), minlength=len(counts))
        np.testing.assert_array_equal(counts, expected)
    assert histogram_digest(tmp_path / "nope.npz", ["relu"]) == []


def test_results_keep_histograms_of_the_tensors_the_methods_disagree_on_most(tiny_run):
    results = tiny_run.results
    kept = results["calibration"]["histograms"]
    amax = {label: info["amax"] for label, info in results["ranges"].items()}
    spread = {
        name: max(t[name] for t in amax.values()) / min(t[name] for t in amax.values())
        for name in results["model"]["tensor_order"]
    }
    top = sorted(spread.values(), reverse=True)[: len(kept)]
    assert len(kept) == min(8, len(spread))
    assert sorted((spread[h["tensor"]] for h in kept), reverse=True) == pytest.approx(top)
    for hist in kept:
        assert sum(hist["counts"]) > 0 and len(hist["counts"]) <= 256
        assert hist["absmax"] == results["calibration"]["absmax"][hist["tensor"]]


# --- rendering -------------------------------------------------------------------------------------


def test_report_of_a_real_run_has_every_section_figure_and_value():
    results = stored()
    page = render_report(results)
    assert len(page.encode()) < MAX_BYTES
    for anchor in ("run", "accuracy", "outputs", "ranges", "latency", "details"):
        assert f'<section id="{anchor}">' in page
    # accuracy vs speed, per-output bars, ranges, histograms, latency, throughput
    assert len(figures_in(page)) == 6
    assert "<script" not in page.lower()
    assert "top-1 accuracy" not in page  # no labels in this run: no accuracy columns
    # the accuracy table shows each variant's figures from results.json
    rows = {row[0]: row for row in table_rows(section(page, "accuracy"))}
    for variant in results["variants"][1:]:
        metrics = variant["outputs"]["logits"]
        assert f"{100 * metrics['top1_agreement']:.1f} %" in rows[variant["name"]]
        assert f"{metrics['rel_l2']:.4g}" in rows[variant["name"]]
    # the Pareto front named in the text is the brute-force one (representative latencies only)
    pts = {
        v["name"]: (v["latency"][0]["median_ms"], v["outputs"]["logits"].get("top1_agreement", 1.0))
        for v in results["variants"]
        if v["latency_representative"]
    }
    front = {
        a
        for a, (ms, q) in pts.items()
        if not any(m2 <= ms and q2 >= q and (m2, q2) != (ms, q) for b, (m2, q2) in pts.items() if b != a)
    }
    text = re.search(r"On the Pareto front[^:]*: ([^<]*)\.", page).group(1)
    assert set(text.split(", ")) == front
    # every tensor in the ranges table with its ratio to absmax
    ranges_rows = {row[0]: row for row in table_rows(section(page, "ranges"))}
    assert len(ranges_rows) == results["model"]["float_tensors"]
    absmax = results["calibration"]["absmax"]["conv4"]
    entropy = results["ranges"]["entropy"]["amax"]["conv4"]
    assert f"{entropy:.4g} (×{entropy / absmax:.3f})" in ranges_rows["conv4"]
    for hist in results["calibration"]["histograms"]:
        assert hist["tensor"] in section(page, "ranges")


def test_rendering_is_deterministic_and_needs_only_results_json(tiny_run, tmp_path):
    run_report = tiny_run.run_dir / "report.html"
    assert run_report.is_file()
    alone = tmp_path / "copy"
    alone.mkdir()
    shutil.copy(tiny_run.run_dir / "results.json", alone / "results.json")
    path = write_report(alone)
    assert path == alone / "report.html"
    assert path.read_bytes() == run_report.read_bytes()
    assert write_report(alone / "results.json").read_bytes() == run_report.read_bytes()


def test_sensitivity_and_layer_sections_appear_only_with_their_data():
    plain = render_report(stored())
    results = with_sensitivity_and_layers(stored())
    page = render_report(results)
    assert "sensitivity search" not in plain and "Layers per precision" not in plain
    accuracy = section(page, "accuracy")
    assert "Mixed precision: sensitivity search" in accuracy and "top-1 agreement ≥ 95.0 %" in accuracy
    assert len(figures_in(page)) == len(figures_in(plain)) + 1
    curve = results["sensitivity"]["curve"]
    sensitivity_svg = figures_in(page)[1]
    assert "nodes kept in float" in sensitivity_svg and "median ms per batch" in sensitivity_svg
    rows = table_rows(accuracy[accuracy.index("<h3>Curve</h3>") :])
    assert [row[0] for row in rows[: len(curve)]] == [str(c["k"]) for c in curve]
    # layers per precision: the counts of the inspector data, per variant
    details = section(page, "details")
    layer_rows = {row[0]: row for row in table_rows(details[details.index("Layers per precision") :])}
    header = re.findall(
        r"<th[^>]*>(.*?)</th>", details[details.index("Layers per precision") :].split("</thead>")[0]
    )
    for variant in results["variants"]:
        if "layers" not in variant:
            assert variant["name"] not in layer_rows
            continue
        counts = Counter(layer["precision"] for layer in variant["layers"])
        row = dict(zip(header, layer_rows[variant["name"]]))
        assert {p: int(row[p]) for p in counts} == dict(counts)
        assert int(row["layers"]) == len(variant["layers"])


def test_a_model_with_1200_tensors_is_cut_and_stays_small(tmp_path):
    results = stored()
    rng = np.random.default_rng(0)
    names = [f"block{i // 12}/layer{i % 12}/output" for i in range(1200)]
    absmax = dict(zip(names, rng.uniform(1, 100, 1200).tolist()))
    results["model"]["tensor_order"] = names
    results["model"]["float_tensors"] = len(names)
    results["calibration"]["absmax"] = absmax
    for label, info in results["ranges"].items():
        factor = 1.0 if label == "minmax" else rng.uniform(0.05, 1.0, 1200)
        info["amax"] = dict(zip(names, (np.array(list(absmax.values())) * factor).tolist()))
    results["calibration"]["histograms"] = []
    outputs = {f"out{i}": {"shape": [4], "class_scores": False} for i in range(25)}
    results["model"]["comparison_outputs"] = {"logits": {"shape": [1000], "class_scores": True}, **outputs}
    for variant in results["variants"][1:]:
        variant["outputs"].update({name: {"rel_l2": 0.01, "max_abs": 0.1} for name in outputs})
        variant["tensors_without_range"] = names[:300]
    page = render_report(results)
    assert len(page.encode()) < MAX_BYTES
    ranges = section(page, "ranges")
    assert len(table_rows(ranges)) == 200
    assert "1000 more rows not shown (1200 in all" in ranges
    assert "the 200 of 1200 tensors where the methods disagree most" in ranges
    # the 200 shown are the 200 with the largest spread
    spread = dict(range_spread({k: v["amax"] for k, v in results["ranges"].items()}, absmax))
    shown = {row[0] for row in table_rows(ranges)}
    assert min(spread[n] for n in shown) >= max(spread[n] for n in names if n not in shown)
    # the range figure numbers tensors instead of naming 1200 of them
    svg = next(s for s in figures_in(page) if "amax (log scale)" in s)
    assert "tensor index in graph order (1200 tensors)" in svg and "block3/layer" not in svg
    outputs_section = section(page, "outputs")
    assert outputs_section.count("<h3>Output") == 20
    assert "6 more outputs not shown" in outputs_section
    assert "… and 250 more" in section(page, "details")


@pytest.mark.parametrize("shape", ["one variant", "labels", "no eval images", "imported ranges"])
def test_runs_of_other_shapes_render(tiny, tmp_path, shape):
    model, images = tiny
    kwargs: dict[str, Any] = {"out": tmp_path, **FAST}
    if shape == "one variant":
        kwargs.update(eval_images=images, precisions=["fp32"])
    elif shape == "labels":
        labels = tmp_path / "labels.csv"
        labels.write_text("".join(f"{p.name},{i % 12}\n" for i, p in enumerate(sorted(images.iterdir()))))
        kwargs.update(images=images, n=16, labels=labels, methods=["minmax"])
    elif shape == "no eval images":
        kwargs.update(images=images, n=40, methods=["minmax"], precisions=["int8"])
    else:
        ranges = tmp_path / "ranges.txt"
        ranges.write_text("input:2.5\nr1:3.0\nflat:1.5\nnot_in_model:1.0\n")
        kwargs.update(eval_images=images, ranges=ranges, precisions=["int8"])
    result = quantbench.run(model, **kwargs)
    page = (result.run_dir / "report.html").read_text()
    assert len(page.encode()) < MAX_BYTES
    assert "<script" not in page.lower()
    if shape == "one variant":
        assert "Only FP32 was built" in page and "No variant other than FP32" in page
        assert "No INT8 variant: no ranges were used." in page
        assert len(figures_in(page)) == 3  # accuracy (FP32 alone), latency, throughput
    elif shape == "labels":
        rows = {row[0]: row for row in table_rows(section(page, "outputs"))}
        accuracy = result.results["variants"][2]["outputs"]["scores"]["top1_accuracy"]
        assert f"{100 * accuracy:.1f} %" in rows["int8-minmax"]
        assert "top-1 accuracy" in section(page, "outputs")
    elif shape == "no eval images":
        assert "reuses the calibration images" in section(page, "run")
    else:
        ranges = section(page, "ranges")
        assert "the ranges were read from a file, not calibrated" in ranges
        assert "not_in_model" in section(page, "details")
        assert {row[0] for row in table_rows(ranges)} == {"input", "r1", "flat", "not_in_model"}


def test_pareto_front_is_the_set_of_undominated_points():
    rng = np.random.default_rng(5)
    for _ in range(50):
        pts = [
            Point(f"v{i}", "int8", float(q), 1, float(ms), None, bool(rep))
            for i, (q, ms, rep) in enumerate(
                zip(rng.integers(0, 5, 8) / 4, rng.integers(1, 6, 8), rng.random(8) > 0.2)
            )
        ]
        for higher in (True, False):
            sign = 1 if higher else -1
            usable = [p for p in pts if p.representative]
            expected = {
                p.variant
                for p in usable
                if not any(
                    o.ms <= p.ms
                    and sign * o.quality >= sign * p.quality
                    and (o.ms, o.quality) != (p.ms, p.quality)
                    for o in usable
                )
            }
            got = pareto_front(pts, higher)
            # duplicates of one (ms, quality) pair: one of them stands for the rest
            assert {(p.ms, p.quality) for p in pts if p.variant in got} == {
                (p.ms, p.quality) for p in pts if p.variant in expected
            }
            ms = {p.variant: p.ms for p in pts}
            assert [ms[name] for name in got] == sorted(ms[name] for name in got)  # fastest first


# --- the metric registry: tables, metrics.csv and the terminal summary -----------------------------


def regression_results(quality: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """The stored results reduced to one output ``boxes`` that is not class scores.

    Args:
        quality: variant -> (median ms, rel_l2); FP32's rel_l2 is left out of its outputs.
    """
    results = stored()
    results["model"]["comparison_outputs"] = {"boxes": {"shape": [4], "class_scores": False}}
    variants = {v["name"]: v for v in results["variants"]}
    results["variants"] = []
    for name, (ms, rel_l2) in quality.items():
        variant = variants.get(name) or {**variants["int8-mse"], "name": name}
        variant = {**variant, "latency_representative": True, "latency": [{**variant["latency"][0]}]}
        variant["latency"][0]["median_ms"] = ms
        variant["outputs"] = {"boxes": {} if name == "fp32" else {"rel_l2": rel_l2, "max_abs": 1.0}}
        results["variants"].append(variant)
    return results


TASK_OUTPUTS: dict[str, tuple[str, list[int], str, str, dict[str, float]]] = {
    # kind: (output, per-sample shape, headline, why it is of this kind, variant -> headline)
    "detection": (
        "boxes",
        [84, 8400],
        "det_f1",
        f"boxes [N, 84, 8400]: a YOLO head with 80 classes {SCRIPT}",
        {"fp16": 0.995, "int8-entropy": 0.80, "int8-minmax": 0.97, "int8-percentile": 0.99, "int8-mse": 0.95},
    ),
    "sequence": (
        "text",
        [26, 37],
        "seq_agreement",
        "text [N, 26, 37]: 37 classes per step, CTC blank 0",
        {"fp16": 0.93, "int8-entropy": 0.70, "int8-minmax": 0.85, "int8-percentile": 0.88, "int8-mse": 0.90},
    ),
}
"""Per kind, the output a task run of the stored model gets. Every detection headline but entropy's is within
the default tolerance (0.05); no sequence headline is within it, so the verdict names the closest."""

FASTER = {"fp32": 30.0, "fp16": 40.0, "int8-entropy": 10.0, "int8-minmax": 12.0, "int8-percentile": 14.0}
"""Median ms per batch of the task runs (int8-mse keeps its 23.4): faster INT8 variants than the stored
run's, so that the Pareto front by the headline differs from the one by top-1 agreement."""


def task_metrics(kind: str, value: float) -> dict[str, float]:
    """The figures of a variant whose headline is ``value`` on an output of ``kind``."""
    errors = {"max_abs": 3.0 * (1 - value), "mean_abs": 0.1 * (1 - value), "rel_l2": 0.5 * (1 - value)}
    errors.update({"cosine": 1 - (1 - value) ** 2, "snr_db": 30.0 * value})
    if kind == "sequence":
        return {**errors, "seq_agreement": value, "seq_edit_distance": (1 - value) / 4, "samples": 100}
    figures = {"det_precision": min(1.0, value + 0.01), "det_recall": value - 0.01, "det_f1": value}
    figures.update({"det_map50": 0.98 * value, "det_mean_iou": 0.9, "det_box_error": 1.5 * (1 - value)})
    figures.update({"det_score_error": 0.02, "det_reference": 120.0, "det_candidate": 118.0})
    return {**errors, **figures, "samples": 100}


def task_results(kind: str) -> dict[str, Any]:
    """The stored results of a run whose first output is of ``kind`` (:data:`TASK_OUTPUTS`), with
    :data:`FASTER` latencies, the ONNX Runtime flavour of two INT8 variants timed (one beyond its bound),
    and the verdict :func:`quantbench.evaluation.verdict.decide` gives."""
    from quantbench.evaluation.compare import Comparison
    from quantbench.evaluation.verdict import decide

    output, shape, metric, reason, values = TASK_OUTPUTS[kind]
    results = stored()
    results["model"]["comparison_outputs"] = {
        output: {"shape": shape, "class_scores": False, "kind": kind, "kind_reason": reason}
        | {"headline": metric, "higher_is_better": True},
        "logits": {"shape": [1000], "class_scores": True, "kind": "classes"}
        | {"kind_reason": "logits [N, 1000]: 1000 class scores per sample", "headline": "top1_agreement"}
        | {"higher_is_better": True},
    }
    for variant in results["variants"]:
        name = variant["name"]
        variant["outputs"] = {output: {} if name == "fp32" else task_metrics(kind, values[name])} | variant[
            "outputs"
        ]
        variant["latency"][0]["median_ms"] = FASTER.get(name, variant["latency"][0]["median_ms"])
        if name in ("int8-entropy", "int8-minmax"):
            distance = 0.004 if name == "int8-entropy" else 0.031
            variant["timed_model"] = {
                "model": f"models/{name}.onnxruntime.onnx",
                "judged_model": f"models/{name}.onnx",
                "outputs": {output: {"rel_l2": distance, "max_abs": 10 * distance}},
                "bound_rel_l2": 0.02,
                "within_bound": distance <= 0.02,
            }
    comparison = Comparison(
        outputs=results["model"]["comparison_outputs"],
        metrics={v["name"]: v["outputs"] for v in results["variants"]},
        latency={v["name"]: v["latency"] for v in results["variants"]},
        representative={v["name"]: v["latency_representative"] for v in results["variants"]},
    )
    verdict = decide(comparison)
    assert verdict is not None
    results["verdict"] = json.loads(json.dumps(verdict.to_json()))
    return results


def brute_front(results: dict[str, Any], quality: dict[str, float]) -> set[str]:
    """The variants no other beats on both median latency and ``quality`` (higher is better)."""
    pts = {
        v["name"]: (v["latency"][0]["median_ms"], quality[v["name"]])
        for v in results["variants"]
        if v["latency_representative"]
    }
    return {
        a
        for a, (ms, q) in pts.items()
        if not any(m2 <= ms and q2 >= q and (m2, q2) != (ms, q) for b, (m2, q2) in pts.items() if b != a)
    }


def page_text(fragment: str) -> str:
    """The text of an HTML fragment, tags dropped and entities unescaped."""
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def test_metrics_csv_keeps_its_columns_and_the_values_of_results_json():
    results = stored()
    text = metrics_csv(results)
    assert text.splitlines()[0] == (
        "variant,precision,output,max_abs,mean_abs,rel_l2,cosine,snr_db,top1_agreement,top5_overlap,"
        "top1_accuracy,top5_accuracy,det_precision,det_recall,det_f1,det_map50,det_mean_iou,det_box_error,"
        "det_score_error,det_reference,det_candidate,argmax_agreement,mean_iou,mask_iou,pixel_agreement,"
        "region_precision,region_recall,region_f1,"
        "seq_agreement,seq_edit_distance,channel_rel_l2_mean,channel_rel_l2_max,channel_rel_l2_worst_index,"
        "batch,median_ms,images_per_s"
    )
    rows = {row["variant"]: row for row in csv.DictReader(io.StringIO(text))}
    logits = results["variants"][2]["outputs"]["logits"]
    entropy = rows["int8-entropy"]
    assert entropy["cosine"] == str(logits["cosine"]) and entropy["top5_overlap"] == str(
        logits["top5_overlap"]
    )
    assert entropy["top1_accuracy"] == "" and rows["fp32"]["rel_l2"] == ""
    assert entropy["det_f1"] == "" and entropy["channel_rel_l2_mean"] == ""  # class scores have neither


def test_metrics_csv_has_the_task_metrics_with_the_values_of_results_json():
    results = task_results("detection")
    rows = list(csv.DictReader(io.StringIO(metrics_csv(results))))
    assert len(rows) == 2 * len(results["variants"])
    filled = set()
    for row in rows:
        variant = next(v for v in results["variants"] if v["name"] == row["variant"])
        metrics = variant["outputs"][row["output"]]
        for key in RESULTS_ORDER:
            assert row[key] == (str(metrics[key]) if key in metrics else ""), (row["variant"], key)
            filled |= {key} if row[key] else set()
    assert {m.key for m in METRICS if m.applies_to == "detection"} <= filled
    assert not filled & {"seq_agreement", "mask_iou", "channel_rel_l2_mean"}


def test_output_tables_show_every_metric_with_its_label_and_format():
    results = stored()
    results["variants"][2]["outputs"]["logits"]["snr_db"] = "inf"  # as results.json writes infinity
    del results["variants"][3]["outputs"]["logits"]["cosine"]
    [(output, table)], omitted = tables.output_tables(results)
    assert (output, omitted) == ("logits", 0)
    assert table.columns == [
        "variant", "top-1 agreement", "top-5 overlap", "rel. L2", "cosine", "SNR (dB)", "max abs", "mean abs"
    ]  # fmt: skip
    assert table.columns[1:] == [m.label for m in METRICS if m.applies(class_scores=True, labels=False)]
    m = results["variants"][1]["outputs"]["logits"]
    assert table.rows[0] == [
        "fp16",
        f"{100 * m['top1_agreement']:.1f} %",
        f"{100 * m['top5_overlap']:.1f} %",
        f"{m['rel_l2']:.4g}",
        f"{m['cosine']:.6g}",
        f"{m['snr_db']:.1f}",
        f"{m['max_abs']:.4g}",
        f"{m['mean_abs']:.4g}",
    ]
    assert table.rows[1][5] == "inf" and table.rows[2][4] == "–"


def test_accuracy_table_gives_fp32_its_figures_against_itself():
    results = stored()
    results["variants"][0]["outputs"]["logits"] = {"top1_accuracy": 0.75, "top5_accuracy": 0.5}
    table = sections.accuracy(results)["table"]
    fp32 = dict(zip(table.columns, table.rows[0]))
    assert {k: fp32[k] for k in ("top-1 agreement", "top-5 overlap", "top-1 accuracy", "rel. L2")} == {
        "top-1 agreement": "100.0 %",
        "top-5 overlap": "100.0 %",
        "top-1 accuracy": "75.0 %",  # against labels: FP32's own figure
        "rel. L2": "0",
    }
    boxes = sections.accuracy(regression_results({"fp32": (5.0, 0.0), "int8": (2.0, 0.25)}))["table"]
    assert "top-1 agreement" not in boxes.columns and "top-5 overlap" not in boxes.columns
    assert [dict(zip(boxes.columns, row))["rel. L2"] for row in boxes.rows] == ["0", "0.25"]


def test_a_relative_l2_headline_puts_lower_errors_on_the_pareto_front():
    results = regression_results(
        {
            "fp32": (5.0, 0.0),
            "a": (3.0, 0.2),
            "b": (2.0, 0.5),
            "c": (4.0, 0.1),
            "d": (2.5, 0.6),
            "e": (4.5, 0.3),
        }
    )
    assert [p.quality for p in points(results)] == [0.0, 0.2, 0.5, 0.1, 0.6, 0.3]  # FP32: no error
    accuracy = sections.accuracy(results)
    assert accuracy["metric"] == "relative L2 error against FP32"
    assert accuracy["front"] == ["b", "a", "c", "fp32"]


def test_terminal_summary_headings_and_figures():
    from rich.console import Console

    from quantbench.cli.summary import print_run_summary

    results = stored()
    console = Console(file=io.StringIO(), width=150)
    run = SimpleNamespace(results=results, summary=lambda: summary_rows(results), run_dir=Path("run"))
    print_run_summary(console, run)  # type: ignore[arg-type]
    lines = console.file.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("variant"))
    cells = [re.split(r"\s{2,}", line.strip()) for line in lines[start : start + 7]]
    assert cells[0] == ["variant", "top-1 agreement", "rel. L2", "ms/batch", "speed-up vs fp32"]
    assert cells[1][:3] == ["fp32", "-", "-"]
    assert cells[6] == ["int8-mse", "91.0%", "0.1709", "23.40 (b1)", "0.24x"]


# --- the verdict and its headline -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["detection", "sequence"])
def test_the_verdict_section_says_what_is_judged_how_and_what_to_ship(kind):
    results = task_results(kind)
    verdict = results["verdict"]
    output, headline = verdict["output"], metric_by_key(verdict["metric"])
    assert (output, verdict["kind"]) == (TASK_OUTPUTS[kind][0], kind)
    page = render_report(results)
    assert page.index('<section id="verdict">') < page.index('<section id="run">')
    top = section(page, "verdict")
    text = page_text(top)
    assert f"Ship {verdict['recommended']}: {verdict['reason']}." in text
    assert f"{headline.label} against FP32, on output {output}" in text
    assert f"{kind} ({results['model']['comparison_outputs'][output]['kind_reason']})" in text
    assert SCRIPT not in page and (html.escape(SCRIPT) in top) == (kind == "detection")
    tolerance = f"{verdict['tolerance']:g} below FP32's 100.0 % (the default for {kind} outputs"
    assert tolerance in text
    # each variant's headline, its shortfall and whether it is within the tolerance
    rows = {row[0]: row for row in table_rows(top[: top.index("Model timed vs model judged")])}
    assert set(rows) == set(verdict["values"])
    for name, value in verdict["values"].items():
        assert rows[name][1] == headline.format(value)
        assert rows[name][2] == format(1.0 - value, ".3g")
        assert rows[name][3] == ("yes" if name in verdict["within"] else "no")
    assert "recommended" in rows[verdict["recommended"]][-1]
    assert "timed model beyond its bound" in rows["int8-minmax"][-1]
    if kind == "detection":
        assert verdict["recommended"] == "int8-minmax" and verdict["closest"] is None
        assert "closest" not in text
    else:
        closest = verdict["closest"]
        assert verdict["recommended"] == "fp32" and closest["variant"] == "fp16"
        figure = headline.format(closest["value"])
        assert f"{closest['variant']}: {figure}, {closest['short_by']:.3g} beyond the tolerance" in text
    # the model timed against the model judged, per INT8 variant timed on another model
    timed = {row[0]: row for row in table_rows(top[top.index("Model timed vs model judged") :])}
    assert set(timed) == {"int8-entropy", "int8-minmax"}
    for name, row in timed.items():
        entry = next(v for v in results["variants"] if v["name"] == name)["timed_model"]
        assert row[1:4] == [output, entry["judged_model"], entry["model"]]
        assert row[4] == f"{entry['outputs'][output]['rel_l2']:.4g}"
        assert row[-1] == ("yes" if entry["within_bound"] else "no")


@pytest.mark.parametrize("kind", ["detection", "sequence"])
def test_the_accuracy_axis_and_its_pareto_front_are_the_verdicts_headline(kind):
    results = task_results(kind)
    verdict = results["verdict"]
    headline = metric_by_key(verdict["metric"])
    page = render_report(results)
    accuracy = section(page, "accuracy")
    svg = figures_in(accuracy)[0]
    assert f"{headline.label} against FP32 (%, higher is better)" in svg and "tolerance" in svg
    assert "top-1 agreement" not in svg
    assert f"<code>{verdict['output']}</code>: {headline.label} against FP32" in accuracy
    # the front by the headline, which is not the front by top-1 agreement of the other output
    by_headline = brute_front(results, {k: v for k, v in verdict["values"].items() if v is not None})
    agreement = {v["name"]: v["outputs"]["logits"].get("top1_agreement", 1.0) for v in results["variants"]}
    assert by_headline != brute_front(results, agreement)
    text = re.search(r"On the Pareto front[^:]*: ([^<]*)\.", accuracy).group(1)
    assert set(text.split(", ")) == by_headline
    rows = {row[0]: row for row in table_rows(accuracy)}
    header = re.findall(r"<th[^>]*>(.*?)</th>", accuracy.split("</thead>")[0])
    assert header[1] == headline.label and "top-1 agreement" not in header
    assert {name for name, row in rows.items() if row[header.index("Pareto front")] == "yes"} == by_headline
    # the per-output table shows the output's kind and the metrics of its kind
    [(first, table), (second, logits)], _ = tables.output_tables(results)
    assert (first, second) == (verdict["output"], "logits")
    assert table.caption.startswith(f"kind {kind}: ") and f"headline: {headline.label}" in table.caption
    assert "(the verdict is about this output)" in table.caption
    kind_labels = [m.label for m in METRICS if m.applies_to == kind]
    assert [c for c in table.columns if c in kind_labels] == kind_labels
    assert "top-1 agreement" not in table.columns and "top-1 agreement" in logits.columns
    assert not {m.label for m in METRICS if m.applies_to not in ("every output", kind)} & set(table.columns)
    assert "verdict" not in logits.caption and logits.caption.startswith("kind classes: ")


def test_a_headline_the_registry_lacks_is_shown_by_its_key_and_scores():
    """A metric of your own (kind ``plugin``) heads the verdict: its key labels it, its scores fill its
    table, and its values print with 4 significant digits."""
    results = stored()
    results["model"]["comparison_outputs"]["metric:f1"] = {
        "shape": [], "class_scores": False, "kind": "plugin", "kind_reason": "your metric m.py:f1",
        "headline": "f1", "higher_is_better": True, "reference": 1.0,
    }  # fmt: skip
    values = {
        v["name"]: 1.0 if v["name"] == "fp32" else 0.9 - 0.01 * i for i, v in enumerate(results["variants"])
    }
    for variant in results["variants"]:
        name = variant["name"]
        variant["outputs"]["metric:f1"] = {} if name == "fp32" else {"f1": values[name], "recall": 0.8}
    results["verdict"] = {
        "output": "metric:f1", "kind": "plugin", "metric": "f1", "label": "f1", "higher_is_better": True,
        "reference": 1.0, "tolerance": 0.01, "tolerance_default": False, "values": values,
        "within": ["fp32"], "recommended": "fp32", "reason": "no other variant is close", "closest": None,
    }  # fmt: skip
    page = render_report(results)
    text = page_text(section(page, "verdict"))
    assert "f1 against FP32, on output metric:f1" in text and "0.01 below FP32's 1 (set for this run)" in text
    rows = {row[0]: row for row in table_rows(section(page, "verdict"))}
    assert {name: row[1] for name, row in rows.items()} == {k: format(v, ".4g") for k, v in values.items()}
    assert "f1 against FP32 (higher is better)" in figures_in(section(page, "accuracy"))[0]
    table = dict(tables.output_tables(results)[0])["metric:f1"]
    assert table.columns == ["variant", "f1", "recall"] and table.rows[0][1:] == ["0.89", "0.8"]


def test_an_old_results_json_without_a_verdict_still_renders(tmp_path):
    results = stored()
    assert "verdict" not in results and "kind" not in results["model"]["comparison_outputs"]["logits"]
    (tmp_path / "results.json").write_text(json.dumps(results))
    page = write_report(tmp_path).read_text()
    top = page_text(section(page, "verdict"))
    assert "holds no verdict" in top and "top-1 agreement with FP32 of output logits" in top
    assert "Ship" not in top and "Model timed" not in top
    svg = figures_in(section(page, "accuracy"))[0]
    assert "top-1 agreement with FP32 (%)" in svg and "tolerance" not in svg
    [(_, table)], _ = tables.output_tables(results)
    assert table.caption == ""
    assert [row["headline"] for row in summary_rows(results)] == [None] * len(results["variants"])


def test_summary_rows_carry_the_verdicts_headline_of_the_verdicts_output():
    results = task_results("detection")
    verdict = results["verdict"]
    rows = summary_rows(results)
    assert [row["headline"] for row in rows] == [verdict["values"][v["name"]] for v in results["variants"]]
    assert set(rows[0]) == {
        "variant", "top1_agreement", "rel_l2", "headline", "batch", "ms", "speedup", "representative"
    }  # fmt: skip
    boxes = results["variants"][2]["outputs"]["boxes"]
    assert rows[2]["rel_l2"] == boxes["rel_l2"] and rows[2]["top1_agreement"] is None
    assert rows[2]["speedup"] == pytest.approx(FASTER["fp32"] / FASTER["int8-entropy"])


@pytest.mark.parametrize(
    ("info", "group"),
    [
        ({"kind": "classes", "shape": [1000]}, "class scores"),
        ({"kind": "detection", "shape": [84, 8400]}, "detection"),
        ({"kind": "dense", "shape": [1, 64, 64]}, "dense mask"),
        ({"kind": "dense", "shape": [21, 64, 64]}, "dense classes"),
        ({"kind": "sequence", "shape": [26, 37]}, "sequence"),
        ({"kind": "generic", "shape": [7]}, "generic"),
        ({"kind": "plugin", "shape": []}, None),
        ({"shape": [1000], "class_scores": True}, None),
    ],
)
def test_the_metric_group_of_a_recorded_kind_is_that_of_its_output_kind(info, group):
    assert metric_group(info) == group


def test_a_dense_mask_output_table_shows_the_mask_metrics():
    results = stored()
    mask = {"rel_l2": 0.1, "mask_iou": 0.93, "pixel_agreement": 0.98, "mean_iou": 0.5, "samples": 100}
    results["model"]["comparison_outputs"] = {
        "mask": {"shape": [1, 64, 64], "class_scores": False, "kind": "dense", "kind_reason": "a mask"}
    }
    for variant in results["variants"]:
        variant["outputs"] = {"mask": {} if variant["name"] == "fp32" else dict(mask)}
    [(_, table)], _ = tables.output_tables(results)
    assert table.columns == ["variant", "rel. L2", "mask IoU", "mask pixel agreement"]  # no mean IoU
    assert table.rows[0] == ["fp16", "0.1", "93.0 %", "98.0 %"]


# --- bad input and the command line ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("{not json", "not valid JSON"),
        ('{"format": "something-else"}', "not a quantbench results file"),
        ('{"format": "quantbench-results", "format_version": 2}', "format version 2"),
        ('{"format": "quantbench-results", "format_version": 1, "model": {}}', "'manifest' is missing"),
        ("[1, 2]", "not a quantbench results file"),
    ],
)
def test_bad_results_files_are_one_line_errors_naming_the_file(tmp_path, content, message):
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    with pytest.raises(QuantbenchError, match=message) as info:
        load_results(tmp_path)
    assert str(tmp_path / "results.json") in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "report.html").exists()


def test_results_json_with_values_of_the_wrong_type_is_a_one_line_error(tmp_path):
    results = stored()
    results["variants"][1]["latency"] = "fast"
    (tmp_path / "results.json").write_text(json.dumps(results))
    with pytest.raises(QuantbenchError, match="unexpected type or form") as info:
        write_report(tmp_path)
    assert str(tmp_path / "results.json") in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "report.html").exists()


def test_cli_report_rerenders_and_reports_errors_in_one_line(tiny_run, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(tiny_run.run_dir / "results.json", folder / "results.json")
    out = CliRunner().invoke(app, ["report", str(folder)])
    assert out.exit_code == 0, out.output
    assert f"report: {folder / 'report.html'}" in out.output.replace("\n", "")
    assert (folder / "report.html").read_bytes() == (tiny_run.run_dir / "report.html").read_bytes()
    (folder / "results.json").write_text('{"format": "quantbench-results", "format_version": 7}')
    bad = subprocess.run(
        [sys.executable, "-m", "quantbench", "report", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and bad.stderr.strip().count("\n") == 0
    assert "results.json" in bad.stderr and "version 7" in bad.stderr


def test_cli_run_prints_the_report_path(tiny, tmp_path):
    model, images = tiny
    args = ["run", "--model", str(model), "--images", str(images), "--n", "16", "--method", "minmax"]
    out = CliRunner().invoke(
        app, [*args, "--bench-runs", "2", "--bench-seconds", "0", "--out", str(tmp_path)]
    )
    assert out.exit_code == 0, out.output
    (run_dir,) = tmp_path.glob("tiny-*")
    assert f"report: {run_dir / 'report.html'}" in out.output.replace("\n", "")
    assert (run_dir / "report.html").stat().st_size > 0


def test_importing_the_report_package_leaves_heavy_libraries_unloaded():
    code = (
        "import sys, quantbench.report, quantbench.cli.report\n"
        "print([m for m in ('matplotlib', 'pandas', 'jinja2', 'numpy') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# --- in a real browser ----------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's chromium, driven by Playwright (which never downloads a browser of its own here)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        try:
            context = playwright.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 900},
            )
        except Exception as exc:  # a browser that cannot start here is a skip, not a failure
            pytest.skip(f"chromium could not be launched: {str(exc).splitlines()[0]}")
        yield context
        context.close()


def open_in_browser(context, report: Path) -> dict[str, Any]:
    """Load ``report``; return console errors, dialogs, figure sizes, script elements and the text."""
    page = context.new_page()
    errors: list[str] = []
    dialogs: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))

    def on_dialog(dialog):
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.goto(report.resolve().as_uri(), wait_until="load")
    found = page.evaluate(
        """() => ({
            figures: Array.from(document.querySelectorAll('img')).map(img => {
                const box = img.getBoundingClientRect();
                return {natural: img.naturalWidth, width: box.width, height: box.height,
                        complete: img.complete};
            }),
            scripts: document.querySelectorAll('script').length,
            text: document.body.innerText,
        })"""
    )
    screenshot = report.with_name("report.png")
    page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    return {**found, "errors": errors, "dialogs": dialogs, "screenshot": screenshot}


def test_report_in_headless_chromium_shows_hostile_names_as_text(browser, tiny_run, tmp_path):
    names = {"r1": SCRIPT, "c2": QUOTES, "tiny": "<img src=x onerror=alert(2)>"}
    results = with_sensitivity_and_layers(rename(tiny_run.results, names))
    results["sensitivity"]["excluded"] = [SCRIPT]
    results["variants"][1]["tensors_without_range"] = [SCRIPT, QUOTES]
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    report = write_report(folder)
    page_html = report.read_text()
    assert SCRIPT not in page_html and html.escape(SCRIPT) in page_html
    seen = open_in_browser(browser, report)
    assert seen["errors"] == [] and seen["dialogs"] == []
    assert seen["scripts"] == 0
    assert (
        SCRIPT in seen["text"] and QUOTES in seen["text"] and "<img src=x onerror=alert(2)>" in seen["text"]
    )
    assert len(seen["figures"]) == len(figures_in(page_html)) >= 6
    for figure in seen["figures"]:
        assert figure["complete"] and figure["natural"] > 0 and figure["width"] > 0 and figure["height"] > 0
    assert seen["screenshot"].stat().st_size > 10_000


def test_real_run_report_in_headless_chromium(browser, tmp_path):
    folder = tmp_path / "real"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(with_sensitivity_and_layers(stored())))
    report = write_report(folder)
    seen = open_in_browser(browser, report)
    assert seen["errors"] == [] and seen["dialogs"] == [] and seen["scripts"] == 0
    assert len(seen["figures"]) == 7
    assert all(f["natural"] > 0 and f["width"] > 0 and f["height"] > 0 for f in seen["figures"])
    assert "6. Calibration details" in seen["text"] and (folder / "report.png").stat().st_size > 10_000


def test_labels_of_close_points_cover_no_other_dot_nor_label():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from quantbench.report.plotting import dot_box, label_points, new_figure, overlap

    # int8-minmax and int8-percentile 0.6 ms and 0.3 points apart, up and to the right, as on a real run:
    # a label right above minmax's dot would sit on percentile's
    for pts in (
        [(20.0, 93.8, "int8-minmax"), (20.6, 94.1, "int8-percentile"), (35.0, 100.0, "fp32")],
        [
            (20.0, 93.8, "int8-minmax"),
            (20.5, 94.3, "int8-percentile"),
            (21.0, 93.4, "int8-mse"),
            (35.0, 100.0, "fp32"),
        ],
    ):
        with new_figure(7.5, 4.2) as (fig, ax):
            FigureCanvasAgg(fig)
            ax.scatter([p[0] for p in pts], [p[1] for p in pts])
            ax.set_xlim(0, 45)
            ax.set_ylim(85, 101)
            fig.draw_without_rendering()
            label_points(ax, pts)
            renderer = fig.canvas.get_renderer()
            fig.draw(renderer)
            drawn = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}  # as rendered
            dots = {name: dot_box(ax, x, y) for x, y, name in pts}
        assert sorted(drawn) == sorted(name for _, _, name in pts)
        for name, extent in drawn.items():
            box = (extent.x0, extent.y0, extent.x1, extent.y1)
            assert all(overlap(box, dot) == 0.0 for other, dot in dots.items() if other != name), name
            for other, extent2 in drawn.items():
                if other != name:
                    assert overlap(box, (extent2.x0, extent2.y0, extent2.x1, extent2.y1)) == 0.0, (
                        name,
                        other,
                    )


def test_one_colour_per_variant_in_every_figure():
    from quantbench.report.plotting import color, variant_colors

    colors = variant_colors(["fp32", "fp16", "int8-entropy", "int8-mse"], ["entropy", "mse", "imported"])
    assert colors["entropy"] == colors["int8-entropy"] == color(2)
    assert colors["mse"] == colors["int8-mse"] == color(3)
    assert colors["imported"] == color(4)  # ranges without a variant of their own get a colour of their own
    assert len({colors[name] for name in ("fp32", "fp16", "int8-entropy", "int8-mse", "imported")}) == 5


def test_the_engine_s_int8_nodes_and_lint_are_tabled():
    from quantbench.report.tables import int8_node_table

    results = {
        "variants": [
            {"name": "fp32"},
            {
                "name": "int8-minmax",
                "int8_nodes": {"quantized": 64, "int8": 62, "nodes": []},
                "precision_lint": {
                    "quantized_in_float": ["ConvTranspose:up1", "ConvTranspose:up2"],
                    "known_limits": [
                        {"node": "ConvTranspose:up1", "op": "ConvTranspose", "reason": "r"},
                        {"node": "ConvTranspose:up2", "op": "ConvTranspose", "reason": "r"},
                    ],
                    "unfused_qdq": [{"layer": "q1", "onnx": ["QuantizeLinear:pool_q"]}],
                    "float_between_int8": [
                        {"layer": "conv1", "tensor": "t1", "into": ["conv2"]},
                        {"layer": "conv2", "tensor": "t2", "into": ["conv3"]},
                    ],
                },
            },
        ]
    }
    table = int8_node_table(results)
    assert table is not None and [row[0] for row in table.rows] == ["int8-minmax"]
    row = dict(zip(table.columns, table.rows[0], strict=True))
    assert (row["quantized nodes"], row["run INT8"]) == ("64", "62")
    assert row["quantized, left in float"] == (
        "ConvTranspose:up1 (known ConvTranspose limit), ConvTranspose:up2 (known ConvTranspose limit)"
    )
    assert row["float between INT8 layers"] == "2"
    assert row["Q/DQ left unfused"] == "QuantizeLinear:pool_q"
    assert int8_node_table({"variants": [{"name": "fp32"}]}) is None


def test_report_says_how_each_int8_variant_was_built():
    results = stored()

    def judged(applied: bool, before: float, after: float, **more: Any) -> dict[str, Any]:
        decision = {"metric": "top1_agreement", "output": "logits", "images": 32, "held_apart": True}
        return {"applied": applied, "decision": decision | {"before": before, "after": after}, **more}

    steps = {
        "int8-entropy": {
            "weight_rounding": judged(True, 0.8, 0.9, method="adaptive"),
            "bias_correction": judged(False, 0.9, 0.85, nodes=50),
            "activation_offsets": {"tensors": [{"tensor": "a", "padded_readers": ["n"]}, {"tensor": "b"}]},
            "cpu_flavour": {"name": "fast"},
        },
        "int8-minmax": {
            "weight_rounding": judged(False, 0.9, 0.8, method="adaptive"),
            "bias_correction": judged(True, 0.9, 0.95, nodes=50),
        },
    }
    for variant in results["variants"]:
        variant.update(steps.get(variant["name"], {}))
    table = tables.build_table(results)
    assert table is not None
    rows = {row[0]: dict(zip(table.columns, row, strict=True)) for row in table.rows}
    int8 = [v["name"] for v in results["variants"] if v["precision"] == "int8"]
    assert sorted(rows) == sorted(int8) and "fp32" not in rows
    entropy, minmax = rows["int8-entropy"], rows["int8-minmax"]
    assert entropy["weights"] == "adaptive: top1_agreement 0.8 -> 0.9 on 32 images held apart"
    assert entropy["bias correction"].startswith("rejected: top1_agreement 0.9 -> 0.85")
    assert "layers" not in entropy["bias correction"]
    assert entropy["activation offsets"] == "2 tensors (1 read through a Pad)"
    assert entropy["CPU flavour"] == "fast"
    assert minmax["weights"].startswith("nearest (adaptive judged worse): top1_agreement 0.9 -> 0.8")
    assert minmax["bias correction"].endswith("; 50 layers") and minmax["bias correction"].startswith("kept")
    assert minmax["activation offsets"] == "off"
    plain = next(name for name in int8 if name not in steps)
    assert rows[plain]["weights"] == "nearest" and rows[plain]["bias correction"] == "off"
    page = page_text(render_report(results))
    assert "How the INT8 variants were built" in page
    assert "nearest (adaptive judged worse): top1_agreement 0.9 -> 0.8 on 32 images held apart" in page
    results["equalization"] = {"convs": 9, "rounds": 3, "pairs": [{"first": "a"}, {"first": "b"}]}
    equalized = tables.build_table(results)
    assert equalized is not None
    rows = {row[0]: dict(zip(equalized.columns, row, strict=True)) for row in equalized.rows}
    assert rows[plain]["weights"] == "equalized (2 pairs), nearest"
