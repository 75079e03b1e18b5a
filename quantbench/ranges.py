"""Dynamic ranges (per-tensor amax) and the three file formats they are stored in.

- TensorRT calibration cache (``.cache``): a header line ``TRT-<version>-<Algorithm>``, then
  ``name: xxxxxxxx`` per tensor, the big-endian IEEE-754 float32 bits of scale = amax / 127 in hex.
- Dynamic-range text (``.txt``, as read by TensorRT's sampleINT8API): ``name:amax`` per line.
- JSON (``.json``): the ranges together with how they were made.

Tensor names in the two line formats are everything before the last ``:`` of a line, with surrounding
whitespace stripped. Such a name cannot be empty, start or end with whitespace, contain a line break,
or start with a byte-order mark; in text files it cannot start with ``#`` (a comment). Writers refuse
these names rather than write a file that reads back differently. JSON keeps any name exactly.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import quantbench
from quantbench.errors import QuantbenchError
from quantbench.fileio import write_text_atomic

PathLike = str | os.PathLike[str]

DEFAULT_TRT_VERSION = 101300
"""Header version written when none is given: TensorRT 10.13.0. Calibration caches exist throughout
TensorRT 10.x (11.0 removes implicit INT8); TensorRT ignores a cache written for another version, so pass
the installed version where it is known."""

KNOWN_ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")

JSON_FORMAT = "quantbench-ranges"
JSON_FORMAT_VERSION = 1

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
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")

# Optional JSON metadata: key -> (type, may be null).
_JSON_FIELDS: dict[str, tuple[type, bool]] = {
    "method": (str, False),
    "model_hash": (str, False),
    "preprocessing": (dict, False),
    "image_count": (int, False),
    "quantbench_version": (str, False),
    "trt_version": (int, True),
    "trt_algorithm": (str, True),
}


def _package_version() -> str:
    return str(getattr(quantbench, "__version__", ""))


@dataclass
class DynamicRanges:
    """Per-tensor activation ranges: tensor name -> amax, the symmetric range [-amax, amax].

    ``amax`` keeps graph order. The other fields describe how the ranges were made; ranges read from a
    TensorRT cache or text file leave them empty, apart from the cache header's version and algorithm.
    ``source`` is the file the ranges were read from, used in messages.
    """

    amax: dict[str, float]
    method: str = ""
    model_hash: str = ""
    preprocessing: dict[str, Any] = field(default_factory=dict)
    image_count: int = 0
    quantbench_version: str = field(default_factory=_package_version)
    trt_version: int | None = None
    trt_algorithm: str | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.amax)

    def names(self) -> list[str]:
        """Tensor names in graph order."""
        return list(self.amax)

    def scale(self, name: str) -> float:
        """INT8 scale of tensor ``name``: amax / 127. Raises QuantbenchError if the tensor has no range."""
        if name not in self.amax:
            where = f" in {self.source}" if self.source else ""
            raise QuantbenchError(f"tensor {name!r} has no dynamic range{where}")
        return self.amax[name] / 127.0


@dataclass
class RangeDiff:
    """Comparison of two sets of ranges.

    ``rows`` holds (name, amax in a, amax in b, b / a) for tensors in both, in a's order;
    ``only_a`` and ``only_b`` the tensors found on one side only.
    """

    rows: list[tuple[str, float, float, float]]
    only_a: list[str]
    only_b: list[str]


def trt_version_string(v: int) -> str:
    """Dotted form of a TensorRT version number: 100300 -> "10.3.0", 8601 -> "8.6.1".

    TensorRT before 10 encodes major*1000 + minor*100 + patch, from 10 on major*10000 + minor*100 + patch.
    """
    major, rest = divmod(v, 10000) if v >= 10000 else divmod(v, 1000)
    minor, patch = divmod(rest, 100)
    return f"{major}.{minor}.{patch}"


def _read_text(path: PathLike) -> str:
    """The file as text with newlines normalised to "\\n" and a UTF-8 byte-order mark dropped.

    Raises:
        QuantbenchError: the file cannot be read or is not UTF-8.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise QuantbenchError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise QuantbenchError(f"{path}:{line}: not UTF-8 text") from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _split_entry(line: str, path: PathLike, lineno: int) -> tuple[str, str]:
    """Split a stripped ``name: value`` line on its last ':' into stripped name and value."""
    name, colon, value = line.rpartition(":")
    if not colon:
        raise QuantbenchError(f"{path}:{lineno}: expected 'tensor_name: value', found no ':'")
    name = name.strip()
    if not name:
        raise QuantbenchError(f"{path}:{lineno}: empty tensor name")
    return name, value.strip()


def _add(
    amax: dict[str, float], lines: dict[str, int], name: str, value: float, path: PathLike, lineno: int
) -> None:
    """Add one entry, refusing a tensor that was already seen (``lines`` maps name -> first line)."""
    if name in amax:
        raise QuantbenchError(f"{path}:{lineno}: tensor {name!r} appears twice (first on line {lines[name]})")
    amax[name] = value
    lines[name] = lineno


