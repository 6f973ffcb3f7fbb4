"""CHB-MIT and Siena seizure labels in the formats the corpora ship: the one reader of each.

Every reader returns, per EDF file, its seizures as [start, stop) seconds from the recording's
start. A file either is well formed or is an AnnotationError naming the file, the line (or byte)
and what was expected; in the multi-recording files (summaries, lists) that error is per
recording where the line belongs to one. Seizure times are not checked against the recording's length: the label
files do not always know it, and a caller that does reports an event past the end. Where a file gives
a recording's clock times (a summary's File Start/End Time, a list's registration start and end),
the duration they span is returned, and common/data/annotations.py `check_duration` holds it
against the EDF's.

CHB-MIT `chbNN-summary.txt` (CHB-MIT Scalp EEG Database, Shoeb 2009, PhysioNet,
doi:10.13026/C2K01R):

    File Name: chb05_06.edf
    File Start Time: 22:21:25            (optional both; absent in chb24)
    File End Time: 23:21:25
    Number of Seizures in File: 1
    Seizure Start Time: 417 seconds      (or `Seizure 1 Start Time:`; `seconds`, `second` or no unit)
    Seizure End Time: 532 seconds

Seizure times are seconds from the file's start. Clock times may pass 24 h (`24:21:32`) or wrap
past midnight (`23:21:32` to `0:21:39`), so the duration is (end - start) mod 24 h. Other lines
(the sampling rate, `Channel N: ...` listings, `Channels changed:` sections, `****` rules) are
skipped; a line that starts like one of the keys above but does not parse is an error. A block's
start/end pairs must number `Number of Seizures in File`; a file may be listed once. An error in a
block spoils its recording only: its entry is the error, and the summary's others are read.

WFDB `.edf.seizures` (PhysioNet WFDB "MIT format" annotation files, wfdb `annot(5)` man page).
Little-endian 16-bit words, high 6 bits the annotation type A, low 10 bits I:

    A = 0, I = 0     end of file (required: a file without it is truncated)
    A = 59 SKIP      the next 4 bytes are a signed 32-bit interval, high word first, each word
                     little-endian; added to the running time (SKIP's own I is unused)
    A = 60, 61, 62   NUM, SUB, CHN: modify the previous annotation; no time advance
    A = 63 AUX       I bytes of text follow, padded to an even length
    otherwise        an annotation of type A, I samples after the previous one

CHB-MIT marks seizure onset with type 32 ('[') and offset with 33 (']'); other types are skipped.
The running time may go negative transiently (chb01_03.edf.seizures holds a SKIP of -1) but not
at an onset or offset. The annotations' sampling frequency comes from a `## time resolution: 256`
AUX note, else from the `sfreq` argument; both given must agree.

Siena `Seizures-list-PNxx.txt` (Siena Scalp EEG Database, Detti et al. 2020, PhysioNet,
doi:10.13026/5d4a-j060):

    Seizure n 1
    File name: PN00-1.edf
    Registration start time: 19.39.33
    Registration end time: 20.22.58
    Seizure start time: 19.58.36          (or `Start time:`; `.` or `:` between h, m, s)
    Seizure end time: 19.59.46            (or `End time:`)

A block for another seizure of the same file may repeat or omit the `File name` and registration
lines; omitted, the previous block's apply, repeated, they must agree. Times are clock times;
recordings cross midnight, so a time in seconds from the recording's start is
(clock - registration start) mod 24 h, and the duration (registration end - registration start)
mod 24 h. A midnight crossing alone cannot make a seizure end at or before its start (both times
are measured from the same registration start); only an end written at or before its start in
the 24 h cycle can, and that is an error. Typos are returned as written: PN00-3.edf's seizure
ends 19.29.29 while its registration ends 18.57.13, so it reads [765, 4425) s in a 2489 s
recording. A block that cannot be read spoils its recording only: that recording's entry is the
error (PN10's list writes one registration start `1 6.49.25`), and its other recordings keep
their labels. File names are returned as written too (the lists misspell five: `PN01.edf`,
`PNO6-1.edf`; common/data/annotations.py maps them with `data.listed_as`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from common.data.csv_bi import AnnotationError, Event

DAY_SECONDS = 24 * 3600

# WFDB annotation codes (wfdb ecgcodes.h); seizure onset and offset as CHB-MIT uses them.
_SKIP, _NUM, _SUB, _CHN, _AUX = 59, 60, 61, 62, 63
_ONSET, _OFFSET = 32, 33
_TIME_RESOLUTION = re.compile(r"##\s*time resolution:\s*(\S+)")

_CHB_FILE = re.compile(r"file\s*name:\s*(\S+)$", re.I)
_CHB_CLOCK = re.compile(r"file (start|end) time:\s*(\d+):(\d\d):(\d\d)$", re.I)
_CHB_COUNT = re.compile(r"number of seizures in file:\s*(\d+)$", re.I)
_CHB_SEIZURE = re.compile(r"seizure(?:\s+\d+)?\s+(start|end)\s+time:\s*(\d+(?:\.\d*)?)(?:\s*seconds?)?$", re.I)
_CHB_KEYS = ("file", "number of seizures", "seizure")

_SIENA_HEADER = re.compile(r"seizure\s+n(?:o|umber)?\.?\s*\d+$", re.I)
_SIENA_HEADER_KEY = re.compile(r"seizure\s*(?:n\b|n\.|no\b|number|#|\d)", re.I)  # starts like a header
_SIENA_FILE = re.compile(r"file\s*name\s*:\s*(\S+)$", re.I)
_SIENA_FILE_KEY = re.compile(r"file\s*name", re.I)
_SIENA_REGISTRATION = re.compile(r"registration\s+(start|end)\s+time\s*:\s*(.*)$", re.I)
_SIENA_SEIZURE = re.compile(r"(?:seizure\s+)?(start|end)\s+time\s*:\s*(.*)$", re.I)
_SIENA_CLOCK = re.compile(r"(\d{1,2})[.:](\d\d)[.:](\d\d)")

# The Siena v1.0.0 lists' misspelt file names: EDF name -> the name its list gives (PN01's list
# says "PN01.edf", PN06's a letter O for the zero, PN11's "PN11-.edf"; epilepsy2bids' Siena
# loader, github.com/esl-epfl/epilepsy2bids, corrects the same five). The default of config
# data.listed_as.
SIENA_LISTED_AS = {
    "PN01-1.edf": "PN01.edf",
    "PN06-1.edf": "PNO6-1.edf",
    "PN06-2.edf": "PNO6-2.edf",
    "PN06-4.edf": "PNO6-4.edf",
    "PN11-1.edf": "PN11-.edf",
}
_SIENA_KEYS = ("file name", "registration", "seizure", "start time", "end time")


@dataclass(frozen=True)
class NativeLabels:
    """Seizures of one recording from a corpus's own label file."""

    file_name: str  # the EDF file name as the label file spells it, e.g. "chb05_06.edf"
    seizures: tuple[tuple[float, float], ...]  # [start, stop) seconds from the recording's start, sorted
    source: str  # the label file it came from
    duration_seconds: float | None  # what the label file says the recording lasts, when it says
    start_clock: int | None = None  # the clock time (s of the day) the label file says it started at
    duration_from: str | None = field(default=None, compare=False)  # where it says so, for messages


