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
plus a float16 copy (a Cast for a Constant) when both types are needed; what no node reads in
the end, the input model's unused initializers included, is dropped
(:func:`quantbench.graph.cleanup`). Models with control-flow subgraphs (If, Loop, Scan) are
refused.

:func:`runnable_on_cpu` makes such a model run on ONNX Runtime's CPU provider with float16
rounding between ops. That is an emulation: its latency says nothing about a GPU.
"""

from __future__ import annotations

import functools
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantbench.errors import QuantbenchError
from quantbench.graph import cleanup, initializers, producers, tensor_names, unique_name

if TYPE_CHECKING:
    from quantbench.backends.onnxruntime import SessionSettings

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


_Roles = tuple[list[str], list[str]]
"""Per input and per output of a float16 node: 'data', 'free' or 'fixed' (see :func:`_roles`)."""


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> element type, 0 where shape inference cannot tell."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
    types.update({i.name: i.data_type for i in graph.initializer})
    types.update({t: types.get(t, 0) for n in graph.node for t in n.output if t})
    return types


def _namer(graph: onnx.GraphProto) -> Callable[[str], str]:
    """A function returning names, starting from ``base``, unused in ``graph`` (as tensor or node
    names) and by earlier calls: Casts are named after the tensor they write."""
    return functools.partial(unique_name, tensor_names(graph) | {n.name for n in graph.node})


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


def _roles(node: onnx.NodeProto, schema: Any) -> _Roles | str:
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


@dataclass
class _Source:
    """What the conversion reads of the float32 model (a private copy it changes in place).

    Attributes:
        graph: the copy's graph.
        nodes: its nodes, in order.
        ids: each node's name, or ``op_type#index`` when unnamed.
        types: tensor -> element type, 0 where shape inference cannot tell.
        inits: initializers by name.
        consts: output -> value of each float32 Constant node.
        values: float32 initializers and Constant outputs -> their values.
        fixed_values: initializers and Constant outputs of any type.
        opsets: domain ('' for the default one) -> opset version.
    """

    graph: onnx.GraphProto
    nodes: list[onnx.NodeProto]
    ids: list[str]
    types: dict[str, int]
    inits: dict[str, onnx.TensorProto]
    consts: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    fixed_values: set[str]
    opsets: dict[str, int]

    def is32(self, tensor: str) -> bool:
        """Whether ``tensor`` is a float32 tensor of the model."""
        return bool(tensor) and self.types.get(tensor) == F32


def _read(model: onnx.ModelProto, keep: set[str]) -> _Source:
    """The facts :func:`convert_to_fp16` works from.

    Raises:
        QuantbenchError: as :func:`convert_to_fp16`, but for an initializer as graph output.
    """
    graph = model.graph
    types = _elem_types(model)
    half = sorted(t for t, e in types.items() if e in (F16, TensorProto.BFLOAT16))
    if half:
        raise QuantbenchError(f"model already has 16-bit float tensors (e.g. {half[0]!r}); expected float32")
    if F32 not in types.values():
        raise QuantbenchError("model has no float32 tensors to convert to float16")
    nodes = list(graph.node)
    ids = [node.name or f"{node.op_type}#{i}" for i, node in enumerate(nodes)]
    unknown = sorted(keep - set(ids))
    if unknown:
        raise QuantbenchError(f"keep_nodes names {len(unknown)} node(s) not in the model: {unknown[:3]}")
    if any(a.type in (a.GRAPH, a.GRAPHS) for n in nodes for a in n.attribute):
        raise QuantbenchError("model has control-flow subgraphs (If/Loop/Scan); they cannot be converted")
    inits = initializers(graph)
    consts = {n.output[0]: a for n in nodes if (a := _constant_array(n)) is not None}
    return _Source(
        graph=graph,
        nodes=nodes,
        ids=ids,
        types=types,
        inits=inits,
        consts=consts,
        values={t: numpy_helper.to_array(i) for t, i in inits.items() if i.data_type == F32} | consts,
        fixed_values=set(inits) | {n.output[0] for n in nodes if n.op_type == "Constant"},
        opsets={("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import},
    )


def _node_roles(
    source: _Source, index: int, on_shapes: bool, absmax: dict[str, float], keep: set[str]
) -> _Roles | str:
    """The roles of node ``index``'s inputs and outputs in float16, or why it stays float32."""
    node, opsets = source.nodes[index], source.opsets
    touched = [t for t in [*node.input, *node.output] if source.is32(t)]
    domain = "" if node.domain == "ai.onnx" else node.domain
    big = [(absmax[t], t) for t in touched if absmax.get(t, 0.0) > FP16_MAX]
    if source.ids[index] in keep:
        return "listed in keep_nodes"
    if big:
        return f"absmax {big[0][0]:.2g} beyond float16's 65504 on tensor {big[0][1]!r}"
    if node.op_type in FP32_OPS:
        return f"op {node.op_type}: {FP32_OPS[node.op_type]}"
    if domain or domain not in opsets:
        return f"op {domain}.{node.op_type}: no float16 rule outside the default domain"
    if on_shapes:
        return "computes on tensor shapes"
    if any(t and not source.types.get(t) for t in [*node.input, *node.output]):
        return "a tensor it touches has an unknown type"
    try:
        found = _roles(node, onnx.defs.get_schema(node.op_type, opsets[domain], domain))
    except onnx.defs.SchemaError:
        return f"op {node.op_type} has no schema at opset {opsets[domain]}"
    if isinstance(found, str):
        return found
    pairs = list(zip([*found[0], *found[1]], [*node.input, *node.output]))
    over = [
        (v, t)
        for r, t in zip(*found[:1], node.input)
        if r != "fixed" and (v := _beyond(source.values.get(t)))
    ]
    if all(r == "fixed" for r, t in pairs if source.is32(t)):
        return f"op {node.op_type} has no float16 variant at opset {opsets[domain]}"
    if over:
        return f"initializer {over[0][1]!r} holds {over[0][0]:.2g}, beyond float16's 65504"
    return found


