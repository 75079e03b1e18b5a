"""TensorRT 10's calibrators fed with quantbench's preprocessed batches through CUDA.

Three layers, so the parts that touch the GPU can be tested without TensorRT:

* :class:`BatchFeeder` streams host batches to the GPU: one pinned staging buffer and one device
  buffer per input, allocated once, reused for every batch and freed at the end of the data (or on
  :meth:`BatchFeeder.close`).
* :class:`CalibratorCore` implements TensorRT's calibrator protocol in plain Python:
  ``get_batch_size``, ``get_batch(names)`` (device pointers, ``None`` only at the real end of the
  data), ``read_calibration_cache`` / ``write_calibration_cache`` (through a
  :class:`~quantbench.backends.tensorrt.calibration_cache.CalibrationCache`), and the legacy
  calibrator's quantile, regression cutoff and histogram cache. TensorRT calls these from C++, where a
  Python exception cannot travel; the core therefore records the first error, ends the data, and the
  builder raises it after the build (:meth:`CalibratorCore.raise_error`): no error is swallowed.
* :func:`make_calibrator` wraps a core in a subclass of the TensorRT base class of the method; the
  builder asks for it through :meth:`CalibratorCore.make_calibrator`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.errors import QuantbenchError

if TYPE_CHECKING:
    import tensorrt

    from quantbench.backends.cuda import DeviceBuffer, PinnedBuffer, Stream
    from quantbench.backends.tensorrt.calibration_cache import CalibrationCache
    from quantbench.backends.tensorrt.methods import NativeMethod


@dataclass(frozen=True)
class InputSlot:
    """One network input as the calibrator feeds it: name, full batch shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @property
    def nbytes(self) -> int:
        """Bytes of one batch of this input."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class BatchFeeder:
    """Copies each batch of ``batches`` into device buffers and hands out their addresses.

    Args:
        slots: the network inputs, with the batch shape the calibration profile fixes.
        batches: host batches, input name -> array of exactly the slot's shape.

    Raises:
        CudaError: a buffer cannot be allocated.
    """

    def __init__(self, slots: Sequence[InputSlot], batches: Iterable[Mapping[str, np.ndarray]]) -> None:
        from quantbench.backends.cuda import DeviceBuffer, PinnedBuffer, Stream

        if not slots:
            raise QuantbenchError("calibration needs at least one network input")
        self.slots = {slot.name: slot for slot in slots}
        self.batches_served = 0
        self._iterator: Iterator[Mapping[str, np.ndarray]] | None = iter(batches)
        self._stream: Stream | None = None
        self._staging: dict[str, PinnedBuffer] = {}
        self._device: dict[str, DeviceBuffer] = {}
        try:
            self._stream = Stream()
            for slot in slots:
                self._staging[slot.name] = PinnedBuffer(slot.nbytes)
                self._device[slot.name] = DeviceBuffer(slot.nbytes)
        except BaseException:
            self.close()
            raise

    @property
    def finished(self) -> bool:
        """True once the data ended or the feeder was closed (its buffers are then freed)."""
        return self._iterator is None

    def device_pointers(self) -> dict[str, int]:
        """Input name -> address of its device buffer (empty once freed)."""
        return {name: buffer.ptr for name, buffer in self._device.items()}

    def next_pointers(self, names: Sequence[str]) -> list[int] | None:
        """Copy the next batch to the GPU; its device addresses in the order of ``names``.

        Returns:
            One address per name, or None when the data has ended (the buffers are then freed).

        Raises:
            QuantbenchError: a name that is not a network input, or a batch whose inputs or shapes do
                not match the calibration profile. Errors of the batch source propagate as they are.
        """
        if self._iterator is None:
            return None
        unknown = [name for name in names if name not in self.slots]
        if unknown:
            raise QuantbenchError(
                f"TensorRT asked the calibrator for input {unknown[0]!r}; the network's inputs are "
                f"{', '.join(self.slots)}"
            )
        try:
            batch = next(self._iterator)
        except StopIteration:
            self.close()
            return None
        assert self._stream is not None
        number = self.batches_served + 1
        for name in names:
            slot = self.slots[name]
            if name not in batch:
                raise QuantbenchError(f"calibration batch {number} has no input {name!r}")
            array = np.asarray(batch[name])
            if tuple(array.shape) != slot.shape:
                raise QuantbenchError(
                    f"calibration batch {number}: input {name!r} has shape {tuple(array.shape)}, the "
                    f"calibration profile fixes {slot.shape}"
                )
            staging = self._staging[name].array(slot.shape, slot.dtype)
            np.copyto(staging, array, casting="same_kind")
            self._device[name].copy_from_host(self._staging[name], self._stream, slot.nbytes)
        self._stream.synchronize()
        self.batches_served = number
        return [self._device[name].ptr for name in names]

    def close(self) -> None:
        """Free every buffer and the stream; safe to call more than once."""
        from quantbench.backends.cuda import release

        self._iterator = None
        stream, self._stream = self._stream, None
        release((self._device, self._staging), stream)


class CalibratorCore:
    """TensorRT's calibrator protocol over a :class:`BatchFeeder` and a calibration cache.

    Args:
        method: the TensorRT calibrator chosen.
        feeder: where batches come from.
        batch_size: the calibration batch (the batch dimension of the calibration profile).
        cache: the run's calibration cache, or None for no cache.
    """

    def __init__(
        self,
        method: NativeMethod,
        feeder: BatchFeeder,
        batch_size: int,
        cache: CalibrationCache | None = None,
    ) -> None:
        self.method = method
        self.feeder = feeder
        self.batch_size = batch_size
        self.cache = cache
        self.error: BaseException | None = None
        self.notes: list[str] = []
        self.cache_reused = False
        self.cache_written = False
        self.histogram_cache: bytes | None = None

    def get_batch_size(self) -> int:
        """The calibration batch size."""
        return self.batch_size

    def get_batch(self, names: Sequence[str]) -> list[int] | None:
        """Device addresses of the next batch, one per name; None at the end of the data or after an error."""
        if self.error is not None:
            return None
        try:
            return self.feeder.next_pointers(list(names))
        except BaseException as exc:
            self._fail(exc)
            return None

    def read_calibration_cache(self) -> bytes | None:
        """The run's cache when it may be reused; None to make TensorRT calibrate.

        A cache that is refused is noted (one line) and TensorRT calibrates afresh.
        """
        if self.cache is None or self.error is not None:
            return None
        try:
            data = self.cache.load()
        except QuantbenchError as exc:
            self.notes.append(str(exc))
            return None
        except BaseException as exc:
            self._fail(exc)
            return None
        self.cache_reused = data is not None
        return data

    def write_calibration_cache(self, cache: Any) -> None:
        """Store what TensorRT computed in the run's cache file and its sidecar."""
        if self.cache is None:
            return
        try:
            self.cache.store(bytes(cache), images=self.feeder.batches_served * self.batch_size)
            self.cache_written = True
        except BaseException as exc:
            self._fail(exc)

    def get_quantile(self) -> float:
        """The legacy calibrator's quantile."""
        return float(self.method.quantile if self.method.quantile is not None else 1.0)

    def get_regression_cutoff(self) -> float:
        """The legacy calibrator's regression cutoff."""
        return float(self.method.regression_cutoff if self.method.regression_cutoff is not None else 1.0)

    def read_histogram_cache(self) -> bytes | None:
        """The legacy calibrator's histograms are never reused across builds."""
        return None

    def write_histogram_cache(self, cache: Any) -> None:
        """Keep the legacy calibrator's histograms in memory (they are not reused)."""
        self.histogram_cache = bytes(cache)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        with contextlib.suppress(BaseException):  # the first error is the one to report
            self.feeder.close()

    def make_calibrator(self, trt: ModuleType) -> tensorrt.IInt8Calibrator:
        """The calibrator of the ``tensorrt`` module ``trt`` that forwards to this core (see
        :func:`make_calibrator`)."""
        return make_calibrator(self, trt)

    def raise_error(self) -> None:
        """Raise the first error met inside a TensorRT callback, if any."""
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def close(self) -> None:
        """Free the feeder's buffers."""
        self.feeder.close()


