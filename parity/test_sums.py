"""Long sums (parity/localize.py `_summation_bound`): a Conv1d's or Linear's parameter gradient is
a sum over every position the layer ran at, and float32 sums n terms within γ_n·Σ|terms| of the
exact sum in any order (Higham 2002, §4.2). One side's float32 that lies within that bound is
rounding, however much farther from float64 than the other side's; beyond it, DRIFT stands.

- runs._abs_terms against explicit loops: a strided, dilated, padded, grouped Conv1d and a Linear
  over two leading axes;
- runs.torch_gradient_sums on the tiny model: ∇head.detect's Σ|terms| from its input and ∂logits;
- a planted error in torch's float32 ∇head.detect.bias (the full-size case: README "Debugging
  NaNs"): at 0.9 of the bound the row is rounding, at 1.5 of it DRIFT. No assertion depends on
  where float32 rounding lands: the planted error is computed from float64 values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from parity import localize, scenarios
from parity import runs as R
from parity.test_kinks import models_and_runs
from parity.tolerances import tolerance, unit_roundoff
from parity.verdicts import PARAMETERS, classify, find, tap_rows

U = unit_roundoff("float32")


def gamma(n: int) -> float:
    return n * U / (1 - n * U)


def test_abs_terms_of_a_conv1d_are_its_weight_gradient_sums_of_absolute_products():
    stride, padding, dilation = 3, 1, 2  # apart, so that no two can be swapped unseen
    conv = torch.nn.Conv1d(4, 6, kernel_size=3, stride=stride, padding=padding, dilation=dilation, groups=2).double()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((2, 4, 14)))
    delta = torch.from_numpy(rng.standard_normal(conv(x).shape))
    terms, n = R._abs_terms(conv, x, delta)
    (batch, _, length), per_group = delta.shape, 4 // 2
    padded = np.pad(np.abs(x.numpy()), ((0, 0), (0, 0), (padding, padding)))
    weight = np.zeros(conv.weight.shape)
    for b, o, i, k, t in itertools.product(range(batch), range(6), range(per_group), range(3), range(length)):
        group = o // (6 // 2)
        weight[o, i, k] += abs(delta[b, o, t].item()) * padded[b, group * per_group + i, t * stride + k * dilation]
    assert n == batch * length
    np.testing.assert_allclose(terms["weight"].numpy(), weight, rtol=1e-12)
    np.testing.assert_allclose(terms["bias"].numpy(), np.abs(delta.numpy()).sum(axis=(0, 2)), rtol=1e-12)
    delta[:, :, -2:] = 0  # outputs the model drops (Mamba2's causal conv keeps the first L): no terms
    assert R._abs_terms(conv, x, delta)[1] == batch * (length - 2)


def test_abs_terms_of_a_linear_sum_over_every_leading_index():
    linear = torch.nn.Linear(5, 3, bias=False).double()
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.standard_normal((2, 7, 5)))
    delta = torch.from_numpy(rng.standard_normal((2, 7, 3)))
    terms, n = R._abs_terms(linear, x, delta)
    assert n == 14 and set(terms) == {"weight"}  # no bias, no row for it
    expected = np.einsum("bto,bti->oi", np.abs(delta.numpy()), np.abs(x.numpy()))
    np.testing.assert_allclose(terms["weight"].numpy(), expected, rtol=1e-12)


@pytest.fixture(scope="module")
def clean():
    """The clean scenario (tiny model, both windows) at float64 and float32."""
    problem = scenarios.build("clean")
    return problem, *models_and_runs(problem)


def detect_sums(models, runs) -> tuple[np.ndarray, np.ndarray, int]:
    """∇head.detect's Σ|terms| from float64 taps alone: its input, the head's 1×1 projection of
    `from_electrodes` repeated to the sample rate, and ∂logits."""
    head = models["float64"][0].head
    with torch.no_grad():
        x = torch.repeat_interleave(head.proj(torch.from_numpy(runs["torch/float64"].taps["from_electrodes"])),
                                    head.upsample, dim=-1).numpy()  # (B, C, T)
    delta = np.abs(runs["torch/float64"].cotangents["logits"])  # (B, T)
    return np.einsum("bct,bt->c", np.abs(x), delta), delta.sum(), delta.size


def test_gradient_sums_of_the_detector_head(clean):
    problem, models, runs = clean
    with localize.precision("float64"):
        shapes = {name: tap.shape for name, tap in runs["torch/float64"].taps.items()}
        sums = R.torch_gradient_sums(models["float64"][0], problem.batch, problem.config.train, shapes,
                                     ["head.detect"])
    weight, bias, n = detect_sums(models, runs)
    assert sums["head.detect.bias"][1] == sums["head.detect.weight"][1] == n == problem.batch.x.shape[0] * 1024
    np.testing.assert_allclose(sums["head.detect.weight"][0].ravel(), weight, rtol=1e-12)
    np.testing.assert_allclose(sums["head.detect.bias"][0], [bias], rtol=1e-12)


@pytest.mark.parametrize("fraction, nearer, verdict", [(0.9, 0, "CLEAN"), (1.5, 0, "DRIFT"), (0.9, 3, "DRIFT")],
                         ids=["within", "beyond", "within-but-the-nearer-side-beyond"])
def test_an_error_in_a_long_sum_is_rounding_within_the_bound_and_drift_beyond(clean, fraction, nearer, verdict):
    """torch's ∇head.detect.bias at `fraction` of its bound; `nearer`: jax's first weight element
    at that many times its own bound (far less in RMSE: torch stays the farther side, and the rule
    must hold for both)."""
    problem, models, runs = clean
    weight_terms, bias_terms, n = detect_sums(models, runs)
    bound = gamma(n + 2) * bias_terms
    g64 = runs["torch/float64"].grads
    scale = max(np.abs(g64["head.detect.bias"]).max(), np.abs(g64["head.detect.weight"]).max())
    assert 0.9 * bound > 3 * tolerance("grad", "float32").rtol * scale  # beyond tolerance with room to spare
    torch32, jax32 = runs["torch/float32"], runs["jax/float32"]
    grads = dict(torch32.grads)
    grads["head.detect.bias"] = (g64["head.detect.bias"] + fraction * bound).astype(np.float32)
    jax_grads = dict(jax32.grads)
    weight = g64["head.detect.weight"].copy()
    weight.reshape(-1)[0] += nearer * gamma(n + 2) * weight_terms[0] + nearer * tolerance("grad", "float32").atol
    jax_grads["head.detect.weight"] = weight.astype(np.float32) if nearer else jax32.grads["head.detect.weight"]
    planted = {**runs, "torch/float32": R.Run("torch", "float32", torch32.taps, torch32.loss, torch32.cotangents, grads),
               "jax/float32": R.Run("jax", "float32", jax32.taps, jax32.loss, jax32.cotangents, jax_grads)}
    rows = tap_rows(list(planted.values()), problem.config.model.stage_inputs,
                    R.parameter_stage(problem.config.model), extreme=10.0)
    row = next(r for r in rows if r.name == PARAMETERS + "head.detect")
    assert (row.verdict, row.drifted) == ("DRIFT", "torch")
    summed = localize._summation_bound(rows, models, planted, problem, "cpu", lambda text: None)
    classify(rows, ["float64", "float32"], 10.0, summed=summed)
    findings = find(rows)
    if verdict == "CLEAN":
        assert row.rounding and f"of its n = {n:,} terms" in summed[row.name]
        assert not findings
    else:
        assert summed == {} and findings[0].row == row.name and findings[0].side == "torch"
