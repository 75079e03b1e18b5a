"""What backends of TensorRT-family libraries share: the engine each variant becomes, and its runner.

==================  ============================================  =========================================
variant             implicit quantization (TensorRT 10)           strongly typed only (TensorRT 11, RTX)
==================  ============================================  =========================================
fp32                FP32 model, TF32 off                          FP32 model, strongly typed, TF32 off
fp16                FP32 model + ``BuilderFlag.FP16``             FP16-typed model, strongly typed
int8-<imported>     FP32 model + dynamic ranges, INT8 + FP16      Q/DQ model, strongly typed
int8-<method>       Q/DQ model, INT8 + FP16                       Q/DQ model, strongly typed
==================  ============================================  =========================================

Which column applies comes from the installed version (:attr:`TrtLibrary.implicit_majors`). Engines go
to ``<run>/engines/<variant>.engine`` with a JSON sidecar, and share ``engines/timing.cache``. A run
calls :meth:`TrtFamilyBackend.begin` first, then :meth:`TrtFamilyBackend.prepare` per variant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from quantbench.backends.base import Backend, Capabilities, RunPlan
from quantbench.errors import QuantbenchError

if TYPE_CHECKING:
    import tensorrt

    from quantbench.backends.trt_common.builder import BuildRequest, BuildResult, EngineBuilder
    from quantbench.backends.trt_common.library import TrtLibrary
    from quantbench.backends.trt_common.runner import EngineRunner
    from quantbench.config import BackendSpec
    from quantbench.variant import Variant


def _cuda_python_version() -> str | None:
    from importlib import metadata

    for package in ("cuda-python", "cuda-bindings"):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return None


class TrtFamilyBackend(Backend):
    """Builds and runs engines of one TensorRT-family library on the first GPU (see the module docstring).

    A subclass names the backend (``name``) and its library (``library``).

    Args:
        spec: the backend settings; ``plugins`` are loaded before any model is parsed, ``cuda_graph``
            also times each engine replayed from a CUDA graph.

    Raises:
        QuantbenchError: the library or cuda-python is missing, no GPU is usable, or a plugin cannot load.
    """

    library: ClassVar[TrtLibrary]
    capabilities = Capabilities(gpu=True)

    def __init__(self, spec: BackendSpec) -> None:
        from quantbench.backends import cuda
        from quantbench.backends.trt_common.builder import LogSink, load_plugins, make_logger

        super().__init__(spec)
        self.lib = self.library.load()  # before any other use of the library: one line when it is missing
        self.info = self.lib.info
        reason = cuda.unavailable_reason()
        if reason is not None:
            raise QuantbenchError(f"the {self.library.name} backend needs an NVIDIA GPU: {reason}")
        self.gpu = cuda.device_info()
        self.sink = LogSink(self.library.name)
        self.logger = make_logger(self.lib, self.sink)
        self.plugins = load_plugins(self.lib, [Path(p) for p in spec.plugins], self.logger)
        self.cuda_graph = spec.cuda_graph
        self._runtime: tensorrt.Runtime = self.lib.module.Runtime(self.logger)
        self._setup: RunPlan | None = None
        self._builder: EngineBuilder | None = None

    def describe(self) -> dict[str, object]:
        """Library version and build path, GPU, cuda-python, plugins, for the run's manifest."""
        return {
            "name": self.name,
            self.library.module: self.info.version,
            "build_path": self.info.path,
            "gpu": self.gpu["name"],
            "compute_capability": self.gpu["compute_capability"],
            "gpu_memory": self.gpu["total_memory"],
            "cuda_python": _cuda_python_version(),
            "plugins": self.plugins,
            "cuda_graph": self.cuda_graph,
        }

    @property
    def setup(self) -> RunPlan:
        """The run being built (raises before :meth:`begin`)."""
        if self._setup is None:
            raise QuantbenchError(f"the {self.library.name} backend needs begin() before building engines")
        return self._setup

    @property
    def builder(self) -> EngineBuilder:
        """The run's engine builder (raises before :meth:`begin`)."""
        if self._builder is None:
            raise QuantbenchError(f"the {self.library.name} backend needs begin() before building engines")
        return self._builder

    @property
    def engines_dir(self) -> Path:
        """``<run>/engines``."""
        return self.setup.run_dir / "engines"

    def begin(self, plan: RunPlan) -> None:
        """Remember the run and make the builder with its batch profile and timing cache."""
        from quantbench.backends.trt_common.builder import BatchProfile, EngineBuilder

        self._setup = plan
        profile = BatchProfile.for_run(plan.bench_batch, plan.eval_batch, plan.batch)
        timing_cache = self.engines_dir / "timing.cache"
        self._builder = EngineBuilder(self.lib, self.logger, self.sink, timing_cache, profile)

    def build_request(self, variant: Variant) -> BuildRequest:
        """What to build for ``variant`` (see the module docstring)."""
        from quantbench.backends.trt_common.builder import BuildRequest

        setup, implicit = self.setup, self.info.implicit
        if variant.precision == "fp32":
            return BuildRequest(
                variant.name, setup.model, "fp32", strongly_typed=not implicit, clear_flags=("TF32",)
            )
        if variant.precision == "fp16":
            if implicit:
                return BuildRequest(variant.name, setup.model, "fp16", flags=("FP16",))
            return BuildRequest(variant.name, variant.model, "fp16", strongly_typed=True)
        label = variant.method or variant.name
        if implicit and label in setup.imported:
            ranges = setup.imported[label].amax
            return BuildRequest(
                variant.name, setup.model, "int8", flags=("INT8", "FP16"), dynamic_ranges=ranges
            )
        if implicit:
            return BuildRequest(variant.name, variant.model, "int8", flags=("INT8", "FP16"))
        return BuildRequest(variant.name, variant.model, "int8", strongly_typed=True)

    def save_engine(self, name: str, result: BuildResult, precision: str) -> dict[str, Any]:
        """Write a built engine to ``engines/<name>.engine`` with its sidecar; returns the sidecar."""
        from quantbench.backends.trt_common.engine_file import save_engine

        record = {
            self.library.module: self.info.version,
            "gpu": self.gpu["name"],
            "compute_capability": self.gpu["compute_capability"],
            "precision": precision,
            "variant": name,
            "build_path": self.info.path,
            "plugins": self.plugins,
            "build": result.details,
        }
        return save_engine(self.engines_dir / f"{name}.engine", result.data, record, self.library)

    def prepare(self, variant: Variant) -> EngineRunner:
        """The variant's engine (built now, or one built before in this run), deserialized and ready to run.

        Raises:
            QuantbenchError: the build fails, or an existing engine was built for another library version
                or GPU.
        """
        from quantbench.backends.trt_common.engine_file import check_engine
        from quantbench.backends.trt_common.runner import EngineRunner

        path = self.engines_dir / f"{variant.name}.engine"
        if not path.is_file():
            self.save_engine(variant.name, self.builder.build(self.build_request(variant)), variant.precision)
        data, record = check_engine(
            path,
            self.library,
            version=self.info.version,
            gpu=str(self.gpu["name"]),
            compute_capability=str(self.gpu["compute_capability"]),
        )
        engine: tensorrt.ICudaEngine | None = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise QuantbenchError(f"{self.library.name} could not load {path}: {self.sink.last_error()}")
        runner = EngineRunner(self.lib, engine, self.sink, variant.name, cuda_graph=self.cuda_graph)
        runner.engine_record = {"file": str(path.relative_to(self.setup.run_dir)), **record}
        return runner
