"""The report's tables, built with pandas from ``results.json`` and handed to the template as text.

Every cell is plain text; the template escapes it, so names from the model or the file system are shown as
they are and never interpreted as HTML. Long tables are cut to a limit, and the :class:`Table` says how many
rows were left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quantbench.evaluation.registry import METRICS, Metric, metric_by_key
from quantbench.report.analysis import (
    PLAIN_FORMAT,
    TENSOR_ROWS,
    Headline,
    Point,
    finite,
    headline,
    layer_precisions,
    metric_group,
    number,
    tensors_shown,
)

if TYPE_CHECKING:
    import pandas as pd

OUTPUT_TABLES = 20
"""Most outputs given a table of their own."""
SENSITIVITY_ROWS = 50
"""Most rows of the sensitivity ranking and curve tables."""
PRECISION_ORDER = ("INT8", "FP16", "BF16", "FP8", "INT4", "FP32")
"""Column order of the layers-per-precision table (other precisions follow, sorted)."""


@dataclass
class Table:
    """A table ready to render.

    Attributes:
        columns: the column headings.
        rows: the cells, as text.
        numeric: per column, True where the cells are numbers (aligned right).
        caption: one line saying what the table shows.
        total: the rows there were before the table was cut.
    """

    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)
    caption: str = ""
    total: int = 0

    @property
    def omitted(self) -> int:
        """Rows left out of the table."""
        return max(0, self.total - len(self.rows))


def _text(value: Any) -> str:
    return "–" if value is None else str(value)


def percent(value: Any) -> str:
    """A fraction as a percentage with one decimal, ``–`` when missing."""
    x = number(value)
    return "–" if x is None else f"{100.0 * x:.1f} %"


def general(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (``nan``/``inf`` as such), ``–`` when missing."""
    x = number(value)
    return "–" if x is None else format(x, f".{digits}g")


def fixed(value: Any, decimals: int = 2) -> str:
    """A number with ``decimals`` decimals, ``–`` when missing."""
    x = number(value)
    return "–" if x is None else f"{x:.{decimals}f}"


def rate(value: Any) -> str:
    """Images per second: whole numbers from 1,000 up, one decimal below, ``–`` when missing."""
    x = number(value)
    if x is None:
        return "–"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.1f}"


def metric_cell(metric: Metric) -> Callable[[Any], str]:
    """The formatter of ``metric``'s cells: its registered number format, ``–`` when missing."""

    def cell(value: Any) -> str:
        x = number(value)
        return "–" if x is None else metric.format(x)

    return cell


ACCURACY_METRICS = ("top1_agreement", "top5_overlap", "top1_accuracy", "top5_accuracy", "rel_l2")
"""The metrics of the accuracy-vs-speed table after the headline (the per-output tables have them all)."""


def to_table(
    frame: pd.DataFrame,
    formats: dict[str, Callable[[Any], str]],
    *,
    caption: str = "",
    total: int | None = None,
    keep_empty: Sequence[str] = (),
) -> Table:
    """Turn a frame of raw values (None where missing) into a :class:`Table`.

    Args:
        frame: one row per table row; column names are the headings.
        formats: heading -> formatter for numeric columns; other columns are shown as text.
        caption: what the table shows.
        total: rows before cutting (default: the frame's length).
        keep_empty: headings kept even when every cell is missing (others are dropped).

    Returns:
        The table, with columns holding no value at all left out.
    """
    keep = [c for c in frame.columns if c in keep_empty or frame[c].map(lambda v: v is not None).any()]
    frame = frame[keep]
    rows = [
        [formats[c](v) if c in formats else _text(v) for c, v in zip(keep, values, strict=True)]
        for values in frame.itertuples(index=False, name=None)
    ]
    return Table(
        [str(c) for c in keep],
        rows,
        [c in formats for c in keep],
        caption,
        len(frame) if total is None else total,
    )


def _frame(records: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(records, columns=list(columns), dtype=object).astype(object)


ONNX_TYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    16: "bfloat16",
}
"""Names of the ONNX element types a model's outputs are recorded with."""


