"""Tests for quantbench.data: discovery, sampling, decoding, preprocessing, tensor files, batching."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from PIL import Image

from quantbench.config import PreprocessSpec
from quantbench.data import PRESETS, Batch, Dataset, LoadReport, open_dataset, resolve_preprocessing
from quantbench.data.files import SkipSample, discover, shuffled
from quantbench.data.images import decode_image
from quantbench.data.loader import Loaded
from quantbench.errors import QuantbenchError
from quantbench.model import InputSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_spec(shape: tuple = (1, 3, 8, 8), dtype: type = np.float32, name: str = "input") -> InputSpec:
    return InputSpec(name, shape, np.dtype(dtype))


def write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def constant_bgr(height: int, width: int, bgr: tuple[int, int, int]) -> np.ndarray:
    return np.full((height, width, 3), bgr, dtype=np.uint8)


def noisy_jpeg(path: Path, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    write(path, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return path.read_bytes()


def image_folder(root: Path, count: int) -> list[str]:
    """``count`` distinct 12x12 PNGs named img00.png...; returns their names."""
    names = []
    for i in range(count):
        name = f"img{i:02d}.png"
        write(root / name, constant_bgr(12, 12, (i, 2 * i, 3 * i)))
        names.append(name)
    return names


def collect(
    dataset: Dataset, n: int | None, seed: int, batch_size: int, **kwargs: int
) -> tuple[list[Batch], LoadReport]:
    stream = dataset.batches(n, seed, batch_size, **kwargs)
    batches = list(stream)
    return batches, stream.report


def one_line(exc: pytest.ExceptionInfo[QuantbenchError]) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


# --- discovery -------------------------------------------------------------------------------------


def test_discovery_is_recursive_case_insensitive_sorted_and_skips_hidden(tmp_path: Path) -> None:
    wanted = [
        "a.JPG",
        "b.jpeg",
        "c.Png",
        "d.bmp",
        "e.WEBP",
        "f.tif",
        "g.TIFF",
        "sub/deeper/z.jpg",
        "sub/y.png",
    ]
    for rel in [*wanted, ".hidden.jpg", ".cache/x.jpg", "sub/.also/q.png", "notes.txt", "sub/readme.md"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = discover(tmp_path)
    assert found.kind == "images"
    assert found.files == sorted(wanted)


def test_discovery_of_tensor_files_and_mixed_folder(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros(3))
    np.savez(tmp_path / "b.npz", x=np.zeros(3))
    (tmp_path / "b.npz").rename(tmp_path / "b.NPZ")
    assert discover(tmp_path).kind == "tensors"
    assert discover(tmp_path).files == ["a.npy", "b.NPZ"]
    (tmp_path / "c.jpg").write_bytes(b"x")
    with pytest.raises(QuantbenchError) as exc:
        discover(tmp_path)
    assert "both images (1) and .npy/.npz files (2)" in one_line(exc)


@pytest.mark.parametrize("case", ["missing", "file", "empty", "only_text", "only_hidden"])
def test_unusable_folder_is_a_one_line_error(tmp_path: Path, case: str) -> None:
    root = tmp_path / "calib"
    if case == "file":
        root.write_bytes(b"x")
    elif case != "missing":
        root.mkdir()
        if case == "only_text":
            (root / "a.txt").write_text("hi")
        if case == "only_hidden":
            write(root / ".a.png", constant_bgr(12, 12, (1, 2, 3)))
    with pytest.raises(QuantbenchError) as exc:
        open_dataset(root, [image_spec()])
    message = one_line(exc)
    assert "calib" in message and "--images" in message
    if case in ("empty", "only_text", "only_hidden"):
        assert message.startswith("no images (.jpg .jpeg .png .bmp .webp .tif .tiff) found under")


# --- deterministic sampling ------------------------------------------------------------------------


def test_sampling_follows_seeded_shuffle_and_ignores_batch_size(tmp_path: Path) -> None:
    names = image_folder(tmp_path, 20)
    dataset = open_dataset(tmp_path, [image_spec()], PreprocessSpec(preset="raw"))
    expected = sorted(names)
    random.Random(7).shuffle(expected)

    orders = []
    for batch_size in (1, 3, 16):
        batches, report = collect(dataset, 10, 7, batch_size)
        flat = [name for batch in batches for name in batch.names]
        assert flat == report.used
        assert len(batches[-1].names) == (10 % batch_size or batch_size)
        assert all(b.inputs["input"].shape[0] == len(b.names) for b in batches)
        orders.append(flat)
    assert orders[0] == orders[1] == orders[2] == expected[:10]
    assert (
        collect(dataset, 10, 7, 3, workers=1)[1].used
        == collect(dataset, 10, 7, 3, workers=5)[1].used
        == orders[0]
    )
    assert collect(dataset, 10, 8, 4)[1].used != orders[0]
    assert sorted(collect(dataset, None, 7, 4)[1].used) == sorted(names)


def test_batch_sizes_and_pixels_match_the_named_files(tmp_path: Path) -> None:
    image_folder(tmp_path, 10)
    dataset = open_dataset(
        tmp_path, [image_spec((1, 3, 12, 12))], PreprocessSpec(preset="raw", channels="BGR")
    )
    batches, _ = collect(dataset, 10, 1, 3)
    assert [len(b.names) for b in batches] == [3, 3, 3, 1]
    for batch in batches:
        for name, sample in zip(batch.names, batch.inputs["input"], strict=True):
            i = int(name[3:5])
            np.testing.assert_allclose(sample[:, 0, 0], np.array([i, 2 * i, 3 * i]) / 255, atol=1e-6)


def test_start_continues_with_disjoint_samples(tmp_path: Path) -> None:
    names = image_folder(tmp_path, 20)
    (tmp_path / "bad.jpg").write_bytes(b"")
    dataset = open_dataset(tmp_path, [image_spec()], PreprocessSpec(preset="raw"))
    _, first = collect(dataset, 8, 3, 4)
    _, second = collect(dataset, 8, 3, 5, start=first.next_start)
    assert not set(first.used) & set(second.used)
    order = shuffled(sorted([*names, "bad.jpg"]), 3)
    valid = [name for name in order if name != "bad.jpg"]
    assert first.used + second.used == valid[:16]
    assert first.next_start == order.index(first.used[-1]) + 1
    with pytest.raises(QuantbenchError) as exc:
        dataset.batches(8, 3, 4, start=second.next_start)
    assert "after position" in one_line(exc)


def test_prefetch_is_bounded_and_close_stops_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image_folder(tmp_path, 60)
    dataset = open_dataset(tmp_path, [image_spec()], PreprocessSpec(preset="raw"))
    calls: list[str] = []
    lock = threading.Lock()
    original = Dataset.load

    def counting_load(self: Dataset, rel: str) -> Loaded:
        with lock:
            calls.append(rel)
        return original(self, rel)

    monkeypatch.setattr(Dataset, "load", counting_load)
    stream = dataset.batches(None, 0, 4, workers=2)
    assert stream.total == 60
    first = next(stream)
    assert len(first.names) == 4
    assert len(calls) <= 4 + 4 + 2 * 2  # the batch plus the look-ahead window
    stream.close()
    assert len(calls) < 60
    with pytest.raises(StopIteration):
        next(stream)
    with dataset.batches(None, 0, 4) as again:
        assert len(next(again).names) == 4
    with pytest.raises(StopIteration):
        next(again)


def test_a_stream_dropped_unfinished_is_finalized_without_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The garbage collector may finalize a stream left unfinished in any thread, even one that is starting
    up, where waiting for the loading threads can deadlock the process: finalizing must not wait for a
    file still loading (close() does)."""
    import gc
    import time

    image_folder(tmp_path, 20)
    dataset = open_dataset(tmp_path, [image_spec()], PreprocessSpec(preset="raw"))
    release, original = threading.Event(), Dataset.load
    loaded: list[str] = []

    def slow_after_four(self: Dataset, rel: str) -> Loaded:
        if len(loaded) >= 4:
            release.wait(10)
        loaded.append(rel)
        return original(self, rel)

    monkeypatch.setattr(Dataset, "load", slow_after_four)
    stream = dataset.batches(None, 0, 4, workers=1)
    assert len(next(stream).names) == 4  # the fifth file is now loading, held until released
    started = time.perf_counter()
    del stream
    gc.collect()
    waited = time.perf_counter() - started
    release.set()
    assert waited < 5


