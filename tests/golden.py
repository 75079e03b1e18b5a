"""Runs whose results.json must not change when the code is restructured.

``normalize`` keeps what a run decided and measured about the model (ranges, variants, fidelity,
sensitivity, arguments, each variant's headline) and drops what depends on the machine or the moment
(timings and the recommendation that follows from them, dates, versions, absolute paths).
``python -m tests.golden`` rewrites the stored results; do that only when a change of behaviour is
intended, and say so in the commit.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "data" / "golden"

DROPPED_KEYS = re.compile(
    r"(seconds|_ms$|^latency$|^date$|^platform$|^cpu$|^cpu_count$|^python$|^onnxruntime$|^quantbench$"
    r"|^gpu$|^tensorrt$|^threads$|peak_memory_mb|^files$|^command$|^sha256$|^total_s$|images_per_s"
    r"|^recommended$|^reason$)"
)


def sample_case(model: Path, images: Path, out: Path) -> dict[str, Any]:
    """The sample through every stage: two methods, FP16, bias correction and a mixed-precision search."""
    import quantbench

    result = quantbench.run(
        model, images, n=16, eval_n=16, methods=["entropy", "minmax"], bias_correction_images=4,
        bench_runs=1, bench_seconds=0, out=out, preset="inception", target_agreement=99, sensitivity_n=8,
    )  # fmt: skip
    return result.results


def ranges_case(model: Path, images: Path, ranges: Path, out: Path) -> dict[str, Any]:
    """Imported ranges, a node kept in float, evaluation on a folder of its own, no bias correction."""
    import quantbench

    result = quantbench.run(
        model, None, eval_images=images, eval_n=12, ranges=ranges, exclude=["Relu"],
        precisions=["fp32", "int8"], bench_runs=1, bench_seconds=0, out=out, preset="raw",
    )  # fmt: skip
    return result.results


def sensitivity_case(model: Path, images: Path, out: Path) -> dict[str, Any]:
    """``quantbench sensitivity`` on the sample: one method, both views, per-tensor fidelity."""
    from quantbench.flows.sensitivity import run_sensitivity

    return run_sensitivity(
        model, images, n=16, eval_n=8, method="minmax", out=out, preset="inception"
    ).results


def calibrate_case(model: Path, images: Path, out: Path) -> dict[str, Any]:
    """``quantbench calibrate`` on the sample: every built-in method, what the result and tables say."""
    import quantbench

    methods = ["entropy", "minmax", "percentile", "mse"]
    result = quantbench.calibrate(model, images, n=24, methods=methods, out=out, preset="inception")
    tables = {
        f.name: f.read_text(encoding="utf-8").splitlines()
        for files in result.files.values()
        for f in files
        if f.suffix != ".json"
    }
    return {
        "ranges": {label: table.amax for label, table in result.ranges.items()},
        "tables": tables,
        "files": [str(f) for files in result.files.values() for f in files],
        "tensors": result.tensors,
        "images_used": result.images_used,
        "skipped": [list(item) for item in result.skipped],
        "warnings": result.warnings,
        "absmax": result.absmax,
        "next_start": result.next_start,
    }


def normalize(value: Any, roots: tuple[str, ...] = ()) -> Any:
    """``value`` without machine- and moment-dependent entries; paths under ``roots`` made relative."""
    if isinstance(value, dict):
        return {k: normalize(v, roots) for k, v in value.items() if not DROPPED_KEYS.search(str(k))}
    if isinstance(value, list):
        return [normalize(v, roots) for v in value]
    if isinstance(value, str):
        for root in roots:
            value = value.replace(root.rstrip("/") + "/", "<root>/").replace(root, "<root>")
        return re.sub(r"-\d{8}-\d{6}(-\d+)?", "-<stamp>", value)
    return value


def differences(expected: Any, got: Any, where: str = "", rel: float = 1e-3) -> list[str]:
    """Where ``got`` differs from ``expected``: floats within ``rel`` (relative) count as equal."""
    if isinstance(expected, dict) and isinstance(got, dict):
        found = [f"{where}.{k}: missing" for k in expected if k not in got]
        found += [f"{where}.{k}: unexpected" for k in got if k not in expected]
        for key in expected.keys() & got.keys():
            found += differences(expected[key], got[key], f"{where}.{key}", rel)
        return found
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return [f"{where}: {len(expected)} items expected, {len(got)} found"]
        pairs = enumerate(zip(expected, got))
        return [d for i, (a, b) in pairs for d in differences(a, b, f"{where}[{i}]", rel)]
    numbers = (int, float)
    both = isinstance(expected, numbers) and isinstance(got, numbers) and not isinstance(expected, bool)
    if both and (isinstance(expected, float) or isinstance(got, float)):
        if math.isclose(expected, got, rel_tol=rel, abs_tol=1e-6):
            return []
        return [f"{where}: {expected!r} expected, {got!r} found"]
    return [] if expected == got and type(expected) is type(got) else [f"{where}: {expected!r} != {got!r}"]


def main(out: Path) -> None:
    """Run every case on freshly built inputs and store their normalized results."""
    from sample.make_sample import make_sample
    from tests.conftest import photo_folder, tiny_conv_model

    model, images = make_sample(out / "sample", images=120)
    roots = (str(out),)
    cases = {
        "sample_run": sample_case(model, images, out / "runs"),
        "sample_sensitivity": sensitivity_case(model, images, out / "runs"),
        "sample_calibrate": calibrate_case(model, images, out / "calibrate"),
    }
    tiny = tiny_conv_model(out / "tiny.onnx", size=16)
    ranges = out / "tiny_ranges.txt"
    ranges.write_text("input:1.0\nconv1:6.5\nrelu1:6.0\n", encoding="utf-8")
    cases["ranges_run"] = ranges_case(tiny, photo_folder(out / "photos", 12), ranges, out / "runs")
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, results in cases.items():
        text = json.dumps(normalize(results, roots), indent=1, sort_keys=True)
        (GOLDEN / f"{name}.json").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/quantbench-golden"))
