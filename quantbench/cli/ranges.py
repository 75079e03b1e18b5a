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
    from quantbench.fileio import make_folders, remove_empty_folders
    from quantbench.ranges import read_ranges, write_ranges
    from quantbench.ranges.formats import format_named, registered

    fmt = format_named(to)
    if fmt is None:
        names = [f.name for f in registered()]
        raise QuantbenchError(f"--to must be {', '.join(names[:-1])} or {names[-1]}, not {to!r}")
    table = read_ranges(file)
    if trt_version is not None:
        table.trt_version = trt_version
    if algorithm is not None:
        from quantbench.ranges import KNOWN_ALGORITHMS

        if algorithm not in KNOWN_ALGORITHMS:
            raise QuantbenchError(
                f"--algorithm must be one TensorRT knows ({', '.join(KNOWN_ALGORITHMS)}), not {algorithm!r}: "
                "TensorRT ignores a cache whose header names another"
            )
        table.trt_algorithm = algorithm
    destination = out or file.with_suffix(fmt.suffixes[0])
    if destination.resolve() == file.resolve():
        raise QuantbenchError(f"{file} is already a {fmt.suffixes[0]} file; pass --out to write elsewhere")
    if destination.is_dir():
        example = destination / f"ranges{fmt.suffixes[0]}"
        raise QuantbenchError(f"--out {destination} is a folder; give the file to write, e.g. {example}")
    created = make_folders(destination.parent, "--out")
    try:
        write_ranges(table, destination, fmt.name)
    except BaseException:
        remove_empty_folders(created)
        raise
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
