"""Progress on a terminal, and in a log file.

The long commands (train, predict, evaluate) take `--progress` / `--no-progress`. Without either,
progress bars show when standard error is a terminal and not otherwise: a bar redrawn with
carriage returns is one endless line in a SLURM or nohup log. There the training loop prints a
plain line instead, at most once a `Heartbeat` interval (LOG_LINE_SECONDS).

    add_progress_argument(parser)
    bars = wants_bars(args.progress)        # the flag as given, else: is standard error a terminal?
    lines = plain_lines(args.progress)      # no flag and no terminal: the loop prints plain lines
"""

from __future__ import annotations

import argparse
import sys
import time

LOG_LINE_SECONDS = 60.0


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars (default: only when standard error is a terminal)")


def wants_bars(flag: bool | None) -> bool:
    """--progress / --no-progress as given, else whether standard error is a terminal."""
    if flag is not None:
        return flag
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def plain_lines(flag: bool | None) -> bool:
    """Whether a loop prints plain progress lines: neither flag was given and there are no bars."""
    return flag is None and not wants_bars(flag)


class Heartbeat:
    """`due()` is True at its first call, then at most once every `seconds`."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.seconds, self.clock = seconds, clock
        self.last: float | None = None

    def due(self) -> bool:
        now = self.clock()
        if self.last is not None and now - self.last < self.seconds:
            return False
        self.last = now
        return True


class ProgressLines:
    """What a bar shows, as plain lines for a log file: `update(n)` prints "DESC: done/total UNIT
    (elapsed, about ... left)" at its first call, then at most once every `seconds`, and when the
    total is reached; each line flushed (a bar is one endless line there: module docstring)."""

    def __init__(self, desc: str, total: int, unit: str, seconds: float = LOG_LINE_SECONDS, clock=time.monotonic):
        self.desc, self.total, self.unit, self.clock = desc, total, unit, clock
        self.done, self.start, self.heartbeat = 0, clock(), Heartbeat(seconds, clock)

    def update(self, n: int = 1) -> None:
        self.done += n
        if not (self.heartbeat.due() or self.done >= self.total):
            return
        elapsed = self.clock() - self.start
        left = "" if self.done >= self.total else (
            f", about {_minutes(elapsed / self.done * (self.total - self.done))} left")
        print(f"{self.desc}: {self.done}/{self.total} {self.unit} ({_minutes(elapsed)}{left})", flush=True)


def _minutes(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}:{seconds:02d}"
