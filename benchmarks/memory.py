"""Peak resident memory of ``quantbench run`` step by step, on the zoo's models.

For each model of ``--models`` (``benchmarks/zoo_models.py``), the zoo's samples are written under WORK
(``--calibration`` and ``--held-out`` of them, one shape per model) and ``quantbench.run`` runs on them in a
fresh process, with a thread that reads the process's resident set size (``VmRSS``) every 0.1 s and
quantbench's progress naming the step; the table gives the largest value seen in each step and the
process's peak (``VmHWM``), with the run's wall time.

``--det-side N`` writes PP-OCR det's samples as square pages of N pixels instead (rapidocr keeps a page
whose shorter side is at least 736 as it is, so 736 to 1152 are its native sizes for such pages).

Usage:  python benchmarks/memory.py WORK [--models ppocr_det ...] [--calibration 40] [--held-out 8]
                                        [--methods minmax] [--weight-rounding nearest]
                                        [--no-bias-correction] [--det-side 1152] [--batch N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def resident_mib() -> float:
    """This process's resident set size now, in MiB (``VmRSS``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """One run in this process, sampled; per step, the largest resident size seen."""
    import quantbench
    from benchmarks.zoo_models import ZOO
    from benchmarks.zoo_peers import peak_mib
    from quantbench.progress import Progress

    step, peaks, done = ["start"], {}, threading.Event()

    def sample() -> None:
        while not done.is_set():
            peaks[step[0]] = max(peaks.get(step[0], 0.0), resident_mib())
            time.sleep(0.1)

    class Steps(Progress):
        def start(self, name: str, total: int | None = None) -> None:
            step[0] = name

        def advance(self, count: int = 1) -> None:
            pass

        def finish(self) -> None:
            pass

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    model = ZOO[job["model"]]
    started = time.perf_counter()
    quantbench.run(
        model.locate(Path(job["work"])), job["calibration"], n=job["n"], eval_images=job["held_out"],
        eval_n=job["eval_n"], methods=job["methods"], precisions=["fp32", "int8"],
        bias_correction=job["bias_correction"], weight_rounding=job["weight_rounding"], bench_runs=1,
        bench_seconds=0, task_option=list(model.task_options), out=Path(job["out"]), progress=Steps(),
        batch=job.get("batch"),
    )  # fmt: skip
    done.set()
    thread.join()
    return {"steps": peaks, "peak_mib": peak_mib(), "seconds": time.perf_counter() - started}


def det_pages(out: Path, side: int, calibration: int, held_out: int, seed: int = 0) -> dict[str, Path]:
    """PP-OCR det samples, square pages of ``side`` pixels (a multiple of 32), as ``.npy`` folders."""
    import cv2
    import numpy as np

    from benchmarks.zoo_models import _sample_rng, det_input, split_seed, text_page

    folders = {}
    for split, count in (("calibration", calibration), ("held_out", held_out)):
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.npy"):
            stale.unlink()
        for i in range(count):
            page, _ = text_page(_sample_rng(split_seed(seed, split), i))
            np.save(folder / f"{i:04d}.npy", det_input(cv2.resize(page, (side, side))))
        folders[split] = folder
    return folders


def main(argv: list[str] | None = None) -> None:
    from benchmarks.zoo_models import ZOO, write_samples

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", nargs="?", type=Path)
    parser.add_argument("--models", nargs="*", default=["ppocr_det"], choices=list(ZOO))
    parser.add_argument("--calibration", type=int, default=40)
    parser.add_argument("--held-out", type=int, default=8)
    parser.add_argument("--methods", default="minmax")
    parser.add_argument("--weight-rounding", default="nearest")
    parser.add_argument("--no-bias-correction", action="store_true")
    parser.add_argument("--det-side", type=int, help="PP-OCR det pages of this many pixels a side")
    parser.add_argument("--batch", type=int, help="quantbench's --batch (default: its own choice)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.work is None:
        parser.error("give WORK")
    print("| model | step | peak MiB |")
    print("|---|---|---|")
    for name in args.models:
        if name == "ppocr_det" and args.det_side:
            folders = det_pages(args.work / name, args.det_side, args.calibration, args.held_out)
        else:
            folders = write_samples(ZOO[name], args.work / name, args.calibration, args.held_out, 0)
        (args.work / "runs").mkdir(parents=True, exist_ok=True)
        job = {
            "model": name, "work": str(args.work), "calibration": str(folders["calibration"]),
            "held_out": str(folders["held_out"]), "n": args.calibration, "eval_n": args.held_out,
            "methods": args.methods.split(","), "bias_correction": not args.no_bias_correction,
            "weight_rounding": args.weight_rounding, "out": str(args.work / "runs"), "batch": args.batch,
        }  # fmt: skip
        command = [sys.executable, __file__, "--worker", json.dumps(job)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        label = f"{name} ({args.det_side} px)" if name == "ppocr_det" and args.det_side else name
        for step, peak in measured["steps"].items():
            print(f"| {label} | {step} | {peak:.0f} |")
        whole = f"**whole run** (VmHWM; {measured['seconds']:.0f} s)"
        print(f"| {label} | {whole} | {measured['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
