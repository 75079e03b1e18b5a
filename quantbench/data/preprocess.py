"""Turning a decoded image into a model input: resize, channel order, normalization, layout."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from quantbench.errors import QuantbenchError
from quantbench.model import InputSpec

ResizeMode = Literal["shorter", "stretch", "letterbox"]
Channels = Literal["RGB", "BGR", "GRAY"]
Layout = Literal["NCHW", "NHWC"]
Interpolation = Literal["linear", "nearest", "area", "cubic", "lanczos"]

RESIZE_MODES = ("shorter", "stretch", "letterbox")
CHANNELS = ("RGB", "BGR", "GRAY")
LAYOUTS = ("NCHW", "NHWC")
INTERPOLATIONS = ("linear", "nearest", "area", "cubic", "lanczos")


@dataclass(frozen=True)
class Preprocessing:
    """How one image becomes one model input sample.

    Steps, in order: resize to ``size``; reorder channels; convert to float32;
    ``(x * scale - mean) / std`` per output channel; transpose to ``layout``.

    Attributes:
        preset: the preset this started from (for summaries only).
        resize: ``"shorter"`` scales the image so it covers ``size / crop_fraction``
            then centre-crops ``size``; ``"stretch"`` resizes straight to ``size``;
            ``"letterbox"`` keeps the aspect ratio, fits the image inside ``size``
            and pads the rest with ``pad_value``, image centred.
        size: output (height, width).
        crop_fraction: fraction of the resized image kept by the centre crop (``"shorter"`` only).
        scale: multiplier applied to the 0..255 pixel values.
        mean: subtracted after scaling; one value per output channel, or one for all.
        std: divides after subtracting the mean; same length rule as ``mean``.
        channels: output channel order, or ``"GRAY"`` for one luminance channel.
        layout: ``"NCHW"`` gives (C, H, W) samples, ``"NHWC"`` gives (H, W, C).
        interpolation: OpenCV interpolation used when resizing.
        pad_value: the 0..255 value of letterbox padding, before normalization.
    """

    preset: str
    resize: ResizeMode
    size: tuple[int, int] = (224, 224)
    crop_fraction: float = 1.0
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    channels: Channels = "RGB"
    layout: Layout = "NCHW"
    interpolation: Interpolation = "linear"
    pad_value: int = 0

    def __post_init__(self) -> None:
        """Check the values.

        Raises:
            QuantbenchError: a value is out of range or of an unknown kind.
        """
        problems = []
        if self.resize not in RESIZE_MODES:
            problems.append(f"resize {self.resize!r} is not one of {', '.join(RESIZE_MODES)}")
        if self.channels not in CHANNELS:
            problems.append(f"channels {self.channels!r} is not one of {', '.join(CHANNELS)}")
        if self.layout not in LAYOUTS:
            problems.append(f"layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")
        if self.interpolation not in INTERPOLATIONS:
            problems.append(f"interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
        if len(self.size) != 2 or min(self.size) < 1:
            problems.append(f"size {self.size} must be two positive integers (height, width)")
        if not 0.0 < self.crop_fraction <= 1.0:
            problems.append(f"crop fraction {self.crop_fraction} must be in (0, 1]")
        count = self.channel_count
        for label, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, count):
                need = "1 value" if count == 1 else f"1 or {count} values"
                problems.append(f"{label} needs {need} for {self.channels}, got {len(values)}")
        if any(value == 0 for value in self.std):
            problems.append("std values must not be 0")
        if not 0 <= self.pad_value <= 255:
            problems.append(f"pad value {self.pad_value} must be in 0..255")
        if problems:
            raise QuantbenchError(f"bad preprocessing: {'; '.join(problems)}")

    @property
    def channel_count(self) -> int:
        """1 for ``"GRAY"``, else 3."""
        return 1 if self.channels == "GRAY" else 3

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Preprocess one image.

        Args:
            image: uint8 BGR array of shape (H, W, 3).

        Returns:
            float32 array of shape (C, H, W) for NCHW or (H, W, C) for NHWC; no batch axis.
        """
        import cv2

        resized = self._resize(image)
        if self.channels == "RGB":
            resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        elif self.channels == "GRAY":
            resized = cv2.cvtColor(resized, cv2.COLOR_BGR2GRAY)[:, :, np.newaxis]
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        sample = (resized.astype(np.float32) * np.float32(self.scale) - mean) / std
        if self.layout == "NCHW":
            sample = sample.transpose(2, 0, 1)
        return np.ascontiguousarray(sample, dtype=np.float32)

    def _resize(self, image: np.ndarray) -> np.ndarray:
        import cv2

        flag = {
            "linear": cv2.INTER_LINEAR,
            "nearest": cv2.INTER_NEAREST,
            "area": cv2.INTER_AREA,
            "cubic": cv2.INTER_CUBIC,
            "lanczos": cv2.INTER_LANCZOS4,
        }[self.interpolation]
        out_h, out_w = self.size
        in_h, in_w = image.shape[:2]

        def resize_to(height: int, width: int) -> np.ndarray:
            if (height, width) == (in_h, in_w):
                return image
            return cv2.resize(image, (width, height), interpolation=flag)

        if self.resize == "stretch":
            return resize_to(out_h, out_w)
        if self.resize == "shorter":
            factor = max(out_h / in_h, out_w / in_w) / self.crop_fraction
            height = max(out_h, round(in_h * factor))
            width = max(out_w, round(in_w * factor))
            top, left = (height - out_h) // 2, (width - out_w) // 2
            return resize_to(height, width)[top : top + out_h, left : left + out_w]
        factor = min(out_h / in_h, out_w / in_w)
        height = min(out_h, max(1, round(in_h * factor)))
        width = min(out_w, max(1, round(in_w * factor)))
        top, left = (out_h - height) // 2, (out_w - width) // 2
        canvas = np.full((out_h, out_w, 3), self.pad_value, dtype=np.uint8)
        canvas[top : top + height, left : left + width] = resize_to(height, width)
        return canvas

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-able dict (tuples become lists)."""
        return {key: list(v) if isinstance(v, tuple) else v for key, v in dataclasses.asdict(self).items()}

    def describe(self) -> str:
        """One short line for summaries: preset, geometry, channel order, normalization, layout."""
        height, width = self.size
        if self.resize == "shorter":
            geometry = f"resize to cover {height / self.crop_fraction:g}x{width / self.crop_fraction:g}"
            geometry += f", centre crop {height}x{width}"
        elif self.resize == "letterbox":
            geometry = f"letterbox {height}x{width} pad {self.pad_value}"
        else:
            geometry = f"stretch {height}x{width}"

        def numbers(values: tuple[float, ...]) -> str:
            return ",".join(f"{v:g}" for v in values)

        return (
            f"{self.preset}: {geometry} ({self.interpolation}), {self.channels}, "
            f"x*{self.scale:.6g} mean {numbers(self.mean)} std {numbers(self.std)}, {self.layout}"
        )


PRESETS: dict[str, Preprocessing] = {
    "imagenet": Preprocessing(
        "imagenet", "shorter", crop_fraction=0.875, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    ),
    "inception": Preprocessing(
        "inception", "shorter", crop_fraction=0.875, scale=1 / 127.5, mean=(1.0, 1.0, 1.0)
    ),
    "yolo": Preprocessing("yolo", "letterbox", size=(640, 640), pad_value=114),
    "raw": Preprocessing("raw", "stretch"),
}
"""The named presets; size and layout are defaults that a static model input overrides."""


def _model_geometry(spec: InputSpec) -> tuple[str | None, int | None, int | None, int | None]:
    """(layout, channels, height, width) read from a model input; None where not fixed.

    Raises:
        QuantbenchError: the input is not shaped like a batch of images.
    """
    rank = len(spec.shape)
    if rank == 0:  # shape unknown
        return None, None, None, None
    if rank != 4:
        raise QuantbenchError(
            f"model input '{spec.name}' has shape {list(spec.shape)}, not a batch of images; "
            "point --images at .npy/.npz files instead"
        )
    if spec.fixed(1) in (1, 3):
        return "NCHW", spec.fixed(1), spec.fixed(2), spec.fixed(3)
    if spec.fixed(3) in (1, 3):
        return "NHWC", spec.fixed(3), spec.fixed(1), spec.fixed(2)
    return None, None, None, None


def _fit_length(values: tuple[float, ...], count: int) -> tuple[float, ...]:
    """A preset's per-channel values fitted to ``count`` channels (averaged down to one for gray)."""
    if len(values) == count or len(values) == 1:
        return values
    return (sum(values) / len(values),)


