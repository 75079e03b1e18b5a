"""quantbench: an INT8 post-training-quantization workbench for NVIDIA TensorRT.

The Python API mirrors the command line; heavy dependencies load on first use::

    import quantbench
    result = quantbench.calibrate("model.onnx", "calib/", n=100, methods=["entropy", "mse"])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from quantbench.calibration import CalibrationResult


def calibrate(*args: Any, **kwargs: Any) -> CalibrationResult:
    """Calibrate a model on an image folder; see :func:`quantbench.calibration.calibrate`."""
    from quantbench.calibration import calibrate as _calibrate

    return _calibrate(*args, **kwargs)


__all__ = ["__version__", "calibrate"]
