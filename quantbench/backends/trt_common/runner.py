"""Running an engine of a TensorRT-family library: tensor addresses, ``execute_async_v3``, CUDA-event
timing, CUDA graphs.

Every I/O tensor gets one device buffer and one pinned host buffer sized for the largest shape of
the engine's profile; their addresses are bound once with ``set_tensor_address``. :meth:`run` copies
the inputs in, enqueues, copies the outputs out and waits. :meth:`EngineRunner.device_latency` times
on the GPU with CUDA events: the enqueue alone, and separately the enqueue with the host↔device copies
of the inputs and outputs; with ``cuda_graph`` the enqueue is also captured once into a CUDA graph and
replayed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.backends.base import Runner
from quantbench.backends.cuda import DeviceBuffer, Event, Graph, PinnedBuffer, Stream, release
from quantbench.errors import QuantbenchError

if TYPE_CHECKING:
    import tensorrt

    from quantbench.backends.trt_common.builder import LogSink
    from quantbench.backends.trt_common.library import LoadedLibrary

WARMUP = 3


@dataclass
class IOTensor:
    """One input or output of the engine: its dtype, engine shape (-1: dynamic) and largest shape."""

    name: str
    is_input: bool
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    max_shape: tuple[int, ...]

    @property
    def max_bytes(self) -> int:
        """Bytes of the largest shape."""
        return int(np.prod(self.max_shape, dtype=np.int64)) * self.dtype.itemsize


def dims(value: tensorrt.Dims) -> tuple[int, ...]:
    """A ``Dims`` as a tuple of ints."""
    return tuple(int(value[i]) for i in range(len(value)))


def numpy_dtype(lib: LoadedLibrary, dtype: tensorrt.DataType) -> np.dtype[Any]:
    """The numpy dtype of a data type of the library ``lib``.

    Raises:
        QuantbenchError: a type numpy has no equivalent of (bfloat16, FP8, FP4, INT4).
    """
    trt = lib.module
    table = {
        trt.DataType.FLOAT: np.float32,
        trt.DataType.HALF: np.float16,
        trt.DataType.INT8: np.int8,
        trt.DataType.UINT8: np.uint8,
        trt.DataType.INT32: np.int32,
        trt.DataType.INT64: np.int64,
        trt.DataType.BOOL: np.bool_,
    }
    if dtype not in table:
        raise QuantbenchError(
            f"engine I/O of {lib.name} type {dtype} has no numpy equivalent; keep I/O in float"
        )
    return np.dtype(table[dtype])


def timing_stats(times_ms: Sequence[float]) -> dict[str, float]:
    """Median, p90, p99, mean, min and max of a list of times (ms), and the count."""
    values = np.asarray(times_ms, dtype=np.float64)
    median, p90, p99 = (float(v) for v in np.percentile(values, [50, 90, 99]))
    return {
        "runs": len(values),
        "median_ms": median,
        "p90_ms": p90,
        "p99_ms": p99,
        "mean_ms": float(values.mean()),
        "min_ms": float(values.min()),
        "max_ms": float(values.max()),
    }


class EngineRunner(Runner):
    """One engine, ready to run (see the module docstring).

    Args:
        lib: the library that deserialized the engine.
        engine: the deserialized engine.
        sink: the library's log sink, for messages.
        name: the variant's name, for messages.
        cuda_graph: also time the enqueue replayed from a CUDA graph.

    Raises:
        QuantbenchError: the engine has an output whose shape depends on the data, or the library refuses
            a shape or an address; CudaError when buffers cannot be allocated.
    """

    representative = True

    def __init__(
        self,
        lib: LoadedLibrary,
        engine: tensorrt.ICudaEngine,
        sink: LogSink,
        name: str,
        *,
        cuda_graph: bool = False,
    ) -> None:
        self.lib = lib
        self.name = name
        self.cuda_graph = cuda_graph
        self.engine_record: dict[str, Any] = {}
        """The engine's sidecar (set by the backend), reported with the per-layer information."""
        self.build_results: dict[str, Any] = {}
        """What the build told of the engine (set by the backend: layers from the build log, INT8 checks);
        it takes precedence over the inspector's layers in :meth:`extra_results`."""
        self._sink = sink
        self._engine: tensorrt.ICudaEngine | None = engine
        context = engine.create_execution_context()
        if context is None:
            raise QuantbenchError(
                f"{lib.name} could not create an execution context for {name}: {sink.last_error()}"
            )
        self._context: tensorrt.IExecutionContext | None = context
        self._device: dict[str, DeviceBuffer] = {}
        self._host: dict[str, PinnedBuffer] = {}
        self._seen: dict[int, dict[str, np.ndarray]] = {}
        self._stream: Stream | None = Stream()
        try:
            self.tensors = self._describe(engine, context)
            for tensor in self.tensors:
                self._device[tensor.name] = DeviceBuffer(tensor.max_bytes)
                self._host[tensor.name] = PinnedBuffer(tensor.max_bytes)
                if not context.set_tensor_address(tensor.name, self._device[tensor.name].ptr):
                    raise QuantbenchError(
                        f"{lib.name} refused the address of tensor {tensor.name!r} ({name})"
                    )
        except BaseException:
            self.close()
            raise
        self.inputs = [t for t in self.tensors if t.is_input]
        self.outputs = [t for t in self.tensors if not t.is_input]

    def _describe(self, engine: tensorrt.ICudaEngine, context: tensorrt.IExecutionContext) -> list[IOTensor]:
        trt = self.lib.module
        tensors = []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = numpy_dtype(self.lib, engine.get_tensor_dtype(name))
            shape = dims(engine.get_tensor_shape(name))
            max_shape = shape
            if is_input and any(d < 0 for d in shape):
                max_shape = dims(engine.get_tensor_profile_shape(name, 0)[2])
                if not context.set_input_shape(name, trt.Dims(list(max_shape))):
                    raise QuantbenchError(
                        f"{self.lib.name} refused the largest shape {max_shape} of input {name!r}"
                    )
            tensors.append(IOTensor(name, is_input, dtype, shape, max_shape))
        for tensor in tensors:
            if not tensor.is_input:
                tensor.max_shape = dims(context.get_tensor_shape(tensor.name))
                if any(d < 0 for d in tensor.max_shape):
                    raise QuantbenchError(
                        f"output {tensor.name!r} of {self.name} has a data-dependent shape "
                        f"{tensor.max_shape}; quantbench's {self.lib.name} runner needs output shapes known "
                        "from the input shapes"
                    )
        return tensors

    @property
    def context(self) -> tensorrt.IExecutionContext:
        """The execution context (raises once closed)."""
        if self._context is None:
            raise QuantbenchError(f"the {self.lib.name} runner of {self.name} is closed")
        return self._context

    @property
    def stream(self) -> Stream:
        """The runner's CUDA stream (raises once closed)."""
        if self._stream is None:
            raise QuantbenchError(f"the {self.lib.name} runner of {self.name} is closed")
        return self._stream

    def _stage(self, feeds: dict[str, np.ndarray]) -> None:
        """Set the input shapes and copy the inputs into their pinned buffers (host side only)."""
        trt = self.lib.module
        for tensor in self.inputs:
            if tensor.name not in feeds:
                raise QuantbenchError(f"{self.name}: no value for input {tensor.name!r}")
            array = np.ascontiguousarray(feeds[tensor.name], dtype=tensor.dtype)
            fits = len(array.shape) == len(tensor.shape) and all(
                (want < 0 and 0 < got <= top) or got == want
                for got, want, top in zip(array.shape, tensor.shape, tensor.max_shape)
            )
            if not fits:
                raise QuantbenchError(
                    f"{self.name}: input {tensor.name!r} has shape {array.shape}; the engine takes "
                    f"{tensor.shape} with dynamic dimensions up to {tensor.max_shape}"
                )
            dynamic = any(d < 0 for d in tensor.shape)
            if dynamic and not self.context.set_input_shape(tensor.name, trt.Dims(list(array.shape))):
                raise QuantbenchError(f"{self.lib.name} refused shape {array.shape} of input {tensor.name!r}")
            view = self._host[tensor.name].array(array.shape, tensor.dtype)
            np.copyto(view, array)
        self._seen[int(next(iter(feeds.values())).shape[0]) if feeds else 0] = feeds

    def _copy_inputs(self) -> None:
        for tensor in self.inputs:
            shape = dims(self.context.get_tensor_shape(tensor.name))
            nbytes = int(np.prod(shape, dtype=np.int64)) * tensor.dtype.itemsize
            self._device[tensor.name].copy_from_host(self._host[tensor.name], self.stream, nbytes)

    def _output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {t.name: dims(self.context.get_tensor_shape(t.name)) for t in self.outputs}

    def _copy_outputs(self, shapes: dict[str, tuple[int, ...]]) -> None:
        for tensor in self.outputs:
            nbytes = int(np.prod(shapes[tensor.name], dtype=np.int64)) * tensor.dtype.itemsize
            self._device[tensor.name].copy_to_host(self._host[tensor.name], self.stream, nbytes)

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.handle):
            raise QuantbenchError(f"{self.lib.name} could not run {self.name}: {self._sink.last_error()}")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns every output by name (host copies)."""
        self._stage(feeds)
        self._copy_inputs()
        self._enqueue()
        shapes = self._output_shapes()
        self._copy_outputs(shapes)
        self.stream.synchronize()
        return {t.name: self._host[t.name].array(shapes[t.name], t.dtype).copy() for t in self.outputs}

    def device_latency(self, feeds: dict[str, np.ndarray], runs: int) -> dict[str, Any]:
        """Time one batch on the GPU with CUDA events.

        Returns:
            ``{"batch", "enqueue", "with_copies", "cuda_graph"}``: :func:`timing_stats` of the enqueue
            alone, of copies in + enqueue + copies out, and of a CUDA graph replay of the enqueue
            (None unless ``cuda_graph``; ``cuda_graph_error`` says why when capture failed).
        """
        self._stage(feeds)
        self._copy_inputs()
        self.stream.synchronize()
        for _ in range(WARMUP):
            self._enqueue()
        self.stream.synchronize()
        shapes = self._output_shapes()
        start, end = Event(), Event()
        result: dict[str, Any] = {"batch": int(next(iter(feeds.values())).shape[0]), "cuda_graph": None}
        try:
            result["enqueue"] = timing_stats(self._timed(start, end, runs, self._enqueue))

            def with_copies() -> None:
                self._copy_inputs()
                self._enqueue()
                self._copy_outputs(shapes)

            result["with_copies"] = timing_stats(self._timed(start, end, runs, with_copies))
            if self.cuda_graph:
                try:
                    graph = Graph.capture(self.stream, self._enqueue)
                except QuantbenchError as exc:
                    result["cuda_graph_error"] = str(exc)
                else:
                    try:
                        graph.launch(self.stream)
                        self.stream.synchronize()
                        result["cuda_graph"] = timing_stats(
                            self._timed(start, end, runs, lambda: graph.launch(self.stream))
                        )
                    finally:
                        graph.close()
        finally:
            start.close()
            end.close()
        return result

    def _timed(self, start: Event, end: Event, runs: int, work: Any) -> list[float]:
        times = []
        for _ in range(max(1, runs)):
            start.record(self.stream)
            work()
            end.record(self.stream)
            end.synchronize()
            times.append(end.elapsed_ms(start))
        return times

    def extra_results(self, timed_batches: Sequence[int], runs: int) -> dict[str, Any]:
        """What results.json records for this engine beyond the common metrics.

        Args:
            timed_batches: the batch sizes timed; each one already run through :meth:`run` is timed on the
                GPU.
            runs: timed runs per measurement.

        Returns:
            ``engine`` (its sidecar), ``layers`` (name, type, precision per layer), ``layer_precisions``
            (counts) and ``device_latency`` (one :meth:`device_latency` per batch size), then
            :attr:`build_results` over them.
        """
        from quantbench.backends.trt_common.inspector import engine_layers, precision_counts

        assert self._engine is not None
        layers = engine_layers(self.lib, self._engine)
        timings = [
            self.device_latency(self._seen[size], runs) for size in timed_batches if size in self._seen
        ]
        return {
            "engine": self.engine_record,
            "layers": layers,
            "layer_precisions": precision_counts(layers),
            "device_latency": timings,
            **self.build_results,
        }

    def close(self) -> None:
        """Free the buffers, the stream, the context and the engine; safe to call more than once."""
        self._seen.clear()
        self._context = None
        self._engine = None
        stream, self._stream = self._stream, None
        release((self._device, self._host), stream)
