"""jaxbrr/mamba.py: Mamba2 and BiMamba2 against torchref on identical weights, the remat path
against the plain loop, guards, init, parameter counts, tracing, and NaN-freedom."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from common.config import MambaConfig, SSMConfig
from jaxbrr.mamba import BiMamba2, BiMamba2Layer, CausalDepthwiseConv1d, Mamba2
from parity.compare import compare_arrays
from torchref import mamba as torch_mamba

PROJECT = dict(d_model=64, d_state=16, d_conv=4, expand=2, headdim=8)  # node stream
EDGE = dict(d_model=16, d_state=8, d_conv=4, expand=2, headdim=4)  # edge stream


@pytest.fixture
def debug_nans():
    previous = jax.config.jax_debug_nans
    jax.config.update("jax_debug_nans", True)
    yield
    jax.config.update("jax_debug_nans", previous)


def sizes(d):
    return (d["d_model"], d["d_state"], d["d_conv"], d["expand"], d["headdim"])


def edge_cfg(n_layers=2, dropout=0.1):
    return MambaConfig(n_layers=n_layers, dropout=dropout, **{k: v for k, v in EDGE.items() if k != "d_conv"})


def edge_stack(guards, remat, dtype=jnp.float32, dropout=0.1, seed=0):
    """2 layers (the guard clamp after index 1 included) at edge-stream sizes, chunk 8."""
    return BiMamba2(edge_cfg(dropout=dropout), SSMConfig(chunk_size=8), guards, 1e-5, remat=remat,
                    rngs=nnx.Rngs(seed), param_dtype=dtype)


def evaluation(model):
    return nnx.view(model, deterministic=True)


# ---------------------------------------------------------------------------------------------
# torch state dict -> NNX (a local table; the project-wide one is parity/convert.py's job)


def nnx_entry(model: nnx.Module, torch_name: str):
    """(NNX path, owner, leaf, permute) of one torch state-dict entry. The permutations are
    involutions, so the same one maps NNX gradients back to torch's layout."""
    *parts, leaf = torch_name.split(".")
    path, owner = [], model
    for part in parts:
        key = int(part) if part.isdigit() else part
        owner = owner[key] if isinstance(key, int) else getattr(owner, key)
        path.append(key)
    permute = lambda w: w  # noqa: E731
    if leaf == "weight" and isinstance(owner, nnx.Linear):
        leaf, permute = "kernel", lambda w: w.T  # (out, in) <-> (in, out)
    elif leaf == "weight" and isinstance(owner, CausalDepthwiseConv1d):
        leaf, permute = "kernel", lambda w: w.transpose(2, 1, 0)  # (C, 1, W) <-> (W, 1, C)
    elif leaf == "weight" and isinstance(owner, nnx.LayerNorm):
        leaf = "scale"
    return (*path, leaf), owner, leaf, permute


def load_torch_state(model: nnx.Module, state_dict: dict) -> None:
    filled = []
    for name, tensor in state_dict.items():
        path, owner, leaf, permute = nnx_entry(model, name)
        variable = getattr(owner, leaf)
        value = permute(tensor.detach().numpy())
        assert variable[...].shape == value.shape and variable[...].dtype == value.dtype, name
        variable[...] = jnp.asarray(value)
        filled.append(path)
    params = [path for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    assert sorted(map(str, filled)) == sorted(map(str, params))  # every leaf exactly once


def torch_out_and_grads(module, u, weights):
    module.zero_grad()
    u = torch.tensor(u, requires_grad=True)
    out = module(u)
    (out * torch.tensor(weights)).sum().backward()
    result = {"out": out.detach().numpy(), "du": u.grad.numpy()}
    result.update({name: p.grad.numpy() for name, p in module.named_parameters()})
    return result


# Module-level jitted helpers: nnx.jit caches on the graph structure, so tests that use the same
# configuration share one compilation (compiling dominates these tests on a 2-core CPU).
forward = nnx.jit(lambda model, u: model(u))


@nnx.jit
def _nnx_out_and_grads(model, u, weights):
    def loss(model, u):
        out = model(u)
        return jnp.sum(out * weights), out

    (_, out), (grads, du) = nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True)(model, u)
    return out, grads, du


