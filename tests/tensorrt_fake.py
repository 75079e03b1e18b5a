"""Test doubles for TensorRT and the CUDA runtime.

``FakeTensorRT`` is a ``tensorrt`` module generated from an API record of the real bindings
(``tests/data/tensorrt_api/<version>.json``, written by ``scripts/tensorrt_api.py`` from the bindings
wheels). Every attribute the code under test reads, sets, calls or overrides is looked up in that
record: a name the real module does not have, a property that is not writable, or a call that fits
none of the pybind11 signatures is recorded in ``violations`` (and raises ``AttributeError`` /
``TypeError`` as the real module would). What calls return comes from ``behaviours``
(``"Class.member" -> value or function``) or, by default, from the return annotation.

``engine_behaviours`` makes a small world on top of it: networks parsed from real ONNX files, a
builder that drives a calibrator exactly as TensorRT documents it (``get_batch_size``, then
``read_calibration_cache``; when that returns nothing, ``get_batch(names)`` until it returns None,
then ``write_calibration_cache``), and engines whose ``execute_async_v3`` computes the model's
outputs with ONNX Runtime from the bytes at the bound device addresses (or copies input to output on
the device for the ``identity`` engine, which CUDA graphs can capture).

``FakeCudaRuntime`` emulates the cuda-python runtime calls quantbench uses with host memory, so the
same code paths run on machines without a GPU; on a GPU the real runtime is used instead.
"""

from __future__ import annotations

import ctypes
import json
import types
from pathlib import Path
from typing import Any

import numpy as np

API_DIR = Path(__file__).parent / "data" / "tensorrt_api"
VERSIONS_10 = ("10.0.1", "10.16.1")
VERSIONS_11 = ("11.0.0", "11.4.0")
ALIASES = {
    "nvonnxparser::IParserError": "ParserError",
    "detail::accessor<detail::accessor_policies::str_attr>": "IPluginRegistry",
}
ALGORITHMS = {
    "IInt8EntropyCalibrator2": "EntropyCalibration2",
    "IInt8MinMaxCalibrator": "MinMaxCalibration",
    "IInt8EntropyCalibrator": "EntropyCalibration",
    "IInt8LegacyCalibrator": "LegacyCalibration",
}


def load_record(version: str) -> dict[str, Any]:
    """The API record of a TensorRT version (``10.16.1`` ...)."""
    return json.loads((API_DIR / f"{version}.json").read_text())  # type: ignore[no-any-return]


