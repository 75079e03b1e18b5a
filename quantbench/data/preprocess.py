"""Turning a decoded image into a model input: resize, channel order, normalization, layout."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from quantbench.errors import QuantbenchError
from quantbench.model import InputSpec

ResizeMode = Literal["shorter", "stretch", "letterbox", "keep-ratio", "fixed-height"]
Channels = Literal["RGB", "BGR", "GRAY"]
Layout = Literal["NCHW", "NHWC"]
Interpolation = Literal["linear", "nearest", "area", "cubic", "lanczos"]
PadPosition = Literal["centre", "top-left"]

RESIZE_MODES = ("shorter", "stretch", "letterbox", "keep-ratio", "fixed-height")
VARIABLE_MODES = ("keep-ratio", "fixed-height")
"""Resize modes whose output size follows the image (samples of different shapes)."""
CHANNELS = ("RGB", "BGR", "GRAY")
LAYOUTS = ("NCHW", "NHWC")
INTERPOLATIONS = ("linear", "nearest", "area", "cubic", "lanczos")
PAD_POSITIONS = ("centre", "top-left")


@dataclass(frozen=True)
class Preprocessing:
    """How one image becomes one model input sample.

    Steps, in order: resize (and pad) as ``resize`` says; reorder channels; convert to float32;
    ``(x * scale - mean) / std`` per output channel (``x / (1 / scale)`` with ``divide``); transpose to
    ``layout``.

    Attributes:
        preset: the preset this started from (for summaries only).
        resize: ``"shorter"`` scales the image so it covers ``size / crop_fraction``
            then centre-crops ``size``; ``"stretch"`` resizes straight to ``size``;
            ``"letterbox"`` keeps the aspect ratio, fits the image inside ``size``
            and pads the rest with ``pad_value``: ``centre`` resizes, then pads evenly around
            (Ultralytics' letterbox); ``top-left`` pads on the right and bottom to the output's
            aspect ratio, then resizes (nudenet's); ``"keep-ratio"`` scales the image by one
            factor so that its shorter side is at least ``min_side`` and its longer side at most
            ``max_side``, then rounds each side to a multiple of ``multiple`` (PP-OCR's text detector);
            ``"fixed-height"`` scales the image to height ``size[0]`` keeping its aspect
            ratio and pads it on the right with ``pad_value`` to at least ``size[1]``
            wide (PP-OCR's text recognizer). The last two give samples of their own shapes.
        size: output (height, width); the minimum width for ``fixed-height``; unused by
            ``keep-ratio``.
        crop_fraction: fraction of the resized image kept by the centre crop (``"shorter"`` only).
        scale: multiplier applied to the 0..255 pixel values.
        divide: divide by ``1 / scale`` in float32 instead of multiplying by ``scale`` (the last bit
            differs for half of the pixel values: pipelines that divide by 255, as Ultralytics and
            PP-OCR's recognizer do, are matched exactly this way).
        mean: subtracted after scaling; one value per output channel, or one for all.
        std: divides after subtracting the mean; same length rule as ``mean``.
        channels: output channel order, or ``"GRAY"`` for one luminance channel.
        layout: ``"NCHW"`` gives (C, H, W) samples, ``"NHWC"`` gives (H, W, C).
        interpolation: OpenCV interpolation used when resizing.
        pad_value: the 0..255 value of padding (``letterbox``, ``fixed-height``), before
            normalization.
        pad_position: ``letterbox``: ``"centre"`` or ``"top-left"`` (padding right and bottom).
        min_side: ``keep-ratio``: the shorter side is scaled up to this where it is shorter.
        max_side: ``keep-ratio``: the longer side is scaled down to this where it is longer.
        multiple: ``keep-ratio``: each side is rounded to a multiple of this (at least one).
    """

    preset: str
    resize: ResizeMode
    size: tuple[int, int] = (224, 224)
    crop_fraction: float = 1.0
    scale: float = 1 / 255
    divide: bool = False
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    channels: Channels = "RGB"
    layout: Layout = "NCHW"
    interpolation: Interpolation = "linear"
    pad_value: float = 0.0
    pad_position: PadPosition = "centre"
    min_side: int | None = None
    max_side: int | None = None
    multiple: int = 1

    def __post_init__(self) -> None:
        """Check the values.

        Raises:
            QuantbenchError: a value is out of range or of an unknown kind.
        """
        problems = [*self._choice_problems(), *self._number_problems()]
        count = self.channel_count
        for label, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, count):
                need = "1 value" if count == 1 else f"1 or {count} values"
                problems.append(f"{label} needs {need} for {self.channels}, got {len(values)}")
        if problems:
            raise QuantbenchError(f"bad preprocessing: {'; '.join(problems)}")

    def _choice_problems(self) -> list[str]:
        choices = (
            ("resize", self.resize, RESIZE_MODES),
            ("channels", self.channels, CHANNELS),
            ("layout", self.layout, LAYOUTS),
            ("interpolation", self.interpolation, INTERPOLATIONS),
            ("pad position", self.pad_position, PAD_POSITIONS),
        )
        return [
            f"{label} {value!r} is not one of {', '.join(known)}"
            for label, value, known in choices
            if value not in known
        ]

    def _number_problems(self) -> list[str]:
        problems = []
        if len(self.size) != 2 or min(self.size) < 1:
            problems.append(f"size {self.size} must be two positive integers (height, width)")
        if not 0.0 < self.crop_fraction <= 1.0:
            problems.append(f"crop fraction {self.crop_fraction} must be in (0, 1]")
        if any(value == 0 for value in self.std):
            problems.append("std values must not be 0")
        if not 0 <= self.pad_value <= 255:
            problems.append(f"pad value {self.pad_value:g} must be in 0..255")
        for label, side in (("min side", self.min_side), ("max side", self.max_side)):
            if side is not None and side < 1:
                problems.append(f"{label} {side} must be at least 1")
        if self.min_side is not None and self.max_side is not None and self.min_side > self.max_side:
            problems.append(f"min side {self.min_side} is above max side {self.max_side}")
        if self.multiple < 1:
            problems.append(f"multiple {self.multiple} must be at least 1")
        if self.resize == "keep-ratio" and self.min_side is None and self.max_side is None:
            problems.append("keep-ratio needs --min-side or --max-side (or both)")
        return problems

    @property
    def channel_count(self) -> int:
        """1 for ``"GRAY"``, else 3."""
        return 1 if self.channels == "GRAY" else 3

    @property
    def variable(self) -> bool:
        """Whether the output size follows the image (:data:`VARIABLE_MODES`)."""
        return self.resize in VARIABLE_MODES

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
        pixels = resized.astype(np.float32)
        scaled = pixels / np.float32(1.0 / self.scale) if self.divide else pixels * np.float32(self.scale)
        sample = (scaled - mean) / std
        if self.layout == "NCHW":
            sample = sample.transpose(2, 0, 1)
        return np.ascontiguousarray(sample, dtype=np.float32)

    def _resize(self, image: np.ndarray) -> np.ndarray:
        """The image resized (and padded) to the output's geometry, still uint8 (float32 where padded
        with a fractional value)."""
        if self.resize == "stretch":
            return _resize_to(image, self.size, self.interpolation)
        if self.resize == "shorter":
            return self._shorter(image)
        if self.resize == "keep-ratio":
            return _resize_to(
                image,
                keep_ratio_size(image.shape[:2], self.min_side, self.max_side, self.multiple),
                self.interpolation,
            )
        if self.resize == "fixed-height":
            return self._fixed_height(image)
        return self._letterbox(image)

    def _shorter(self, image: np.ndarray) -> np.ndarray:
        out_h, out_w = self.size
        in_h, in_w = image.shape[:2]
        factor = max(out_h / in_h, out_w / in_w) / self.crop_fraction
        height = max(out_h, round(in_h * factor))
        width = max(out_w, round(in_w * factor))
        top, left = (height - out_h) // 2, (width - out_w) // 2
        return _resize_to(image, (height, width), self.interpolation)[top : top + out_h, left : left + out_w]

    def _letterbox(self, image: np.ndarray) -> np.ndarray:
        """Fit inside ``size`` keeping the aspect ratio (sides rounded half to even), then pad; or, at
        the top left, pad to the output's aspect ratio, then resize."""
        out_h, out_w = self.size
        in_h, in_w = image.shape[:2]
        if self.pad_position == "top-left":
            height, width = (
                max(in_h, math.ceil(in_w * out_h / out_w)),
                max(in_w, math.ceil(in_h * out_w / out_h)),
            )
            padded = self._canvas(height, width, image.shape[2])
            padded[:in_h, :in_w] = image
            return _resize_to(padded, (out_h, out_w), self.interpolation)
        factor = min(out_h / in_h, out_w / in_w)
        height = min(out_h, max(1, round(in_h * factor)))
        width = min(out_w, max(1, round(in_w * factor)))
        top, left = (out_h - height) // 2, (out_w - width) // 2
        canvas = self._canvas(out_h, out_w, image.shape[2])
        canvas[top : top + height, left : left + width] = _resize_to(
            image, (height, width), self.interpolation
        )
        return canvas

    def _fixed_height(self, image: np.ndarray) -> np.ndarray:
        """Height ``size[0]``, the width following the aspect ratio, padded on the right to at least
        ``size[1]`` (as PP-OCR's recognizer: the canvas is ``int(H * max(W_min / H, w / h))`` wide and
        the image ``ceil(H * w / h)`` wide, at most the canvas)."""
        out_h, min_w = self.size
        in_h, in_w = image.shape[:2]
        ratio = in_w / float(in_h)
        width = int(out_h * max(min_w / out_h, ratio))
        resized_w = min(width, math.ceil(out_h * ratio))
        canvas = self._canvas(out_h, width, image.shape[2])
        canvas[:, :resized_w] = _resize_to(image, (out_h, resized_w), self.interpolation)
        return canvas

    def _canvas(self, height: int, width: int, channels: int) -> np.ndarray:
        """An image of padding: uint8, or float32 where the pad value is not a whole number."""
        whole = float(self.pad_value).is_integer()
        return np.full((height, width, channels), self.pad_value, dtype=np.uint8 if whole else np.float32)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-able dict (tuples become lists)."""
        return {key: list(v) if isinstance(v, tuple) else v for key, v in dataclasses.asdict(self).items()}

    def describe(self) -> str:
        """One short line for summaries: preset, geometry, channel order, normalization, layout."""

        def numbers(values: tuple[float, ...]) -> str:
            return ",".join(f"{v:g}" for v in values)

        scaling = f"x/{1 / self.scale:.6g}" if self.divide else f"x*{self.scale:.6g}"
        return (
            f"{self.preset}: {self._geometry()} ({self.interpolation}), {self.channels}, "
            f"{scaling} mean {numbers(self.mean)} std {numbers(self.std)}, {self.layout}"
        )

    def _geometry(self) -> str:
        height, width = self.size
        if self.resize == "shorter":
            return (
                f"resize to cover {height / self.crop_fraction:g}x{width / self.crop_fraction:g}, "
                f"centre crop {height}x{width}"
            )
        if self.resize == "letterbox":
            return f"letterbox {height}x{width} pad {self.pad_value:g} {self.pad_position}"
        if self.resize == "keep-ratio":
            limits = [
                f"{label} {side}"
                for label, side in (("min side", self.min_side), ("max side", self.max_side))
                if side
            ]
            return f"keep ratio, {', '.join(limits)}, sides to multiples of {self.multiple}"
        if self.resize == "fixed-height":
            return f"height {height}, width at least {width} (pad {self.pad_value:g} on the right)"
        return f"stretch {height}x{width}"


_FLAGS = {"linear": 1, "nearest": 0, "area": 3, "cubic": 2, "lanczos": 4}
"""OpenCV's interpolation flags (cv2.INTER_*), so that cv2 is imported only when an image is resized."""


def _resize_to(image: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """``image`` resized to (height, width) with OpenCV, or itself where it has that size already."""
    import cv2

    height, width = size
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=_FLAGS[interpolation])


def keep_ratio_size(
    shape: tuple[int, ...], min_side: int | None, max_side: int | None, multiple: int
) -> tuple[int, int]:
    """The (height, width) of the ``keep-ratio`` mode for an image of (height, width) ``shape``.

    One factor for both sides: ``min_side / shorter`` where the shorter side is below ``min_side``,
    else ``max_side / longer`` where the longer side is above ``max_side``, else 1 (with both limits,
    the longer side's wins where they conflict). Each side is then truncated to a whole number and rounded
    half to even to a multiple of ``multiple``, at least ``multiple``: PP-OCR's detector resize.
    """
    height, width = shape[0], shape[1]
    ratio = 1.0
    if min_side is not None and min(height, width) < min_side:
        ratio = float(min_side) / min(height, width)
    if max_side is not None and max(height, width) * ratio > max_side:
        ratio = float(max_side) / max(height, width)
    sides = (int(height * ratio), int(width * ratio))
    return tuple(max(multiple, int(round(side / multiple) * multiple)) for side in sides)  # type: ignore[return-value]


PREPROCESS_GROUP = "quantbench.preprocess"
"""The entry-point group of preprocessing functions (``--preprocess NAME``)."""


@dataclass(frozen=True)
class PluginPreprocessing:
    """Preprocessing by a function of your own, for pipelines no option expresses.

    ``--preprocess path/to/file.py:function`` (or the name of a ``quantbench.preprocess`` entry point)
    names ``function(image, path)``: ``image`` is the decoded picture, uint8 BGR ``[H, W, 3]``, ``path`` its
    file; it returns the model input without a batch axis (one array for a one-input model), or a dict of
    them by input name. Samples may differ in shape; they are cast to each input's dtype.

    Attributes:
        spec: the function as named on the command line.
        function: the function.
        digest: SHA-256 of its file (empty for an entry point), so that calibration caches follow edits.
    """

    spec: str
    function: Callable[..., Any]
    digest: str = ""

    @classmethod
    def load(cls, spec: str) -> PluginPreprocessing:
        """The function ``spec`` names.

        Raises:
            QuantbenchError: a missing file or function, or an unknown entry point (naming --preprocess).
        """
        import hashlib

        from quantbench.plugin_files import FILE_SPEC, load_function

        function, _ = load_function(spec, "--preprocess", PREPROCESS_GROUP, "preprocessing function")
        match = FILE_SPEC.match(spec.strip())
        digest = hashlib.sha256(Path(match["path"]).read_bytes()).hexdigest() if match else ""
        return cls(spec.strip(), function, digest)

    def samples(self, image: np.ndarray, path: Path, inputs: list[InputSpec]) -> dict[str, np.ndarray]:
        """The model inputs of one image, checked and cast to the inputs' dtypes.

        Raises:
            QuantbenchError: the function fails or returns something else than the inputs' arrays (one
                line naming the image and --preprocess).
        """
        where = f"--preprocess {self.spec!r} on {path.name}"
        try:
            out = self.function(image, path)
        except Exception as exc:
            raise QuantbenchError(f"{where} failed: {type(exc).__name__}: {exc}") from None
        arrays = out if isinstance(out, dict) else {inputs[0].name: out} if len(inputs) == 1 else None
        names = [spec.name for spec in inputs]
        if arrays is None or sorted(arrays) != sorted(names):
            raise QuantbenchError(f"{where}: return a dict with the arrays of the inputs {', '.join(names)}")
        samples = {}
        for spec in inputs:
            value = np.asarray(arrays[spec.name])
            if value.dtype == object or not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
                raise QuantbenchError(f"{where}: input {spec.name!r} is not an array of numbers")
            rank = len(spec.shape) - 1
            if spec.shape and value.ndim != rank:
                raise QuantbenchError(
                    f"{where}: input {spec.name!r} has shape {list(value.shape)}; the model takes "
                    f"{list(spec.shape)}, so return rank {rank} (no batch axis)"
                )
            samples[spec.name] = np.ascontiguousarray(value, dtype=spec.dtype)
        return samples

    def to_dict(self) -> dict[str, Any]:
        """What identifies it: the spec and its file's digest."""
        return {"plugin": self.spec, "sha256": self.digest}

    def describe(self) -> str:
        """One line for summaries."""
        return f"your function {self.spec}"


PRESETS: dict[str, Preprocessing] = {
    "imagenet": Preprocessing(
        "imagenet", "shorter", crop_fraction=0.875, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    ),
    "inception": Preprocessing(
        "inception", "shorter", crop_fraction=0.875, scale=1 / 127.5, mean=(1.0, 1.0, 1.0)
    ),
    "yolo": Preprocessing("yolo", "letterbox", size=(640, 640), pad_value=114, divide=True),
    "ppocr-det": Preprocessing(
        "ppocr-det", "keep-ratio", mean=(0.5,), std=(0.5,), channels="BGR", min_side=736, multiple=32
    ),
    "ppocr-rec": Preprocessing(
        "ppocr-rec",
        "fixed-height",
        size=(48, 320),
        divide=True,
        mean=(0.5,),
        std=(0.5,),
        channels="BGR",
        pad_value=127.5,
    ),
    "raw": Preprocessing("raw", "stretch"),
}
"""The named presets. ``yolo``: Ultralytics' letterbox (centred, pad 114, ``x / 255``, RGB), at the size
the model fixes or states; ``ppocr-det``: PP-OCR's text detector as rapidocr feeds it (shorter side up to
736, sides to multiples of 32, BGR, ``(x / 255 - 0.5) / 0.5``); ``ppocr-rec``: its recognizer (height 48,
at least 320 wide, padded on the right with 0 after normalization). Size and layout are defaults that a
static model input overrides."""


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
    stated_size: tuple[int, int] | None = None,
    **geometry: Any,
) -> Preprocessing:
    """The preprocessing for one image input: a preset, adjusted to the model and the user's options.

    Layout, channel count and size come from the model input where its shape
    is static (rank 4, channel axis 1 or 3 of size 1 or 3); the options given
    here override the preset. A model input with one channel gets ``"GRAY"``
    and the preset's mean/std averaged to one value. An input with an integer
    dtype takes raw pixels: scale 1, mean 0, std 1 unless mean/std are given.
    Where the height or width is dynamic, the size is ``size``, else the one the
    model states (``stated_size``); never the preset's by default.

    Args:
        preset: one of ``PRESETS``.
        spec: the model's image input.
        size: output size, one int for square or (height, width).
        mean: per-channel means (or one value for all channels).
        std: per-channel standard deviations (or one value).
        channels: ``"RGB"``, ``"BGR"`` or ``"GRAY"``.
        layout: ``"NCHW"`` or ``"NHWC"``.
        interpolation: one of ``INTERPOLATIONS``.
        geometry: ``resize``, ``pad_value``, ``pad_position``, ``min_side``, ``max_side``,
            ``multiple``: the :class:`Preprocessing` fields of those names, over the preset's.
        stated_size: the (height, width) the model's metadata states it was made for
            (:func:`quantbench.model.stated_image_size`), if any.

    Returns:
        The resolved, validated preprocessing.

    Raises:
        QuantbenchError: unknown preset; an option that contradicts the model input's
            static shape; a dynamic height or width with no size given or stated; the
            input is not shaped like images; a bad value.
    """
    key = preset.strip().lower()
    if key not in PRESETS:
        raise QuantbenchError(f"unknown preset {preset!r}; use one of: {', '.join(PRESETS)}")
    base = _with_geometry(PRESETS[key], geometry)
    model_layout, model_channels, model_h, model_w = _model_geometry(spec)
    where = f"model input '{spec.name}' (shape {list(spec.shape)})"
    chosen_layout = _choose_layout(layout, model_layout, where) or base.layout
    gray, chosen_channels = _choose_channels(channels, model_channels, where)
    requested = (size, size) if isinstance(size, int) else size
    if base.variable:
        height, width = _variable_size(base, requested, (model_h, model_w), where)
    else:
        height, width = _choose_size(requested, (model_h, model_w), stated_size, where)
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
        channels=cast(Channels, chosen_channels or base.channels),
        layout=cast(Layout, chosen_layout),
        interpolation=cast(Interpolation, interpolation.lower() if interpolation else base.interpolation),
    )


GEOMETRY = ("resize", "pad_value", "pad_position", "min_side", "max_side", "multiple")
"""The :class:`Preprocessing` fields an option may set directly."""


def _with_geometry(base: Preprocessing, geometry: dict[str, Any]) -> Preprocessing:
    """``base`` with the geometry options given (lower-cased choices).

    Raises:
        QuantbenchError: an option that is not a geometry field, or a bad value.
    """
    unknown = sorted(set(geometry) - set(GEOMETRY))
    if unknown:
        raise QuantbenchError(f"unknown preprocessing option {unknown[0]!r}")
    given = {name: value for name, value in geometry.items() if value is not None}
    for name in ("resize", "pad_position"):
        if isinstance(given.get(name), str):
            given[name] = given[name].strip().lower()
    return dataclasses.replace(base, **given) if given else base


def _variable_size(
    base: Preprocessing, requested: tuple[int, int] | None, fixed: tuple[int | None, int | None], where: str
) -> tuple[int, int]:
    """The ``size`` of a mode whose output follows the image: ``fixed-height`` takes its height from
    the model where it fixes one; a fixed side the mode cannot keep is an error.

    Raises:
        QuantbenchError: the model fixes a side the mode varies, or ``--size`` contradicts its height.
    """
    model_h, model_w = fixed
    varied = ("height", "width") if base.resize == "keep-ratio" else ("width",)
    pinned = [
        label
        for label, side in (("height", model_h), ("width", model_w))
        if side is not None and label in varied
    ]
    if pinned:
        raise QuantbenchError(
            f"--resize {base.resize} gives images of their own {' and '.join(varied)}, but {where} fixes its "
            f"{' and '.join(pinned)}; use --resize letterbox or stretch"
        )
    height, width = requested or base.size
    if model_h is not None and base.resize == "fixed-height":
        if requested is not None and height != model_h:
            raise QuantbenchError(
                f"--size {height}x{width} contradicts {where}, whose height is fixed at {model_h}"
            )
        height = model_h
    return height, width


def _choose_layout(layout: str | None, model_layout: str | None, where: str) -> str | None:
    """``--layout`` checked against the model's, else the model's (None: neither says)."""
    if layout is None:
        return model_layout
    layout = layout.upper()
    if model_layout is not None and layout != model_layout:
        raise QuantbenchError(f"--layout {layout} contradicts {where}, which is {model_layout}")
    return layout


def _choose_channels(channels: str | None, model_channels: int | None, where: str) -> tuple[bool, str | None]:
    """(gray, channel order) from ``--channels`` checked against the model's channel count; the order is
    None where neither says (the preset's)."""
    if channels is not None:
        channels = channels.upper()
        wanted = 1 if channels == "GRAY" else 3
        if model_channels is not None and wanted != model_channels:
            raise QuantbenchError(
                f"--channels {channels} contradicts {where}, which takes {model_channels} channel(s)"
            )
    gray = channels == "GRAY" or (channels is None and model_channels == 1)
    return gray, "GRAY" if gray else channels


def _choose_size(
    requested: tuple[int, int] | None,
    fixed: tuple[int | None, int | None],
    stated: tuple[int, int] | None,
    where: str,
) -> tuple[int, int]:
    """The (height, width) to feed: the model's fixed sides; for dynamic ones ``--size``, else the size
    the model states.

    Raises:
        QuantbenchError: ``--size`` contradicts a fixed side, or a side is dynamic and no size is given
            or stated.
    """
    model_h, model_w = fixed
    if requested is not None:
        height, width = requested
        for label, asked, side in (("height", height, model_h), ("width", width, model_w)):
            if side is not None and asked != side:
                raise QuantbenchError(
                    f"--size {height}x{width} contradicts {where}, whose {label} is fixed at {side}; "
                    "drop --size or export the model with that size"
                )
        return height, width
    if model_h is not None and model_w is not None:
        return model_h, model_w
    if stated is not None:
        return model_h or stated[0], model_w or stated[1]
    dynamic = " and ".join(label for label, side in (("height", model_h), ("width", model_w)) if side is None)
    raise QuantbenchError(
        f"{where} has a dynamic {dynamic} and states no image size; give the size it runs at with "
        "--size HEIGHTxWIDTH (e.g. --size 640x640)"
    )
