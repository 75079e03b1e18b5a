"""The backend contract: everything a flow may ask of a backend, and of the runners it prepares.

A backend turns variants (ONNX files, see :class:`quantbench.export.variants.Variant`) into runners.
A run tells it about itself once (:meth:`Backend.begin`), lets it calibrate with calibrators of its
own where it has them (:meth:`Backend.calibrate_native`), then prepares one runner per variant, and a
reference runner where that runner's numerics are not the shipped model's (:meth:`Backend.reference`). A
runner takes a batch of inputs by name and returns the model's outputs by name; what else it measured
(per-layer precision, GPU timings) comes back through :meth:`Runner.extra_results`.

A new backend is a subclass of :class:`Backend` in a module of its own plus one
:func:`quantbench.backends.registry.register` call; the flows never import a backend's module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from quantbench.errors import QuantbenchError

if TYPE_CHECKING:
    import numpy as np

    from quantbench.config import BackendSpec
    from quantbench.model import InputSpec
    from quantbench.ranges import DynamicRanges
    from quantbench.variant import Variant

Batches = Callable[[], Iterable[Mapping[str, "np.ndarray"]]]
"""Makes a fresh stream of calibration batches (input name -> array), each of the same batch size."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond preparing runners.

    Attributes:
        native_calibration: it has calibrators of its own (methods named with its registry prefix).
        strongly_typed_only: it builds only what the model's types say (INT8 from Q/DQ nodes, FP16 from
            FP16-typed models), never from builder flags or per-tensor ranges.
        gpu: it runs on a GPU.
    """

    native_calibration: bool = False
    strongly_typed_only: bool = False
    gpu: bool = False


@dataclass(frozen=True)
class RunPlan:
    """What a backend learns about a run before it builds anything.

    Attributes:
        model: the FP32 ONNX model.
        inputs: its inputs.
        run_dir: the run folder (a backend keeps its files under it).
        model_hash: SHA-256 of the model file.
        bench_batch: the batch sizes to be timed.
        eval_batch: the evaluation batch.
        batch: the calibration batch asked for (None: automatic).
        imported: label -> ranges read from a file (``--ranges``).
        sample_shapes: input name -> the shapes its samples take, batch excluded, where the run knows
            them (the sizes of dynamic dimensions other than the batch, for optimisation profiles).
    """

    model: Path
    inputs: list[InputSpec]
    run_dir: Path
    model_hash: str
    bench_batch: Sequence[int] = (1,)
    eval_batch: int = 8
    batch: int | None = None
    imported: Mapping[str, DynamicRanges] = field(default_factory=dict)
    sample_shapes: Mapping[str, Sequence[tuple[int, ...]]] = field(default_factory=dict)


class Runner(ABC):
    """One variant, ready to run."""

    representative: bool = True
    """False where the latency says little about the target (e.g. emulated float16 kernels)."""

    timed: bool = True
    """False where the runner stands in for what could not run here (an engine built for GPUs other than
    this machine's): its outputs are those of the model that ships, and no latency is reported for it."""

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns every model output by name."""

    def judge(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch of the comparison (not timed): :meth:`run`, unless the runner frees memory after
        it (a runner is timed on small batches but judged on larger ones)."""
        return self.run(feeds)

    @abstractmethod
    def close(self) -> None:
        """Free what the runner holds."""

    def extra_results(self, timed_batches: Sequence[int], runs: int) -> dict[str, Any]:
        """What this runner measures beyond outputs and host latency, merged into the variant's entry of
        ``results.json`` (TensorRT: layers and their precision, GPU timings). None by default."""
        return {}


class Backend(ABC):
    """Turns variants into runners (see the module docstring).

    Args:
        spec: the backend settings of the command.
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.notes: list[str] = []
        """Lines for the run's notes, gathered while building and running."""

    @abstractmethod
    def describe(self) -> dict[str, object]:
        """Versions, devices and settings, for the run's manifest."""

    def begin(self, plan: RunPlan) -> None:  # noqa: B027  (most backends need nothing)
        """Learn about the run before :meth:`calibrate_native` or :meth:`prepare`."""

    def check_native_methods(self, methods: Sequence[str]) -> list[str]:
        """Validate the specs of this backend's own calibrators before any work; returns their labels.

        Raises:
            QuantbenchError: a bad spec, or calibrators this backend cannot run here.
        """
        if methods:
            raise QuantbenchError(f"the {self.name} backend has no calibrators of its own")
        return []

    def calibrate_native(
        self, methods: Sequence[str], batches: Batches, batch_size: int, preprocessing: dict[str, Any]
    ) -> dict[str, DynamicRanges]:
        """Calibrate with this backend's own calibrators; label -> ranges.

        Args:
            methods: the method specs (checked by :meth:`check_native_methods`).
            batches: makes a fresh stream of full calibration batches.
            batch_size: the samples in each batch.
            preprocessing: how the samples were made, for the backend's cache records.
        """
        raise QuantbenchError(f"the {self.name} backend has no calibrators of its own")

    @abstractmethod
    def prepare(self, variant: Variant) -> Runner:
        """Build ``variant`` for this backend. Raises QuantbenchError when it cannot."""

    def reference(self, variant: Variant) -> Runner | None:
        """A runner with the numerics of the model that ships (``variant.model``: for INT8 the Q/DQ model
        with its Q/DQ semantics intact), where :meth:`prepare`'s runner computes something else (ONNX
        Runtime's CPU flavour); None where :meth:`prepare`'s runner is that model. Fidelity is judged on
        this runner; the other is timed, and how far it strays is recorded."""
        return None
