"""The TensorRT for RTX backend: targets, layer information, profiles and dynamic dimensions without the
library; then real engines built by TensorRT for RTX (on this machine, with or without a GPU) from the
tiny test models and from the sample (EfficientNet-Lite0).

The real-engine tests skip where ``tensorrt_rtx`` cannot be imported, unless QUANTBENCH_REQUIRE_TRT_RTX
is set (CI), where they fail instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import quantbench
from quantbench.backends.tensorrt_rtx.targets import default_targets, describe_targets, parse_targets
from quantbench.backends.trt_common.builder import BatchProfile, name_dynamic_dims, profile_shapes
from quantbench.backends.trt_common.inspector import parse_layer_log, precision_counts
from quantbench.backends.trt_common.precision import float_between_int8, precision_report
from quantbench.errors import QuantbenchError
from tests.conftest import photo_folder, tiny_conv_model

FAST = {"bench_runs": 1, "bench_seconds": 0.0}
MEMBERS = ["NONE", "CURRENT", "SM75", "SM80", "SM86", "SM89", "SM120", "SM121"]


def require_trt_rtx() -> ModuleType:
    """The ``tensorrt_rtx`` module; skips without it, unless QUANTBENCH_REQUIRE_TRT_RTX is set (fails)."""
    try:
        import tensorrt_rtx
    except (ImportError, OSError) as exc:
        if os.environ.get("QUANTBENCH_REQUIRE_TRT_RTX"):
            pytest.fail(f"tensorrt_rtx cannot be imported ({exc}): pip install tensorrt-rtx-cu12")
        pytest.skip(f"tensorrt_rtx cannot be imported ({exc})")
    return tensorrt_rtx


# --- targets --------------------------------------------------------------------------------------------


def test_compute_capability_targets_parse_and_default() -> None:
    assert parse_targets("8.6, sm89,SM120,86", MEMBERS) == ("SM86", "SM89", "SM120")
    assert parse_targets("portable", MEMBERS) == ()
    assert parse_targets("Current", MEMBERS) == ("CURRENT",)
    assert default_targets("8.9", MEMBERS) == ("SM89",)
    assert default_targets("9.0", MEMBERS) == ()  # Hopper: TensorRT for RTX builds no engine for it
    assert default_targets(None, MEMBERS) == ()
    assert describe_targets(()) == ["portable"] and describe_targets(("SM86",)) == ["SM86"]
    for text, message in {
        "9.0": "unknown target '9.0'; use portable, current or some of 7.5, 8.0, 8.6",
        "portable,8.6": "portable stands alone",
        "current,8.6": "current stands alone",
        " , ": "is empty",
    }.items():
        with pytest.raises(QuantbenchError, match=message) as caught:
            parse_targets(text, MEMBERS)
        assert str(caught.value).startswith("--compute-capability") and "\n" not in str(caught.value)


# --- layer information and what it says of quantized nodes ----------------------------------------------


def _tensor(name: str, datatype: str) -> str:
    return f"{{ Name: {name}, Dimensions: [-1,4,8,8], Datatype: {datatype}, Format: (Linear) Row major }}"


def _layer(name: str, kind: str, inputs: str, constants: str, outputs: str, onnx: list[str]) -> str:
    metadata = "".join(f"[ONNX Layer: {node}]" for node in onnx)
    return (
        f"Name: {name}, LayerType: {kind}, Inputs: [ {inputs}], Constants: [ {constants}], "
        f"Outputs: [ {outputs}], TacticName: t, StreamId: 0, Metadata: {metadata}"
    )


LAYER_LOG = "\n".join(
    [
        "Layers:",
        "Name: __shape, LayerType: shape_call, Inputs: [], Constants: [], Outputs: [], TacticName: , "
        "StreamId: 0, Metadata: ",
        _layer(
            "q_in", "kgen", _tensor("input", "Float"), "", _tensor("a", "Int8"), ["input_Q", "named_conv"]
        ),
        _layer(
            "named_conv_0", "correlation", _tensor("a", "Int8"), _tensor("w", "Int8"), _tensor("b", "Float"),
            ["named_conv", "input_DQ", "w1_DQ"],
        ),
        _layer("alone", "kgen", _tensor("b", "Float"), "", _tensor("c", "Int8"), ["relu_Q"]),
        _layer(
            "conv_f", "correlation", _tensor("c", "Int8"), _tensor("w2", "Float"), _tensor("d", "Float"),
            ["node_of_out", "relu_DQ"],
        ),
        "",
        "I/O Tensors:",
        " Name: input, IOMode: Input, DataType: Float",
    ]
)  # fmt: skip


def test_the_build_log_gives_each_layer_its_precision_tensors_and_onnx_nodes() -> None:
    layers = parse_layer_log(LAYER_LOG)
    assert [layer["name"] for layer in layers] == ["__shape", "q_in", "named_conv_0", "alone", "conv_f"]
    assert layers[2] == {
        "name": "named_conv_0",
        "type": "correlation",
        "precision": "int8",
        "inputs": ["int8"],
        "weights": ["int8"],
        "outputs": ["fp32"],
        "input_names": ["a"],
        "output_names": ["b"],
        "onnx": ["named_conv", "input_DQ", "w1_DQ"],
    }
    assert layers[0]["precision"] == "none" and layers[0]["onnx"] == []
    assert precision_counts(layers) == {"none": 1, "fp32": 2, "int8": 2}


def _qdq_model(path: Path) -> Path:
    """input -Q/DQ-> Conv 'named_conv' -> Relu -Q/DQ-> unnamed Conv (output 'out'); weights through DQ."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.int8), "w")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "s", "z"], ["input_q"], name="input_Q"),
        helper.make_node("DequantizeLinear", ["input_q", "s", "z"], ["input_dq"], name="input_DQ"),
        helper.make_node("DequantizeLinear", ["w", "s", "z"], ["w_dq"], name="w1_DQ"),
        helper.make_node("Conv", ["input_dq", "w_dq"], ["b"], name="named_conv"),
        helper.make_node("Relu", ["b"], ["relu"]),
        helper.make_node("QuantizeLinear", ["relu", "s", "z"], ["relu_q"], name="relu_Q"),
        helper.make_node("DequantizeLinear", ["relu_q", "s", "z"], ["relu_dq"], name="relu_DQ"),
        helper.make_node("Conv", ["relu_dq", "w_dq"], ["out"]),
    ]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, "qdq", [value("input", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [value("out", TensorProto.FLOAT, ["N", 4, 8, 8])], [w, scale, zero],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_quantized_nodes_are_mapped_to_their_layers_and_linted(tmp_path: Path) -> None:
    model = _qdq_model(tmp_path / "qdq.onnx")
    layers = parse_layer_log(LAYER_LOG)
    report = precision_report(layers, model, ["named_conv", "Conv:out"], {"Conv": "why", "Gemm": "other"})
    nodes = {node["node"]: node for node in report["int8_nodes"]["nodes"]}
    assert nodes["named_conv"]["int8"] and nodes["named_conv"]["layers"] == ["q_in", "named_conv_0"]
    assert nodes["Conv:out"]["onnx_layer"] == "node_of_out"  # the parser's name of an unnamed node
    assert not nodes["Conv:out"]["int8"] and nodes["Conv:out"]["precision"] == "int8"  # float weights
    assert report["int8_nodes"]["quantized"] == 2 and report["int8_nodes"]["int8"] == 1
    assert report["precision_lint"] == {
        "quantized_in_float": ["Conv:out"],
        "known_limits": [{"node": "Conv:out", "op": "Conv", "reason": "why"}],
        "unfused_qdq": [{"layer": "alone", "onnx": ["relu_Q"]}],
        "float_between_int8": [],  # 'alone' requantizes b, but conv_f is not INT8 (float weights)
    }
    plain = precision_report(layers, model)
    assert set(plain) == {"layers", "layer_precisions"}


def test_float_outputs_between_int8_layers_are_found() -> None:
    """A -> B directly (B's residual input), B -> (scale+relu+quantize kernel) -> C, D -> E through a float16
    tensor: findings; C -> float Add (no INT8 layer after it): none."""
    int8_w, x8 = _tensor("w", "Int8"), _tensor("x", "Int8")
    log = "\n".join(
        [
            _layer("A", "gemm", x8, int8_w, _tensor("a", "Float"), ["conv_a"]),
            _layer("B", "gemm", f"{x8}, {_tensor('a', 'Float')}", int8_w, _tensor("b", "Float"), []),
            _layer("epi", "kgen", _tensor("b", "Float"), _tensor("s", "Half"), _tensor("bq", "Int8"), []),
            _layer("C", "gemm", _tensor("bq", "Int8"), int8_w, _tensor("c", "Float"), ["conv_c"]),
            _layer("add", "kgen", _tensor("c", "Float"), "", _tensor("d", "Float"), []),
            _layer("D", "gemm", _tensor("d", "Int8"), int8_w, _tensor("e", "Half"), []),
            _layer("E", "gemm", _tensor("e", "Int8"), int8_w, _tensor("out", "Float"), []),
        ]
    )  # fmt: skip
    layers = parse_layer_log(log)
    assert [layer["input_names"] for layer in layers][:2] == [["x"], ["x", "a"]]
    assert float_between_int8(layers) == [
        {"layer": "A", "tensor": "a", "into": ["B"]},
        {"layer": "B", "tensor": "b", "into": ["C"]},
        {"layer": "D", "tensor": "e", "into": ["E"]},  # a float16 output read by an INT8 layer
    ]


# --- profiles and dynamic dimensions ----------------------------------------------------------------------


def test_profiles_come_from_the_model_the_batch_and_the_samples() -> None:
    batch = BatchProfile(1, 4, 8)
    assert profile_shapes([("x", (2, 3, 8, 8))], batch, {}, "L") is None
    assert profile_shapes([("x", (-1, 3, 8, 8))], batch, {}, "L") == {
        "x": ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))
    }
    samples = {"x": [(3, 48, 160), (3, 48, 320), (3, 48, 320), (3, 48, 96)]}
    assert profile_shapes([("x", (-1, 3, 48, -1))], batch, samples, "L") == {
        "x": ((1, 3, 48, 96), (4, 3, 48, 320), (8, 3, 48, 320))
    }
    with pytest.raises(QuantbenchError, match=r"dimension 3 is dynamic and no sample shape") as caught:
        profile_shapes([("x", (1, 3, 48, -1))], batch, {}, "TensorRT-RTX")
    assert "\n" not in str(caught.value)