def make_calibrator(core: CalibratorCore, trt: ModuleType) -> tensorrt.IInt8Calibrator:
    """A calibrator of ``core.method``'s base class that forwards every callback to ``core``.

    pybind11 finds a Python override by its name on the instance, so the class is built with one
    forwarding function per callback TensorRT makes (the legacy calibrator has four more).

    Args:
        core: the calibration.
        trt: the ``tensorrt`` module whose base classes to use (TensorRT 10).
    """
    bases: dict[str, Any] = {
        "trt-entropy2": trt.IInt8EntropyCalibrator2,
        "trt-minmax": trt.IInt8MinMaxCalibrator,
        "trt-entropy": trt.IInt8EntropyCalibrator,
        "trt-legacy": trt.IInt8LegacyCalibrator,
    }
    base = bases[core.method.name]

    def init(self: Any) -> None:
        base.__init__(self)

    namespace: dict[str, Any] = {
        "__init__": init,
        "get_batch_size": lambda self: core.get_batch_size(),
        "get_batch": lambda self, names: core.get_batch(names),
        "read_calibration_cache": lambda self: core.read_calibration_cache(),
        "write_calibration_cache": lambda self, cache: core.write_calibration_cache(cache),
    }
    if core.method.name == "trt-legacy":
        namespace.update(
            get_quantile=lambda self: core.get_quantile(),
            get_regression_cutoff=lambda self: core.get_regression_cutoff(),
            read_histogram_cache=lambda self: core.read_histogram_cache(),
            write_histogram_cache=lambda self, cache: core.write_histogram_cache(cache),
        )
    calibrator_class = type(f"Quantbench{core.method.base_class}", (base,), namespace)
    calibrator: tensorrt.IInt8Calibrator = calibrator_class()
    return calibrator
