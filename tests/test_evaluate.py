"""Tests for quantbench.evaluation.metrics: output errors, top-k agreement, labels, accuracy and latency;
and for the metric registry (quantbench.evaluation.registry) against what the accumulators compute.

Expected values come from plain-Python reference implementations below (float64 loops, math.fsum) or are
worked out by hand in the test.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from quantbench.backends.base import Runner
from quantbench.config import BenchSpec
from quantbench.data.loader import Batch
from quantbench.errors import QuantbenchError
from quantbench.evaluation.compare import Judging, compare_variants
from quantbench.evaluation.metrics import (
    Accuracy,
    LatencyStats,
    OutputErrors,
    TopKAgreement,
    is_class_scores,
    label_for,
    measure_latency,
    read_labels,
)
from quantbench.evaluation.registry import (
    KIND_METRICS,
    KIND_RESULTS_ORDER,
    METRICS,
    RESULTS_ORDER,
    NumberFormat,
    metric_by_key,
)
from quantbench.report.analysis import metric_group

# Reference implementations -----------------------------------------------------------------------------


def slow_errors(ref: list[float], cand: list[float]) -> dict[str, float]:
    diffs = [c - r for r, c in zip(ref, cand)]
    sum_r2 = math.fsum(r * r for r in ref)
    sum_c2 = math.fsum(c * c for c in cand)
    sum_d2 = math.fsum(d * d for d in diffs)
    dot = math.fsum(r * c for r, c in zip(ref, cand))
    return {
        "max_abs": max(abs(d) for d in diffs),
        "mean_abs": math.fsum(abs(d) for d in diffs) / len(diffs),
        "rel_l2": math.sqrt(sum_d2) / math.sqrt(sum_r2),
        "cosine": dot / math.sqrt(sum_r2 * sum_c2),
        "snr_db": 10 * math.log10(sum_r2 / sum_d2),
    }


def slow_ranking(row: list[float]) -> list[int]:
    """Classes by descending score, ties by ascending index (selection sort, no numpy)."""
    remaining = list(range(len(row)))
    order = []
    while remaining:
        best = remaining[0]
        for i in remaining[1:]:
            if row[i] > row[best]:
                best = i
        order.append(best)
        remaining.remove(best)
    return order


def errors_of(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    acc = OutputErrors("out")
    acc.update(ref, cand)
    return acc.result()


# OutputErrors ------------------------------------------------------------------------------------------


def test_streaming_over_uneven_batches_matches_one_shot_reference() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(23, 7, 3)).astype(np.float32)
    cand = (ref + rng.normal(scale=0.05, size=ref.shape)).astype(np.float32)
    acc = OutputErrors("logits", "int8")
    for lo, hi in [(0, 1), (1, 9), (9, 10), (10, 23)]:
        acc.update(ref[lo:hi], cand[lo:hi])
    got = acc.result()
    want = slow_errors([float(v) for v in ref.ravel()], [float(v) for v in cand.ravel()])
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
    assert got["elements"] == ref.size
    assert got["nan_count"] == 0


def test_identical_outputs() -> None:
    ref = np.array([[1.0, -2.0, 3.0]], dtype=np.float32)
    got = errors_of(ref, ref.copy())
    assert got["max_abs"] == 0.0
    assert got["mean_abs"] == 0.0
    assert got["rel_l2"] == 0.0
    assert got["snr_db"] == math.inf
    assert got["cosine"] == pytest.approx(1.0, abs=1e-15)


def test_doubled_candidate() -> None:
    ref = np.array([3.0, -4.0])
    got = errors_of(ref, 2 * ref)
    # diff = ref: |d| = 3, 4; ||d|| = ||r|| = 5.
    assert got["max_abs"] == 4.0
    assert got["mean_abs"] == 3.5
    assert got["rel_l2"] == pytest.approx(1.0)
    assert got["snr_db"] == pytest.approx(0.0, abs=1e-12)
    assert got["cosine"] == pytest.approx(1.0)


def test_sign_flip_and_orthogonal() -> None:
    ref = np.array([1.0, 2.0, -2.0])
    flipped = errors_of(ref, -ref)
    assert flipped["cosine"] == pytest.approx(-1.0)
    assert flipped["rel_l2"] == pytest.approx(2.0)
    assert flipped["snr_db"] == pytest.approx(10 * math.log10(1 / 4))
    assert errors_of(np.array([1.0, 0.0]), np.array([0.0, 1.0]))["cosine"] == pytest.approx(0.0)


def test_zero_reference() -> None:
    zeros = np.zeros(4)
    both = errors_of(zeros, zeros)
    assert (both["rel_l2"], both["cosine"], both["snr_db"]) == (0.0, 1.0, math.inf)
    one = errors_of(zeros, np.array([0.0, 1.0, 0.0, 0.0]))
    assert (one["rel_l2"], one["cosine"], one["snr_db"]) == (math.inf, 0.0, -math.inf)
    assert errors_of(np.ones(2), np.zeros(2))["cosine"] == 0.0


def test_shape_mismatch_names_output_and_variant() -> None:
    acc = OutputErrors("logits", "int8-entropy")
    with pytest.raises(QuantbenchError, match=r"'logits'.*'int8-entropy'.*\(2, 3\).*\(2, 4\)"):
        acc.update(np.zeros((2, 4)), np.zeros((2, 3)))


def test_result_without_data_raises() -> None:
    acc = OutputErrors("logits")
    acc.update(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(QuantbenchError, match="'logits'"):
        acc.result()


def test_nan_in_candidate_is_counted_and_poisons_metrics() -> None:
    acc = OutputErrors("out")
    acc.update(np.ones(4), np.array([1.0, np.nan, 1.0, np.nan]))
    acc.update(np.ones(3), np.ones(3))
    got = acc.result()
    assert got["nan_count"] == 2
    assert got["reference_nan_count"] == 0
    assert got["elements"] == 7
    for key in ("max_abs", "mean_abs", "rel_l2", "cosine", "snr_db"):
        assert math.isnan(got[key]), key


def test_nan_in_reference_is_counted_separately() -> None:
    got = errors_of(np.array([np.nan, 1.0]), np.array([1.0, 1.0]))
    assert (got["nan_count"], got["reference_nan_count"]) == (0, 1)
    assert math.isnan(got["rel_l2"])


def test_float16_inputs_accumulate_in_float64() -> None:
    # 4096 squares of 300 overflow float16 (max 65504) but not float64.
    ref = np.full(4096, 300.0, dtype=np.float16)
    got = errors_of(ref, ref * np.float16(2))
    assert got["rel_l2"] == pytest.approx(1.0)
    assert got["snr_db"] == pytest.approx(0.0, abs=1e-9)


# Class scores ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((1, 1000), True),
        (("N", 10), True),
        ((None, 1000, 1, 1), True),
        ((8, 9), False),
        ((8, 4), False),
        ((8, 1000, 2, 1), False),
        ((1000,), False),
        ((1, 3, 224, 224), False),
        ((1, "C"), False),
    ],
)
def test_is_class_scores(shape: tuple[int | str | None, ...], expected: bool) -> None:
    assert is_class_scores(shape) is expected


def test_is_class_scores_threshold() -> None:
    assert is_class_scores((1, 3), min_classes=2)
    assert not is_class_scores((1, 1), min_classes=2)


def slow_agreement(ref: np.ndarray, cand: np.ndarray) -> tuple[float, float]:
    top1 = overlap = 0.0
    for r_row, c_row in zip(ref.tolist(), cand.tolist()):
        k = min(5, len(r_row))
        r_top, c_top = slow_ranking(r_row)[:k], slow_ranking(c_row)[:k]
        top1 += r_top[0] == c_top[0]
        overlap += len(set(r_top) & set(c_top)) / k
    return top1 / len(ref), overlap / len(ref)


def test_topk_agreement_random_batches_match_reference() -> None:
    rng = np.random.default_rng(1)
    # Rounded scores give many ties.
    ref = np.round(rng.normal(size=(40, 12)), 0)
    cand = np.round(ref + rng.normal(scale=0.7, size=ref.shape), 0)
    acc = TopKAgreement("logits")
    acc.update(ref[:15, :, None, None], cand[:15, :, None, None])
    acc.update(ref[15:], cand[15:])
    got = acc.result()
    top1, overlap = slow_agreement(ref, cand)
    assert got["samples"] == 40
    assert got["top1_agreement"] == pytest.approx(top1)
    assert got["top5_overlap"] == pytest.approx(overlap)
    assert 0.0 < got["top5_overlap"] < 1.0


def test_topk_ties_rank_lower_index_first() -> None:
    acc = TopKAgreement()
    # All tied: ranking is 0,1,2,3,4,5,... for both, so agreement is perfect.
    # Second row: candidate ties classes 2 and 6 at the top; class 2 wins, matching the reference.
    # Third row: reference top is 6 alone; candidate ties 2 and 6, class 2 wins -> disagree.
    ref = np.array([[0.0] * 7, [0, 0, 5, 0, 0, 0, 4], [0, 0, 4, 0, 0, 0, 5]], dtype=np.float32)
    cand = np.array([[0.0] * 7, [0, 0, 5, 0, 0, 0, 5], [0, 0, 5, 0, 0, 0, 5]], dtype=np.float32)
    acc.update(ref, cand)
    got = acc.result()
    assert got["top1_agreement"] == pytest.approx(2 / 3)
    # Top-5 sets: row 1 {0..4} both; rows 2 and 3 {2,6,0,1,3} both.
    assert got["top5_overlap"] == pytest.approx(1.0)


def test_topk_fewer_than_five_classes() -> None:
    acc = TopKAgreement()
    acc.update(np.array([[3.0, 2.0, 1.0]]), np.array([[1.0, 2.0, 3.0]]))
    got = acc.result()
    assert got["top1_agreement"] == 0.0
    assert got["top5_overlap"] == 1.0  # k = 3: the same three classes
    acc.update(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]))
    assert acc.result()["top1_agreement"] == 0.5


def test_topk_nan_scores_rank_last() -> None:
    acc = TopKAgreement()
    ref = np.array([[9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 0.0]])
    cand = np.array([[np.nan, 1.0, 2.0, 3.0, 4.0, 5.0, 0.0]])
    acc.update(ref, cand)
    got = acc.result()
    # Reference top-5 {0, 5, 4, 3, 2}; candidate {5, 4, 3, 2, 1}: class 0 (NaN) is ranked last.
    assert got["top1_agreement"] == 0.0
    assert got["top5_overlap"] == pytest.approx(4 / 5)


def test_topk_errors() -> None:
    acc = TopKAgreement("prob", "fp16")
    with pytest.raises(QuantbenchError, match=r"'prob'.*'fp16'"):
        acc.update(np.zeros((2, 10)), np.zeros((2, 11)))
    with pytest.raises(QuantbenchError, match="not class scores"):
        acc.update(np.zeros((2, 10, 2, 2)), np.zeros((2, 10, 2, 2)))
    with pytest.raises(QuantbenchError, match="nothing compared"):
        acc.result()


# Labels ------------------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "labels.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_labels_formats(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name,label\n"
        "# a comment\n"
        "\n"
        "cats/a.jpg,3\n"
        "b.jpg;  7\n"
        "c.png\t12\n"
        "my photo.jpg   0\n"
        '"d,e.jpg",5\n'
        ".\\sub\\f.jpg , 2\n"
        "  # indented comment\n"
        "b.jpg,7\n",
    )
    assert read_labels(path) == {
        "cats/a.jpg": 3,
        "b.jpg": 7,
        "c.png": 12,
        "my photo.jpg": 0,
        "d,e.jpg": 5,
        "sub/f.jpg": 2,
    }


def test_read_labels_without_header_and_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_bytes(b"\xef\xbb\xbfa.jpg 1\nb.jpg 2\n")
    assert read_labels(path) == {"a.jpg": 1, "b.jpg": 2}


def test_header_only_on_first_line(tmp_path: Path) -> None:
    path = write(tmp_path, "# header next\nimage;class\na.jpg;1\nb.jpg;cat\n")
    with pytest.raises(QuantbenchError) as info:
        read_labels(path)
    assert str(info.value).startswith(f"{path}:4: ")
    assert "'cat'" in str(info.value)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("a.jpg,1\nb.jpg\n", 2, "expected"),
        ("a.jpg,1\nb.jpg,2,3\n", 2, "expected"),
        ("a.jpg,1\n,4\n", 2, "expected"),
        ("a.jpg,-1\n", 1, "negative"),
        ("a.jpg,1\nb.jpg,2\n\n./a.jpg,4\n", 4, "line 1"),
        ("a.jpg 1\nb.jpg 1.5\n", 2, "not an integer"),
    ],
)
def test_read_labels_bad_lines(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(QuantbenchError) as info:
        read_labels(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ")
    assert words in message
    assert "\n" not in message


def test_read_labels_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(QuantbenchError, match=r"labels file not found: .*nope\.txt"):
        read_labels(tmp_path / "nope.txt")
    empty = write(tmp_path, "# nothing\nname,label\n")
    with pytest.raises(QuantbenchError, match="no labels"):
        read_labels(empty)


def test_label_for_tries_path_then_basename() -> None:
    labels = {"cats/a.jpg": 1, "a.jpg": 2, "b.jpg": 3, "dogs/c.jpg": 4}
    assert label_for(labels, "cats/a.jpg") == 1
    assert label_for(labels, "birds/a.jpg") == 2
    assert label_for(labels, Path("x") / "y" / "b.jpg") == 3
    assert label_for(labels, "x\\b.jpg") == 3
    assert label_for(labels, "./dogs/c.jpg") == 4
    assert label_for(labels, "c.jpg") is None
    assert label_for(labels, "zzz.jpg") is None


# Accuracy ----------------------------------------------------------------------------------------------


def test_accuracy_matches_reference() -> None:
    rng = np.random.default_rng(2)
    scores = np.round(rng.normal(size=(30, 10)), 1)
    labels: list[int | None] = [None if i % 7 == 0 else int(rng.integers(10)) for i in range(30)]
    acc = Accuracy()
    acc.update(scores[:11], labels[:11])
    acc.update(scores[11:, :, None, None], labels[11:])
    got = acc.result()
    top1 = top5 = n = 0
    for row, label in zip(scores.tolist(), labels):
        if label is None:
            continue
        n += 1
        order = slow_ranking(row)
        top1 += order[0] == label
        top5 += label in order[:5]
    assert (got["labelled"], got["unlabelled"]) == (n, 30 - n)
    assert got["top1_accuracy"] == pytest.approx(top1 / n)
    assert got["top5_accuracy"] == pytest.approx(top5 / n)
    assert got["top1_accuracy"] < got["top5_accuracy"]


def test_accuracy_small_cases() -> None:
    acc = Accuracy()
    assert math.isnan(acc.result()["top1_accuracy"])
    acc.update(np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), [1, None])
    got = acc.result()
    # Tie between 0 and 1 ranks 0 first: top-1 wrong, but label 1 is within k = min(5, 3).
    assert (got["top1_accuracy"], got["top5_accuracy"], got["labelled"], got["unlabelled"]) == (
        0.0,
        1.0,
        1,
        1,
    )


def test_accuracy_errors() -> None:
    acc = Accuracy("logits")
    with pytest.raises(QuantbenchError, match="2 labels for a batch of 3"):
        acc.update(np.zeros((3, 10)), [1, 2])
    with pytest.raises(QuantbenchError, match=r"label 10 is outside 0\.\.9"):
        acc.update(np.zeros((2, 10)), [10, None])


# Latency -----------------------------------------------------------------------------------------------


def test_measure_latency_with_sleep() -> None:
    calls = 0

    def run() -> None:
        nonlocal calls
        calls += 1
        time.sleep(0.001)

    start = time.perf_counter()
    stats = measure_latency(run, batch=8, min_runs=20, min_seconds=0.05, warmup=3)
    wall = time.perf_counter() - start
    assert isinstance(stats, LatencyStats)
    assert stats.batch == 8
    assert stats.runs >= 20
    assert calls == stats.runs + 3
    assert stats.total_s >= 0.05
    assert wall >= stats.total_s
    assert 1.0 <= stats.min_ms <= stats.median_ms <= stats.p90_ms <= stats.p99_ms <= stats.max_ms
    assert stats.min_ms <= stats.mean_ms <= stats.max_ms
    assert stats.images_per_s == pytest.approx(8 / (stats.median_ms / 1000), rel=1e-9)
    assert stats.to_dict()["runs"] == stats.runs
    assert list(stats.to_dict())[:3] == ["batch", "runs", "median_ms"]


def test_measure_latency_min_seconds_extends_runs() -> None:
    stats = measure_latency(lambda: time.sleep(0.002), batch=1, min_runs=1, min_seconds=0.03, warmup=0)
    assert stats.total_s >= 0.03
    assert stats.runs >= 2  # min_runs alone would stop after one 2 ms call
    assert stats.runs <= 15  # 15 calls of at least 2 ms reach 0.03 s


def test_measure_latency_max_seconds_stops_early() -> None:
    stats = measure_latency(lambda: time.sleep(0.01), batch=1, min_runs=1000, min_seconds=0, max_seconds=0.03)
    assert 1 <= stats.runs <= 4
    one = measure_latency(lambda: time.sleep(0.005), batch=1, warmup=0, max_seconds=1e-6)
    assert one.runs == 1
    assert one.median_ms == one.p99_ms == one.min_ms


def test_measure_latency_percentiles_are_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    durations = iter([0.0] * 2 + [0.001 * i for i in range(1, 11)])
    fake_now = [0.0]

    def fake_clock() -> float:
        return fake_now[0]

    def run() -> None:
        fake_now[0] += next(durations)

    monkeypatch.setattr(time, "perf_counter", fake_clock)
    stats = measure_latency(run, batch=4, min_runs=10, min_seconds=0, warmup=2)
    # Times 1..10 ms: median 5.5, p90 = 9 + 0.1 * 1 = 9.1, p99 = 9.91 (linear interpolation).
    assert stats.runs == 10
    assert stats.median_ms == pytest.approx(5.5)
    assert stats.p90_ms == pytest.approx(9.1)
    assert stats.p99_ms == pytest.approx(9.91)
    assert stats.mean_ms == pytest.approx(5.5)
    assert stats.total_s == pytest.approx(0.055)
    assert stats.images_per_s == pytest.approx(4 / 0.0055)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"batch": 0}, "batch"),
        ({"batch": 1, "min_runs": 0}, "min_runs"),
        ({"batch": 1, "warmup": -1}, "warmup"),
        ({"batch": 1, "min_seconds": -0.5}, "min_seconds"),
        ({"batch": 1, "min_seconds": math.nan}, "min_seconds"),
        ({"batch": 1, "max_seconds": 0}, "max_seconds"),
    ],
)
def test_measure_latency_argument_errors(kwargs: dict[str, float], words: str) -> None:
    calls: list[int] = []
    with pytest.raises(QuantbenchError, match=words):
        measure_latency(lambda: calls.append(1), **kwargs)  # type: ignore[arg-type]
    assert calls == []


# The metric registry ---------------------------------------------------------------------------------


def test_registry_keys_are_unique_and_results_order_holds_each_once() -> None:
    keys = [metric.key for metric in METRICS]
    assert len(set(keys)) == len(keys) == 9 + len(KIND_METRICS)
    assert sorted(RESULTS_ORDER) == sorted(keys)
    assert len({metric.label for metric in METRICS}) == len(keys)
    # the task metrics come last, in both orders
    assert METRICS[9:] == KIND_METRICS and RESULTS_ORDER[9:] == KIND_RESULTS_ORDER
    assert metric_by_key("snr_db").label == "SNR (dB)"
    assert metric_by_key("det_f1") in METRICS
    with pytest.raises(KeyError):
        metric_by_key("top1")


def test_accumulators_return_the_registered_metrics_in_results_order() -> None:
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(6, 12))
    errors, agreement, accuracy = OutputErrors("s"), TopKAgreement("s"), Accuracy("s")
    errors.update(ref, ref + 0.1)
    agreement.update(ref, ref + 0.1)
    accuracy.update(ref, [0, 1, 2, 3, 4, 5])
    with_nan = OutputErrors("s")
    with_nan.update(ref, np.full_like(ref, np.nan))
    registered = set(RESULTS_ORDER)
    computed = [key for acc in (errors, agreement, accuracy) for key in acc.result() if key in registered]
    # these accumulators give every metric but those by output kind (tests/test_tasks.py has those)
    assert computed == [key for key in RESULTS_ORDER if key not in KIND_RESULTS_ORDER]
    assert [key for key in with_nan.result() if key in registered] == list(RESULTS_ORDER[:5])


def test_reference_values_are_fp32_against_itself_and_higher_is_better_points_away_from_error() -> None:
    rng = np.random.default_rng(7)
    ref = rng.normal(size=(16, 20))
    noisy = ref + rng.normal(scale=1.0, size=ref.shape)

    def measured(candidate: np.ndarray) -> dict[str, float]:
        errors, agreement = OutputErrors("s"), TopKAgreement("s")
        errors.update(ref, candidate)
        agreement.update(ref, candidate)
        return {**errors.result(), **agreement.result()}

    same, worse = measured(ref), measured(noisy)
    # the metrics of every output and of class scores (those by kind are checked in tests/test_tasks.py)
    checked = [
        metric
        for metric in METRICS
        if metric.reference_value is not None and metric.applies(class_scores=True, labels=True)
    ]
    assert {metric.applies_to for metric in checked} == {"every output", "class scores"}
    assert len(checked) == 7
    for metric in checked:
        assert same[metric.key] == metric.reference_value, metric.key
        if metric.higher_is_better:
            assert worse[metric.key] < metric.reference_value, metric.key
        else:
            assert worse[metric.key] > metric.reference_value, metric.key


class _Linear(Runner):
    """A runner whose outputs are 12 class scores and 2 regression values, plus a fixed offset."""

    representative = True

    def __init__(self, weights: np.ndarray, offset: float) -> None:
        self.weights, self.offset = weights, offset

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds["x"].astype(np.float64)
        return {"scores": x @ self.weights + self.offset, "box": 2.0 * x[:, :2] + self.offset}

    def close(self) -> None:
        pass


@pytest.mark.parametrize("labelled", [False, True])
def test_compare_variants_gives_each_output_the_metrics_the_registry_says(labelled: bool) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    weights = rng.normal(size=(3, 12))
    runners = {"fp32": _Linear(weights, 0.0), "int8": _Linear(weights, 0.05)}
    batches = [Batch({"x": x[:4]}, ["a", "b", "c", "d"]), Batch({"x": x[4:]}, ["e", "f"])]
    label_map = {name: i for i, name in enumerate("abcdef")} if labelled else None
    comparison = compare_variants(
        runners, batches, BenchSpec(runs=1, seconds=0.0), judging=Judging(label_map)
    )
    assert {name: info["class_scores"] for name, info in comparison.outputs.items()} == {
        "scores": True,
        "box": False,
    }
    position = {key: i for i, key in enumerate(RESULTS_ORDER)}
    for variant, per_output in comparison.metrics.items():
        for output, values in per_output.items():
            info = comparison.outputs[output]
            class_scores, group = info["class_scores"], metric_group(info)
            expected = {
                m.key for m in METRICS if m.applies(class_scores=class_scores, labels=labelled, group=group)
            }
            if variant == "fp32":  # the reference has only the figures of its own: accuracy against labels
                expected = {key for key in expected if metric_by_key(key).applies_to == "labels"}
            got = [key for key in values if key in position]
            assert set(got) == expected, (variant, output)
            assert got == sorted(got, key=position.__getitem__)


@pytest.mark.parametrize(
    ("fmt", "value", "text"),
    [
        (NumberFormat("percent", 1), 0.975, "97.5 %"),
        (NumberFormat("percent", 1), 1.0, "100.0 %"),
        (NumberFormat("percent", 1), math.nan, "nan %"),
        (NumberFormat("significant", 4), 0.0123456, "0.01235"),
        (NumberFormat("significant", 4), 2.0696375, "2.07"),
        (NumberFormat("significant", 6), 0.99997121, "0.999971"),
        (NumberFormat("significant", 4), math.inf, "inf"),
        (NumberFormat("decimals", 1), 42.34438, "42.3"),
        (NumberFormat("decimals", 1), -math.inf, "-inf"),
    ],
)
def test_number_formats(fmt: NumberFormat, value: float, text: str) -> None:
    assert fmt(value) == text


def test_a_chosen_headline_decides_the_verdict_of_a_comparison() -> None:
    from quantbench.evaluation.tasks import Task, TaskOptions
    from quantbench.evaluation.verdict import decide

    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    weights = rng.normal(size=(3, 12))
    runners = {"fp32": _Linear(weights, 0.0), "int8": _Linear(weights, 0.05)}
    batches = [Batch({"x": x}, list("abcdef"))]
    task = Task(options=TaskOptions(headline="top5_overlap"))
    comparison = compare_variants(
        runners, batches, BenchSpec(runs=1, seconds=0.0), judging=Judging(task=task)
    )
    assert comparison.outputs["scores"]["headline"] == "top5_overlap"
    assert comparison.outputs["box"]["headline"] == "channel_rel_l2_mean"  # generic: no such metric
    verdict = decide(comparison)
    assert verdict is not None and (verdict.output, verdict.metric) == ("scores", "top5_overlap")
    assert verdict.values["int8"] == comparison.metrics["int8"]["scores"]["top5_overlap"]
    wrong = Task(options=TaskOptions(headline="det_f1"))
    with pytest.raises(QuantbenchError, match="headline=det_f1: the main output 'scores' is classes"):
        compare_variants(runners, batches, BenchSpec(runs=1, seconds=0.0), judging=Judging(task=wrong))


def test_an_onnx_runtime_runner_judges_as_it_runs(tmp_path) -> None:
    """judge() gives the session's arena back after the run; the outputs are those of run()."""
    from quantbench.backends.onnxruntime import OnnxRuntimeRunner, SessionSettings, make_session
    from tests.conftest import tiny_conv_model

    model = tiny_conv_model(tmp_path / "m.onnx")
    runner = OnnxRuntimeRunner(make_session(model, SessionSettings(threads=1), "the model"), True)
    feeds = {"input": np.random.default_rng(4).normal(size=(8, 3, 16, 16)).astype(np.float32)}
    ran, judged = runner.run(feeds), runner.judge(feeds)
    assert list(ran) == list(judged) and all(np.array_equal(ran[k], judged[k]) for k in ran)
    assert np.array_equal(runner.run(feeds)[next(iter(ran))], ran[next(iter(ran))])  # still runs after


