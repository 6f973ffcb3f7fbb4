"""torchref/mamba.py: Mamba2 against mamba_ssm's own module (CPU oracle), BiMamba2 behaviour."""

import os

import pytest
import torch

from common.config import MambaConfig, SSMConfig
from parity.compare import compare_arrays
from parity.tolerances import HALF_FAR, HALF_RATIO
from tests.torchref.mamba_oracle import (
    import_mamba_ssm,
    official_casts,
    official_mamba2,
    reference_kernels,
)
from torchref import mamba as mamba_module
from torchref.mamba import BiMamba2, BiMamba2Layer, Mamba2, in_grid_pieces

PROJECT = dict(d_model=64, d_state=16, d_conv=4, expand=2, headdim=8)  # node stream
EDGE = dict(d_model=16, d_state=8, d_conv=4, expand=2, headdim=4)  # edge stream


@pytest.fixture(scope="module")
def ns():
    """mamba_ssm's pieces; a skip only where a package is not installed (the Makefile goes on when
    mamba-ssm does not build): any other error importing it (our import_upstream_mamba2, which
    backend: cuda uses too, or an API mamba_ssm changed) fails the tests that need it."""
    try:
        return import_mamba_ssm()
    except ModuleNotFoundError as err:
        pytest.skip(f"mamba_ssm cannot be imported: {err.name} is not installed ({err})")


def sizes(d):
    return (d["d_model"], d["d_state"], d["d_conv"], d["expand"], d["headdim"])


def official_and_ours(ns, dims, dtype, seed, scan="chunked", chunk_size=16):
    """The official module with non-trivial D and norm weight, and ours loaded from it strictly."""
    torch.manual_seed(seed)
    official = official_mamba2(ns, *sizes(dims), chunk_size=16).to(dtype)
    with torch.no_grad():
        official.D.copy_(torch.randn(official.D.shape))
        official.norm.weight.copy_(1 + 0.3 * torch.randn(official.norm.weight.shape))
    ours = Mamba2(*sizes(dims), scan=scan, chunk_size=chunk_size, dtype=dtype)
    ours.load_state_dict(official.state_dict(), strict=True)
    return official, ours


def out_and_grads(module, u, weights, context=None):
    """Output, d/du and every parameter gradient of sum(module(u) · weights), keyed by name."""
    module.zero_grad()
    u = u.clone().requires_grad_()
    if context is None:
        out = module(u)
    else:
        with context:
            out = module(u)
    (out * weights).sum().backward()
    result = {"out": out.detach(), "du": u.grad}
    result.update({name: p.grad for name, p in module.named_parameters()})
    return result


def max_rel_diffs(test, ref):
    return {k: ((test[k].double() - ref[k].double()).abs().max() / ref[k].double().abs().max()).item() for k in ref}


def assert_float32_parity(test, ref):
    """The output within the tolerance table's "layer" row (one module's forward), d/du and every
    parameter gradient within its "grad" row (parity/tolerances.py)."""
    rows = [compare_arrays(k, test[k].numpy(), ref[k].numpy(), "layer" if k == "out" else "grad", "float32") for k in ref]
    assert all(row.passed for row in rows), [row.reason for row in rows if not row.passed]


# ---------------------------------------------------------------------------------------------
# against the official module


@pytest.mark.parametrize(
    "scan, chunk_size", [("chunked", 16), ("chunked", 7), ("sequential", 16)],
)
def test_matches_official_float32(ns, scan, chunk_size):
    official, ours = official_and_ours(ns, PROJECT, torch.float32, seed=1, scan=scan, chunk_size=chunk_size)
    g = torch.Generator().manual_seed(2)
    u = torch.randn(2, 50, 64, generator=g)  # 50: not a multiple of either chunk size
    weights = torch.randn(2, 50, 64, generator=g)
    # 1. official (reference kernels)   2. ours   3. compare
    ref = out_and_grads(official, u, weights, reference_kernels(ns))
    test = out_and_grads(ours, u, weights)
    diffs = max_rel_diffs(test, ref)
    print(f"float32 {scan} chunk {chunk_size} vs official:", {k: f"{v:.1e}" for k, v in diffs.items()})
    assert_float32_parity(test, ref)