def _float16_nodes(
    source: _Source, absmax: dict[str, float], keep: set[str]
) -> tuple[dict[str, str], dict[int, _Roles]]:
    """(node id -> why it stays float32, node index -> roles of each node that runs in float16).

    Nodes that touch no float32 tensor, and Constant nodes, are in neither.
    """
    reasons: dict[str, str] = {}
    roles: dict[int, _Roles] = {}
    shape_derived: set[str] = set()
    for i, node in enumerate(source.nodes):
        live = [t for t in node.input if t and t not in source.fixed_values]
        on_shapes = bool(live) and all(t in shape_derived for t in live)
        if node.op_type in ("Shape", "Size") or on_shapes:
            shape_derived.update(node.output)
        if node.op_type == "Constant" or not any(source.is32(t) for t in [*node.input, *node.output]):
            continue
        found = _node_roles(source, i, on_shapes, absmax, keep)
        if isinstance(found, str):
            reasons[source.ids[i]] = found
        else:
            roles[i] = found
    return reasons, roles


@dataclass
class _Typing:
    """The type of every float32 tensor after the conversion, and how consumers get the type they need.

    Attributes:
        home: tensor -> the type its producer (or the graph input or initializer) gives it.
        needs: tensor -> every type its consumers (and graph outputs) read it in.
        wanted: (node index, input index) -> the type that input reads.
        named: (tensor, type) -> the name the tensor has in that type.
        casts: tensor -> the Casts that make its other types, placed right after its producer.
    """

    home: dict[str, int]
    needs: dict[str, set[int]]
    wanted: dict[tuple[int, int], int]
    named: dict[tuple[str, int], str] = field(default_factory=dict)
    casts: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)


def _tensor_types(source: _Source, roles: dict[int, _Roles], io_type: int) -> _Typing:
    """Each float32 tensor's own type ("home") and the types its consumers need; initializers only
    read in float16 are converted in place."""
    graph, is32 = source.graph, source.is32
    home = {v.name: io_type for v in graph.input if is32(v.name)} | {t: F32 for t in source.inits if is32(t)}
    needs: dict[str, set[int]] = {v.name: {io_type} for v in graph.output if is32(v.name)}
    wanted: dict[tuple[int, int], int] = {}
    for i, node in enumerate(source.nodes):
        if node.op_type == "Constant":
            continue
        in_roles, out_roles = roles.get(i, (["fixed"] * len(node.input), ["fixed"] * len(node.output)))
        free = {home.get(t, F32) for t, r in zip(node.input, in_roles) if r == "free" and is32(t)}
        for k, (t, role) in enumerate(zip(node.input, in_roles)):
            if is32(t):
                wanted[i, k] = {"data": F16, "fixed": F32}.get(role, min(free) if len(free) == 1 else F16)
                needs.setdefault(t, set()).add(wanted[i, k])
        home.update({t: F16 if r == "data" else F32 for t, r in zip(node.output, out_roles) if is32(t)})
    home.update(
        {t: F16 if needs.get(t) == {F16} and not _beyond(a) else F32 for t, a in source.consts.items()}
    )
    for t, init in source.inits.items():
        if needs.get(t) == {F16}:
            init.CopyFrom(numpy_helper.from_array(source.values[t].astype(np.float16), t))
            home[t] = F16
    return _Typing(home, needs, wanted)


