"""The settings of a command, as a few typed groups shared by the command line and the Python API.

Each group is defined once and used by every command that takes it: ``calibrate`` takes data,
preprocessing and calibration; ``run`` every group; ``sensitivity`` data, preprocessing, calibration,
variants (for ``--exclude``), backend (threads) and output. The Python API takes the same settings as
keywords (``quantbench.run(model, images, n=50, methods=["mse"])``): :func:`from_keywords` sorts them
into their groups and :func:`signature` gives those functions their real signature for ``help()``.

A field whose keyword differs from its name says so in ``metadata["keyword"]`` (``BenchSpec.batch``
is ``bench_batch``).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from quantbench.errors import QuantbenchError

PathLike = str | os.PathLike[str]


def _keyword(name: str) -> dict[str, str]:
    return {"keyword": name}


@dataclass(frozen=True)
class DataSpec:
    """Which samples calibrate and which evaluate.

    Attributes:
        images: calibration images or tensor files (the held-out pool too without ``eval_images``).
        n: calibration samples (None: all of them).
        seed: picks and orders the samples.
        eval_images: held-out images (default: those of ``images`` not used to calibrate).
        eval_n: held-out samples (None: the command's default).
        labels: file mapping image names to class indices, for top-1/top-5 accuracy.
        workers: image decoding threads.
    """

    images: Path | None = None
    n: int | None = 100
    seed: int = 0
    eval_images: Path | None = None
    eval_n: int | None = None
    labels: Path | None = None
    workers: int = 2


@dataclass(frozen=True)
class PreprocessSpec:
    """How images become input tensors: a preset and the options that override it (None: the preset's,
    or the model's static input shape). See :func:`quantbench.data.preprocess.resolve_preprocessing`."""

    preset: str = "imagenet"
    size: int | tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: str | None = None
    layout: str | None = None
    interpolation: str | None = None
    resize: str | None = None
    pad_value: float | None = None
    pad_position: str | None = None
    min_side: int | None = None
    max_side: int | None = None
    multiple: int | None = None
    function: str | None = field(default=None, metadata=_keyword("preprocess_function"))

    def overrides(self) -> dict[str, Any]:
        """The options given, by name (what is recorded as the run's ``preprocess``); ``function`` is
        ``--preprocess path/to/file.py:function``, which replaces the others."""
        names = [f.name for f in dataclasses.fields(self) if f.name != "preset"]
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def with_overrides(self, options: Mapping[str, Any] | None) -> PreprocessSpec:
        """A copy with ``options`` (name -> value) applied.

        Raises:
            QuantbenchError: an option that is not a preprocessing setting.
        """
        if not options:
            return self
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise QuantbenchError(f"unknown preprocessing option {unknown[0]!r}")
        return dataclasses.replace(self, **options)


@dataclass(frozen=True)
class CalibSpec:
    """Where the ranges come from.

    Attributes:
        methods: calibration methods, one INT8 variant each (``quantbench methods``); with a backend
            that has calibrators of its own, also theirs (``trt-entropy2`` ...).
        ranges: a range file (TensorRT cache, ``name:amax`` text or JSON) instead of calibrating.
        force_ranges: use ``ranges`` even where its file says it was made for another model file or
            preprocessing.
        batch: the batch samples are run in, for a model without a fixed batch: calibration, bias
            correction and the held-out comparison (None: automatic for each; the ranges do not depend
            on it). Samples of different shapes never share a batch.
        force: collect histograms afresh even where stored ones match.
    """

    methods: tuple[str, ...] = ("entropy", "minmax", "percentile", "mse")
    ranges: Path | None = None
    force_ranges: bool = False
    batch: int | None = None
    force: bool = False


@dataclass(frozen=True)
class VariantSpec:
    """Which models are built.

    Attributes:
        precisions: any of ``fp32``, ``fp16``, ``int8`` (FP32, the reference, is always built).
        exclude: node names, op types or regular expressions kept in float in INT8 models.
        bias_correction: correct the INT8 models' Conv/Gemm biases (see
            :mod:`quantbench.export.bias_correction`); needs images.
        bias_correction_images: the first calibration images the correction and adaptive rounding
            run on.
        weight_rounding: how INT8 weights take their codes: ``nearest``, or ``adaptive`` (the codes that
            minimise each layer's output error on those images, see :mod:`quantbench.export.rounding`).
        cpu_flavour: the model ONNX Runtime times on the CPU for an INT8 variant: ``exact`` (the judged
            model's quantized values) or ``fast`` (more tensors quantized, see
            :mod:`quantbench.export.onnxruntime_fast`).
        activation_offsets: put the activations a ReLU or Clip bounds below on grids shifted by half
            their range, in the INT8 models of quantbench's ranges (see
            :mod:`quantbench.export.offsets`).
        range_search: replace each calibrated range of quantbench's sets by the candidate around it
            that leaves the least error at the next quantized tensors, on those images (see
            :mod:`quantbench.export.range_search`).
        equalize: calibrate and build the FP16 and INT8 variants from the model with cross-layer
            equalization (see :mod:`quantbench.export.equalize`; FP32 stays the given model).
    """

    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    exclude: tuple[str, ...] = ()
    bias_correction: bool = True
    bias_correction_images: int = 32
    weight_rounding: str = "nearest"
    cpu_flavour: str = "exact"
    activation_offsets: bool = False
    range_search: bool = False
    equalize: bool = False


@dataclass(frozen=True)
class BackendSpec:
    """What runs the variants.

    Attributes:
        name: a registered backend (``quantbench.backends.registry``), or ``auto``.
        threads: ONNX Runtime intra-op threads (0: every core), wherever ONNX Runtime runs.
        plugins: TensorRT plugin libraries loaded before parsing (TensorRT-family backends).
        cuda_graph: also time engines replayed from a CUDA graph (TensorRT-family backends).
        compute_capability: ``tensorrt-rtx``: the GPU architectures engines are built for, e.g. ``8.6,8.9``,
            ``portable`` or ``current`` (None: the GPU present, else portable).
    """

    name: str = field(default="auto", metadata=_keyword("backend"))
    threads: int = 0
    plugins: tuple[Path, ...] = ()
    cuda_graph: bool = False
    compute_capability: str | None = None


@dataclass(frozen=True)
class BenchSpec:
    """How latency is measured: each batch size is timed until both ``runs`` and ``seconds`` are reached."""

    batch: tuple[int, ...] = field(default=(1,), metadata=_keyword("bench_batch"))
    runs: int = field(default=50, metadata=_keyword("bench_runs"))
    seconds: float = field(default=2.0, metadata=_keyword("bench_seconds"))


@dataclass(frozen=True)
class TargetSpec:
    """A fidelity target for mixed precision (see :mod:`quantbench.search.mixed_precision`).

    Attributes:
        agreement: top-1 agreement with FP32 to reach, in %.
        rel_l2: relative L2 error of the output not to exceed.
        headline: ``METRIC=VALUE``, a bound on the main output's headline metric (e.g. ``det_f1=0.9``).
        sensitivity_n: held-out samples the sensitivity ranking runs on.
    """

    agreement: float | None = field(default=None, metadata=_keyword("target_agreement"))
    rel_l2: float | None = field(default=None, metadata=_keyword("target_rel_l2"))
    headline: str | None = field(default=None, metadata=_keyword("target"))
    sensitivity_n: int = 32

    @property
    def given(self) -> bool:
        """True when a target was set."""
        return self.agreement is not None or self.rel_l2 is not None or self.headline is not None


@dataclass(frozen=True)
class OutputSpec:
    """Where results go and what is recorded about the call.

    Attributes:
        out: the folder the run folder (or, for ``calibrate``, the output folder) is made in.
        command: the command line, recorded in the manifest.
    """

    out: Path | None = Path("reports")
    command: tuple[str, ...] | None = None


@dataclass(frozen=True)
class VerdictSpec:
    """How outputs are judged and a variant recommended.

    Attributes:
        task: what the outputs hold: ``KIND`` for every output or ``OUTPUT=KIND`` (``classes``,
            ``detection``, ``dense``, ``sequence``, ``generic`` or ``auto``); outputs not named have their
            kind detected from FP32's values (see :mod:`quantbench.evaluation.kinds`).
        task_option: settings of the metrics by kind, ``KEY=VALUE`` (detection ``confidence``, ``nms``,
            ``match-iou``; probability maps ``mask-threshold``, ``min-region``; sequences ``ctc-blank``,
            ``ctc-trim``; ``headline``: see :class:`quantbench.evaluation.tasks.TaskOptions`).
        tolerance: how far a variant's headline may fall from FP32's for it to be recommended (None: the
            default of the main output's kind, see :mod:`quantbench.evaluation.verdict`).
        metric: metrics of your own, ``path/to/file.py:function`` or the name of a ``quantbench.metrics``
            entry point (see :mod:`quantbench.evaluation.plugins`); the first one's headline is the
            verdict's.
    """

    task: tuple[str, ...] = ()
    task_option: tuple[str, ...] = ()
    tolerance: float | None = None
    metric: tuple[str, ...] = ()


@dataclass(frozen=True)
class SensitivitySpec:
    """What ``quantbench sensitivity`` measures.

    Attributes:
        views: ``only`` (only that node quantized) and/or ``without`` (every node but that one).
        tensors: also measure per-tensor fidelity.
    """

    views: tuple[str, ...] = field(default=("only", "without"), metadata=_keyword("views"))
    tensors: bool = True


GROUPS: dict[str, type] = {
    "data": DataSpec,
    "preprocess": PreprocessSpec,
    "calib": CalibSpec,
    "variants": VariantSpec,
    "backend": BackendSpec,
    "bench": BenchSpec,
    "target": TargetSpec,
    "output": OutputSpec,
    "verdict": VerdictSpec,
    "sensitivity": SensitivitySpec,
}
"""Group name -> its settings class, in the order their keywords are listed."""

_SEQUENCES = {
    "methods",
    "precisions",
    "exclude",
    "plugins",
    "bench_batch",
    "command",
    "views",
    "task",
    "task_option",
    "metric",
}
_PATHS = {"images", "eval_images", "labels", "ranges", "out"}

Spec = TypeVar("Spec")


def _keywords_of(spec: type) -> list[tuple[str, dataclasses.Field[Any]]]:
    return [(f.metadata.get("keyword", f.name), f) for f in dataclasses.fields(spec)]


def _group(name: str) -> tuple[str, type, list[tuple[str, dataclasses.Field[Any]]]]:
    """``"backend"`` or ``"backend[threads]"`` (only those keywords) -> (name, class, keywords)."""
    base, _, rest = name.partition("[")
    keywords = _keywords_of(GROUPS[base])
    if rest:
        chosen = set(rest.rstrip("]").split(","))
        keywords = [(k, f) for k, f in keywords if k in chosen]
    return base, GROUPS[base], keywords


def _coerce(keyword: str, value: Any) -> Any:
    if value is None:
        return None
    if keyword in _SEQUENCES:
        if isinstance(value, str | bytes | os.PathLike) or not isinstance(value, Iterable):
            raise QuantbenchError(f"{keyword} takes a list, e.g. {keyword}=[...], not {value!r}")
        items = tuple(value)
        return tuple(Path(v) for v in items) if keyword == "plugins" else items
    if keyword in _PATHS:
        return Path(value)
    return value


def build(spec: type[Spec], keywords: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> Spec:
    """A ``spec`` from the keywords that belong to it (others are ignored), over ``defaults``."""
    values = {}
    for keyword, f in _keywords_of(spec):
        if keyword in keywords:
            values[f.name] = _coerce(keyword, keywords[keyword])
        elif defaults and keyword in defaults:
            values[f.name] = _coerce(keyword, defaults[keyword])
    return spec(**values)


def from_keywords(
    keywords: Mapping[str, Any], groups: Sequence[str], defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Sort API keywords into settings groups.

    Args:
        keywords: keyword -> value, as the Python API received them.
        groups: the groups the command takes: keys of :data:`GROUPS`, or ``"name[a,b]"`` for only the
            keywords ``a`` and ``b`` of a group.
        defaults: the command's own defaults where they differ from the groups'.

    Returns:
        Group name -> its settings.

    Raises:
        TypeError: a keyword that no group of the command has (as Python says of an unknown argument).
    """
    known = {keyword for name in groups for keyword, _ in _group(name)[2]}
    unknown = sorted(set(keywords) - known)
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    return {_group(name)[0]: build(_group(name)[1], keywords, defaults) for name in groups}


def signature(
    leading: Sequence[inspect.Parameter],
    groups: Sequence[str],
    defaults: Mapping[str, Any] | None = None,
    trailing: Sequence[inspect.Parameter] = (),
) -> inspect.Signature:
    """The signature of an API function: ``leading`` parameters, the groups' keywords, ``trailing``."""
    params = list(leading)
    seen = {p.name for p in params}
    for name in groups:
        for keyword, f in _group(name)[2]:
            if keyword in seen:
                continue
            seen.add(keyword)
            default = defaults[keyword] if defaults and keyword in defaults else f.default
            if default is dataclasses.MISSING:
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            params.append(inspect.Parameter(keyword, inspect.Parameter.KEYWORD_ONLY, default=default))
    return inspect.Signature([*params, *trailing])
