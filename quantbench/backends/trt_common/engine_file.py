"""Engine files and their JSON sidecars.

An engine (``engines/<variant>.engine``) runs only on the version of the TensorRT-family library and
the GPU it was built for. Its sidecar (``<variant>.engine.json``) records them (the library's version
under its module name, e.g. ``tensorrt``), with the precision, the build path and the quantbench
version; :func:`check_engine` refuses an engine whose sidecar is missing or names another library
version, GPU or compute capability. An engine built ahead of time (TensorRT for RTX) records the GPU
architectures it was built for (``targets``) instead, and is checked against those.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantbench import __version__
from quantbench.errors import QuantbenchError
from quantbench.fileio import write_bytes_atomic, write_text_atomic

if TYPE_CHECKING:
    from quantbench.backends.trt_common.library import TrtLibrary

SIDECAR_FORMAT = "quantbench-trt-engine"


def sidecar_path(engine: Path) -> Path:
    """``engines/fp32.engine`` -> ``engines/fp32.engine.json``."""
    return engine.with_name(engine.name + ".json")


def save_engine(path: Path, data: bytes, record: dict[str, Any], library: TrtLibrary) -> dict[str, Any]:
    """Write an engine and its sidecar atomically; returns the sidecar's content.

    Args:
        path: the engine file.
        data: the serialized engine.
        record: at least the library's version under its module name (e.g. ``tensorrt``), ``gpu``,
            ``compute_capability`` and ``precision``.
        library: the library that built the engine.

    Raises:
        QuantbenchError: ``record`` lacks one of those keys.
    """
    required = (library.module, "gpu", "compute_capability", "precision")
    missing = [key for key in required if key not in record]
    if missing:
        raise QuantbenchError(f"engine sidecar for {path.name} lacks {', '.join(missing)}")
    sidecar = {
        "format": SIDECAR_FORMAT,
        **record,
        "quantbench_version": __version__,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }
    sidecar_path(path).unlink(missing_ok=True)
    write_bytes_atomic(path, data)
    write_text_atomic(sidecar_path(path), json.dumps(sidecar, indent=1, sort_keys=True) + "\n")
    return sidecar


def check_engine(
    path: Path,
    library: TrtLibrary,
    *,
    version: str,
    gpu: str | None = None,
    compute_capability: str | None = None,
    targets: list[str] | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """An engine's bytes and sidecar when it was built for this library version and GPU.

    Args:
        path: the engine file.
        library: the library that is to run the engine.
        version: its installed version.
        gpu, compute_capability: the GPU in use (name, ``"9.0"``), for an engine built for the GPU it was
            built on; None: not checked (an engine built ahead of time for ``targets``).
        targets: the GPU architectures the engine must have been built for (sidecar ``targets``);
            None: not checked.

    Raises:
        QuantbenchError: the engine or its sidecar is missing or unreadable, the engine's bytes do not
            match the sidecar, or it was built for another library version, GPU, compute capability or
            targets.
    """
    name = library.name
    side = sidecar_path(path)
    if not path.is_file():
        raise QuantbenchError(f"engine not found: {path}")
    if not side.is_file():
        raise QuantbenchError(
            f"{path}: no sidecar {side.name} says which {name} and GPU the engine was built for; rebuild it"
        )
    try:
        record = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise QuantbenchError(f"{side}: unreadable engine sidecar ({exc}); rebuild the engine") from None
    if not isinstance(record, dict) or record.get("format") != SIDECAR_FORMAT:
        raise QuantbenchError(f"{side}: not a quantbench engine sidecar; rebuild the engine")
    if record.get(library.module) != version:
        raise QuantbenchError(
            f"{path}: built with {name} {record.get(library.module)}, {name} {version} is installed; "
            f"engines run only on the {name} version that built them: rebuild it"
        )
    if (gpu is not None and record.get("gpu") != gpu) or (
        compute_capability is not None and record.get("compute_capability") != compute_capability
    ):
        raise QuantbenchError(
            f"{path}: built for {record.get('gpu')} (compute capability {record.get('compute_capability')}), "
            f"this GPU is {gpu} ({compute_capability}); rebuild it on this GPU"
        )
    if targets is not None and record.get("targets") != targets:
        raise QuantbenchError(
            f"{path}: built for {record.get('targets')}, {', '.join(targets)} asked for; rebuild it"
        )
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise QuantbenchError(f"{path}: the engine changed after its sidecar was written; rebuild it")
    return data, record
