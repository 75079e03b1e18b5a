"""Passes of a model over fitting samples in small pieces, shared by bias correction and adaptive rounding.

Every pass runs the model (or a part of it) without a memory arena on pieces of :data:`PIECE` samples of
each batch, so memory follows the piece, not the batch: a pass that returns every corrected layer's
output at once, at batch 16 on PP-OCRv4 det's 736x736 pages, would need some 3 GiB.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import onnx

PIECE = 2
"""Samples per run in every pass. Means and sums add up exactly over any split; outputs are joined again."""


def session(
    model: onnx.ModelProto,
    threads: int,
    what: str,
    *,
    purpose: str = "bias correction",
    as_written: bool = False,
    release: bool = False,
) -> Any:
    """An ONNX Runtime CPU session (see :func:`quantbench.backends.onnxruntime.make_session`);
    ``as_written`` turns graph optimizations off, so a Q/DQ model keeps its Q/DQ semantics (no pair
    folded into a fused node, no weight re-quantized); ``release`` runs it without a memory arena;
    ``what`` and ``purpose`` name the model in error messages.

    Its idle threads sleep: between runs numpy works on what the run returned (sums, products) on the
    same cores (adaptive rounding's fit on EfficientNet-Lite0's 32 images, 2 cores: 6.5-6.7 s against
    6.8-7.1 s with ONNX Runtime's threads spinning; bias correction unchanged)."""
    from quantbench.backends.onnxruntime import SessionSettings, make_session

    settings = SessionSettings(
        threads=threads, optimize=not as_written, memory_arena=not release, spinning=False
    )
    return make_session(model, settings, f"{what} for {purpose}")


def batch_size(batch: Mapping[str, np.ndarray]) -> int:
    """Samples in ``batch``: the first axis of its first input."""
    return len(next(iter(batch.values())))


def pieces(batch: Mapping[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """``batch`` in slices of :data:`PIECE` samples (every input sliced alike)."""
    size = batch_size(batch)
    for start in range(0, size, PIECE):
        yield {name: value[start : start + PIECE] for name, value in batch.items()}


def run_whole(runner: Any, names: list[str] | None, batch: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """``names`` (None: every output) of the session ``runner`` for ``batch``, computed piece by piece and
    joined."""
    import numpy as np

    parts = [runner.run(names, piece) for piece in pieces(batch)]
    return [np.concatenate(values) for values in zip(*parts, strict=True)]
