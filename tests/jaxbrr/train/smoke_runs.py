"""What the jaxbrr training-loop tests share (tests/jaxbrr/train/test_loop.py, test_devices.py):
runs of the smoke config on a synthetic corpus in a temporary folder (its fixtures:
tests/jaxbrr/train/conftest.py, which imports this file: JAX is imported where it is used, so
the folder collects without it, as every test folder does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.config import load_config
from common.train.log import read_metrics
from parity.tolerances import EVERY_EDGE, NO_DROPOUT

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "smoke.yaml"
# batch 8: 6 batches per epoch; 8 steps cross an epoch end (a validation at step 6)
RUN = ["train.batch_size=8", "train.epochs=2", "train.max_steps=8", "train.log_every=1"]
# For curves compared across device layouts: the same computation (every device draws its own
# dropout masks) and no top-k near-tie for the layouts' rounding to flip (parity.tolerances).
SAME_MATH = [*NO_DROPOUT, EVERY_EDGE]
PLANTED_NAN = ["model.stability.pe_gradient=full", "model.graph.top_k=1"]


def config_for(tmp_path, data_overrides, *extra, name="run"):
    return load_config(SMOKE, [*data_overrides, *RUN, f"workdir={tmp_path / name}", *extra])


def losses(workdir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(workdir) if r["kind"] == "train"}


def validations(workdir) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in read_metrics(workdir) if r["kind"] == "validation"]


def params(trainer) -> list[np.ndarray]:
    import jax
    from flax import nnx

    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(trainer._objects(trainer.state)[0], nnx.Param))]
