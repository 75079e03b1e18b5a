"""quantbench: an INT8 post-training-quantization workbench for NVIDIA TensorRT.

The Python API mirrors the command line; heavy dependencies load on first use::

    import quantbench
    result = quantbench.calibrate("model.onnx", "calib/", n=100, methods=["entropy", "mse"])
    run = quantbench.run("model.onnx", "images/", n=100, precisions=["fp32", "int8"])
    print(run.summary())

A metric of your own is a function declared with :func:`metric` and named as ``metric=["file.py:fn"]``
(see :mod:`quantbench.evaluation.plugins`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

__version__ = "0.1.0"

if TYPE_CHECKING:
    from quantbench.calibration.calibrate import CalibrationResult
    from quantbench.flows.run import RunResult

_F = TypeVar("_F", bound=Callable[..., Any])


def calibrate(model: Any, images: Any, **keywords: Any) -> CalibrationResult:
    """Calibrate a model on an image folder; see :func:`quantbench.flows.calibrate.calibrate`."""
    from quantbench.flows.calibrate import calibrate as _calibrate

    return _calibrate(model, images, **keywords)


def run(model: Any, images: Any = None, **keywords: Any) -> RunResult:
    """Build FP32 / FP16 / INT8 variants and compare them; see :func:`quantbench.flows.run.run`."""
    from quantbench.flows.run import run as _run

    return _run(model, images, **keywords)


def metric(*, headline: str, higher_is_better: bool, reference: float | None = None) -> Callable[[_F], _F]:
    """Declare a function a metric of your own: its headline score and which way is better; see
    :func:`quantbench.evaluation.plugins.metric`."""
    from quantbench.evaluation.plugins import metric as _metric

    return _metric(headline=headline, higher_is_better=higher_is_better, reference=reference)


def _signatures() -> None:
    """Give the two functions above the real signatures of the functions they call, for ``help()``."""
    import importlib

    for function in (calibrate, run):
        module = importlib.import_module(f"quantbench.flows.{function.__name__}")
        function.__signature__ = getattr(module, function.__name__).__signature__  # type: ignore[union-attr]


_signatures()

__all__ = ["__version__", "calibrate", "metric", "run"]
