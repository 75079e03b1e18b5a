"""A backend in one file: every variant's TensorRT model (Q/DQ for INT8) in ONNX Runtime on the CPU with
its graph optimizations off, so the Q/DQ pairs run as written. Registered by the test that uses it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from quantbench.backends.base import Backend, Runner
from quantbench.backends.onnxruntime import SessionSettings, make_session
from quantbench.variant import Variant


class ExactRunner(Runner):
    """One unoptimized session."""

    def __init__(self, session: Any, model: Path) -> None:
        self.session, self.model = session, model
        self.names = [o.name for o in session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.names, self.session.run(self.names, feeds), strict=True))

    def close(self) -> None:
        self.session = None

    def extra_results(self, timed_batches: Any, runs: int) -> dict[str, Any]:
        return {"exact_model": self.model.name}


class ExactBackend(Backend):
    """The TensorRT-flavour models, unoptimized."""

    name = "onnxruntime-exact"

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "graph_optimizations": False}

    def prepare(self, variant: Variant) -> ExactRunner:
        settings = SessionSettings(threads=self.spec.threads, optimize=False)
        return ExactRunner(make_session(variant.model, settings, str(variant.model)), variant.model)
