"""INT8 fidelity and speed: quantbench run vs ONNX Runtime's quantize_static, side by side.

One run on one machine, with one ONNX Runtime and one thread setting, on the sample model
(EfficientNet-Lite0, preset inception) and its photos:

* ``quantbench.run``, FP32 and INT8 with every calibration method (entropy, minmax, percentile, mse),
  calibrated on ``--calib`` images and evaluated on the next ``--eval`` (held-out) ones;
* onnxruntime.quantization.quantize_static on the same calibration images, preprocessed by quantbench's
  own dataset code: QDQ, symmetric int8 activations and per-channel int8 weights (as TensorRT wants),
  MinMax and Percentile (99.999, ORT's default), and Entropy with ``--peer-entropy`` (slow, and it keeps
  every activation in memory; with ORT's default 128 bins and 128 quantized bins it keeps the full range,
  as MinMax does). ``quant_pre_process`` runs first, as ORT recommends. Each quantize_static runs in its
  own process, so that its memory is its own and is given back.

Every model is then run here on the same held-out images (same order, batch 8): top-1 agreement with FP32
and relative L2 error of the logits are computed with plain numpy; quantbench's own figures for its
variants must agree with these within 1e-3. Latency is timed round-robin over all models (``--rounds``
rounds of ``--runs`` runs each, after a warm-up), the median over all runs.

Usage:  python benchmarks/run.py [--images 400] [--calib 100] [--eval 300] [--batch 1] [--threads 0]
                                 [--rounds 5] [--runs 20] [--seed 0] [--work DIR] [--peer-entropy]
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import PRESET, fidelity, latency, logits, samples, session  # noqa: E402

METHODS = ["entropy", "minmax", "percentile", "mse"]
PEERS = {"ort-minmax": "MinMax", "ort-percentile": "Percentile", "ort-entropy": "Entropy"}
TOLERANCE = 1e-3


def worker(tool: str, model: Path, images: Path, names_file: Path, out: Path) -> dict:
    """Quantize ``model`` with ORT's quantize_static on the listed images. Runs in a child process."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            calibration = samples(model, images, json.loads(names_file.read_text()))
            self.feeds = iter({"input": sample[None]} for sample in calibration)

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self.feeds, None)

    started = time.perf_counter()
    quantize_static(
        str(model),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=getattr(CalibrationMethod, PEERS[tool]),
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return {"seconds": time.perf_counter() - started}


def quantize_peer(tool: str, model: Path, images: Path, names_file: Path, out: Path) -> dict:
    """Run ``worker`` in a fresh process; its result plus that process's peak memory (MiB)."""
    command = [sys.executable, __file__, "--worker", tool, "--model", str(model), "--image-dir", str(images)]
    command += ["--names", str(names_file), "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{tool} failed (status {status}):\n{output}")
    return {**json.loads(output.strip().splitlines()[-1]), "peak_mib": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=400, help="photos in the sample (default 400)")
    parser.add_argument("--calib", type=int, default=100, help="calibration images (default 100)")
    parser.add_argument("--eval", type=int, default=300, help="held-out images compared (default 300)")
    parser.add_argument("--batch", type=int, default=1, help="batch size timed (default 1)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (default 0: every core)")
    parser.add_argument("--rounds", type=int, default=5, help="round-robin timing rounds (default 5)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each model a round (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="sample photos and image order (default 0)")
    parser.add_argument(
        "--work", type=Path, help="folder for the sample and models, kept (default: a temp dir)"
    )
    parser.add_argument("--peer-entropy", action="store_true", help="also ORT Entropy (slow, memory hungry)")
    for hidden in ("--worker", "--model", "--image-dir", "--names", "--out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(
            json.dumps(
                worker(
                    args.worker, Path(args.model), Path(args.image_dir), *map(Path, (args.names, args.out))
                )
            )
        )
        return
    if args.work is None:
        with tempfile.TemporaryDirectory(prefix="quantbench-run-") as tmp:
            benchmark(args, Path(tmp))
    else:
        benchmark(args, args.work)


def benchmark(args: argparse.Namespace, work: Path) -> None:
    import onnxruntime as ort
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import quantbench
    from quantbench.report.results import cpu_name

    sys.path.insert(0, str(ROOT))
    from sample.make_sample import make_sample

    model, images = make_sample(work / "sample", images=args.images, seed=args.seed)

    # 1. quantbench
    started = time.perf_counter()
    r = quantbench.run(
        model, images, n=args.calib, seed=args.seed, eval_n=args.eval, preset=PRESET,
        precisions=["fp32", "int8"], methods=METHODS, out=work / "quantbench", threads=args.threads,
        bench_batch=[args.batch], bench_runs=1, bench_seconds=0.0,
    )  # fmt: skip
    qb_seconds = time.perf_counter() - started
    calib = r.results["data"]["calibration"]["used"]
    held_out = r.results["data"]["evaluation"]["names"]
    assert len(calib) == args.calib and len(held_out) == args.eval, (len(calib), len(held_out))
    assert not set(calib) & set(held_out), "quantbench evaluated on calibration images"

    # 2. peers, each in its own process, on the same calibration images
    peers_dir = work / "peers"
    peers_dir.mkdir(parents=True, exist_ok=True)
    names_file = peers_dir / "calibration.json"
    names_file.write_text(json.dumps(calib))
    prepared, note = peers_dir / "preprocessed.onnx", "quant_pre_process applied"
    try:
        quant_pre_process(str(model), str(prepared))
    except Exception as exc:
        prepared, note = model, f"quant_pre_process failed ({type(exc).__name__}: {exc}); raw model used"
    tools = ["ort-minmax", "ort-percentile"] + (["ort-entropy"] if args.peer_entropy else [])
    peer_info = {
        tool: quantize_peer(tool, prepared, images, names_file, peers_dir / f"{tool}.onnx") for tool in tools
    }

    # 3. fidelity on the held-out images, same order, batch 8
    paths = {"fp32": model}
    for variant in r.results["variants"]:
        if variant["precision"] == "int8":
            paths[f"quantbench {variant['method'] or variant['name']}"] = r.run_dir / variant["cpu_model"]
    paths.update({f"ORT {PEERS[tool]}": peers_dir / f"{tool}.onnx" for tool in tools})
    sessions = {key: session(path, args.threads) for key, path in paths.items()}
    held = samples(model, images, held_out)
    reference = logits(sessions["fp32"], held)
    scores = {}  # top-1 agreement in %, rel L2
    for key, sess in sessions.items():
        if key != "fp32":
            agreement, rel_l2 = fidelity(logits(sess, held), reference)
            scores[key] = (100.0 * agreement, rel_l2)
    scores["fp32"] = (100.0, 0.0)

    output = sessions["fp32"].get_outputs()[0].name
    mismatches, worst = [], [0.0, 0.0]
    for variant in r.results["variants"]:
        key = f"quantbench {variant['method'] or variant['name']}"
        if key in scores:
            theirs = variant["outputs"][output]
            d_top1 = abs(scores[key][0] / 100.0 - theirs["top1_agreement"])
            d_l2 = abs(scores[key][1] - theirs["rel_l2"])
            worst = [max(worst[0], d_top1), max(worst[1], d_l2)]
            if d_top1 > TOLERANCE or d_l2 > TOLERANCE:
                mismatches.append(f"{key}: recomputed {scores[key]}, results.json {theirs}")

    # 4. latency, round-robin over every model
    feeds = np.ascontiguousarray(held[np.arange(args.batch) % len(held)])
    ms = latency(sessions, feeds, args.rounds, args.runs)

    # 5. the table
    labels = {"fp32": "FP32 (reference)"}
    labels.update(
        {key: f"quantbench run, {key.split(' ', 1)[1]}" for key in paths if key.startswith("quantbench")}
    )
    labels.update(
        {key: f"ORT quantize_static, {key.split(' ', 1)[1]}" for key in paths if key.startswith("ORT")}
    )
    print(f"\n{args.eval} held-out images, {args.calib} calibration images, batch {args.batch} timed\n")
    print("| tool / method | top-1 agreement with FP32 | relative L2 | ms/batch | × FP32 speed |")
    print("|---|---|---|---|---|")
    for key in paths:
        top1, l2 = scores[key]
        print(f"| {labels[key]} | {top1:.1f}% | {l2:.4f} | {ms[key]:.2f} | {ms['fp32'] / ms[key]:.2f}× |")
    print()
    for index, figure, pick, fmt in (
        (0, "top-1 agreement", max, "{:.1f}%"),
        (1, "relative L2", min, "{:.4f}"),
    ):
        qb, peer = (
            pick((k for k in paths if k.startswith(side)), key=lambda k: scores[k][index])
            for side in ("quantbench", "ORT")
        )
        value = {k: fmt.format(scores[k][index]) for k in (qb, peer)}
        print(f"best {figure}: {qb} ({value[qb]}); best peer: {peer} ({value[peer]})")
    quantize = ", ".join(
        f"{PEERS[t]} {i['seconds']:.0f} s, {i['peak_mib']:.0f} MiB" for t, i in peer_info.items()
    )
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, onnxruntime {ort.__version__}, "
        f"threads {args.threads or 'all'}; {note}\n"
        f"quantization: quantbench run {qb_seconds:.0f} s (four methods and its evaluation); ORT {quantize}\n"
        f"cross-check with quantbench's results.json: max |Δ top-1| {worst[0]:.2g}, "
        f"max |Δ rel L2| {worst[1]:.2g}"
    )
    if mismatches:
        raise SystemExit("quantbench's figures differ from the recomputed ones:\n" + "\n".join(mismatches))


if __name__ == "__main__":
    main()
