"""Functions named on the command line: read from a Python file (``path/to/file.py:function``), or the
installed entry point of that name, as calibration methods, metrics and preprocessing take them. A leaf
module."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from quantbench.errors import QuantbenchError


def function_from_file(
    file: Path, name: str, where: str, modules: dict[Path, ModuleType] | None = None
) -> Callable[..., Any]:
    """The function ``name`` defined in the Python file ``file``.

    Args:
        file: the file.
        name: the function's name.
        where: what the errors start with, naming the option and the spec (``"--metric 'f.py:fn'"``).
        modules: files imported already, by resolved path (filled in here), so a file is imported once.

    Raises:
        QuantbenchError: the file is missing or cannot be imported, or has no such function (one line,
            starting with ``where``).
    """
    if not file.is_file():
        raise QuantbenchError(f"{where}: file {file} not found")
    key = file.resolve()
    module = modules.get(key) if modules is not None else None
    if module is None:
        module_spec = importlib.util.spec_from_file_location(f"quantbench_plugin_{file.stem}", file)
        if module_spec is None or module_spec.loader is None:
            raise QuantbenchError(f"{where}: cannot import {file}")
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise QuantbenchError(f"{where}: importing {file} failed ({type(exc).__name__}: {exc})") from None
        if modules is not None:
            modules[key] = module
    function = getattr(module, name, None)
    if not callable(function):
        raise QuantbenchError(f"{where}: {file} has no function {name!r}")
    return function  # type: ignore[no-any-return]


FILE_SPEC = re.compile(r"^(?P<path>.+?\.py):(?P<func>[A-Za-z_]\w*)$")
"""``path/to/file.py:function``."""


def load_function(
    spec: str, option: str, group: str, what: str, modules: dict[Path, ModuleType] | None = None
) -> tuple[Callable[..., Any], str]:
    """The function ``spec`` names: ``path/to/file.py:function``, or the entry point of that name in
    ``group``.

    Args:
        spec: as given on the command line.
        option: the option that gave it (``--metric``), for messages.
        group: the entry-point group (``quantbench.metrics``).
        what: what the function is, for messages (``metric``).
        modules: files imported already (see :func:`function_from_file`).

    Returns:
        (the function, its name).

    Raises:
        QuantbenchError: a missing file or function, or an unknown or broken entry point (one line
            naming ``option``).
    """
    text = spec.strip()
    match = FILE_SPEC.match(text)
    if match:
        where = f"{option} {text!r}"
        return function_from_file(Path(match["path"]), match["func"], where, modules), match["func"]
    if text.endswith(".py"):
        raise QuantbenchError(f"{option} {text!r}: name the function too, as path/to/file.py:function")
    return _entry_point(text, option, group, what), text


def _entry_point(name: str, option: str, group: str, what: str) -> Callable[..., Any]:
    """The function the installed entry point ``name`` of ``group`` refers to."""
    from importlib import metadata

    found = {entry.name: entry for entry in metadata.entry_points(group=group)}
    if name not in found:
        installed = f"installed: {', '.join(sorted(found))}" if found else "none is installed"
        raise QuantbenchError(
            f"{option} {name!r} is neither path/to/file.py:function nor an installed {what} "
            f"(entry point group {group}; {installed})"
        )
    try:
        function = found[name].load()
    except Exception as exc:
        raise QuantbenchError(
            f"{option} {name!r}: loading {found[name].value} failed ({type(exc).__name__}: {exc})"
        ) from None
    if not callable(function):
        raise QuantbenchError(f"{option} {name!r}: {found[name].value} is not a function")
    return function  # type: ignore[no-any-return]