def test_unnamed_dynamic_dimensions_are_named(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "?", None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    named = name_dynamic_dims(tmp_path / "m.onnx")
    assert named is not None
    dims = onnx.load_from_string(named).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["x_dim0", 3, "x_dim2", "x_dim3"]
    assert name_dynamic_dims(tiny_conv_model(tmp_path / "tiny.onnx")) is None  # "N" is a name


def test_help_and_the_backend_list_import_no_tensorrt_rtx() -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom quantbench.cli import app\n"
        "from quantbench.backends import registry\n"
        "assert 'tensorrt-rtx' in registry.names()\n"
        "r = CliRunner().invoke(app, ['run', '--help'])\nassert r.exit_code == 0, r.output\n"
        "import quantbench.backends.tensorrt_rtx\nquantbench.backends.tensorrt_rtx.installed()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt_rtx', 'tensorrt', 'cuda')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- real engines ---------------------------------------------------------------------------------------


def _by_name(run_dir: Path) -> dict[str, dict[str, Any]]:
    results = json.loads((run_dir / "results.json").read_text())
    return {variant["name"]: variant for variant in results["variants"]}


def _conv_layers(variant: dict[str, Any]) -> list[dict[str, Any]]:
    """The convolution layers (TensorRT for RTX 1.x names their type ``correlation``)."""
    return [layer for layer in variant["layers"] if layer["type"] == "correlation"]


def _check_engine(variant: dict[str, Any], run_dir: Path, trt: ModuleType) -> None:
    engine = variant["engine"]
    assert engine["tensorrt_rtx"] == trt.__version__
    assert engine["quantbench_version"] == quantbench.__version__
    assert engine["targets"] and engine["bytes"] == engine["build"]["engine_bytes"] > 0
    assert engine["build"]["build_seconds"] > 0 and engine["build"]["strongly_typed"]
    sidecar = json.loads((run_dir / (engine["file"] + ".json")).read_text())
    assert sidecar["targets"] == engine["targets"] and sidecar["layers"] == variant["layers"]
    if not engine.get("run", True):  # built here and not run: no latency, one note
        assert variant["latency"] == [] and not variant["latency_representative"]
        assert "device_latency" not in variant


def test_tiny_engines_are_built_with_their_precisions(tmp_path: Path) -> None:
    trt = require_trt_rtx()
    model, images = tiny_conv_model(tmp_path / "tiny.onnx"), photo_folder(tmp_path / "img", 12, size=16)
    with pytest.raises(QuantbenchError) as caught:
        quantbench.run(model, images, n=8, backend="tensorrt-rtx", methods=["trt-entropy2"], out=tmp_path)
    assert str(caught.value).startswith("method trt-entropy2 is TensorRT's own calibrator")
    assert "\n" not in str(caught.value)
    result = quantbench.run(
        model, images, n=8, backend="tensorrt-rtx", methods=["minmax"], preset="raw",
        bias_correction=False, out=tmp_path / "out", **FAST,
    )  # fmt: skip
    by_name = _by_name(result.run_dir)
    for variant in by_name.values():
        _check_engine(variant, result.run_dir, trt)
        assert len(_conv_layers(variant)) == 2  # the two convolutions
    assert all(layer["precision"] == "fp32" for layer in by_name["fp32"]["layers"] if layer["inputs"])
    assert {layer["precision"] for layer in _conv_layers(by_name["fp16"])} == {"fp16"}
    int8 = by_name["int8-minmax"]
    assert int8["int8_nodes"] == {**int8["int8_nodes"], "quantized": 2, "int8": 2}
    assert int8["precision_lint"]["quantized_in_float"] == []
    results = json.loads((result.run_dir / "results.json").read_text())
    assert results["manifest"]["backend"]["tensorrt_rtx"] == trt.__version__
    if not by_name["fp32"]["engine"].get("run", True):
        notes = [note for note in results["notes"] if "engines were built for" in note]
        assert len(notes) == 1 and "not run" in notes[0] and "no latency" in notes[0]


def _dynamic_model(path: Path) -> Path:
    """Conv over an input [N, 3, ?, ?] whose two spatial dimensions are both named '?'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((2, 3, 3, 3), 0.1, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "?", "?"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "?", "?"])], [weight],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_engines_for_chosen_targets_with_dynamic_height_and_width(tmp_path: Path) -> None:
    trt = require_trt_rtx()
    import onnx

    from quantbench.backends.base import RunPlan
    from quantbench.backends.tensorrt_rtx.backend import TensorRTRtxBackend
    from quantbench.backends.trt_common.engine_file import check_engine
    from quantbench.backends.trt_common.library import TrtLibrary
    from quantbench.config import BackendSpec
    from quantbench.export.variants import fp32_variant
    from quantbench.model import input_specs

    model = _dynamic_model(tmp_path / "dyn.onnx")
    backend = TensorRTRtxBackend(BackendSpec(name="tensorrt-rtx"), compute_capability="8.6,8.9")
    samples = {"x": [(3, 16, 24), (3, 16, 24), (3, 20, 32)]}
    backend.begin(RunPlan(model, input_specs(onnx.load(model)), tmp_path, "hash", (2,), 4, None, {}, samples))
    runner = backend.prepare(fp32_variant(model))
    try:
        details = runner.extra_results([2], 1)
    finally:
        runner.close()
    engine = details["engine"]
    assert engine["targets"] == ["SM86", "SM89"] and engine["tensorrt_rtx"] == trt.__version__
    assert engine["build"]["compute_capabilities"] == ["SM86", "SM89"]
    assert engine["build"]["profile_shapes"] == {
        "x": {"min": [1, 3, 16, 24], "opt": [2, 3, 16, 24], "max": [4, 3, 20, 32]}
    }
    library: TrtLibrary = backend.library
    path = tmp_path / engine["file"]
    with pytest.raises(QuantbenchError, match="SM86 asked for; rebuild it"):
        check_engine(path, library, version=trt.__version__, targets=["SM86"])
    assert backend.describe()["targets"] == ["SM86", "SM89"]


class _Validity:
    """Stands in for ``IRuntime.get_engine_validity`` on a GPU: what it answers, and what was run."""

    def __init__(self, trt: ModuleType, valid: bool) -> None:
        self.answer = (
            (trt.EngineValidity.VALID, 0)
            if valid
            else (trt.EngineValidity.INVALID, int(trt.EngineInvalidityDiagnostics.UNSUPPORTED_CC))
        )
        self.ran: list[str] = []

    def get_engine_validity(self, data: bytes) -> tuple[Any, int]:
        assert data
        return self.answer


def test_an_engine_the_gpu_refuses_is_built_and_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trt = require_trt_rtx()
    import onnx

    from quantbench.backends.base import RunPlan
    from quantbench.backends.tensorrt_rtx.backend import NotRunRunner, TensorRTRtxBackend
    from quantbench.config import BackendSpec
    from quantbench.export.variants import fp32_variant
    from quantbench.model import input_specs

    model = tiny_conv_model(tmp_path / "tiny.onnx")
    backend = TensorRTRtxBackend(BackendSpec(name="tensorrt-rtx"), compute_capability="portable")
    backend.begin(RunPlan(model, input_specs(onnx.load(model)), tmp_path, "hash"))
    for valid in (False, True):
        validity = _Validity(trt, valid)
        monkeypatch.setattr(backend, "gpu", {"name": "NVIDIA H100", "compute_capability": "9.0"})
        monkeypatch.setattr(backend, "_runtime", validity)
        monkeypatch.setattr(
            backend, "run_engine", lambda variant, *rest, v=validity: v.ran.append(variant.name)
        )
        runner = backend.prepare(fp32_variant(model))
        if valid:  # the GPU takes the engine: it runs there (here: recorded, not run)
            assert validity.ran == ["fp32"] and runner is None
            continue
        assert isinstance(runner, NotRunRunner) and not runner.timed and validity.ran == []
        feeds = {"input": np.ones((2, 3, 16, 16), np.float32)}
        assert runner.run(feeds)["output"].shape == (2, 2, 16, 16)
        engine = runner.extra_results([1], 1)["engine"]
        assert engine["run"] is False and engine["targets"] == ["portable"]
        assert engine["not_run_reason"] == (
            "TensorRT-RTX refuses them on NVIDIA H100 (compute capability 9.0): UNSUPPORTED_CC"
        )
        runner.close()
    assert len(backend.notes) == 1 and "not run: TensorRT-RTX refuses them on NVIDIA H100" in backend.notes[0]


def test_sample_engines_run_every_quantized_conv_in_int8(sample: tuple[Path, Path], tmp_path: Path) -> None:
    trt = require_trt_rtx()
    model, images = sample
    result = quantbench.run(
        model, images, n=16, eval_n=4, backend="tensorrt-rtx", methods=["minmax"], preset="inception",
        bias_correction=False, out=tmp_path, **FAST,
    )  # fmt: skip
    by_name = _by_name(result.run_dir)
    for variant in by_name.values():
        _check_engine(variant, result.run_dir, trt)
    int8 = by_name["int8-minmax"]
    nodes = int8["int8_nodes"]["nodes"]
    convs = [node for node in nodes if node["node"].startswith("Conv")]
    assert len(convs) == 49 and all(node["int8"] for node in convs)
    assert int8["int8_nodes"]["int8"] == int8["int8_nodes"]["quantized"] == len(nodes)
    lint = int8["precision_lint"]
    assert lint["quantized_in_float"] == lint["known_limits"] == lint["unfused_qdq"] == []
    assert all(finding["into"] for finding in lint["float_between_int8"])
    fp16_compute = _conv_layers(by_name["fp16"])
    assert len(fp16_compute) >= 48 and {layer["precision"] for layer in fp16_compute} == {"fp16"}
    assert {layer["precision"] for layer in by_name["fp32"]["layers"] if layer["inputs"]} == {"fp32"}


def test_profiles_cover_the_held_out_shapes_too(tmp_path: Path) -> None:
    """Pages of their own sizes: calibration ones small, held-out ones larger; every engine's profile
    spans both, so the engines can run every sample they are judged on."""
    require_trt_rtx()
    import json

    import cv2

    import quantbench

    model = _dynamic_model(tmp_path / "dyn.onnx")
    rng = np.random.default_rng(6)
    for folder, (h, w), count in (("calib", (40, 60), 6), ("held", (80, 120), 4)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            cv2.imwrite(str(tmp_path / folder / f"p{i}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    result = quantbench.run(
        model, tmp_path / "calib", n=6, eval_images=tmp_path / "held", eval_n=4, backend="tensorrt-rtx",
        compute_capability="8.6", methods=["minmax"], precisions=["fp32", "int8"], bias_correction=False,
        resize="keep-ratio", max_side=128, multiple=8, bench_runs=1, bench_seconds=0, out=tmp_path / "runs",
    )  # fmt: skip
    results = json.loads((Path(result.run_dir) / "results.json").read_text())
    assert [s["shape"] for s in results["data"]["calibration"]["shapes"]["x"]] == [[3, 40, 64]]
    assert [s["shape"] for s in results["data"]["evaluation"]["shapes"]["x"]] == [[3, 80, 120]]
    for variant in results["variants"]:
        profile = variant["engine"]["build"]["profile_shapes"]["x"]
        assert profile["min"][1:] == [3, 40, 64] and profile["max"][1:] == [3, 80, 120], variant["name"]
