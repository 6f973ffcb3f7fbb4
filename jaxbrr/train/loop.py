"""jaxbrr's training loop: common.train.loop.Loop's hooks in JAX.

One jitted functional step over the split NNX state (jaxbrr/train/step.py), orbax checkpoints
(jaxbrr/train/checkpoint.py), NaN dumps with an orbax checkpoint of the state before the step
(jaxbrr/train/nan.py). Under JAX_DEBUG_NANS=1 JAX raises FloatingPointError inside the step;
with `train.checkify` checkify names the first NaN-producing op and its source line; either way
the loop writes the dump and stops. Under `train.nan_policy: skip` the step itself leaves
parameters and optimizer state untouched when its loss or gradient norm is not finite.

Several devices (train.mesh; jaxbrr/train/mesh.py): the batch is split over a `data` × `fsdp`
mesh, the state replicated (under shard_map, gradients averaged) or, with fsdp > 1, sharded over
`fsdp` (jit with shardings); jaxbrr/train/step.py. Several CPU devices in one process need
model.graph.eigh_calls=looped (jaxbrr.graph.per_matrix; the batched eigh deadlocks there, and
the trainer refuses it). Several hosts (train.distributed; jaxbrr/train/distributed.py): each
loads only its slice of every global batch.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from common.config import Config
from common.train.compat import check_init_config
from common.train.loop import Loop, StepFailed, TrainResult
from jaxbrr.model import SeizureDetector, count_parameters
from jaxbrr.precision import set_float32_precision
from jaxbrr.predict import probabilities
from jaxbrr.train import distributed
from jaxbrr.train.checkpoint import Checkpoints
from jaxbrr.train.mesh import FSDP_AXIS, global_batch, make_mesh, place, state_shardings
from jaxbrr.train.nan import write_dump
from jaxbrr.train.optim import make_nnx_optimizer
from jaxbrr.train.step import checkify_failure, make_train_step
from jaxbrr.weights import fill, load_model, to_neutral


class Trainer(Loop):
    """The jaxbrr loop: one jitted functional step over the split NNX state; orbax checkpoints."""

    framework = "jaxbrr"

    @classmethod
    def check_placement(cls, config: Config) -> None:
        """Loop.check_placement: Pallas off a GPU, the mesh against the devices and the batch.
        A multi-host run's devices are known once jax.distributed is up: _build checks those."""
        if config.train.distributed.initialize:
            return
        if config.model.ssm.scan == "pallas":
            from jaxbrr.ssd_kernel import require_gpu

            require_gpu()
        cls._mesh(config)

    @staticmethod
    def _mesh(config: Config) -> Mesh | None:
        """The devices' mesh (None on one device without fsdp); ValueError for a placement that
        cannot run: data × fsdp or the batch against the devices, Pallas under fsdp, the batched
        CPU eigh over several devices in one process."""
        devices = jax.devices()
        if len(devices) == 1 and config.train.mesh.fsdp == 1:
            return None
        mesh = make_mesh(config.train, devices)  # checks data × fsdp and the batch size
        if mesh.shape[FSDP_AXIS] > 1 and config.model.ssm.scan == "pallas":
            raise ValueError(
                "model.ssm.scan=pallas with train.mesh.fsdp > 1: the Pallas kernels are opaque to XLA's "
                "SPMD partitioner, which would run every device on the whole batch. Set "
                "train.mesh.fsdp=1 (data parallel: each device runs the kernels on its own slice) "
                "or model.ssm.scan=chunked")
        g = config.model.graph
        local = jax.local_device_count()
        if devices[0].platform == "cpu" and local > 1 and g.enabled and g.use_dynamic_pe and g.eigh_calls == "batched":
            raise ValueError(
                f"{local} CPU devices in this process with the dynamic Laplacian PE and "
                "model.graph.eigh_calls=batched: jaxlib's batched CPU eigh waits on the thread "
                "pool that the other devices' eigh calls occupy, and the step deadlocks "
                "(never returns). Set model.graph.eigh_calls=looped (same numbers, one LAPACK "
                "call per graph), or train on one CPU device per process"
            )
        return mesh

    def _build(self) -> None:
        distributed.initialize(self.cfg.distributed)  # before any device is touched
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        if jax.config.jax_debug_nans and self.process_count > 1:
            raise ValueError(
                f"JAX_DEBUG_NANS with {self.process_count} processes: JAX checks each process's own arrays and "
                "re-runs a step op by op on the processes that saw a NaN only, while the others wait in a "
                "collective for ever. Train without it here (a non-finite step writes its NaN dump and the "
                "replay command), and run that replay command, or the run, on one host with JAX_DEBUG_NANS=1")
        self.float32_matmuls = set_float32_precision(self.cfg.tf32, jax.default_backend())
        if self.config.model.ssm.scan == "pallas":  # before anything compiles or is written
            from jaxbrr.ssd_kernel import require_gpu

            require_gpu()
        self._hold_workdir()  # before the checkpoint store reads or tidies the workdir
        self.model = SeizureDetector(self.config.model, rngs=nnx.Rngs(self.cfg.seed))
        self.optimizer = make_nnx_optimizer(self.model, self.cfg, self.total_updates)
        self.checkpoints = Checkpoints(self.workdir, self.cfg.keep_checkpoints)
        self.mesh = self._mesh(self.config)
        self.sync_from_objects()
        self.step_fn = make_train_step(self.graphdef, self.cfg, use_checkify=self.cfg.checkify, mesh=self.mesh,
                                       state_shardings=self.state_shardings)
        self._predict = functools.partial(probabilities, nnx.graphdef(self.model))
        self._eval_state = (None, None)  # (training state, its model state on one device)

    def sync_from_objects(self) -> None:
        """Take the state from `self.model` / `self.optimizer` (after filling weights in place,
        e.g. parity's torch_to_jax) and lay it out on the devices."""
        self.graphdef, self.state = nnx.split((self.model, self.optimizer))
        self.state_before = self.state
        self.state_shardings = None
        if self.mesh is not None:  # replicated, or split over fsdp (jaxbrr/train/mesh.py)
            self.state_shardings = state_shardings(self.state, self.mesh, self.cfg.mesh)
            self.state = place(self.state, self.state_shardings)

    def _objects(self, state) -> tuple[nnx.Module, nnx.Optimizer]:
        return nnx.merge(self.graphdef, state)

    def _put(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        if self.mesh is None:
            return {k: jnp.asarray(v) for k, v in batch.items()}
        return global_batch(batch, self.mesh)  # this host's slice -> the global batch

    def devices(self) -> str:
        devices = jax.devices()
        text = f"devices: {len(devices)} x {devices[0].platform}"
        if self.process_count > 1:
            text += f" on {self.process_count} hosts (this is host {self.process_index})"
        if self.mesh is not None:
            text += " (data parallel)" if self.mesh.shape[FSDP_AXIS] == 1 else (
                f" (mesh data {self.mesh.shape['data']} x fsdp {self.mesh.shape[FSDP_AXIS]})")
        if self.float32_matmuls is not None:
            text += f"; float32 dots and convolutions: {self.float32_matmuls} (train.tf32)"
        return text

    def _mean_over_hosts(self, values: dict[str, float]) -> dict[str, float]:
        return distributed.mean_over_hosts(values)

    def _from_host_0(self, text: str) -> str:
        return distributed.text_from_host_0(text)

    def _digests_of_every_host(self, digest: bytes) -> list[bytes]:
        return distributed.digests_of_every_host(digest)

    def parameter_count(self) -> int:
        return count_parameters(self.model)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """On one device (validation batches are small; see make_train_step on partitioning eigh).
        The model state is copied there once per training state, not once per batch."""
        if self._eval_state[0] is not self.state:
            model_state = self.state[0]
            if self.process_count > 1:  # a global array: gather the whole of it on every host
                model_state = distributed.gather_to_host(model_state)
            elif self.mesh is not None:
                model_state = jax.device_put(model_state, jax.devices()[0])
            self._eval_state = (self.state, model_state)
        return np.asarray(self._predict(self._eval_state[1], jnp.asarray(x)))

    def _step(self, batch: dict[str, np.ndarray], pos_weight: float) -> dict:
        self.state_before = self.state  # immutable arrays, nothing donated: a reference suffices
        device_batch, weight = self._put(batch), jnp.float32(pos_weight)
        try:
            if self.cfg.checkify:
                error, (state, metrics) = self.step_fn(self.state, device_batch, weight)
                failure = checkify_failure(error)
                if failure:
                    raise StepFailed("checkify: a NaN inside the step", failure)
            else:
                state, metrics = self.step_fn(self.state, device_batch, weight)
            metrics = distributed.host_values(metrics)  # replicated: every host holds them
            if not metrics["finite"] and jax.config.jax_debug_nans:
                self._step_again_checked(device_batch, weight)
        except FloatingPointError as err:  # JAX_DEBUG_NANS=1
            raise StepFailed("JAX_DEBUG_NANS: a NaN inside the step", str(err)) from err
        if metrics["finite"] or self.cfg.nan_policy == "skip":  # skip: the step kept the state
            self.state = state
        return metrics

    def _step_again_checked(self, device_batch: dict, weight: jax.Array) -> None:
        """Under JAX_DEBUG_NANS, the non-finite step again, from the state before it, through a new
        jit of the same step: it raises FloatingPointError naming the op (JAX re-runs it
        de-optimized). The step's own jit checks its outputs on its first, compiling call only:
        measured with jax 0.10.2, a run diverging at step 2 returned loss NaN in silence while a
        new jit of the same step on the same state raised. Costs one compilation, on a NaN only."""
        fresh = make_train_step(self.graphdef, self.cfg, mesh=self.mesh, state_shardings=self.state_shardings)
        fresh(self.state_before, device_batch, weight)

    def _init_weights(self, path: Path) -> Path:
        config, model, located, notes = load_model(path, self.config, finite=True)  # no config: the run's
        for note in notes:
            print(f"note: {note}")
        check_init_config(self.config, config, path)
        fill(self.model, to_neutral(model), str(located.path))
        self.sync_from_objects()
        return located.path

    def _save(self, kind: str) -> Path:
        model, optimizer = self._objects(self.state)
        neutral = None
        # The neutral copy: host 0 writes it, from the whole model state. Gathering a state split
        # over hosts (fsdp) is a collective: every host joins it, or host 0 waits for ever.
        host_state = distributed.gather_to_host(self.state[0]) if self.process_count > 1 else self.state[0]
        if self.primary:
            neutral = to_neutral(nnx.merge(nnx.graphdef(self.model), host_state))
        return self.checkpoints.save(kind, self.progress.step, model, optimizer, self._meta(), neutral)

    def _latest(self) -> int | None:
        """Host 0's newest `last` step on every host: a shared file system may show another host a
        listing from before host 0's last rename, and hosts restoring different steps diverge."""
        said = distributed.text_from_host_0(str(self.checkpoints.latest("last")))
        return None if said == "None" else int(said)

    def checkpoint_path(self, kind: str, step: int) -> Path:
        return self.checkpoints.root / kind / str(step)

    def _restore(self) -> dict:
        meta = self.checkpoints.restore("last", self.model, self.optimizer, step=self._latest())
        self.sync_from_objects()
        return meta

    def _fail_validation(self, x: np.ndarray):
        self.state_before = self.state  # the weights that validated: every step so far was finite
        super()._fail_validation(x)

    def _dump(self, batch: dict[str, np.ndarray], info: dict) -> Path:
        model, optimizer = self._objects(self.state_before)
        whole = batch if info.get("batch_is_global") else distributed.whole_batch(batch)  # else this host's slice
        return write_dump(self.workdir, self.config, model, optimizer, whole, info,
                          primary=self.primary, barrier=distributed.barrier)


def train(config: Config, resume: bool = False, progress: bool = True) -> TrainResult:
    return Trainer(config, resume=resume, progress=progress).run()
