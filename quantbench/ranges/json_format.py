"""quantbench's JSON range format (``.json``): the ranges together with how they were made.

An object with "format": "quantbench-ranges", "format_version": 1, the metadata fields of
:class:`~quantbench.ranges.table.DynamicRanges` (method, model_hash, preprocessing, image_count,
quantbench_version, trt_version, trt_algorithm) and "ranges", tensor name -> amax in graph order. JSON keeps
any tensor name exactly.
"""

from __future__ import annotations

import json
import math
from typing import Any

from quantbench.errors import QuantbenchError
from quantbench.fileio import write_text_atomic
from quantbench.ranges.table import DynamicRanges, PathLike, checked_entries
from quantbench.ranges.textfile import read_text

JSON_FORMAT = "quantbench-ranges"
JSON_FORMAT_VERSION = 1

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


def looks_like_json(text: str) -> bool:
    """Whether stripped file text is JSON: it starts with '{'."""
    return text.startswith("{")


def read_ranges_json(path: PathLike) -> DynamicRanges:
    """Read ranges and metadata from quantbench's JSON format.

    Only "ranges" is required; missing metadata takes the defaults (quantbench_version "").

    Raises:
        QuantbenchError: unreadable file, invalid JSON, a repeated key, another format or format version,
            "ranges" missing or not an object, an amax that is not a number, finite and > 0, empty
            "ranges", or metadata of the wrong type.
    """
    try:
        data = json.loads(read_text(path), object_pairs_hook=_unique_keys)
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
    document["ranges"] = dict(checked_entries(ranges, path, "json", allow_zero=False))
    try:
        text = json.dumps(document, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise QuantbenchError(f"cannot write {path}: metadata is not plain JSON: {exc}") from exc
    write_text_atomic(path, text + "\n")
