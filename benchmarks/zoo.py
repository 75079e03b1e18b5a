"""The zoo benchmark: quantbench and ONNX Runtime's ``quantize_static`` on five real models, every INT8
model scored on the same held-out samples by one scorer written here, task by task.

For each model of ``benchmarks/zoo_models.py`` (EfficientNet-Lite0, nudenet's YOLOv8n, PP-OCRv4 det,
rec and cls), one sample set with one shape per model (``fixed_shape``: PP-OCR det pages 3x736x736,
rec crops 3x48x320, cls 3x48x192):

* ``quantbench.run`` for each weight rounding of ``--weight-rounding`` (nearest and adaptive), each setting
  of ``--activation-offsets`` (off by default; ``off,on`` runs both), of ``--range-search`` (likewise;
  a searched run's variants are named ``int8-<method>, searched ranges``) and of ``--equalize``
  (likewise; ``int8-<method>, equalized``), with and
  without bias correction, each with every calibration method
  (entropy, minmax, percentile, mse), on the calibration samples, judged by quantbench on the held-out
  ones; precisions FP32 and INT8 (FP16 is left out: on the CPU it is an emulation, never recommended);
* ONNX Runtime's ``quantize_static`` (``benchmarks/zoo_peers.py``: QDQ, symmetric int8, per-channel
  weights; MinMax and Percentile) on the same calibration samples, with the operator types
  ``zoo_peers.OP_TYPES`` names where ORT's defaults break the model.

Every INT8 model is then run here on the held-out samples as written (every ONNX Runtime graph
optimization off: quantbench's TensorRT-flavour ``models/int8-<method>.onnx`` and ORT's QDQ model alike)
and its task results, decoded as each model's package decodes them, are compared with FP32's (FP32 run
with ONNX Runtime's default optimizations), by ``zoo_models.agreement``:

==================  ==================================================================================
model               independent figure (against FP32's results on the same samples)
==================  ==================================================================================
efficientnet_lite0  top-1 agreement
nudenet_320n        detection F1: nudenet's decoder (score 0.2, class-agnostic NMS 0.25 / 0.45), pairs
                    of the same label at box IoU >= 0.5
ppocr_det           text-box F1: rapidocr's DB decoder, boxes paired at quadrilateral IoU >= 0.5
ppocr_rec           exact string agreement (spaces at either end ignored) and character error rate
ppocr_cls           top-1 agreement (0 or 180 degrees)
==================  ==================================================================================

Next to it stands quantbench's own headline for the variant (``verdict.values`` in ``results.json``:
top-1 agreement, detection F1 of its YOLO decoder, mask IoU of the DB probability map, sequence
agreement of its CTC decoder), the difference in percentage points, and quantbench's recommended
variant (``verdict.recommended``) of each run.

Time and memory are measured in a fresh process per tool run. quantbench: ``calibration.total_seconds``
of ``results.json`` (one pass for the four methods) and the process's peak resident set size (``VmHWM``)
when collection ends; the bias correction's seconds per variant (``details.bias_correction``); the
whole run's wall time and peak in the JSON file. ORT: the seconds of ``quantize_static`` (calibration and
graph rewrite) and its process's ``VmHWM`` (``zoo_peers.quantize_peer``), with ``CalibStridedMinMax``
set to ``--peer-stride`` (8, or the largest divisor of the sample count below it): ORT folds that many
samples at a time into its ranges or histograms instead of keeping every sample's activations (PP-OCR
det's Percentile keeps about 0.9 GiB a sample).

Usage:  python benchmarks/zoo.py WORK [--models NAME ...] [--calibration 8] [--held-out 8] [--seed 0]
                                      [--bias-correction-images 32] [--weight-rounding nearest,adaptive]
                                      [--activation-offsets off|on|off,on] [--range-search off|on|off,on]
                                      [--equalize off|on|off,on]
                                      [--bench-runs 5]
                                      [--bench-seconds 0] [--threads 0] [--peer-stride 8] [--peers 1]
                                      [--json FILE]
writes the sample sets, quantbench's runs and ORT's models under WORK (``--peers 0``: no ORT models),
prints the markdown tables and writes everything measured to ``--json`` (default ``WORK/zoo.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks.zoo_models import (  # noqa: E402
    ZOO,
    ZooModel,
    agreement,
    run_outputs,
    session,
    task_results,
    truth,
    write_samples,
)
from benchmarks.zoo_peers import (  # noqa: E402
    OP_TYPES,
    Method,
    PeerSettings,
    fp32_reference,
    peak_mib,
    quantize_peer,
)

METHODS = ("entropy", "minmax", "percentile", "mse")
PEER_METHODS: tuple[Method, ...] = ("MinMax", "Percentile")
HEADLINE = {"classes": "top1", "detection": "f1", "dense": "f1", "sequence": "exact"}
"""The independent figure compared with quantbench's headline, per kind of ``zoo_models.agreement``."""
FIGURE_NAME = {"classes": "top-1", "detection": "det. F1", "dense": "box F1", "sequence": "exact"}
AGREE_POINTS = 0.5
"""quantbench's headline and the independent figure agree when they differ by at most this many points."""


