"""`python -m torchref.train [--config CFG] [--set key=value ...] [--workdir DIR] [--resume]`.

The PyTorch reference run of a config: the same data, sampling, optimiser, schedule, loss,
validation and logs as `python -m jaxbrr.train` (torchref/train/loop.py), through the same
command code (common.train.cli.run). The workdir defaults to the config's workdir +
"-torchref", so the two frameworks never share a folder. Exit status: 0 done, 2 bad config,
data or arguments, or out of memory, 3 a non-finite step (the dump is printed).
"""

from __future__ import annotations

import sys

from common.train.cli import run

WORKDIR_SUFFIX = "-torchref"


def _torch_trainer() -> type:
    from torchref.train.loop import Trainer

    return Trainer


def main(argv: list[str] | None = None) -> int:
    return run(argv, "python -m torchref.train", __doc__, _torch_trainer, WORKDIR_SUFFIX)


if __name__ == "__main__":
    sys.exit(main())
