"""Dynamic-range text (``.txt``), as read by TensorRT's sampleINT8API: ``name:amax`` per line.

Blank lines and lines starting with ``#`` (comments) are skipped, so a tensor name cannot start with
``#`` in this format.
"""

from __future__ import annotations

import math
import re

from quantbench.errors import QuantbenchError
from quantbench.fileio import write_text_atomic
from quantbench.ranges.table import DynamicRanges, PathLike, checked_entries
from quantbench.ranges.textfile import add_entry, read_text, split_entry

_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_HEX_SCALE = re.compile(r"[0-9a-fA-F]{8}")
"""What a TensorRT cache holds per tensor: 8 hex digits (a line format without its header reads as text)."""


def read_range_text(path: PathLike) -> DynamicRanges:
    """Read ``name:amax`` lines; blank lines and lines starting with '#' are skipped.

    Raises:
        QuantbenchError: unreadable file, a line without ':', an amax that is not a decimal number or not
            finite and > 0, a repeated tensor, or no entries.
    """
    amax: dict[str, float] = {}
    first_lines: dict[str, int] = {}
    for lineno, raw in enumerate(read_text(path).split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, value = split_entry(line, path, lineno)
        if _DECIMAL.fullmatch(value) is None:
            if _HEX_SCALE.fullmatch(value):
                raise QuantbenchError(
                    f"{path}:{lineno}: {value!r} is a TensorRT cache scale, not an amax, but the file has no "
                    "cache header; add one as its first line, e.g. TRT-100300-EntropyCalibration2"
                )
            raise QuantbenchError(f"{path}:{lineno}: amax {value[:30]!r} is not a decimal number")
        number = float(value)
        if not (math.isfinite(number) and number > 0):
            raise QuantbenchError(f"{path}:{lineno}: amax {value[:30]} must be finite and > 0")
        add_entry(amax, first_lines, name, number, path, lineno)
    if not amax:
        raise QuantbenchError(f"{path}:1: no 'tensor_name:amax' lines")
    return DynamicRanges(amax, quantbench_version="", source=str(path))


def write_range_text(ranges: DynamicRanges, path: PathLike) -> None:
    """Write ``name:amax`` lines with shortest round-trip floats.

    Raises:
        QuantbenchError: an amax that is not finite and > 0, a name the format cannot hold, or no tensors.
    """
    entries = checked_entries(ranges, path, "text", allow_zero=False)
    write_text_atomic(path, "".join(f"{name}:{amax!r}\n" for name, amax in entries))