def test_matches_official_float64_with_its_float32_casts_emulated(ns):
    official, ours = official_and_ours(ns, PROJECT, torch.float64, seed=3, chunk_size=7)
    g = torch.Generator().manual_seed(4)
    u = torch.randn(2, 50, 64, generator=g, dtype=torch.float64)
    weights = torch.randn(2, 50, 64, generator=g, dtype=torch.float64)
    ref = out_and_grads(official, u, weights, reference_kernels(ns))
    emulated = max_rel_diffs(out_and_grads(ours, u, weights, official_casts(ours)), ref)
    plain = max_rel_diffs(out_and_grads(ours, u, weights), ref)
    print("float64 vs official, casts emulated:", {k: f"{v:.1e}" for k, v in emulated.items()})
    print("float64 vs official, plain float64:", {k: f"{v:.1e}" for k, v in plain.items()})
    assert max(emulated.values()) < 1e-12
    # Without the emulation the official float32 casts (A_log.float(), norm upcast) show.
    assert 1e-10 < max(plain.values()) < 1e-5


@pytest.mark.parametrize("dims", [PROJECT, EDGE], ids=["project", "edge"])
def test_init_is_mamba_ssm_init_drawn_from_the_generator(ns, dims):
    torch.manual_seed(123)
    official = official_mamba2(ns, *sizes(dims))
    ours = Mamba2(*sizes(dims), generator=torch.Generator().manual_seed(123))
    theirs = official.state_dict()
    for name, value in ours.state_dict().items():
        assert torch.equal(value, theirs[name]), name
    # and the global RNG was not touched by ours
    torch.manual_seed(5)
    Mamba2(*sizes(dims), generator=torch.Generator().manual_seed(0))
    after = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(1))


@pytest.mark.parametrize("dims", [PROJECT, EDGE], ids=["project", "edge"])
def test_strict_load_of_a_real_mamba_ssm_state_dict(ns, dims):
    official = official_mamba2(ns, *sizes(dims))
    ours = Mamba2(*sizes(dims))
    theirs, mine = official.state_dict(), ours.state_dict()
    assert {k: tuple(v.shape) for k, v in theirs.items()} == {k: tuple(v.shape) for k, v in mine.items()}
    ours.load_state_dict(theirs, strict=True)
    for name, value in ours.state_dict().items():
        assert torch.equal(value, theirs[name])


def test_parameter_count(ns):
    expected = 304 * 64 + 160 * 4 + 160 + 3 * 16 + 128 + 64 * 128  # in_proj, conv w/b, dt_bias A_log D, norm, out_proj
    ours = Mamba2(*sizes(PROJECT))
    official = official_mamba2(ns, *sizes(PROJECT))
    assert sum(p.numel() for p in ours.parameters()) == expected == 28_624
    assert sum(p.numel() for p in official.parameters()) == expected


