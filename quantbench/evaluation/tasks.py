"""Metrics by output kind, judging a candidate's outputs against FP32's as the reference.

One streaming accumulator per kind of :mod:`quantbench.evaluation.kinds`, all alike: build it from an
:class:`~quantbench.evaluation.kinds.OutputKind` (and :class:`TaskOptions`), call ``update(reference,
candidate)`` once per batch with FP32's output and the candidate's for the same inputs, then ``result()``.
Each declares ``HEADLINE``, the key of its headline metric, and ``HIGHER_IS_BETTER``:

* classes, :class:`ClassAgreement`: ``top1_agreement``; also ``top5_overlap`` (with C >= 5);
* detection, :class:`DetectionAgreement`: ``det_f1``; also ``det_precision``, ``det_recall``,
  ``det_map50``, ``det_mean_iou``, ``det_box_error``, ``det_score_error``, ``det_reference`` and
  ``det_candidate``;
* dense with C >= 2, :class:`DenseClassAgreement`: ``mean_iou``; also ``argmax_agreement``;
* dense with C = 1, :class:`MaskAgreement`: ``mask_iou``; also ``pixel_agreement``, ``region_precision``,
  ``region_recall`` and ``region_f1``;
* sequence, :class:`SequenceAgreement`: ``seq_agreement``; also ``seq_edit_distance``;
* generic, :class:`ChannelErrors`: ``channel_rel_l2_mean`` (lower is better); also ``cosine``,
  ``channel_rel_l2_max`` and ``channel_rel_l2_worst_index``.

Every result also has ``samples``, the batch entries seen. :func:`accumulator_for` picks the accumulator.
:class:`TaskOptions` (``--task-option``) holds the decoders' thresholds and may choose another of the
kind's metrics as the headline; :class:`Task` carries it with the ``--task`` items.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np

from quantbench.errors import QuantbenchError
from quantbench.evaluation.errors import relative_l2
from quantbench.evaluation.kinds import OutputKind
from quantbench.evaluation.metrics import TopKAgreement


@dataclass(frozen=True)
class TaskOptions:
    """Settings of the metrics by kind (``--task-option KEY=VALUE``, see :meth:`parse`).

    Attributes:
        confidence: detection: a decoded box is kept when its score is above this.
        nms_iou: detection: non-maximum suppression drops a box whose IoU with a higher-scored box of
            its class (of any class with ``class_agnostic``) is above this.
        class_agnostic: detection: non-maximum suppression across classes, as many YOLO pipelines do;
            matching stays per class.
        match_iou: detection and regions of probability maps: a candidate box matches a reference box
            (of its class) at an IoU of at least this.
        max_detections: detection: most boxes kept per image (the highest scored).
        mask_threshold: dense probability maps: a pixel is in the mask when its value is above this.
        min_region: dense probability maps: fewest pixels of a connected region of the mask for it to
            count as a region (text detectors drop specks).
        ctc_blank: sequence: the blank's class index; None takes the kind's (0 unless stated).
        ctc_trim: sequence: classes dropped from both ends of every decoded sequence before comparing
            (a recognizer's space class, whose leading and trailing copies a pipeline strips).
        headline: the metric of the main output the verdict is about, instead of its kind's headline:
            a key of :mod:`quantbench.evaluation.registry` of that kind with a reference value.
    """

    confidence: float = 0.25
    nms_iou: float = 0.45
    class_agnostic: bool = False
    match_iou: float = 0.5
    max_detections: int = 300
    mask_threshold: float = 0.5
    min_region: int = 4
    ctc_blank: int | None = None
    ctc_trim: tuple[int, ...] = ()
    headline: str | None = None

    def __post_init__(self) -> None:
        checks = [
            (0.0 <= self.confidence <= 1.0, f"confidence must be within [0, 1], got {self.confidence}"),
            (0.0 < self.nms_iou <= 1.0, f"nms-iou must be within (0, 1], got {self.nms_iou}"),
            (0.0 < self.match_iou <= 1.0, f"match-iou must be within (0, 1], got {self.match_iou}"),
            (self.max_detections >= 1, f"max-detections must be at least 1, got {self.max_detections}"),
            (self.min_region >= 1, f"min-region must be at least 1, got {self.min_region}"),
            (self.ctc_blank is None or self.ctc_blank >= 0, f"ctc-blank must be >= 0, got {self.ctc_blank}"),
            (all(c >= 0 for c in self.ctc_trim), f"ctc-trim classes must be >= 0, got {self.ctc_trim}"),
        ]
        if self.headline is not None and not headline_kinds(self.headline):
            choices = ", ".join(sorted({key for key, _ in _headline_choices()}))
            wrong = f"headline {self.headline!r} is not a metric of an output's kind; choose one of {choices}"
            checks.append((False, wrong))
        for ok, message in checks:
            if not ok:
                raise QuantbenchError(f"--task-option: {message}")

    @classmethod
    def parse(cls, items: Sequence[str]) -> TaskOptions:
        """Read ``--task-option KEY=VALUE`` items (repeatable; a later item wins).

        Keys are the attribute names with ``-`` for ``_``; ``nms`` takes ``per-class`` or ``agnostic``
        (``class_agnostic``); ``ctc-trim`` takes class indices separated by commas; ``headline`` a
        metric key; ``ctc-blank`` and ``headline`` take ``auto`` for the default.

        Raises:
            QuantbenchError: an item is not KEY=VALUE, the key is unknown, or the value does not fit it.
        """
        values: dict[str, Any] = {}
        for item in items:
            key, sep, text = item.partition("=")
            name = key.strip().lower().replace("-", "_")
            text = text.strip()
            if not sep or not name or not text:
                raise QuantbenchError(f"--task-option {item!r}: expected KEY=VALUE, e.g. confidence=0.2")
            if name == "nms":
                name, text = "class_agnostic", {"agnostic": "true", "per-class": "false"}.get(text, text)
            reader = _OPTION_READERS.get(name)
            if reader is None:
                known = ", ".join(sorted([*(k.replace("_", "-") for k in _OPTION_READERS), "nms"]))
                raise QuantbenchError(f"--task-option {item!r}: unknown key {key!r}; known keys: {known}")
            try:
                values[name] = reader(text)
            except ValueError as exc:
                raise QuantbenchError(f"--task-option {item!r}: {exc}") from None
        return cls(**values)


@dataclass(frozen=True)
class Task:
    """What a model's outputs hold and how they are judged.

    Attributes:
        kinds: ``--task`` items: ``KIND`` for every output or ``OUTPUT=KIND``
            (:func:`quantbench.evaluation.kinds.parse_task`); outputs not named have their kind detected.
        options: the metrics' settings (``--task-option``).
    """

    kinds: tuple[str, ...] = ()
    options: TaskOptions = field(default_factory=TaskOptions)

    @classmethod
    def parse(cls, kinds: Sequence[str] = (), options: Sequence[str] = ()) -> Task:
        """A task from the ``--task`` and ``--task-option`` items (the kinds are checked against the
        model's outputs later, by :func:`~quantbench.evaluation.kinds.parse_task`).

        Raises:
            QuantbenchError: a bad ``--task-option`` item (see :meth:`TaskOptions.parse`).
        """
        return cls(tuple(kinds), TaskOptions.parse(options))

    def check_headline(self, output: str, accumulator: TaskAccumulator) -> None:
        """Raise where ``options.headline`` was asked for but the main ``output`` (judged by
        ``accumulator``) has no such metric.

        Raises:
            QuantbenchError: naming the output, its kind and the headlines it can have.
        """
        chosen = self.options.headline
        if chosen is None or accumulator.headline == chosen:
            return
        group = accumulator.kind.metric_group
        choices = ", ".join(key for key, applies in _headline_choices() if applies == group)
        raise QuantbenchError(
            f"--task-option headline={chosen}: the main output {output!r} is {accumulator.kind.kind} "
            f"({group}), which has no such metric; choose one of {choices}"
        )


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def _switch(text: str) -> bool:
    known = {
        "true": True,
        "yes": True,
        "on": True,
        "1": True,
        "false": False,
        "no": False,
        "off": False,
        "0": False,
    }
    if text.lower() not in known:
        raise ValueError(f"{text!r} is not one of true, false (nms: agnostic, per-class)")
    return known[text.lower()]


def _indices(text: str) -> tuple[int, ...]:
    return tuple(_whole(part.strip()) for part in text.split(",") if part.strip())


def _or_auto(read: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda text: None if text.lower() == "auto" else read(text)


_OPTION_READERS: dict[str, Callable[[str], Any]] = {
    "confidence": _number,
    "nms_iou": _number,
    "class_agnostic": _switch,
    "match_iou": _number,
    "max_detections": _whole,
    "mask_threshold": _number,
    "min_region": _whole,
    "ctc_blank": _or_auto(_whole),
    "ctc_trim": _indices,
    "headline": _or_auto(str),
}


def _headline_choices() -> list[tuple[str, str]]:
    """(metric key, metric group) of every metric that can be a headline: the kind metrics and class-score
    metrics that have a reference value (counts and accuracy against labels cannot)."""
    from quantbench.evaluation.registry import METRICS

    return [
        (m.key, m.applies_to)
        for m in METRICS
        if m.reference_value is not None and m.applies_to not in ("every output", "labels")
    ]


def headline_kinds(key: str) -> list[str]:
    """The metric groups (:attr:`~quantbench.evaluation.kinds.OutputKind.metric_group`) whose outputs
    can have ``key`` as their headline; empty where no output can."""
    return [group for choice, group in _headline_choices() if choice == key]


def _pair(name: str, reference: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both batches as float64 arrays of the same shape."""
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    if r.shape != c.shape:
        raise QuantbenchError(
            f"output {name!r}: shape {c.shape} differs from the reference's {r.shape}; "
            "build both from the same model with the same batch size"
        )
    return r, c


def _no_data(name: str) -> QuantbenchError:
    return QuantbenchError(
        f"output {name!r}: nothing compared; call update with at least one non-empty batch"
    )


def _ratio(part: float, whole: float, empty: float) -> float:
    """part / whole, or ``empty`` when whole is zero."""
    return part / whole if whole else empty


class TaskAccumulator(ABC):
    """A streaming metric of one output by its kind (see the module docstring).

    Args:
        kind: what the output holds.
        options: the metrics' settings (defaults: :class:`TaskOptions`).
        name: the output's name, for messages.

    Attributes:
        HEADLINE: the key of the headline metric in :meth:`result`.
        HIGHER_IS_BETTER: whether a higher headline means closer to the reference.
    """

    HEADLINE: ClassVar[str]
    HIGHER_IS_BETTER: ClassVar[bool] = True

    def __init__(self, kind: OutputKind, options: TaskOptions | None = None, *, name: str = "output") -> None:
        self.kind = kind
        self.options = options or TaskOptions()
        self.name = name
        self.samples = 0

    @abstractmethod
    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Add one batch: the reference's output and the candidate's for the same inputs (same shapes).

        Raises:
            QuantbenchError: the shapes differ or do not fit the kind.
        """

    @abstractmethod
    def result(self) -> dict[str, float]:
        """The metrics over every batch seen.

        Raises:
            QuantbenchError: no batch with samples was given to :meth:`update`.
        """

    @property
    def headline(self) -> str:
        """The key of the headline metric: ``options.headline`` where outputs of this kind have it, else
        :attr:`HEADLINE`."""
        chosen = self.options.headline
        if chosen is not None and self.kind.metric_group in headline_kinds(chosen):
            return chosen
        return self.HEADLINE

    @property
    def higher_is_better(self) -> bool:
        """Whether a higher :attr:`headline` means closer to the reference."""
        if self.headline == self.HEADLINE:
            return self.HIGHER_IS_BETTER
        from quantbench.evaluation.registry import metric_by_key

        return metric_by_key(self.headline).higher_is_better

    def _bad_shape(self, shape: tuple[int, ...], expected: str) -> QuantbenchError:
        return QuantbenchError(f"output {self.name!r}: shape {shape} is not {expected}")


# --- classes ---------------------------------------------------------------------------------------


class ClassAgreement(TaskAccumulator):
    """Top-1 agreement and top-5 overlap of class scores (:class:`~.metrics.TopKAgreement`); the top-5
    overlap only with 5 classes or more."""

    HEADLINE = "top1_agreement"

    def __init__(self, kind: OutputKind, options: TaskOptions | None = None, *, name: str = "output") -> None:
        super().__init__(kind, options, name=name)
        self._agreement = TopKAgreement(name)
        self._classes = 0

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Add one batch of ``[N, C]`` or ``[N, C, 1, 1]`` scores."""
        r, c = _pair(self.name, reference, candidate)
        if r.size == 0:
            return
        self._agreement.update(r, c)
        self._classes = r.shape[1]
        self.samples += r.shape[0]

    def result(self) -> dict[str, float]:
        """``top1_agreement``, ``top5_overlap`` (with C >= 5) and ``samples``."""
        if not self.samples:
            raise _no_data(self.name)
        values = self._agreement.result()
        if self._classes < 5:
            del values["top5_overlap"]
        return values


# --- detection --------------------------------------------------------------------------------------


class Detections(NamedTuple):
    """The detections of one image.

    Attributes:
        boxes: ``[M, 4]`` corners x1, y1, x2, y2.
        scores: ``[M]`` scores.
        classes: ``[M]`` class indices.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` ``[M, 4]`` with every box of ``b`` ``[P, 4]`` (corners) as ``[M, P]``;
    0 where the union has no area."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(width, 0.0, None) * np.clip(height, 0.0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, *, agnostic: bool = False
) -> np.ndarray:
    """Greedy non-maximum suppression per class (across classes with ``agnostic``).

    Boxes are visited by descending score (ties: lower index first); a box is dropped when its IoU with
    a kept box of its class (of any class, with ``agnostic``) is above ``iou``.

    Returns:
        The indices kept, by descending score.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    groups = np.zeros(len(order), dtype=np.int64) if agnostic else np.asarray(classes)
    kept: list[int] = []
    for label in np.unique(groups):
        rest = order[groups[order] == label]
        while rest.size:
            kept.append(int(rest[0]))
            overlap = box_iou(boxes[rest[0]], boxes[rest[1:]])[0]
            rest = rest[1:][overlap <= iou]
    return order[np.isin(order, kept)]


def decode_yolo(output: np.ndarray, kind: OutputKind, options: TaskOptions | None = None) -> list[Detections]:
    """Detections of a YOLO head's batch, per image.

    Boxes cx, cy, w, h become corners; each anchor takes its best class, scored by that class's value
    (times objectness where the layout has it); boxes scored above ``options.confidence`` go through
    :func:`nms` (per class unless ``options.class_agnostic``), and the ``options.max_detections``
    highest scored are kept.

    Args:
        output: ``[N, 4+K, A]`` (``kind.boxes_first_axis``) or ``[N, A, 4+K]``; ``5+K`` with objectness.
        kind: the detection layout.
        options: thresholds (defaults: :class:`TaskOptions`).
    """
    options = options or TaskOptions()
    rows = np.asarray(output, dtype=np.float64)
    if not kind.boxes_first_axis:
        rows = np.swapaxes(rows, 1, 2)
    first = 5 if kind.objectness else 4
    cx, cy, w, h = (rows[:, i] for i in range(4))
    corners = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)  # [N, A, 4]
    best = np.argmax(rows[:, first:], axis=1)  # [N, A]
    scores = np.take_along_axis(rows[:, first:], best[:, None], axis=1)[:, 0]
    if kind.objectness:
        scores = scores * rows[:, 4]
    found = []
    for image in range(rows.shape[0]):
        keep = np.flatnonzero(scores[image] > options.confidence)
        boxes, score, label = corners[image, keep], scores[image, keep], best[image, keep]
        kept = nms(boxes, score, label, options.nms_iou, agnostic=options.class_agnostic)
        chosen = kept[: options.max_detections]
        found.append(Detections(boxes[chosen], score[chosen], label[chosen]))
    return found


class Match(NamedTuple):
    """Candidate detections of one image matched to reference detections.

    Attributes:
        pairs: ``[P, 2]`` (candidate index, reference index) of the matched pairs.
        hits: ``[M]`` whether each candidate detection matched.
        ious: ``[P]`` IoU of each pair.
    """

    pairs: np.ndarray
    hits: np.ndarray
    ious: np.ndarray


def match_detections(reference: Detections, candidate: Detections, iou: float) -> Match:
    """Greedy matching per class: candidate detections by descending score (ties: lower index first)
    each take the unmatched reference detection of their class with the highest IoU (ties: lower index),
    when that IoU is at least ``iou``."""
    hits = np.zeros(len(candidate.scores), dtype=bool)
    taken = np.zeros(len(reference.scores), dtype=bool)
    overlaps = box_iou(candidate.boxes, reference.boxes)
    same_class = candidate.classes[:, None] == reference.classes[None, :]
    pairs: list[tuple[int, int]] = []
    ious: list[float] = []
    for i in np.argsort(-candidate.scores, kind="stable"):
        row = np.where(same_class[i] & ~taken, overlaps[i], -1.0)
        if row.size == 0:
            continue
        j = int(np.argmax(row))
        if row[j] >= iou:
            hits[i], taken[j] = True, True
            pairs.append((int(i), j))
            ious.append(float(row[j]))
    return Match(np.array(pairs, dtype=np.int64).reshape(-1, 2), hits, np.array(ious, dtype=np.float64))


def average_precision(scores: np.ndarray, hits: np.ndarray, references: int) -> float:
    """All-point interpolated average precision of one class.

    Args:
        scores: the candidate detections' scores; ranked by descending score (ties: lower index first).
        hits: whether each matched a reference detection.
        references: the reference detections of the class.

    Returns:
        The area under the precision envelope over recall; 0.0 when there is no reference detection.
    """
    if references == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    true = np.cumsum(np.asarray(hits, dtype=np.float64)[order])
    recall = np.concatenate([[0.0], true / references, [1.0]])
    precision = np.concatenate([[0.0], true / np.arange(1, len(order) + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def _corner_error(candidate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per pair: the mean of the 4 absolute corner differences, x over the reference's width and
    y over its height."""
    size = np.stack([reference[:, 2] - reference[:, 0], reference[:, 3] - reference[:, 1]] * 2, axis=1)
    return np.mean(np.abs(candidate - reference) / size, axis=1)


class DetectionAgreement(TaskAccumulator):
    """Detections of a YOLO head judged against the reference's detections as ground truth.

    Both outputs are decoded by :func:`decode_yolo` and the candidate's matched to the reference's by
    :func:`match_detections` at ``options.match_iou``, image by image; counts add up over every image.
    """

    HEADLINE = "det_f1"

    def __init__(self, kind: OutputKind, options: TaskOptions | None = None, *, name: str = "output") -> None:
        super().__init__(kind, options, name=name)
        self._attributes = 4 + int(kind.objectness) + kind.classes
        self._references: dict[int, int] = {}
        self._scores: dict[int, list[np.ndarray]] = {}
        self._hits: dict[int, list[np.ndarray]] = {}
        self._ious: list[np.ndarray] = []
        self._box_errors: list[np.ndarray] = []
        self._score_errors: list[np.ndarray] = []

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Add one batch of ``[N, 4+K, A]`` or ``[N, A, 4+K]`` outputs, as the kind lays them out."""
        r, c = _pair(self.name, reference, candidate)
        axis = 1 if self.kind.boxes_first_axis else 2
        if r.ndim != 3 or r.shape[axis] != self._attributes:
            layout = f"[N, {self._attributes}, A]" if axis == 1 else f"[N, A, {self._attributes}]"
            raise self._bad_shape(r.shape, f"a detection head {layout}")
        if r.size == 0:
            return
        decoded = zip(decode_yolo(r, self.kind, self.options), decode_yolo(c, self.kind, self.options))
        for ref, cand in decoded:
            self._add_image(ref, cand)
        self.samples += r.shape[0]

    def _add_image(self, reference: Detections, candidate: Detections) -> None:
        match = match_detections(reference, candidate, self.options.match_iou)
        for label in np.unique(reference.classes):
            count = int(np.count_nonzero(reference.classes == label))
            self._references[int(label)] = self._references.get(int(label), 0) + count
        for label in np.unique(candidate.classes):
            mine = candidate.classes == label
            self._scores.setdefault(int(label), []).append(candidate.scores[mine])
            self._hits.setdefault(int(label), []).append(match.hits[mine])
        cand, ref = match.pairs[:, 0], match.pairs[:, 1]
        self._ious.append(match.ious)
        self._box_errors.append(_corner_error(candidate.boxes[cand], reference.boxes[ref]))
        self._score_errors.append(np.abs(candidate.scores[cand] - reference.scores[ref]))

    def _mean_ap(self) -> float:
        """Mean AP over the classes either side detected; 1.0 when neither detected anything."""
        labels = sorted(set(self._references) | set(self._scores))
        if not labels:
            return 1.0
        empty = np.zeros(0)
        per_class = [
            average_precision(
                np.concatenate(self._scores.get(label, [empty])),
                np.concatenate(self._hits.get(label, [empty])).astype(bool),
                self._references.get(label, 0),
            )
            for label in labels
        ]
        return float(np.mean(per_class))

    def result(self) -> dict[str, float]:
        """Detection agreement over every image.

        Returns:
            ``det_precision`` (matched / candidate detections), ``det_recall`` (matched / reference
            detections), ``det_f1`` (2 · matched / (candidate + reference)); each 1.0 when both sides
            have no detection, 0.0 when only the other side has none. ``det_map50``: mean over the
            classes either side detected of :func:`average_precision` (1.0 when neither detected
            anything). Over matched pairs (NaN without any): ``det_mean_iou``, ``det_box_error``
            (mean absolute corner difference, x over the reference box's width and y over its height)
            and ``det_score_error`` (mean absolute score difference). Counts ``det_reference``,
            ``det_candidate`` and ``samples``.
        """
        if not self.samples:
            raise _no_data(self.name)
        references = sum(self._references.values())
        candidates = sum(int(s.size) for parts in self._scores.values() for s in parts)
        ious = np.concatenate(self._ious)
        matched = ious.size
        both_empty = 1.0 if references == 0 and candidates == 0 else 0.0

        def mean(parts: list[np.ndarray]) -> float:
            return float(np.mean(np.concatenate(parts))) if matched else math.nan

        return {
            "det_precision": _ratio(matched, candidates, both_empty),
            "det_recall": _ratio(matched, references, both_empty),
            "det_f1": _ratio(2 * matched, candidates + references, 1.0),
            "det_map50": self._mean_ap(),
            "det_mean_iou": mean(self._ious),
            "det_box_error": mean(self._box_errors),
            "det_score_error": mean(self._score_errors),
            "det_reference": references,
            "det_candidate": candidates,
            "samples": self.samples,
        }


# --- dense -----------------------------------------------------------------------------------------


class DenseClassAgreement(TaskAccumulator):
    """Per-pixel class scores ``[N, C, H, W]`` (C >= 2): the class of a pixel is its argmax over C
    (ties: the lower class)."""

    HEADLINE = "mean_iou"

    def __init__(self, kind: OutputKind, options: TaskOptions | None = None, *, name: str = "output") -> None:
        super().__init__(kind, options, name=name)
        self._pixels = 0
        self._agree = 0
        self._inter = np.zeros(max(kind.channels, 0), dtype=np.int64)
        self._union = np.zeros(max(kind.channels, 0), dtype=np.int64)

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Add one batch of ``[N, C, H, W]`` scores, C as the kind says."""
        r, c = _pair(self.name, reference, candidate)
        if r.ndim != 4 or r.shape[1] != self.kind.channels:
            raise self._bad_shape(r.shape, f"[N, {self.kind.channels}, H, W]")
        if r.size == 0:
            return
        ref, cand = np.argmax(r, axis=1).ravel(), np.argmax(c, axis=1).ravel()
        same = ref == cand
        self._pixels += ref.size
        self._agree += int(np.count_nonzero(same))
        inter = np.bincount(ref[same], minlength=self.kind.channels)
        self._inter += inter
        self._union += (
            np.bincount(ref, minlength=self.kind.channels) + np.bincount(cand, minlength=self.kind.channels)
        ) - inter
        self.samples += r.shape[0]

    def result(self) -> dict[str, float]:
        """``argmax_agreement`` (fraction of pixels whose classes agree), ``mean_iou`` (mean over the
        classes present on either side of |ref ∩ cand| / |ref ∪ cand|, pixels summed over every image)
        and ``samples``."""
        if not self.samples:
            raise _no_data(self.name)
        present = self._union > 0
        return {
            "argmax_agreement": self._agree / self._pixels,
            "mean_iou": float(np.mean(self._inter[present] / self._union[present])),
            "samples": self.samples,
        }


def mask_regions(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """The bounding boxes ``[M, 4]`` (corners x1, y1, x2, y2, the far sides exclusive) of the 8-connected
    regions of a ``[H, W]`` boolean mask that have at least ``min_pixels`` pixels, in the order their
    first pixel comes in row-major order."""
    import cv2

    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    x, y, w, h, area = (stats[1:count, i].astype(np.float64) for i in range(5))
    keep = area >= min_pixels
    return np.stack([x, y, x + w, y + h], axis=1)[keep]


class MaskAgreement(TaskAccumulator):
    """A probability map ``[N, 1, H, W]``: the mask is the pixels above ``options.mask_threshold``.

    Besides the masks' pixels, their regions (text lines of a text detector, objects of a saliency map)
    are compared: each image's :func:`mask_regions` boxes of the candidate are matched to the
    reference's at ``options.match_iou``, larger regions first (:func:`match_detections`).
    """

    HEADLINE = "mask_iou"

    def __init__(self, kind: OutputKind, options: TaskOptions | None = None, *, name: str = "output") -> None:
        super().__init__(kind, options, name=name)
        self._pixels = 0
        self._agree = 0
        self._inter = 0
        self._union = 0
        self._regions = np.zeros(3, dtype=np.int64)  # matched, reference, candidate

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Add one batch of ``[N, 1, H, W]`` maps."""
        r, c = _pair(self.name, reference, candidate)
        if r.ndim != 4 or r.shape[1] != 1:
            raise self._bad_shape(r.shape, "[N, 1, H, W]")
        if r.size == 0:
            return
        ref, cand = r > self.options.mask_threshold, c > self.options.mask_threshold
        self._pixels += ref.size
        self._agree += int(np.count_nonzero(ref == cand))
        self._inter += int(np.count_nonzero(ref & cand))
        self._union += int(np.count_nonzero(ref | cand))
        for want, got in zip(ref[:, 0], cand[:, 0]):
            self._add_regions(want, got)
        self.samples += r.shape[0]

    def _add_regions(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        regions = [mask_regions(m, self.options.min_region) for m in (reference, candidate)]
        ref, cand = (
            Detections(b, (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), np.zeros(len(b))) for b in regions
        )
        matched = int(np.count_nonzero(match_detections(ref, cand, self.options.match_iou).hits))
        self._regions += [matched, len(ref.boxes), len(cand.boxes)]

    def result(self) -> dict[str, float]:
        """``mask_iou`` (|ref ∩ cand| / |ref ∪ cand| over every pixel of every image; 1.0 when both
        masks are empty), ``pixel_agreement`` (fraction of pixels on the same side); over the regions of
        every image, ``region_precision`` (matched / candidate regions), ``region_recall`` (matched /
        reference regions) and ``region_f1`` (2 · matched / (candidate + reference)), each 1.0 when
        neither side has a region and 0.0 when only the other side has none; ``samples``."""
        if not self.samples:
            raise _no_data(self.name)
        matched, references, candidates = (int(v) for v in self._regions)
        both_empty = 1.0 if references == 0 and candidates == 0 else 0.0
        return {
            "mask_iou": _ratio(self._inter, self._union, 1.0),
            "pixel_agreement": self._agree / self._pixels,
            "region_precision": _ratio(matched, candidates, both_empty),
            "region_recall": _ratio(matched, references, both_empty),
            "region_f1": _ratio(2 * matched, candidates + references, 1.0),
            "samples": self.samples,
        }


# --- sequence --------------------------------------------------------------------------------------


def ctc_greedy_decode(output: np.ndarray, blank: int = 0) -> list[list[int]]:
    """Greedy CTC decoding of ``[N, T, C]`` scores: the argmax class per step (ties: the lower class),
    repeats collapsed, blanks dropped; one list of class indices per sample."""
    best = np.argmax(np.asarray(output), axis=2)
    changed = np.ones_like(best, dtype=bool)
    changed[:, 1:] = best[:, 1:] != best[:, :-1]
    keep = changed & (best != blank)
    return [row[mask].tolist() for row, mask in zip(best, keep)]


def trim(sequence: list[int], classes: Sequence[int]) -> list[int]:
    """``sequence`` without the leading and trailing entries that are in ``classes``."""
    start, end = 0, len(sequence)
    while start < end and sequence[start] in classes:
        start += 1
    while end > start and sequence[end - 1] in classes:
        end -= 1
    return sequence[start:end]


def edit_distance(a: list[int], b: list[int]) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions turning ``a`` into ``b``."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


class SequenceAgreement(TaskAccumulator):
    """CTC recognizer outputs ``[N, T, C]`` compared by their greedy decodings (:func:`ctc_greedy_decode`),
    the classes of ``options.ctc_trim`` trimmed off both ends (:func:`trim`)."""

    HEADLINE = "seq_agreement"

    def __init__(self, kind: OutputKind, options: TaskOptions | None = None, *, name: str = "output") -> None:
        super().__init__(kind, options, name=name)
        chosen = self.options.ctc_blank
        self.blank = kind.blank if chosen is None else chosen
        self._exact = 0
        self._distance = 0.0

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Add one batch of ``[N, T, C]`` scores; C must exceed the blank's index."""
        r, c = _pair(self.name, reference, candidate)
        if r.ndim != 3 or r.shape[2] <= self.blank:
            raise self._bad_shape(r.shape, f"[N, T, C] with C > {self.blank}, the blank's index")
        if r.shape[0] == 0 or r.shape[1] == 0:
            return
        decoded = zip(ctc_greedy_decode(r, self.blank), ctc_greedy_decode(c, self.blank))
        for ref, cand in (
            (trim(a, self.options.ctc_trim), trim(b, self.options.ctc_trim)) for a, b in decoded
        ):
            self._exact += ref == cand
            self._distance += edit_distance(cand, ref) / max(len(ref), 1)
        self.samples += r.shape[0]

    def result(self) -> dict[str, float]:
        """``seq_agreement`` (fraction of samples decoded exactly as the reference), ``seq_edit_distance``
        (mean over samples of the edit distance over the reference's length, or over 1 when it is
        empty) and ``samples``."""
        if not self.samples:
            raise _no_data(self.name)
        return {
            "seq_agreement": self._exact / self.samples,
            "seq_edit_distance": self._distance / self.samples,
            "samples": self.samples,
        }


# --- generic ---------------------------------------------------------------------------------------


class ChannelErrors(TaskAccumulator):
    """Cosine similarity and relative L2 error per channel (axis 1; a rank-1 output is one channel).

    A channel's error is ||c - r|| / ||r|| over the batch and every other axis (:func:`relative_l2`:
    0.0 when both norms are zero, inf when only the reference's is), so that a channel of small values
    is not hidden by one of large values as it is in the whole-tensor error.
    """

    HEADLINE = "channel_rel_l2_mean"
    HIGHER_IS_BETTER = False

    def __init__(self, kind: OutputKind, options: TaskOptions | None = None, *, name: str = "output") -> None:
        super().__init__(kind, options, name=name)
        self._error: np.ndarray | None = None
        self._reference = np.zeros(0)
        self._sums = np.zeros(3)  # sum r², sum c², sum r·c

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Add one batch; the channel count must stay the same from batch to batch."""
        r, c = _pair(self.name, reference, candidate)
        if r.size == 0:
            return
        shape = (r.shape[0], r.shape[1], -1) if r.ndim >= 2 else (r.size, 1, 1)
        r, c = r.reshape(shape), c.reshape(shape)
        diff = c - r
        error, energy = np.sum(diff * diff, axis=(0, 2)), np.sum(r * r, axis=(0, 2))
        if self._error is None:
            self._error, self._reference = error, energy
        elif error.shape != self._error.shape:
            raise self._bad_shape(
                r.shape, f"an output of {self._error.size} channels like the batches before"
            )
        else:
            self._error, self._reference = self._error + error, self._reference + energy
        self._sums += [float(np.sum(r * r)), float(np.sum(c * c)), float(np.sum(r * c))]
        self.samples += shape[0]

    def _cosine(self) -> float:
        r2, c2, rc = self._sums
        if r2 == 0.0 and c2 == 0.0:
            return 1.0
        if r2 == 0.0 or c2 == 0.0:
            return 0.0
        return min(1.0, max(-1.0, rc / math.sqrt(r2) / math.sqrt(c2)))

    def result(self) -> dict[str, float]:
        """``cosine`` of the flattened outputs (1.0 when both are all-zero, 0.0 when only one is),
        ``channel_rel_l2_mean`` and ``channel_rel_l2_max`` over the channels, ``channel_rel_l2_worst_index``
        (the channel of the max, the lowest on ties) and ``samples``. NaN in the outputs gives NaN."""
        if self._error is None:
            raise _no_data(self.name)
        errors = np.array([relative_l2(e, r) for e, r in zip(self._error, self._reference)])
        worst = int(np.argmax(errors))  # NaN counts as the worst
        return {
            "cosine": self._cosine() if np.all(np.isfinite(self._sums)) else math.nan,
            "channel_rel_l2_mean": float(np.mean(errors)),
            "channel_rel_l2_max": float(errors[worst]),
            "channel_rel_l2_worst_index": worst,
            "samples": self.samples,
        }


_ACCUMULATORS: dict[str, type[TaskAccumulator]] = {
    "classes": ClassAgreement,
    "detection": DetectionAgreement,
    "sequence": SequenceAgreement,
    "generic": ChannelErrors,
}


def accumulator_for(
    kind: OutputKind, options: TaskOptions | None = None, *, name: str = "output"
) -> TaskAccumulator:
    """The accumulator of an output's kind (dense: :class:`MaskAgreement` for one channel, else
    :class:`DenseClassAgreement`).

    Args:
        kind: what the output holds.
        options: the metrics' settings (defaults: :class:`TaskOptions`).
        name: the output's name, for messages.
    """
    if kind.kind == "dense":
        chosen: type[TaskAccumulator] = MaskAgreement if kind.channels == 1 else DenseClassAgreement
    else:
        chosen = _ACCUMULATORS[kind.kind]
    return chosen(kind, options, name=name)
