"""FP16-typed ONNX models from FP32 ones, as TensorRT's strongly typed networks need for FP16.

A strongly typed network runs each layer in the type its ONNX tensors declare, so an FP16
engine needs float16 tensors. :func:`convert_to_fp16` makes nodes float16 unless a rule keeps
them float32: calibrated ``absmax`` beyond float16's range, ``keep_nodes``, :data:`FP32_OPS`,
arithmetic on tensor shapes, domains other than the default one, tensors of unknown type, ops
without float16 at the model's opset (the opset is never raised), initializers or Constants
beyond float16's range.
One Cast per tensor and direction joins float16 and float32 regions; a ``Cast(to=FLOAT)`` in
a float16 region becomes ``Cast(to=FLOAT16)``.

Inputs that an op's schema fixes to ``tensor(float)`` stay float32 in a float16 node (Resize's
and Upsample's ``scales``); inputs typed independently of the outputs (Resize's ``roi``, the
input of Shape or Cast, BatchNormalization's parameters from opset 15) keep their own type.
Initializers and Constant nodes follow their consumers: converted in place, or kept float32
plus a float16 copy (a Cast for a Constant) when both types are needed. Models with
control-flow subgraphs (If, Loop, Scan) are refused.

:func:`runnable_on_cpu` makes such a model run on ONNX Runtime's CPU provider with float16
rounding between ops. That is an emulation: its latency says nothing about a GPU.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantbench.errors import QuantbenchError

FP16_MAX = 65504.0
"""The largest finite float16 value."""

F32, F16 = int(TensorProto.FLOAT), int(TensorProto.FLOAT16)
_FP32_GROUPS = {
    "ties, ordering and coordinates need float32": "TopK ArgMax ArgMin NonMaxSuppression RoiAlign MaxRoiPool",
    "computes coordinates or running sums": "GridSample AffineGrid Range CumSum",
    "sums squares or exponentials that overflow float16 (TensorRT advises float32)": "LayerNormalization "
    "GroupNormalization InstanceNormalization RMSNormalization MeanVarianceNormalization LpNormalization "
    "ReduceSumSquare ReduceL2 ReduceLogSumExp ReduceProd",
    "quantization scales stay float32": "QuantizeLinear DequantizeLinear DynamicQuantizeLinear",
    "random values stay float32": "RandomNormal RandomUniform RandomNormalLike RandomUniformLike Multinomial "
    "Bernoulli",
    "sets its output type by attribute": "ConstantOfShape EyeLike HannWindow HammingWindow BlackmanWindow "
    "MelWeightMatrix",
    "spectral transforms need float32": "DFT STFT",
}
FP32_OPS: dict[str, str] = {op: why for why, ops in _FP32_GROUPS.items() for op in ops.split()}
"""Ops always kept in float32, with the reason reported for them."""

_MAX_ROUNDS = 8
_NO_KERNEL = re.compile(r"Could not find an implementation for (\w+)\(\d+\) node with name '([^']*)'")


@dataclass
class Fp16Model:
    """The result of :func:`convert_to_fp16`.

    Attributes:
        model: the float16-typed model.
        kept_fp32: nodes left in float32 (name, or ``op_type#index`` when unnamed), in graph
            order; Constant nodes follow their consumers and are not listed.
        reasons: node -> why it stays float32.
    """

    model: onnx.ModelProto
    kept_fp32: list[str]
    reasons: dict[str, str]


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> element type, 0 where shape inference cannot tell."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
    types.update({i.name: i.data_type for i in graph.initializer})
    types.update({t: types.get(t, 0) for n in graph.node for t in n.output if t})
    return types


def _namer(graph: onnx.GraphProto) -> Callable[[str], str]:
    """A function returning names, starting from ``base``, unused in ``graph`` and by earlier calls."""
    taken = {t for n in graph.node for t in [n.name, *n.input, *n.output]}
    taken |= {i.name for i in graph.initializer} | {v.name for v in [*graph.input, *graph.output]}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    return fresh


def _constant_array(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a float32 Constant node, or None for any other node."""
    for attr in node.attribute if node.op_type == "Constant" else ():
        if attr.name == "value" and attr.t.data_type == F32:
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_floats"):
            return np.asarray(helper.get_attribute_value(attr), dtype=np.float32)
    return None


def _beyond(array: np.ndarray | None) -> float:
    """The largest finite magnitude in ``array`` when it exceeds :data:`FP16_MAX`, else 0."""
    if array is None:
        return 0.0
    finite = np.abs(array[np.isfinite(array)])
    return float(finite.max()) if finite.size and finite.max() > FP16_MAX else 0.0


def _roles(node: onnx.NodeProto, schema: Any) -> tuple[list[str], list[str]] | str:
    """Per input and output: 'data' (the node's type), 'free' (either float type), 'fixed' (float32).

    A string instead says why the node cannot be float16.
    """
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}

    def formal(params: list[Any], count: int) -> list[str]:
        strs = [p.type_str for p in params[:count]]
        return strs + [params[-1].type_str] * (count - len(strs)) if params else strs

    ins, outs = formal(schema.inputs, len(node.input)), formal(schema.outputs, len(node.output))
    out_roles = []
    for type_str in outs:
        if "tensor(float16)" not in allowed.get(type_str, {type_str}):
            out_roles.append("fixed")
        elif type_str in ins or node.op_type == "Cast":
            out_roles.append("data")
        else:
            return f"op {node.op_type} sets its output type by attribute"
    in_roles = []
    for type_str in ins:
        types = allowed.get(type_str, {type_str})
        free = type_str not in outs and "tensor(float)" in types
        in_roles.append("fixed" if "tensor(float16)" not in types else "free" if free else "data")
    return in_roles, out_roles


