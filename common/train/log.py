"""What a run writes as it goes: WORKDIR/metrics.jsonl and TensorBoard event files.

metrics.jsonl has one JSON object per line:

    {"kind": "train", "step": 20, "epoch": 0, "loss": .. (this step's), "loss_mean": .. (mean of
     the finite steps since the last line), "grad_norm": .., "lr": .., "pos_weight": .., "skipped": 0,
     "skipped_now": false, "windows_per_s": .., "time": <unix s>}   every train.log_every steps
    {"kind": "validation", "step": 38, "epoch": 1, "auroc": .., "sensitivity": .., ..., "time": ..}
    {"kind": "nan", "step": 7, ...}                               when a step is non-finite

`step` counts training steps from 1: a train or validation line's is the steps done, a nan line's
the step that failed (done by the steps before it). Each line is flushed when written, so a killed run keeps
every line before the kill (at most the last line is cut, and `read_metrics` skips such a line).
On resume from step s the file is rewritten (atomically) to the lines with step <= s, so the
log of a resumed run is the log an uninterrupted run would have written; TensorBoard's writer
purges events after s alike. A new run in a folder that an earlier attempt left logs in (but no
checkpoint) starts both afresh.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from common.files import write_text

METRICS_FILE = "metrics.jsonl"


def _jsonable(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf: "nan", "inf", "-inf"
    return value


def read_metrics(path: str | Path) -> list[dict]:
    """Every complete line of a metrics.jsonl (a cut last line is skipped)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    records = []
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class RunLog:
    def __init__(self, workdir: str | Path, resume_step: int | None = None, tensorboard: bool = True,
                 write_files: bool = True, resume_epoch: int = 0):
        """write_files False (the other hosts of a multi-host run): records kept, nothing written.
        A resume keeps the records up to resume_step, less the validations of epochs from
        resume_epoch (the epoch in progress): a `last` saved at an epoch's last batch precedes its
        validation at the same step, which the resume runs again."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path = self.workdir / METRICS_FILE
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step
                and not (r.get("kind") == "validation" and r.get("epoch", 0) >= resume_epoch)] \
            if resume_step is not None else []
        self.records = kept
        self._file = self._tb = None
        if not write_files:
            return
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = self.path.open("a", buffering=1)
        if tensorboard:
            from tensorboardX import SummaryWriter

            # TensorBoard hides the events at or after this step that earlier event files hold:
            # those of the steps to be redone, or on a fresh start every earlier attempt's
            purge = resume_step + 1 if resume_step is not None else 0
            self._tb = SummaryWriter(str(self.workdir / "tensorboard"), purge_step=purge)

    def write(self, kind: str, step: int, epoch: int, values: dict) -> dict:
        record = {"kind": kind, "step": int(step), "epoch": int(epoch),
                  **{k: _jsonable(v) for k, v in values.items()}, "time": time.time()}
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
        self.records.append(record)
        if self._tb is not None:
            for key, value in values.items():
                value = _jsonable(value)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)
            self._tb.flush()
        return record

    def of_kind(self, kind: str) -> list[dict]:
        return [r for r in self.records if r["kind"] == kind]

    def close(self) -> None:
        """Close both writers, TensorBoard's also where flushing the metrics file fails (a full disk)."""
        try:
            if self._file is not None:
                self._file.close()
        finally:
            if self._tb is not None:
                self._tb.close()
