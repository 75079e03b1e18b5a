"""What an output holds, so that it can be judged by metrics of its kind.

An :class:`OutputKind` names one of five kinds and the layout the metrics of
:mod:`quantbench.evaluation.tasks` need:

* ``classes``: class scores ``[N, C]`` or ``[N, C, 1, 1]``;
* ``detection``: a YOLO head, ``[N, 4+K, A]`` (boxes first) or ``[N, A, 4+K]``, with an objectness
  column after the box (``5+K``) in the anchors-first layout of YOLOv5 and YOLOv7;
* ``dense``: per-pixel class scores ``[N, C, H, W]``, or a probability map with C = 1;
* ``sequence``: per-step class scores ``[N, T, C]`` of a CTC recognizer;
* ``generic``: anything else.

:func:`detect_kind` tells the kind from the FP32 values of one batch; :func:`parse_task` reads the
``--task`` option and :func:`kind_for` honours a kind the user stated, taking its layout from the shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from quantbench.errors import QuantbenchError

KindName = Literal["classes", "detection", "dense", "sequence", "generic"]

KINDS: tuple[KindName, ...] = ("classes", "detection", "dense", "sequence", "generic")
"""The kinds, in the order ``--task`` lists them."""

AUTO = "auto"
"""The ``--task`` value that asks for the kind to be told from the values (the default)."""

FEW_CLASSES = 10
"""Class-score outputs with fewer columns than this must hold per-row probabilities to count as classes;
with this many or more, any values do (raw logits)."""

ANCHOR_RATIO = 4
"""A detection head's anchor axis is at least this many times longer than its attribute axis."""

PIXEL_SCALE = 2.0
"""The largest box value of a detection head exceeds this (coordinates in pixels, not in [0, 1])."""

NEGATIVE_CENTRES = 0.01
"""Largest fraction of negative box centres a detection head may have (boxes reaching past the image)."""

LOGIT_CLASSES = 1000
"""Fewest classes for a sequence output of raw logits (other sequence outputs hold probabilities)."""

PIXELS_PER_CLASS = 16
"""A dense output with C >= 2 channels has at least this many pixels per channel (H·W >= 16·C); fewer
looks like a feature map rather than per-pixel class scores."""

UNIT_TOLERANCE = 1e-3
"""How far values may stray outside [0, 1] and still count as probabilities."""

SUM_TOLERANCE = 1e-2
"""How far a row of probabilities may sum from 1 (or a row of log-probabilities' log-sum-exp from 0)."""


@dataclass(frozen=True)
class OutputKind:
    """What one output holds and how it is laid out.

    Attributes:
        kind: ``classes``, ``detection``, ``dense``, ``sequence`` or ``generic``.
        reason: one line saying why, starting with the output's name and shape.
        classes: classes: C; detection: K, the class rows after the box (and objectness); sequence: C,
            the blank included; 0 for the other kinds.
        boxes_first_axis: detection: the attributes lie along axis 1 (``[N, 4+K, A]``, YOLOv8 and later)
            rather than along the last axis (``[N, A, 4+K]``).
        objectness: detection: an objectness row follows the 4 box rows (``5+K``); class scores are
            multiplied by it.
        channels: dense: C of ``[N, C, H, W]`` (1 for a probability map).
        blank: sequence: the CTC blank's class index.
    """

    kind: KindName
    reason: str
    classes: int = 0
    boxes_first_axis: bool = False
    objectness: bool = False
    channels: int = 0
    blank: int = 0

    @property
    def metric_group(self) -> str:
        """Which metrics the output has, as :class:`quantbench.evaluation.registry.Metric` ``applies_to``
        names them: ``class scores``, ``detection``, ``dense classes``, ``dense mask``, ``sequence`` or
        ``generic``."""
        if self.kind == "classes":
            return "class scores"
        if self.kind == "dense":
            return "dense mask" if self.channels == 1 else "dense classes"
        return self.kind


def shape_text(shape: Sequence[int]) -> str:
    """A batch's shape with its batch axis as N: (8, 22, 2100) -> ``[N, 22, 2100]``."""
    return "[" + ", ".join(["N", *(str(d) for d in shape[1:])]) + "]" if shape else "[]"


