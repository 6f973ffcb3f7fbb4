"""`python -m jaxbrr.train [--config CFG] [--set key=value ...] [--workdir DIR] [--resume]`.

The command line only: it loads the config, prepares the data (generating the synthetic corpus
and building the preprocessed cache on first use) and hands over to the training loop.
"""

from __future__ import annotations

import argparse
import sys

from jaxbrr.config import ConfigError, load_config

DEFAULT_CONFIG = "configs/default.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxbrr.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set train.lr=3e-4 (repeatable)")
    parser.add_argument("--workdir", default=None, help="where checkpoints and logs go (default: config.workdir)")
    parser.add_argument("--resume", action="store_true", help="continue from WORKDIR's last checkpoint")
    args = parser.parse_args(argv)
    overrides = list(args.set) + ([f"workdir={args.workdir}"] if args.workdir else [])
    try:
        config = load_config(args.config, overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from jaxbrr.data.prepare import format_summary, prepare

    prepared = prepare(config)
    print(format_summary(prepared))
    # The optax training loop is the training issue's work; until it lands this command stops
    # here, with the corpus generated and cached.
    print("data ready; the training loop is not implemented yet (see the training issue)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
