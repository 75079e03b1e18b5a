"""The FP32 model run with its float tensors exposed, for the calibration pass.

A session that returns every float tensor holds all of one batch's activations at once: 877 MiB a page
for PP-OCRv4 det at 736 px, 2149 MiB at 1152 px. ONNX Runtime keeps every graph output of a run alive
until the run returns, even those not fetched, so fetching fewer does not help. Where one sample's tensors
would take more than :data:`GROUP_BYTES`, they are split into groups, contiguous in graph order, and the
model into consecutive parts, one per group (:class:`~quantbench.calibration.parts.SplitModel`): each
part returns its group and the tensors later parts read, so the model still runs once a batch and the
activations alive at once are one group's and those carried to the next part.

Sizes come from ONNX shape inference with the batch's input shapes (data propagation on, so Reshape and
Resize targets computed from shapes resolve); a tensor it leaves unresolved counts as the mean of the
resolved ones. The plan is made on the first batch and made again only when a batch would overflow one
of its groups, so a folder of varied sizes does not rebuild the sessions at every batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.calibration.parts import SplitModel, Values
from quantbench.errors import QuantbenchError, first_line

if TYPE_CHECKING:
    import onnx

GROUP_BYTES = 448 << 20
"""The most activation bytes one run exposes per sample where tensors can be grouped (a single larger
tensor is a group of its own)."""


def open_session(model_bytes: bytes, threads: int = 0, what: str = "the model") -> Any:
    """An ONNX Runtime CPU session for a serialized model.

    The session returns each batch's activations to the system (no memory arena), and its idle threads
    sleep rather than spin, since the histogram threads share the cores with it.

    Args:
        model_bytes: the serialized ONNX model.
        threads: intra-op threads; 0 lets ONNX Runtime use every core.
        what: names the model in the error.

    Raises:
        QuantbenchError: ONNX Runtime cannot load the model.
    """
    from quantbench.backends.onnxruntime import SessionSettings, make_session

    settings = SessionSettings(threads=threads, memory_arena=False, spinning=False)
    return make_session(model_bytes, settings, what)


def tensor_bytes(
    model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]], names: list[str]
) -> list[int]:
    """Bytes of each of ``names`` (as float32) for inputs of ``shapes``, from shape inference.

    Tensors inference leaves unresolved count as the mean of the resolved ones (0 if none resolves).
    """
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    del fixed.graph.value_info[:]
    for value in fixed.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            del dims[:]
            for size in shapes[value.name]:
                dims.add().dim_value = int(size)
    try:
        graph = onnx.shape_inference.infer_shapes(fixed, data_prop=True).graph
    except Exception:  # best effort: nothing resolved
        graph = fixed.graph
    sizes: dict[str, int] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            sizes[value.name] = 4 * int(np.prod([d.dim_value for d in dims]))
    known = [sizes[name] for name in names if name in sizes]
    fallback = int(np.mean(known)) if known else 0
    return [sizes.get(name, fallback) for name in names]


def plan_groups(names: list[str], sizes: list[int], budget: int) -> list[list[str]]:
    """``names`` in contiguous groups of at most ``budget`` bytes each (a larger tensor alone)."""
    groups: list[list[str]] = []
    total = budget + 1
    for name, size in zip(names, sizes, strict=True):
        if total + size > budget:
            groups.append([])
            total = 0
        groups[-1].append(name)
        total += size
    return groups


class Exposure:
    """Runs batches through the model and returns its float tensors, a group at a time.

    Args:
        model: the FP32 model.
        tensors: the tensors to return, in graph order; graph inputs among them come from the batch.
        graph_inputs: names of the model's inputs.
        threads: ONNX Runtime intra-op threads (0: every core).
        budget: the most bytes one group may take per sample (None: :data:`GROUP_BYTES`).
        purpose: what the tensors are for, in error messages ("calibration", "bias correction").
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        tensors: list[str],
        graph_inputs: list[str],
        threads: int = 0,
        budget: int | None = None,
        purpose: str = "calibration",
    ) -> None:
        self.model, self.tensors, self.threads = model, tensors, threads
        self.budget = GROUP_BYTES if budget is None else budget
        self.purpose = purpose
        self.inputs = [name for name in tensors if name in graph_inputs]
        self.computed = [name for name in tensors if name not in graph_inputs]
        self.groups: list[list[str]] = []
        """The present plan (empty before the first batch)."""
        self._whole: Any = None
        self._split: SplitModel | None = None
        self._seen: set[tuple[tuple[str, tuple[int, ...]], ...]] = set()
        self._bytes_per_value = 0.0
        """Exposed bytes per input value at the last shape inference."""

    def runs(self, feed: Mapping[str, np.ndarray]) -> Iterator[Values]:
        """One batch's tensors, one group after the other; the graph inputs among the tensors come with
        the first group, as float32 copies of the feed (folding may overwrite them).

        Raises:
            QuantbenchError: ONNX Runtime fails on the batch.
        """
        self._plan(feed)
        copies: Values = {name: (np.array(feed[name], dtype=np.float32), None) for name in self.inputs}
        if self._split is not None:
            for values in self._split.runs(feed):
                values.update(copies)  # in place: the folding empties the dict the parts still hold
                copies = {}
                yield values
            return
        if self.groups:
            copies.update(_run(self._session(), self.computed, feed, self.purpose))
        yield copies

    def _plan(self, feed: Mapping[str, np.ndarray]) -> None:
        """Plan the groups anew where this batch's shapes are new and one sample of them would overflow a
        present group.

        The budget holds for one sample, not for the batch, so that the groups (and with them the
        tensors' last bits, which ONNX Runtime's fusions in a cut model can change) do not depend on the
        batch size; a large ``--batch`` takes memory in proportion, as without groups.
        """
        shapes = tuple(sorted((name, tuple(np.shape(value))) for name, value in feed.items()))
        if self.groups and shapes in self._seen:
            return
        self._seen.add(shapes)
        if not self.computed:
            return
        batch = max(1, len(next(iter(feed.values()))))
        values = sum(int(np.prod(shape)) for _, shape in shapes) // batch  # input values a sample
        if self._split is None and self.groups and values * self._bytes_per_value <= self.budget / 2:
            return  # far within the budget at the last inference's ratio: no inference for each new shape
        sizes = [size // batch for size in tensor_bytes(self.model, dict(shapes), self.computed)]
        self._bytes_per_value = sum(sizes) / max(1, values)
        if sum(sizes) <= self.budget:
            plan = [self.computed]
        else:
            plan = plan_groups(self.computed, sizes, self.budget)
        if self.groups:
            by_name = dict(zip(self.computed, sizes, strict=True))
            sizes_now = (sum(by_name[name] for name in group) for group in self.groups if len(group) > 1)
            if max(sizes_now, default=0) <= self.budget:
                return  # the present groups hold this batch too
        self.groups, self._whole = plan, None
        self._split = SplitModel(self.model, plan, self._open_part, self.purpose) if len(plan) > 1 else None

    def _open_part(self, part: onnx.ModelProto) -> Any:
        """The session of one part of the split model."""
        return open_session(part.SerializeToString(), self.threads, f"a part of the model for {self.purpose}")

    def _session(self) -> Any:
        """The session that returns every tensor at once."""
        if self._whole is None:
            from quantbench.model import expose_tensors

            part = expose_tensors(self.model, self.computed)
            self._whole = open_session(
                part.SerializeToString(), self.threads, f"the model for {self.purpose}"
            )
        return self._whole


def _run(session: Any, names: list[str], feed: Mapping[str, np.ndarray], purpose: str) -> Values:
    """``names`` computed by ``session`` on ``feed``: numpy views of ONNX Runtime's memory (no copy), each
    paired with its OrtValue.

    Raises:
        QuantbenchError: ONNX Runtime fails on the batch.
    """
    from onnxruntime import OrtValue

    wanted = {i.name for i in session.get_inputs()}
    try:
        ort_feed = {
            name: OrtValue.ortvalue_from_numpy(array) for name, array in feed.items() if name in wanted
        }
        outputs = session.run_with_ort_values(names, ort_feed)
    except Exception as exc:
        raise QuantbenchError(f"ONNX Runtime failed on a batch for {purpose}: {first_line(exc)}") from None
    return {name: (value.numpy(), value) for name, value in zip(names, outputs)}
