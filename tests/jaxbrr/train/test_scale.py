"""Scale-out pieces of training (issue 9): the mesh, the host-partitioned sampler, the prefetch
thread, the distributed config.

- 4 forced CPU devices (a subprocess: XLA_FLAGS must be set before jax starts): 4 steps of the
  tiny model data parallel over 4 devices (shard_map) and with fsdp (data 2 × fsdp 2, parameters
  and Adam moments split over `fsdp`) follow the 1-device steps on the same global batches within
  the parity table's trajectory tolerance. The dynamic PE with model.graph.eigh_calls=looped (the
  batched LAPACK eigh deadlocks over forced CPU devices; jaxbrr.graph.per_matrix). Dropout off, so
  that the three runs compute the same function (under shard_map every device draws its own masks);
  with dropout on, four devices given the same two windows draw different masks (their mean loss is
  not the 1-device loss); tests/jaxbrr/train/test_loop.py runs the whole loop on 2 devices with
  dropout on, and as 2 processes.
- mesh_shape rejects data × fsdp ≠ devices and a batch that does not split, naming the fields.
- host_rows: 2 simulated hosts of every batch of an epoch are disjoint and together hold each
  window exactly once; the global order depends on (seed, epoch) only.
- Prefetcher yields load(item) in order, raises the loader's exception at its item, and stops
  its thread when closed early.
- initialize_arguments: config fields win over JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
  JAX_PROCESS_ID; nothing is called unless train.distributed.initialize is set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from common.config import ConfigError, DistributedConfig, MeshConfig, load_config
from common.data.prefetch import Prefetcher
from common.data.sampler import balanced_rows, batches, host_rows
from jaxbrr.train.distributed import initialize_arguments
from jaxbrr.train.mesh import fsdp_spec, mesh_shape
from parity.tolerances import EVERY_EDGE, NO_DROPOUT, tolerance

ROOT = Path(__file__).resolve().parents[3]
TINY = ["model.graph.eigh_calls=looped", *NO_DROPOUT, "train.batch_size=8", "train.lr=3e-3",
        "train.warmup_ratio=0", "train.mesh.fsdp_min_size=0",
        EVERY_EDGE]  # no top-k near-tie for the layouts' rounding to flip
STEPS = 4


def worker() -> None:
    """Run in a subprocess with 4 forced CPU devices; prints the losses of each layout as JSON."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import PartitionSpec as P

    from jaxbrr.model import SeizureDetector
    from jaxbrr.train.mesh import FSDP_AXIS, global_batch, make_mesh, state_shardings
    from jaxbrr.train.optim import make_nnx_optimizer
    from jaxbrr.train.step import make_train_step

    assert jax.device_count() == 4, jax.devices()
    config = load_config(ROOT / "configs" / "tiny.yaml", TINY)
    rng = np.random.default_rng(0)
    plan = []
    for _ in range(STEPS):
        onset = rng.integers(200, 800, (8, 1))
        plan.append({"x": rng.standard_normal((8, 19, config.window_samples)).astype(np.float32),  # (B, C, T)
                     "y": (np.arange(config.window_samples)[None] >= onset).astype(np.float32),  # (B, T)
                     "valid": np.ones(8, bool)})

    def run(data: int | None, fsdp: int) -> tuple[list[float], int]:
        model = SeizureDetector(config.model, rngs=nnx.Rngs(0))
        optimizer = make_nnx_optimizer(model, config.train, 100)
        graphdef, state = nnx.split((model, optimizer))
        mesh = shardings = None
        if data is not None:
            cfg = load_config(ROOT / "configs" / "tiny.yaml", [*TINY, f"train.mesh.data={data}",
                                                                f"train.mesh.fsdp={fsdp}"]).train
            mesh = make_mesh(cfg)
            shardings = state_shardings(state, mesh, cfg.mesh)
            state = jax.device_put(state, shardings)
        step = make_train_step(graphdef, config.train, mesh=mesh, state_shardings=shardings)
        losses = []
        for batch in plan:
            put = global_batch(batch, mesh) if mesh is not None else {k: jnp.asarray(v) for k, v in batch.items()}
            state, metrics = step(state, put, jnp.float32(1.5))
            losses.append(float(metrics["loss"]))
        # how many arrays of the final state are really split over fsdp
        split = sum(FSDP_AXIS in tuple(x.sharding.spec) for x in jax.tree.leaves(state)
                    if isinstance(x.sharding, jax.sharding.NamedSharding) and x.sharding.spec != P())
        return losses, split

    def dropout_step(devices: int | None, fold: int | None = None) -> dict:
        """One step with dropout on, every device (or the one) given the same 2 windows: its
        gradient norm, and whether every device's shard of every output RNG key is the input key.
        The v2 model (TCN + one BiMamba-2 stack: the same dropout keys, a fraction of V3's
        compile). fold: the 1-device run with `fold` folded into its keys first."""
        sets = [o for o in TINY if "dropout" not in o]
        cfg = load_config(ROOT / "configs" / "tiny.yaml", [*sets, "model.architecture=v2",
                                                           f"train.batch_size={2 * (devices or 1)}"])
        model = SeizureDetector(cfg.model, rngs=nnx.Rngs(0))
        keys = jax.tree.leaves(nnx.state(model, nnx.RngKey))
        if fold is not None:
            nnx.update(model, jax.tree.map(lambda k: jax.random.fold_in(k, fold), nnx.state(model, nnx.RngKey)))
        graphdef, state = nnx.split((model, make_nnx_optimizer(model, cfg.train, 100)))
        batch = {k: np.concatenate([v[:2]] * (devices or 1)) for k, v in plan[0].items()}
        mesh = make_mesh(cfg.train) if devices else None
        put = global_batch(batch, mesh) if mesh is not None else {k: jnp.asarray(v) for k, v in batch.items()}
        state, metrics = make_train_step(graphdef, cfg.train, mesh=mesh)(state, put, jnp.float32(1.5))
        after = jax.tree.leaves(nnx.state(nnx.merge(graphdef, state)[0], nnx.RngKey))
        kept = all(np.array_equal(np.asarray(shard.data), np.asarray(jax.random.key_data(key)))
                   for key, out in zip(keys, after, strict=True)
                   for shard in jax.random.key_data(out).addressable_shards)
        return {"grad_norm": float(metrics["grad_norm"]), "keys_kept": bool(kept) and len(keys) > 0}

    one, _ = run(None, 1)
    data_parallel, _ = run(4, 1)
    fsdp, split = run(2, 2)
    print(json.dumps({"one": one, "data": data_parallel, "fsdp": fsdp, "fsdp_split_arrays": split,
                      "dropout_one": dropout_step(None), "dropout_one_fold0": dropout_step(None, fold=0),
                      "dropout_data": dropout_step(4)}))