def io_table(values: list[dict[str, Any]]) -> Table:
    """The model's inputs or outputs: name, shape (``N×3×224×224``) and element type.

    Args:
        values: ``model.inputs`` or ``model.outputs`` of ``results.json``.
    """
    records = []
    for value in values:
        kind = value.get("dtype", value.get("elem_type"))
        records.append(
            {
                "name": str(value.get("name", "?")),
                "shape": "×".join(str(d) for d in value.get("shape") or []) or "scalar",
                "type": ONNX_TYPES.get(kind, str(kind)) if isinstance(kind, int) else kind,
            }
        )
    return to_table(_frame(records, ["name", "shape", "type"]), {}, keep_empty=("name",))


def _fp32_figures(shown: Sequence[Metric], info: dict[str, Any]) -> dict[str, float]:
    """FP32's figures against itself, of the metrics ``shown`` that apply to an output described by
    ``info`` (its accuracy against labels, if any, is in ``results.json``)."""
    class_scores, group = bool(info.get("class_scores")), metric_group(info)
    return {
        metric.key: metric.reference_value
        for metric in shown
        if metric.reference_value is not None
        and metric.applies(class_scores=class_scores, labels=False, group=group)
    }


def accuracy_table(results: dict[str, Any], pts: list[Point], front: list[str]) -> Table:
    """One row per variant: the headline, the headline output's other accuracy metrics, latency at the
    first bench batch, speed-up.

    Args:
        results: the content of ``results.json``.
        pts: the variants' points, in the order of ``results["variants"]``
            (:func:`quantbench.report.analysis.points`).
        front: the variants on the Pareto front.
    """
    head = headline(results)
    output = head.output
    shown = [metric_by_key(key) for key in ACCURACY_METRICS if key != head.metric]
    info = results["model"]["comparison_outputs"].get(output) or {}
    fp32_values = _fp32_figures(shown, info)
    ref = next((p for p in pts if p.reference), None)
    records = []
    for variant, p in zip(results["variants"], pts, strict=True):
        metrics = dict((variant.get("outputs") or {}).get(output) or {})
        if p.reference and output is not None:
            metrics.update(fp32_values)
        speedup = ref.ms / p.ms if ref and ref.ms and p.ms else None
        notes = [] if p.representative or p.ms is None else ["latency emulated"]
        if p.reference:
            notes.insert(0, "reference")
        record: dict[str, Any] = {"variant": p.variant, head.label: head.value(variant)}
        record.update({metric.label: metrics.get(metric.key) for metric in shown})
        record.update(
            {
                "batch": p.batch,
                "ms / batch": p.ms,
                "images/s": p.images_per_s,
                "× FP32 speed": speedup,
                "Pareto front": "yes" if p.variant in front else "",
                "note": "; ".join(notes) or None,
            }
        )
        records.append(record)
    formats: dict[str, Callable[[Any], str]] = {metric.label: metric_cell(metric) for metric in shown}
    formats.update({head.label: head.text, "ms / batch": general, "images/s": rate})
    formats["× FP32 speed"] = lambda v: fixed(v, 2)
    columns = list(records[0]) if records else ["variant"]
    return to_table(
        _frame(records, columns),
        formats,
        caption=f"headline output {output!r}" if output else "no output compared",
        keep_empty=("variant",),
    )


BOOKKEEPING = ("samples", "elements", "nan_count", "reference_nan_count")
"""Keys of an output's entry in ``results.json`` that count what was compared rather than measure it."""


def output_metrics(results: dict[str, Any], output: str) -> list[Metric]:
    """The metrics of ``output``'s table: those the registry says apply to it (by its class scores, the
    run's labels and its kind's metric group), then, for a metric of your own (kind ``plugin``), each
    score it returned, labelled by its key."""
    info = results["model"]["comparison_outputs"].get(output) or {}
    labels = bool((results["manifest"].get("arguments") or {}).get("labels"))
    class_scores, group = bool(info.get("class_scores")), metric_group(info)
    metrics = [m for m in METRICS if m.applies(class_scores=class_scores, labels=labels, group=group)]
    if info.get("kind") == "plugin":
        keys: dict[str, None] = {}
        for variant in results["variants"]:
            keys.update(dict.fromkeys((variant.get("outputs") or {}).get(output) or {}))
        taken = {m.key for m in METRICS} | {m.label for m in metrics} | set(BOOKKEEPING)
        higher = bool(info.get("higher_is_better", True))  # the headline's; tables show no direction
        metrics += [
            Metric(str(key), str(key), PLAIN_FORMAT, "every output", higher, None)
            for key in keys
            if str(key) not in taken
        ]
    return metrics


