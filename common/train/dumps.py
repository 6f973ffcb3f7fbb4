"""The NaN dump: everything needed to replay a non-finite training step, written when one occurs.

    WORKDIR/nan/step_NNNNNN/
        batch.npz     x (B, C, T) float32, y (B, T) float32, valid (B,) bool: the step's batch
        checkpoint/   jaxbrr: the model and optimizer BEFORE the step (an orbax step folder)
        model.pt      torchref: the model's state dict before the step
        nan.json      step, epoch and batch indices, pos_weight, the dropout RNG state, what was
                      non-finite, the error, the replay command, the config, and `windows`:
                      each window's [recording, start in seconds]

NNNNNN is the failing step as metrics.jsonl and the progress lines count steps, from 1 (the
state inside is the one after step NNNNNN - 1). The replay command is
`python -m parity.localize --dump WORKDIR/nan/step_NNNNNN`. The dump is written into a temporary
folder and renamed, so it is complete or absent. On several hosts every host calls write_dump
(a framework's state writer may be a collective write); the primary host (process 0) writes the
folder, batch.npz (the whole global batch) and nan.json.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.config import Config, config_to_dict

NAN_DIR = "nan"


def dump_dir(workdir: str | Path, step: int) -> Path:
    return Path(workdir) / NAN_DIR / f"step_{step:06d}"


def replay_command(path: str | Path) -> str:
    return f"python -m parity.localize --dump {path}"


def write_dump(workdir: str | Path, config: Config, batch: dict[str, np.ndarray], info: dict, rng: dict,
               save_state: Callable[[Path], None], primary: bool = True,
               barrier: Callable[[str], None] = lambda name: None) -> Path:
    """Write the dump of the step that `info` describes ({step, epoch, batch, pos_weight, why,
    error, ...}). `save_state(folder)` writes the framework's state from before the step into
    the (temporary) dump folder; `rng` is its dropout RNG state, JSON-ready; `batch` the whole
    global batch. `barrier(name)` synchronises the hosts (a no-op on one)."""
    final = dump_dir(workdir, info["step"])
    tmp = final.with_name(final.name + ".tmp")
    if primary:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(f"nan-dump-{info['step']}-folder")
    save_state(tmp)
    if primary:
        np.savez(tmp / "batch.npz", **{key: np.asarray(value) for key, value in batch.items()})
        record = {**info, "rng": rng, "replay": replay_command(final), "config": config_to_dict(config)}
        (tmp / "nan.json").write_text(json.dumps(record, indent=1, default=str))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    barrier(f"nan-dump-{info['step']}-done")
    return final