@dataclass
class Options:
    """How the benchmark runs (see the module docstring's usage line)."""

    calibration: int = 8
    held_out: int = 8
    seed: int = 0
    bias_correction_images: int = 32
    weight_rounding: str = "nearest,adaptive"
    activation_offsets: str = "off"
    range_search: str = "off"
    equalize: str = "off"
    bench_runs: int = 5
    bench_seconds: float = 0.0
    threads: int = 0
    peer_stride: int = 8
    peers: int = 1


class Setup(NamedTuple):
    """One quantbench run of a model: its weight rounding, bias correction, activation offsets, range
    search and equalization."""

    rounding: str
    bias: bool
    offsets: bool = False
    search: bool = False
    equalize: bool = False


@dataclass
class Row:
    """One INT8 model, scored.

    Attributes:
        model: the zoo model; tool: ``quantbench`` or ``ORT quantize_static``; variant: quantbench's
            variant name or ORT's calibration method.
        bias_correction: quantbench: ``kept``, ``not kept`` (measured, worse) or ``off``; ORT: ``-``.
        weight_rounding: quantbench: ``nearest`` or ``adaptive``; ORT: ``-``.
        offsets: quantbench: activation offsets ``on`` or ``off``; ORT: ``-``.
        independent: the scorer's figures (``zoo_models.agreement``); headline: the one compared.
        quantbench: quantbench's own headline for the variant (None for ORT's models).
        calibration_seconds, peak_mib: the tool run's calibration time and peak memory (see the module
            docstring); correction_seconds: quantbench's bias correction of this variant;
            rounding_seconds: its adaptive weight rounding (one fit for every variant of the run).
        recommended: quantbench recommended this variant in its run.
        note: ORT: what was done to the model before ``quantize_static`` (opset conversion, pre-process).
        error: why the row has no figures, where a step failed.
    """

    model: str
    tool: str
    variant: str
    bias_correction: str = "-"
    weight_rounding: str = "-"
    offsets: str = "-"
    independent: dict[str, float] = field(default_factory=dict)
    headline: float | None = None
    quantbench: float | None = None
    calibration_seconds: float | None = None
    correction_seconds: float | None = None
    rounding_seconds: float | None = None
    peak_mib: float | None = None
    recommended: bool = False
    note: str = ""
    error: str = ""


# --- quantbench in its own process ---------------------------------------------------------------


