"""Load a brain-go-brr v2 (V3 dual-stream) checkpoint into torchref's SeizureDetector.

    model, report = load_original_checkpoint("last.pt", load_config("configs/default.yaml").model)

The key table, what it ignores and refuses, and the report are common/original.py's (shared with
jaxbrr's loader); here the renamed state dict is loaded into torchref's model with strict=True.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from common.config import ModelConfig
from common.original import LoadReport, original_state, rename_original
from common.pt import read_pt, torch_compatible
from common.shown import shown_inline
from torchref.model import SeizureDetector


def from_original_state_dict(
    state_dict: dict[str, torch.Tensor], config: ModelConfig, source: str | None = None
) -> tuple[SeizureDetector, LoadReport]:
    """Build torchref's SeizureDetector for `config` and fill it from an original V3 state dict."""
    model = SeizureDetector(config)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    renamed, report = rename_original(state_dict, expected, config, source)
    model.load_state_dict(renamed, strict=True)
    return model, report


def load_original_checkpoint(
    path: str | Path, config: ModelConfig
) -> tuple[SeizureDetector, LoadReport]:
    """Read an original `.pt` (train/loop.py's save_checkpoint dict with `model_state_dict`, a bare
    state dict, or either under a wrapper: common/original.py `original_state`) with common/pt.py's
    reader (tensors, containers and numbers only, as torch.load(weights_only=True), and the config's
    pathlib paths as text), then from_original_state_dict."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint file not found")
    saved = read_pt(path)  # a PtError (ValueError) names the file and what it holds
    try:
        found = original_state(saved)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if found is None:
        keys = shown_inline(sorted(map(str, saved))) if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(
            f"{path}: neither a checkpoint with `model_state_dict` nor a state dict of the original's keys "
            f"(`tcn_encoder.` ...; top level: {keys})"
        )
    state, unwrapped, _ = found
    tensors = {key: torch.from_numpy(torch_compatible(value)) for key, value in state.items()}
    model, report = from_original_state_dict(tensors, config, source=str(path))
    return model, dataclasses.replace(report, notes=(*unwrapped, *report.notes))
