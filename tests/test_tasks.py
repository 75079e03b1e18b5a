"""Tests for the metrics by output kind (quantbench.evaluation.tasks) and the kinds themselves
(quantbench.evaluation.kinds).

Expected values are worked out by hand in the test or come from the slow reference implementations below
(plain Python loops over floats, math.fsum), never from the code under test.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from quantbench.errors import QuantbenchError
from quantbench.evaluation.errors import relative_l2
from quantbench.evaluation.kinds import OutputKind, detect_kind, kind_for, parse_task
from quantbench.evaluation.registry import KIND_METRICS, KIND_RESULTS_ORDER, METRICS, metric_by_key
from quantbench.evaluation.tasks import (
    ChannelErrors,
    ClassAgreement,
    DenseClassAgreement,
    DetectionAgreement,
    Detections,
    MaskAgreement,
    SequenceAgreement,
    Task,
    TaskOptions,
    accumulator_for,
    average_precision,
    box_iou,
    ctc_greedy_decode,
    decode_yolo,
    edit_distance,
    mask_regions,
    match_detections,
    nms,
    trim,
)

# Reference implementations -----------------------------------------------------------------------------

Box = tuple[float, float, float, float]
Det = tuple[Box, float, int]  # corners, score, class


def slow_iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def slow_nms(dets: list[Det], threshold: float, agnostic: bool = False) -> list[Det]:
    kept: list[Det] = []
    for det in sorted(dets, key=lambda d: -d[1]):
        if all((k[2] != det[2] and not agnostic) or slow_iou(k[0], det[0]) <= threshold for k in kept):
            kept.append(det)
    return kept


def slow_decode(
    tensor: np.ndarray,
    boxes_first: bool,
    objectness: bool,
    conf: float = 0.25,
    nms_iou: float = 0.45,
    max_det: int = 300,
    agnostic: bool = False,
) -> list[list[Det]]:
    images = []
    for image in tensor.tolist():
        rows = image if boxes_first else [list(col) for col in zip(*image)]
        first = 5 if objectness else 4
        found = []
        for a in range(len(rows[0])):
            col = [row[a] for row in rows]
            best = first
            for i in range(first, len(col)):
                if col[i] > col[best]:
                    best = i
            score = col[best] * (col[4] if objectness else 1.0)
            if score > conf:
                cx, cy, w, h = col[:4]
                found.append(((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), score, best - first))
        images.append(slow_nms(found, nms_iou, agnostic)[:max_det])
    return images


def slow_match(ref: list[Det], cand: list[Det], threshold: float) -> list[tuple[int, int, float]]:
    """(candidate, reference, IoU) of the matched pairs."""
    taken = [False] * len(ref)
    pairs = []
    for i in sorted(range(len(cand)), key=lambda k: -cand[k][1]):
        best, best_iou = -1, -1.0
        for j, r in enumerate(ref):
            if not taken[j] and r[2] == cand[i][2]:
                v = slow_iou(cand[i][0], r[0])
                if v > best_iou:
                    best, best_iou = j, v
        if best >= 0 and best_iou >= threshold:
            taken[best] = True
            pairs.append((i, best, best_iou))
    return pairs


def slow_ap(scored: list[tuple[float, bool]], references: int) -> float:
    if references == 0:
        return 0.0
    points = []
    hits = 0
    for k, (_, hit) in enumerate(sorted(scored, key=lambda x: -x[0]), start=1):
        hits += hit
        points.append((hits / references, hits / k))
    area, last = 0.0, 0.0
    for idx, (recall, _) in enumerate(points):
        if recall > last:
            area += (recall - last) * max(p for _, p in points[idx:])
            last = recall
    return area


def slow_detection(
    ref: np.ndarray, cand: np.ndarray, boxes_first: bool, objectness: bool
) -> dict[str, float]:
    matched = n_ref = n_cand = 0
    ious, box_errors, score_errors = [], [], []
    per_class: dict[int, list[tuple[float, bool]]] = {}
    ref_count: dict[int, int] = {}
    decoded = zip(slow_decode(ref, boxes_first, objectness), slow_decode(cand, boxes_first, objectness))
    for r, c in decoded:
        pairs = slow_match(r, c, 0.5)
        hit = {i for i, _, _ in pairs}
        n_ref, n_cand, matched = n_ref + len(r), n_cand + len(c), matched + len(pairs)
        for det in r:
            ref_count[det[2]] = ref_count.get(det[2], 0) + 1
        for i, det in enumerate(c):
            per_class.setdefault(det[2], []).append((det[1], i in hit))
        for i, j, v in pairs:
            ious.append(v)
            (a, b) = c[i][0], r[j][0]
            w, h = b[2] - b[0], b[3] - b[1]
            box_errors.append(
                (abs(a[0] - b[0]) / w + abs(a[2] - b[2]) / w + abs(a[1] - b[1]) / h + abs(a[3] - b[3]) / h)
                / 4
            )
            score_errors.append(abs(c[i][1] - r[j][1]))
    classes = set(per_class) | set(ref_count)
    aps = [slow_ap(per_class.get(k, []), ref_count.get(k, 0)) for k in classes]
    return {
        "det_precision": matched / n_cand,
        "det_recall": matched / n_ref,
        "det_f1": 2 * matched / (n_cand + n_ref),
        "det_map50": math.fsum(aps) / len(aps),
        "det_mean_iou": math.fsum(ious) / len(ious),
        "det_box_error": math.fsum(box_errors) / len(box_errors),
        "det_score_error": math.fsum(score_errors) / len(score_errors),
        "det_reference": n_ref,
        "det_candidate": n_cand,
    }


@functools.cache
def slow_levenshtein(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    if not a or not b:
        return len(a) + len(b)
    return min(
        slow_levenshtein(a[1:], b) + 1,
        slow_levenshtein(a, b[1:]) + 1,
        slow_levenshtein(a[1:], b[1:]) + (a[0] != b[0]),
    )


def slow_ctc(scores: list[list[float]], blank: int) -> list[int]:
    best = []
    for step in scores:
        k = 0
        for i in range(len(step)):
            if step[i] > step[k]:
                k = i
        best.append(k)
    out, previous = [], None
    for k in best:
        if k != previous and k != blank:
            out.append(k)
        previous = k
    return out


# Helpers --------------------------------------------------------------------------------------------


def yolo_tensor(anchors: list[list[float]], boxes_first: bool) -> np.ndarray:
    """One image: each anchor is [cx, cy, w, h, (objectness,) class scores...]."""
    image = np.array(anchors, dtype=np.float64)  # [A, attributes]
    return (image.T if boxes_first else image)[None]


def detection_kind(classes: int, boxes_first: bool, objectness: bool) -> OutputKind:
    return OutputKind(
        "detection", "test", classes=classes, boxes_first_axis=boxes_first, objectness=objectness
    )


def dets(*items: tuple[Box, float, int]) -> Detections:
    boxes = np.array([b for b, _, _ in items], dtype=np.float64).reshape(-1, 4)
    scores = np.array([s for _, s, _ in items], dtype=np.float64)
    classes = np.array([k for _, _, k in items], dtype=np.int64)
    return Detections(boxes, scores, classes)


def as_list(found: Detections) -> list[Det]:
    return [
        (tuple(float(v) for v in box), float(s), int(k))  # type: ignore[misc]
        for box, s, k in zip(found.boxes, found.scores, found.classes)
    ]


def detection_result(ref: Detections, cand: Detections) -> dict[str, float]:
    """DetectionAgreement on one image whose decoded detections are ``ref`` and ``cand``: each detection
    becomes an anchor with a one-hot class score."""
    classes = 1 + max([0, *ref.classes.tolist(), *cand.classes.tolist()])

    def tensor(found: Detections, anchors: int) -> np.ndarray:
        rows = np.zeros((anchors, 4 + classes))
        rows[:, :4] = [5.0, 5.0, 1.0, 1.0]  # unscored filler boxes
        for a, (box, score, label) in enumerate(zip(found.boxes, found.scores, found.classes)):
            x1, y1, x2, y2 = box
            rows[a, :4] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
            rows[a, 4 + label] = score
        return rows[None]

    anchors = max(len(ref.scores), len(cand.scores), 1)
    acc = DetectionAgreement(detection_kind(classes, False, False), TaskOptions(nms_iou=1.0))
    acc.update(tensor(ref, anchors), tensor(cand, anchors))
    return acc.result()


# Detection: decoding and NMS -------------------------------------------------------------------------

ANCHORS = [  # cx, cy, w, h, objectness, class 0, class 1
    [100.0, 100.0, 40.0, 20.0, 1.0, 0.9, 0.1],  # kept
    [102.0, 100.0, 40.0, 20.0, 1.0, 0.8, 0.05],  # IoU 0.905 with the first, same class: suppressed
    [102.0, 100.0, 40.0, 20.0, 0.5, 0.1, 0.7],  # same place, class 1: kept (0.35 with objectness)
    [300.0, 300.0, 10.0, 10.0, 1.0, 0.2, 0.1],  # below 0.25
    [300.0, 50.0, 60.0, 60.0, 0.4, 0.3, 0.6],  # 0.6 alone; 0.24 with objectness
    [20.0, 20.0, 10.0, 10.0, 1.0, 0.26, 0.0],  # just above 0.25
]
WITHOUT_OBJECTNESS = [
    ((80.0, 90.0, 120.0, 110.0), 0.9, 0),
    ((82.0, 90.0, 122.0, 110.0), 0.7, 1),
    ((270.0, 20.0, 330.0, 80.0), 0.6, 1),
    ((15.0, 15.0, 25.0, 25.0), 0.26, 0),
]
WITH_OBJECTNESS = [
    ((80.0, 90.0, 120.0, 110.0), 0.9, 0),
    ((82.0, 90.0, 122.0, 110.0), 0.35, 1),
    ((15.0, 15.0, 25.0, 25.0), 0.26, 0),
]


@pytest.mark.parametrize("boxes_first", [True, False])
@pytest.mark.parametrize("objectness", [True, False])
def test_decode_hand_made_yolo_tensor(boxes_first: bool, objectness: bool) -> None:
    anchors = [row if objectness else row[:4] + row[5:] for row in ANCHORS]
    tensor = yolo_tensor(anchors, boxes_first)
    [found] = decode_yolo(tensor, detection_kind(2, boxes_first, objectness))
    got = as_list(found)
    expected = WITH_OBJECTNESS if objectness else WITHOUT_OBJECTNESS
    assert [k for _, _, k in got] == [k for _, _, k in expected]
    assert np.allclose([s for _, s, _ in got], [s for _, s, _ in expected])
    assert np.allclose([b for b, _, _ in got], [b for b, _, _ in expected])
    assert [d[2] for d in slow_decode(tensor, boxes_first, objectness)[0]] == [k for _, _, k in expected]


def test_decode_keeps_the_highest_scored_max_detections() -> None:
    anchors = [row[:4] + row[5:] for row in ANCHORS]
    [found] = decode_yolo(
        yolo_tensor(anchors, True), detection_kind(2, True, False), TaskOptions(max_detections=2)
    )
    assert np.allclose(found.scores, [0.9, 0.7])


@pytest.mark.parametrize("boxes_first", [True, False])
@pytest.mark.parametrize("objectness", [True, False])
def test_decode_random_heads_match_reference(boxes_first: bool, objectness: bool) -> None:
    rng = np.random.default_rng(11)
    anchors, classes = 80, 3
    boxes = np.column_stack(
        [rng.uniform(0, 120, anchors), rng.uniform(0, 120, anchors), rng.uniform(5, 40, (anchors, 2))]
    )
    scores = rng.uniform(0, 1, (anchors, classes + int(objectness)))
    tensor = yolo_tensor(np.column_stack([boxes, scores]).tolist(), boxes_first)
    tensor = np.concatenate([tensor, tensor[:, ::-1] if boxes_first else tensor[:, ::-1, :]])
    found = decode_yolo(tensor, detection_kind(classes, boxes_first, objectness))
    expected = slow_decode(tensor, boxes_first, objectness)
    assert len(found) == 2
    for got, want in zip(found, expected):
        assert len(want) > 3
        got_list = as_list(got)
        assert [k for _, _, k in got_list] == [k for _, _, k in want]
        assert np.allclose([b for b, _, _ in got_list], [b for b, _, _ in want])
        assert np.allclose([s for _, s, _ in got_list], [s for _, s, _ in want])


def test_nms_suppresses_within_a_class_only() -> None:
    boxes = np.array(
        [
            [0, 0, 10, 10],  # 0: score 0.9, class 0
            [1, 0, 11, 10],  # 1: IoU 9/11 = 0.82 with box 0, class 0 -> dropped
            [1, 0, 11, 10],  # 2: same box, class 1 -> kept
            [6, 0, 16, 10],  # 3: IoU 4/16 = 0.25 with box 0 -> kept
            [5, 0, 15, 10],  # 4: IoU 5/15 = 0.33 with box 0, 0.71 with box 3 (scored higher) -> dropped
        ],
        dtype=np.float64,
    )
    scores = np.array([0.9, 0.8, 0.5, 0.7, 0.6])
    classes = np.array([0, 0, 1, 0, 0])
    assert nms(boxes, scores, classes, 0.45).tolist() == [0, 3, 2]
    assert nms(boxes, scores, classes, 0.9).tolist() == [0, 1, 3, 4, 2]
    assert box_iou(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(slow_iou((0, 0, 10, 10), (1, 0, 11, 10)))


def test_box_iou_matches_reference_and_zero_area_gives_zero() -> None:
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 50, (7, 2))
    a = np.column_stack([xy, xy + rng.uniform(1, 30, (7, 2))])
    b = np.vstack([a[3:] + 2.0, [[5, 5, 5, 5]]])
    got = box_iou(a, b)
    for i in range(len(a)):
        for j in range(len(b)):
            assert got[i, j] == pytest.approx(slow_iou(tuple(a[i]), tuple(b[j])), abs=1e-12)
    assert np.all(got[:, -1] == 0.0)


# Detection: matching, precision, recall, F1, mAP -----------------------------------------------------

BOX = (10.0, 10.0, 30.0, 30.0)  # 20 x 20


def shifted(dx: float) -> Box:
    return (BOX[0] + dx, BOX[1], BOX[2] + dx, BOX[3])


def test_identical_detections_agree_fully() -> None:
    ref = dets((BOX, 0.9, 0), ((50.0, 50.0, 70.0, 90.0), 0.6, 1))
    result = detection_result(ref, ref)
    for key in ("det_precision", "det_recall", "det_f1", "det_map50", "det_mean_iou"):
        assert result[key] == pytest.approx(1.0), key
    assert result["det_box_error"] == 0.0 and result["det_score_error"] == 0.0
    assert (result["det_reference"], result["det_candidate"]) == (2, 2)


def test_class_swap_matches_nothing() -> None:
    result = detection_result(dets((BOX, 0.9, 0)), dets((BOX, 0.9, 1)))
    assert (result["det_precision"], result["det_recall"], result["det_f1"], result["det_map50"]) == (
        0,
        0,
        0,
        0,
    )
    assert math.isnan(result["det_mean_iou"]) and math.isnan(result["det_box_error"])


@pytest.mark.parametrize(
    ("dx", "iou", "matched"),
    [(5.0, 15 / 25, True), (8.0, 12 / 28, False)],  # IoU = (20 - dx) / (20 + dx): 0.6 and 0.43
)
def test_shifted_box_matches_only_at_iou_half(dx: float, iou: float, matched: bool) -> None:
    assert slow_iou(BOX, shifted(dx)) == pytest.approx(iou)
    result = detection_result(dets((BOX, 0.8, 0)), dets((shifted(dx), 0.7, 0)))
    expected = 1.0 if matched else 0.0
    assert result["det_precision"] == result["det_recall"] == result["det_f1"] == expected
    if matched:
        assert result["det_mean_iou"] == pytest.approx(iou)
        assert result["det_box_error"] == pytest.approx((dx / 20 + dx / 20) / 4)  # x1, x2 moved by dx
        assert result["det_score_error"] == pytest.approx(0.1)
    else:
        assert math.isnan(result["det_mean_iou"])


def test_empty_reference_and_empty_both() -> None:
    only_candidate = detection_result(dets(), dets((BOX, 0.9, 0)))
    assert only_candidate["det_precision"] == only_candidate["det_recall"] == only_candidate["det_f1"] == 0.0
    assert only_candidate["det_map50"] == 0.0 and only_candidate["det_reference"] == 0
    only_reference = detection_result(dets((BOX, 0.9, 0)), dets())
    assert only_reference["det_f1"] == 0.0 and only_reference["det_candidate"] == 0
    neither = detection_result(dets(), dets())
    assert (
        neither["det_precision"] == neither["det_recall"] == neither["det_f1"] == neither["det_map50"] == 1.0
    )


def test_precision_recall_and_map_by_hand() -> None:
    far = (200.0, 200.0, 220.0, 220.0)
    ref = dets((BOX, 0.9, 0), ((100.0, 10.0, 120.0, 30.0), 0.9, 0), ((40.0, 40.0, 60.0, 60.0), 0.8, 1))
    cand = dets(
        (shifted(1.0), 0.9, 0),  # hit, class 0
        (far, 0.8, 0),  # miss, class 0
        ((101.0, 10.0, 121.0, 30.0), 0.7, 0),  # hit, class 0
        ((40.0, 40.0, 60.0, 60.0), 0.6, 2),  # class 2 is absent from the reference: miss
    )
    result = detection_result(ref, cand)
    assert result["det_precision"] == pytest.approx(2 / 4)
    assert result["det_recall"] == pytest.approx(2 / 3)
    assert result["det_f1"] == pytest.approx(2 * 2 / (4 + 3))
    # class 0: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> AP = 1/2 + 1/2 · 2/3; classes 1 and 2: AP 0
    assert result["det_map50"] == pytest.approx((0.5 + 0.5 * 2 / 3) / 3)
    assert slow_ap([(0.9, True), (0.8, False), (0.7, True)], 2) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_matching_is_greedy_by_candidate_score() -> None:
    ref = dets((BOX, 0.9, 0))
    cand = dets((shifted(4.0), 0.5, 0), (shifted(1.0), 0.8, 0))  # the better-scored one takes the box
    match = match_detections(ref, cand, 0.5)
    assert match.pairs.tolist() == [[1, 0]] and match.hits.tolist() == [False, True]
    assert [(i, j) for i, j, _ in slow_match(as_list(ref), as_list(cand), 0.5)] == [(1, 0)]


def test_average_precision_matches_reference_on_random_rankings() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        n = int(rng.integers(1, 12))
        scores, hits = rng.uniform(size=n), rng.uniform(size=n) < 0.6
        references = int(hits.sum() + rng.integers(0, 3))
        expected = slow_ap(list(zip(scores.tolist(), hits.tolist())), references)
        assert average_precision(scores, hits, references) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("boxes_first", [True, False])
@pytest.mark.parametrize("objectness", [True, False])
def test_detection_agreement_streams_and_matches_reference(boxes_first: bool, objectness: bool) -> None:
    rng = np.random.default_rng(21)
    images, anchors, classes = 5, 60, 3
    boxes = np.concatenate(
        [rng.uniform(0, 150, (images, anchors, 2)), rng.uniform(8, 40, (images, anchors, 2))], 2
    )
    scores = rng.uniform(0, 1, (images, anchors, classes + int(objectness))) ** 2
    ref = np.concatenate([boxes, scores], axis=2)
    cand = ref + np.concatenate(
        [rng.normal(scale=2.0, size=boxes.shape), rng.normal(scale=0.05, size=scores.shape)], axis=2
    )
    cand[..., 4:] = np.clip(cand[..., 4:], 0, 1)
    if boxes_first:
        ref, cand = ref.transpose(0, 2, 1), cand.transpose(0, 2, 1)
    acc = DetectionAgreement(detection_kind(classes, boxes_first, objectness))
    acc.update(ref[:2], cand[:2])
    acc.update(ref[2:], cand[2:])
    got = acc.result()
    expected = slow_detection(ref, cand, boxes_first, objectness)
    assert 0.0 < expected["det_f1"] < 1.0
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key
    assert got["samples"] == images


def test_detection_shape_errors() -> None:
    acc = DetectionAgreement(detection_kind(2, True, False))
    with pytest.raises(QuantbenchError, match=r"\[N, 6, A\]"):
        acc.update(np.zeros((1, 7, 30)), np.zeros((1, 7, 30)))
    with pytest.raises(QuantbenchError, match="differs from the reference"):
        acc.update(np.zeros((1, 6, 30)), np.zeros((1, 6, 31)))
    with pytest.raises(QuantbenchError, match="nothing compared"):
        acc.result()
    with pytest.raises(QuantbenchError, match="match-iou"):
        TaskOptions(match_iou=0.0)


# Sequence ------------------------------------------------------------------------------------------


def test_trim_drops_the_classes_at_both_ends_only() -> None:
    assert trim([5, 5, 1, 5, 2, 5], [5]) == [1, 5, 2]
    assert trim([5, 6, 5], [5, 6]) == []
    assert trim([1, 2], []) == [1, 2]


def test_sequence_agreement_with_ctc_trim() -> None:
    def steps(classes: list[int]) -> np.ndarray:
        out = np.zeros((1, len(classes), 4))
        out[0, np.arange(len(classes)), classes] = 1.0
        return out

    ref = steps([1, 0, 2, 0, 3, 0, 0])  # "1 2 3"
    cand = steps([1, 0, 2, 0, 3, 0, 3])  # "1 2 3 3": differs at the end by class 3
    spaced = steps([3, 1, 0, 2, 0, 3, 0])  # "3 1 2 3": a leading 3
    plain = SequenceAgreement(OutputKind("sequence", "t", classes=4))
    trimmed = SequenceAgreement(OutputKind("sequence", "t", classes=4), TaskOptions(ctc_trim=(3,)))
    for acc in (plain, trimmed):
        acc.update(ref, cand)
        acc.update(ref, spaced)
    assert plain.result()["seq_agreement"] == 0.0
    assert trimmed.result()["seq_agreement"] == 1.0  # "1 2" against "1 2" both times
    assert plain.result()["seq_edit_distance"] == pytest.approx((1 / 3 + 1 / 3) / 2)


def test_ctc_greedy_decode_by_hand() -> None:
    best = [0, 3, 3, 0, 3, 5, 5, 0]  # blank, 3, 3 (repeat), blank, 3 (after a blank: new), 5, 5, blank
    scores = np.full((1, len(best), 6), 0.01)
    scores[0, np.arange(len(best)), best] = 0.9
    assert ctc_greedy_decode(scores, blank=0) == [[3, 3, 5]]
    assert ctc_greedy_decode(scores, blank=3) == [[0, 0, 5, 0]]  # a blank splits the two 0s


def test_edit_distance_by_hand_and_against_reference() -> None:
    kitten, sitting = [ord(c) for c in "kitten"], [ord(c) for c in "sitting"]
    assert edit_distance(kitten, sitting) == 3
    assert edit_distance([], [1, 2]) == 2 and edit_distance([4], []) == 1 and edit_distance([], []) == 0
    rng = np.random.default_rng(8)
    for _ in range(30):
        a = rng.integers(0, 4, int(rng.integers(0, 8))).tolist()
        b = rng.integers(0, 4, int(rng.integers(0, 8))).tolist()
        assert edit_distance(a, b) == slow_levenshtein(tuple(a), tuple(b))


def test_sequence_agreement_matches_reference() -> None:
    rng = np.random.default_rng(9)
    ref = rng.uniform(size=(12, 10, 5)) ** 4
    cand = ref + rng.normal(scale=0.05, size=ref.shape)
    cand[3] = 0.0
    cand[3, :, 0] = 1.0  # decodes to nothing
    acc = SequenceAgreement(OutputKind("sequence", "test", classes=5, blank=0))
    acc.update(ref[:5], cand[:5])
    acc.update(ref[5:], cand[5:])
    exact, distances = 0, []
    for r, c in zip(ref.tolist(), cand.tolist()):
        dr, dc = slow_ctc(r, 0), slow_ctc(c, 0)
        exact += dr == dc
        distances.append(slow_levenshtein(tuple(dc), tuple(dr)) / max(len(dr), 1))
    result = acc.result()
    assert 0 < exact < 12
    assert result["seq_agreement"] == pytest.approx(exact / 12)
    assert result["seq_edit_distance"] == pytest.approx(math.fsum(distances) / 12)


def test_sequence_blank_option_and_empty_reference() -> None:
    ref = np.zeros((1, 3, 4))
    ref[0, :, 2] = 1.0  # decodes to [] with blank 2
    cand = np.zeros((1, 3, 4))
    cand[0, [0, 1, 2], [1, 2, 3]] = 1.0  # decodes to [1, 3] with blank 2
    acc = SequenceAgreement(OutputKind("sequence", "test", classes=4), TaskOptions(ctc_blank=2))
    acc.update(ref, cand)
    assert acc.result()["seq_agreement"] == 0.0 and acc.result()["seq_edit_distance"] == 2.0
    with pytest.raises(QuantbenchError, match="blank"):
        SequenceAgreement(OutputKind("sequence", "t", classes=2), TaskOptions(ctc_blank=5)).update(ref, ref)


def test_agnostic_nms_suppresses_across_classes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [1, 0, 11, 10], [6, 0, 16, 10]], dtype=np.float64)
    scores = np.array([0.9, 0.8, 0.5, 0.7])
    classes = np.array([0, 0, 1, 0])
    assert nms(boxes, scores, classes, 0.45).tolist() == [0, 3, 2]  # box 2 is of another class
    assert nms(boxes, scores, classes, 0.45, agnostic=True).tolist() == [0, 3]  # IoU 0.82 with box 0


@pytest.mark.parametrize("boxes_first", [True, False])
def test_agnostic_decode_of_random_heads_matches_reference(boxes_first: bool) -> None:
    rng = np.random.default_rng(21)
    anchors, classes = 90, 4
    boxes = np.column_stack(
        [rng.uniform(0, 100, anchors), rng.uniform(0, 100, anchors), rng.uniform(10, 40, (anchors, 2))]
    )
    tensor = yolo_tensor(
        np.column_stack([boxes, rng.uniform(0, 1, (anchors, classes))]).tolist(), boxes_first
    )
    kind = detection_kind(classes, boxes_first, False)
    options = TaskOptions(confidence=0.2, class_agnostic=True)
    [found] = decode_yolo(tensor, kind, options)
    [want] = slow_decode(tensor, boxes_first, False, conf=0.2, agnostic=True)
    [per_class] = slow_decode(tensor, boxes_first, False, conf=0.2)
    assert 3 < len(want) < len(per_class)  # agnostic suppression drops boxes per-class keeps
    got = as_list(found)
    assert [k for _, _, k in got] == [k for _, _, k in want]
    assert np.allclose([b for b, _, _ in got], [b for b, _, _ in want])


# Dense ---------------------------------------------------------------------------------------------


def slow_regions(mask: list[list[bool]], min_pixels: int) -> list[Box]:
    """Bounding boxes (far sides exclusive) of the 8-connected regions, by flood fill."""
    rows, cols = len(mask), len(mask[0])
    seen = [[False] * cols for _ in range(rows)]
    found = []
    for y in range(rows):
        for x in range(cols):
            if not mask[y][x] or seen[y][x]:
                continue
            stack, pixels = [(y, x)], []
            seen[y][x] = True
            while stack:
                cy, cx = stack.pop()
                pixels.append((cy, cx))
                for ny in range(cy - 1, cy + 2):
                    for nx in range(cx - 1, cx + 2):
                        if 0 <= ny < rows and 0 <= nx < cols and mask[ny][nx] and not seen[ny][nx]:
                            seen[ny][nx] = True
                            stack.append((ny, nx))
            if len(pixels) >= min_pixels:
                ys, xs = [p[0] for p in pixels], [p[1] for p in pixels]
                found.append((float(min(xs)), float(min(ys)), float(max(xs) + 1), float(max(ys) + 1)))
    return found


def test_mask_regions_match_a_flood_fill_reference() -> None:
    rng = np.random.default_rng(22)
    mask = rng.uniform(size=(23, 31)) > 0.62
    got = sorted(map(tuple, mask_regions(mask, 3).tolist()))
    want = sorted(slow_regions(mask.tolist(), 3))
    assert len(want) > 5
    assert got == want
    assert len(mask_regions(mask, 1)) > len(got)  # specks below min_pixels are dropped


def test_region_f1_of_hand_made_text_lines() -> None:
    ref = np.zeros((1, 1, 20, 30))
    ref[0, 0, 2:6, 2:20] = 0.9  # line A, 4x18
    ref[0, 0, 10:14, 4:26] = 0.9  # line B, 4x22
    ref[0, 0, 17, 28] = 0.9  # a 1-pixel speck: no region
    cand = ref.copy()
    cand[0, 0, 10:14, 4:26] = 0.2  # line B lost
    cand[0, 0, 2:6, 2:9] = 0.4  # line A shrunk to 4x11: IoU 11/18 >= 0.5, still matched
    cand[0, 0, 16:19, 0:3] = 0.8  # a new region of 9 pixels
    acc = MaskAgreement(OutputKind("dense", "test", channels=1))
    acc.update(ref, cand)
    result = acc.result()
    # reference: A, B; candidate: A', new; matched: A-A'
    assert result["region_precision"] == pytest.approx(1 / 2)
    assert result["region_recall"] == pytest.approx(1 / 2)
    assert result["region_f1"] == pytest.approx(2 * 1 / (2 + 2))
    strict = MaskAgreement(OutputKind("dense", "test", channels=1), TaskOptions(match_iou=0.7))
    strict.update(ref, cand)
    assert strict.result()["region_f1"] == 0.0  # 11/18 = 0.61 < 0.7
    low = MaskAgreement(OutputKind("dense", "test", channels=1), TaskOptions(mask_threshold=0.1))
    low.update(ref, cand)
    assert low.result()["region_f1"] == pytest.approx(2 * 2 / (2 + 3))  # B found again


def test_mask_iou_and_pixel_agreement_match_reference() -> None:
    rng = np.random.default_rng(12)
    ref = rng.uniform(size=(3, 1, 9, 7))
    cand = np.clip(ref + rng.normal(scale=0.2, size=ref.shape), 0, 1)
    acc = MaskAgreement(OutputKind("dense", "test", channels=1))
    acc.update(ref[:1], cand[:1])
    acc.update(ref[1:], cand[1:])
    inter = union = agree = pixels = 0
    for r, c in zip(ref.ravel().tolist(), cand.ravel().tolist()):
        in_r, in_c = r > 0.5, c > 0.5
        inter += in_r and in_c
        union += in_r or in_c
        agree += in_r == in_c
        pixels += 1
    result = acc.result()
    assert 0 < inter < union
    assert result["mask_iou"] == pytest.approx(inter / union)
    assert result["pixel_agreement"] == pytest.approx(agree / pixels)


def test_mask_iou_is_one_when_both_masks_are_empty() -> None:
    acc = MaskAgreement(OutputKind("dense", "test", channels=1))
    acc.update(np.full((2, 1, 4, 4), 0.1), np.full((2, 1, 4, 4), 0.4))
    assert acc.result()["mask_iou"] == 1.0 and acc.result()["pixel_agreement"] == 1.0
    acc.update(np.full((1, 1, 4, 4), 0.1), np.full((1, 1, 4, 4), 0.6))
    assert acc.result()["mask_iou"] == 0.0 and acc.result()["pixel_agreement"] == pytest.approx(2 / 3)


def test_argmax_agreement_and_mean_iou_match_reference() -> None:
    rng = np.random.default_rng(13)
    channels = 4
    ref = rng.normal(size=(2, channels, 6, 5))
    ref[:, 3] -= 10.0  # class 3 never wins on either side: left out of the mean
    cand = ref + rng.normal(scale=0.7, size=ref.shape)
    acc = DenseClassAgreement(OutputKind("dense", "test", channels=channels))
    acc.update(ref, cand)
    inter, union = [0] * channels, [0] * channels
    agree = pixels = 0
    for n in range(2):
        for y in range(6):
            for x in range(5):
                r = max(range(channels), key=lambda k: ref[n, k, y, x])
                c = max(range(channels), key=lambda k: cand[n, k, y, x])
                agree += r == c
                pixels += 1
                for k in range(channels):
                    inter[k] += r == k and c == k
                    union[k] += r == k or c == k
    present = [inter[k] / union[k] for k in range(channels) if union[k]]
    result = acc.result()
    assert len(present) == 3 and 0 < agree < pixels
    assert result["argmax_agreement"] == pytest.approx(agree / pixels)
    assert result["mean_iou"] == pytest.approx(math.fsum(present) / len(present))


# Generic -------------------------------------------------------------------------------------------


def test_channel_errors_show_the_small_channel_whole_tensor_error_hides() -> None:
    rng = np.random.default_rng(14)
    ref = rng.normal(size=(4, 3, 5))
    ref[:, 0] *= 1000.0
    ref[:, 1] *= 0.01
    cand = ref.copy()
    cand[:, 0] += rng.normal(scale=0.1, size=(4, 5))  # 1e-4 relative
    cand[:, 1] += rng.normal(scale=0.005, size=(4, 5))  # 0.5 relative
    cand[:, 2] += rng.normal(scale=0.01, size=(4, 5))
    acc = ChannelErrors(OutputKind("generic", "test"))
    acc.update(ref[:1], cand[:1])
    acc.update(ref[1:], cand[1:])
    per_channel = []
    for ch in range(3):
        err = math.fsum(
            (c - r) ** 2 for r, c in zip(ref[:, ch].ravel().tolist(), cand[:, ch].ravel().tolist())
        )
        energy = math.fsum(r * r for r in ref[:, ch].ravel().tolist())
        per_channel.append(math.sqrt(err) / math.sqrt(energy))
    whole = math.sqrt(math.fsum(((cand - ref) ** 2).ravel().tolist())) / math.sqrt(
        math.fsum((ref**2).ravel().tolist())
    )
    result = acc.result()
    assert whole < 1e-3 and per_channel[1] > 0.1
    assert result["channel_rel_l2_max"] == pytest.approx(per_channel[1])
    assert result["channel_rel_l2_worst_index"] == 1
    assert result["channel_rel_l2_mean"] == pytest.approx(math.fsum(per_channel) / 3)
    dot = math.fsum(r * c for r, c in zip(ref.ravel().tolist(), cand.ravel().tolist()))
    norms = math.sqrt(math.fsum((ref**2).ravel().tolist()) * math.fsum((cand**2).ravel().tolist()))
    assert result["cosine"] == pytest.approx(dot / norms)


def test_channel_errors_edge_cases() -> None:
    acc = ChannelErrors(OutputKind("generic", "test"))
    acc.update(np.array([0.0, 0.0, 2.0]), np.array([0.0, 0.0, 1.0]))  # rank 1: one channel
    assert acc.result()["channel_rel_l2_max"] == pytest.approx(0.5)
    zero = ChannelErrors(OutputKind("generic", "test"))
    zero.update(np.zeros((2, 2)), np.array([[0.0, 1.0], [0.0, 0.0]]))
    result = zero.result()
    assert result["channel_rel_l2_max"] == math.inf == relative_l2(1.0, 0.0)
    assert result["channel_rel_l2_worst_index"] == 1 and result["cosine"] == 0.0
    with pytest.raises(QuantbenchError, match="2 channels"):
        zero.update(np.zeros((2, 3)), np.zeros((2, 3)))


# Classes and the common interface --------------------------------------------------------------------


def test_class_agreement_top5_only_with_five_classes() -> None:
    two = ClassAgreement(OutputKind("classes", "test", classes=2))
    two.update(np.array([[0.2, 0.8], [0.6, 0.4], [0.9, 0.1]]), np.array([[0.3, 0.7], [0.4, 0.6], [0.8, 0.2]]))
    assert two.result() == {"top1_agreement": pytest.approx(2 / 3), "samples": 3}
    six = ClassAgreement(OutputKind("classes", "test", classes=6))
    ref = np.array([[6.0, 5, 4, 3, 2, 1]])
    six.update(ref, np.array([[1.0, 2, 3, 4, 5, 6]]))  # top-5 {0..4} vs {5..1}: 4 in common
    assert six.result()["top1_agreement"] == 0.0 and six.result()["top5_overlap"] == pytest.approx(4 / 5)


KINDS_AND_SHAPES = [
    (OutputKind("classes", "t", classes=7), (3, 7)),
    (OutputKind("detection", "t", classes=2, boxes_first_axis=True), (2, 6, 40)),
    (OutputKind("dense", "t", channels=3), (2, 3, 8, 8)),
    (OutputKind("dense", "t", channels=1), (2, 1, 8, 8)),
    (OutputKind("sequence", "t", classes=5), (2, 6, 5)),
    (OutputKind("generic", "t"), (2, 3, 4)),
]


@pytest.mark.parametrize(("kind", "shape"), KINDS_AND_SHAPES)
def test_every_accumulator_reports_its_headline_and_registered_keys(
    kind: OutputKind, shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(15)
    ref = rng.uniform(size=shape)
    if kind.kind == "detection":
        ref[:, :4] *= 100.0
    acc = accumulator_for(kind)
    acc.update(ref, ref)
    same = acc.result()
    assert acc.HEADLINE in same
    registered = {m.key for m in (*METRICS, *KIND_METRICS)}
    assert set(same) - {"samples"} <= registered
    computed = [key for key in same if key in KIND_RESULTS_ORDER]
    assert computed == [key for key in KIND_RESULTS_ORDER if key in computed]
    for key, value in same.items():  # the reference against itself has each metric's reference value
        if key != "samples" and metric_by_key(key).reference_value is not None:
            assert value == pytest.approx(metric_by_key(key).reference_value), key
    headline = metric_by_key(acc.HEADLINE)
    assert headline.higher_is_better == acc.HIGHER_IS_BETTER
    assert headline.applies(class_scores=kind.kind == "classes", labels=False, group=kind.metric_group)
    worse = accumulator_for(kind)
    worse.update(ref, ref[::-1] + (rng.permutation(ref.ravel()).reshape(shape) - 0.5) * 50.0)
    value = worse.result()[acc.HEADLINE]
    assert value < same[acc.HEADLINE] if acc.HIGHER_IS_BETTER else value > same[acc.HEADLINE]


def test_registry_keys_of_kinds_are_new_unique_and_ordered() -> None:
    old = [m.key for m in METRICS if m not in KIND_METRICS]
    new = [m.key for m in KIND_METRICS]
    assert len(set(old + new)) == len(old) + len(new) == len(METRICS)
    assert [m.key for m in METRICS[len(old) :]] == new  # the task metrics follow the general ones
    assert sorted(KIND_RESULTS_ORDER) == sorted(new)
    assert len({m.label for m in METRICS}) == len(METRICS)
    assert not metric_by_key("det_f1").applies(class_scores=True, labels=True)
    assert metric_by_key("mask_iou").applies(class_scores=False, labels=False, group="dense mask")
    assert not metric_by_key("mean_iou").applies(class_scores=False, labels=False, group="dense mask")


# Kind detection ------------------------------------------------------------------------------------


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def yolo_batch(
    classes: int, anchors: int, boxes_first: bool, scale: float = 300.0, extra: int = 0, shift: float = 0.0
) -> np.ndarray:
    """Two images of a YOLO head: boxes up to ``scale``, scores in [shift, 1 + shift]; ``extra``
    objectness rows."""
    rng = np.random.default_rng(16)
    boxes = rng.uniform(0, 1, (2, anchors, 4)) * scale
    scores = rng.uniform(0, 1, (2, anchors, classes + extra)) + shift
    batch = np.concatenate([boxes, scores], axis=2)
    return batch.transpose(0, 2, 1) if boxes_first else batch


RNG = np.random.default_rng(17)
DETECTED = [
    ("logits", RNG.normal(size=(2, 1000)), "classes", {"classes": 1000}),
    ("angle", softmax(RNG.normal(size=(2, 2))), "classes", {"classes": 2}),
    ("angle_log", np.log(softmax(RNG.normal(size=(2, 3)))), "classes", {"classes": 3}),
    ("pooled", softmax(RNG.normal(size=(2, 4))).reshape(2, 4, 1, 1), "classes", {"classes": 4}),
    ("output0", yolo_batch(18, 100, True), "detection", {"classes": 18, "boxes_first_axis": True}),
    ("v5", yolo_batch(3, 60, False, extra=1), "detection", {"classes": 3, "objectness": True}),
    ("ctc", softmax(RNG.normal(size=(2, 12, 37))), "sequence", {"classes": 37, "blank": 0}),
    ("ctc_logits", RNG.normal(size=(2, 8, 1200)), "sequence", {"classes": 1200}),
    ("db_map", RNG.uniform(size=(2, 1, 16, 16)), "dense", {"channels": 1}),
    ("seg", RNG.normal(size=(2, 5, 16, 16)), "dense", {"channels": 5}),
]


@pytest.mark.parametrize(("name", "sample", "kind", "layout"), DETECTED, ids=[d[0] for d in DETECTED])
def test_detect_kind(name: str, sample: np.ndarray, kind: str, layout: dict[str, object]) -> None:
    found = detect_kind(name, sample)
    assert found.kind == kind, found.reason
    for field, value in layout.items():
        assert getattr(found, field) == value, field
    assert found.reason.startswith(f"{name} [N, ") and "\n" not in found.reason


def test_detect_kind_reason_of_a_yolo_head() -> None:
    found = detect_kind("output0", yolo_batch(18, 2100, True))
    assert found.reason == "output0 [N, 22, 2100]: YOLO layout, 4 box rows + 18 class rows in [0, 1]"


GENERIC = [
    ("box", RNG.normal(size=(2, 4)), "not per-row probabilities"),
    ("one", RNG.normal(size=(2, 1)), "one column"),
    ("normalised", yolo_batch(3, 60, True, scale=1.0), "pixel scale"),
    ("yolo_logits", yolo_batch(3, 60, True, shift=-0.5), "class rows not within"),
    ("v8_logits", yolo_batch(80, 1200, True, shift=-0.5), "pixel boxes of a YOLO layout"),  # not CTC logits
    ("square", RNG.uniform(size=(2, 7, 9)) * 100, "much longer anchor axis"),
    ("few_logits", RNG.normal(size=(2, 8, 50)), "neither probabilities nor logits"),
    ("logit_map", RNG.normal(size=(2, 1, 8, 8)), "outside [0, 1]"),
    ("features", RNG.normal(size=(2, 64, 8, 8)), "feature map"),
    ("strip", RNG.normal(size=(2, 3, 1, 8)), "spatial side of 1"),
    ("flat", RNG.normal(size=(5,)), "rank 1"),
    ("deep", RNG.normal(size=(1, 2, 2, 2, 2)), "rank 5"),
    ("ids", np.arange(6).reshape(2, 3), "int64 values"),
    ("nan_probs", np.array([[0.5, np.nan], [0.5, 0.5]]), "not per-row probabilities"),
]


@pytest.mark.parametrize(("name", "sample", "words"), GENERIC, ids=[g[0] for g in GENERIC])
def test_ambiguous_or_other_outputs_are_generic_with_the_reason(
    name: str, sample: np.ndarray, words: str
) -> None:
    found = detect_kind(name, sample)
    assert found.kind == "generic"
    assert words in found.reason and found.reason.startswith(name) and "\n" not in found.reason


def test_ten_or_more_columns_are_classes_whatever_the_values() -> None:
    assert detect_kind("x", RNG.normal(size=(2, 10)) * 100).kind == "classes"
    assert detect_kind("x", RNG.normal(size=(2, 9)) * 100).kind == "generic"


# --task and stated kinds -----------------------------------------------------------------------------


def test_parse_task() -> None:
    outputs = ["boxes", "scores", "a=b"]
    assert parse_task([], outputs) == dict.fromkeys(outputs)
    assert parse_task(["Detection"], outputs) == dict.fromkeys(outputs, "detection")
    assert parse_task(["generic", "scores=classes", "a=b=auto"], outputs) == {
        "boxes": "generic",
        "scores": "classes",
        "a=b": None,
    }
    assert parse_task(["scores=dense", "scores=dense"], outputs)["scores"] == "dense"


@pytest.mark.parametrize(
    ("items", "words"),
    [
        (
            ["detector"],
            "unknown kind 'detector'; choose one of classes, detection, dense, sequence, generic, auto",
        ),
        (["logits=classes"], "no output 'logits'; its outputs: 'boxes', 'scores'"),
        (["=classes"], "expected KIND or OUTPUT=KIND"),
        (["scores=classes", "scores=dense"], "output 'scores' is already given the kind 'classes'"),
        (["dense", "generic"], "every output is already given the kind 'dense'"),
        (["scores=segments"], "unknown kind 'segments'"),
    ],
)
def test_parse_task_errors(items: list[str], words: str) -> None:
    with pytest.raises(QuantbenchError) as info:
        parse_task(items, ["boxes", "scores"])
    message = str(info.value)
    assert message.startswith("--task ") and words in message and "\n" not in message


def test_kind_for_honours_a_stated_kind_and_takes_the_layout_from_the_shape() -> None:
    logits = yolo_batch(3, 60, False, extra=1, shift=-0.5)  # class logits: detect_kind refuses them
    assert detect_kind("x", logits).kind == "generic"
    stated = kind_for("x", logits, "detection")
    assert (stated.kind, stated.classes, stated.boxes_first_axis, stated.objectness) == (
        "detection",
        3,
        False,
        True,
    )
    short = kind_for("x", RNG.normal(size=(2, 6, 10)), "detection")  # not 4x longer, still the longer axis
    assert (short.classes, short.boxes_first_axis, short.objectness) == (2, True, False)
    assert kind_for("x", RNG.normal(size=(2, 4)), "classes").classes == 4
    assert kind_for("x", RNG.normal(size=(2, 1, 8, 8)), "dense").channels == 1
    assert kind_for("x", RNG.normal(size=(2, 5, 2)), "sequence").classes == 2
    assert kind_for("x", RNG.normal(size=(2, 3)), "generic").kind == "generic"
    assert kind_for("x", softmax(RNG.normal(size=(2, 3))), None).kind == "classes"
    assert "stated" in stated.reason and stated.reason.startswith("x [N, 60, 8]")


@pytest.mark.parametrize(
    ("stated", "shape", "words"),
    [
        ("classes", (2, 3, 4), "[N, C] or [N, C, 1, 1] with C >= 2"),
        ("classes", (2, 1), "with C >= 2"),
        ("detection", (2, 9, 9), "[N, 4+K, A] or [N, A, 4+K]"),
        ("detection", (2, 4, 40), "with K >= 1"),
        ("dense", (2, 3, 1, 1), "[N, C, H, W] with H·W > 1"),
        ("sequence", (2, 12), "[N, T, C]"),
    ],
)
def test_kind_for_refuses_a_shape_that_cannot_be_the_stated_kind(
    stated: str, shape: tuple[int, ...], words: str
) -> None:
    with pytest.raises(QuantbenchError) as info:
        kind_for("out", np.zeros(shape), stated)
    message = str(info.value)
    assert (
        message.startswith(f"--task {stated} for output out [N, ")
        and words in message
        and "\n" not in message
    )


# Task options --------------------------------------------------------------------------------------


def test_task_options_parse() -> None:
    options = TaskOptions.parse(
        [
            "confidence=0.2",
            "NMS=agnostic",
            "match-iou=0.3",
            "max_detections=50",
            "mask-threshold=0.3",
            "min-region=9",
            "ctc-trim=6624, 7",
            "headline=region_f1",
            "ctc-blank=auto",
            "confidence=0.1",  # a later item wins
        ]
    )
    assert options == TaskOptions(
        confidence=0.1,
        class_agnostic=True,
        match_iou=0.3,
        max_detections=50,
        mask_threshold=0.3,
        min_region=9,
        ctc_trim=(6624, 7),
        headline="region_f1",
    )
    assert TaskOptions.parse(["nms=per-class"]).class_agnostic is False
    assert TaskOptions.parse([]) == TaskOptions()


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("confidence", "expected KEY=VALUE"),
        ("=0.2", "expected KEY=VALUE"),
        ("confidence=", "expected KEY=VALUE"),
        ("colour=red", "unknown key 'colour'; known keys: class-agnostic"),
        ("confidence=high", "'high' is not a number"),
        ("confidence=1.5", "confidence must be within [0, 1]"),
        ("max-detections=2.5", "'2.5' is not a whole number"),
        ("nms=sometimes", "not one of true, false"),
        ("ctc-trim=a,b", "'a' is not a whole number"),
        ("ctc-trim=-1", "ctc-trim classes must be >= 0"),
        ("min-region=0", "min-region must be at least 1"),
        ("headline=top1_accuracy", "headline 'top1_accuracy' is not a metric of an output's kind"),
        ("headline=nonsense", "choose one of"),
    ],
)
def test_task_options_parse_errors(item: str, words: str) -> None:
    with pytest.raises(QuantbenchError) as info:
        TaskOptions.parse([item])
    message = str(info.value)
    assert message.startswith("--task-option") and words in message and "\n" not in message


def test_a_chosen_headline_replaces_the_kind_s_for_outputs_that_have_it() -> None:
    options = TaskOptions(headline="seq_edit_distance")
    sequence = accumulator_for(OutputKind("sequence", "t", classes=4), options)
    assert (sequence.headline, sequence.higher_is_better) == ("seq_edit_distance", False)
    classes = accumulator_for(OutputKind("classes", "t", classes=10), options)
    assert (classes.headline, classes.higher_is_better) == ("top1_agreement", True)  # not a sequence
    mask = accumulator_for(OutputKind("dense", "t", channels=1), TaskOptions(headline="region_f1"))
    assert (mask.headline, mask.higher_is_better) == ("region_f1", True)
    Task(options=options).check_headline("rec", sequence)
    with pytest.raises(
        QuantbenchError, match=r"headline=seq_edit_distance: the main output 'out' is classes"
    ):
        Task(options=options).check_headline("out", classes)


def test_headline_of_a_model_follows_the_task() -> None:
    from quantbench.evaluation.headline import Headline

    rng = np.random.default_rng(23)
    outputs = {"boxes": rng.normal(size=(2, 7)), "map": rng.uniform(size=(2, 1, 16, 16))}
    plain = Headline.of(outputs)
    assert (plain.output, plain.metric) == ("map", "mask_iou")
    chosen = Headline.of(outputs, Task(options=TaskOptions(headline="region_f1", min_region=2)))
    assert (chosen.output, chosen.metric, chosen.higher_is_better) == ("map", "region_f1", True)
    ref = rng.uniform(size=(1, 1, 16, 16))
    assert chosen.score([ref], [ref]) == 1.0
    with pytest.raises(QuantbenchError, match="main output 'map' is dense"):
        Headline.of(outputs, Task(options=TaskOptions(headline="det_f1")))
