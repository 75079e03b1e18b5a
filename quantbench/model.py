"""ONNX model loading, input description, tensor inventory and hashing."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from quantbench.errors import QuantbenchError, first_line

if TYPE_CHECKING:
    import onnx

Dim = int | str | None
"""One dimension of a tensor shape: a fixed size, a symbolic name, or unknown."""


@dataclass(frozen=True)
class InputSpec:
    """One graph input of a model.

    Attributes:
        name: the input's name in the ONNX graph.
        shape: its dimensions; ``int`` where fixed, ``str``/``None`` where dynamic.
        dtype: the numpy dtype the model expects.
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype

    def fixed(self, axis: int) -> int | None:
        """The size of ``axis`` if it is fixed (a positive int), else None."""
        dim = self.shape[axis]
        return dim if isinstance(dim, int) and dim > 0 else None

    @property
    def is_float(self) -> bool:
        """True when the input takes float16/float32/float64 values."""
        return np.issubdtype(self.dtype, np.floating)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model(path: str | os.PathLike[str], *, external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX model with its external data (without, where ``external_data`` is False: the graph
    alone, its large weights left where they are).

    Raises:
        QuantbenchError: the file is missing or is not a readable ONNX model.
    """
    import onnx

    model_path = Path(path)
    if not model_path.is_file():
        raise QuantbenchError(f"model file not found: {model_path}")
    try:
        model = onnx.load(str(model_path), load_external_data=external_data)
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError...
        raise QuantbenchError(f"{model_path} is not a readable ONNX model ({first_line(exc)})") from None
    if not model.graph.node and not model.graph.input:  # protobuf reads many a stray file as empty
        raise QuantbenchError(f"{model_path} is not an ONNX model (no graph in it); check --model")
    return model


def _elem_dtype(elem_type: int) -> np.dtype | None:
    import onnx

    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return None


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's real inputs (graph inputs that are not initializers), in graph order."""
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dims: list[Dim] = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param"):
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        dtype = _elem_dtype(tensor_type.elem_type) or np.dtype(np.float32)
        specs.append(InputSpec(value.name, tuple(dims), dtype))
    return specs


FLOAT_TYPES = (1, 10, 11, 16)  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


_INFERRED: dict[int, tuple[onnx.ModelProto, onnx.ModelProto]] = {}


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with inferred tensor types and shapes, or as it is if inference fails.

    The last result is kept, so the helpers below share one inference per model.
    """
    import onnx

    cached = _INFERRED.get(id(model))
    if cached is not None and cached[0] is model:
        return cached[1]
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is best effort; fall back to what the file declares
        inferred = model
    _INFERRED.clear()
    _INFERRED[id(model)] = (model, inferred)
    return inferred


def elements_per_sample(model: onnx.ModelProto, names: list[str]) -> int | None:
    """Total elements of ``names`` for one sample, from inferred shapes.

    The leading dimension of each tensor is taken as the batch. Returns None
    when a shape (apart from the batch) is not fixed.
    """
    shapes = {}
    for value in [*_inferred(model).graph.value_info, *model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    total = 0
    for name in names:
        dims = shapes.get(name)
        if not dims or any(d <= 0 for d in dims[1:]):
            return None
        total += int(np.prod(dims[1:]))
    return total


def float_activations(model: onnx.ModelProto) -> list[str]:
    """Names of every float activation tensor, in graph order.

    Graph inputs come first, then node outputs in node order. Tensors computed
    from constants alone (initializers, ``Constant`` nodes and any chain of nodes
    reading only those: :func:`quantbench.graph.constant_tensors`) are weights,
    not activations, and are left out: the INT8 export quantizes them as the
    weights of the node that reads them, or leaves them in float
    (:mod:`quantbench.export.qdq`). A tensor whose type shape inference cannot
    tell is kept: the collector skips it at run time if it turns out not to be
    float.
    """
    from quantbench.graph import constant_tensors

    graph = _inferred(model).graph
    types: dict[str, int] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        types[value.name] = value.type.tensor_type.elem_type
    weights = constant_tensors(graph)

    names: list[str] = []
    seen: set[str] = set()

    def add(name: str) -> None:
        if not name or name in seen or name in weights:
            return
        seen.add(name)
        elem = types.get(name, 0)
        if elem == 0 or elem in FLOAT_TYPES:
            names.append(name)

    for value in graph.input:
        add(value.name)
    for node in graph.node:
        for output in node.output:
            add(output)
    return names


def expose_tensors(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are ``names`` (in that order).

    The original outputs are kept only where they are in ``names``; every tensor
    listed becomes readable from an inference session.
    """
    import onnx

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    graph = _inferred(model).graph
    known = {v.name: v for v in [*graph.value_info, *graph.output, *graph.input]}
    del exposed.graph.output[:]
    for name in names:
        value = known.get(name)
        if value is not None and value.type.tensor_type.elem_type != 0:
            out = onnx.ValueInfoProto()
            out.name = name
            out.type.tensor_type.elem_type = value.type.tensor_type.elem_type
            exposed.graph.output.append(out)
        else:
            exposed.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return exposed


NONNEGATIVE_OPS = frozenset({"Relu", "Sigmoid", "Softmax", "HardSigmoid", "Abs"})
"""Operators whose output is never below zero (NaN aside), whatever their input."""


def nonnegative_tensors(model: onnx.ModelProto) -> set[str]:
    """Node outputs that ONNX semantics keep at or above zero.

    The outputs of :data:`NONNEGATIVE_OPS`, and of ``Clip`` whose lower bound is a
    constant (an initializer the feeds cannot override, a ``Constant`` node or,
    before opset 11, the ``min`` attribute) of at least zero.
    """
    from onnx import numpy_helper

    graph = model.graph
    fed = {value.name for value in graph.input}
    constants = {init.name: init for init in graph.initializer if init.name not in fed}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attribute in node.attribute:
                if attribute.name == "value":
                    constants[node.output[0]] = attribute.t

    def clip_floor(node: onnx.NodeProto) -> float | None:
        for attribute in node.attribute:
            if attribute.name == "min":
                return float(attribute.f)
        if len(node.input) > 1 and node.input[1] in constants:
            floor = numpy_helper.to_array(constants[node.input[1]])
            return float(floor.min()) if floor.size else None
        return None

    found: set[str] = set()
    for node in graph.node:
        if not node.output or not node.output[0] or node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in NONNEGATIVE_OPS:
            found.add(node.output[0])
        elif node.op_type == "Clip":
            floor = clip_floor(node)
            if floor is not None and floor >= 0.0:
                found.add(node.output[0])
    return found


IMAGE_SIZE_KEYS = ("imgsz",)
"""Metadata keys under which exporters state the image size a model was made for (Ultralytics: ``imgsz``,
``[640, 640]`` or ``640``)."""


def stated_image_size(model: onnx.ModelProto) -> tuple[int, int] | None:
    """The (height, width) the model's metadata states it runs at (:data:`IMAGE_SIZE_KEYS`), or None
    where it states none, or nothing readable as one or two positive whole numbers."""
    props = {prop.key: prop.value for prop in model.metadata_props}
    for key in IMAGE_SIZE_KEYS:
        text = props.get(key)
        if text is None:
            continue
        parts = [part for part in re.split(r"[\s,\[\]()]+", text) if part]
        if len(parts) in (1, 2) and all(part.isdigit() and int(part) > 0 for part in parts):
            sides = [int(part) for part in parts]
            return sides[0], sides[-1]
    return None


class LoadedModel:
    """An FP32 ONNX model loaded and checked once, for every stage of a command.

    Its file is hashed at most once and its float tensors are listed at most once, on first use.

    Args:
        path: the model file.
        what: the command's need, for the error on non-float inputs (e.g. ``"calibration"``).

    Raises:
        QuantbenchError: the file is missing, not ONNX, or the model has no inputs or non-float ones.
    """

    def __init__(self, path: str | os.PathLike[str], what: str = "quantbench") -> None:
        self.path = Path(path)
        self.proto = load_model(self.path)
        self.inputs = input_specs(self.proto)
        if not self.inputs or not all(spec.is_float for spec in self.inputs):
            raise QuantbenchError(
                f"{self.path}: {what} needs a model with float inputs; its inputs are "
                + (", ".join(f"{s.name} ({s.dtype})" for s in self.inputs) or "none")
            )
        self._hash: str | None = None
        self._tensors: list[str] | None = None

    @property
    def sha256(self) -> str:
        """The SHA-256 of the model file."""
        if self._hash is None:
            self._hash = file_sha256(self.path)
        return self._hash

    @property
    def stated_size(self) -> tuple[int, int] | None:
        """The image size its metadata states (:func:`stated_image_size`), or None."""
        return stated_image_size(self.proto)

    @property
    def tensors(self) -> list[str]:
        """Its float activations in graph order (:func:`float_activations`)."""
        if self._tensors is None:
            self._tensors = float_activations(self.proto)
        return self._tensors

    @property
    def fixed_batch(self) -> int | None:
        """The fixed batch dimension of its first input, if it has one."""
        return self.inputs[0].fixed(0)
