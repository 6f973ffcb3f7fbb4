"""Whether a config may continue or start from a run's weights: the checks `train` runs before any
data is read.

    check_start(config, resume, init_from)     # the arguments against the workdir (--resume's config)
    check_init_config(config, theirs, source)  # --init-from: the run's model is the weights' model

A resume must compute what the run computed (every field but those that place it, RESUME_IGNORED);
weights started from must mean what the run's model means (every model field but how it runs,
INIT_IGNORED, or how its first weights were drawn, INIT_ONLY, and those of stages it lacks).
Both name every differing field and the fix.
"""

from __future__ import annotations

from pathlib import Path

from common.checkpoints import CheckpointError, jaxbrr_meta, last_steps, weights_config
from common.config import Config, ConfigError, config_to_dict
from common.pt import PtError, read_pt

# fields that place the run (how batches are loaded, how processes connect, how the eigh meets
# LAPACK) or spend its memory (remat recomputes the scans in the backward pass; eval.batch_size
# only groups the dev windows: out_of_memory_advice names both), not what it computes: a resume
# may change them
# may change them. So may what it keeps and says along the way: how often it saves and how many
# it keeps (checkpoint_every, keep_checkpoints: a preemptible partition, a quota), how often it
# logs, and where its windows are cached (the cache is keyed by the preprocessing's config, so the
# same windows come back). Not train.checkify: it stops at a NaN step that nan_policy: skip would
# have skipped, so the run would not go on the same way.
RESUME_IGNORED = ("train.prefetch", "train.distributed", "model.graph.eigh_calls", "model.remat", "eval.batch_size",
                  "train.checkpoint_every", "train.keep_checkpoints", "train.log_every", "data.cache_dir")


# model fields that say how the model runs, not what its weights mean: --init-from may change them
INIT_IGNORED = ("remat", "precision", "ssm.scan", "ssm.chunk_size", "ssm.backend", "graph.eigh_calls", "stability")

# model fields read only to draw the initial weights (grep: tcn.init_gain is read by the TCN's
# constructors alone); --init-from replaces what they drew, so they say nothing about the weights.
# An original checkpoint carries no such field (its model section reads back with our default).
# The seeds that draw them (train.seed) live outside `model`, which is all check_init_config reads.
INIT_ONLY = ("tcn.init_gain",)

# model fields that only one stage of common/stages.py's table reads: they mean something only in
# a model that has the stage (graph.enabled picks from_electrodes' input; the rest of graph is
# read by the graph stages). Every other model field is read by every architecture. The first
# matching prefix decides.
STAGE_FIELDS = (("graph.enabled", "from_electrodes"), ("graph", "gnn"), ("v2_mamba", "mamba"),
                ("electrode_dim", "electrodes"), ("node_mamba", "node_mamba"))


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _runs_only(field: str) -> bool:
    """model.<field> changes how the model runs (INIT_IGNORED, any dropout rate) or only how its
    weights start (INIT_ONLY), not what given weights compute."""
    name = field.removeprefix("model.")
    return name.split(".")[-1] == "dropout" or any(_matches(name, p) for p in (*INIT_IGNORED, *INIT_ONLY))


def _unused(field: str, stage_names: set[str]) -> bool:
    """model.<field> is read only by a stage the model lacks (STAGE_FIELDS)."""
    name = field.removeprefix("model.")
    stage = next((stage for prefix, stage in STAGE_FIELDS if _matches(name, prefix)), None)
    return stage is not None and stage not in stage_names


def check_init_config(config: Config, theirs: Config, source) -> None:
    """--init-from: the run's model must be the weights' model but for how it runs; else a
    ConfigError naming every differing field. Fields that only stages absent from the run's
    architecture read (v2_mamba in a v3 model, graph.* without the graph) are not compared."""
    stage_names = set(config.model.stage_inputs)
    changed = [(name, weights, ours) for name, weights, ours in config_differences(
                   config_to_dict(config.model), config_to_dict(theirs.model), "model.")
               if not _runs_only(name) and not _unused(name, stage_names)]
    if changed:
        raise ConfigError(f"--init-from {source}: the config's model differs from the weights' model:\n  "
                          + difference_lines(changed, "weights")
                          + "\nset those fields as the weights have them (--set), or start from other weights")


