"""What a calibration pass can cost at best: ONNX Runtime's exposed pass, reading its tensors, folding them.

In one process, on decoded images of the sample (no decoding timed), at the batch the calibration would
feed, with numba's kernel loaded, round-robin over ``--rounds`` rounds (the fastest of each kept):

* the exposed pass: ONNX Runtime returning every float tensor, as the collection runs it (wall time and
  the process's CPU time);
* the same, then one thread reading every returned tensor once (the largest magnitude's bit pattern, a
  vectorized loop): what merely reading the activations back costs;
* the same, then one thread folding every tensor into its histogram (the collection's kernel);
* the collection itself (``collect_histograms``, its threads overlapping ONNX Runtime where memory
  allows).

From these: the nanoseconds a value of reading and of folding on one core, and the best the collection
could do on this machine if ONNX Runtime's CPU time and the folding's were spread over every core with no
wait at all: ``(exposed pass CPU + folding CPU) / cores``, as a multiple of the exposed pass's wall time.

Usage:  python benchmarks/collection_floor.py [--sample DIR] [--n 40] [--rounds 3]
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
PRESET = "inception"


def _cpu() -> float:
    """CPU seconds of this process so far (every thread)."""
    times = os.times()
    return times.user + times.system


def _reader() -> Callable[[np.ndarray], int]:
    """A compiled loop that reads int32 values once and returns the largest magnitude's bit pattern."""
    import numba

    @numba.njit(nogil=True, boundscheck=False)
    def peak(bits: np.ndarray) -> int:
        top = np.int32(0)
        for j in range(bits.size):
            magnitude = bits[j] & np.int32(0x7FFFFFFF)
            if magnitude > top:
                top = magnitude
        return int(top)

    peak(np.zeros(8, np.int32))
    return peak  # type: ignore[no-any-return]


Figures = tuple[float, float, float]
"""Wall seconds, CPU seconds, and the seconds spent after the runs, in line."""


def _passes(
    exposure: Any, feeds: list[dict[str, np.ndarray]], names: list[str]
) -> dict[str, Callable[[], Figures]]:
    """The four measurements, each a function returning its :data:`Figures`."""
    from quantbench.calibration.collect import collect_histograms
    from quantbench.calibration.histograms import TensorHistogram

    read = _reader()

    def run(after: Callable[[dict], None] | None) -> Figures:
        started, cpu, extra = time.perf_counter(), _cpu(), 0.0
        for feed in feeds:
            for values in exposure.runs(feed):
                if after is not None:
                    began = time.perf_counter()
                    after(values)
                    extra += time.perf_counter() - began
        return time.perf_counter() - started, _cpu() - cpu, extra

    def reading(values: dict) -> None:
        for array, _ in values.values():
            read(np.ascontiguousarray(array).reshape(-1).view(np.int32))

    hists = {name: TensorHistogram() for name in names}

    def folding(values: dict) -> None:
        for name, (array, _) in values.items():
            hists[name].update(array)

    def collection() -> Figures:
        started, cpu = time.perf_counter(), _cpu()
        collect_histograms(exposure, iter(feeds))
        return time.perf_counter() - started, _cpu() - cpu, 0.0

    return {
        "exposed": lambda: run(None),
        "read": lambda: run(reading),
        "fold": lambda: run(folding),
        "collection": collection,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=ROOT / ".bench" / "sample")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from quantbench.calibration import _kernels
    from quantbench.calibration.calibrate import batch_size_for
    from quantbench.calibration.exposure import Exposure, tensor_bytes
    from quantbench.config import PreprocessSpec
    from quantbench.data import open_dataset
    from quantbench.model import float_activations, input_specs, load_model
    from sample.make_sample import make_sample

    model_path, images = make_sample(args.sample, images=args.n)
    proto = load_model(model_path)
    specs = input_specs(proto)
    inputs = [spec.name for spec in specs]
    names = [name for name in float_activations(proto) if name not in inputs]
    dataset = open_dataset(images, specs, PreprocessSpec(preset=PRESET))
    one = next(iter(dataset.batches(1, 0, 1))).inputs
    per_sample = sum(tensor_bytes(proto, {k: v.shape for k, v in one.items()}, names))
    batch = batch_size_for(None, None, per_sample)
    feeds = [b.inputs for b in dataset.batches(args.n, 0, batch)]
    _kernels.warm_up()
    if _kernels.kernel() is None:
        raise SystemExit("numba is not installed: pip install -e .[fast]")
    exposure = Exposure(proto, names, inputs)
    passes = _passes(exposure, feeds, names)
    for measure in passes.values():  # warm: sessions made, allocator and caches settled
        measure()
    best: dict[str, Figures] = {}
    for _ in range(max(1, args.rounds)):
        for key, measure in passes.items():
            figures = measure()
            if key not in best or figures[0] < best[key][0]:
                best[key] = figures
    values = args.n * per_sample // 4
    cores = os.cpu_count() or 1
    exposed_wall, exposed_cpu, _ = best["exposed"]
    read_ns = best["read"][2] / values * 1e9
    fold_ns = best["fold"][2] / values * 1e9
    bound = (exposed_cpu + best["fold"][2]) / cores
    print(
        f"machine: {platform.processor() or platform.machine()}, {cores} cores, Python "
        f"{platform.python_version()}; model: {model_path.name}, {len(names)} tensors, "
        f"{per_sample / 4 / 1e6:.1f} M values a sample; {args.n} images, batch {batch}; best of "
        f"{args.rounds} rounds\n"
    )
    print("| measured | wall s | CPU s | on one core after the runs | x exposed pass (wall) |")
    print("|---|---|---|---|---|")
    rows = [
        ("exposed pass (ONNX Runtime)", best["exposed"], "-"),
        ("exposed pass, then reading every tensor once", best["read"], f"{read_ns:.2f} ns a value"),
        ("exposed pass, then folding every tensor", best["fold"], f"{fold_ns:.2f} ns a value"),
        ("the collection (its threads)", best["collection"], "-"),
    ]
    for label, (wall, cpu, _), serial in rows:
        print(f"| {label} | {wall:.3f} | {cpu:.3f} | {serial} | {wall / exposed_wall:.2f}x |")
    print(
        f"| best possible: (exposed CPU + folding) / {cores} cores | {bound:.3f} | - | - | "
        f"{bound / exposed_wall:.2f}x |"
    )


if __name__ == "__main__":
    main()
