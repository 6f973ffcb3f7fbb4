"""Where weights are on disk, and of what kind: the one layer every command's loader goes through
(framework-neutral; reading the arrays is the frameworks' part).

    located = locate("runs/default")      # Located(kind="jaxbrr", path=runs/default/checkpoints/best/215)
    meta = jaxbrr_meta(located.path)      # the meta JSON of a jaxbrr step folder: config, progress

Kinds and what `path` is for each:
    jaxbrr       an orbax step folder WORKDIR/checkpoints/<best|last>/<step> (model/, meta/)
    torchref     a torchref training checkpoint WORKDIR/checkpoints/<best|last>/step_NNNNNN.pt
    pt           any other `.pt` file: a state dict or a brain-go-brr v2 checkpoint (telling them
                 apart needs torch.load: torchref's side does it)
    safetensors  a neutral `.safetensors` file (parity/convert.py; config in its metadata)
    nan_dump     a training NaN dump WORKDIR/nan/step_NNNNNN (nan.json, batch.npz, and the
                 state of either framework)

A run folder, or its checkpoints/<kind> folder, resolves to its newest `best` step (else `last`),
of whichever framework wrote it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

KINDS = ("jaxbrr", "torchref", "pt", "safetensors", "nan_dump")
FIX = ("point it at a run folder written by `python -m jaxbrr.train` or `python -m torchref.train` (or its "
       "checkpoints/best|last folder, or one step), a .pt or .safetensors weights file, or a NaN dump folder")


class CheckpointError(ValueError):
    """Weights that cannot be found or read; the message names the path and the fix."""


@dataclass(frozen=True)
class Located:
    kind: str  # one of KINDS
    path: Path  # the concrete file or folder
    given: Path  # what the user named


def _jaxbrr_steps(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    steps = [p for p in folder.iterdir() if p.name.isdigit() and (p / "meta").is_dir()]
    return sorted(steps, key=lambda p: int(p.name))


def _torchref_steps(folder: Path) -> list[Path]:
    return sorted(folder.glob("step_*.pt")) if folder.is_dir() else []


def locate(path: str | Path) -> Located:
    """The kind and concrete location of the weights `path` names; CheckpointError when none."""
    given = Path(path)
    if not given.exists():
        raise CheckpointError(f"{given}: no such file or folder; {FIX}")
    if given.is_file():
        kinds = {".safetensors": "safetensors", ".pt": "pt"}
        if given.suffix not in kinds:
            raise CheckpointError(f"{given}: not a weights file (.pt or .safetensors); {FIX}")
        kind = kinds[given.suffix]
        if kind == "pt" and given.parent.parent.name == "checkpoints" and given.name.startswith("step_"):
            kind = "torchref"
        return Located(kind, given, given)
    if (given / "nan.json").is_file():
        return Located("nan_dump", given, given)
    if (given / "meta").is_dir():
        return Located("jaxbrr", given, given)
    for kind in ("best", "last"):
        for folder in (given / "checkpoints" / kind, given / kind, given if given.name == kind else None):
            if folder is None:
                continue
            if steps := _jaxbrr_steps(folder):
                return Located("jaxbrr", steps[-1], given)
            if steps := _torchref_steps(folder):
                return Located("torchref", steps[-1], given)
    raise CheckpointError(f"{given}: holds no checkpoint (no checkpoints/best or /last with a step in it); {FIX}")


def jaxbrr_meta(step_dir: str | Path) -> dict:
    """The meta item of a jaxbrr step folder (orbax writes it as JSON): config, progress, time."""
    path = Path(step_dir) / "meta" / "metadata"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{step_dir}: unreadable checkpoint metadata {path} ({error}); {FIX}") from None
