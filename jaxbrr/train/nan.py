"""jaxbrr's NaN dump: common/train/dumps.py's layout, with the model and optimizer from before
the step saved as an orbax checkpoint (jaxbrr.train.checkpoint.load_model and the localiser read
it) and the dropout RNG streams (key data and call count) in nan.json.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from common.config import Config, config_to_dict
from common.train import dumps
from jaxbrr.train.checkpoint import ITEMS, _pure, _savable


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
    """common.train.dumps.write_dump with `model` and `optimizer` (the state from before the
    step) as an orbax checkpoint. On several hosts every host calls this (the checkpoint is a
    collective write) with `primary` true on one of them and `barrier` a cross-host barrier
    (jaxbrr.train.distributed.barrier)."""
    meta = {"config": config_to_dict(config), "progress": {k: info[k] for k in ("step", "epoch", "batch")},
            "kind": "nan_dump"}

    def save_state(folder: Path) -> None:
        ocp.Checkpointer(ocp.CompositeCheckpointHandler(*ITEMS)).save(
            (folder / "checkpoint").absolute(),
            args=ocp.args.Composite(
                model=ocp.args.StandardSave(_savable(_pure(model))),
                optimizer=ocp.args.StandardSave(_savable(_pure(optimizer))),
                meta=ocp.args.JsonSave(meta),
            ),
        )

    return dumps.write_dump(workdir, config, batch, info, rng_streams(model), save_state, primary, barrier)