def check_start(config: Config, resume: bool, init_from: str | Path | None, framework: str | None = None) -> None:
    """The arguments against the workdir, before any data is read (common/train/cli.py calls it
    before preparing the data, Loop before anything else): --init-from with --resume; a workdir
    that holds checkpoints without --resume (a run is never overwritten by accident); --resume
    without a checkpoint (a mistyped workdir must not start a new run in silence); --resume with a
    config that differs from the newest `last` checkpoint's (common.checkpoints.weights_config: a
    jaxbrr step's meta, a torchref step's whole .pt); --resume of the other twin's run (`framework`:
    the trainer's, jaxbrr or torchref)."""
    if init_from is not None and resume:
        raise ConfigError("--init-from and --resume together: --resume continues the run's own last "
                          "checkpoint; --init-from starts a new run from given weights")
    workdir = Path(config.workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"workdir {workdir} is a file, not a folder: pass --workdir DIR (a new or a run's folder)")
    steps = last_steps(workdir)
    if steps and not resume:
        raise FileExistsError(f"{workdir} already holds checkpoints (newest: {steps[-1]}): pass --resume to "
                              "continue that run, or --workdir DIR to start a new one")
    best = last_steps(workdir, "best")
    if best and not steps:
        raise FileExistsError(_best_alone(workdir, best[-1]))
    if not resume:
        return
    if not steps:
        raise ConfigError(f"--resume: {workdir} holds no checkpoint (no checkpoints/last/<step>); check --workdir "
                          "(or the config's workdir), or leave out --resume to start a new run there")
    theirs = "torchref" if steps[-1].suffix == ".pt" else "jaxbrr"  # a torchref step is a file, jaxbrr's a folder
    if framework in ("jaxbrr", "torchref") and theirs != framework:
        raise ConfigError(f"--resume: {workdir} is a {theirs} run (newest: {steps[-1]}), which python -m "
                          f"{framework}.train cannot continue: continue it with python -m {theirs}.train --resume, or "
                          f"start a {framework} run from its weights with --init-from {steps[-1]} --workdir NEW_DIR")
    # parsed, so that a field added since the checkpoint was written compares as its default
    # (which keeps the old behaviour) instead of as a difference
    changed = [(name, saved, ours) for name, saved, ours in config_differences(
                   config_to_dict(config), config_to_dict(weights_config(steps[-1])))
               if name != "workdir" and not any(_matches(name, p) for p in RESUME_IGNORED)]
    if changed:
        raise ConfigError(
            f"--resume: the config differs from the checkpoint's in {workdir} ({steps[-1]}), so the run "
            "would not continue the same way:\n  " + difference_lines(changed, "checkpoint")
            + f"\nuse the same config (--config {workdir} reads the run's own), or a new --workdir "
            f"(--init-from {steps[-1]} starts a new run from its weights)"
        )


def _best_alone(workdir: Path, step: Path) -> str:
    """Why a workdir holds a best checkpoint and no last one, by the step's meta, and the way on:
    weights parity.convert wrote, a finished run whose last ones were deleted, else a run killed
    between saving its first best and its first last (at its first epoch's end)."""
    try:
        meta = jaxbrr_meta(step) if step.is_dir() else read_pt(step).get("meta", {})
    except (CheckpointError, PtError, OSError):
        meta = {}
    start = f"start a run from its weights with --init-from {step} --workdir NEW_DIR"
    if meta.get("converted_from"):
        return f"{workdir} holds weights parity.convert wrote ({step}, from {meta['converted_from']}), no run: {start}"
    if (meta.get("progress") or {}).get("finished"):
        return f"{workdir} holds a finished run's best checkpoint ({step}) and no last one: {start}"
    return (f"{workdir} holds a best checkpoint ({step}) but no last one to resume from: the run stopped between "
            f"saving the two. Start a new run from its weights with --init-from {step} --workdir NEW_DIR, or delete "
            f"{workdir / 'checkpoints'} to start again here")


def config_differences(ours: dict, theirs: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted field, their value, ours) for every field the two config trees set differently."""
    out = []
    for key in sorted(set(ours) | set(theirs)):
        mine, other = ours.get(key), theirs.get(key)
        if isinstance(mine, dict) and isinstance(other, dict):
            out += config_differences(mine, other, f"{prefix}{key}.")
        elif mine != other:
            out.append((f"{prefix}{key}", other, mine))
    return out


def difference_lines(changed: list[tuple[str, object, object]], theirs: str) -> str:
    return "\n  ".join(f"{name}: {theirs} {other!r}, now {mine!r}" for name, other, mine in changed)
