"""The command both training CLIs share: `python -m jaxbrr.train` and `python -m torchref.train`
call `run` with their framework's Trainer (a common.train.loop.Loop subclass).

    [--config CFG] [--set key=value ...] [--workdir DIR] [--resume | --init-from CKPT] [--[no-]progress]

Exit status: 0 done, 2 bad config, data or arguments, or out of device memory (the one-line
error names the settings that shrink it; the checkpoints saved before it stay), 3 a non-finite
step (the dump and the replay command are printed), 130 or 143 stopped by SIGINT (Ctrl-C) or
SIGTERM: on one host the step in flight finishes and a `last` checkpoint is saved there first,
and the command that continues the run is printed (common/train/stop.py); a second Ctrl-C, or
one before training starts, stops at once. The config and the arguments against the
workdir (--resume, --init-from, checkpoints already there, a workdir that cannot be written) are
checked before any data is read and before the framework is imported.

Without --config: configs/default.yaml of the current folder, else the repository's (found from
this file; the package is installed editable from the repository). The config's relative paths
are taken from the current folder either way.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from common.checkpoints import last_steps, run_config
from common.config import DEFAULT_CONFIG_HELP, ConfigError, default_config, load_config
from common.files import check_writable_folder
from common.out_of_memory import out_of_memory_line
from common.progress import add_progress_argument, plain_lines, wants_bars

EXIT_CONFIG, EXIT_NONFINITE = 2, 3
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a write the disk, a quota or a size limit refused


def out_of_memory_advice(error: BaseException, config) -> str | None:
    """The one-line answer to running out of memory in training, or None for any other error."""
    first = out_of_memory_line(error)
    if first is None:
        return None
    shrink = [f"a smaller train.batch_size (now {config.train.batch_size}) or eval.batch_size "
              f"(now {config.eval.batch_size})"]
    if not config.model.remat:
        shrink.insert(0, "model.remat=true (the scans recomputed in the backward pass: less memory, more time)")
    if config.model.precision == "float32":
        shrink.append("model.precision=bfloat16")
    return (f"out of memory training {config.model.architecture} at batch {config.train.batch_size} of "
            f"{config.data.window_seconds:g} s windows ({first}); set {', or '.join(shrink)} "
            "(README, \"Training on GPUs and clusters\")")


def resume_command(prog: str, argv: list[str]) -> str:
    """The command line that continues the run `argv` started: the same arguments, --init-from
    dropped (the run now has its own checkpoints), --resume added."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--init-from":
            skip = True
        elif not arg.startswith("--init-from="):
            kept.append(arg)
    if "--resume" not in kept:
        kept.append("--resume")
    return " ".join([prog, *map(shlex.quote, kept)])


