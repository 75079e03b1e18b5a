"""Compare variants with FP32 on held-out data: per-output errors, class agreement, accuracy, latency."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.errors import QuantbenchError
from quantbench.evaluation.kinds import OutputKind, kind_for, parse_task
from quantbench.evaluation.metrics import (
    Accuracy,
    OutputErrors,
    TopKAgreement,
    is_class_scores,
    label_for,
    measure_latency,
)
from quantbench.evaluation.plugins import MetricPlugin, PluginAccumulator, load_metrics
from quantbench.evaluation.tasks import Task, TaskAccumulator, TaskOptions, accumulator_for
from quantbench.evaluation.verdict import main_output
from quantbench.progress import Progress, QuietProgress

if TYPE_CHECKING:
    from quantbench.backends.base import Runner
    from quantbench.config import BenchSpec
    from quantbench.data.loader import Batch, BatchStream

REFERENCE = "fp32"


@dataclass
class Comparison:
    """Everything measured on the held-out data.

    Attributes:
        outputs: output name -> {"shape": per-sample shape, "class_scores": bool, "kind": what it holds
            (:mod:`quantbench.evaluation.kinds`), "kind_reason": why, in one line, "headline": the key of
            its kind's headline metric, "higher_is_better": that metric's direction}, in model order;
            then one pseudo-output ``metric:<name>`` per metric of your own, of kind ``plugin``, with its
            ``reference`` (FP32's value) too (:mod:`quantbench.evaluation.plugins`).
        metrics: variant -> output -> metric -> value (FP32 has accuracy only, when labels are given,
            and no scores of your own metrics).
        latency: variant -> one ``LatencyStats.to_dict()`` per bench batch size.
        representative: variant -> False where the latency is not representative of the target.
        flavour: variant -> output -> how far the timed runner's outputs are from the judged runner's
            (``OutputErrors`` figures), for variants judged on a reference runner of their own.
        samples: held-out samples evaluated.
        names: their file names, in order.
        skipped: (file, reason) of the held-out files left out.
        shapes: the sample shapes seen per input (``LoadReport.shapes_seen``).
    """

    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    latency: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    representative: dict[str, bool] = field(default_factory=dict)
    flavour: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    samples: int = 0
    names: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    shapes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Judging:
    """How outputs are judged.

    Attributes:
        labels: image name -> class index, for top-1/top-5 accuracy.
        task: what the outputs hold (outputs not named have their kind detected, see
            :func:`quantbench.evaluation.kinds.kind_for`) and the metrics' settings by kind.
        metrics: ``--metric`` items, metrics of your own: ``path/to/file.py:function`` or the name of a
            ``quantbench.metrics`` entry point (:mod:`quantbench.evaluation.plugins`); each variant but
            FP32 is scored by each of them on every batch.
    """

    labels: dict[str, int] | None = None
    task: Task = field(default_factory=Task)
    metrics: tuple[str, ...] = ()


def stack_feeds(feeds: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """Inputs for a batch of ``batch`` samples, repeating the given samples as often as needed."""
    out = {}
    for name, value in feeds.items():
        reps = -(-batch // value.shape[0])
        out[name] = np.ascontiguousarray(np.concatenate([value] * reps)[:batch])
    return out


def _accuracy_labels(label_map: dict[str, int] | None, batch: Batch) -> list[int | None] | None:
    if label_map is None:
        return None
    return [label_for(label_map, name) for name in batch.names]


class _Accumulators:
    """The running metrics of every (variant, output) pair."""

    def __init__(self) -> None:
        self.errors: dict[tuple[str, str], OutputErrors] = {}
        self.agreement: dict[tuple[str, str], TopKAgreement] = {}
        self.accuracy: dict[tuple[str, str], Accuracy] = {}
        self.flavour: dict[str, dict[str, OutputErrors]] = {}
        self.tasks: dict[tuple[str, str], TaskAccumulator] = {}
        self.kinds: dict[str, OutputKind] = {}
        self.options: TaskOptions | None = None
        self.plugins: list[MetricPlugin] = []
        self.scores: dict[tuple[str, str], PluginAccumulator] = {}

    def add_flavour(
        self, name: str, judged: Mapping[str, np.ndarray], timed: Mapping[str, np.ndarray]
    ) -> None:
        """Add one batch of a variant's timed outputs against its judged ones."""
        errors = self.flavour.setdefault(name, {})
        for out_name, value in judged.items():
            if out_name in timed:
                errors.setdefault(out_name, OutputErrors(out_name, f"{name} (timed)")).update(
                    value, timed[out_name]
                )

    def update(
        self, key: tuple[str, str], pair: tuple[np.ndarray, np.ndarray], scores: bool, labels: Any
    ) -> None:
        """Add one batch of ``key``'s output (reference, variant); class metrics where ``scores``."""
        name, out_name = key
        ref, got = pair
        if name != REFERENCE:
            self.errors.setdefault(key, OutputErrors(out_name, name)).update(ref, got)
            if key not in self.tasks:
                self.tasks[key] = accumulator_for(self.kinds[out_name], self.options, name=out_name)
            self.tasks[key].update(ref, got)
        if not scores:
            return
        if name != REFERENCE:
            self.agreement.setdefault(key, TopKAgreement(out_name, name)).update(ref, got)
        if labels is not None:
            self.accuracy.setdefault(key, Accuracy(out_name, name)).update(got, labels)

    def add_scores(
        self, name: str, pair: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], names: list[str]
    ) -> None:
        """Score one batch of variant ``name`` (FP32's outputs, its own) with every metric of your own."""
        if name == REFERENCE:
            return
        for plugin in self.plugins:
            key = (name, plugin.output)
            self.scores.setdefault(key, PluginAccumulator(plugin)).update(*pair, names)

    def results(self, key: tuple[str, str]) -> dict[str, float]:
        """Every metric of ``key`` so far."""
        scores = self.scores.get(key)
        if scores is not None:
            return scores.result()
        values: dict[str, float] = {}
        for table in (self.errors, self.agreement, self.accuracy):
            acc = table.get(key)
            if acc is not None:
                values.update(acc.result())
        task = self.tasks.get(key)
        if task is not None:  # the figures by kind, where the general ones have not given them already
            values.update({k: v for k, v in task.result().items() if k not in values})
        return values


