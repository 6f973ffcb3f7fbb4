"""Parameter initialisers shared by the modules: the distributions torchref's modules draw from
(the same distributions, not the same numbers: each framework draws its own)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def uniform(bound: float):
    """U(±bound): torch's default init of nn.Linear / nn.Conv1d (bound = 1/√fan_in) and of
    torch_geometric's Linear, weight and bias."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def kaiming_uniform(gain: float):
    """U(±gain·√(6/fan_in)) for a (K, C_in, C_out) kernel, fan_in = K·C_in (torchref's init)."""

    def init(key, shape, dtype=jnp.float32):
        fan_in = math.prod(shape[:-1])
        bound = gain * math.sqrt(6.0 / fan_in)
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init
