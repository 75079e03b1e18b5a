"""Calibration methods by name: built-ins, entry-point plugins and ``file.py:function``.

A method is any function ``method(hist: Histogram, *params: float) -> float`` that
returns an amax. Plugins register one through the ``quantbench.methods``
entry-point group, or are named on the command line as
``path/to/file.py:function``. A method spec may carry numeric parameters after
a colon: ``percentile:99.9``, ``my_methods.py:clipped:0.5``.

Tensors that no method can sensibly range are handled here, once, for every
method (see :func:`degenerate_amax`).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quantbench.calibration import methods
from quantbench.calibration.histograms import Histogram
from quantbench.errors import QuantbenchError

Method = Callable[..., float]
ENTRY_POINT_GROUP = "quantbench.methods"

BUILTIN_METHODS: dict[str, Method] = {
    "entropy": methods.entropy,
    "minmax": methods.minmax,
    "percentile": methods.percentile,
    "mse": methods.mse,
}

EMPTY_TENSOR_AMAX = 1.0
"""Range given to a tensor that was zero (or had no finite value) on every sample."""


@dataclass(frozen=True)
class MethodSpec:
    """A method chosen by the user, with its parameters.

    Attributes:
        text: the spec as written, e.g. ``percentile:99.9``.
        label: a file-name-safe name for its outputs, e.g. ``percentile-99.9``.
        function: the method itself.
        params: numeric parameters passed after the histogram.
    """

    text: str
    label: str
    function: Method
    params: tuple[float, ...] = ()

    def __call__(self, hist: Histogram) -> float:
        return float(self.function(hist, *self.params))


def available_methods() -> dict[str, Method]:
    """Built-in methods plus those installed through the entry-point group."""
    from importlib.metadata import entry_points

    found = dict(BUILTIN_METHODS)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in found:
            found[entry.name] = entry.load()
    return found


def _load_file_method(path: str, name: str, spec_text: str) -> Method:
    from quantbench.plugin_files import function_from_file

    return function_from_file(Path(path), name, f"method {spec_text!r}")


def _parse_params(spec_text: str, raw: list[str]) -> tuple[float, ...]:
    try:
        return tuple(float(value) for value in raw)
    except ValueError:
        raise QuantbenchError(
            f"method {spec_text!r}: parameters must be numbers (e.g. percentile:99.9)"
        ) from None


def _try_parameters(text: str, function: Method, params: tuple[float, ...]) -> None:
    """Run a built-in method with ``params`` on a small histogram, so that a parameter it refuses
    (``percentile:200``) fails before any work rather than after the collection pass.

    Raises:
        QuantbenchError: the method refuses the parameters.
    """
    import numpy as np

    trial = Histogram(np.ones(16), top=16.0, absmax=16.0)
    try:
        function(trial, *params)
    except (ValueError, ArithmeticError) as exc:
        raise QuantbenchError(f"method {text!r}: {exc}") from None


def parse_method(spec_text: str) -> MethodSpec:
    """Turn ``name[:param...]`` or ``file.py:function[:param...]`` into a :class:`MethodSpec`.

    Raises:
        QuantbenchError: unknown method, missing plugin file or function, bad
            parameters, or parameters the function does not take.
    """
    text = spec_text.strip()
    file_match = re.match(r"^(?P<path>.+?\.py):(?P<func>[A-Za-z_]\w*)(?::(?P<rest>.*))?$", text)
    if file_match:
        function = _load_file_method(file_match["path"], file_match["func"], text)
        raw_params = file_match["rest"].split(":") if file_match["rest"] else []
        base = file_match["func"]
    else:
        from quantbench.backends.registry import owner_of

        name, *raw_params = text.split(":")
        known = BUILTIN_METHODS if name in BUILTIN_METHODS else available_methods()
        owner = owner_of(name) if name not in known else None
        if owner is not None:
            raise QuantbenchError(
                f"method {name!r} is a calibrator of the {owner.name} backend: it runs with quantbench run "
                f"--backend {owner.name}; quantbench's own methods are {', '.join(sorted(known))}"
            )
        if name not in known:
            raise QuantbenchError(
                f"unknown calibration method {name!r}; choose from {', '.join(sorted(known))} "
                "or give path/to/file.py:function"
            )
        function, base = known[name], name
    params = _parse_params(text, raw_params)
    try:
        inspect.signature(function).bind(None, *params)
    except TypeError:
        raise QuantbenchError(f"method {text!r}: {base} does not take {len(params)} parameter(s)") from None
    except ValueError:  # builtins without a signature: let the call decide
        pass
    if params and BUILTIN_METHODS.get(base) is function:
        _try_parameters(text, function, params)
    label = "-".join([base, *(f"{p:g}" for p in params)])
    return MethodSpec(text, label, function, params)


def degenerate_amax(name: str, hist: Histogram, count: int) -> tuple[float | None, list[str]]:
    """The range of a tensor that no method should decide, and warnings about it.

    * no finite value, or zero on every sample: ``EMPTY_TENSOR_AMAX`` (1.0). Any
      positive amax represents 0 exactly; 1.0 keeps the scale a normal number.
    * every finite |x| falls in one histogram bin (a constant, or near-constant,
      tensor): ``absmax``, which represents the constant exactly.
    * NaN or Inf present alongside finite values: methods run on the finite
      values (returns None for the range) and a warning says how many were left out.

    Returns:
        (amax or None when the methods should decide, warnings naming the tensor).
    """
    warnings = []
    if hist.nan or hist.inf:
        warnings.append(
            f"tensor {name!r}: {hist.nan} NaN and {hist.inf} infinite value(s) left out of its range"
        )
    if count == 0 or hist.absmax <= 0.0:
        what = "had no finite value" if count == 0 else "was zero on every calibration sample"
        warnings.append(f"tensor {name!r} {what}; range set to {EMPTY_TENSOR_AMAX}")
        return EMPTY_TENSOR_AMAX, warnings
    if int((hist.counts > 0).sum()) <= 1:
        warnings.append(f"tensor {name!r} is constant (|x| = {hist.absmax:.6g}); range set to its absmax")
        return hist.absmax, warnings
    return None, warnings


def apply_method(spec: MethodSpec, name: str, hist: Histogram) -> float:
    """Run one method on one (non-degenerate) tensor and check what it returned.

    Raises:
        QuantbenchError: the method raised, or returned something other than a
            finite positive number.
    """
    try:
        amax = spec(hist)
    except Exception as exc:
        raise QuantbenchError(f"method {spec.text!r} failed on tensor {name!r}: {exc}") from None
    if not isinstance(amax, float) or not math.isfinite(amax) or amax <= 0.0:
        raise QuantbenchError(
            f"method {spec.text!r} returned {amax!r} for tensor {name!r}; a range must be a finite number > 0"
        )
    return amax
