"""Finding sample files in a folder and putting them in a deterministic order."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from quantbench.errors import QuantbenchError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
TENSOR_EXTENSIONS = (".npy", ".npz")

SourceKind = Literal["images", "tensors"]


class SkipSample(Exception):
    """A file that cannot be used as a sample; it is skipped and reported, never fatal.

    Attributes:
        reason: a short phrase such as ``"truncated JPEG"`` for the load report.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Discovery:
    """The sample files found under a folder.

    Attributes:
        kind: ``"images"`` or ``"tensors"`` (``.npy``/``.npz``).
        files: relative POSIX paths, sorted.
    """

    kind: SourceKind
    files: list[str]


def shown(root: Path) -> str:
    """How a folder is named in messages: the path as given, with a trailing slash."""
    text = str(root)
    return text if text.endswith(("/", os.sep)) else text + "/"


def _no_files_message(root: Path) -> str:
    exts = " ".join(IMAGE_EXTENSIONS)
    return (
        f"no images ({exts}) found under {shown(root)}; "
        "point --images at a folder of images or .npy/.npz files"
    )


def discover(root: Path) -> Discovery:
    """Find the images or tensor files under ``root``, searched recursively.

    Extensions match in any case; files and folders whose names start with
    ``.`` are skipped.

    Args:
        root: the folder to search.

    Returns:
        The kind of source and its files as sorted relative POSIX paths.

    Raises:
        QuantbenchError: ``root`` is missing or not a folder, holds no image or
            tensor files, or holds both kinds.
    """
    if not root.exists():
        raise QuantbenchError(
            f"image folder not found: {shown(root)}; point --images at a folder of images or .npy/.npz files"
        )
    if not root.is_dir():
        raise QuantbenchError(
            f"{root} is not a folder; point --images at a folder of images or .npy/.npz files"
        )
    images: list[str] = []
    tensors: list[str] = []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        relative_folder = Path(folder).relative_to(root)
        for name in names:
            if name.startswith("."):
                continue
            suffix = os.path.splitext(name)[1].lower()
            rel = (relative_folder / name).as_posix()
            if suffix in IMAGE_EXTENSIONS:
                images.append(rel)
            elif suffix in TENSOR_EXTENSIONS:
                tensors.append(rel)
    if images and tensors:
        raise QuantbenchError(
            f"{shown(root)} holds both images ({len(images)}) and .npy/.npz files ({len(tensors)}); "
            "keep one kind per folder"
        )
    if images:
        return Discovery("images", sorted(images))
    if tensors:
        return Discovery("tensors", sorted(tensors))
    raise QuantbenchError(_no_files_message(root))


def shuffled(files: list[str], seed: int) -> list[str]:
    """The files in the order samples are drawn: ``random.Random(seed).shuffle`` of the sorted list.

    Args:
        files: relative paths, already sorted.
        seed: the sampling seed.

    Returns:
        A new list; the same (files, seed) always gives the same order.
    """
    order = list(files)
    random.Random(seed).shuffle(order)
    return order
