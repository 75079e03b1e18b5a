"""The TensorRT backend's entry point.

Building TensorRT engines (native calibrators on TensorRT 10, explicit Q/DQ engines on TensorRT 11)
is not part of this release: ``--backend tensorrt`` stops with a one-line message, and ``auto``
picks ONNX Runtime. The Q/DQ and FP16 models that every run writes under ``models/`` are the inputs
TensorRT takes (``trtexec --onnx=models/int8-entropy.onnx``, strongly typed on TensorRT 11).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quantbench.errors import QuantbenchError
from quantbench.ranges import DynamicRanges, trt_header_problems, trt_version_string

if TYPE_CHECKING:
    from quantbench.backends import Runner
    from quantbench.variants import Variant

IMPLEMENTED = False


def installed_version() -> int | None:
    """The installed TensorRT's version as a cache header number (10.3.0 -> 100300), or None."""
    from importlib import metadata

    try:
        parts = [int(p) for p in metadata.version("tensorrt").split(".")[:3]]
    except (metadata.PackageNotFoundError, ValueError):
        return None
    major, minor, patch = [*parts, 0, 0, 0][:3]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def header_warnings(ranges: DynamicRanges) -> list[str]:
    """Why TensorRT would ignore the cache these ranges came from (empty for text or JSON files).

    The version is checked against the installed TensorRT, or, where none is installed, against
    TensorRT 10 (the last version with calibration caches); the algorithm must be one TensorRT knows.
    quantbench itself uses the ranges either way.
    """
    installed = installed_version()
    problems = trt_header_problems(ranges, expect_version=installed, expect_algorithm=None)
    version = ranges.trt_version
    if installed is None and version is not None and not 100000 <= version < 110000:
        problems.append(
            f"{ranges.source}: cache header is for TensorRT {trt_version_string(version)}; TensorRT 10 "
            "silently ignores caches from other versions (quantbench uses its ranges as they are)"
        )
    return problems


def usable() -> bool:
    """True where ``auto`` should pick TensorRT: the backend exists, tensorrt imports, a GPU is there."""
    if not IMPLEMENTED:
        return False
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


class TensorRTBackend:
    """Refuses every use until TensorRT engine building is part of quantbench."""

    name = "tensorrt"

    def __init__(self) -> None:
        raise QuantbenchError(
            "the TensorRT backend is not available in this version of quantbench; use --backend onnxruntime "
            "(the models it writes under models/ build with TensorRT as they are)"
        )

    def describe(self) -> dict[str, object]:
        return {"name": self.name}

    def prepare(self, variant: Variant) -> Runner:
        raise QuantbenchError("the TensorRT backend is not available in this version of quantbench")