def _unit(values: np.ndarray) -> bool:
    """All values finite and within [0, 1] (give or take :data:`UNIT_TOLERANCE`)."""
    if values.size == 0 or not np.all(np.isfinite(values)):
        return False
    return float(values.min()) >= -UNIT_TOLERANCE and float(values.max()) <= 1.0 + UNIT_TOLERANCE


def distribution(values: np.ndarray) -> str | None:
    """Whether every row along the last axis is a probability distribution.

    Returns:
        ``"probabilities"`` (values in [0, 1] summing to 1), ``"log-probabilities"`` (values <= 0 whose
        exponentials sum to 1), or None.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or not np.all(np.isfinite(v)):
        return None
    if _unit(v) and np.all(np.abs(v.sum(axis=-1) - 1.0) <= SUM_TOLERANCE):
        return "probabilities"
    if float(v.max()) <= UNIT_TOLERANCE:
        top = v.max(axis=-1, keepdims=True)
        log_sum = np.log(np.exp(v - top).sum(axis=-1)) + top[..., 0]
        if np.all(np.abs(log_sum) <= SUM_TOLERANCE):
            return "log-probabilities"
    return None


def _generic(text: str, why: str) -> OutputKind:
    return OutputKind("generic", f"{text}: {why}; compared as generic")


def _classes(text: str, values: np.ndarray) -> OutputKind:
    """Kind of a ``[N, C]`` matrix (``[N, C, 1, 1]`` already flattened)."""
    count = values.shape[1]
    if count < 2:
        return _generic(text, "one column")
    if count >= FEW_CLASSES:
        return OutputKind("classes", f"{text}: {count} class scores per sample", classes=count)
    rows = distribution(values)
    if rows is None:
        return _generic(text, f"{count} columns that are not per-row probabilities (regression values?)")
    return OutputKind("classes", f"{text}: {count} class {rows} per sample", classes=count)


def _anchors_axis(shape: Sequence[int]) -> int | None:
    """The anchor axis (1 or 2) of a rank-3 shape that could be a detection head, else None."""
    for attributes, anchors in ((1, 2), (2, 1)):
        if shape[attributes] >= 5 and shape[anchors] >= ANCHOR_RATIO * shape[attributes]:
            return anchors
    return None


def _box_problem(boxes: np.ndarray) -> str | None:
    """Why ``[N, 4, A]`` box rows (cx, cy, w, h) are not pixel boxes, or None when they are."""
    if not np.all(np.isfinite(boxes)):
        return "non-finite box values"
    if float(boxes[:, 2:].min()) < -UNIT_TOLERANCE:
        return "negative box sizes"
    if float(np.mean(boxes[:, :2] < 0)) > NEGATIVE_CENTRES:
        return "negative box centres"
    if float(boxes.max()) <= PIXEL_SCALE:
        return "box values not on a pixel scale"
    return None


def _detection(text: str, values: np.ndarray, stated: bool = False) -> OutputKind | str:
    """Kind of a rank-3 batch read as a YOLO head, or why it is not one.

    The attribute axis is the shorter one; with the attributes on the last axis (YOLOv5/v7 export) and
    at least 6 of them, column 4 is objectness. Values are checked unless ``stated``.
    """
    shape = values.shape
    anchors = _anchors_axis(shape)
    if anchors is None and stated and shape[1] != shape[2] and min(shape[1:]) >= 5:
        anchors = 2 if shape[1] < shape[2] else 1
    if anchors is None:
        return "no attribute axis of 4+K with a much longer anchor axis"
    boxes_first = anchors == 2
    rows = values if boxes_first else np.swapaxes(values, 1, 2)
    objectness = not boxes_first and rows.shape[1] >= 6
    classes = rows.shape[1] - 4 - int(objectness)
    what = "row" if boxes_first else "column"
    parts = [f"4 box {what}s", *(["objectness"] if objectness else []), f"{classes} class {what}"]
    parts[-1] += "" if classes == 1 else "s"
    layout = "YOLO layout" if boxes_first else "YOLO layout, anchors first"
    if not stated:
        problem = _box_problem(rows[:, :4])
        if problem is None and not _unit(rows[:, 4:]):
            problem = f"{'objectness and ' if objectness else ''}class {what}s not within [0, 1]"
        if problem is not None:
            return problem
    said = "stated detection, " if stated else ""
    reason = f"{text}: {said}{layout}, {' + '.join(parts)}" + ("" if stated else " in [0, 1]")
    return OutputKind(
        "detection", reason, classes=classes, boxes_first_axis=boxes_first, objectness=objectness
    )


def _sequence(text: str, values: np.ndarray) -> OutputKind | str:
    """Kind of a rank-3 batch read as ``[N, T, C]`` per-step class scores, or why it is not one."""
    steps, count = values.shape[1], values.shape[2]
    if steps < 2 or count < 3:
        return "not [N, T, C] with T > 1 and C >= 3"
    rows = distribution(values)
    if rows is None and count >= LOGIT_CLASSES and count > steps and np.all(np.isfinite(values)):
        rows = "logits" if float(values.min()) < 0 else None
    if rows is None:
        return f"steps are neither probabilities nor logits over >= {LOGIT_CLASSES} classes"
    reason = f"{text}: {steps} steps of {count}-class {rows}, CTC blank 0"
    return OutputKind("sequence", reason, classes=count, blank=0)


def _dense(text: str, values: np.ndarray) -> OutputKind:
    """Kind of a rank-4 batch ``[N, C, H, W]`` that is not ``[N, C, 1, 1]``."""
    count, height, width = values.shape[1:]
    if height < 2 or width < 2:
        return _generic(text, "a map with a spatial side of 1")
    if count == 1:
        if _unit(values):
            return OutputKind("dense", f"{text}: probability map in [0, 1]", channels=1)
        return _generic(text, "a one-channel map with values outside [0, 1]")
    if height * width < PIXELS_PER_CLASS * count:
        return _generic(text, f"{count} channels on {height}×{width} pixels: a feature map, not classes")
    return OutputKind("dense", f"{text}: {count} class scores per pixel", channels=count)


def detect_kind(name: str, sample: np.ndarray) -> OutputKind:
    """Tell an output's kind from its FP32 values on one batch (the batch axis included).

    Rules, in order:

    * not floating point, empty or a scalar: generic;
    * ``[N, C]`` or ``[N, C, 1, 1]``: classes when C >= :data:`FEW_CLASSES`, or 2 <= C with every row a
      probability (or log-probability) distribution; else generic;
    * rank 3: detection when one of the last two axes has 4+K entries (K >= 1) and the other at least
      :data:`ANCHOR_RATIO` times as many, the box rows on a pixel scale (w, h >= 0, at most
      :data:`NEGATIVE_CENTRES` of the centres negative) and the class (and objectness) rows within
      [0, 1]; objectness only with the attributes on the last axis and at least 6 of them (YOLOv5/v7).
      Pixel boxes with other scores are generic. Else sequence when ``[N, T, C]`` with T > 1, C >= 3 and
      every step a distribution over C, or raw logits (some negative) with C >= :data:`LOGIT_CLASSES`
      and C > T;
    * rank 4 ``[N, C, H, W]`` with H, W > 1: dense when C = 1 and the values lie in [0, 1], or C >= 2
      and H·W >= :data:`PIXELS_PER_CLASS` · C;
    * anything else, or a rule's shape without its values: generic, the reason saying what failed.

    Args:
        name: the output's name, for the reason.
        sample: its FP32 values on one batch.
    """
    values = np.asarray(sample)
    text = f"{name} {shape_text(values.shape)}"
    if values.ndim == 0 or values.size == 0:
        return _generic(text, "scalar or empty")
    if not np.issubdtype(values.dtype, np.floating):
        return _generic(text, f"{values.dtype} values, not scores")
    if values.ndim == 4 and values.shape[2:] == (1, 1):
        values = values.reshape(values.shape[:2])
    if values.ndim == 2:
        return _classes(text, values)
    if values.ndim == 4:
        return _dense(text, values)
    if values.ndim != 3:
        return _generic(text, f"rank {values.ndim}")
    found = _detection(text, values)
    if isinstance(found, OutputKind):
        return found
    if found.startswith(("class", "objectness")):  # pixel boxes: not a sequence of logits either
        return _generic(text, f"pixel boxes of a YOLO layout, but {found} (raw logits?)")
    sequence = _sequence(text, values)
    if isinstance(sequence, OutputKind):
        return sequence
    return _generic(text, f"not detection ({found}), not a sequence ({sequence})")


def parse_task(items: Sequence[str], outputs: Sequence[str]) -> dict[str, str | None]:
    """Read the ``--task`` option: ``KIND`` for every output or ``OUTPUT=KIND`` for one (repeatable).

    ``OUTPUT=KIND`` overrides ``KIND`` for that output; the kind ``auto`` asks for :func:`detect_kind`.
    Kinds are case-insensitive; an output name may itself contain ``=`` (the last one splits).

    Args:
        items: the option's values, in the order given.
        outputs: the model's output names.

    Returns:
        Every output name -> the stated kind, or None where the kind is to be told from the values.

    Raises:
        QuantbenchError: an item is empty or names no output, a kind or output is unknown, or two items
            state different kinds for the same output (or for every output).
    """
    choices = ", ".join([*KINDS, AUTO])
    every: str | None = None
    chosen: dict[str, str] = {}
    for item in items:
        name, sep, text = item.rpartition("=")
        kind = text.strip().lower()
        if kind not in (*KINDS, AUTO):
            raise QuantbenchError(f"--task {item!r}: unknown kind {text!r}; choose one of {choices}")
        if sep and not name:
            raise QuantbenchError(f"--task {item!r}: expected KIND or OUTPUT=KIND, with an output name")
        if sep and name not in outputs:
            known = ", ".join(repr(o) for o in outputs)
            raise QuantbenchError(f"--task {item!r}: the model has no output {name!r}; its outputs: {known}")
        previous = chosen.get(name) if sep else every
        if previous is not None and previous != kind:
            what = f"output {name!r}" if sep else "every output"
            raise QuantbenchError(f"--task {item!r}: {what} is already given the kind {previous!r}")
        if sep:
            chosen[name] = kind
        else:
            every = kind
    stated = {name: chosen.get(name, every) for name in outputs}
    return {name: None if kind in (None, AUTO) else kind for name, kind in stated.items()}


_SHAPES = {
    "classes": "[N, C] or [N, C, 1, 1] with C >= 2",
    "detection": "[N, 4+K, A] or [N, A, 4+K] with K >= 1 and A > 4+K",
    "dense": "[N, C, H, W] with H·W > 1",
    "sequence": "[N, T, C] with C >= 2",
    "generic": "an array with a batch axis",
}


def kind_for(name: str, sample: np.ndarray, stated: str | None) -> OutputKind:
    """The kind of an output: ``stated`` with its layout taken from the shape, or :func:`detect_kind`'s.

    A stated kind's values are not checked; its layout comes from the shape alone (for detection, the
    shorter of the last two axes holds the attributes, and objectness as :func:`detect_kind` reads it).

    Args:
        name: the output's name.
        sample: its FP32 values on one batch (the batch axis included).
        stated: a kind from :func:`parse_task`, or None.

    Raises:
        QuantbenchError: ``stated`` is not a kind, or the shape cannot be that kind.
    """
    if stated is None:
        return detect_kind(name, sample)
    if stated not in KINDS:
        raise QuantbenchError(f"--task: unknown kind {stated!r}; choose one of {', '.join(KINDS)}")
    values = np.asarray(sample)
    shape = values.shape
    text = f"{name} {shape_text(shape)}"
    reason = f"{text}: stated {stated}"
    found: OutputKind | None = None
    if stated == "generic" and values.ndim >= 1:
        found = OutputKind("generic", reason)
    elif stated == "classes" and (values.ndim == 2 or (values.ndim == 4 and shape[2:] == (1, 1))):
        found = OutputKind("classes", reason, classes=shape[1]) if shape[1] >= 2 else None
    elif stated == "detection" and values.ndim == 3:
        detection = _detection(text, values, stated=True)
        found = detection if isinstance(detection, OutputKind) else None
    elif stated == "dense" and values.ndim == 4 and shape[2] * shape[3] > 1:
        found = OutputKind("dense", reason, channels=shape[1])
    elif stated == "sequence" and values.ndim == 3 and shape[2] >= 2:
        found = OutputKind("sequence", reason, classes=shape[2], blank=0)
    if found is None:
        raise QuantbenchError(f"--task {stated} for output {text}: the shape is not {_SHAPES[stated]}")
    return found
