"""Checks of the paths a command reads, made before any work: a missing or wrong file or folder is a
one-line error naming the option that gave it and what to do."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from quantbench.errors import QuantbenchError

if TYPE_CHECKING:
    from quantbench.config import DataSpec

SAMPLES_HINT = "a folder of images or .npy/.npz files"


def check_counts(data: DataSpec) -> None:
    """Refuse sample counts and decoding threads below 1, naming the option.

    Raises:
        QuantbenchError: ``--n``, ``--eval-n`` or ``--workers`` is below 1.
    """
    for option, value in (("--n", data.n), ("--eval-n", data.eval_n), ("--workers", data.workers)):
        if value is not None and value < 1:
            raise QuantbenchError(f"{option} must be at least 1, got {value}")


def check_file(path: Path | None, option: str, what: str) -> None:
    """Refuse a ``path`` (given by ``option``) that is missing, a folder or unreadable; None passes.

    Args:
        path: the file, or None where the option was not given.
        option: the option, e.g. ``--labels``.
        what: what the file is, e.g. ``labels file``.

    Raises:
        QuantbenchError: one line naming the file, the option and what is wrong.
    """
    if path is None:
        return
    if not path.exists():
        raise QuantbenchError(f"{what} not found: {path}; check {option}")
    if path.is_dir():
        raise QuantbenchError(f"{path} is a folder, not a {what}; check {option}")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise QuantbenchError(f"{path}: cannot read the {what} ({exc.strerror}); check {option}") from None


def check_files(paths: Iterable[Path], option: str, what: str) -> None:
    """:func:`check_file` for each of ``paths`` (a repeatable option)."""
    for path in paths:
        check_file(path, option, what)


def sample_files(path: Path, option: str) -> list[str]:
    """The sample files under the folder ``path`` (as :func:`quantbench.data.files.discover` finds them),
    refusing a folder that is missing, a file, or holds no samples.

    Args:
        path: the folder.
        option: the option that gave it (``--images``, ``--eval-images``).

    Returns:
        The files, as sorted relative POSIX paths.

    Raises:
        QuantbenchError: one line naming the folder and ``option``.
    """
    from quantbench.data.files import discover

    if not path.exists():
        raise QuantbenchError(f"{option} {path}: no such folder; point {option} at {SAMPLES_HINT}")
    if not path.is_dir():
        raise QuantbenchError(f"{option} {path} is a file; point {option} at {SAMPLES_HINT}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise QuantbenchError(f"{option} {path}: cannot read the folder; point {option} at {SAMPLES_HINT}")
    try:
        return discover(path).files
    except QuantbenchError as exc:  # its messages speak of --images
        raise QuantbenchError(str(exc).replace("--images", option)) from None


def check_labels(labels: dict[str, int], path: Path, files: list[str], root: Path) -> None:
    """Refuse labels of which no name matches one of ``files`` (the held-out pool under ``root``), which
    would make every accuracy figure empty.

    Raises:
        QuantbenchError: one line naming the labels file and the folder, with an example of each side.
    """
    from quantbench.evaluation.metrics import label_for

    if files and any(label_for(labels, name) is not None for name in files):
        return
    example = next(iter(labels))
    found = f"; an image there: {files[0]!r}" if files else ""
    raise QuantbenchError(
        f"--labels {path}: none of its {len(labels)} names matches an image under {root} (its first: "
        f"{example!r}{found}); name each image by its path under that folder or by its file name"
    )


def unlabelled_note(labels: dict[str, int], path: Path, names: list[str]) -> str | None:
    """A note on the held-out samples ``names`` that have no label (counted, the first few named), None
    when every one has a label.

    Raises:
        QuantbenchError: not one of them has a label (accuracy would be empty).
    """
    from quantbench.evaluation.metrics import label_for

    missing = [name for name in names if label_for(labels, name) is None]
    if not missing:
        return None
    shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
    if len(missing) == len(names):
        raise QuantbenchError(
            f"--labels {path}: none of the {len(names)} held-out images has a label ({shown}); label them, "
            "or pass --eval-images with labelled images"
        )
    return (
        f"--labels {path}: {len(missing)} of {len(names)} held-out images have no label ({shown}); "
        f"accuracy is over the other {len(names) - len(missing)}"
    )
