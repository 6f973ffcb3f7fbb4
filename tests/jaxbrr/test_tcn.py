"""jaxbrr/tcn.py: torchref's parameter count, the receptive field of the dilated stack, weight
norm and the head's nearest upsampling (values against torchref: parity/test_modules.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from common.config import load_config
from jaxbrr.tcn import ProjectionHead, TCNEncoder, WeightNormConv1d
from parity.tolerances import unit_roundoff

FULL = load_config("configs/tusz.yaml").model


def test_full_size_parameter_count_is_the_originals():
    encoder = nnx.eval_shape(lambda: TCNEncoder(19, FULL.tcn, rngs=nnx.Rngs(0)))
    assert sum(x.size for x in jax.tree.leaves(nnx.state(encoder, nnx.Param))) == 7_370_304


def test_receptive_field_is_1_531_samples_and_symmetric(x64):
    cfg = load_config("configs/tiny.yaml", ["model.tcn.channels=[4,4,4,4,4,4,4,4]", "model.tcn.stride_down=1",
                                            "model.tcn.out_channels=4", "model.tcn.dropout=0"]).model.tcn
    encoder = TCNEncoder(2, cfg, rngs=nnx.Rngs(0))
    for layer in encoder.layers:  # biases of 100 keep every ReLU open, so no path is cut
        layer.bias[...] = jnp.full_like(layer.bias[...], 100.0)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 4001, 2)), jnp.float64)  # channels-last
    grad = np.asarray(jax.grad(lambda x: encoder(x)[0, 2000].sum())(x))[0]  # (T, C)
    reached = np.flatnonzero(np.abs(grad).sum(1))
    half = (cfg.kernel_size - 1) // 2 * (2 ** len(cfg.channels) - 1)
    assert (reached.min(), reached.max()) == (2000 - half, 2000 + half)


# g·v/‖v‖ in float32 against v: two norms of K·C_in = 21 products (γ_21/2 + u each), a division and
# a product: at most 2·(21 + 3)·u = 2.9e-6
NORM_RTOL = 2 * (7 * 3 + 3) * unit_roundoff("float32")


def test_weight_norm_is_g_times_v_over_its_norm_and_starts_as_v():
    conv = WeightNormConv1d(3, 5, 7, 2, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(np.asarray(conv.weight()), np.asarray(conv.weight_v[...]), rtol=NORM_RTOL)
    conv.weight_g[...] = 3.0 * conv.weight_g[...]
    norms = np.sqrt((np.asarray(conv.weight()) ** 2).sum(axis=(0, 1)))
    np.testing.assert_allclose(norms, 3.0 * np.sqrt((np.asarray(conv.weight_v[...]) ** 2).sum(axis=(0, 1))), rtol=NORM_RTOL)


def test_head_holds_each_step_for_stride_samples():
    head = ProjectionHead(8, 3, upsample=16, guards=False, rngs=nnx.Rngs(0))
    logits = np.asarray(head(jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 8)), jnp.float32)))
    assert logits.shape == (2, 80)
    blocks = logits.reshape(2, 5, 16)
    np.testing.assert_array_equal(blocks, np.broadcast_to(blocks[..., :1], blocks.shape))


def test_guards_original_map_inf_to_50_as_the_originals_detector():
    """As torchref's test: detector.py's nan_to_num(nan=0, posinf=50, neginf=-50) before the
    detector (then clip ±50) and on the logits (then clip ±100)."""
    head = ProjectionHead(1, 1, upsample=1, guards=True, rngs=nnx.Rngs(0))
    head.proj.kernel[...] = 1.0  # x = h
    head.detect.kernel[...] = jnp.inf  # logits ±inf from ±50, NaN from 0
    h = jnp.asarray([jnp.inf, -jnp.inf, jnp.nan, 3.0, 1e30], jnp.float32)[None, :, None]  # (B, L, D)
    assert np.asarray(head(h)).tolist() == [[50.0, -50.0, 0.0, 50.0, 50.0]]
    head.detect.kernel[...] = 1.0
    assert np.asarray(head(h)).tolist() == [[50.0, -50.0, 0.0, 3.0, 50.0]]  # the detector's input, mapped and clamped
