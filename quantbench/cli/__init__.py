"""The ``quantbench`` command line: a thin layer over the Python API.

Each command lives in its own module of this package and registers itself on :data:`app`. Heavy
libraries (numpy, onnxruntime, OpenCV, matplotlib) are imported inside the commands, so
``quantbench --help`` stays instant.
"""

from __future__ import annotations

import signal
import sys
from typing import Annotated, Any, NoReturn

import typer
import typer.main

from quantbench import __version__
from quantbench.errors import Interrupted, QuantbenchError, first_line

app = typer.Typer(
    help="INT8 post-training quantization workbench for NVIDIA TensorRT.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        print(f"quantbench {__version__}")
        raise typer.Exit()


from quantbench.cli import calibrate, ranges, report, run, sensitivity  # noqa: E402,F401  (each registers its commands)


def main() -> None:
    """Entry point: run the app. Every error is one line on stderr, ``error: ...``, naming the file or
    option and what to do: QuantbenchError and a bad command line exit with status 2, a file system
    error with 1; Ctrl-C says what was interrupted and what was kept, and exits with 130."""
    command = typer.main.get_command(app)
    hide_flag_types(command)
    previous = signal.signal(signal.SIGINT, _interrupt)
    try:
        code = command.main(standalone_mode=False)
    except QuantbenchError as exc:
        _fail(str(exc), 2)
    except typer.TyperException as exc:  # the command line itself: an unknown option, a bad value...
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help was printed already
            sys.exit(exc.exit_code)
        _fail(usage_message(exc), exc.exit_code)
    except typer.Abort:
        _fail("aborted", 1)
    except Interrupted as exc:
        _fail(interrupt_message(exc), 130)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{where}{exc.strerror or first_line(exc)}; check the path and its permissions", 1)
    finally:
        signal.signal(signal.SIGINT, previous)
    sys.exit(code if isinstance(code, int) else 0)


def _interrupt(signum: int, frame: Any) -> None:
    """SIGINT handler of the command line: raise :class:`Interrupted`, which the parser's own handling of
    ``KeyboardInterrupt`` (a silent exit) does not catch."""
    raise Interrupted()


def _fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with ``code``."""
    line = " ".join(part.strip() for part in message.strip().splitlines())
    print(f"error: {line}", file=sys.stderr)
    sys.exit(code)


def usage_message(exc: typer.TyperException) -> str:
    """A command line error (an unknown option, a missing or bad value) as one line that points to the
    command's help."""
    text = exc.format_message().strip().rstrip(".")
    text = text[:1].lower() + text[1:]
    context = getattr(exc, "ctx", None)
    command = context.command_path if context is not None else "quantbench"
    return f"{text}; see '{command} --help'"


def interrupt_message(exc: Interrupted) -> str:
    """What an interrupt stopped and what it left on disk, in one line."""
    during = f" while {exc.step}" if exc.step else ""
    kept = "; kept " + " and ".join(exc.kept) if exc.kept else "; nothing was left half-written"
    return f"interrupted{during}{kept}"


def hide_flag_types(command: Any) -> None:
    """Drop the ``<bool>`` type the help shows beside flags (``--tensors/--no-tensors``, ``--help``), in
    ``command`` and its subcommands."""
    help_option = command.get_help_option(typer.Context(command))
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        hide_flag_types(sub)