def _name_types(source: _Source, typing: _Typing, io_type: int) -> None:
    """Fill ``typing.named`` and ``typing.casts``: a graph output that must change type renames its
    producer's tensor; every other type of a tensor is a Cast, or a float16 copy of an initializer.

    Raises:
        QuantbenchError: an initializer is a graph output that must change type.
    """
    graph, inits = source.graph, source.inits
    fresh, suffix = _namer(graph), {F16: "_fp16", F32: "_fp32"}
    outputs = {v.name for v in graph.output}
    named, casts = typing.named, typing.casts
    for t, kinds in typing.needs.items():
        own = typing.home.setdefault(t, F32)
        renamed = t in outputs and own != io_type
        if renamed and t in inits:
            raise QuantbenchError(f"graph output {t!r} is an initializer; cannot change its type")
        named[t, own] = fresh(t + suffix[own]) if renamed else t
        for kind in sorted(kinds - {own}):
            named[t, kind] = t if t in outputs and kind == io_type else fresh(t + suffix[kind])
            if t in inits:
                graph.initializer.append(
                    numpy_helper.from_array(source.values[t].astype(np.float16), named[t, kind])
                )
            else:
                cast = helper.make_node("Cast", [named[t, own]], [named[t, kind]], named[t, kind], to=kind)
                casts.setdefault(t, []).append(cast)


def _retype(source: _Source, roles: dict[int, _Roles], typing: _Typing, io_type: int) -> None:
    """Rewire the nodes to the names of the types they read and write, insert the Casts, retarget
    float16 Casts and Constants, and set the graph's input and output types."""
    graph, home, named, casts = source.graph, typing.home, typing.named, typing.casts
    new_nodes = [c for v in graph.input for c in casts.get(v.name, [])]
    for i, node in enumerate(source.nodes):
        produced = list(node.output)
        for k, t in enumerate(node.input):
            node.input[k] = named.get((t, typing.wanted.get((i, k), 0)), t)
        for k, t in enumerate(node.output):
            node.output[k] = named.get((t, home.get(t, 0)), t)
        if node.op_type == "Cast" and i in roles and home.get(produced[0]) == F16:
            next(a for a in node.attribute if a.name == "to").i = F16
        if node.op_type == "Constant" and home.get(produced[0]) == F16:
            value = numpy_helper.from_array(source.consts[produced[0]].astype(np.float16))
            node.ClearField("attribute")
            node.attribute.append(helper.make_attribute("value", value))
        new_nodes += [node, *(c for t in produced for c in casts.get(t, []))]
    graph.ClearField("node")
    graph.node.extend(new_nodes)
    outputs = {v.name for v in graph.output}
    for v in [*graph.input, *graph.output]:
        if v.name in home:
            v.type.tensor_type.elem_type = io_type if v.name in outputs else home[v.name]
    kept_info = [v for v in graph.value_info if not source.is32(v.name)]
    graph.ClearField("value_info")
    graph.value_info.extend(kept_info)


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
    io_type, keep = F32 if keep_io_types else F16, set(keep_nodes)
    source = _read(model, keep)
    reasons, roles = _float16_nodes(source, absmax or {}, keep)
    typing = _tensor_types(source, roles, io_type)
    _name_types(source, typing, io_type)
    _retype(source, roles, typing, io_type)
    cleanup(model.graph)
    model = onnx.shape_inference.infer_shapes(model)
    return Fp16Model(model=model, kept_fp32=[n for n in source.ids if n in reasons], reasons=reasons)