def nnx_out_and_grads(model, u, weights):
    """Output, d/du and the parameter gradients of sum(model(u) · weights), keyed by NNX path."""
    out, grads, du = _nnx_out_and_grads(model, jnp.asarray(u), jnp.asarray(weights))
    result = {"out": np.asarray(out), "du": np.asarray(du)}
    result.update({path: np.asarray(g[...]) for path, g in nnx.to_flat_state(grads)})
    return result


def in_torch_layout(model, result, torch_names):
    """nnx_out_and_grads' result keyed by torch names, in torch's layouts."""
    converted = {"out": result["out"], "du": result["du"]}
    for name in torch_names:
        path, _, _, permute = nnx_entry(model, name)
        converted[name] = permute(result[path])
    return converted


def max_rel_diffs(test, ref):
    return {k: float(np.abs(test[k].astype(np.float64) - ref[k]).max() / np.abs(ref[k]).max()) for k in ref}


def assert_layer_parity(test, ref, dtype):
    """The output within the "layer" row of parity/tolerances.py (one module's forward), d/du and
    every parameter gradient within its "grad" row."""
    rows = [compare_arrays(name, test[name], ref[name], "layer" if name == "out" else "grad", dtype) for name in ref]
    worst = max(rows, key=lambda row: row.max_rel)
    print(f"{dtype} jax vs torch: worst {worst.name} max_rel {worst.max_rel:.1e} (rtol {worst.rtol:g})")
    assert all(row.passed for row in rows), [row.reason for row in rows if not row.passed]


