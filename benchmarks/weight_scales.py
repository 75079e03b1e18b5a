"""The weight half of a per-layer search on the layer's output, measured: how much output error a per-channel
weight scale chosen on calibration samples saves against the scale of the channel's largest |w| (the one
quantbench writes), with nearest and with adaptive rounding.

For every Conv / Gemm / MatMul weight adaptive rounding handles (``quantbench.export.rounding``), on the
first ``--samples`` calibration samples (``.npy`` tensors as ``benchmarks/zoo.py`` writes them): ``H = Σ x
xᵀ`` of the layer's FP32 input (``rounding.collect_hessians``) and, per output channel, the output error
``(w - s q)ᵀ H (w - s q)`` of four codes: nearest at the largest-|w| scale, adaptive at that scale, nearest
at the best of the candidate scales (``--fractions`` of the largest-|w| scale) and adaptive at the best of
them (each channel keeping the least error of everything tried before it, so a searched column is never
worse than the one to its left). Errors are summed per layer and divided by nearest's; the table gives
each layer's ratios and their means.

Usage:  python benchmarks/weight_scales.py MODEL SAMPLES [--samples 32] [--fractions 1,0.97,0.94,0.9,0.85,0.8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def layer_errors(
    rows: np.ndarray, scales: np.ndarray, hessian: np.ndarray, fractions: list[float]
) -> np.ndarray:
    """Summed output error of nearest, adaptive, searched nearest and searched adaptive codes of one layer:
    ``rows`` (g, r, d) float64, ``scales`` (g, r) the largest-|w| scales, ``hessian`` (g, d, d)."""
    from quantbench.export import rounding

    def error(codes: np.ndarray, trial: np.ndarray) -> np.ndarray:
        return rounding.output_error(rows, codes, trial, hessian)

    nearest = error(rounding.nearest_codes(rows, scales), scales)
    adaptive = np.minimum(error(rounding.adaptive_codes(rows, scales, hessian), scales), nearest)
    searched_nearest, searched_adaptive = nearest.copy(), adaptive.copy()
    for fraction in fractions:
        trial = scales * fraction
        searched_nearest = np.minimum(searched_nearest, error(rounding.nearest_codes(rows, trial), trial))
        trial_adaptive = error(rounding.adaptive_codes(rows, trial, hessian), trial)
        searched_adaptive = np.minimum(np.minimum(searched_adaptive, trial_adaptive), searched_nearest)
    return np.array([e.sum() for e in (nearest, adaptive, searched_nearest, searched_adaptive)])


def measure(model: Any, samples: np.ndarray, fractions: list[float]) -> list[tuple[str, np.ndarray]]:
    """Per weight adaptive rounding handles: (node label, the four summed errors)."""
    from quantbench.export import rounding
    from quantbench.export.qdq import at_least_opset13, plan_qdq, quantize_weight
    from quantbench.graph import tensor_names

    model = at_least_opset13(model)
    plan = plan_qdq(model, dict.fromkeys(tensor_names(model.graph), 1.0), [])
    sites, _ = rounding.weight_sites(model, plan)
    weights = rounding._weight_values(model, plan, sites)
    feed = model.graph.input[0].name
    feeds = [{feed: samples[i : i + 8]} for i in range(0, len(samples), 8)]
    hessians, _ = rounding.collect_hessians(model, sites, weights, feeds)
    out = []
    for site in sites:
        weight = weights[site.weight]
        rows = rounding.weight_rows(weight.astype(np.float64), site)
        _, scales = quantize_weight(weight, site.axis)
        row_scales = scales.astype(np.float64).reshape(rows.shape[:2])
        out.append((site.node, layer_errors(rows, row_scales, hessians.pop(site.node), fractions)))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("samples", type=Path, help="folder of .npy calibration samples")
    parser.add_argument("--samples", dest="count", type=int, default=32)
    parser.add_argument("--fractions", default="1,0.97,0.94,0.9,0.85,0.8")
    args = parser.parse_args(argv)
    import onnx

    fractions = [float(f) for f in args.fractions.split(",")]
    files = sorted(args.samples.glob("*.npy"))[: args.count]
    samples = np.stack([np.load(f) for f in files]).astype(np.float32)
    started = time.perf_counter()
    layers = measure(onnx.load(str(args.model)), samples, fractions)
    print("| layer | adaptive / nearest | searched nearest / nearest | searched adaptive / nearest |")
    print("|---|---|---|---|")
    for node, errors in layers:
        ratios = errors[1:] / errors[0] if errors[0] > 0 else np.ones(3)
        print(f"| {node} | {ratios[0]:.3f} | {ratios[1]:.3f} | {ratios[2]:.3f} |")
    means = np.mean([e[1:] / e[0] for _, e in layers if e[0] > 0], axis=0)
    print(
        f"mean over {len(layers)} layers: adaptive {means[0]:.3f}, searched nearest {means[1]:.3f}, "
        f"searched adaptive {means[2]:.3f} (nearest = 1); {len(files)} samples, fractions {args.fractions}, "
        f"{time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
