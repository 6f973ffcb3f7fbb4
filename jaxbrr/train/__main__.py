"""`python -m jaxbrr.train [--config CFG] [--set key=value ...] [--workdir DIR] [--resume]`.

With no arguments: configs/default.yaml, which generates the synthetic corpus on first use,
caches it, trains the reduced V3 model and prints its validation metrics. Exit status: 0 done,
2 bad config or arguments, 3 a non-finite step (the dump and the replay command are printed).

NaN debugging (README "Debugging NaNs"):
    JAX_DEBUG_NANS=1 python -m jaxbrr.train ...          stop at the first NaN inside a step
    python -m jaxbrr.train --set train.checkify=true     name the op and source line of the NaN
    python -m jaxbrr.train --set train.nan_policy=skip   skip non-finite steps, count them
"""

from __future__ import annotations

import argparse
import sys

from jaxbrr.config import ConfigError, load_config

DEFAULT_CONFIG = "configs/default.yaml"
EXIT_CONFIG, EXIT_NONFINITE = 2, 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxbrr.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set train.lr=3e-4 (repeatable)")
    parser.add_argument("--workdir", default=None, help="where checkpoints and logs go (default: config.workdir)")
    parser.add_argument("--resume", action="store_true", help="continue from WORKDIR's last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    overrides = list(args.set) + ([f"workdir={args.workdir}"] if args.workdir else [])
    try:
        config = load_config(args.config, overrides)
        from jaxbrr.train.validate import check_metric_name

        check_metric_name(config)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG

    from jaxbrr.data.prepare import format_summary, prepare
    from jaxbrr.train.loop import NonFiniteStep, Trainer, summary_table

    prepared = prepare(config, progress=not args.no_progress)
    print(format_summary(prepared))
    try:
        trainer = Trainer(config, resume=args.resume, progress=not args.no_progress, prepared=prepared)
        result = trainer.run()
    except (ConfigError, FileExistsError, ValueError) as err:  # bad config, data or setup
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except NonFiniteStep as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_NONFINITE
    print(summary_table(result, config.train.early_stopping.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
