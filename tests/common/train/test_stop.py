"""SIGINT and SIGTERM while a run trains (common/train/stop.py): the first only asks the loop to
stop (it saves a checkpoint first: tests/jaxbrr/train/test_loop.py), a second Ctrl-C stops at
once, and the handlers that were there before come back."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from common.train.stop import Interrupted, StopRequests


def test_the_first_signal_asks_a_second_ctrl_c_stops_and_the_old_handlers_return(capfd):
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    with StopRequests() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == "SIGTERM"  # the process lives on; the loop decides where to stop
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert {number: signal.getsignal(number) for number in before} == before
    assert "SIGTERM: stopping after this step and saving a checkpoint" in capfd.readouterr().err


def test_off_the_main_thread_nothing_is_installed():
    """Python installs signal handlers from the main thread only; a loop run elsewhere keeps the
    defaults rather than failing."""
    seen = []

    def body():
        with StopRequests() as stop:
            seen.append((stop.active, signal.getsignal(signal.SIGTERM)))

    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert seen == [(False, signal.getsignal(signal.SIGTERM))]


@pytest.mark.parametrize(("name", "status"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_the_exit_status_is_the_shells_for_the_signal(tmp_path, name, status):
    stopped = Interrupted(name, 7, tmp_path / "checkpoints" / "last" / "7")
    assert stopped.exit_status == status
    assert str(stopped) == f"stopped by {name} at step 7; saved {tmp_path / 'checkpoints' / 'last' / '7'}"
