"""benchmarks/flops.py: the model's FLOPs per window, against counts made without it.

A FLOP count is arithmetic on shapes: exact integers, the same on every machine."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from common.config import load_config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import flops  # noqa: E402
import gpu_bench  # noqa: E402


def test_products_count_two_flops_per_multiply_add():
    a, b = jax.ShapeDtypeStruct((3, 64, 32), jnp.float32), jax.ShapeDtypeStruct((3, 32, 16), jnp.float32)
    counts = flops.jaxpr_flops(jax.make_jaxpr(jnp.matmul)(a, b).jaxpr)
    assert counts == {flops.UNSCOPED: 2 * 3 * 64 * 32 * 16}
    # a depthwise (grouped) convolution: each output takes its group's inputs × taps
    x, w = jax.ShapeDtypeStruct((2, 8, 100), jnp.float32), jax.ShapeDtypeStruct((8, 1, 5), jnp.float32)
    conv = jax.make_jaxpr(lambda x, w: jax.lax.conv_general_dilated(x, w, (1,), "VALID", feature_group_count=8))
    assert flops.jaxpr_flops(conv(x, w).jaxpr) == {flops.UNSCOPED: 2 * 2 * 8 * 96 * 5}

    def looped(h, xs):  # a loop's products count once per trip, under the loop's scope
        with jax.named_scope("stage"):
            return jax.lax.scan(lambda h, x: (h @ x, None), h, xs)[0]

    h, xs = jax.ShapeDtypeStruct((4, 4), jnp.float32), jax.ShapeDtypeStruct((7, 4, 4), jnp.float32)
    assert flops.jaxpr_flops(jax.make_jaxpr(looped)(h, xs).jaxpr) == {"stage" + flops.RECURRENCE: 7 * 2 * 4 * 4 * 4}

    def branched(p, a, b):  # one branch runs: the costlier is counted, not both
        return jax.lax.cond(p, lambda a, b: a @ b, lambda a, b: (a @ b) @ b.T @ b, a, b)

    a, b = jax.ShapeDtypeStruct((8, 8), jnp.float32), jax.ShapeDtypeStruct((8, 8), jnp.float32)
    counted = flops.jaxpr_flops(jax.make_jaxpr(branched)(True, a, b).jaxpr)
    assert counted == {flops.UNSCOPED: 3 * 2 * 8 * 8 * 8}

    def until(h):  # trips the jaxpr does not know: refused rather than counted once
        return jax.lax.while_loop(lambda h: h.sum() < 100, lambda h: h @ h, h)

    with pytest.raises(ValueError, match="a while loop with matrix products"):
        flops.jaxpr_flops(jax.make_jaxpr(until)(h).jaxpr)


def test_the_full_size_count_is_the_benchs_and_agrees_with_the_published_and_hand_counts():
    config = load_config(ROOT / "configs" / "tusz.yaml")
    counts = flops.forward_flops(config)
    assert sum(counts.values()) / 1e9 == pytest.approx(gpu_bench.MODEL_FORWARD_GFLOP_PER_WINDOW, abs=0.005)
    # perf_grounding.md §3: torch's flop counter on the original, per 60 s window (to its 0.1 GFLOP)
    assert round(counts["tcn"] / 1e9, 1) == 105.5
    assert round(counts["electrodes"] / 1e9, 1) == round(counts["from_electrodes"] / 1e9, 1) == 1.2
    # by hand from Mamba2's shapes (mamba_ssm's Mamba2: in_proj D -> 2E + 2GN + H, out_proj E -> D),
    # each bidirectional layer two directions and a 2D -> D projection; the recurrence h <- a·h + x·Bᵀ,
    # y = C·h is 2 × E·N multiply-adds per token
    m = config.model
    tokens = {"node_mamba": m.n_chans, "edge_weights": m.n_edges}  # sequences per window
    steps = config.window_samples // m.tcn.stride_down
    for stage, cfg in (("node_mamba", m.node_mamba), ("edge_weights", m.graph.edge_mamba)):
        E, N, D, H = cfg.expand * cfg.d_model, cfg.d_state, cfg.d_model, cfg.expand * cfg.d_model // cfg.headdim
        per_token_layer = 2 * (2 * D * (2 * E + 2 * N + H) + 2 * E * D) + 2 * 2 * D * D
        assert counts[stage + flops.RECURRENCE] == cfg.n_layers * 2 * 4 * E * N * tokens[stage] * steps
        lift = 2 * 2 * m.graph.edge_lift * tokens[stage] * steps if stage == "edge_weights" else 0  # 1 -> F -> 1
        assert counts[stage] == cfg.n_layers * per_token_layer * tokens[stage] * steps + lift


def test_the_count_agrees_with_torchs_flop_counter_on_torchref():
    """torch.utils.flop_counter on torchref's forward, tiny size, the same scan (sequential): the
    same products stage by stage, except where the twins compute a product differently: torchref's
    causal depthwise conv is an nn.Conv1d (counted there; jaxbrr shifts and multiplies), its
    recurrence's x·Bᵀ and its cosine similarities are elementwise (counted here as products)."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from torchref.model import SeizureDetector

    config = load_config(ROOT / "configs" / "tiny.yaml")
    counts = flops.forward_flops(config)
    model_config = dataclasses.replace(config.model, ssm=dataclasses.replace(config.model.ssm, scan="sequential"))
    model = SeizureDetector(model_config, 0).eval()
    with torch.no_grad(), FlopCounterMode(display=False, depth=None) as counter:
        model(torch.zeros(1, model_config.n_chans, config.window_samples))
    by_module = {name.removeprefix("SeizureDetector."): sum(ops.values())
                 for name, ops in counter.get_flop_counts().items()}

    def under(prefix, leaf=""):
        return sum(n for name, n in by_module.items() if name.startswith(prefix + ".") and name.endswith(leaf))

    for stage, module in (("tcn", "tcn"), ("electrodes", "proj_to_electrodes"), ("gnn", "gnn"),
                          ("from_electrodes", "proj_from_electrodes"), ("logits", "head")):
        assert counts[stage] == by_module[module], stage
    for stage, stack, modules in (("node_mamba", "node_mamba", ("node_mamba",)),
                                  ("edge_weights", "edge_mamba", ("edge_lift", "edge_mamba", "edge_proj"))):
        mixers = [name for name in by_module if name.startswith(stack + ".layers.") and name.endswith((".fwd", ".bwd"))]
        # a mixer's own products beyond its submodules: the readout y = C·h, torchref's only matmul in the scan
        readout = sum(by_module[name] - under(name) for name in mixers)
        conv = sum(under(name, ".conv1d") for name in mixers)
        assert readout > 0 and conv > 0
        assert counts[stage + flops.RECURRENCE] == 2 * readout, stage  # x·Bᵀ is as large as C·h
        assert counts[stage] == sum(by_module[module] for module in modules) - readout - conv, stage
    n, d = model_config.n_chans, model_config.electrode_dim
    assert counts["edge_features"] == 2 * (config.window_samples // model_config.tcn.stride_down) * n * n * d
