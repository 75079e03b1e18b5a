"""TensorRT's own calibrators as calibration methods: ``trt-entropy2``, ``trt-minmax``, ``trt-entropy``,
``trt-legacy[:quantile[:regression_cutoff]]``.

They exist only in TensorRT 10 (implicit quantization, deprecated since 10.1, removed in 11) and run
only inside a TensorRT engine build, so they are accepted with the TensorRT backend alone. This
module needs neither TensorRT nor CUDA.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from quantbench.errors import QuantbenchError

PREFIX = "trt-"

NATIVE_METHODS: dict[str, tuple[str, str]] = {
    "trt-entropy2": ("IInt8EntropyCalibrator2", "EntropyCalibration2"),
    "trt-minmax": ("IInt8MinMaxCalibrator", "MinMaxCalibration"),
    "trt-entropy": ("IInt8EntropyCalibrator", "EntropyCalibration"),
    "trt-legacy": ("IInt8LegacyCalibrator", "LegacyCalibration"),
}
"""Method name -> (TensorRT calibrator base class, algorithm name in the cache header)."""

LEGACY_QUANTILE = 0.9999
LEGACY_REGRESSION_CUTOFF = 1.0
"""quantbench's defaults for ``trt-legacy`` (set them with ``trt-legacy:QUANTILE:CUTOFF``)."""

QUANTBENCH_EQUIVALENT = "entropy (EntropyCalibration2), minmax, percentile or mse"


@dataclass(frozen=True)
class NativeMethod:
    """One TensorRT calibrator chosen by the user.

    Attributes:
        text: the spec as written, e.g. ``trt-legacy:0.999:0.5``.
        name: the method, e.g. ``trt-legacy``.
        label: a file-name-safe name for its outputs, e.g. ``trt-legacy-0.999-0.5``.
        base_class: the TensorRT class the calibrator derives from.
        algorithm: the algorithm name TensorRT writes in the cache header.
        quantile, regression_cutoff: the legacy calibrator's settings (None for the others).
    """

    text: str
    name: str
    label: str
    base_class: str
    algorithm: str
    quantile: float | None = None
    regression_cutoff: float | None = None


def is_native(text: str) -> bool:
    """True for a spec naming a TensorRT calibrator (``trt-...``)."""
    return text.strip().lower().startswith(PREFIX)


def parse_native_method(text: str) -> NativeMethod:
    """``trt-entropy2`` ... ``trt-legacy[:quantile[:cutoff]]`` as a :class:`NativeMethod`.

    Raises:
        QuantbenchError: an unknown ``trt-`` name, parameters for a method without any, or legacy
            settings outside (0, 1].
    """
    name, *raw = [part.strip() for part in text.strip().split(":")]
    name = name.lower()
    if name not in NATIVE_METHODS:
        raise QuantbenchError(
            f"unknown TensorRT calibrator {name!r}; choose from {', '.join(NATIVE_METHODS)}"
        )
    base, algorithm = NATIVE_METHODS[name]
    if name != "trt-legacy":
        if raw:
            raise QuantbenchError(f"method {text!r}: {name} takes no parameters")
        return NativeMethod(text.strip(), name, name, base, algorithm)
    if len(raw) > 2:
        raise QuantbenchError(f"method {text!r}: trt-legacy takes at most QUANTILE:REGRESSION_CUTOFF")
    try:
        values = [float(v) for v in raw]
    except ValueError:
        raise QuantbenchError(
            f"method {text!r}: trt-legacy parameters must be numbers, e.g. trt-legacy:0.9999:1.0"
        ) from None
    quantile = values[0] if values else LEGACY_QUANTILE
    cutoff = values[1] if len(values) > 1 else LEGACY_REGRESSION_CUTOFF
    for what, value in (("quantile", quantile), ("regression cutoff", cutoff)):
        if not (math.isfinite(value) and 0.0 < value <= 1.0):
            raise QuantbenchError(f"method {text!r}: the {what} must be in (0, 1], got {value:g}")
    label = "-".join([name, *(f"{v:g}" for v in values)])
    return NativeMethod(text.strip(), name, label, base, algorithm, quantile, cutoff)


def split_methods(methods: Iterable[str]) -> tuple[list[str], list[NativeMethod]]:
    """(quantbench method specs, TensorRT calibrators) in the order given.

    Raises:
        QuantbenchError: a bad ``trt-`` spec (see :func:`parse_native_method`).
    """
    own: list[str] = []
    native: list[NativeMethod] = []
    for text in methods:
        if is_native(text):
            native.append(parse_native_method(text))
        else:
            own.append(text)
    return own, native


def refusal(method: str, *, backend: str, tensorrt_major: int | None) -> str | None:
    """Why ``method`` (a ``trt-`` spec) cannot run with this backend / TensorRT, or None when it can.

    Args:
        method: the spec as given.
        backend: the backend in use (``onnxruntime`` or ``tensorrt``).
        tensorrt_major: the installed TensorRT's major version (None: not installed).
    """
    name = method.split(":")[0].strip()
    if backend != "tensorrt":
        return (
            f"method {name} is TensorRT's own calibrator and runs only with --backend tensorrt on "
            f"TensorRT 10; with {backend} use {QUANTBENCH_EQUIVALENT}"
        )
    if tensorrt_major is not None and tensorrt_major >= 11:
        return (
            f"method {name} needs TensorRT 10: TensorRT {tensorrt_major} removed calibrators (implicit "
            f"quantization); use {QUANTBENCH_EQUIVALENT}, which quantbench computes and TensorRT "
            f"{tensorrt_major} builds from the Q/DQ model"
        )
    return None
