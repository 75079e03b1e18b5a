"""The TensorRT backend without TensorRT: methods, caches, engine sidecars, inspector, profiles, the
command line, and whole ``quantbench run``s against the TensorRT test double (tests/tensorrt_fake.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import quantbench
from quantbench.backends.tensorrt.calibration_cache import CacheIdentity, CalibrationCache
from quantbench.backends.tensorrt.methods import parse_native_method, refusal, split_methods
from quantbench.backends.tensorrt.version import TENSORRT
from quantbench.backends.trt_common.engine_file import check_engine, save_engine
from quantbench.backends.trt_common.inspector import parse_layers, precision_counts, precision_of
from quantbench.cli import app
from quantbench.errors import QuantbenchError
from tests.conftest import photo_folder, tiny_conv_model
from tests.tensorrt_fake import install_fakes

FAST = {"bench_runs": 2, "bench_seconds": 0.0}


# --- methods --------------------------------------------------------------------------------------------


def test_native_methods_parse_with_their_base_class_and_legacy_settings() -> None:
    method = parse_native_method("trt-entropy2")
    assert (method.label, method.base_class, method.algorithm) == (
        "trt-entropy2",
        "IInt8EntropyCalibrator2",
        "EntropyCalibration2",
    )
    legacy = parse_native_method("trt-legacy:0.999:0.5")
    assert (legacy.label, legacy.quantile, legacy.regression_cutoff) == ("trt-legacy-0.999-0.5", 0.999, 0.5)
    assert parse_native_method("trt-legacy").quantile == 0.9999
    own, native = split_methods(["entropy", "trt-minmax", "percentile:99.9"])
    assert own == ["entropy", "percentile:99.9"] and [m.name for m in native] == ["trt-minmax"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trt-entropy3", "unknown TensorRT calibrator 'trt-entropy3'"),
        ("trt-minmax:1", "trt-minmax takes no parameters"),
        ("trt-legacy:x", "must be numbers"),
        ("trt-legacy:1.5", r"quantile must be in \(0, 1\]"),
        ("trt-legacy:0.9:0:1", "at most QUANTILE:REGRESSION_CUTOFF"),
    ],
)
def test_bad_native_methods_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(QuantbenchError, match=message) as caught:
        parse_native_method(text)
    assert "\n" not in str(caught.value)


def test_native_methods_are_refused_off_tensorrt_10() -> None:
    other = refusal("trt-entropy2", backend="onnxruntime", tensorrt_major=None)
    assert other is not None and "--backend tensorrt on TensorRT 10" in other and "entropy" in other
    eleven = refusal("trt-minmax", backend="tensorrt", tensorrt_major=11)
    assert eleven is not None and "TensorRT 11 removed calibrators" in eleven and "Q/DQ" in eleven
    assert refusal("trt-minmax", backend="tensorrt", tensorrt_major=10) is None


# --- calibration cache and its sidecar --------------------------------------------------------------------


def _cache(tmp_path: Path, **changes: object) -> CalibrationCache:
    fields = {"model_hash": "m", "preprocessing_hash": "p", "trt_version": 101300}
    fields.update(changes)  # type: ignore[arg-type]
    identity = CacheIdentity(algorithm="EntropyCalibration2", method="trt-entropy2", **fields)  # type: ignore[arg-type]
    return CalibrationCache(tmp_path / "trt-entropy2.cache", identity)


DATA = b"TRT-101300-EntropyCalibration2\ninput: 3c810204\nrelu: 3d000000\n"


def test_a_cache_is_reused_only_when_header_and_sidecar_match(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    assert cache.load() is None
    cache.store(DATA, images=8)
    assert cache.load() == DATA
    sidecar = json.loads(cache.sidecar.read_text())
    assert sidecar["model_hash"] == "m" and sidecar["images"] == 8
    ranges = cache.ranges({"preset": "x"}, images=8)
    assert ranges.amax["input"] == pytest.approx(2.0) and ranges.method == "trt-entropy2"
    refusals = {
        "another model": _cache(tmp_path, model_hash="other"),
        "other preprocessing": _cache(tmp_path, preprocessing_hash="other"),
        "TensorRT 10.3.0": _cache(tmp_path, trt_version=100300),
    }
    for reason, other in refusals.items():
        with pytest.raises(
            QuantbenchError, match=f"cache refused.*{reason}|{reason}.*cache refused|refused: made"
        ) as e:
            other.load()
        assert "\n" not in str(e.value) and "delete it" in str(e.value)


def test_a_cache_without_sidecar_or_edited_after_it_is_refused(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    cache.path.write_bytes(DATA)
    with pytest.raises(QuantbenchError, match=r"no sidecar trt-entropy2\.cache\.json"):
        cache.load()
    cache.store(DATA)
    cache.path.write_bytes(DATA.replace(b"3d000000", b"3e000000"))
    with pytest.raises(QuantbenchError, match="changed after its sidecar"):
        cache.load()
    with pytest.raises(QuantbenchError, match="without a TRT-<version>-<algorithm> header"):
        cache.store(b"garbage")


# --- engine sidecar --------------------------------------------------------------------------------------


def test_an_engine_for_another_tensorrt_or_gpu_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fp32.engine"
    record = {
        "tensorrt": "10.13.0.35",
        "gpu": "NVIDIA H100",
        "compute_capability": "9.0",
        "precision": "fp32",
    }
    save_engine(path, b"plan", record, TENSORRT)
    here = {"version": "10.13.0.35", "gpu": "NVIDIA H100", "compute_capability": "9.0"}
    data, sidecar = check_engine(path, TENSORRT, **here)
    assert data == b"plan" and sidecar["precision"] == "fp32" and sidecar["quantbench_version"]
    with pytest.raises(
        QuantbenchError, match=r"built with TensorRT 10\.13\.0\.35, TensorRT 11\.4\.0 is installed"
    ):
        check_engine(path, TENSORRT, **{**here, "version": "11.4.0"})
    with pytest.raises(
        QuantbenchError, match=r"built for NVIDIA H100 \(compute capability 9.0\), this GPU is"
    ):
        check_engine(path, TENSORRT, **{**here, "gpu": "NVIDIA L4", "compute_capability": "8.9"})
    path.write_bytes(b"other")
    with pytest.raises(QuantbenchError, match="changed after its sidecar"):
        check_engine(path, TENSORRT, **here)
    (tmp_path / "fp32.engine.json").unlink()
    with pytest.raises(QuantbenchError, match="no sidecar"):
        check_engine(path, TENSORRT, **here)
    with pytest.raises(QuantbenchError, match="lacks gpu"):
        save_engine(
            path, b"plan", {"tensorrt": "x", "compute_capability": "9.0", "precision": "fp32"}, TENSORRT
        )


# --- inspector -------------------------------------------------------------------------------------------


def test_layer_precision_comes_from_the_inspector_formats() -> None:
    text = json.dumps(
        {
            "Layers": [
                {
                    "Name": "conv1",
                    "LayerType": "CaskConvolution",
                    "Inputs": [
                        {"Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}
                    ],
                },
                {
                    "Name": "pool",
                    "LayerType": "CaskPooling",
                    "Inputs": [{"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
                },
                {
                    "Name": "const",
                    "LayerType": "Constant",
                    "Inputs": [],
                    "Outputs": [{"Format/Datatype": "Row major linear FP32"}],
                },
                {
                    "Name": "cast",
                    "LayerType": "Reformat",
                    "Inputs": [{"Format/Datatype": "Row major linear UInt8"}],
                },
                "named only",
            ]
        }
    )
    layers = parse_layers(text, "TensorRT")
    assert [layer["precision"] for layer in layers] == ["int8", "fp16", "fp32", "uint8", "unknown"]
    assert layers[0] == {"name": "conv1", "type": "CaskConvolution", "precision": "int8"}
    assert precision_counts(layers) == {"int8": 1, "fp16": 1, "fp32": 1, "uint8": 1, "unknown": 1}
    assert precision_of("Row major linear BF16") == "bf16" and precision_of("?") == "unknown"
    with pytest.raises(QuantbenchError, match="no 'Layers' list"):
        parse_layers("{}", "TensorRT")
    with pytest.raises(QuantbenchError, match="returned no JSON"):
        parse_layers("Layers: conv1", "TensorRT")


# --- profiles and calibration batches --------------------------------------------------------------------


def test_profile_and_calibration_batch() -> None:
    from quantbench.backends.trt_common.builder import BatchProfile
    from quantbench.data.loader import Batch
    from quantbench.flows.ranges import calibration_batch, full_batches

    assert BatchProfile.for_run([1, 8], 8, None) == BatchProfile(1, 8, 8)
    assert BatchProfile.for_run([1, 4], 8, 16) == BatchProfile(1, 4, 16)
    assert calibration_batch(100, None, None) == 25
    assert calibration_batch(97, None, None) == 1
    assert calibration_batch(100, 4, 8) == 4 and calibration_batch(100, None, 8) == 8
    dropped: list[int] = []
    batches = [Batch({"x": np.zeros((n, 1))}, [str(i) for i in range(n)]) for n in (4, 4, 2)]
    assert len(list(full_batches(batches, 4, dropped))) == 2 and dropped == [2]


def test_version_parsing_and_no_auto_without_tensorrt() -> None:
    from quantbench.backends.tensorrt import usable
    from quantbench.backends.tensorrt.version import parse_version

    info = parse_version("10.13.0.35")
    assert (info.header, info.implicit, info.path) == (101300, True, "implicit+explicit")
    assert parse_version("11.4.0.106").path == "explicit"
    with pytest.raises(QuantbenchError, match="cannot read the TensorRT version"):
        parse_version("ten")
    assert usable() is False  # no TensorRT installed here


# --- command line ----------------------------------------------------------------------------------------


def test_cli_refuses_trt_methods_and_plugins_off_tensorrt(tmp_path: Path) -> None:
    model = tiny_conv_model(tmp_path / "m.onnx")
    images = photo_folder(tmp_path / "img", 4)
    base = ["run", "--model", str(model), "--images", str(images), "--n", "2", "--out", str(tmp_path)]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "quantbench",
            *base,
            "--backend",
            "onnxruntime",
            "--method",
            "entropy,trt-entropy2",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(
        "error: method trt-entropy2 is TensorRT's own calibrator and runs only with"
    )
    assert done.stderr.count("\n") == 1
    runner = CliRunner()
    cases = {
        ("--backend", "onnxruntime", "--plugins", str(model)): "--plugins loads TensorRT plugin libraries",
        ("--backend", "onnxruntime", "--cuda-graph"): "--cuda-graph times TensorRT engines",
        ("--backend", "tensorrt"): "TensorRT is not installed",
    }
    for extra, message in cases.items():
        result = runner.invoke(app, [*base, *extra])
        assert isinstance(result.exception, QuantbenchError) and message in str(result.exception)
    calibrate = ["calibrate", "--model", str(model), "--images", str(images), "--method", "trt-minmax"]
    result = runner.invoke(app, calibrate)
    assert isinstance(result.exception, QuantbenchError)
    assert "quantbench run --backend tensorrt" in str(result.exception)
    assert not list(tmp_path.glob("m-*"))  # refused before any run folder was made


def test_help_imports_neither_tensorrt_nor_cuda() -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom quantbench.cli import app\n"
        "r = CliRunner().invoke(app, ['run', '--help'])\nassert r.exit_code == 0, r.output\n"
        "assert '--plugins' in r.output and '--cuda-graph' in r.output\n"
        "import quantbench.backends.tensorrt\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'cuda')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- whole runs against the TensorRT test double ---------------------------------------------------------


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return tiny_conv_model(tmp_path / "tiny.onnx"), photo_folder(tmp_path / "img", 14, size=20)


def test_a_run_on_tensorrt_10_with_native_and_quantbench_methods(
    data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = install_fakes(monkeypatch, "10.16.1")
    model, images = data
    result = quantbench.run(
        model,
        images,
        n=8,
        backend="tensorrt",
        methods=["trt-entropy2", "trt-legacy:0.999", "entropy"],
        bench_batch=[1, 2],
        out=tmp_path / "out",
        preset="raw",
        **FAST,
    )
    assert world.violations == []
    results = json.loads((result.run_dir / "results.json").read_text())
    assert results["manifest"]["gpu"] == "Fake GPU"
    assert results["manifest"]["backend"]["tensorrt"] == "10.16.1.11"
    names = [v["name"] for v in results["variants"]]
    assert names == ["fp32", "fp16", "int8-entropy", "int8-trt-entropy2", "int8-trt-legacy-0.999"]
    native = results["ranges"]["trt-entropy2"]
    assert native["file"].endswith("ranges/trt-entropy2.cache") and native["amax"]["input"] > 0
    for variant in results["variants"]:
        assert variant["layers"] and {"name", "type", "precision"} <= set(variant["layers"][0])
        assert [t["batch"] for t in variant["device_latency"]] == [1, 2]
        assert variant["engine"]["tensorrt"] == "10.16.1.11"
        assert (result.run_dir / variant["engine"]["file"]).is_file()
    by_name = {v["name"]: v for v in results["variants"]}
    calibrator = by_name["int8-trt-entropy2"]["engine"]["build"]["calibrator"]
    assert calibrator["batches"] == 1 and calibrator["batch_size"] == 8 and calibrator["cache_written"]
    assert by_name["int8-trt-entropy2"]["engine"]["build"]["flags"] == ["INT8", "FP16"]
    assert by_name["fp16"]["engine"]["build"]["flags"] == ["FP16"]
    assert by_name["int8-trt-entropy2"]["layer_precisions"]["int8"] == 2
    assert (result.run_dir / "ranges" / "trt-entropy2.txt").is_file()
    assert (result.run_dir / "ranges" / "trt-entropy2.cache.json").is_file()
    assert (result.run_dir / "engines" / "timing.cache").is_file()
    fp32 = by_name["int8-entropy"]["outputs"]["output"]
    assert fp32["rel_l2"] < 0.2  # the Q/DQ engine computes (by ONNX Runtime inside the double)


def test_a_run_on_tensorrt_11_refuses_calibrators_and_builds_strongly_typed(
    data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = install_fakes(monkeypatch, "11.4.0")
    model, images = data
    with pytest.raises(QuantbenchError, match="TensorRT 11 removed calibrators"):
        quantbench.run(
            model, images, n=8, backend="tensorrt", methods=["trt-minmax"], out=tmp_path, preset="raw"
        )
    ranges_file = tmp_path / "ranges.txt"
    ranges_file.write_text("input:2.5\nconv1:4\nrelu1:4\n")
    result = quantbench.run(
        model, images, n=8, backend="tensorrt", ranges=ranges_file, out=tmp_path / "out", preset="raw", **FAST
    )
    assert world.violations == []
    variants = {v["name"]: v for v in result.results["variants"]}
    assert set(variants) == {"fp32", "fp16", "int8-ranges"}
    assert all(v["engine"]["build"]["strongly_typed"] for v in variants.values())
    assert variants["fp16"]["engine"]["build"]["onnx"].endswith("models/fp16.onnx")
    assert variants["int8-ranges"]["engine"]["build"]["onnx"].endswith("models/int8-ranges.onnx")


def test_imported_ranges_on_tensorrt_10_become_dynamic_ranges(
    data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = install_fakes(monkeypatch, "10.0.1")
    model, images = data
    ranges_file = tmp_path / "ranges.txt"
    ranges_file.write_text("input:2.5\nrelu1:4\n")
    result = quantbench.run(
        model,
        images,
        n=8,
        backend="tensorrt",
        ranges=ranges_file,
        precisions=["fp32", "int8"],
        out=tmp_path / "out",
        preset="raw",
        **FAST,
    )
    assert world.violations == []
    build = {v["name"]: v for v in result.results["variants"]}["int8-ranges"]["engine"]["build"]
    assert build["dynamic_ranges_set"] == 2 and build["tensors_without_range"] == ["conv1", "output"]
    assert build["onnx"] == str(model) and build["flags"] == ["INT8", "FP16"]


# --- with a real TensorRT (skipped where it is not installed) --------------------------------------------


def test_with_real_tensorrt_a_run_builds_and_times_engines(data: tuple[Path, Path], tmp_path: Path) -> None:
    """Runs only where TensorRT 10 or 11, cuda-python and a GPU are present (never yet)."""
    from quantbench.backends.tensorrt import distribution_version, usable

    if not usable():
        pytest.skip(f"TensorRT not usable here (TensorRT {distribution_version() or 'not installed'})")
    from quantbench.backends.tensorrt.version import detect

    implicit = detect().implicit
    methods = ["trt-entropy2", "entropy"] if implicit else ["entropy"]
    model, images = data
    result = quantbench.run(
        model,
        images,
        n=8,
        backend="tensorrt",
        methods=methods,
        bench_batch=[1, 2],
        out=tmp_path,
        preset="raw",
        cuda_graph=True,
        **FAST,
    )
    variants = {v["name"]: v for v in result.results["variants"]}
    assert {"fp32", "fp16", "int8-entropy"} <= set(variants)
    assert all(v["layers"] and v["device_latency"] for v in variants.values())
    assert variants["int8-entropy"]["outputs"]["output"]["rel_l2"] < 0.5
    if implicit:
        assert result.results["ranges"]["trt-entropy2"]["amax"]
