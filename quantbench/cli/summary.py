"""Terminal output: the calibration summary and range tables."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from quantbench.calibration.calibrate import CalibrationResult
    from quantbench.flows.run import RunResult
    from quantbench.ranges import DynamicRanges, RangeDiff

LISTED = 10
"""Skipped files and warnings listed by name before the rest are only counted."""


def counted(count: int, noun: str) -> str:
    """``1 variant``, ``3 variants``: a count with its noun in the right number (nouns taking -s)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _listed(console: Console, title: str, lines: list[str]) -> None:
    if not lines:
        return
    console.print(f"{title} ({len(lines)}):")
    for line in lines[:LISTED]:
        console.print(f"  {line}", markup=False)
    if len(lines) > LISTED:
        console.print(f"  ... and {len(lines) - LISTED} more")


def print_calibration_summary(console: Console, result: CalibrationResult) -> None:
    """Tensors, images used and skipped, time, peak memory and where the files went."""
    from rich.table import Table

    how = "reused stored histograms" if result.reused else f"collected in {result.collect_seconds:.1f} s"
    rate = len(result.images_used) / result.collect_seconds if result.collect_seconds > 0 else 0.0
    console.print(
        f"[bold]calibrated[/bold] {counted(result.tensors, 'tensor')} on "
        f"{counted(len(result.images_used), 'image')} "
        f"({how}{f', {rate:.1f} images/s' if rate else ''}); "
        f"total {result.total_seconds:.1f} s, peak memory {result.peak_memory_mb:.0f} MiB"
    )
    if result.converted:
        kinds: dict[str, int] = {}
        for _, what in result.converted:
            kinds[what] = kinds.get(what, 0) + 1
        console.print("converted: " + ", ".join(f"{count} {what}" for what, count in sorted(kinds.items())))
    _listed(console, "skipped", [f"{name}: {reason}" for name, reason in result.skipped])
    _listed(console, "warnings", result.warnings)
    table = Table(box=None, pad_edge=False)
    table.add_column("method")
    table.add_column("median amax / absmax", justify="right")
    table.add_column("files")
    for label, ranges in result.ranges.items():
        ratios = sorted(amax / result.absmax[k] for k, amax in ranges.amax.items() if result.absmax.get(k))
        ratio = f"{ratios[len(ratios) // 2]:.3f}" if ratios else "-"
        names = ", ".join(path.name for path in result.files[label])
        table.add_row(label, ratio, names)
    console.print(table)
    console.print(
        f"ranges in {result.out_dir / 'ranges'}; histograms in {result.histogram_file}",
        markup=False,
        soft_wrap=True,
    )


def print_ranges(console: Console, ranges: DynamicRanges, limit: int = 0) -> None:
    """Metadata lines, then one row per tensor: name, amax, scale (amax/127)."""
    from rich.table import Table

    from quantbench.ranges import trt_version_string

    console.print(f"{ranges.source or 'ranges'}: {len(ranges.amax)} tensors", markup=False)
    details = {
        "method": ranges.method,
        "TensorRT header": (
            f"{trt_version_string(ranges.trt_version)} {ranges.trt_algorithm}" if ranges.trt_version else ""
        ),
        "images": str(ranges.image_count or ""),
        "model sha256": ranges.model_hash[:16],
        "quantbench": ranges.quantbench_version,
    }
    for key, value in details.items():
        if value:
            console.print(f"  {key}: {value}", markup=False)
    table = Table(box=None, pad_edge=False)
    table.add_column("tensor", overflow="fold")
    table.add_column("amax", justify="right")
    table.add_column("scale", justify="right")
    items = list(ranges.amax.items())
    shown = items if limit <= 0 else items[:limit]
    for name, amax in shown:
        table.add_row(name, f"{amax:.6g}", f"{amax / 127.0:.6g}")
    console.print(table)
    if len(shown) < len(items):
        console.print(f"... {len(items) - len(shown)} more (--limit 0 shows all)")