def test_a_stand_in_runner_is_judged_but_never_timed() -> None:
    class StandIn(_Linear):
        timed = False

        def __init__(self, weights: np.ndarray, offset: float) -> None:
            super().__init__(weights, offset)
            self.calls = 0

        def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            self.calls += 1
            return super().run(feeds)

    rng = np.random.default_rng(7)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    weights = rng.normal(size=(3, 12))
    stand_in = StandIn(weights, 0.05)
    batches = [Batch({"x": x[:4]}, list("abcd")), Batch({"x": x[4:]}, list("ef"))]
    comparison = compare_variants(
        {"fp32": _Linear(weights, 0.0), "int8": stand_in}, batches, BenchSpec(runs=5, seconds=0.0)
    )
    assert stand_in.calls == 2  # one judged run per batch, none timed
    assert comparison.latency["int8"] == [] and comparison.representative["int8"] is False
    assert comparison.latency["fp32"] and comparison.metrics["int8"]["scores"]["top1_agreement"] >= 0.0


def test_automatic_batches_hold_fewer_large_samples() -> None:
    """Held-out and correction batches shrink so a batch's inputs stay within BATCH_INPUT_BYTES, by the
    largest sample calibration saw; without a calibration they keep their size."""
    from types import SimpleNamespace

    from quantbench.flows.context import BATCH_INPUT_BYTES, RunContext

    def batch(shapes: dict, most: int = 8) -> int:
        ctx = SimpleNamespace(calibration=SimpleNamespace(shapes=shapes) if shapes is not None else None)
        return RunContext.automatic_batch(ctx, most)  # type: ignore[arg-type]

    page = 3 * 1152 * 1152 * 4  # 15.2 MiB of float32
    assert page <= BATCH_INPUT_BYTES < 2 * page
    assert batch(None) == 8 and batch({}) == 8
    assert batch({"x": [{"shape": [3, 224, 224], "samples": 9}]}) == 8
    assert (
        batch({"x": [{"shape": [3, 736, 736], "samples": 3}, {"shape": [3, 1152, 1152], "samples": 1}]}) == 1
    )
    assert batch({"x": [{"shape": [3, 736, 736], "samples": 4}]}) == BATCH_INPUT_BYTES // (3 * 736 * 736 * 4)
    two = {"a": [{"shape": [3, 736, 736], "samples": 1}], "b": [{"shape": [3, 736, 736], "samples": 1}]}
    assert batch(two) == BATCH_INPUT_BYTES // (2 * 3 * 736 * 736 * 4)
    assert batch({"x": [{"shape": [3, 4000, 4000], "samples": 1}]}, most=16) == 1
