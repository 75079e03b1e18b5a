"""Whether a step that fits an INT8 model (bias correction, adaptive rounding) is kept: the model with and
without it judged against FP32 by the run's headline on calibration images apart from the fitted ones.

The headline (:class:`quantbench.evaluation.headline.Headline`: top-1 agreement, detection F1, IoU,
sequence agreement...) of the main output decides; the relative L2 error of every output breaks a tie.
FP32's outputs on the check images are computed once per judge, when its first figure is asked for, and
shared by every decision it makes: a run makes one judge for all its INT8 variants.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quantbench.evaluation.errors import ErrorEnergy
from quantbench.export import passes

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from quantbench.evaluation.headline import Headline
    from quantbench.evaluation.tasks import Task


@dataclass(frozen=True)
class CorrectionData:
    """The samples the fitted steps (bias correction, adaptive rounding) run on.

    Attributes:
        fit: the batches the steps are fitted on (bias correction matches per-channel means there).
        check: the batches each step is judged on, apart from ``fit`` where the calibration images allow
            (the same batches otherwise).
        held_apart: whether ``check`` holds other images than ``fit``.
        task: what the outputs hold and how they are judged, for the headline the decisions are made on
            (None: kinds detected, default settings).
        fit_means: per-channel means of FP32 outputs on ``fit`` measured already (by the calibration
            pass), by output name; bias correction measures the others.
    """

    fit: Sequence[Mapping[str, np.ndarray]]
    check: Sequence[Mapping[str, np.ndarray]]
    held_apart: bool = True
    task: Task | None = None
    fit_means: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Figures:
    """A Q/DQ model on the check images: its headline value and its outputs' relative L2 error."""

    headline: float
    rel_l2: float


@dataclass(frozen=True)
class _Reference:
    """FP32's outputs on the check batches, the headline they call for and the main output's position."""

    outputs: list[list[np.ndarray]]
    headline: Headline
    at: int


class CheckJudge:
    """FP32's outputs on ``data.check`` and the figures Q/DQ models reach there (and FP32's means on
    ``data.fit``, for bias correction).

    Args:
        fp32_model: the FP32 model.
        data: the fitting and check batches, and the task that names the headline.
        threads: ONNX Runtime threads (0: every core).
    """

    def __init__(self, fp32_model: onnx.ModelProto, data: CorrectionData, threads: int = 0) -> None:
        self.fp32_model, self.data, self.threads = fp32_model, data, threads
        self.images = sum(passes.batch_size(batch) for batch in data.check)
        self._reference: _Reference | None = None
        self.fit_means: dict[str, np.ndarray] = dict(data.fit_means)
        """Per-channel means of FP32 outputs on ``data.fit`` by output name, filled by bias correction
        (where ``data`` did not bring them) and shared by every model it corrects."""

    @property
    def reference(self) -> _Reference:
        """FP32's side, computed on first use.

        Raises:
            QuantbenchError: ONNX Runtime cannot run the model; a bad ``--task`` item.
        """
        if self._reference is None:
            from quantbench.evaluation.headline import Headline

            fp32 = passes.session(self.fp32_model, self.threads, "the FP32 model", release=True)
            names = [o.name for o in fp32.get_outputs()]
            outputs = [passes.run_whole(fp32, None, batch) for batch in self.data.check]
            del fp32
            headline = Headline.of(dict(zip(names, outputs[0], strict=True)), self.data.task)
            self._reference = _Reference(outputs, headline, names.index(headline.output))
        return self._reference

    @property
    def headline(self) -> Headline:
        """The headline the decisions are made on."""
        return self.reference.headline

    def figures(self, model: onnx.ModelProto) -> Figures:
        """The headline and relative L2 error of a Q/DQ model, run as written, on the check images, one
        batch at a time (only FP32's outputs are kept).

        Raises:
            QuantbenchError: ONNX Runtime cannot run a model; a bad ``--task`` item.
        """
        reference = self.reference
        runner = passes.session(model, self.threads, "a Q/DQ model", as_written=True, release=True)
        energy = ErrorEnergy(exact=True)

        def main_outputs() -> Iterator[np.ndarray]:
            for batch, expected in zip(self.data.check, reference.outputs, strict=True):
                outputs = passes.run_whole(runner, None, batch)
                for want, got in zip(expected, outputs, strict=True):
                    energy.update(want, got)
                yield outputs[reference.at]

        value = reference.headline.score((r[reference.at] for r in reference.outputs), main_outputs())
        return Figures(value, energy.rel_l2())

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
