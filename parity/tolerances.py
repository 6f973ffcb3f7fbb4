"""THE tolerance table of the parity harness, and the float64 arbitration rule (DESIGN.md §4).

A check passes when  max |a − b| <= atol + rtol · max |b|  over the positions finite on both sides,
after the NaN/Inf masks were found equal (parity/compare.py). `rtol` is therefore relative to the
largest magnitude of the reference, not elementwise: elementwise relative error is meaningless
near zero (a conv-kernel gradient with max_abs 8.9e-8 had max_rel 2.4e-5, parity_nan_anchors.md
§5.2 point 5). `atol` is only a floor for a reference that is (almost) all zero, e.g. the gradient
of a parameter the loss does not reach, or a value XLA:CPU flushed to zero as a denormal.

Where each float32 number comes from (parity_nan_anchors.md §5.4, the tiers derived from §1):
    layer       1e-5  T1: per-module forward on CPU (HF PT↔Flax tol 1e-5, torch's default atol
                      1e-5; measured: a LayerNorm 4.8e-7 abs / 5.1e-6 rel, a conv exactly 0)
    model       1e-4  T2: whole-model logits on CPU (Levanter, eqxvision: 1e-4)
    grad        1e-4  T3: per-parameter gradients on CPU (torch2jax conv grads atol 1e-4)
    loss        1e-4  T2: the loss is one reduction of the logits, so it inherits their tier
    optim       1e-4  T3: one optimiser step is an elementwise function of the gradients (AlgoPerf
                      train_diff). Caveat: Adam's first update is ~lr·sign(g), so an element whose
                      gradient is rounding noise can flip; compare updates relative to max |update|
    trajectory  2e-3  T5: a 20-step loss curve, loss drift ≤ 1e-4 per step (AlgoPerf train_diff)
float64 rows: DESIGN.md §4 "float64 ~1e-10" for every single evaluation, and 20 × that for the
20-step trajectory. Measured on the tiny model in float64: whole-model taps agree to ~2e-14 of
their scale (parity/test_convert.py prints the number).

GPU rows (device="gpu"): tier T4 of parity_nan_anchors.md §5.4, every float32 row ×10, valid
with TF32 off on both sides (torch.backends.{cuda.matmul,cudnn}.allow_tf32 = False,
TRITON_F32_DEFAULT=ieee for mamba_ssm's Triton kernels, JAX jax_default_matmul_precision =
"highest"): cuBLAS/cuDNN/Triton pick split-K and tile orders a
CPU never uses, and mamba_ssm's own GPU tests allow 1e-3 on kernel gradients (§1.7). float64 on a
GPU keeps its CPU rows (its unit roundoff leaves ×10 of slack far above any order effect).
bfloat16 rows ("layer", "grad"; either device): unit roundoff 2⁻⁸ = 3.9e-3 on every input of a
float32-accumulated product, so ~8u = 3e-2 of max |b|, the rtol of mamba_ssm's own bf16 kernel
tests (§1.7). Other bfloat16 checks have no row: tolerance() raises rather than guess.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from common.data.montage import REF19
from common.graph import eigensolver_backward_error

CHECKS = ("layer", "model", "grad", "loss", "optim", "trajectory")
DTYPES = ("float32", "float64")  # every check has a row; bfloat16 has "layer" and "grad" only
DEVICES = ("cpu", "gpu")
GPU_FACTOR = 10.0  # tier T4: GPU float32 rows are the CPU ones × 10


# A half-precision FRAMEWORK finding (the table has no whole-model half rows, so differences at a
# half precision are otherwise reported, never judged): a stage computed from inputs equal on both
# sides, bit for bit, whose one side lands at least HALF_FAR of max|float64| from float64 (25 of
# bfloat16's unit roundoffs, 2^-8: no rounding of one stage's output leaves that) and at least
# HALF_RATIO times farther than the other side, which computed the same stage from the same
# rounded inputs in the same precision. A finding, not a tolerance: what it sees is a wrong kernel
# (torch 2.13's oneDNN AMX bf16 strided convolution, pytorch/pytorch#169688: the TCN at 0.85 of its
# scale from float64, jax's at 0.0072, in `--scenario clean --dtype float64,float32,bfloat16`).
HALF_FAR, HALF_RATIO = 0.1, 30.0


class Tolerance(NamedTuple):
    rtol: float  # relative to max |reference|
    atol: float  # floor for an all-zero reference


# Floors: about the smallest magnitude that still means something after a float32 (float64)
# computation at unit scale, far below rtol · max|b| for any tensor of scale >= 1e-3.
_ATOL = {"float32": 1e-8, "float64": 1e-14}

TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("layer", "float32"): Tolerance(1e-5, _ATOL["float32"]),
    ("model", "float32"): Tolerance(1e-4, _ATOL["float32"]),
    ("grad", "float32"): Tolerance(1e-4, _ATOL["float32"]),
    ("loss", "float32"): Tolerance(1e-4, _ATOL["float32"]),
    ("optim", "float32"): Tolerance(1e-4, _ATOL["float32"]),
    ("trajectory", "float32"): Tolerance(20 * 1e-4, _ATOL["float32"]),  # 20 steps × 1e-4 (tier T5)
    ("layer", "float64"): Tolerance(1e-10, _ATOL["float64"]),
    ("model", "float64"): Tolerance(1e-10, _ATOL["float64"]),
    ("grad", "float64"): Tolerance(1e-10, _ATOL["float64"]),
    ("loss", "float64"): Tolerance(1e-10, _ATOL["float64"]),
    ("optim", "float64"): Tolerance(1e-10, _ATOL["float64"]),
    ("trajectory", "float64"): Tolerance(20 * 1e-10, _ATOL["float64"]),
    ("layer", "bfloat16"): Tolerance(3e-2, 1e-5),
    ("grad", "bfloat16"): Tolerance(3e-2, 1e-5),
}

# The float32 rows assume a model smooth in its inputs and weights. The adjacency's top-k selection
# is not: a near-tie that float32 rounding decides flips an edge in one run and not the other, and
# an adjacency entry then moves by a whole edge weight. How close a tie rounding decides depends on
# the CPU: a tiny-model window whose every choice agreed on an Intel host flipped one on an AMD host
# (top-3 gap 2.4e-7, edge-weight drift 7.5e-6), and parity/test_train.py's docstring has a training
# curve's case. So every float32 comparison across frameworks, devices or kernels keeps every
# edge (each node's other n - 1: every_edge), and the config's top_k is compared in float64, where
# the drift is 1e-15 of the weights.
def every_edge(n_chans: int = len(REF19)) -> str:
    return f"model.graph.top_k={n_chans - 1}"


EVERY_EDGE = every_edge()


def comparable_selection(dtype, n_chans: int = len(REF19)) -> list[str]:
    """The overrides under which a whole model's runs in two frameworks are comparable at `dtype`:
    none in float64, every edge below it (the comment above)."""
    return [] if dtype_name(dtype) == "float64" else [every_edge(n_chans)]


# Dropout off, for curves that must run the same computation: devices (and frameworks) draw their
# own masks, whose difference is sampling, not rounding.
NO_DROPOUT = ["model.tcn.dropout=0", "model.node_mamba.dropout=0", "model.graph.dropout=0",
              "model.graph.edge_mamba.dropout=0"]


def dtype_name(dtype) -> str:
    """'float32' from 'float32', np.float32, jnp.float32, torch.float32 or an array's dtype."""
    text = str(dtype).removeprefix("torch.")
    for candidate in (text, dtype):
        try:
            return np.dtype(candidate).name
        except TypeError:
            pass
    return text  # e.g. "bfloat16" without ml_dtypes: tolerance() then names the missing row


