"""The context of one command: its settings, the model loaded once, datasets opened once, the run folder,
the backend, progress and notes. Every step of a flow reads what it needs from here.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantbench.config import (
    BackendSpec,
    BenchSpec,
    CalibSpec,
    DataSpec,
    OutputSpec,
    PreprocessSpec,
    SensitivitySpec,
    TargetSpec,
    VariantSpec,
    VerdictSpec,
    from_keywords,
    signature,
)
from quantbench.errors import QuantbenchError
from quantbench.progress import Progress, QuietProgress

if TYPE_CHECKING:
    from quantbench.backends.base import Backend
    from quantbench.calibration.calibrate import CalibrationResult
    from quantbench.data import Dataset
    from quantbench.model import LoadedModel

EVAL_BATCH = 8
"""Held-out batch for models without a fixed batch dimension."""


@dataclass(frozen=True)
class Settings:
    """Every settings group of a command (see :mod:`quantbench.config`); a command reads the ones it takes.

    Attributes:
        model: the FP32 ONNX model.
    """

    model: Path
    data: DataSpec = field(default_factory=DataSpec)
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    calib: CalibSpec = field(default_factory=CalibSpec)
    variants: VariantSpec = field(default_factory=VariantSpec)
    backend: BackendSpec = field(default_factory=BackendSpec)
    bench: BenchSpec = field(default_factory=BenchSpec)
    target: TargetSpec = field(default_factory=TargetSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    verdict: VerdictSpec = field(default_factory=VerdictSpec)
    sensitivity: SensitivitySpec = field(default_factory=SensitivitySpec)


def settings_from_keywords(
    model: Any,
    images: Any,
    keywords: Mapping[str, Any],
    groups: Sequence[str],
    defaults: Mapping[str, Any] | None = None,
) -> tuple[Settings, Progress | None]:
    """The settings of a Python API call (``quantbench.run(model, images, **keywords)`` and its kin), and
    its ``progress``: the keywords sorted into ``groups`` (see :func:`quantbench.config.from_keywords`),
    a ``preprocess`` dict applied over the preprocessing keywords.

    Raises:
        TypeError: a keyword that none of ``groups`` has.
        QuantbenchError: a ``preprocess`` entry that is not a preprocessing setting.
    """
    given = dict(keywords)
    progress = given.pop("progress", None)
    preprocess = given.pop("preprocess", None)
    found = from_keywords({**given, "images": images}, groups, defaults)
    found["preprocess"] = found["preprocess"].with_overrides(preprocess)
    return Settings(Path(model), **found), progress


def api_signature(
    groups: Sequence[str], defaults: Mapping[str, Any] | None = None, images_required: bool = False
) -> inspect.Signature:
    """The signature :func:`settings_from_keywords`'s callers show to ``help()``: ``model``, ``images``,
    every keyword of ``groups``, then ``preprocess`` and ``progress``."""
    images = inspect.Parameter("images", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not images_required:
        images = images.replace(default=None)
    leading = [inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD), images]
    trailing = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None)
        for name in ("preprocess", "progress")
    ]
    return signature(leading, groups, defaults, trailing)


def new_run_folder(out: Path, model: Path) -> Path:
    """``out/<model name>-<timestamp>``, with ``-1``, ``-2``... when that exists already (not created)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = out / f"{model.stem}-{stamp}"
    path, k = base, 1
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


class RunContext:
    """What the steps of one command share.

    Args:
        settings: the command's settings.
        model: the model, loaded and checked.
        run_dir: the folder the command writes to.
        progress: receives progress of the long steps (None: silent).
    """

    def __init__(
        self, settings: Settings, model: LoadedModel, run_dir: Path, progress: Progress | None = None
    ) -> None:
        self.settings = settings
        self.model = model
        self.run_dir = run_dir
        self.progress: Progress = progress or QuietProgress()
        self.notes: list[str] = []
        self.started = time.time()
        self.calibration: CalibrationResult | None = None
        """quantbench's calibration of this command, once it ran."""
        from quantbench.evaluation.tasks import Task

        self.task = Task.parse(settings.verdict.task, settings.verdict.task_option)
        """What the outputs hold and how they are judged (``--task``, ``--task-option``)."""
        self._datasets: dict[Path, Dataset] = {}
        self._backend: Backend | None = None

    @classmethod
    def open(cls, settings: Settings, what: str, progress: Progress | None = None) -> RunContext:
        """Load the model, check ``--task`` against its outputs, and name a new run folder under
        ``settings.output.out`` (created on first write).

        Args:
            settings: the command's settings.
            what: the command's need, for the error on a model without float inputs.
            progress: receives progress of the long steps.
        """
        from quantbench.evaluation.kinds import parse_task
        from quantbench.model import LoadedModel

        model = LoadedModel(settings.model, what)
        out = settings.output.out if settings.output.out is not None else Path("reports")
        context = cls(settings, model, new_run_folder(out, model.path), progress)
        # a bad --task fails before any work, not at the comparison
        parse_task(context.task.kinds, [output.name for output in model.proto.graph.output])
        return context

    @property
    def backend(self) -> Backend:
        """The backend of ``settings.backend``, made on first use."""
        if self._backend is None:
            from quantbench.backends.registry import create

            self._backend = create(self.settings.backend)
        return self._backend

    @property
    def models_dir(self) -> Path:
        """``<run>/models``."""
        return self.run_dir / "models"

    @property
    def eval_batch(self) -> int:
        """The batch held-out samples are run in: the model's fixed batch, else :data:`EVAL_BATCH`."""
        return self.model.fixed_batch or EVAL_BATCH

    @property
    def threads(self) -> int:
        """ONNX Runtime intra-op threads (0: every core)."""
        return self.settings.backend.threads

    def dataset(self, root: Path) -> Dataset:
        """The dataset under ``root`` with the command's preprocessing, opened once per folder."""
        if root not in self._datasets:
            from quantbench.data import open_dataset

            self._datasets[root] = open_dataset(root, self.model.inputs, self.settings.preprocess)
        return self._datasets[root]

    @property
    def calibration_data(self) -> Dataset | None:
        """The dataset of ``--images``, if given."""
        images = self.settings.data.images
        return self.dataset(images) if images is not None else None

    @property
    def eval_root(self) -> Path:
        """The folder held-out samples come from: ``--eval-images``, else ``--images``."""
        data = self.settings.data
        root = data.eval_images if data.eval_images is not None else data.images
        if root is None:
            raise QuantbenchError("give --eval-images (held-out images to evaluate on)")
        return root
