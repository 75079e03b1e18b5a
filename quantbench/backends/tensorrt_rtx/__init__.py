"""The TensorRT for RTX backend's entry point (the modules beside this one do the work).

Building, running, inspecting and storing engines is shared with the TensorRT backend and lives in
:mod:`quantbench.backends.trt_common`; what is TensorRT for RTX's own is here:

=====================  ================================================================
module                 what
=====================  ================================================================
version                :data:`~version.TENSORRT_RTX`: module ``tensorrt_rtx``, version 1, strongly typed
targets                ``--compute-capability``: the GPU architectures engines are built for
backend                :class:`~backend.TensorRTRtxBackend`: engines built anywhere, run where a GPU takes
                       them
=====================  ================================================================

Importing this package imports neither TensorRT for RTX nor cuda-python; they load when a backend is
made.
"""

from __future__ import annotations

__all__ = ["installed"]


def installed() -> bool:
    """True where TensorRT for RTX's Python module can be found (it is not imported)."""
    import importlib.util

    from quantbench.backends.tensorrt_rtx.version import MODULE

    return importlib.util.find_spec(MODULE) is not None
