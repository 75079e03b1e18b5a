"""Compare variants with FP32 on held-out data: per-output errors, class agreement, accuracy, latency."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.errors import QuantbenchError
from quantbench.evaluation.metrics import (
    Accuracy,
    OutputErrors,
    TopKAgreement,
    is_class_scores,
    label_for,
    measure_latency,
)

if TYPE_CHECKING:
    from quantbench.backends.base import Runner
    from quantbench.data.loader import Batch, BatchStream
    from quantbench.progress import Progress

REFERENCE = "fp32"


@dataclass
class Comparison:
    """Everything measured on the held-out data.

    Attributes:
        outputs: output name -> {"shape": per-sample shape, "class_scores": bool}, in model order.
        metrics: variant -> output -> metric -> value (FP32 has accuracy only, when labels are given).
        latency: variant -> one ``LatencyStats.to_dict()`` per bench batch size.
        representative: variant -> False where the latency is not representative of the target.
        samples: held-out samples evaluated.
        names: their file names, in order.
        skipped: (file, reason) of the held-out files left out.
    """

    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    latency: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    representative: dict[str, bool] = field(default_factory=dict)
    samples: int = 0
    names: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


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


def compare_variants(
    runners: dict[str, Runner],
    batches: BatchStream | Iterable[Batch],
    *,
    label_map: dict[str, int] | None = None,
    bench_batch: Sequence[int] = (1,),
    fixed_batch: int | None = None,
    bench_runs: int = 50,
    bench_seconds: float = 2.0,
    progress: Progress | None = None,
) -> Comparison:
    """Run every variant on the same batches, compare with ``runners["fp32"]``, then time each one.

    Args:
        runners: variant name -> runner; must include ``fp32``, the reference.
        batches: held-out batches (a ``BatchStream``'s report gives the skipped files).
        label_map: image name -> class index, for top-1/top-5 accuracy.
        bench_batch: batch sizes to time (replaced by ``fixed_batch`` where the model fixes it).
        fixed_batch: the model's fixed batch dimension, if any.
        bench_runs, bench_seconds: each timing repeats until both are reached.
        progress: receives one unit per evaluated sample, then per timing.

    Raises:
        QuantbenchError: no held-out sample could be used, or a variant's outputs do not match FP32's.
    """
    if REFERENCE not in runners:
        raise QuantbenchError("the comparison needs the fp32 variant as its reference")
    result = Comparison()
    errors: dict[tuple[str, str], OutputErrors] = {}
    agreement: dict[tuple[str, str], TopKAgreement] = {}
    accuracy: dict[tuple[str, str], Accuracy] = {}
    first_feeds: dict[str, np.ndarray] | None = None
    total = getattr(batches, "total", None)
    if progress is not None:
        progress.start("evaluating", total)
    try:
        for batch in batches:
            if first_feeds is None:
                first_feeds = batch.inputs
            reference = runners[REFERENCE].run(batch.inputs)
            labels = _accuracy_labels(label_map, batch)
            for out_name, value in reference.items():
                result.outputs.setdefault(
                    out_name,
                    {"shape": list(value.shape[1:]), "class_scores": is_class_scores(value.shape)},
                )
            for name, runner in runners.items():
                outputs = reference if name == REFERENCE else runner.run(batch.inputs)
                for out_name, ref in reference.items():
                    if out_name not in outputs:
                        raise QuantbenchError(f"variant {name} has no output {out_name!r}")
                    got = outputs[out_name]
                    if name != REFERENCE:
                        errors.setdefault((name, out_name), OutputErrors(out_name, name)).update(ref, got)
                    if not result.outputs[out_name]["class_scores"]:
                        continue
                    if name != REFERENCE:
                        key = (name, out_name)
                        agreement.setdefault(key, TopKAgreement(out_name, name)).update(ref, got)
                    if labels is not None:
                        accuracy.setdefault((name, out_name), Accuracy(out_name, name)).update(got, labels)
            result.samples += len(batch.names)
            result.names.extend(batch.names)
            if progress is not None:
                progress.advance(len(batch.names))
    finally:
        if progress is not None:
            progress.finish()
    report = getattr(batches, "report", None)
    if report is not None:
        result.skipped = list(report.skipped)
    if first_feeds is None:
        raise QuantbenchError("no held-out sample could be evaluated")

    for name in runners:
        per_output: dict[str, dict[str, float]] = {}
        for out_name in result.outputs:
            values: dict[str, float] = {}
            for table in (errors, agreement, accuracy):
                acc = table.get((name, out_name))
                if acc is not None:
                    values.update(acc.result())
            per_output[out_name] = values
        result.metrics[name] = per_output

    sizes = [fixed_batch] if fixed_batch else list(dict.fromkeys(bench_batch))
    if progress is not None:
        progress.start("timing", len(runners) * len(sizes))
    try:
        for name, runner in runners.items():
            result.representative[name] = bool(getattr(runner, "representative", True))
            result.latency[name] = []
            for size in sizes:
                feeds = stack_feeds(first_feeds, size)
                stats = measure_latency(
                    lambda r=runner, f=feeds: r.run(f),  # type: ignore[misc]
                    batch=size,
                    min_runs=bench_runs,
                    min_seconds=bench_seconds,
                )
                result.latency[name].append(stats.to_dict())
                if progress is not None:
                    progress.advance()
    finally:
        if progress is not None:
            progress.finish()
    return result
