"""Calibration speed and memory: quantbench vs ONNX Runtime's quantize_static, side by side.

Each measurement runs in its own process (peak memory is that process's own),
one after another in one run, on the sample model and photos:

* quantbench calibrate, all four methods, histograms collected afresh, with the
  compiled histogram kernel (numba) when it is installed, and again with the
  numpy/OpenCV path (``QUANTBENCH_HISTOGRAM_KERNEL=numpy``), and with the
  quantbench package of ``--baseline DIR`` if given;
* onnxruntime.quantization.quantize_static, CalibrationMethod.Entropy and .MinMax
  (symmetric int8 activations, as TensorRT wants), fed the same preprocessed images;
* the bare FP32 inference of the same images (the floor), and the same with every
  float tensor exposed as an output (what a calibration pass has to read).

Usage:  python benchmarks/calibration.py [--sample DIR] [--counts 100,400] [--baseline DIR] [--repeat N]
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from quantbench.config import PreprocessSpec

ROOT = Path(__file__).resolve().parent.parent
PRESET = "inception"


def _images(model: Path, images: Path, n: int) -> list:
    from quantbench.data import open_dataset
    from quantbench.model import input_specs, load_model

    dataset = open_dataset(images, input_specs(load_model(model)), PreprocessSpec(preset=PRESET))
    return [batch.inputs for batch in dataset.batches(n, 0, 1)]


def worker(tool: str, model: Path, images: Path, n: int) -> dict:
    """Run one tool; return its seconds (and extra figures). Runs in a child process."""
    if tool in ("quantbench", "quantbench-numpy", "quantbench-baseline"):
        # imported before the clock starts, as quantize_static's modules are below
        import quantbench.calibration.collect
        import quantbench.data
        import quantbench.model  # noqa: F401  (imports onnx, as quantize_static's modules do)
        from quantbench import calibrate

        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            result = calibrate(
                model,
                images,
                n=n,
                methods=["entropy", "minmax", "percentile", "mse"],
                preset=PRESET,
                out=out,
                force=True,
            )
            seconds = time.perf_counter() - started
            return {"seconds": seconds, "collect_seconds": result.collect_seconds, "kernel": _kernel_used()}
    if tool.startswith("ort-"):
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.feeds = iter(_images(model, images, n))  # decoded inside the timed call

            def get_next(self):  # type: ignore[no-untyped-def]
                return next(self.feeds, None)

        method = {"ort-entropy": CalibrationMethod.Entropy, "ort-minmax": CalibrationMethod.MinMax}[tool]
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            quantize_static(
                str(model),
                str(Path(out) / "int8.onnx"),
                Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
            )
            return {"seconds": time.perf_counter() - started}
    if tool in ("fp32", "fp32-exposed"):
        from quantbench.calibration.exposure import open_session
        from quantbench.model import expose_tensors, float_activations, load_model

        proto = load_model(model)
        names = [t for t in float_activations(proto) if t != "input"] if tool == "fp32-exposed" else None
        session = open_session((expose_tensors(proto, names) if names else proto).SerializeToString())
        feeds = _images(model, images, n)
        best = float("inf")
        for _ in range(3):  # a floor: the best of three passes
            started = time.perf_counter()
            for feed in feeds:
                session.run(names, feed)
            best = min(best, time.perf_counter() - started)
        return {"seconds": best}
    raise SystemExit(f"unknown tool {tool}")


def _kernel_used() -> str:
    """The histogram path that the pass ended on (asked after the clock: numba loads within the pass)."""
    try:
        from quantbench.calibration._kernels import kernel
    except ImportError:  # a --baseline tree from before the compiled kernel
        return "numpy"
    return "numba" if kernel() is not None else "numpy"


def measure(tool: str, model: Path, images: Path, n: int, baseline: Path | None = None) -> dict:
    """Run ``tool`` in a fresh process; its result plus that process's peak memory (MiB)."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        tool,
        "--model",
        str(model),
        "--images",
        str(images),
        "--n",
        str(n),
    ]
    env = dict(os.environ)
    if tool == "quantbench-numpy":
        env["QUANTBENCH_HISTOGRAM_KERNEL"] = "numpy"
    if tool == "quantbench-baseline" and baseline is not None:
        env["PYTHONPATH"] = str(baseline.resolve())  # its quantbench package shadows this one
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    output = process.stdout.read() if process.stdout else ""
    if status != 0:
        raise SystemExit(f"{tool} failed:\n{output}")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_mib"] = usage.ru_maxrss / 1024
    return result