# --- decoding and bad files ------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [3, 100, 0.5, -200, -2, -1])
def test_truncated_jpeg_is_skipped(tmp_path: Path, cut: float) -> None:
    data = noisy_jpeg(tmp_path / "full.jpg")
    assert data.endswith(b"\xff\xd9")
    end = int(len(data) * cut) if isinstance(cut, float) else (cut if cut > 0 else len(data) + cut)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:end])
    with pytest.raises(SkipSample) as exc:
        decode_image(path)
    assert exc.value.reason == "truncated JPEG"
    assert decode_image(tmp_path / "full.jpg")[0].shape == (64, 64, 3)


def _png_chunks(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, type) of each chunk of a PNG, read with struct-free slicing (the test's own walk)."""
    chunks, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunks.append((pos, data[pos + 4 : pos + 8]))
        pos += 12 + length
    return chunks


def test_broken_png_is_skipped_without_a_word_on_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(5)
    ok, encoded = cv2.imencode(".png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    assert ok
    data = encoded.tobytes()
    chunks = dict((kind, offset) for offset, kind in _png_chunks(data))
    idat = chunks[b"IDAT"]
    cases = {
        "cut.png": (data[: len(data) // 2], "truncated PNG"),
        "no_end.png": (data[: chunks[b"IEND"]], "truncated PNG"),
        "flipped.png": (
            data[: idat + 20] + bytes([data[idat + 20] ^ 0xFF]) + data[idat + 21 :],
            "damaged PNG (bad checksum in its 'IDAT' chunk)",
        ),
    }
    capfd.readouterr()
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SkipSample) as exc:
            decode_image(tmp_path / name)
        assert exc.value.reason == reason, name
    assert capfd.readouterr().err == ""  # the decoder never saw them, so its library said nothing
    # a bad checksum in an ancillary chunk is what decoders pass over: the image is still used
    text = b"tEXt" + b"comment\x00hello"
    chunk = len(text[4:]).to_bytes(4, "big") + text + b"\x00\x00\x00\x00"
    (tmp_path / "note.png").write_bytes(data[:idat] + chunk + data[idat:])
    assert decode_image(tmp_path / "note.png")[0].shape == (40, 40, 3)
    (tmp_path / "whole.png").write_bytes(data)
    assert decode_image(tmp_path / "whole.png")[0].shape == (40, 40, 3)


def test_sixteen_bit_png_is_rounded_to_eight_bit(tmp_path: Path) -> None:
    image = np.zeros((8, 8, 3), dtype=np.uint16)
    image[..., 0] = 257 * 100 + 100  # 100.39 -> 100
    image[..., 1] = 257 * 100 + 200  # 100.78 -> 101 (rounded, not truncated)
    image[..., 2] = 65535
    decoded, conversions = decode_image(write(tmp_path / "deep.png", image))
    assert decoded.dtype == np.uint8
    assert decoded[0, 0].tolist() == [100, 101, 255]
    assert conversions == ["16-bit"]


def test_grayscale_rgba_and_cmyk_are_converted(tmp_path: Path) -> None:
    gray, conv = decode_image(write(tmp_path / "g.png", np.full((9, 10), 77, np.uint8)))
    assert gray.shape == (9, 10, 3) and (gray == 77).all() and conv == ["grayscale"]

    rgba = np.zeros((9, 10, 4), np.uint8)
    rgba[...] = (10, 20, 30, 0)
    bgr, conv = decode_image(write(tmp_path / "a.png", rgba))
    assert bgr.shape == (9, 10, 3) and bgr[0, 0].tolist() == [10, 20, 30] and conv == ["alpha dropped"]

    Image.new("CMYK", (10, 9), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red in CMYK
    cmyk, conv = decode_image(tmp_path / "c.jpg")
    assert cmyk.shape == (9, 10, 3) and conv == ["CMYK"]
    blue, green, red = cmyk[4, 5].tolist()
    assert red > 200 and blue < 60 and green < 60

    Image.new("RGB", (10, 9), (0, 0, 255)).save(tmp_path / "rgb.jpg")
    assert decode_image(tmp_path / "rgb.jpg")[1] == []


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "o.jpg", exif=exif)
    assert decode_image(tmp_path / "o.jpg")[0].shape == (20, 10, 3)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"this is not an image\n", "not a decodable image"),
        ("one.png", np.zeros((1, 1, 3), np.uint8), "too small (1x1); images need at least 8 pixels a side"),
        (
            "thin.png",
            np.zeros((7, 30, 3), np.uint8),
            "too small (30x7); images need at least 8 pixels a side",
        ),
        (
            "float.tif",
            np.zeros((9, 9, 3), np.float32),
            "unsupported pixel type float32; save it as an 8-bit image",
        ),
    ],
)
def test_bad_file_is_skipped_with_reason(tmp_path: Path, name: str, content: object, reason: str) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write(path, content)  # type: ignore[arg-type]
    with pytest.raises(SkipSample) as exc:
        decode_image(path)
    assert exc.value.reason == reason


