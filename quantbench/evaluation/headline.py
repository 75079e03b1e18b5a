"""The headline of a model's outputs outside a run's comparison: which output and metric judge a model
against FP32 (the same rule as :func:`quantbench.evaluation.verdict.main_output`: the first output whose
kind is not generic, else the first), and that metric over a set of batches. Bias correction decides
with it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from quantbench.evaluation.kinds import OutputKind, kind_for, parse_task
from quantbench.evaluation.tasks import Task, TaskOptions, accumulator_for


@dataclass(frozen=True)
class Headline:
    """One output's headline metric.

    Attributes:
        output: the output judged.
        kind: what it holds.
        metric: the key of its kind's headline metric.
        higher_is_better: that metric's direction.
        options: the metrics' settings.
    """

    output: str
    kind: OutputKind
    metric: str
    higher_is_better: bool
    options: TaskOptions = field(default_factory=TaskOptions)

    @classmethod
    def of(cls, outputs: Mapping[str, np.ndarray], task: Task | None = None) -> Headline:
        """The headline of a model, from FP32's outputs on one batch and what the task says of them.

        Raises:
            QuantbenchError: a bad ``--task`` item, a stated kind the output's shape cannot be, or a
                ``--task-option headline`` the main output does not have.
        """
        task = task or Task()
        stated = parse_task(task.kinds, list(outputs))
        kinds = {name: kind_for(name, value, stated.get(name)) for name, value in outputs.items()}
        from quantbench.evaluation.verdict import main_output

        main = main_output({name: {"kind": kind.kind} for name, kind in kinds.items()}) or next(iter(kinds))
        accumulator = accumulator_for(kinds[main], task.options, name=main)
        task.check_headline(main, accumulator)
        return cls(main, kinds[main], accumulator.headline, accumulator.higher_is_better, task.options)

    def score(self, reference: Iterable[np.ndarray], candidate: Iterable[np.ndarray]) -> float:
        """The metric over batch pairs of the output: FP32's, the candidate's."""
        accumulator = accumulator_for(self.kind, self.options, name=self.output)
        for want, got in zip(reference, candidate, strict=True):
            accumulator.update(want, got)
        return float(accumulator.result()[self.metric])

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b`` (NaN is worse than any number)."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a > b if self.higher_is_better else a < b
