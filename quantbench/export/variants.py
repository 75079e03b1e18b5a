"""The variants of a run: FP32, FP16 and one INT8 model per set of ranges, written as ONNX files.

Each variant has the model TensorRT takes (``model``) and the model ONNX Runtime runs on the CPU
(``cpu_model``; the same file unless the CPU needs another shape of it):

==============  ===========================================  ================================================
variant         model (TensorRT)                             cpu_model (ONNX Runtime on the CPU)
==============  ===========================================  ================================================
fp32            the input model                              the same
fp16            FP16-typed ONNX (``models/fp16.onnx``)       ops without CPU float16 kernels wrapped in casts
int8-<method>   symmetric int8 Q/DQ (``int8-<m>.onnx``)      uint8 flavour, same quantized values (or fast)
==============  ===========================================  ================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from quantbench.errors import QuantbenchError, first_line
from quantbench.fileio import write_bytes_atomic
from quantbench.ranges import DynamicRanges
from quantbench.variant import Variant

if TYPE_CHECKING:
    from quantbench.export.int8 import Int8Fitting

PRECISIONS = ("fp32", "fp16", "int8")


def parse_precisions(items: Iterable[str]) -> list[str]:
    """Validated precisions in the canonical order fp32, fp16, int8; fp32 is always included.

    Raises:
        QuantbenchError: an unknown precision, or none at all.
    """
    given = {item.strip().lower() for item in items if item.strip()}
    if not given:
        raise QuantbenchError("--precisions names none of fp32, fp16, int8; give at least one")
    unknown = sorted(given - set(PRECISIONS))
    if unknown:
        raise QuantbenchError(f"unknown precision {unknown[0]!r}; use fp32, fp16 and/or int8")
    return [p for p in PRECISIONS if p in given or p == "fp32"]


def save_model(model: onnx.ModelProto, path: Path, check: bool = True) -> Path:
    """Write ``model`` to ``path`` atomically, checked by ``onnx.checker`` first (unless ``check`` is False).

    Raises:
        QuantbenchError: the model fails the checker.
    """
    if check:
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as exc:  # a bug here must not leave a model that TensorRT rejects later
            raise QuantbenchError(
                f"the model built for {path.name} fails onnx.checker: {first_line(exc)}"
            ) from None
    write_bytes_atomic(path, model.SerializeToString())
    return path


def fp32_variant(model_path: Path) -> Variant:
    """The input model as it is."""
    return Variant("fp32", "fp32", model_path, model_path)


def fp16_variant(model: onnx.ModelProto, absmax: Mapping[str, float], models_dir: Path) -> Variant:
    """An FP16-typed model, in FP32 where calibrated values overflow float16 and at its inputs/outputs.

    Args:
        model: the FP32 model.
        absmax: tensor -> largest |x| seen in calibration (empty when unknown).
        models_dir: where ``fp16.onnx`` (and ``fp16.cpu.onnx`` when the CPU needs casts) go.
    """
    from quantbench.export.fp16 import convert_to_fp16, runnable_on_cpu

    converted = convert_to_fp16(model, absmax=dict(absmax), keep_io_types=True)
    path = save_model(converted.model, models_dir / "fp16.onnx")
    cpu_model, emulated = runnable_on_cpu(converted.model)
    cpu_path = save_model(cpu_model, models_dir / "fp16.cpu.onnx") if emulated else path
    details = {"kept_fp32": converted.kept_fp32, "kept_fp32_reasons": converted.reasons}
    return Variant("fp16", "fp16", path, cpu_path, emulated=emulated, details=details)


def int8_variant(
    model: onnx.ModelProto,
    ranges: DynamicRanges,
    label: str,
    exclude: Iterable[str],
    models_dir: Path,
    fitting: Int8Fitting | None = None,
    cpu_flavour: str = "exact",
) -> Variant:
    """A Q/DQ INT8 model from ``ranges`` (TensorRT placement) and its ONNX Runtime flavour.

    Args:
        model: the FP32 model.
        ranges: the dynamic ranges to quantize with.
        label: the ranges' name (the method, or the imported file's name).
        exclude: node names, op types or regular expressions to keep in float.
        models_dir: where ``int8-<label>.onnx`` and ``int8-<label>.onnxruntime.onnx`` go.
        fitting: adaptive weight codes and the bias correction's batches (see
            :class:`quantbench.export.int8.Int8Fitting`); None: nearest rounding, no correction.
        cpu_flavour: ``exact`` or ``fast``, the ONNX Runtime flavour written (``--cpu-flavour``).

    Raises:
        QuantbenchError: a bad exclude pattern, or no tensor of the model could be quantized.
    """
    from quantbench.export.int8 import build_int8_model

    built = build_int8_model(model, ranges.amax, exclude, fitting, cpu_flavour)
    if not built.plan.quantized_nodes:
        raise QuantbenchError(
            f"no Conv, ConvTranspose, Gemm or MatMul of the model could be quantized with the {label} ranges "
            f"({len(built.plan.missing)} of their inputs have no range)"
        )
    name = f"int8-{label}"
    path = save_model(built.tensorrt, models_dir / f"{name}.onnx")
    cpu_path = save_model(built.onnxruntime, models_dir / f"{name}.onnxruntime.onnx")
    return Variant(name, "int8", path, cpu_path, method=label, details=built.details())
