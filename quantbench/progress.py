"""How the long steps report progress: the protocol the command line draws bars for, and a silent
default for the Python API. A leaf module: it imports nothing of quantbench."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives progress of the steps that take time (the CLI draws bars)."""

    def start(self, step: str, total: int | None) -> None:
        """A step begins; ``total`` units are expected (None: unknown)."""

    def advance(self, count: int = 1) -> None:
        """``count`` units of the current step are done."""

    def finish(self) -> None:
        """The current step is over."""


class QuietProgress:
    """Progress that shows nothing (the Python API's default)."""

    def start(self, step: str, total: int | None) -> None:
        pass

    def advance(self, count: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass
