"""One INT8 model from an FP32 model and its ranges: Q/DQ placement, bias correction, ONNX Runtime flavour.

:func:`build_int8_model` is the path every INT8 model takes, in memory: the variants of a run write its
result (:func:`quantbench.export.variants.int8_variant`) and the sensitivity analysis loads it
(:mod:`quantbench.search.candidates`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

    from quantbench.export.bias_correction import BiasCorrection, CorrectionData
    from quantbench.export.qdq import QdqNames, QdqPlan


@dataclass
class Int8Model:
    """An INT8 model in both flavours and how it was built.

    Attributes:
        source: the FP32 model it was built from, at opset 13 or more (the node indices of ``plan``
            are its nodes').
        plan: where the Q/DQ nodes went.
        names: tensor -> the names of its Q/DQ nodes.
        tensorrt: the TensorRT-flavour Q/DQ model, bias-corrected when the correction helped.
        onnxruntime: ONNX Runtime's flavour of it (:mod:`quantbench.export.onnxruntime_flavour`).
        flavour_notes: where the ONNX Runtime flavour's values may differ from the TensorRT flavour's by
            more than float rounding.
        correction: what the bias correction did; None when it was not asked for or nothing was quantized.
    """

    source: onnx.ModelProto
    plan: QdqPlan
    names: dict[str, QdqNames]
    tensorrt: onnx.ModelProto
    onnxruntime: onnx.ModelProto
    flavour_notes: list[str] = field(default_factory=list)
    correction: BiasCorrection | None = None

    def details(self) -> dict[str, Any]:
        """What the build did, JSON-ready: quantized tensors and nodes, fused residual Adds, tensors
        without a range, excluded nodes, the flavour's notes and the bias correction."""
        from quantbench.export.qdq import node_label

        nodes = self.source.graph.node
        return {
            "quantized_tensors": list(self.plan.activations),
            "quantized_nodes": [node_label(nodes[i], i) for i in self.plan.quantized_nodes],
            "residual_adds": [node_label(nodes[i], i) for i in self.plan.residual_adds],
            "tensors_without_range": self.plan.missing,
            "excluded_nodes": self.plan.excluded,
            "onnxruntime_flavour_notes": self.flavour_notes,
            "bias_correction": self.correction.details()
            if self.correction is not None
            else {"applied": False},
        }


def build_int8_model(
    model: onnx.ModelProto,
    amax: Mapping[str, float],
    exclude: Iterable[str] = (),
    correction: CorrectionData | None = None,
    threads: int = 0,
) -> Int8Model:
    """Plan and build the Q/DQ model, correct its biases when asked, and make its ONNX Runtime flavour.

    Args:
        model: the FP32 model (converted to opset 13 first when older).
        amax: tensor -> calibrated amax.
        exclude: node names, op types or regular expressions of nodes to keep in float.
        correction: the batches to correct the quantized nodes' biases on and to judge the correction
            on; it is kept only where it improves the headline
            (:func:`quantbench.export.bias_correction.correct_if_better`); None: no correction.
        threads: ONNX Runtime threads for the bias correction (0: every core).

    Returns:
        Both flavours with the plan; a model with nothing quantized when no node could be.

    Raises:
        QuantbenchError: a bad ``exclude`` pattern, an opset below 13 that cannot be converted, or a
            model ONNX Runtime cannot run for the bias correction.
    """
    from quantbench.export.onnxruntime_flavour import to_onnxruntime_flavour
    from quantbench.export.qdq import at_least_opset13, build_qdq, plan_qdq

    model = at_least_opset13(model)
    plan = plan_qdq(model, amax, exclude)
    qdq_model, names = build_qdq(model, amax, plan)
    corrected = None
    if correction is not None and plan.quantized_nodes:
        from quantbench.export.bias_correction import correct_if_better

        targets = [model.graph.node[i].output[0] for i in plan.quantized_nodes]
        corrected = correct_if_better(model, qdq_model, targets, correction, threads=threads)
        qdq_model = corrected.model
    notes: list[str] = []
    cpu_model = to_onnxruntime_flavour(qdq_model, names, notes)
    return Int8Model(model, plan, names, qdq_model, cpu_model, notes, corrected)
