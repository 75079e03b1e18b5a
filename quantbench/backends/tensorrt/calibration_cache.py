"""The calibration cache of a TensorRT calibrator, guarded by a sidecar.

TensorRT silently ignores a cache whose header names another version or algorithm, and silently
trusts one made for another model or other preprocessing. quantbench therefore hands a cache to
TensorRT only when its header matches the installed TensorRT and the calibrator's algorithm, and a
sidecar ``<cache>.json`` records the same model hash, preprocessing hash, settings and the cache's
own SHA-256. Anything else is refused with a one-line :class:`~quantbench.errors.QuantbenchError`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from quantbench import __version__
from quantbench.errors import QuantbenchError
from quantbench.fileio import write_bytes_atomic, write_text_atomic
from quantbench.ranges import DynamicRanges, read_trt_cache, trt_version_string

SIDECAR_FORMAT = "quantbench-trt-calibration-cache"
_HEADER = re.compile(rb"TRT-([0-9]+)-([A-Za-z0-9_]+)")


def preprocessing_hash(preprocessing: dict[str, Any] | None) -> str:
    """SHA-256 of the preprocessing description (keys sorted), the sidecar's record of it."""
    text = json.dumps(preprocessing or {}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheIdentity:
    """What a cache must have been made for to be reused.

    Attributes:
        model_hash: SHA-256 of the ONNX model file.
        preprocessing_hash: :func:`preprocessing_hash` of the preprocessing.
        trt_version: the installed TensorRT as a header number (10.3.0 -> 100300).
        algorithm: the calibrator's algorithm as TensorRT writes it (``EntropyCalibration2`` ...).
        method: the method label (``trt-entropy2``, ``trt-legacy-0.999`` ...).
        settings: calibrator settings that change the result (the legacy quantile and cutoff).
    """

    model_hash: str
    preprocessing_hash: str
    trt_version: int
    algorithm: str
    method: str
    settings: tuple[tuple[str, float], ...] = ()


class CalibrationCache:
    """The cache file ``path`` and its sidecar ``path.json``, for one calibrator.

    Args:
        path: where TensorRT's cache goes (the run's ``ranges/<method>.cache``).
        identity: what the cache must match to be reused.
    """

    def __init__(self, path: Path, identity: CacheIdentity) -> None:
        self.path = Path(path)
        self.identity = identity
        self.sidecar = self.path.with_name(self.path.name + ".json")

    def load(self) -> bytes | None:
        """The cache's bytes when TensorRT may reuse them; None when there is no cache.

        Raises:
            QuantbenchError: a cache exists but its header, sidecar or content does not match.
        """
        if not self.path.is_file():
            return None
        data = self.path.read_bytes()
        header = data.split(b"\n", 1)[0].strip()
        match = _HEADER.fullmatch(header)
        want = self.identity
        if match is None:
            raise QuantbenchError(
                f"{self.path}: not a TensorRT calibration cache (no TRT-<version>-<algorithm> header)"
            )
        version, algorithm = int(match.group(1)), match.group(2).decode()
        if version != want.trt_version or algorithm != want.algorithm:
            made = f"TensorRT {trt_version_string(version)} {algorithm}"
            now = f"TensorRT {trt_version_string(want.trt_version)} {want.algorithm}"
            raise QuantbenchError(
                f"{self.path}: cache refused: made by {made}, this build uses {now}; delete it to recalibrate"
            )
        if not self.sidecar.is_file():
            raise QuantbenchError(
                f"{self.path}: cache refused: no sidecar {self.sidecar.name} records the model and "
                "preprocessing it was made for; delete it to recalibrate"
            )
        try:
            recorded = json.loads(self.sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise QuantbenchError(
                f"{self.sidecar}: unreadable sidecar ({exc}); delete it and the cache"
            ) from None
        problem = self._mismatch(recorded, data)
        if problem:
            raise QuantbenchError(f"{self.path}: cache refused: {problem}; delete it to recalibrate")
        return data

    def _mismatch(self, recorded: Any, data: bytes) -> str | None:
        if not isinstance(recorded, dict) or recorded.get("format") != SIDECAR_FORMAT:
            return f"{self.sidecar.name} is not a quantbench cache sidecar"
        want = self.identity
        checks = (
            ("model_hash", want.model_hash, "made for another model"),
            ("preprocessing_hash", want.preprocessing_hash, "made with other preprocessing"),
            ("method", want.method, "made by another method"),
            ("settings", [list(item) for item in want.settings], "made with other calibrator settings"),
            (
                "cache_sha256",
                hashlib.sha256(data).hexdigest(),
                "the cache changed after its sidecar was written",
            ),
        )
        for key, expected, reason in checks:
            if recorded.get(key) != expected:
                return reason
        return None

    def store(self, data: bytes, *, images: int | None = None) -> None:
        """Write TensorRT's cache and then its sidecar, each atomically.

        Raises:
            QuantbenchError: the data is not a TensorRT calibration cache.
        """
        header = data.split(b"\n", 1)[0].strip()
        if _HEADER.fullmatch(header) is None:
            raise QuantbenchError(
                f"TensorRT handed back a calibration cache without a TRT-<version>-<algorithm> header "
                f"(starts {header[:40]!r}); not written to {self.path}"
            )
        self.sidecar.unlink(missing_ok=True)
        write_bytes_atomic(self.path, data)
        record = {
            "format": SIDECAR_FORMAT,
            **asdict(self.identity),
            "settings": [list(item) for item in self.identity.settings],
            "cache_sha256": hashlib.sha256(data).hexdigest(),
            "images": images,
            "quantbench_version": __version__,
        }
        write_text_atomic(self.sidecar, json.dumps(record, indent=1, sort_keys=True) + "\n")

    def ranges(self, preprocessing: dict[str, Any] | None = None, images: int = 0) -> DynamicRanges:
        """The written cache as :class:`DynamicRanges` labelled with the method.

        Raises:
            QuantbenchError: there is no cache, or it cannot be parsed.
        """
        if not self.path.is_file():
            raise QuantbenchError(f"TensorRT wrote no calibration cache to {self.path}")
        table = read_trt_cache(self.path)
        table.method = self.identity.method
        table.model_hash = self.identity.model_hash
        table.preprocessing = dict(preprocessing or {})
        table.image_count = images
        table.quantbench_version = __version__
        return table
