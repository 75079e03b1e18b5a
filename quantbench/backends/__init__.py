"""Backends: what builds a variant into something runnable, runs batches through it and times it.

:mod:`quantbench.backends.base` is the contract, :mod:`quantbench.backends.registry` maps names to
backends. The built-in ones are registered here:

=============  ===============================================================  ========================
name           what                                                             ``auto`` picks it
=============  ===============================================================  ========================
onnxruntime    ONNX Runtime: the CPU everywhere, CUDA/TensorRT providers         otherwise
tensorrt       TensorRT 10 or 11 engines on an NVIDIA GPU; ``trt-*`` calibrators  where it can run
tensorrt-rtx   TensorRT for RTX engines, built on any machine, run on RTX GPUs   never
=============  ===============================================================  ========================
"""

from __future__ import annotations

from quantbench.backends.registry import BackendEntry, register


def _tensorrt_usable() -> bool:
    from quantbench.backends import tensorrt

    return tensorrt.usable()


def _tensorrt_rtx_installed() -> bool:
    from quantbench.backends import tensorrt_rtx

    return tensorrt_rtx.installed()


register(
    BackendEntry(
        "onnxruntime",
        "quantbench.backends.onnxruntime:OnnxRuntimeBackend",
        available=lambda: True,
        auto_rank=100,
    )
)
register(
    BackendEntry(
        "tensorrt",
        "quantbench.backends.tensorrt.backend:TensorRTBackend",
        available=_tensorrt_usable,
        auto_rank=0,
        method_prefix="trt-",
        refusal="is TensorRT's own calibrator and runs only with --backend tensorrt on TensorRT 10; with "
        "{backend} use entropy (EntropyCalibration2), minmax, percentile or mse",
    )
)
register(
    BackendEntry(
        "tensorrt-rtx",
        "quantbench.backends.tensorrt_rtx.backend:TensorRTRtxBackend",
        available=_tensorrt_rtx_installed,
    )
)
