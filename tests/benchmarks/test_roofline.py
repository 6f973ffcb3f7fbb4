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


def test_the_tiny_model_rows(tmp_path, capsys):
    out = tmp_path / "roofline.json"
    assert roofline.main(["--config", "configs/tiny.yaml", "--batch", "2", "--stages", "node_mamba,pe",
                          "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert list(rows) == ["node_mamba", "pe", "train step"]
    for row in rows.values():
        assert row["bytes"] > 0 and math.isfinite(row["byte_floor_ms"])
    # the step holds the node stream's forward and backward, and more
    assert rows["train step"]["bytes"] > rows["node_mamba"]["bytes"]
    assert rows["train step"]["flops"] > rows["node_mamba"]["flops"] > 0
    assert "| train step |" in capsys.readouterr().out
