"""``quantbench report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quantbench.cli import app
from quantbench.cli.options import make_console


@app.command("report")
def report_command(
    run_dir: Annotated[
        Path,
        typer.Argument(help="A run folder of 'quantbench run' (or its results.json).", show_default=False),
    ],
) -> None:
    """Render report.html of a run again from its results.json alone (no model or images needed)."""
    from quantbench.report import write_report

    path = write_report(run_dir)
    make_console().print(f"report: {path}", markup=False)
