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
    Batch,
    Channels,
    Interpolation,
    Layout,
    MaxSide,
    Mean,
    MinSide,
    Model,
    Multiple,
    PadPosition,
    PadValue,
    PreprocessFunction,
    Preset,
    Resize,
    Seed,
    Size,
    Std,
    Threads,
    Workers,
    api_keywords,
    make_console,
    progress_bars,
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
    resize: Resize = None,
    pad_value: PadValue = None,
    pad_position: PadPosition = None,
    min_side: MinSide = None,
    max_side: MaxSide = None,
    multiple: Multiple = None,
    preprocess_function: PreprocessFunction = None,
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
    with progress_bars(console) as bars:
        result = run_calibration(progress=bars, **keywords)
    from quantbench.cli.summary import print_calibration_summary

    print_calibration_summary(console, result)


@app.command("methods")
def list_methods() -> None:
    """List the calibration methods available (built-ins and installed plugins)."""
    from quantbench.calibration.registry import available_methods

    for name, function in available_methods().items():
        doc = (function.__doc__ or "").strip().splitlines()
        print(f"{name:12s} {plain_text(doc[0]) if doc else ''}")


def plain_text(text: str) -> str:
    """A line of a docstring without its reStructuredText markup: ``:func:`f``` -> ``f``,
    ````percent```` -> ``percent``, ``*word*`` -> ``word``."""
    import re

    text = re.sub(r":[a-z:]+:`~?([^`]+)`", r"\1", text)  # roles
    text = re.sub(r"`{1,2}([^`]+)`{1,2}", r"\1", text)  # literals and references
    return re.sub(r"\*{1,2}(\S[^*]*?)\*{1,2}", r"\1", text)  # emphasis
