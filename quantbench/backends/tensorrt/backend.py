"""The TensorRT backend: which engine each variant becomes, on TensorRT 10 or 11, and its runner.

========================  =========================================  ====================================
variant                   TensorRT 10                                TensorRT 11
========================  =========================================  ====================================
fp32                      FP32 model, TF32 off                       FP32 model, strongly typed, TF32 off
fp16                      FP32 model + ``BuilderFlag.FP16``          FP16-typed model, strongly typed
int8-trt-<calibrator>     FP32 model + calibrator, INT8 + FP16       refused (no calibrators)
int8-<imported ranges>    FP32 model + dynamic ranges, INT8 + FP16   Q/DQ model, strongly typed
int8-<quantbench method>  Q/DQ model, INT8 + FP16                    Q/DQ model, strongly typed
========================  =========================================  ====================================

Engines go to ``<run>/engines/<variant>.engine`` with a JSON sidecar, and share
``engines/timing.cache``. A run calls :meth:`TensorRTBackend.begin` first, then
:meth:`TensorRTBackend.calibrate_native` for ``trt-*`` methods, then :meth:`TensorRTBackend.prepare`
per variant.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.backends.base import Backend, Batches, Capabilities, RunPlan
from quantbench.errors import QuantbenchError

if TYPE_CHECKING:
    from quantbench.backends.tensorrt.builder import BuildRequest, BuildResult
    from quantbench.backends.tensorrt.methods import NativeMethod
    from quantbench.backends.tensorrt.runner import TensorRTRunner
    from quantbench.config import BackendSpec
    from quantbench.export.variants import Variant
    from quantbench.ranges import DynamicRanges


def _cuda_python_version() -> str | None:
    from importlib import metadata

    for package in ("cuda-python", "cuda-bindings"):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return None


class TensorRTBackend(Backend):
    """Builds and runs TensorRT engines on the first GPU (see the module docstring).

    Args:
        spec: the backend settings; ``plugins`` are loaded before any model is parsed, ``cuda_graph``
            also times each engine replayed from a CUDA graph.

    Raises:
        QuantbenchError: TensorRT or cuda-python is missing, no GPU is usable, or a plugin cannot load.
    """

    name = "tensorrt"
    capabilities = Capabilities(native_calibration=True, gpu=True)

    def __init__(self, spec: BackendSpec) -> None:
        from quantbench.backends import cuda
        from quantbench.backends.tensorrt.builder import LogSink, load_plugins, make_logger
        from quantbench.backends.tensorrt.version import detect

        super().__init__(spec)
        self.info = detect()  # before any other use of tensorrt: a one-line error when it is missing
        import tensorrt as trt

        reason = cuda.unavailable_reason()
        if reason is not None:
            raise QuantbenchError(f"the TensorRT backend needs an NVIDIA GPU: {reason}")
        self.gpu = cuda.device_info()
        self.sink = LogSink()
        self.logger = make_logger(self.sink)
        self.plugins = load_plugins([Path(p) for p in spec.plugins], self.logger)
        self.cuda_graph = spec.cuda_graph
        self._runtime = trt.Runtime(self.logger)
        self._setup: RunPlan | None = None
        self._builder: Any = None
        self._native: set[str] = set()

    def describe(self) -> dict[str, object]:
        """TensorRT version and build path, GPU, cuda-python, plugins, for the run's manifest."""
        return {
            "name": self.name,
            "tensorrt": self.info.version,
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
            raise QuantbenchError("the TensorRT backend needs begin() before building engines")
        return self._setup

    @property
    def engines_dir(self) -> Path:
        """``<run>/engines``."""
        return self.setup.run_dir / "engines"

    def begin(self, plan: RunPlan) -> None:
        """Remember the run and make the builder with its batch profile and timing cache."""
        setup = plan
        from quantbench.backends.tensorrt.builder import BatchProfile, EngineBuilder

        self._setup = setup
        profile = BatchProfile.for_run(setup.bench_batch, setup.eval_batch, setup.batch)
        self._builder = EngineBuilder(self.logger, self.sink, self.engines_dir / "timing.cache", profile)

    def calibration_slots(self, batch_size: int) -> list[Any]:
        """The network inputs as the calibrator feeds them, with the batch dimension ``batch_size``.

        Raises:
            QuantbenchError: an input has a dynamic dimension other than the batch.
        """
        from quantbench.backends.tensorrt.calibrator import InputSlot

        slots = []
        for spec in self.setup.inputs:
            rest = spec.shape[1:]
            if not all(isinstance(d, int) and d > 0 for d in rest):
                raise QuantbenchError(
                    f"input {spec.name!r} has shape {spec.shape}: TensorRT calibration needs every dimension "
                    "but the batch fixed"
                )
            slots.append(InputSlot(spec.name, (batch_size, *(int(d) for d in rest)), np.dtype(spec.dtype)))  # type: ignore[arg-type]
        return slots

    def check_native_methods(self, methods: Sequence[str]) -> list[str]:
        """Parse the ``trt-*`` specs; refuse them on TensorRT 11. Returns their labels.

        Raises:
            QuantbenchError: a bad spec, or TensorRT 11 (no calibrators).
        """
        return [method.label for method in self._parse(methods)]

    def _parse(self, methods: Sequence[str]) -> list[NativeMethod]:
        from quantbench.backends.tensorrt.methods import parse_native_method, refusal

        parsed = []
        for text in methods:
            method = parse_native_method(text)
            problem = refusal(method.text, backend=self.name, tensorrt_major=self.info.major)
            if problem:
                raise QuantbenchError(problem)
            parsed.append(method)
        return parsed

    def calibrate_native(
        self, methods: Sequence[str], batches: Batches, batch_size: int, preprocessing: dict[str, Any]
    ) -> dict[str, DynamicRanges]:
        """Build one INT8 engine per TensorRT calibrator and read back the ranges it computed.

        Args:
            methods: the ``trt-*`` method specs.
            batches: makes a fresh stream of full calibration batches (input name -> array).
            batch_size: the calibration batch.
            preprocessing: the preprocessing, recorded in the cache sidecar.

        Returns:
            Method label -> the ranges of TensorRT's cache (``ranges/<label>.cache``).

        Raises:
            QuantbenchError: TensorRT 11 (no calibrators), a build failure, or an error of the data.
        """
        from quantbench.backends.tensorrt.builder import BuildRequest
        from quantbench.backends.tensorrt.calibration_cache import (
            CacheIdentity,
            CalibrationCache,
            preprocessing_hash,
        )
        from quantbench.backends.tensorrt.calibrator import BatchFeeder, CalibratorCore

        tables = {}
        for method in self._parse(methods):
            settings: tuple[tuple[str, float], ...] = ()
            if method.quantile is not None and method.regression_cutoff is not None:
                settings = (("quantile", method.quantile), ("regression_cutoff", method.regression_cutoff))
            identity = CacheIdentity(
                model_hash=self.setup.model_hash,
                preprocessing_hash=preprocessing_hash(preprocessing),
                trt_version=self.info.header,
                algorithm=method.algorithm,
                method=method.label,
                settings=settings,
            )
            cache = CalibrationCache(self.setup.run_dir / "ranges" / f"{method.label}.cache", identity)
            feeder = BatchFeeder(self.calibration_slots(batch_size), batches())
            core = CalibratorCore(method, feeder, batch_size, cache)
            name = f"int8-{method.label}"
            request = BuildRequest(
                name,
                self.setup.model,
                "int8",
                flags=("INT8", "FP16"),
                calibrator=core,
                calibration_batch=batch_size,
            )
            result = self._builder.build(request)
            self.notes.extend(core.notes)
            images = feeder.batches_served * batch_size
            result.details["calibrator"] = {
                "method": method.text,
                "base_class": method.base_class,
                "batch_size": batch_size,
                "batches": feeder.batches_served,
                "cache": str(cache.path),
                "cache_reused": core.cache_reused,
                "cache_written": core.cache_written,
                "notes": core.notes,
            }
            self._save(name, result, "int8")
            tables[method.label] = cache.ranges(preprocessing, images=images)
            self._native.add(method.label)
        return tables

    def _request(self, variant: Variant) -> BuildRequest:
        from quantbench.backends.tensorrt.builder import BuildRequest

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
        if label in self._native:
            raise QuantbenchError(
                f"the engine of {variant.name} is missing from {self.engines_dir}; run again"
            )
        if implicit and label in setup.imported:
            ranges = setup.imported[label].amax
            return BuildRequest(
                variant.name, setup.model, "int8", flags=("INT8", "FP16"), dynamic_ranges=ranges
            )
        if implicit:
            return BuildRequest(variant.name, variant.model, "int8", flags=("INT8", "FP16"))
        return BuildRequest(variant.name, variant.model, "int8", strongly_typed=True)

    def _save(self, name: str, result: BuildResult, precision: str) -> dict[str, Any]:
        from quantbench.backends.tensorrt.engine_file import save_engine

        record = {
            "tensorrt": self.info.version,
            "gpu": self.gpu["name"],
            "compute_capability": self.gpu["compute_capability"],
            "precision": precision,
            "variant": name,
            "build_path": self.info.path,
            "plugins": self.plugins,
            "build": result.details,
        }
        return save_engine(self.engines_dir / f"{name}.engine", result.data, record)

    def prepare(self, variant: Variant) -> TensorRTRunner:
        """The variant's engine (built now, or the one calibration built), deserialized and ready to run.

        Raises:
            QuantbenchError: the build fails, or an existing engine was built for another TensorRT or GPU.
        """
        from quantbench.backends.tensorrt.engine_file import check_engine
        from quantbench.backends.tensorrt.runner import TensorRTRunner

        path = self.engines_dir / f"{variant.name}.engine"
        if not path.is_file():
            self._save(variant.name, self._builder.build(self._request(variant)), variant.precision)
        data, record = check_engine(
            path,
            tensorrt=self.info.version,
            gpu=str(self.gpu["name"]),
            compute_capability=str(self.gpu["compute_capability"]),
        )
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise QuantbenchError(f"TensorRT could not load {path}: {self.sink.last_error()}")
        runner = TensorRTRunner(engine, self.sink, variant.name, cuda_graph=self.cuda_graph)
        runner.engine_record = {"file": str(path.relative_to(self.setup.run_dir)), **record}
        return runner
