"""`python -m jaxbrr.train [--config CFG] [--set key=value ...] [--workdir DIR] [--resume]`.

With no arguments: configs/default.yaml, which generates the synthetic corpus on first use,
caches it, trains the reduced V3 model and prints its validation metrics. Exit status: 0 done,
2 bad config, data or arguments, or out of memory (one line naming what shrinks it), 3 a
non-finite step (the dump and the replay command are printed).

NaN debugging (README "Debugging NaNs"):
    JAX_DEBUG_NANS=1 python -m jaxbrr.train ...          stop at the first NaN inside a step
    python -m jaxbrr.train --set train.checkify=true     name the op and source line of the NaN
    python -m jaxbrr.train --set train.nan_policy=skip   skip non-finite steps, count them

The command itself is common.train.cli.run; `python -m torchref.train` calls it with
torchref's Trainer.
"""

from __future__ import annotations

import sys

from common.train.cli import run


def _jax_trainer() -> type:
    from jaxbrr.train.loop import Trainer

    return Trainer


def main(argv: list[str] | None = None) -> int:
    return run(argv, "python -m jaxbrr.train", __doc__, _jax_trainer)


if __name__ == "__main__":
    sys.exit(main())
