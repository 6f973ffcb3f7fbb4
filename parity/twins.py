"""NNX twins of torch modules, filled through parity/convert.py's table (no init compiles).

    torch_module, jax_module = make_twin(ttcn.TCNEncoder(...), lambda rngs: jtcn.TCNEncoder(..., rngs=rngs), "float64")
    pair = detector_pair("configs/tiny.yaml")  # .config, .torch_model, .jax_model

Used by the parity tests (parity/conftest.py) and the NaN localiser (parity/localize.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import torch
from flax import nnx

import torchref.model as tmodel
from common.config import load_config
from jaxbrr.model import SeizureDetector
from parity.convert import torch_to_jax

TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
                "float64": torch.float64}


def torch_dtype(dtype: str) -> torch.dtype:
    return TORCH_DTYPES[dtype]


def _materialize_rng_state(module: nnx.Module) -> None:
    """eval_shape leaves the Dropout layers' Rng keys and counts abstract; eval mode never reads
    them, but jit needs arrays. Params are not touched (torch_to_jax filled them, or raised)."""

    def concrete(leaf):
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            return leaf
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            assert leaf.shape == (), leaf
            return jax.random.key(0)
        return jnp.zeros(leaf.shape, leaf.dtype)

    nnx.update(module, jax.tree.map(concrete, nnx.state(module, nnx.Not(nnx.Param))))


def _build_abstract(build: Callable[[nnx.Rngs], nnx.Module]) -> nnx.Module:
    """build(rngs) under nnx.eval_shape: every Param abstract, no init compiles (a full-size NNX
    init costs ~8 s of XLA compiles on a 2-core CPU, a tiny one ~9 s with the static PE).

    The rngs come in as an argument, so everything drawn from them stays abstract, while
    ensure_compile_time_eval lets a construction-time constant computed with jnp on concrete
    numbers (SeizureDetector's static PE: jaxbrr/model.py calls graph.static_pe in __init__)
    evaluate instead of failing on a tracer."""

    def constructed(rngs):
        with jax.ensure_compile_time_eval():
            return build(rngs)

    return nnx.eval_shape(constructed, nnx.Rngs(0))


def make_twin(torch_module: torch.nn.Module, build: Callable[[nnx.Rngs], nnx.Module], dtype: str = "float32"):
    """(torch module in `dtype`, eval mode; its NNX twin with the same weights, eval mode).

    The torch module is copied (never changed in place); build(rngs) constructs the NNX module
    (abstractly; torch_to_jax then fills every Param or raises). float64 needs jax_enable_x64 on
    (the x64/dtype fixtures)."""
    source = copy.deepcopy(torch_module).to(torch_dtype(dtype)).eval()
    target = _build_abstract(build)
    torch_to_jax(source, target)
    _materialize_rng_state(target)
    target.eval()
    return source, target


def detector_pair(path: str, overrides=(), dtype: str = "float32", seed: int = 0) -> SimpleNamespace:
    """SimpleNamespace(config, torch_model, jax_model): one config's SeizureDetector in both
    frameworks, torch's seeded init copied into the NNX one, eval mode."""
    config = load_config(path, list(overrides))
    torch_model, jax_model = make_twin(
        tmodel.SeizureDetector(config.model, seed), lambda rngs: SeizureDetector(config.model, rngs=rngs), dtype
    )
    return SimpleNamespace(config=config, torch_model=torch_model, jax_model=jax_model)
