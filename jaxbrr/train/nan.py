"""The NaN dump: everything needed to replay a non-finite training step, written when one occurs.

    WORKDIR/nan/step_NNNNNN/
        batch.npz          x (B, C, T) float32, y (B, T) float32, valid (B,) bool: the step's batch
        checkpoint/        the model and optimizer BEFORE the step (a training checkpoint's step
                           folder: jaxbrr.train.checkpoint.load_model and the localiser read it)
        nan.json           step, epoch, batch index, pos_weight, the dropout RNG streams (key data
                           and call count), what was non-finite, the error, the replay command, the config

NNNNNN is the number of batches done before the failing one. The replay command is
`python -m parity.localize --dump WORKDIR/nan/step_NNNNNN`. The dump is written into a temporary
folder and renamed, so it is complete or absent. Several hosts write one dump: all of them the
checkpoint (orbax, each its shards), the primary host (process 0) the folder, batch.npz (the whole
global batch) and nan.json.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from jaxbrr.config import Config, config_to_dict
from jaxbrr.train.checkpoint import ITEMS, _pure, _savable

NAN_DIR = "nan"


def dump_dir(workdir: str | Path, step: int) -> Path:
    return Path(workdir) / NAN_DIR / f"step_{step:06d}"


def replay_command(path: str | Path) -> str:
    return f"python -m parity.localize --dump {path}"


def rng_streams(model: nnx.Module) -> dict[str, dict]:
    """{path: {key: [uint32...], count: n}} of every RNG stream in the model (dropout's)."""
    streams = {}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.RngStream):
            streams["/".join(map(str, path))] = {
                "key": np.asarray(jax.random.key_data(node.key[...])).tolist(),
                "count": int(node.count[...]),
            }
    return streams


def write_dump(workdir: str | Path, config: Config, model: nnx.Module, optimizer: nnx.Optimizer,
               batch: dict[str, np.ndarray], info: dict, primary: bool = True,
               barrier: Callable[[str], None] = lambda name: None) -> Path:
    """Write the dump of the step that `info` describes ({step, epoch, batch, pos_weight, error,
    ...}); `model` and `optimizer` hold the state from before that step, `batch` the whole global
    batch. On several hosts every host calls this (the checkpoint is a collective write) with
    `primary` true on one of them and `barrier` a cross-host barrier
    (jaxbrr.train.distributed.barrier)."""
    final = dump_dir(workdir, info["step"])
    tmp = final.with_name(final.name + ".tmp")
    if primary:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(f"nan-dump-{info['step']}-folder")
    meta = {"config": config_to_dict(config), "progress": {k: info[k] for k in ("step", "epoch", "batch")},
            "kind": "nan_dump"}
    ocp.Checkpointer(ocp.CompositeCheckpointHandler(*ITEMS)).save(
        (tmp / "checkpoint").absolute(),
        args=ocp.args.Composite(
            model=ocp.args.StandardSave(_savable(_pure(model))),
            optimizer=ocp.args.StandardSave(_savable(_pure(optimizer))),
            meta=ocp.args.JsonSave(meta),
        ),
    )
    if primary:
        np.savez(tmp / "batch.npz", **{k: np.asarray(v) for k, v in batch.items()})
        record = {**info, "rng": rng_streams(model), "replay": replay_command(final),
                  "config": config_to_dict(config)}
        (tmp / "nan.json").write_text(json.dumps(record, indent=1, default=str))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    barrier(f"nan-dump-{info['step']}-done")
    return final
