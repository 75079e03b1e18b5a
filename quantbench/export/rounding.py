"""Adaptive rounding of INT8 weights: the integer codes of each quantized Conv, Gemm and MatMul weight chosen
to minimise the error of the layer's output on calibration samples, instead of each weight rounded to its
nearest code.

For a layer ``y = W x`` whose row ``w`` (one output channel) has the scale ``s`` (its largest |w| / 127,
exactly as nearest rounding has it, so the exported scales do not change), the error of that output
channel over the samples is ``(w - s q)ᵀ H (w - s q)`` with ``H = Σ x xᵀ`` over the layer's input vectors
``x`` (the image patches a convolution reads, one ``H`` per group of a grouped convolution). The codes are
chosen column by column, in order of decreasing ``H`` diagonal (the inputs that carry most energy
first); after a column is rounded, the columns not yet rounded move to compensate for its error through
the inverse of ``H`` (the optimal-brain-quantization update that GPTQ uses), with ``H`` damped by 1 % of
its mean diagonal. A row keeps the codes of nearest rounding where those give the lower error on the
samples, so the result is never worse than nearest rounding on the data it was fitted on.

``H`` comes from the FP32 model's input of each layer on the fitting images (those of bias correction),
at most :data:`MAX_POSITIONS` evenly spread positions of each image for a convolution. One pass over the
images, run in pieces of :data:`~quantbench.export.bias_correction.PIECE` samples without a memory arena.
Conv with 2-D kernels, Gemm and MatMul whose weight is their second input are rounded; other quantized
weights (ConvTranspose, 1-D or 3-D convolutions, a weight shared by several nodes) keep nearest rounding.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.errors import QuantbenchError

if TYPE_CHECKING:
    import onnx

    from quantbench.export.qdq import QdqPlan

MAX_POSITIONS = 4096
"""Largest number of output positions of one image a convolution's ``H`` sums (a strided grid over the
output beyond that)."""
BLOCK = 128
"""Columns rounded one by one before their compensation reaches the later columns in one product."""
DAMPING = 0.01
"""``H`` is damped by this fraction of its mean diagonal before it is inverted."""
ROUNDING = ("nearest", "adaptive")
"""The values of ``--weight-rounding``."""


@dataclass(frozen=True)
class WeightSite:
    """One weight that adaptive rounding may round: read by one node, quantized along ``axis``.

    Attributes:
        weight: the weight's tensor name.
        axis: its channel axis (that of its scales).
        node: the reading node's label.
        op: ``Conv``, ``Gemm`` or ``MatMul``.
        data: the tensor the node multiplies the weight with (its input activation).
        attributes: the node's attributes that shape its input vectors (Conv: group, kernel, strides,
            pads, dilations; Gemm: transA, transB).
    """

    weight: str
    axis: int
    node: str
    op: str
    data: str
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def groups(self) -> int:
        """Input groups: a convolution's ``group``, else 1."""
        return int(self.attributes.get("group", 1))


@dataclass
class WeightRounding:
    """Codes adaptive rounding chose, and what it did.

    Attributes:
        codes: (weight, axis) -> int8 codes in the weight's own layout.
        nodes: per rounded node: ``node``, ``weight``, ``rows`` (output channels), ``adaptive_rows`` (rows
            whose adaptive codes won over nearest), ``error_ratio`` (the summed output error of the
            chosen codes over that of nearest rounding, on the fitting samples).
        skipped: labels of quantized nodes left to nearest rounding, with why.
        images: samples ``H`` was summed over.
        seconds: wall time.
    """

    codes: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    images: int = 0
    seconds: float = 0.0

    def details(self) -> dict[str, Any]:
        """JSON-ready summary for ``results.json``."""
        ratios = [float(n["error_ratio"]) for n in self.nodes if n["error_ratio"] is not None]
        return {
            "method": "adaptive",
            "nodes": self.nodes,
            "skipped": self.skipped,
            "images": self.images,
            "seconds": round(self.seconds, 3),
            "median_error_ratio": float(np.median(ratios)) if ratios else None,
        }


