"""Datasets: deterministic sampling of files, prefetching on a thread pool, and batching."""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantbench.config import PreprocessSpec
from quantbench.data.files import SkipSample, SourceKind, discover, shown, shuffled
from quantbench.data.images import decode_image
from quantbench.data.preprocess import PluginPreprocessing, Preprocessing, resolve_preprocessing
from quantbench.data.tensors import Sample, load_tensor_file
from quantbench.errors import QuantbenchError
from quantbench.model import InputSpec

Loaded = tuple[list[tuple[str, Sample]], list[str]]
"""What loading one file gives: (sample name, sample) pairs, and the conversions made."""


@dataclass
class Batch:
    """Samples stacked for one model run.

    Attributes:
        inputs: input name -> array stacked along axis 0, in the input's dtype.
        names: the name of each sample: its relative path, or ``file.npy[3]``
            for the fourth sample of a batched tensor file.
    """

    inputs: dict[str, np.ndarray]
    names: list[str]


@dataclass
class LoadReport:
    """What happened while loading; filled in as batches are produced.

    Attributes:
        used: names of the samples used, in order.
        skipped: (relative path, reason) for each file that could not be used.
        converted: (relative path, what was converted) for each conversion made.
        next_start: position in the shuffled file order just after the last
            file consumed; pass it as ``start`` to continue with unseen files.
        shapes: input name -> each sample shape seen (batch axis excluded) -> how many samples had it.
    """

    used: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    converted: list[tuple[str, str]] = field(default_factory=list)
    next_start: int = 0
    shapes: dict[str, dict[tuple[int, ...], int]] = field(default_factory=dict)

    def shapes_seen(self) -> dict[str, list[dict[str, Any]]]:
        """:attr:`shapes` as ``results.json`` records them: input -> ``{"shape", "samples"}`` per shape,
        the most frequent first."""
        return {
            name: [
                {"shape": list(shape), "samples": count}
                for shape, count in sorted(seen.items(), key=lambda x: -x[1])
            ]
            for name, seen in self.shapes.items()
        }

    def count_shapes(self, sample: Sample) -> None:
        """Count the shape of each input of one sample."""
        for name, array in sample.items():
            seen = self.shapes.setdefault(name, {})
            seen[array.shape] = seen.get(array.shape, 0) + 1


