"""``quantbench ranges show | convert | diff``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quantbench.cli import app
from quantbench.cli.options import make_console
from quantbench.errors import QuantbenchError

ranges_app = typer.Typer(help="Show, convert and compare range tables.", no_args_is_help=True)
app.add_typer(ranges_app, name="ranges")


@ranges_app.command("show")
def ranges_show(
    file: Annotated[Path, typer.Argument(help="A .cache, .txt or .json range table.")],
    limit: Annotated[int, typer.Option(help="Rows to print (0: all).")] = 0,
) -> None:
    """Print a range table: metadata, then tensor, amax and int8 scale."""
    from quantbench.cli.summary import print_ranges
    from quantbench.ranges import read_ranges

    print_ranges(make_console(), read_ranges(file), limit)


@ranges_app.command("convert")
def ranges_convert(
    file: Annotated[Path, typer.Argument(help="A .cache, .txt or .json range table.")],
    to: Annotated[str, typer.Option(help="cache | txt | json.")],
    out: Annotated[
        Path | None, typer.Option(help="Destination (default: FILE with the new extension).")
    ] = None,
    trt_version: Annotated[
        int | None, typer.Option(help="TensorRT version in cache headers, e.g. 100300 for 10.3.0.")
    ] = None,
    algorithm: Annotated[str | None, typer.Option(help="Calibration algorithm in cache headers.")] = None,
) -> None:
    """Convert a range table to another format."""
    from quantbench.ranges import read_ranges, write_ranges

    if to not in ("cache", "txt", "json"):
        raise QuantbenchError(f"--to must be cache, txt or json, not {to!r}")
    table = read_ranges(file)
    if trt_version is not None:
        table.trt_version = trt_version
    if algorithm is not None:
        table.trt_algorithm = algorithm
    destination = out or file.with_suffix(f".{to}")
    if destination.resolve() == file.resolve():
        raise QuantbenchError(f"{file} is already a .{to} file; pass --out to write elsewhere")
    write_ranges(table, destination, to)  # type: ignore[arg-type]
    print(f"wrote {destination} ({len(table.amax)} tensors)")


@ranges_app.command("diff")
def ranges_diff(
    a: Annotated[Path, typer.Argument(help="First range table.")],
    b: Annotated[Path, typer.Argument(help="Second range table.")],
    limit: Annotated[int, typer.Option(help="Rows to print, largest disagreement first (0: all).")] = 0,
) -> None:
    """Compare two range tables tensor by tensor (ratio b/a)."""
    from quantbench.cli.summary import print_diff
    from quantbench.ranges import diff_ranges, read_ranges

    print_diff(make_console(), diff_ranges(read_ranges(a), read_ranges(b)), str(a), str(b), limit)
