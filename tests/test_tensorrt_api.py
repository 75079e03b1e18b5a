"""Conformance of the TensorRT backend with the real TensorRT Python API, without TensorRT's libraries.

The backend's TensorRT 10 path (calibrators, flags, dynamic ranges) and TensorRT 11 path (strongly
typed Q/DQ and FP16-typed models) run against fakes generated from the API records of the first and
last TensorRT 10 and 11 bindings (``tests/data/tensorrt_api``); any attribute, property or call the
real bindings do not have is a violation. With ``QUANTBENCH_TRT_WHEELS`` pointing at the downloaded
bindings wheels (``.ci/run`` does this), the records are regenerated from the wheels and compared.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quantbench.errors import QuantbenchError
from tests.conftest import tiny_conv_model
from tests.tensorrt_fake import VERSIONS_10, VERSIONS_11, FakeTensorRT, install_fakes

ROOT = Path(__file__).resolve().parents[1]


def _variants(model_path: Path, models_dir: Path) -> list:
    from quantbench.export.variants import fp16_variant, fp32_variant, int8_variant
    from quantbench.model import load_model
    from quantbench.ranges import DynamicRanges

    model = load_model(model_path)
    amax = {"input": 3.0, "conv1": 4.0, "relu1": 4.0, "output": 6.0}
    table = DynamicRanges(amax, method="entropy")
    imported = DynamicRanges({"input": 3.0, "relu1": 4.0}, method="imported")
    return [
        fp32_variant(model_path),
        fp16_variant(model, amax, models_dir),
        int8_variant(model, table, "entropy", [], models_dir),
        int8_variant(model, imported, "imported", [], models_dir),
    ]


def _reference(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("version", VERSIONS_10 + VERSIONS_11)
def test_backend_follows_the_api_of(version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from quantbench.backends.base import RunPlan
    from quantbench.backends.tensorrt import TensorRTBackend
    from quantbench.config import BackendSpec
    from quantbench.model import input_specs, load_model
    from quantbench.ranges import DynamicRanges

    world = install_fakes(monkeypatch, version)
    model_path = tiny_conv_model(tmp_path / "tiny.onnx")
    plugin = tmp_path / "libplugin.so"
    plugin.write_bytes(b"\0")
    backend = TensorRTBackend(BackendSpec("tensorrt", plugins=(plugin,), cuda_graph=True))
    run_dir = tmp_path / "run"
    variants = _variants(model_path, run_dir / "models")
    imported = {"imported": DynamicRanges({"input": 3.0, "relu1": 4.0})}
    plan = RunPlan(
        model_path, input_specs(load_model(model_path)), run_dir, "hash", (1, 4), 8, None, imported
    )
    backend.begin(plan)
    rng = np.random.default_rng(0)
    batches = [{"input": rng.normal(size=(2, 3, 16, 16)).astype(np.float32)} for _ in range(3)]
    methods = ["trt-entropy2", "trt-minmax", "trt-entropy", "trt-legacy:0.999:0.5"]
    if version.startswith("10."):
        ranges = backend.calibrate_native(methods, lambda: iter(batches), 2, {"p": 1})
        assert list(ranges) == ["trt-entropy2", "trt-minmax", "trt-entropy", "trt-legacy-0.999-0.5"]
        assert ranges["trt-minmax"].trt_algorithm == "MinMaxCalibration"
        assert ranges["trt-entropy2"].amax["input"] == pytest.approx(1.0)
        assert ranges["trt-entropy2"].image_count == 6
        assert (run_dir / "engines" / "int8-trt-legacy-0.999-0.5.engine.json").is_file()
        assert "IInt8LegacyCalibrator.get_quantile" not in world.calls  # overridden in Python, not looked up
    else:
        with pytest.raises(QuantbenchError, match=r"TensorRT 11 removed calibrators"):
            backend.calibrate_native(methods[:1], lambda: iter(batches), 2, {})
    feeds = {"input": rng.normal(size=(4, 3, 16, 16)).astype(np.float32)}
    for variant in variants:
        runner = backend.prepare(variant)
        try:
            out = runner.run(feeds)["output"]
            source = (
                variant.model if not version.startswith("10.") or variant.precision == "int8" else model_path
            )
            if version.startswith("10.") and variant.name == "int8-imported":
                source = model_path
            np.testing.assert_allclose(out, _reference(source, feeds), rtol=1e-4, atol=1e-4)
            extra = runner.extra_results([4], runs=2)
        finally:
            runner.close()
        assert extra["layers"][0] == {
            "name": "layer0",
            "type": "CaskConvolution",
            "precision": extra["layers"][0]["precision"],
        }
        assert extra["device_latency"][0]["batch"] == 4
        assert extra["device_latency"][0]["enqueue"]["runs"] == 2
        assert "cuda_graph_error" in extra["device_latency"][0]  # the host-memory runtime cannot capture
        build = extra["engine"]["build"]
        implicit = version.startswith("10.")
        assert build["strongly_typed"] is (not implicit)
        if variant.name == "int8-imported" and implicit:
            assert build["dynamic_ranges_set"] == 2 and "conv1" in build["tensors_without_range"]
        if variant.precision == "int8":
            assert extra["layer_precisions"] == (
                {"int8": 2, "unknown": 1} if implicit else {"fp32": 2, "unknown": 1}
            )
    assert world.violations == []
    assert (run_dir / "engines" / "timing.cache").read_bytes() == b"timing-cache"


def test_the_fakes_refuse_what_the_bindings_lack() -> None:
    trt11 = FakeTensorRT("11.4.0")
    with pytest.raises(AttributeError):
        _ = trt11.IInt8EntropyCalibrator2
    with pytest.raises(AttributeError):
        _ = trt11.BuilderFlag.INT8
    config = trt11.new("IBuilderConfig")
    with pytest.raises(AttributeError):
        config.int8_calibrator = None
    tensor = trt11.new("ITensor")
    with pytest.raises(AttributeError):
        tensor.set_dynamic_range(-1.0, 1.0)
    assert len(trt11.violations) == 4
    trt10 = FakeTensorRT("10.16.1")
    tensor = trt10.new("ITensor")
    with pytest.raises(TypeError):
        tensor.set_dynamic_range(1.0)
    engine = trt10.new("ICudaEngine")
    with pytest.raises(TypeError):
        engine.get_tensor_shape(name="x", extra=1)
    with pytest.raises(AttributeError):
        engine.num_io_tensors = 3  # read-only
    assert len(trt10.violations) == 3


def test_a_calibrator_override_that_tensorrt_never_calls_is_reported() -> None:
    trt10 = FakeTensorRT("10.16.1")

    class Calibrator(trt10.IInt8EntropyCalibrator2):  # type: ignore[name-defined,misc]
        def get_batches(self, names: list[str]) -> None:  # misspelt: TensorRT calls get_batch
            return None

    assert Calibrator is not None
    assert trt10.violations == [
        "TensorRT 10.16.1.11: Calibrator overrides IInt8EntropyCalibrator2.get_batches, "
        "which TensorRT never calls"
    ]


def test_records_name_the_versions_they_come_from() -> None:
    from tests.tensorrt_fake import load_record

    for version in VERSIONS_10 + VERSIONS_11:
        record = load_record(version)
        assert str(record["version"]).startswith(version)
        assert "Builder" in record["classes"] and "IExecutionContext" in record["classes"]
        calibrators = {"get_quantile", "get_regression_cutoff"} <= set(record["trampolines"])
        assert calibrators is version.startswith("10.")


@pytest.mark.skipif(not os.environ.get("QUANTBENCH_TRT_WHEELS"), reason="QUANTBENCH_TRT_WHEELS not set")
def test_records_match_the_bindings_wheels() -> None:
    wheels = os.environ["QUANTBENCH_TRT_WHEELS"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "tensorrt_api.py"), "check", wheels],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("matches") == len(VERSIONS_10 + VERSIONS_11)
