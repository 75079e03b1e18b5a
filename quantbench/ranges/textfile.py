"""Reading range files as text, and the ``name: value`` entries of the two line formats.

In the TensorRT cache and the dynamic-range text format, a tensor's name is everything before the last
``:`` of a line, with surrounding whitespace stripped.
"""

from __future__ import annotations

from pathlib import Path

from quantbench.errors import QuantbenchError
from quantbench.ranges.table import PathLike


def read_text(path: PathLike) -> str:
    """The file as text with newlines normalised to "\\n" and a UTF-8 byte-order mark dropped.

    Raises:
        QuantbenchError: the file cannot be read or is not UTF-8.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise QuantbenchError(
            f"{path}: cannot read: {exc.strerror or exc}; give a range file (.cache, .txt or .json)"
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise QuantbenchError(
            f"{path}:{line}: not UTF-8 text; give a range file (.cache, .txt or .json)"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_entry(line: str, path: PathLike, lineno: int) -> tuple[str, str]:
    """Split a stripped ``name: value`` line on its last ':' into stripped name and value.

    Raises:
        QuantbenchError: the line has no ':' or the name is empty (naming ``path`` and ``lineno``).
    """
    name, colon, value = line.rpartition(":")
    if not colon:
        raise QuantbenchError(f"{path}:{lineno}: expected 'tensor_name: value', found no ':'")
    name = name.strip()
    if not name:
        raise QuantbenchError(f"{path}:{lineno}: empty tensor name")
    return name, value.strip()


def add_entry(
    amax: dict[str, float], lines: dict[str, int], name: str, value: float, path: PathLike, lineno: int
) -> None:
    """Add one entry to ``amax``, recording its line in ``lines`` (name -> first line).

    Raises:
        QuantbenchError: the tensor was already seen.
    """
    if name in amax:
        raise QuantbenchError(f"{path}:{lineno}: tensor {name!r} appears twice (first on line {lines[name]})")
    amax[name] = value
    lines[name] = lineno
