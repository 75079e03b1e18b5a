"""``quantbench calibrate``: one pass of the model over the samples, then every method's range tables.

Output folder (``--out``, default ``reports/<model name>/``): ``histograms/`` (reused by later calls
with the same model, samples and preprocessing) and ``ranges/<method>.cache / .txt / .json``; see
:mod:`quantbench.calibration.calibrate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantbench.errors import Interrupted, QuantbenchError
from quantbench.fileio import make_folders, remove_empty_folders
from quantbench.flows.context import api_signature

if TYPE_CHECKING:
    from quantbench.calibration.calibrate import CalibrationResult
    from quantbench.flows.context import Settings
    from quantbench.progress import Progress

GROUPS = (
    "data[images,n,seed,workers]",
    "preprocess",
    "calib[methods,batch,force]",
    "backend[threads]",
    "output[out]",
)
DEFAULTS: dict[str, Any] = {"n": None, "methods": ("entropy",), "out": None}
"""Where ``calibrate`` differs from the groups' defaults: every sample, entropy, ``reports/<model>``."""


def calibrate_flow(settings: Settings, progress: Progress | None = None) -> CalibrationResult:
    """Calibrate ``settings.model`` on ``settings.data.images`` (see the module docstring).

    Raises:
        QuantbenchError: bad model, images, method or options.
    """
    from quantbench.calibration.calibrate import calibrate_dataset
    from quantbench.calibration.registry import parse_method
    from quantbench.data import open_dataset
    from quantbench.flows.checks import check_counts, check_file, sample_files
    from quantbench.model import LoadedModel

    for text in settings.calib.methods:  # a bad method fails before the model is read
        parse_method(text)
    if settings.data.images is None:
        raise QuantbenchError("give --images, the folder of samples to calibrate on")
    check_counts(settings.data)
    check_file(settings.model, "--model", "model file")
    sample_files(settings.data.images, "--images")
    model = LoadedModel(settings.model, "calibration")
    dataset = open_dataset(
        settings.data.images, model.inputs, settings.preprocess, stated_size=model.stated_size
    )
    out = output_folder(settings.output.out, model.path)
    created = make_folders(out, "--out")  # a folder that cannot be written to fails before the pass
    threads = settings.backend.threads
    try:
        return calibrate_dataset(model, dataset, settings.data, settings.calib, out, threads, progress)
    except BaseException as exc:
        for folder in (out / "histograms", out / "ranges"):  # left empty by a failed step
            remove_empty_folders([folder])
        remove_empty_folders(created)
        if isinstance(exc, Interrupted) and out.is_dir() and any(out.iterdir()):
            exc.kept.append(f"{out} (every file in it is complete; stored histograms are reused)")
        raise


def output_folder(out: Path | None, model: Path) -> Path:
    """Where ``calibrate`` writes: ``out``, else ``reports/<model name>``."""
    return out if out is not None else Path("reports") / model.stem


def calibrate(model: Any, images: Any, **keywords: Any) -> CalibrationResult:
    """Calibrate ``model`` on a folder of images (or ``.npy``/``.npz`` files) and write range tables.

    Keywords are the settings of ``quantbench calibrate`` (see :mod:`quantbench.config`): ``n`` (None:
    every sample), ``seed``, ``methods`` (e.g. ``["entropy", "percentile:99.9", "my.py:fn"]``),
    ``batch``, ``force``, ``preset`` and its overrides (``size``, ``mean``... or a ``preprocess``
    dict), ``workers``, ``threads``, ``out``, and ``progress`` (a :class:`quantbench.progress.Progress`).

    Returns:
        A :class:`~quantbench.calibration.calibrate.CalibrationResult`.

    Raises:
        QuantbenchError: bad model, images, method or options.
    """
    from quantbench.flows.context import settings_from_keywords

    settings, progress = settings_from_keywords(model, images, keywords, GROUPS, DEFAULTS)
    return calibrate_flow(settings, progress)


calibrate.__signature__ = api_signature(GROUPS, DEFAULTS, images_required=True)  # type: ignore[attr-defined]
