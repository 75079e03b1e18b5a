"""The TensorRT for RTX backend: engines built ahead of time for chosen GPU architectures, run where the
machine's GPU is one of them.

==============  =========================================================
variant         engine
==============  =========================================================
fp32            FP32 model, strongly typed, TF32 off
fp16            FP16-typed model, strongly typed
int8-<ranges>   Q/DQ model, strongly typed (``trt-*`` calibrators refused)
==============  =========================================================

Building, running, engine files and per-layer precision are those of every TensorRT-family backend
(:class:`~quantbench.backends.trt_common.backend.TrtFamilyBackend`). What is TensorRT for RTX's own:

* engines are built with or without a GPU, for ``--compute-capability``
  (:mod:`~quantbench.backends.tensorrt_rtx.targets`), recorded as ``targets`` in the sidecar;
* an engine runs where a GPU is present and the library accepts the engine on it
  (``IRuntime.get_engine_validity``); otherwise it is built and not run: its runner
  (:class:`NotRunRunner`) gives the outputs of the variant's ONNX model on ONNX Runtime (for INT8 the
  Q/DQ model as written, as the ONNX Runtime backend's reference), which judge its fidelity, and no
  latency is reported for it. One note says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantbench.backends.base import Capabilities, Runner
from quantbench.backends.tensorrt_rtx.version import TENSORRT_RTX
from quantbench.backends.trt_common.backend import TrtFamilyBackend
from quantbench.errors import QuantbenchError

if TYPE_CHECKING:
    import numpy as np

    from quantbench.config import BackendSpec
    from quantbench.variant import Variant


class NotRunRunner(Runner):
    """An engine built and not run here, standing in with the outputs of its variant's ONNX model.

    Args:
        session: an ONNX Runtime session of the model the engine was built from.
        results: what ``results.json`` records of the engine (sidecar, layers, INT8 checks).
    """

    representative = False
    timed = False

    def __init__(self, session: Any, results: dict[str, Any]) -> None:
        from quantbench.backends.onnxruntime import OnnxRuntimeRunner

        self._runner = OnnxRuntimeRunner(session, representative=False)
        self._results = results

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs of the variant's ONNX model for one batch."""
        return self._runner.run(feeds)

    def close(self) -> None:
        """Drop the session."""
        self._runner.close()

    def extra_results(self, timed_batches: Sequence[int], runs: int) -> dict[str, Any]:
        """The engine's sidecar (``engine``, with ``run: False`` and why), its layers and INT8 checks; no
        latency."""
        return dict(self._results)


class TensorRTRtxBackend(TrtFamilyBackend):
    """Builds TensorRT for RTX engines on any machine and runs them on a GPU that takes them (see the
    module docstring).

    Args:
        spec: the backend settings; ``plugins`` are loaded before any model is parsed, ``cuda_graph``
            also times each engine replayed from a CUDA graph, ``compute_capability`` (where the settings
            have it) chooses the targets.
        compute_capability: the targets (:func:`~quantbench.backends.tensorrt_rtx.targets.parse_targets`),
            over the settings'; None: the settings', else the GPU present, else ``portable``.

    Raises:
        QuantbenchError: TensorRT for RTX is missing, a plugin cannot load, a target is unknown, or
            ``current`` is asked for without a GPU.
    """

    name = "tensorrt-rtx"
    library = TENSORRT_RTX
    capabilities = Capabilities(strongly_typed_only=True, gpu=True)
    requires_gpu = False
    timing_cache = False  # its timing cache operations do nothing (deprecated since 1.2)

    def __init__(self, spec: BackendSpec, *, compute_capability: str | None = None) -> None:
        from quantbench.backends.tensorrt_rtx.targets import CURRENT, default_targets, parse_targets

        super().__init__(spec)
        members = list(self.lib.module.ComputeCapability.__members__)
        asked = compute_capability or spec.compute_capability
        gpu_cc = str(self.gpu["compute_capability"]) if self.gpu else None
        self.targets = parse_targets(asked, members) if asked else default_targets(gpu_cc, members)
        """``ComputeCapability`` member names the engines are built for; empty: the library's default."""
        if CURRENT in self.targets and self.gpu is None:
            raise QuantbenchError(
                f"--compute-capability current builds for the GPU present, and none is: {self.gpu_reason}; "
                "name the targets (e.g. 8.6) or use portable"
            )
        self._not_run_noted = False

    def describe(self) -> dict[str, object]:
        """The shared description, with the targets."""
        from quantbench.backends.tensorrt_rtx.targets import describe_targets

        return {**super().describe(), "targets": describe_targets(self.targets)}

    def compute_capabilities(self) -> tuple[str, ...]:
        """The targets given to the builder (empty: the library's portable default)."""
        return self.targets

    def engine_identity(self) -> dict[str, Any]:
        """An engine is used where it was built for the same targets (on any machine)."""
        from quantbench.backends.tensorrt_rtx.targets import describe_targets

        return {"targets": describe_targets(self.targets)}

    def refusal(self, data: bytes) -> str | None:
        """Why the engine cannot run here (no GPU, or the library refuses it on this GPU), or None."""
        if self.gpu is None:
            return f"no usable GPU here ({self.gpu_reason})"
        gpu = f"{self.gpu['name']} (compute capability {self.gpu['compute_capability']})"
        try:
            validity, diagnostics = self._runtime.get_engine_validity(data)  # type: ignore[attr-defined]
        except Exception as exc:  # an engine that cannot be checked cannot be run either
            return f"{self.library.name} cannot check them on {gpu}: {exc}"
        if validity == self.lib.module.EngineValidity.INVALID:
            members = self.lib.module.EngineInvalidityDiagnostics.__members__
            reasons = [name for name, flag in members.items() if int(diagnostics) & int(flag)] or ["INVALID"]
            return f"{self.library.name} refuses them on {gpu}: {', '.join(reasons)}"
        return None

    def prepare(self, variant: Variant) -> Runner:
        """The variant's engine, built now; run on the GPU where it takes the engine, else a
        :class:`NotRunRunner` (see the module docstring).

        Raises:
            QuantbenchError: the build fails, an existing engine was built for other targets, or ONNX
                Runtime cannot load the variant's model.
        """
        from quantbench.backends.tensorrt_rtx.targets import describe_targets

        path, data, record = self.engine_file(variant)
        reason = self.refusal(data)
        if reason is None:
            return self.run_engine(variant, path, data, record)
        results = self.build_results(variant, path, record)
        results["engine"].update({"run": False, "not_run_reason": reason})
        if not self._not_run_noted:
            self._not_run_noted = True
            targets = ", ".join(describe_targets(self.targets))
            self.notes.append(
                f"{self.library.name} engines were built for {targets} and not run: {reason}; fidelity comes "
                "from each variant's ONNX model on ONNX Runtime (INT8: its Q/DQ model as written) and no "
                "latency is reported for them"
            )
        return NotRunRunner(self._session(variant), results)

    def _session(self, variant: Variant) -> Any:
        """An ONNX Runtime session of the model ``variant`` ships: INT8's Q/DQ model with every graph
        optimization off (no Q/DQ folded), FP16's model as the CPU runs it, FP32's model."""
        from quantbench.backends.onnxruntime import SessionSettings, make_session

        int8 = variant.precision == "int8"
        model = Path(variant.model if int8 or variant.precision == "fp32" else variant.cpu_model)
        settings = SessionSettings(threads=self.spec.threads, optimize=not int8)
        return make_session(model, settings, str(model))