def _kind_caption(results: dict[str, Any], output: str) -> str:
    """What an output holds and what judges it, from its entry in ``comparison_outputs``; empty for a
    ``results.json`` that records no kinds."""
    info = results["model"]["comparison_outputs"].get(output) or {}
    if not info.get("kind"):
        return ""
    head = headline(results)
    caption = f"kind {info['kind']}: {info.get('kind_reason') or 'no reason recorded'}"
    key = info.get("headline")
    if isinstance(key, str):
        label = head.label if output == head.output else _label(key)
        caption += f"; headline: {label}"
    if head.from_verdict and output == head.output:
        caption += " (the verdict is about this output)"
    return caption


def _label(key: str) -> str:
    """The registry's label of ``key``, or the key itself for a metric the registry lacks."""
    try:
        return metric_by_key(key).label
    except KeyError:
        return key


def output_tables(results: dict[str, Any]) -> tuple[list[tuple[str, Table]], int]:
    """A table per compared output (at most ``OUTPUT_TABLES``): one row per variant, every metric that
    applies to the output (:func:`output_metrics`), the output's kind in the caption.

    Returns:
        ([(output name, table)], number of outputs left out).
    """
    outputs = list(results["model"]["comparison_outputs"])
    tables = []
    for output in outputs[:OUTPUT_TABLES]:
        shown = output_metrics(results, output)
        columns = ["variant", *(metric.label for metric in shown)]
        records = []
        for variant in results["variants"]:
            metrics = (variant.get("outputs") or {}).get(output) or {}
            if not metrics:
                continue
            record: dict[str, Any] = {"variant": str(variant.get("name", "?"))}
            record.update({metric.label: metrics.get(metric.key) for metric in shown})
            records.append(record)
        if records:
            formats = {metric.label: metric_cell(metric) for metric in shown}
            table = to_table(_frame(records, columns), formats, caption=_kind_caption(results, output))
            tables.append((output, table))
    return tables, max(0, len(outputs) - OUTPUT_TABLES)


def verdict_table(results: dict[str, Any], head: Headline, pts: list[Point]) -> Table:
    """The verdict, one row per variant: its headline, how far short of FP32's it falls, whether that is
    within the tolerance, its latency at the first bench batch, and notes (reference, recommended,
    latency emulated, a timed model beyond its bound).

    Args:
        results: the content of ``results.json``, with a ``verdict``.
        head: the verdict's headline (:func:`quantbench.report.analysis.headline`).
        pts: the variants' points, in the order of ``results["variants"]``.
    """
    verdict = results["verdict"]
    within = {str(name) for name in verdict.get("within") or []}
    recommended = str(verdict.get("recommended"))
    records = []
    for variant, p in zip(results["variants"], pts, strict=True):
        value = head.value(variant)
        notes = ["reference"] if p.reference else []
        notes += ["recommended"] if p.variant == recommended else []
        notes += [] if p.representative or p.ms is None else ["latency emulated"]
        timed = variant.get("timed_model")
        if isinstance(timed, dict) and timed.get("within_bound") is False:
            notes.append("timed model beyond its bound")
        records.append(
            {
                "variant": p.variant,
                head.label: value,
                "short of FP32 by": head.shortfall(value),
                "within tolerance": "yes" if p.variant in within else "no",
                "ms / batch": p.ms,
                "note": "; ".join(notes) or None,
            }
        )
    formats: dict[str, Callable[[Any], str]] = {head.label: head.text, "ms / batch": general}
    formats["short of FP32 by"] = lambda v: general(v, 3)
    columns = ["variant", head.label, "short of FP32 by", "within tolerance", "ms / batch", "note"]
    return to_table(
        _frame(records, columns),
        formats,
        caption=f"{head.label} of output {head.output!r}, each variant against FP32",
        keep_empty=("variant", head.label),
    )


FLAVOUR_ROWS = 12
"""Roundings of the fast CPU flavour shown per variant in the report (the largest errors)."""


