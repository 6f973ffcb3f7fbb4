"""One training step and one evaluation step, jitted (JAX twin of torchref/train/step.py).

Glossary: B batch (windows), C channels, T samples per window.

    batch = {"x": (B, C, T) float, "y": (B, T) 0/1, "valid": (B,) bool, optional}

train_step: forward in training mode (dropout on, as the model is) -> `compute_loss` ->
nnx.value_and_grad -> optimizer.update (clip, AdamW, schedule: jaxbrr/train/optim.py).
Nothing here clamps or sanitises. `finite` in the metrics says whether loss and gradient norm
were finite, the test the training loop applies (`train.nan_policy`). Under `raise` a non-finite
step reaches the returned state as it is (the loop keeps the state from before it and stops);
under `skip` the step keeps the parameters and the whole optimizer state (moments, schedule
count, accumulator) as they were, so that a step the loop counts as skipped changed nothing but
the dropout keys, as torchref skips it. (optax.apply_if_finite tests the gradient's entries only:
finite entries whose norm overflows, or a non-finite loss, were applied there: clipped to zero,
yet weight decay, the moments' decay and the schedule count went on.)

The config is a static argument (a frozen, hashable TrainConfig); `pos_weight` is traced, so a
new value (re-estimated each epoch) does not recompile.

The training loop uses `make_train_step`: the same update as a pure function of the split state
(graphdef fixed, state in, state out), jitted with plain `jax.jit` (no per-call graph traversal),
optionally wrapped in `jax.experimental.checkify` float checks (`train.checkify`). Nothing is
donated: the loop keeps the state from before a step, which is what a NaN dump writes.

On a mesh (jaxbrr/train/mesh.py: axes `data` × `fsdp`, the batch split over both):
- fsdp = 1, data parallel: the step runs under `jax.shard_map`, each device on its slice of the
  batch with the replicated state, and the loss and gradients are averaged with `lax.pmean`
  before the (identical, replicated) update. Each device draws its own dropout masks: the
  replicated RNG keys, with the device's index along the batch axes folded in for the step (and
  put back, so the state stays replicated). The masks are not the 1-device run's, so the losses
  follow it within the parity table's trajectory tolerance, not bit for bit. The averaged loss
  equals the global batch mean when every window is valid (the training batches are).
- fsdp > 1: plain `jax.jit` with NamedShardings in and out: the state sharded per
  `mesh.state_shardings` (parameters and optimizer moments split over `fsdp`), the batch over
  (data, fsdp); XLA's partitioner inserts the all-gathers of parameters and the reduce-scatters
  of gradients. Here the step is the 1-device program, dropout masks included.
On several CPU devices in one process the dynamic PE needs model.graph.eigh_calls=looped:
jaxlib 0.10.2's batched LAPACK eigh splits its batch over the intra-op thread pool and blocks on
it, and once every pool thread is a device's blocked eigh the step never returns (native stacks:
BlockingCounter::Wait in jax::ParallelBatchMap under lapack_ssyevd_ffi). The Trainer refuses the
batched form there.
"""

from __future__ import annotations

import os
import traceback

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.experimental import checkify
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from common.config import TrainConfig
from jaxbrr.train.loss import compute_loss
from jaxbrr.train.mesh import BATCH_AXES, FSDP_AXIS, batch_sharding, replicated
from jaxbrr.train.optim import current_learning_rate


@nnx.jit(static_argnums=3)
def train_step(
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    batch: dict[str, jax.Array],
    cfg: TrainConfig,
    pos_weight: float | jax.Array = 1.0,
) -> dict[str, jax.Array]:
    """One update of `model` in place. Returns {loss, grad_norm (before clipping), lr (of this
    update; with grad_accum_steps > 1, of the last applied one), finite}."""

    return update(model, optimizer, batch, cfg, pos_weight)


def update(model: nnx.Module, optimizer: nnx.Optimizer, batch: dict[str, jax.Array],
           cfg: TrainConfig, pos_weight: float | jax.Array,
           axis_name: str | tuple[str, ...] | None = None) -> dict[str, jax.Array]:
    """The body of a training step, untransformed (traced inside nnx.jit, jax.jit or shard_map;
    under shard_map, `axis_name` is the mesh axis to average loss and gradients over)."""

    def loss_of(model: nnx.Module) -> jax.Array:
        logits, _ = model(batch["x"])  # (B, T)
        return compute_loss(logits, batch["y"], cfg, pos_weight, batch.get("valid"))

    loss, grads = nnx.value_and_grad(loss_of)(model)
    if axis_name is not None:
        loss, grads = jax.lax.pmean((loss, grads), axis_name)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    skip = cfg.nan_policy == "skip"
    if skip:  # copies of the values (nnx.state holds the objects' own Variables, which update changes)
        before = jax.tree.map(lambda x: x, (nnx.state(model, nnx.Param), nnx.state(optimizer)))
    optimizer.update(model, grads)
    if skip:
        after = (nnx.state(model, nnx.Param), nnx.state(optimizer))
        kept = jax.tree.map(lambda old, new: jnp.where(finite, new, old), before, after)
        nnx.update(model, kept[0])
        nnx.update(optimizer, kept[1])
    return {
        "loss": loss,
        "grad_norm": grad_norm,
        "lr": current_learning_rate(optimizer.opt_state),
        "finite": finite,
    }


