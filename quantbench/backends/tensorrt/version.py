"""Which TensorRT is installed, and which build path it takes.

TensorRT 10 keeps implicit quantization (calibrators, ``BuilderFlag.INT8``/``FP16``, dynamic ranges;
deprecated since 10.1); TensorRT 11 removed it and builds strongly typed networks only, so INT8 comes
from the Q/DQ model and FP16 from the FP16-typed model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType

from quantbench.errors import QuantbenchError

INSTALL_HINT = 'pip install "quantbench[tensorrt]" (TensorRT 10 or 11 and cuda-python)'
SUPPORTED_MAJORS = (10, 11)


@dataclass(frozen=True)
class TensorRTInfo:
    """The installed TensorRT.

    Attributes:
        version: the full version string, e.g. ``10.13.0.35``.
        major, minor, patch: its first three numbers.
    """

    version: str
    major: int
    minor: int
    patch: int

    @property
    def header(self) -> int:
        """The version as calibration cache headers write it (10.3.0 -> 100300)."""
        return self.major * 10000 + self.minor * 100 + self.patch

    @property
    def implicit(self) -> bool:
        """True where calibrators, precision flags and dynamic ranges exist (TensorRT 10)."""
        return self.major == 10

    @property
    def path(self) -> str:
        """``implicit+explicit`` on TensorRT 10, ``explicit`` on TensorRT 11."""
        return "implicit+explicit" if self.implicit else "explicit"


def parse_version(text: str) -> TensorRTInfo:
    """``"10.13.0.35"`` -> TensorRTInfo(10, 13, 0).

    Raises:
        QuantbenchError: the text does not start with MAJOR.MINOR.
    """
    match = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        raise QuantbenchError(f"cannot read the TensorRT version {text!r}")
    major, minor, patch = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    return TensorRTInfo(text.strip(), major, minor, patch)


def load_tensorrt() -> ModuleType:
    """Import the ``tensorrt`` module.

    Raises:
        QuantbenchError: TensorRT is not installed or its libraries cannot be loaded.
    """
    try:
        import tensorrt
    except ImportError as exc:
        raise QuantbenchError(f"TensorRT is not installed ({exc}); {INSTALL_HINT}") from None
    except OSError as exc:  # the bindings are there, the libraries are not
        raise QuantbenchError(f"TensorRT's libraries cannot be loaded ({exc}); {INSTALL_HINT}") from None
    if not isinstance(getattr(tensorrt, "__version__", None), str):
        raise QuantbenchError(
            f"TensorRT is not installed (a tensorrt module without a version was found); {INSTALL_HINT}"
        )
    return tensorrt


def detect() -> TensorRTInfo:
    """The installed TensorRT.

    Raises:
        QuantbenchError: TensorRT is missing, or its major version is not 10 or 11.
    """
    trt = load_tensorrt()
    info = parse_version(str(getattr(trt, "__version__", "")))
    if info.major not in SUPPORTED_MAJORS:
        raise QuantbenchError(
            f"TensorRT {info.version} is installed; quantbench's TensorRT backend supports TensorRT 10 and 11"
        )
    return info
