"""Your own metric: a function of one batch's FP32 and candidate outputs, judged next to the built-in ones.

A metric is any function::

    def fn(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], names: list[str])
        -> dict[str, float]

of one held-out batch: every output of the FP32 model and of the variant judged (by output name, as
read-only arrays whose first axis is the batch) and the batch's sample names. It returns named scores
for that batch, floats that are finite or NaN (NaN: undefined on this batch). It declares which score is
its headline and which way is better, with :func:`metric` (``@quantbench.metric(headline="f1",
higher_is_better=True)``) or as attributes (``fn.headline = "f1"; fn.higher_is_better = True``), and
may declare ``reference``, the value FP32 has: 1.0 for a higher-is-better headline and 0.0 otherwise
unless it says another. FP32 is not scored; its value of the headline is that reference.

A run's value of each score is the sample-weighted mean of its batch scores (each batch weighs as many
samples as it has; batches where the score is NaN or missing are left out, and a score that is NaN on
every batch is NaN). A metric that needs another aggregation (a ratio of totals, a maximum) can return
the parts as scores of their own, such as per-sample means of counts, and combine them afterwards.

Metrics are named as ``path/to/file.py:function`` or as the name of an entry point of the
``quantbench.metrics`` group; :func:`load_metrics` loads them and checks their declarations, and
:class:`PluginAccumulator` checks and combines what they return.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

from quantbench.errors import QuantbenchError

ENTRY_POINT_GROUP = "quantbench.metrics"
"""The entry-point group installed metrics register in."""

OUTPUT_PREFIX = "metric:"
"""A metric's scores appear in ``results.json`` as a pseudo-output called this and the metric's name."""

KIND = "plugin"
"""The kind of a metric's pseudo-output in ``results.json``'s ``comparison_outputs``."""

OPTION = "--metric"

MetricFunction = Callable[[dict[str, np.ndarray], dict[str, np.ndarray], list[str]], Mapping[str, Any]]
_F = TypeVar("_F", bound=Callable[..., Any])


def metric(*, headline: str, higher_is_better: bool, reference: float | None = None) -> Callable[[_F], _F]:
    """Declare a function a metric: which of its scores is the headline and which way is better.

    Args:
        headline: the key of the returned scores that the verdict is about.
        higher_is_better: True where a higher headline means closer to FP32.
        reference: FP32's value of the headline (default: 1.0 where higher is better, else 0.0).

    Returns:
        A decorator that sets ``headline``, ``higher_is_better`` and ``reference`` on the function and
        returns it unchanged.
    """

    def declare(function: _F) -> _F:
        function.headline = headline  # type: ignore[attr-defined]
        function.higher_is_better = higher_is_better  # type: ignore[attr-defined]
        if reference is not None:
            function.reference = reference  # type: ignore[attr-defined]
        return function

    return declare


@dataclass(frozen=True)
class MetricPlugin:
    """A loaded metric and its declarations.

    Attributes:
        spec: how it was named (``path/to/file.py:function`` or an entry point's name).
        name: the function's name, or the entry point's; the pseudo-output is ``metric:<name>``.
        function: the metric itself.
        headline: the key of its headline score.
        higher_is_better: the headline's direction.
        reference: FP32's value of the headline.
    """

    spec: str
    name: str
    function: MetricFunction
    headline: str
    higher_is_better: bool
    reference: float

    @property
    def output(self) -> str:
        """The pseudo-output its scores appear under: ``metric:<name>``."""
        return f"{OUTPUT_PREFIX}{self.name}"

    def describe(self) -> dict[str, Any]:
        """Its entry in ``comparison_outputs`` of ``results.json``."""
        return {
            "shape": [],
            "class_scores": False,
            "kind": KIND,
            "kind_reason": f"your metric {self.spec}",
            "headline": self.headline,
            "higher_is_better": self.higher_is_better,
            "reference": self.reference,
        }

    def score(
        self, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], names: Sequence[str]
    ) -> dict[str, float]:
        """The metric's scores of one batch, checked.

        Raises:
            QuantbenchError: the metric raised, returned something other than a dict of finite-or-NaN
                floats by name, or left out its headline.
        """
        try:
            scores = self.function(_read_only(reference), _read_only(candidate), list(names))
        except Exception as exc:
            raise QuantbenchError(f"{OPTION} {self.spec!r} failed: {type(exc).__name__}: {exc}") from None
        return _checked(self, scores)


def _read_only(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Views of the outputs that a metric cannot change (others read the same arrays)."""
    views = {}
    for name, value in outputs.items():
        view = np.asarray(value).view()
        view.flags.writeable = False
        views[name] = view
    return views


def _checked(plugin: MetricPlugin, scores: Any) -> dict[str, float]:
    """``scores`` as a dict of floats, or a one-line error saying what is wrong with them."""
    where = f"{OPTION} {plugin.spec!r}"
    if not isinstance(scores, Mapping):
        raise QuantbenchError(f"{where} returned {type(scores).__name__}; it must return a dict of floats")
    values: dict[str, float] = {}
    for key, value in scores.items():
        number = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
        if not isinstance(key, str) or not number or math.isinf(float(value)):
            raise QuantbenchError(
                f"{where} returned {key!r}: {value!r}; scores must be finite (or NaN) floats by name"
            )
        values[key] = float(value)
    if plugin.headline not in values:
        raise QuantbenchError(
            f"{where} declares headline {plugin.headline!r} but returned only {sorted(values) or 'nothing'}"
        )
    return values


class PluginAccumulator:
    """The sample-weighted mean of a metric's batch scores for one variant (see the module docstring)."""

    def __init__(self, plugin: MetricPlugin) -> None:
        self.plugin = plugin
        self._sums: dict[str, float] = {}
        self._weights: dict[str, int] = {}

    def update(
        self, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], names: Sequence[str]
    ) -> None:
        """Score one batch (FP32's outputs, the variant's, the sample names) and add it to the means.

        Raises:
            QuantbenchError: see :meth:`MetricPlugin.score`.
        """
        for key, value in self.plugin.score(reference, candidate, names).items():
            self._sums.setdefault(key, 0.0)
            self._weights.setdefault(key, 0)
            if not math.isnan(value):
                self._sums[key] += value * len(names)
                self._weights[key] += len(names)

    def result(self) -> dict[str, float]:
        """Every score's mean so far (NaN where no batch defined it), in the order first returned."""
        return {
            key: total / self._weights[key] if self._weights[key] else math.nan
            for key, total in self._sums.items()
        }


