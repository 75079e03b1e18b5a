"""The CUDA side of the TensorRT backend: buffers, events, graphs, the calibrator adapter and the runner.

Each test runs twice: on ``host`` (cuda-python's runtime emulated on host memory, everywhere) and on
``gpu`` (the real runtime and device memory; skipped with the reason where no NVIDIA GPU and
cuda-python are present, and failing instead when ``QUANTBENCH_REQUIRE_GPU`` is set). TensorRT itself
is replaced by a test double that calls the calibrator as TensorRT's documentation says:
``get_batch_size``, ``read_calibration_cache``, then ``get_batch(names)`` until it returns None,
then ``write_calibration_cache``.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quantbench.backends import cuda
from quantbench.errors import QuantbenchError
from tests.tensorrt_fake import FakeCudaRuntime, install_fakes


@pytest.fixture(params=["host", "gpu"])
def runtime(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``host``: the emulated runtime; ``gpu``: the real one (skips without a GPU, fails instead under
    QUANTBENCH_REQUIRE_GPU)."""
    if request.param == "host":
        monkeypatch.setattr(cuda, "_runtime", FakeCudaRuntime())
        return "host"
    monkeypatch.setattr(cuda, "_runtime", None)
    reason = cuda.unavailable_reason()
    if reason is not None:
        if os.environ.get("QUANTBENCH_REQUIRE_GPU"):
            pytest.fail(f"QUANTBENCH_REQUIRE_GPU is set but CUDA is unusable: {reason}")
        pytest.skip(f"no usable NVIDIA GPU: {reason}")
    return "gpu"


