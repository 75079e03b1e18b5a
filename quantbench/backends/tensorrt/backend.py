"""The TensorRT backend: which engine each variant becomes, on TensorRT 10 or 11, and its runner.

========================  =========================================  ====================================
variant                   TensorRT 10                                TensorRT 11
========================  =========================================  ====================================
fp32                      FP32 model, TF32 off                       FP32 model, strongly typed, TF32 off
fp16                      FP32 model + ``BuilderFlag.FP16``          FP16-typed model, strongly typed
int8-trt-<calibrator>     FP32 model + calibrator, INT8 + FP16       refused (no calibrators)
int8-<imported ranges>    FP32 model + dynamic ranges, INT8 + FP16   Q/DQ model, strongly typed
int8-<quantbench method>  Q/DQ model, INT8 + FP16                    Q/DQ model, strongly typed
========================  =========================================  ====================================

Building, running and engine files are those of every TensorRT-family backend
(:class:`~quantbench.backends.trt_common.backend.TrtFamilyBackend`); this one adds TensorRT's own
calibrators. Engines go to ``<run>/engines/<variant>.engine`` with a JSON sidecar, and share
``engines/timing.cache``. A run calls :meth:`TensorRTBackend.begin` first, then
:meth:`TensorRTBackend.calibrate_native` for ``trt-*`` methods, then :meth:`TensorRTBackend.prepare`
per variant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.backends.base import Batches, Capabilities
from quantbench.backends.tensorrt.version import TENSORRT
from quantbench.backends.trt_common.backend import TrtFamilyBackend
from quantbench.errors import QuantbenchError

if TYPE_CHECKING:
    from quantbench.backends.tensorrt.calibrator import InputSlot
    from quantbench.backends.tensorrt.methods import NativeMethod
    from quantbench.backends.trt_common.builder import BuildRequest
    from quantbench.config import BackendSpec
    from quantbench.ranges import DynamicRanges
    from quantbench.variant import Variant


class TensorRTBackend(TrtFamilyBackend):
    """Builds and runs TensorRT engines on the first GPU (see the module docstring).

    Args:
        spec: the backend settings; ``plugins`` are loaded before any model is parsed, ``cuda_graph``
            also times each engine replayed from a CUDA graph.

    Raises:
        QuantbenchError: TensorRT or cuda-python is missing, no GPU is usable, or a plugin cannot load.
    """

    name = "tensorrt"
    library = TENSORRT
    capabilities = Capabilities(native_calibration=True, gpu=True)

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        self._native: set[str] = set()

    def calibration_slots(self, batch_size: int) -> list[InputSlot]:
        """The network inputs as the calibrator feeds them, with the batch dimension ``batch_size``.

        Raises:
            QuantbenchError: an input has a dynamic dimension other than the batch.
        """
        from quantbench.backends.tensorrt.calibrator import InputSlot

        slots = []
        for spec in self.setup.inputs:
            rest = spec.shape[1:]
            if not all(isinstance(d, int) and d > 0 for d in rest):
                raise QuantbenchError(
                    f"input {spec.name!r} has shape {spec.shape}: TensorRT calibration needs every dimension "
                    "but the batch fixed"
                )
            slots.append(InputSlot(spec.name, (batch_size, *(int(d) for d in rest)), np.dtype(spec.dtype)))  # type: ignore[arg-type]
        return slots

    def check_native_methods(self, methods: Sequence[str]) -> list[str]:
        """Parse the ``trt-*`` specs; refuse them on TensorRT 11. Returns their labels.

        Raises:
            QuantbenchError: a bad spec, or TensorRT 11 (no calibrators).
        """
        return [method.label for method in self._parse(methods)]

    def _parse(self, methods: Sequence[str]) -> list[NativeMethod]:
        from quantbench.backends.tensorrt.methods import parse_native_method, refusal

        parsed = []
        for text in methods:
            method = parse_native_method(text)
            problem = refusal(method.text, backend=self.name, tensorrt_major=self.info.major)
            if problem:
                raise QuantbenchError(problem)
            parsed.append(method)
        return parsed

    def calibrate_native(
        self, methods: Sequence[str], batches: Batches, batch_size: int, preprocessing: dict[str, Any]
    ) -> dict[str, DynamicRanges]:
        """Build one INT8 engine per TensorRT calibrator and read back the ranges it computed.

        Args:
            methods: the ``trt-*`` method specs.
            batches: makes a fresh stream of full calibration batches (input name -> array).
            batch_size: the calibration batch.
            preprocessing: the preprocessing, recorded in the cache sidecar.

        Returns:
            Method label -> the ranges of TensorRT's cache (``ranges/<label>.cache``).

        Raises:
            QuantbenchError: TensorRT 11 (no calibrators), a build failure, or an error of the data.
        """
        from quantbench.backends.tensorrt.calibration_cache import (
            CacheIdentity,
            CalibrationCache,
            preprocessing_hash,
        )
        from quantbench.backends.tensorrt.calibrator import BatchFeeder, CalibratorCore
        from quantbench.backends.trt_common.builder import BuildRequest

        tables = {}
        for method in self._parse(methods):
            settings: tuple[tuple[str, float], ...] = ()
            if method.quantile is not None and method.regression_cutoff is not None:
                settings = (("quantile", method.quantile), ("regression_cutoff", method.regression_cutoff))
            identity = CacheIdentity(
                model_hash=self.setup.model_hash,
                preprocessing_hash=preprocessing_hash(preprocessing),
                trt_version=self.info.header,
                algorithm=method.algorithm,
                method=method.label,
                settings=settings,
            )
            cache = CalibrationCache(self.setup.run_dir / "ranges" / f"{method.label}.cache", identity)
            feeder = BatchFeeder(self.calibration_slots(batch_size), batches())
            core = CalibratorCore(method, feeder, batch_size, cache)
            name = f"int8-{method.label}"
            request = BuildRequest(
                name,
                self.setup.model,
                "int8",
                flags=("INT8", "FP16"),
                calibrator=core,
                calibration_batch=batch_size,
            )
            result = self.builder.build(request)
            self.notes.extend(core.notes)
            images = feeder.batches_served * batch_size
            result.details["calibrator"] = {
                "method": method.text,
                "base_class": method.base_class,
                "batch_size": batch_size,
                "batches": feeder.batches_served,
                "cache": str(cache.path),
                "cache_reused": core.cache_reused,
                "cache_written": core.cache_written,
                "notes": core.notes,
            }
            self.save_engine(name, result, "int8")
            tables[method.label] = cache.ranges(preprocessing, images=images)
            self._native.add(method.label)
        return tables

    def build_request(self, variant: Variant) -> BuildRequest:
        """What to build for ``variant``; the engine of a ``trt-*`` method comes from calibration only.

        Raises:
            QuantbenchError: the engine of a ``trt-*`` method is missing.
        """
        label = variant.method or variant.name
        if variant.precision not in ("fp32", "fp16") and label in self._native:
            raise QuantbenchError(
                f"the engine of {variant.name} is missing from {self.engines_dir}; run again"
            )
        return super().build_request(variant)