def fast_flavour_table(results: dict[str, Any]) -> Table | None:
    """Per variant timed on the fast CPU flavour, the tensors it rounds that the judged model keeps in
    float, largest measured error first (at most :data:`FLAVOUR_ROWS` each, then a count of the rest).

    Returns:
        The table, or None when no variant was timed on the fast flavour.
    """
    records = []
    for variant in results["variants"]:
        flavour = variant.get("cpu_flavour")
        if not isinstance(flavour, dict) or flavour.get("name") != "fast":
            continue
        roundings = [r for r in flavour.get("roundings") or [] if isinstance(r, dict)]
        for r in roundings[:FLAVOUR_ROWS]:
            readers = r.get("readers") or []
            records.append(
                {
                    "variant": str(variant.get("name", "?")),
                    "tensor": str(r.get("tensor")),
                    "written by": f"{r.get('node')} ({r.get('op')})",
                    "grid": r.get("grid"),
                    "read rounded by": f"{len(readers)} node{'s' if len(readers) != 1 else ''}",
                    "rel. error": r.get("rel_error"),
                }
            )
        if len(roundings) > FLAVOUR_ROWS:
            records.append(
                {"variant": str(variant.get("name", "?")), "tensor": f"{len(roundings) - FLAVOUR_ROWS} more"}
            )
    if not records:
        return None
    columns = ["variant", "tensor", "written by", "grid", "read rounded by", "rel. error"]
    return to_table(
        _frame(records, columns),
        {"rel. error": general},
        caption="rounded in the model timed, float or on another grid in the model judged",
        keep_empty=("variant", "tensor"),
    )


def timed_model_table(results: dict[str, Any]) -> Table | None:
    """Per variant timed on another model than the one judged, and per output: the two models, how far
    apart their outputs are, and whether that is within the bound.

    Returns:
        The table, or None when no variant records a ``timed_model``.
    """
    records = []
    for variant in results["variants"]:
        timed = variant.get("timed_model")
        if not isinstance(timed, dict):
            continue
        bound, within = timed.get("bound_rel_l2"), timed.get("within_bound")
        for output, distance in (timed.get("outputs") or {}).items():
            distance = distance if isinstance(distance, dict) else {}
            records.append(
                {
                    "variant": str(variant.get("name", "?")),
                    "output": str(output),
                    "model judged": timed.get("judged_model"),
                    "model timed": timed.get("model"),
                    "rel. L2": distance.get("rel_l2"),
                    "max abs": distance.get("max_abs"),
                    "bound (rel. L2)": bound,
                    "within bound": ("yes" if within else "no") if isinstance(within, bool) else None,
                }
            )
    if not records:
        return None
    columns = list(records[0])
    formats: dict[str, Callable[[Any], str]] = {"rel. L2": general, "max abs": general}
    formats["bound (rel. L2)"] = general
    return to_table(
        _frame(records, columns),
        formats,
        caption="the model judged (Q/DQ, as it ships) against the model timed on this CPU",
        keep_empty=("variant",),
    )


def ranges_table(results: dict[str, Any], limit: int = TENSOR_ROWS) -> Table:
    """Per tensor: absmax, each set's amax with its ratio to absmax, and the spread (largest / smallest amax).

    Args:
        results: the content of ``results.json``.
        limit: most rows (see :func:`tensors_shown`).
    """
    absmax = (results.get("calibration") or {}).get("absmax") or {}
    names, total = tensors_shown(results, limit)
    labels = list(results["ranges"])
    fixed_columns = ("tensor", "absmax", "max / min")
    headings = {label: f"{label} (ranges)" if label in fixed_columns else label for label in labels}
    records = []
    for name in names:
        top = finite(absmax.get(name))
        record: dict[str, Any] = {"tensor": name, "absmax": top}
        values = []
        for label in labels:
            amax = finite((results["ranges"][label].get("amax") or {}).get(name))
            if amax is not None:
                values.append(amax)
            ratio = f" (×{amax / top:.3f})" if amax is not None and top else ""
            record[headings[label]] = None if amax is None else f"{amax:.4g}{ratio}"
        positive = [v for v in values if v > 0]
        record["max / min"] = max(positive) / min(positive) if positive else None
        records.append(record)
    formats: dict[str, Callable[[Any], str]] = {"absmax": general, "max / min": lambda v: fixed(v, 3)}
    formats.update({heading: _text for heading in headings.values()})
    cut = (
        f"the {len(names)} of {total} tensors where the methods disagree most, " if len(names) < total else ""
    )
    caption = f"{cut}in graph order; each set's amax (× its ratio to absmax)"
    return to_table(
        _frame(records, ["tensor", "absmax", *headings.values(), "max / min"]),
        formats,
        caption=caption,
        total=total,
        keep_empty=("tensor",),
    )


