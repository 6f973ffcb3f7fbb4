"""jaxbrr.train.optim: the schedule at exact steps (and torchref's LambdaLR on the same steps),
the weight-decay mask on the tiny model (both frameworks), and optax's chain against
torch AdamW + clip_grad_norm_ + LambdaLR step by step on a toy quadratic in float64."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from torch import nn

from common.config import load_config
from jaxbrr.model import SeizureDetector
from jaxbrr.train import optim
from torchref.model import SeizureDetector as TorchSeizureDetector
from torchref.train import optim as torch_optim


def train_cfg(**overrides):
    return load_config(None, [f"train.{k}={v}" for k, v in overrides.items()]).train


# ---------------------------------------------------------------------------------------------
# schedule


def test_schedule_exact_steps(x64):
    cfg = train_cfg(lr=1e-3, warmup_ratio=0.1)
    schedule = optim.learning_rate_schedule(cfg, 100)  # W = 10, cosine over 90 steps
    expected = {
        0: 1e-4, 1: 2e-4, 4: 5e-4, 9: 1e-3,  # warmup (s + 1)/W: update 0 runs at lr/W, no spike
        10: 1e-3,  # cosine starts at 1
        25: 1e-3 * 0.5 * (1 + math.cos(math.pi * 15 / 90)),
        55: 0.5e-3,  # half way
        99: 1e-3 * 0.5 * (1 + math.cos(math.pi * 89 / 90)),
        100: 0.0, 130: 0.0,  # ends at 0 and stays there
    }
    for step, value in expected.items():
        assert float(schedule(step)) == pytest.approx(value, rel=1e-14, abs=1e-19), step
        assert torch_optim.learning_rate_schedule(cfg, 100)(step) == pytest.approx(value, rel=1e-14,
                                                                                    abs=1e-19)


def test_schedule_warmup_rounding_and_minimum():
    # W = max(1, int(ratio · total)): int(0.07 · 100) = 7; ratio 0 -> W = 1 (full LR at update 0).
    assert optim.warmup_steps(train_cfg(warmup_ratio=0.07), 100) == 7
    assert optim.warmup_steps(train_cfg(warmup_ratio=0.0), 100) == 1
    assert optim.warmup_steps(train_cfg(warmup_ratio=0.01), 50) == 1
    schedule = optim.learning_rate_schedule(train_cfg(lr=2e-3, warmup_ratio=0.0), 11)
    assert float(schedule(0)) == pytest.approx(2e-3) and float(schedule(1)) == pytest.approx(2e-3)
    assert float(schedule(6)) == pytest.approx(1e-3) and float(schedule(11)) == 0.0


def test_torch_lambdalr_runs_the_same_schedule():
    """The LR torch's optimizer holds before each of its steps is schedule(s); update 0 at lr/W."""
    cfg = train_cfg(lr=1e-3, warmup_ratio=0.25)
    total = 12
    module = nn.Linear(2, 2)
    optimizer, scheduler = torch_optim.make_optimizer(module, cfg, total)
    schedule = optim.learning_rate_schedule(cfg, total)
    for step in range(total + 2):
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(float(schedule(step)), rel=1e-6, abs=1e-12), step
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.0


# ---------------------------------------------------------------------------------------------
# weight-decay mask


@pytest.fixture(scope="module")
def tiny():
    return load_config("configs/tiny.yaml")


@pytest.fixture(scope="module")
def tiny_model(tiny):
    return SeizureDetector(tiny.model, rngs=nnx.Rngs(0))


def test_mask_on_tiny_model(tiny_model):
    model = tiny_model
    mask = {"/".join(map(str, path)): bool(value) for path, value in nnx.to_flat_state(optim.weight_decay_mask(model))}
    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    assert len(mask) == len(params)
    excluded = [
        "node_mamba/layers/0/fwd/A_log", "node_mamba/layers/0/fwd/D", "node_mamba/layers/0/fwd/dt_bias",
        "edge_mamba/layers/0/bwd/A_log", "node_mamba/layers/1/bwd/conv1d/bias",
        "node_mamba/layers/0/fwd/norm/weight",  # gated RMSNorm
        "node_mamba/layers/0/norm/scale", "node_mamba/layers/0/norm/bias",  # LayerNorm
        "node_mamba/layers/0/proj/bias", "gnn/norms/1/scale", "gnn/layers/0/lin/bias",
        "tcn/layers/0/bias",
        "head/detect/bias", "proj_to_electrodes/bias",
    ]
    included = [
        "node_mamba/layers/0/fwd/in_proj/kernel", "node_mamba/layers/0/fwd/out_proj/kernel",
        "node_mamba/layers/0/fwd/conv1d/kernel", "node_mamba/layers/0/proj/kernel",
        "tcn/layers/1/weight_v", "tcn/layers/0/weight_g",  # weight norm's g: w's magnitude
        "tcn/downsample/kernel", "edge_lift/kernel", "gnn/layers/1/lin/kernel",
        "head/detect/kernel", "proj_from_electrodes/kernel",
    ]
    assert not any(mask[name] for name in excluded)
    assert all(mask[name] for name in included)
    # Every 1-d parameter but g is a bias, a norm or a Mamba vector: none decays. Kernels (ndim >= 2) do.
    for path, param in params:
        name = "/".join(map(str, path))
        assert mask[name] == (param[...].ndim >= 2 or path[-1] == "weight_g"), name


