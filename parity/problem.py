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

from common.checkpoints import CheckpointError
from common.config import Config
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


# the names a batch's labels and mask go by in a .npz or an original debug dump
LABEL_KEYS, VALID_KEYS = ("y", "labels", "target", "targets"), ("valid", "mask")


def read_batch(path: Path) -> Batch:
    """A batch from an .npz (x, and optionally y, valid) or a `.pt` file: the original's debug
    dump (a dict holding the input tensor under `input` or `x`, labels under `labels`/`y`/
    `target(s)`) or a bare (B, C, T) tensor. Read without torch (common/pt.py)."""
    from common.pt import PtError, read_pt

    path = Path(path)
    if not path.is_file():
        raise LocalizeError(f"{path}: no such batch file; pass an .npz (x, y, valid) or the .pt the failing step saved")
    if path.suffix == ".pt":
        try:
            data = read_pt(path)
        except PtError as error:
            raise LocalizeError(str(error)) from None
        if isinstance(data, np.ndarray):
            data = {"x": data}
        if not isinstance(data, dict):
            raise LocalizeError(f"{path}: holds a {type(data).__name__}; expected a tensor or a dict with 'input'")
        data = {("x" if key == "input" else key): value for key, value in data.items()}
    else:
        try:
            data = dict(np.load(path))
        except (OSError, ValueError) as error:
            raise LocalizeError(f"{path}: not a readable .npz ({error}); save one with np.savez(path, x=..., y=...)") from None
    if "x" not in data:
        raise LocalizeError(f"{path}: holds {sorted(data)}, needs 'x' (or 'input'): (B, C, T) float32")
    x = np.asarray(data["x"])
    if x.ndim != 3:
        raise LocalizeError(f"{path}: x has shape {x.shape}, needs (B, C, T)")
    label_key = next((key for key in LABEL_KEYS if key in data), None)
    y = np.asarray(data[label_key], np.float32) if label_key else None
    if y is not None and y.shape != (x.shape[0], x.shape[2]):
        raise LocalizeError(f"{path}: {label_key} has shape {y.shape}, needs (B, T) = {(x.shape[0], x.shape[2])}")
    valid_key = next((key for key in VALID_KEYS if key in data), None)
    valid = np.asarray(data[valid_key], bool) if valid_key else None
    return Batch(x.astype(np.float32), y, valid)


def select_windows(batch: Batch, spec: str, source: str) -> Batch:
    """The windows `spec` names ("2", "0,3"), of x and of labels and valid mask alike. The model
    runs in eval mode, where windows do not interact, so each keeps the values it had in the
    whole batch; only the loss's mean (and so every gradient's scale) is over fewer windows."""
    try:
        picked = [int(part) for part in spec.split(",")]
    except ValueError:
        raise LocalizeError(f"--windows {spec!r}: comma-separated window indices, e.g. --windows 2 or --windows 0,3") from None
    size = batch.x.shape[0]
    if any(not 0 <= i < size for i in picked):
        raise LocalizeError(f"--windows {spec}: {source} holds windows 0..{size - 1}")
    return Batch(batch.x[picked], None if batch.y is None else batch.y[picked],
                 None if batch.valid is None else batch.valid[picked], batch.pos_weight)


def check_batch_shape(config: Config, batch: Batch, source: str) -> None:
    """The batch's shape against the model's, before any model is built: its channels, and a
    length the TCN's downsampling divides (the logits come back at T / stride · stride)."""
    if batch.x.shape[1] != config.model.n_chans:
        raise LocalizeError(f"{source}: the batch has {batch.x.shape[1]} channels, the model "
                            f"({config.model.montage}) needs {config.model.n_chans}; is --config the "
                            "config these weights were trained with?")
    length, stride = batch.x.shape[2], config.model.tcn.stride_down
    if length % stride:
        raise LocalizeError(f"{source}: the batch's length T = {length} is not a multiple of model.tcn.stride_down "
                            f"= {stride}: crop or pad x and y to {length - length % stride} or "
                            f"{length + stride - length % stride} samples")


def load_dump(path: Path) -> Problem:
    """A training NaN dump of either framework: nan.json (config, pos_weight), batch.npz, and the
    state from before the step (jaxbrr checkpoint/ or torchref model.pt)."""
    record_path = path / "nan.json"
    if not record_path.is_file():
        raise LocalizeError(f"{path}: not a NaN dump (no nan.json); training writes them to WORKDIR/nan/step_N")
    record = json.loads(record_path.read_text())
    batch = read_batch(path / "batch.npz")
    batch.pos_weight = float(record.get("pos_weight", 1.0))
    config, weights = load_checkpoint(path, None)
    check_batch_shape(config, batch, str(path))
    why = record.get("why") or record.get("error") or ""
    return Problem(config, weights, batch, f"dump {path} (step {record.get('step')}: {why})".strip())


def load_checkpoint(path: Path, config_path: str | None) -> tuple[Config, dict[str, np.ndarray]]:
    """Neutral weights and config of any kind (parity.convert.read_any: common/checkpoints.py,
    and orbax for a jaxbrr checkpoint without its neutral copy); what it ignored is printed."""
    from parity.convert import read_any

    try:
        weights = read_any(path, config_path)
    except (CheckpointError, ValueError) as error:
        raise LocalizeError(str(error)) from None
    for note in weights.notes:
        print(f"note: {note}")
    return weights.config, weights.arrays
