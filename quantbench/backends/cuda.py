"""CUDA through NVIDIA's cuda-python: device and pinned host buffers, streams, events, graphs.

The runtime API module is ``cuda.bindings.runtime`` (cuda-python 12.6 and later) or ``cuda.cudart``
(earlier releases); :func:`runtime` finds whichever is installed. Every call returns the CUDA error
code first; :func:`check` turns a failure into a one-line :class:`CudaError`. Buffers count
themselves in :func:`live_allocations` so callers and tests can see that everything was freed.

Nothing here imports cuda-python until a function is called.
"""

from __future__ import annotations

import ctypes
import importlib
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from quantbench.errors import QuantbenchError

INSTALL_HINT = 'pip install "quantbench[tensorrt]" (cuda-python)'

_live = {"device": 0, "pinned": 0}
_live_lock = threading.Lock()
_runtime: Any = None


class CudaError(QuantbenchError):
    """A CUDA runtime call failed (the message names the call and the CUDA error)."""


def runtime() -> Any:
    """The cuda-python runtime module (``cuda.bindings.runtime`` or the older ``cuda.cudart``).

    Raises:
        QuantbenchError: cuda-python is not installed.
    """
    global _runtime
    if _runtime is None:
        for name in ("cuda.bindings.runtime", "cuda.cudart"):
            try:
                _runtime = importlib.import_module(name)
                break
            except ImportError:
                continue
        else:
            raise QuantbenchError(f"cuda-python is not installed; {INSTALL_HINT}")
    return _runtime


def _error_name(err: Any) -> str:
    rt = runtime()
    try:
        result = rt.cudaGetErrorName(err)
        name = result[1] if isinstance(result, tuple) else result
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # the name is only decoration of the message
        return str(err)


def check(result: Any, what: str) -> Any:
    """The value(s) of a cuda-python call, or a :class:`CudaError` naming ``what``.

    Args:
        result: what the call returned: ``(err,)``, ``(err, value)`` or ``(err, v1, v2, ...)``.
        what: the call, for the message (e.g. ``cudaMalloc(4096)``).

    Returns:
        None, the single value, or a tuple of the values after the error code.

    Raises:
        CudaError: the error code is not cudaSuccess.
    """
    rt = runtime()
    err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if err != rt.cudaError_t.cudaSuccess:
        raise CudaError(f"CUDA {what} failed: {_error_name(err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def unavailable_reason() -> str | None:
    """Why CUDA cannot be used here (no cuda-python, no driver, no GPU), or None when it can."""
    try:
        rt = runtime()
    except QuantbenchError as exc:
        return str(exc)
    try:
        count = check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except QuantbenchError as exc:
        return str(exc)
    except Exception as exc:  # the runtime library itself may be missing
        return f"CUDA runtime not loadable: {exc}"
    return None if count and count > 0 else "no CUDA device"


def device_info(device: int = 0) -> dict[str, Any]:
    """Name, compute capability (``"9.0"``) and memory of a GPU.

    Raises:
        CudaError: the device cannot be queried.
    """
    rt = runtime()
    props = check(rt.cudaGetDeviceProperties(device), f"cudaGetDeviceProperties({device})")
    name = props.name
    name = name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)
    return {
        "name": name,
        "compute_capability": f"{props.major}.{props.minor}",
        "total_memory": int(props.totalGlobalMem),
    }


def mem_info() -> tuple[int, int]:
    """(free, total) bytes of the current device."""
    free, total = check(runtime().cudaMemGetInfo(), "cudaMemGetInfo")
    return int(free), int(total)


def live_allocations() -> dict[str, int]:
    """Device and pinned host buffers allocated through this module and not yet freed."""
    with _live_lock:
        return dict(_live)


def _count(kind: str, delta: int) -> None:
    with _live_lock:
        _live[kind] += delta