def test_report_counts_every_bad_and_converted_file(tmp_path: Path) -> None:
    image_folder(tmp_path, 3)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/empty.jpg").write_bytes(b"")
    (tmp_path / "bad/text.jpg").write_text("hello")
    (tmp_path / "bad/cut.jpg").write_bytes(noisy_jpeg(tmp_path / "bad/whole.jpg")[:-2])
    write(tmp_path / "bad/dot.png", np.zeros((1, 1, 3), np.uint8))
    write(tmp_path / "odd/deep.png", np.full((8, 8, 3), 4000, np.uint16))
    write(tmp_path / "odd/gray.png", np.full((8, 8), 9, np.uint8))
    write(tmp_path / "odd/alpha.png", np.full((8, 8, 4), 9, np.uint8))
    Image.new("CMYK", (8, 8)).save(tmp_path / "odd/cmyk.jpg")

    dataset = open_dataset(tmp_path, [image_spec()], PreprocessSpec(preset="raw"))
    _, report = collect(dataset, None, 0, 4)
    assert dict(report.skipped) == {
        "bad/empty.jpg": "empty file",
        "bad/text.jpg": "not a decodable image",
        "bad/cut.jpg": "truncated JPEG",
        "bad/dot.png": "too small (1x1); images need at least 8 pixels a side",
    }
    assert sorted(report.converted) == [
        ("odd/alpha.png", "alpha dropped"),
        ("odd/cmyk.jpg", "CMYK"),
        ("odd/deep.png", "16-bit"),
        ("odd/gray.png", "grayscale"),
    ]
    assert sorted(report.used) == sorted(
        [
            *[f"img{i:02d}.png" for i in range(3)],
            "bad/whole.jpg",
            *["odd/alpha.png", "odd/cmyk.jpg", "odd/deep.png", "odd/gray.png"],
        ]
    )
    assert report.next_start == len(dataset.files)


