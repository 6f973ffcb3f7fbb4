"""The framework-neutral core both twins share: config, data, evaluation and scoring, the
training loop's skeleton, logs, plots, NaN dumps, checkpoint formats, the model's topology and
numbers. It imports neither JAX nor torch (tests/test_architecture.py checks it)."""
