"""The one exception type that quantbench raises for bad input."""


class QuantbenchError(Exception):
    """A problem with the user's input or environment, described in one line.

    The command line prints the message as ``error: <message>`` and exits with
    status 2; no traceback is shown. The message names the file or tensor at
    fault and, where there is one, what to do about it.
    """
