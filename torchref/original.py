"""Load a brain-go-brr v2 (V3 dual-stream) checkpoint into torchref's SeizureDetector.

    model, report = load_original_checkpoint("last.pt", load_config("configs/default.yaml").model)

The key table, what it ignores and refuses, and the report are common/original.py's (shared with
jaxbrr's loader); here the renamed state dict is loaded into torchref's model with strict=True.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from common.config import ModelConfig
from common.original import LoadReport, rename_original
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
    """Read an original `.pt` (train/loop.py's save_checkpoint dict with `model_state_dict`, or a
    bare state dict) with torch.load(weights_only=True), then from_original_state_dict."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint file not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: torch.load(weights_only=True) refused it ({err}); re-save its "
            "`model_state_dict` alone with torch.save"
        ) from err
    if isinstance(checkpoint, dict) and "model_state_dict" in checkpoint:
        state_dict = checkpoint["model_state_dict"]
    elif isinstance(checkpoint, dict) and all(torch.is_tensor(v) for v in checkpoint.values()):
        state_dict = checkpoint
    else:
        keys = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(
            f"{path}: neither a checkpoint with `model_state_dict` nor a bare state dict "
            f"(top level: {keys})"
        )
    return from_original_state_dict(state_dict, config, source=str(path))
