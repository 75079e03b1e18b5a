"""Backends: what builds a variant into something runnable, runs batches through it and times it.

A backend is picked by name (``auto``, ``onnxruntime``, ``tensorrt``). :class:`Backend` prepares a
:class:`~quantbench.export.variants.Variant` into a :class:`Runner`; a runner takes a batch of inputs by name
and returns the model's outputs by name, and is closed when done.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from quantbench.errors import QuantbenchError

if TYPE_CHECKING:
    import numpy as np

    from quantbench.export.variants import Variant

BACKENDS = ("auto", "onnxruntime", "tensorrt")


class Runner(Protocol):
    """One variant, ready to run."""

    representative: bool
    """False where the latency says little about the target (e.g. emulated float16 kernels)."""

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns every model output by name."""
        ...

    def close(self) -> None:
        """Free what the runner holds."""
        ...


class Backend(Protocol):
    """Turns variants into runners."""

    name: str

    def describe(self) -> dict[str, object]:
        """Versions, devices and settings, for the run's manifest."""
        ...

    def prepare(self, variant: Variant) -> Runner:
        """Build ``variant`` for this backend. Raises QuantbenchError when it cannot."""
        ...


def resolve_backend(
    name: str, *, threads: int = 0, plugins: Sequence[str | os.PathLike[str]] = (), cuda_graph: bool = False
) -> Backend:
    """The backend called ``name``; ``auto`` is TensorRT where it can run, else ONNX Runtime.

    Args:
        name: ``auto``, ``onnxruntime`` or ``tensorrt``.
        threads: ONNX Runtime intra-op threads (0: every core).
        plugins: TensorRT plugin libraries to load before parsing (TensorRT only).
        cuda_graph: also time TensorRT engines replayed from a CUDA graph (TensorRT only).

    Raises:
        QuantbenchError: an unknown name, a backend that cannot run here, or TensorRT options given to
            another backend.
    """
    from quantbench.backends import tensorrt

    if name not in BACKENDS:
        raise QuantbenchError(f"--backend must be one of {', '.join(BACKENDS)}, not {name!r}")
    if name == "tensorrt" or (name == "auto" and tensorrt.usable()):
        return tensorrt.TensorRTBackend(plugins, cuda_graph=cuda_graph)
    if plugins:
        raise QuantbenchError("--plugins loads TensorRT plugin libraries; it needs --backend tensorrt")
    if cuda_graph:
        raise QuantbenchError("--cuda-graph times TensorRT engines; it needs --backend tensorrt")
    from quantbench.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(threads=threads)