def test_too_few_valid_images_is_a_one_line_error(tmp_path: Path) -> None:
    image_folder(tmp_path, 3)
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.jpg").write_text("nope")
    dataset = open_dataset(tmp_path, [image_spec()], PreprocessSpec(preset="raw"))
    stream = dataset.batches(4, 0, 2)
    with pytest.raises(QuantbenchError) as exc:
        list(stream)
    message = one_line(exc)
    assert message.startswith("only 3 valid images under ")
    assert (
        "2 skipped: e.g. " in message
        and "a.jpg: empty file" in message
        and "b.jpg: not a decodable image" in message
    )
    assert message.endswith("asked for --n 4")
    assert len(stream.report.used) == 3

    with pytest.raises(QuantbenchError) as exc:
        dataset.batches(6, 0, 2)  # fewer candidates than n: raised before anything is decoded
    assert one_line(exc) == f"only 5 images under {tmp_path}/; asked for --n 6"


# --- preprocessing ---------------------------------------------------------------------------------


def preprocess(
    preset: str, image: np.ndarray, spec: InputSpec | None = None, **options: object
) -> np.ndarray:
    return resolve_preprocessing(preset, spec or image_spec((1, 3, 16, 16)), **options).apply(image)  # type: ignore[arg-type]


def test_imagenet_constant_image_matches_formula() -> None:
    red, green, blue = 250, 128, 10
    out = preprocess("imagenet", constant_bgr(30, 50, (blue, green, red)))
    assert out.shape == (3, 16, 16) and out.dtype == np.float32
    for channel, value in enumerate((red, green, blue)):
        expected = (value / 255 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        np.testing.assert_allclose(out[channel], expected, rtol=0, atol=1e-6)


def test_inception_and_raw_constant_images_match_formula() -> None:
    image = constant_bgr(20, 20, (0, 51, 255))  # R=255, G=51, B=0
    np.testing.assert_allclose(
        preprocess("inception", image)[:, 3, 3], [1.0, 51 / 127.5 - 1, -1.0], atol=1e-6
    )
    np.testing.assert_allclose(preprocess("raw", image)[:, 3, 3], [1.0, 0.2, 0.0], atol=1e-6)


def test_rgb_bgr_and_layouts() -> None:
    image = constant_bgr(16, 16, (10, 20, 30))
    rgb = preprocess("raw", image)
    bgr = preprocess("raw", image, channels="BGR")
    np.testing.assert_allclose(rgb[:, 0, 0], np.array([30, 20, 10]) / 255, atol=1e-7)
    np.testing.assert_allclose(bgr[:, 0, 0], np.array([10, 20, 30]) / 255, atol=1e-7)

    gradient = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    nchw = preprocess("raw", gradient)
    nhwc = preprocess("raw", gradient, image_spec((1, 16, 16, 3)))
    assert nchw.shape == (3, 16, 16) and nhwc.shape == (16, 16, 3)
    np.testing.assert_array_equal(nhwc, nchw.transpose(1, 2, 0))
    np.testing.assert_allclose(nchw[0], gradient[:, :, 2] / 255, atol=1e-7)  # unresized: red plane, exact


def test_one_channel_input_gets_grayscale() -> None:
    image = constant_bgr(16, 16, (200, 100, 50))
    out = preprocess("raw", image, image_spec((1, 1, 16, 16)))
    assert out.shape == (1, 16, 16)
    np.testing.assert_allclose(out, (0.114 * 200 + 0.587 * 100 + 0.299 * 50) / 255, atol=1 / 255)
    imagenet = resolve_preprocessing("imagenet", image_spec((1, 1, 16, 16)))
    assert imagenet.channels == "GRAY" and imagenet.mean == (pytest.approx(sum(IMAGENET_MEAN) / 3),)


def test_letterbox_pads_centred_with_pad_value() -> None:
    wide = constant_bgr(100, 200, (0, 0, 255))
    out = preprocess("yolo", wide, image_spec((1, 3, 64, 64)))
    pad = 114 / 255
    assert out.shape == (3, 64, 64)
    np.testing.assert_allclose(out[:, :16, :], pad, atol=1e-6)  # 100x200 -> 32x64, 16 rows of pad each side
    np.testing.assert_allclose(out[:, 48:, :], pad, atol=1e-6)
    np.testing.assert_allclose(out[0, 16:48, :], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[1:, 16:48, :], 0.0, atol=1e-6)

    tall = np.full((300, 100, 3), 255, np.uint8)
    out = preprocess("yolo", tall, image_spec((1, 3, 64, 64)))  # 300x100 -> 64x21, 21 columns left, 22 right
    columns = np.flatnonzero(np.isclose(out[0, 32, :], 1.0))
    assert columns.tolist() == list(range(21, 42))
    np.testing.assert_allclose(out[:, :, :21], pad, atol=1e-6)
    np.testing.assert_allclose(out[:, :, 42:], pad, atol=1e-6)


def test_shorter_side_resize_takes_the_centre_crop() -> None:
    image = np.repeat(np.arange(128, dtype=np.uint8)[np.newaxis, :], 64, axis=0)  # value = column index
    image = np.repeat(image[:, :, np.newaxis], 3, axis=2)
    steps = dataclasses.replace(
        PRESETS["imagenet"], size=(32, 32), crop_fraction=0.5, mean=(0.0,), std=(1.0,)
    )
    out = steps.apply(image)  # covering 64x64 needs no resize; the crop is rows 16..47, columns 48..79
    np.testing.assert_allclose(out[0, 0], np.arange(48, 80) / 255, atol=1e-7)

    default = resolve_preprocessing("imagenet", image_spec((1, 3, "h", "w")), size=224)
    big = default.apply(constant_bgr(300, 600, (1, 2, 3)))
    assert big.shape == (3, 224, 224)


def test_stretch_maps_image_edges_to_output_edges() -> None:
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, 20:] = 255
    out = preprocess("raw", image, image_spec((1, 3, 8, 8)), interpolation="nearest")
    np.testing.assert_array_equal(out[0, :, :4], 0.0)
    np.testing.assert_array_equal(out[0, :, 4:], 1.0)


