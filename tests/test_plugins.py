"""Metrics of your own (``--metric``): loading, checking, combining over batches, results.json, verdict."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import quantbench
from quantbench.cli import app
from quantbench.cli.options import api_keywords
from quantbench.errors import QuantbenchError
from quantbench.evaluation.compare import Comparison
from quantbench.evaluation.plugins import (
    ENTRY_POINT_GROUP,
    PluginAccumulator,
    load_metric,
    load_metrics,
)
from quantbench.evaluation.verdict import DEFAULT_TOLERANCE, decide, main_output
from tests.conftest import photo_folder
from tests.test_run import FAST, tiny_classifier

AGREEMENT = """
import numpy as np

import quantbench


@quantbench.metric(headline="agreement", higher_is_better=True)
def argmax_and_error(reference, candidate, names):
    ref, got = reference["scores"], candidate["scores"]
    return {
        "agreement": float(np.mean(ref.argmax(1) == got.argmax(1))),
        "abs_error": float(np.abs(ref - got).mean()),
        "batch": float(len(names)),
    }
"""
"""A metric with a headline where higher is better: argmax agreement, the mean absolute difference of the
scores and the batch size (whose sample-weighted mean tells how batches are combined)."""

ERROR = """
import numpy as np


def abs_error(reference, candidate, names):
    return {"abs_error": float(np.abs(reference["scores"] - candidate["scores"]).mean())}


