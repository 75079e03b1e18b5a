"""What the commands share: option types with their help panels, parsers for list-like options,
the console and the progress bars."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from quantbench.errors import Interrupted, QuantbenchError

DATA = "Data"
PREPROCESS = "Preprocessing (defaults: the preset, then the model's static input shape)"
CALIBRATION = "Calibration"
EVALUATION = "Evaluation"
VARIANTS = "Variants"
OUTPUT = "Output"


def split_list(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(part) for part in split_list(text))
    except ValueError:
        raise QuantbenchError(f"{option} takes comma-separated numbers, e.g. 0.485,0.456,0.406") from None


def parse_size(text: str | None) -> tuple[int, int] | None:
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


WIDE = 100_000
"""The width of output that does not go to a terminal: nothing is wrapped, so each line reads whole."""


def make_console():  # type: ignore[no-untyped-def]
    """The console of a command. On a terminal, text wraps at its width; piped or redirected, nothing
    wraps (a path in the last line is whole for ``tail -1``)."""
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, soft_wrap=True, width=WIDE)
    return console


TaskOption = Annotated[
    list[str] | None,
    typer.Option(
        help="What the outputs hold: KIND for every output or OUTPUT=KIND (repeatable); KIND is classes, "
        "detection, dense, sequence, generic or auto (detected, the default).",
        rich_help_panel=EVALUATION,
    ),
]
TaskSettingOption = Annotated[
    list[str] | None,
    typer.Option(
        "--task-option",
        help="A setting of the metrics, KEY=VALUE (repeatable): detection confidence=0.25, nms-iou=0.45, "
        "nms=per-class|agnostic, match-iou=0.5, max-detections=300; probability maps mask-threshold=0.5, "
        "min-region=4; sequences ctc-blank=0, ctc-trim=CLASS[,CLASS] (dropped at both ends); "
        "headline=METRIC (e.g. det_map50, region_f1, seq_edit_distance).",
        rich_help_panel=EVALUATION,
    ),
]
Model = Annotated[Path, typer.Option(help="FP32 ONNX model.", rich_help_panel=DATA)]
Seed = Annotated[int, typer.Option(help="Picks and orders the samples.", rich_help_panel=DATA)]
Preset = Annotated[
    str,
    typer.Option(
        help="imagenet | inception | yolo | ppocr-det | ppocr-rec | raw.", rich_help_panel=PREPROCESS
    ),
]
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
PreprocessFunction = Annotated[
    str | None,
    typer.Option(
        "--preprocess",
        help="Your own preprocessing instead of the options: path/to/file.py:function or an installed "
        "quantbench.preprocess entry point; function(image BGR uint8 [H, W, 3], path) -> the input array "
        "(no batch axis) or a dict of them by input name.",
        rich_help_panel=PREPROCESS,
    ),
]
Resize = Annotated[
    str | None,
    typer.Option(
        help="shorter (cover, centre crop) | stretch | letterbox | keep-ratio (--min-side/--max-side, "
        "sides to --multiple) | fixed-height (height of --size, at least its width, padded right).",
        rich_help_panel=PREPROCESS,
    ),
]
PadValue = Annotated[
    float | None, typer.Option(help="Padding, 0..255 before normalization.", rich_help_panel=PREPROCESS)
]
PadPosition = Annotated[
    str | None, typer.Option(help="letterbox: centre | top-left.", rich_help_panel=PREPROCESS)
]
MinSide = Annotated[
    int | None,
    typer.Option(help="keep-ratio: scale the shorter side up to this.", rich_help_panel=PREPROCESS),
]
MaxSide = Annotated[
    int | None,
    typer.Option(help="keep-ratio: scale the longer side down to this.", rich_help_panel=PREPROCESS),
]
Multiple = Annotated[
    int | None,
    typer.Option(help="keep-ratio: round sides to a multiple of this.", rich_help_panel=PREPROCESS),
]
Batch = Annotated[
    int | None,
    typer.Option(
        help="Batch for a dynamic batch dim: calibration (default: 128 MiB of activations), bias correction "
        "(default 16) and evaluation (default 8); ranges stay the same.",
        rich_help_panel=CALIBRATION,
    ),
]
Workers = Annotated[int, typer.Option(help="Image decoding threads.", rich_help_panel=CALIBRATION)]
Threads = Annotated[
    int, typer.Option(help="ONNX Runtime threads (0: all cores).", rich_help_panel=CALIBRATION)
]


CalibN = Annotated[int, typer.Option(help="Calibration images.", rich_help_panel=DATA)]
Images = Annotated[
    Path | None,
    typer.Option(help="Calibration images (held-out images come from here too).", rich_help_panel=DATA),
]
EvalImages = Annotated[
    Path | None,
    typer.Option(help="Held-out images (default: --images not used to calibrate).", rich_help_panel=DATA),
]
RangesFile = Annotated[
    Path | None,
    typer.Option(
        help="Range file (.cache, name:amax .txt, .json) instead of calibrating.",
        rich_help_panel=CALIBRATION,
    ),
]
ForceRanges = Annotated[
    bool,
    typer.Option(
        "--force-ranges",
        help="Use --ranges even where its file says it was made for another model or preprocessing.",
        rich_help_panel=CALIBRATION,
    ),
]
RunFolder = Annotated[
    Path, typer.Option(help="Folder for the run folder <model>-<timestamp>.", rich_help_panel=OUTPUT)
]


def api_keywords(options: dict[str, Any]) -> dict[str, Any]:
    """A command's options (its parameters by name) as the keywords of the Python API
    (:mod:`quantbench.config`): comma-separated lists split, numbers and sizes parsed, ``method`` as
    ``methods``, ``view`` as ``views`` (``both``: only and without); the command line recorded as
    ``command``.

    Raises:
        QuantbenchError: a list or size option that does not parse (one line naming it).
    """
    keywords = dict(options)
    keywords["size"] = parse_size(options.get("size"))
    keywords["mean"] = parse_floats(options.get("mean"), "--mean")
    keywords["std"] = parse_floats(options.get("std"), "--std")
    if "method" in keywords:
        keywords["methods"] = split_list(keywords.pop("method"))
    if "view" in keywords:
        views = split_list(keywords.pop("view"))
        keywords["views"] = ["only", "without"] if views == ["both"] else views
    if "precisions" in keywords:
        keywords["precisions"] = split_list(keywords["precisions"])
    for name in ("exclude", "plugins", "task", "task_option", "metric"):
        if name in keywords:
            keywords[name] = keywords[name] or []
    if "bench_batch" in keywords:
        text = keywords["bench_batch"]
        try:
            keywords["bench_batch"] = [int(part) for part in split_list(text)]
        except ValueError:
            raise QuantbenchError(
                f"--bench-batch takes comma-separated sizes, e.g. 1,8; got {text!r}"
            ) from None
    keywords["command"] = ["quantbench", *sys.argv[1:]]
    return keywords


class Bars:
    """Progress bars for the steps of a command (see ``quantbench.progress.Progress``), drawn only on an
    interactive terminal. :attr:`step` is the last step started (still set when it ends: a step ends in a
    ``finally`` as an interrupt passes), for the message of an interrupt."""

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
            disable=not console.is_interactive,  # else stopping prints an empty line
        )
        self._task: Any = None
        self._started = False
        self.step: str | None = None

    def start(self, step: str, total: int | None) -> None:
        self.finish()
        self.step = step
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
        if self._started:
            self._progress.stop()
            self._started = False


@contextlib.contextmanager
def progress_bars(console: Any) -> Iterator[Bars]:
    """:class:`Bars` on ``console`` for the body, closed after it; an interrupt of the body learns the
    step it stopped (see :class:`quantbench.errors.Interrupted`)."""
    bars = Bars(console)
    try:
        yield bars
    except Interrupted as exc:
        exc.step = exc.step or bars.step
        raise
    finally:
        bars.close()
