"""The ``quantbench`` command line: a thin layer over the Python API.

Heavy libraries (numpy, onnxruntime, OpenCV, matplotlib) are imported inside the
commands, so ``quantbench --help`` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from quantbench import __version__
from quantbench.errors import QuantbenchError

app = typer.Typer(
    help="INT8 post-training quantization workbench for NVIDIA TensorRT.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ranges_app = typer.Typer(help="Show, convert and compare range tables.", no_args_is_help=True)
app.add_typer(ranges_app, name="ranges")

DATA = "Data"
PREPROCESS = "Preprocessing (defaults: the preset, then the model's static input shape)"
CALIBRATION = "Calibration"
OUTPUT = "Output"


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(part) for part in _split(text))
    except ValueError:
        raise QuantbenchError(f"{option} takes comma-separated numbers, e.g. 0.485,0.456,0.406") from None


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts if p.strip()]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise QuantbenchError(f"--size takes SIZE or HEIGHTxWIDTH, e.g. 224 or 224x320; got {text!r}")
    return (values[0], values[-1])


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(highlight=False)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        print(f"quantbench {__version__}")
        raise typer.Exit()


Model = Annotated[Path, typer.Option(help="FP32 ONNX model.", rich_help_panel=DATA)]
Seed = Annotated[int, typer.Option(help="Picks and orders the samples.", rich_help_panel=DATA)]
Preset = Annotated[str, typer.Option(help="imagenet | inception | yolo | raw.", rich_help_panel=PREPROCESS)]
Size = Annotated[str | None, typer.Option(help="SIZE or HEIGHTxWIDTH.", rich_help_panel=PREPROCESS)]
Mean = Annotated[
    str | None, typer.Option(help="Per-channel mean, e.g. 0.485,0.456,0.406.", rich_help_panel=PREPROCESS)
]
Std = Annotated[str | None, typer.Option(help="Per-channel std.", rich_help_panel=PREPROCESS)]
Channels = Annotated[str | None, typer.Option(help="RGB | BGR.", rich_help_panel=PREPROCESS)]
Layout = Annotated[str | None, typer.Option(help="NCHW | NHWC.", rich_help_panel=PREPROCESS)]
Interpolation = Annotated[
    str | None, typer.Option(help="linear | nearest | area | cubic | lanczos.", rich_help_panel=PREPROCESS)
]
Batch = Annotated[
    int | None,
    typer.Option(
        help="Batch for a dynamic batch dim (default: 128 MiB of activations); ranges stay the same.",
        rich_help_panel=CALIBRATION,
    ),
]
Workers = Annotated[int, typer.Option(help="Image decoding threads.", rich_help_panel=CALIBRATION)]
Threads = Annotated[
    int, typer.Option(help="ONNX Runtime threads (0: all cores).", rich_help_panel=CALIBRATION)
]


def _preprocess(
    size: str | None,
    mean: str | None,
    std: str | None,
    channels: str | None,
    layout: str | None,
    interpolation: str | None,
) -> dict[str, Any]:
    given = {
        "size": _size(size),
        "mean": _floats(mean, "--mean"),
        "std": _floats(std, "--std"),
        "channels": channels,
        "layout": layout,
        "interpolation": interpolation,
    }
    return {k: v for k, v in given.items() if v is not None}


class _Bars:
    """Progress bars for the steps of a command (see ``quantbench.pipeline.Progress``)."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description:18s}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task: Any = None
        self._started = False

    def start(self, step: str, total: int | None) -> None:
        self.finish()
        if not self._started:
            self._progress.start()
            self._started = True
        self._task = self._progress.add_task(step, total=total, rate="")

    def advance(self, count: int = 1) -> None:
        if self._task is None:
            return
        self._progress.advance(self._task, count)
        task = next(t for t in self._progress.tasks if t.id == self._task)
        unit = "images/s" if task.description in ("calibrating", "collecting", "evaluating") else "/s"
        self._progress.update(self._task, rate=f"{task.speed:.1f} {unit}" if task.speed else "")

    def finish(self) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None

    def close(self) -> None:
        self.finish()
        self._progress.stop()


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
    from quantbench.calibration import calibrate as run_calibration

    console = _console()
    bars = _Bars(console)
    try:
        result = run_calibration(
            model,
            images,
            n=n,
            seed=seed,
            methods=_split(method),
            batch=batch,
            preset=preset,
            preprocess=_preprocess(size, mean, std, channels, layout, interpolation),
            out=out,
            force=force,
            workers=workers,
            threads=threads,
            on_start=lambda total: bars.start("collecting", total),
            on_batch=bars.advance,
        )
    finally:
        bars.close()
    from quantbench.summary import print_calibration_summary

    print_calibration_summary(console, result)


EVALUATION = "Evaluation"
VARIANTS = "Variants"


