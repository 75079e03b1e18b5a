"""Backends by name: what ``--backend`` accepts, what ``auto`` picks, and which methods are a backend's
own calibrators (the one place that knows their prefixes).

Each entry loads its backend class lazily, so listing or checking backends imports no backend library.
Installed packages add backends through the ``quantbench.backends`` entry-point group: the entry's name
is the backend's name, its value ``module:Class`` (``auto`` never picks them).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from quantbench.errors import QuantbenchError

if TYPE_CHECKING:
    from quantbench.backends.base import Backend
    from quantbench.config import BackendSpec

AUTO = "auto"
ENTRY_POINT_GROUP = "quantbench.backends"


@dataclass(frozen=True)
class BackendEntry:
    """One registered backend.

    Attributes:
        name: what ``--backend`` takes.
        target: ``module:Class`` of its :class:`~quantbench.backends.base.Backend` subclass.
        available: whether it can run here, checked without building anything (for ``auto``).
        auto_rank: ``auto`` picks the available backend of the lowest rank; None: never picked.
        method_prefix: method specs starting with it name the backend's own calibrators.
        refusal: the advice given when such a method is asked of another backend.
    """

    name: str
    target: str
    available: Callable[[], bool]
    auto_rank: int | None = None
    method_prefix: str | None = None
    refusal: str = ""

    def load(self) -> type[Backend]:
        """Import the backend class."""
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)  # type: ignore[no-any-return]


_ENTRIES: dict[str, BackendEntry] = {}


def register(entry: BackendEntry) -> None:
    """Add (or replace) a backend under ``entry.name``."""
    _ENTRIES[entry.name] = entry


def unregister(name: str) -> None:
    """Remove a backend (tests)."""
    _ENTRIES.pop(name, None)


def _installed() -> None:
    """Register the backends of the entry-point group that are not registered yet."""
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name not in _ENTRIES and point.name != AUTO:
            register(BackendEntry(point.name, point.value, available=lambda: True))


def names() -> list[str]:
    """``auto`` and every registered backend, in registration order (installed ones last)."""
    _installed()
    return [AUTO, *_ENTRIES]


def entry(name: str) -> BackendEntry:
    """The entry of ``name`` (``auto`` resolved to what it picks here).

    Raises:
        QuantbenchError: an unknown name.
    """
    if name == AUTO:
        ranked = sorted((e for e in _ENTRIES.values() if e.auto_rank is not None), key=_rank)
        for candidate in ranked:
            if candidate.available():
                return candidate
        raise QuantbenchError("no backend can run here")
    if name not in _ENTRIES:
        _installed()
    if name not in _ENTRIES:
        raise QuantbenchError(f"--backend must be one of {', '.join(names())}, not {name!r}")
    return _ENTRIES[name]


def _rank(candidate: BackendEntry) -> int:
    return candidate.auto_rank if candidate.auto_rank is not None else 1 << 30


def create(spec: BackendSpec) -> Backend:
    """The backend ``spec.name`` asks for, made with ``spec``.

    Raises:
        QuantbenchError: an unknown name, or a backend that cannot run here.
    """
    return entry(spec.name).load()(spec)


def split_methods(methods: Sequence[str], backend: Backend) -> tuple[list[str], list[str]]:
    """(quantbench's methods, ``backend``'s own calibrators), each in the order given.

    Raises:
        QuantbenchError: a method naming the calibrators of another backend (one line, with the advice
            of that backend's entry), or a spec ``backend`` refuses.
    """
    own: list[str] = []
    native: list[str] = []
    for text in methods:
        owner = owner_of(text)
        if owner is None:
            own.append(text)
        elif owner.name == backend.name:
            native.append(text)
        else:
            name = text.split(":")[0].strip()
            raise QuantbenchError(f"method {name} {owner.refusal.format(backend=backend.name)}")
    backend.check_native_methods(native)
    return own, native


def owner_of(method: str) -> BackendEntry | None:
    """The backend whose own calibrator ``method`` names, or None for quantbench's methods."""
    text = method.strip().lower()
    for candidate in _ENTRIES.values():
        if candidate.method_prefix and text.startswith(candidate.method_prefix):
            return candidate
    return None
