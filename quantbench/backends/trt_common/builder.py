"""Building engines from ONNX: networks, precision flags, profiles, ranges, timing cache.

The builder calls the API of the TensorRT-family library it is given (:class:`LoadedLibrary`).

Where the library has implicit quantization (TensorRT 10):

* FP32: the FP32 model, TF32 off (the reference computes in float32).
* FP16: the FP32 model with ``BuilderFlag.FP16``.
* INT8 from a calibrator: the FP32 model, ``INT8`` + ``FP16`` (fallback), ``config.int8_calibrator`` and,
  for a dynamic batch, a calibration profile fixing the calibration batch.
* INT8 from imported ranges: the FP32 model, ``INT8`` + ``FP16``, ``ITensor.set_dynamic_range`` on every
  float tensor that has a range; the others are listed.
* INT8 from quantbench's ranges: the Q/DQ model with ``INT8`` + ``FP16``.

Without it (TensorRT 11, TensorRT for RTX): strongly typed networks from the FP32, FP16-typed or Q/DQ
model; no flags.

Every build attaches the same timing cache (``engines/timing.cache``) and, for a dynamic batch, one
optimisation profile (:class:`BatchProfile`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from quantbench.errors import QuantbenchError
from quantbench.fileio import write_bytes_atomic

if TYPE_CHECKING:
    import tensorrt

    from quantbench.backends.trt_common.library import LoadedLibrary


@dataclass(frozen=True)
class BatchProfile:
    """Batch sizes of the optimisation profile of a model with a dynamic batch dimension.

    ``min`` is 1 (the last held-out batch may be short), ``opt`` the largest timed batch, ``max`` the
    largest batch any step feeds (timing, evaluation, ``--batch``).
    """

    min: int
    opt: int
    max: int

    @classmethod
    def for_run(cls, bench_batch: Sequence[int], eval_batch: int, batch: int | None = None) -> BatchProfile:
        """The profile for a run's ``--bench-batch``, evaluation batch and ``--batch``."""
        opt = max(bench_batch) if bench_batch else 1
        largest = max([opt, eval_batch, batch or 1])
        return cls(1, opt, largest)


class Calibration(Protocol):
    """A calibrator for an implicit-quantization INT8 build, as the builder drives it.

    TensorRT calls the calibrator from C++, where a Python exception cannot travel; the builder
    therefore calls :meth:`close` and then :meth:`raise_error` after every build with a calibrator.
    """

    batch_size: int
    """The calibration batch."""

    def make_calibrator(self, trt: ModuleType) -> tensorrt.IInt8Calibrator:
        """The calibrator object of the library module ``trt`` for ``IBuilderConfig.int8_calibrator``."""

    def close(self) -> None:
        """Free what the calibration holds."""

    def raise_error(self) -> None:
        """Raise the first error met inside a calibrator callback, if any."""


@dataclass
class BuildRequest:
    """One engine to build.

    Attributes:
        name: the variant's name (for messages and the engine file).
        onnx: the model to parse.
        precision: ``fp32``, ``fp16`` or ``int8``.
        strongly_typed: build a strongly typed network (Q/DQ and FP16-typed models; the only kind
            without implicit quantization).
        flags: ``BuilderFlag`` names to set; ``clear_flags`` names to clear.
        calibrator: the calibration of an implicit INT8 build (TensorRT 10).
        calibration_batch: the batch of the calibration profile (dynamic batch only).
        dynamic_ranges: tensor -> amax to set on the network (implicit INT8 from imported ranges).
    """

    name: str
    onnx: Path
    precision: str
    strongly_typed: bool = False
    flags: tuple[str, ...] = ()
    clear_flags: tuple[str, ...] = ()
    calibrator: Calibration | None = None
    calibration_batch: int | None = None
    dynamic_ranges: Mapping[str, float] | None = None


@dataclass
class BuildResult:
    """A serialized engine and what the build did."""

    data: bytes
    details: dict[str, Any] = field(default_factory=dict)


