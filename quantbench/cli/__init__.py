"""The ``quantbench`` command line: a thin layer over the Python API.

Each command lives in its own module of this package and registers itself on :data:`app`. Heavy
libraries (numpy, onnxruntime, OpenCV, matplotlib) are imported inside the commands, so
``quantbench --help`` stays instant.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from quantbench import __version__
from quantbench.errors import QuantbenchError

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
    """Entry point: run the app, turning QuantbenchError into one line and exit status 2."""
    try:
        app()
    except QuantbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; files are written atomically, so none was left half-written", file=sys.stderr)
        sys.exit(130)