def print_diff(console: Console, diff: RangeDiff, name_a: str, name_b: str, limit: int = 0) -> None:
    """Tensors in both tables by disagreement (|log ratio|, largest first), then one-sided ones."""
    from rich.table import Table

    rows = sorted(diff.rows, key=lambda row: -abs(math.log(row[3])) if row[3] > 0 else -math.inf)
    console.print(f"a = {name_a}\nb = {name_b}", markup=False)
    console.print(f"{len(rows)} tensors in both, {len(diff.only_a)} only in a, {len(diff.only_b)} only in b")
    if rows:
        ratios = sorted(row[3] for row in rows)
        console.print(
            f"ratio b/a: min {ratios[0]:.4g}, median {ratios[len(ratios) // 2]:.4g}, max {ratios[-1]:.4g}"
        )
    table = Table(box=None, pad_edge=False)
    for column in ("tensor", "a", "b", "b/a"):
        table.add_column(column, justify="left" if column == "tensor" else "right", overflow="fold")
    shown = rows if limit <= 0 else rows[:limit]
    for name, a, b, ratio in shown:
        table.add_row(name, f"{a:.6g}", f"{b:.6g}", f"{ratio:.4f}")
    console.print(table)
    if len(shown) < len(rows):
        console.print(f"... {len(rows) - len(shown)} more (--limit 0 shows all)")
    _listed(console, "only in a", diff.only_a)
    _listed(console, "only in b", diff.only_b)