abs_error.headline = "abs_error"
abs_error.higher_is_better = False
"""
"""A metric declared with plain attributes, lower is better."""

QUICK = {"n": 16, "eval_n": 20, "methods": ["minmax"], "precisions": ["fp32", "int8"], **FAST}
"""20 held-out samples: batches of 8, 8 and 4."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return tiny_classifier(root / "tiny.onnx"), photo_folder(root / "images", 40, size=20)


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _outputs(model: Path, images: Path, judged: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Independently: FP32's scores and those of the Q/DQ model as written, on the named samples."""
    import onnxruntime as ort

    from quantbench.data import open_dataset
    from quantbench.model import input_specs, load_model

    dataset = open_dataset(images, input_specs(load_model(model)))
    x = np.stack([dataset.load(name)[0][0][1]["input"] for name in names])
    as_written = ort.SessionOptions()
    as_written.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(str(model)).run(None, {"input": x})[0]
    got = ort.InferenceSession(str(judged), as_written).run(None, {"input": x})[0]
    return ref, got


def test_a_metric_of_your_own_is_scored_recorded_and_decides_the_verdict(tiny, tmp_path):
    model, images = tiny
    plugin = _write(tmp_path, "my_metric.py", AGREEMENT)
    spec = f"{plugin}:argmax_and_error"
    result = quantbench.run(model, images, metric=[spec], out=tmp_path / "runs", **QUICK)
    results = json.loads((result.run_dir / "results.json").read_text())
    described = results["model"]["comparison_outputs"]["metric:argmax_and_error"]
    assert described == {
        "shape": [],
        "class_scores": False,
        "kind": "plugin",
        "kind_reason": f"your metric {spec}",
        "headline": "agreement",
        "higher_is_better": True,
        "reference": 1.0,
    }
    fp32, int8 = results["variants"]
    assert fp32["outputs"]["metric:argmax_and_error"] == {}  # FP32 is not scored: its value is the reference
    scores = int8["outputs"]["metric:argmax_and_error"]
    names = results["data"]["evaluation"]["names"]
    ref, got = _outputs(model, images, result.run_dir / "models/int8-minmax.onnx", names)
    assert scores["agreement"] == pytest.approx(np.mean(ref.argmax(1) == got.argmax(1)))
    assert scores["abs_error"] == pytest.approx(np.abs(ref - got).mean(), rel=1e-4)
    assert scores["abs_error"] == pytest.approx(int8["outputs"]["scores"]["mean_abs"], rel=1e-4)
    assert scores["batch"] == pytest.approx((8 * 8 + 8 * 8 + 4 * 4) / 20)  # weighted by samples
    verdict = results["verdict"]
    assert verdict["output"] == "metric:argmax_and_error" and verdict["kind"] == "plugin"
    assert verdict["metric"] == verdict["label"] == "agreement"
    assert verdict["tolerance"] == DEFAULT_TOLERANCE["plugin"] == 0.01
    assert verdict["values"] == {"fp32": 1.0, "int8-minmax": scores["agreement"]}


def test_an_installed_metric_is_found_through_its_entry_point(tiny, tmp_path, monkeypatch):
    _write(tmp_path, "quantbench_test_installed_metric.py", ERROR)
    monkeypatch.syspath_prepend(str(tmp_path))
    point = importlib.metadata.EntryPoint(
        "abs-error", "quantbench_test_installed_metric:abs_error", ENTRY_POINT_GROUP
    )
    real = importlib.metadata.entry_points

    def entry_points(**selection):
        return [point] if selection.get("group") == ENTRY_POINT_GROUP else real(**selection)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    model, images = tiny
    result = quantbench.run(model, images, metric=["abs-error"], tolerance=1.0, out=tmp_path, **QUICK)
    described = result.results["model"]["comparison_outputs"]["metric:abs-error"]
    assert described["kind_reason"] == "your metric abs-error" and described["reference"] == 0.0
    verdict = result.results["verdict"]
    error = result.results["variants"][1]["outputs"]["metric:abs-error"]["abs_error"]
    assert verdict["output"] == "metric:abs-error" and not verdict["higher_is_better"]
    assert verdict["values"] == {"fp32": 0.0, "int8-minmax": error} and error > 0
    assert verdict["within"] == ["fp32", "int8-minmax"]  # an error below the stated tolerance of 1
    monkeypatch.undo()  # uninstalled: the name is unknown again
    with pytest.raises(QuantbenchError, match="'abs-error' is neither path/to/file"):
        load_metric("abs-error")


def test_batch_scores_are_a_sample_weighted_mean_leaving_out_nan(tmp_path):
    plugin = load_metric(f"{_write(tmp_path, 'm.py', AGREEMENT)}:argmax_and_error")
    scores = iter([{"agreement": 1.0, "x": math.nan}, {"agreement": 0.0, "x": 2.0}, {"agreement": math.nan}])
    combined = PluginAccumulator(dataclasses.replace(plugin, function=lambda ref, got, names: next(scores)))
    combined.update({}, {}, ["a", "b", "c"])
    combined.update({}, {}, ["d"])
    combined.update({}, {}, ["e", "f"])
    assert combined.result() == {"agreement": 0.75, "x": 2.0}
    empty = PluginAccumulator(dataclasses.replace(plugin, function=lambda *_: {"agreement": math.nan}))
    empty.update({}, {}, ["a"])
    assert math.isnan(empty.result()["agreement"])


def test_a_metric_reads_the_outputs_but_cannot_change_them(tmp_path):
    path = _write(
        tmp_path, "m.py", "def clip(reference, candidate, names):\n    reference['scores'][0] = 0\n"
        "    return {'x': 0.0}\nclip.headline = 'x'\nclip.higher_is_better = True\n"
    )  # fmt: skip
    reference = {"scores": np.ones((2, 3), np.float32)}
    with pytest.raises(QuantbenchError, match="failed: ValueError: assignment destination is read-only"):
        load_metric(f"{path}:clip").score(reference, reference, ["a", "b"])
    assert reference["scores"].all()


def _comparison(ref: float, higher: bool, values: dict[str, float]) -> Comparison:
    result = Comparison()
    result.outputs = {
        "out": {"kind": "detection", "headline": "det_f1", "higher_is_better": True},
        "metric:mine": {"kind": "plugin", "headline": "score", "higher_is_better": higher, "reference": ref},
        "metric:other": {"kind": "plugin", "headline": "x", "higher_is_better": True, "reference": 1.0},
    }
    for name, value in values.items():
        result.metrics[name] = {"out": {"det_f1": 1.0}, "metric:mine": {"score": value}, "metric:other": {}}
        result.latency[name] = [{"median_ms": {"fp32": 10.0, "int8-a": 5.0, "int8-b": 2.0}[name]}]
        result.representative[name] = True
    return result


def test_the_first_metric_of_your_own_is_the_headline_against_its_declared_reference(tmp_path) -> None:
    declared = "@quantbench.metric(headline='score', higher_is_better=True, reference=10)"
    path = _write(tmp_path, "m.py", f"import quantbench\n{declared}\ndef fn(r, c, n):\n    return {{}}\n")
    assert load_metric(f"{path}:fn").describe()["reference"] == 10.0
    assert main_output({"a": {"kind": "generic"}, "b": {"kind": "classes"}, "m": {"kind": "plugin"}}) == "m"
    values = {"fp32": 123.0, "int8-a": 9.6, "int8-b": 9.4}  # FP32's own scores are never used
    verdict = decide(_comparison(10.0, True, values), tolerance=0.5)
    assert verdict is not None and verdict.output == "metric:mine" and verdict.reference == 10.0
    assert verdict.values == {"fp32": 10.0, "int8-a": 9.6, "int8-b": 9.4}
    assert verdict.within == ["fp32", "int8-a"] and verdict.recommended == "int8-a"
    assert verdict.reason.startswith("the fastest variant whose score on metric:mine is within 0.5 of FP32's")
    lower = decide(_comparison(0.0, False, {"fp32": 0.0, "int8-a": 0.02, "int8-b": 0.005}))
    assert lower is not None and lower.tolerance == 0.01 and lower.recommended == "int8-b"
    none = decide(_comparison(0.0, False, {"fp32": 0.0, "int8-a": 0.5, "int8-b": 0.25}))
    assert none is not None and none.recommended == "fp32" and none.closest is not None
    assert none.closest["variant"] == "int8-b" and "the closest, int8-b, has 0.25" in none.reason


BAD_RETURNS = {
    "[1.0]": "returned list; it must return a dict of floats",
    "{'agreement': 'high'}": "returned 'agreement': 'high'; scores must be finite (or NaN) floats by name",
    "{'agreement': float('inf')}": "returned 'agreement': inf; scores must be finite",
    "{'agreement': True}": "returned 'agreement': True; scores must be finite",
    "{1: 0.5, 'agreement': 1.0}": "returned 1: 0.5; scores must be finite",
    "{'f1': 0.5}": "declares headline 'agreement' but returned only ['f1']",
    "{}": "declares headline 'agreement' but returned only nothing",
    "1 / 0": "failed: ZeroDivisionError: division by zero",
}


@pytest.mark.parametrize("returned", list(BAD_RETURNS))
def test_what_a_metric_returns_is_checked(tmp_path, returned):
    declared = "@quantbench.metric(headline='agreement', higher_is_better=True)"
    text = f"import quantbench\n{declared}\ndef fn(reference, candidate, names):\n    return {returned}\n"
    plugin = load_metric(f"{_write(tmp_path, 'm.py', text)}:fn")
    with pytest.raises(QuantbenchError, match=re.escape(BAD_RETURNS[returned])) as error:
        plugin.score({}, {}, ["a"])
    assert str(error.value).startswith(f"--metric '{tmp_path / 'm.py'}:fn' ") and "\n" not in str(error.value)


DECLARATIONS = {
    "fn.higher_is_better = True": "fn declares no headline; decorate it with @quantbench.metric(",
    "fn.headline = ''; fn.higher_is_better = True": "fn declares no headline",
    "fn.headline = 'x'": "fn does not declare higher_is_better (True or False)",
    "fn.headline = 'x'; fn.higher_is_better = 1": "fn does not declare higher_is_better",
    "fn.headline = 'x'; fn.higher_is_better = True; fn.reference = 'one'": "fn.reference must be a finite",
}


@pytest.mark.parametrize("declared", list(DECLARATIONS))
def test_a_metric_must_declare_its_headline_and_direction(tmp_path, declared):
    path = _write(tmp_path, "m.py", f"def fn(reference, candidate, names):\n    return {{}}\n{declared}\n")
    with pytest.raises(QuantbenchError, match=re.escape(DECLARATIONS[declared])) as error:
        load_metric(f"{path}:fn")
    assert "\n" not in str(error.value)


def test_a_metric_that_cannot_be_loaded_is_one_line_naming_the_option(tmp_path):
    path = _write(tmp_path, "m.py", AGREEMENT)
    broken = _write(tmp_path, "broken.py", "import no_such_module_anywhere\n")
    cases = {
        "missing.py:fn": "--metric 'missing.py:fn': file missing.py not found",
        f"{path}:nothing": f"--metric '{path}:nothing': {path} has no function 'nothing'",
        str(path): f"--metric '{path}': name the function too, as path/to/file.py:function",
        f"{broken}:fn": f"importing {broken} failed (ModuleNotFoundError: No module named",
        "no-such-metric": "--metric 'no-such-metric' is neither path/to/file.py:function nor an installed",
    }
    for spec, message in cases.items():
        with pytest.raises(QuantbenchError, match=re.escape(message)) as error:
            load_metrics([spec])
        assert "\n" not in str(error.value), spec
    with pytest.raises(QuantbenchError, match="are both called 'argmax_and_error'; rename one function"):
        load_metrics([f"{path}:argmax_and_error", f"{path}:argmax_and_error"])


def test_run_refuses_a_bad_metric_in_one_line(tiny, tmp_path):
    model, images = tiny
    path = _write(tmp_path, "m.py", AGREEMENT.replace('"agreement": float', '"agreed": float'))
    with pytest.raises(QuantbenchError, match="declares headline 'agreement' but returned only") as error:
        quantbench.run(model, images, metric=[f"{path}:argmax_and_error"], out=tmp_path, **QUICK)
    assert "\n" not in str(error.value)
    with pytest.raises(QuantbenchError, match="metric takes a list"):
        quantbench.run(model, images, metric=f"{path}:argmax_and_error", out=tmp_path, **QUICK)


def test_the_command_line_takes_metric_repeatedly(tiny, tmp_path):
    assert api_keywords({"metric": None})["metric"] == []
    assert api_keywords({"metric": ["a.py:f", "b"]})["metric"] == ["a.py:f", "b"]
    model, images = tiny
    argv = ["run", "--model", str(model), "--images", str(images), "--n", "16", "--method", "minmax"]
    argv += ["--precisions", "fp32,int8", "--no-bias-correction"]
    out = CliRunner().invoke(app, [*argv, "--metric", "missing.py:fn", "--out", str(tmp_path)])
    assert isinstance(out.exception, QuantbenchError)
    assert str(out.exception) == "--metric 'missing.py:fn': file missing.py not found"
