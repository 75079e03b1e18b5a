"""How the report draws a figure: style, palette, log-axis labels, and embedding as an SVG data URI.

Figures are built on :class:`matplotlib.figure.Figure` objects directly, never through pyplot, so rendering
changes no global backend or state of the calling process. Each is saved as SVG (text kept as text, no date,
fixed id salt: the same results give the same bytes) and embedded as an ``<img>`` data URI, which keeps it
inert: nothing inside an image can run, whatever text the figure holds. Mathtext is off, so a ``$`` in a
tensor name is drawn as it is.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quantbench.report.analysis import shorten

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure

DPI = 96
"""CSS pixels per inch: an SVG figure of w inches is shown w * 96 pixels wide."""
STYLE: dict[Any, Any] = {
    "text.parse_math": False,
    "svg.fonttype": "none",
    "svg.hashsalt": "quantbench-report",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
}
Box = tuple[float, float, float, float]
"""(left, bottom, right, top) in display pixels."""

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


@dataclass(frozen=True)
class Figure:
    """A figure ready to embed.

    Attributes:
        title: what it shows (also the image's alternative text).
        uri: ``data:image/svg+xml;base64,...``.
        width: display width in CSS pixels.
        height: display height in CSS pixels.
    """

    title: str
    uri: str
    width: int
    height: int


def color(index: int) -> str:
    """The colour of the ``index``-th series (cycles through a fixed palette)."""
    return COLORS[index % len(COLORS)]


def variant_colors(variants: Sequence[str], labels: Sequence[str] = ()) -> dict[str, str]:
    """One colour per variant for every figure of a report: the ``i``-th variant's is :func:`color` (i);
    a set of ranges ``label`` takes the colour of its variant ``int8-<label>``, else one of its own after
    the variants'."""
    colors = {name: color(i) for i, name in enumerate(variants)}
    extra = len(variants)
    for label in labels:
        if label in colors:
            continue
        own = colors.get(f"int8-{label}")
        if own is None:
            own, extra = color(extra), extra + 1
        colors[label] = own
    return colors


def legend_label(text: str) -> str:
    """``text`` as a legend entry (matplotlib hides labels that start with ``_``)."""
    return shorten("\u200b" + text if text.startswith("_") else text, 48)


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def tick_text(value: float) -> str:
    """A log-axis tick as plain text (mathtext is off): ``0.5``, ``20``, or ``10⁶`` for far powers of ten."""
    if value <= 0 or not math.isfinite(value):
        return ""
    if 1e-2 <= value < 1e4:
        return f"{value:g}"
    exponent = math.log10(value)
    if abs(exponent - round(exponent)) < 1e-9:
        return "10" + str(round(exponent)).translate(_SUPERSCRIPT)
    return f"{value:.0e}"


def log_y(ax: Axes) -> None:
    """Put the y axis of ``ax`` on a log scale, labelled with plain-text ticks (see :func:`tick_text`)."""
    from matplotlib.ticker import FuncFormatter, NullLocator

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: tick_text(value)))
    ax.yaxis.set_minor_locator(NullLocator())  # minor ticks of a log axis cost time and say little


DOT_RADIUS = 6.0
"""Half the side, in points, of the box a labelled point's marker is taken to fill."""


def label_box(ax: Axes, x: float, y: float, offset: tuple[float, float], text: str, fontsize: float) -> Box:
    """The box, in display pixels, of a label written at ``offset`` points from the point (x, y)
    (its size estimated from its length)."""
    scale = ax.figure.dpi / 72.0
    px, py = ax.transData.transform((x, y))
    width, height = 0.62 * fontsize * len(text) * scale, 1.3 * fontsize * scale
    left, bottom = px + offset[0] * scale, py + offset[1] * scale
    return (left, bottom, left + width, bottom + height)


def dot_box(ax: Axes, x: float, y: float) -> Box:
    """The box, in display pixels, a point's marker covers (:data:`DOT_RADIUS`)."""
    scale = ax.figure.dpi / 72.0
    px, py = ax.transData.transform((x, y))
    r = DOT_RADIUS * scale
    return (px - r, py - r, px + r, py + r)


def overlap(a: Box, b: Box) -> float:
    """The area two boxes share."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def label_points(ax: Axes, points: list[tuple[float, float, str]], fontsize: float = 8) -> list[Box]:
    """Write a label beside each point, each placed where it covers no other point's marker and no label
    placed before it, so that a label cannot be read as another point's.

    Tries right-above, right-below, left-above and left-below of the point, then the same twice as far,
    and keeps the first free place, else the one overlapping least (another's marker counts ten times a
    label).

    Args:
        ax: the axes, laid out and with its limits final.
        points: (x, y, text) in data coordinates.
        fontsize: label size in points.

    Returns:
        The boxes of the labels, in display pixels, in the order of ``points``.
    """
    dots = [dot_box(ax, x, y) for x, y, _ in points]
    placed: dict[int, Box] = {}
    order = sorted(range(len(points)), key=lambda k: (points[k][0], points[k][1]))
    for k in order:
        x, y, text = points[k]
        width = label_box(ax, x, y, (0.0, 0.0), text, fontsize)
        width_pt = (width[2] - width[0]) / (ax.figure.dpi / 72.0)
        near = [(8.0, 5.0), (8.0, -16.0), (-8.0 - width_pt, 5.0), (-8.0 - width_pt, -16.0)]
        far = [(2 * dx if dx > 0 else dx - 8.0, 2 * dy) for dx, dy in near]
        best, best_cost, best_box = near[0], math.inf, label_box(ax, x, y, near[0], text, fontsize)
        for offset in near + far:
            box = label_box(ax, x, y, offset, text, fontsize)
            cost = sum(overlap(box, o) for o in placed.values())
            cost += 10 * sum(overlap(box, dot) for j, dot in enumerate(dots) if j != k)
            if cost < best_cost:
                best, best_cost, best_box = offset, cost, box
            if cost == 0.0:
                break
        placed[k] = best_box
        ax.annotate(text, (x, y), textcoords="offset points", xytext=best, fontsize=fontsize)
    return [placed[k] for k in range(len(points))]


@contextmanager
def new_figure(width: float, height: float, **subplots: Any) -> Iterator[tuple[MplFigure, Any]]:
    """A constrained-layout figure of ``width`` x ``height`` inches and its axes, drawn in the report's style.

    Args:
        width, height: size in inches (shown at 96 CSS pixels per inch).
        subplots: arguments of :meth:`matplotlib.figure.Figure.subplots` (nrows, ncols, squeeze...).

    Yields:
        (figure, axes): axes as ``Figure.subplots`` returns them.
    """
    import matplotlib
    from matplotlib.figure import Figure as MplFigure

    with matplotlib.rc_context(STYLE):
        fig = MplFigure(figsize=(width, height), dpi=DPI, layout="constrained")
        axes = fig.subplots(**subplots) if subplots else fig.subplots()
        yield fig, axes


def embed(fig: MplFigure, title: str) -> Figure:
    """Save ``fig`` as SVG (no date, fixed ids) into a data URI.

    Args:
        fig: the drawn figure.
        title: what it shows.

    Returns:
        The :class:`Figure` to hand to the template.
    """
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    width, height = fig.get_size_inches()
    uri = "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return Figure(title, uri, round(width * DPI), round(height * DPI))
