"""ONNX Runtime's ``quantize_static`` as a peer on the zoo's models, calibrated on folders of ``.npy``.

The settings are the ones TensorRT wants, as in ``benchmarks/run.py``: QDQ format, int8 activations
and weights, both symmetric, weights per channel; calibration MinMax or Percentile (ORT's default
99.999). ``quant_pre_process`` runs first where it can (ORT recommends it); where it fails, the model
is quantized as it is, and the note says so. ``PeerSettings`` also asks for ORT's own CPU settings
(uint8 asymmetric activations, QDQ or QOperator format), which ``benchmarks/cpu_flavour.py`` times.

Samples are fed one at a time (batch 1) through a ``CalibrationDataReader``. Where their shapes differ
(PP-OCR det pages and rec crops written with ``fixed_shape=False``) ORT's Percentile calibrator cannot
stack them, so ``CalibStridedMinMax`` is set to 1: ORT then collects and folds one sample at a time,
for every method (MinMax merges the ranges, Percentile adds to its histograms); that also keeps only
one sample's activations alive.

``op_types_to_quantize`` defaults to ORT's own list (every operator it knows how to quantize). Where
that breaks a model's task result, ``OP_TYPES`` names the list to use instead (``--check`` shows why).

Each quantization runs in its own process. Its wall time is taken around ``quantize_static`` in that
process (calibration and graph rewrite; opset conversion and ``quant_pre_process`` are timed apart),
and its peak memory is that process's peak resident set size, read from ``VmHWM`` in
``/proc/self/status`` (where there is no ``/proc``: ``resource.getrusage``'s ``ru_maxrss``): Python,
ONNX Runtime, the model and everything calibration kept, together. ``baseline_mib`` is the same figure
just before ``quantize_static`` starts, so the difference is what quantization itself added.
(``ru_maxrss`` is not used on Linux: it survives ``fork`` and ``exec``, so a child started by a large
parent reports at least the parent's size.)

Usage:  python benchmarks/zoo_peers.py MODEL SAMPLES OUT [--method MinMax] [--op-types default|Conv,...]
        python benchmarks/zoo_peers.py --check WORK [--models NAME ...] [--calibration 8] [--held-out 8]
The first quantizes one zoo model on ``SAMPLES`` (a folder of ``.npy``) and prints the result as JSON;
``--check`` writes each model's sample set under ``WORK``, quantizes it with ORT's default operator list
and with ``OP_TYPES``, both methods, and prints a table of agreement with FP32 on the held-out samples.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks.zoo_models import (  # noqa: E402
    ZOO,
    ZooModel,
    agreement,
    read_samples,
    run_outputs,
    session,
    task_results,
    truth,
    write_samples,
)

Method = Literal["MinMax", "Percentile"]
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
OP_TYPES: dict[str, tuple[str, ...] | None] = {
    "efficientnet_lite0": None,
    # ORT's defaults quantize the last Concat, which joins box pixels (0..320) and class scores (0..1)
    # into one tensor: one int8 scale of about 2.5 turns every score into 0, so nothing is detected.
    # The Add/Mul of the box decoding also cost detections; the convolutions alone keep them all.
    "nudenet_320n": COMPUTE_OPS,
    "ppocr_det": None,
    # ORT's defaults also quantize the transformer neck's Add, Mul, Softmax, Reshape and Transpose
    # (LayerNorm, attention): the recognizer then misreads most lines.
    "ppocr_rec": COMPUTE_OPS,
    "ppocr_cls": None,
}
"""Per zoo model, the operator types to quantize where ORT's defaults break it (None: the defaults)."""


@dataclass(frozen=True)
class PeerSettings:
    """How ORT quantizes one model.

    Attributes:
        method: ``"MinMax"`` or ``"Percentile"``.
        op_types: ``op_types_to_quantize``; None for ORT's defaults.
        stride: ``CalibStridedMinMax``: samples collected per pass; ``"auto"`` is 1 where the samples'
            shapes differ and unset otherwise (ORT collects all samples, then computes ranges).
        pre_process: run ``quant_pre_process`` first.
        activations: ``int8`` (symmetric, as TensorRT wants) or ``uint8`` (asymmetric, ONNX Runtime's
            own default and its fastest on x86).
        quant_format: ``QDQ`` or ``QOperator`` (QLinearConv and the like written directly).
    """

    method: Method = "MinMax"
    op_types: tuple[str, ...] | None = None
    stride: int | Literal["auto"] | None = "auto"
    pre_process: bool = True
    activations: Literal["int8", "uint8"] = "int8"
    quant_format: Literal["QDQ", "QOperator"] = "QDQ"


