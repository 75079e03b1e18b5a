"""Batches of named arrays kept for later passes: in memory up to a limit, the rest in a temporary folder.

The fitted steps of a run (bias correction, adaptive rounding, the check images that judge them) go over
the same calibration batches several times, and bias correction keeps the tensors at its cuts for every
batch. On large inputs these take more memory than the model's run itself (64 pages of PP-OCRv4 det at
1152 px: 1 GiB of input alone; its correction's cuts up to 1.3 GiB more). A store keeps arrays in memory
while they take at most its ``limit`` bytes; an array that would go over is written to an ``.npy`` file
in a folder of the store's own under the system's temporary directory (``TMPDIR``) and read back when
asked for; the folder goes when the store does. Arrays read back are equal to those written, to the bit.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from quantbench.errors import QuantbenchError

SPILL_BYTES = 128 << 20
"""The default memory limit of a store."""


class BatchStore(Sequence[dict[str, np.ndarray]]):
    """Batches (name -> array), indexed from 0; ``store[i]`` is a new dict of batch ``i``'s arrays.

    Args:
        limit: the most bytes of arrays held in memory; arrays beyond go to files.
    """

    def __init__(self, limit: int = SPILL_BYTES) -> None:
        self.limit = limit
        self._batches: list[dict[str, np.ndarray | tuple[Path, int]]] = []
        self._folder: Path | None = None
        self._written = 0
        self.in_memory = 0
        """Bytes of the arrays held in memory now."""
        self.nbytes = 0
        """Bytes of every array held now, in memory or in files."""

    @property
    def spilled(self) -> bool:
        """Whether any array has gone to a file so far."""
        return self._folder is not None

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:  # type: ignore[override]
        return self.get(index)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(self)):
            yield self.get(i)

    def names(self, index: int) -> list[str]:
        """The names batch ``index`` holds."""
        return list(self._batches[index])

    def get(self, index: int, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Batch ``index``'s arrays (only ``names`` where given), those in files read back."""
        held = self._batches[index]
        values = {}
        for name in held if names is None else names:
            value = held[name]
            values[name] = np.load(value[0], mmap_mode="r") if isinstance(value, tuple) else value
        return values

    def append(self, batch: Mapping[str, np.ndarray]) -> None:
        """Add a batch at the end."""
        self._batches.append({})
        self.update(len(self) - 1, batch)

    def update(self, index: int, values: Mapping[str, np.ndarray]) -> None:
        """Add arrays to batch ``index``, or replace those of the same names."""
        self.drop(index, [name for name in values if name in self._batches[index]])
        for name, value in values.items():
            array = np.asarray(value)
            self.nbytes += array.nbytes
            if self.in_memory + array.nbytes <= self.limit:
                self.in_memory += array.nbytes
                self._batches[index][name] = array
            else:
                self._batches[index][name] = (self._write(array), array.nbytes)

    def drop(self, index: int, names: Iterable[str]) -> None:
        """Forget ``names`` of batch ``index``."""
        for name in list(names):
            value = self._batches[index].pop(name)
            if isinstance(value, tuple):
                value[0].unlink()
                self.nbytes -= value[1]
            else:
                self.nbytes -= value.nbytes
                self.in_memory -= value.nbytes

    def _write(self, array: np.ndarray) -> Path:
        """``array`` in a new file of the store's folder (made on first use)."""
        try:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="quantbench-batches-"))
                weakref.finalize(self, shutil.rmtree, self._folder, ignore_errors=True)
            path = self._folder / f"{self._written}.npy"
            self._written += 1
            np.save(path, array, allow_pickle=False)
        except OSError as exc:
            where = self._folder or tempfile.gettempdir()
            raise QuantbenchError(
                f"cannot write the calibration batches kept for later passes to {where}: {exc.strerror}; "
                "free disk space there or point TMPDIR at a writable folder with room"
            ) from None
        return path


def keep(batches: Iterable[Mapping[str, np.ndarray]], limit: int = SPILL_BYTES) -> BatchStore:
    """The batches of ``batches`` in a store of memory limit ``limit``."""
    store = BatchStore(limit)
    for batch in batches:
        store.append(batch)
    return store