class StepClock:
    """A quantbench progress that records when each step starts and ends, with the peak memory then."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.steps: list[dict[str, Any]] = []

    def start(self, step: str, total: int | None) -> None:
        """A step begins."""
        self.steps.append(
            {"step": step, "start_s": time.perf_counter() - self.started, "peak_mib": peak_mib()}
        )

    def advance(self, count: int = 1) -> None:
        """Nothing to record."""

    def finish(self) -> None:
        """The current step ends."""
        if self.steps:
            self.steps[-1].update(end_s=time.perf_counter() - self.started, end_peak_mib=peak_mib())


def quantbench_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Run ``quantbench.run`` as ``job`` says, in this (child) process; its run folder, times and memory."""
    import quantbench

    clock = StepClock()
    result = quantbench.run(
        job["model"],
        job["calibration"],
        n=job["n"],
        eval_images=job["held_out"],
        eval_n=job["eval_n"],
        methods=list(METHODS),
        precisions=["fp32", "int8"],
        bias_correction=job["bias_correction"],
        bias_correction_images=job["bias_correction_images"],
        weight_rounding=job["weight_rounding"],
        activation_offsets=job["activation_offsets"],
        range_search=job["range_search"],
        equalize=job["equalize"],
        bench_runs=job["bench_runs"],
        bench_seconds=job["bench_seconds"],
        threads=job["threads"],
        task_option=job["task_options"],
        out=Path(job["out"]),
        progress=clock,
    )
    collecting = next((s for s in clock.steps if s["step"] == "collecting"), {})
    return {
        "run_dir": str(result.run_dir),
        "wall_seconds": time.perf_counter() - clock.started,
        "peak_mib": peak_mib(),
        "calibration_peak_mib": collecting.get("end_peak_mib"),
        "steps": clock.steps,
    }


def run_quantbench(
    model: ZooModel,
    fp32: Path,
    folders: dict[str, Path],
    out: Path,
    setup: Setup,
    options: Options,
) -> dict:
    """``quantbench_worker`` in a fresh process, run as ``setup`` says; its result, with ``results.json``
    read in.

    Raises:
        RuntimeError: quantbench failed; the message holds the end of its output.
    """
    job = {
        "model": str(fp32),
        "task_options": list(model.task_options),
        "calibration": str(folders["calibration"]),
        "held_out": str(folders["held_out"]),
        "n": options.calibration,
        "eval_n": options.held_out,
        "bias_correction": setup.bias,
        "bias_correction_images": options.bias_correction_images,
        "weight_rounding": setup.rounding,
        "activation_offsets": setup.offsets,
        "range_search": setup.search,
        "equalize": setup.equalize,
        "bench_runs": options.bench_runs,
        "bench_seconds": options.bench_seconds,
        "threads": options.threads,
        "out": str(out),
    }
    command = [sys.executable, __file__, "--worker", json.dumps(job)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"quantbench.run failed (status {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}"
        )
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    measured["results"] = json.loads((Path(measured["run_dir"]) / "results.json").read_text())
    return measured


# --- the independent scorer ----------------------------------------------------------------------


def score(model: ZooModel, int8: Path, reference: dict[str, Any], threads: int) -> dict[str, float]:
    """An INT8 model run as written on the held-out samples, its task results against FP32's.

    Returns ``zoo_models.agreement``'s figures; for text, also ``exact_as_read``: exact agreement of the
    strings as decoded, spaces at either end included (rapidocr returns them so); and ``truth_*``: the
    results against what the samples show (``zoo_models.truth``).
    """
    outputs = run_outputs(session(int8, threads, optimize=False), reference["arrays"])
    results = task_results(model, outputs, reference["infos"])
    figures = agreement(model.kind, results, reference["results"])
    if model.kind == "sequence":
        same = [r["text"] == f["text"] for r, f in zip(results, reference["results"])]
        figures["exact_as_read"] = sum(same) / len(same)
    figures.update({f"truth_{k}": v for k, v in truth(model, results, reference["infos"]).items()})
    return figures


def _bias_state(details: dict[str, Any], bias: bool) -> str:
    if not bias:
        return "off"
    correction = details.get("bias_correction") or {}
    return "kept" if correction.get("applied") else "not kept"


