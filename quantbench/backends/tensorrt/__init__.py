"""The TensorRT backend's entry point (the modules beside this one do the work).

Building, running, inspecting and storing engines is shared with other TensorRT-family backends and
lives in :mod:`quantbench.backends.trt_common`; what is NVIDIA TensorRT 10/11's own is here:

=====================  ================================================================
module                 what
=====================  ================================================================
version                :data:`~version.TENSORRT`: module ``tensorrt``, TensorRT 10 (implicit + explicit) or 11
methods                ``trt-*`` method names: TensorRT's own calibrators (TensorRT 10)
calibrator             batches streamed to the GPU for TensorRT's calibrators
calibration_cache      the calibrators' cache, reused only when a sidecar says it fits
backend                :class:`TensorRTBackend`: the shared backend plus TensorRT's calibrators
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
    from quantbench.backends.tensorrt.version import TENSORRT

    version = installed_version()
    if version is None or importlib.util.find_spec(TENSORRT.module) is None:
        return False
    return version // 10000 in TENSORRT.supported_majors and cuda.unavailable_reason() is None
