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

from quantbench.backends.tensorrt.backend import TensorRTBackend
from quantbench.tensorrt_install import distribution_version, installed_version

__all__ = ["TensorRTBackend", "distribution_version", "installed_version", "usable"]


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
