"""Searching for the nodes to keep in float: per-node sensitivity, candidate models, mixed precision."""