def make_train_step(graphdef: nnx.GraphDef, cfg: TrainConfig, use_checkify: bool = False,
                    mesh: Mesh | None = None, state_shardings=None):
    """`step(state, batch, pos_weight) -> (state, metrics)` for `graphdef, state =
    nnx.split((model, optimizer))`, jitted once. With `mesh` (axes data × fsdp): data parallel
    under shard_map when fsdp is 1; with fsdp > 1, jit with `state_shardings` (a NamedSharding per
    state leaf, jaxbrr.train.mesh.state_shardings) in and out (see the module docstring).

    With use_checkify the step returns `(error, (state, metrics))` instead; `error.throw()` raises
    at the first NaN-producing or dividing-by-zero op inside the jitted step, naming the
    primitive and its source line (jax.experimental.checkify float_checks).
    """

    fsdp = mesh is not None and mesh.shape[FSDP_AXIS] > 1
    if fsdp and state_shardings is None:
        raise ValueError("make_train_step: a mesh with fsdp > 1 needs state_shardings "
                         "(jaxbrr.train.mesh.state_shardings)")
    mean_over = BATCH_AXES if mesh is not None and not fsdp else None

    def step(state, batch, pos_weight):
        model, optimizer = nnx.merge(graphdef, state)
        if mean_over is not None:  # data parallel: each device draws its own dropout masks
            # a copy of the key values (nnx.state holds the model's own Variables, which the
            # update below would change too)
            keys = jax.tree.map(lambda key: key, nnx.state(model, nnx.RngKey))
            device = jax.lax.axis_index(mean_over)
            nnx.update(model, jax.tree.map(lambda key: jax.random.fold_in(key, device), keys))
        metrics = update(model, optimizer, batch, cfg, pos_weight, mean_over)
        if mean_over is not None:
            nnx.update(model, keys)  # the keys leave as they came: replicated (the counts advance alike)
        return nnx.state((model, optimizer)), metrics

    jit_args = {}
    if fsdp:
        jit_args = {"in_shardings": (state_shardings, batch_sharding(mesh), replicated(mesh)),
                    "out_shardings": (state_shardings, replicated(mesh))}
    elif mesh is not None:
        # check_vma off: the model's scans start from invariant zeros and carry per-device values,
        # which the checker rejects; the outputs are replicated by construction (pmean above).
        step = jax.shard_map(step, mesh=mesh, in_specs=(P(), P(BATCH_AXES), P()), out_specs=(P(), P()),
                             check_vma=False)

    if use_checkify:
        # checkify the jitted step (not jit the checkified one): NNX's graph code then runs
        # inside a single jit trace, and checkify instruments the resulting program.
        return jax.jit(checkify.checkify(jax.jit(step, **jit_args), errors=checkify.float_checks))
    return jax.jit(step, **jit_args)


@nnx.jit
def eval_step(model: nnx.Module, x: jax.Array) -> jax.Array:
    """Seizure probabilities σ(logits), (B, C, T) -> (B, T), with dropout off (the model passed
    in keeps its own mode)."""
    logits, _ = nnx.view(model, deterministic=True, raise_if_not_found=False)(x)  # (B, T)
    return jax.nn.sigmoid(logits)


def checkify_failure(error: checkify.Error) -> str | None:
    """None when the checked step was clean; else the failed check and where it happened:

        nan generated by primitive: mul.                   (pe_gradient: full, repeated eigenvalues)
          at .../jaxbrr/graph.py:LINE in _eigh
          called from .../jaxbrr/graph.py:LINE in per_matrix
          ...

    (the project's frames of the op's trace, innermost first; an op that JAX's own derivative
    rules create, e.g. inside eigh's backward pass, carries the line that bound the primitive
    differentiated, here jaxbrr.graph._eigh's lax.linalg.eigh; where no frame is the project's,
    the outermost one recorded)."""
    exc = error.get_exception()
    if exc is None:
        return None
    frames = traceback.extract_tb(exc.traceback_info.as_python_traceback())
    ours = [f for f in frames if f"{os.sep}jaxbrr{os.sep}" in f.filename]
    lines = [str(exc)]
    for i, frame in enumerate(reversed(ours or frames[:1])):  # else where JAX bound it
        lines.append(f"  {'at' if i == 0 else 'called from'} {frame.filename}:{frame.lineno} in {frame.name}")
    return "\n".join(lines)
