"""Progress bars on a terminal only, unless a flag says otherwise; plain lines at most once a
Heartbeat interval in a log (common/progress.py)."""

from __future__ import annotations

import argparse
import io
import sys

import pytest

from common.progress import Heartbeat, ProgressLines, add_progress_argument, plain_lines, wants_bars


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream, bars", [(io.StringIO(), False), (_Terminal(), True)])
def test_no_flag_follows_whether_stderr_is_a_terminal(monkeypatch, stream, bars):
    monkeypatch.setattr(sys, "stderr", stream)
    assert wants_bars(None) is bars
    assert plain_lines(None) is (not bars)


@pytest.mark.parametrize("stream", [io.StringIO(), _Terminal()])
def test_a_flag_wins_and_means_no_plain_lines(monkeypatch, stream):
    monkeypatch.setattr(sys, "stderr", stream)
    assert (wants_bars(True), wants_bars(False)) == (True, False)
    assert not plain_lines(True) and not plain_lines(False)


def test_a_closed_stderr_gets_no_bars(monkeypatch):
    closed = io.StringIO()
    closed.close()  # isatty() raises ValueError
    monkeypatch.setattr(sys, "stderr", closed)
    assert wants_bars(None) is False


def test_the_flag_parses_both_ways_and_defaults_to_none():
    parser = argparse.ArgumentParser()
    add_progress_argument(parser)
    assert parser.parse_args([]).progress is None
    assert parser.parse_args(["--progress"]).progress is True
    assert parser.parse_args(["--no-progress"]).progress is False


def test_heartbeat_is_due_first_then_once_an_interval():
    now = [0.0]
    beat = Heartbeat(60.0, clock=lambda: now[0])
    seen = []
    for t in (0.0, 1.0, 59.9, 60.0, 61.0, 119.9, 120.0, 500.0):
        now[0] = t
        seen.append(beat.due())
    assert seen == [True, False, False, True, False, False, True, True]


def test_progress_lines_come_first_then_once_an_interval_and_at_the_end(capsys):
    """evaluate's windows and threshold sweep in a log (a review's: hours of inference in silence)."""
    now = [0.0]
    lines = ProgressLines("evaluate", 100, "windows", clock=lambda: now[0])
    for t, n in ((10.0, 8), (30.0, 8), (70.0, 24), (100.0, 40), (135.0, 20)):
        now[0] = t
        lines.update(n)
    assert capsys.readouterr().out.splitlines() == [
        "evaluate: 8/100 windows (0:10, about 1:55 left)",  # 10 s for 8: 92 more at that pace
        "evaluate: 40/100 windows (1:10, about 1:45 left)",
        "evaluate: 100/100 windows (2:15)"]
