"""What the localiser runs, and where it comes from: weights in torch's state-dict names and
layout, a batch, a config (`Problem`), loaded from a training NaN dump of either framework, a
checkpoint with a batch file, or built by a scenario (parity/scenarios.py). Bad input raises
LocalizeError naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import torchref.model as tmodel
from common.checkpoints import CheckpointError, locate
from common.config import Config, config_from_dict, config_to_dict, load_config
from parity.runs import Batch


@dataclass
class Problem:
    """What the localiser runs: weights (torch state-dict names and layout), a batch, a config."""

    config: Config
    weights: dict[str, np.ndarray]
    batch: Batch
    source: str
    # A scenario's change to one side after the weights are loaded (e.g. drift: one LayerNorm's
    # eps); called as prepare(torch_model, jax_model) for every dtype.
    prepare: object | None = None
    expected: dict | None = None  # scenarios: {"verdict": ..., "tap": ...}
    notes: list[str] = field(default_factory=list)


class LocalizeError(ValueError):
    """Bad input: the message names the file and the fix."""


def batch_hash(x: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()[:12]


def read_batch(path: Path) -> Batch:
    try:
        data = np.load(path)
    except (OSError, ValueError) as error:
        raise LocalizeError(f"{path}: not a readable .npz ({error}); save one with np.savez(path, x=..., y=...)") from None
    if "x" not in data:
        raise LocalizeError(f"{path}: holds {sorted(data.files)}, needs 'x' (B, C, T) float32")
    x = np.asarray(data["x"])
    if x.ndim != 3:
        raise LocalizeError(f"{path}: x has shape {x.shape}, needs (B, C, T)")
    y = np.asarray(data["y"], np.float32) if "y" in data else None
    if y is not None and y.shape != (x.shape[0], x.shape[2]):
        raise LocalizeError(f"{path}: y has shape {y.shape}, needs (B, T) = {(x.shape[0], x.shape[2])}")
    valid = np.asarray(data["valid"], bool) if "valid" in data else None
    return Batch(x.astype(np.float32), y, valid)


def _weights_of_jax(model) -> dict[str, np.ndarray]:
    from parity.convert import _jax_arrays, plan

    return _jax_arrays(plan(model))


def check_channels(config: Config, batch: Batch, source: str) -> None:
    if batch.x.shape[1] != config.model.n_chans:
        raise LocalizeError(f"{source}: the batch has {batch.x.shape[1]} channels, the model "
                            f"({config.model.montage}) needs {config.model.n_chans}")


def load_dump(path: Path) -> Problem:
    """A training NaN dump: nan.json (config, pos_weight), batch.npz, checkpoint/ or model.pt."""
    record_path = path / "nan.json"
    if not record_path.is_file():
        raise LocalizeError(f"{path}: not a NaN dump (no nan.json); training writes them to WORKDIR/nan/step_N")
    record = json.loads(record_path.read_text())
    config = config_from_dict(record["config"], source=str(record_path))
    batch = read_batch(path / "batch.npz")
    batch.pos_weight = float(record.get("pos_weight", 1.0))
    if (path / "checkpoint").is_dir():
        from jaxbrr.train.checkpoint import load_model

        _, model = load_model(path / "checkpoint")
        weights = _weights_of_jax(model)
    elif (path / "model.pt").is_file():
        weights = {k: v.numpy() for k, v in torch.load(path / "model.pt", weights_only=True,
                                                        map_location="cpu").items()}
    else:
        raise LocalizeError(f"{path}: the dump holds neither checkpoint/ (jaxbrr) nor model.pt (torchref)")
    check_channels(config, batch, str(path))
    why = record.get("why") or record.get("error") or ""
    return Problem(config, weights, batch, f"dump {path} (step {record.get('step')}: {why})".strip())


def load_checkpoint(path: Path, config_path: str | None) -> tuple[Config, dict[str, np.ndarray]]:
    """Weights (torch names and layouts) and config of any kind common.checkpoints.locate finds."""
    try:
        located = locate(path)
    except CheckpointError as error:
        raise LocalizeError(str(error)) from None
    path = located.path
    if located.kind == "jaxbrr":
        from jaxbrr.train.checkpoint import load_model

        config, model = load_model(path)
        return config, _weights_of_jax(model)
    if located.kind == "safetensors":
        from parity.convert import config_from_metadata, load_weights, read_metadata

        metadata = read_metadata(path)
        config = load_config(config_path)
        if metadata.get("config") is not None:
            tree = config_to_dict(config)
            tree["model"] = config_to_dict(config_from_metadata(metadata))
            config = config_from_dict(tree, source=f"{path} (model) + {config_path or 'defaults'} (train)")
        model = tmodel.SeizureDetector(config.model)
        load_weights(path, model)
        return config, {k: v.numpy() for k, v in model.state_dict().items()}
    if located.kind in ("torchref", "pt"):
        saved = torch.load(path, weights_only=True, map_location="cpu")
        if isinstance(saved, dict) and "model" in saved and "meta" in saved:  # torchref training checkpoint
            config = config_from_dict(saved["meta"]["config"], source=str(path))
            return config, {k: v.numpy() for k, v in saved["model"].items()}
        if config_path is None:
            raise LocalizeError(f"{path}: a bare state dict carries no config; pass --config CFG")
        return load_config(config_path), {k: v.numpy() for k, v in saved.items()}
    raise LocalizeError(f"{path}: a NaN dump folder; pass it with --dump, not --checkpoint")
