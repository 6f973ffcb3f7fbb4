"""train.tf32 for JAX: how float32 dots and convolutions run on a GPU (the trainer, predict and
evaluate apply the run's setting; README "Installing on a GPU machine")."""

from __future__ import annotations

import jax


def matmul_precision(tf32: bool) -> str:
    """JAX's default matmul precision for train.tf32: 'tensorfloat32' (XLA's GPU default) or
    'highest' (full float32, as on a CPU)."""
    return "tensorfloat32" if tf32 else "highest"


def set_float32_precision(tf32: bool, platform: str) -> str | None:
    """train.tf32 on a GPU: JAX's default precision for float32 dots and convolutions, process-wide
    (matmul_precision). Returns the setting, or None on other platforms (nothing set)."""
    if platform != "gpu":
        return None
    value = matmul_precision(tf32)
    jax.config.update("jax_default_matmul_precision", value)
    return value
