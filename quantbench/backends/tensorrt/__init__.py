"""The TensorRT backend's entry point (the modules beside this one do the work).

=====================  ================================================================
module                 what
=====================  ================================================================
version                which TensorRT is installed; TensorRT 10 (implicit + explicit) or 11
methods                ``trt-*`` method names: TensorRT's own calibrators (TensorRT 10)
calibrator             batches streamed to the GPU for TensorRT's calibrators
calibration_cache      the calibrators' cache, reused only when a sidecar says it fits
builder                networks, flags, profiles, dynamic ranges, timing cache, plugins
engine_file            engine files and their sidecars (TensorRT version, GPU)
runner                 running an engine; CUDA-event timing; CUDA graphs
inspector              per-layer name, type and precision from the engine inspector
backend                :class:`TensorRTBackend`: which engine each variant becomes
=====================  ================================================================

Importing this package imports neither TensorRT nor cuda-python; they load when a backend is made.
"""

from __future__ import annotations

from quantbench.backends.tensorrt.backend import RunSetup, TensorRTBackend
from quantbench.ranges import DynamicRanges, trt_header_problems, trt_version_string

__all__ = ["RunSetup", "TensorRTBackend", "header_warnings", "installed_version", "usable"]


DISTRIBUTIONS = (
    "tensorrt",
    "tensorrt-cu13",
    "tensorrt-cu12",
    "tensorrt-cu11",
    "tensorrt-cu13-bindings",
    "tensorrt-cu12-bindings",
    "tensorrt-cu11-bindings",
)
"""Package names TensorRT's Python module is installed under."""


def distribution_version() -> str | None:
    """The installed TensorRT package's version string (without importing it), or None."""
    from importlib import metadata

    for name in DISTRIBUTIONS:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def installed_version() -> int | None:
    """The installed TensorRT's version as a cache header number (10.3.0 -> 100300), or None."""
    try:
        parts = [int(p) for p in (distribution_version() or "").split(".")[:3]]
    except ValueError:
        return None
    if not parts:
        return None
    major, minor, patch = [*parts, 0, 0, 0][:3]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def header_warnings(ranges: DynamicRanges) -> list[str]:
    """Why TensorRT would ignore the cache these ranges came from (empty for text or JSON files).

    The version is checked against the installed TensorRT, or, where none is installed, against
    TensorRT 10 (the last version with calibration caches); the algorithm must be one TensorRT knows.
    quantbench itself uses the ranges either way.
    """
    installed = installed_version()
    problems = trt_header_problems(ranges, expect_version=installed, expect_algorithm=None)
    version = ranges.trt_version
    if installed is None and version is not None and not 100000 <= version < 110000:
        problems.append(
            f"{ranges.source}: cache header is for TensorRT {trt_version_string(version)}; TensorRT 10 "
            "silently ignores caches from other versions (quantbench uses its ranges as they are)"
        )
    return problems


def usable() -> bool:
    """True where ``auto`` should pick TensorRT: TensorRT 10 or 11 and cuda-python are installed and a GPU
    answers."""
    import importlib.util

    from quantbench.backends import cuda
    from quantbench.backends.tensorrt.version import SUPPORTED_MAJORS

    version = installed_version()
    if version is None or importlib.util.find_spec("tensorrt") is None:
        return False
    return version // 10000 in SUPPORTED_MAJORS and cuda.unavailable_reason() is None