def latency_table(results: dict[str, Any]) -> Table:
    """One row per variant and bench batch size: runs, median / p90 / p99 / mean / min / max ms, images/s."""
    keys = ("median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms")
    records = []
    for variant in results["variants"]:
        for stats in variant.get("latency") or []:
            record: dict[str, Any] = {
                "variant": str(variant.get("name", "?")),
                "batch": stats.get("batch"),
                "runs": stats.get("runs"),
            }
            record.update({key.replace("_ms", " ms"): stats.get(key) for key in keys})
            record["images/s"] = stats.get("images_per_s")
            record["note"] = None if variant.get("latency_representative", True) else "emulated"
            records.append(record)
    columns = ["variant", "batch", "runs", *(key.replace("_ms", " ms") for key in keys), "images/s", "note"]
    formats: dict[str, Callable[[Any], str]] = {key.replace("_ms", " ms"): general for key in keys}
    formats.update({"batch": _text, "runs": _text, "images/s": rate})
    return to_table(_frame(records, columns), formats)


def sensitivity_tables(sensitivity: dict[str, Any], limit: int = SENSITIVITY_ROWS) -> tuple[Table, Table]:
    """The mixed-precision search: its curve (fidelity as nodes are kept in float) and its node ranking.

    Args:
        sensitivity: the ``sensitivity`` section of ``results.json``.
        limit: most rows of each table.

    Returns:
        (curve table, ranking table).
    """
    curve = [c for c in sensitivity.get("curve") or [] if isinstance(c, dict)]
    records = []
    previous: list[str] = []
    for step in curve[:limit]:
        excluded = [str(n) for n in step.get("excluded") or []]
        added = [n for n in excluded if n not in set(previous)]
        previous = excluded
        records.append(
            {
                "k": step.get("k"),
                "node added": ", ".join(added) or None,
                "top-1 agreement": step.get("top1_agreement"),
                "rel. L2": step.get("rel_l2"),
                "ms / batch": step.get("median_ms"),
            }
        )
    curve_table = to_table(
        _frame(records, ["k", "node added", "top-1 agreement", "rel. L2", "ms / batch"]),
        {"k": _text, "top-1 agreement": percent, "rel. L2": general, "ms / batch": general},
        caption="fidelity with the k most sensitive nodes kept in float",
        total=len(curve),
        keep_empty=("k",),
    )
    ranking = [r for r in sensitivity.get("ranking") or [] if isinstance(r, dict)]
    rows = [
        {
            "node": str(r.get("node", "?")),
            "op type": r.get("op_type"),
            "rel. L2 alone in INT8": r.get("rel_l2"),
            "top-1 agreement": r.get("top1_agreement"),
        }
        for r in ranking[:limit]
    ]
    ranking_table = to_table(
        _frame(rows, ["node", "op type", "rel. L2 alone in INT8", "top-1 agreement"]),
        {"rel. L2 alone in INT8": general, "top-1 agreement": percent},
        caption="nodes by sensitivity, most sensitive first",
        total=len(ranking),
        keep_empty=("node",),
    )
    return curve_table, ranking_table


def int8_node_table(results: dict[str, Any]) -> Table | None:
    """Per INT8 variant built by a backend that maps layers back to ONNX nodes: how many of the nodes
    quantbench quantized run INT8, and the lint: quantized nodes left in float (those a known limit of the
    library explains marked so) and Q/DQ pairs left unfused, each named; INT8 layers whose float output
    reaches another INT8 layer, counted (``results.json`` names them).

    Returns:
        The table, or None when no variant carries the map.
    """
    import pandas as pd

    rows = []
    for variant in results["variants"]:
        nodes, lint = variant.get("int8_nodes"), variant.get("precision_lint") or {}
        if not isinstance(nodes, dict):
            continue
        known = {
            str(item.get("node")): str(item.get("op"))
            for item in lint.get("known_limits") or []
            if isinstance(item, dict)
        }
        in_float = [
            f"{n} (known {known[str(n)]} limit)" if str(n) in known else str(n)
            for n in lint.get("quantized_in_float") or []
        ]
        unfused = [
            ", ".join(map(str, item.get("onnx") or [])) if isinstance(item, dict) else str(item)
            for item in lint.get("unfused_qdq") or []
        ]
        rows.append(
            {
                "variant": str(variant.get("name", "?")),
                "quantized nodes": nodes.get("quantized"),
                "run INT8": nodes.get("int8"),
                "quantized, left in float": ", ".join(in_float) or "none",
                "Q/DQ left unfused": "; ".join(unfused) or "none",
                "float between INT8 layers": len(lint.get("float_between_int8") or []),
            }
        )
    if not rows:
        return None
    frame = pd.DataFrame(rows).astype(object)
    counts = ("quantized nodes", "run INT8", "float between INT8 layers")
    formats: dict[str, Callable[[Any], str]] = {c: _text for c in counts}
    return to_table(frame, formats, caption="nodes quantbench quantized, as the engine runs them")


