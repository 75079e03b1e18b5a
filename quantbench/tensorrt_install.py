"""Which TensorRT is installed, read from package metadata without importing TensorRT."""

from __future__ import annotations

DISTRIBUTIONS = (
    "tensorrt",
    "tensorrt-cu13",
    "tensorrt-cu12",
    "tensorrt-cu11",
    "tensorrt-cu13-bindings",
    "tensorrt-cu12-bindings",
    "tensorrt-cu11-bindings",
)
"""Package names TensorRT's Python module is installed under."""


def distribution_version() -> str | None:
    """The installed TensorRT package's version string (without importing it), or None."""
    from importlib import metadata

    for name in DISTRIBUTIONS:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def installed_version() -> int | None:
    """The installed TensorRT's version as a cache header number (10.3.0 -> 100300), or None."""
    try:
        parts = [int(p) for p in (distribution_version() or "").split(".")[:3]]
    except ValueError:
        return None
    if not parts:
        return None
    major, minor, patch = [*parts, 0, 0, 0][:3]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch
