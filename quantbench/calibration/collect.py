"""One streaming pass of the FP32 model through ONNX Runtime, histogramming every float tensor."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantbench.calibration import _kernels
from quantbench.calibration.exposure import Exposure
from quantbench.calibration.histograms import TensorHistogram
from quantbench.calibration.means import FirstSamples

Progress = Callable[[int], None]
"""Called with the number of samples just processed."""


@dataclass
class Collection:
    """What one calibration pass gathered.

    Attributes:
        histograms: tensor name -> histogram, in graph order.
        samples: number of samples that went through the model.
        seconds: wall time of the pass, decoding included.
        skipped_tensors: tensors exposed but not float at run time (left out).
    """

    histograms: dict[str, TensorHistogram]
    samples: int
    seconds: float
    skipped_tensors: list[str]


class _Folding:
    """Folds one batch's outputs into the histograms, one task per tensor, largest first.

    Tasks of one batch touch distinct histograms; the caller waits for a batch's
    tasks before submitting the next batch's, so no histogram is updated by two
    threads at once. Each thread keeps its own scratch buffer for bin indices.
    Each task holds the only reference to its tensor's memory, so a tensor is
    returned to the system as soon as it is folded, not when its whole batch is.
    """

    def __init__(
        self, hists: dict[str, TensorHistogram], nonnegative: set[str], first: FirstSamples | None = None
    ) -> None:
        self.hists = hists
        self.nonnegative = nonnegative
        self.first = first
        self.not_float: set[str] = set()
        self.values = 0
        """Elements submitted so far."""
        self._local = threading.local()

    def fold(self, name: str, value: object, owner: object, first: bool = False) -> None:
        """Fold ``value`` into ``name``'s histogram; ``owner`` keeps the memory it views alive; ``first``:
        the batch goes into :attr:`first`'s means too (before the folding, which may overwrite it)."""
        if not (isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating)):
            self.not_float.add(name)
            return
        if first and self.first is not None and name in self.first.axes:
            self.first.add(name, value)
        scratch = None
        if _kernels.kernel() is None:  # the numpy path's bin indices
            scratch = getattr(self._local, "scratch", None)
            if scratch is None or scratch.size < value.size:
                scratch = np.empty(value.size, dtype=np.uint16)
        self._local.scratch = scratch  # dropped once the compiled kernel takes over
        self.hists[name].update(value, scratch, nonnegative=name in self.nonnegative)

    def submit(
        self, pool: Executor, values: dict[str, tuple[Any, object]], first: bool = False
    ) -> list[Future[None]]:
        """Queue every tensor of one batch (name -> array and the owner of its memory); returns the tasks.
        ``first``: the batch is one of :attr:`first`'s.

        ``values`` is emptied: the tasks hold the only references to the arrays.
        """
        order = sorted(values, key=lambda name: -int(getattr(values[name][0], "size", 0)))
        self.values += sum(int(getattr(array, "size", 0)) for array, _ in values.values())
        return [pool.submit(self.fold, name, *values.pop(name), first) for name in order]


OVERLAP_BYTES = 128 << 20
"""With the compiled kernel, ONNX Runtime runs the next batch while the last one is folded only if
two batches' activations take at most this much; else it waits (numba's libraries take ~140 MB)."""
OVERLAP_BYTES_NUMPY = 512 << 20
"""The same limit on the numpy path. PP-OCRv4 det exposes 877 MiB a 736 px page: two pages alive
took its collection to 2.1 GB, one to 1.2 GB."""


def collect_histograms(
    exposure: Exposure,
    batches: Iterable[dict[str, np.ndarray]],
    progress: Progress | None = None,
    workers: int = 2,
    nonnegative: set[str] | frozenset[str] = frozenset(),
    first: FirstSamples | None = None,
) -> Collection:
    """Run every batch through the model and histogram each tensor ``exposure`` returns.

    ``workers`` threads fold each run's tensors into the histograms, one tensor at a time,
    largest first; each output array is dropped as soon as it is folded (and may
    be overwritten in the process), so memory does not grow with the number of
    samples. A batch whose tensors take much memory is run in groups of tensors
    (:class:`~quantbench.calibration.exposure.Exposure`); each group is one run here.

    The threads fold run k while ONNX Runtime computes run k+1 (two runs' tensors
    alive) where two such runs take at most ``OVERLAP_BYTES_NUMPY``; else ONNX
    Runtime waits for the folding (one run alive). Where the compiled
    kernel is to be used (see :mod:`._kernels`), numba is loaded in a thread once
    ``WARM_UP_AFTER`` values have been folded, the numpy path folding until then;
    as its libraries take some 140 MB, the limit is then ``OVERLAP_BYTES``. Histogram updates
    commute and both paths count alike (see :mod:`.histograms`), so the result
    depends on none of this.

    Args:
        exposure: the model, the tensors to histogram (in graph order) and how they are run.
        batches: input name -> array, one dict per batch.
        progress: called after each batch with its sample count.
        workers: histogram threads.
        nonnegative: tensors that cannot hold a negative value (outputs of Relu,
            say); the numpy path skips their |x| pass.
        first: per-channel means to gather over the first samples too (filled in place).

    Raises:
        QuantbenchError: ONNX Runtime fails on a batch.
    """
    from concurrent.futures import ThreadPoolExecutor

    hists = {name: TensorHistogram() for name in exposure.tensors}
    folding = _Folding(hists, set(nonnegative), first)
    pending: list[Future[None]] = []
    compiled = to_load = _kernels.expected()
    overlap = True  # until a run shows its size
    samples = 0
    started = time.perf_counter()
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="histogram") as pool:
        for feed in batches:
            size = len(next(iter(feed.values()))) if feed else 0
            taken = first is not None and first.take(size)
            runs = exposure.runs(feed)
            while True:
                if not overlap:
                    _wait(pending)
                values = next(runs, None)
                if values is None:
                    break
                if to_load and folding.values >= _kernels.WARM_UP_AFTER:
                    to_load = False
                    pool.submit(_kernels.warm_up)
                nbytes = sum(int(getattr(array, "nbytes", 0)) for array, _ in values.values())
                overlap = 2 * nbytes <= (OVERLAP_BYTES if compiled else OVERLAP_BYTES_NUMPY)
                _wait(pending)  # the last run is folded in before its histograms are touched again
                pending = folding.submit(pool, values, taken)
            samples += size
            if progress is not None:
                progress(size)
        _wait(pending)
    skipped = sorted(folding.not_float)
    for name in skipped:
        hists.pop(name, None)
    return Collection(hists, samples, time.perf_counter() - started, skipped)


def _wait(jobs: list[Future[None]]) -> None:
    """Wait for every job, raising the first one's exception."""
    for job in jobs:
        job.result()
