"""Which precision a built engine's layers run in, checked against the nodes quantbench quantized.

The layers come from the library's layer information (:func:`~.inspector.parse_layer_log`): each names
the ONNX nodes it computes (``[ONNX Layer: name]`` metadata). The ONNX parser names a layer after its
node, or ``node_of_<first output>`` where the node has no name; :func:`onnx_layer_names` maps the node
labels of a variant's details (``quantized_nodes``, see :func:`quantbench.export.qdq.node_label`) to
those names.

A quantized node runs INT8 where a layer computing it takes INT8 data and INT8 weights (an INT8
constant, or a second INT8 input for a product of two activations). The lint lists

* ``quantized_in_float``: the quantized nodes that do not;
* ``unfused_qdq``: the layers that compute nothing but QuantizeLinear/DequantizeLinear nodes (Q/DQ
  pairs the builder left unfused, each a kernel of its own);
* ``float_between_int8``: INT8 layers whose float output reaches another INT8 layer, read by it
  directly or through a kernel that only turns it back into INT8 (its epilogue and the next
  quantization not fused into it: a float tensor written to and read from memory between two INT8
  kernels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantbench.backends.trt_common.inspector import precision_counts

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
FLOAT_PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class OnnxNode:
    """A node of the model the engine was built from: the name the ONNX parser gives its layer, and its
    op type."""

    layer: str
    op: str


def onnx_layer_names(model: Path) -> tuple[dict[str, OnnxNode], set[str]]:
    """(node label -> its layer name and op type, the layer names of the Q/DQ nodes).

    Raises:
        QuantbenchError: the model cannot be read.
    """
    from quantbench.export.qdq import node_label
    from quantbench.model import load_model

    proto = load_model(model, external_data=False)
    names: dict[str, OnnxNode] = {}
    qdq: set[str] = set()
    for index, node in enumerate(proto.graph.node):
        layer = node.name or (f"node_of_{node.output[0]}" if node.output and node.output[0] else "")
        if not layer:
            continue
        names[node_label(node, index)] = OnnxNode(layer, node.op_type)
        if node.op_type in QDQ_OPS:
            qdq.add(layer)
    return names, qdq


def runs_int8(layer: dict[str, Any]) -> bool:
    """Whether a layer (as :func:`~.inspector.parse_layer_log` describes it) computes on INT8 data with
    INT8 weights."""
    inputs, weights = list(layer.get("inputs") or []), list(layer.get("weights") or [])
    return inputs[:1] == ["int8"] and ("int8" in weights or inputs.count("int8") >= 2)


def _requantizes(layer: dict[str, Any]) -> bool:
    """Whether a layer that does not run INT8 reads float data and writes only INT8 (a quantizing
    kernel, possibly with an epilogue such as a scale or an activation)."""
    inputs, outputs = list(layer.get("inputs") or []), list(layer.get("outputs") or [])
    return bool(inputs and outputs) and inputs[0] in FLOAT_PRECISIONS and set(outputs) == {"int8"}


def float_between_int8(layers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """INT8 layers whose float output reaches another INT8 layer (see the module docstring).

    Args:
        layers: the engine's layers with their tensor names (:func:`~.inspector.parse_layer_log`).

    Returns:
        ``[{"layer", "tensor", "into"}]``: the INT8 layer, its float output tensor and the INT8 layers
        that read it (sorted), in engine order.
    """
    readers: dict[str, list[dict[str, Any]]] = {}
    for layer in layers:
        for name in layer.get("input_names") or ():
            readers.setdefault(name, []).append(layer)
    found = []
    for layer in layers:
        if not runs_int8(layer):
            continue
        outputs = zip(layer.get("output_names") or (), layer.get("outputs") or (), strict=False)
        for tensor, precision in outputs:
            if precision not in FLOAT_PRECISIONS:
                continue
            into = set()
            for reader in readers.get(tensor, ()):
                if runs_int8(reader):
                    into.add(str(reader["name"]))
                elif _requantizes(reader):
                    for name in reader.get("output_names") or ():
                        into.update(str(r["name"]) for r in readers.get(name, ()) if runs_int8(r))
            if into:
                found.append({"layer": str(layer["name"]), "tensor": tensor, "into": sorted(into)})
    return found


def _node_entry(label: str, layer_name: str, layers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the engine does with one quantized node."""
    mapped = [layer for layer in layers if layer_name in layer.get("onnx", ())]
    if not mapped:
        mapped = [layer for layer in layers if str(layer["name"]).startswith(layer_name)]
    int8 = any(runs_int8(layer) for layer in mapped)
    weighted = [layer for layer in mapped if layer.get("weights")] or mapped
    precision = "int8" if int8 else (str(weighted[0]["precision"]) if weighted else "absent")
    return {
        "node": label,
        "onnx_layer": layer_name,
        "int8": int8,
        "precision": precision,
        "layers": [str(layer["name"]) for layer in mapped],
    }


def precision_report(
    layers: list[dict[str, Any]],
    model: Path,
    quantized: Sequence[str] = (),
    known_limits: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """What ``results.json`` records of an engine's layers: the layers, their counts by precision and,
    for a variant with quantized nodes, whether each runs INT8 and the lint (see the module docstring).

    Args:
        layers: the engine's layers (:func:`~.inspector.parse_layer_log`).
        model: the ONNX model the engine was built from.
        quantized: the labels of the nodes quantbench quantized (none for FP32 and FP16).
        known_limits: op type -> why the library runs such nodes in float whatever their Q/DQ (its known
            limits, each shown by a probe in the tests).

    Returns:
        ``layers``, ``layer_precisions`` and, with ``quantized``, ``int8_nodes`` (``{"quantized", "int8",
        "nodes": [{"node", "onnx_layer", "int8", "precision", "layers"}]}``) and ``precision_lint``
        (``{"quantized_in_float": [node], "known_limits": [{"node", "op", "reason"}], "unfused_qdq":
        [{"layer", "onnx"}], "float_between_int8": [{"layer", "tensor", "into"}]}``; ``known_limits``
        says which of the nodes left in float are op types of ``known_limits``).

    Raises:
        QuantbenchError: the model cannot be read.
    """
    report: dict[str, Any] = {"layers": layers, "layer_precisions": precision_counts(layers)}
    if not quantized:
        return report
    names, qdq = onnx_layer_names(model)
    unknown = OnnxNode("", "")
    nodes = [_node_entry(label, names.get(label, unknown).layer or label, layers) for label in quantized]
    limits = known_limits or {}
    report["int8_nodes"] = {
        "quantized": len(nodes),
        "int8": sum(node["int8"] for node in nodes),
        "nodes": nodes,
    }
    report["precision_lint"] = {
        "quantized_in_float": [node["node"] for node in nodes if not node["int8"]],
        "known_limits": [
            {"node": node["node"], "op": op, "reason": limits[op]}
            for node in nodes
            if not node["int8"] and (op := names.get(node["node"], unknown).op) in limits
        ],
        "unfused_qdq": [
            {"layer": layer["name"], "onnx": layer["onnx"]}
            for layer in layers
            if layer.get("onnx") and set(layer["onnx"]) <= qdq
        ],
        "float_between_int8": float_between_int8(layers),
    }
    return report