# --- which weights, and their rows --------------------------------------------------------------


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def weight_sites(model: onnx.ModelProto, plan: QdqPlan) -> tuple[list[WeightSite], dict[str, str]]:
    """The weights of ``plan`` adaptive rounding handles, and the nodes it leaves to nearest rounding
    (label -> why).

    Args:
        model: the FP32 model ``plan`` was made for (its node indices).
        plan: the Q/DQ plan (:func:`quantbench.export.qdq.plan_qdq`).
    """
    from quantbench.export.qdq import node_label

    readers: dict[str, int] = {}
    for i, j, _ in plan.weights:
        name = model.graph.node[i].input[j]
        readers[name] = readers.get(name, 0) + 1
    sites, skipped = [], {}
    for i, j, axis in plan.weights:
        node = model.graph.node[i]
        label, attributes = node_label(node, i), _attributes(node)
        why = _unsupported(node, j, axis, attributes, readers[node.input[j]])
        if why:
            skipped[label] = why
            continue
        sites.append(WeightSite(node.input[j], axis, label, node.op_type, node.input[0], attributes))
    return sites, skipped


def _unsupported(node: onnx.NodeProto, j: int, axis: int, attributes: Mapping[str, Any], readers: int) -> str:
    """Why a quantized weight keeps nearest rounding (empty: it does not)."""
    if readers > 1:
        return "weight read by more than one node"
    if j != 1 or node.op_type not in ("Conv", "Gemm", "MatMul"):
        return f"{node.op_type} weights"
    if node.op_type == "Conv" and axis != 0:
        return "Conv weights on another axis than the output channels"
    if node.op_type == "Conv" and attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return "Conv with auto_pad"
    if node.op_type == "Gemm" and attributes.get("transA", 0):
        return "Gemm with transA"
    return ""


