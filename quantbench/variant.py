"""A variant: one model of a run to compare with FP32, as the export stage writes it and a backend
prepares it (see :mod:`quantbench.export.variants` for how each is built). A leaf module."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Variant:
    """One model to compare.

    Attributes:
        name: ``fp32``, ``fp16`` or ``int8-<ranges label>``.
        precision: ``fp32``, ``fp16`` or ``int8``.
        model: the ONNX file for TensorRT (and for GPU execution providers).
        cpu_model: the ONNX file ONNX Runtime runs on the CPU.
        method: the ranges label of an INT8 variant.
        emulated: op types the CPU runs through float32 casts (their latency is not a GPU's).
        details: what the build did (quantized tensors, tensors without a range, nodes kept in float).
    """

    name: str
    precision: str
    model: Path
    cpu_model: Path
    method: str | None = None
    emulated: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