def seizure_events(labels: NativeLabels, label: str = "seiz") -> list[Event]:
    """One TERM Event per seizure, as common/data/csv_bi.py writes them."""
    return [Event(start, stop, label) for start, stop in labels.seizures]


# --- CHB-MIT summary ---------------------------------------------------------------------------


@dataclass
class _ChbBlock:
    name: str
    line: int
    clocks: dict[str, tuple[int, int]] = field(default_factory=dict)  # "start"/"end" -> (seconds, line)
    count: tuple[int, int] | None = None  # (number of seizures, line)
    seizures: list[tuple[float, float]] = field(default_factory=list)
    pending: tuple[float, int] | None = None  # a start time waiting for its end, and its line
    error: AnnotationError | None = None  # the first line of the block that could not be read

    def unreadable(self, error: AnnotationError) -> None:
        self.error = self.error or error


def read_chbmit_summary(path: str | Path) -> dict[str, NativeLabels | AnnotationError]:
    """Parse one CHB-MIT `chbNN-summary.txt`; keys are EDF file names in the order listed.

    As for Siena's lists, a block that cannot be read makes its recording's entry the error
    naming the line, and the summary's other recordings keep their labels; a key line before any
    `File Name:`, an unreadable `File Name:` line, a block's second count or clock (a block
    boundary lost) or a summary without a block raises."""
    path = Path(path)
    blocks: dict[str, _ChbBlock] = {}
    block: _ChbBlock | None = None
    for lineno, line in _lines(path):
        where = f"{path}:{lineno}"
        if match := _CHB_FILE.match(line):
            if block is not None:
                _close_chb_block(block, path)
            name = match.group(1)
            if name in blocks:  # which block holds its seizures is unknown: neither is used
                first = blocks[name]
                first.unreadable(AnnotationError(f"{where}: {name} is listed twice (first at line {first.line}); "
                                                 "each file needs one 'File Name:' block"))
                block = _ChbBlock(name, lineno)  # read for the summary's checks, kept nowhere
                continue
            block = blocks[name] = _ChbBlock(name, lineno)
            continue
        if not line.lower().startswith(_CHB_KEYS):
            continue  # sampling rate, channel listings, rules
        if block is None or re.match(r"file\s*name", line, re.I):
            raise AnnotationError(f"{where}: cannot read {line!r} " + (
                "before any 'File Name: chbNN_MM.edf' line" if block is None else
                "(the lines after it would go to the wrong recording); expected 'File Name: chbNN_MM.edf'"))
        try:
            _chb_line(line, where, lineno, block, path)
        except _LostBlock:
            raise
        except AnnotationError as error:
            block.unreadable(error)
    if block is None:
        raise AnnotationError(f"{path}: no 'File Name:' block; is this a CHB-MIT chbNN-summary.txt?")
    _close_chb_block(block, path)
    return _entries(blocks, lambda each: _chb_labels(each, path))


