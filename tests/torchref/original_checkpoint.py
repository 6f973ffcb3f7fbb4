"""brain-go-brr v2 (V3) checkpoints built for tests: a torchref model's state dict renamed through
common/original.py's table (its inverse, original_key) plus what the original carries on top:
the unused 512-wide `mamba.*` stack, the Conv1d fallback of every BiMamba2 direction, the
bypassed `gnn.edge_transform` and the `gnn.last_valid_pe` buffer. Their shapes are derived from
mamba_ssm's Mamba2 formulas; at full size they add up to the original's documented 31,475,722
parameters (tests/torchref/test_original.py checks it)."""

import re

import torch

from common.config import MambaConfig, ModelConfig
from common.original import original_key
from torchref.model import SeizureDetector

# The original's hard-coded 512-wide stack (detector.py: BiMamba2(d_model=512, headdim=64, ...)).
FULL_STACK = MambaConfig(n_layers=6, d_model=512, d_state=16, d_conv=4, expand=2, headdim=64)
ORIGINAL_PARAMETERS = 31_475_722  # original_spec.md §2 (CHANGELOG/README)


def _mamba2_shapes(cfg: MambaConfig) -> dict[str, tuple[int, ...]]:
    """mamba_ssm Mamba2 (ngroups 1) parameter shapes."""
    d_inner = cfg.expand * cfg.d_model
    heads = d_inner // cfg.headdim
    conv_dim = d_inner + 2 * cfg.d_state
    return {
        "in_proj.weight": (2 * d_inner + 2 * cfg.d_state + heads, cfg.d_model),
        "conv1d.weight": (conv_dim, 1, cfg.d_conv),
        "conv1d.bias": (conv_dim,),
        "dt_bias": (heads,),
        "A_log": (heads,),
        "D": (heads,),
        "norm.weight": (d_inner,),
        "out_proj.weight": (cfg.d_model, d_inner),
    }


def _fallbacks(prefix: str, cfg: MambaConfig) -> dict[str, tuple[int, ...]]:
    """Depthwise Conv1d(d, d, k=d_conv, groups=d) of both directions of every layer."""
    shapes = {}
    for i in range(cfg.n_layers):
        for direction in ("forward", "backward"):
            shapes[f"{prefix}.layers.{i}.{direction}_mamba_fallback.weight"] = (cfg.d_model, 1, cfg.d_conv)
            shapes[f"{prefix}.layers.{i}.{direction}_mamba_fallback.bias"] = (cfg.d_model,)
    return shapes


def _original_extras(config: ModelConfig, stack: MambaConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of every original parameter that torchref does not have."""
    shapes = {}
    d = stack.d_model
    for i in range(stack.n_layers):
        for direction in ("forward", "backward"):
            for name, shape in _mamba2_shapes(stack).items():
                shapes[f"mamba.layers.{i}.{direction}_mamba_real.{name}"] = shape
        shapes[f"mamba.layers.{i}.output_proj.weight"] = (d, 2 * d)
        shapes[f"mamba.layers.{i}.output_proj.bias"] = (d,)
        shapes[f"mamba.layers.{i}.layer_norm.weight"] = (d,)
        shapes[f"mamba.layers.{i}.layer_norm.bias"] = (d,)
    shapes.update(_fallbacks("mamba", stack))
    shapes.update(_fallbacks("node_mamba", config.node_mamba))
    shapes.update(_fallbacks("edge_mamba", config.graph.edge_mamba))
    shapes["gnn.edge_transform.weight"] = (1, 1)
    shapes["gnn.edge_transform.bias"] = (1,)
    return shapes


def _to_original(model: SeizureDetector) -> dict[str, torch.Tensor]:
    return {original_key(key): value.clone() for key, value in model.state_dict().items()}


def _as_if_trained(model: SeizureDetector) -> None:
    """Move the Mamba2 parameters that mamba_ssm initialises to exactly 1 (D, the gated norm's
    weight) off it, in place, as any training step does: the loaders refuse a checkpoint whose
    Mamba2 weights are all at that init (trained on the original's Conv1d fallback,
    common/original.py _untrained_mamba). The model and its checkpoint stay equal."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if re.search(r"\.(fwd|bwd)\.(D|norm\.weight)$", name):
                parameter.mul_(0.75 + 0.5 * torch.rand(parameter.shape, generator=torch.Generator().manual_seed(0)))


def _original_state_dict(model, config, stack, fill=torch.randn, steps=64):
    _as_if_trained(model)
    state = _to_original(model)
    state.update({key: fill(shape) for key, shape in _original_extras(config, stack).items()})
    state["gnn.last_valid_pe"] = torch.randn(2, steps, config.n_chans, config.graph.k_eigenvectors)
    return state


# The original's own config (brain-go-brr's schema, original_spec.md §3.11) for the full-size V3,
# as its save_checkpoint stores it (`config.model_dump()`; the model section here).
FULL_ORIGINAL_MODEL_CONFIG = {
    "name": "seizure_detector", "architecture": "v3",
    "tcn": {"num_layers": 8, "kernel_size": 7, "dropout": 0.15, "causal": False, "stride_down": 16,
            "use_cuda_optimizations": True},
    "mamba": {"n_layers": 6, "d_model": 512, "d_state": 16, "conv_kernel": 4, "dropout": 0.1},
    "graph": {"enabled": True, "edge_features": "cosine", "edge_top_k": 3, "edge_threshold": 1e-4,
              "edge_mamba_layers": 2, "edge_mamba_d_state": 8, "edge_mamba_d_model": 16, "n_layers": 2,
              "dropout": 0.1, "use_residual": True, "alpha": 0.05, "k_eigenvectors": 16,
              "use_dynamic_pe": True, "semi_dynamic_interval": 5, "pe_sign_consistency": True},
}


def original_checkpoint(model: SeizureDetector, config: ModelConfig, with_config: bool) -> dict:
    """The dict brain-go-brr's save_checkpoint writes (train/loop.py, original_spec.md §3.8), of
    `model` after _as_if_trained (in place: save its other kinds after this)."""
    saved = {"epoch": 6, "model_state_dict": _original_state_dict(model, config, FULL_STACK if with_config else config.v2_mamba),
             "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
             "best_metric": 0.0, "timestamp": "2025-10-01T12:00:00"}
    if with_config:
        saved["config"] = {"model": FULL_ORIGINAL_MODEL_CONFIG}
    return saved
