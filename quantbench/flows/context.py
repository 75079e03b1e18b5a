"""The context of one command: its settings, the model loaded once, datasets opened once, the run folder,
the backend, progress and notes. Every step of a flow reads what it needs from here.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
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
from quantbench.errors import Interrupted, QuantbenchError
from quantbench.fileio import make_folders, remove_empty_folders
from quantbench.progress import Progress, QuietProgress

if TYPE_CHECKING:
    from quantbench.backends.base import Backend
    from quantbench.calibration.calibrate import CalibrationResult
    from quantbench.data import Dataset
    from quantbench.evaluation.tasks import Task
    from quantbench.model import LoadedModel

EVAL_BATCH = 8
"""Held-out batch for models without a fixed batch dimension."""
BATCH_INPUT_BYTES = 16 << 20
"""An automatic batch (held-out, bias correction) holds fewer samples where they are large: at most this
many bytes of input, as calibration saw it (at least one sample). Every pass's memory follows its batch:
PP-OCRv4 det at 1152 px evaluated 8 pages a batch peaked at 3.4 GB, 1 page a batch at 1.7 GB."""


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
    """Create ``out/<model name>-<timestamp>`` (``out`` must exist), with ``-1``, ``-2``... when that name
    is taken. Each name is claimed with one ``mkdir``, which fails where the folder exists, so two runs
    started in the same second never share a folder.

    Raises:
        QuantbenchError: the folder cannot be created (naming ``--out``).
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = out / f"{model.stem}-{stamp}"
    for k in itertools.count():
        path = base if k == 0 else Path(f"{base}-{k}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise QuantbenchError(
                f"--out {out}: cannot create the run folder {path.name} ({exc.strerror}); "
                "give a folder you can write to"
            ) from None
        return path
    raise AssertionError("unreachable")  # itertools.count() does not end


class RunContext:
    """What the steps of one command share.

    Args:
        settings: the command's settings.
        model: the model, loaded and checked.
        run_dir: the folder the command writes to.
        progress: receives progress of the long steps (None: silent).
    """

    def __init__(
        self,
        settings: Settings,
        model: LoadedModel,
        run_dir: Path,
        progress: Progress | None = None,
        task: Task | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        """The model as given: the FP32 reference, and what the run folder is named after."""
        self.source = model
        """The model calibration and the FP16 / INT8 variants start from: ``model``, or with ``--equalize``
        its equalized copy (:func:`quantbench.flows.variants.equalize_source`)."""
        self.equalization: dict[str, Any] | None = None
        """What ``--equalize`` did (``results.json``'s ``equalization``), once it ran."""
        self.run_dir = run_dir
        self.progress: Progress = progress or QuietProgress()
        self.notes: list[str] = []
        self.started = time.time()
        self.calibration: CalibrationResult | None = None
        """quantbench's calibration of this command, once it ran."""
        from quantbench.evaluation.tasks import Task

        self.task = task or Task.parse(settings.verdict.task, settings.verdict.task_option)
        """What the outputs hold and how they are judged (``--task``, ``--task-option``)."""
        self._datasets: dict[Path, Dataset] = {}
        self._backend: Backend | None = None
        self.created: list[Path] = []
        """The folders :meth:`open` created, outermost first: the output folder's missing parents, then
        the run folder."""

    @classmethod
    def open(cls, settings: Settings, what: str, progress: Progress | None = None) -> RunContext:
        """Load the model, check ``--task`` against its outputs, then create ``settings.output.out`` (checked
        for writing) and a new run folder in it. Run the steps after this under :meth:`finishing`.

        Args:
            settings: the command's settings.
            what: the command's need, for the error on a model without float inputs.
            progress: receives progress of the long steps.

        Raises:
            QuantbenchError: a bad model or ``--task``, or an output folder that cannot be written to;
                nothing is left on disk then.
        """
        from quantbench.evaluation.kinds import parse_task
        from quantbench.evaluation.tasks import Task
        from quantbench.model import LoadedModel

        model = LoadedModel(settings.model, what)
        task = Task.parse(settings.verdict.task, settings.verdict.task_option)
        # a bad --task fails before any work, not at the comparison
        parse_task(task.kinds, [output.name for output in model.proto.graph.output])
        out = settings.output.out if settings.output.out is not None else Path("reports")
        created = make_folders(out, "--out")
        try:
            run_dir = new_run_folder(out, model.path)
        except QuantbenchError:
            remove_empty_folders(created)
            raise
        context = cls(settings, model, run_dir, progress, task)
        context.created = [*created, run_dir]
        return context

    @contextlib.contextmanager
    def finishing(self, result: str = "results.json") -> Iterator[RunContext]:
        """Run the command's steps: when one fails, the run folder goes (unless its ``result`` file made it
        there), with the folders made for it, so a failed command leaves nothing half-written; when the
        command is interrupted, a run folder that holds anything stays, and the interrupt says so."""
        try:
            yield self
        except Exception:
            if not (self.run_dir / result).is_file():
                shutil.rmtree(self.run_dir, ignore_errors=True)
                remove_empty_folders(self.created)
            raise
        except BaseException as exc:  # KeyboardInterrupt, Interrupted
            if self.run_dir.is_dir() and any(self.run_dir.iterdir()):
                if isinstance(exc, Interrupted):
                    exc.kept.append(
                        f"the unfinished run folder {self.run_dir} (every file in it is complete)"
                    )
            else:
                remove_empty_folders(self.created)
            raise

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
        """The batch held-out samples are run in: the model's fixed batch, else ``--batch``, else
        :data:`EVAL_BATCH` (fewer for large samples, see :meth:`automatic_batch`)."""
        return self.model.fixed_batch or self.settings.calib.batch or self.automatic_batch(EVAL_BATCH)

    def automatic_batch(self, most: int) -> int:
        """``most`` samples, or fewer so that a batch's inputs stay within :data:`BATCH_INPUT_BYTES`, by the
        largest sample calibration saw (``most`` before calibration, or without one)."""
        shapes = self.calibration.shapes if self.calibration is not None else {}
        largest = sum(
            max((math.prod(seen["shape"]) for seen in entries), default=0) * 4 for entries in shapes.values()
        )
        return most if not largest else max(1, min(most, BATCH_INPUT_BYTES // largest))

    @property
    def threads(self) -> int:
        """ONNX Runtime intra-op threads (0: every core)."""
        return self.settings.backend.threads

    def dataset(self, root: Path) -> Dataset:
        """The dataset under ``root`` with the command's preprocessing, opened once per folder."""
        if root not in self._datasets:
            from quantbench.data import open_dataset

            model, preprocess = self.model, self.settings.preprocess
            self._datasets[root] = open_dataset(root, model.inputs, preprocess, stated_size=model.stated_size)
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
