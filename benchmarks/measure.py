"""What the benchmark scripts share: the sample's preprocessed images, ONNX Runtime sessions, logits,
fidelity against FP32 and round-robin latency."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from quantbench.config import PreprocessSpec

PRESET = "inception"
EVAL_BATCH = 8


def samples(model: Path, images: Path, names: list[str]) -> np.ndarray:
    """The preprocessed samples of ``names`` (relative paths), stacked in order."""
    from quantbench.data import open_dataset
    from quantbench.model import input_specs, load_model

    dataset = open_dataset(images, input_specs(load_model(model)), PreprocessSpec(preset=PRESET))
    arrays = []
    for rel in names:
        loaded, _ = dataset.load(rel)
        arrays.extend(next(iter(sample.values())) for _, sample in loaded)
    return np.stack(arrays)


def session(path: Path, threads: int):  # type: ignore[no-untyped-def]
    """A CPU session whose idle threads sleep: a pool left spinning after its runs would take the cores
    from the next model timed round-robin."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def logits(sess, data: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The first output for every sample, in batches of ``EVAL_BATCH``, as float64 rows."""
    name = sess.get_inputs()[0].name
    parts = [sess.run(None, {name: data[i : i + EVAL_BATCH]})[0] for i in range(0, len(data), EVAL_BATCH)]
    return np.concatenate(parts).reshape(len(data), -1).astype(np.float64)


def fidelity(q: np.ndarray, f: np.ndarray) -> tuple[float, float]:
    """Top-1 agreement with FP32 (fraction) and ||q - f|| / ||f|| over every logit."""
    agreement = float(np.mean(np.argmax(q, axis=1) == np.argmax(f, axis=1)))
    return agreement, float(np.linalg.norm(q - f) / np.linalg.norm(f))


def latency(sessions: dict, feeds: np.ndarray, rounds: int, runs: int) -> dict[str, float]:
    """Median ms per batch of each session, timed round-robin (each round starts one model later)."""
    times: dict[str, list[float]] = {key: [] for key in sessions}
    name = next(iter(sessions.values())).get_inputs()[0].name
    for sess in sessions.values():
        for _ in range(3):
            sess.run(None, {name: feeds})
    keys = list(sessions)
    for r in range(rounds):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            sess = sessions[key]
            for _ in range(runs):
                started = time.perf_counter()
                sess.run(None, {name: feeds})
                times[key].append(time.perf_counter() - started)
    return {key: 1000.0 * float(np.median(values)) for key, values in times.items()}
