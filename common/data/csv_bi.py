"""TUSZ `.csv_bi` term files and per-channel `.csv` files: the one reader and writer of the format.

Format (TUH csv_v1.0.0, as in TUSZ v2 and NEDC nedc_eeg_eval v6.0.0's sample data):

    # version = csv_v1.0.0
    # bname = aaaaaasf_s001_t000
    # duration = 1289.0000 secs
    # montage_file = nedc_eas_default_montage.txt
    #
    channel,start_time,stop_time,label,confidence
    TERM,42.2786,81.7760,seiz,1.0000

Glossary
    record     one file: its name, duration and events
    event      one row: [start, stop) seconds on channel TERM, a label and a confidence in [0, 1]
    bname      the file stem (TUSZ's convention, NEDC's Csv.write_header); optional here, but one
               beside an EDF must name that EDF (common/data/annotations.py `read_annotations`)

A file either is well formed or is an error naming the file and line (AnnotationError): the
version line must come first, comments only before the column header, rows after it; every row
has five fields, finite times with 0 <= start < stop <= duration and a confidence in [0, 1]. In
a `.csv_bi` file every row is on channel TERM and rows do not overlap (they may touch); in a
per-channel `.csv` file (`per_channel=True`) rows name their channel and may overlap. A file of
background only may hold no rows. Training labels (which labels count as seizure) are read
through common/data/annotations.py.

Writing is atomic (a temporary file in the same folder, then os.replace), with four decimals as
TUSZ and NEDC write them; an event that four decimals would collapse or reorder is an error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from common.files import write_text

VERSION = "csv_v1.0.0"
HEADER = "channel,start_time,stop_time,label,confidence"
DEFAULT_MONTAGE = "nedc_eas_default_montage.txt"
_KEY_VALUE = re.compile(r"#\s*(\w+)\s*=\s*(.*?)\s*$")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s+secs?")


class AnnotationError(ValueError):
    """A malformed annotation file; the message names the file, the line and what was expected."""


@dataclass(frozen=True)
class Event:
    """One row: [start, stop) seconds, a label, the channel (TERM for term-based rows), a confidence."""

    start_seconds: float
    stop_seconds: float
    label: str
    channel: str = "TERM"
    confidence: float = 1.0


@dataclass(frozen=True)
class CsvBi:
    path: str  # the file it was read from (or will be written to)
    duration_seconds: float
    events: tuple[Event, ...]  # sorted by start, non-overlapping
    montage_file: str | None = None
    bname: str | None = None  # the `# bname` line's, None when the line is absent or empty

    @property
    def name(self) -> str:
        """The file name, the key that pairs a reference with its hypothesis."""
        return Path(self.path).name


def read_csv_bi(path: str | Path, per_channel: bool = False) -> CsvBi:
    """Parse one `.csv_bi` file (or, per_channel, a TUSZ per-channel `.csv` file). Raises
    AnnotationError (a ValueError) on anything malformed."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig", errors="strict").splitlines()  # -sig: a byte-order mark, as an editor may save
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: cannot read: {err}") from None
    numbered = [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered or not _is_version(numbered[0][1]):
        where = f"{path}:{numbered[0][0]}" if numbered else f"{path}"
        found = repr(numbered[0][1]) if numbered else "an empty file"
        raise AnnotationError(f"{where}: expected '# version = {VERSION}' first, found {found}")

    header: dict[str, str] = {}
    rows_from = None
    for index, (lineno, line) in enumerate(numbered):
        if line.startswith("#"):
            match = _KEY_VALUE.match(line)
            if match:
                header[match.group(1).lower()] = match.group(2)
            continue
        if line.replace(" ", "") != HEADER:
            raise AnnotationError(f"{path}:{lineno}: expected the column header '{HEADER}', found {line!r}")
        rows_from = index + 1
        break
    if rows_from is None:
        raise AnnotationError(f"{path}: no column header '{HEADER}' after the comment lines")
    if "duration" not in header:
        raise AnnotationError(f"{path}: no '# duration = N.NNNN secs' line before the column header")
    match = _DURATION.fullmatch(header["duration"])
    duration = float(match.group(1)) if match else math.nan
    if not (math.isfinite(duration) and duration > 0):
        raise AnnotationError(f"{path}: duration must read 'N.NNNN secs' with N > 0, found {header['duration']!r}")

    events: list[Event] = []
    for lineno, line in numbered[rows_from:]:
        previous = None if per_channel or not events else events[-1]
        events.append(_parse_row(line, f"{path}:{lineno}", duration, previous, per_channel))
    return CsvBi(str(path), duration, tuple(events), header.get("montage_file"), header.get("bname") or None)


def _is_version(line: str) -> bool:
    match = _KEY_VALUE.match(line)
    return bool(match) and match.group(1).lower() == "version" and match.group(2) == VERSION


def _parse_row(line: str, where: str, duration: float, previous: Event | None, per_channel: bool) -> Event:
    if line.startswith("#"):
        raise AnnotationError(f"{where}: comment after the column header; comments belong before it")
    fields = [f.strip() for f in line.split(",")]
    if len(fields) != 5:
        raise AnnotationError(f"{where}: expected 5 fields '{HEADER}', got {len(fields)} in {line!r}")
    channel, start_text, stop_text, label, confidence_text = fields
    if channel != "TERM" and not per_channel:
        raise AnnotationError(f"{where}: channel {channel!r}: .csv_bi rows are term-based (TERM); "
                              "per-channel annotations belong in a .csv file")
    try:
        start, stop, confidence = float(start_text), float(stop_text), float(confidence_text)
    except ValueError:
        raise AnnotationError(f"{where}: start_time, stop_time and confidence must be numbers in {line!r}") from None
    if not all(math.isfinite(v) for v in (start, stop, confidence)):
        raise AnnotationError(f"{where}: non-finite number in {line!r}")
    if start == stop and 0 <= start <= duration:
        raise AnnotationError(f"{where}: a zero-length event at {start} s (start = stop) marks no sample and "
                              "overlaps nothing: delete the row")
    if not 0 <= start < stop <= duration:
        fix = (f"the file's own `duration = {duration:g} secs` ends before this event: correct the event or "
               "the duration line (the EDF's length is the duration)" if 0 <= start < stop else
               "correct the row's times")
        raise AnnotationError(f"{where}: need 0 <= start < stop <= duration ({duration}), "
                              f"got start={start}, stop={stop}; {fix}")
    if not 0 <= confidence <= 1:
        raise AnnotationError(f"{where}: confidence must lie in [0, 1], got {confidence}")
    if not label:
        raise AnnotationError(f"{where}: empty label in {line!r}")
    if previous is not None and start < previous.stop_seconds:
        raise AnnotationError(f"{where}: event starts at {start} before the previous one ends "
                         f"({previous.stop_seconds}); rows must be sorted and must not overlap")
    return Event(start, stop, label, channel, confidence)


def written_by_line(program: str) -> str:
    """The header comment naming the program that wrote a file, `# written_by = jaxbrr.predict`.
    NEDC v6.0.0 (nedc_eeg_ann_tools.py Csv.load) skips every comment line but duration and
    montage_file, and read_csv_bi keeps only the keys it uses: both read the file as without it."""
    return f"# written_by = {program}"


def written_by(path: str | Path, program: str) -> bool:
    """Whether a .csv_bi file's header comments hold `program`'s written_by line (False for a file
    that cannot be read: not known to be the program's)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            for line in handle:
                if not line.startswith("#"):  # the column header: the comments are over
                    return False
                if line.strip() == written_by_line(program):
                    return True
    except OSError:
        return False
    return False


def format_csv_bi(events: Iterable[Event], duration_seconds: float, bname: str,
                  montage_file: str = DEFAULT_MONTAGE, written_by: str | None = None) -> str:
    """The text of a `.csv_bi` file: TUSZ's six header lines (and, with `written_by`, the
    program's line before the closing `#`), then one TERM row per event."""
    events = list(events)
    if not (math.isfinite(duration_seconds) and duration_seconds > 0):
        raise ValueError(f"duration_seconds must be finite and > 0, got {duration_seconds}")
    lines = [
        f"# version = {VERSION}",
        f"# bname = {bname}",
        f"# duration = {duration_seconds:.4f} secs",
        f"# montage_file = {montage_file}",
        *([written_by_line(written_by)] if written_by else []),
        "#",
        HEADER,
    ]
    previous_stop = 0.0
    for i, e in enumerate(events):
        start, stop = round(e.start_seconds, 4), round(e.stop_seconds, 4)
        if e.channel != "TERM":
            raise ValueError(f"event {i}: channel {e.channel!r}; .csv_bi events are TERM")
        if not (math.isfinite(e.confidence) and 0 <= e.confidence <= 1):
            raise ValueError(f"event {i}: confidence must lie in [0, 1], got {e.confidence}")
        if not previous_stop <= start < stop <= round(duration_seconds, 4):
            raise ValueError(
                f"event {i} [{e.start_seconds}, {e.stop_seconds}) s: at 4 decimals events must be "
                f"sorted, non-overlapping, non-empty and within [0, {duration_seconds}] s"
            )
        previous_stop = stop
        lines.append(f"TERM,{start:.4f},{stop:.4f},{e.label},{e.confidence:.4f}")
    return "\n".join(lines) + "\n"


def write_csv_bi(path: str | Path, events: Iterable[Event], duration_seconds: float,
                 montage_file: str = DEFAULT_MONTAGE, written_by: str | None = None) -> Path:
    """Write `events` atomically as a `.csv_bi` file whose bname is the file stem."""
    path = Path(path)
    write_text(path, format_csv_bi(events, duration_seconds, path.stem, montage_file, written_by))
    return path


def with_background(events: Iterable[Event], duration_seconds: float, label: str = "bckg") -> list[Event]:
    """The events sorted, with `label` rows filling every gap up to duration, as TUSZ's own
    `.csv_bi` files hold them."""
    filled, cursor = [], 0.0
    for event in sorted(events, key=lambda e: e.start_seconds):
        if event.start_seconds > cursor:
            filled.append(Event(cursor, event.start_seconds, label))
        filled.append(event)
        cursor = max(cursor, event.stop_seconds)
    if cursor < duration_seconds:
        filled.append(Event(cursor, duration_seconds, label))
    return filled
