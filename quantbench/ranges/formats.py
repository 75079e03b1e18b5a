"""The registry of range file formats: finding a file's format, and reading and writing through it.

Each format is a :class:`RangeFormat`. Three are registered here, in the order messages list them: the
TensorRT calibration cache (``.cache``), dynamic-range text (``.txt``) and JSON (``.json``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quantbench.errors import QuantbenchError
from quantbench.ranges.json_format import looks_like_json, read_ranges_json, write_ranges_json
from quantbench.ranges.table import DynamicRanges, PathLike
from quantbench.ranges.text import read_range_text, write_range_text
from quantbench.ranges.textfile import read_text
from quantbench.ranges.trt_cache import looks_like_trt_cache, read_trt_cache, write_trt_cache


@dataclass(frozen=True)
class RangeFormat:
    """One file format for range tables.

    Attributes:
        name: the format's name, as given to :func:`write_ranges` (``fmt``).
        suffixes: file extensions in lower case with the dot, the usual one first.
        read: reads a file in this format.
        write: writes a table to a file in this format, replacing the file atomically.
        description: what the format is, in one line.
        recognises: whether a file's text (surrounding whitespace stripped) is in this format, as used by
            :func:`read_ranges`; None marks the format a file is read as when no other recognises it.
    """

    name: str
    suffixes: tuple[str, ...]
    read: Callable[[PathLike], DynamicRanges]
    write: Callable[[DynamicRanges, PathLike], None]
    description: str
    recognises: Callable[[str], bool] | None = None


_REGISTRY: list[RangeFormat] = []


def register(fmt: RangeFormat) -> RangeFormat:
    """Add ``fmt`` to the registry, after the formats already there; returns it.

    Raises:
        ValueError: its name or one of its suffixes is already registered, a suffix is not lower case
            with a leading dot, or it has no ``recognises`` while another registered format has none.
    """
    for suffix in fmt.suffixes:
        if not suffix.startswith(".") or suffix != suffix.lower():
            raise ValueError(f"range format {fmt.name!r}: suffix {suffix!r} must be lower case with a dot")
    for other in _REGISTRY:
        if other.name == fmt.name:
            raise ValueError(f"range format {fmt.name!r} is already registered")
        shared = set(other.suffixes) & set(fmt.suffixes)
        if shared:
            raise ValueError(f"range format {fmt.name!r}: {sorted(shared)} already belong to {other.name!r}")
        if other.recognises is None and fmt.recognises is None:
            raise ValueError(f"range format {fmt.name!r}: {other.name!r} already reads unrecognised files")
    _REGISTRY.append(fmt)
    return fmt


def registered() -> tuple[RangeFormat, ...]:
    """The registered formats in registration order."""
    return tuple(_REGISTRY)


def format_named(name: str) -> RangeFormat | None:
    """The registered format called ``name`` (exact match), or None."""
    return next((fmt for fmt in _REGISTRY if fmt.name == name), None)


def format_for(path: PathLike) -> RangeFormat | None:
    """The registered format for ``path``'s extension (any case), or None."""
    suffix = Path(path).suffix.lower()
    return next((fmt for fmt in _REGISTRY if suffix in fmt.suffixes), None)


def read_ranges(path: PathLike) -> DynamicRanges:
    """Read ranges from a file in any registered format, recognised by content, not by extension.

    With the built-in formats: a first non-blank line starting "TRT-" without a ':' means a cache; text
    starting '{' means JSON; anything else is dynamic-range text (a text file whose first name starts with
    '{' is taken for JSON: use read_range_text for it).

    Raises:
        QuantbenchError: the file cannot be read or is not UTF-8, no format recognises it (only when no
            format takes unrecognised files), or as the reader for the recognised format.
    """
    text = read_text(path).strip()
    fallback = None
    for fmt in _REGISTRY:
        if fmt.recognises is None:
            fallback = fmt
        elif fmt.recognises(text):
            return fmt.read(path)
    if fallback is None:
        raise QuantbenchError(f"{path}: not a range table in a known format")
    return fallback.read(path)


def write_ranges(ranges: DynamicRanges, path: PathLike, fmt: str | None = None) -> None:
    """Write ranges in the format named ``fmt`` ("cache", "txt" or "json" for the built-in formats), or
    with ``fmt`` None the format of ``path``'s extension (.cache, .txt, .json).

    Raises:
        QuantbenchError: an unknown format or extension, or as the writer for the format.
    """
    chosen = format_named(fmt) if fmt else format_for(path)
    if chosen is None:
        unknown = fmt or Path(path).suffix.lower().lstrip(".")
        raise QuantbenchError(
            f"cannot write {path}: unknown ranges format {unknown!r} (use {_usual_suffixes()})"
        )
    chosen.write(ranges, path)


def _usual_suffixes() -> str:
    """The usual suffix of every registered format for messages: ".cache, .txt or .json"."""
    suffixes = [fmt.suffixes[0] for fmt in _REGISTRY if fmt.suffixes]
    return ", ".join(suffixes[:-1]) + " or " + suffixes[-1] if len(suffixes) > 1 else "".join(suffixes)


register(
    RangeFormat(
        name="cache",
        suffixes=(".cache",),
        read=read_trt_cache,
        write=write_trt_cache,
        description="TensorRT calibration cache: a TRT-<version>-<Algorithm> header, then "
        "'name: <float32 scale bits in hex>' per tensor",
        recognises=looks_like_trt_cache,
    )
)
register(
    RangeFormat(
        name="txt",
        suffixes=(".txt",),
        read=read_range_text,
        write=write_range_text,
        description="dynamic-range text as read by TensorRT's sampleINT8API: 'name:amax' per line",
    )
)
register(
    RangeFormat(
        name="json",
        suffixes=(".json",),
        read=read_ranges_json,
        write=write_ranges_json,
        description="quantbench JSON: the ranges with the method, model and preprocessing that made them",
        recognises=looks_like_json,
    )
)