class LogSink:
    """Collects what the library logs at WARNING and above, for error messages and notes.

    Args:
        name: the library's name in messages, e.g. ``TensorRT``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def add(self, severity: int, message: str) -> None:
        """Record one message; ``severity`` as TensorRT numbers it (0 internal error ... 4 verbose)."""
        if severity <= 1:
            self.errors.append(message.strip())
        elif severity == 2:
            self.warnings.append(message.strip())

    def last_error(self) -> str:
        """The last error the library logged, or a placeholder."""
        return self.errors[-1] if self.errors else f"{self.name} logged no error"


def make_logger(lib: LoadedLibrary, sink: LogSink) -> tensorrt.ILogger:
    """A logger of the library (a subclass of its ``ILogger``) that records into ``sink``."""
    base = lib.module.ILogger

    def init(self: Any) -> None:
        base.__init__(self)

    def log(self: Any, severity: tensorrt.ILogger.Severity, msg: str) -> None:
        sink.add(int(severity), msg)

    logger: tensorrt.ILogger = type("Logger", (base,), {"__init__": init, "log": log})()
    return logger


def load_plugins(lib: LoadedLibrary, paths: Sequence[Path], logger: tensorrt.ILogger) -> list[str]:
    """Register the library's own plugins, then load each plugin library, before any model is parsed.

    Returns:
        The libraries loaded, as given.

    Raises:
        QuantbenchError: a library is missing or the TensorRT-family library cannot load it.
    """
    trt = lib.module
    trt.init_libnvinfer_plugins(logger, "")
    registry: tensorrt.IPluginRegistry = trt.get_plugin_registry()
    loaded = []
    for path in paths:
        if not Path(path).is_file():
            raise QuantbenchError(f"--plugins: {path} not found")
        try:
            handle = registry.load_library(str(path))
        except Exception as exc:
            raise QuantbenchError(f"--plugins: {lib.name} cannot load {path}: {exc}") from None
        if handle is None:
            raise QuantbenchError(f"--plugins: {lib.name} cannot load {path}")
        loaded.append(str(path))
    return loaded


def _shape(dims: tensorrt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


class EngineBuilder:
    """Builds engines that share a logger, a timing cache and a batch profile.

    Args:
        lib: the TensorRT-family library to build with.
        logger: its logger (see :func:`make_logger`).
        sink: where that logger records.
        timing_cache: the timing cache file shared by the builds (read when present, rewritten after each).
        profile: the batch profile for models with a dynamic batch dimension.
    """

    def __init__(
        self,
        lib: LoadedLibrary,
        logger: tensorrt.ILogger,
        sink: LogSink,
        timing_cache: Path,
        profile: BatchProfile,
    ) -> None:
        self.lib = lib
        self.logger = logger
        self.sink = sink
        self.timing_cache_path = timing_cache
        self.profile = profile
        self._builder: tensorrt.Builder = lib.module.Builder(logger)
        self._timing_cache: tensorrt.ITimingCache | None = None

    def build(self, request: BuildRequest) -> BuildResult:
        """Parse ``request.onnx`` and build its engine.

        Raises:
            QuantbenchError: the model does not parse, a flag is unknown to this library version, an input
                has a dynamic dimension other than the batch, or the build fails; an error raised inside
                the calibrator is re-raised here as it was.
        """
        trt, name = self.lib.module, self.lib.name
        started = time.perf_counter()
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if request.strongly_typed else 0
        network = self._builder.create_network(flags)
        parser: tensorrt.OnnxParser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(request.onnx)):
            errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
            first = errors[0] if errors else self.sink.last_error()
            raise QuantbenchError(f"{name} cannot parse {request.onnx}: {first}")
        config = self._builder.create_builder_config()
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        self._attach_timing_cache(config)
        for flag in request.flags:
            config.set_flag(self._flag(flag))
        for flag in request.clear_flags:
            config.clear_flag(self._flag(flag))
        details: dict[str, Any] = {
            "onnx": str(request.onnx),
            "strongly_typed": request.strongly_typed,
            "flags": list(request.flags),
        }
        dynamic = self._add_profile(network, config)
        if dynamic:
            details["profile"] = {"min": self.profile.min, "opt": self.profile.opt, "max": self.profile.max}
        if request.calibrator is not None:
            self._attach_calibrator(network, config, request, dynamic)
        if request.dynamic_ranges is not None:
            applied, missing = apply_dynamic_ranges(self.lib, network, request.dynamic_ranges)
            details["dynamic_ranges_set"] = applied
            details["tensors_without_range"] = missing
        serialized = None
        try:
            serialized = self._builder.build_serialized_network(network, config)
        finally:
            if request.calibrator is not None:
                request.calibrator.close()
                request.calibrator.raise_error()
        if serialized is None:
            raise QuantbenchError(
                f"{name} could not build the {request.name} engine: {self.sink.last_error()}"
            )
        self._save_timing_cache()
        details["build_seconds"] = round(time.perf_counter() - started, 3)
        return BuildResult(bytes(memoryview(serialized)), details)

    def _flag(self, name: str) -> tensorrt.BuilderFlag:
        flag: tensorrt.BuilderFlag | None = getattr(self.lib.module.BuilderFlag, name, None)
        if flag is None:
            raise QuantbenchError(
                f"BuilderFlag.{name} does not exist in {self.lib.name} {self.lib.info.version}"
            )
        return flag

    def _attach_timing_cache(self, config: tensorrt.IBuilderConfig) -> None:
        if self._timing_cache is None:
            path = self.timing_cache_path
            data = path.read_bytes() if path.is_file() else b""
            self._timing_cache = config.create_timing_cache(data)
        if not config.set_timing_cache(self._timing_cache, False):
            raise QuantbenchError(
                f"{self.lib.name} refused the timing cache {self.timing_cache_path}; delete it"
            )

    def _save_timing_cache(self) -> None:
        if self._timing_cache is not None:
            data = self._timing_cache.serialize()
            write_bytes_atomic(self.timing_cache_path, bytes(memoryview(data)))

    def _inputs(self, network: tensorrt.INetworkDefinition) -> list[tuple[str, tuple[int, ...]]]:
        inputs = []
        for index in range(network.num_inputs):
            tensor = network.get_input(index)
            shape = _shape(tensor.shape)
            if any(d < 0 for d in shape[1:]):
                raise QuantbenchError(
                    f"input {tensor.name!r} has shape {shape}: quantbench's {self.lib.name} backend lets "
                    "only the batch dimension vary; export the model with the other dimensions fixed"
                )
            inputs.append((tensor.name, shape))
        return inputs

    def _add_profile(self, network: tensorrt.INetworkDefinition, config: tensorrt.IBuilderConfig) -> bool:
        inputs = self._inputs(network)
        if not any(shape and shape[0] < 0 for _, shape in inputs):
            return False
        dims = self.lib.module.Dims
        profile = self._builder.create_optimization_profile()
        for name, shape in inputs:
            rest = list(shape[1:])
            if shape and shape[0] < 0:
                low, opt, high = (
                    [size, *rest] for size in (self.profile.min, self.profile.opt, self.profile.max)
                )
                profile.set_shape(name, dims(low), dims(opt), dims(high))
            else:
                profile.set_shape(name, dims(list(shape)), dims(list(shape)), dims(list(shape)))
        config.add_optimization_profile(profile)
        return True

    def _attach_calibrator(
        self,
        network: tensorrt.INetworkDefinition,
        config: tensorrt.IBuilderConfig,
        request: BuildRequest,
        dynamic: bool,
    ) -> None:
        assert request.calibrator is not None
        dims = self.lib.module.Dims
        config.int8_calibrator = request.calibrator.make_calibrator(self.lib.module)
        if dynamic:
            batch = request.calibration_batch or request.calibrator.batch_size
            profile = self._builder.create_optimization_profile()
            for name, shape in self._inputs(network):
                fixed = [batch, *shape[1:]] if shape and shape[0] < 0 else list(shape)
                profile.set_shape(name, dims(fixed), dims(fixed), dims(fixed))
            if not config.set_calibration_profile(profile):
                raise QuantbenchError(f"{self.lib.name} refused the calibration profile (batch {batch})")


def apply_dynamic_ranges(
    lib: LoadedLibrary, network: tensorrt.INetworkDefinition, amax: Mapping[str, float]
) -> tuple[int, list[str]]:
    """Set ``[-amax, amax]`` on every float tensor of the network that has a range.

    Returns:
        (tensors given a range, float tensors without one, in network order).

    Raises:
        QuantbenchError: the library refuses a range.
    """
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        tensors.extend(layer.get_output(j) for j in range(layer.num_outputs))
    floats = (lib.module.DataType.FLOAT, lib.module.DataType.HALF)
    applied, missing, seen = 0, [], set()
    for tensor in tensors:
        name = tensor.name
        if name in seen or tensor.dtype not in floats:
            continue
        seen.add(name)
        if name not in amax:
            missing.append(name)
            continue
        value = float(amax[name])
        if not tensor.set_dynamic_range(-value, value):
            raise QuantbenchError(f"{lib.name} refused the dynamic range ±{value:g} of tensor {name!r}")
        applied += 1
    return applied, missing