def _decided(step: dict[str, Any], kept: str, dropped: str) -> str:
    """A judged step's cell: kept or not, and the figure that decided it (before -> after, images)."""
    decision = step.get("decision")
    text = kept if step.get("applied") else dropped
    if not isinstance(decision, dict):
        return text
    where = "held apart" if decision.get("held_apart") else "fitted on"
    return (
        f"{text}: {decision.get('metric')} {general(decision.get('before'))} -> "
        f"{general(decision.get('after'))} on {decision.get('images')} images {where}"
    )


def _offsets_cell(offsets: Any) -> str:
    if not isinstance(offsets, dict):
        return "off"
    tensors = [t for t in offsets.get("tensors") or [] if isinstance(t, dict)]
    padded = sum(1 for t in tensors if t.get("padded_readers"))
    return f"{len(tensors)} tensors" + (f" ({padded} read through a Pad)" if padded else "")


def build_table(results: dict[str, Any]) -> Table | None:
    """Per INT8 variant, how it was built: the calibration method (and what the range search changed),
    the weights' equalization and rounding, the bias correction, the activation offsets and the CPU
    flavour timed; a judged step (adaptive rounding, bias
    correction) with whether it was kept and the figure that decided it.

    Returns:
        The table, or None when the run has no INT8 variant.
    """
    rows = []
    pairs = len((results.get("equalization") or {}).get("pairs") or [])
    for variant in results["variants"]:
        if variant.get("precision") != "int8":
            continue
        rounding = variant.get("weight_rounding") or {}
        correction = variant.get("bias_correction") or {}
        flavour = variant.get("cpu_flavour") or {}
        weights = "nearest"
        if rounding.get("method") == "adaptive":
            weights = _decided(rounding, "adaptive", "nearest (adaptive judged worse)")
        if pairs:
            weights = f"equalized ({pairs} pairs), {weights}"
        corrected = "off"
        if correction.get("decision") or correction.get("applied"):
            corrected = _decided(correction, "kept", "rejected")
            if correction.get("applied") and correction.get("nodes") is not None:
                corrected += f"; {correction['nodes']} layers"
        method = str(variant.get("method") or "?")
        search = ((results.get("ranges") or {}).get(method) or {}).get("search")
        if isinstance(search, dict):
            method += f", searched: {len(search.get('changed') or [])} of {search.get('searched')} changed"
        rows.append(
            {
                "variant": str(variant.get("name", "?")),
                "ranges": method,
                "weights": weights,
                "bias correction": corrected,
                "activation offsets": _offsets_cell(variant.get("activation_offsets")),
                "CPU flavour": str(flavour.get("name")) if flavour.get("name") else None,
            }
        )
    if not rows:
        return None
    columns = ["variant", "ranges", "weights", "bias correction", "activation offsets", "CPU flavour"]
    return to_table(
        _frame(rows, columns),
        {},
        caption="how each INT8 variant was built; a judged step is kept only where its figure improved",
        keep_empty=("variant",),
    )


def layer_table(results: dict[str, Any]) -> Table | None:
    """Per variant, how many layers run in each precision (from a backend's per-layer data).

    Returns:
        The table, or None when no variant carries per-layer data.
    """
    import pandas as pd

    counts = {}
    for variant in results["variants"]:
        per_precision = layer_precisions(variant)
        if per_precision is not None:
            counts[str(variant.get("name", "?"))] = per_precision
    if not counts:
        return None
    frame = pd.DataFrame.from_dict(counts, orient="index").fillna(0).astype(int)
    known = [p for p in PRECISION_ORDER if p in frame.columns]
    frame = frame[known + sorted(c for c in frame.columns if c not in known)]
    frame["layers"] = frame.sum(axis=1)
    frame = frame.reset_index(names="variant").astype(object)
    formats: dict[str, Callable[[Any], str]] = {c: _text for c in frame.columns if c != "variant"}
    return to_table(frame, formats, caption="layers per precision, as the backend's inspector reports them")