def compare_variants(
    runners: dict[str, Runner],
    batches: BatchStream | Iterable[Batch],
    bench: BenchSpec,
    *,
    references: Mapping[str, Runner] | None = None,
    judging: Judging = Judging(),
    fixed_batch: int | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """Run every variant on the same batches, compare with ``runners["fp32"]``, then time each one.

    Args:
        runners: variant name -> runner; must include ``fp32``, the reference. These are timed, and
            judged unless ``references`` has another runner for the variant.
        references: variant name -> the runner its fidelity is judged on, where that is not the timed
            runner (see :meth:`quantbench.backends.base.Backend.reference`); the timed runner then runs
            the held-out batches too, and its distance from the judged outputs is recorded.
        batches: held-out batches (a ``BatchStream``'s report gives the skipped files).
        bench: the batch sizes to time (replaced by ``fixed_batch`` where the model fixes it), and the
            runs and seconds each timing repeats until both are reached.
        judging: labels, stated kinds of outputs and the metrics' settings (:class:`Judging`).
        fixed_batch: the model's fixed batch dimension, if any.
        progress: receives one unit per evaluated sample, then per timing.

    Raises:
        QuantbenchError: no held-out sample could be used, a variant's outputs do not match FP32's, or a
            metric of your own cannot be loaded or returns what is not a score.
    """
    if REFERENCE not in runners:
        raise QuantbenchError("the comparison needs the fp32 variant as its reference")
    progress = progress or QuietProgress()
    result = Comparison()
    accumulators = _Accumulators()
    accumulators.options = judging.task.options
    accumulators.plugins = load_metrics(judging.metrics)
    progress.start("evaluating", getattr(batches, "total", None))
    try:
        judged = {name: (runner, (references or {}).get(name)) for name, runner in runners.items()}
        first_feeds = _evaluate(judged, batches, judging, (result, accumulators), progress)
    finally:
        progress.finish()
    report = getattr(batches, "report", None)
    if report is not None:
        result.skipped = list(report.skipped)
        result.shapes = report.shapes_seen()
    if first_feeds is None:
        raise QuantbenchError("no held-out sample could be evaluated")
    for name in runners:
        result.metrics[name] = {out: accumulators.results((name, out)) for out in result.outputs}
        if name in accumulators.flavour:
            result.flavour[name] = {out: acc.result() for out, acc in accumulators.flavour[name].items()}
    sizes = [fixed_batch] if fixed_batch else list(dict.fromkeys(bench.batch))
    progress.start("timing", len(runners) * len(sizes))
    try:
        _time(runners, first_feeds, sizes, bench, (result, progress))
    finally:
        progress.finish()
    return result


def _evaluate(
    runners: dict[str, tuple[Runner, Runner | None]],
    batches: Iterable[Batch],
    judging: Judging,
    into: tuple[Comparison, _Accumulators],
    progress: Progress,
) -> dict[str, np.ndarray] | None:
    """Run every batch through every variant into the accumulators; returns the first batch's inputs.

    ``runners`` maps a variant to (its timed runner, the runner it is judged on or None for the same).
    """
    result, accumulators = into
    first_feeds: dict[str, np.ndarray] | None = None
    for batch in batches:
        if first_feeds is None:
            first_feeds = batch.inputs
        reference = _judged(runners[REFERENCE]).judge(batch.inputs)
        labels = _accuracy_labels(judging.labels, batch)
        if not result.outputs:
            _describe_outputs(reference, judging.task, (result, accumulators))
        for name, pair in runners.items():
            outputs = reference if name == REFERENCE else _judged(pair).judge(batch.inputs)
            if pair[1] is not None:
                accumulators.add_flavour(name, outputs, pair[0].judge(batch.inputs))
            for out_name, ref in reference.items():
                if out_name not in outputs:
                    raise QuantbenchError(f"variant {name} has no output {out_name!r}")
                scores = result.outputs[out_name]["class_scores"]
                accumulators.update((name, out_name), (ref, outputs[out_name]), scores, labels)
            accumulators.add_scores(name, (reference, outputs), batch.names)
        result.samples += len(batch.names)
        result.names.extend(batch.names)
        progress.advance(len(batch.names))
    return first_feeds


def _describe_outputs(
    reference: Mapping[str, np.ndarray], task: Task, into: tuple[Comparison, _Accumulators]
) -> None:
    """Each output's shape and kind, from FP32's values on the first batch and the ``--task`` items; then
    the pseudo-output of each metric of your own.

    Raises:
        QuantbenchError: a ``--task-option headline`` the main output does not have.
    """
    result, accumulators = into
    stated = parse_task(task.kinds, list(reference))
    chosen: dict[str, TaskAccumulator] = {}
    for out_name, value in reference.items():
        kind = kind_for(out_name, value, stated.get(out_name))
        accumulators.kinds[out_name] = kind
        chosen[out_name] = accumulator_for(kind, task.options, name=out_name)
        result.outputs[out_name] = {
            "shape": list(value.shape[1:]),
            "class_scores": is_class_scores(value.shape),
            "kind": kind.kind,
            "kind_reason": kind.reason,
            "headline": chosen[out_name].headline,
            "higher_is_better": chosen[out_name].higher_is_better,
        }
    main = main_output(result.outputs)
    if main is not None:
        task.check_headline(main, chosen[main])
    for plugin in accumulators.plugins:
        if plugin.output in result.outputs:
            raise QuantbenchError(f"--metric {plugin.spec!r}: the model has an output {plugin.output!r} too")
        result.outputs[plugin.output] = plugin.describe()


def _judged(pair: tuple[Runner, Runner | None]) -> Runner:
    return pair[1] if pair[1] is not None else pair[0]


def _time(
    runners: dict[str, Runner],
    first_feeds: dict[str, np.ndarray],
    sizes: Sequence[int],
    bench: BenchSpec,
    into: tuple[Comparison, Progress],
) -> None:
    """Time every runner at every batch size on the first held-out samples, repeated to fill a batch; a
    runner that stands in for what could not run here (``timed`` False) is not timed and has no latency."""
    result, progress = into
    for name, runner in runners.items():
        result.representative[name] = bool(getattr(runner, "representative", True))
        result.latency[name] = []
        if not getattr(runner, "timed", True):
            result.representative[name] = False
            progress.advance(len(sizes))
            continue
        for size in sizes:
            feeds = stack_feeds(first_feeds, size)
            stats = measure_latency(
                lambda r=runner, f=feeds: r.run(f),  # type: ignore[misc]
                batch=size,
                min_runs=bench.runs,
                min_seconds=bench.seconds,
            )
            result.latency[name].append(stats.to_dict())
            progress.advance()
