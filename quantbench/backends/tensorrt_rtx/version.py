"""Which TensorRT for RTX is installed: :data:`TENSORRT_RTX` states its rules for the code shared by
TensorRT-family backends (:mod:`quantbench.backends.trt_common`).

TensorRT for RTX has TensorRT 10's strongly typed API only: no calibrators, no ``BuilderFlag.INT8`` or
``FP16``; INT8 comes from the Q/DQ model, FP16 from the FP16-typed model.
"""

from __future__ import annotations

from quantbench.backends.trt_common.library import TrtLibrary

MODULE = "tensorrt_rtx"
INSTALL_HINT = 'pip install "quantbench[tensorrt-rtx]" (TensorRT for RTX 1.x)'
SUPPORTED_MAJORS = (1,)

TENSORRT_RTX = TrtLibrary(
    module=MODULE,
    name="TensorRT-RTX",
    install_hint=INSTALL_HINT,
    supported_majors=SUPPORTED_MAJORS,
    known_limits=(
        (
            "ConvTranspose",
            "TensorRT-RTX 1.7 runs ConvTranspose in float even with INT8 data and weights",
        ),
    ),
)
"""NVIDIA TensorRT for RTX: module ``tensorrt_rtx``, version 1 (strongly typed only)."""