def _reader(paths: list[Path], input_name: str):  # type: ignore[no-untyped-def]
    """A CalibrationDataReader over ``.npy`` files, one sample (batch 1) per ``get_next``."""
    from onnxruntime.quantization import CalibrationDataReader

    class NpyReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.start, self.end = 0, len(paths)

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start >= self.end:
                return None
            self.start += 1
            return {input_name: np.load(paths[self.start - 1])[None]}

        def __len__(self) -> int:
            return len(paths)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.start, self.end = start_index, min(end_index, len(paths))

    return NpyReader()


def peak_mib() -> float:
    """This process's peak resident set size in MiB (``VmHWM``; ``ru_maxrss`` without ``/proc``)."""
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stride(settings: PeerSettings, paths: list[Path]) -> int | None:
    if settings.stride != "auto":
        return settings.stride
    shapes = {np.load(path, mmap_mode="r").shape for path in paths}
    return 1 if len(shapes) > 1 else None


def _opset_13(model: Path, folder: Path) -> tuple[Path, str]:
    """The model converted to opset 13 where it is older, with a note; else the model itself.

    Per-channel QDQ puts an ``axis`` on QuantizeLinear and DequantizeLinear, which opset 13 brought;
    ORT writes it whatever the model's opset, so an older model (the PP-OCR ones) would not load.
    """
    import onnx
    from onnx import version_converter

    proto = onnx.load(str(model))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset >= 13:
        return model, ""
    converted = folder / "opset13.onnx"
    onnx.save(version_converter.convert_version(proto, 13), str(converted))
    return converted, f"opset {opset} to 13; "


def _pre_process(model: Path, folder: Path) -> tuple[Path, str]:
    """``quant_pre_process`` into ``folder``, or the model itself where it fails.

    Symbolic shape inference needs sympy; without it, the pre-process runs without that step
    (ONNX shape inference and ORT's graph optimizer only).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = folder / "preprocessed.onnx"
    try:
        import sympy  # noqa: F401

        skip, note = False, "quant_pre_process"
    except ImportError:
        skip, note = True, "quant_pre_process (no sympy: symbolic shapes skipped)"
    try:
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=skip)
    except Exception as exc:  # ORT raises many kinds here; the note keeps what happened
        return model, f"quant_pre_process failed ({type(exc).__name__}: {str(exc)[:200]}); raw model used"
    return prepared, note


def worker(model: Path, samples: Path, out: Path, settings: PeerSettings) -> dict[str, Any]:
    """Quantize ``model`` on the ``.npy`` files of ``samples``. Runs in a child process."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    paths = sorted(samples.glob("*.npy"))
    input_name = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    stride = _stride(settings, paths)
    symmetric = settings.activations == "int8"
    extra: dict[str, Any] = {"ActivationSymmetric": symmetric, "WeightSymmetric": True}
    if stride:
        extra["CalibStridedMinMax"] = stride
    with tempfile.TemporaryDirectory(prefix="zoo-peer-") as tmp:
        started = time.perf_counter()
        prepared, converted = _opset_13(model, Path(tmp))
        prepared, note = _pre_process(prepared, Path(tmp)) if settings.pre_process else (prepared, "no")
        pre_seconds = time.perf_counter() - started
        baseline_mib = peak_mib()
        started = time.perf_counter()
        quantize_static(
            str(prepared),
            str(out),
            _reader(paths, input_name),
            quant_format=getattr(QuantFormat, settings.quant_format),
            op_types_to_quantize=list(settings.op_types) if settings.op_types else None,
            per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, settings.method),
            extra_options=extra,
        )
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "pre_process_seconds": pre_seconds,
        "pre_process": converted + note,
        "baseline_mib": baseline_mib,
        "peak_mib": peak_mib(),
        "samples": len(paths),
        "stride": stride,
    }


