"""The CPU INT8 flavours against ONNX Runtime's own INT8 models: latency timed round-robin in one process,
and what each timed model gives on the held-out samples.

For each zoo model (``benchmarks/zoo_models.py``; samples written under ``WORK`` as ``benchmarks/zoo.py``
writes them, one shape per model):

* ``quantbench.run`` with minmax ranges, without bias correction, once per ``--cpu-flavour``: ``exact``
  (the judged Q/DQ model's quantized values) and ``fast`` (more tensors quantized,
  ``quantbench/export/onnxruntime_fast.py``); both write the same judged model
  (``models/int8-minmax.onnx``) and time their ``models/int8-minmax.onnxruntime.onnx``; with
  ``--equalize``, also both of the model with cross-layer equalization (its own judged model);
* ONNX Runtime's ``quantize_static`` with its own CPU settings (``benchmarks/zoo_peers.py``): uint8
  asymmetric activations, int8 per-channel weights, MinMax, every operator type it knows (its fastest
  model), in QDQ and in QOperator format.

Every timed model runs with ONNX Runtime's default graph optimizations, ``--threads`` intra-op threads
that do not spin while waiting (as quantbench's own timing runs them: a pool left spinning after its run
takes the cores from the next model and, on 2 cores, doubled every time here), batch 1 (one held-out
sample), in one process, round-robin: each round runs every model once, starting one
model later than the round before; the table gives the median of ``--rounds`` rounds and its ratio to
FP32's. Each model's task figure against FP32 (``zoo_models.agreement``) and relative L2 of the main
output are measured on the held-out samples as it is timed; quantbench's judged model (as written, every
optimization off) is scored too, since that is the figure its verdict reports. For ``fast``, the number
of tensors it rounds that the judged model keeps in float comes from ``results.json``.

Usage:  python benchmarks/cpu_flavour.py WORK [--models NAME ...] [--calibration 32] [--held-out 16]
                                              [--rounds 60] [--threads 2] [--seed 0] [--equalize]
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
from benchmarks.measure import latency  # noqa: E402
from benchmarks.zoo_models import ZOO, ZooModel, session, write_samples  # noqa: E402
from benchmarks.zoo_peers import PeerSettings, evaluate, fp32_reference, quantize_peer  # noqa: E402

FLAVOURS = ("exact", "fast")
PEERS = {"ORT uint8 QDQ": "QDQ", "ORT uint8 QOperator": "QOperator"}


def quantbench_models(model: ZooModel, fp32: Path, folders: dict[str, Path], out: Path, options: Any) -> dict:
    """One ``quantbench.run`` per CPU flavour: the model each times, the judged model, its roundings."""
    import quantbench

    found: dict[str, Any] = {}
    for flavour in flavours(options):
        result = quantbench.run(
            fp32, folders["calibration"], n=options.calibration, eval_images=folders["held_out"],
            eval_n=options.held_out, methods=["minmax"], precisions=["fp32", "int8"], bias_correction=False,
            cpu_flavour=flavour.split(",")[0], equalize=flavour.endswith("equalized"), bench_runs=1,
            bench_seconds=0, threads=options.threads, task_option=list(model.task_options),
            out=out / flavour.replace(", ", "-"),
        )  # fmt: skip
        run_dir = Path(result.run_dir)
        variant = json.loads((run_dir / "results.json").read_text())["variants"][1]
        found[flavour] = {
            "timed": run_dir / variant["cpu_model"],
            "judged": run_dir / variant["model"],
            "rounded": variant["cpu_flavour"].get("tensors_rounded", 0),
        }
    return found


def flavours(options: Any) -> list[str]:
    """``exact``, ``fast`` and, with ``--equalize``, both again of the model with cross-layer equalization."""
    return [*FLAVOURS, *([f"{f}, equalized" for f in FLAVOURS] if options.equalize else [])]


def bench_model(name: str, work: Path, options: Any) -> list[dict[str, Any]]:
    """Every model of one zoo model built, timed round-robin and scored: one row each."""
    model = ZOO[name]
    folders = write_samples(model, work / name, options.calibration, options.held_out, options.seed)
    fp32 = model.locate(work)
    ours = quantbench_models(model, fp32, folders, work / name / "runs", options)
    timed = {"FP32": fp32, **{f"quantbench {f}": ours[f]["timed"] for f in flavours(options)}}
    for label, layout in PEERS.items():
        path = work / name / "peers" / f"uint8-{layout}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        settings = PeerSettings(method="MinMax", activations="uint8", quant_format=layout)  # type: ignore[arg-type]
        quantize_peer(fp32, folders["calibration"], path, settings)
        timed[label] = path
    reference = fp32_reference(model, fp32, folders["held_out"], options.threads)
    sessions = {label: session(path, options.threads, spinning=False) for label, path in timed.items()}
    feeds = reference["arrays"][0][None]
    ms = latency(sessions, feeds, options.rounds, 1)
    del sessions
    judged = evaluate(model, ours["exact"]["judged"], reference, options.threads, optimize=False)
    rows = []
    for label, path in timed.items():
        scores = {} if label == "FP32" else evaluate(model, path, reference, options.threads)
        rounded = next((ours[f]["rounded"] for f in flavours(options) if label == f"quantbench {f}"), None)
        rows.append(
            {
                "model": name,
                "timed": label,
                "ms": ms[label],
                "speed": ms["FP32"] / ms[label],
                "scores": scores,
                "rounded": rounded,
            }
        )
    rows[0]["judged"] = judged  # quantbench's judged Q/DQ model, the same for both flavours
    return rows


def _task(scores: dict[str, float]) -> str:
    key = next((k for k in ("top1", "f1", "exact") if k in scores), None)
    return "-" if key is None else f"{key} {100 * scores[key]:.1f} %"


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of every row."""
    lines = [
        "| model | timed model | ms / batch | x FP32 | task vs FP32 | rel. L2 | extra roundings |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        scores = row["scores"]
        rel = f"{scores['rel_l2']:.3f}" if "rel_l2" in scores else "-"
        rounded = "-" if row["rounded"] is None else str(row["rounded"])
        lines.append(
            f"| {row['model']} | {row['timed']} | {row['ms']:.2f} | {row['speed']:.2f}x | {_task(scores)} | "
            f"{rel} | {rounded} |"
        )
        if "judged" in row:
            judged = row["judged"]
            lines.append(
                f"| {row['model']} | (quantbench judged Q/DQ, as written) | - | - | {_task(judged)} | "
                f"{judged['rel_l2']:.3f} | - |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--models", nargs="*", default=list(ZOO), choices=list(ZOO))
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--held-out", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--equalize", action="store_true", help="also both flavours of the model with --equalize"
    )
    options = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for name in options.models:
        rows.extend(bench_model(name, options.work, options))
        print(table([r for r in rows if r["model"] == name]), flush=True)
    print()
    print(table(rows))
    (options.work / "cpu_flavour.json").write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
