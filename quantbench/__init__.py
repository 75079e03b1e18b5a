"""quantbench: an INT8 post-training-quantization workbench for NVIDIA TensorRT.

The Python API mirrors the command line; heavy dependencies load on first use::

    import quantbench
    result = quantbench.calibrate("model.onnx", "calib/", n=100, methods=["entropy", "mse"])
    run = quantbench.run("model.onnx", "images/", n=100, precisions=["fp32", "int8"])
    print(run.summary())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from quantbench.calibration.calibrate import CalibrationResult
    from quantbench.flows.run import RunResult


def calibrate(model: Any, images: Any, **keywords: Any) -> CalibrationResult:
    """Calibrate a model on an image folder; see :func:`quantbench.flows.calibrate.calibrate`."""
    from quantbench.flows.calibrate import calibrate as _calibrate

    return _calibrate(model, images, **keywords)


def run(model: Any, images: Any = None, **keywords: Any) -> RunResult:
    """Build FP32 / FP16 / INT8 variants and compare them; see :func:`quantbench.flows.run.run`."""
    from quantbench.flows.run import run as _run

    return _run(model, images, **keywords)


def _signatures() -> None:
    """Give the two functions above the real signatures of the functions they call, for ``help()``."""
    import importlib

    for function in (calibrate, run):
        module = importlib.import_module(f"quantbench.flows.{function.__name__}")
        function.__signature__ = getattr(module, function.__name__).__signature__  # type: ignore[union-attr]


_signatures()

__all__ = ["__version__", "calibrate", "run"]
