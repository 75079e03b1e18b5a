"""The command line: instant help, one-line errors, the ranges commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from quantbench.ranges import DynamicRanges, read_trt_cache, write_range_text, write_trt_cache

HEAVY = ("onnxruntime", "cv2", "matplotlib", "numpy", "onnx", "pandas")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quantbench", *args], capture_output=True, text=True, timeout=120
    )


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys, runpy\n"
        "sys.argv = ['quantbench', '--help']\n"
        "try:\n    runpy.run_module('quantbench', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "calibrate" in out and "ranges" in out
    assert "LOADED []" in out


def test_calibrate_help_lists_option_groups():
    out = _run("calibrate", "--help").stdout
    for group in ("Data", "Preprocessing", "Calibration", "Output"):
        assert group in out


def test_bad_input_is_one_line_on_stderr_with_status_2(tmp_path):
    result = _run("calibrate", "--model", str(tmp_path / "missing.onnx"), "--images", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: model file not found")
    assert "Traceback" not in result.stderr + result.stdout


def test_ranges_show_convert_diff(tmp_path):
    table = DynamicRanges(amax={"input": 2.0, "conv:0": 6.0, "only_a": 1.0}, method="entropy")
    cache = tmp_path / "a.cache"
    write_trt_cache(table, cache, trt_version=8600, algorithm="MinMaxCalibration")
    assert cache.read_text().splitlines()[:2] == ["TRT-8600-MinMaxCalibration", "input: 3c810204"]

    shown = _run("ranges", "show", str(cache))
    assert shown.returncode == 0
    assert "8.6.0 MinMaxCalibration" in shown.stdout and "conv:0" in shown.stdout

    converted = _run("ranges", "convert", str(cache), "--to", "txt")
    assert converted.returncode == 0, converted.stderr
    text = (tmp_path / "a.txt").read_text().splitlines()
    assert text[0].startswith("input:") and float(text[0].split(":")[-1]) == pytest.approx(2.0, rel=1e-7)

    as_json = _run("ranges", "convert", str(cache), "--to", "json", "--out", str(tmp_path / "b.json"))
    assert as_json.returncode == 0
    assert json.loads((tmp_path / "b.json").read_text())["ranges"]["conv:0"] == pytest.approx(6.0, rel=1e-7)

    other = tmp_path / "b.txt"
    write_range_text(DynamicRanges(amax={"input": 4.0, "conv:0": 6.0, "only_b": 1.0}), other)
    diff = _run("ranges", "diff", str(cache), str(other))
    assert diff.returncode == 0
    lines = diff.stdout.splitlines()
    assert any(line.split()[:4] == ["input", "2", "4", "2.0000"] for line in lines)
    assert "only in a (1):" in diff.stdout and "only_a" in diff.stdout and "only_b" in diff.stdout


def test_convert_writes_requested_trt_header(tmp_path):
    text = tmp_path / "r.txt"
    write_range_text(DynamicRanges(amax={"x": 1.0}), text)
    result = _run("ranges", "convert", str(text), "--to", "cache", "--trt-version", "100300")
    assert result.returncode == 0, result.stderr
    assert read_trt_cache(tmp_path / "r.cache").trt_version == 100300
    assert Path(tmp_path / "r.cache").read_text().startswith("TRT-100300-EntropyCalibration2\n")


def test_unreadable_range_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.cache"
    bad.write_text("TRT-8600-EntropyCalibration2\nconv1 3c810204\n")
    result = _run("ranges", "show", str(bad))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "bad.cache:2" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "yaml"], "--to must be cache, txt or json, not 'yaml'"),
        (["--to", "cache", "--algorithm", "Foo"], "--algorithm must be one TensorRT knows"),
    ],
)
def test_convert_refuses_what_would_write_a_table_tensorrt_ignores(tmp_path, args, message):
    text = tmp_path / "r.txt"
    write_range_text(DynamicRanges(amax={"x": 1.0}), text)
    result = _run("ranges", "convert", str(text), *args)
    assert result.returncode == 2 and result.stderr.startswith(f"error: {message}")
    assert result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "r.cache").exists()


def test_empty_precisions_is_an_error_not_fp32_alone(tmp_path):
    result = _run("run", "--model", str(tmp_path / "m.onnx"), "--images", str(tmp_path), "--precisions", "")
    assert result.returncode == 2 and result.stderr.startswith("error: --precisions names none of")


def test_a_bad_task_or_task_option_fails_before_any_work(tmp_path):
    from tests.conftest import photo_folder, tiny_conv_model

    model = tiny_conv_model(tmp_path / "m.onnx")
    images = photo_folder(tmp_path / "imgs", 4)
    cases = (
        (("--task", "foo"), "unknown kind 'foo'"),
        (("--task", "nosuch=classes"), "nosuch"),
        (("--task-option", "confidence=2"), "confidence must be within [0, 1]"),
        (("--task-option", "colour=red"), "unknown key 'colour'"),
    )
    for (option, value), message in cases:
        for command in ("run", "sensitivity"):
            result = _run(
                command,
                "--model",
                str(model),
                "--images",
                str(images),
                option,
                value,
                "--out",
                str(tmp_path / "o"),
            )
            assert result.returncode == 2 and result.stderr.startswith("error: --task"), result.stderr
        assert message in result.stderr and result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "o").exists()  # refused before the run folder was written
