"""End-to-end calibration: the real sample CNN, batch-size invariance, reuse, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantbench import calibrate
from quantbench.calibration.calibrate import batch_size_for
from quantbench.config import PreprocessSpec
from quantbench.errors import QuantbenchError
from quantbench.progress import QuietProgress
from quantbench.ranges import read_range_text, read_ranges_json, read_trt_cache
from tests.conftest import photo_folder, tiny_conv_model

ALL_METHODS = ["entropy", "minmax", "percentile", "mse"]


def _fp32_absmax(model: Path, images: list[np.ndarray], tensors: list[str]) -> dict[str, float]:
    """Independent reference: run ONNX Runtime with the tensors exposed and take max |x|."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(model))
    del proto.graph.output[:]
    proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in tensors)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    peaks = dict.fromkeys(tensors, 0.0)
    for image in images:
        for name, value in zip(tensors, session.run(tensors, {"input": image[None]})):
            peaks[name] = max(peaks[name], float(np.abs(value).max()))
    return peaks


def test_real_cnn_all_methods_and_all_formats(sample, tmp_path):
    model, images = sample
    result = calibrate(model, images, n=24, methods=ALL_METHODS, preset="inception", out=tmp_path)
    assert result.tensors == 95 and len(result.images_used) == 24 and not result.reused
    for label in ALL_METHODS:
        cache, text, json_file = result.files[label]
        assert read_trt_cache(cache).trt_algorithm == (
            "MinMaxCalibration" if label == "minmax" else "EntropyCalibration2"
        )
        from_text = read_range_text(text).amax
        assert from_text == result.ranges[label].amax
        assert read_ranges_json(json_file).image_count == 24
        for name, amax in read_trt_cache(cache).amax.items():
            assert amax == pytest.approx(from_text[name], rel=1e-6)
    minmax, entropy, percentile = (result.ranges[m].amax for m in ("minmax", "entropy", "percentile"))
    assert all(entropy[t] <= minmax[t] * (1 + 1e-9) and percentile[t] <= minmax[t] for t in minmax)
    assert np.median([entropy[t] / minmax[t] for t in minmax]) < 0.95  # entropy clips outliers

    # minmax equals max |x| from an independent ONNX Runtime pass over the same preprocessed images
    from quantbench.data import open_dataset
    from quantbench.model import input_specs, load_model

    dataset = open_dataset(images, input_specs(load_model(model)), PreprocessSpec(preset="inception"))
    arrays = [sample_ for batch in dataset.batches(24, 0, 8) for sample_ in batch.inputs["input"]]
    checked = ["input", "conv0_relu6", "conv5", "logits"]
    reference = _fp32_absmax(model, arrays, checked)
    for name in checked:
        assert minmax[name] == pytest.approx(reference[name], rel=1e-5)


def test_ranges_do_not_depend_on_batch_size(sample, tmp_path):
    model, images = sample
    runs = {
        batch: calibrate(
            model,
            images,
            n=16,
            methods=ALL_METHODS,
            batch=batch,
            preset="inception",
            out=tmp_path / str(batch),
            workers=1,
        )
        for batch in (1, 4, 16)
    }
    reference = runs[1]
    for batch in (4, 16):
        for label in ALL_METHODS:
            for name, amax in reference.ranges[label].amax.items():
                absmax = reference.ranges["minmax"].amax[name]
                bin_width = absmax / 2048
                assert abs(runs[batch].ranges[label].amax[name] - amax) <= bin_width, (batch, label, name)


def test_histograms_are_reused_and_force_recomputes(tmp_path, monkeypatch):
    model = tiny_conv_model(tmp_path / "tiny.onnx")
    images = photo_folder(tmp_path / "imgs", 12)
    first = calibrate(model, images, n=10, methods=["entropy"], out=tmp_path / "out", preset="raw")
    assert not first.reused

    import quantbench.calibration.exposure as exposure

    def no_model_run(*args, **kwargs):
        raise AssertionError("the model ran although histograms were stored")

    monkeypatch.setattr(exposure, "open_session", no_model_run)
    second = calibrate(
        model, images, n=10, methods=["mse", "percentile:99"], out=tmp_path / "out", preset="raw", batch=3
    )
    assert second.reused and second.images_used == first.images_used
    assert set(second.ranges) == {"mse", "percentile-99"}
    with pytest.raises(AssertionError, match="the model ran"):
        calibrate(model, images, n=10, methods=["mse"], out=tmp_path / "out", preset="raw", force=True)
    with pytest.raises(AssertionError, match="the model ran"):  # another n is another key
        calibrate(model, images, n=9, methods=["mse"], out=tmp_path / "out", preset="raw")


def test_static_batch_of_one_is_fed_one_image_at_a_time(tmp_path):
    model = tiny_conv_model(tmp_path / "static.onnx", batch=1)
    images = photo_folder(tmp_path / "imgs", 5)
    result = calibrate(model, images, n=5, methods=["minmax"], batch=4, out=tmp_path / "out", preset="raw")
    assert len(result.images_used) == 5 and result.tensors == 4  # input, conv1, relu1, output


def test_auto_batch_size():
    assert batch_size_for(None, None, 52 << 20) == 2
    assert batch_size_for(None, None, 1000) == 32
    assert batch_size_for(None, None, None) == 1
    assert batch_size_for(8, None, 1000) == 8
    assert batch_size_for(None, 3, 1 << 30) == 3
    with pytest.raises(QuantbenchError):
        batch_size_for(None, 0, None)


def test_bad_input_is_a_one_line_error_and_leaves_no_files(tmp_path):
    images = photo_folder(tmp_path / "imgs", 4)
    out = tmp_path / "out"
    cases = {
        "missing model": (tmp_path / "nope.onnx", images, 4),
        "not onnx": (tmp_path / "text.onnx", images, 4),
        "empty folder": (tiny_conv_model(tmp_path / "m.onnx"), tmp_path / "empty", 4),
        "too few images": (tmp_path / "m.onnx", images, 10),
    }
    (tmp_path / "text.onnx").write_text("hello")
    (tmp_path / "empty").mkdir()
    for case, (model, folder, n) in cases.items():
        with pytest.raises(QuantbenchError) as info:
            calibrate(model, folder, n=n, out=out, preset="raw")
        assert "\n" not in str(info.value), case
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def test_interrupted_run_leaves_no_partial_table(tmp_path):
    model = tiny_conv_model(tmp_path / "m.onnx")
    images = photo_folder(tmp_path / "imgs", 8)
    seen = []

    class Interrupt(QuietProgress):
        def advance(self, count=1):
            seen.append(count)
            if len(seen) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        calibrate(model, images, n=8, batch=2, out=tmp_path / "out", preset="raw", progress=Interrupt())
    leftovers = (
        [p for p in (tmp_path / "out").rglob("*") if p.is_file()] if (tmp_path / "out").exists() else []
    )
    assert leftovers == []


def test_a_folder_of_unreadable_files_is_an_error_and_writes_nothing(tmp_path):
    model = tiny_conv_model(tmp_path / "m.onnx")
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    (folder / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    out = tmp_path / "out"
    with pytest.raises(QuantbenchError, match=r"none of the 3 files under .*broken.* could be read") as info:
        calibrate(model, folder, out=out, preset="raw")  # n left at its default: every sample
    assert "\n" not in str(info.value)
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]