def test_size_and_layout_come_from_a_static_input() -> None:
    assert resolve_preprocessing("yolo", image_spec((1, 3, 320, 288))).size == (320, 288)
    nhwc = resolve_preprocessing("imagenet", image_spec((1, 300, 256, 3)))
    assert nhwc.layout == "NHWC" and nhwc.size == (300, 256)
    assert resolve_preprocessing("imagenet", image_spec(("n", 3, "h", "w")), size=300).size == (300, 300)
    assert resolve_preprocessing("imagenet", image_spec(()), layout="nhwc", size=8).layout == "NHWC"
    uint8 = resolve_preprocessing("imagenet", image_spec((1, 3, 8, 8), np.uint8))
    assert (uint8.scale, uint8.mean, uint8.std) == (1.0, (0.0,), (1.0,))
    custom = resolve_preprocessing("imagenet", image_spec(), mean=(1.0, 2.0, 3.0), std=(2.0,))
    assert custom.mean == (1.0, 2.0, 3.0) and custom.std == (2.0,)
    json.dumps(custom.to_dict())
    assert "imagenet" in custom.describe() and "\n" not in custom.describe()


def test_a_dynamic_size_comes_from_size_or_the_size_the_model_states() -> None:
    from quantbench.model import stated_image_size

    dynamic = image_spec(("n", 3, "h", "w"))
    assert resolve_preprocessing("yolo", dynamic, stated_size=(320, 320)).size == (320, 320)
    assert resolve_preprocessing("yolo", dynamic, size=(256, 320), stated_size=(320, 320)).size == (256, 320)
    assert resolve_preprocessing("yolo", image_spec((1, 3, 96, "w")), stated_size=(320, 320)).size == (
        96,
        320,
    )
    model = onnx.ModelProto()
    for text, expected in (("[320, 320]", (320, 320)), ("640", (640, 640)), ("(480, 640)", (480, 640))):
        del model.metadata_props[:]
        model.metadata_props.add(key="imgsz", value=text)
        assert stated_image_size(model) == expected
    for text in ("", "[0, 320]", "[1, 2, 3]", "big", "[320.5, 320]"):
        del model.metadata_props[:]
        model.metadata_props.add(key="imgsz", value=text)
        assert stated_image_size(model) is None, text