def quantbench_rows(
    model: ZooModel,
    measured: dict[str, Any],
    setup: Setup,
    reference: dict[str, Any],
    threads: int,
) -> list[Row]:
    """A row per INT8 variant of one quantbench run, scored here, with quantbench's own headline."""
    results = measured["results"]
    verdict = results.get("verdict") or {}
    run_dir = Path(measured["run_dir"])
    rows = []
    for variant in results["variants"]:
        if variant["precision"] != "int8":
            continue
        details = variant.get("details", variant)
        figures = score(model, run_dir / variant["model"], reference, threads)
        rows.append(
            Row(
                model=model.name,
                tool="quantbench",
                variant=variant["name"]
                + (", searched ranges" if setup.search else "")
                + (", equalized" if setup.equalize else ""),
                bias_correction=_bias_state(details, setup.bias),
                weight_rounding=setup.rounding,
                offsets="on" if setup.offsets else "off",
                independent=figures,
                headline=figures[HEADLINE[model.kind]],
                quantbench=verdict.get("values", {}).get(variant["name"]),
                calibration_seconds=results["calibration"]["total_seconds"],
                correction_seconds=(details.get("bias_correction") or {}).get("seconds"),
                rounding_seconds=(details.get("weight_rounding") or {}).get("seconds"),
                peak_mib=measured["calibration_peak_mib"],
                recommended=verdict.get("recommended") == variant["name"],
            )
        )
    return rows


def peer_stride(samples: int, most: int) -> int | None:
    """ORT's ``CalibStridedMinMax`` for ``samples`` calibration samples: the largest divisor of ``samples``
    up to ``most`` (ORT wants the count divisible by it); None (every sample at once) where that is all."""
    stride = max(d for d in range(1, max(1, min(most, samples)) + 1) if samples % d == 0)
    return None if stride >= samples else stride


def peer_rows(
    model: ZooModel, fp32: Path, folders: dict[str, Path], work: Path, reference: dict, options: Options
) -> list[Row]:
    """A row per ORT ``quantize_static`` method, quantized in its own process and scored here."""
    rows = []
    for method in PEER_METHODS:
        out = work / "peers" / f"{method}.onnx"
        out.parent.mkdir(parents=True, exist_ok=True)
        row = Row(model=model.name, tool="ORT quantize_static", variant=method)
        stride = peer_stride(options.calibration, options.peer_stride)
        settings = PeerSettings(method, OP_TYPES[model.name], stride)
        try:
            info = quantize_peer(fp32, folders["calibration"], out, settings)
        except RuntimeError as exc:
            row.error = str(exc).strip().splitlines()[-1][:300]
            rows.append(row)
            continue
        row.independent = score(model, out, reference, options.threads)
        row.headline = row.independent[HEADLINE[model.kind]]
        row.calibration_seconds, row.peak_mib = info["seconds"], info["peak_mib"]
        row.note = info["pre_process"]
        rows.append(row)
    return rows


# --- one model -----------------------------------------------------------------------------------


def run_setups(options: Options) -> list[Setup]:
    """The quantbench runs per model: for each setting of ``--equalize``, ``--range-search`` and
    ``--activation-offsets`` (``off``, ``on``) and each rounding of ``--weight-rounding``, with bias
    correction and without."""
    roundings = [item.strip() for item in options.weight_rounding.split(",") if item.strip()]

    def settings(text: str) -> list[bool]:
        return [item.strip() == "on" for item in text.split(",") if item.strip()]

    return [
        Setup(r, bias, o, search, equal)
        for equal in settings(options.equalize)
        for search in settings(options.range_search)
        for o in settings(options.activation_offsets)
        for r in roundings
        for bias in (True, False)
    ]


def run_label(setup: Setup) -> str:
    """``nearest, bias correction`` ..., with ``, offsets`` where activation offsets are on, ``, range
    search`` where the ranges are searched and ``, equalized`` with cross-layer equalization."""
    label = f"{setup.rounding}, {'bias correction' if setup.bias else 'no bias correction'}"
    label += (", offsets" if setup.offsets else "") + (", range search" if setup.search else "")
    return label + (", equalized" if setup.equalize else "")


