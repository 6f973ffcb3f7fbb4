"""What the Pallas kernels' GPU tests share (tests/jaxbrr/test_ssd_kernel.py, test_norm_kernel.py),
apart from them: test_ssd_kernel.py compares with torchref too, and a JAX-only install skips it;
test_norm_kernel.py needs neither torch nor it."""

from __future__ import annotations

import jax
import numpy as np


def jax_gpu():
    """The first GPU JAX sees, or None."""
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        return None


def assert_as_close_to_float64(label: str, names: list[str], kernels, xla, reference, ulps: int,
                               eps: float = float(np.finfo(np.float32).eps)) -> None:
    """Each of the kernels' outputs and gradients at most 4× as far from float64 as XLA's on the
    same device, plus `ulps` steps `eps` (float32's unless given) of the largest value (errors
    relative to that value)."""
    for name, k, c, r in zip(names, kernels, xla, reference, strict=True):
        scale = np.abs(r).max()
        err_k, err_c = np.abs(k - r).max() / scale, np.abs(c - r).max() / scale
        print(f"{label} {name}: kernels {err_k:.2e}, XLA {err_c:.2e} (max rel to float64)")
        assert err_k <= 4 * err_c + ulps * eps, name