@pytest.fixture(scope="module")
def four_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, __file__], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_same_trajectory(got: list[float], expected: list[float], name: str) -> None:
    a, b = np.array(got), np.array(expected)
    rtol, atol = tolerance("trajectory", "float32")
    print(f"{name} vs 1 device, {len(b)} steps: losses {np.round(a, 6)} vs {np.round(b, 6)}, "
          f"max rel {np.abs(a - b).max() / np.abs(b).max():.2e}")
    assert len(a) == len(b) == STEPS and np.all(np.isfinite(a))
    assert b[-1] < b[0]  # the steps do train
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * np.abs(b).max() + atol)


def test_data_parallel_over_four_devices_follows_one_device(four_devices):
    _assert_same_trajectory(four_devices["data"], four_devices["one"], "data 4")


def test_data_parallel_devices_draw_their_own_dropout_masks(four_devices):
    """Four devices holding the same two windows, dropout on. Were the masks the same on every
    device, the averaged gradient would be a 1-device gradient on those windows, up to rounding
    (~1e-7; bit for bit before each device had its own): the one with the model's key (one
    replicated key), or with device index 0 folded in (an axis index 0 everywhere). Each device's
    own masks move the gradient norm away from both by the dropout's effect (~9 % here). The keys
    leave the step as they came, on every device: the state stays replicated."""
    one, zero, data = (four_devices[k] for k in ("dropout_one", "dropout_one_fold0", "dropout_data"))
    print(f"dropout on, same windows: grad norm 1 device {one['grad_norm']:.6g} (key folded with 0: "
          f"{zero['grad_norm']:.6g}), 4 devices {data['grad_norm']:.6g}")
    for reference in (one, zero):
        assert abs(data["grad_norm"] - reference["grad_norm"]) > 1e-3 * reference["grad_norm"]
    assert data["keys_kept"] and one["keys_kept"]


def test_fsdp_follows_one_device(four_devices):
    assert four_devices["fsdp_split_arrays"] > 0  # the switch does shard parameters / moments
    _assert_same_trajectory(four_devices["fsdp"], four_devices["one"], "data 2 x fsdp 2")


