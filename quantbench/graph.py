"""Small helpers over an ONNX graph: who produces and reads a tensor, constant values, fresh names.

Every function takes an ``onnx.GraphProto`` (:func:`evaluate_constants` the model, for its opsets) and
reads it as it is now: after changing the graph, ask again. Node references are indices into
``graph.node``. Subgraphs (If, Loop, Scan bodies) are not looked into, except for what they read from
the enclosing graph (:func:`node_reads`), which :func:`cleanup` and :func:`drop_unused_initializers`
keep.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import onnx


def producers(graph: onnx.GraphProto) -> dict[str, int]:
    """Tensor name -> index of the node that outputs it (empty optional output names left out)."""
    return {name: i for i, node in enumerate(graph.node) for name in node.output if name}


def consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[int, int]]]:
    """Tensor name -> the (node index, input index) of every use, in graph order.

    A node that reads a tensor twice (``Mul(x, x)``) uses it twice; empty optional inputs are left out.
    """
    uses: dict[str, list[tuple[int, int]]] = {}
    for i, node in enumerate(graph.node):
        for j, name in enumerate(node.input):
            if name:
                uses.setdefault(name, []).append((i, j))
    return uses


def reader_nodes(graph: onnx.GraphProto) -> dict[str, list[int]]:
    """Tensor name -> indices of the nodes that read it, once per use (see :func:`consumers`)."""
    return {name: [i for i, _ in uses] for name, uses in consumers(graph).items()}


def initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """The initializers of ``graph`` by name (the protos themselves: changing one changes the graph)."""
    return {init.name: init for init in graph.initializer}


def constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Values of the initializers and of the Constant nodes' outputs, by name.

    Only Constant nodes whose first attribute is ``value`` (a tensor) are read; those written with
    ``value_float`` and the like are left out.
    """
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def set_initializer(graph: onnx.GraphProto, name: str, value: np.ndarray) -> None:
    """Replace the value (and type and shape) of initializer ``name`` in place.

    Raises:
        KeyError: ``graph`` has no initializer of that name.
    """
    from onnx import numpy_helper

    init = next((init for init in graph.initializer if init.name == name), None)
    if init is None:
        raise KeyError(name)
    init.CopyFrom(numpy_helper.from_array(value, name))


def tensor_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name in ``graph``: node inputs and outputs, initializers, graph inputs and outputs."""
    names = {name for node in graph.node for name in [*node.input, *node.output]}
    names |= {init.name for init in graph.initializer}
    return names | {v.name for v in [*graph.input, *graph.output]}


def opset_version(model: onnx.ModelProto) -> int:
    """The model's version of the default ONNX operator set (0 where it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def unique_name(taken: set[str], name: str) -> str:
    """``name``, or ``name_1``, ``name_2``... when taken; the result is added to ``taken``."""
    candidate, k = name, 1
    while candidate in taken:
        candidate, k = f"{name}_{k}", k + 1
    taken.add(candidate)
    return candidate


def node_reads(node: onnx.NodeProto) -> list[str]:
    """The tensors ``node`` reads: its non-empty inputs, then those its subgraphs (If, Loop, Scan
    bodies, at any depth) read from the enclosing scope."""
    names = [name for name in node.input if name]
    for attribute in node.attribute:
        for body in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
            inner = {name for n in body.node for name in n.output} | {i.name for i in body.initializer}
            inner |= {v.name for v in body.input}
            names += [name for n in body.node for name in node_reads(n) if name not in inner]
    return names


RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)
"""Ops whose outputs change from run to run, whatever their inputs."""


def constant_tensors(graph: onnx.GraphProto) -> set[str]:
    """Tensors whose value depends on initializers and Constant nodes only, through any chain of nodes.

    The initializers (also those that older exporters list as graph inputs too: quantbench treats every
    initializer as a weight) and the outputs of Constant nodes, then the outputs of every node of the
    default domain that reads at least one tensor and only such tensors. Nodes of :data:`RANDOM_OPS`,
    of other domains or with subgraphs are never constant. The graph must be in topological order.
    """
    constant = {init.name for init in graph.initializer}
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type in RANDOM_OPS:
            continue
        if any(a.HasField("g") or a.graphs for a in node.attribute):
            continue
        reads = [name for name in node.input if name]
        if node.op_type == "Constant" or (reads and all(name in constant for name in reads)):
            constant.update(name for name in node.output if name)
    return constant


