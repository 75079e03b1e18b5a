"""Automatic mixed precision on the sample CNN: fidelity and speed at several top-1 agreement targets.

On the sample model (EfficientNet-Lite0, preset inception) and its photos, ``quantbench.run`` with
``--target-agreement T`` for each target (95, 98, 99 by default), ``--calib`` calibration images and the
next ``--eval`` held-out ones, one method. Each run calibrates, ranks the quantized nodes by sensitivity
(only-this-node-quantized view on the first ``--ranking-n`` held-out images) and searches the smallest
number of them to keep in float; the time that took comes from the run.

Every model is then run here on the same held-out images (same order, batch 8): top-1 agreement with
FP32 and relative L2 error of the logits are recomputed with plain numpy and must match the runs'
results.json within 1e-3. The search picks the number of nodes on those held-out images, so their
figures are the ones it was chosen on; the models also run on ``--fresh`` further images of the sample
that neither calibration nor the search saw. Latency is timed round-robin over all models in this one process
(``--rounds`` rounds of ``--runs`` runs each, after a warm-up), the median over all runs, batch
``--batch``: FP32, the plain INT8 model and the mixed ones side by side.

Usage:  python benchmarks/sensitivity.py [--images 700] [--calib 100] [--eval 300] [--fresh 300]
                                         [--method entropy]
                                         [--targets 95,98,99] [--ranking-n 32] [--batch 1] [--threads 0]
                                         [--rounds 5] [--runs 20] [--seed 0] [--work DIR]
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import PRESET, fidelity, latency, logits, samples, session  # noqa: E402

TOLERANCE = 1e-3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=700, help="photos in the sample (default 700)")
    parser.add_argument("--calib", type=int, default=100, help="calibration images (default 100)")
    parser.add_argument("--eval", type=int, default=300, help="held-out images (default 300)")
    parser.add_argument("--fresh", type=int, default=300, help="images no step saw (default 300)")
    parser.add_argument("--method", default="entropy", help="calibration method (default entropy)")
    parser.add_argument(
        "--targets", default="95,98,99", help="top-1 agreement targets, %% (default 95,98,99)"
    )
    parser.add_argument("--ranking-n", type=int, default=32, help="images the ranking runs on (default 32)")
    parser.add_argument("--batch", type=int, default=1, help="batch size timed (default 1)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (default 0: every core)")
    parser.add_argument("--rounds", type=int, default=5, help="round-robin timing rounds (default 5)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each model a round (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="sample photos and image order (default 0)")
    parser.add_argument(
        "--work", type=Path, help="folder for the sample and runs, kept (default: a temp dir)"
    )
    args = parser.parse_args()
    if args.work is None:
        with tempfile.TemporaryDirectory(prefix="quantbench-sensitivity-") as tmp:
            benchmark(args, Path(tmp))
    else:
        benchmark(args, args.work)


def benchmark(args: argparse.Namespace, work: Path) -> None:
    import onnxruntime as ort

    import quantbench
    from quantbench.errors import QuantbenchError
    from quantbench.report.results import cpu_name

    sys.path.insert(0, str(ROOT))
    from sample.make_sample import make_sample

    model, images = make_sample(work / "sample", images=args.images, seed=args.seed)
    targets = [float(t) for t in args.targets.split(",") if t.strip()]

    # 1. one run per target: calibration, ranking, search, comparison
    runs: dict[float, dict] = {}
    failures: dict[float, str] = {}
    for target in targets:
        started = time.perf_counter()
        try:
            result = quantbench.run(
                model, images, n=args.calib, seed=args.seed, eval_n=args.eval, preset=PRESET,
                precisions=["fp32", "int8"], methods=[args.method], target_agreement=target,
                sensitivity_n=args.ranking_n, out=work / "runs", threads=args.threads,
                bench_batch=[args.batch], bench_runs=1, bench_seconds=0.0,
            )  # fmt: skip
        except QuantbenchError as exc:
            failures[target] = str(exc)
            continue
        runs[target] = {"result": result, "seconds": time.perf_counter() - started}
    if not runs:
        raise SystemExit("no target could be met:\n" + "\n".join(failures.values()))

    first = next(iter(runs.values()))["result"]
    held_out = first.results["data"]["evaluation"]["names"]
    calib = first.results["data"]["calibration"]["used"]
    assert len(calib) == args.calib and len(held_out) == args.eval, (len(calib), len(held_out))
    assert not set(calib) & set(held_out), "evaluated on calibration images"
    variants = {v["name"]: v for v in first.results["variants"]}
    plain_name = f"int8-{args.method}"
    paths = {"fp32": model, "int8": first.run_dir / variants[plain_name]["cpu_model"]}
    plain_bytes = paths["int8"].read_bytes()
    for target, info in runs.items():
        result = info["result"]
        assert result.results["data"]["evaluation"]["names"] == held_out, "held-out images differ"
        mine = {v["name"]: v for v in result.results["variants"]}
        assert (result.run_dir / mine[plain_name]["cpu_model"]).read_bytes() == plain_bytes, (
            "plain INT8 differs"
        )
        info["variant"] = mine[f"{plain_name}-mixed"]
        paths[f"mixed {target:g}"] = result.run_dir / info["variant"]["cpu_model"]

    # 2. fidelity recomputed on the held-out images, batch 8
    sessions = {key: session(path, args.threads) for key, path in paths.items()}
    data = samples(model, images, held_out)
    reference = logits(sessions["fp32"], data)
    scores = {key: fidelity(logits(sess, data), reference) for key, sess in sessions.items() if key != "fp32"}
    scores["fp32"] = (1.0, 0.0)
    output = sessions["fp32"].get_outputs()[0].name
    worst = 0.0
    checks = [("int8", variants[plain_name])] + [(f"mixed {t:g}", i["variant"]) for t, i in runs.items()]
    for key, variant in checks:
        theirs = variant["outputs"][output]
        worst = max(
            worst, abs(scores[key][0] - theirs["top1_agreement"]), abs(scores[key][1] - theirs["rel_l2"])
        )
    if worst > TOLERANCE:
        raise SystemExit(f"recomputed fidelity differs from results.json by {worst:.3g}")
    for target in runs:
        assert scores[f"mixed {target:g}"][0] >= target / 100 - 1e-9, f"target {target} not met"
    seen = set(calib) | set(held_out)
    fresh_names = sorted(
        name for name in (p.relative_to(images).as_posix() for p in images.rglob("*.*")) if name not in seen
    )
    fresh_names = fresh_names[: args.fresh]
    fresh = {"fp32": (1.0, 0.0)}
    if fresh_names:
        fresh_data = samples(model, images, fresh_names)
        fresh_reference = logits(sessions["fp32"], fresh_data)
        fresh.update(
            {
                key: fidelity(logits(sess, fresh_data), fresh_reference)
                for key, sess in sessions.items()
                if key != "fp32"
            }
        )

    # 3. latency, round-robin over every model
    feeds = np.ascontiguousarray(data[np.arange(args.batch) % len(data)])
    ms = latency(sessions, feeds, args.rounds, args.runs)

    # 4. the table
    total = len(first.results["sensitivity"]["ranking"]) if first.results.get("sensitivity") else "?"
    print(
        f"\n{args.eval} held-out images, {args.calib} calibration images ({args.method}), ranking on the "
        f"first {args.ranking_n}; batch {args.batch} timed\n"
    )
    print(
        "| model | target | nodes in float | top-1 agreement | relative L2 | ms/batch | × FP32 speed "
        f"| × INT8 speed | search s | top-1 on {len(fresh_names)} fresh images |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = [
        ("FP32 (reference)", "fp32", "-", str(total), "-"),
        (f"INT8 {args.method}", "int8", "-", "0", "-"),
    ]
    for target, info in runs.items():
        details = info["variant"]["mixed_precision"]
        kept = str(len(details["kept_in_float"]))
        rows.append(
            (f"mixed, {args.method}", f"mixed {target:g}", f"{target:g}%", kept, details["seconds"]["total"])
        )
    for label, key, target_text, kept, took in rows:
        top1, l2 = scores[key]
        took_text = f"{took:.0f}" if isinstance(took, float) else took
        fresh_text = f"{100 * fresh[key][0]:.1f}%" if key in fresh else "-"
        print(
            f"| {label} | {target_text} | {kept} | {100 * top1:.1f}% | {l2:.4f} | {ms[key]:.2f} "
            f"| {ms['fp32'] / ms[key]:.2f}× | {ms['int8'] / ms[key]:.2f}× | {took_text} | {fresh_text} |"
        )
    for target in failures:
        print(f"| mixed, {args.method} | {target:g}% | out of reach | - | - | - | - | - | - | - |")
    print()
    for target, info in runs.items():
        details = info["variant"]["mixed_precision"]
        seconds = details["seconds"]
        print(
            f"target {target:g}%: kept {', '.join(details['kept_in_float']) or 'none'}; "
            f"{details['candidates']} candidates on {details['search_samples']} images, "
            f"{details['models_evaluated']} models built; FP32 reference {seconds['reference']:.1f} s, "
            f"ranking {seconds['ranking']:.1f} s, search {seconds['search']:.1f} s; "
            f"whole run {info['seconds']:.0f} s"
        )
    for target, message in failures.items():
        print(f"target {target:g}%: {message}")
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, onnxruntime {ort.__version__}, "
        f"threads {args.threads or 'all'}; max |Δ| between recomputed figures and results.json {worst:.2g}"
    )


if __name__ == "__main__":
    main()
