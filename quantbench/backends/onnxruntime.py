"""The ONNX Runtime backend: the CPU everywhere, CUDA or TensorRT execution providers where installed."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.errors import QuantbenchError

if TYPE_CHECKING:
    from quantbench.export.variants import Variant

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class OnnxRuntimeRunner:
    """One variant in an ONNX Runtime session."""

    def __init__(self, session: Any, representative: bool) -> None:
        self._session = session
        self._outputs = [o.name for o in session.get_outputs()]
        self.representative = representative

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns every output by name."""
        values = self._session.run(self._outputs, feeds)
        return dict(zip(self._outputs, values, strict=True))

    def close(self) -> None:
        """Drop the session."""
        self._session = None


class OnnxRuntimeBackend:
    """Runs variants with ONNX Runtime.

    On the CPU an INT8 variant runs its ONNX Runtime flavour (uint8 activations, see
    :mod:`quantbench.export.onnxruntime_flavour`); with a GPU execution provider it runs the TensorRT-flavour
    Q/DQ model, which those providers take as it is.
    """

    name = "onnxruntime"

    def __init__(self, threads: int = 0) -> None:
        import onnxruntime as ort

        if threads < 0:
            raise QuantbenchError(f"--threads must be 0 (every core) or more, got {threads}")
        self.threads = threads
        self.providers = [p for p in GPU_PROVIDERS if p in ort.get_available_providers()]
        self.providers.append("CPUExecutionProvider")
        self._ort = ort

    @property
    def on_gpu(self) -> bool:
        """True when a GPU execution provider is in use."""
        return self.providers[0] != "CPUExecutionProvider"

    def describe(self) -> dict[str, object]:
        """ONNX Runtime's version, providers and thread count."""
        return {
            "name": self.name,
            "onnxruntime": self._ort.__version__,
            "providers": self.providers,
            "threads": self.threads or os.cpu_count(),
        }

    def prepare(self, variant: Variant) -> OnnxRuntimeRunner:
        """A session for the variant's model (the ONNX Runtime flavour on the CPU).

        Raises:
            QuantbenchError: ONNX Runtime cannot load the model.
        """
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        path = variant.model if self.on_gpu else variant.cpu_model
        try:
            session = self._ort.InferenceSession(str(path), options, providers=self.providers)
        except Exception as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise QuantbenchError(f"ONNX Runtime cannot load {path}: {message}") from None
        representative = self.on_gpu or not variant.emulated
        return OnnxRuntimeRunner(session, representative)