def weight_rows(weight: np.ndarray, site: WeightSite) -> np.ndarray:
    """The weight as ``(groups, rows, d)``: one row per output channel, its ``d`` entries in the order
    :func:`input_vectors` lays out the input."""
    if site.op == "Conv":
        if weight.ndim != 4:
            raise QuantbenchError(f"{site.node}: only 2-D convolutions are rounded adaptively")
        g = site.groups
        return weight.reshape(g, weight.shape[0] // g, -1)
    rows = weight if (site.op == "Gemm" and site.attributes.get("transB", 0)) else weight.T
    return rows.reshape(1, rows.shape[0], rows.shape[1])


def from_rows(rows: np.ndarray, weight: np.ndarray, site: WeightSite) -> np.ndarray:
    """Inverse of :func:`weight_rows`: codes ``(groups, rows, d)`` back in the weight's layout."""
    if site.op == "Conv":
        return rows.reshape(weight.shape)
    flat = rows[0]
    return flat if (site.op == "Gemm" and site.attributes.get("transB", 0)) else flat.T


def input_vectors(x: np.ndarray, site: WeightSite, weight_shape: Sequence[int]) -> np.ndarray:
    """The vectors the node multiplies each weight row with, as ``(groups, positions, d)`` float32: image
    patches for a convolution (at most :data:`MAX_POSITIONS` output positions per sample, on a strided
    grid), rows of the input matrix for Gemm and MatMul."""
    if site.op != "Conv":
        return np.ascontiguousarray(x.reshape(1, -1, x.shape[-1]), dtype=np.float32)
    return np.ascontiguousarray(patch_columns(x, site, weight_shape).transpose(0, 2, 1))


def _on_grid(positions: np.ndarray) -> np.ndarray:
    """Every ``step``-th output position along axes 2 and 3, ``step`` the smallest that leaves at most
    :data:`MAX_POSITIONS` of them."""
    step = int(np.ceil(np.sqrt(positions.shape[2] * positions.shape[3] / MAX_POSITIONS)))
    return positions[:, :, ::step, ::step]


def patch_columns(x: np.ndarray, site: WeightSite, weight_shape: Sequence[int]) -> np.ndarray:
    """A convolution's :func:`input_vectors` as columns, ``(groups, d, positions)`` float32: laid out
    with the positions last, the copy out of the input's windows reads them in order (2-4x faster than
    rows where the kernel is large against the channels of a group, as in depthwise convolutions)."""
    from numpy.lib.stride_tricks import sliding_window_view

    a, (kh, kw) = site.attributes, weight_shape[2:]
    sh, sw = a.get("strides", [1, 1])
    dh, dw = a.get("dilations", [1, 1])
    top, left, bottom, right = a.get("pads", [0, 0, 0, 0])
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    windows = sliding_window_view(padded, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    windows = _on_grid(windows[:, :, ::sh, ::sw, ::dh, ::dw])
    n, c, oh, ow = windows.shape[:4]
    g = site.groups
    columns = windows.reshape(n, g, c // g, oh, ow, kh, kw).transpose(1, 2, 5, 6, 0, 3, 4)
    return np.ascontiguousarray(columns, dtype=np.float32).reshape(g, (c // g) * kh * kw, n * oh * ow)


def input_products(x: np.ndarray, site: WeightSite, weight_shape: Sequence[int]) -> np.ndarray:
    """``Σ v vᵀ`` over :func:`input_vectors` ``v``, float64 ``(groups, d, d)``. A pointwise convolution
    (1x1 kernel, one group, no padding) multiplies its input's channels at each position: its products
    come from the input as it lies, one image at a time, without laying out patches."""
    if site.op != "Conv":
        vectors = input_vectors(x, site, weight_shape)
        return np.matmul(vectors.transpose(0, 2, 1), vectors).astype(np.float64)
    a = site.attributes
    pointwise = tuple(weight_shape[2:]) == (1, 1) and site.groups == 1 and not any(a.get("pads", [0] * 4))
    if not pointwise:
        columns = patch_columns(x, site, weight_shape)
        return np.matmul(columns, columns.transpose(0, 2, 1)).astype(np.float64)
    sh, sw = a.get("strides", [1, 1])
    rows = np.ascontiguousarray(_on_grid(x[:, :, ::sh, ::sw]), dtype=np.float32)
    rows = rows.reshape(rows.shape[0], rows.shape[1], -1)
    return np.matmul(rows, rows.transpose(0, 2, 1)).sum(axis=0, dtype=np.float64)[None]


# --- the rounding itself ---------------------------------------------------------------------------


def nearest_codes(rows: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Round to nearest (half to even), clipped to [-127, 127]: ``rows`` (g, r, d), ``scales`` (g, r)."""
    return np.clip(np.rint(rows / scales[..., None]), -127, 127)


def output_error(rows: np.ndarray, codes: np.ndarray, scales: np.ndarray, hessian: np.ndarray) -> np.ndarray:
    """Per row, ``(w - s q)ᵀ H (w - s q)``: rows/codes (g, r, d), scales (g, r), hessian (g, d, d)."""
    delta = rows - codes * scales[..., None]
    return np.sum(np.matmul(delta, hessian) * delta, axis=2)


def adaptive_codes(rows: np.ndarray, scales: np.ndarray, hessian: np.ndarray) -> np.ndarray:
    """Codes chosen column by column with error compensation (see the module docstring), for every group
    at once: ``rows`` (g, r, d) float64, ``scales`` (g, r), ``hessian`` (g, d, d). Nearest codes are
    not substituted here (see :func:`round_rows`)."""
    d = rows.shape[2]
    h = hessian.astype(np.float64).copy()
    diagonal = np.diagonal(h, axis1=1, axis2=2).copy()
    dead = diagonal <= 0
    gi, di = np.nonzero(dead)
    h[gi, di, di] = 1.0
    order = np.argsort(-np.where(dead, -1.0, diagonal), axis=1, kind="stable")
    h = np.take_along_axis(np.take_along_axis(h, order[:, :, None], axis=1), order[:, None, :], axis=2)
    w = np.take_along_axis(rows.astype(np.float64), order[:, None, :], axis=2).copy()
    mean = np.diagonal(h, axis1=1, axis2=2).mean(axis=1)
    h += (DAMPING * mean)[:, None, None] * np.eye(d)
    upper = np.transpose(np.linalg.cholesky(np.linalg.inv(h)), (0, 2, 1))  # inverse's Cholesky factor
    codes = np.empty_like(w)
    for start in range(0, d, BLOCK):
        end = min(start + BLOCK, d)
        errors = np.empty((*w.shape[:2], end - start))
        for j in range(start, end):
            q = np.clip(np.rint(w[:, :, j] / scales), -127, 127)
            codes[:, :, j] = q
            error = (w[:, :, j] - q * scales) / upper[:, j, j][:, None]
            w[:, :, j + 1 : end] -= error[:, :, None] * upper[:, None, j, j + 1 : end]
            errors[:, :, j - start] = error
        w[:, :, end:] -= np.matmul(errors, upper[:, start:end, end:])  # the block's errors, at once
    out = np.empty_like(codes)
    np.put_along_axis(out, np.broadcast_to(order[:, None, :], codes.shape), codes, axis=2)
    return out


def round_rows(
    rows: np.ndarray, scales: np.ndarray, hessian: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the better of adaptive and nearest codes on ``hessian``.

    Returns:
        (codes (g, r, d), the chosen codes' errors (g, r), nearest rounding's errors (g, r)).
    """
    nearest = nearest_codes(rows, scales)
    adaptive = adaptive_codes(rows, scales, hessian)
    near_error = output_error(rows, nearest, scales, hessian)
    adaptive_error = output_error(rows, adaptive, scales, hessian)
    better = adaptive_error < near_error
    codes = np.where(better[..., None], adaptive, nearest)
    return codes, np.where(better, adaptive_error, near_error), near_error


# --- fitting on calibration samples ----------------------------------------------------------------


def collect_hessians(
    fp32_model: onnx.ModelProto,
    sites: Sequence[WeightSite],
    weights: Mapping[str, np.ndarray],
    feeds: Sequence[Mapping[str, np.ndarray]],
    threads: int = 0,
) -> tuple[dict[str, np.ndarray], int]:
    """``H = Σ x xᵀ`` (float64, ``(groups, d, d)``) of every site's input vectors, in one pass of the
    FP32 model over ``feeds`` in pieces (see :mod:`quantbench.export.passes`).

    Returns:
        (site label -> H, the number of samples).

    Raises:
        QuantbenchError: ONNX Runtime cannot run the model.
    """
    from quantbench.export import passes
    from quantbench.model import expose_tensors

    names = sorted({site.data for site in sites})
    runner = passes.session(
        expose_tensors(fp32_model, names),
        threads,
        "the FP32 model",
        purpose="adaptive rounding",
        release=True,
    )
    hessians: dict[str, np.ndarray] = {}
    samples = 0
    for batch in feeds:
        for piece in passes.pieces(batch):
            values = dict(zip(names, runner.run(names, piece), strict=True))
            samples += passes.batch_size(piece)
            for site in sites:
                product = input_products(values[site.data], site, weights[site.weight].shape)
                if site.node in hessians:
                    hessians[site.node] += product
                else:
                    hessians[site.node] = product
    return hessians, samples


def _weight_values(
    model: onnx.ModelProto, plan: QdqPlan, sites: Sequence[WeightSite]
) -> dict[str, np.ndarray]:
    """Each site's weight as quantization reads it (folded values where the plan folded it)."""
    from quantbench.graph import constant_values

    constants = constant_values(model.graph)
    return {
        site.weight: np.asarray(
            plan.folded[site.weight] if site.weight in plan.folded else constants[site.weight]
        )
        for site in sites
    }


def fit_rounding(
    fp32_model: onnx.ModelProto,
    plan: QdqPlan,
    feeds: Sequence[Mapping[str, np.ndarray]],
    threads: int = 0,
) -> WeightRounding:
    """Adaptive codes for every weight of ``plan`` that :func:`weight_sites` takes, fitted on ``feeds``.

    Args:
        fp32_model: the FP32 model ``plan`` was made for (at opset 13 or more).
        plan: the Q/DQ plan; its weights' scales stay those of nearest rounding.
        feeds: the fitting batches.
        threads: ONNX Runtime threads (0: every core).

    Raises:
        QuantbenchError: ONNX Runtime cannot run the model.
    """
    from quantbench.export.qdq import quantize_weight

    started = time.time()
    sites, skipped = weight_sites(fp32_model, plan)
    weights = _weight_values(fp32_model, plan, sites)
    hessians, samples = collect_hessians(fp32_model, sites, weights, feeds, threads) if sites else ({}, 0)
    result = WeightRounding(skipped=skipped, images=samples)
    for site in sites:
        weight = weights[site.weight].astype(np.float64)
        _, scales = quantize_weight(weights[site.weight], site.axis)
        rows = weight_rows(weight, site)
        row_scales = scales.astype(np.float64).reshape(rows.shape[:2])
        codes, chosen, nearest = round_rows(rows, row_scales, hessians.pop(site.node))
        result.codes[site.weight, site.axis] = from_rows(codes, weight, site).astype(np.int8)
        total = float(nearest.sum())
        result.nodes.append(
            {
                "node": site.node,
                "weight": site.weight,
                "rows": int(codes.shape[0] * codes.shape[1]),
                "adaptive_rows": int((chosen < nearest).sum()),
                "error_ratio": float(chosen.sum()) / total if total > 0 else None,
            }
        )
    result.seconds = time.time() - started
    return result
