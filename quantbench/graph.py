"""Small helpers over an ONNX graph: who produces and reads a tensor, constant values, fresh names.

Every function takes an ``onnx.GraphProto`` and reads it as it is now: after changing the graph, ask
again. Node references are indices into ``graph.node``. Subgraphs (If, Loop, Scan bodies) are not
looked into.
"""

from __future__ import annotations

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


def unique_name(taken: set[str], name: str) -> str:
    """``name``, or ``name_1``, ``name_2``... when taken; the result is added to ``taken``."""
    candidate, k = name, 1
    while candidate in taken:
        candidate, k = f"{name}_{k}", k + 1
    taken.add(candidate)
    return candidate


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Remove initializers (and their graph inputs) that no node or graph output reads."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    dropped = {init.name for init in graph.initializer if init.name not in used}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    inputs = [v for v in graph.input if v.name not in dropped]
    del graph.input[:]
    graph.input.extend(inputs)