def test_mask_agrees_with_torchref(tiny, tiny_model):
    """Same decisions in both frameworks: the decayed and the exempt scalar counts match."""
    model = tiny_model
    mask = optim.weight_decay_mask(model)
    sizes = jax.tree.leaves(jax.tree.map(lambda p: p.size, nnx.state(model, nnx.Param)))
    decays = jax.tree.leaves(mask)
    jax_counts = (sum(s for s, d in zip(sizes, decays, strict=True) if d),
                  sum(s for s, d in zip(sizes, decays, strict=True) if not d))

    reference = TorchSeizureDetector(tiny.model, 0)
    torch_mask = torch_optim.weight_decay_mask(reference)
    named = dict(reference.named_parameters())
    torch_counts = (sum(named[n].numel() for n, d in torch_mask.items() if d),
                    sum(named[n].numel() for n, d in torch_mask.items() if not d))
    print(f"decayed / exempt scalars: jax {jax_counts}, torch {torch_counts}")
    assert jax_counts == torch_counts
    assert not torch_mask["node_mamba.layers.0.fwd.A_log"] and torch_mask["tcn.layers.0.weight_v"]
    assert torch_mask["tcn.layers.0.weight_g"]
    optimizer, _ = torch_optim.make_optimizer(reference, tiny.train, 10)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [tiny.train.weight_decay, 0.0]
    assert sum(p.numel() for p in optimizer.param_groups[0]["params"]) == torch_counts[0]


def test_mask_refuses_an_unknown_parameter():
    class Scaler(nnx.Module):
        def __init__(self):
            self.gain = nnx.Param(jnp.ones(3))

    with pytest.raises(TypeError, match="no rule for parameter gain"):
        optim.weight_decay_mask(Scaler())

    class TorchScaler(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(3))

    with pytest.raises(TypeError, match="no rule for parameter gain"):
        torch_optim.weight_decay_mask(TorchScaler())


# ---------------------------------------------------------------------------------------------
# the update itself: optax chain vs torch, float64


class Toy(nn.Module):
    """A Linear (weight decays, bias does not) and a Mamba-like A_log flagged _no_weight_decay."""

    def __init__(self, params: dict[str, np.ndarray]):
        super().__init__()
        self.lin = nn.Linear(3, 4, dtype=torch.float64)
        with torch.no_grad():
            self.lin.weight.copy_(torch.from_numpy(params["kernel"].T))
            self.lin.bias.copy_(torch.from_numpy(params["bias"]))
        self.A_log = nn.Parameter(torch.from_numpy(params["A_log"].copy()))
        self.A_log._no_weight_decay = True


def toy_loss(p, x, t, xp):
    """Quadratic: 0.5·‖x W + b − t‖² + 2·‖A_log − 1‖² (x in both frameworks' array module)."""
    r = x @ p["kernel"] + p["bias"] - t
    return 0.5 * xp.sum(r * r) + 2.0 * xp.sum((p["A_log"] - 1.0) ** 2)