class _LostBlock(AnnotationError):
    """A line that says a block began where no `File Name:` line is (a block's second count or
    clock): the lines around it belong to no known recording, so the whole summary is refused."""


def _chb_line(line: str, where: str, lineno: int, block: _ChbBlock, path: Path) -> None:
    """Read one clock, count or seizure time line into `block`."""
    if match := _CHB_CLOCK.match(line):
        which = match.group(1).lower()
        if which in block.clocks:
            raise _LostBlock(f"{where}: a second 'File {which.title()} Time' for {block.name}: a 'File Name:' line "
                             "before it is missing or misspelt, and the lines after it would go to the wrong recording")
        block.clocks[which] = (_clock_seconds(match.groups()[1:], where), lineno)
    elif match := _CHB_COUNT.match(line):
        if block.count is not None:
            raise _LostBlock(f"{where}: a second 'Number of Seizures in File' for {block.name}: a 'File Name:' line "
                             "before it is missing or misspelt, and the lines after it would go to the wrong recording")
        block.count = (int(match.group(1)), lineno)
    elif match := _CHB_SEIZURE.match(line):
        seconds = float(match.group(2))
        if match.group(1).lower() == "start":
            if block.pending is not None:
                raise AnnotationError(f"{path}:{block.pending[1]}: seizure start without an end "
                                      f"(the next start is at line {lineno})")
            block.pending = (seconds, lineno)
            return
        if block.pending is None:
            raise AnnotationError(f"{where}: 'Seizure End Time' without a 'Seizure Start Time' before it")
        start, _ = block.pending
        if seconds <= start:
            raise AnnotationError(f"{where}: seizure ends at {seconds} s, not after its start at {start} s")
        block.seizures.append((start, seconds))
        block.pending = None
    else:
        raise AnnotationError(f"{where}: cannot read {line!r}; expected 'File Start Time: HH:MM:SS', "
                              "'Number of Seizures in File: N' or 'Seizure [K] Start/End Time: S seconds'")


def _close_chb_block(block: _ChbBlock, path: Path) -> None:
    """The checks of a whole block, once its lines are read; a failing one spoils its recording."""
    if block.error is not None:
        return
    if block.pending is not None:
        block.unreadable(AnnotationError(f"{path}:{block.pending[1]}: seizure start without an end in {block.name}"))
    elif block.count is None:
        block.unreadable(AnnotationError(f"{path}:{block.line}: {block.name} has no 'Number of Seizures in File: "
                                         "N' line"))
    elif block.count[0] != len(block.seizures):
        block.unreadable(AnnotationError(f"{path}:{block.count[1]}: {block.name} says {block.count[0]} seizures but "
                                         f"lists {len(block.seizures)} start/end pairs"))
    elif len(block.clocks) == 1:
        (which, (_, line)), = block.clocks.items()
        block.unreadable(AnnotationError(f"{path}:{line}: {block.name} has a File {which.title()} Time but not the "
                                         "other; give both or neither"))