def read_trt_cache(path: PathLike) -> DynamicRanges:
    """Read a TensorRT calibration cache; amax = float32 scale * 127 (computed in float64).

    Blank lines are skipped. A zero scale (written ``0``) reads as amax 0.0.

    Raises:
        QuantbenchError: unreadable file, no or malformed header, a line without ':', a scale that is not
            1-8 hex digits or is negative, NaN or infinite, a repeated tensor, or no tensors.
    """
    lines = [(n, line.strip()) for n, line in enumerate(_read_text(path).split("\n"), 1) if line.strip()]
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
        name, value = _split_entry(line, path, lineno)
        if _HEX.fullmatch(value) is None:
            raise QuantbenchError(f"{path}:{lineno}: scale {value[:20]!r} is not 1 to 8 hex digits")
        bits = int(value, 16)
        (scale,) = struct.unpack(">f", bits.to_bytes(4, "big"))
        if bits & 0x80000000 or not math.isfinite(scale):
            raise QuantbenchError(f"{path}:{lineno}: scale {value} is {scale}; it must be finite and >= 0")
        _add(amax, first_lines, name, scale * 127.0, path, lineno)
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
        QuantbenchError: a bad header value, amax or tensor name (see the module docstring), or no tensors.
    """
    version = trt_version if trt_version is not None else ranges.trt_version
    version = DEFAULT_TRT_VERSION if version is None else version
    algo = algorithm or ranges.trt_algorithm or _METHOD_ALGORITHMS.get(ranges.method, "EntropyCalibration2")
    if version < 0 or _ALGORITHM_NAME.fullmatch(algo) is None:
        raise QuantbenchError(f"cannot write {path}: bad cache header TRT-{version}-{algo}")
    lines = [f"TRT-{version}-{algo}"]
    for name, amax in _checked_entries(ranges, path, "cache", allow_zero=True):
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


def read_range_text(path: PathLike) -> DynamicRanges:
    """Read ``name:amax`` lines; blank lines and lines starting with '#' are skipped.

    Raises:
        QuantbenchError: unreadable file, a line without ':', an amax that is not a decimal number or not
            finite and > 0, a repeated tensor, or no entries.
    """
    amax: dict[str, float] = {}
    first_lines: dict[str, int] = {}
    for lineno, raw in enumerate(_read_text(path).split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, value = _split_entry(line, path, lineno)
        if _DECIMAL.fullmatch(value) is None:
            raise QuantbenchError(f"{path}:{lineno}: amax {value[:30]!r} is not a decimal number")
        number = float(value)
        if not (math.isfinite(number) and number > 0):
            raise QuantbenchError(f"{path}:{lineno}: amax {value[:30]} must be finite and > 0")
        _add(amax, first_lines, name, number, path, lineno)
    if not amax:
        raise QuantbenchError(f"{path}:1: no 'tensor_name:amax' lines")
    return DynamicRanges(amax, quantbench_version="", source=str(path))


def write_range_text(ranges: DynamicRanges, path: PathLike) -> None:
    """Write ``name:amax`` lines with shortest round-trip floats.

    Raises:
        QuantbenchError: an amax that is not finite and > 0, a name the format cannot hold, or no tensors.
    """
    entries = _checked_entries(ranges, path, "text", allow_zero=False)
    write_text_atomic(path, "".join(f"{name}:{amax!r}\n" for name, amax in entries))


class _DuplicateKeyError(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _json_number(value: Any) -> float:
    """``value`` as a float: NaN if it is not a JSON number, infinity if it is too large."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.inf