def _figure(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _rounding_lines(results: dict[str, Any]) -> list[str]:
    """For a run that rounded weights adaptively: one line for the fit (one serves every INT8 variant:
    layers, images, the median error ratio against nearest rounding, seconds), then one per variant
    judged: kept or not, on which figure."""
    lines: list[str] = []
    for variant in results["variants"]:
        rounding = variant.get("weight_rounding") or {}
        if rounding.get("method") != "adaptive":
            continue
        if not lines:
            ratio, skipped = rounding.get("median_error_ratio"), rounding.get("skipped") or {}
            lines.append(
                f"adaptive rounding: {len(rounding.get('nodes') or [])} layers' weights fitted on "
                f"{rounding.get('images')} calibration images in {_plain(rounding.get('seconds'))} s; median "
                f"layer output error {_figure(ratio, '.2f')}x that of nearest rounding"
                + (f"; {len(skipped)} left to nearest rounding (listed in results.json)" if skipped else "")
            )
        decision = rounding.get("decision")
        if decision:
            kept = "kept" if rounding.get("applied") else "not kept (nearest rounding judged better)"
            where = "held apart" if decision.get("held_apart") else "it was fitted on"
            lines.append(
                f"adaptive rounding of {variant['name']}: {kept}, {decision['metric']} of "
                f"{decision['output']!r} {_plain(decision['before'])} -> {_plain(decision['after'])} on "
                f"{decision['images']} calibration images {where}"
            )
    return lines


def _offset_lines(results: dict[str, Any]) -> list[str]:
    """One line per INT8 variant built with activation offsets: how many tensors, how many through a Pad."""
    lines = []
    for variant in results["variants"]:
        offsets = variant.get("activation_offsets")
        if offsets is None:
            continue
        tensors = offsets.get("tensors") or []
        padded = sum(1 for t in tensors if t.get("padded_readers"))
        lines.append(
            f"activation offsets of {variant['name']}: {len(tensors)} tensors bounded below on offset grids"
            + (f" ({padded} read through a Pad)" if padded else "")
        )
    return lines


def _search_lines(results: dict[str, Any]) -> list[str]:
    """One line per set of ranges searched (``--range-search``): tensors changed, samples, seconds."""
    lines = []
    for label, info in (results.get("ranges") or {}).items():
        search = info.get("search") if isinstance(info, dict) else None
        if not isinstance(search, dict):
            continue
        changed = search.get("changed") or []
        line = (
            f"range search of {label}: {len(changed)} of {search.get('searched')} ranges changed on "
            f"{search.get('samples')} calibration images in {_plain(search.get('seconds'))} s"
            + (f" (one search for {search['sets']} sets)" if (search.get("sets") or 1) > 1 else "")
        )
        if changed:
            top = min(changed, key=lambda t: t.get("error_ratio", 1.0))
            line += (
                f"; largest gain {top['tensor']!r} {_plain(top['calibrated'])} -> {_plain(top['searched'])} "
                f"(error x{_plain(top['error_ratio'])})"
            )
        lines.append(line)
    return lines


def _correction_lines(results: dict[str, Any]) -> list[str]:
    """One line per INT8 variant whose biases were corrected: kept or not, on which figure, and how many
    layers the correction had to leave as they were; after the activation offsets' and the adaptive
    rounding's lines, where the run has them."""
    lines = _search_lines(results) + _offset_lines(results) + _rounding_lines(results)
    for variant in results["variants"]:
        correction = variant.get("bias_correction") or {}
        decision = correction.get("decision")
        if not decision:
            continue
        kept = "kept" if correction.get("applied") else "rejected"
        where = "held apart" if decision.get("held_apart") else "it was fitted on"
        skipped = correction.get("skipped") or []
        line = (
            f"bias correction of {variant['name']}: {kept}, {decision['metric']} of {decision['output']!r} "
            f"{_plain(decision['before'])} -> {_plain(decision['after'])} on {decision['images']} "
            f"calibration images {where}; {correction.get('nodes', 0)} layers corrected"
        )
        if skipped:
            line += f", {len(skipped)} left as they were (listed in results.json)"
        lines.append(line)
    return lines


def _flavour_lines(results: dict[str, Any]) -> list[str]:
    """One line per INT8 variant timed on the fast CPU flavour: how many tensors it rounds that the
    judged model keeps in float or rounds on another grid, the largest error measured there, the
    Softmax ops it writes another way and the divisions it takes into a quantization."""
    lines = []
    for variant in results["variants"]:
        flavour = variant.get("cpu_flavour") or {}
        if flavour.get("name") != "fast":
            continue
        roundings = flavour.get("roundings") or []
        measured = [r for r in roundings if r.get("rel_error") is not None]
        line = (
            f"CPU flavour of {variant['name']}: fast, {len(roundings)} tensors rounded that the judged model "
            "keeps in float or rounds on another grid"
        )
        if measured:
            worst = max(measured, key=lambda r: r["rel_error"])
            line += f" (largest error {worst['rel_error']:.3g} relative L2, at {worst['tensor']!r})"
        rewritten = flavour.get("rewritten") or []
        if rewritten:
            count = f"{len(rewritten)} Softmax" + ("es" if len(rewritten) > 1 else "")
            line += f", {count} over a short axis written as element-wise ops"
        divisions = flavour.get("divisions") or []
        if divisions:
            count = f"{len(divisions)} division" + ("s" if len(divisions) > 1 else "")
            line += f", {count} by a constant taken into the quantization before it"
        lines.append(line + "; listed in results.json and the report")
    return lines


def _plain(value: Any) -> str:
    return format(value, ".4g") if isinstance(value, float) else str(value)


def _headline_format(verdict: dict[str, Any]) -> Any:
    """How the verdict's headline prints: the registry's format, or a plugin metric's."""
    from quantbench.evaluation.registry import metric_by_key
    from quantbench.evaluation.verdict import PLUGIN_FORMAT

    return PLUGIN_FORMAT if verdict["kind"] == "plugin" else metric_by_key(verdict["metric"]).format


def _print_verdict(console: Console, results: dict[str, Any], verdict: dict[str, Any]) -> None:
    """Which output the headline is about and why, and the variant to ship."""
    reason = results["model"]["comparison_outputs"][verdict["output"]].get("kind_reason", "")
    default = " (the default for this kind; --tolerance sets another)" if verdict["tolerance_default"] else ""
    console.print(
        f"headline: {verdict['label']} of {verdict['output']!r} against FP32 ({reason}); "
        f"tolerance {verdict['tolerance']:g}{default}",
        markup=False,
        highlight=False,
    )
    from rich.markup import escape

    console.print(
        f"[bold]ship {escape(verdict['recommended'])}[/bold]: {escape(verdict['reason'])}", highlight=False
    )


def print_run_summary(console: Console, result: RunResult) -> None:
    """The variants table (top-1 agreement, relative L2, ms/batch, speed-up), notes and where files are."""
    from rich.table import Table

    from quantbench.evaluation.registry import metric_by_key
    from quantbench.report.results import main_output, preprocessing_line

    results = result.results
    evaluation = results["data"]["evaluation"]
    verdict = results.get("verdict")
    output = verdict["output"] if verdict else main_output(results)
    from rich.markup import escape

    console.print(
        f"[bold]compared[/bold] {counted(len(results['variants']), 'variant')} of "
        f"{escape(results['model']['name'])} on {counted(evaluation['samples'], 'held-out sample')} from "
        f"{escape(evaluation['root'])} (output {escape(repr(output))}, backend "
        f"{results['manifest']['backend']['name']})"
    )
    console.print(f"preprocessing: {preprocessing_line(evaluation)}", markup=False, highlight=False)
    for note in results["notes"]:
        console.print(f"[bold yellow]{escape(note)}[/bold yellow]", markup=True, highlight=False)
    _listed(console, "held-out files skipped", [f"{n}: {r}" for n, r in evaluation["skipped"]])
    for label, info in results["ranges"].items():
        if info.get("unknown") or info.get("missing"):
            console.print(
                f"ranges {label}: {len(info['missing'])} model tensors without a range, "
                f"{len(info['unknown'])} names not in the model (listed in results.json)"
            )
        _listed(console, f"ranges {label} warnings", info.get("warnings", []))
    table = Table(box=None, pad_edge=False)
    # headings from the metric registry; the numbers keep this table's own formats (rel. L2: 4 decimals)
    agreement, rel_l2 = metric_by_key("top1_agreement").label, metric_by_key("rel_l2").label
    headline = verdict["metric"] if verdict and verdict["metric"] != "top1_agreement" else None
    columns = ["variant", agreement, rel_l2, "ms/batch", "speed-up vs fp32"]
    if headline is not None and verdict:  # the task's headline replaces top-1 agreement
        columns[1] = verdict["label"]
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right")
    footnote = False
    for row in result.summary():
        mark = "" if row["representative"] or row["ms"] is None else " *"  # no latency: nothing to mark
        footnote = footnote or bool(mark)
        ms = "-" if row["ms"] is None else f"{row['ms']:.2f} (b{row['batch']}){mark}"
        agreement = row["top1_agreement"]
        first = _figure(100.0 * agreement if agreement is not None else None, ".1f") + (
            "%" if agreement is not None else ""
        )
        if headline is not None and verdict:
            value = verdict["values"].get(row["variant"])
            first = _headline_format(verdict)(value) if isinstance(value, float) else "-"
        table.add_row(
            row["variant"],
            first,
            _figure(row["rel_l2"], ".4f"),
            ms,
            _figure(row["speedup"], ".2f") + ("x" if row["speedup"] is not None else ""),
        )
    console.print(table)
    if footnote:
        console.print("* emulated on this CPU (no float16 kernels): not representative of a GPU")
    for line in [*_correction_lines(results), *_flavour_lines(results)]:
        console.print(line, markup=False, highlight=False)
    if verdict:
        _print_verdict(console, results, verdict)
    if results.get("sensitivity"):
        from quantbench.search.mixed_precision import summary_lines

        for line in summary_lines(results):
            console.print(line, markup=False, highlight=False)
    console.print(
        f"results in {result.run_dir} (results.json, metrics.csv, models/, ranges/)",
        markup=False,
        soft_wrap=True,
    )
    report = result.run_dir / "report.html"
    if report.is_file():
        console.print(f"report: {report}", markup=False, highlight=False, soft_wrap=True)
