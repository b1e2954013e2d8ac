"""Experiment model, deterministic assignment and (later) Bayesian statistics; pure Python/numpy."""
