"""torchref.SeizureDetector: shapes, taps, switches, parameter counts, guards."""

import pytest
import torch

from common.config import load_config
from torchref.model import SeizureDetector, count_parameters

TINY = "configs/tiny.yaml"
FULL = "configs/tusz.yaml"

V3_TAPS = ["input", "tcn", "electrodes", "node_mamba", "edge_features", "edge_weights",
           "adjacency", "pe", "gnn", "from_electrodes", "logits"]


def _model(path, *overrides, seed=0):
    config = load_config(path, list(overrides))
    return SeizureDetector(config.model, seed).eval(), config


@pytest.mark.parametrize(
    "overrides, taps",
    [
        ([], V3_TAPS),
        (["model.graph.enabled=false"], ["input", "tcn", "electrodes", "node_mamba", "from_electrodes", "logits"]),
        (["model.graph.use_dynamic_pe=false"], V3_TAPS),
        (["model.stability.guards=original"], V3_TAPS),
        (["model.architecture=v2"], ["input", "tcn", "mamba", "logits"]),
        (["model.architecture=tcn"], ["input", "tcn", "logits"]),
    ],
    ids=["v3", "graph-off", "static-pe", "guards", "v2", "tcn"],
)
def test_tiny_shapes_and_taps(overrides, taps):
    model, config = _model(TINY, *overrides)
    t, n = config.window_samples, config.model.n_chans
    length = t // config.model.tcn.stride_down
    with torch.no_grad():
        logits, out = model(torch.randn(2, n, t, generator=torch.Generator().manual_seed(1)))
    assert logits.shape == (2, t) and list(out) == taps
    assert out["tcn"].shape == (2, config.model.tcn.out_channels, length)
    if "adjacency" in out:
        k = config.model.graph.k_eigenvectors
        assert out["edge_features"].shape == (2, n * (n - 1) // 2, length)
        assert out["adjacency"].shape == (2, length, n, n) and out["pe"].shape == (2, length, n, k)
    assert torch.isfinite(logits).all()
    # logits are constant over each stride_down block (nearest upsampling)
    blocks = logits.reshape(2, length, config.model.tcn.stride_down)
    assert torch.equal(blocks, blocks[..., :1].expand_as(blocks))


def _mamba2_count(d_model, d_state, d_conv, expand, headdim):
    d_inner, heads = expand * d_model, expand * d_model // headdim
    conv_dim = d_inner + 2 * d_state
    return (d_model * (2 * d_inner + 2 * d_state + heads) + conv_dim * (d_conv + 1)
            + 3 * heads + d_inner + d_inner * d_model)


def _bimamba_count(c):
    per_layer = 2 * _mamba2_count(c.d_model, c.d_state, c.d_conv, c.expand, c.headdim)
    per_layer += 2 * c.d_model * c.d_model + c.d_model + 2 * c.d_model  # proj + LayerNorm
    return c.n_layers * per_layer


def test_full_size_live_parameter_count():
    """Computed from the architecture, component by component (original_spec.md §2 lists the
    original's components; it also carries a dead 22.4 M stack and Conv1d fallbacks we never build)."""
    config = load_config(FULL).model
    model = SeizureDetector(config, 0)
    conv = lambda i, o, k=1, bias=True: i * o * k + (o if bias else 0)  # noqa: E731
    widths = (19, *config.tcn.channels)
    tcn = sum(conv(a, b, 7) + b for a, b in zip(widths, widths[1:], strict=False))  # + weight_g
    tcn += 2 * conv(512, 512) + conv(512, 512, 16)
    electrodes = conv(512, 19 * 64) + conv(19 * 64, 512)
    edge = conv(1, 16, bias=False) + conv(16, 1)
    gnn = conv(80, 64) + 128 + conv(64, 64) + 128
    head = conv(512, 19) + conv(19, 1)
    expected = (tcn + electrodes + _bimamba_count(config.node_mamba)
                + _bimamba_count(config.graph.edge_mamba) + edge + gnn + head)
    assert tcn == 7_370_304  # the original's TCN figure (original_spec.md §2)
    assert count_parameters(model) == expected == 9_040_392
    assert count_parameters(model.tcn) == tcn
    assert count_parameters(model.node_mamba) == _bimamba_count(config.node_mamba)


def test_full_size_forward_shapes():
    model, _ = _model(FULL)
    with torch.no_grad():
        logits, taps = model(torch.randn(1, 19, 15360, generator=torch.Generator().manual_seed(0)))
    assert logits.shape == (1, 15360) and torch.isfinite(logits).all()
    assert taps["tcn"].shape == (1, 512, 960) and taps["electrodes"].shape == (1, 19, 960, 64)
    assert taps["edge_features"].shape == (1, 171, 960) and taps["pe"].shape == (1, 960, 19, 16)


def test_seeded_init_is_reproducible_and_seed_dependent():
    a, _ = _model(TINY, seed=3)
    b, _ = _model(TINY, seed=3)
    c, _ = _model(TINY, seed=4)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.tcn.layers[0].weight_v, c.tcn.layers[0].weight_v)


def test_no_clamp_without_guards_and_clamps_with_them():
    x = torch.randn(1, 19, 1024, generator=torch.Generator().manual_seed(0))
    spike = x.clone()
    spike[0, 3, 500] = 1e3  # a >100σ artifact
    plain, _ = _model(TINY)
    guarded, _ = _model(TINY, "model.stability.guards=original")
    with torch.no_grad():
        # without guards the model sees the artifact as it is ...
        assert not torch.allclose(plain(spike)[0], plain(spike.clamp(-10, 10))[0])
        # ... with the original's guards the input is clamped to ±10 first
        assert torch.equal(guarded(spike)[0], guarded(spike.clamp(-10, 10))[0])
        nan = x.clone()
        nan[0, 0, 10] = float("nan")
        assert torch.isnan(plain(nan)[0]).any()          # a NaN is never hidden ...
        assert torch.isfinite(guarded(nan)[0]).all()     # ... unless the config names the guard


def test_static_pe_is_ref19_only():
    with pytest.raises(ValueError, match="ref19 only"):
        config = load_config(TINY, ["data.montage=bipolar", "model.montage=bipolar",
                                    "model.graph.use_dynamic_pe=false"])
        SeizureDetector(config.model, 0)


@pytest.mark.parametrize(("montage", "nodes"), [("bipolar", 23), ("bipolar18", 18)])
def test_bipolar_montage_sizes_the_graph(montage, nodes):
    model, config = _model(TINY, f"data.montage={montage}", f"model.montage={montage}")
    with torch.no_grad():
        _, taps = model(torch.randn(1, nodes, config.window_samples))
    assert taps["edge_features"].shape[1] == nodes * (nodes - 1) // 2 and taps["adjacency"].shape[-1] == nodes


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_model_cast_whole_to_half_precision_runs_in_it(dtype):
    """The localiser runs the model cast whole to bfloat16/float16 (--dtype): the edge weights'
    float32 softplus returns in the parameters' dtype, so that the GNN's half weights meet half
    inputs (they met float32 ones: a dtype error inside the GNN)."""
    model = SeizureDetector(load_config("configs/tiny.yaml").model, 0).eval().to(dtype)
    with torch.no_grad():
        logits, taps = model(torch.randn(2, 19, 1024, generator=torch.Generator().manual_seed(0)).to(dtype))
    assert logits.dtype == dtype and taps["edge_weights"].dtype == dtype and taps["gnn"].dtype == dtype
