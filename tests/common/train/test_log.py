"""The run's logs (common/train/log.py): metrics.jsonl and TensorBoard events start afresh for a
new run in a folder an earlier attempt wrote logs into, and keep the steps before a resume."""

from __future__ import annotations

import struct
import time

from tensorboardX.proto.event_pb2 import Event

from common.train.log import RunLog, read_metrics


def _events(path) -> list[Event]:
    """The records of a TFRecord event file: length (u64), its CRC, the bytes, their CRC."""
    data, out, at = path.read_bytes(), [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        event = Event()
        event.ParseFromString(data[at + 12:at + 12 + length])
        out.append(event)
        at += 12 + length + 4
    return out


def _purge_steps(folder) -> list[int]:
    """The steps of the START session logs: TensorBoard hides earlier files' events from there on."""
    steps = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        steps += [e.step for e in _events(path) if e.HasField("session_log") and e.session_log.status == 1]
    return steps


def test_a_fresh_start_hides_an_earlier_attempts_events_and_a_resume_those_after_it(tmp_path):
    log = RunLog(tmp_path)
    for step in (1, 2, 3):
        log.write("train", step, 0, {"loss": float(step)})
    log.close()
    assert _purge_steps(tmp_path / "tensorboard") == [0]  # a fresh start: every earlier event
    time.sleep(1.1)  # an event file is named by the second it was opened in

    resumed = RunLog(tmp_path, resume_step=2)
    assert [r["step"] for r in resumed.records] == [1, 2] == [r["step"] for r in read_metrics(tmp_path)]
    resumed.close()
    assert sorted(_purge_steps(tmp_path / "tensorboard")) == [0, 3]
    time.sleep(1.1)

    again = RunLog(tmp_path)  # a new run where the attempt left logs but no checkpoint
    assert again.records == [] and read_metrics(tmp_path) == []
    again.close()
    assert sorted(_purge_steps(tmp_path / "tensorboard")) == [0, 0, 3]