def resolve_preprocessing(
    preset: str,
    spec: InputSpec,
    *,
    size: int | tuple[int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    channels: str | None = None,
    layout: str | None = None,
    interpolation: str | None = None,
) -> Preprocessing:
    """The preprocessing for one image input: a preset, adjusted to the model and the user's options.

    Layout, channel count and size come from the model input where its shape
    is static (rank 4, channel axis 1 or 3 of size 1 or 3); the options given
    here override the preset. A model input with one channel gets ``"GRAY"``
    and the preset's mean/std averaged to one value. An input with an integer
    dtype takes raw pixels: scale 1, mean 0, std 1 unless mean/std are given.

    Args:
        preset: one of ``PRESETS``.
        spec: the model's image input.
        size: output size, one int for square or (height, width).
        mean: per-channel means (or one value for all channels).
        std: per-channel standard deviations (or one value).
        channels: ``"RGB"``, ``"BGR"`` or ``"GRAY"``.
        layout: ``"NCHW"`` or ``"NHWC"``.
        interpolation: one of ``INTERPOLATIONS``.

    Returns:
        The resolved, validated preprocessing.

    Raises:
        QuantbenchError: unknown preset; an option that contradicts the model
            input's static shape; the input is not shaped like images; a bad value.
    """
    key = preset.strip().lower()
    if key not in PRESETS:
        raise QuantbenchError(f"unknown preset {preset!r}; use one of: {', '.join(PRESETS)}")
    base = PRESETS[key]
    model_layout, model_channels, model_h, model_w = _model_geometry(spec)
    where = f"model input '{spec.name}' (shape {list(spec.shape)})"

    if layout is not None:
        layout = layout.upper()
        if model_layout is not None and layout != model_layout:
            raise QuantbenchError(f"--layout {layout} contradicts {where}, which is {model_layout}")
    chosen_layout = layout or model_layout or base.layout

    if channels is not None:
        channels = channels.upper()
        wanted = 1 if channels == "GRAY" else 3
        if model_channels is not None and wanted != model_channels:
            raise QuantbenchError(
                f"--channels {channels} contradicts {where}, which takes {model_channels} channel(s)"
            )
    gray = channels == "GRAY" or (channels is None and model_channels == 1)
    chosen_channels = "GRAY" if gray else (channels or base.channels)

    requested = (size, size) if isinstance(size, int) else size
    height, width = base.size
    if requested is not None:
        height, width = requested
        for label, asked, fixed in (("height", height, model_h), ("width", width, model_w)):
            if fixed is not None and asked != fixed:
                raise QuantbenchError(
                    f"--size {height}x{width} contradicts {where}, whose {label} is fixed at {fixed}; "
                    "drop --size or export the model with that size"
                )
    height, width = model_h or height, model_w or width

    count = 1 if gray else 3
    integer_input = not spec.is_float
    base_mean = (0.0,) if integer_input else _fit_length(base.mean, count)
    base_std = (1.0,) if integer_input else _fit_length(base.std, count)
    return dataclasses.replace(
        base,
        preset=key,
        size=(int(height), int(width)),
        scale=1.0 if integer_input else base.scale,
        mean=tuple(float(v) for v in mean) if mean is not None else base_mean,
        std=tuple(float(v) for v in std) if std is not None else base_std,
        # Strings from the command line are checked by Preprocessing.__post_init__.
        channels=cast(Channels, chosen_channels),
        layout=cast(Layout, chosen_layout),
        interpolation=cast(Interpolation, interpolation.lower() if interpolation else base.interpolation),
    )
