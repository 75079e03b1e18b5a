"""Functions read from a Python file named on the command line (``path/to/file.py:function``), as
calibration methods and metrics take them. A leaf module."""

from __future__ import annotations

import importlib.util
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