def test_no_weight_decay_flags():
    flagged = {n for n, p in Mamba2(*sizes(EDGE)).named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert flagged == {"dt_bias", "A_log", "D"}


def test_float64_module_runs_in_float64():
    mixer = Mamba2(*sizes(EDGE), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert all(p.dtype == torch.float64 for p in mixer.parameters())
    assert mixer(torch.randn(2, 20, 16, dtype=torch.float64)).dtype == torch.float64


def test_bad_settings_raise_at_construction():
    with pytest.raises(ValueError, match="model.ssm.scan"):
        Mamba2(*sizes(EDGE), scan="associative")
    with pytest.raises(ValueError, match="model.ssm.backend"):
        Mamba2(*sizes(EDGE), backend="jax")
    with pytest.raises(ValueError, match="headdim"):
        Mamba2(16, 8, 4, 2, 5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_backend_refuses_to_run_without_cuda():
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        Mamba2(*sizes(EDGE), backend="cuda")


def test_cuda_backend_wiring_on_cpu(ns, monkeypatch):
    """backend='cuda' runs mamba_ssm's module on *our* parameters; with its kernels swapped for the
    references, the wiring (parameter swap, gradients reaching ours) is checked on CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    reference = Mamba2(*sizes(EDGE), generator=torch.Generator().manual_seed(0))
    kernels = Mamba2(*sizes(EDGE), backend="cuda")
    assert kernels.state_dict().keys() == reference.state_dict().keys()  # no duplicate upstream parameters
    kernels.load_state_dict(reference.state_dict(), strict=True)
    g = torch.Generator().manual_seed(1)
    u, weights = torch.randn(2, 40, 16, generator=g), torch.randn(2, 40, 16, generator=g)
    assert_float32_parity(out_and_grads(kernels, u, weights, reference_kernels(ns)), out_and_grads(reference, u, weights))
    # a batch whose sequences × chunks pass CUDA's grid limit runs in pieces, one sequence each here
    calls = []
    monkeypatch.setattr(mamba_module, "CUDA_GRID_Y", -(-40 // kernels.chunk_size))
    kernels._upstream.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    assert_float32_parity(out_and_grads(kernels, u, weights, reference_kernels(ns)), out_and_grads(reference, u, weights))
    assert calls == [1, 1]


def test_grid_pieces_keep_every_launch_under_the_limit_and_refuse_a_sequence_too_long():
    seen = []
    u = torch.arange(7 * 10, dtype=torch.float64).reshape(7, 10, 1)
    out = in_grid_pieces(lambda part: seen.append(part.shape[0]) or part * 2, u, chunk_size=4, limit=9)
    assert seen == [3, 3, 1] and torch.equal(out, u * 2)  # 3 chunks a sequence: 3 sequences a launch
    with pytest.raises(ValueError, match="a sequence of 10 steps is 3 chunks of model.ssm.chunk_size = 4, more than "
                                         "one CUDA launch can hold \\(2\\): raise model.ssm.chunk_size"):
        in_grid_pieces(lambda part: part, u, chunk_size=4, limit=2)


# ---------------------------------------------------------------------------------------------
# BiMamba2


def edge_stack(guards, n_layers=2, scan="chunked", dtype=torch.float32):
    cfg = MambaConfig(n_layers=n_layers, d_model=16, d_state=8, headdim=4, dropout=0.1)
    stack = BiMamba2(cfg, SSMConfig(scan=scan, chunk_size=8), guards=guards, layernorm_eps=1e-5,
                     generator=torch.Generator().manual_seed(0), dtype=dtype)
    return stack.eval()


def test_bimamba2_names_and_parameter_count():
    stack = edge_stack(guards=False, n_layers=3)
    names = dict(stack.named_parameters())
    assert "layers.0.fwd.in_proj.weight" in names and "layers.2.bwd.A_log" in names
    assert names["layers.1.proj.weight"].shape == (16, 32) and names["layers.1.norm.weight"].shape == (16,)
    mixer = 88 * 16 + 48 * 4 + 48 + 3 * 8 + 32 + 16 * 32  # Mamba2(16, 8, 4, 2, 4)
    layer = 2 * mixer + (32 * 16 + 16) + 2 * 16  # fwd + bwd + proj + LayerNorm
    assert sum(p.numel() for p in stack.parameters()) == 3 * layer


def test_bimamba2_sequential_equals_chunked_float64():
    u = torch.randn(2, 30, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    chunked = edge_stack(False, scan="chunked", dtype=torch.float64)
    sequential = edge_stack(False, scan="sequential", dtype=torch.float64)
    sequential.load_state_dict(chunked.state_dict())
    torch.testing.assert_close(chunked(u), sequential(u), rtol=0, atol=1e-12)


def test_without_guards_nothing_is_clamped_or_sanitised():
    stack = edge_stack(guards=False)
    u = torch.randn(2, 24, 16, generator=torch.Generator().manual_seed(1))
    big = u.clone()
    big[:, 5, :3] = 1e3
    assert not torch.allclose(stack(big), stack(big.clamp(-10, 10)))  # the model sees 1e3
    nan = u.clone()
    nan[0, 5, 0] = torch.nan
    assert torch.isnan(stack(nan)).any()  # no nan_to_num either


def test_with_guards_the_original_clamps_apply():
    stack = edge_stack(guards=True)
    u = torch.randn(2, 24, 16, generator=torch.Generator().manual_seed(1))
    big = u.clone()
    big[:, 5, :3] = 1e3
    big[:, 9, 4] = -torch.inf
    out = stack(big)
    assert out.abs().max() <= 10
    # the original's nan_to_num maps ±inf to 0 (not to the clamp bound), then clamps
    expected = big.clamp(-10, 10)
    expected[:, 9, 4] = 0.0
    torch.testing.assert_close(out, stack(expected), rtol=0, atol=0)
    nan = u.clone()
    nan[0, 5, 0] = torch.nan
    zero = u.clone()
    zero[0, 5, 0] = 0.0
    torch.testing.assert_close(stack(nan), stack(zero), rtol=0, atol=0)


def test_bwd_sees_the_reversed_sequence():
    cfg = MambaConfig(n_layers=1, d_model=16, d_state=8, headdim=4, dropout=0.0)

    def layer_with_silenced(direction):
        layer = BiMamba2Layer(cfg, SSMConfig(), guards=False, layernorm_eps=1e-5,
                              generator=torch.Generator().manual_seed(0)).eval()
        with torch.no_grad():
            getattr(layer, direction).out_proj.weight.zero_()  # that direction now outputs 0
        return layer

    u = torch.randn(1, 24, 16, generator=torch.Generator().manual_seed(1))
    last_changed = u.clone()
    last_changed[:, -1] += 1.0
    first_changed = u.clone()
    first_changed[:, 0] += 1.0

    only_bwd = layer_with_silenced("fwd")
    assert not torch.allclose(only_bwd(u)[:, 0], only_bwd(last_changed)[:, 0])  # the future reaches t=0
    torch.testing.assert_close(only_bwd(u)[:, -1], only_bwd(first_changed)[:, -1], rtol=0, atol=0)  # the past does not reach t=L-1

    only_fwd = layer_with_silenced("bwd")
    torch.testing.assert_close(only_fwd(u)[:, 0], only_fwd(last_changed)[:, 0], rtol=0, atol=0)  # causal
    assert not torch.allclose(only_fwd(u)[:, -1], only_fwd(first_changed)[:, -1])


# ---------------------------------------------------------------------------------------------
# GPU: mamba_ssm's own kernels


# Full-size shapes: the node stream runs B·19 sequences of 960 steps at width 64, the edge stream
# B·171 at width 16 (configs/tusz.yaml); B = 2 windows.
FULL_SHAPES = {"node": (PROJECT, 2 * 19), "edge": (EDGE, 2 * 171)}


@pytest.mark.gpu
@pytest.mark.triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA and mamba_ssm kernels")
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("stream", ["node", "edge"])
def test_cuda_backend_matches_torch_backend_at_full_size(stream, precision):
    """mamba_ssm's Mamba2 (Triton kernels, unfused path) on torchref's parameters against
    torchref's exact path: output, d/du and every parameter gradient. float32 with TF32 off is
    judged by the GPU rows of parity/tolerances.py. bfloat16 (autocast, float32 parameters, as
    model.precision bfloat16 runs it) as the localiser judges a half precision: each of the
    kernels' results and the exact path's own in bfloat16 against the exact path in float64, and
    the kernels are wrong where they land HALF_FAR of the scale from float64 and HALF_RATIO times
    farther than the exact path (parity/tolerances.py). A fixed bfloat16 row against float32 had
    no margin to spare: the exact path alone under autocast put the A_log gradient at 1.96e-2 of
    its scale (row 3e-2, on the CPU), and mamba_ssm's backward rounds its states to bfloat16 too.
    TF32 off includes Triton's float32 dots (TRITON_F32_DEFAULT=ieee, conftest.py): the kernels
    name no precision, and Triton's own default is TF32."""
    assert os.environ.get("TRITON_F32_DEFAULT") == "ieee", "conftest.py sets TRITON_F32_DEFAULT=ieee for the tests"
    dims, sequences = FULL_SHAPES[stream]
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        reference = Mamba2(*sizes(dims), chunk_size=16, device="cuda",
                           generator=torch.Generator(device="cuda").manual_seed(0))
        with torch.no_grad():
            reference.D.copy_(torch.randn(reference.D.shape, device="cuda"))
            reference.norm.weight.copy_(1 + 0.3 * torch.randn(reference.norm.weight.shape, device="cuda"))
        kernels = Mamba2(*sizes(dims), chunk_size=16, backend="cuda", device="cuda")
        kernels.load_state_dict(reference.state_dict(), strict=True)
        g = torch.Generator(device="cuda").manual_seed(1)
        u = torch.randn(sequences, 960, dims["d_model"], device="cuda", generator=g)
        weights = torch.randn(sequences, 960, dims["d_model"], device="cuda", generator=g)
        # 1. torch backend, float32   2. mamba_ssm kernels at `precision`   3. compare
        ref = out_and_grads(reference, u, weights)
        def autocast():
            return torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bfloat16")

        test = out_and_grads(kernels, u, weights, autocast())
        if precision == "bfloat16":
            exact = out_and_grads(reference, u, weights, autocast())  # the exact path in bfloat16 too
            wide = Mamba2(*sizes(dims), chunk_size=16, device="cuda", dtype=torch.float64)
            wide.load_state_dict(reference.state_dict(), strict=True)
            truth = out_and_grads(wide, u.double(), weights.double())
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    if precision == "bfloat16":
        wrong = []
        for name, value in truth.items():
            scale = float(value.abs().max())
            kernel, own = (float((result[name].double() - value).abs().max()) / scale for result in (test, exact))
            print(f"{stream} bfloat16 {name}: from float64, kernels {kernel:.2e}, exact path {own:.2e}")
            if kernel >= HALF_FAR and kernel >= HALF_RATIO * own:
                wrong.append(f"{name}: kernels {kernel:.3g} of its scale from float64, the exact path {own:.3g}")
        assert not wrong, wrong
        return
    rows = [compare_arrays(name, test[name].float().cpu(), ref[name].cpu(), "layer" if name == "out" else "grad",
                           precision, "gpu") for name in ref]
    for row in rows:
        print(f"{stream} {precision} {row.name}: max_rel {row.max_rel:.2e} (rtol {row.rtol:g})")
    assert all(row.passed for row in rows), [row.reason for row in rows if not row.passed]


def test_remat_gives_the_same_outputs_and_gradients_in_train_mode():
    """model.remat recomputes each layer in the backward pass; dropout masks must be the same."""
    from common.config import MambaConfig, SSMConfig
    from torchref.mamba import BiMamba2

    cfg = MambaConfig(n_layers=2, d_model=16, d_state=8, headdim=4, dropout=0.3)
    results = []
    for remat in (False, True):
        stack = BiMamba2(cfg, SSMConfig(), False, 1e-5, torch.Generator().manual_seed(0),
                         dtype=torch.float64, remat=remat).train()
        u = torch.randn(3, 40, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1),
                        requires_grad=True)
        torch.manual_seed(7)  # dropout draws from the global generator
        out = stack(u)
        (out * torch.linspace(-1, 1, 16, dtype=torch.float64)).sum().backward()
        results.append((out.detach(), u.grad, [p.grad for p in stack.parameters()]))
    (a, ga, pa), (b, gb, pb) = results
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=0, atol=1e-12)
    for x, y in zip(pa, pb, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12)