def quantize_peer(model: Path, samples: Path, out: Path, settings: PeerSettings) -> dict[str, Any]:
    """Run ``worker`` in a fresh process and return its result (times, memory, notes).

    Raises:
        RuntimeError: the quantization failed; the message holds the end of its output.
    """
    job = {"model": str(model), "samples": str(samples), "out": str(out), **dataclasses.asdict(settings)}
    command = [sys.executable, __file__, "--worker", json.dumps(job)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"quantize_static failed (status {done.returncode}):\n{output}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_worker(job: dict[str, Any]) -> None:
    settings = PeerSettings(
        method=job["method"],
        op_types=tuple(job["op_types"]) if job["op_types"] else None,
        stride=job["stride"],
        pre_process=job["pre_process"],
        activations=job.get("activations", "int8"),
        quant_format=job.get("quant_format", "QDQ"),
    )
    result = worker(Path(job["model"]), Path(job["samples"]), Path(job["out"]), settings)
    print(json.dumps(result))


# --- checking the peers on the zoo ---------------------------------------------------------------


def fp32_reference(model: ZooModel, fp32: Path, held_out: Path, threads: int) -> dict[str, Any]:
    """The held-out samples, their info, and the FP32 model's outputs and task results on them."""
    samples = read_samples(held_out)
    arrays, infos = [array for _, array, _ in samples], [info for _, _, info in samples]
    outputs = run_outputs(session(fp32, threads), arrays)
    return {
        "arrays": arrays,
        "infos": infos,
        "outputs": outputs,
        "results": task_results(model, outputs, infos),
    }


def evaluate(
    model: ZooModel, variant: Path, reference: dict[str, Any], threads: int, optimize: bool = True
) -> dict[str, float]:
    """A quantized model against FP32 on the held-out samples (``optimize`` False: run as written).

    Returns the task agreement (see ``zoo_models.agreement``), the score against what the samples
    show (``truth_*``), and ``rel_l2``: ||q - f|| / ||f|| over the main output of every sample.
    """
    outputs = run_outputs(session(variant, threads, optimize), reference["arrays"])
    results = task_results(model, outputs, reference["infos"])
    diff = sum(float(np.sum((q.astype(np.float64) - f) ** 2)) for q, f in zip(outputs, reference["outputs"]))
    norm = sum(float(np.sum(f.astype(np.float64) ** 2)) for f in reference["outputs"])
    scores = agreement(model.kind, results, reference["results"])
    scores.update({f"truth_{k}": v for k, v in truth(model, results, reference["infos"]).items()})
    return {**scores, "rel_l2": float(np.sqrt(diff / norm)) if norm else 0.0}


def _numbers(scores: dict[str, float]) -> str:
    return ", ".join(f"{key} {value:.3f}" for key, value in scores.items())


def check_model(name: str, work: Path, calibration: int, held_out: int, seed: int, threads: int) -> None:
    """Quantize one zoo model with ORT's default operator list and with ``OP_TYPES``; print rows."""
    model = ZOO[name]
    folders = write_samples(model, work / name, calibration, held_out, seed)
    fp32 = model.locate(work)
    reference = fp32_reference(model, fp32, folders["held_out"], threads)
    fp32_truth = _numbers(truth(model, reference["results"], reference["infos"])) or "no ground truth"
    print(f"| {name} | FP32 | | | | | {fp32_truth} |")
    choices = [("ORT default", None)] + ([("OP_TYPES", OP_TYPES[name])] if OP_TYPES[name] else [])
    for label, op_types in choices:
        for method in ("MinMax", "Percentile"):
            out = work / name / "peers" / f"{method}-{label.replace(' ', '_')}.onnx"
            out.parent.mkdir(parents=True, exist_ok=True)
            settings = PeerSettings(method=method, op_types=op_types)
            try:
                info = quantize_peer(fp32, folders["calibration"], out, settings)
            except RuntimeError as exc:
                print(f"| {name} | {method} | {label} | failed: {str(exc).splitlines()[-1][:150]} | | | |")
                continue
            memory = f"{info['peak_mib']:.0f} ({info['baseline_mib']:.0f})"
            scores = _numbers(evaluate(model, out, reference, threads))
            row = [name, method, label, info["pre_process"], f"{info['seconds']:.1f}", memory, scores]
            print("| " + " | ".join(row) + " |", flush=True)


def check(names: list[str], work: Path, calibration: int, held_out: int, seed: int, threads: int) -> None:
    """``check_model`` for each named model, as one markdown table."""
    print(
        f"{calibration} calibration and {held_out} held-out samples a model (seed {seed}); "
        "agreement with FP32 on the held-out ones\n"
    )
    print("| model | method | operators | pre-process | seconds | peak MiB (before) | scores |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        check_model(name, work, calibration, held_out, seed, threads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", choices=list(ZOO), help="zoo model to quantize")
    parser.add_argument("samples", nargs="?", type=Path, help="folder of calibration .npy files")
    parser.add_argument("out", nargs="?", type=Path, help="quantized model to write")
    parser.add_argument("--method", choices=["MinMax", "Percentile"], default="MinMax")
    parser.add_argument("--op-types", default=None, help="'default' (ORT's list) or comma-separated types")
    parser.add_argument("--check", type=Path, metavar="WORK", help="check every zoo model in WORK")
    parser.add_argument("--models", nargs="*", default=list(ZOO), choices=list(ZOO))
    parser.add_argument("--calibration", type=int, default=8, help="calibration samples (default 8)")
    parser.add_argument("--held-out", type=int, default=8, help="held-out samples (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _run_worker(json.loads(args.worker))
    elif args.check:
        check(args.models, args.check, args.calibration, args.held_out, args.seed, args.threads)
    elif args.model and args.samples and args.out:
        if args.op_types is None:
            op_types = OP_TYPES[args.model]
        else:
            op_types = None if args.op_types == "default" else tuple(args.op_types.split(","))
        model = ZOO[args.model].locate(args.out.parent)
        settings = PeerSettings(method=args.method, op_types=op_types)
        print(json.dumps(quantize_peer(model, args.samples, args.out, settings), indent=1))
    else:
        parser.error("give MODEL SAMPLES OUT, or --check WORK")


if __name__ == "__main__":
    main()