class Stream:
    """A CUDA stream; ``handle`` is the integer TensorRT's ``execute_async_v3`` takes."""

    def __init__(self) -> None:
        self._stream: Any = check(runtime().cudaStreamCreate(), "cudaStreamCreate")
        self.handle = int(self._stream)

    @property
    def raw(self) -> Any:
        """The cuda-python stream object."""
        return self._stream

    def synchronize(self) -> None:
        """Wait for everything queued on the stream."""
        check(runtime().cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def close(self) -> None:
        """Destroy the stream (once)."""
        if self._stream is not None:
            check(runtime().cudaStreamDestroy(self._stream), "cudaStreamDestroy")
            self._stream = None


class DeviceBuffer:
    """``nbytes`` of device memory; ``ptr`` is its address as an int.

    Raises:
        CudaError: the allocation fails (e.g. out of memory).
    """

    def __init__(self, nbytes: int) -> None:
        self.nbytes = max(int(nbytes), 1)
        self.ptr: int = int(check(runtime().cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes})"))
        _count("device", 1)

    def copy_from_host(self, source: PinnedBuffer | np.ndarray, stream: Stream, nbytes: int) -> None:
        """Queue a host-to-device copy of ``nbytes`` on ``stream`` (pinned source: truly asynchronous)."""
        src = source.ptr if isinstance(source, PinnedBuffer) else source.ctypes.data
        rt = runtime()
        kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(rt.cudaMemcpyAsync(self.ptr, src, nbytes, kind, stream.raw), "cudaMemcpyAsync(host to device)")

    def copy_to_host(self, target: PinnedBuffer | np.ndarray, stream: Stream, nbytes: int) -> None:
        """Queue a device-to-host copy of ``nbytes`` on ``stream``."""
        dst = target.ptr if isinstance(target, PinnedBuffer) else target.ctypes.data
        rt = runtime()
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(rt.cudaMemcpyAsync(dst, self.ptr, nbytes, kind, stream.raw), "cudaMemcpyAsync(device to host)")

    def read(self, shape: tuple[int, ...], dtype: np.dtype[Any] | type) -> np.ndarray:
        """A host copy of the buffer's first bytes as an array (synchronous; for checks)."""
        out = np.empty(shape, dtype=dtype)
        rt = runtime()
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(rt.cudaMemcpy(out.ctypes.data, self.ptr, out.nbytes, kind), "cudaMemcpy(device to host)")
        return out

    def free(self) -> None:
        """Release the memory (once)."""
        if self.ptr:
            check(runtime().cudaFree(self.ptr), "cudaFree")
            self.ptr = 0
            _count("device", -1)


class PinnedBuffer:
    """``nbytes`` of page-locked host memory, so host-to-device copies run asynchronously.

    Raises:
        CudaError: the allocation fails.
    """

    def __init__(self, nbytes: int) -> None:
        self.nbytes = max(int(nbytes), 1)
        self.ptr: int = int(check(runtime().cudaMallocHost(self.nbytes), f"cudaMallocHost({self.nbytes})"))
        _count("pinned", 1)

    def array(self, shape: tuple[int, ...], dtype: np.dtype[Any] | type) -> np.ndarray:
        """A numpy view of the buffer's first bytes; valid until :meth:`free`.

        Raises:
            QuantbenchError: the array would not fit in the buffer.
        """
        wanted = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        if count * wanted.itemsize > self.nbytes:
            raise QuantbenchError(
                f"an array of shape {tuple(shape)} ({wanted}) needs {count * wanted.itemsize} bytes; "
                f"the pinned buffer holds {self.nbytes}"
            )
        raw = (ctypes.c_byte * self.nbytes).from_address(self.ptr)
        view: np.ndarray = np.frombuffer(memoryview(raw), dtype=wanted, count=count)
        return view.reshape(shape)

    def free(self) -> None:
        """Release the memory (once); views from :meth:`array` must not be used afterwards."""
        if self.ptr:
            check(runtime().cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0
            _count("pinned", -1)


def release(
    buffer_groups: Iterable[dict[str, DeviceBuffer] | dict[str, PinnedBuffer]], stream: Stream | None
) -> None:
    """Free every buffer of ``buffer_groups`` (emptying the dicts), then close ``stream``; every release
    is attempted, and the first error, if any, is raised after the last."""
    errors: list[BaseException] = []
    for buffers in buffer_groups:
        for buffer in buffers.values():
            try:
                buffer.free()
            except BaseException as exc:  # free the rest, then report the first
                errors.append(exc)
        buffers.clear()
    if stream is not None:
        try:
            stream.close()
        except BaseException as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


class Event:
    """A CUDA event for timing work on a stream."""

    def __init__(self) -> None:
        self._event: Any = check(runtime().cudaEventCreate(), "cudaEventCreate")

    def record(self, stream: Stream) -> None:
        """Record the event on ``stream``."""
        check(runtime().cudaEventRecord(self._event, stream.raw), "cudaEventRecord")

    def synchronize(self) -> None:
        """Wait until the event has happened."""
        check(runtime().cudaEventSynchronize(self._event), "cudaEventSynchronize")

    def elapsed_ms(self, start: Event) -> float:
        """Milliseconds from ``start`` to this event (both recorded and complete)."""
        return float(check(runtime().cudaEventElapsedTime(start._event, self._event), "cudaEventElapsedTime"))

    def close(self) -> None:
        """Destroy the event (once)."""
        if self._event is not None:
            check(runtime().cudaEventDestroy(self._event), "cudaEventDestroy")
            self._event = None


class Graph:
    """Work captured from a stream once and replayed with one launch (a CUDA graph)."""

    def __init__(self, graph: Any, executable: Any) -> None:
        self._graph = graph
        self._exec = executable

    @classmethod
    def capture(cls, stream: Stream, enqueue: Any) -> Graph:
        """Capture what ``enqueue()`` queues on ``stream`` into an executable graph.

        Raises:
            CudaError: the work cannot be captured (e.g. it synchronizes) or instantiated.
        """
        rt = runtime()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(rt.cudaStreamBeginCapture(stream.raw, mode), "cudaStreamBeginCapture")
        try:
            enqueue()
        finally:
            graph = check(rt.cudaStreamEndCapture(stream.raw), "cudaStreamEndCapture")
        executable = check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        return cls(graph, executable)

    def launch(self, stream: Stream) -> None:
        """Queue one replay of the graph on ``stream``."""
        check(runtime().cudaGraphLaunch(self._exec, stream.raw), "cudaGraphLaunch")

    def close(self) -> None:
        """Destroy the executable graph and the graph (once)."""
        rt = runtime()
        if self._exec is not None:
            check(rt.cudaGraphExecDestroy(self._exec), "cudaGraphExecDestroy")
            self._exec = None
        if self._graph is not None:
            check(rt.cudaGraphDestroy(self._graph), "cudaGraphDestroy")
            self._graph = None
