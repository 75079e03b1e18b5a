"""The one exception type that quantbench raises for bad input, the interrupt of the command line, and
the first line of an exception's message for one-line errors."""


class QuantbenchError(Exception):
    """A problem with the user's input or environment, described in one line.

    The command line prints the message as ``error: <message>`` and exits with
    status 2; no traceback is shown. The message names the file or tensor at
    fault and, where there is one, what to do about it.
    """


class Interrupted(BaseException):
    """The command line was interrupted (Ctrl-C): raised from its SIGINT handler instead of
    ``KeyboardInterrupt``, so that it reaches the command line's entry point, which says what was
    interrupted and what was kept, and exits with status 130.

    Attributes:
        step: the step under way when the interrupt came (None: between steps).
        kept: what was left on disk, one phrase each (e.g. the unfinished run folder).
    """

    def __init__(self) -> None:
        super().__init__("interrupted")
        self.step: str | None = None
        self.kept: list[str] = []


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or the exception's type where the message is empty
    (``str(error)`` of ``Exception()`` is ``""``)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
