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

Every build attaches the same timing cache (``engines/timing.cache``) and, for a model with dynamic
dimensions, one optimisation profile (:func:`profile_shapes`): fixed dimensions as the model fixes them,
the batch from :class:`BatchProfile`, other dynamic dimensions from the sample shapes the run feeds.
Dynamic input dimensions the model leaves unnamed are named before parsing (:func:`name_dynamic_dims`),
so that the library does not take two of them for one. Where the library builds for chosen GPU
architectures (TensorRT for RTX), the builder sets them (``compute_capabilities``). The library's
layer information, logged at the end of a build with detailed profiling verbosity, comes back with the
engine (:attr:`BuildResult.layer_log`).
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


ProfileShapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
"""Input name -> its (min, opt, max) shape in an optimisation profile."""


def profile_shapes(
    inputs: Sequence[tuple[str, tuple[int, ...]]],
    batch: BatchProfile,
    samples: Mapping[str, Sequence[tuple[int, ...]]],
    library: str,
) -> ProfileShapes | None:
    """The optimisation profile of a network's inputs, or None where every dimension is fixed.

    A dimension the model fixes stays fixed; a dynamic first dimension is the batch (``batch``); any
    other dynamic dimension spans the sizes the run's samples have there (``samples``: input name -> the
    shapes of its samples, batch excluded): their smallest, most frequent and largest.

    Args:
        inputs: (name, shape) of each network input, -1 where dynamic.
        batch: the batch sizes of the run.
        samples: the sample shapes of each input, batch excluded (empty where unknown).
        library: the library's name in messages.

    Raises:
        QuantbenchError: a dynamic dimension other than the batch whose size no sample gives.
    """
    if not any(d < 0 for _, shape in inputs for d in shape):
        return None
    shapes: ProfileShapes = {}
    for name, shape in inputs:
        low, opt, high = [], [], []
        for axis, size in enumerate(shape):
            if size >= 0:
                sizes = (size, size, size)
            elif axis == 0:
                sizes = (batch.min, batch.opt, batch.max)
            else:
                sizes = _sample_sizes(name, shape, axis, samples.get(name, ()), library)
            low.append(sizes[0])
            opt.append(sizes[1])
            high.append(sizes[2])
        shapes[name] = (tuple(low), tuple(opt), tuple(high))
    return shapes


def _sample_sizes(
    name: str, shape: tuple[int, ...], axis: int, seen: Sequence[tuple[int, ...]], library: str
) -> tuple[int, int, int]:
    """(smallest, most frequent, largest) size of ``axis`` (batch included) among the sample shapes."""
    sizes = [int(s[axis - 1]) for s in seen if len(s) == len(shape) - 1]
    if not sizes:
        raise QuantbenchError(
            f"input {name!r} has shape {shape}: its dimension {axis} is dynamic and no sample shape gives "
            f"its size for {library}'s optimisation profile; export the model with it fixed, or calibrate "
            "on samples (--images) whose shapes give it"
        )
    return min(sizes), max(set(sizes), key=sizes.count), max(sizes)


def name_dynamic_dims(path: Path) -> bytes | None:
    """The model at ``path`` with a name (``<input>_dim<axis>``) on every dynamic input dimension it
    leaves unnamed (no name, ``?``, or a negative size), serialized (its external data stays where it
    is); None where none is unnamed.

    TensorRT-family parsers take unnamed dynamic dimensions for one symbol, so two of them (the height and
    width of an image input) could never differ.

    Raises:
        QuantbenchError: the model cannot be read.
    """
    from quantbench.model import load_model

    model = load_model(path, external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    changed = False
    for value in model.graph.input:
        if value.name in initializers or not value.type.tensor_type.HasField("shape"):
            continue
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_value < 0 or (not dim.HasField("dim_value") and dim.dim_param in ("", "?")):
                dim.dim_param = f"{value.name}_dim{axis}"  # clears a negative dim_value (one of the two)
                changed = True
    return model.SerializeToString() if changed else None


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
    """A serialized engine, what the build did, and the library's layer information of it (the text of
    its ``Layers:`` log message, see :func:`quantbench.backends.trt_common.inspector.parse_layer_log`;
    None where the library logged none)."""

    data: bytes
    details: dict[str, Any] = field(default_factory=dict)
    layer_log: str | None = None


class LogSink:
    """Collects what the library logs at WARNING and above, for error messages and notes.

    Args:
        name: the library's name in messages, e.g. ``TensorRT``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.layer_log: str | None = None
        """The last layer information the library logged (a verbose message starting ``Layers:``)."""

    def add(self, severity: int, message: str) -> None:
        """Record one message; ``severity`` as TensorRT numbers it (0 internal error ... 4 verbose)."""
        if severity <= 1:
            self.errors.append(message.strip())
        elif severity == 2:
            self.warnings.append(message.strip())
        elif message.startswith("Layers:"):
            self.layer_log = message

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
        timing_cache: the timing cache file shared by the builds (read when present, rewritten after each);
            None: no timing cache (TensorRT for RTX, where timing cache operations do nothing).
        profile: the batch profile for models with a dynamic batch dimension.
        samples: input name -> the shapes of its samples (batch excluded), for other dynamic dimensions.
        compute_capabilities: ``ComputeCapability`` member names to build for (``SM86`` ...; TensorRT for
            RTX); empty: the library's default.
    """

    def __init__(
        self,
        lib: LoadedLibrary,
        logger: tensorrt.ILogger,
        sink: LogSink,
        timing_cache: Path | None,
        profile: BatchProfile,
        *,
        samples: Mapping[str, Sequence[tuple[int, ...]]] | None = None,
        compute_capabilities: Sequence[str] = (),
    ) -> None:
        self.lib = lib
        self.logger = logger
        self.sink = sink
        self.timing_cache_path = timing_cache
        self.profile = profile
        self.samples = dict(samples or {})
        self.compute_capabilities = tuple(compute_capabilities)
        self._builder: tensorrt.Builder = lib.module.Builder(logger)
        self._timing_cache: tensorrt.ITimingCache | None = None

    def build(self, request: BuildRequest) -> BuildResult:
        """Parse ``request.onnx`` and build its engine.

        Raises:
            QuantbenchError: the model does not parse, a flag or target is unknown to this library
                version, a dynamic dimension other than the batch has no sample size, or the build fails;
                an error raised inside the calibrator is re-raised here as it was.
        """
        trt, name = self.lib.module, self.lib.name
        started = time.perf_counter()
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if request.strongly_typed else 0
        network = self._builder.create_network(flags)
        parser = self._parse(network, request.onnx)  # noqa: F841  (the network's weights live in the parser)
        config = self._builder.create_builder_config()
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        self._attach_timing_cache(config)
        self._set_targets(config)
        self.sink.layer_log = None
        for flag in request.flags:
            config.set_flag(self._flag(flag))
        for flag in request.clear_flags:
            config.clear_flag(self._flag(flag))
        details: dict[str, Any] = {
            "onnx": str(request.onnx),
            "strongly_typed": request.strongly_typed,
            "flags": list(request.flags),
        }
        if self.compute_capabilities:
            details["compute_capabilities"] = list(self.compute_capabilities)
        shapes = self._add_profile(network, config)
        details.update(self._profile_details(network, shapes))
        if request.calibrator is not None:
            self._attach_calibrator(network, config, request, shapes)
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
        data = bytes(memoryview(serialized))
        details["engine_bytes"] = len(data)
        return BuildResult(data, details, self.sink.layer_log)

    def _parse(self, network: tensorrt.INetworkDefinition, onnx_path: Path) -> tensorrt.OnnxParser:
        """Parse the model into ``network`` (with its unnamed dynamic dimensions named); returns the parser,
        which must live until the engine is built."""
        parser: tensorrt.OnnxParser = self.lib.module.OnnxParser(network, self.logger)
        named = name_dynamic_dims(onnx_path)
        if named is None:
            parsed = parser.parse_from_file(str(onnx_path))
        else:
            parsed = parser.parse(named, str(onnx_path))
        if not parsed:
            errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
            first = errors[0] if errors else self.sink.last_error()
            raise QuantbenchError(f"{self.lib.name} cannot parse {onnx_path}: {first}")
        return parser

    def _set_targets(self, config: tensorrt.IBuilderConfig) -> None:
        """Set the GPU architectures to build for, where any are asked for."""
        if not self.compute_capabilities:
            return
        lib = self.lib
        members = getattr(lib.module, "ComputeCapability", None)
        if members is None:
            raise QuantbenchError(
                f"--compute-capability: {lib.name} {lib.info.version} builds only for the GPU it runs on; "
                "drop the option"
            )
        settable: Any = config  # TensorRT 10's API (and its stubs) has no compute capabilities
        settable.num_compute_capabilities = len(self.compute_capabilities)
        for index, target in enumerate(self.compute_capabilities):
            member = getattr(members, target, None)
            if member is None or not settable.set_compute_capability(member, index):
                raise QuantbenchError(
                    f"--compute-capability: {lib.name} {lib.info.version} refused {target}: "
                    f"{self.sink.last_error()}"
                )

    def _flag(self, name: str) -> tensorrt.BuilderFlag:
        flag: tensorrt.BuilderFlag | None = getattr(self.lib.module.BuilderFlag, name, None)
        if flag is None:
            raise QuantbenchError(
                f"BuilderFlag.{name} does not exist in {self.lib.name} {self.lib.info.version}"
            )
        return flag

    def _attach_timing_cache(self, config: tensorrt.IBuilderConfig) -> None:
        path = self.timing_cache_path
        if path is None:
            return
        if self._timing_cache is None:
            data = path.read_bytes() if path.is_file() else b""
            self._timing_cache = config.create_timing_cache(data)
        if not config.set_timing_cache(self._timing_cache, False):
            raise QuantbenchError(f"{self.lib.name} refused the timing cache {path}; delete it")

    def _save_timing_cache(self) -> None:
        if self._timing_cache is not None and self.timing_cache_path is not None:
            data = self._timing_cache.serialize()
            write_bytes_atomic(self.timing_cache_path, bytes(memoryview(data)))

    def _inputs(self, network: tensorrt.INetworkDefinition) -> list[tuple[str, tuple[int, ...]]]:
        tensors = [network.get_input(index) for index in range(network.num_inputs)]
        return [(tensor.name, _shape(tensor.shape)) for tensor in tensors]

    def _add_profile(
        self, network: tensorrt.INetworkDefinition, config: tensorrt.IBuilderConfig
    ) -> ProfileShapes | None:
        """Add the optimisation profile of a network with dynamic dimensions (see :func:`profile_shapes`);
        returns its shapes, or None where every dimension is fixed."""
        shapes = profile_shapes(self._inputs(network), self.profile, self.samples, self.lib.name)
        if shapes is None:
            return None
        dims = self.lib.module.Dims
        profile = self._builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, dims(list(low)), dims(list(opt)), dims(list(high)))
        config.add_optimization_profile(profile)
        return shapes

    def _profile_details(
        self, network: tensorrt.INetworkDefinition, shapes: ProfileShapes | None
    ) -> dict[str, Any]:
        """What the build details say of the profile: the batch sizes (``profile``) where the batch is
        dynamic, and each input's shapes (``profile_shapes``)."""
        if shapes is None:
            return {}
        details: dict[str, Any] = {
            "profile_shapes": {
                name: {"min": list(low), "opt": list(opt), "max": list(high)}
                for name, (low, opt, high) in shapes.items()
            }
        }
        if any(shape and shape[0] < 0 for _, shape in self._inputs(network)):
            details["profile"] = {"min": self.profile.min, "opt": self.profile.opt, "max": self.profile.max}
        return details

    def _attach_calibrator(
        self,
        network: tensorrt.INetworkDefinition,
        config: tensorrt.IBuilderConfig,
        request: BuildRequest,
        shapes: ProfileShapes | None,
    ) -> None:
        assert request.calibrator is not None
        dims = self.lib.module.Dims
        config.int8_calibrator = request.calibrator.make_calibrator(self.lib.module)
        if shapes is not None:
            batch = request.calibration_batch or request.calibrator.batch_size
            profile = self._builder.create_optimization_profile()
            for name, shape in self._inputs(network):
                opt = shapes[name][1]
                fixed = [batch if axis == 0 and size < 0 else opt[axis] for axis, size in enumerate(shape)]
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