def convert_to_fp16(
    model: onnx.ModelProto,
    *,
    absmax: dict[str, float] | None = None,
    keep_io_types: bool = True,
    keep_nodes: Iterable[str] = (),
) -> Fp16Model:
    """A float16-typed copy of a float32 model, by the rules of the module docstring.

    Args:
        absmax: calibrated absolute maxima by tensor name; a node producing or consuming a
            tensor beyond :data:`FP16_MAX` stays float32.
        keep_io_types: float32 graph inputs and outputs, with Casts right after and before them;
            False makes them float16.
        keep_nodes: node names (``op_type#index`` for unnamed nodes) to keep in float32.

    Raises:
        QuantbenchError: the model already has 16-bit floats, has no float32 tensors, has
            control-flow subgraphs or an initializer as graph output, or ``keep_nodes`` names an
            unknown node.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph, absmax, io_type = model.graph, absmax or {}, F32 if keep_io_types else F16
    types = _elem_types(model)
    half = sorted(t for t, e in types.items() if e in (F16, TensorProto.BFLOAT16))
    if half:
        raise QuantbenchError(f"model already has 16-bit float tensors (e.g. {half[0]!r}); expected float32")
    if F32 not in types.values():
        raise QuantbenchError("model has no float32 tensors to convert to float16")
    nodes = list(graph.node)
    ids = [node.name or f"{node.op_type}#{i}" for i, node in enumerate(nodes)]
    keep = set(keep_nodes)
    unknown = sorted(keep - set(ids))
    if unknown:
        raise QuantbenchError(f"keep_nodes names {len(unknown)} node(s) not in the model: {unknown[:3]}")
    if any(a.type in (a.GRAPH, a.GRAPHS) for n in nodes for a in n.attribute):
        raise QuantbenchError("model has control-flow subgraphs (If/Loop/Scan); they cannot be converted")
    inits = {i.name: i for i in graph.initializer}
    consts = {n.output[0]: a for n in nodes if (a := _constant_array(n)) is not None}
    values = {t: numpy_helper.to_array(i) for t, i in inits.items() if i.data_type == F32} | consts
    fixed_values = set(inits) | {n.output[0] for n in nodes if n.op_type == "Constant"}
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}

    def is32(t: str) -> bool:
        return bool(t) and types.get(t) == F32

    # Which nodes run in float16 (those with roles) and why the others do not.
    reasons: dict[str, str] = {}
    roles: dict[int, tuple[list[str], list[str]]] = {}
    shape_derived: set[str] = set()
    for i, node in enumerate(nodes):
        live = [t for t in node.input if t and t not in fixed_values]
        on_shapes = bool(live) and all(t in shape_derived for t in live)
        if node.op_type in ("Shape", "Size") or on_shapes:
            shape_derived.update(node.output)
        touched = [t for t in [*node.input, *node.output] if is32(t)]
        if node.op_type == "Constant" or not touched:
            continue
        domain = "" if node.domain == "ai.onnx" else node.domain
        big = [(absmax[t], t) for t in touched if absmax.get(t, 0.0) > FP16_MAX]
        found: tuple[list[str], list[str]] | str
        if ids[i] in keep:
            found = "listed in keep_nodes"
        elif big:
            found = f"absmax {big[0][0]:.2g} beyond float16's 65504 on tensor {big[0][1]!r}"
        elif node.op_type in FP32_OPS:
            found = f"op {node.op_type}: {FP32_OPS[node.op_type]}"
        elif domain or domain not in opsets:
            found = f"op {domain}.{node.op_type}: no float16 rule outside the default domain"
        elif on_shapes:
            found = "computes on tensor shapes"
        elif any(t and not types.get(t) for t in [*node.input, *node.output]):
            found = "a tensor it touches has an unknown type"
        else:
            try:
                found = _roles(node, onnx.defs.get_schema(node.op_type, opsets[domain], domain))
            except onnx.defs.SchemaError:
                found = f"op {node.op_type} has no schema at opset {opsets[domain]}"
        if not isinstance(found, str):
            pairs = list(zip([*found[0], *found[1]], [*node.input, *node.output]))
            over = [
                (v, t)
                for r, t in zip(*found[:1], node.input)
                if r != "fixed" and (v := _beyond(values.get(t)))
            ]
            if all(r == "fixed" for r, t in pairs if is32(t)):
                found = f"op {node.op_type} has no float16 variant at opset {opsets[domain]}"
            elif over:
                found = f"initializer {over[0][1]!r} holds {over[0][0]:.2g}, beyond float16's 65504"
        if isinstance(found, str):
            reasons[ids[i]] = found
        else:
            roles[i] = found

    # Each float32 tensor's own type ("home") and the types its consumers need.
    home = {v.name: io_type for v in graph.input if is32(v.name)} | {t: F32 for t in inits if is32(t)}
    needs: dict[str, set[int]] = {v.name: {io_type} for v in graph.output if is32(v.name)}
    wanted: dict[tuple[int, int], int] = {}
    for i, node in enumerate(nodes):
        if node.op_type == "Constant":
            continue
        in_roles, out_roles = roles.get(i, (["fixed"] * len(node.input), ["fixed"] * len(node.output)))
        free = {home.get(t, F32) for t, r in zip(node.input, in_roles) if r == "free" and is32(t)}
        for k, (t, role) in enumerate(zip(node.input, in_roles)):
            if is32(t):
                wanted[i, k] = {"data": F16, "fixed": F32}.get(role, min(free) if len(free) == 1 else F16)
                needs.setdefault(t, set()).add(wanted[i, k])
        home.update({t: F16 if r == "data" else F32 for t, r in zip(node.output, out_roles) if is32(t)})
    home.update({t: F16 if needs.get(t) == {F16} and not _beyond(a) else F32 for t, a in consts.items()})
    for t, init in inits.items():
        if needs.get(t) == {F16}:
            init.CopyFrom(numpy_helper.from_array(values[t].astype(np.float16), t))
            home[t] = F16

    # Names: a graph output that must change type renames its producer's tensor; Casts; copies.
    fresh, suffix = _namer(graph), {F16: "_fp16", F32: "_fp32"}
    outputs = {v.name for v in graph.output}
    named: dict[tuple[str, int], str] = {}
    casts: dict[str, list[onnx.NodeProto]] = {}
    for t, kinds in needs.items():
        own = home.setdefault(t, F32)
        renamed = t in outputs and own != io_type
        if renamed and t in inits:
            raise QuantbenchError(f"graph output {t!r} is an initializer; cannot change its type")
        named[t, own] = fresh(t + suffix[own]) if renamed else t
        for kind in sorted(kinds - {own}):
            named[t, kind] = t if t in outputs and kind == io_type else fresh(t + suffix[kind])
            if t in inits:
                graph.initializer.append(
                    numpy_helper.from_array(values[t].astype(np.float16), named[t, kind])
                )
            else:
                cast = helper.make_node("Cast", [named[t, own]], [named[t, kind]], named[t, kind], to=kind)
                casts.setdefault(t, []).append(cast)

    new_nodes = [c for v in graph.input for c in casts.get(v.name, [])]
    for i, node in enumerate(nodes):
        produced = list(node.output)
        for k, t in enumerate(node.input):
            node.input[k] = named.get((t, wanted.get((i, k), 0)), t)
        for k, t in enumerate(node.output):
            node.output[k] = named.get((t, home.get(t, 0)), t)
        if node.op_type == "Cast" and i in roles and home.get(produced[0]) == F16:
            next(a for a in node.attribute if a.name == "to").i = F16
        if node.op_type == "Constant" and home.get(produced[0]) == F16:
            value = numpy_helper.from_array(consts[produced[0]].astype(np.float16))
            node.ClearField("attribute")
            node.attribute.append(helper.make_attribute("value", value))
        new_nodes += [node, *(c for t in produced for c in casts.get(t, []))]
    graph.ClearField("node")
    graph.node.extend(new_nodes)
    for v in [*graph.input, *graph.output]:
        if v.name in home:
            v.type.tensor_type.elem_type = io_type if v.name in outputs else home[v.name]
    kept_info = [v for v in graph.value_info if not is32(v.name)]
    graph.ClearField("value_info")
    graph.value_info.extend(kept_info)
    model = onnx.shape_inference.infer_shapes(model)
    return Fp16Model(model=model, kept_fp32=[n for n in ids if n in reasons], reasons=reasons)


def runnable_on_cpu(model: onnx.ModelProto, session_options: Any = None) -> tuple[onnx.ModelProto, list[str]]:
    """A float16 model that ONNX Runtime's CPU provider runs, rounding to float16 between ops.

    The CPU provider lacks float16 kernels for most ops. Session creation fails for some
    ("Could not find an implementation for Op(n) node with name '...'"); for the others ONNX
    Runtime quietly inserts its own Casts and runs whole chains in float32, dropping the float16
    rounding (of activations and even of float16 graph-input Casts). Every node of such an op
    type is wrapped in Casts float16 -> float32 before and float32 -> float16 after, and the
    model is tried again, up to 8 rounds. An emulation: its latency is not that of a GPU.

    Returns:
        The model (a copy) and the sorted op types wrapped, including ops that have a float16
        kernel but that ONNX Runtime runs in float32 among upcast neighbours.

    Raises:
        QuantbenchError: the model does not load for another reason, or an op still fails.
    """
    import onnxruntime as ort

    current = onnx.ModelProto.FromString(model.SerializeToString())
    emulated: set[str] = set()
    for _ in range(_MAX_ROUNDS):
        missing = _upcast_ops(current, session_options, ort)
        if not missing:
            return current, sorted(emulated)
        if missing & emulated:
            op = sorted(missing & emulated)[0]
            raise QuantbenchError(f"ONNX Runtime's CPU provider cannot run {op} even in float32 emulation")
        current = _emulate(current, missing)
        emulated |= missing
    raise QuantbenchError(f"ONNX Runtime's CPU provider still fails after emulating {sorted(emulated)}")


def _upcast_ops(model: onnx.ModelProto, session_options: Any, ort: Any) -> set[str]:
    """Op types the CPU provider cannot load, or runs in float32 behind its own Casts."""
    try:
        ort.InferenceSession(model.SerializeToString(), session_options, providers=["CPUExecutionProvider"])
    except Exception as error:
        message = (str(error).strip() or type(error).__name__).splitlines()[0]
        found = _NO_KERNEL.search(message)
        if found is None:
            raise QuantbenchError(f"ONNX Runtime cannot load the float16 model: {message}") from None
        if not any(n.op_type == found[1] for n in model.graph.node):
            raise QuantbenchError(
                f"ONNX Runtime's CPU provider has no kernel for {found[1]} (node {found[2]!r}), made by "
                "its graph optimizations; lower session_options.graph_optimization_level"
            ) from None
        return {found[1]}
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    for i, node in enumerate(probe.graph.node):
        node.name = f"n{i}"
    wiring = {n.name: (list(n.input), list(n.output)) for n in probe.graph.node}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    prefix = "session.optimized_model_external_initializers_"
    options.add_session_config_entry(prefix + "file_name", "probe.data")
    options.add_session_config_entry(prefix + "min_size_in_bytes", "1024")
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "probe.onnx")
        ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        seen = onnx.load(options.optimized_model_filepath, load_external_data=False)
    rewired = [
        n for n in seen.graph.node if n.name in wiring and (list(n.input), list(n.output)) != wiring[n.name]
    ]
    return {n.op_type for n in rewired if n.op_type != "Cast"}


def _emulate(model: onnx.ModelProto, ops: set[str]) -> onnx.ModelProto:
    """Wrap every node of ``ops`` in Casts so that it computes in float32 on float16 values."""
    types, graph = _elem_types(model), model.graph
    fresh = _namer(graph)
    widened: dict[str, str] = {}
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        after = []
        if node.op_type in ops:
            for k, t in enumerate(node.input):
                if t and types.get(t) == F16:
                    if t not in widened:
                        widened[t] = fresh(t + "_fp32")
                        new_nodes.append(helper.make_node("Cast", [t], [widened[t]], widened[t], to=F32))
                    node.input[k] = widened[t]
            for k, t in enumerate(node.output):
                if t and types.get(t) == F16:
                    node.output[k] = fresh(t + "_fp32")
                    after.append(helper.make_node("Cast", [node.output[k]], [t], fresh(t + "_round"), to=F16))
            for attr in node.attribute:
                if attr.type == attr.INT and attr.name in ("dtype", "output_datatype") and attr.i == F16:
                    attr.i = F32
                elif attr.type == attr.TENSOR and attr.t.data_type == F16:
                    attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32)))
        new_nodes += [node, *after]
    graph.ClearField("node")
    graph.node.extend(new_nodes)
    return model
