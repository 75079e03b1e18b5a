"""What each fitted step of ``quantbench run`` costs on the zoo, against the rest of the run.

For each zoo model (``benchmarks/zoo_models.py``; samples written under ``WORK`` as ``benchmarks/zoo.py``
writes them), ``quantbench.run`` with the four calibration methods, FP32 and INT8, in a fresh process per
run (``benchmarks.zoo.run_quantbench``), one run per setting:

* ``plain``: nearest rounding, no bias correction, nothing else: the rest of the run;
* one fitted step at a time: ``--bias-correction``, ``--weight-rounding adaptive``, ``--range-search``,
  ``--equalize``, ``--activation-offsets``;
* ``all but equalization``: adaptive rounding, bias correction, range search and activation offsets
  together (equalization lowers some of their figures on the zoo, see the README).

A step's cost is its run's wall time less ``plain``'s (the same samples, run one after the other); the
table gives it beside ``plain``'s, and each run's peak resident memory. Machines here are noisy: run it
idle, and read differences under a few seconds as noise.

Usage:  python benchmarks/steps.py WORK [--models NAME ...] [--calibration 100] [--held-out 64]
                                        [--bench-runs 5] [--threads 0] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks.zoo import Options, Setup, run_quantbench  # noqa: E402
from benchmarks.zoo_models import ZOO, write_samples  # noqa: E402

SETTINGS = {
    "plain": Setup("nearest", False),
    "bias correction": Setup("nearest", True),
    "adaptive rounding": Setup("adaptive", False),
    "range search": Setup("nearest", False, search=True),
    "equalization": Setup("nearest", False, equalize=True),
    "activation offsets": Setup("nearest", False, offsets=True),
    "all but equalization": Setup("adaptive", True, offsets=True, search=True),
}


def bench_model(name: str, work: Path, options: Options) -> dict[str, Any]:
    """Every setting of :data:`SETTINGS` run on one zoo model: wall seconds and peak MiB by setting."""
    model = ZOO[name]
    folders = write_samples(model, work / name, options.calibration, options.held_out, options.seed)
    fp32 = model.locate(work)
    found: dict[str, Any] = {"model": name}
    for label, setup in SETTINGS.items():
        measured = run_quantbench(model, fp32, folders, work / name / "steps", setup, options)
        found[label] = {"seconds": measured["wall_seconds"], "peak_mib": measured["peak_mib"]}
        print(f"{name}: {label} {measured['wall_seconds']:.1f} s, {measured['peak_mib']:.0f} MiB", flush=True)
    return found


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table: ``plain``'s seconds, then each step's extra seconds; the largest peak."""
    steps = [label for label in SETTINGS if label != "plain"]
    lines = [
        "| model | plain (s) | " + " | ".join(f"+ {label}" for label in steps) + " | peak MiB |",
        "|---" * (len(steps) + 3) + "|",
    ]
    for row in rows:
        plain = row["plain"]["seconds"]
        extra = [f"{row[label]['seconds'] - plain:+.1f}" for label in steps]
        peak = max(row[label]["peak_mib"] for label in SETTINGS)
        lines.append(f"| {row['model']} | {plain:.1f} | " + " | ".join(extra) + f" | {peak:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--models", nargs="*", default=list(ZOO), choices=list(ZOO))
    parser.add_argument("--calibration", type=int, default=100)
    parser.add_argument("--held-out", type=int, default=64)
    parser.add_argument("--bench-runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    options = Options(
        calibration=args.calibration,
        held_out=args.held_out,
        seed=args.seed,
        bench_runs=args.bench_runs,
        threads=args.threads,
    )
    rows = [bench_model(name, args.work, options) for name in args.models]
    print()
    print(table(rows))
    (args.work / "steps.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
