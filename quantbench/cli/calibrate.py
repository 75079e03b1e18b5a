"""``quantbench calibrate`` and ``quantbench methods``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quantbench.cli import app
from quantbench.cli.options import (
    CALIBRATION,
    DATA,
    OUTPUT,
    Bars,
    Batch,
    Channels,
    Interpolation,
    Layout,
    Mean,
    Model,
    Preset,
    Seed,
    Size,
    Std,
    Threads,
    Workers,
    api_keywords,
    make_console,
)


@app.command()
def calibrate(
    model: Model,
    images: Annotated[
        Path, typer.Option(help="Folder of images, or of .npy/.npz files.", rich_help_panel=DATA)
    ],
    n: Annotated[
        int | None, typer.Option(help="Number of samples (default: all).", rich_help_panel=DATA)
    ] = None,
    seed: Seed = 0,
    preset: Preset = "imagenet",
    size: Size = None,
    mean: Mean = None,
    std: Std = None,
    channels: Channels = None,
    layout: Layout = None,
    interpolation: Interpolation = None,
    method: Annotated[
        str,
        typer.Option(
            help="Comma-separated: entropy, minmax, percentile[:99.99], mse, a plugin, or file.py:function.",
            rich_help_panel=CALIBRATION,
        ),
    ] = "entropy",
    batch: Batch = None,
    workers: Workers = 2,
    threads: Threads = 0,
    force: Annotated[
        bool,
        typer.Option(help="Recompute histograms even if stored ones match.", rich_help_panel=CALIBRATION),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder (default: reports/<model name>).", rich_help_panel=OUTPUT),
    ] = None,
) -> None:
    """Calibrate activation ranges from a folder of images and write TensorRT-format tables."""
    keywords = api_keywords(locals())  # first: the options only
    from quantbench.flows.calibrate import calibrate as run_calibration

    del keywords["command"]  # calibrate records no command line
    console = make_console()
    bars = Bars(console)
    try:
        result = run_calibration(progress=bars, **keywords)
    finally:
        bars.close()
    from quantbench.cli.summary import print_calibration_summary

    print_calibration_summary(console, result)


@app.command("methods")
def list_methods() -> None:
    """List the calibration methods available (built-ins and installed plugins)."""
    from quantbench.calibration.registry import available_methods

    for name, function in available_methods().items():
        doc = (function.__doc__ or "").strip().splitlines()
        print(f"{name:12s} {doc[0] if doc else ''}")
