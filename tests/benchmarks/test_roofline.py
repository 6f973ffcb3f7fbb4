"""benchmarks/roofline.py: XLA's cost analysis read right, and the tiny model's rows.

XLA's cost model is arithmetic on shapes, not a measurement: the same on every CPU."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import roofline  # noqa: E402


def test_cost_reads_bytes_and_flops_of_known_programs():
    x = jax.ShapeDtypeStruct((1024,), jnp.float32)
    # one multiply: 4 KiB read, 4 KiB written, one flop per element
    assert roofline.cost(jax.jit(lambda x: x * 2.0).lower(x).compile()) == {"bytes": 8192.0, "flops": 1024.0}
    # a fused elementwise chain moves its input and output once
    assert roofline.cost(jax.jit(lambda x: jnp.sin(x) * 2.0 + 1).lower(x).compile())["bytes"] == 8192.0
    a, b = jax.ShapeDtypeStruct((64, 32), jnp.float32), jax.ShapeDtypeStruct((32, 16), jnp.float32)
    assert roofline.cost(jax.jit(jnp.matmul).lower(a, b).compile()) == {
        "bytes": 4.0 * (64 * 32 + 32 * 16 + 64 * 16), "flops": 2.0 * 64 * 32 * 16}


def test_floors_are_bytes_over_bandwidth_and_flops_over_peak():
    row = roofline.floors({"bytes": 4.8e9, "flops": 7.77e11}, bandwidth_tbs=4.8, peak_tflops=777)
    assert row["byte_floor_ms"] == pytest.approx(1.0) and row["flop_floor_ms"] == pytest.approx(1.0)
    assert row["bytes_per_flop"] == pytest.approx(4.8e9 / 7.77e11)


@pytest.fixture(scope="module")
def tiny_rows(tmp_path_factory):
    """The tiny model's rows, as main() prints and writes them (compiled once for the module)."""
    out = tmp_path_factory.mktemp("roofline") / "roofline.json"
    assert roofline.main(["--config", "configs/tiny.yaml", "--batch", "2", "--stages", "node_mamba,pe",
                          "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_the_tiny_model_rows(tiny_rows):
    rows = tiny_rows
    assert list(rows) == ["node_mamba", "pe", "train step"]
    for row in rows.values():
        assert row["bytes"] > 0 and math.isfinite(row["byte_floor_ms"])
    # the step holds the node stream's forward and backward, and more
    assert rows["train step"]["bytes"] > rows["node_mamba"]["bytes"]
    assert rows["train step"]["flops"] > rows["node_mamba"]["flops"] > 0


def test_scan_pallas_is_projected_without_a_gpu(tmp_path, tiny_rows, capsys):
    """On a CPU the Pallas kernels cannot be compiled: the step's XLA part is costed with them
    stood in for, and their traffic (ssd_kernel.hbm_bytes, every call of a step) is added."""
    from common.config import load_config
    from jaxbrr.ssd_kernel import hbm_bytes

    if jax.default_backend() != "cpu":
        pytest.skip("the projection is for machines without a GPU")
    out = tmp_path / "roofline.json"
    assert roofline.main(["--config", "configs/tiny.yaml", "--batch", "2", "--stages", "",
                          "--set", "model.ssm.scan=pallas", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    xla, kernels, projected = (rows[k] for k in ("train step, XLA part (scan kernels stood in for)",
                                                 "scan kernels (2 shapes, hbm_bytes)", "train step, projected"))
    config = load_config("configs/tiny.yaml")
    m, batch = config.model, 2
    length = config.window_samples // m.tcn.stride_down
    expected = 0
    for sequences, mamba in ((batch * m.n_chans, m.node_mamba), (batch * m.n_edges, m.graph.edge_mamba)):
        padded = -(-length // m.ssm.chunk_size) * m.ssm.chunk_size
        u_shape = (sequences, padded, mamba.expand * mamba.d_model // mamba.headdim, mamba.headdim)
        traffic = hbm_bytes(u_shape, 1, mamba.d_state, m.ssm.chunk_size)
        expected += 2 * mamba.n_layers * (traffic["forward"] + traffic["backward"])  # both directions
    assert kernels["bytes"] == expected
    assert projected["bytes"] == xla["bytes"] + kernels["bytes"]
    assert xla["bytes"] < tiny_rows["train step"]["bytes"]  # the stand-in took the XLA scan's traffic out
    assert "| train step, projected |" in capsys.readouterr().out