def test_mesh_shape_checks_devices_and_batch():
    assert mesh_shape(MeshConfig(), 4, 8) == (4, 1)
    assert mesh_shape(MeshConfig(fsdp=2), 4, 8) == (2, 2)
    assert mesh_shape(MeshConfig(data=1, fsdp=4), 4, 4) == (1, 4)
    with pytest.raises(ValueError, match=r"train.mesh: data \(2\) × fsdp \(1\) must equal the 4"):
        mesh_shape(MeshConfig(data=2), 4, 8)
    with pytest.raises(ValueError, match=r"train.mesh: data \(-1 = all\) × fsdp \(3\)"):
        mesh_shape(MeshConfig(fsdp=3), 4, 8)
    with pytest.raises(ValueError, match="train.batch_size=6 does not split .* multiple of 4"):
        mesh_shape(MeshConfig(), 4, 6)
    with pytest.raises(ConfigError, match="train.mesh.data must be >= 1"):
        load_config(ROOT / "configs" / "tiny.yaml", ["train.mesh.data=0"])


def test_fsdp_spec_splits_the_largest_divisible_axis():
    assert tuple(fsdp_spec((16, 64), 2, 0)) == (None, "fsdp")
    assert tuple(fsdp_spec((64, 7), 4, 0)) == ("fsdp", None)
    assert tuple(fsdp_spec((7, 5), 2, 0)) == ()  # nothing divides: replicated
    assert tuple(fsdp_spec((16, 64), 2, 2048)) == ()  # below fsdp_min_size
    assert tuple(fsdp_spec((), 2, 0)) == ()  # scalars (step counts, RNG keys)
    assert tuple(fsdp_spec((16, 64), 1, 0)) == ()


def test_two_hosts_cover_every_window_once_per_epoch():
    balance = load_config(ROOT / "configs" / "tiny.yaml", ["data.balance.enabled=false"]).data.balance
    classes = np.zeros(96, np.int8)
    for epoch in (0, 1):
        order = balanced_rows(classes, balance, seed=3, epoch=epoch)
        np.testing.assert_array_equal(order, balanced_rows(classes, balance, seed=3, epoch=epoch))  # pure
        per_host = [np.concatenate([host_rows(b, h, 2) for b in batches(order, 8)]) for h in (0, 1)]
        assert len(per_host[0]) == len(per_host[1]) == 48
        assert not set(per_host[0]) & set(per_host[1])
        np.testing.assert_array_equal(np.sort(np.concatenate(per_host)), np.arange(96))  # each once
        first = next(batches(order, 8))
        np.testing.assert_array_equal(np.concatenate([host_rows(first, h, 2) for h in (0, 1)]), first)
    assert not np.array_equal(balanced_rows(classes, balance, 3, 0), balanced_rows(classes, balance, 3, 1))
    with pytest.raises(ValueError, match="does not split over 3 hosts"):
        host_rows(np.arange(8), 0, 3)


def test_prefetch_keeps_order_raises_and_closes():
    def load(i):
        time.sleep(0.001 * (i % 3))
        return {"x": np.full(3, i)}

    for depth in (0, 1, 3):
        with Prefetcher(load, range(20), depth) as loader:
            assert [int(b["x"][0]) for b in loader] == list(range(20))

    def fails_at_5(i):
        if i == 5:
            raise KeyError("window 5 missing from the cache")
        return i

    seen = []
    with pytest.raises(KeyError, match="window 5 missing"), Prefetcher(fails_at_5, range(10), 2) as loader:
        seen.extend(loader)
    assert seen == [0, 1, 2, 3, 4]

    loaded = []
    loader = Prefetcher(lambda i: loaded.append(i) or i, range(10_000), 2)
    assert next(iter(loader)) == 0
    loader.close()  # stopped early: the worker ends, having loaded at most a few ahead
    assert not loader._thread.is_alive() and len(loaded) <= 5
    assert "jaxbrr-prefetch" not in [t.name for t in threading.enumerate()]


def test_distributed_arguments_from_config_and_environment():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert initialize_arguments(DistributedConfig(), env) is None  # off unless asked for
    assert initialize_arguments(DistributedConfig(initialize=True), env) == {
        "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
    cfg = DistributedConfig(initialize=True, coordinator_address="head:9999", process_id=0)
    assert initialize_arguments(cfg, env) == {"coordinator_address": "head:9999", "num_processes": 4,
                                              "process_id": 0}
    assert initialize_arguments(DistributedConfig(initialize=True), {}) == {}  # JAX detects SLURM, MPI, k8s
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='four' is not an integer"):
        initialize_arguments(DistributedConfig(initialize=True), {"JAX_NUM_PROCESSES": "four"})
    with pytest.raises(ValueError, match="process_id 4 is not below num_processes 4"):
        initialize_arguments(DistributedConfig(initialize=True, process_id=4), env)
    with pytest.raises(ConfigError, match="process_id=2 must be below num_processes=2"):
        load_config(ROOT / "configs" / "tiny.yaml", ["train.distributed.num_processes=2",
                                                     "train.distributed.process_id=2"])


if __name__ == "__main__":
    worker()
