"""The training mesh: named axes `data` × `fsdp` over every device of every host.

    mesh (data, fsdp)        train.mesh.data × train.mesh.fsdp = jax.device_count() (all hosts)
    batch                    split over both axes: (B, ...) -> B / (data · fsdp) windows per device
    parameters, optimizer    replicated over `data`; over `fsdp` (fsdp > 1) each array of at least
                             train.mesh.fsdp_min_size elements is split along its largest axis that
                             fsdp divides (ZeRO-3 / FSDP layout), the others stay replicated

The shapes are checked here, on the host, before anything compiles; the errors name the config
field and the fix (STYLE.md: never deep inside jit).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from common.config import MeshConfig, TrainConfig

DATA_AXIS, FSDP_AXIS = "data", "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)  # the batch dimension is split over both


def mesh_shape(cfg: MeshConfig, n_devices: int, batch_size: int) -> tuple[int, int]:
    """(data, fsdp) for `n_devices`, or a ValueError that names train.mesh / train.batch_size."""
    fsdp = cfg.fsdp
    data = cfg.data if cfg.data != -1 else n_devices // fsdp
    if data < 1 or data * fsdp != n_devices:
        raise ValueError(
            f"train.mesh: data ({cfg.data}{' = all' if cfg.data == -1 else ''}) × fsdp ({fsdp}) must equal "
            f"the {n_devices} visible devices (all hosts): set train.mesh.data=-1 and a "
            f"train.mesh.fsdp that divides {n_devices}"
        )
    if batch_size % n_devices:
        raise ValueError(
            f"train.batch_size={batch_size} does not split over the mesh's {n_devices} devices "
            f"(data {data} × fsdp {fsdp}): use a multiple of {n_devices}"
        )
    return data, fsdp


def make_mesh(cfg: TrainConfig, devices: list | None = None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    data, fsdp = mesh_shape(cfg.mesh, len(devices), cfg.batch_size)
    return Mesh(np.array(devices).reshape(data, fsdp), BATCH_AXES)


def fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
    """The PartitionSpec of one parameter or optimizer-state array: its largest axis that `fsdp`
    divides goes over the `fsdp` mesh axis (the last such axis on a tie); small or indivisible
    arrays stay replicated."""
    if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < max(min_size, 1):
        return P()
    candidates = [i for i, n in enumerate(shape) if n % fsdp == 0]
    if not candidates:
        return P()
    axis = max(candidates, key=lambda i: (shape[i], i))
    return P(*[FSDP_AXIS if i == axis else None for i in range(len(shape))])


def state_shardings(state, mesh: Mesh, cfg: MeshConfig):
    """A NamedSharding per leaf of `state` (the split (model, optimizer) state)."""
    fsdp = mesh.shape[FSDP_AXIS]
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), fsdp, cfg.fsdp_min_size)), state)


def place(tree, shardings):
    """Lay `tree` (the same whole value on every host) out as global arrays with `shardings`:
    each process fills only its own devices' parts (device_put refuses a sharding that spans
    other hosts' devices)."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(x, sharding):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # RNG keys travel as their data
            return jax.random.wrap_key_data(one(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x))
        value = np.asarray(x)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(one, tree, shardings)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This host's slice of the global batch -> global arrays sharded over (data, fsdp). With one
    process the slice is the whole batch (the same as device_put)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
