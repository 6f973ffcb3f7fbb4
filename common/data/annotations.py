"""TUSZ annotations: `.csv_bi` (term-based, channel TERM) and `.csv` (per-channel) files.

Format (TUH's csv_v1.0.0): `#` comment lines, one of them `# duration = 1831.00 secs`, a header
row `channel,start_time,stop_time,label,confidence`, then one event per row. A malformed row is an
error that names the file and line, never skipped: a silently dropped seizure row turns a seizure
into background. Per-channel files are reduced to the union of their seizure intervals.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.files import write_text

SEIZURE_LABELS: tuple[str, ...] = (
    "seiz", "gnsz", "fnsz", "cpsz", "absz", "spsz", "tcsz", "tnsz", "mysz",
)
BACKGROUND_LABELS: tuple[str, ...] = ("bckg",)
HEADER = ("channel", "start_time", "stop_time", "label", "confidence")
_DURATION = re.compile(r"duration\s*=\s*([0-9.eE+-]+)\s*(secs?|s)?\s*$")


class AnnotationError(ValueError):
    """A malformed annotation file; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Event:
    start_seconds: float
    stop_seconds: float
    label: str
    channel: str = "TERM"
    confidence: float = 1.0


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
    """Parse a TUSZ `.csv_bi` or `.csv` file. Raises AnnotationError on any malformed row."""
    path = Path(path)
    known = set(seizure_labels) | set(background_labels)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: cannot read annotation file: {err}") from None
    duration = None
    events: list[Event] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            match = _DURATION.search(line[1:].strip())
            if match:
                duration = float(match.group(1))
            continue
        fields = [f.strip() for f in line.split(",")]
        if fields[0].lower() == "channel":
            continue
        where = f"{path}:{lineno}"
        if len(fields) < 4:
            raise AnnotationError(
                f"{where}: expected 'channel,start_time,stop_time,label[,confidence]', got {raw!r}"
            )
        try:
            start, stop = float(fields[1]), float(fields[2])
            confidence = float(fields[4]) if len(fields) > 4 and fields[4] else 1.0
        except ValueError:
            raise AnnotationError(f"{where}: start/stop/confidence are not numbers in {raw!r}") from None
        if not (np.isfinite(start) and np.isfinite(stop)) or start < 0 or stop <= start:
            raise AnnotationError(f"{where}: need 0 <= start < stop, got start={start}, stop={stop}")
        label = fields[3]
        if label not in known:
            raise AnnotationError(
                f"{where}: unknown label {label!r}; known seizure labels {sorted(set(seizure_labels))}, "
                f"background {sorted(set(background_labels))}. Add it to data.seizure_labels or "
                f"data.background_labels in the config if it is meant."
            )
        events.append(Event(start, stop, label, fields[0], confidence))
    return Annotations(str(path), duration, events)


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


def write_csv_bi(
    path: str | Path,
    events: Iterable[Event],
    duration_seconds: float,
    background_label: str = "bckg",
    fill_background: bool = False,
) -> None:
    """Write a TUSZ csv_v1.0.0 term file atomically (4 decimals as TUH writes them).

    fill_background: also write `bckg` rows for the gaps, as TUSZ's own `.csv_bi` files do.
    """
    path = Path(path)
    rows = sorted(events, key=lambda e: e.start_seconds)
    if fill_background:
        filled, cursor = [], 0.0
        for e in rows:
            if e.start_seconds > cursor:
                filled.append(Event(cursor, e.start_seconds, background_label))
            filled.append(e)
            cursor = max(cursor, e.stop_seconds)
        if cursor < duration_seconds:
            filled.append(Event(cursor, duration_seconds, background_label))
        rows = filled
    lines = [
        "# version = csv_v1.0.0",
        f"# bname = {path.stem}",
        f"# duration = {duration_seconds:.4f} secs",
        ",".join(HEADER),
    ]
    lines += [
        f"{e.channel},{e.start_seconds:.4f},{e.stop_seconds:.4f},{e.label},{e.confidence:.4f}"
        for e in rows
    ]
    write_text(path, "\n".join(lines) + "\n")
