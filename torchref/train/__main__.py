"""`python -m torchref.train [--config CFG] [--set key=value ...] [--workdir DIR] [--resume]`.

The PyTorch reference run of a config: the same data, sampling, optimiser, schedule, loss,
validation and logs as `python -m jaxbrr.train` (torchref/train/loop.py). The workdir defaults
to the config's workdir + "-torchref", so the two frameworks never share a folder. Exit status:
0 done, 2 bad config or arguments, 3 a non-finite step (the dump is printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from jaxbrr.config import ConfigError, load_config
from jaxbrr.train.__main__ import DEFAULT_CONFIG, EXIT_CONFIG, EXIT_NONFINITE

WORKDIR_SUFFIX = "-torchref"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchref.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set train.lr=3e-4 (repeatable)")
    parser.add_argument("--workdir", default=None,
                        help=f"where checkpoints and logs go (default: config.workdir + {WORKDIR_SUFFIX!r})")
    parser.add_argument("--resume", action="store_true", help="continue from WORKDIR's last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.set)
        config = dataclasses.replace(config, workdir=args.workdir or config.workdir + WORKDIR_SUFFIX)
        from jaxbrr.train.validate import check_metric_name

        check_metric_name(config)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG

    from jaxbrr.data.prepare import format_summary, prepare
    from jaxbrr.train.loop import NonFiniteStep, summary_table
    from torchref.train.loop import Trainer

    prepared = prepare(config, progress=not args.no_progress)
    print(format_summary(prepared))
    try:
        trainer = Trainer(config, resume=args.resume, progress=not args.no_progress, prepared=prepared)
        result = trainer.run()
    except (ConfigError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except NonFiniteStep as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_NONFINITE
    print(summary_table(result, config.train.early_stopping.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