@pytest.mark.parametrize(
    ("shape", "options", "fragment"),
    [
        ((1, 3, 224, 224), {"size": 300}, "--size 300x300 contradicts model input 'images'"),
        ((1, 3, 224, 224), {"layout": "NHWC"}, "--layout NHWC contradicts model input 'images'"),
        ((1, 3, 224, 224), {"channels": "GRAY"}, "--channels GRAY contradicts model input 'images'"),
        ((1, 1, 224, 224), {"channels": "RGB"}, "--channels RGB contradicts model input 'images'"),
        ((1, 3, 224), {}, "model input 'images' has shape [1, 3, 224], not a batch of images"),
        (("n", 3, "h", "w"), {"interpolation": "bogus", "size": 8}, "interpolation 'bogus' is not one of"),
        (("n", 3, "h", "w"), {"mean": (1.0, 2.0), "size": 8}, "mean needs 1 or 3 values for RGB, got 2"),
        (
            ("n", 3, "h", "w"),
            {},
            "model input 'images' (shape ['n', 3, 'h', 'w']) has a dynamic height and width",
        ),
        (
            (1, 3, 320, "w"),
            {},
            "has a dynamic width and states no image size; give the size it runs at with --size",
        ),
        ((1, 1, 8, 8), {"std": (1.0, 2.0, 3.0)}, "std needs 1 value for GRAY, got 3"),
    ],
)
def test_options_that_do_not_fit_the_model_are_errors(shape: tuple, options: dict, fragment: str) -> None:
    with pytest.raises(QuantbenchError) as exc:
        resolve_preprocessing("imagenet", image_spec(shape, name="images"), **options)
    assert fragment in one_line(exc)


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(QuantbenchError) as exc:
        resolve_preprocessing("resnet", image_spec())
    presets = "imagenet, inception, yolo, ppocr-det, ppocr-rec, raw"
    assert one_line(exc) == f"unknown preset 'resnet'; use one of: {presets}"