def bench_model(name: str, work: Path, options: Options) -> dict[str, Any]:
    """Samples, quantbench's two runs and ORT's two models for one zoo model, every INT8 model scored.

    Returns the model's summary (shape, kind quantbench found, its recommendations, FP32 against what
    the samples show, ORT's operator types) and its rows.
    """
    model = ZOO[name]
    folders = write_samples(model, work / name, options.calibration, options.held_out, options.seed)
    fp32 = model.locate(work)
    reference = fp32_reference(model, fp32, folders["held_out"], options.threads)
    operators = OP_TYPES[name]
    summary: dict[str, Any] = {
        "model": name,
        "input": list(reference["arrays"][0].shape),
        "fp32_truth": truth(model, reference["results"], reference["infos"]),
        "ort_op_types": list(operators) if operators else "ORT's defaults",
        "task_options": list(model.task_options),
        "runs": {},
    }
    rows: list[Row] = []
    for setup in run_setups(options):
        label = run_label(setup)
        try:
            measured = run_quantbench(model, fp32, folders, work / name / "runs", setup, options)
        except RuntimeError as exc:
            summary["runs"][label] = {"error": str(exc)}
            error = str(exc).strip().splitlines()[-1][:300]
            state = "on" if setup.bias else "off"
            offsets = "on" if setup.offsets else "off"
            rows.append(Row(name, "quantbench", "every method", state, setup.rounding, offsets, error=error))
            continue
        rows.extend(quantbench_rows(model, measured, setup, reference, options.threads))
        summary["runs"][label] = _run_summary(measured)
    if options.peers:
        rows.extend(peer_rows(model, fp32, folders, work / name, reference, options))
    return {"summary": summary, "rows": [asdict(row) for row in rows]}


def _run_summary(measured: dict[str, Any]) -> dict[str, Any]:
    """What one quantbench run says of the model: the output's kind, the verdict, times and memory."""
    results = measured["results"]
    verdict = results.get("verdict") or {}
    outputs = results["model"].get("comparison_outputs", {})
    main = outputs.get(verdict.get("output"), {})
    return {
        "run_dir": measured["run_dir"],
        "kind": verdict.get("kind"),
        "kind_reason": main.get("kind_reason"),
        "metric": verdict.get("metric"),
        "tolerance": verdict.get("tolerance"),
        "recommended": verdict.get("recommended"),
        "within": verdict.get("within"),
        "reason": verdict.get("reason"),
        "notes": results.get("notes", []),
        "calibration_seconds": results["calibration"]["total_seconds"],
        "calibration_peak_mib": measured["calibration_peak_mib"],
        "wall_seconds": measured["wall_seconds"],
        "peak_mib": measured["peak_mib"],
        "steps": measured["steps"],
    }


# --- tables --------------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f} %"


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _independent_text(kind: str, figures: dict[str, float]) -> str:
    text = f"{FIGURE_NAME[kind]} {_percent(figures.get(HEADLINE[kind]))}"
    if "exact_as_read" in figures:
        text += f" (as read {_percent(figures['exact_as_read'])}), CER {figures['cer']:.3f}"
    return text


def row_text(row: dict[str, Any], summary: dict[str, Any]) -> str:
    """One markdown row of the main table."""
    kind = ZOO[row["model"]].kind
    if row["error"]:
        cells = [row["model"], row["tool"], row["variant"], row["weight_rounding"], row["offsets"]]
        cells.append(row["bias_correction"])
        return "| " + " | ".join([*cells, f"failed: {row['error']}"] + [""] * 6) + " |"
    first: dict[str, Any] = next(iter(summary["runs"].values()), {})
    metric = first.get("metric") or "-"
    ours = f"{metric} {_percent(row['quantbench'])}" if row["tool"] == "quantbench" else "-"
    gap = "-"
    if row["quantbench"] is not None and row["headline"] is not None:
        points = 100 * (row["quantbench"] - row["headline"])
        gap = f"{points:+.1f} " + ("✓" if abs(points) <= AGREE_POINTS else "✗")
    cells = [
        row["model"],
        row["tool"],
        row["variant"] + (" (recommended)" if row["recommended"] else ""),
        row["weight_rounding"],
        row["offsets"],
        row["bias_correction"],
        _independent_text(kind, row["independent"]),
        ours,
        gap,
        _number(row["calibration_seconds"]),
        _number(row["rounding_seconds"]),
        _number(row["correction_seconds"]),
        _number(row["peak_mib"], 0),
    ]
    return "| " + " | ".join(cells) + " |"


