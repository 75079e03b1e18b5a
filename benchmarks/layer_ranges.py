"""How far each calibration method's activation range is from the range that minimises the error of the
layer that reads the tensor: a per-layer range search on the consuming layer's output, measured.

For every activation tensor of a run's ranges that Conv or Gemm nodes read with a constant weight, on the
first ``--samples`` calibration samples (``.npy`` tensors as ``benchmarks/zoo.py`` writes them): the FP32
input of those nodes, and for each candidate amax (15 fractions of the tensor's largest |x| from 0.3 to 1,
and the amax of each of the run's methods) the squared error of their outputs, input fake-quantized
(symmetric int8) and weights rounded per channel as quantbench writes them, against the FP32 outputs.
Each node runs alone in ONNX Runtime. The table gives, per tensor, the candidate with the least error and
how much more error the method's own range (``--method``, default mse) leaves; ``--write FILE`` writes
the best ranges (the method's own for tensors no such node reads) as a ``name:amax`` file that
``quantbench run --ranges FILE`` takes, to judge them end to end.

Usage:  python benchmarks/layer_ranges.py MODEL SAMPLES RUN_DIR [--samples 16] [--method mse] [--write FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("entropy", "minmax", "percentile", "mse")


def fake_quantize(values: np.ndarray, amax: float) -> np.ndarray:
    """Symmetric int8 quantize-dequantize with scale amax / 127, round half to even."""
    scale = np.float32(amax / 127.0)
    return (np.clip(np.rint(values / scale), -128, 127) * scale).astype(np.float32)


def nearest_weight(weight: np.ndarray, axis: int) -> np.ndarray:
    """The weight as quantbench's per-channel nearest rounding gives it back."""
    from quantbench.export.qdq import quantize_weight

    codes, scales = quantize_weight(weight, axis)
    shape = [1] * weight.ndim
    shape[axis] = -1
    return (codes.astype(np.float32) * scales.reshape(shape)).astype(np.float32)


def one_node(model: Any, node: Any, weight: np.ndarray, inits: dict[str, np.ndarray]) -> Any:
    """An ONNX Runtime session of ``node`` alone with ``weight`` (its bias kept)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    inputs = ["x", "w"] + (["b"] if len(node.input) > 2 and node.input[2] else [])
    copy = helper.make_node(node.op_type, inputs, ["y"])
    copy.attribute.extend(node.attribute)
    tensors = [numpy_helper.from_array(weight, "w")]
    if "b" in inputs:
        tensors.append(numpy_helper.from_array(inits[node.input[2]], "b"))
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [copy], "node", [value("x", TensorProto.FLOAT, None)], [value("y", TensorProto.FLOAT, None)], tensors
    )
    single = helper.make_model(graph, opset_imports=model.opset_import)
    single.ir_version = model.ir_version
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(single.SerializeToString(), options, providers=["CPUExecutionProvider"])


def weight_axis(node: Any) -> int:
    trans_b = any(a.name == "transB" and a.i for a in node.attribute)
    return 0 if node.op_type == "Conv" or trans_b else 1


def search(model: Any, samples: np.ndarray, ranges: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Per tensor read by Conv/Gemm: each candidate's summed output error, the best and the methods'."""
    import onnxruntime as ort
    from onnx import numpy_helper

    from quantbench.model import expose_tensors

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm") and node.input[0] in ranges["mse"] and node.input[1] in inits:
            readers.setdefault(node.input[0], []).append(node)
    names = list(readers)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(expose_tensors(model, names).SerializeToString(), options)
    feed = session.get_inputs()[0].name
    rows = []
    for tensor in names:
        values = np.concatenate(
            [session.run([tensor], {feed: samples[i : i + 4]})[0] for i in range(0, len(samples), 4)]
        )
        peak = float(np.abs(values).max())
        candidates = sorted(
            {peak * f for f in np.linspace(0.3, 1.0, 15)} | {ranges[m][tensor] for m in ranges}
        )
        errors = np.zeros(len(candidates))
        for node in readers[tensor]:
            weight = inits[node.input[1]]
            reference = one_node(model, node, weight, inits).run(None, {"x": values})[0]
            quantized = one_node(model, node, nearest_weight(weight, weight_axis(node)), inits)
            for k, amax in enumerate(candidates):
                out = quantized.run(None, {"x": fake_quantize(values, amax)})[0]
                errors[k] += float(np.sum((out.astype(np.float64) - reference) ** 2))
        best = int(np.argmin(errors))
        rows.append(
            {
                "tensor": tensor,
                "absmax": peak,
                "best": candidates[best],
                "methods": {m: ranges[m][tensor] for m in ranges},
                "ratio": {m: errors[candidates.index(ranges[m][tensor])] / errors[best] for m in ranges},
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("samples", type=Path, help="folder of .npy calibration samples")
    parser.add_argument("run_dir", type=Path, help="a quantbench run of the model (its ranges/*.json)")
    parser.add_argument("--samples", dest="count", type=int, default=16)
    parser.add_argument("--method", default="mse", choices=METHODS)
    parser.add_argument("--write", type=Path, help="write the best ranges here (name:amax)")
    args = parser.parse_args(argv)
    import onnx

    model = onnx.load(str(args.model))
    ranges = {m: json.loads((args.run_dir / "ranges" / f"{m}.json").read_text())["ranges"] for m in METHODS}
    files = sorted(args.samples.glob("*.npy"))[: args.count]
    samples = np.stack([np.load(f) for f in files]).astype(np.float32)
    started = time.perf_counter()
    rows = search(model, samples, ranges)
    print(f"| tensor | largest abs | best amax | {args.method} amax | {args.method} error / best |")
    print("|---|---|---|---|---|")
    for row in rows:
        method, ratio = row["methods"][args.method], row["ratio"][args.method]
        print(f"| {row['tensor']} | {row['absmax']:.3f} | {row['best']:.3f} | {method:.3f} | {ratio:.2f} |")
    for m in METHODS:
        ratios = np.array([row["ratio"][m] for row in rows])
        above = int((ratios > 1.10).sum())
        print(f"{m}: mean error / best {ratios.mean():.3f}, above 1.10 on {above} of {len(ratios)} tensors")
    print(f"{len(rows)} tensors, {len(files)} samples, {time.perf_counter() - started:.0f} s")
    if args.write:
        best = dict(ranges[args.method]) | {row["tensor"]: row["best"] for row in rows}
        args.write.write_text("".join(f"{name}:{float(amax)!r}\n" for name, amax in best.items()))


if __name__ == "__main__":
    main()