def _read(pointer: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Copy ``shape`` values from device (or emulated) memory at ``pointer`` to the host."""
    out = np.empty(shape, dtype=dtype)
    rt = cuda.runtime()
    kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    cuda.check(rt.cudaMemcpy(out.ctypes.data, pointer, out.nbytes, kind), "cudaMemcpy")
    return out


def test_buffers_round_trip_and_are_counted(runtime: str) -> None:
    before = cuda.live_allocations()
    stream = cuda.Stream()
    pinned = cuda.PinnedBuffer(4 * 1000)
    device = cuda.DeviceBuffer(4 * 1000)
    assert cuda.live_allocations() == {"device": before["device"] + 1, "pinned": before["pinned"] + 1}
    data = np.arange(1000, dtype=np.float32)
    np.copyto(pinned.array((1000,), np.float32), data)
    device.copy_from_host(pinned, stream, data.nbytes)
    stream.synchronize()
    np.testing.assert_array_equal(device.read((1000,), np.float32), data)
    back = np.zeros(1000, dtype=np.float32)
    device.copy_to_host(back, stream, data.nbytes)
    stream.synchronize()
    np.testing.assert_array_equal(back, data)
    with pytest.raises(QuantbenchError, match="pinned buffer holds 4000"):
        pinned.array((1001,), np.float32)
    for _ in range(2):  # freeing twice is safe
        device.free()
        pinned.free()
        stream.close()
    assert cuda.live_allocations() == before


def test_events_time_work_on_a_stream(runtime: str) -> None:
    stream = cuda.Stream()
    start, end = cuda.Event(), cuda.Event()
    buffer = cuda.DeviceBuffer(64 << 20)
    host = np.ones(16 << 20, dtype=np.float32)
    start.record(stream)
    buffer.copy_from_host(host, stream, host.nbytes)
    end.record(stream)
    end.synchronize()
    elapsed = end.elapsed_ms(start)
    assert 0.0 < elapsed < 10_000.0
    for item in (start, end, stream):
        item.close()
    buffer.free()


def test_a_cuda_graph_replays_captured_copies(runtime: str) -> None:
    if runtime == "host":
        pytest.skip("the emulated runtime cannot capture graphs (covered by the gpu run)")
    stream = cuda.Stream()
    src, dst = cuda.DeviceBuffer(4096), cuda.DeviceBuffer(4096)
    data = np.random.default_rng(0).normal(size=1024).astype(np.float32)
    src.copy_from_host(data, stream, data.nbytes)
    stream.synchronize()
    rt = cuda.runtime()

    def enqueue() -> None:
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        cuda.check(rt.cudaMemcpyAsync(dst.ptr, src.ptr, 4096, kind, stream.raw), "copy")

    graph = cuda.Graph.capture(stream, enqueue)  # captured, not run
    graph.launch(stream)
    stream.synchronize()
    np.testing.assert_array_equal(dst.read((1024,), np.float32), data)
    graph.close()
    graph.close()
    for buffer in (src, dst):
        buffer.free()
    stream.close()


# --- the calibrator adapter under TensorRT's calling protocol -----------------------------------------


def _slots(batch: int) -> list[Any]:
    from quantbench.backends.tensorrt.calibrator import InputSlot

    return [
        InputSlot("image", (batch, 3, 8, 8), np.dtype(np.float32)),
        InputSlot("scale", (batch, 2), np.dtype(np.float32)),
    ]


def _batches(count: int, batch: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "image": rng.normal(size=(batch, 3, 8, 8)).astype(np.float32),
            "scale": rng.normal(size=(batch, 2)).astype(np.float32),
        }
        for _ in range(count)
    ]


def _core(batches: Any, tmp_path: Path | None = None, method: str = "trt-entropy2", batch: int = 2) -> Any:
    from quantbench.backends.tensorrt.calibration_cache import CacheIdentity, CalibrationCache
    from quantbench.backends.tensorrt.calibrator import BatchFeeder, CalibratorCore
    from quantbench.backends.tensorrt.methods import parse_native_method

    spec = parse_native_method(method)
    cache = None
    if tmp_path is not None:
        identity = CacheIdentity("model", "prep", 101300, spec.algorithm, spec.label)
        cache = CalibrationCache(tmp_path / f"{spec.label}.cache", identity)
    return CalibratorCore(spec, BatchFeeder(_slots(batch), batches), batch, cache)


class ProtocolDriver:
    """What TensorRT does with a calibrator while building, as its documentation describes it."""

    def __init__(self, core: Any, names: list[str]) -> None:
        self.core, self.names = core, names
        self.seen: list[dict[str, np.ndarray]] = []

    def calibrate(self, header: str = "TRT-101300-EntropyCalibration2", keep: bool = True) -> bool:
        """Returns True when the cache was reused (no batch asked for)."""
        batch = self.core.get_batch_size()
        if self.core.read_calibration_cache():
            return True
        while True:
            pointers = self.core.get_batch(self.names)
            if pointers is None:
                break
            assert isinstance(pointers, list) and len(pointers) == len(self.names)
            if keep:
                shapes = {"image": (batch, 3, 8, 8), "scale": (batch, 2)}
                self.seen.append({n: _read(p, shapes[n], np.float32) for n, p in zip(self.names, pointers)})
        self.core.write_calibration_cache(f"{header}\nimage: 3c810204\n".encode())
        return False


def test_the_device_holds_each_batch_and_everything_is_freed(runtime: str, tmp_path: Path) -> None:
    before = cuda.live_allocations()
    batches = _batches(5, 2)
    core = _core(iter(batches), tmp_path)
    assert cuda.live_allocations()["device"] == before["device"] + 2  # one buffer per input
    driver = ProtocolDriver(core, ["scale", "image"])  # TensorRT's order, not the slots'
    assert driver.calibrate() is False
    assert len(driver.seen) == 5
    for seen, sent in zip(driver.seen, batches):
        for name in sent:
            np.testing.assert_array_equal(seen[name], sent[name])
    assert cuda.live_allocations() == before  # freed at the end of the data
    assert core.get_batch(["image", "scale"]) is None  # and stays at the end
    assert core.cache_written and core.error is None
    assert core.cache.ranges().amax["image"] == pytest.approx(2.0)


def test_one_buffer_per_input_is_reused_and_memory_does_not_grow(runtime: str) -> None:
    def stream() -> Iterator[dict[str, np.ndarray]]:
        rng = np.random.default_rng(1)
        for _ in range(1000):
            yield {
                "image": rng.normal(size=(4, 3, 8, 8)).astype(np.float32),
                "scale": rng.normal(size=(4, 2)).astype(np.float32),
            }

    before = cuda.live_allocations()
    core = _core(stream(), batch=4)
    addresses, free_at = set(), {}
    for number in range(1, 1001):
        pointers = core.get_batch(["image", "scale"])
        assert pointers is not None
        addresses.add(tuple(pointers))
        if number in (10, 1000):
            free_at[number] = cuda.mem_info()[0]
    assert len(addresses) == 1  # the same two device buffers for every batch
    assert free_at[1000] == free_at[10]
    assert core.get_batch(["image", "scale"]) is None
    assert core.feeder.batches_served == 1000
    assert cuda.live_allocations() == before


def test_an_error_of_the_data_ends_the_batches_and_is_raised_after_the_build(runtime: str) -> None:
    def broken() -> Iterator[dict[str, np.ndarray]]:
        yield from _batches(2, 2)
        raise OSError("disk gone")

    before = cuda.live_allocations()
    core = _core(broken())
    assert core.get_batch(["image", "scale"]) is not None
    assert core.get_batch(["image", "scale"]) is not None
    assert core.get_batch(["image", "scale"]) is None  # TensorRT cannot take a Python exception
    assert cuda.live_allocations() == before
    with pytest.raises(OSError, match="disk gone"):
        core.raise_error()
    core.raise_error()  # raised once


def test_a_batch_of_the_wrong_shape_or_an_unknown_input_is_an_error(runtime: str) -> None:
    bad = [{"image": np.zeros((2, 3, 8, 9), np.float32), "scale": np.zeros((2, 2), np.float32)}]
    core = _core(iter(bad))
    assert core.get_batch(["image", "scale"]) is None
    with pytest.raises(
        QuantbenchError, match=r"'image' has shape \(2, 3, 8, 9\), the calibration profile fixes"
    ):
        core.raise_error()
    core = _core(iter(_batches(1, 2)))
    assert core.get_batch(["image", "mask"]) is None
    with pytest.raises(QuantbenchError, match="input 'mask'; the network's inputs are image, scale"):
        core.raise_error()


def test_a_matching_cache_is_reused_and_a_stale_one_is_refused(runtime: str, tmp_path: Path) -> None:
    first = _core(iter(_batches(2, 2)), tmp_path)
    assert ProtocolDriver(first, ["image", "scale"]).calibrate() is False
    again = _core(iter(_batches(2, 2)), tmp_path)
    assert ProtocolDriver(again, ["image", "scale"]).calibrate() is True
    assert again.cache_reused and again.feeder.batches_served == 0
    again.close()
    # the same file, but this calibrator is MinMax: TensorRT would ignore it; quantbench says so
    other = _core(iter(_batches(2, 2)), tmp_path, method="trt-minmax")
    other.cache.path = tmp_path / "trt-entropy2.cache"
    other.cache.sidecar = tmp_path / "trt-entropy2.cache.json"
    assert ProtocolDriver(other, ["image", "scale"]).calibrate("TRT-101300-MinMaxCalibration") is False
    assert (
        len(other.notes) == 1 and "cache refused" in other.notes[0] and "MinMaxCalibration" in other.notes[0]
    )


def test_the_legacy_calibrator_settings_reach_tensorrt(runtime: str) -> None:
    core = _core(iter(_batches(1, 2)), method="trt-legacy:0.999:0.5")
    assert (core.get_quantile(), core.get_regression_cutoff()) == (0.999, 0.5)
    assert core.read_histogram_cache() is None
    core.write_histogram_cache(b"h")
    assert core.histogram_cache == b"h"
    core.close()


# --- the engine runner with real device memory --------------------------------------------------------


def _identity_engine(tmp_path: Path, world: Any) -> Any:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "identity",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, 4, 4])],
    )
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    profile = {"input": [[1, 3, 4, 4], [4, 3, 4, 4], [8, 3, 4, 4]]}
    record = {"onnx": str(path), "flags": [], "profiles": [profile], "ranges": 0, "identity": True}
    import json

    runtime = world.Runtime(world.Logger())
    return runtime.deserialize_cuda_engine(json.dumps(record).encode())


def test_the_runner_binds_addresses_times_with_events_and_frees(
    runtime: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantbench.backends.tensorrt.version import TENSORRT
    from quantbench.backends.trt_common.builder import LogSink
    from quantbench.backends.trt_common.runner import EngineRunner

    world = install_fakes(monkeypatch, "10.16.1", identity=True, gpu=runtime == "gpu")
    before = cuda.live_allocations()
    lib, engine = TENSORRT.load(), _identity_engine(tmp_path, world)
    runner = EngineRunner(lib, engine, LogSink("TensorRT"), "identity", cuda_graph=True)
    assert [t.max_shape for t in runner.tensors] == [(8, 3, 4, 4), (8, 3, 4, 4)]
    rng = np.random.default_rng(2)
    for batch in (1, 3, 8):
        feeds = {"input": rng.normal(size=(batch, 3, 4, 4)).astype(np.float32)}
        np.testing.assert_array_equal(runner.run(feeds)["output"], feeds["input"])
    with pytest.raises(QuantbenchError, match="dynamic dimensions up to"):
        runner.run({"input": np.zeros((9, 3, 4, 4), np.float32)})
    timing = runner.device_latency({"input": rng.normal(size=(4, 3, 4, 4)).astype(np.float32)}, runs=20)
    assert timing["batch"] == 4
    for key in ("enqueue", "with_copies"):
        assert timing[key]["runs"] == 20 and timing[key]["median_ms"] > 0.0
    if runtime == "gpu":
        assert timing["cuda_graph"]["runs"] == 20, timing.get("cuda_graph_error")
        assert timing["with_copies"]["median_ms"] >= timing["enqueue"]["min_ms"]
    else:
        assert timing["cuda_graph"] is None and "cudaStreamBeginCapture" in timing["cuda_graph_error"]
    runner.close()
    runner.close()
    assert cuda.live_allocations() == before
    assert world.violations == []


def test_the_host_runtime_hands_out_real_memory() -> None:
    rt = FakeCudaRuntime()
    _, address = rt.cudaMalloc(8)
    ctypes.memmove(address, b"abcdefgh", 8)
    assert ctypes.string_at(address, 8) == b"abcdefgh"
    rt.cudaFree(address)
    assert rt.blocks == {}