class Dataset:
    """A folder of images or tensor files, ready to be sampled into batches.

    Attributes:
        root: the folder.
        kind: ``"images"`` or ``"tensors"``.
        preprocessing: how images become inputs; None for tensor files.
        inputs: the model inputs the samples feed.
        files: every candidate file, as sorted relative POSIX paths.
    """

    def __init__(
        self,
        root: Path,
        kind: SourceKind,
        files: list[str],
        inputs: list[InputSpec],
        preprocessing: Preprocessing | PluginPreprocessing | None,
    ) -> None:
        self.root = root
        self.kind: SourceKind = kind
        self.files = files
        self.inputs = inputs
        self.preprocessing = preprocessing

    def fingerprint(self) -> str:
        """SHA-256 hex of the kind, each file's (relative path, size, mtime_ns), and the preprocessing."""
        listing = []
        for rel in self.files:
            stat = os.stat(self.root / rel)
            listing.append([rel, stat.st_size, stat.st_mtime_ns])
        payload = {
            "kind": self.kind,
            "files": listing,
            "preprocessing": self.preprocessing.to_dict() if self.preprocessing else None,
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: root, kind, file count, preprocessing and its one-line description (None
        for tensors)."""
        return {
            "root": str(self.root),
            "kind": self.kind,
            "files": len(self.files),
            "preprocessing": self.preprocessing.to_dict() if self.preprocessing else None,
            "preprocessing_text": self.preprocessing.describe() if self.preprocessing else None,
        }

    def batches(
        self, n: int | None, seed: int, batch_size: int, *, start: int = 0, workers: int = 2
    ) -> BatchStream:
        """Stream ``n`` valid samples in batches, in a fixed order for a given seed.

        Files are visited in ``shuffled(files, seed)`` order from position
        ``start``; unusable files are skipped and the next file takes their
        place. The samples and their order depend only on (folder, n, seed,
        start), never on ``batch_size`` or ``workers``.

        Args:
            n: how many samples to produce; None for every file from ``start`` on.
            seed: the sampling seed.
            batch_size: samples per batch; the last batch may be smaller.
            start: position in the shuffled order to begin at (``LoadReport.next_start``
                of an earlier stream continues after it).
            workers: threads decoding and preprocessing ahead of the consumer.

        Returns:
            An iterator of batches; its ``report`` is complete once it is exhausted.

        Raises:
            QuantbenchError: a bad argument, or (images) fewer files from
                ``start`` on than ``n``. Iterating raises QuantbenchError when
                fewer than ``n`` valid samples turn out to exist, or for a bad
                tensor file (see ``load_tensor_file``).
        """
        if n is not None and n < 1:
            raise QuantbenchError(f"--n must be at least 1 (got {n})")
        if batch_size < 1:
            raise QuantbenchError(f"batch size must be at least 1 (got {batch_size})")
        if workers < 1:
            raise QuantbenchError(f"workers must be at least 1 (got {workers})")
        if start < 0:
            raise QuantbenchError(f"start must be 0 or more (got {start})")
        available = max(0, len(self.files) - start)
        if self.kind == "images" and n is not None and available < n:
            after = f" after position {start} of the shuffled order" if start else ""
            raise QuantbenchError(
                f"only {available} images under {shown(self.root)}{after}; asked for --n {n}"
            )
        total = n if n is not None else (available if self.kind == "images" else None)
        return BatchStream(self, shuffled(self.files, seed), n, batch_size, start, workers, total)

    def load(self, rel: str) -> Loaded:
        """Load the samples of one file (runs on a worker thread).

        Raises:
            SkipSample: the file cannot be used.
            QuantbenchError: a tensor file does not fit the model.
        """
        path = self.root / rel
        if self.preprocessing is None:
            return load_tensor_file(path, rel, self.inputs), []
        image, conversions = decode_image(path)
        if isinstance(self.preprocessing, PluginPreprocessing):
            return [(rel, self.preprocessing.samples(image, path, self.inputs))], conversions
        spec = self.inputs[0]
        sample = self.preprocessing.apply(image).astype(spec.dtype, copy=False)
        return [(rel, {spec.name: sample})], conversions


class BatchStream(Iterator[Batch]):
    """Batches from a dataset, produced in order while worker threads load ahead.

    Samples of different shapes (pages of their own size, text lines of their own width) do not share a
    batch: a sample whose shapes differ from those of the batch being filled closes that batch early,
    so a batch may hold fewer than ``batch_size`` samples, and memory stays that of one batch whatever
    the number of shapes.

    At most ``batch_size + 2 * workers`` image files (``2 * workers`` tensor
    files) are loaded ahead of the batch being filled, so memory does not
    grow with ``n``. To stop early, call ``close()`` (or use the stream in a
    ``with`` block) so the worker threads are freed at once.

    Attributes:
        report: what was used, skipped and converted so far.
        total: the number of samples expected (``n``, or the file count for
            images when ``n`` is None; None for tensor files when ``n`` is None).
    """

    def __init__(
        self,
        dataset: Dataset,
        order: list[str],
        n: int | None,
        batch_size: int,
        start: int,
        workers: int,
        total: int | None,
    ) -> None:
        self.report = LoadReport(next_start=start)
        self.total = total
        self._dataset = dataset
        self._order = order
        self._n = n
        self._batch_size = batch_size
        self._start = start
        self._workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="quantbench-data")
        self._stream = self._produce()

    def __next__(self) -> Batch:
        return next(self._stream)

    def close(self) -> None:
        """Stop loading; waits for files already being loaded, drops the rest."""
        self._stream.close()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _stack(self, names: list[str], samples: list[Sample]) -> Batch:
        """Stack samples of the same shapes into a batch."""
        inputs = {
            spec.name: np.stack([sample[spec.name] for sample in samples]) for spec in self._dataset.inputs
        }
        return Batch(inputs=inputs, names=names)

    def _produce(self) -> Generator[Batch, None, None]:
        dataset, report, n = self._dataset, self.report, self._n
        ahead = 2 * self._workers + (self._batch_size if dataset.kind == "images" else 0)
        pool = self._pool
        pending: deque[tuple[int, str, Future[Loaded]]] = deque()
        position = self._start
        names: list[str] = []
        samples: list[Sample] = []
        found = 0
        try:
            while n is None or found < n:
                while len(pending) < ahead and position < len(self._order):
                    rel = self._order[position]
                    pending.append((position, rel, pool.submit(dataset.load, rel)))
                    position += 1
                if not pending:
                    break
                index, rel, future = pending.popleft()
                report.next_start = index + 1
                try:
                    loaded, conversions = future.result()
                except SkipSample as skip:
                    report.skipped.append((rel, skip.reason))
                    continue
                report.converted.extend((rel, what) for what in conversions)
                for name, sample in loaded:
                    if n is not None and found >= n:
                        break
                    if samples and not _same_shapes(samples[0], sample):
                        yield self._stack(names, samples)
                        names, samples = [], []
                    report.count_shapes(sample)
                    names.append(name)
                    samples.append(sample)
                    report.used.append(name)
                    found += 1
                    if len(names) == self._batch_size:
                        yield self._stack(names, samples)
                        names, samples = [], []
            if names:
                yield self._stack(names, samples)
        finally:
            # Never wait here: a stream dropped unfinished is closed by the garbage collector, in whatever
            # thread it runs, and joining the loading threads there can deadlock (one such thread may be
            # starting up and hold the interpreter's thread-shutdown lock). close() waits.
            pool.shutdown(wait=False, cancel_futures=True)
        if n is not None and found < n:
            raise QuantbenchError(self._shortfall_message(found, n))

    def _shortfall_message(self, found: int, n: int) -> str:
        noun = "images" if self._dataset.kind == "images" else "samples"
        after = f" after position {self._start} of the shuffled order" if self._start else ""
        skipped = self.report.skipped
        detail = ""
        if skipped:
            examples = ", ".join(f"{rel}: {reason}" for rel, reason in skipped[:3])
            more = ", ..." if len(skipped) > 3 else ""
            detail = f" ({len(skipped)} skipped: e.g. {examples}{more})"
        return (
            f"only {found} valid {noun} under {shown(self._dataset.root)}{after}{detail}; asked for --n {n}"
        )


def _plugin(spec: PreprocessSpec) -> PluginPreprocessing:
    """The preprocessing function of ``--preprocess``, which no other preprocessing option may join.

    Raises:
        QuantbenchError: other preprocessing options given, or the function cannot be loaded.
    """
    assert spec.function is not None
    given = [f"--{name.replace('_', '-')}" for name in spec.overrides() if name != "function"]
    if spec.preset != PreprocessSpec().preset:
        given.append(f"--preset {spec.preset}")
    if given:
        raise QuantbenchError(
            f"--preprocess {spec.function} replaces the preprocessing options; drop {' '.join(given)}"
        )
    return PluginPreprocessing.load(spec.function)


def _same_shapes(a: Sample, b: Sample) -> bool:
    """Whether two samples have the same shape for every input."""
    return all(a[name].shape == b[name].shape for name in a)


def open_dataset(
    path: str | os.PathLike[str],
    inputs: list[InputSpec],
    preprocess: PreprocessSpec | None = None,
    *,
    stated_size: tuple[int, int] | None = None,
) -> Dataset:
    """Open a folder of images (for a one-input image model) or of .npy/.npz files.

    Args:
        path: the folder.
        inputs: the model's inputs (``quantbench.model.input_specs``).
        preprocess: the preset and the options overriding it (images only; default: the
            ``imagenet`` preset); see ``resolve_preprocessing``.
        stated_size: the image size the model's metadata states, for a dynamic height or width
            (``quantbench.model.stated_image_size``).

    Returns:
        The dataset; nothing is decoded until ``batches`` is iterated.

    Raises:
        QuantbenchError: the folder is missing, empty, or mixes images and
            tensor files; images for a model with several inputs; .npy files
            for a model with several inputs; preprocessing options given for
            tensor files; a preprocessing option that does not fit the model.
    """
    root = Path(path)
    if not inputs:
        raise QuantbenchError("the model has no inputs to feed")
    found = discover(root)
    input_names = ", ".join(spec.name for spec in inputs)
    spec = preprocess or PreprocessSpec()
    if found.kind == "tensors":
        options = [
            f"--{'preprocess' if name == 'function' else name.replace('_', '-')}" for name in spec.overrides()
        ]
        if options:
            raise QuantbenchError(
                f"{' '.join(options)} only apply to images; {shown(root)} holds .npy/.npz files, "
                "which are fed as they are"
            )
        if len(inputs) > 1 and any(rel.lower().endswith(".npy") for rel in found.files):
            raise QuantbenchError(
                f"{shown(root)} holds .npy files but the model has {len(inputs)} inputs ({input_names}); "
                "use .npz files keyed by input name"
            )
        return Dataset(root, "tensors", found.files, inputs, None)
    if spec.function is not None:
        return Dataset(root, "images", found.files, inputs, _plugin(spec))
    if len(inputs) > 1:
        raise QuantbenchError(
            f"{shown(root)} holds images but the model has {len(inputs)} inputs ({input_names}); "
            "use .npz files keyed by input name, or --preprocess with a function of your own"
        )
    preprocessing = resolve_preprocessing(spec.preset, inputs[0], stated_size=stated_size, **spec.overrides())
    return Dataset(root, "images", found.files, inputs, preprocessing)
