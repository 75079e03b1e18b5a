"""The report's figures: what each one shows, drawn with :mod:`quantbench.report.plotting`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from quantbench.report.analysis import Headline, Point, finite, shorten
from quantbench.report.plotting import (
    Figure,
    color,
    embed,
    label_points,
    legend_label,
    log_y,
    new_figure,
    variant_colors,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

NAMED_TICKS = 60
"""Up to this many tensors, the range figure names each one on its axis; above, it numbers them."""


def accuracy_vs_speed(pts: Sequence[Point], front: Sequence[str], head: Headline) -> Figure | None:
    """One point per variant: median latency (x) against the headline (y), the Pareto front dashed, and
    the verdict's tolerance dotted where it has one.

    Args:
        pts: the variants' points.
        front: the variants on the Pareto front, fastest first.
        head: the headline the points are measured by (its label and direction make the axis).

    Returns:
        The figure, or None when no variant has both a latency and a metric.
    """
    scale = 100.0 if head.percent else 1.0
    shown = [
        (i, p, p.ms, p.quality * scale)
        for i, p in enumerate(pts)
        if p.ms is not None and p.quality is not None
    ]
    if not shown:
        return None
    with new_figure(7.5, 4.2) as (fig, ax):
        for i, p, x, y in shown:
            ax.scatter(
                [x],
                [y],
                s=160 if p.reference else 60,
                marker="*" if p.reference else "o",
                facecolors=color(i) if p.representative else "none",
                edgecolors=color(i),
                linewidths=1.5,
                label=legend_label(p.variant),
                zorder=3,
            )
        ax.set_xlim(left=0, right=max(x for _, _, x, _ in shown) * 1.2)
        on_front = [(x, y) for name in front for _, p, x, y in shown if p.variant == name]
        if len(on_front) > 1:
            ax.plot(*zip(*on_front), "--", color="#444", linewidth=1, zorder=2, label="Pareto front")
        batches = sorted({p.batch for _, p, _, _ in shown if p.batch is not None})
        ax.set_xlabel("median ms per batch" + (f" (batch {batches[0]})" if len(batches) == 1 else ""))
        ax.set_ylabel(head.axis)
        bound = head.bound
        if bound is not None and math.isfinite(bound):
            ax.axhline(bound * scale, color="#888", linestyle=":", linewidth=1, zorder=1, label="tolerance")
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(handles)), key=lambda k: labels[k] in ("Pareto front", "tolerance"))
        ax.legend(
            [handles[k] for k in order], [labels[k] for k in order], loc="upper left", bbox_to_anchor=(1, 1)
        )
        if any(not p.representative for _, p, _, _ in shown):
            ax.set_title("hollow: latency emulated on this CPU, not representative", fontsize=8, loc="left")
        fig.draw_without_rendering()  # lay the figure out first, so labels are placed on its final geometry
        label_points(ax, [(x, y, shorten(p.variant, 28)) for _, p, x, y in shown])
        return embed(fig, "accuracy against speed, one point per variant")


def sensitivity_curve(sensitivity: dict[str, Any]) -> Figure | None:
    """Fidelity of the mixed-precision model as k nodes are kept in float; latency too where measured.

    Args:
        sensitivity: the ``sensitivity`` section of ``results.json``.

    Returns:
        The figure, or None when the curve is empty.
    """
    curve = [c for c in sensitivity.get("curve") or [] if isinstance(c, dict) and isinstance(c.get("k"), int)]
    if not curve:
        return None
    curve.sort(key=lambda c: c["k"])
    ks = [c["k"] for c in curve]
    timed = [(c["k"], ms) for c in curve if (ms := finite(c.get("median_ms"))) is not None]
    target = sensitivity.get("target") or {}
    chosen = len(sensitivity.get("excluded") or [])
    with new_figure(7.5, 5.6 if timed else 3.6, nrows=2 if timed else 1, sharex=True) as (fig, axes):
        top: Axes = axes[0] if timed else axes
        rel = [finite(c.get("rel_l2")) for c in curve]
        top.plot(ks, [math.nan if r is None else r for r in rel], "o-", color=color(0), label="relative L2")
        top.set_ylabel("relative L2 error", color=color(0))
        if finite(target.get("rel_l2")) is not None:
            top.axhline(target["rel_l2"], color=color(0), linestyle=":", linewidth=1, label="rel. L2 target")
        agreement = [finite(c.get("top1_agreement")) for c in curve]
        if any(a is not None for a in agreement):
            right = top.twinx()
            right.plot(
                ks,
                [math.nan if a is None else 100 * a for a in agreement],
                "s-",
                color=color(1),
                label="top-1 agreement",
            )
            right.set_ylabel("top-1 agreement (%)", color=color(1))
            right.grid(False)
            if finite(target.get("top1_agreement")) is not None:
                right.axhline(
                    100 * target["top1_agreement"],
                    color=color(1),
                    linestyle=":",
                    linewidth=1,
                    label="agreement target",
                )
        top.axvline(chosen, color="#444", linestyle="--", linewidth=1, label=f"chosen: k = {chosen}")
        handles, labels = top.get_legend_handles_labels()
        if any(a is not None for a in agreement):
            handles += right.get_legend_handles_labels()[0]
            labels += right.get_legend_handles_labels()[1]
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels))
        top.set_title(f"sensitivity search ({shorten(str(sensitivity.get('method', '?')), 40)})", loc="left")
        bottom: Axes = axes[1] if timed else top
        if timed:
            bottom.plot([k for k, _ in timed], [ms for _, ms in timed], "o-", color=color(2))
            bottom.axvline(chosen, color="#444", linestyle="--", linewidth=1)
            bottom.set_ylabel("median ms per batch")
        bottom.set_xlabel("k: nodes kept in float, most sensitive first")
        return embed(fig, "fidelity against the number of nodes kept in float")


def output_errors(results: dict[str, Any], outputs: Sequence[str]) -> Figure | None:
    """Relative L2 error of every variant, a panel per output (at most six outputs).

    Returns:
        The figure, or None when no variant has an error to show.
    """
    panels = []
    for output in outputs[:6]:
        bars: list[tuple[str, float, int]] = []
        for i, variant in enumerate(results["variants"]):
            value = finite(((variant.get("outputs") or {}).get(output) or {}).get("rel_l2"))
            if value is not None:
                bars.append((str(variant.get("name", "?")), value, i))
        if bars:
            panels.append((output, bars))
    if not panels:
        return None
    rows = max(len(bars) for _, bars in panels)
    cols = min(2, len(panels))
    nrows = -(-len(panels) // cols)
    with new_figure(7.5, nrows * (0.9 + 0.32 * rows), nrows=nrows, ncols=cols, squeeze=False) as (fig, axes):
        flat = list(axes.flat)
        for ax, (output, bars) in zip(flat, panels):
            names = [shorten(name, 24) for name, _, _ in bars][::-1]
            values = [value for _, value, _ in bars][::-1]
            drawn = ax.barh(names, values, color=[color(i) for _, _, i in bars][::-1])
            ax.bar_label(drawn, labels=[f"{v:.3g}" for v in values], padding=3, fontsize=8)
            ax.set_title(shorten(output, 48), loc="left")
            ax.set_xlabel("relative L2 error vs FP32")
            ax.set_xlim(0, max(values) * 1.3 or 1.0)
        for ax in flat[len(panels) :]:
            ax.set_visible(False)
        return embed(fig, "relative L2 error per output and variant")


def _positive(table: dict[str, Any], order: Sequence[str]) -> list[float]:
    """The values of ``table`` for ``order``, NaN where missing or not positive (a log axis skips them)."""
    out = []
    for name in order:
        v = finite(table.get(name))
        out.append(v if v is not None and v > 0 else math.nan)
    return out


def ranges_per_tensor(
    order: Sequence[str],
    amax_sets: dict[str, dict[str, Any]],
    absmax: dict[str, Any],
    colors: Mapping[str, str] | None = None,
) -> Figure | None:
    """Every set's amax per tensor, in graph order, on a log scale, with absmax in grey.

    Up to ``NAMED_TICKS`` tensors, one panel names every tensor; beyond, each set of ranges gets a panel
    of its own (dots over the grey absmax line) and tensors are numbered, so a thousand tensors stay
    readable.

    Args:
        order: the tensors, in graph order.
        amax_sets: label -> tensor -> amax.
        absmax: tensor -> largest |x| seen (may be empty).
        colors: label -> colour, the colour of its variant in every figure (:func:`variant_colors`).

    Returns:
        The figure, or None when no tensor has a range.
    """
    if not order or not amax_sets:
        return None
    colors = colors or variant_colors([], list(amax_sets))
    named = len(order) <= NAMED_TICKS
    x = list(range(len(order)))
    top = _positive(absmax, order) if absmax else None
    if named:
        width, height, panels = min(16.0, max(7.5, 0.16 * len(order))), 5.2, 1
    else:
        width, height, panels = 9.0, 0.9 + 1.3 * len(amax_sets), len(amax_sets)
    with new_figure(width, height, nrows=panels, sharex=True, sharey=True, squeeze=False) as (fig, axes):
        for i, (label, table) in enumerate(amax_sets.items()):
            ax = axes[0 if named else i, 0]
            if top is not None and (i == 0 or not named):
                ax.plot(x, top, color="#bbb", linewidth=4 if named else 1.5, label="absmax", zorder=1)
            if named:
                ax.plot(
                    x,
                    _positive(table, order),
                    "o-",
                    markersize=3,
                    color=colors[label],
                    label=legend_label(label),
                )
            else:
                ax.plot(x, _positive(table, order), ".", markersize=2.5, color=colors[label])
                ax.set_title(shorten(label, 48), loc="left", fontsize=9, color=colors[label])
        for ax in axes[:, 0]:
            log_y(ax)
            ax.set_ylabel("amax (log scale)")
        bottom = axes[-1, 0]
        if named:
            bottom.set_xticks(x, [shorten(name, 30) for name in order], rotation=90, fontsize=7)
            bottom.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        else:
            bottom.set_xlabel(f"tensor index in graph order ({len(order)} tensors); grey: absmax")
        bottom.set_xlim(-0.5, len(order) - 0.5)
        return embed(fig, "amax per tensor for every set of ranges")


def histograms(
    digest: Sequence[dict[str, Any]],
    amax_sets: dict[str, dict[str, Any]],
    colors: Mapping[str, str] | None = None,
) -> Figure | None:
    """Small multiples: each stored |x| histogram on a log scale, with every set's threshold marked.

    Args:
        digest: ``calibration.histograms`` of ``results.json``.
        amax_sets: label -> tensor -> amax.
        colors: label -> colour, the colour of its variant in every figure (:func:`variant_colors`).

    Returns:
        The figure, or None when there is no histogram.
    """
    usable = [h for h in digest if isinstance(h, dict) and h.get("counts") and finite(h.get("bin_width"))]
    if not usable:
        return None
    colors = colors or variant_colors([], list(amax_sets))
    cols = 2 if len(usable) > 1 else 1
    nrows = -(-len(usable) // cols)
    with new_figure(7.5 if cols == 2 else 5.0, 2.3 * nrows, nrows=nrows, ncols=cols, squeeze=False) as (
        fig,
        axes,
    ):
        flat = list(axes.flat)
        for ax, hist in zip(flat, usable):
            counts = [max(0, int(c)) for c in hist["counts"]]
            width = float(hist["bin_width"])
            edges = [k * width for k in range(len(counts) + 1)]
            ax.stairs(counts, edges, fill=True, color="#9bb7d4", label="|x| count")
            log_y(ax)
            ax.set_ylim(bottom=0.5)
            name = str(hist.get("tensor", "?"))
            for label, table in amax_sets.items():
                amax = finite(table.get(name))
                if amax is not None:
                    ax.axvline(amax, color=colors[label], linewidth=1.2, label=legend_label(label))
            top = finite(hist.get("absmax"))
            if top is not None:
                ax.axvline(top, color="#555", linestyle=":", linewidth=1, label="absmax")
            ax.set_title(shorten(name, 44), loc="left", fontsize=9)
            ax.set_xlabel("|x|", fontsize=8)
            ax.set_ylabel("values (log scale)", fontsize=8)
            ax.set_xlim(0, edges[-1])
            ax.grid(False)
        for ax in flat[len(usable) :]:
            ax.set_visible(False)
        handles, labels = flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(6, len(labels)))
        return embed(fig, "|x| histograms with each method's threshold")


def latency_distribution(results: dict[str, Any]) -> Figure | None:
    """Per bench batch size (at most four), each variant's min-max line, median-p90 bar and p99 mark.

    Returns:
        The figure, or None when nothing was timed.
    """
    sizes: list[int] = []
    for variant in results["variants"]:
        for stats in variant.get("latency") or []:
            if isinstance(stats.get("batch"), int) and stats["batch"] not in sizes:
                sizes.append(stats["batch"])
    if not sizes:
        return None
    sizes = sizes[:4]
    names = [str(v.get("name", "?")) for v in results["variants"]]
    height = 1.0 + 0.35 * len(names)
    with new_figure(7.5, height * len(sizes), nrows=len(sizes), squeeze=False) as (fig, axes):
        for ax, size in zip(axes[:, 0], sizes):
            for row, variant in enumerate(results["variants"]):
                stats = next((s for s in variant.get("latency") or [] if s.get("batch") == size), None)
                if stats is None:
                    continue
                y = len(names) - 1 - row
                low, high = finite(stats.get("min_ms")), finite(stats.get("max_ms"))
                median, p90, p99 = (finite(stats.get(k)) for k in ("median_ms", "p90_ms", "p99_ms"))
                if low is not None and high is not None:
                    ax.plot([low, high], [y, y], color="#999", linewidth=1)
                if median is not None and p90 is not None:
                    ax.plot([median, p90], [y, y], color=color(row), linewidth=7, solid_capstyle="butt")
                if median is not None:
                    ax.plot([median], [y], "|", color="black", markersize=12, markeredgewidth=2)
                if p99 is not None:
                    ax.plot([p99], [y], "D", color=color(row), markersize=5)
            ax.set_yticks(range(len(names)), [shorten(n, 24) for n in reversed(names)])
            ax.set_xlabel(f"ms per batch of {size}: min–max line, median | to p90 bar, ◆ p99")
            ax.set_xlim(left=0)
        return embed(fig, "latency distribution per variant")


def throughput(results: dict[str, Any]) -> Figure | None:
    """Images per second of every variant, grouped by bench batch size.

    Returns:
        The figure, or None when nothing was timed.
    """
    series = []
    sizes: list[int] = []
    for index, variant in enumerate(results["variants"]):
        rates = {}
        for stats in variant.get("latency") or []:
            rate = finite(stats.get("images_per_s"))
            if isinstance(stats.get("batch"), int) and rate is not None:
                rates[stats["batch"]] = rate
                if stats["batch"] not in sizes:
                    sizes.append(stats["batch"])
        if rates:
            series.append((str(variant.get("name", "?")), rates, index))
    if not series:
        return None
    sizes.sort()
    slot = 0.8 / len(series)
    with new_figure(7.5, 3.4) as (fig, ax):
        for i, (name, rates, index) in enumerate(series):
            xs = [j + (i - (len(series) - 1) / 2) * slot for j, size in enumerate(sizes) if size in rates]
            ax.bar(
                xs,
                [rates[s] for s in sizes if s in rates],
                width=slot,
                color=color(index),
                label=legend_label(name),
            )
        ax.set_xticks(range(len(sizes)), [f"batch {s}" for s in sizes])
        ax.set_ylabel("images / s")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return embed(fig, "images per second per batch size")
