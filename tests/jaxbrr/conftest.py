"""Tiny checkpoints saved the way training saves them, shared by the predict and evaluate tests.

Session-scoped: each is built once; models of one config share one compiled predict program
(jaxbrr/predict.py jits on the static graph definition).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import Config, config_to_dict, load_config

# JAX is imported where it is used: this file loads before its folder's tests, and without JAX
# installed (torchref alone) those are skipped, naming it (../../conftest.py), where an import
# here would stop the whole run.

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"


def save_checkpoint(workdir: Path, config: Config, step: int = 1) -> Path:
    """An untrained model's `best` checkpoint under workdir, as jaxbrr.train.loop writes it."""
    from flax import nnx

    from jaxbrr.model import SeizureDetector
    from jaxbrr.train.checkpoint import Checkpoints
    from jaxbrr.train.optim import make_nnx_optimizer
    from jaxbrr.weights import to_neutral

    model = SeizureDetector(config.model, rngs=nnx.Rngs(config.train.seed))
    optimizer = make_nnx_optimizer(model, config.train, 1)
    checkpoints = Checkpoints(workdir, keep=1)
    try:
        checkpoints.save("best", step, model, optimizer,
                         {"config": config_to_dict(config), "progress": {"step": step}}, to_neutral(model))
    finally:
        checkpoints.close()
    return workdir


def tiny_config(montage: str, *overrides: str) -> Config:
    return load_config(TINY, [f"data.montage={montage}", f"model.montage={montage}", *overrides])


@pytest.fixture(scope="session")
def bipolar_run(tmp_path_factory) -> Path:
    """A run folder holding a tiny bipolar (23-channel, CHB-MIT) model's best checkpoint."""
    return save_checkpoint(tmp_path_factory.mktemp("bipolar-run"), tiny_config("bipolar"))


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory) -> Path:
    """A run folder holding a tiny ref19 model whose config points at a small synthetic corpus:
    four 40-50 s recordings of two patients, one seizure each; one patient is the dev split."""
    root = tmp_path_factory.mktemp("synthetic-run")
    config = tiny_config(
        "ref19",
        f"data.data_dir={root / 'edf'}", f"data.cache_dir={root / 'cache'}",
        "data.synthetic={recordings: 4, patients: 2, duration_seconds: [40, 50], sfreqs: [256], "
        "seizures_per_recording: [1, 1], seed: 3}",
        "data.split.dev_fraction=0.5", "eval.threshold_steps=19",
    )
    return save_checkpoint(root / "run", config)