# --- tensor files ----------------------------------------------------------------------------------


def test_npy_batches_and_single_samples_are_cast_to_input_dtype(tmp_path: Path) -> None:
    batch = np.arange(5 * 3 * 2 * 2, dtype=np.float64).reshape(5, 3, 2, 2)
    np.save(tmp_path / "a.npy", batch)
    np.save(tmp_path / "b.npy", np.full((3, 2, 2), -1.5))
    (tmp_path / "c.npy").write_bytes(b"garbage, not numpy")
    spec = image_spec(("n", 3, 2, 2), np.float16, name="x")
    dataset = open_dataset(tmp_path, [spec])
    assert dataset.kind == "tensors" and dataset.preprocessing is None
    stream = dataset.batches(None, 0, 4)
    assert stream.total is None
    batches = list(stream)
    report = stream.report
    assert sorted(report.used) == sorted([f"a.npy[{i}]" for i in range(5)] + ["b.npy"])
    assert report.skipped[0][0] == "c.npy" and report.skipped[0][1].startswith("unreadable .npy file")
    samples = {name: s for b in batches for name, s in zip(b.names, b.inputs["x"], strict=True)}
    assert all(b.inputs["x"].dtype == np.float16 for b in batches)
    np.testing.assert_array_equal(samples["a.npy[3]"], batch[3].astype(np.float16))
    np.testing.assert_array_equal(samples["b.npy"], -1.5)

    _, partial = collect(dataset, 2, 0, 4)
    assert len(partial.used) == 2 and partial.next_start <= 2


def test_multi_input_npz(tmp_path: Path) -> None:
    inputs = [
        InputSpec("ids", ("n", 4), np.dtype(np.int64)),
        InputSpec("mask", ("n", 4), np.dtype(np.float32)),
    ]
    np.savez(tmp_path / "one.npz", ids=np.arange(12).reshape(3, 4), mask=np.ones((3, 4)), label=np.zeros(3))
    np.savez(tmp_path / "two.npz", ids=np.full(4, 7), mask=np.zeros(4))
    dataset = open_dataset(tmp_path, inputs)
    batches, report = collect(dataset, None, 0, 8)
    assert sorted(report.used) == ["one.npz[0]", "one.npz[1]", "one.npz[2]", "two.npz"]
    (batch,) = batches
    assert batch.inputs["ids"].dtype == np.int64 and batch.inputs["mask"].dtype == np.float32
    assert batch.inputs["ids"].shape == (4, 4) and batch.inputs["mask"].shape == (4, 4)
    row = batch.names.index("one.npz[2]")
    assert batch.inputs["ids"][row].tolist() == [8, 9, 10, 11]
    assert batch.inputs["mask"][batch.names.index("two.npz")].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"ids": np.zeros((2, 4))}, "bad.npz: no array for model input 'mask' (keys: ids)"),
        ({"ids": np.zeros((2, 5)), "mask": np.zeros((2, 4))}, "bad.npz: tensor 'ids' has shape [2, 5]"),
        ({"ids": np.zeros((2, 4)), "mask": np.zeros((3, 4))}, "bad.npz: inputs hold different sample counts"),
        (
            {"ids": np.zeros((2, 2, 4)), "mask": np.zeros((2, 4))},
            "expects rank 2 (a batch) or 1 (one sample)",
        ),
    ],
)
def test_bad_npz_is_a_one_line_error(tmp_path: Path, arrays: dict, fragment: str) -> None:
    inputs = [
        InputSpec("ids", ("n", 4), np.dtype(np.int64)),
        InputSpec("mask", ("n", 4), np.dtype(np.float32)),
    ]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(QuantbenchError) as exc:
        list(open_dataset(tmp_path, inputs).batches(None, 0, 2))
    message = one_line(exc)
    assert fragment in message
    if "shape [2, 5]" in fragment:
        assert "expects ['n', 4]" in message


