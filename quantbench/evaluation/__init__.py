"""Judging variants against FP32 on held-out data: metrics and the side-by-side comparison."""
