"""``quantbench sensitivity``, and the mixed-precision options ``quantbench run`` shares."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from quantbench.cli import app
from quantbench.cli.options import (
    CALIBRATION,
    DATA,
    OUTPUT,
    Batch,
    CalibN,
    Channels,
    EvalImages,
    ForceRanges,
    Images,
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
    RangesFile,
    Resize,
    RunFolder,
    Seed,
    Size,
    Std,
    TaskOption,
    TaskSettingOption,
    Threads,
    Workers,
    api_keywords,
    make_console,
    progress_bars,
)

if TYPE_CHECKING:
    from quantbench.flows.sensitivity import SensitivityRun

MIXED = "Mixed precision"
SENSITIVITY = "Sensitivity"

TargetAgreement = Annotated[
    float | None,
    typer.Option(
        help="Keep the fewest most harmful nodes in float for this top-1 agreement with FP32, in % "
        "(e.g. 99): variant int8-<method>-mixed.",
        rich_help_panel=MIXED,
    ),
]
TargetRelL2 = Annotated[
    float | None,
    typer.Option(
        help="Keep the fewest most harmful nodes in float for at most this relative L2 error of the "
        "output (e.g. 0.05); with --target-agreement, both must hold.",
        rich_help_panel=MIXED,
    ),
]
TargetHeadline = Annotated[
    str | None,
    typer.Option(
        "--target",
        help="Keep the fewest most harmful nodes in float for METRIC=VALUE on the main output, METRIC being "
        "its headline (e.g. det_f1=0.9, seq_agreement=0.8; fractions): variant int8-<method>-mixed.",
        rich_help_panel=MIXED,
    ),
]
SensitivityN = Annotated[
    int, typer.Option(help="Held-out images the sensitivity ranking runs on.", rich_help_panel=MIXED)
]


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, float) else "-"


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, float) else "-" if value is None else str(value)


def print_sensitivity(console: Any, result: SensitivityRun, top: int = 20) -> None:
    """Per-tensor fidelity in graph order, the ranked nodes, and the ``--exclude`` options for the first."""
    from rich.table import Table

    from quantbench.cli.summary import counted
    from quantbench.search.mixed_precision import replay_arguments

    res = result.results
    cost = res["cost"]
    console.print(
        f"[bold]analysed[/bold] {counted(len(res['ranking']), 'quantized node')} of {res['model']['name']} "
        f"with the {res['method']} ranges on {counted(res['data']['samples'], 'held-out sample')} from "
        f"{res['data']['root']} "
        f"(output {res['output']!r}): {cost['sensitivity_models']} models built and run, "
        f"{cost['seconds']['total']:.1f} s",
        highlight=False,
    )
    if result.tensors:
        table = Table(title="per-tensor fidelity of the INT8 model (graph order)", box=None, pad_edge=False)
        for column in ("tensor", "producer", "amax", "SNR dB", "rel. L2", "own rel. L2"):
            table.add_column(column, justify="left" if column in ("tensor", "producer") else "right")
        for row in result.tensors:
            table.add_row(
                row.tensor,
                row.producer,
                f"{row.amax:.4g}",
                f"{row.snr_db:.1f}",
                f"{row.rel_l2:.4f}",
                f"{row.own_rel_l2:.4f}",
            )
        console.print(table)
        console.print(
            "rel. L2: what the consumers read vs FP32, everything upstream included; own: quantizing the "
            "FP32 tensor alone"
        )
    table = Table(title="nodes, most harmful first", box=None, pad_edge=False)
    for column in ("#", "node", "op", "only: rel. L2", "only: top-1", "without: rel. L2", "without: top-1"):
        table.add_column(column, justify="left" if column in ("node", "op") else "right")
    rows = res["ranking"] if top <= 0 else res["ranking"][:top]
    for i, row in enumerate(rows, start=1):
        table.add_row(
            str(i),
            row["node"],
            row["op_type"],
            _num(row["rel_l2"], ".4f"),
            _pct(row["top1_agreement"]),
            _num(row["without_rel_l2"], ".4f"),
            _pct(row["without_top1_agreement"]),
        )
    console.print(table)
    if len(rows) < len(res["ranking"]):
        console.print(f"... {len(res['ranking']) - len(rows)} more (--top 0 shows all)")
    console.print(
        "only: the output's error with only that node quantized; without: with every node but that one"
    )
    first = [row["node"] for row in res["ranking"][:3]]
    console.print(
        f"keep the {len(first)} most harmful in float: {replay_arguments([*res['exclude'], *first])}",
        markup=False,
        highlight=False,
    )
    console.print(f"results in {result.run_dir / 'sensitivity.json'}", markup=False, highlight=False)


@app.command("sensitivity")
def sensitivity_command(
    model: Model,
    images: Images = None,
    n: CalibN = 100,
    seed: Seed = 0,
    eval_images: EvalImages = None,
    eval_n: Annotated[
        int, typer.Option(help="Held-out images analysed (every model runs on all).", rich_help_panel=DATA)
    ] = 32,
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
        str, typer.Option(help="One calibration method.", rich_help_panel=CALIBRATION)
    ] = "entropy",
    ranges: RangesFile = None,
    force_ranges: ForceRanges = False,
    batch: Batch = None,
    workers: Workers = 2,
    threads: Threads = 0,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            help="Keep nodes in float and leave them out: NAME, OPTYPE or REGEX (repeatable).",
            rich_help_panel=SENSITIVITY,
        ),
    ] = None,
    view: Annotated[
        str,
        typer.Option(
            help="only (only that node quantized), without (every node but that one), or both.",
            rich_help_panel=SENSITIVITY,
        ),
    ] = "only,without",
    tensors: Annotated[
        bool, typer.Option(help="Also measure per-tensor fidelity.", rich_help_panel=SENSITIVITY)
    ] = True,
    task: TaskOption = None,
    task_option: TaskSettingOption = None,
    top: Annotated[int, typer.Option(help="Ranked rows printed (0: all).", rich_help_panel=OUTPUT)] = 20,
    out: RunFolder = Path("reports"),
) -> None:
    """Find the nodes that hurt INT8: per-tensor fidelity and per-node sensitivity, ranked."""
    keywords = api_keywords(locals())  # first: the options only
    from quantbench.flows.sensitivity import run_sensitivity

    del keywords["top"]
    console = make_console()
    with progress_bars(console) as bars:
        result = run_sensitivity(progress=bars, **keywords)
    print_sensitivity(console, result, top)
