"""The verdict: the headline of each variant and the variant to ship, on hand-made comparisons."""

from __future__ import annotations

import math

import pytest

from quantbench.evaluation.compare import Comparison
from quantbench.evaluation.verdict import DEFAULT_TOLERANCE, decide, main_output


def comparison(kind: str, headline: str, higher: bool, values: dict, ms: dict, emulated=()) -> Comparison:
    """Outputs 'boxes' (generic) and 'out' (``kind``); each variant's headline and median latency."""
    result = Comparison()
    result.outputs = {
        "boxes": {"kind": "generic", "headline": "channel_rel_l2_mean", "higher_is_better": False},
        "out": {"kind": kind, "headline": headline, "higher_is_better": higher},
    }
    for name, value in values.items():
        result.metrics[name] = {"out": {} if value is None else {headline: value}, "boxes": {}}
        result.latency[name] = [{"median_ms": ms[name]}]
        result.representative[name] = name not in emulated
    return result


def test_the_main_output_is_the_first_that_is_not_generic() -> None:
    assert main_output({"a": {"kind": "generic"}, "b": {"kind": "detection"}, "c": {}}) == "b"
    assert main_output({"a": {"kind": "generic"}}) == "a"
    assert main_output({}) is None


def test_the_fastest_variant_within_tolerance_is_recommended() -> None:
    values = {"fp32": None, "int8-a": 0.995, "int8-b": 0.97, "int8-c": 0.992}
    ms = {"fp32": 10.0, "int8-a": 4.0, "int8-b": 2.0, "int8-c": 3.0}
    verdict = decide(comparison("classes", "top1_agreement", True, values, ms))
    assert (
        verdict is not None and verdict.output == "out" and verdict.tolerance == DEFAULT_TOLERANCE["classes"]
    )
    assert verdict.within == ["fp32", "int8-a", "int8-c"]  # int8-b is 0.03 short, beyond 0.01
    assert verdict.recommended == "int8-c"  # faster than int8-a; int8-b is fastest but out of tolerance
    assert "3.33x FP32's speed" in verdict.reason and verdict.values["fp32"] == 1.0


def test_a_stated_tolerance_and_a_lower_is_better_headline() -> None:
    values = {"fp32": None, "int8-a": 0.04, "int8-b": 0.2}
    ms = {"fp32": 10.0, "int8-a": 4.0, "int8-b": 2.0}
    errors = comparison("generic", "channel_rel_l2_mean", False, values, ms)
    del errors.outputs["boxes"]
    verdict = decide(errors)
    assert verdict is not None and verdict.output == "out" and verdict.reference == 0.0
    assert verdict.within == ["fp32", "int8-a"] and verdict.recommended == "int8-a"  # 0.2 > 0.05
    assert decide(errors, tolerance=0.25).recommended == "int8-b"  # type: ignore[union-attr]
    result = comparison(
        "sequence", "seq_agreement", True, {"fp32": None, "int8-a": 0.8}, {"fp32": 2, "int8-a": 1}
    )
    strict = decide(result, tolerance=0.1)
    assert strict is not None and strict.recommended == "fp32" and strict.closest is not None
    assert strict.closest["variant"] == "int8-a" and strict.closest["short_by"] == pytest.approx(0.1)
    assert "the closest, int8-a" in strict.reason
    assert decide(result, tolerance=0.25).recommended == "int8-a"  # type: ignore[union-attr]


def test_emulated_latency_is_not_ranked_and_a_missing_headline_never_qualifies() -> None:
    values = {"fp32": None, "fp16": 1.0, "int8-a": None}
    ms = {"fp32": 10.0, "fp16": 1.0, "int8-a": 0.5}
    verdict = decide(comparison("detection", "det_f1", True, values, ms, emulated=("fp16",)))
    assert verdict is not None and verdict.recommended == "fp32"
    assert verdict.within == ["fp32", "fp16"] and math.isinf(verdict.shortfall(None))
    assert "fp16 is within it, but timed on an emulation" in verdict.reason
    assert verdict.closest is not None and verdict.closest["variant"] == "int8-a"  # no headline: never within


def test_variants_that_were_not_timed_are_said_to_be_so() -> None:
    values = {"fp32": None, "int8-a": 1.0}
    result = comparison("classes", "top1_agreement", True, values, {"fp32": 1.0, "int8-a": 1.0}, ("int8-a",))
    result.latency["int8-a"] = []  # built, never run here (an engine for another GPU)
    verdict = decide(result)
    assert verdict is not None and verdict.recommended == "fp32"
    assert "int8-a is within it, but not timed here" in verdict.reason
