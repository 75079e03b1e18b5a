"""``quantbench run``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quantbench.cli import app
from quantbench.cli.options import (
    CALIBRATION,
    DATA,
    EVALUATION,
    VARIANTS,
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
from quantbench.cli.sensitivity import SensitivityN, TargetAgreement, TargetHeadline, TargetRelL2

EvalNOption = Annotated[
    int | None, typer.Option(help="Held-out images (default: all, at most 500).", rich_help_panel=DATA)
]
LabelsOption = Annotated[
    Path | None,
    typer.Option(help="File of image name -> class index, for top-1/top-5 accuracy.", rich_help_panel=DATA),
]
MethodOption = Annotated[
    str,
    typer.Option(
        help="Calibration methods, one INT8 variant each; with --backend tensorrt on TensorRT 10 also "
        "TensorRT's calibrators trt-entropy2, trt-minmax, trt-entropy, trt-legacy[:QUANTILE:CUTOFF].",
        rich_help_panel=CALIBRATION,
    ),
]
PrecisionsOption = Annotated[
    str, typer.Option(help="Comma-separated: fp32, fp16, int8.", rich_help_panel=VARIANTS)
]
ExcludeOption = Annotated[
    list[str] | None,
    typer.Option(help="Keep nodes in float: NAME, OPTYPE or REGEX (repeatable).", rich_help_panel=VARIANTS),
]
BiasCorrectionOption = Annotated[
    bool,
    typer.Option(
        help="Correct INT8 Conv/Gemm biases so their per-channel output means match FP32's.",
        rich_help_panel=VARIANTS,
    ),
]
BiasCorrectionImagesOption = Annotated[
    int,
    typer.Option(help="First calibration images the bias correction runs on.", rich_help_panel=VARIANTS),
]
WeightRoundingOption = Annotated[
    str,
    typer.Option(
        help="INT8 weight codes: nearest, or adaptive (those that minimise each layer's output error on "
        "the bias-correction images).",
        rich_help_panel=VARIANTS,
    ),
]
CpuFlavourOption = Annotated[
    str,
    typer.Option(
        help="The model timed on the CPU for INT8: exact (the judged model's quantized values) or fast "
        "(more tensors quantized, ONNX Runtime's integer kernels throughout; its extra roundings are "
        "listed and measured).",
        rich_help_panel=VARIANTS,
    ),
]
ActivationOffsetsOption = Annotated[
    bool,
    typer.Option(
        help="Quantize the activations a ReLU or Clip bounds below (ReLU6 outputs) on a grid shifted by "
        "half their range: twice the resolution on TensorRT's symmetric INT8 grid; the shift is written "
        "into the biases around them (and a Pad before a padded convolution), the float model unchanged.",
        rich_help_panel=VARIANTS,
    ),
]
RangeSearchOption = Annotated[
    bool,
    typer.Option(
        help="Search each calibrated range on what the model computes from the tensor: the candidate "
        "around it (0.35x to 3x) with the least error at the next quantized tensors, on the bias-correction "
        "images, replaces it where it leaves at most 98 % of the error.",
        rich_help_panel=VARIANTS,
    ),
]
EqualizeOption = Annotated[
    bool,
    typer.Option(
        help="Cross-layer equalization: rescale consecutive convolutions per channel (across ReLU, ReLU6, "
        "batch normalization) so the second's input channels even out, the float model's outputs "
        "unchanged; calibration and the FP16 / INT8 variants use that model (models/equalized.onnx).",
        rich_help_panel=VARIANTS,
    ),
]
BackendOption = Annotated[
    str, typer.Option(help="auto | onnxruntime | tensorrt | tensorrt-rtx.", rich_help_panel=VARIANTS)
]
PluginsOption = Annotated[
    list[Path] | None,
    typer.Option(
        help="TensorRT plugin library (.so) loaded before parsing (repeatable; --backend tensorrt).",
        rich_help_panel=VARIANTS,
    ),
]
CudaGraphOption = Annotated[
    bool,
    typer.Option(
        help="Also time TensorRT engines replayed from a CUDA graph (--backend tensorrt).",
        rich_help_panel=EVALUATION,
    ),
]
ComputeCapabilityOption = Annotated[
    str | None,
    typer.Option(
        help="--backend tensorrt-rtx: GPU architectures to build for, e.g. 8.6,8.9, portable or current "
        "(default: the GPU present, else portable).",
        rich_help_panel=EVALUATION,
    ),
]
BenchBatchOption = Annotated[
    str, typer.Option(help="Batch sizes to time, e.g. 1,8.", rich_help_panel=EVALUATION)
]
BenchSecondsOption = Annotated[
    float, typer.Option(help="Fewest seconds of timed runs.", rich_help_panel=EVALUATION)
]


ToleranceOption = Annotated[
    float | None,
    typer.Option(
        help="How far a variant's headline may fall short of FP32's to be recommended (default per kind: "
        "0.01 top-1 agreement, 0.05 detection F1, 0.02 IoU, 0.05 sequence agreement, 0.01 your --metric).",
        rich_help_panel=EVALUATION,
    ),
]
MetricOption = Annotated[
    list[str] | None,
    typer.Option(
        help="Your own metric: path/to/file.py:function or an installed quantbench.metrics entry point "
        "(repeatable); the first one's headline decides the verdict.",
        rich_help_panel=EVALUATION,
    ),
]


@app.command("run")
def run_command(
    model: Model,
    images: Images = None,
    n: CalibN = 100,
    seed: Seed = 0,
    eval_images: EvalImages = None,
    eval_n: EvalNOption = None,
    labels: LabelsOption = None,
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
    method: MethodOption = "entropy,minmax,percentile,mse",
    ranges: RangesFile = None,
    force_ranges: ForceRanges = False,
    batch: Batch = None,
    workers: Workers = 2,
    precisions: PrecisionsOption = "fp32,fp16,int8",
    exclude: ExcludeOption = None,
    target_agreement: TargetAgreement = None,
    target_rel_l2: TargetRelL2 = None,
    target: TargetHeadline = None,
    sensitivity_n: SensitivityN = 32,
    bias_correction: BiasCorrectionOption = True,
    bias_correction_images: BiasCorrectionImagesOption = 32,
    weight_rounding: WeightRoundingOption = "nearest",
    cpu_flavour: CpuFlavourOption = "exact",
    activation_offsets: ActivationOffsetsOption = False,
    range_search: RangeSearchOption = False,
    equalize: EqualizeOption = False,
    backend: BackendOption = "auto",
    threads: Threads = 0,
    plugins: PluginsOption = None,
    cuda_graph: CudaGraphOption = False,
    compute_capability: ComputeCapabilityOption = None,
    bench_batch: BenchBatchOption = "1",
    bench_runs: Annotated[int, typer.Option(help="Fewest timed runs.", rich_help_panel=EVALUATION)] = 50,
    bench_seconds: BenchSecondsOption = 2.0,
    task: TaskOption = None,
    task_option: TaskSettingOption = None,
    tolerance: ToleranceOption = None,
    metric: MetricOption = None,
    out: RunFolder = Path("reports"),
) -> None:
    """Build FP32 / FP16 / INT8 variants and compare them on held-out images."""
    keywords = api_keywords(locals())  # first: the options only
    from quantbench.flows.run import run

    console = make_console()
    with progress_bars(console) as bars:
        result = run(progress=bars, **keywords)
    from quantbench.cli.summary import print_run_summary

    print_run_summary(console, result)
