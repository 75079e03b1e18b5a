"""The INT8 models a sensitivity analysis runs: built in memory, loaded into ONNX Runtime quickly.

:func:`build_int8` is the model ``quantbench run --exclude`` writes and judges (the TensorRT-flavour
Q/DQ model, bias correction included when asked), without the files, run as written (no graph
optimization refolds its Q/DQ pairs); :class:`Candidates` builds the same models faster
when many nodes stay in float, and loads them; :func:`replay_name` names a node so that ``--exclude``
selects it alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.errors import QuantbenchError

if TYPE_CHECKING:
    import onnx

    from quantbench.export.judge import CorrectionData
    from quantbench.export.qdq import QdqPlan
    from quantbench.export.rounding import WeightRounding


def replay_name(graph: onnx.GraphProto, index: int) -> str:
    """The name that gives ``--exclude`` exactly node ``index``: its label, else its first output.

    Raises:
        QuantbenchError: neither names that node alone.
    """
    from quantbench.export.qdq import match_excluded, node_label

    node = graph.node[index]
    for candidate in (node_label(node, index), *node.output[:1]):
        if candidate and match_excluded(graph, [candidate]) == {index}:
            return candidate
    raise QuantbenchError(
        f"node {node_label(node, index)} cannot be named alone for --exclude (another node shares its "
        "name); give the model's nodes unique names"
    )


def build_int8(
    model: onnx.ModelProto,
    amax: dict[str, float],
    exclude: Iterable[str] = (),
    correction: CorrectionData | None = None,
    threads: int = 0,
    rounding: WeightRounding | None = None,
    offsets: bool = False,
) -> tuple[onnx.ModelProto, QdqPlan]:
    """The INT8 model ``quantbench run --exclude`` would write and judge, the TensorRT-flavour Q/DQ model,
    in memory (:func:`quantbench.export.int8.build_int8_model`).

    Args:
        model: the FP32 model, opset 13 or more.
        amax: tensor -> amax.
        exclude: ``--exclude`` patterns.
        correction: batches to correct the quantized nodes' biases on, as ``quantbench run`` does
            (:mod:`quantbench.export.bias_correction`); None: no correction.
        threads: ONNX Runtime threads for the correction.
        rounding: adaptive weight codes, kept where they judge better on ``correction``'s check images
            (as ``quantbench run --weight-rounding adaptive`` keeps them); None: nearest rounding.
        offsets: activation offsets, as ``--activation-offsets`` writes them.

    Returns:
        (the Q/DQ model, the plan it was built from).
    """
    from quantbench.export.int8 import Int8Fitting, build_int8_model

    fitting = Int8Fitting(correction, True, rounding, threads, offsets=offsets)
    built = build_int8_model(model, amax, exclude, fitting)
    return built.tensorrt, built.plan


class Candidates:
    """Builds and loads the INT8 models that keep chosen nodes in float, for one model and its ranges.

    The weights of a node kept in float are used as they are, so they stay out of the Q/DQ builder:
    the model is built without them (a much smaller graph to copy when most nodes are in float) and
    ONNX Runtime reads them from memory, shared by every session (``add_external_initializers``). The
    model that runs is :func:`build_int8`'s, value for value. With ``correction`` every candidate has its
    biases corrected as ``quantbench run`` corrects its INT8 models (the correction reads every weight,
    so those candidates are built whole), and takes ``rounding``'s adaptive codes where they judge
    better, as the run's INT8 models do.

    Attributes:
        model: the FP32 model, opset 13 or more.
        amax: tensor -> amax.
        exclude: ``--exclude`` patterns kept in float in every candidate.
        threads: ONNX Runtime threads.
        correction: batches the biases are corrected on (None: no correction).
        rounding: adaptive weight codes offered with ``correction`` (None: nearest rounding).
        offsets: activation offsets in every candidate (built whole: the shift reads every weight).
        built: candidates loaded so far.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        amax: dict[str, float],
        exclude: Sequence[str] = (),
        threads: int = 0,
        correction: CorrectionData | None = None,
        rounding: WeightRounding | None = None,
        offsets: bool = False,
    ) -> None:
        import onnx

        from quantbench.export.qdq import QUANTIZED_OPS, node_label
        from quantbench.graph import reader_nodes

        self.model, self.amax, self.exclude, self.threads = model, dict(amax), list(exclude), threads
        self.correction, self.rounding, self.offsets = correction, rounding, offsets
        self.built = 0
        graph = model.graph
        boundary = {v.name for v in [*graph.input, *graph.output]}
        readers = {name: set(nodes) for name, nodes in reader_nodes(graph).items()}
        self._readers = {
            init.name: readers[init.name]
            for init in graph.initializer
            if init.name not in boundary
            and readers.get(init.name)
            and all(graph.node[i].op_type in QUANTIZED_OPS for i in readers[init.name])
        }
        self._weights = {init.name: init for init in graph.initializer if init.name in self._readers}
        self._light = onnx.ModelProto()
        self._light.CopyFrom(model)
        kept = [init for init in model.graph.initializer if init.name not in self._readers]
        del self._light.graph.initializer[:]
        self._light.graph.initializer.extend(kept)
        self._values: dict[str, tuple[np.ndarray, Any]] = {}
        self._excluded_by: dict[str, set[int]] = {}  # exact --exclude names -> nodes (as match_excluded)
        for i, node in enumerate(graph.node):
            for key in {node.name, node.op_type, node_label(node, i), *node.output} - {""}:
                self._excluded_by.setdefault(key, set()).add(i)

    def nodes(self) -> list[tuple[int, str, str]]:
        """(index, ``--exclude`` name, op type) of each node the INT8 model quantizes, in graph order.

        Raises:
            QuantbenchError: none can be quantized, or a node cannot be named alone for ``--exclude``.
        """
        from quantbench.export.qdq import plan_qdq

        plan = plan_qdq(self.model, self.amax, self.exclude)
        if not plan.quantized_nodes:
            raise QuantbenchError("no Conv, ConvTranspose, Gemm or MatMul of the model can be quantized")
        graph = self.model.graph
        return [(i, replay_name(graph, i), graph.node[i].op_type) for i in plan.quantized_nodes]

    def build(self, kept: Sequence[str]) -> tuple[onnx.ModelProto, list[str]]:
        """The Q/DQ model with ``kept`` (``--exclude`` names) in float, the weights of float nodes
        left as external references; and their names."""
        import onnx

        from quantbench.export.qdq import match_excluded

        patterns = [*self.exclude, *kept]
        if self.correction is not None or self.offsets:
            built = build_int8(
                self.model, self.amax, patterns, self.correction, self.threads, self.rounding, self.offsets
            )
            return built[0], []
        excluded: set[int] = set()
        for pattern in patterns:
            found = self._excluded_by.get(pattern)
            excluded |= found if found is not None else match_excluded(self.model.graph, [pattern])
        light = onnx.ModelProto()
        light.CopyFrom(self._light)
        outside = []
        for name, tensor in self._weights.items():
            if self._readers[name] <= excluded:
                outside.append(name)
            else:
                light.graph.initializer.append(tensor)
        built, _ = build_int8(light, self.amax, patterns)
        for name in outside:
            source = self._weights[name]
            stub = built.graph.initializer.add()
            stub.name, stub.data_type = name, source.data_type
            stub.dims.extend(source.dims)
            stub.data_location = onnx.TensorProto.EXTERNAL
            entry = stub.external_data.add()
            entry.key, entry.value = "location", "quantbench-in-memory"
        return built, outside

    def session(self, kept: Sequence[str]) -> Any:
        """An ONNX Runtime session of the candidate that keeps ``kept`` in float."""
        import onnxruntime as ort
        from onnx import numpy_helper

        from quantbench.backends.onnxruntime import SessionSettings, make_session

        built, outside = self.build(kept)
        for name in outside:
            if name not in self._values:
                array = np.ascontiguousarray(numpy_helper.to_array(self._weights[name]))
                self._values[name] = (array, ort.OrtValue.ortvalue_from_numpy(array))
        self.built += 1
        external = {name: self._values[name][1] for name in outside}
        # as written: the Q/DQ semantics of the model that ships, no pair refolded into a fused node
        settings = SessionSettings(threads=self.threads, external=external, optimize=False)
        return make_session(built, settings, "a model built for the analysis")
