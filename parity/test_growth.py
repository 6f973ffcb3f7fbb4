"""parity/growth.py: the weights' RMS over their scale at init, which tells a diverged run's
weights (every tensor moved by about lr) from a healthy run's, and the localiser's use of it."""

from __future__ import annotations

import numpy as np
import pytest

import torchref.model as tmodel
from common.config import load_config
from parity import growth as growth_lib
from parity.scenarios import TINY


@pytest.fixture(scope="module")
def config():
    return load_config(TINY)


def _init(config, seed: int) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy() for k, v in tmodel.SeizureDetector(config.model, seed).state_dict().items()}


def test_the_init_itself_is_1x_and_a_scaled_init_is_its_scale(config):
    """The reference is a seed-0 init, so seed 0's own weights are exactly 1x; every tensor × s is s."""
    assert set(growth_lib.weight_growth(config, _init(config, 0)).ratio.values()) == {1.0}
    for scale, diverged in ((8.0, False), (12.0, True)):  # on either side of DIVERGED_GROWTH = 10
        grown = growth_lib.weight_growth(config, {k: v * scale for k, v in _init(config, 0).items()})
        assert grown.median == pytest.approx(scale, rel=1e-12)
        assert grown.diverged is diverged


def test_the_scale_not_the_values_is_compared(config):
    """Another seed's init (other values, the same distributions) is about 1x: the run's own seed is
    not needed. Its median is a property of torch's seeded draws, not of rounding."""
    grown = growth_lib.weight_growth(config, _init(config, 7))
    assert 0.8 < grown.median < 1.25 and not grown.diverged


def test_tensors_without_a_random_init_have_no_scale_to_grow_from(config):
    """Zero-initialised biases and constant gains (LayerNorm, RMSNorm: ones) are left out; the
    randomly initialised ones are in."""
    grown = growth_lib.weight_growth(config, _init(config, 0))
    fresh = dict(tmodel.SeizureDetector(config.model, 0).named_parameters())
    constant = {name for name, p in fresh.items() if bool((p == p.flatten()[0]).all())}
    assert {"head.detect.bias", "node_mamba.layers.0.norm.weight"} <= constant
    assert set(grown.ratio) == set(fresh) - constant
    assert "head.detect.weight" in grown.ratio


def test_the_weights_line_names_the_largest_growth(config):
    weights = _init(config, 0)
    weights["head.detect.weight"] = weights["head.detect.weight"] * 50
    grown = growth_lib.weight_growth(config, weights)
    assert grown.largest[0] == "head.detect.weight" and grown.ratio["head.detect.weight"] == pytest.approx(50, rel=1e-12)
    assert grown.line().startswith("weights: RMS 1x their scale at init (median over ")
    assert "largest: head.detect.weight 50x" in grown.line()