def run(argv: list[str] | None, prog: str, doc: str, trainer_class: Callable[[], type],
        workdir_suffix: str = "") -> int:
    """Parse the arguments, check the config before any compute, prepare the data, train, print
    the summary. `trainer_class` is called only after the config checks (it may import a framework)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help=DEFAULT_CONFIG_HELP + "; or a run folder or weights "
                        "file: the config they were trained with")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set train.lr=3e-4 (repeatable)")
    parser.add_argument("--workdir", default=None,
                        help=f"where checkpoints and logs go (default: config.workdir{' + ' + repr(workdir_suffix) if workdir_suffix else ''})")
    parser.add_argument("--resume", action="store_true", help="continue from WORKDIR's last checkpoint")
    parser.add_argument("--init-from", metavar="CKPT",
                        help="start from these weights (any kind: a jaxbrr or torchref run or checkpoint, a .pt, "
                             "a .safetensors, a brain-go-brr v2 checkpoint) with a fresh optimizer")
    add_progress_argument(parser)
    args = parser.parse_args(argv)
    bars, lines = wants_bars(args.progress), plain_lines(args.progress)
    try:
        config = run_config(args.config, args.set) if args.config else load_config(default_config(), args.set)
        # a torchref run folder as --config holds its suffixed workdir already: the run itself
        suffixed = config.workdir if config.workdir.endswith(workdir_suffix) else config.workdir + workdir_suffix
        config = dataclasses.replace(config, workdir=args.workdir or suffixed)
        from common.train.compat import check_init_config, check_start
        from common.train.validate import check_metric_name

        check_metric_name(config)
        # --resume against the workdir's checkpoints (and their config), before any data is read
        check_start(config, args.resume, args.init_from, prog.split()[-1].removesuffix(".train"))  # the twin
        if args.init_from:  # the weights' values, and their model against the config's, before any data is read
            from common.checkpoints import check_finite, loaded_tensors, weights_config

            if (loaded := loaded_tensors(args.init_from)) is not None:
                check_finite(loaded[1], loaded[0])  # NaN weights would stop the run at its first step
            theirs = weights_config(args.init_from, config)
            if theirs is not None:
                check_init_config(config, theirs, args.init_from)
        # a read-only workdir: one line now, not orbax's traceback at the first checkpoint
        check_writable_folder(config.workdir, "workdir", "pass --workdir DIR, a folder you can write to")
        check_writable_folder(config.data.cache_dir, "data.cache_dir", "set data.cache_dir (--set "
                              "data.cache_dir=DIR) to a folder you can write to")  # the build writes there
        trainer_class().check_placement(config)  # the devices against the mesh and batch, before the data
    except (ConfigError, FileExistsError, FileNotFoundError, ValueError) as err:  # CheckpointError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG

    from common.train.lock import hold, release

    try:
        # one trainer per workdir, before the data; a multi-host run's host 0 takes it once it knows
        # it is host 0 (Loop._hold_workdir)
        if not config.train.distributed.initialize:
            try:
                hold(config.workdir)
            except OSError as err:  # WorkdirBusy is a FileExistsError
                print(f"error: {err}", file=sys.stderr)
                return EXIT_CONFIG
        return _prepare_and_train(config, args, prog, argv, trainer_class, bars, lines)
    finally:
        release(config.workdir)  # held here or by the trainer; nothing where neither took it


def _prepare_and_train(config, args, prog: str, argv, trainer_class: Callable[[], type], bars: bool,
                       lines: bool) -> int:
    """run()'s second half, with the workdir held: the data, the trainer, the summary."""
    from common.data.prepare import SPLITS_FILE, format_summary, prepare
    from common.train.loop import NonFiniteStep, summary_table
    from common.train.stop import Interrupted

    try:
        # a resumed run keeps the split it started with (common/data/prepare.py SPLITS_FILE)
        prepared = prepare(config, progress=bars, plain_lines=lines,
                           keep_split=Path(config.workdir) / SPLITS_FILE if args.resume else None)
    except (FileNotFoundError, ValueError) as err:  # data_dir, the generator's folder, the split
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:  # the cache keeps every recording built so far (atomic writes)
        print("interrupted while preparing the data; the recordings cached so far are kept", file=sys.stderr)
        return 128 + signal.SIGINT
    print(format_summary(prepared))
    try:
        trainer = trainer_class()(config, resume=args.resume, progress=bars, prepared=prepared,
                                  init_from=args.init_from, plain_lines=lines)
        result = trainer.run()
    except (ConfigError, FileExistsError, ValueError) as err:  # bad config, data, weights or setup
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except NonFiniteStep as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_NONFINITE
    except Interrupted as stopped:
        print(f"{stopped}\ncontinue with: {resume_command(prog, sys.argv[1:] if argv is None else argv)}",
              file=sys.stderr)
        return stopped.exit_status
    except OSError as err:  # a disk that filled, a workdir gone read-only, a cache file gone: what was saved stays
        saved = last_steps(config.workdir)
        once = "once there is room" if err.errno in NO_ROOM else "once that is fixed"
        then = (f"the newest checkpoint is {saved[-1]}; {once}, continue with: "
                f"{resume_command(prog, sys.argv[1:] if argv is None else argv)}" if saved
                else f"{config.workdir} holds no checkpoint yet: {once}, start again")
        print(f"error: {err}\n{then}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        saved = last_steps(config.workdir)
        print(f"interrupted: the steps since {saved[-1]} are lost (one Ctrl-C saves a checkpoint first)" if saved
              else f"interrupted before {config.workdir} held a checkpoint: start again, without --resume "
                   "(one Ctrl-C saves a checkpoint first)", file=sys.stderr)
        return 128 + signal.SIGINT
    except (RuntimeError, MemoryError) as err:  # XLA's and torch's are RuntimeErrors; only memory is answered
        advice = out_of_memory_advice(err, config)
        if advice is None:
            raise
        print(f"error: {advice}", file=sys.stderr)
        return EXIT_CONFIG
    print(summary_table(result, config.train.early_stopping.metric))
    return 0
