"""One streaming pass of the FP32 model through ONNX Runtime, histogramming every float tensor."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantbench.calibration.histograms import TensorHistogram
from quantbench.errors import QuantbenchError, first_line

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


def open_session(model_bytes: bytes, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session for a serialized model.

    The session returns each batch's activations to the system (no memory arena), and its idle threads
    sleep rather than spin, since the histogram threads share the cores with it.

    Args:
        model_bytes: the serialized ONNX model.
        threads: intra-op threads; 0 lets ONNX Runtime use every core.

    Raises:
        QuantbenchError: ONNX Runtime cannot load the model.
    """
    from quantbench.backends.onnxruntime import SessionSettings, make_session

    settings = SessionSettings(threads=threads, memory_arena=False, spinning=False)
    return make_session(model_bytes, settings, "the model")


class _Folding:
    """Folds one batch's outputs into the histograms, one task per tensor, largest first.

    Tasks of one batch touch distinct histograms; the caller waits for a batch's
    tasks before submitting the next batch's, so no histogram is updated by two
    threads at once. Each thread keeps its own scratch buffer for bin indices.
    """

    def __init__(self, hists: dict[str, TensorHistogram], nonnegative: set[str]) -> None:
        self.hists = hists
        self.nonnegative = nonnegative
        self.not_float: set[str] = set()
        self._local = threading.local()

    def fold(self, name: str, value: object, owners: object) -> None:
        """Fold ``value`` into ``name``'s histogram; ``owners`` keeps the memory it views alive."""
        if not (isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating)):
            self.not_float.add(name)
            return
        scratch = getattr(self._local, "scratch", None)
        if scratch is None or scratch.size < value.size:
            scratch = self._local.scratch = np.empty(value.size, dtype=np.uint16)
        self.hists[name].update(value, scratch, nonnegative=name in self.nonnegative)

    def submit(self, pool: Executor, values: dict[str, np.ndarray], owners: object) -> list[Future[None]]:
        """Queue every tensor of one batch; returns the tasks."""
        order = sorted(values, key=lambda name: -int(getattr(values[name], "size", 0)))
        return [pool.submit(self.fold, name, values[name], owners) for name in order]


def collect_histograms(
    session,  # type: ignore[no-untyped-def]
    tensors: list[str],
    graph_inputs: list[str],
    batches: Iterable[dict[str, np.ndarray]],
    progress: Progress | None = None,
    workers: int = 2,
    nonnegative: set[str] | frozenset[str] = frozenset(),
) -> Collection:
    """Run every batch through ``session`` and histogram each tensor in ``tensors``.

    Each output array is folded into its histogram (and overwritten in the
    process) and dropped before the next batch after it runs.

    While ONNX Runtime computes batch k+1, ``workers`` threads fold batch k into
    the histograms, one tensor at a time, largest first. At most two batches of activations are
    alive at any time, so memory does not grow with the number of samples; and
    since histogram updates commute (see :mod:`.histograms`), the result does not
    depend on this overlap.

    Args:
        session: an ONNX Runtime session whose outputs include ``tensors``.
        tensors: names to histogram, in graph order; graph inputs among them are
            read from the batch instead of the session.
        graph_inputs: names of the model's inputs.
        batches: input name -> array, one dict per batch.
        progress: called after each batch with its sample count.
        workers: histogram threads.
        nonnegative: tensors that cannot hold a negative value (outputs of Relu,
            say); their histograms skip the |x| pass.

    Raises:
        QuantbenchError: ONNX Runtime fails on a batch.
    """
    from concurrent.futures import ThreadPoolExecutor

    from onnxruntime import OrtValue

    hists = {name: TensorHistogram() for name in tensors}
    fetched = [name for name in tensors if name not in graph_inputs]
    folding = _Folding(hists, set(nonnegative))
    pending: list[Future[None]] = []
    samples = 0
    started = time.perf_counter()
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="histogram") as pool:
        for feed in batches:
            try:
                # OrtValues viewed as numpy arrays share ONNX Runtime's memory: no copy of the outputs
                ort_feed = {name: OrtValue.ortvalue_from_numpy(array) for name, array in feed.items()}
                outputs = session.run_with_ort_values(fetched, ort_feed)
            except Exception as exc:
                raise QuantbenchError(
                    f"ONNX Runtime failed on a calibration batch: {first_line(exc)}"
                ) from None
            values = {name: value.numpy() for name, value in zip(fetched, outputs)}
            for name in tensors:
                if name in graph_inputs:  # a copy: folding overwrites its input
                    values[name] = np.array(feed[name], dtype=np.float32)
            for job in pending:
                job.result()  # the previous batch is folded in before its histograms are touched again
            # the arrays view the OrtValues' memory: pass those along until the folding is done
            pending = folding.submit(pool, values, outputs)
            del values
            size = len(next(iter(feed.values()))) if feed else 0
            samples += size
            if progress is not None:
                progress(size)
        for job in pending:
            job.result()
    skipped = sorted(folding.not_float)
    for name in skipped:
        hists.pop(name, None)
    return Collection(hists, samples, time.perf_counter() - started, skipped)
