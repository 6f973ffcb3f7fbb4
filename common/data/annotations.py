"""Training labels from annotation files: which events are seizures, and the per-sample mask.

The files (TUSZ `.csv_bi` term files and per-channel `.csv` files) are read by
common/data/csv_bi.py, strictly: a malformed row is an error that names the file and line, never
skipped (a silently dropped seizure row turns a seizure into background). Here every label must
be a configured seizure or background label; per-channel files reduce to the union of their
seizure intervals.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.data.csv_bi import AnnotationError, Event, read_csv_bi

SEIZURE_LABELS: tuple[str, ...] = (
    "seiz", "gnsz", "fnsz", "cpsz", "absz", "spsz", "tcsz", "tnsz", "mysz",
)
BACKGROUND_LABELS: tuple[str, ...] = ("bckg",)


@dataclass
class Annotations:
    path: str
    duration_seconds: float | None
    events: list[Event] = field(default_factory=list)

    def seizures(self, seizure_labels: Iterable[str] = SEIZURE_LABELS) -> list[tuple[float, float]]:
        """Seizure intervals, the union over channels, sorted and merged where they overlap."""
        labels = set(seizure_labels)
        spans = sorted((e.start_seconds, e.stop_seconds) for e in self.events if e.label in labels)
        merged: list[list[float]] = []
        for start, stop in spans:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], stop)
            else:
                merged.append([start, stop])
        return [(a, b) for a, b in merged]


def read_annotations(
    path: str | Path,
    seizure_labels: Iterable[str] = SEIZURE_LABELS,
    background_labels: Iterable[str] = BACKGROUND_LABELS,
) -> Annotations:
    """A TUSZ `.csv_bi` (term) or `.csv` (per-channel) file, through common/data/csv_bi.py's
    reader, with every label checked against the configured seizure and background labels.
    Raises AnnotationError naming the file, the line and the fix."""
    path = Path(path)
    record = read_csv_bi(path, per_channel=path.suffix == ".csv")
    known = set(seizure_labels) | set(background_labels)
    for event in record.events:
        if event.label not in known:
            raise AnnotationError(
                f"{path}: unknown label {event.label!r} (at {event.start_seconds} s); known seizure labels "
                f"{sorted(set(seizure_labels))}, background {sorted(set(background_labels))}. Add it to "
                "data.seizure_labels or data.background_labels in the config if it is meant."
            )
    return Annotations(str(path), record.duration_seconds, list(record.events))


@dataclass
class LabelReport:
    events: int = 0
    seizure_seconds: float = 0.0
    clipped_events: int = 0  # events running past the end of the signal, cut at the end
    dropped_events: int = 0  # events starting at or after the end of the signal
    overlapping_events: int = 0  # seizure events of one channel overlapping another


def seizure_mask(
    annotations: Annotations,
    n_samples: int,
    sfreq: float,
    seizure_labels: Iterable[str] = SEIZURE_LABELS,
) -> tuple[np.ndarray, LabelReport]:
    """Per-sample 0/1 labels (uint8) of length n_samples at sfreq, with what had to be cut.

    Sample i covers [i/sfreq, (i+1)/sfreq); it is seizure when an event covers its start
    (start floored, stop exclusive, as the original's events_to_binary_mask).
    """
    labels = set(seizure_labels)
    report = LabelReport()
    mask = np.zeros(n_samples, dtype=np.uint8)
    end_seconds = n_samples / sfreq
    by_channel: dict[str, list[Event]] = {}
    for event in annotations.events:
        if event.label not in labels:
            continue
        report.events += 1
        by_channel.setdefault(event.channel, []).append(event)
        if event.start_seconds >= end_seconds:
            report.dropped_events += 1
            continue
        if event.stop_seconds > end_seconds:
            report.clipped_events += 1
        start = int(np.floor(event.start_seconds * sfreq))
        stop = min(int(np.floor(event.stop_seconds * sfreq)), n_samples)
        mask[start:stop] = 1
    for events in by_channel.values():
        events.sort(key=lambda e: e.start_seconds)
        report.overlapping_events += sum(
            1 for a, b in zip(events, events[1:], strict=False) if b.start_seconds < a.stop_seconds
        )
    report.seizure_seconds = float(mask.sum()) / sfreq
    return mask, report
