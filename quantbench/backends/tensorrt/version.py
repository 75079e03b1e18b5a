"""Which TensorRT is installed, and which build path it takes.

TensorRT 10 keeps implicit quantization (calibrators, ``BuilderFlag.INT8``/``FP16``, dynamic ranges;
deprecated since 10.1); TensorRT 11 removed it and builds strongly typed networks only, so INT8 comes
from the Q/DQ model and FP16 from the FP16-typed model. :data:`TENSORRT` states these rules for the
code shared by TensorRT-family backends (:mod:`quantbench.backends.trt_common`).
"""

from __future__ import annotations

from quantbench.backends.trt_common.library import LibraryInfo, TrtLibrary

INSTALL_HINT = 'pip install "quantbench[tensorrt]" (TensorRT 10 or 11 and cuda-python)'
SUPPORTED_MAJORS = (10, 11)

TENSORRT = TrtLibrary(
    module="tensorrt",
    name="TensorRT",
    install_hint=INSTALL_HINT,
    supported_majors=SUPPORTED_MAJORS,
    implicit_majors=(10,),
)
"""NVIDIA TensorRT: module ``tensorrt``, versions 10 (implicit and explicit quantization) and 11."""


def parse_version(text: str) -> LibraryInfo:
    """``"10.13.0.35"`` -> LibraryInfo(10, 13, 0, implicit=True).

    Raises:
        QuantbenchError: the text does not start with MAJOR.MINOR.
    """
    return TENSORRT.parse_version(text)


def detect() -> LibraryInfo:
    """The installed TensorRT.

    Raises:
        QuantbenchError: TensorRT is missing, or its major version is not 10 or 11.
    """
    return TENSORRT.load().info
