"""What each section of the report shows, gathered from ``results.json`` into one context for the template.

First the verdict (the headline, its tolerance, each variant's headline, the variant to ship, and the
models timed in place of the models judged), then the numbered sections: 1 header (model, data, backend,
machine, command), 2 accuracy vs speed (with the mixed-precision search where the run has one), 3
per-output error, 4 dynamic ranges, 5 latency, 6 calibration details.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from quantbench.report import figures, tables
from quantbench.report.analysis import Headline, finite, headline, pareto_front, points
from quantbench.report.plotting import variant_colors
from quantbench.report.results import preprocessing_line

LIST_ITEMS = 50
"""Most items of a listing (skipped files, warnings, tensors without a range...); the rest are counted."""


@dataclass
class Listing:
    """A titled list of lines, cut to ``LIST_ITEMS``.

    Attributes:
        title: what the lines are.
        items: the lines shown.
        total: how many there were.
    """

    title: str
    items: list[str]
    total: int

    @property
    def omitted(self) -> int:
        """Lines left out."""
        return self.total - len(self.items)


def listing(title: str, lines: list[Any]) -> Listing:
    """A :class:`Listing` of ``lines`` (each made text; a pair ``[file, reason]`` as ``file: reason``)."""
    text = [": ".join(map(str, line)) if isinstance(line, list | tuple) else str(line) for line in lines]
    return Listing(title, text[:LIST_ITEMS], len(text))


def _seconds(value: Any) -> str:
    x = finite(value)
    return "–" if x is None else f"{x:.1f} s"


def header(results: dict[str, Any]) -> dict[str, Any]:
    """Section 1: facts about the model, the data, the backend, the machine and the command.

    Returns:
        ``{"facts": [(label, text)], "notes": [text], "inputs": Table, "outputs": Table}``.
    """
    model, manifest, data = results["model"], results["manifest"], results.get("data") or {}
    calib = data.get("calibration")
    evaluation = data.get("evaluation") or {}
    backend = manifest.get("backend") or {}
    arguments = manifest.get("arguments") or {}
    facts = [
        ("model", f"{model.get('name', '?')} ({model.get('path', '?')})"),
        ("model SHA-256", str(model.get("sha256", "–"))),
        ("float tensors", str(model.get("float_tensors", "–"))),
    ]
    if calib is not None:
        facts.append(
            (
                "calibration images",
                f"{len(calib.get('used') or [])} used, {len(calib.get('skipped') or [])} skipped, "
                f"{len(calib.get('converted') or [])} converted, from {arguments.get('images', '?')}",
            )
        )
    else:
        facts.append(("calibration images", f"none; ranges from {arguments.get('ranges') or '–'}"))
    facts.append(
        (
            "held-out samples",
            f"{evaluation.get('samples', 0)} evaluated, {len(evaluation.get('skipped') or [])} skipped, "
            f"from {evaluation.get('root', '?')}",
        )
    )
    facts.append(("preprocessing", preprocessing_line(evaluation)))
    backend_text = str(backend.get("name", "?"))
    extra = [f"{k} {v}" for k, v in backend.items() if k != "name" and v not in (None, "", [], {})]
    facts.append(("backend", backend_text + (f" ({'; '.join(map(str, extra))})" if extra else "")))
    versions = [
        f"{k} {manifest.get(k)}"
        for k in ("quantbench", "onnxruntime", "tensorrt", "python")
        if manifest.get(k)
    ]
    facts.append(("versions", ", ".join(versions)))
    machine = (
        f"{manifest.get('cpu', '?')}, {manifest.get('cpu_count', '?')} cores, {manifest.get('platform', '?')}"
    )
    facts.append(("machine", machine + (f", GPU {manifest['gpu']}" if manifest.get("gpu") else "")))
    facts.append(("date", f"{manifest.get('date', '?')} (run took {_seconds(manifest.get('seconds'))})"))
    command = manifest.get("command")
    facts.append(("command", shlex.join(map(str, command)) if isinstance(command, list) else "–"))

    return {
        "facts": facts,
        "notes": [str(note) for note in results.get("notes") or []],
        "inputs": tables.io_table(model.get("inputs") or []),
        "outputs": tables.io_table(model.get("outputs") or []),
    }


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    """The verdict, at the top: the headline's output and why, the tolerance, each variant's headline and
    the recommendation; and the models timed in place of the models judged.

    Returns:
        ``{"present", "description", "output", "recommended", "reason", "facts", "table", "timed",
        "roundings"}``;
        without a verdict in ``results.json`` only ``present`` (False), ``description``, ``output`` and
        ``timed`` (and ``roundings``) hold anything. ``timed`` is None where no variant was timed on
        another model, ``roundings`` where none was timed on the fast CPU flavour.
    """
    head = headline(results)
    timed = tables.timed_model_table(results)
    found = results.get("verdict")
    empty: dict[str, Any] = {"recommended": None, "reason": "", "facts": [], "table": None}
    context = {
        "present": False,
        "description": head.description,
        "output": head.output,
        "timed": timed,
        "roundings": tables.fast_flavour_table(results),
    }
    if not isinstance(found, dict) or not head.from_verdict:
        return {**context, **empty}
    info = results["model"]["comparison_outputs"].get(head.output) or {}
    kind = str(found.get("kind") or info.get("kind") or "?")
    facts = [
        ("headline", f"{head.description}, on output {head.output}"),
        ("kind", f"{kind} ({info.get('kind_reason') or 'no reason recorded'})"),
        ("tolerance", _tolerance(found, head, kind)),
        ("within tolerance", ", ".join(map(str, found.get("within") or [])) or "–"),
    ]
    closest = found.get("closest")
    if isinstance(closest, dict):
        short = finite(closest.get("short_by"))
        beyond = f", {short:.3g} beyond the tolerance" if short is not None else ""
        facts.append(("closest", f"{closest.get('variant', '?')}: {head.text(closest.get('value'))}{beyond}"))
    return {
        **context,
        "present": True,
        "recommended": str(found.get("recommended", "?")),
        "reason": str(found.get("reason") or ""),
        "facts": facts,
        "table": tables.verdict_table(results, head, points(results)),
    }


def _tolerance(found: dict[str, Any], head: Headline, kind: str) -> str:
    """The verdict's tolerance in words, saying whether it is the kind's default."""
    tolerance = finite(found.get("tolerance"))
    if tolerance is None:
        return "–"
    side = "below" if head.higher_is_better else "above"
    text = f"{tolerance:g} {side} FP32's {head.text(head.reference)}"
    if found.get("tolerance_default"):
        return f"{text} (the default for {kind} outputs; --tolerance sets another)"
    return f"{text} (set for this run)"


def accuracy(results: dict[str, Any]) -> dict[str, Any]:
    """Section 2: accuracy against speed, a point per variant, the Pareto front, and the sensitivity search.

    The accuracy axis is the verdict's headline, or for a ``results.json`` without a verdict, top-1
    agreement of a class-score output or relative L2 error (:func:`quantbench.report.analysis.headline`).

    Returns:
        ``{"figure", "table", "metric", "output", "front", "sensitivity", "compared"}``; figure and
        sensitivity may be None.
    """
    head = headline(results)
    pts = points(results)
    front = pareto_front(pts, higher_is_better=head.higher_is_better)
    sensitivity = results.get("sensitivity")
    search = None
    if isinstance(sensitivity, dict):
        curve, ranking = tables.sensitivity_tables(sensitivity)
        target = sensitivity.get("target") or {}
        agreement, rel_l2 = finite(target.get("top1_agreement")), finite(target.get("rel_l2"))
        goals = [f"top-1 agreement ≥ {100 * agreement:.1f} %"] if agreement is not None else []
        goals += [f"relative L2 ≤ {rel_l2:.4g}"] if rel_l2 is not None else []
        search = {
            "method": str(sensitivity.get("method", "?")),
            "target": " and ".join(goals) or "–",
            "excluded": listing("nodes kept in float", list(sensitivity.get("excluded") or [])),
            "figure": figures.sensitivity_curve(sensitivity),
            "curve": curve,
            "ranking": ranking,
        }
    return {
        "figure": figures.accuracy_vs_speed(pts, front, head),
        "table": tables.accuracy_table(results, pts, front),
        "metric": head.description,
        "output": head.output,
        "front": front,
        "sensitivity": search,
        "compared": len(pts) > 1,
    }


def outputs(results: dict[str, Any]) -> dict[str, Any]:
    """Section 3: a table per output and a bar chart of relative L2 errors."""
    per_output, omitted = tables.output_tables(results)
    return {
        "tables": per_output,
        "omitted": omitted,
        "figure": figures.output_errors(results, list(results["model"]["comparison_outputs"])),
    }


def ranges(results: dict[str, Any]) -> dict[str, Any]:
    """Section 4: amax per tensor and method (figure and table), and the stored |x| histograms."""
    calibration = results.get("calibration") or {}
    absmax = calibration.get("absmax") or {}
    amax_sets = {label: info.get("amax") or {} for label, info in results["ranges"].items()}
    ranged = {name for table in amax_sets.values() for name in table}
    order = [name for name in results["model"].get("tensor_order") or [] if name in ranged]
    digest = calibration.get("histograms") or []
    colors = variant_colors([str(v.get("name", "?")) for v in results["variants"]], list(amax_sets))
    return {
        "sets": list(amax_sets),
        "figure": figures.ranges_per_tensor(order, amax_sets, absmax, colors),
        "table": tables.ranges_table(results) if amax_sets else None,
        "histograms": figures.histograms(digest, amax_sets, colors),
        "histogram_tensors": [str(h.get("tensor", "?")) for h in digest if isinstance(h, dict)],
        "calibrated": bool(calibration),
    }


def latency(results: dict[str, Any]) -> dict[str, Any]:
    """Section 5: latency distribution per variant, images/s per batch size, and the full table."""
    return {
        "figure": figures.latency_distribution(results),
        "throughput": figures.throughput(results),
        "table": tables.latency_table(results),
    }


def details(results: dict[str, Any]) -> dict[str, Any]:
    """Section 6: calibration facts, how each INT8 variant was built, tensors without ranges, excluded
    nodes, warnings, layers by precision."""
    calibration = results.get("calibration")
    data = results.get("data") or {}
    facts = []
    if calibration:
        facts = [
            ("methods", ", ".join(map(str, calibration.get("methods") or [])) or "–"),
            ("images", str(len((data.get("calibration") or {}).get("used") or []))),
            ("collection pass", _seconds(calibration.get("collect_seconds"))),
            ("calibration in all", _seconds(calibration.get("total_seconds"))),
            ("peak memory", f"{finite(calibration.get('peak_memory_mb')) or 0:.0f} MiB"),
        ]
    named: list[tuple[str, Any]] = []
    if calibration:
        named.append(("calibration warnings", calibration.get("warnings")))
    for label, info in results["ranges"].items():
        named += [
            (f"ranges {label}: model tensors without a range", info.get("missing")),
            (f"ranges {label}: names not in the model", info.get("unknown")),
            (f"ranges {label}: warnings", info.get("warnings")),
        ]
    for variant in results["variants"]:
        name = str(variant.get("name", "?"))
        named += [
            (f"{name}: tensors without a range (left in float)", variant.get("tensors_without_range")),
            (f"{name}: nodes excluded (kept in float)", variant.get("excluded_nodes")),
            (f"{name}: nodes kept in FP32", variant.get("kept_fp32")),
            (f"{name}: op types run through float32 casts on this CPU", variant.get("emulated_ops")),
        ]
    named += [
        ("calibration files skipped", (data.get("calibration") or {}).get("skipped")),
        ("calibration files converted", (data.get("calibration") or {}).get("converted")),
        ("held-out files skipped", (data.get("evaluation") or {}).get("skipped")),
    ]
    lists = [listing(title, list(items or [])) for title, items in named]
    return {
        "facts": facts,
        "lists": [item for item in lists if item.total],
        "layers": tables.layer_table(results),
        "built": tables.build_table(results),
        "int8_nodes": tables.int8_node_table(results),
    }


def build_context(results: dict[str, Any]) -> dict[str, Any]:
    """Everything the template needs, one entry per section.

    Args:
        results: the content of ``results.json`` (checked by :func:`quantbench.report.check_results`).
    """
    return {
        "title": f"quantbench report: {results['model'].get('name', '?')}",
        "verdict": verdict(results),
        "header": header(results),
        "accuracy": accuracy(results),
        "outputs": outputs(results),
        "ranges": ranges(results),
        "latency": latency(results),
        "details": details(results),
    }