def _chb_labels(block: _ChbBlock, path: Path) -> NativeLabels:
    duration, said = None, None
    if block.clocks:
        (start, start_line), (end, line) = block.clocks["start"], block.clocks["end"]
        duration = _clock_difference(start, end, f"{path}:{line}", "File End Time equals File Start Time")
        said = (f"{path}:{start_line} (File Start Time {clock_text(start, ':')}, "
                f"File End Time {clock_text(end, ':')})")
    return NativeLabels(block.name, tuple(sorted(block.seizures)), str(path), duration, duration_from=said)


# --- WFDB annotation file ----------------------------------------------------------------------


def read_wfdb_seizures(path: str | Path, sfreq: float | None = None, edf_sfreq: float | None = None) -> NativeLabels:
    """Parse one CHB-MIT `<edf name>.seizures` WFDB annotation file. `sfreq` (Hz) converts
    sample times to seconds when the file has no `## time resolution` note, and must agree with
    one; `edf_sfreq`, the EDF's rate, only stands in for a missing note (a note counts the
    original record's samples, whatever the EDF was resampled to since)."""
    path = Path(path)
    if not path.name.endswith(".seizures") or path.name == ".seizures":
        raise AnnotationError(f"{path}: expected a CHB-MIT '<edf name>.seizures' annotation file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise AnnotationError(f"{path}: cannot read: {err}") from None

    time, offset = 0, 0  # running time in samples; byte offset of the current word
    onset: tuple[int, int] | None = None  # (sample, byte) of an open seizure
    seizures_samples: list[tuple[int, int]] = []
    resolutions: set[float] = set()
    while True:
        word = _word(data, offset, path, "an annotation word")
        code, interval = word >> 10, word & 0x3FF
        where = f"{path}: byte {offset}"
        if word == 0:
            break
        if code == _SKIP:
            high = _word(data, offset + 2, path, "SKIP's interval")  # high word first
            skip = (high << 16) | _word(data, offset + 4, path, "SKIP's interval")
            time += skip - (1 << 32) if skip >= 1 << 31 else skip
            offset += 6
            continue
        if code == _AUX:
            text_end = offset + 2 + interval
            if text_end > len(data):
                raise AnnotationError(f"{where}: AUX text of {interval} bytes runs past the end of the "
                                      f"{len(data)}-byte file; the file is truncated")
            text = data[offset + 2:text_end].decode("latin-1").rstrip("\0")
            if match := _TIME_RESOLUTION.match(text):
                resolutions.add(_positive(match.group(1), f"{where}: time resolution note {text!r}"))
            offset = text_end + (interval & 1)
            continue
        offset += 2
        if code in (_NUM, _SUB, _CHN):
            continue
        time += interval
        if code not in (_ONSET, _OFFSET):
            continue
        if time < 0:
            raise AnnotationError(f"{where}: seizure {'onset' if code == _ONSET else 'offset'} at "
                                  f"negative sample {time}; the SKIP intervals before it are wrong")
        if code == _ONSET:
            if onset is not None:
                raise AnnotationError(f"{where}: seizure onset at sample {time} while the seizure from "
                                      f"sample {onset[0]} (byte {onset[1]}) has no offset")
            onset = (time, offset - 2)
            continue
        if onset is None:
            raise AnnotationError(f"{where}: seizure offset at sample {time} without an onset before it")
        if time <= onset[0]:
            raise AnnotationError(f"{where}: seizure offset at sample {time}, not after its onset at {onset[0]}")
        seizures_samples.append((onset[0], time))
        onset = None
    if onset is not None:
        raise AnnotationError(f"{path}: byte {onset[1]}: seizure onset at sample {onset[0]} without an offset")

    rate = _annotation_rate(path, resolutions, sfreq if sfreq is not None or resolutions else edf_sfreq)
    seizures = tuple(sorted((start / rate, stop / rate) for start, stop in seizures_samples))
    return NativeLabels(path.name.removesuffix(".seizures"), seizures, str(path), None)


def _word(data: bytes, offset: int, path: Path, what: str) -> int:
    if offset + 2 > len(data):
        raise AnnotationError(f"{path}: byte {offset}: the file ends before {what}; it is truncated "
                              "(a WFDB annotation file ends with a zero word)")
    return int.from_bytes(data[offset:offset + 2], "little")


def _annotation_rate(path: Path, resolutions: set[float], sfreq: float | None) -> float:
    if len(resolutions) > 1:
        raise AnnotationError(f"{path}: conflicting '## time resolution' notes {sorted(resolutions)}")
    if sfreq is not None:
        sfreq = _positive(str(sfreq), f"{path}: sfreq argument")
    if resolutions:
        (note,) = resolutions
        if sfreq is not None and sfreq != note:
            raise AnnotationError(f"{path}: sfreq={sfreq} Hz but the file's time resolution note says "
                                  f"{note} Hz; annotation times are in the note's units, drop sfreq")
        return note
    if sfreq is None:
        raise AnnotationError(f"{path}: no '## time resolution' note; pass sfreq= the sampling "
                              "frequency of the EDF it annotates (256 Hz in CHB-MIT)")
    return sfreq


def _positive(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise AnnotationError(f"{what}: need a finite frequency > 0 Hz, got {text!r}")
    return value


# --- Siena seizure list ------------------------------------------------------------------------


@dataclass
class _SienaFile:
    name: str
    line: int  # of its first 'File name:'
    registration: dict[str, tuple[int, int]] = field(default_factory=dict)  # "start"/"end" -> (clock, line)
    seizures: list[tuple[float, float]] = field(default_factory=list)
    error: AnnotationError | None = None  # the first line of its blocks that could not be read

    def unreadable(self, error: AnnotationError) -> None:
        self.error = self.error or error


def read_siena_list(path: str | Path) -> dict[str, NativeLabels | AnnotationError]:
    """Parse one Siena `Seizures-list-PNxx.txt`; keys are EDF file names in the order listed.

    A recording whose block cannot be read gets the AnnotationError naming the line instead of its
    labels, and the list's other recordings keep theirs: the real PN10 list writes one
    registration start `1 6.49.25`. A line before any `File name:`, an unreadable `File name:` or
    `Seizure n` line (the lines after it would go to the wrong recording) or a list without a
    recording raises."""
    path = Path(path)
    files: dict[str, _SienaFile] = {}
    current: _SienaFile | None = None
    pending: tuple[float, int] | None = None  # seizure start in seconds from the registration start, line
    for lineno, line in _lines(path):
        where = f"{path}:{lineno}"
        header, named = _SIENA_HEADER.match(line), _SIENA_FILE.match(line)
        if header or named:
            if pending is not None:
                current.unreadable(AnnotationError(f"{path}:{pending[1]}: seizure start without an end (line "
                                                   f"{lineno} begins another block)"))
                pending = None
            if named:
                current = files.setdefault(named.group(1), _SienaFile(named.group(1), lineno))
            continue
        if _SIENA_FILE_KEY.match(line) or _SIENA_HEADER_KEY.match(line):
            raise AnnotationError(f"{where}: cannot read {line!r}; expected 'File name: PNxx-n.edf' or "
                                  "'Seizure n N' (the lines after it would go to the wrong recording)")
        try:
            pending = _siena_time(line, path, lineno, current, pending)
        except AnnotationError as error:
            if current is None:
                raise
            current.unreadable(error)
            pending = None
    if pending is not None:
        current.unreadable(AnnotationError(f"{path}:{pending[1]}: seizure start without an end"))
    if not files:
        raise AnnotationError(f"{path}: no 'File name:' line; is this a Siena Seizures-list-PNxx.txt?")
    return _entries(files, lambda file: _siena_labels(file, path))


def _siena_time(line: str, path: Path, lineno: int, current: _SienaFile | None,
                pending: tuple[float, int] | None) -> tuple[float, int] | None:
    """Read one registration or seizure time line into `current`; returns the seizure start
    awaiting its end. Lines that are neither, nor start like one, are skipped."""
    where = f"{path}:{lineno}"
    if match := _SIENA_REGISTRATION.match(line):
        which, clock = match.group(1).lower(), _siena_clock(match.group(2), where)
        if current is None:
            raise AnnotationError(f"{where}: registration time before any 'File name: PNxx-n.edf' line")
        known = current.registration.setdefault(which, (clock, lineno))
        if known[0] != clock:
            raise AnnotationError(f"{where}: registration {which} time of {current.name} differs from "
                                  f"the one at line {known[1]}")
        return pending
    if match := _SIENA_SEIZURE.match(line):
        which, clock = match.group(1).lower(), _siena_clock(match.group(2), where)
        if current is None or "start" not in current.registration:
            raise AnnotationError(f"{where}: seizure time without a 'File name:' and 'Registration "
                                  "start time:' before it")
        seconds = (clock - current.registration["start"][0]) % DAY_SECONDS
        if which == "start":
            if pending is not None:
                raise AnnotationError(f"{path}:{pending[1]}: seizure start without an end")
            _check_start_registered(clock, seconds, current, where)
            return seconds, lineno
        if pending is None:
            raise AnnotationError(f"{where}: seizure end time without a start time before it")
        if seconds <= pending[0]:
            raise AnnotationError(f"{where}: seizure ends {seconds} s after the registration start, not "
                                  f"after its start ({pending[0]} s, line {pending[1]}); check the times")
        current.seizures.append((float(pending[0]), float(seconds)))
        return None
    if line.lower().startswith(_SIENA_KEYS):
        raise AnnotationError(f"{where}: cannot read {line!r}; expected 'File name:', 'Registration "
                              "start/end time: HH.MM.SS' or 'Seizure start/end time: HH.MM.SS'")
    return pending


def _check_start_registered(clock: int, seconds: float, current: _SienaFile, where: str) -> None:
    """A seizure start clock outside the registration it belongs to (a start before the
    registration's, read past midnight, lands almost a day later); ends past the registration end
    are the caller's to report (annotations.py), with the recording's name."""
    if "end" not in current.registration:
        return
    (start, start_line), (end, _) = current.registration["start"], current.registration["end"]
    if end != start and seconds > (end - start) % DAY_SECONDS:  # equal ones: _siena_labels says so
        raise AnnotationError(f"{where}: seizure start time {clock_text(clock)} is not within {current.name}'s "
                              f"registration, {clock_text(start)} to {clock_text(end)} (line {start_line}): "
                              "check the times")


def _siena_labels(file: _SienaFile, path: Path) -> NativeLabels:
    if not file.seizures:  # so a registration start was read too: a seizure line needs one
        raise AnnotationError(f"{path}:{file.line}: {file.name} is listed, yet no seizure start and end time of "
                              "it was read (the lists hold recordings with seizures); check its block's lines")
    duration, said = None, None
    if "end" in file.registration:
        (start, start_line), (end, line) = file.registration["start"], file.registration["end"]
        duration = _clock_difference(start, end, f"{path}:{line}", "registration end equals its start")
        said = f"{path}:{start_line} (registration {clock_text(start)} to {clock_text(end)})"
    start = file.registration["start"][0]
    return NativeLabels(file.name, tuple(sorted(file.seizures)), str(path), duration, start, said)


def clock_seconds(text: str) -> int | None:
    """Seconds of the day of a clock time `hh.mm.ss` (or `hh:mm:ss`), None when `text` is none."""
    try:
        return _siena_clock(text, "")
    except AnnotationError:
        return None


def clock_text(seconds: int, separator: str = ".") -> str:
    """`hh.mm.ss` of seconds since a midnight; hours past 23 kept (CHB-MIT writes `24:21:32`)."""
    return separator.join(f"{part:02d}" for part in (seconds // 3600, seconds // 60 % 60, seconds % 60))


def _siena_clock(text: str, where: str) -> int:
    match = _SIENA_CLOCK.fullmatch(text.strip())
    if not match:
        raise AnnotationError(f"{where}: cannot read the time {text.strip()!r}; expected HH.MM.SS or HH:MM:SS")
    return _clock_seconds(match.groups(), where)


# --- shared ------------------------------------------------------------------------------------


def _entries(records: dict, labels_of) -> dict[str, NativeLabels | AnnotationError]:
    """Each recording's labels, or the error that spoiled its block (a line of it, or the checks
    of the whole block that labels_of makes)."""
    listed: dict[str, NativeLabels | AnnotationError] = {}
    for name, record in records.items():
        try:
            listed[name] = record.error or labels_of(record)
        except AnnotationError as error:
            listed[name] = error
    return listed


def _lines(path: Path) -> list[tuple[int, str]]:
    """Numbered non-empty lines, stripped (the Siena lists end lines with spaces and CRs)."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="strict")
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: cannot read: {err}") from None
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _clock_seconds(parts: tuple[str, ...], where: str) -> int:
    hours, minutes, seconds = (int(p) for p in parts)
    if minutes > 59 or seconds > 59:
        raise AnnotationError(f"{where}: clock time {hours}:{minutes:02d}:{seconds:02d} has minutes or "
                              "seconds past 59")
    return hours * 3600 + minutes * 60 + seconds


def _clock_difference(start: int, end: int, where: str, when_equal: str) -> float:
    """end - start in seconds, mod 24 h: recordings run past midnight, clocks past 24:00."""
    difference = (end - start) % DAY_SECONDS
    if difference == 0:
        raise AnnotationError(f"{where}: {when_equal}; a recording lasts more than 0 s and less than 24 h")
    return float(difference)
