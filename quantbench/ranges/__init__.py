"""Dynamic ranges (per-tensor amax) and the file formats they are stored in.

- TensorRT calibration cache (``.cache``): a header line ``TRT-<version>-<Algorithm>``, then
  ``name: xxxxxxxx`` per tensor, the big-endian IEEE-754 float32 bits of scale = amax / 127 in hex
  (:mod:`quantbench.ranges.trt_cache`).
- Dynamic-range text (``.txt``, as read by TensorRT's sampleINT8API): ``name:amax`` per line
  (:mod:`quantbench.ranges.text`).
- JSON (``.json``): the ranges together with how they were made (:mod:`quantbench.ranges.json_format`).

Tensor names in the two line formats are everything before the last ``:`` of a line, with surrounding
whitespace stripped. Such a name cannot be empty, start or end with whitespace, contain a line break,
or start with a byte-order mark; in text files it cannot start with ``#`` (a comment). Writers refuse
these names rather than write a file that reads back differently. JSON keeps any name exactly.

:mod:`quantbench.ranges.table` holds the table itself (:class:`DynamicRanges`) and comparisons;
:mod:`quantbench.ranges.formats` the registry of formats behind :func:`read_ranges` and
:func:`write_ranges`.
"""

from quantbench.ranges.formats import (
    RangeFormat,
    format_for,
    format_named,
    read_ranges,
    register,
    registered,
    write_ranges,
)
from quantbench.ranges.json_format import (
    JSON_FORMAT,
    JSON_FORMAT_VERSION,
    read_ranges_json,
    write_ranges_json,
)
from quantbench.ranges.table import DynamicRanges, PathLike, RangeDiff, diff_ranges
from quantbench.ranges.text import read_range_text, write_range_text
from quantbench.ranges.trt_cache import (
    DEFAULT_TRT_VERSION,
    KNOWN_ALGORITHMS,
    read_trt_cache,
    trt_header_problems,
    trt_version_string,
    write_trt_cache,
)

__all__ = [
    "DEFAULT_TRT_VERSION",
    "JSON_FORMAT",
    "JSON_FORMAT_VERSION",
    "KNOWN_ALGORITHMS",
    "DynamicRanges",
    "PathLike",
    "RangeDiff",
    "RangeFormat",
    "diff_ranges",
    "format_for",
    "format_named",
    "read_range_text",
    "read_ranges",
    "read_ranges_json",
    "read_trt_cache",
    "register",
    "registered",
    "trt_header_problems",
    "trt_version_string",
    "write_range_text",
    "write_ranges",
    "write_ranges_json",
    "write_trt_cache",
]
