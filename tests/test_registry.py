"""Method specs, plugins, and the ranges given to degenerate tensors."""

from __future__ import annotations

import math
from importlib import metadata

import numpy as np
import pytest

from quantbench.calibration import registry
from quantbench.calibration.calibrate import compute_ranges
from quantbench.calibration.histograms import TensorHistogram
from quantbench.calibration.registry import parse_method
from quantbench.errors import QuantbenchError


def _acc(values) -> TensorHistogram:
    acc = TensorHistogram()
    acc.update(np.asarray(values, dtype=np.float32))
    return acc


def test_builtin_specs_and_parameters():
    spec = parse_method("percentile:99.9")
    assert spec.label == "percentile-99.9" and spec.params == (99.9,)
    hist = _acc(np.arange(1, 1001)).snapshot()
    assert spec(hist) == pytest.approx(999.0, abs=1.0)
    assert parse_method("entropy").label == "entropy"


@pytest.mark.parametrize(
    "text, message",
    [
        ("entropyy", "unknown calibration method 'entropyy'"),
        ("entropy:3", "does not take 1 parameter"),
        ("percentile:high", "parameters must be numbers"),
        ("missing_file.py:fn", "not found"),
    ],
)
def test_bad_specs_are_one_line_errors(text, message):
    with pytest.raises(QuantbenchError, match=message) as info:
        parse_method(text)
    assert "\n" not in str(info.value)


def test_file_plugin_with_parameter(tmp_path):
    plugin = tmp_path / "my_methods.py"
    plugin.write_text("def half_absmax(hist, factor=0.5):\n    return hist.absmax * factor\n")
    spec = parse_method(f"{plugin}:half_absmax:0.25")
    assert spec.label == "half_absmax-0.25"
    assert spec(_acc([-8.0, 2.0]).snapshot()) == 2.0
    with pytest.raises(QuantbenchError, match="has no function 'nope'"):
        parse_method(f"{plugin}:nope")


def test_plugin_returning_nan_is_refused_naming_the_tensor(tmp_path):
    plugin = tmp_path / "bad.py"
    plugin.write_text("def broken(hist):\n    return float('nan')\n")
    spec = parse_method(f"{plugin}:broken")
    with pytest.raises(QuantbenchError, match="for tensor 'conv1'"):
        registry.apply_method(spec, "conv1", _acc([1.0, 2.0]).snapshot())


def test_entry_point_plugins_are_found(monkeypatch):
    entry = metadata.EntryPoint(
        "third_quartile", "tests.test_registry:_third_quartile", registry.ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(
        metadata, "entry_points", lambda group: [entry] if group == registry.ENTRY_POINT_GROUP else []
    )
    assert "third_quartile" in registry.available_methods()
    assert parse_method("third_quartile")(_acc([4.0]).snapshot()) == 3.0


def _third_quartile(hist):
    return 0.75 * hist.absmax


def test_degenerate_tensors_get_documented_ranges_and_one_warning_each():
    hists = {
        "zeros": _acc(np.zeros(50)),
        "constant": _acc(np.full(50, -2.5)),
        "with_nan": _acc([1.0, np.nan, 3.0, -2.0, np.inf]),
        "all_nan": _acc([np.nan, np.nan]),
        "normal": _acc(np.random.default_rng(0).normal(size=10_000)),
    }
    specs = [parse_method(m) for m in ("entropy", "minmax", "percentile", "mse")]
    tables, warnings = compute_ranges(hists, specs, {})
    for table in tables.values():
        assert table.amax["zeros"] == 1.0
        assert table.amax["constant"] == 2.5
        assert table.amax["all_nan"] == 1.0
        assert all(math.isfinite(v) and v > 0 for v in table.amax.values())
    assert tables["minmax"].amax["with_nan"] == 3.0
    assert len(warnings) == 5  # zeros, constant, with_nan, all_nan (nan note + no finite value)
    assert any("'zeros'" in w and "zero on every" in w for w in warnings)
    assert any("'with_nan'" in w and "1 NaN and 1 infinite" in w for w in warnings)
    assert not any("'normal'" in w for w in warnings)