def runnable_on_cpu(
    model: onnx.ModelProto, settings: SessionSettings | None = None
) -> tuple[onnx.ModelProto, list[str]]:
    """A float16 model that ONNX Runtime's CPU provider runs, rounding to float16 between ops.

    The CPU provider lacks float16 kernels for most ops. Session creation fails for some
    ("Could not find an implementation for Op(n) node with name '...'"); for the others ONNX
    Runtime quietly inserts its own Casts and runs whole chains in float32, dropping the float16
    rounding (of activations and even of float16 graph-input Casts). Every node of such an op
    type is wrapped in Casts float16 -> float32 before and float32 -> float16 after, and the
    model is tried again, up to 8 rounds. An emulation: its latency is not that of a GPU.

    Args:
        model: the float16 model.
        settings: how ONNX Runtime loads the model to find the ops it cannot run (default: the CPU
            provider, every core, every graph optimization).

    Returns:
        The model (a copy) and the sorted op types wrapped, including ops that have a float16
        kernel but that ONNX Runtime runs in float32 among upcast neighbours.

    Raises:
        QuantbenchError: the model does not load for another reason, or an op still fails.
    """
    current = onnx.ModelProto.FromString(model.SerializeToString())
    emulated: set[str] = set()
    for _ in range(_MAX_ROUNDS):
        missing = _upcast_ops(current, settings)
        if not missing:
            return current, sorted(emulated)
        if missing & emulated:
            op = sorted(missing & emulated)[0]
            raise QuantbenchError(f"ONNX Runtime's CPU provider cannot run {op} even in float32 emulation")
        current = _emulate(current, missing)
        emulated |= missing
    raise QuantbenchError(f"ONNX Runtime's CPU provider still fails after emulating {sorted(emulated)}")


def _upcast_ops(model: onnx.ModelProto, settings: SessionSettings | None) -> set[str]:
    """Op types the CPU provider cannot load, or runs in float32 behind its own Casts."""
    from quantbench.backends.onnxruntime import SessionSettings, make_session

    try:
        make_session(model, settings or SessionSettings(), "the float16 model")
    except QuantbenchError as error:  # its message holds the first line of ONNX Runtime's
        found = _NO_KERNEL.search(str(error))
        if found is None:
            raise
        if not any(n.op_type == found[1] for n in model.graph.node):
            raise QuantbenchError(
                f"ONNX Runtime's CPU provider has no kernel for {found[1]} (node {found[2]!r}), made by "
                "its graph optimizations; give settings with optimize=False"
            ) from None
        return {found[1]}
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    for i, node in enumerate(probe.graph.node):
        node.name = f"n{i}"
    wiring = {n.name: (list(n.input), list(n.output)) for n in probe.graph.node}
    with tempfile.TemporaryDirectory() as tmp:
        written = Path(tmp) / "probe.onnx"
        make_session(probe, SessionSettings(optimize=False, optimized_model=written), "the float16 model")
        seen = onnx.load(str(written), load_external_data=False)
    rewired = [
        n for n in seen.graph.node if n.name in wiring and (list(n.input), list(n.output)) != wiring[n.name]
    ]
    made_by = producers(probe.graph)
    blamed = {_upcast_op(probe.graph, made_by, n, wiring[n.name][0]) for n in rewired if n.op_type != "Cast"}
    return blamed - {"Cast"}


def _upcast_op(
    graph: onnx.GraphProto, made_by: dict[str, int], node: onnx.NodeProto, inputs: list[str]
) -> str:
    """The op type to blame for a node ONNX Runtime rewired (``inputs``: its inputs in ``graph``, whose
    producers ``made_by`` indexes): the node's own, unless the node already reads float32 through a Cast of
    ours on an input ONNX Runtime replaced. Then the float16 producer behind that Cast is the one it ran in
    float32 (its output Cast and ours merged into one), as with a Softmax feeding an emulated Conv."""
    for original, now in zip(inputs, node.input, strict=False):
        if original == now or original not in made_by:
            continue
        cast = graph.node[made_by[original]]
        if cast.op_type != "Cast" or _cast_to(cast) != F32 or cast.input[0] not in made_by:
            continue
        source = graph.node[made_by[cast.input[0]]]
        if source.op_type != "Cast":
            return source.op_type
    return node.op_type


def _cast_to(node: onnx.NodeProto) -> int | None:
    """The ``to`` of a Cast node."""
    return next((int(a.i) for a in node.attribute if a.name == "to"), None)


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