def load_metrics(specs: Sequence[str]) -> list[MetricPlugin]:
    """Load the metrics named by ``--metric`` (see :func:`load_metric`), each name once.

    Raises:
        QuantbenchError: a metric that cannot be loaded, or two with the same name.
    """
    plugins: list[MetricPlugin] = []
    modules: dict[Path, ModuleType] = {}
    for spec in specs:
        plugin = load_metric(spec, modules)
        clash = next((p for p in plugins if p.name == plugin.name), None)
        if clash is not None:
            raise QuantbenchError(
                f"{OPTION} {spec!r} and {clash.spec!r} are both called {plugin.name!r}; rename one function"
            )
        plugins.append(plugin)
    return plugins


def load_metric(spec: str, modules: dict[Path, ModuleType] | None = None) -> MetricPlugin:
    """Load ``path/to/file.py:function`` or the ``quantbench.metrics`` entry point called ``spec``.

    Args:
        spec: the metric as named on the command line.
        modules: files already imported by this call's caller, by resolved path (filled in here).

    Raises:
        QuantbenchError: a missing file or function, an unknown entry point, or a function that does not
            declare its headline and direction (one line naming ``--metric``).
    """
    from quantbench.plugin_files import load_function

    function, name = load_function(spec, OPTION, ENTRY_POINT_GROUP, "metric", modules or {})
    return _declared(spec.strip(), name, function)


def _declared(spec: str, name: str, function: Callable[..., Any]) -> MetricPlugin:
    """``function`` as a :class:`MetricPlugin`, once its declarations are checked."""
    where = f"{OPTION} {spec!r}"
    hint = f"decorate it with @quantbench.metric(headline=..., higher_is_better=...) or set {name}.headline"
    headline = getattr(function, "headline", None)
    if not isinstance(headline, str) or not headline:
        raise QuantbenchError(f"{where}: {name} declares no headline; {hint}")
    higher = getattr(function, "higher_is_better", None)
    if not isinstance(higher, bool):
        raise QuantbenchError(f"{where}: {name} does not declare higher_is_better (True or False); {hint}")
    reference = getattr(function, "reference", None)
    if reference is None:
        reference = 1.0 if higher else 0.0
    if not isinstance(reference, numbers.Real) or isinstance(reference, bool) or not math.isfinite(reference):
        raise QuantbenchError(f"{where}: {name}.reference must be a finite number, not {reference!r}")
    return MetricPlugin(spec, name, function, headline, higher, float(reference))
