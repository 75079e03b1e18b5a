"""TensorRT calibration cache (``.cache``).

A header line ``TRT-<version>-<Algorithm>``, then ``name: xxxxxxxx`` per tensor: the big-endian IEEE-754
float32 bits of scale = amax / 127 in hex. TensorRT ignores a cache whose header names another version or
algorithm than the build uses; :func:`trt_header_problems` says when that would happen.
"""

from __future__ import annotations

import math
import re
import struct

from quantbench.errors import QuantbenchError
from quantbench.fileio import write_text_atomic
from quantbench.ranges.table import DynamicRanges, PathLike, checked_entries
from quantbench.ranges.textfile import add_entry, read_text, split_entry

DEFAULT_TRT_VERSION = 101300
"""Header version written when none is given: TensorRT 10.13.0. Calibration caches exist throughout
TensorRT 10.x (11.0 removes implicit INT8); TensorRT ignores a cache written for another version, so pass
the installed version where it is known."""

KNOWN_ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")

# Calibration method -> cache header algorithm; any other method writes EntropyCalibration2.
_METHOD_ALGORITHMS = {
    "minmax": "MinMaxCalibration",
    "trt-minmax": "MinMaxCalibration",
    "trt-entropy": "EntropyCalibration",
    "trt-legacy": "LegacyCalibration",
}

_HEADER = re.compile(r"TRT-([0-9]+)-([A-Za-z0-9_]+)")
_ALGORITHM_NAME = re.compile(r"[A-Za-z0-9_]+")
_HEX = re.compile(r"[0-9a-fA-F]{1,8}")


def trt_version_string(v: int) -> str:
    """Dotted form of a TensorRT version number: 100300 -> "10.3.0", 8601 -> "8.6.1".

    TensorRT before 10 encodes major*1000 + minor*100 + patch, from 10 on major*10000 + minor*100 + patch.
    """
    major, rest = divmod(v, 10000) if v >= 10000 else divmod(v, 1000)
    minor, patch = divmod(rest, 100)
    return f"{major}.{minor}.{patch}"


def looks_like_trt_cache(text: str) -> bool:
    """Whether stripped file text is a cache: its first line starts "TRT-" and has no ':'."""
    first_line = text.split("\n", 1)[0].strip()
    return first_line.startswith("TRT-") and ":" not in first_line


def read_trt_cache(path: PathLike) -> DynamicRanges:
    """Read a TensorRT calibration cache; amax = float32 scale * 127 (computed in float64).

    Blank lines are skipped. A zero scale (written ``0``) reads as amax 0.0.

    Raises:
        QuantbenchError: unreadable file, no or malformed header, a line without ':', a scale that is not
            1-8 hex digits or is negative, NaN or infinite, a repeated tensor, or no tensors.
    """
    lines = [(n, line.strip()) for n, line in enumerate(read_text(path).split("\n"), 1) if line.strip()]
    if not lines:
        raise QuantbenchError(f"{path}:1: empty file, expected a TensorRT calibration cache")
    header_line, header = lines[0]
    match = _HEADER.fullmatch(header)
    if match is None:
        example = "TRT-100300-EntropyCalibration2"
        raise QuantbenchError(f"{path}:{header_line}: expected a header like {example}, got {header[:60]!r}")
    amax: dict[str, float] = {}
    first_lines: dict[str, int] = {}
    for lineno, line in lines[1:]:
        name, value = split_entry(line, path, lineno)
        if _HEX.fullmatch(value) is None:
            raise QuantbenchError(f"{path}:{lineno}: scale {value[:20]!r} is not 1 to 8 hex digits")
        bits = int(value, 16)
        (scale,) = struct.unpack(">f", bits.to_bytes(4, "big"))
        if bits & 0x80000000 or not math.isfinite(scale):
            raise QuantbenchError(f"{path}:{lineno}: scale {value} is {scale}; it must be finite and >= 0")
        add_entry(amax, first_lines, name, scale * 127.0, path, lineno)
    if not amax:
        raise QuantbenchError(f"{path}:{header_line}: no tensors after the header")
    version, algorithm = int(match.group(1)), match.group(2)
    return DynamicRanges(
        amax, quantbench_version="", trt_version=version, trt_algorithm=algorithm, source=str(path)
    )


def write_trt_cache(
    ranges: DynamicRanges, path: PathLike, *, trt_version: int | None = None, algorithm: str | None = None
) -> None:
    """Write a TensorRT calibration cache (8 lowercase hex digits per scale).

    Args:
        ranges: the ranges; amax must be finite and >= 0.
        path: destination, replaced atomically.
        trt_version: header version; default ``ranges.trt_version``, else DEFAULT_TRT_VERSION.
        algorithm: header algorithm; default ``ranges.trt_algorithm``, else derived from ``ranges.method``
            ("minmax"/"trt-minmax" -> MinMaxCalibration, "trt-entropy" -> EntropyCalibration,
            "trt-legacy" -> LegacyCalibration, anything else -> EntropyCalibration2).

    Raises:
        QuantbenchError: a bad header value, amax or tensor name (see
            :func:`~quantbench.ranges.table.line_name_ok`), or no tensors.
    """
    version = trt_version if trt_version is not None else ranges.trt_version
    version = DEFAULT_TRT_VERSION if version is None else version
    algo = algorithm or ranges.trt_algorithm or _METHOD_ALGORITHMS.get(ranges.method, "EntropyCalibration2")
    if version < 0 or _ALGORITHM_NAME.fullmatch(algo) is None:
        raise QuantbenchError(f"cannot write {path}: bad cache header TRT-{version}-{algo}")
    lines = [f"TRT-{version}-{algo}"]
    for name, amax in checked_entries(ranges, path, "cache", allow_zero=True):
        try:
            bits = struct.pack(">f", amax / 127.0).hex()
        except OverflowError:
            raise QuantbenchError(
                f"cannot write {path}: amax {amax!r} of tensor {name!r} overflows float32"
            ) from None
        lines.append(f"{name}: {bits}")
    write_text_atomic(path, "\n".join(lines) + "\n")


def trt_header_problems(
    ranges: DynamicRanges, *, expect_version: int | None, expect_algorithm: str | None
) -> list[str]:
    """Reasons TensorRT would ignore a cache with these ranges' header; empty if there are none.

    A header field that is None (ranges not read from a cache) and an expectation that is None are not
    checked. An unknown algorithm is always reported.
    """
    where = f"{ranges.source}: " if ranges.source else ""
    version, algo = ranges.trt_version, ranges.trt_algorithm
    problems = []
    if version is not None and expect_version is not None and version != expect_version:
        problems.append(
            f"{where}cache header is for TensorRT {trt_version_string(version)} but TensorRT "
            f"{trt_version_string(expect_version)} is installed; TensorRT silently ignores a cache from "
            "another version"
        )
    if algo is not None and algo not in KNOWN_ALGORITHMS:
        problems.append(
            f"{where}cache header names an unknown calibration algorithm {algo!r} "
            f"(known: {', '.join(KNOWN_ALGORITHMS)})"
        )
    elif algo is not None and expect_algorithm is not None and algo != expect_algorithm:
        problems.append(
            f"{where}cache header is for {algo} but {expect_algorithm} is requested; TensorRT silently "
            "ignores a cache made by another algorithm"
        )
    return problems
