"""A model split into consecutive parts, each returning one group of its tensors, run one after the other.

Part ``g`` holds the nodes from just after part ``g - 1``'s last node up to the node writing the last
tensor of group ``g`` (with the constant-only nodes they read). It reads the graph inputs and the tensors
earlier parts computed for it, and returns its group and the tensors later parts read ("carried"). So a
batch goes through the model once, whatever the number of groups, and the activations alive at once are
one group's and the carried ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.errors import QuantbenchError, first_line

if TYPE_CHECKING:
    import onnx

Values = dict[str, tuple[Any, object]]
"""Tensor name -> (array, the object that owns its memory)."""


@dataclass
class Part:
    """One part of the split model.

    Attributes:
        nodes: its nodes, the constant-only ones it needs first, in graph order.
        fed: what it reads from the graph inputs and earlier parts.
        group: the tensors it returns for the caller.
        carried: the tensors it computes that later parts read (some may be in ``group`` too).
        end: the position, among the model's non-constant nodes, of its last node.
    """

    nodes: list[onnx.NodeProto]
    fed: list[str]
    group: list[str]
    carried: list[str]
    end: int
    session: Any = None

    @property
    def returned(self) -> list[str]:
        """What its runs return: the group, then the carried tensors not in it."""
        return list(dict.fromkeys([*self.group, *self.carried]))


class SplitModel:
    """``model`` split after each group (see the module docstring).

    Args:
        model: the model.
        groups: node outputs to return, in groups contiguous in graph order. A group's tensors written by
            a node that also writes a tensor of the next group are moved to that group's part.
        open_part: makes the ONNX Runtime session of a part's model.
        purpose: what the tensors are for, in error messages.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        groups: list[list[str]],
        open_part: Callable[[onnx.ModelProto], Any],
        purpose: str,
    ) -> None:
        from quantbench.graph import constant_nodes_for, constant_tensors, initializers, node_reads

        self.model, self.open_part, self.purpose = model, open_part, purpose
        graph = model.graph
        constants = constant_tensors(graph)
        dynamic = [n for n in graph.node if not all(o in constants for o in n.output if o)]
        self.inits = initializers(graph)
        self.constant_writer = {o: n for n in graph.node for o in n.output if o in constants}
        at = {o: i for i, node in enumerate(dynamic) for o in node.output if o}
        self.last: dict[str, int] = {}
        for i, node in enumerate(dynamic):
            for name in node_reads(node):
                if name not in constants:
                    self.last[name] = i
        self.parts: list[Part] = []
        begin = 0
        for group in groups:
            end = max(at[name] for name in group)
            nodes = dynamic[begin : end + 1]
            if not nodes:  # its tensors came with the last part
                self.parts[-1].group.extend(group)
                continue
            written = {o for node in nodes for o in node.output if o}
            reads = list(dict.fromkeys(n for node in nodes for n in node_reads(node)))
            fed = [n for n in reads if n not in written and n not in constants]
            carried = [n for n in dict.fromkeys(written) if self.last.get(n, -1) > end]
            mine = [n for n in group if n in written]
            if self.parts:
                self.parts[-1].group.extend(n for n in group if n not in written)
            needed = constant_nodes_for(graph, self.constant_writer, reads)
            self.parts.append(Part(needed + nodes, fed, mine, carried, end))
            begin = end + 1

    def runs(self, feed: Mapping[str, np.ndarray]) -> Iterator[Values]:
        """Each part's group for one batch, part after part: numpy views of ONNX Runtime's memory, each
        paired with its OrtValue (copies for tensors a later part reads too, as folding may overwrite them).

        Raises:
            QuantbenchError: ONNX Runtime fails on the batch.
        """
        from onnxruntime import OrtValue

        alive: dict[str, Any] = {}
        for name, array in feed.items():
            alive[name] = OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
        for part in self.parts:
            session = self._session(part, alive)
            returned = part.returned
            try:
                outputs = session.run_with_ort_values(returned, {name: alive[name] for name in part.fed})
            except Exception as exc:
                raise QuantbenchError(
                    f"ONNX Runtime failed on a batch for {self.purpose}: {first_line(exc)}"
                ) from None
            got = dict(zip(returned, outputs, strict=True))
            alive.update((name, got[name]) for name in part.carried)
            for name in [n for n in alive if self.last.get(n, -1) <= part.end]:
                del alive[name]
            values: Values = {}
            for name in part.group:
                array = got[name].numpy()
                values[name] = (array.copy(), None) if name in part.carried else (array, got[name])
            del got, outputs
            yield values

    def _session(self, part: Part, alive: Mapping[str, Any]) -> Any:
        """``part``'s session, made on first use with the types of what it is fed."""
        if part.session is None:
            from quantbench.graph import node_reads, sub_model

            fed = {name: alive[name].numpy().dtype for name in part.fed}
            reads = {n for node in part.nodes for n in node_reads(node)}
            weights = [self.inits[n] for n in self.inits if n in reads]
            model = sub_model(self.model, part.nodes, fed, part.returned, weights, "part")
            part.session = self.open_part(model)
        return part.session