def read_ranges_json(path: PathLike) -> DynamicRanges:
    """Read ranges and metadata from quantbench's JSON format.

    Only "ranges" is required; missing metadata takes the defaults (quantbench_version "").

    Raises:
        QuantbenchError: unreadable file, invalid JSON, a repeated key, another format or format version,
            "ranges" missing or not an object, an amax that is not a number, finite and > 0, empty
            "ranges", or metadata of the wrong type.
    """
    try:
        data = json.loads(_read_text(path), object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise QuantbenchError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    except _DuplicateKeyError as exc:
        raise QuantbenchError(f"{path}: key {exc.args[0]!r} appears twice in one JSON object") from exc
    except (ValueError, RecursionError) as exc:
        raise QuantbenchError(f"{path}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise QuantbenchError(f"{path}: expected a JSON object with a 'ranges' entry")
    if data.get("format", JSON_FORMAT) != JSON_FORMAT:
        raise QuantbenchError(f"{path}: 'format' is {data['format']!r}, expected {JSON_FORMAT!r}")
    if data.get("format_version", JSON_FORMAT_VERSION) != JSON_FORMAT_VERSION:
        raise QuantbenchError(f"{path}: unsupported format_version {data['format_version']!r}")
    table = data.get("ranges")
    if not isinstance(table, dict) or not table:
        raise QuantbenchError(f"{path}: 'ranges' must be a non-empty object of tensor name -> amax")
    amax: dict[str, float] = {}
    for name, value in table.items():
        number = _json_number(value)
        if not (math.isfinite(number) and number > 0):
            raise QuantbenchError(
                f"{path}: tensor {name!r} has amax {value!r:.40}; it must be a finite number > 0"
            )
        amax[name] = number
    meta: dict[str, Any] = {"quantbench_version": ""}
    for key, (kind, nullable) in _JSON_FIELDS.items():
        if key not in data:
            continue
        value = data[key]
        if not ((value is None and nullable) or (isinstance(value, kind) and not isinstance(value, bool))):
            null = " or null" if nullable else ""
            raise QuantbenchError(f"{path}: {key!r} must be of type {kind.__name__}{null}, got {value!r:.60}")
        meta[key] = value
    if meta.get("image_count", 0) < 0:
        raise QuantbenchError(f"{path}: 'image_count' must be >= 0")
    return DynamicRanges(amax, source=str(path), **meta)


def write_ranges_json(ranges: DynamicRanges, path: PathLike) -> None:
    """Write ranges and metadata as indented JSON, "ranges" in graph order.

    Raises:
        QuantbenchError: an amax that is not finite and > 0, no tensors, or metadata that is not
            JSON-serialisable (or holds NaN/infinity).
    """
    document: dict[str, Any] = {"format": JSON_FORMAT, "format_version": JSON_FORMAT_VERSION}
    document.update({key: getattr(ranges, key) for key in _JSON_FIELDS})
    document["ranges"] = dict(_checked_entries(ranges, path, "json", allow_zero=False))
    try:
        text = json.dumps(document, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise QuantbenchError(f"cannot write {path}: metadata is not plain JSON: {exc}") from exc
    write_text_atomic(path, text + "\n")


def read_ranges(path: PathLike) -> DynamicRanges:
    """Read ranges from any of the three formats, recognised by content.

    The first non-blank line starting "TRT-" without a ':' means a cache; text starting '{' means JSON;
    anything else is dynamic-range text (a text file whose first name starts with '{' is taken for JSON:
    use read_range_text for it).

    Raises:
        QuantbenchError: as the reader for the recognised format.
    """
    text = _read_text(path).strip()
    first_line = text.split("\n", 1)[0].strip()
    if first_line.startswith("TRT-") and ":" not in first_line:
        return read_trt_cache(path)
    if text.startswith("{"):
        return read_ranges_json(path)
    return read_range_text(path)


def write_ranges(
    ranges: DynamicRanges, path: PathLike, fmt: Literal["cache", "txt", "json"] | None = None
) -> None:
    """Write ranges as a cache, text or JSON file; ``fmt`` None picks by extension (.cache, .txt, .json).

    Raises:
        QuantbenchError: an unknown format or extension, or as the writer for the format.
    """
    chosen = fmt or Path(path).suffix.lower().lstrip(".")
    if chosen == "cache":
        write_trt_cache(ranges, path)
    elif chosen == "txt":
        write_range_text(ranges, path)
    elif chosen == "json":
        write_ranges_json(ranges, path)
    else:
        raise QuantbenchError(
            f"cannot write {path}: unknown ranges format {chosen!r} (use .cache, .txt or .json)"
        )


def diff_ranges(a: DynamicRanges, b: DynamicRanges) -> RangeDiff:
    """Compare two sets of ranges tensor by tensor.

    The ratio is b / a; when a's amax is 0 it is 1.0 if b's is 0 too, else infinity.
    """
    rows = []
    for name, amax_a in a.amax.items():
        if name in b.amax:
            amax_b = b.amax[name]
            ratio = amax_b / amax_a if amax_a else (1.0 if amax_b == 0 else math.inf)
            rows.append((name, amax_a, amax_b, ratio))
    only_a = [name for name in a.amax if name not in b.amax]
    only_b = [name for name in b.amax if name not in a.amax]
    return RangeDiff(rows, only_a, only_b)


def _checked_entries(
    ranges: DynamicRanges, path: PathLike, fmt: Literal["cache", "text", "json"], *, allow_zero: bool
) -> list[tuple[str, float]]:
    """(name, amax as float) pairs after checking that ``fmt`` can store them and its reader accepts them.

    Raises:
        QuantbenchError: no tensors, an amax that is not finite and > 0 (>= 0 with ``allow_zero``), or
            (line formats) a name the format cannot hold.
    """
    if not ranges.amax:
        raise QuantbenchError(f"cannot write {path}: no tensors")
    entries = []
    for name, value in ranges.amax.items():
        amax = float(value)
        if not math.isfinite(amax) or amax < 0 or (amax == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise QuantbenchError(
                f"cannot write {path}: tensor {name!r} has amax {amax!r}; it must be finite and {bound}"
            )
        if fmt != "json" and not _line_name_ok(name, comments=fmt == "text"):
            raise QuantbenchError(
                f"cannot write {path}: tensor name {name!r} cannot be stored in a {fmt} file "
                "(empty, surrounding whitespace, a line break or a leading '#' or byte-order mark)"
            )
        entries.append((name, amax))
    return entries


def _line_name_ok(name: str, *, comments: bool) -> bool:
    """Whether a line-format reader gives ``name`` back unchanged (see the module docstring)."""
    bad_starts = "#\ufeff" if comments else "\ufeff"
    return name == name.strip() != "" and "\n" not in name and "\r" not in name and name[0] not in bad_starts