def random_inputs(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------------------------
# against torchref


@pytest.mark.parametrize(
    "dtype, scan, chunk_size",
    [(torch.float64, "chunked", 16), (torch.float64, "sequential", 16), (torch.float32, "chunked", 16)],
)
def test_mamba2_matches_torchref(x64, dtype, scan, chunk_size):
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    # 1. torch, with non-trivial D and norm weight
    reference = torch_mamba.Mamba2(*sizes(PROJECT), scan=scan, chunk_size=chunk_size, dtype=dtype,
                                   generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        g = torch.Generator().manual_seed(2)
        reference.D.copy_(torch.randn(reference.D.shape, generator=g))
        reference.norm.weight.copy_(1 + 0.3 * torch.randn(reference.norm.weight.shape, generator=g))
    u, weights = random_inputs((2, 50, 64), np_dtype, seed=3)  # 50: not a multiple of 16 (padded)
    ref = torch_out_and_grads(reference, u, weights)
    # 2. jax, loaded from torch's state dict
    model = Mamba2(*sizes(PROJECT), scan=scan, chunk_size=chunk_size, rngs=nnx.Rngs(0), param_dtype=np_dtype)
    load_torch_state(model, reference.state_dict())
    test = in_torch_layout(model, nnx_out_and_grads(model, u, weights), dict(reference.named_parameters()))
    # 3. compare
    assert test["out"].dtype == np_dtype
    print(f"{scan} chunk {chunk_size}")
    assert_layer_parity(test, ref, np_dtype)


def test_bimamba2_matches_torchref_float64(x64):
    cfg, ssm = edge_cfg(), SSMConfig(chunk_size=8)
    # 1. torch (eval: no dropout), with guards
    reference = torch_mamba.BiMamba2(cfg, ssm, True, 1e-5, generator=torch.Generator().manual_seed(0),
                                     dtype=torch.float64).eval()
    with torch.no_grad():
        for layer in reference.layers:  # non-trivial LayerNorm affine
            layer.norm.weight.normal_(1.0, 0.3, generator=torch.Generator().manual_seed(1))
            layer.norm.bias.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(2))
    u, weights = random_inputs((2, 30, 16), np.float64, seed=1)
    u[:, 3, :4] *= 30  # reaches the input guard
    ref = torch_out_and_grads(reference, u, weights)
    # 2. jax
    model = edge_stack(guards=True, remat=True, dtype=jnp.float64)
    load_torch_state(model, reference.state_dict())
    test = in_torch_layout(model, nnx_out_and_grads(evaluation(model), u, weights), dict(reference.named_parameters()))
    # 3. compare
    assert_layer_parity(test, ref, np.float64)


@pytest.mark.parametrize("dims", [PROJECT, EDGE], ids=["project", "edge"])
def test_parameter_counts_equal_torchref(dims):
    ours = nnx.eval_shape(lambda: Mamba2(*sizes(dims), rngs=nnx.Rngs(0)))
    theirs = torch_mamba.Mamba2(*sizes(dims))
    count = sum(p.size for p in jax.tree.leaves(nnx.state(ours, nnx.Param)))
    assert count == sum(p.numel() for p in theirs.parameters())
    if dims is PROJECT:
        assert count == 28_624

    n_layers = 6 if dims is PROJECT else 2
    cfg = MambaConfig(n_layers=n_layers, **{k: v for k, v in dims.items() if k != "d_conv"})
    stack = nnx.eval_shape(lambda: BiMamba2(cfg, SSMConfig(), False, 1e-5, remat=True, rngs=nnx.Rngs(0)))
    torch_stack = torch_mamba.BiMamba2(cfg, SSMConfig(), False, 1e-5)
    count = sum(p.size for p in jax.tree.leaves(nnx.state(stack, nnx.Param)))
    assert count == sum(p.numel() for p in torch_stack.parameters())
    print(f"BiMamba2 {dims['d_model']}/{dims['d_state']}/{dims['headdim']} x{n_layers}: {count} parameters")


def test_names_and_shapes():
    stack = nnx.eval_shape(lambda: BiMamba2(edge_cfg(n_layers=3), SSMConfig(), False, 1e-5, remat=False, rngs=nnx.Rngs(0)))
    shapes = {"/".join(map(str, path)): v.shape for path, v in nnx.to_flat_state(nnx.state(stack, nnx.Param))}
    assert shapes["layers/0/fwd/in_proj/kernel"] == (16, 88)
    assert shapes["layers/2/bwd/conv1d/kernel"] == (4, 1, 48)
    assert shapes["layers/2/bwd/conv1d/bias"] == (48,)
    assert shapes["layers/1/fwd/norm/weight"] == (32,)
    assert shapes["layers/1/proj/kernel"] == (32, 16) and shapes["layers/1/norm/scale"] == (16,)
    assert {k.split("/", 3)[-1] for k in shapes if k.startswith("layers/0/fwd/")} == {
        "in_proj/kernel", "conv1d/kernel", "conv1d/bias", "dt_bias", "A_log", "D", "norm/weight", "out_proj/kernel"}
    assert stack.layers[0].fwd.dt_bias.get_metadata()["no_weight_decay"] is True


def test_init_is_mamba_ssm_init_drawn_from_rngs():
    mixer = Mamba2(*sizes(PROJECT), rngs=nnx.Rngs(7))
    dt = np.log1p(np.exp(np.asarray(mixer.dt_bias[...], np.float64)))
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    A = np.exp(np.asarray(mixer.A_log[...]))
    assert A.min() >= 1 and A.max() <= 16 and len(np.unique(A)) == A.size
    np.testing.assert_array_equal(mixer.D[...], 1.0)
    np.testing.assert_array_equal(mixer.norm.weight[...], 1.0)
    for values, bound in [(mixer.in_proj.kernel[...], 1 / 8), (mixer.conv1d.kernel[...], 0.5),
                          (mixer.conv1d.bias[...], 0.5), (mixer.out_proj.kernel[...], 1 / np.sqrt(128))]:
        values = np.asarray(values)
        assert np.abs(values).max() <= bound
        assert abs(values.std() - bound / np.sqrt(3)) < 0.2 * bound  # uniform, not normal or constant
    again = Mamba2(*sizes(PROJECT), rngs=nnx.Rngs(7))
    np.testing.assert_array_equal(again.in_proj.kernel[...], mixer.in_proj.kernel[...])
    other = Mamba2(*sizes(PROJECT), rngs=nnx.Rngs(8))
    assert not np.array_equal(other.A_log[...], mixer.A_log[...])


def test_bad_settings_raise_at_construction():
    with pytest.raises(ValueError, match="model.ssm.scan"):
        Mamba2(*sizes(EDGE), scan="associative", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="headdim"):
        Mamba2(16, 8, 4, 2, 5, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="guards must be a bool"):
        BiMamba2Layer(edge_cfg(), SSMConfig(), "none", 1e-5, rngs=nnx.Rngs(0))


def all_eqns(jaxpr):
    """Every equation of a jaxpr, those inside nested jaxprs (jit, scan, ...) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    yield from all_eqns(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    yield from all_eqns(sub)


def test_bfloat16_compute_keeps_scan_and_norm_in_float32():
    mixer = Mamba2(*sizes(EDGE), rngs=nnx.Rngs(0))
    fast = Mamba2(*sizes(EDGE), rngs=nnx.Rngs(0), dtype=jnp.bfloat16)  # the same float32 parameters
    u = jax.random.normal(jax.random.key(1), (2, 40, 16))
    out, ref = forward(fast, u), forward(mixer, u)
    assert out.dtype == jnp.bfloat16
    assert float(jnp.abs(out.astype(jnp.float32) - ref).max() / jnp.abs(ref).max()) < 3e-2
    eqns = list(all_eqns(jax.make_jaxpr(lambda u: fast(u))(u).jaxpr))
    dtypes = {name: {str(e.outvars[0].aval.dtype) for e in eqns if e.primitive.name == name}
              for name in ("cumsum", "exp", "sqrt", "dot_general")}
    print("bfloat16 compute, output dtypes per primitive:", dtypes)
    assert dtypes["cumsum"] == dtypes["exp"] == dtypes["sqrt"] == {"float32"}  # scan, decays, norm
    assert "bfloat16" in dtypes["dot_general"]  # the projections


# ---------------------------------------------------------------------------------------------
# BiMamba2


def test_remat_equals_plain_loop_float64(x64):
    """Train mode with dropout and guards: the same masks (each layer's own RNG stream), outputs
    and gradients, for two calls in a row."""
    plain, remat = (edge_stack(guards=True, remat=r, dtype=jnp.float64) for r in (False, True))
    u, weights = random_inputs((2, 30, 16), np.float64, seed=1)
    u[:, 3, :4] *= 30
    for call in range(2):  # the second call draws new dropout masks in both
        ref = nnx_out_and_grads(plain, u, weights)
        test = nnx_out_and_grads(remat, u, weights)
        diffs = max_rel_diffs(test, ref)
        print(f"call {call}: remat vs plain float64 max rel diff {max(diffs.values()):.1e}")
        assert max(diffs.values()) < 1e-12
    counts = [[int(layer.dropout.rngs.count[...]) for layer in s.layers] for s in (plain, remat)]
    assert counts[0] == counts[1] == [2, 2]
    # and dropout did act: the evaluation output differs
    assert not np.allclose(forward(evaluation(plain), jnp.asarray(u)), ref["out"])


@pytest.mark.parametrize("remat", [False, True])
def test_guards(remat):
    u = jax.random.normal(jax.random.key(1), (2, 24, 16))
    big = u.at[:, 5, :3].set(1e3)
    nan, zero = u.at[0, 5, 0].set(jnp.nan), u.at[0, 5, 0].set(0.0)

    plain = evaluation(edge_stack(guards=False, remat=remat))
    assert not np.allclose(forward(plain, big), forward(plain, jnp.clip(big, -10, 10)))  # the model sees 1e3
    assert bool(jnp.isnan(forward(plain, nan)).any())  # no nan_to_num either

    guarded = evaluation(edge_stack(guards=True, remat=remat))
    big = big.at[:, 9, 4].set(-jnp.inf)
    out = forward(guarded, big)
    assert float(jnp.abs(out).max()) <= 10
    # the original's nan_to_num maps ±inf to 0 (not to the clamp bound), then clamps
    np.testing.assert_array_equal(out, forward(guarded, jnp.clip(big, -10, 10).at[:, 9, 4].set(0.0)))
    np.testing.assert_array_equal(forward(guarded, nan), forward(guarded, zero))


def test_stack_clamps_after_every_second_layer_and_at_the_end():
    """With the layers' own clamps switched off only the stack's remain: after index 1 and at the
    end, not after index 0 (the same in both paths)."""
    cfg = edge_cfg(n_layers=3, dropout=0.0)
    u = jax.random.normal(jax.random.key(1), (1, 12, 16))
    for remat in (False, True):
        stack = BiMamba2(cfg, SSMConfig(chunk_size=8), True, 1e-5, remat=remat, rngs=nnx.Rngs(0))
        for layer in stack.layers:
            layer.guards = False
            layer.norm.scale[...] = jnp.full(16, 100.0)  # LayerNorm outputs now reach ±100·√15
        first = forward(stack.layers[0], u)
        assert float(jnp.abs(first).max()) > 10
        second = jnp.clip(forward(stack.layers[1], first), -10, 10)
        expected = jnp.clip(forward(stack.layers[2], second), -10, 10)
        out = forward(stack, u)
        # the same float32 ops, fused differently (remat recomputes them): the table's whole-model row
        row = compare_arrays(f"stack (remat {remat}) vs its layers", out, expected, "model", "float32")
        assert row.passed, row
        clamped_first = jnp.clip(forward(stack.layers[1], jnp.clip(first, -10, 10)), -10, 10)
        assert not np.allclose(out, jnp.clip(forward(stack.layers[2], clamped_first), -10, 10), atol=1e-3)


def test_bwd_sees_the_reversed_sequence():
    cfg = edge_cfg(n_layers=1, dropout=0.0)

    def layer_with_silenced(direction):
        layer = BiMamba2Layer(cfg, SSMConfig(chunk_size=8), guards=False, layernorm_eps=1e-5, rngs=nnx.Rngs(0))
        getattr(layer, direction).out_proj.kernel[...] = jnp.zeros((32, 16))  # that direction now outputs 0
        return layer

    u = jax.random.normal(jax.random.key(1), (1, 24, 16))
    last_changed, first_changed = u.at[:, -1].add(1.0), u.at[:, 0].add(1.0)

    only_bwd = layer_with_silenced("fwd")
    assert not np.allclose(forward(only_bwd, u)[:, 0], forward(only_bwd, last_changed)[:, 0])  # the future reaches t=0
    np.testing.assert_array_equal(forward(only_bwd, u)[:, -1], forward(only_bwd, first_changed)[:, -1])  # the past does not reach t=L-1

    only_fwd = layer_with_silenced("bwd")
    np.testing.assert_array_equal(forward(only_fwd, u)[:, 0], forward(only_fwd, last_changed)[:, 0])  # causal
    assert not np.allclose(forward(only_fwd, u)[:, -1], forward(only_fwd, first_changed)[:, -1])


@pytest.mark.parametrize("remat", [False, True])
def test_jit_traces_once_per_shape(remat):
    stack = edge_stack(guards=True, remat=remat)  # train mode: the dropout RNG state changes every call
    traces = []

    @nnx.jit
    def step(model, u):
        traces.append(u.shape)  # runs only while tracing
        return model(u)

    lengths = (24, 24, 24, 40, 40) if remat else (24, 24, 24)
    outs = [step(stack, jnp.ones((2, length, 16))) for length in lengths]
    assert traces == sorted(set(traces)) == [(2, length, 16) for length in sorted(set(lengths))]
    assert not np.allclose(outs[0], outs[1])  # new masks each call, without a retrace


def test_forward_backward_raise_nothing_under_debug_nans(debug_nans):
    with pytest.raises(FloatingPointError):
        jnp.log(jnp.array(-1.0))  # debug_nans is on
    # Mamba2 with dt ≈ 3: dt·A down to -48 per step, segment sums far below exp's range.
    mixer = Mamba2(*sizes(PROJECT), rngs=nnx.Rngs(0))
    mixer.dt_bias[...] = jnp.full(mixer.nheads, 3.0)
    u, weights = random_inputs((2, 50, 64), np.float32, seed=3)
    result = nnx_out_and_grads(mixer, 3 * u, weights)
    assert all(np.isfinite(v).all() for v in result.values())
    # BiMamba2 in train mode, remat on (scan + checkpoint) and off
    u, weights = random_inputs((2, 30, 16), np.float32, seed=1)
    for remat in (False, True):
        result = nnx_out_and_grads(edge_stack(guards=False, remat=remat), 3 * u, weights)
        assert all(np.isfinite(v).all() for v in result.values())
