"""Bias correction's FP32 means gathered by the calibration pass on its first samples (the correction's
fitting images), against float64 means of ONNX Runtime's FP32 outputs, and a run that uses them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import quantbench.export.bias_correction as bias_correction
import quantbench.flows.ranges as run_ranges
from quantbench.calibration.calibrate import split_at
from quantbench.calibration.collect import collect_histograms
from quantbench.calibration.exposure import Exposure
from quantbench.calibration.means import FirstSamples
from quantbench.export.bias_correction import correctable_outputs
from quantbench.model import expose_tensors
from tests.test_bias_correction import branchy_qdq


def _reference(model: onnx.ModelProto, names: list[str], batches: list[dict], samples: int) -> dict:
    """float64 per-channel means over the first ``samples`` samples, from each batch's FP32 outputs."""
    import onnxruntime as ort

    axes = correctable_outputs(model)
    probe = expose_tensors(model, names).SerializeToString()
    session = ort.InferenceSession(probe, providers=["CPUExecutionProvider"])
    outputs = [session.run(names, batch) for batch in batches]
    means = {}
    for k, name in enumerate(names):
        values = np.concatenate([out[k] for out in outputs])[:samples].astype(np.float64)
        axis = axes[name] % values.ndim
        means[name] = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1).mean(axis=1)
    return means


@pytest.mark.parametrize(("samples", "covered"), [(6, 6), (5, 3), (100, 9)])
@pytest.mark.parametrize("budget", [1 << 30, 64])
def test_the_pass_means_its_first_whole_batches(samples: int, covered: int, budget: int) -> None:
    """Batches of 3: 6 samples are two batches; 5 stop before the straddling second (3 samples); more
    than the pass holds cover it all. Grouped exposure (one tensor a run) changes nothing."""
    model, _, targets, batches = branchy_qdq()
    axes = correctable_outputs(model)
    assert set(targets) <= set(axes) and axes["y"] == -1 and axes["c1"] == 1  # a Gemm, a Conv
    first = FirstSamples({name: axes[name] for name in targets}, samples)
    names = ["u", *targets]  # one tensor no mean is asked of
    exposure = Exposure(model, names, ["x", "u"], threads=1, budget=budget)
    collect_histograms(exposure, iter(batches), workers=2, first=first)
    assert (len(exposure.groups) > 1) is (budget < 1 << 20)
    assert first.covered == covered
    got = first.result()
    assert sorted(got) == sorted(targets)
    for name, want in _reference(model, targets, batches, covered).items():
        assert got[name].dtype == np.float64
        np.testing.assert_allclose(got[name], want, rtol=1e-9, atol=1e-12)


def test_a_run_corrects_with_the_pass_means_and_gets_the_same_model(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import quantbench
    from tests.conftest import photo_folder
    from tests.test_run import FAST, tiny_classifier

    model, images = tiny_classifier(tmp_path / "tiny.onnx"), photo_folder(tmp_path / "images", 24, size=20)
    common = {"precisions": ["int8"], "methods": ["percentile"], "n": 16, "bias_correction_images": 8, **FAST}
    measured: list[int] = []
    fp32_means = bias_correction._fp32_means

    def counting(model, targets, feeds, threads):  # type: ignore[no-untyped-def]
        measured.append(len(targets))
        return fp32_means(model, targets, feeds, threads)

    monkeypatch.setattr(bias_correction, "_fp32_means", counting)
    shared = quantbench.run(model, images, out=tmp_path / "shared", **common)
    assert measured == []  # the calibration pass brought every mean
    monkeypatch.setattr(run_ranges, "correction_means", lambda ctx: None)
    alone = quantbench.run(model, images, out=tmp_path / "alone", **common)
    assert measured == [3]
    details = [v["bias_correction"] for r in (shared, alone) for v in r.results["variants"][1:]]
    assert details[0]["applied"] and details[0]["nodes"] == details[1]["nodes"] == 3

    def weights(result) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
        saved = onnx.load(str(next(Path(result.run_dir).glob("models/int8-percentile.onnx"))))
        return {i.name: numpy_helper.to_array(i).astype(np.float64) for i in saved.graph.initializer}

    with_pass, without = weights(shared), weights(alone)
    assert with_pass.keys() == without.keys()
    for name, value in without.items():
        np.testing.assert_allclose(with_pass[name], value, rtol=1e-5, atol=1e-7)


def test_the_batch_across_the_first_samples_is_split_there() -> None:
    rng = np.random.default_rng(0)
    feeds = [{"a": rng.normal(size=(3, 2)), "b": rng.normal(size=(3, 4))} for _ in range(3)]
    pieces = list(split_at(iter(feeds), 5))
    assert [len(p["a"]) for p in pieces] == [3, 2, 1, 3]
    for name in ("a", "b"):
        np.testing.assert_array_equal(
            np.concatenate([p[name] for p in pieces]), np.concatenate([f[name] for f in feeds])
        )
    assert [len(p["a"]) for p in split_at(iter(feeds), 6)] == [3, 3, 3]  # on a boundary: as it was
