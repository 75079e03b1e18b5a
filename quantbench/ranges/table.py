"""A table of dynamic ranges (per-tensor amax), the comparison of two tables, and the checks every writer
makes before it stores a table."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import quantbench
from quantbench.errors import QuantbenchError

PathLike = str | os.PathLike[str]


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


def checked_entries(
    ranges: DynamicRanges, path: PathLike, fmt: Literal["cache", "text", "json"], *, allow_zero: bool
) -> list[tuple[str, float]]:
    """(name, amax as float) pairs after checking that ``fmt`` can store them and its reader accepts them.

    Args:
        ranges: the table about to be written.
        path: the destination, named in errors.
        fmt: the format, named in errors; "cache" and "text" also check the tensor names
            (see :func:`line_name_ok`), "json" keeps any name.
        allow_zero: whether an amax of 0 is accepted.

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
        if fmt != "json" and not line_name_ok(name, comments=fmt == "text"):
            raise QuantbenchError(
                f"cannot write {path}: tensor name {name!r} cannot be stored in a {fmt} file "
                "(empty, surrounding whitespace, a line break or a leading '#' or byte-order mark)"
            )
        entries.append((name, amax))
    return entries


def line_name_ok(name: str, *, comments: bool) -> bool:
    """Whether a line-format reader gives ``name`` back unchanged.

    The name must be non-empty, have no surrounding whitespace, no line break and no leading byte-order
    mark; with ``comments`` (the text format) it must not start with '#' either.
    """
    bad_starts = "#\ufeff" if comments else "\ufeff"
    return name == name.strip() != "" and "\n" not in name and "\r" not in name and name[0] not in bad_starts
