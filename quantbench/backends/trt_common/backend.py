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
to ``<run>/engines/<variant>.engine`` with a JSON sidecar (with the layer information the library
logged, :meth:`TrtFamilyBackend.build_results`), and share ``engines/timing.cache`` where the library
has one. A run calls :meth:`TrtFamilyBackend.begin` first, then :meth:`TrtFamilyBackend.prepare` per
variant. A library that builds without a GPU (:attr:`TrtFamilyBackend.requires_gpu` False) chooses its
targets (:meth:`TrtFamilyBackend.compute_capabilities`) and which sidecars fit
(:meth:`TrtFamilyBackend.engine_identity`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from quantbench.backends.base import Backend, Capabilities, Runner, RunPlan
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
        QuantbenchError: the library or cuda-python is missing, no GPU is usable (where the library needs
            one, :attr:`requires_gpu`), or a plugin cannot load.
    """

    library: ClassVar[TrtLibrary]
    capabilities = Capabilities(gpu=True)
    requires_gpu: ClassVar[bool] = True
    """False for a library that builds engines without a GPU (ahead of time)."""
    timing_cache: ClassVar[bool] = True
    """False for a library whose timing cache operations do nothing (TensorRT for RTX)."""

    def __init__(self, spec: BackendSpec) -> None:
        from quantbench.backends import cuda
        from quantbench.backends.trt_common.builder import LogSink, load_plugins, make_logger

        super().__init__(spec)
        self.lib = self.library.load()  # before any other use of the library: one line when it is missing
        self.info = self.lib.info
        self.gpu_reason = cuda.unavailable_reason()
        """Why no GPU can be used here, or None."""
        if self.gpu_reason is not None and self.requires_gpu:
            raise QuantbenchError(f"the {self.library.name} backend needs an NVIDIA GPU: {self.gpu_reason}")
        self.gpu: dict[str, Any] | None = cuda.device_info() if self.gpu_reason is None else None
        self.sink = LogSink(self.library.name)
        self.logger = make_logger(self.lib, self.sink)
        self.plugins = load_plugins(self.lib, [Path(p) for p in spec.plugins], self.logger)
        self.cuda_graph = spec.cuda_graph
        self._runtime: tensorrt.Runtime = self.lib.module.Runtime(self.logger)
        self._setup: RunPlan | None = None
        self._builder: EngineBuilder | None = None

    def describe(self) -> dict[str, object]:
        """Library version and build path, GPU, cuda-python, plugins, for the run's manifest."""
        gpu = self.gpu or {}
        return {
            "name": self.name,
            self.library.module: self.info.version,
            "build_path": self.info.path,
            "gpu": gpu.get("name"),
            "compute_capability": gpu.get("compute_capability"),
            "gpu_memory": gpu.get("total_memory"),
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
        timing_cache = self.engines_dir / "timing.cache" if self.timing_cache else None
        self._builder = EngineBuilder(
            self.lib,
            self.logger,
            self.sink,
            timing_cache,
            profile,
            samples=plan.sample_shapes,
            compute_capabilities=self.compute_capabilities(),
        )

    def compute_capabilities(self) -> tuple[str, ...]:
        """The GPU architectures engines are built for (``ComputeCapability`` member names); empty: the
        GPU that builds them."""
        return ()

    def engine_identity(self) -> dict[str, Any]:
        """What an engine's sidecar must say for this backend to use it (:func:`check_engine`'s ``gpu``,
        ``compute_capability``, ``targets``): here, the GPU in use."""
        gpu = self.gpu or {}
        return {"gpu": str(gpu.get("name")), "compute_capability": str(gpu.get("compute_capability"))}

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
        """Write a built engine to ``engines/<name>.engine`` with its sidecar (the layer information the
        library logged included, as ``layers``); returns the sidecar."""
        from quantbench.backends.trt_common.engine_file import save_engine
        from quantbench.backends.trt_common.inspector import parse_layer_log

        gpu = self.gpu or {}
        record = {
            self.library.module: self.info.version,
            "gpu": gpu.get("name"),
            "compute_capability": gpu.get("compute_capability"),
            **self.engine_identity(),
            "precision": precision,
            "variant": name,
            "build_path": self.info.path,
            "plugins": self.plugins,
            "build": result.details,
        }
        if result.layer_log is not None:
            record["layers"] = parse_layer_log(result.layer_log)
        return save_engine(self.engines_dir / f"{name}.engine", result.data, record, self.library)

    def engine_file(self, variant: Variant) -> tuple[Path, bytes, dict[str, Any]]:
        """The variant's engine (built now, or one built before in this run): its file, bytes and sidecar.

        Raises:
            QuantbenchError: the build fails, or an existing engine was built for another library version,
                GPU or targets.
        """
        from quantbench.backends.trt_common.engine_file import check_engine

        path = self.engines_dir / f"{variant.name}.engine"
        if not path.is_file():
            self.save_engine(variant.name, self.builder.build(self.build_request(variant)), variant.precision)
        data, record = check_engine(path, self.library, version=self.info.version, **self.engine_identity())
        return path, data, record

    def build_results(self, variant: Variant, path: Path, record: dict[str, Any]) -> dict[str, Any]:
        """What the variant's entry of ``results.json`` records of its engine: the sidecar (``engine``) and,
        where the library logged its layer information, the layers with their precision and, for INT8,
        which quantized nodes run INT8 (:func:`~quantbench.backends.trt_common.precision.precision_report`).
        """
        from quantbench.backends.trt_common.precision import precision_report

        engine = {"file": str(path.relative_to(self.setup.run_dir))}
        engine.update({key: value for key, value in record.items() if key != "layers"})
        results: dict[str, Any] = {"engine": engine}
        layers = record.get("layers")
        if isinstance(layers, list):
            quantized = variant.details.get("quantized_nodes", []) if variant.precision == "int8" else []
            onnx = Path(str(record.get("build", {}).get("onnx", variant.model)))
            limits = dict(self.library.known_limits)
            results.update(precision_report(layers, onnx, quantized, limits))
        return results

    def prepare(self, variant: Variant) -> Runner:
        """The variant's engine (built now, or one built before in this run), deserialized and ready to run
        (an :class:`~quantbench.backends.trt_common.runner.EngineRunner`).

        Raises:
            QuantbenchError: the build fails, or an existing engine was built for another library version
                or GPU.
        """
        return self.run_engine(variant, *self.engine_file(variant))

    def run_engine(self, variant: Variant, path: Path, data: bytes, record: dict[str, Any]) -> EngineRunner:
        """A runner of the engine of ``variant`` (its file, bytes and sidecar, see :meth:`engine_file`).

        Raises:
            QuantbenchError: the library cannot load the engine.
        """
        from quantbench.backends.trt_common.runner import EngineRunner

        engine: tensorrt.ICudaEngine | None = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise QuantbenchError(f"{self.library.name} could not load {path}: {self.sink.last_error()}")
        runner = EngineRunner(self.lib, engine, self.sink, variant.name, cuda_graph=self.cuda_graph)
        results = self.build_results(variant, path, record)
        runner.engine_record = results.pop("engine")
        runner.build_results = results
        return runner