def test_samples_of_different_shapes_go_in_batches_of_one_shape_in_order(tmp_path: Path) -> None:
    widths = {"a": 5, "b": 5, "c": 7, "d": 5, "e": 7, "f": 7, "g": 7, "h": 7}
    for name, width in widths.items():
        np.save(tmp_path / f"{name}.npy", np.full((1, width), ord(name), np.float32))
    dataset = open_dataset(tmp_path, [InputSpec("tokens", ("n", "t"), np.dtype(np.float32))])
    stream = dataset.batches(None, 3, 3)
    batches = list(stream)
    # the samples and their order are those of batches of one, whatever the batching
    one_by_one = [b.names[0] for b in dataset.batches(None, 3, 1)]
    assert [name for batch in batches for name in batch.names] == one_by_one
    for batch in batches:
        values = batch.inputs["tokens"]
        assert 1 <= values.shape[0] <= 3
        # every row of a batch is the sample its name says, all of one width
        for row, name in zip(values, batch.names):
            letter = name.split("/")[-1][0]
            assert row.shape == (widths[letter],) and np.all(row == ord(letter))
    # a batch closes early only where the next sample's shape differs
    for before, after in itertools.pairwise(batches):
        if before.inputs["tokens"].shape[0] < 3:
            assert before.inputs["tokens"].shape[1:] != after.inputs["tokens"].shape[1:]
    assert stream.report.shapes == {"tokens": {(5,): 3, (7,): 5}}


def test_sources_that_do_not_fit_the_model(tmp_path: Path) -> None:
    two = [image_spec(name="a"), image_spec(name="b")]
    np.save(tmp_path / "x.npy", np.zeros((3, 8, 8)))
    with pytest.raises(QuantbenchError) as exc:
        open_dataset(tmp_path, two)
    assert (
        "holds .npy files but the model has 2 inputs (a, b); use .npz files keyed by input name"
        in one_line(exc)
    )
    with pytest.raises(QuantbenchError) as exc:
        open_dataset(tmp_path, [image_spec()], PreprocessSpec(size=32))
    assert "--size only apply to images" in one_line(exc)

    images = tmp_path / "images"
    image_folder(images, 1)
    with pytest.raises(QuantbenchError) as exc:
        open_dataset(images, two)
    assert "holds images but the model has 2 inputs (a, b); use .npz files keyed by input name" in one_line(
        exc
    )


# --- dataset identity and imports ------------------------------------------------------------------


def test_fingerprint_tracks_files_and_preprocessing(tmp_path: Path) -> None:
    image_folder(tmp_path, 3)
    dataset = open_dataset(tmp_path, [image_spec()], PreprocessSpec(preset="raw"))
    first = dataset.fingerprint()
    assert (
        len(first) == 64
        and first == open_dataset(tmp_path, [image_spec()], PreprocessSpec(preset="raw")).fingerprint()
    )
    assert first != open_dataset(tmp_path, [image_spec()], PreprocessSpec(preset="imagenet")).fingerprint()
    os.utime(tmp_path / "img01.png", ns=(1, 1))
    assert dataset.fingerprint() != first
    described = json.loads(json.dumps(dataset.describe()))
    assert described["kind"] == "images" and described["files"] == 3
    assert described["preprocessing"]["resize"] == "stretch" and described["root"] == str(tmp_path)


def test_importing_the_package_does_not_import_cv2() -> None:
    code = "import sys, quantbench.data; assert 'cv2' not in sys.modules, 'cv2 imported'"
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
