"""Reading samples from .npy/.npz files, for models that do not take images."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from quantbench.data.files import SkipSample
from quantbench.errors import QuantbenchError
from quantbench.model import InputSpec

_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
"""What numpy, zipfile and zlib raise for a corrupt or foreign file."""

Sample = dict[str, np.ndarray]
"""One model input sample: input name -> array without the batch axis."""


def _unreadable(suffix: str, exc: Exception) -> SkipSample:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SkipSample(f"unreadable {suffix} file ({detail})")


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise _unreadable(".npy", exc) from None
    if not isinstance(array, np.ndarray):
        raise SkipSample("unreadable .npy file (not a single array)")
    return array


def _read_npz(path: Path, names: list[str]) -> tuple[list[str], dict[str, np.ndarray]]:
    """The archive's keys, and the arrays of those keys that are in ``names``."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise SkipSample("unreadable .npz file (not an .npz archive)")
        with archive:
            keys = list(archive.files)
            return keys, {name: archive[name] for name in names if name in keys}
    except _READ_ERRORS as exc:
        raise _unreadable(".npz", exc) from None


def _samples_of(rel: str, spec: InputSpec, array: np.ndarray) -> tuple[bool, list[np.ndarray]]:
    """Split one array into samples for ``spec``.

    Returns:
        (whether the array was a batch, the samples cast to the input's dtype).

    Raises:
        QuantbenchError: the rank or a fixed dimension does not match the input.
    """
    rank = len(spec.shape)
    if rank == 0:  # the model does not say; take the array as one sample
        return False, [array.astype(spec.dtype, copy=False)]
    if array.ndim == rank:
        batched, sample_shape = True, array.shape[1:]
    elif array.ndim == rank - 1:
        batched, sample_shape = False, array.shape
    else:
        raise QuantbenchError(
            f"{rel}: tensor '{spec.name}' has shape {list(array.shape)}; input '{spec.name}' "
            f"expects rank {rank} (a batch) or {rank - 1} (one sample)"
        )
    for axis, got in enumerate(sample_shape, start=1):
        want = spec.fixed(axis)
        if want is not None and got != want:
            expected = list(spec.shape) if batched else list(spec.shape[1:])
            raise QuantbenchError(
                f"{rel}: tensor '{spec.name}' has shape {list(array.shape)} but input '{spec.name}' "
                f"expects {expected}; fix the file or export the model with matching shapes"
            )
    cast = array.astype(spec.dtype, copy=False)
    return batched, list(cast) if batched else [cast]


def load_tensor_file(path: Path, rel: str, inputs: list[InputSpec]) -> list[tuple[str, Sample]]:
    """Read every sample in one .npy or .npz file.

    A ``.npy`` (single-input models only) holds one array for the input; an
    ``.npz`` holds one array per input name (extra keys are ignored). An
    array whose rank equals the input's rank is a batch split along axis 0;
    one rank lower is a single sample. Values are cast to the input's dtype.

    Args:
        path: the file.
        rel: its path relative to the dataset root, used in names and messages.
        inputs: the model's inputs.

    Returns:
        (sample name, sample) pairs in file order; names are ``rel`` for a
        single sample and ``rel[i]`` for the samples of a batch.

    Raises:
        SkipSample: the file is empty, cannot be read, or holds no samples.
        QuantbenchError: an input is missing from an .npz, shapes do not
            match, the inputs hold different sample counts, or a .npy is
            given for a model with several inputs.
    """
    if path.stat().st_size == 0:
        raise SkipSample("empty file")
    if path.suffix.lower() == ".npy":
        if len(inputs) != 1:
            raise QuantbenchError(
                f"{rel}: the model has {len(inputs)} inputs; use .npz files keyed by input name"
            )
        arrays = {inputs[0].name: _read_npy(path)}
    else:
        names = [spec.name for spec in inputs]
        keys, arrays = _read_npz(path, names)
        missing = [name for name in names if name not in arrays]
        if missing:
            raise QuantbenchError(
                f"{rel}: no array for model input '{missing[0]}' (keys: {', '.join(keys) or 'none'}); "
                "key each array by its input name"
            )

    any_batched = False
    per_input: dict[str, list[np.ndarray]] = {}
    for spec in inputs:
        batched, samples = _samples_of(rel, spec, arrays[spec.name])
        any_batched = any_batched or batched
        per_input[spec.name] = samples
    counts = {name: len(samples) for name, samples in per_input.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name}: {count}" for name, count in counts.items())
        raise QuantbenchError(
            f"{rel}: inputs hold different sample counts ({listed}); give every input the same number"
        )
    count = next(iter(counts.values()))
    if count == 0:
        raise SkipSample("holds no samples")
    return [
        (f"{rel}[{i}]" if any_batched else rel, {name: samples[i] for name, samples in per_input.items()})
        for i in range(count)
    ]
