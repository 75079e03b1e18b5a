"""TensorRT for RTX on the zoo's real models (nudenet's YOLOv8n, PP-OCRv4 det, rec and cls; EfficientNet-Lite0
is the sample, in tests/test_tensorrt_rtx.py): FP32, FP16 and INT8 engines built from the models quantbench
writes, with or without a GPU, and what each engine runs in.

For every INT8 model the test finds on its own which nodes quantbench quantized (each Conv, ConvTranspose,
Gemm and MatMul whose inputs come from DequantizeLinear nodes in ``models/int8-minmax.onnx``) and checks
that each runs INT8 in the engine, except the nodes of :data:`IN_FLOAT`, each with its probe below:

* ConvTranspose: a limit of TensorRT-RTX 1.7, shown by a one-node model (Q/DQ on data and weights) whose
  layer computes in float; the package lists it as a known limit, and the lint says so.
* PP-OCRv4 rec's two attention projections ``p2o.MatMul.0`` and ``p2o.MatMul.12``: in the whole model the
  builder dequantizes their INT8 weights in a kernel of its own and runs the product in float; the same
  nodes built with everything from their input to the attention (a subgraph of the INT8 model) run INT8,
  so it is the builder's choice in context, not a limit of the op.

The tests skip where tensorrt_rtx or the zoo's packages are missing, unless QUANTBENCH_REQUIRE_TRT_RTX and
QUANTBENCH_REQUIRE_SAMPLE are set (CI), where they fail instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import require_packages
from tests.test_tensorrt_rtx import require_trt_rtx
from tests.test_zoo import INSTALL, PACKAGES

IN_FLOAT = {
    "ppocr_det": {"p2o.ConvTranspose.0", "p2o.ConvTranspose.2"},
    "ppocr_rec": {"p2o.MatMul.0", "p2o.MatMul.12"},
}
"""Quantized nodes the engines run in float, by model (see the module docstring)."""
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@pytest.fixture(scope="module")
def zoo_rtx() -> None:
    require_trt_rtx()
    require_packages(tuple(PACKAGES), "zoo", INSTALL)


def quantized_compute_nodes(model: Path) -> dict[str, str]:
    """Name -> op type of each Conv/ConvTranspose/Gemm/MatMul whose every input that varies is read
    through a DequantizeLinear node (read from the model here, not from quantbench's records)."""
    import onnx

    graph = onnx.load(str(model)).graph
    producers = {output: node for node in graph.node for output in node.output}
    found = {}
    for node in graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        first = producers.get(node.input[0])
        if first is not None and first.op_type == "DequantizeLinear":
            found[node.name] = node.op_type
    return found


def build_all(name: str, work: Path) -> tuple[dict[str, dict[str, Any]], Path]:
    """quantbench run with the TensorRT-RTX backend on a few samples of a zoo model: FP32, FP16, INT8."""
    import quantbench
    from benchmarks.zoo_models import ZOO, write_samples

    model = ZOO[name]
    folders = write_samples(model, work / name, calibration=4, held_out=2, seed=0)
    result = quantbench.run(
        model.locate(work), folders["calibration"], n=4, eval_images=folders["held_out"], eval_n=2,
        methods=["minmax"], precisions=["fp32", "fp16", "int8"], bias_correction=False, bench_runs=1,
        bench_seconds=0, backend="tensorrt-rtx", task_option=list(model.task_options), out=work / "runs",
    )  # fmt: skip
    results = json.loads((Path(result.run_dir) / "results.json").read_text())
    return {variant["name"]: variant for variant in results["variants"]}, Path(result.run_dir)


def compute_layers(variant: dict[str, Any]) -> list[dict[str, Any]]:
    return [layer for layer in variant["layers"] if layer["type"] in ("correlation", "gemm", "deconv")]


@pytest.mark.parametrize("name", ["nudenet_320n", "ppocr_det", "ppocr_rec", "ppocr_cls"])
def test_zoo_engines_run_their_quantized_nodes_in_int8(zoo_rtx: None, name: str, tmp_path: Path) -> None:
    variants, run_dir = build_all(name, tmp_path)
    assert set(variants) == {"fp32", "fp16", "int8-minmax"}
    for variant in variants.values():
        assert (run_dir / variant["engine"]["file"]).stat().st_size == variant["engine"]["bytes"] > 0
    int8 = variants["int8-minmax"]
    expected = quantized_compute_nodes(run_dir / "models" / "int8-minmax.onnx")
    nodes = {node["node"]: node for node in int8["int8_nodes"]["nodes"]}
    assert set(expected) <= set(nodes), sorted(set(expected) - set(nodes))
    in_float = {node for node in expected if not nodes[node]["int8"]}
    assert in_float == IN_FLOAT.get(name, set())
    lint = int8["precision_lint"]
    assert {item["node"] for item in lint["known_limits"]} == {
        n for n in in_float if expected[n] == "ConvTranspose"
    }
    fp16, fp32 = compute_layers(variants["fp16"]), compute_layers(variants["fp32"])
    assert fp16 and {layer["precision"] for layer in fp16} == {"fp16"}
    assert fp32 and {layer["precision"] for layer in fp32} == {"fp32"}


def _probe_layers(model: Any, path: Path) -> list[dict[str, Any]]:
    """Build ``model`` with TensorRT-RTX (strongly typed, batch 1..4) and parse its layer information."""
    import onnx

    from quantbench.backends.tensorrt_rtx.version import TENSORRT_RTX
    from quantbench.backends.trt_common.builder import (
        BatchProfile,
        BuildRequest,
        EngineBuilder,
        LogSink,
        make_logger,
    )
    from quantbench.backends.trt_common.inspector import parse_layer_log

    onnx.save(model, str(path))
    lib = TENSORRT_RTX.load()
    sink = LogSink(lib.name)
    builder = EngineBuilder(lib, make_logger(lib, sink), sink, None, BatchProfile(1, 2, 4))
    built = builder.build(BuildRequest(path.stem, path, "int8", strongly_typed=True))
    assert built.layer_log
    return parse_layer_log(built.layer_log)


def test_probe_convtranspose_stays_float_in_tensorrt_rtx(tmp_path: Path) -> None:
    """INT8 data and per-channel INT8 weights into one ConvTranspose: its layer computes in float (the
    known limit; when a TensorRT-RTX release lifts it, this fails and the limit must go)."""
    require_trt_rtx()
    from onnx import TensorProto, helper, numpy_helper

    from quantbench.backends.tensorrt_rtx.version import TENSORRT_RTX

    weights = np.random.default_rng(0).integers(-127, 128, (8, 8, 2, 2), dtype=np.int8)
    inits = [
        numpy_helper.from_array(weights, "w"),
        numpy_helper.from_array(np.full(8, 0.01, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(8, np.int8), "wz"),
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wdq"], axis=1),
        helper.make_node("ConvTranspose", ["xdq", "wdq"], ["y"], name="deconv", strides=[2, 2]),
    ]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, "probe", [value("x", TensorProto.FLOAT, ["N", 8, 16, 16])],
        [value("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    layers = [layer for layer in _probe_layers(model, tmp_path / "deconv.onnx") if "deconv" in layer["onnx"]]
    assert layers and all(layer["inputs"][:1] == ["fp32"] for layer in layers)
    assert "ConvTranspose" in dict(TENSORRT_RTX.known_limits)


def test_probe_rec_attention_projections_run_int8_built_alone(zoo_rtx: None, tmp_path: Path) -> None:
    """rec's p2o.MatMul.0 with everything from its input to the attention's three heads, cut from the INT8
    model quantbench writes: built alone, its layer takes INT8 data and INT8 weights."""
    import onnx
    from onnx import TensorProto, helper
    from onnx.utils import Extractor

    variants, run_dir = build_all("ppocr_rec", tmp_path)
    model = onnx.load(str(run_dir / "models" / "int8-minmax.onnx"))
    producers = {output: node for node in model.graph.node for output in node.output}
    matmul = next(node for node in model.graph.node if node.name == "p2o.MatMul.0")
    source = producers[producers[matmul.input[0]].input[0]].input[0]  # DQ <- Q <- the float tensor
    part = Extractor(model).extract_model([source], ["p2o.Mul.181", "transpose_45.tmp_0"])
    part.graph.input[0].CopyFrom(helper.make_tensor_value_info(source, TensorProto.FLOAT, ["N", 40, 120]))
    layers = _probe_layers(part, tmp_path / "attention.onnx")
    gemm = [layer for layer in layers if "p2o.MatMul.0" in layer["onnx"] and layer["weights"]]
    assert any(layer["inputs"][:1] == ["int8"] and "int8" in layer["weights"] for layer in gemm)
    whole = {node["node"]: node for node in variants["int8-minmax"]["int8_nodes"]["nodes"]}
    assert not whole["p2o.MatMul.0"]["int8"]  # while in the whole model it does not
