"""--init-from compares the weights' model with the run's only where it builds parameters or
changes what they compute: a field that only a stage absent from the run's architecture reads
(common/stages.py) is not a difference, however far it is from the weights'."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ConfigError, load_config
from common.train.compat import check_init_config

TINY = Path(__file__).resolve().parents[3] / "configs" / "tiny.yaml"
V2 = ["model.architecture=v2", "model.v2_mamba.d_model=16"]  # v2_mamba.d_model = tcn.out_channels


def _differences(run: list[str], weights: list[str]) -> list[str]:
    """The fields check_init_config names, [] when it accepts the weights."""
    config, theirs = load_config(TINY, run), load_config(TINY, weights)
    try:
        check_init_config(config, theirs, "W")
    except ConfigError as err:
        return [line.strip().split(":")[0] for line in str(err).splitlines()[1:-1]]
    return []


def test_v2_mamba_is_not_compared_in_a_v3_model():
    # the defaults' v2_mamba (512 wide) against tiny.yaml's (16): unused by v3, one real difference
    assert _differences(["model.node_mamba.n_layers=1"],
                        ["model.v2_mamba.d_model=512", "model.v2_mamba.headdim=64"]) == ["model.node_mamba.n_layers"]


def test_a_v2_model_compares_v2_mamba_and_nothing_of_v3():
    v3_only = ["model.node_mamba.n_layers=3", "model.electrode_dim=4", "model.node_mamba.d_model=4",
               "model.graph.top_k=5", "model.graph.enabled=false"]
    assert _differences(V2, [*V2, *v3_only]) == []
    assert _differences(V2, [*V2, "model.v2_mamba.n_layers=2"]) == ["model.v2_mamba.n_layers"]


def test_the_graph_is_compared_only_when_the_run_has_it():
    no_graph = ["model.graph.enabled=false"]
    assert _differences(no_graph, [*no_graph, "model.graph.top_k=5", "model.graph.edge_lift=8"]) == []
    assert _differences(no_graph, ["model.graph.top_k=5"]) == ["model.graph.enabled"]
    assert _differences([], ["model.graph.top_k=5", "model.graph.edge_lift=8"]) == [
        "model.graph.edge_lift", "model.graph.top_k"]


def test_fields_every_architecture_reads_are_compared():
    assert _differences(V2, []) == ["model.architecture"]
    assert _differences(["model.architecture=tcn", "model.tcn.kernel_size=5"], ["model.architecture=tcn"]) == [
        "model.tcn.kernel_size"]
    assert _differences(["model.montage=bipolar", "data.montage=bipolar"], []) == ["model.montage"]
    # how the model runs may change
    assert _differences(["model.ssm.scan=sequential", "model.precision=bfloat16"], []) == []


def test_the_error_names_the_weights_and_both_values():
    with pytest.raises(ConfigError) as err:
        check_init_config(load_config(TINY), load_config(TINY, ["model.node_mamba.n_layers=1"]), "runs/t")
    assert str(err.value).splitlines()[:2] == ["--init-from runs/t: the config's model differs from the weights' model:",
                                               "  model.node_mamba.n_layers: weights 1, now 2"]


def test_fields_that_only_draw_the_first_weights_are_not_compared():
    """tcn.init_gain is read only to draw the initial weights, which --init-from replaces: an
    original checkpoint's config has no such field (it reads back with our default, 0.2) while a
    run may say 1.0. Every other TCN field is still compared."""
    assert _differences(["model.tcn.init_gain=1.0"], []) == []
    assert _differences(["model.tcn.init_gain=1.0", "model.tcn.kernel_size=5"], []) == ["model.tcn.kernel_size"]