@app.command("run")
def run_command(
    model: Model,
    images: Annotated[
        Path | None,
        typer.Option(help="Calibration images (held-out images come from here too).", rich_help_panel=DATA),
    ] = None,
    n: Annotated[int, typer.Option(help="Calibration images.", rich_help_panel=DATA)] = 100,
    seed: Seed = 0,
    eval_images: Annotated[
        Path | None,
        typer.Option(help="Held-out images (default: --images not used to calibrate).", rich_help_panel=DATA),
    ] = None,
    eval_n: Annotated[
        int | None, typer.Option(help="Held-out images (default: all, at most 500).", rich_help_panel=DATA)
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="File of image name -> class index, for top-1/top-5 accuracy.", rich_help_panel=DATA
        ),
    ] = None,
    preset: Preset = "imagenet",
    size: Size = None,
    mean: Mean = None,
    std: Std = None,
    channels: Channels = None,
    layout: Layout = None,
    interpolation: Interpolation = None,
    method: Annotated[
        str,
        typer.Option(help="Calibration methods, one INT8 variant each.", rich_help_panel=CALIBRATION),
    ] = "entropy,minmax,percentile",
    ranges: Annotated[
        Path | None,
        typer.Option(
            help="Range file (.cache, name:amax .txt, .json) instead of calibrating.",
            rich_help_panel=CALIBRATION,
        ),
    ] = None,
    batch: Batch = None,
    workers: Workers = 2,
    precisions: Annotated[
        str, typer.Option(help="Comma-separated: fp32, fp16, int8.", rich_help_panel=VARIANTS)
    ] = "fp32,fp16,int8",
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            help="Keep nodes in float: NAME, OPTYPE or REGEX (repeatable).", rich_help_panel=VARIANTS
        ),
    ] = None,
    backend: Annotated[
        str, typer.Option(help="auto | onnxruntime | tensorrt.", rich_help_panel=VARIANTS)
    ] = "auto",
    threads: Threads = 0,
    bench_batch: Annotated[
        str, typer.Option(help="Batch sizes to time, e.g. 1,8.", rich_help_panel=EVALUATION)
    ] = "1",
    bench_runs: Annotated[int, typer.Option(help="Fewest timed runs.", rich_help_panel=EVALUATION)] = 50,
    bench_seconds: Annotated[
        float, typer.Option(help="Fewest seconds of timed runs.", rich_help_panel=EVALUATION)
    ] = 2.0,
    out: Annotated[
        Path, typer.Option(help="Folder for the run folder <model>-<timestamp>.", rich_help_panel=OUTPUT)
    ] = Path("reports"),
) -> None:
    """Build FP32 / FP16 / INT8 variants and compare them on held-out images."""
    from quantbench.pipeline import run

    try:
        sizes = [int(part) for part in _split(bench_batch)]
    except ValueError:
        raise QuantbenchError(
            f"--bench-batch takes comma-separated sizes, e.g. 1,8; got {bench_batch!r}"
        ) from None
    console = _console()
    bars = _Bars(console)
    try:
        result = run(
            model,
            images,
            n=n,
            seed=seed,
            eval_images=eval_images,
            eval_n=eval_n,
            labels=labels,
            precisions=_split(precisions),
            methods=_split(method),
            ranges=ranges,
            exclude=exclude or [],
            backend=backend,
            out=out,
            batch=batch,
            bench_batch=sizes,
            bench_runs=bench_runs,
            bench_seconds=bench_seconds,
            preset=preset,
            preprocess=_preprocess(size, mean, std, channels, layout, interpolation),
            threads=threads,
            workers=workers,
            progress=bars,
            command=["quantbench", *sys.argv[1:]],
        )
    finally:
        bars.close()
    from quantbench.summary import print_run_summary

    print_run_summary(console, result)


@app.command("methods")
def list_methods() -> None:
    """List the calibration methods available (built-ins and installed plugins)."""
    from quantbench.calibrators.registry import available_methods

    for name, function in available_methods().items():
        doc = (function.__doc__ or "").strip().splitlines()
        print(f"{name:12s} {doc[0] if doc else ''}")


@ranges_app.command("show")
def ranges_show(
    file: Annotated[Path, typer.Argument(help="A .cache, .txt or .json range table.")],
    limit: Annotated[int, typer.Option(help="Rows to print (0: all).")] = 0,
) -> None:
    """Print a range table: metadata, then tensor, amax and int8 scale."""
    from quantbench.ranges import read_ranges
    from quantbench.summary import print_ranges

    print_ranges(_console(), read_ranges(file), limit)


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
    from quantbench.ranges import diff_ranges, read_ranges
    from quantbench.summary import print_diff

    print_diff(_console(), diff_ranges(read_ranges(a), read_ranges(b)), str(a), str(b), limit)


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
