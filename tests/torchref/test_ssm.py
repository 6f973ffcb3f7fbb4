"""torchref/ssm.py: chunked SSD against the sequential recurrence; the masked segsum."""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from parity.tolerances import tolerance
from torchref.ssm import segsum, selective_scan, ssd_chunked, ssd_sequential

# float32 output and gradients against float64: the tolerance table's float32 gradient row (T3,
# parity/tolerances.py), ~500x the errors measured
FLOAT32_BOUND = tolerance("grad", "float32").rtol

BATCH, LENGTH, HEADS, HEADDIM, STATE = 2, 64, 4, 4, 8


def scan_inputs(dtype, groups=1, length=LENGTH, seed=0):
    """Realistic ranges: dt = softplus(N(0,1) - 1), A in [-8, -1], x, B, C ~ N(0, 1)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    x = randn(BATCH, length, HEADS, HEADDIM)
    dt = F.softplus(randn(BATCH, length, HEADS) - 1)
    A = -(1 + 7 * torch.rand(HEADS, generator=g, dtype=torch.float64))
    B = randn(BATCH, length, groups, STATE)
    C = randn(BATCH, length, groups, STATE)
    return [t.to(dtype) for t in (x, dt, A, B, C)]


def value_and_grads(scan_fn, inputs, weights):
    """y and d(sum y·weights)/d(x, dt, A, B, C)."""
    inputs = [t.clone().requires_grad_() for t in inputs]
    y = scan_fn(*inputs)
    grads = torch.autograd.grad((y * weights).sum(), inputs)
    return [y.detach(), *grads]


def max_rel_diffs(test, ref):
    names = ["y", "dx", "ddt", "dA", "dB", "dC"]
    return {n: ((t.double() - r.double()).abs().max() / r.double().abs().max()).item() for n, t, r in zip(names, test, ref, strict=True)}


def test_segsum_exact_values():
    a = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    inf = torch.inf
    expected = torch.tensor([[0, -inf, -inf], [2, 0, -inf], [5, 3, 0]], dtype=torch.float64)
    assert torch.equal(segsum(a), expected)
    assert segsum(torch.zeros(2, 5, 7)).shape == (2, 5, 7, 7)


@pytest.mark.parametrize("chunk_size", [16, 7, 24])
@pytest.mark.parametrize("groups", [1, 2])
def test_chunked_equals_sequential_float64(chunk_size, groups):
    inputs = scan_inputs(torch.float64, groups=groups)
    weights = torch.randn(BATCH, LENGTH, HEADS, HEADDIM, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = value_and_grads(ssd_sequential, inputs, weights)
    test = value_and_grads(lambda *a: ssd_chunked(*a, chunk_size=chunk_size), inputs, weights)
    diffs = max_rel_diffs(test, ref)
    print(f"chunk {chunk_size} G {groups} float64 max rel diff", diffs)
    assert max(diffs.values()) < 1e-10


@pytest.mark.parametrize("chunk_size", [16, 7, 24])
def test_chunked_float32_close_to_float64(chunk_size):
    inputs = scan_inputs(torch.float64)
    weights = torch.randn(BATCH, LENGTH, HEADS, HEADDIM, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = value_and_grads(ssd_sequential, inputs, weights)
    test = value_and_grads(lambda *a: ssd_chunked(*a, chunk_size=chunk_size), [t.float() for t in inputs], weights.float())
    assert test[0].dtype == torch.float32
    diffs = max_rel_diffs(test, ref)
    print(f"chunk {chunk_size} float32 vs float64 max rel diff", diffs)
    assert max(diffs.values()) < FLOAT32_BOUND


def test_bfloat16_inputs_scan_in_float32():
    inputs = scan_inputs(torch.float64)
    ref = ssd_sequential(*inputs)
    x, dt, A, B, C = inputs
    bf16 = [t.to(torch.bfloat16) for t in (x, dt, B, C)]
    y = ssd_chunked(bf16[0], bf16[1], A.float(), bf16[2], bf16[3], chunk_size=16)
    assert y.dtype == torch.bfloat16
    # Inputs rounded to bf16 (8-bit mantissa) and y rounded once: ~1 %, not the 300 % of a bf16 cumsum.
    assert ((y.double() - ref).abs().max() / ref.abs().max()).item() < 2e-2


@pytest.mark.parametrize("scan", ["chunked", "sequential"])
def test_bfloat16_autocast_leaves_the_scan_in_float32(scan):
    """model.precision bfloat16 runs the Mamba stages' forward under a bf16 autocast region (the
    backward outside it, as the loop's loss.backward()); the scan's einsums must not be cast back
    to bf16 there: the same bits, values and gradients, as without autocast."""
    x, dt, A, B, C = scan_inputs(torch.float64)
    inputs = [x.bfloat16(), dt.bfloat16(), A.float(), B.bfloat16(), C.bfloat16()]
    weights = torch.randn(BATCH, LENGTH, HEADS, HEADDIM, generator=torch.Generator().manual_seed(1))

    def run(*a):
        return selective_scan(*a, scan=scan, chunk_size=16)

    def in_autocast(*a):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return run(*a)

    plain, autocast = value_and_grads(run, inputs, weights), value_and_grads(in_autocast, inputs, weights)
    for name, a, b in zip(["y", "dx", "ddt", "dA", "dB", "dC"], autocast, plain, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name


def naive_one_chunk_ssd(x, dt, A, B, C):
    """The whole sequence as one chunk, with exp taken BEFORE the causal mask (the hazard)."""
    length = x.shape[1]
    cs = torch.cumsum(dt * A, dim=1)  # (B, L, H)
    diff = rearrange(cs, "b l h -> b h l 1") - rearrange(cs, "b s h -> b h 1 s")  # (B, H, L, L)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    decay = torch.where(causal, torch.exp(diff), torch.zeros((), dtype=diff.dtype))  # inf above the diagonal, then masked
    CB = torch.einsum("blgn,bsgn->bls", C, B)  # (B, L, L)
    return torch.einsum("bls,bhls,bshp->blhp", CB, decay, x * dt[..., None])  # (B, L, H, P)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masking_before_exp_keeps_gradients_finite(dtype):
    # dt·A = -100 per step: cumsum differences above the diagonal reach +6300, exp overflows.
    x, _, _, B, C = scan_inputs(dtype)
    dt = torch.full((BATCH, LENGTH, HEADS), 5.0, dtype=dtype)
    A = torch.full((HEADS,), -20.0, dtype=dtype)
    weights = torch.randn(BATCH, LENGTH, HEADS, HEADDIM, dtype=dtype, generator=torch.Generator().manual_seed(1))

    stable = value_and_grads(lambda *a: ssd_chunked(*a, chunk_size=LENGTH), [x, dt, A, B, C], weights)
    naive = value_and_grads(naive_one_chunk_ssd, [x, dt, A, B, C], weights)
    assert all(torch.isfinite(t).all() for t in stable)
    assert torch.isfinite(naive[0]).all()  # the forward pass hides it...
    torch.testing.assert_close(naive[0], stable[0])
    assert torch.isnan(naive[2]).any() and torch.isnan(naive[3]).any()  # ...ddt and dA are NaN

    # In float64 the stable result is also the right one, in every chunking. (In float32, dA is a
    # sum of cancelling terms here and only finiteness is asserted.)
    if dtype == torch.float64:
        ref = value_and_grads(ssd_sequential, [x, dt, A, B, C], weights)
        for chunk_size in (LENGTH, 16, 7):
            test = value_and_grads(lambda *a, q=chunk_size: ssd_chunked(*a, chunk_size=q), [x, dt, A, B, C], weights)
            assert max(max_rel_diffs(test, ref).values()) < 1e-10


@pytest.mark.parametrize("chunk_size", [16, 7])
def test_mask_after_exp_equals_chunked_float64(chunk_size):
    # No exponent overflows on ordinary inputs: the hazard is invisible, forward and backward.
    inputs = scan_inputs(torch.float64, groups=2)
    weights = torch.randn(BATCH, LENGTH, HEADS, HEADDIM, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = value_and_grads(lambda *a: ssd_chunked(*a, chunk_size=chunk_size), inputs, weights)
    test = value_and_grads(lambda *a: ssd_chunked(*a, chunk_size=chunk_size, mask_after_exp=True), inputs, weights)
    diffs = max_rel_diffs(test, ref)
    print(f"chunk {chunk_size} mask_after_exp vs chunked float64 max rel diff", diffs)
    assert max(diffs.values()) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mask_after_exp_nan_gradients_where_exp_overflows(dtype):
    # dt·A = -150 per step: within a chunk of 16, exp(cs_l - cs_s) above the diagonal overflows
    # from a gap of 1 step in float32 (150 > 88.7) and of 5 in float64 (750 > 709.8). A position s
    # with an overflowing l < s in its chunk gets a NaN dB_s (and Q - gap of them per chunk);
    # symmetrically for dC; the NaN reaches every dt and A through the cumsum; dx stays finite.
    x, _, _, B, C = scan_inputs(dtype)
    dt = torch.full((BATCH, LENGTH, HEADS), 5.0, dtype=dtype)
    A = torch.full((HEADS,), -30.0, dtype=dtype)
    weights = torch.randn(BATCH, LENGTH, HEADS, HEADDIM, dtype=dtype, generator=torch.Generator().manual_seed(1))
    chunk_size = 16
    gap = 1 if dtype == torch.float32 else 5
    per_state = BATCH * (LENGTH // chunk_size) * (chunk_size - gap) * STATE  # 960 / 704
    expected = {"dx": 0, "ddt": BATCH * LENGTH * HEADS, "dA": HEADS, "dB": per_state, "dC": per_state}

    stable = value_and_grads(lambda *a: selective_scan(*a, scan="chunked", chunk_size=chunk_size), [x, dt, A, B, C], weights)
    hazard = value_and_grads(
        lambda *a: selective_scan(*a, scan="chunked_mask_after_exp", chunk_size=chunk_size), [x, dt, A, B, C], weights
    )
    assert torch.isfinite(hazard[0]).all()  # the forward pass hides it...
    torch.testing.assert_close(hazard[0], stable[0], rtol=1e-6, atol=0)
    nans = {n: int(torch.isnan(g).sum()) for n, g in zip(["dx", "ddt", "dA", "dB", "dC"], hazard[1:], strict=True)}
    print(f"{dtype} mask_after_exp NaN counts", nans)
    assert nans == expected  # ...the backward does not
    assert all(int(torch.isnan(g).sum()) == 0 for g in stable[1:])


def test_selective_scan_dispatches_explicitly():
    inputs = scan_inputs(torch.float64, length=20)
    torch.testing.assert_close(selective_scan(*inputs, scan="chunked", chunk_size=8), ssd_chunked(*inputs, chunk_size=8), rtol=0, atol=0)
    torch.testing.assert_close(selective_scan(*inputs, scan="sequential", chunk_size=8), ssd_sequential(*inputs), rtol=0, atol=0)
    torch.testing.assert_close(
        selective_scan(*inputs, scan="chunked_mask_after_exp", chunk_size=8),
        ssd_chunked(*inputs, chunk_size=8, mask_after_exp=True), rtol=0, atol=0,
    )
    with pytest.raises(ValueError, match="model.ssm.scan"):
        selective_scan(*inputs, scan="associative", chunk_size=8)


def test_shape_mismatch_raises():
    x, dt, A, B, C = scan_inputs(torch.float64, length=20)
    with pytest.raises(ValueError, match="do not match"):
        ssd_chunked(x, dt[:, :10], A, B, C, chunk_size=8)
    with pytest.raises(ValueError, match="do not match"):
        ssd_chunked(x, dt, A, B.expand(-1, -1, 3, -1), C.expand(-1, -1, 3, -1), chunk_size=8)  # 3 groups for 4 heads
