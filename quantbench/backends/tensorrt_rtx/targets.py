"""The GPU architectures TensorRT for RTX builds engines for (``--compute-capability``).

TensorRT for RTX builds ahead of time, with or without a GPU, for the compute capabilities
``IBuilderConfig.set_compute_capability`` is given. quantbench takes them as a comma-separated list:

==============  =====================================================================================
item            targets
==============  =====================================================================================
``8.6``         one architecture, also written ``86``, ``sm86`` or ``SM86`` (any the library names)
``current``     the GPU of the machine that builds (a GPU is needed)
``portable``    the library's default set of architectures (nothing set on the builder)
==============  =====================================================================================

Without the option, engines are built for the GPU present where the library supports it, else
``portable``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from quantbench.errors import QuantbenchError

PORTABLE = "portable"
CURRENT = "CURRENT"


def architectures(members: Sequence[str]) -> list[str]:
    """The ``SM<major><minor>`` names among a ``ComputeCapability`` enum's member names."""
    return [name for name in members if re.fullmatch(r"SM\d+", name)]


def shown(name: str) -> str:
    """``SM86`` -> ``8.6``, ``SM120`` -> ``12.0``."""
    digits = name[2:]
    return f"{digits[:-1]}.{digits[-1]}"


def _item(text: str, known: list[str]) -> str:
    """One item of the option as a member name (``CURRENT``, ``SM86`` ...)."""
    item = text.strip().lower()
    if item == "current":
        return CURRENT
    match = re.fullmatch(r"(?:sm_?)?(\d+)(?:\.(\d))?", item)
    if match is not None:
        name = f"SM{match.group(1)}{match.group(2) or ''}"
        if name in known:
            return name
    listed = ", ".join(shown(name) for name in known)
    raise QuantbenchError(
        f"--compute-capability: unknown target {text.strip()!r}; use {PORTABLE}, current or some of {listed}"
    )


def parse_targets(text: str, members: Sequence[str]) -> tuple[str, ...]:
    """The member names of ``--compute-capability`` (empty for ``portable``).

    Args:
        text: the option, e.g. ``"8.6,8.9"``, ``"current"`` or ``"portable"``.
        members: the library's ``ComputeCapability`` member names.

    Raises:
        QuantbenchError: an unknown target, or ``portable``/``current`` with other targets.
    """
    items = [item for item in text.split(",") if item.strip()]
    if not items:
        raise QuantbenchError(f"--compute-capability is empty; use {PORTABLE}, current or e.g. 8.6")
    if any(item.strip().lower() == PORTABLE for item in items):
        if len(items) > 1:
            raise QuantbenchError(f"--compute-capability: {PORTABLE} stands alone; drop the other targets")
        return ()
    targets = tuple(dict.fromkeys(_item(item, architectures(members)) for item in items))
    if CURRENT in targets and len(targets) > 1:
        raise QuantbenchError("--compute-capability: current stands alone; drop the other targets")
    return targets


def default_targets(gpu_compute_capability: str | None, members: Sequence[str]) -> tuple[str, ...]:
    """The architecture of the GPU present (``"8.6"`` -> ``("SM86",)``) where the library builds for it,
    else empty (the library's portable default)."""
    if gpu_compute_capability is None:
        return ()
    name = "SM" + gpu_compute_capability.replace(".", "")
    return (name,) if name in architectures(members) else ()


def describe_targets(targets: Sequence[str]) -> list[str]:
    """The targets as sidecars and manifests record them: member names, or ``["portable"]``."""
    return list(targets) or [PORTABLE]
