"""Per-channel means of tensors over batches, and the calibration pass's means on its first samples.

Bias correction matches the per-channel means of the FP32 model's convolution outputs on its fitting
images, which are the first samples of the calibration order. The calibration pass computes those
outputs anyway, so where a run corrects biases it sums them there (:class:`FirstSamples`) and the
correction does not run the FP32 model again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def channel_sums(y: np.ndarray, axis: int) -> np.ndarray:
    """float64 sums of ``y`` over every axis but ``axis``."""
    axis %= y.ndim
    blocks = y.reshape(int(np.prod(y.shape[:axis])), y.shape[axis], -1)  # no copy for a contiguous y
    return blocks.sum(axis=(0, 2), dtype=np.float64)


class ChannelMeans:
    """Per-channel means accumulated over batches (float64 sums)."""

    def __init__(self) -> None:
        self.sums: np.ndarray | None = None
        self.count = 0

    def add(self, y: np.ndarray, axis: int) -> None:
        """Add every value of ``y`` to its channel's (``axis``) sum."""
        sums = channel_sums(y, axis)
        self.sums = sums if self.sums is None else self.sums + sums
        self.count += y.size // max(y.shape[axis], 1)

    def mean(self) -> np.ndarray:
        assert self.sums is not None
        return self.sums / max(self.count, 1)


@dataclass
class FirstSamples:
    """Per-channel means of some tensors over the first ``samples`` samples of a pass.

    Only whole batches count: where a batch would straddle ``samples``, the means stop at the batch
    before it (:attr:`covered` tells how many samples they hold). Batches of one pass in order.

    Attributes:
        axes: tensor -> its channel axis.
        samples: the samples wanted.
        covered: the samples the means hold so far.
        means: tensor -> its means so far.
        stopped: no later batch is taken.
    """

    axes: dict[str, int]
    samples: int
    covered: int = 0
    means: dict[str, ChannelMeans] = field(default_factory=dict)
    stopped: bool = False

    def take(self, batch: int) -> bool:
        """Whether the next batch, of ``batch`` samples, goes into the means (call once per batch, in
        order): the first batches that fit within :attr:`samples` whole, none after one that does not."""
        if self.stopped or self.covered + batch > self.samples:
            self.stopped = True
            return False
        self.covered += batch
        return True

    def add(self, name: str, value: np.ndarray) -> None:
        """Add one batch's ``value`` of ``name`` (one thread per tensor at a time)."""
        self.means.setdefault(name, ChannelMeans()).add(value, self.axes[name])

    def result(self) -> dict[str, np.ndarray]:
        """Tensor -> per-channel means over the :attr:`covered` samples (empty where none was)."""
        if not self.covered:
            return {}
        return {name: m.mean() for name, m in self.means.items() if m.sums is not None}