def tolerance(check: str, dtype, device: str = "cpu") -> Tolerance:
    """(rtol, atol) of one check at one dtype on one device; raises for a pair the table does not hold."""
    key = (check, dtype_name(dtype))
    if key not in TOLERANCES:
        raise KeyError(f"no tolerance for {key}: checks {CHECKS}, dtypes {DTYPES} (parity/tolerances.py)")
    if device not in DEVICES:
        raise KeyError(f"no tolerance for device {device!r}: devices {DEVICES} (parity/tolerances.py)")
    rtol, atol = TOLERANCES[key]
    if device == "gpu" and key[1] == "float32":
        return Tolerance(rtol * GPU_FACTOR, atol * GPU_FACTOR)
    return Tolerance(rtol, atol)


def _float64(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, np.float64)


def _error(x, reference: np.ndarray) -> float:
    """RMSE against the float64 reference; inf when the non-finite patterns differ."""
    x = _float64(x)
    same_pattern = (np.isnan(x) == np.isnan(reference)).all() and (
        np.where(np.isinf(reference), x == reference, np.isfinite(x) | np.isnan(reference)).all()
    )
    if not same_pattern:
        return float("inf")
    finite = np.isfinite(reference)
    return float(np.sqrt(np.mean((x[finite] - reference[finite]) ** 2))) if finite.any() else 0.0


