"""Calibration and evaluation data: image folders or .npy/.npz files, preprocessed and batched.

Typical use::

    dataset = open_dataset("calib/", input_specs(model), preset="imagenet")
    stream = dataset.batches(n=100, seed=0, batch_size=8)
    for batch in stream:
        run(batch.inputs)
    held_out = dataset.batches(n=50, seed=0, batch_size=8, start=stream.report.next_start)
"""

from quantbench.data.files import IMAGE_EXTENSIONS, TENSOR_EXTENSIONS
from quantbench.data.loader import Batch, BatchStream, Dataset, LoadReport, open_dataset
from quantbench.data.preprocess import PRESETS, Preprocessing, resolve_preprocessing

__all__ = [
    "IMAGE_EXTENSIONS",
    "PRESETS",
    "TENSOR_EXTENSIONS",
    "Batch",
    "BatchStream",
    "Dataset",
    "LoadReport",
    "Preprocessing",
    "open_dataset",
    "resolve_preprocessing",
]
