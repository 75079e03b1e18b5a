"""The ranges a run quantizes with: imported from a file, calibrated by quantbench, or by TensorRT.

Step 1 of :func:`quantbench.flows.run.run`. ``--ranges FILE`` skips calibration; otherwise quantbench's
methods share one pass over the calibration images, and TensorRT's own calibrators (``trt-*``, with
``--backend tensorrt``) calibrate inside TensorRT afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantbench.errors import QuantbenchError
from quantbench.ranges import DynamicRanges

if TYPE_CHECKING:
    from quantbench.backends import Backend
    from quantbench.backends.tensorrt.methods import NativeMethod
    from quantbench.calibration.calibrate import CalibrationResult
    from quantbench.model import InputSpec
    from quantbench.progress import Progress


@dataclass
class RunRanges:
    """What step 1 produced.

    Attributes:
        range_sets: label -> ranges, one INT8 variant each.
        range_info: label -> file, unknown names, tensors without a range, header warnings.
        calibration: quantbench's calibration, when it ran.
        absmax: tensor -> largest |x| seen (or imported amax), for the FP16 overflow check.
        native_labels: the labels whose ranges came from TensorRT's calibrators.
        notes: lines for the run's notes.
    """

    range_sets: dict[str, DynamicRanges] = field(default_factory=dict)
    range_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibration: CalibrationResult | None = None
    absmax: dict[str, float] = field(default_factory=dict)
    native_labels: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def imported_ranges(path: Path, tensors: list[str]) -> tuple[DynamicRanges, dict[str, Any]]:
    """Read a range file and compare its names with the model's tensors.

    Returns:
        The ranges, and their file, unknown names, tensors without a range and header warnings.

    Raises:
        QuantbenchError: an unreadable or empty file, or one none of whose names is in the model.
    """
    from quantbench.backends.tensorrt import header_warnings
    from quantbench.ranges import read_ranges

    table = read_ranges(path)
    if not table.amax:
        raise QuantbenchError(f"{path}: no ranges in the file")
    known = set(tensors)
    info = {
        "file": str(path),
        "unknown": [name for name in table.amax if name not in known],
        "missing": [name for name in tensors if name not in table.amax],
        "warnings": header_warnings(table),
    }
    if not set(table.amax) & known:
        raise QuantbenchError(
            f"{path}: none of its {len(table.amax)} tensor names is in the model "
            f"(e.g. {next(iter(table.amax))!r}); were the ranges made for another model?"
        )
    return table, info


def gather_ranges(
    engine: Backend,
    *,
    model_path: Path,
    inputs: list[InputSpec],
    tensors: list[str],
    run_dir: Path,
    wanted: list[str],
    images: str | os.PathLike[str] | None,
    ranges: str | os.PathLike[str] | None,
    own_methods: Sequence[str],
    native_methods: Sequence[NativeMethod],
    n: int,
    seed: int,
    batch: int | None,
    bench_batch: Sequence[int],
    eval_batch: int,
    preset: str,
    preprocess: dict[str, Any] | None,
    workers: int,
    threads: int,
    progress: Progress,
) -> RunRanges:
    """Import or calibrate the ranges of a run (see :func:`quantbench.flows.run.run` for the arguments).

    Calibration runs when INT8 or FP16 is wanted and images are given: FP16 needs only absmax, so
    without INT8 (or with TensorRT's calibrators alone) the pass computes minmax only.

    Raises:
        QuantbenchError: a bad range file, calibration or TensorRT calibration failure.
    """
    from quantbench.backends.tensorrt import run_steps as trt_steps
    from quantbench.calibration.calibrate import calibrate
    from quantbench.model import file_sha256

    out = RunRanges()
    if ranges is not None:
        table, info = imported_ranges(Path(ranges), tensors)
        label = Path(ranges).stem.replace(" ", "_") or "imported"
        out.range_sets[label] = table
        out.range_info[label] = info
        out.absmax = dict(table.amax)
    elif images is not None and ({"int8", "fp16"} & set(wanted)):
        progress.start("calibrating", n)
        try:
            out.calibration = calibrate(
                model_path,
                images,
                n=n,
                seed=seed,
                methods=(own_methods or ("minmax",)) if "int8" in wanted else ("minmax",),
                batch=batch,
                preset=preset,
                preprocess=preprocess,
                out=run_dir,
                workers=workers,
                threads=threads,
                on_batch=progress.advance,
            )
        finally:
            progress.finish()
        out.absmax = out.calibration.absmax
        if "int8" in wanted and own_methods:  # else the minmax pass only gave FP16 its absmax
            out.range_sets = dict(out.calibration.ranges)
            for label, files in out.calibration.files.items():
                out.range_info[label] = {"file": str(files[0]), "unknown": [], "missing": [], "warnings": []}
    # the TensorRT backend learns the model and the imported ranges before its calibrators run
    trt_steps.start_run(
        engine,
        model=model_path,
        inputs=inputs,
        run_dir=run_dir,
        model_hash=file_sha256(model_path),
        bench_batch=bench_batch,
        eval_batch=eval_batch,
        batch=batch,
        imported=out.range_sets if ranges is not None else {},
    )
    if native_methods and "int8" in wanted and images is not None and ranges is None:
        progress.start("TensorRT calibration", len(native_methods))
        try:
            native_sets, native_info, native_notes = trt_steps.native_calibration(
                engine,
                native_methods,
                images=images,
                inputs=inputs,
                n=n,
                seed=seed,
                batch=batch,
                preset=preset,
                preprocess=preprocess,
                workers=workers,
                run_dir=run_dir,
                tensors=tensors,
            )
        finally:
            progress.finish()
        out.native_labels = set(native_sets)
        out.range_sets.update(native_sets)
        out.range_info.update(native_info)
        out.notes.extend(native_notes)
    return out
