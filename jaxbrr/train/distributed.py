"""Multi-host training on JAX's own distributed runtime.

    train.distributed.initialize: true   -> jax.distributed.initialize(coordinator_address,
                                            num_processes, process_id) before any device is used

Each field left null comes from the environment (the launcher's business, never the model's):
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID; whatever is still missing JAX detects
itself on SLURM, Open MPI and Kubernetes. After that, every process runs the same program:
jax.devices() lists all hosts' devices, the mesh spans them (jaxbrr/train/mesh.py), each host
loads only its slice of every global batch (common.data.sampler.host_rows), orbax writes each
checkpoint once (every host its shards, process 0 the metadata), and host-side numbers are
averaged over hosts (`mean_over_hosts`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import numpy as np

from common.config import DistributedConfig

ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}


def initialize_arguments(cfg: DistributedConfig, environ: Mapping[str, str] | None = None) -> dict | None:
    """The keyword arguments for jax.distributed.initialize, or None when it is not to be called.
    Config fields win over the environment; an unset one is left out (JAX then detects it)."""
    if not cfg.initialize:
        return None
    environ = os.environ if environ is None else environ
    arguments = {}
    for name, variable in ENV.items():
        value = getattr(cfg, name)
        if value is None and environ.get(variable):
            value = text = environ[variable]
            if name != "coordinator_address":
                try:
                    value = int(text)
                except ValueError:
                    raise ValueError(f"{variable}={text!r} is not an integer (train.distributed.{name})") from None
        if value is not None:
            arguments[name] = value
    n, i = arguments.get("num_processes"), arguments.get("process_id")
    if n is not None and i is not None and not 0 <= i < n:
        raise ValueError(f"train.distributed: process_id {i} is not below num_processes {n} "
                         f"(config or {ENV['process_id']}/{ENV['num_processes']})")
    return arguments


def initialize(cfg: DistributedConfig) -> None:
    """Call jax.distributed.initialize once per process when the config asks for it."""
    arguments = initialize_arguments(cfg)
    if arguments is None or jax.distributed.is_initialized():
        return
    jax.distributed.initialize(**arguments)


def host_values(tree):
    """Host numpy copies of a tree of replicated arrays (metrics): on several hosts an array of
    the global mesh is not fully addressable, but each host holds a full replica."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x, tree)


def mean_over_hosts(values: dict[str, float]) -> dict[str, float]:
    """The mean over all processes of host-measured numbers (rates, wait times); unchanged with
    one process."""
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    keys = sorted(values)
    gathered = multihost_utils.process_allgather(np.array([values[k] for k in keys], np.float64))
    return dict(zip(keys, np.asarray(gathered).reshape(jax.process_count(), -1).mean(axis=0).tolist(), strict=True))


def gather_to_host(tree):
    """Every leaf of a global `tree` whole on this host's first device (an all-gather across
    hosts; RNG keys travel as their key data)."""
    from jax.experimental import multihost_utils

    def one(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        return jax.device_put(multihost_utils.process_allgather(x, tiled=True), jax.local_devices()[0])

    return jax.tree.map(one, tree)


def whole_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The global batch on every host from each host's slice (host h holds the h-th contiguous
    slice, common.data.sampler.host_rows, so the slices concatenate in process order); unchanged
    with one process."""
    if jax.process_count() == 1:
        return batch
    from jax.experimental import multihost_utils

    return {k: np.asarray(multihost_utils.process_allgather(v, tiled=True)) for k, v in batch.items()}


TEXT_BYTES = 4096  # what text_from_host_0 carries (an error line)


def text_from_host_0(text: str) -> str:
    """Process 0's `text` on every process (a broadcast; its first TEXT_BYTES bytes in UTF-8);
    unchanged with one process."""
    if jax.process_count() == 1:
        return text
    from jax.experimental import multihost_utils

    data = np.zeros(TEXT_BYTES, np.uint8)
    encoded = text.encode()[:TEXT_BYTES]
    data[:len(encoded)] = np.frombuffer(encoded, np.uint8)
    received = np.asarray(multihost_utils.broadcast_one_to_all(data))
    return received.tobytes().rstrip(b"\0").decode(errors="replace")


def digests_of_every_host(digest: bytes) -> list[bytes]:
    """Every process's 32-byte `digest` (a sha256), in process order (an allgather); [digest]
    with one process."""
    if jax.process_count() == 1:
        return [digest]
    from jax.experimental import multihost_utils

    gathered = np.asarray(multihost_utils.process_allgather(np.frombuffer(digest, np.uint8)))
    return [row.tobytes() for row in gathered.reshape(jax.process_count(), -1)]


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name`; nothing with one process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