def _within(run: dict[str, Any]) -> str:
    """The INT8 variants within quantbench's tolerance in one run, or why there are none."""
    if "error" in run:
        return "failed"
    within = [name.removeprefix("int8-") for name in run.get("within") or [] if name != "fp32"]
    return ", ".join(within) or "none"


def summary_text(summary: dict[str, Any]) -> str:
    """One markdown row of the per-model table."""
    runs = list(summary["runs"].values())
    kind = next((run["kind"] for run in runs if run.get("kind")), "-")
    metric = next((f"{run['metric']} ± {run['tolerance']:g}" for run in runs if run.get("metric")), "-")
    within = " / ".join(_within(run) for run in runs)
    chosen = " / ".join(run.get("recommended") or "failed" for run in runs)
    found = ", ".join(f"{key} {value:.3f}" for key, value in summary["fp32_truth"].items()) or "-"
    operators = summary["ort_op_types"]
    operators = operators if isinstance(operators, str) else ", ".join(operators)
    shape = "x".join(str(d) for d in summary["input"])
    stated = " ".join(f"`{item}`" for item in summary.get("task_options") or []) or "-"
    cells = [summary["model"], shape, kind, stated, metric, within, chosen, found, operators]
    return "| " + " | ".join(cells) + " |"


def tables(models: list[dict[str, Any]]) -> str:
    """The markdown tables: every INT8 model scored, then one line per zoo model."""
    lines = [
        "| model | tool | variant | weights | offsets | bias corr. | independent (vs FP32) "
        "| quantbench's headline | Δ points | calibration s | rounding s | bias corr. s | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in models:
        lines.extend(row_text(row, model["summary"]) for row in model["rows"])
    order = " / ".join(models[0]["summary"]["runs"]) if models else ""
    lines += [
        "",
        f"| model | input | kind (quantbench) | --task-option | headline ± tolerance | INT8 within tolerance "
        f"({order}) | recommended ({order}) | FP32 vs truth | ORT operators |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines.extend(summary_text(model["summary"]) for model in models)
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """The machine and the versions the figures were measured with."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _lscpu() if line.startswith("Model name")),
        platform.processor(),
    )
    versions: dict[str, str | None] = {}
    for dist in (
        "quantbench",
        "onnxruntime",
        "onnx",
        "numpy",
        "opencv-python-headless",
        "nudenet",
        "rapidocr-onnxruntime",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
        "quantbench_source": _source_state(),
    }


def _source_state() -> dict[str, Any]:
    """The checkout's commit and whether quantbench's files differ from it (None outside a checkout)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, check=False)
        except OSError:
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    changed = git("status", "--porcelain", "--", "quantbench")
    return {
        "commit": git("rev-parse", "HEAD"),
        "quantbench_modified": None if changed is None else bool(changed),
    }


def _lscpu() -> list[str]:
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
    except OSError:
        return []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", nargs="?", type=Path, help="folder for samples, runs and models")
    parser.add_argument("--models", nargs="*", default=list(ZOO), choices=list(ZOO))
    defaults = Options()
    for key, value in asdict(defaults).items():
        flag = "--" + key.replace("_", "-")
        parser.add_argument(flag, type=type(value), default=value, help=f"default {value}")
    parser.add_argument("--json", type=Path, help="where to write the figures (default WORK/zoo.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(quantbench_worker(json.loads(args.worker))))
        return
    if args.work is None:
        parser.error("give WORK")
    options = Options(**{key: getattr(args, key) for key in asdict(defaults)})
    started = time.perf_counter()
    models = [bench_model(name, args.work, options) for name in args.models]
    report = {
        "options": asdict(options),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": environment(),
        "seconds": time.perf_counter() - started,
        "models": models,
    }
    out = args.json or args.work / "zoo.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(tables(models))
    print(f"\n{report['seconds']:.0f} s; figures in {out}")


if __name__ == "__main__":
    main()