def evaluate_constants(model: onnx.ModelProto, names: list[str]) -> dict[str, np.ndarray]:
    """Values of ``names``, tensors of :func:`constant_tensors` of ``model``'s graph, computed with
    ONNX's reference evaluator from the nodes and initializers they depend on.

    Returns:
        name -> value; empty when the evaluator cannot run those nodes (an op it lacks, a bad graph).
    """
    import numpy as np
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    producer = producers(graph)
    needed: set[int] = set()
    stack = [name for name in names if name in producer]
    while stack:
        index = producer[stack.pop()]
        if index not in needed:
            needed.add(index)
            stack.extend(name for name in node_reads(graph.node[index]) if name in producer)
    nodes = [graph.node[i] for i in sorted(needed)]
    read = {name for node in nodes for name in node_reads(node)} | set(names)
    part = helper.make_graph(
        nodes,
        "constants",
        [],
        [helper.make_empty_tensor_value_info(name) for name in names],
        [init for init in graph.initializer if init.name in read],
    )
    part_model = helper.make_model(part, opset_imports=model.opset_import, functions=model.functions)
    try:
        values = ReferenceEvaluator(part_model).run(None, {})
    except Exception:  # an op the evaluator lacks, or a graph it cannot run: the caller does without
        return {}
    return dict(zip(names, (np.asarray(value) for value in values), strict=True))


def cleanup(graph: onnx.GraphProto) -> None:
    """Remove what computes nothing the graph needs: nodes of the default domain none of whose outputs
    is read (by a node, a subgraph or as a graph output), and so the nodes only they read (one backward
    pass over a graph in topological order, as ONNX requires), then unused initializers
    (:func:`drop_unused_initializers`) and the value infos of tensors no longer in the graph."""
    outputs = {o.name for o in graph.output}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node_reads(node):
            uses[name] = uses.get(name, 0) + 1
    dead: set[int] = set()
    for i in reversed(range(len(graph.node))):  # readers come after producers: one backward pass
        node = graph.node[i]
        outs = [name for name in node.output if name]
        if node.domain not in ("", "ai.onnx") or not outs:
            continue
        if all(uses.get(name, 0) == 0 and name not in outputs for name in outs):
            dead.add(i)
            for name in node_reads(node):
                uses[name] -= 1
    if dead:
        kept = [node for i, node in enumerate(graph.node) if i not in dead]
        del graph.node[:]
        graph.node.extend(kept)
    drop_unused_initializers(graph)
    present = tensor_names(graph)
    infos = [v for v in graph.value_info if v.name in present]
    del graph.value_info[:]
    graph.value_info.extend(infos)


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Remove initializers (and their graph inputs) that no node (subgraphs included) or graph output
    reads."""
    used = {name for node in graph.node for name in node_reads(node)} | {o.name for o in graph.output}
    dropped = {init.name for init in graph.initializer if init.name not in used}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    inputs = [v for v in graph.input if v.name not in dropped]
    del graph.input[:]
    graph.input.extend(inputs)


def toposort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node comes after the nodes writing what it reads (subgraphs'
    reads from the enclosing scope included), keeping the present order wherever it already allows.

    Raises:
        ValueError: the graph has a cycle.
    """
    import heapq

    writer = {name: i for i, node in enumerate(graph.node) for name in node.output if name}
    waiting = [0] * len(graph.node)
    readers: dict[int, list[int]] = {}
    for i, node in enumerate(graph.node):
        for w in {writer[name] for name in node_reads(node) if name in writer and writer[name] != i}:
            waiting[i] += 1
            readers.setdefault(w, []).append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for r in readers.get(i, []):
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(ready, r)
    if len(order) != len(graph.node):
        raise ValueError("the graph has a cycle")
    nodes = [graph.node[i] for i in order]
    del graph.node[:]
    graph.node.extend(nodes)


def constant_nodes_for(
    graph: onnx.GraphProto, writers: Mapping[str, onnx.NodeProto], reads: Iterable[str]
) -> list[onnx.NodeProto]:
    """The nodes that write the constant tensors ``reads`` depend on, through any chain of them, in graph
    order; ``writers`` maps each constant tensor computed by a node to that node."""
    needed: set[int] = set()
    stack = [name for name in reads if name in writers]
    while stack:
        node = writers[stack.pop()]
        if id(node) not in needed:
            needed.add(id(node))
            stack.extend(name for name in node_reads(node) if name in writers)
    return [node for node in graph.node if id(node) in needed]


def sub_model(
    model: onnx.ModelProto,
    nodes: list[onnx.NodeProto],
    fed: Mapping[str, np.dtype],
    outputs: list[str],
    weights: list[onnx.TensorProto],
    name: str,
) -> onnx.ModelProto:
    """A model of ``nodes`` alone (a part of ``model``): graph inputs ``fed`` (name -> element type, shapes
    left open), graph outputs ``outputs`` (types left open), initializers ``weights``; the opsets, IR
    version and functions of ``model``."""
    from onnx import helper

    graph = helper.make_graph(
        nodes,
        name,
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(dtype), None)
            for n, dtype in fed.items()
        ],
        [helper.make_empty_tensor_value_info(n) for n in outputs],
        weights,
    )
    part = helper.make_model(graph, opset_imports=model.opset_import)
    part.ir_version = model.ir_version
    part.functions.extend(model.functions)
    return part
