"""Restructuring keeps behaviour: the stored runs of tests/golden.py come out the same.

What is compared is everything a run decides about the model (see ``tests.golden.normalize``); floats
may differ by 0.1 % relative, which covers another CPU's rounding and nothing a change of behaviour
would produce (a moved range, another node kept in float, a changed metric).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests import golden
from tests.conftest import photo_folder, tiny_conv_model


def _check(name: str, results: dict, root: Path) -> None:
    expected = json.loads((golden.GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    got = json.loads(json.dumps(golden.normalize(results, (str(root),))))
    found = golden.differences(expected, got)
    assert not found, f"{len(found)} differences, first: " + "; ".join(found[:8])


def test_sample_run_is_unchanged(sample: tuple[Path, Path], tmp_path: Path) -> None:
    model, images = sample
    results = golden.sample_case(model, images, tmp_path / "runs")
    expected_root = str(model.parent)
    results = json.loads(json.dumps(results).replace(expected_root, str(tmp_path / "sample")))
    _check("sample_run", results, tmp_path)


def test_sample_sensitivity_is_unchanged(sample: tuple[Path, Path], tmp_path: Path) -> None:
    model, images = sample
    results = golden.sensitivity_case(model, images, tmp_path / "runs")
    results = json.loads(json.dumps(results).replace(str(model.parent), str(tmp_path / "sample")))
    _check("sample_sensitivity", results, tmp_path)


def test_sample_calibration_is_unchanged(sample: tuple[Path, Path], tmp_path: Path) -> None:
    model, images = sample
    results = golden.calibrate_case(model, images, tmp_path / "calibrate")
    results = json.loads(json.dumps(results).replace(str(model.parent), str(tmp_path / "sample")))
    _check("sample_calibrate", results, tmp_path)


def test_imported_ranges_run_is_unchanged(tmp_path: Path) -> None:
    tiny = tiny_conv_model(tmp_path / "tiny.onnx", size=16)
    ranges = tmp_path / "tiny_ranges.txt"
    ranges.write_text("input:1.0\nconv1:6.5\nrelu1:6.0\n", encoding="utf-8")
    results = golden.ranges_case(tiny, photo_folder(tmp_path / "photos", 12), ranges, tmp_path / "runs")
    _check("ranges_run", results, tmp_path)


def test_the_comparison_sees_a_changed_value() -> None:
    base = {"a": [1.0, {"b": "x", "c": 3}], "d": 0.5}
    assert golden.differences(base, json.loads(json.dumps(base))) == []
    assert golden.differences(base, {"a": [1.0005, {"b": "x", "c": 3}], "d": 0.5}) == []
    assert golden.differences(base, {"a": [1.01, {"b": "x", "c": 3}], "d": 0.5}) != []
    assert golden.differences(base, {"a": [1.0, {"b": "y", "c": 3}], "d": 0.5}) != []
    assert golden.differences(base, {"a": [1.0, {"b": "x", "c": 4}], "d": 0.5}) != []
    assert golden.differences(base, {"a": [1.0], "d": 0.5}) != []