def arbitrate(torch32, jax32, ref64, check: str = "model",
              device: str = "cpu") -> Literal["torch", "jax", "both", "neither"]:
    """Which side drifted, when the float32 runs disagree: the one farther from float64.

    torch._dynamo.utils.same's rule (parity_nan_anchors.md §0 point 4, §5.2): a side is to blame
    when its RMSE against ref64 exceeds multiplier × the other side's RMSE + tol/10, multiplier 2
    (3 for fewer than 1000 elements), tol = atol + rtol · max|ref64| of tolerance(check, float32),
    the bound compare_arrays applies. When neither stands out, "neither" if both RMSEs are within
    tol (the disagreement is rounding), else "both". A non-finite pattern that differs from
    ref64's counts as an infinite error.

    The atol floor matters for a reference that is (almost) all zero, such as the gradient of a
    parameter the loss barely reaches: there both RMSEs are rounding noise of the terms that
    cancelled, their ratio is a coin toss, and without the floor "2× the other side" would blame
    whichever side the toss picked.
    """
    ref64 = _float64(ref64)
    finite = ref64[np.isfinite(ref64)]
    scale = float(np.abs(finite).max()) if finite.size else 0.0
    rtol, atol = tolerance(check, "float32", device)
    tol = atol + rtol * scale
    multiplier = 3.0 if ref64.size < 1000 else 2.0
    err_torch, err_jax = _error(torch32, ref64), _error(jax32, ref64)
    if err_torch > multiplier * err_jax + tol / 10:
        return "torch"
    if err_jax > multiplier * err_torch + tol / 10:
        return "jax"
    return "neither" if max(err_torch, err_jax) <= tol else "both"


# ----------------------------------------------------------------------------------------------
# eigenvectors: a bound from the conditioning, not a tier


def unit_roundoff(dtype) -> float:
    """u = 2^-24 (float32), 2^-53 (float64): half the gap between 1 and the next number."""
    return float(np.finfo(dtype_name(dtype)).eps) / 2


def eigenvector_bounds(matrices: np.ndarray, k: int, dtype, sides: int = 2) -> np.ndarray:
    """(..., N, N) symmetric, float64 -> (..., k): how far the k smallest eigenvectors (each of
    unit norm, signs fixed alike) may move between `sides` computations in `dtype`.

    A backward-stable symmetric eigensolver (LAPACK syevd, cuSOLVER) returns the exact
    eigenvectors of L + E with ‖E‖₂ <= p(n)·u·‖L‖₂ (Golub & Van Loan, Matrix Computations, 4th ed.,
    §8.3-8.4), and an eigenvector moves by at most ‖E‖₂ / gap_i, gap_i the distance from λ_i to
    the rest of the spectrum (Davis & Kahan 1970, the sin θ theorem); p(n) from
    common.graph.eigensolver_backward_error. One side's error is that bound; two sides compared with each other
    differ by up to twice it."""
    eigenvalues = np.linalg.eigvalsh(np.asarray(matrices, np.float64))  # (..., N) ascending
    n = eigenvalues.shape[-1]
    norm = np.abs(eigenvalues).max(axis=-1, keepdims=True)  # ‖L‖₂ of a symmetric matrix
    distance = np.abs(eigenvalues[..., :, None] - eigenvalues[..., None, :])  # (..., N, N)
    distance[..., np.arange(n), np.arange(n)] = np.inf
    gaps = distance.min(axis=-1)[..., :k]  # (..., k)
    return sides * eigensolver_backward_error(n) * unit_roundoff(dtype) * norm / gaps


def eigenvector_gradient_bound(matrices: np.ndarray, k: int, dtype, sides: int = 2) -> float:
    """The relative error (to max |gradient|) of the gradient of the k smallest eigenvectors of
    (..., N, N) symmetric matrices, as `sides` computations in `dtype` may differ: the VJP sums
    v_j v_jᵀ Ḡ v_i / (λ_i − λ_j) over j ≠ i, and each factor carries the eigenvectors' error
    u·p(n)·‖L‖/gap (eigenvector_bounds) or the eigenvalue differences' relative error
    u·p(n)·‖L‖/|λ_i − λ_j|: the smallest gap from a kept eigenvalue to any other decides."""
    eigenvalues = np.linalg.eigvalsh(np.asarray(matrices, np.float64))
    n = eigenvalues.shape[-1]
    norm = np.abs(eigenvalues).max()
    distance = np.abs(eigenvalues[..., :k, None] - eigenvalues[..., None, :])  # (..., k, N)
    distance[..., np.arange(k), np.arange(k)] = np.inf
    return sides * eigensolver_backward_error(n) * unit_roundoff(dtype) * norm / distance.min()