def _measure_rows(
    tools: list[str], model: Path, images: Path, n: int, baseline: Path | None, repeat: int
) -> dict[str, dict]:
    """Each tool's figures: ORT's from one run; the others' from the fastest of ``repeat`` runs,
    interleaved, with the highest peak memory of them."""
    rows: dict[str, dict] = {}
    for run in range(max(1, repeat)):
        for tool in tools:
            if run and tool.startswith("ort-"):
                continue
            result = measure(tool, model, images, n, baseline)
            best = rows.setdefault(tool, result)
            if result["seconds"] < best["seconds"]:
                rows[tool] = {**result, "peak_mib": max(result["peak_mib"], best["peak_mib"])}
            else:
                best["peak_mib"] = max(result["peak_mib"], best["peak_mib"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=ROOT / ".bench" / "sample")
    parser.add_argument("--counts", default="100,400")
    parser.add_argument(
        "--peer-counts",
        default="100",
        help="counts at which ORT runs too (its Entropy keeps every activation: ~25 GB at 400 images)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a folder holding another quantbench package (a copy of an earlier version, say): "
        "its calibrate runs too, as one more row",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each quantbench and FP32 row, interleaved; the fastest is shown, with the "
        "highest peak memory (for a machine that other work shares)",
    )
    parser.add_argument("--worker")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--images", type=Path)
    parser.add_argument("--n", type=int)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.images, args.n)))
        return

    sys.path.insert(0, str(ROOT))
    from sample.make_sample import make_sample

    counts = [int(c) for c in args.counts.split(",")]
    peer_counts = {int(c) for c in args.peer_counts.split(",")}
    model, images = make_sample(args.sample, images=max(counts))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; model: {model.name}; preset {PRESET}\n"
    )
    print("| tool | images | seconds | peak MiB | time vs ORT Entropy | memory vs ORT Entropy at 100 |")
    print("|---|---|---|---|---|---|")
    base: dict = {}
    for n in counts:
        tools = ["quantbench", "quantbench-numpy", "fp32", "fp32-exposed"]
        if args.baseline:
            tools.insert(2, "quantbench-baseline")
        if n in peer_counts:
            tools[1:1] = ["ort-entropy", "ort-minmax"]
        rows = _measure_rows(tools, model, images, n, args.baseline, args.repeat)
        base = rows.get("ort-entropy", base)
        labels = {
            "quantbench": "quantbench calibrate (entropy, minmax, percentile, mse)",
            "quantbench-numpy": "the same, numpy/OpenCV histogram path",
            "quantbench-baseline": f"the same, quantbench from {args.baseline}",
            "ort-entropy": "ORT quantize_static, Entropy",
            "ort-minmax": "ORT quantize_static, MinMax",
            "fp32": "bare FP32 inference (floor)",
            "fp32-exposed": "FP32 inference, every float tensor an output",
        }
        for tool, row in rows.items():
            speed = f"{base['seconds'] / row['seconds']:.1f}x faster" if n in peer_counts else "-"
            memory = f"{row['peak_mib'] / base['peak_mib']:.3f}" if base else "-"
            figures = f"{row['seconds']:.2f} | {row['peak_mib']:.0f} | {speed} | {memory}"
            print(f"| {labels[tool]} | {n} | {figures} |")
        for tool in ("quantbench", "quantbench-numpy", "quantbench-baseline"):
            if tool not in rows:
                continue
            qb = rows[tool]
            source = ", baseline" if tool == "quantbench-baseline" else ""
            print(
                f"| quantbench collection pass alone ({qb['kernel']} path{source}) | {n} | "
                f"{qb['collect_seconds']:.2f} | | "
                f"{qb['collect_seconds'] / rows['fp32']['seconds']:.1f}x the bare pass, "
                f"{qb['collect_seconds'] / rows['fp32-exposed']['seconds']:.1f}x the exposed pass | |"
            )


if __name__ == "__main__":
    main()
