"""Whether a step that fits an INT8 model (bias correction, adaptive rounding) is kept: the model with and
without it judged against FP32 by the run's headline on calibration images apart from the fitted ones.

The headline (:class:`quantbench.evaluation.headline.Headline`: top-1 agreement, detection F1, IoU,
sequence agreement...) of the main output decides; the relative L2 error of every output breaks a tie.
FP32's outputs on the check images are computed once per judge and shared by every decision it makes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quantbench.evaluation.errors import ErrorEnergy
from quantbench.export import passes

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from quantbench.export.bias_correction import CorrectionData


@dataclass(frozen=True)
class Figures:
    """A Q/DQ model on the check images: its headline value and its outputs' relative L2 error."""

    headline: float
    rel_l2: float


class CheckJudge:
    """FP32's outputs on ``data.check`` and the figures Q/DQ models reach there.

    Args:
        fp32_model: the FP32 model.
        data: the fitting and check batches, and the task that names the headline.
        threads: ONNX Runtime threads (0: every core).

    Raises:
        QuantbenchError: ONNX Runtime cannot run the model; a bad ``--task`` item.
    """

    def __init__(self, fp32_model: onnx.ModelProto, data: CorrectionData, threads: int = 0) -> None:
        from quantbench.evaluation.headline import Headline

        self.data, self.threads = data, threads
        fp32 = passes.session(fp32_model, threads, "the FP32 model", release=True)
        names = [o.name for o in fp32.get_outputs()]
        self.reference = [passes.run_whole(fp32, None, batch) for batch in data.check]
        del fp32
        self.headline = Headline.of(dict(zip(names, self.reference[0], strict=True)), data.task)
        self.at = names.index(self.headline.output)
        self.images = sum(len(next(iter(batch.values()))) for batch in data.check)

    def figures(self, model: onnx.ModelProto) -> Figures:
        """The headline and relative L2 error of a Q/DQ model, run as written, on the check images."""
        outputs = qdq_outputs(model, self.data.check, self.threads)
        at = self.at
        value = self.headline.score((r[at] for r in self.reference), (o[at] for o in outputs))
        return Figures(value, rel_l2(self.reference, outputs))

    def prefers(self, after: Figures, before: Figures) -> bool:
        """Whether ``after`` is better: a better headline, or the same with a lower relative L2 error."""
        if self.headline.better(after.headline, before.headline):
            return True
        return after.headline == before.headline and after.rel_l2 < before.rel_l2

    def decision(self, before: Figures, after: Figures) -> dict[str, Any]:
        """What ``results.json`` records of one decision: output, metric, both headlines, the images."""
        return {
            "output": self.headline.output,
            "metric": self.headline.metric,
            "before": before.headline,
            "after": after.headline,
            "images": self.images,
            "held_apart": self.data.held_apart,
        }


def qdq_outputs(
    model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], threads: int
) -> list[list[np.ndarray]]:
    """Every output of a Q/DQ model, run as written, for each batch."""
    runner = passes.session(model, threads, "a Q/DQ model", as_written=True, release=True)
    return [passes.run_whole(runner, None, batch) for batch in feeds]


def rel_l2(reference: list[list[np.ndarray]], outputs: list[list[np.ndarray]]) -> float:
    """Relative L2 error of every output over every batch, float64 sums (see
    :func:`quantbench.export.bias_correction.output_rel_l2`)."""
    energy = ErrorEnergy(exact=True)
    for expected, got in zip(reference, outputs, strict=True):
        for want, value in zip(expected, got, strict=True):
            energy.update(want, value)
    return energy.rel_l2()
