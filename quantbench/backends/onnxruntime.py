"""The ONNX Runtime backend: the CPU everywhere, CUDA or TensorRT execution providers where installed.

:func:`make_session` is the one place quantbench makes an ``onnxruntime.InferenceSession``: the
calibration pass, bias correction, the FP16 probes, sensitivity candidates and this backend's runners
all come through it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.backends.base import Backend, Runner
from quantbench.errors import QuantbenchError, first_line

if TYPE_CHECKING:
    import onnx

    from quantbench.config import BackendSpec
    from quantbench.variant import Variant

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


@dataclass(frozen=True)
class SessionSettings:
    """How an ONNX Runtime session is made.

    Attributes:
        threads: intra-op threads (0: every core).
        optimize: False runs the graph as written (no fusion, no constant folding).
        providers: execution providers in order of preference (default: the CPU).
        memory_arena: False returns each run's activations to the system (streaming passes).
        spinning: False lets idle ONNX Runtime threads sleep (when other threads share the cores).
        optimized_model: where ONNX Runtime writes the graph it optimized (with its large
            initializers in a ``.data`` file beside it), or None.
        external: OrtValues of the initializers the model marks as external, by name.
    """

    threads: int = 0
    optimize: bool = True
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    memory_arena: bool = True
    spinning: bool = True
    optimized_model: Path | None = None
    external: Mapping[str, Any] | None = None


def make_session(model: onnx.ModelProto | bytes | Path, settings: SessionSettings, what: str) -> Any:
    """An ``onnxruntime.InferenceSession``: the one place quantbench makes one.

    Args:
        model: the model, serialized, or its file.
        settings: threads, optimization, providers and memory behaviour.
        what: names the model in the error, e.g. ``"the model"`` or ``"a segment of the model"``.

    Raises:
        QuantbenchError: ONNX Runtime cannot load the model (one line, naming ``what``).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.log_severity_level = 3
    if not settings.optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not settings.memory_arena:
        options.enable_cpu_mem_arena = False
    if not settings.spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if settings.optimized_model is not None:
        prefix = "session.optimized_model_external_initializers_"
        options.add_session_config_entry(prefix + "file_name", settings.optimized_model.stem + ".data")
        options.add_session_config_entry(prefix + "min_size_in_bytes", "1024")
        options.optimized_model_filepath = str(settings.optimized_model)
    if settings.external:
        options.add_external_initializers(list(settings.external), list(settings.external.values()))
    source: str | bytes
    if isinstance(model, Path):
        source = str(model)
    elif isinstance(model, bytes):
        source = model
    else:
        source = model.SerializeToString()
    try:
        return ort.InferenceSession(source, options, providers=list(settings.providers))
    except Exception as exc:
        raise QuantbenchError(f"ONNX Runtime cannot load {what}: {first_line(exc)}") from None


class OnnxRuntimeRunner(Runner):
    """One variant in an ONNX Runtime session."""

    def __init__(self, session: Any, representative: bool) -> None:
        self._session = session
        self._outputs = [o.name for o in session.get_outputs()]
        self.representative = representative

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns every output by name."""
        values = self._session.run(self._outputs, feeds)
        return dict(zip(self._outputs, values, strict=True))

    def judge(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch of the comparison, then give the session's memory arena back to the system, so
        that the sessions of every variant do not each keep a held-out batch's activations (on PP-OCRv4
        det's 736x736 pages, 1 to 1.5 GiB a session)."""
        import onnxruntime as ort

        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        values = self._session.run(self._outputs, feeds, options)
        return dict(zip(self._outputs, values, strict=True))

    def close(self) -> None:
        """Drop the session."""
        self._session = None


class OnnxRuntimeBackend(Backend):
    """Runs variants with ONNX Runtime.

    On the CPU an INT8 variant is timed on its ONNX Runtime flavour (uint8 activations, see
    :mod:`quantbench.export.onnxruntime_flavour`) and judged on its Q/DQ model run as written
    (:meth:`reference`); with a GPU execution provider it runs the TensorRT-flavour Q/DQ model, which
    those providers take as it is.
    """

    name = "onnxruntime"

    def __init__(self, spec: BackendSpec) -> None:
        import onnxruntime as ort

        super().__init__(spec)
        if spec.threads < 0:
            raise QuantbenchError(f"--threads must be 0 (every core) or more, got {spec.threads}")
        if spec.plugins:
            raise QuantbenchError("--plugins loads TensorRT plugin libraries; it needs --backend tensorrt")
        if spec.cuda_graph:
            raise QuantbenchError("--cuda-graph times TensorRT engines; it needs --backend tensorrt")
        self.threads = spec.threads
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
        path = variant.model if self.on_gpu else variant.cpu_model
        settings = SessionSettings(threads=self.threads, providers=tuple(self.providers))
        session = make_session(Path(path), settings, str(path))
        representative = self.on_gpu or not variant.emulated
        return OnnxRuntimeRunner(session, representative)

    def reference(self, variant: Variant) -> OnnxRuntimeRunner | None:
        """On the CPU, for a variant whose CPU flavour is another file (INT8): its Q/DQ model with every
        graph optimization off, so that no QuantizeLinear/DequantizeLinear pair is folded into another
        node or weights re-quantized; None otherwise (the runner of :meth:`prepare` is that model).

        Raises:
            QuantbenchError: ONNX Runtime cannot load the model.
        """
        if self.on_gpu or variant.cpu_model == variant.model or variant.precision != "int8":
            return None
        settings = SessionSettings(threads=self.threads, optimize=False)
        return OnnxRuntimeRunner(make_session(Path(variant.model), settings, str(variant.model)), True)