@pytest.mark.parametrize("clip", [0.5, 0.0])
def test_adamw_chain_matches_torch_float64(x64, clip):
    cfg = train_cfg(lr=0.05, weight_decay=0.1, warmup_ratio=0.3, gradient_clip=clip)
    total, steps = 10, 12  # W = 3; two updates past the end (LR 0)
    rng = np.random.default_rng(0)
    params = {"kernel": rng.normal(size=(3, 4)), "bias": rng.normal(size=4), "A_log": rng.normal(size=2)}
    x, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 4))

    # 1. torch: AdamW groups from torchref's mask, clip_grad_norm_, LambdaLR
    toy = Toy(params)
    assert torch_optim.weight_decay_mask(toy) == {"lin.weight": True, "lin.bias": False, "A_log": False}
    optimizer, scheduler = torch_optim.make_optimizer(toy, cfg, total)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    torch_params, torch_norms = [], []
    for _ in range(steps):
        optimizer.zero_grad()
        toy_loss({"kernel": toy.lin.weight.T, "bias": toy.lin.bias, "A_log": toy.A_log}, xt, tt, torch).backward()
        if clip > 0:
            torch_norms.append(float(nn.utils.clip_grad_norm_(toy.parameters(), clip)))
        optimizer.step()
        scheduler.step()
        torch_params.append({"kernel": toy.lin.weight.detach().numpy().T.copy(),
                             "bias": toy.lin.bias.detach().numpy().copy(),
                             "A_log": toy.A_log.detach().numpy().copy()})

    # 2. jax: make_optimizer on a dict of arrays with the same mask
    tx = optim.make_optimizer(cfg, total, {"kernel": True, "bias": False, "A_log": False})
    p = jax.tree.map(jnp.asarray, params)
    state = tx.init(p)
    schedule = optim.learning_rate_schedule(cfg, total)
    jax_params, jax_norms = [], []
    for step in range(steps):
        grads = jax.grad(toy_loss)(p, jnp.asarray(x), jnp.asarray(t), jnp)
        jax_norms.append(float(optax.tree.norm(grads)))
        updates, state = tx.update(grads, state, p)
        p = optax.apply_updates(p, updates)
        assert float(optim.current_learning_rate(state)) == pytest.approx(float(schedule(step)), rel=1e-15)
        jax_params.append(jax.tree.map(np.asarray, p))

    # 3. compare after every update
    worst = max(np.max(np.abs(a[k] - b[k])) for a, b in zip(torch_params, jax_params, strict=True) for k in a)
    moved = max(np.max(np.abs(jax_params[-1][k] - params[k])) for k in params)
    print(f"clip={clip}: max |Δ param| over {steps} updates = {worst:.2e} (parameters moved {moved:.2f})")
    assert moved > 0.1
    # Without clipping the two agree to rounding; with it torch's c/(‖g‖ + 1e-6) against optax's
    # c/‖g‖ leaves ~1e-10 (jaxbrr/train/optim.py).
    assert worst < (1e-7 if clip > 0 else 1e-13)
    if clip > 0:
        assert min(jax_norms) > clip  # every update was clipped
        np.testing.assert_allclose(torch_norms, jax_norms, rtol=1e-9)


def test_gradient_accumulation_averages(x64):
    """grad_accum_steps = 2: two calls with g1, g2 make one update with (g1 + g2)/2."""
    mask = {"w": True}
    p = {"w": jnp.array([1.0, -2.0, 3.0])}
    g1, g2 = {"w": jnp.array([0.3, 0.1, -0.2])}, {"w": jnp.array([-0.1, 0.5, 0.4])}
    accumulated = optim.make_optimizer(train_cfg(grad_accum_steps=2), 10, mask)
    state = accumulated.init(p)
    u1, state = accumulated.update(g1, state, p)
    assert np.all(np.asarray(u1["w"]) == 0)
    u2, state = accumulated.update(g2, state, p)
    lr0 = optim.learning_rate_schedule(train_cfg(grad_accum_steps=2), 10)(0)
    assert float(optim.current_learning_rate(state)) == pytest.approx(float(lr0), rel=1e-15)

    single = optim.make_optimizer(train_cfg(), 10, mask)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
    u, _ = single.update(mean, single.init(p), p)
    # The two paths compute the same update by different float64 operations (MultiSteps' running
    # mean acc + (g − acc)/n against (g1 + g2)/2, then clip, Adam and weight decay): at most ~20
    # roundings of values no larger than lr·(1 + wd·|p|) (Adam's first step has |m̂/√v̂| <= 1)
    # between them, so 20u of that scale, with a margin of 3.
    cfg = train_cfg()
    scale = float(lr0) * (1 + cfg.weight_decay * np.abs(np.asarray(p["w"])).max())
    np.testing.assert_allclose(np.asarray(u2["w"]), np.asarray(u["w"]), rtol=0, atol=3 * 20 * np.finfo(np.float64).eps / 2 * scale)


def test_nnx_optimizer_on_tiny_model(tiny):
    """make_nnx_optimizer builds on the whole model; one update leaves exempt parameters with
    zero gradient unchanged and decays kernels with zero gradient by lr·wd."""
    cfg = train_cfg(lr=0.1, weight_decay=0.5, warmup_ratio=0.0, gradient_clip=1.0)
    model = SeizureDetector(tiny.model, rngs=nnx.Rngs(0))
    before = [(path, np.asarray(param[...])) for path, param in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    optimizer = optim.make_nnx_optimizer(model, cfg, 10)
    zeros = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
    nnx.jit(lambda optimizer, model, grads: optimizer.update(model, grads))(optimizer, model, zeros)
    after = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    for path, old in before:
        new = np.asarray(after[path][...])
        decays = old.ndim >= 2 or path[-1] == "weight_g"
        factor = 1 - 0.1 * 0.5 if decays else 1.0  # lr(0) = lr with W = 1
        np.testing.assert_allclose(new, old * factor, rtol=1e-6, err_msg="/".join(map(str, path)))
