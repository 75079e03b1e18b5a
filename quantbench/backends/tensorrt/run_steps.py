"""The TensorRT steps of ``quantbench run``: checking ``trt-*`` methods, telling the backend about the
run, and calibrating with TensorRT's own calibrators.

Kept here so that ``quantbench.flows.run`` calls three functions and stays free of TensorRT details.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.errors import QuantbenchError

if TYPE_CHECKING:
    from quantbench.backends import Backend
    from quantbench.backends.tensorrt.methods import NativeMethod
    from quantbench.data.loader import Batch
    from quantbench.model import InputSpec
    from quantbench.ranges import DynamicRanges

MAX_CALIBRATION_BATCH = 32


def check_methods(methods: Sequence[str], engine: Backend) -> tuple[list[str], list[NativeMethod]]:
    """Split ``--method`` into quantbench's methods and TensorRT calibrators, refusing the latter where
    they cannot run.

    Raises:
        QuantbenchError: a ``trt-*`` method with another backend or on TensorRT 11 (one line, naming the
            quantbench methods to use instead), or a bad ``trt-*`` spec.
    """
    from quantbench.backends.tensorrt.methods import refusal, split_methods

    own, native = split_methods(methods)
    info = getattr(engine, "info", None)
    major = getattr(info, "major", None)
    for method in native:
        problem = refusal(method.text, backend=engine.name, tensorrt_major=major)
        if problem:
            raise QuantbenchError(problem)
    return own, native


def calibration_batch(n: int, model_batch: int | None, requested: int | None) -> int:
    """The batch TensorRT calibrates with: the model's fixed batch, else ``--batch``, else the largest
    divisor of ``n`` up to 32 (so no image is left out of a full batch).

    Raises:
        QuantbenchError: ``--batch`` below 1.
    """
    if requested is not None and requested < 1:
        raise QuantbenchError(f"--batch must be at least 1, got {requested}")
    if model_batch:
        return model_batch
    if requested:
        return requested
    return max(size for size in range(1, min(n, MAX_CALIBRATION_BATCH) + 1) if n % size == 0)


def full_batches(
    batches: Iterable[Batch], size: int, dropped: list[int]
) -> Iterator[Mapping[str, np.ndarray]]:
    """The inputs of each batch of exactly ``size`` samples; the samples of a short last batch are
    counted in ``dropped`` (TensorRT calibrates with one fixed batch shape)."""
    for batch in batches:
        count = len(batch.names)
        if count == size:
            yield batch.inputs
        else:
            dropped.append(count)


def start_run(
    engine: Backend,
    *,
    model: Path,
    inputs: list[InputSpec],
    run_dir: Path,
    model_hash: str,
    bench_batch: Sequence[int],
    eval_batch: int,
    batch: int | None,
    imported: Mapping[str, DynamicRanges],
) -> None:
    """Tell the TensorRT backend about the run (a no-op for other backends)."""
    from quantbench.backends.tensorrt.backend import RunSetup, TensorRTBackend

    if isinstance(engine, TensorRTBackend):
        setup = RunSetup(
            model, inputs, run_dir, model_hash, tuple(bench_batch), eval_batch, batch, dict(imported)
        )
        engine.start_run(setup)


def native_calibration(
    engine: Backend,
    native: Sequence[NativeMethod],
    *,
    images: str | os.PathLike[str],
    inputs: list[InputSpec],
    n: int,
    seed: int,
    batch: int | None,
    preset: str,
    preprocess: dict[str, Any] | None,
    workers: int,
    run_dir: Path,
    tensors: Sequence[str],
) -> tuple[dict[str, DynamicRanges], dict[str, dict[str, Any]], list[str]]:
    """Calibrate with each TensorRT calibrator on the first ``n`` images (the same ones quantbench's own
    methods use) and write each result as ``ranges/<label>.txt`` and ``.json`` beside TensorRT's cache.

    Returns:
        (label -> ranges, label -> range info for results.json: TensorRT's tensor names that are not
        float tensors of the model (``unknown``) and the model's float tensors it gave no range
        (``missing``), notes).

    Raises:
        QuantbenchError: the backend is not TensorRT, or calibration fails.
    """
    from quantbench.backends.tensorrt.backend import TensorRTBackend
    from quantbench.data import open_dataset
    from quantbench.ranges import write_ranges

    if not isinstance(engine, TensorRTBackend):
        raise QuantbenchError("TensorRT calibrators need --backend tensorrt")
    dataset = open_dataset(images, inputs, preset=preset, **(preprocess or {}))
    size = calibration_batch(n, inputs[0].fixed(0), batch)
    dropped: list[int] = []

    def stream() -> Iterator[Mapping[str, np.ndarray]]:
        dropped.clear()
        return full_batches(dataset.batches(n, seed, size, workers=workers), size, dropped)

    preprocessing = dataset.describe().get("preprocessing") or {}
    tables = engine.calibrate_native(native, stream, batch_size=size, preprocessing=preprocessing)
    info: dict[str, dict[str, Any]] = {}
    for label, table in tables.items():
        cache = run_dir / "ranges" / f"{label}.cache"
        for fmt in ("txt", "json"):
            write_ranges(table, run_dir / "ranges" / f"{label}.{fmt}")
        info[label] = {
            "file": str(cache),
            "unknown": [name for name in table.amax if name not in set(tensors)],
            "missing": [name for name in tensors if name not in table.amax],
            "warnings": [],
        }
    notes = []
    if dropped:
        notes.append(
            f"TensorRT calibration left out {sum(dropped)} image(s) that did not fill a batch of {size}"
        )
    return tables, info, notes