def _split_params(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[(<"
        depth -= char in "])>"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def parse_signature(signature: str) -> tuple[list[tuple[str, str, bool]], str]:
    """Parameters (name, annotation, has a default) after ``self``, and the return annotation, of a
    pybind11 signature such as ``"(self: X, a: int, b: str = 'x') -> bool"``."""
    depth, end = 0, -1
    for i, char in enumerate(signature):
        depth += char == "("
        depth -= char == ")"
        if depth == 0:
            end = i
            break
    params = []
    for part in _split_params(signature[1:end]):
        name, _, rest = part.partition(":")
        annotation, _, default = rest.partition("=")
        params.append((name.strip(), annotation.strip(), bool(default.strip())))
    if params and params[0][0] == "self":
        params = params[1:]
    returns = signature[end + 1 :].split("->", 1)[1].strip() if "->" in signature[end + 1 :] else "None"
    return params, returns


class EnumValue:
    """A member of a fake pybind11 enum: hashable, comparable, ``int()``-able."""

    def __init__(self, enum: str, name: str, index: int) -> None:
        self.enum, self.name, self.index = enum, name, index

    def __int__(self) -> int:
        return self.index

    def __index__(self) -> int:
        return self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnumValue) and (other.enum, other.name) == (self.enum, self.name)

    def __hash__(self) -> int:
        return hash((self.enum, self.name))

    def __repr__(self) -> str:
        return f"<{self.enum}.{self.name}: {self.index}>"


class FakeMeta(type):
    """Class-level attribute access of fake TensorRT classes (enum members, nested classes)."""

    def __getattr__(cls, name: str) -> Any:
        world: FakeTensorRT = cls.__dict__.get("_world") or cls._world  # type: ignore[attr-defined]
        spec_name: str = cls._spec_name  # type: ignore[attr-defined]
        spec = world.record["classes"][spec_name]
        if spec["kind"] == "enum":
            if name in spec["values"]:
                return EnumValue(spec_name, name, spec["values"].index(name))
            return world.violation(f"{spec_name}.{name} does not exist", AttributeError)
        member = spec["members"].get(name)
        if member is None:
            return world.violation(f"{spec_name}.{name} does not exist", AttributeError)
        if member["kind"] == "class":
            return world.cls(member["type"])
        if member["kind"] == "value":
            nested = f"{spec_name}.{member['type']}"
            if nested in world.record["classes"]:
                values = world.record["classes"][nested]["values"]
                return EnumValue(nested, name, values.index(name) if name in values else 0)
            return None
        return world.violation(f"{spec_name}.{name} read from the class in the test double", AttributeError)


class FakeObject(metaclass=FakeMeta):
    """Base of every fake TensorRT class; instances check member access against the record."""

    _world: FakeTensorRT
    _spec_name = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_state", {})
        self._world.call(self, self._spec_owner(), "__init__", args, kwargs, construct=True)

    @classmethod
    def _spec_owner(cls) -> str:
        for klass in cls.__mro__:
            name = klass.__dict__.get("_spec_name")
            if name:
                return str(name)
        return ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_spec_name" in cls.__dict__:
            return
        world, owner = cls._world, cls._spec_owner()
        members = world.record["classes"][owner]["members"]
        for name, value in cls.__dict__.items():
            if name.startswith("__") or not callable(value):
                continue
            if name not in members and name not in world.record.get("trampolines", []):
                world.violation(f"{cls.__name__} overrides {owner}.{name}, which TensorRT never calls", None)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        state = object.__getattribute__(self, "_state") if "_state" in self.__dict__ else {}
        if name in state.get("props", {}):
            return state["props"][name]
        owner = self._spec_owner()
        member = self._world.record["classes"][owner]["members"].get(name)
        if member is None:
            return self._world.violation(f"{owner}.{name} does not exist", AttributeError)
        if member["kind"] == "property":
            return self._world.property_value(self, owner, name, member["type"])
        if member["kind"] in ("method", "staticmethod"):
            return lambda *args, **kwargs: self._world.call(self, owner, name, args, kwargs)
        return None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or any(name in klass.__dict__ for klass in type(self).__mro__[:-1]):
            object.__setattr__(self, name, value)
            return
        owner = self._spec_owner()
        member = self._world.record["classes"][owner]["members"].get(name)
        if member is None or member["kind"] != "property":
            self._world.violation(f"{owner}.{name} is not a property", AttributeError)
            return
        if not member["writable"]:
            self._world.violation(f"{owner}.{name} is read-only", AttributeError)
            return
        expected = member["type"]
        known = isinstance(value, FakeObject) and expected in self._world.record["classes"]
        if known and not isinstance(value, self._world.cls(expected)):
            self._world.violation(f"{owner}.{name} takes {expected}, got {type(value).__name__}", TypeError)
        self.__dict__.setdefault("_state", {}).setdefault("props", {})[name] = value

    def __len__(self) -> int:
        return int(self._world.call(self, self._spec_owner(), "__len__", (), {}))

    def __getitem__(self, index: Any) -> Any:
        return self._world.call(self, self._spec_owner(), "__getitem__", (index,), {})


class FakeTensorRT(types.ModuleType):
    """A ``tensorrt`` module checked against an API record (see the module docstring)."""

    def __init__(self, version: str, behaviours: dict[str, Any] | None = None) -> None:
        super().__init__("tensorrt")
        self.record = load_record(version)
        self.behaviours: dict[str, Any] = dict(behaviours or {})
        self.violations: list[str] = []
        self.calls: list[str] = []
        self._classes: dict[str, type] = {}
        self.__version__ = str(self.record["version"])

    def violation(self, message: str, error: type[Exception] | None) -> Any:
        """Record a use of the API that the real module would not accept; raise ``error`` if given."""
        self.violations.append(f"TensorRT {self.__version__}: {message}")
        if error is not None:
            raise error(message)
        return None

    def cls(self, name: str) -> type:
        """The fake class of a record class (made on first use, with its record bases)."""
        name = ALIASES.get(name, name)
        if name not in self._classes:
            spec = self.record["classes"][name]
            bases = spec.get("bases") or []
            parent = self.cls(bases[0]) if bases else FakeObject
            self._classes[name] = FakeMeta(
                name.split(".")[-1], (parent,), {"_spec_name": name, "_world": self}
            )
        return self._classes[name]

    def new(self, class_name: str, /, **state: Any) -> Any:
        """An instance of a fake class without calling its constructor."""
        obj = object.__new__(self.cls(class_name))
        object.__setattr__(obj, "_state", dict(state))
        return obj

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        record = self.__dict__["record"]
        if name in record["classes"]:
            return self.cls(name)
        if name in record["functions"]:
            return lambda *args, **kwargs: self.call(None, "", name, args, kwargs)
        if name in record["values"]:
            kind = record["values"][name]
            if kind in record["classes"] and record["classes"][kind]["kind"] == "enum":
                member = {"float32": "FLOAT", "float16": "HALF", "bfloat16": "BF16", "bool": "BOOL"}.get(
                    name, name.upper()
                )
                return EnumValue(kind, member, 0)
            return None
        return self.violation(f"tensorrt.{name} does not exist", AttributeError)

    def _signatures(self, owner: str, name: str) -> list[str]:
        if not owner:
            return list(self.record["functions"][name])
        member = self.record["classes"][owner]["members"].get(name)
        if member is None:
            return []
        return list(member.get("signatures") or [])

    def call(
        self,
        obj: Any,
        owner: str,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        construct: bool = False,
    ) -> Any:
        """Check a call against the record's signatures, then run its behaviour or default."""
        key = f"{owner}.{name}" if owner else name
        self.calls.append(key)
        signatures = self._signatures(owner, name)
        if not signatures and not (construct and name == "__init__"):
            return self.violation(f"{key} has no signature in the record", TypeError)
        returns = "None"
        matched = not signatures
        problems = []
        for signature in signatures:
            if "*args" in signature:
                matched, returns = True, signature.rsplit("->", 1)[-1].strip()
                break
            params, ret = parse_signature(signature)
            names = [p[0] for p in params]
            required = [p[0] for p in params if not p[2]]
            given = names[: len(args)]
            if len(args) > len(params) or any(k not in names or k in given for k in kwargs):
                problems.append(signature)
                continue
            if any(r not in given and r not in kwargs for r in required):
                problems.append(signature)
                continue
            bad_type = False
            for (_, annotation, _), value in zip(params, args):
                annotation = ALIASES.get(annotation, annotation)
                if isinstance(value, FakeObject) and annotation in self.record["classes"]:
                    bad_type |= not isinstance(value, self.cls(annotation))
                if isinstance(value, EnumValue) and annotation in self.record["classes"]:
                    bad_type |= value.enum != annotation
            if bad_type:
                problems.append(signature)
                continue
            matched, returns = True, ret
            break
        if not matched:
            return self.violation(f"{key}{args!r} fits none of {problems}", TypeError)
        for klass in type(obj).__mro__ if obj is not None else ():
            spec_name = klass.__dict__.get("_spec_name")
            behaviour = self.behaviours.get(f"{spec_name}.{name}") if spec_name else None
            if behaviour is not None:
                return behaviour(obj, *args, **kwargs) if callable(behaviour) else behaviour
        if obj is None and name in self.behaviours:
            behaviour = self.behaviours[name]
            return behaviour(*args, **kwargs) if callable(behaviour) else behaviour
        return self.default(returns)

    def property_value(self, obj: Any, owner: str, name: str, type_name: str) -> Any:
        """A property read: its behaviour (a value, or a function of the object), else a default."""
        self.calls.append(f"{owner}.{name}")
        for klass in type(obj).__mro__:
            spec_name = klass.__dict__.get("_spec_name")
            if spec_name and f"{spec_name}.{name}" in self.behaviours:
                behaviour = self.behaviours[f"{spec_name}.{name}"]
                return behaviour(obj) if callable(behaviour) else behaviour
        return self.default(type_name)

    def default(self, type_name: str) -> Any:
        """The value a call returns when no behaviour is given, from its return annotation."""
        type_name = ALIASES.get(type_name.strip(), type_name.strip())
        simple: dict[str, Any] = {"None": None, "bool": True, "int": 0, "float": 0.0, "str": "", "bytes": b""}
        if type_name in simple:
            return simple[type_name]
        if type_name.startswith("list["):
            return []
        if type_name in self.record["classes"]:
            if self.record["classes"][type_name]["kind"] == "enum":
                return EnumValue(type_name, self.record["classes"][type_name]["values"][0], 0)
            return self.new(type_name)
        return None


# --- a small world of networks and engines ----------------------------------------------------------


def _dims(world: FakeTensorRT, shape: Any) -> Any:
    return world.new("Dims", values=[int(d) for d in shape])


def network_behaviours(world: FakeTensorRT) -> dict[str, Any]:
    """Networks parsed from real ONNX files: inputs, layers, tensors and their dynamic ranges."""
    import onnx

    def dims_init(obj: Any, shape: Any = ()) -> None:
        obj._state["values"] = [int(d) for d in shape]

    def parse_from_file(parser: Any, path: str) -> bool:
        model = onnx.load(path)
        network = parser._state["network"]
        initializers = {i.name for i in model.graph.initializer}
        inputs = []
        for value in model.graph.input:
            if value.name in initializers:
                continue
            shape = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
            inputs.append((value.name, shape))
        floats = {1: "FLOAT", 10: "HALF"}
        layers = []
        for node in model.graph.node:
            layers.append([(out, "FLOAT") for out in node.output])
        dtype = floats.get(model.graph.input[0].type.tensor_type.elem_type, "FLOAT")
        network._state.update(onnx=path, inputs=inputs, layers=layers, dtype=dtype)
        return True

    def parser_init(parser: Any, network: Any, logger: Any) -> None:
        parser._state["network"] = network

    def get_input(network: Any, index: int) -> Any:
        name, shape = network._state["inputs"][index]
        tensor = world.new("ITensor", name=name, shape=shape, dtype=network._state["dtype"])
        network._state.setdefault("tensors", {})[name] = tensor
        return tensor

    def get_layer(network: Any, index: int) -> Any:
        return world.new("ILayer", outputs=network._state["layers"][index], network=network)

    def get_output(layer: Any, index: int) -> Any:
        name, dtype = layer._state["outputs"][index]
        tensor = world.new("ITensor", name=name, shape=[], dtype=dtype)
        layer._state["network"]._state.setdefault("tensors", {})[name] = tensor
        return tensor

    def set_dynamic_range(tensor: Any, low: float, high: float) -> bool:
        tensor._state["range"] = (low, high)
        return True

    return {
        "Dims.__init__": dims_init,
        "Dims.__len__": lambda obj: len(obj._state["values"]),
        "Dims.__getitem__": lambda obj, i: obj._state["values"][i],
        "OnnxParser.__init__": parser_init,
        "OnnxParser.parse_from_file": parse_from_file,
        "INetworkDefinition.num_inputs": lambda n: len(n._state["inputs"]),
        "INetworkDefinition.get_input": get_input,
        "INetworkDefinition.num_layers": lambda n: len(n._state["layers"]),
        "INetworkDefinition.get_layer": get_layer,
        "ILayer.num_outputs": lambda layer: len(layer._state["outputs"]),
        "ILayer.get_output": get_output,
        "ITensor.name": lambda t: t._state["name"],
        "ITensor.shape": lambda t: _dims(world, t._state["shape"]),
        "ITensor.dtype": lambda t: EnumValue("DataType", t._state["dtype"], 0),
        "ITensor.set_dynamic_range": set_dynamic_range,
    }


def engine_behaviours(world: FakeTensorRT, *, identity: bool = False) -> dict[str, Any]:
    """Behaviours of parsing, building, calibrating, deserializing and running (see the module docstring)."""
    import onnx

    from quantbench.backends import cuda

    def build(builder: Any, network: Any, config: Any) -> Any:
        props = config._state.get("props", {})
        calibrator = props.get("int8_calibrator")
        if calibrator is not None:
            _drive_calibrator(world, calibrator, [name for name, _ in network._state["inputs"]], network)
        ranges = {
            name: t._state["range"]
            for name, t in network._state.get("tensors", {}).items()
            if "range" in t._state
        }
        record = {
            "onnx": network._state["onnx"],
            "flags": sorted(config._state.get("flags", [])),
            "profiles": config._state.get("profiles", []),
            "ranges": len(ranges),
            "identity": identity,
        }
        return json.dumps(record).encode()

    def set_flag(config: Any, flag: EnumValue) -> None:
        config._state.setdefault("flags", set()).add(flag.name)

    def clear_flag(config: Any, flag: EnumValue) -> None:
        config._state.setdefault("flags", set()).discard(flag.name)

    def set_shape(profile: Any, name: str, low: Any, opt: Any, high: Any) -> None:
        profile._state.setdefault("shapes", {})[name] = [x._state["values"] for x in (low, opt, high)]

    def add_profile(config: Any, profile: Any) -> int:
        config._state.setdefault("profiles", []).append(profile._state.get("shapes", {}))
        return 0

    def deserialize(runtime: Any, data: Any) -> Any:
        record = json.loads(bytes(data))
        return world.new("ICudaEngine", record=record, model=onnx.load(record["onnx"]))

    return {
        **network_behaviours(world),
        "IBuilderConfig.set_flag": set_flag,
        "IBuilderConfig.clear_flag": clear_flag,
        "IBuilderConfig.create_timing_cache": lambda config, data: world.new(
            "ITimingCache", data=bytes(data)
        ),
        "IBuilderConfig.add_optimization_profile": add_profile,
        "ITimingCache.serialize": lambda cache: b"timing-cache",
        "IOptimizationProfile.set_shape": set_shape,
        "Builder.build_serialized_network": build,
        "Runtime.deserialize_cuda_engine": deserialize,
        **engine_runtime_behaviours(world, cuda),
    }


def _drive_calibrator(world: FakeTensorRT, calibrator: Any, names: list[str], network: Any) -> None:
    """TensorRT's documented calibration protocol, against the calibrator object the code made."""
    base = next(k.__dict__["_spec_name"] for k in type(calibrator).__mro__ if "_spec_name" in k.__dict__)
    batch_size = calibrator.get_batch_size()
    assert isinstance(batch_size, int) and batch_size > 0
    if base == "IInt8LegacyCalibrator":
        assert 0 < calibrator.get_quantile() <= 1 and 0 < calibrator.get_regression_cutoff() <= 1
        assert calibrator.read_histogram_cache() is None
    cached = calibrator.read_calibration_cache()
    network._state["calibration_batches"] = 0
    if not cached:
        while True:
            pointers = calibrator.get_batch(names)
            if not pointers:
                break
            assert len(pointers) == len(names) and all(isinstance(p, int) and p for p in pointers)
            network._state["calibration_batches"] += 1
        major, minor, patch = (int(part) for part in world.__version__.split(".")[:3])
        lines = [f"TRT-{major * 10000 + minor * 100 + patch}-{ALGORITHMS[base]}"]
        for index, (name, _) in enumerate(
            network._state["inputs"] + [o for layer in network._state["layers"] for o in layer]
        ):
            lines.append(f"{name}: {np.float32((index + 1) / 127.0).view(np.uint32):08x}")
        if base == "IInt8LegacyCalibrator":
            calibrator.write_histogram_cache(b"histograms")
        calibrator.write_calibration_cache("\n".join(lines).encode() + b"\n")


def _io_names(engine: Any) -> list[tuple[str, bool]]:
    """(name, is an input) of the engine's model inputs (initializers left out), then its outputs."""
    model = engine._state["model"]
    initializers = {i.name for i in model.graph.initializer}
    ins = [(v.name, True) for v in model.graph.input if v.name not in initializers]
    return ins + [(v.name, False) for v in model.graph.output]


def _shape_of(engine: Any, name: str) -> list[int]:
    """The model's shape of an input or output, -1 for a dynamic dimension."""
    model = engine._state["model"]
    for value in [*model.graph.input, *model.graph.output]:
        if value.name == name:
            return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
    raise KeyError(name)


def _execute(cuda: Any, context: Any, stream: int) -> bool:
    """``execute_async_v3``: copy input to output on the device (``identity``), else run the model with
    ONNX Runtime on the bytes at the bound addresses."""
    engine = context._state["engine"]
    rt = cuda.runtime()
    names = _io_names(engine)
    inputs = [n for n, is_input in names if is_input]
    outputs = [n for n, is_input in names if not is_input]
    if engine._state["record"]["identity"]:
        shape = context._state["shapes"][inputs[0]]
        nbytes = int(np.prod(shape)) * 4
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        dst, src = context._state["addresses"][outputs[0]], context._state["addresses"][inputs[0]]
        err = rt.cudaMemcpyAsync(dst, src, nbytes, kind, rt.cudaStream_t(stream))[0]
        return bool(err == rt.cudaError_t.cudaSuccess)
    import onnxruntime as ort

    rt.cudaStreamSynchronize(rt.cudaStream_t(stream))
    feeds = {}
    for name in inputs:
        shape = context._state["shapes"].get(name) or _shape_of(engine, name)
        array = np.empty(shape, dtype=np.float32)
        rt.cudaMemcpy(
            array.ctypes.data,
            context._state["addresses"][name],
            array.nbytes,
            rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
        )
        feeds[name] = array
    session = engine._state.get("session")
    if session is None:
        session = ort.InferenceSession(engine._state["record"]["onnx"], providers=["CPUExecutionProvider"])
        engine._state["session"] = session
    for name, value in zip(outputs, session.run(outputs, feeds)):
        value = np.ascontiguousarray(value, dtype=np.float32)
        rt.cudaMemcpy(
            context._state["addresses"][name],
            value.ctypes.data,
            value.nbytes,
            rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
        )
    return True


def _inspector_info(inspector: Any, fmt: EnumValue) -> str:
    """The inspector's JSON: two convolutions in the precision of the build's flags, one named layer."""
    record = inspector._state["engine"]._state["record"]
    precision = "Int8" if "INT8" in record["flags"] else "Half" if "FP16" in record["flags"] else "Float"
    layers = [
        {
            "Name": f"layer{i}",
            "LayerType": "CaskConvolution",
            "Inputs": [{"Format/Datatype": f"Row major linear {precision}"}],
        }
        for i in range(2)
    ]
    return json.dumps({"Layers": [*layers, "a layer described by name only"]})


def engine_runtime_behaviours(world: FakeTensorRT, cuda: Any) -> dict[str, Any]:
    """Engines and execution contexts whose outputs are computed from the bound device memory."""

    def profile_shape(engine: Any, name: str, index: int) -> list[Any]:
        shape = _shape_of(engine, name)
        profiles = engine._state["record"]["profiles"]
        if profiles and name in profiles[0]:
            return [_dims(world, s) for s in profiles[0][name]]
        return [_dims(world, shape)] * 3

    def create_context(engine: Any, *args: Any) -> Any:
        return world.new("IExecutionContext", engine=engine, shapes={}, addresses={})

    def set_input_shape(context: Any, name: str, shape: Any) -> bool:
        context._state["shapes"][name] = list(shape._state["values"])
        return True

    def context_shape(context: Any, name: str) -> Any:
        engine = context._state["engine"]
        if name in context._state["shapes"]:
            return _dims(world, context._state["shapes"][name])
        shape = _shape_of(engine, name)
        batch = next(iter(context._state["shapes"].values()), [1])[0]
        if engine._state["record"]["identity"]:
            first_input = _io_names(engine)[0][0]
            return _dims(world, context._state["shapes"].get(first_input, shape))
        return _dims(world, [batch if d < 0 else d for d in shape])

    def set_address(context: Any, name: str, address: int) -> bool:
        context._state["addresses"][name] = int(address)
        return True

    return {
        "ICudaEngine.num_io_tensors": lambda e: len(_io_names(e)),
        "ICudaEngine.get_tensor_name": lambda e, i: _io_names(e)[i][0],
        "ICudaEngine.get_tensor_mode": lambda e, n: EnumValue(
            "TensorIOMode", "INPUT" if dict(_io_names(e))[n] else "OUTPUT", 0
        ),
        "ICudaEngine.get_tensor_dtype": lambda e, n: EnumValue("DataType", "FLOAT", 0),
        "ICudaEngine.get_tensor_shape": lambda e, n: _dims(world, _shape_of(e, n)),
        "ICudaEngine.get_tensor_profile_shape": profile_shape,
        "ICudaEngine.create_execution_context": create_context,
        "ICudaEngine.create_engine_inspector": lambda e: world.new("EngineInspector", engine=e),
        "EngineInspector.get_engine_information": _inspector_info,
        "IExecutionContext.set_input_shape": set_input_shape,
        "IExecutionContext.get_tensor_shape": context_shape,
        "IExecutionContext.set_tensor_address": set_address,
        "IExecutionContext.execute_async_v3": lambda context, stream: _execute(cuda, context, stream),
        "IPluginRegistry.load_library": lambda registry, path: object(),
    }


# --- the CUDA runtime on host memory -------------------------------------------------------------------


class _Code:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


class FakeCudaRuntime(types.SimpleNamespace):
    """The cuda-python runtime calls quantbench makes, on host memory (addresses are host pointers)."""

    def __init__(self) -> None:
        success = _Code("cudaSuccess")
        super().__init__(
            cudaError_t=types.SimpleNamespace(
                cudaSuccess=success, cudaErrorMemoryAllocation=_Code("cudaErrorMemoryAllocation")
            ),
            cudaMemcpyKind=types.SimpleNamespace(
                cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2, cudaMemcpyDeviceToDevice=3
            ),
            cudaStreamCaptureMode=types.SimpleNamespace(cudaStreamCaptureModeThreadLocal=1),
        )
        self.success = success
        self.blocks: dict[int, Any] = {}
        self.frees = 0

    def _alloc(self, size: int) -> tuple[Any, int]:
        block = ctypes.create_string_buffer(size)
        address = ctypes.addressof(block)
        self.blocks[address] = block
        return self.success, address

    def cudaGetErrorName(self, err: Any) -> tuple[Any, bytes]:
        return self.success, str(err).encode()

    def cudaGetDeviceCount(self) -> tuple[Any, int]:
        return self.success, 1

    def cudaGetDeviceProperties(self, device: int) -> tuple[Any, Any]:
        props = types.SimpleNamespace(name=b"Fake GPU\0", major=9, minor=0, totalGlobalMem=1 << 30)
        return self.success, props

    def cudaMemGetInfo(self) -> tuple[Any, int, int]:
        used = sum(ctypes.sizeof(b) for b in self.blocks.values())
        return self.success, (1 << 30) - used, 1 << 30

    def cudaMalloc(self, size: int) -> tuple[Any, int]:
        return self._alloc(size)

    def cudaMallocHost(self, size: int) -> tuple[Any, int]:
        return self._alloc(size)

    def cudaFree(self, address: int) -> tuple[Any]:
        del self.blocks[address]
        self.frees += 1
        return (self.success,)

    cudaFreeHost = cudaFree

    def cudaMemcpy(self, dst: int, src: int, count: int, kind: Any) -> tuple[Any]:
        ctypes.memmove(dst, src, count)
        return (self.success,)

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: Any, stream: Any) -> tuple[Any]:
        ctypes.memmove(dst, src, count)
        return (self.success,)

    def cudaStream_t(self, handle: int = 0) -> int:
        return handle

    def cudaStreamCreate(self) -> tuple[Any, int]:
        return self.success, 7

    def cudaStreamSynchronize(self, stream: Any) -> tuple[Any]:
        return (self.success,)

    def cudaStreamDestroy(self, stream: Any) -> tuple[Any]:
        return (self.success,)

    def cudaEventCreate(self) -> tuple[Any, list[float]]:
        return self.success, [0.0]

    def cudaEventRecord(self, event: list[float], stream: Any) -> tuple[Any]:
        import time

        event[0] = time.perf_counter()
        return (self.success,)

    def cudaEventSynchronize(self, event: Any) -> tuple[Any]:
        return (self.success,)

    def cudaEventElapsedTime(self, start: list[float], end: list[float]) -> tuple[Any, float]:
        return self.success, (end[0] - start[0]) * 1000.0

    def cudaEventDestroy(self, event: Any) -> tuple[Any]:
        return (self.success,)

    def cudaStreamBeginCapture(self, stream: Any, mode: Any) -> tuple[Any]:
        return (_Code("cudaErrorStreamCaptureUnsupported"),)


def install_fakes(
    monkeypatch: Any, version: str, *, identity: bool = False, gpu: bool = False
) -> FakeTensorRT:
    """Put a fake ``tensorrt`` (and, unless ``gpu``, the host-memory CUDA runtime) in place."""
    import sys

    from quantbench.backends import cuda

    if not gpu:
        monkeypatch.setattr(cuda, "_runtime", FakeCudaRuntime())
    world = FakeTensorRT(version)
    world.behaviours.update(engine_behaviours(world, identity=identity))
    monkeypatch.setitem(sys.modules, "tensorrt", world)
    return world
