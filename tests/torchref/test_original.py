"""torchref.original: loading a brain-go-brr v2 V3 checkpoint.

Original-style state dicts are built here by renaming a torchref model's state dict through the
table's inverse and adding what the original carries on top: the unused 512-wide `mamba.*` stack,
the Conv1d fallback of every BiMamba2 direction, the bypassed `gnn.edge_transform` and the
`gnn.last_valid_pe` buffer. Their shapes are derived here from mamba_ssm's Mamba2 formulas, and
at full size they must add up to the original's documented 31,475,722 parameters.
"""

import dataclasses
import re

import pytest
import torch

from common.config import ModelConfig, load_config
from common.original import CONFIG_FIX
from tests.torchref.original_checkpoint import (
    FULL_STACK,
    ORIGINAL_PARAMETERS,
    _original_extras,
    _original_state_dict,
)
from torchref.model import SeizureDetector
from torchref.original import from_original_state_dict, load_original_checkpoint


@pytest.fixture(scope="module")
def tiny():
    config = load_config("configs/tiny.yaml").model
    torch.manual_seed(0)
    model = SeizureDetector(config, generator=0).eval()
    return config, model


def test_round_trip_reproduces_every_tensor_and_the_output(tiny):
    config, model = tiny
    state = _original_state_dict(model, config, config.v2_mamba)

    loaded, report = from_original_state_dict(state, config)

    ours = model.state_dict()
    restored = loaded.state_dict()
    assert restored.keys() == ours.keys()
    for key in ours:
        assert torch.equal(restored[key], ours[key]), key
    assert set(report.mapped.values()) == set(ours)
    extras = set(_original_extras(config, config.v2_mamba)) | {"gnn.last_valid_pe"}
    assert set(report.ignored) == extras
    assert "bypass_edge_transform" in report.ignored["gnn.edge_transform.weight"]

    x = torch.randn(2, config.n_chans, 1024, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, _ = model(x)
        got, _ = loaded.eval()(x)
    print("max |difference| of logits:", (got - expected).abs().max().item())
    assert torch.equal(got, expected)


def test_full_size_names_shapes_and_parameter_count():
    config = ModelConfig()
    model = SeizureDetector(config, generator=0)
    state = _original_state_dict(model, config, FULL_STACK, fill=torch.empty, steps=4)

    # Names and shapes as they stand in the original's files (see common/original.py).
    expected = {
        "tcn_encoder.tcn.network.0.weight_v": (64, 19, 7),
        "tcn_encoder.tcn.network.21.weight_g": (512, 1, 1),
        "tcn_encoder.tcn.projection.weight": (512, 512, 1),
        "tcn_encoder.downsample.weight": (512, 512, 16),
        "proj_to_electrodes.weight": (19 * 64, 512, 1),
        "node_mamba.layers.5.backward_mamba_real.in_proj.weight": (304, 64),
        "node_mamba.layers.0.output_proj.weight": (64, 128),
        "edge_in_proj.weight": (16, 1, 1),
        "edge_mamba.layers.1.forward_mamba_real.in_proj.weight": (88, 16),
        "edge_out_proj.bias": (1,),
        "gnn.gnn_layers.0.lin.weight": (64, 80),
        "gnn.layer_norms.1.bias": (64,),
        "proj_head.proj.weight": (19, 512, 1),
        "detection_head.weight": (1, 19, 1),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key

    parameters = sum(t.numel() for key, t in state.items() if key != "gnn.last_valid_pe")
    assert parameters == ORIGINAL_PARAMETERS

    _, report = from_original_state_dict(state, config)
    rows = {  # written out by hand, independent of common.original.TABLE
        "tcn_encoder.tcn.network.21.weight_g": "tcn.layers.7.weight_g",
        "tcn_encoder.tcn.network.3.bias": "tcn.layers.1.bias",
        "tcn_encoder.tcn.projection.bias": "tcn.proj.bias",
        "tcn_encoder.channel_proj.weight": "tcn.channel_proj.weight",
        "node_mamba.layers.5.forward_mamba_real.A_log": "node_mamba.layers.5.fwd.A_log",
        "node_mamba.layers.5.backward_mamba_real.in_proj.weight": "node_mamba.layers.5.bwd.in_proj.weight",
        "node_mamba.layers.2.output_proj.bias": "node_mamba.layers.2.proj.bias",
        "node_mamba.layers.2.layer_norm.weight": "node_mamba.layers.2.norm.weight",
        "edge_mamba.layers.1.backward_mamba_real.norm.weight": "edge_mamba.layers.1.bwd.norm.weight",
        "edge_in_proj.weight": "edge_lift.weight",
        "edge_out_proj.weight": "edge_proj.weight",
        "gnn.gnn_layers.1.lin.bias": "gnn.layers.1.lin.bias",
        "gnn.layer_norms.0.weight": "gnn.norms.0.weight",
        "proj_head.proj.weight": "head.proj.weight",
        "detection_head.bias": "head.detect.bias",
    }
    for original, ours in rows.items():
        assert report.mapped[original] == ours
    assert sum(key.startswith("mamba.") for key in report.ignored) == 6 * (2 * 8 + 4 + 4)


def test_unknown_key_raises_naming_it(tiny):
    config, model = tiny
    state = _original_state_dict(model, config, config.v2_mamba)
    state["foo.weight"] = torch.zeros(3)
    state["node_mamba.layers.0.layerscale.gamma"] = torch.zeros(8)  # a later version's module
    with pytest.raises(ValueError, match="no torchref counterpart") as err:
        from_original_state_dict(state, config)
    assert "foo.weight (3,)" in str(err.value)
    assert "node_mamba.layers.0.layerscale.gamma" in str(err.value)


def test_mamba2_weights_never_trained_are_refused(tiny):
    """The original runs a Conv1d in place of Mamba2 on CPU tensors (original_spec.md §2), and
    AdamW leaves its ungraded Mamba2 parameters as they were: such a checkpoint loaded an untrained
    SSM in silence. Its D and norm weights all at their init (exactly 1) give it away."""
    config, model = tiny
    state = _original_state_dict(model, config, config.v2_mamba)
    at_init = [k for k in state if re.match(r"(node|edge)_mamba\..+_mamba_real\.(D|norm\.weight)$", k)]
    assert len(at_init) == 4 * (config.node_mamba.n_layers + config.graph.edge_mamba.n_layers)
    from_original_state_dict(state, config)  # trained (tests/torchref/original_checkpoint.py moves them off 1)
    for key in at_init:
        state[key] = torch.ones_like(state[key])
    with pytest.raises(ValueError, match=rf"its Mamba2 weights were never trained: D and the gated norm's weight are "
                                         rf"exactly 1, their initial value, in all {len(at_init)} of those tensors\. "
                                         r"The original runs a depthwise Conv1d in place of Mamba2 on CPU tensors"):
        from_original_state_dict(state, config)
    state[at_init[0]] = state[at_init[0]] * 0.5  # one direction trained: not the fallback's signature
    from_original_state_dict(state, config)


def test_missing_key_raises_naming_both_names(tiny):
    config, model = tiny
    state = _original_state_dict(model, config, config.v2_mamba)
    del state["node_mamba.layers.1.backward_mamba_real.D"]
    with pytest.raises(ValueError, match="not filled") as err:
        from_original_state_dict(state, config)
    assert "node_mamba.layers.1.bwd.D <- node_mamba.layers.1.backward_mamba_real.D" in str(err.value)


def test_fallback_only_checkpoint_is_refused(tiny):
    config, model = tiny
    state = _original_state_dict(model, config, config.v2_mamba)
    state = {key: value for key, value in state.items() if "_mamba_real." not in key}
    with pytest.raises(ValueError, match="built without mamba_ssm"):
        from_original_state_dict(state, config)


def test_shape_mismatch_raises_naming_keys_and_shapes(tiny):
    config, model = tiny
    state = _original_state_dict(model, config, config.v2_mamba)
    state["gnn.gnn_layers.0.lin.weight"] = torch.zeros(8, 13)
    with pytest.raises(ValueError, match="shape mismatch") as err:
        from_original_state_dict(state, config)
    assert re.search(
        r"gnn\.gnn_layers\.0\.lin\.weight \(8, 13\) -> gnn\.layers\.0\.lin\.weight expects \(8, 12\)",
        str(err.value),
    )
    # the config's model is not the weights' model: the error ends with the fix
    assert str(err.value).splitlines()[-1] == CONFIG_FIX


def test_static_pe_and_other_architectures_are_refused(tiny):
    config, model = tiny
    state = _original_state_dict(model, config, config.v2_mamba)
    state["gnn.static_pe"] = torch.zeros(19, 4)
    with pytest.raises(ValueError, match="gnn.static_pe: static PE"):
        from_original_state_dict(state, config)
    v2 = load_config("configs/tiny.yaml", ["model.architecture=v2"]).model
    with pytest.raises(ValueError, match="architecture: v3"):
        from_original_state_dict(state, v2)


def test_pt_file_round_trip(tiny, tmp_path):
    config, model = tiny
    state = _original_state_dict(model, config, config.v2_mamba)
    checkpoint = {
        "epoch": 3,
        "model_state_dict": state,
        "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 3e-4}]},
        "best_metric": 0.5,
        "timestamp": "2025-09-20T12:00:00",
    }
    torch.save(checkpoint, tmp_path / "last.pt")
    torch.save(state, tmp_path / "bare.pt")
    for name in ("last.pt", "bare.pt"):
        loaded, report = load_original_checkpoint(tmp_path / name, config)
        assert report.source == str(tmp_path / name)
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(ValueError, match="not found"):
        load_original_checkpoint(tmp_path / "missing.pt", config)


def test_checkpoints_in_the_wrappers_training_scripts_put_around_the_model(tiny, tmp_path):
    """DataParallel (`module.`), torch.compile (`_orig_mod.`), both, a Lightning checkpoint whose
    module holds the model as `model` beside a loss buffer, weight_norm as a parametrization
    (torch >= 2.1), a `.pth` or `.ckpt` name, and the config's Path objects: each loads the same
    weights, and says what it unwrapped."""
    import pathlib

    from common.checkpoints import read_weights
    from common.original import original_state

    config, model = tiny
    state = _original_state_dict(model, config, config.v2_mamba)
    parametrized = {re.sub(r"\.weight_g$", ".parametrizations.weight.original0",
                           re.sub(r"\.weight_v$", ".parametrizations.weight.original1", k)): v for k, v in state.items()}
    assert parametrized.keys() != state.keys()
    saved = {
        "dp.pt": {"model_state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3,
                  "config": {"data": {"data_dir": pathlib.PosixPath("/data/tusz")}}},
        "compiled.pth": {f"_orig_mod.{k}": v for k, v in state.items()},
        "both.pt": {f"module._orig_mod.{k}": v for k, v in state.items()},
        "lightning.ckpt": {"state_dict": {**{f"model.{k}": v for k, v in state.items()},
                                          "loss_fn.pos_weight": torch.ones(1)},
                           "epoch": 3, "global_step": 700, "pytorch-lightning_version": "2.4.0"},
        "parametrized.pt": parametrized,
    }
    for name, checkpoint in saved.items():
        torch.save(checkpoint, tmp_path / name)
        loaded, _ = load_original_checkpoint(tmp_path / name, config)
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), (name, key)
    notes = read_weights(tmp_path / "lightning.ckpt", "configs/tiny.yaml",
                         lambda m: {k: tuple(v.shape) for k, v in SeizureDetector(m).state_dict().items()}).notes
    assert notes[0] == ("keys read without the prefix 'model.' a wrapper put before them (DataParallel's `module.`, "
                        "torch.compile's `_orig_mod.`, a Lightning module's attribute); 1 keys outside it left out: "
                        "loss_fn.pos_weight")
    bare, _, held = original_state(saved["both.pt"])
    assert bare.keys() == state.keys() and held == {k: f"module._orig_mod.{k}" for k in state}  # as the file holds them
    assert original_state(parametrized)[1] == [
        f"{sum(k.endswith(('.weight_g', '.weight_v')) for k in state)} weight_norm parametrization tensors (`parametrizations.weight.original0/1`, "
        "torch >= 2.1) read as weight_g / weight_v"]
    with pytest.raises(ValueError, match=r"under 2 prefixes \('ema\.', 'model\.'\): two models in one file"):
        original_state({"model.tcn_encoder.x": 1, "ema.tcn_encoder.x": 1})
    assert original_state({"tcn.layers.0.weight_g": 1}) is None  # torchref's own names: no original
    with pytest.raises(ValueError, match="its model_state_dict is a NoneType, not a state dict"):
        original_state({"model_state_dict": None, "epoch": 3})
    with pytest.raises(ValueError, match=r"holds a key that is no name \(0\)"):
        original_state({"model_state_dict": {0: 1, "tcn_encoder.x": 1}})


def test_a_pe_gradient_other_than_the_originals_is_noted(tiny):
    """Weights without their config take the config given (configs/ say `safe`): the model then
    computes another gradient than the original's, and the report says which and how to undo it."""
    config, model = tiny
    state = _original_state_dict(model, config, config.v2_mamba)
    _, report = from_original_state_dict(state, config)
    assert config.stability.pe_gradient == "safe"
    assert ("model.stability.pe_gradient = 'safe': the original backpropagated through eigh unguarded, so a "
            "gradient it made non-finite (degenerate eigenvalues) is finite here; --set "
            "model.stability.pe_gradient=full computes it as the original did") in report.notes
    full = dataclasses.replace(config, stability=dataclasses.replace(config.stability, pe_gradient="full"))
    _, report = from_original_state_dict(state, full)
    assert not any("pe_gradient" in note for note in report.notes)
