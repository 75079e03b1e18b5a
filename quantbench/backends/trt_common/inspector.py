"""Per-layer information from the engine inspector of a TensorRT-family library: name, layer type and
precision.

Engines are built with ``ProfilingVerbosity.DETAILED`` so that the inspector's JSON describes each
layer with its inputs and outputs and their ``Format/Datatype``. A layer's precision is read from its
first input (the data its kernel computes on), or from its first output where it has no input:
``int8``, ``fp16``, ``bf16``, ``fp8``, ``fp32``, ``int32``, ``bool``..., ``unknown`` where the text
names none of them.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from quantbench.errors import QuantbenchError

if TYPE_CHECKING:
    import tensorrt

    from quantbench.backends.trt_common.library import LoadedLibrary

# Checked in order: the first match wins ("UInt8" before "Int8").
_PRECISIONS = (
    (re.compile(r"uint8", re.I), "uint8"),
    (re.compile(r"int8", re.I), "int8"),
    (re.compile(r"fp8|e4m3", re.I), "fp8"),
    (re.compile(r"fp4|e2m1", re.I), "fp4"),
    (re.compile(r"int4", re.I), "int4"),
    (re.compile(r"bf16|bfloat16", re.I), "bf16"),
    (re.compile(r"fp16|half", re.I), "fp16"),
    (re.compile(r"fp32|float|tf32", re.I), "fp32"),
    (re.compile(r"int32", re.I), "int32"),
    (re.compile(r"int64", re.I), "int64"),
    (re.compile(r"bool", re.I), "bool"),
)


def precision_of(format_text: str) -> str:
    """The precision named by a ``Format/Datatype`` text, e.g. ``"Row major linear FP16"`` -> ``fp16``."""
    for pattern, name in _PRECISIONS:
        if pattern.search(format_text):
            return name
    return "unknown"


def _first_format(tensors: Any) -> str | None:
    if isinstance(tensors, list):
        for tensor in tensors:
            if isinstance(tensor, dict) and isinstance(tensor.get("Format/Datatype"), str):
                return str(tensor["Format/Datatype"])
    return None


def parse_layers(text: str, library: str) -> list[dict[str, str]]:
    """The inspector's JSON as ``[{"name", "type", "precision"}]`` in engine order.

    Layers described by name only (an engine built without detailed verbosity) get type and
    precision ``unknown``.

    Args:
        text: what the inspector returned.
        library: the library's name in messages, e.g. ``TensorRT``.

    Raises:
        QuantbenchError: the text is not the inspector's JSON.
    """
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise QuantbenchError(f"{library}'s engine inspector returned no JSON ({exc})") from None
    layers = document.get("Layers") if isinstance(document, dict) else None
    if not isinstance(layers, list):
        raise QuantbenchError(f"{library}'s engine inspector JSON has no 'Layers' list")
    out = []
    for index, layer in enumerate(layers):
        if isinstance(layer, str):
            out.append({"name": layer, "type": "unknown", "precision": "unknown"})
            continue
        if not isinstance(layer, dict):
            continue
        fmt = _first_format(layer.get("Inputs")) or _first_format(layer.get("Outputs"))
        out.append(
            {
                "name": str(layer.get("Name", f"layer {index}")),
                "type": str(layer.get("LayerType", "unknown")),
                "precision": precision_of(fmt) if fmt is not None else "unknown",
            }
        )
    return out


def _log_section(line: str, start: str, ends: tuple[str, ...]) -> str:
    """The text of ``line`` after ``start`` up to the first of ``ends`` (empty where ``start`` is absent)."""
    _, found, rest = line.partition(start)
    if not found:
        return ""
    cut = min((i for i in (rest.find(end) for end in ends) if i >= 0), default=len(rest))
    return rest[:cut]


def _datatypes(section: str) -> list[str]:
    return [precision_of(text) for text in re.findall(r"Datatype: (\w+)", section)]


def _names(section: str) -> list[str]:
    return re.findall(r"\{ Name: ([^,]*), ", section)


def parse_layer_log(text: str) -> list[dict[str, Any]]:
    """The layer information a TensorRT-family builder logs after a build with detailed profiling
    verbosity (its verbose ``Layers:`` message, one ``Name: ..., LayerType: ..., Inputs: [...],
    Constants: [...], Outputs: [...], TacticName: ..., StreamId: ..., Metadata: ...`` line per layer).

    Returns:
        ``[{"name", "type", "precision", "inputs", "weights", "outputs", "input_names", "output_names",
        "onnx"}]`` in engine order: ``precision`` as :func:`parse_layers` reads it (``none`` for a layer
        without tensors), ``inputs``/``weights``/``outputs`` the precisions of its input, constant and
        output tensors, ``input_names``/``output_names`` the engine's names of its input and output
        tensors (which connect the layers), and ``onnx`` the ONNX nodes it computes (its
        ``[ONNX Layer: name]`` metadata).
    """
    layers = []
    for line in text.splitlines():
        if not line.startswith("Name: "):
            continue
        name = _log_section(line, "Name: ", (", LayerType: ",))
        input_section = _log_section(line, ", Inputs: [", ("], Constants: [", "], Outputs: ["))
        output_section = _log_section(line, "], Outputs: [", ("], TacticName: ", "], Metadata: "))
        inputs, outputs = _datatypes(input_section), _datatypes(output_section)
        weights = _datatypes(_log_section(line, "], Constants: [", ("], Outputs: [",)))
        first = inputs[:1] or outputs[:1]
        layers.append(
            {
                "name": name,
                "type": _log_section(line, ", LayerType: ", (", ",)) or "unknown",
                "precision": first[0] if first else "none",
                "inputs": inputs,
                "weights": weights,
                "outputs": outputs,
                "input_names": _names(input_section),
                "output_names": _names(output_section),
                "onnx": re.findall(r"\[ONNX Layer: ([^\]]*)\]", _log_section(line, ", Metadata: ", ())),
            }
        )
    return layers


def precision_counts(layers: list[dict[str, Any]]) -> dict[str, int]:
    """How many layers run in each precision."""
    counts: dict[str, int] = {}
    for layer in layers:
        counts[layer["precision"]] = counts.get(layer["precision"], 0) + 1
    return counts


def engine_layers(lib: LoadedLibrary, engine: tensorrt.ICudaEngine) -> list[dict[str, str]]:
    """Per-layer information of an engine that ``lib`` deserialized (see :func:`parse_layers`)."""
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(lib.module.LayerInformationFormat.JSON)
    return parse_layers(text, lib.name)
