"""Stopping a run on request without losing its steps: SIGINT (Ctrl-C) and SIGTERM (what a
cluster's scheduler sends before it preempts a job).

    with StopRequests(active=True) as stop:
        ... a step ...
        if stop.received: save a `last` checkpoint, raise Interrupted

While the loop runs, the first signal only sets `received` (and says so on stderr); the loop
finishes the step in flight, saves a `last` checkpoint there and raises Interrupted, and
`--resume` continues exactly (a mid-epoch `last` is exact, as train.checkpoint_every's are). A
second Ctrl-C stops at once (KeyboardInterrupt), losing the steps since the newest checkpoint.

Only on one host: with several, every host would have to agree on the step to save at (orbax
saves collectively), so there the signals keep their default meaning and train.checkpoint_every
bounds what a preemption loses. The handlers are installed only from the main thread (Python's
rule) and the previous ones restored on exit.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(RuntimeError):
    """The run stopped on a signal after saving a `last` checkpoint at `step`."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path):
        super().__init__(f"stopped by {signal_name} at step {step}; saved {checkpoint}")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended."""
        return 128 + int(signal.Signals[self.signal_name])


class StopRequests:
    def __init__(self, active: bool = True):
        self.active = active and threading.current_thread() is threading.main_thread()
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        if self.active:
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame) -> None:
        if self.received is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(number).name
        # os.write, not print: the signal may arrive while the main thread is inside a print
        os.write(2, f"\n{self.received}: stopping after this step and saving a checkpoint to resume from "
                    "(Ctrl-C again stops at once, losing the steps since the last checkpoint)\n".encode())
