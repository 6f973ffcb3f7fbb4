"""Training labels from annotation files: which events are seizures, and the per-sample mask.

Where a recording's labels come from (`labels_for`), first found wins:

    <stem>.csv_bi, <stem>.csv   beside the EDF (TUSZ's files, or any written for the recording)
    chbmit                      chbNN-summary.txt (its folder or the one above) and/or
                                <name>.edf.seizures; when both speak they must agree
    siena                       Seizures-list-PNxx.txt (its folder or the one above)

A corpus's own file that lists a recording under a misspelt name is read under the name
`data.listed_as` maps it to (by default Siena v1.0.0's five, native_labels.SIENA_LISTED_AS).
A CHB-MIT recording its summary leaves out and without a .seizures file (chb24's ten) is refused,
or read as seizure-free where `data.chbmit_unlisted` says so (see `_chbmit_unlisted`).

TUSZ files are read by common/data/csv_bi.py and the corpora's own by common/data/native_labels.py,
strictly: a malformed row is an error that names the file and line, never skipped (a silently
dropped seizure row turns a seizure into background), and a recording no label file speaks for
is an error, never taken as seizure-free. Here every label must be a configured seizure or
background label; per-channel files reduce to the union of their seizure intervals. A `.csv_bi`
beside an EDF must name that EDF in its `# bname` line if it has one, and a label file that says how
long the recording lasts (a `.csv_bi`'s duration, a summary's or list's clock times) must say the
EDF's length (`check_duration`): either differing means another recording's labels. Label files
and entries that speak for no EDF present are listed (`labels_without_edf`), not refused.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from common.data import native_labels
from common.data.corpora import name_prefix
from common.data.csv_bi import AnnotationError, Event, read_csv_bi
from common.data.native_labels import SIENA_LISTED_AS

T = TypeVar("T")

SEIZURE_LABELS: tuple[str, ...] = (
    "seiz", "gnsz", "fnsz", "cpsz", "absz", "spsz", "tcsz", "tnsz", "mysz",
)
BACKGROUND_LABELS: tuple[str, ...] = ("bckg",)


NATIVE_LABEL = "seiz"  # the label the corpora's own files' seizures get
AGREEMENT_SECONDS = 1.0  # CHB-MIT summaries give whole seconds; .seizures files give samples


@dataclass
class Annotations:
    path: str  # the label file(s) read, joined by " + " (for messages)
    # what the label file says the recording lasts: a .csv_bi's `duration`, the span of a CHB-MIT
    # summary's File Start/End Time or a Siena list's registration times; None where it does not say
    duration_seconds: float | None
    events: list[Event] = field(default_factory=list)
    files: tuple[str, ...] = ()  # the label files read; default (path,)
    listed_as: str | None = None  # the name a corpus's own label file lists it under, when not its own
    unlisted: bool = False  # seizure-free because data.chbmit_unlisted says so, not because a file says
    duration_from: str | None = None  # a corpus's own file's clock times that give duration_seconds

    def __post_init__(self):
        self.files = self.files or (self.path,)

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
    edf: Path | None = None,
) -> Annotations:
    """A TUSZ `.csv_bi` (term) or `.csv` (per-channel) file, through common/data/csv_bi.py's
    reader, with every label checked against the configured seizure and background labels and,
    given the `edf` it labels, its `# bname` against that EDF's stem (a file copied from another
    recording keeps the other's name). Raises AnnotationError naming the file, the line and the fix."""
    path = Path(path)
    record = read_csv_bi(path, per_channel=path.suffix == ".csv")
    if edf is not None and record.bname is not None and record.bname != edf.stem:
        raise AnnotationError(
            f"{path}: says bname = {record.bname}, but it labels {edf.name} (stem {edf.stem}), so it may be "
            f"{record.bname}'s labels copied here; if they are {edf.name}'s, correct the line to "
            f"'# bname = {edf.stem}' or delete it, else put {edf.stem}'s own labels there"
        )
    known = set(seizure_labels) | set(background_labels)
    for event in record.events:
        if event.label not in known:
            raise AnnotationError(
                f"{path}: unknown label {event.label!r} (at {event.start_seconds} s); known seizure labels "
                f"{sorted(set(seizure_labels))}, background {sorted(set(background_labels))}. Add it to "
                "data.seizure_labels or data.background_labels in the config if it is meant."
            )
    return Annotations(str(path), record.duration_seconds, list(record.events))


def annotation_file(edf: Path) -> Path | None:
    """`<stem>.csv_bi` (term-based) if present, else `<stem>.csv` (per-channel), else None."""
    for suffix in (".csv_bi", ".csv"):
        candidate = edf.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def label_inputs(edf: Path, corpus: str) -> list[Path]:
    """The label files present now that labels_for consults for `edf` (the module docstring's
    order), used or not: labels cached from others are stale (a chbNN-summary.txt put beside a
    recording that its .seizures file alone labelled, which the two must then agree with)."""
    beside = annotation_file(edf)
    if beside is not None:
        return [beside]
    found = [_corpus_list(edf, corpus), wfdb_file(edf) if corpus == "chbmit" else None]
    return [path for path in found if path is not None and path.is_file()]


# the corpus's own label list, by the patient prefix of a recording's name
CORPUS_LISTS = {"chbmit": "{}-summary.txt", "siena": "Seizures-list-{}.txt"}


def _corpus_list(edf: Path, corpus: str) -> Path | None:
    """A CHB-MIT recording's chbNN-summary.txt or a Siena one's Seizures-list-PNxx.txt, in its
    folder or the one above; None for another corpus, a name without the corpus's prefix, or none found."""
    prefix = name_prefix(edf.stem, corpus) if corpus in CORPUS_LISTS else None
    return _nearby(edf, CORPUS_LISTS[corpus].format(prefix)) if prefix else None


TUSZ_V1_SUFFIXES = (".tse_bi", ".tse", ".lbl_bi", ".lbl")  # TUSZ v1.x's label files (v2.0 replaced them by .csv_bi and .csv)


def labels_for(
    edf: str | Path,
    corpus: str,
    seizure_labels: Iterable[str] = SEIZURE_LABELS,
    background_labels: Iterable[str] = BACKGROUND_LABELS,
    listed_as: Iterable[tuple[str, str]] = SIENA_LISTED_AS.items(),
    chbmit_unlisted: str = "refuse",
) -> Annotations:
    """The labels of one recording (the module docstring's order); AnnotationError when there are
    none or they contradict each other, naming the files and the fix. `listed_as` (config
    `data.listed_as`) gives the name a corpus's own label file misspells a recording's as;
    `chbmit_unlisted` (config `data.chbmit_unlisted`) what a CHB-MIT recording no file speaks for is."""
    edf = Path(edf)
    beside = annotation_file(edf)
    if beside is not None:
        return read_annotations(beside, seizure_labels, background_labels, edf)
    if corpus not in ("chbmit", "siena"):
        older = [edf.with_suffix(suffix) for suffix in TUSZ_V1_SUFFIXES if edf.with_suffix(suffix).is_file()]
        if older:
            raise AnnotationError(
                f"{edf}: no annotation file ({edf.with_suffix('.csv_bi').name} or {edf.with_suffix('.csv').name}); "
                f"{older[0].name} beside it is TUSZ v1.x's label format, which is not read: use TUSZ v2.0.x "
                "(its .csv_bi files hold the same labels, revised), or write a .csv_bi for each recording")
        raise AnnotationError(
            f"{edf}: no annotation file ({edf.with_suffix('.csv_bi').name} or {edf.with_suffix('.csv').name}); "
            "a recording without labels cannot be trained or scored: add one (a background-only file has "
            "one 'TERM,0,<duration>,bckg' row), or set data.corpus if this is CHB-MIT or Siena"
        )
    if NATIVE_LABEL not in set(seizure_labels):
        raise AnnotationError(f"{edf}: the {corpus} label files' seizures are labelled {NATIVE_LABEL!r}, which "
                              "data.seizure_labels leaves out: add it")
    if corpus == "chbmit":
        sources, native = _chbmit_labels(edf, dict(listed_as), chbmit_unlisted)
    else:
        sources, native = _siena_labels(edf, dict(listed_as))
    events = native_labels.seizure_events(native, NATIVE_LABEL)
    alias = native.file_name if native.file_name != edf.name else None
    unlisted = native.source == _UNLISTED
    path = f"not in {sources[0]}: seizure-free by data.chbmit_unlisted" if unlisted else " + ".join(map(str, sources))
    return Annotations(path, native.duration_seconds, events, tuple(map(str, sources)), alias, unlisted=unlisted,
                       duration_from=native.duration_from)


def labels_of(edf: str | Path, corpus: str, data) -> Annotations:
    """labels_for under a config's data section (common.config.DataConfig): its seizure and
    background labels, listed_as and chbmit_unlisted; what build, inspect and labels call."""
    return labels_for(edf, corpus, data.seizure_labels, data.background_labels, data.listed_as, data.chbmit_unlisted)


def labels_without_edf(data_dir: str | Path, corpus: str,
                       listed_as: Iterable[tuple[str, str]] = SIENA_LISTED_AS.items()) -> list[dict]:
    """The label files under data_dir, and the entries of a corpus's own ones, that speak for no EDF
    present ({"source", "reason"}, by source): a `.csv_bi` without its `<stem>.edf` beside it; for
    `chbmit` a `.edf.seizures` without its EDF, and for `chbmit` and `siena` a summary's or list's
    entry with no EDF of its name (nor one that `listed_as` lists under it) in the file's folder or
    one below, where labels_for looks. No recording reads their labels: a build lists them (a
    partial download, a renamed or deleted EDF), never refuses them. A file that cannot be read at
    all is left to the recordings it speaks for, which report it."""
    data_dir = Path(data_dir)

    def found(pattern: str) -> list[Path]:  # glob.glob: it enters symlinked folders (cache.find_recordings)
        return sorted(data_dir / name for name in glob.glob(pattern, root_dir=data_dir, recursive=True))

    def edf_beside(label: Path) -> bool:  # its suffix in any case, as data.edf_glob's default finds it
        return any(p.stem == label.stem and p.suffix.lower() == ".edf" for p in label.parent.iterdir())

    lonely = [{"source": str(p), "reason": f"no {p.with_suffix('.edf').name} beside it"}
              for p in found("**/*.csv_bi") if not edf_beside(p)]
    if corpus == "chbmit":
        for wfdb in found("**/*.edf.seizures"):
            edf = wfdb.with_name(wfdb.name.removesuffix(".seizures"))
            if not edf.is_file():
                lonely.append({"source": str(wfdb), "reason": f"no {edf.name} beside it"})
    pattern, read = {"chbmit": ("**/chb*-summary.txt", native_labels.read_chbmit_summary),
                     "siena": ("**/Seizures-list-*.txt", native_labels.read_siena_list)}.get(corpus, ("", None))
    listed_name_of = {listed: name for name, listed in dict(listed_as).items()}
    for listing in found(pattern) if read is not None else []:
        try:
            entries = read(listing)
        except AnnotationError:
            continue
        folders = [listing.parent, *(p for p in listing.parent.iterdir() if p.is_dir())]
        for name, entry in entries.items():
            names = [name] + ([listed_name_of[name]] if name in listed_name_of else [])
            if any((folder / each).is_file() for folder in folders for each in names):
                continue
            what = "unreadable" if isinstance(entry, AnnotationError) else f"{len(entry.seizures)} seizure(s)"
            lonely.append({"source": str(listing), "reason": f"lists {name} ({what}), which is not in its folder "
                                                             "or one below"})
    return sorted(lonely, key=lambda item: item["source"])


def wfdb_file(edf: Path) -> Path:
    """`<name>.edf.seizures`: CHB-MIT's WFDB seizure annotations of one recording."""
    return edf.with_name(edf.name + ".seizures")


def wfdb_files(folder: Path) -> list[Path]:
    """The `.edf.seizures` files in a folder (any case: `.EDF.seizures` too)."""
    return sorted(p for p in folder.iterdir() if p.name.lower().endswith(".edf.seizures"))


def _nearby(edf: Path, name: str) -> Path | None:
    return next((folder / name for folder in (edf.parent, edf.parent.parent) if (folder / name).is_file()), None)


def _entry(entries: dict[str, T], edf: Path, listing: Path, listed_as: dict[str, str]) -> T | None:
    """The label file's entry for `edf`: under its own name, else under the one listed_as gives."""
    alias = listed_as.get(edf.name)
    if edf.name in entries:
        if alias in entries:  # one recording, two entries: reading one would drop the other's seizures
            raise AnnotationError(f"{edf}: {listing} lists it as {edf.name} and, by data.listed_as, as {alias}: "
                                  f"write its seizures as {edf.with_suffix('.csv_bi').name} beside the EDF, or take "
                                  f"{edf.name} out of data.listed_as if {alias} is another recording")
        return entries[edf.name]
    if alias not in entries:
        return None
    if edf.with_name(alias).is_file():
        raise AnnotationError(f"{edf}: data.listed_as reads it as {listing.name}'s {alias!r}, but {alias} is a "
                              f"recording of its own beside it: take {edf.name} out of data.listed_as")
    return entries[alias]


def _misspelt(edf: Path, entries: Iterable[str], listed_as: dict[str, str]) -> str:
    """For a recording a Siena list does not name: when it is the one EDF in its folder that the
    list does not name and exactly one entry is no EDF beside it (nor another's by listed_as),
    that entry is likely its name misspelt; the mapping to set, the pairs in force kept. Anything
    else (a partial download, several unlisted) offers no guess."""
    entries = list(entries)
    claimed = set(listed_as.values())
    orphans = [name for name in entries if name not in claimed and not edf.with_name(name).is_file()]
    unlisted = [f for f in edf.parent.iterdir() if f.suffix.lower() == ".edf" and f.name not in entries
                and listed_as.get(f.name) not in entries]
    if len(orphans) != 1 or unlisted != [edf]:
        return ""
    mapping = ", ".join(f"{k}: {v}" for k, v in {**listed_as, edf.name: orphans[0]}.items())
    return (f"; the list's one entry that no EDF beside it is called is {orphans[0]}: if that is this recording "
            f"misspelt (its start time is checked against this EDF's), set data.listed_as: {{{mapping}}}")


def _unreadable_entry(edf: Path, error: AnnotationError) -> AnnotationError:
    return AnnotationError(f"{edf}: {error}; correct the label file, or write "
                           f"{edf.with_suffix('.csv_bi').name} beside the EDF with its seizures' times from the "
                           "recording's start")


def _chbmit_labels(edf: Path, listed_as: dict[str, str],
                   unlisted: str = "refuse") -> tuple[list[Path], native_labels.NativeLabels]:
    prefix = name_prefix(edf.stem, "chbmit")
    summary = _corpus_list(edf, "chbmit")
    wfdb = wfdb_file(edf)
    entries = native_labels.read_chbmit_summary(summary) if summary else {}
    listed = _entry(entries, edf, summary, listed_as) if summary else None
    if isinstance(listed, AnnotationError):  # its block in the summary; the summary's others are read
        raise _unreadable_entry(edf, listed)
    annotated = native_labels.read_wfdb_seizures(wfdb, edf_sfreq=_edf_rate(edf)) if wfdb.is_file() else None
    if listed is None and annotated is None:
        if summary is not None:
            return _chbmit_unlisted(edf, summary, unlisted)
        raise AnnotationError(
            f"{edf}: has no {prefix or 'chbNN'}-summary.txt in its folder or the one above and has no {wfdb.name}, "
            "so its seizures are unknown; put the summary beside it as the corpus ships it, or write "
            f"{edf.with_suffix('.csv_bi').name} (a seizure-free recording has one 'TERM,0,<duration>,bckg' row)"
        )
    if listed is not None and annotated is not None:
        a, b = np.array(listed.seizures).reshape(-1, 2), np.array(annotated.seizures).reshape(-1, 2)
        if a.shape != b.shape or np.abs(a - b).max(initial=0.0) > AGREEMENT_SECONDS:
            raise AnnotationError(
                f"{edf}: {summary.name} says seizures {list(listed.seizures)} s, {wfdb.name} says "
                f"{list(annotated.seizures)} s; write the "
                f"intended labels as {edf.with_suffix('.csv_bi').name} beside the EDF (it takes precedence)"
            )
    if listed is not None:
        _check_within_its_span(edf, summary, listed, "file")
    chosen = listed if listed is not None else annotated
    sources = [p for p, used in ((summary, listed), (wfdb, annotated)) if used is not None]
    return sources, chosen


def _check_within_its_span(edf: Path, listing: Path, listed: native_labels.NativeLabels, span: str) -> None:
    """A seizure ending after the span its own file gives (a Siena list's registration end, a
    CHB-MIT summary's File End Time) is a typo in its times (Siena PN00-3's ends 19.29.29, the
    registration 18.57.13): cut at the recording's end it would be a 29-minute seizure, and one
    starting after the end would be dropped, the recording trained on as seizure-free. One within
    the EDF itself is not: hand-typed clock times may fall short of the EDF's length by up to
    data.clock_duration_tolerance_seconds (check_duration), and the EDF's own end decides there."""
    if listed.duration_seconds is None:
        return
    header = _header(edf)
    end = max(listed.duration_seconds, header.n_records * header.record_seconds if header is not None else 0.0)
    late = [stop for _, stop in listed.seizures if stop > end]
    if late:
        raise AnnotationError(
            f"{edf}: {listing} has a seizure of it ending {late[0]:g} s after the {span} start, past the "
            f"{span} end it gives ({listed.duration_seconds:g} s): a typo in its times; write "
            f"{edf.with_suffix('.csv_bi').name} beside the EDF with the seizure's real times"
        )


_UNLISTED = "data.chbmit_unlisted"  # the source of the labels _chbmit_unlisted reads as seizure-free


def _chbmit_unlisted(edf: Path, summary: Path, unlisted: str) -> tuple[list[Path], native_labels.NativeLabels]:
    """A recording its summary leaves out, without a .seizures file. PhysioNet ships a `.seizures`
    file with every CHB-MIT recording that has a seizure (the CHB-MIT database page, "the beginning
    ([) and end (]) of each seizure is annotated in the .seizure annotation files that accompany
    each of the files listed in RECORDS-WITH-SEIZURES"), so where the annotation files came with
    the download (the folder holds others') the recording has none; chb24's summary lists only its
    recordings with seizures and leaves ten out. Refused unless data.chbmit_unlisted is
    seizure_free; read so only beside other `.seizures` files, never in a download without them."""
    wfdb = wfdb_file(edf)
    others = wfdb_files(edf.parent)
    if unlisted == "seizure_free" and others:
        return [summary], native_labels.NativeLabels(edf.name, (), _UNLISTED, None)
    if others:
        why = (f"; PhysioNet ships a .seizures file with every recording that has a seizure, and this folder "
               f"holds {len(others)} for others but none for it: if the download is whole (chb24's summary "
               "leaves out its ten seizure-free recordings), set data.chbmit_unlisted: seizure_free, or")
    else:
        why = ("; its folder holds no .seizures file, so whether they were downloaded is unknown (data."
               "chbmit_unlisted: seizure_free needs them beside it): download them, or")
    raise AnnotationError(
        f"{edf}: is not listed in {summary} and has no {wfdb.name}, so its seizures are unknown{why} write "
        f"{edf.with_suffix('.csv_bi').name} (a seizure-free recording has one 'TERM,0,<duration>,bckg' row)"
    )


def _siena_labels(edf: Path, listed_as: dict[str, str]) -> tuple[list[Path], native_labels.NativeLabels]:
    prefix = name_prefix(edf.stem, "siena")
    listing = _corpus_list(edf, "siena")
    if listing is None:
        raise AnnotationError(
            f"{edf}: no Seizures-list-{prefix or 'PNxx'}.txt in its folder or the one above, so its seizures "
            f"are unknown; put the list beside it as the corpus ships it, or write {edf.with_suffix('.csv_bi').name}"
        )
    entries = native_labels.read_siena_list(listing)
    listed = _entry(entries, edf, listing, listed_as)
    if listed is None:
        raise AnnotationError(
            f"{edf}: not listed in {listing} (every Siena recording holds a seizure); if it has none, write "
            f"{edf.with_suffix('.csv_bi').name} with one 'TERM,0,<duration>,bckg' row"
            f"{_misspelt(edf, entries, listed_as)}"
        )
    if isinstance(listed, AnnotationError):  # its block in the list; the list's others are read
        raise _unreadable_entry(edf, listed)
    _check_within_its_span(edf, listing, listed, "registration")
    header_clock = _header_clock(edf)
    if header_clock is not None and listed.start_clock is not None:
        apart = abs(header_clock - listed.start_clock) % native_labels.DAY_SECONDS
        apart = min(apart, native_labels.DAY_SECONDS - apart)
        if apart > SIENA_CLOCK_TOLERANCE_SECONDS:
            raise AnnotationError(
                f"{edf}: {listing} gives its registration start as {native_labels.clock_text(listed.start_clock)}, "
                f"the EDF header {native_labels.clock_text(header_clock)}, {apart} s apart; the list's seizure "
                f"times are clock times, so they would land {apart} s off if the list's start is wrong: check "
                f"which is right and write {edf.with_suffix('.csv_bi').name} beside the EDF with the seizures' times from the recording's start"
            )
    return [listing], listed


# The Siena lists and the EDF headers give whole seconds; the fixture PN00-1 agrees to the second.
SIENA_CLOCK_TOLERANCE_SECONDS = 1


def _header(edf: Path):
    """The EDF's header, None when it cannot be read (read_edf refuses that file, naming why)."""
    from common.data.edf import EDFError, read_header  # MNE is slow to import

    try:
        return read_header(edf)
    except EDFError:
        return None


def _edf_rate(edf: Path) -> float | None:
    """The EDF's sampling rate when its signals share one (a WFDB annotation file's times are in
    its samples); None when the header cannot be read or the rates differ."""
    if (header := _header(edf)) is None:
        return None
    rates = {header.sfreq(i) for i in range(len(header.labels))}
    return rates.pop() if len(rates) == 1 else None


def _header_clock(edf: Path) -> int | None:
    """The EDF header's start time in seconds of the day; None when the header cannot be read
    or the time is not hh.mm.ss."""
    header = _header(edf)
    return None if header is None else native_labels.clock_seconds(header.starttime)


def duration_tolerance(annotations: Annotations, data) -> float:
    """The tolerance check_duration applies (a DataConfig's): a `.csv_bi`'s written duration
    (label_duration_tolerance_seconds), or a corpus's own clock times (clock_duration_tolerance_seconds)."""
    if annotations.duration_from is None:
        return data.label_duration_tolerance_seconds
    return data.clock_duration_tolerance_seconds


def check_duration(annotations: Annotations, edf: Path, edf_seconds: float, tolerance_seconds: float) -> None:
    """A label file that states a duration must state the EDF's (within the tolerance): a .csv_bi's
    `duration` line, a CHB-MIT summary's or Siena list's clock times (their seizure times count from
    the recording's start, so a recording of another length is another recording, or another cut)."""
    stated = annotations.duration_seconds
    if stated is None or abs(stated - edf_seconds) <= tolerance_seconds:
        return
    field = "label" if annotations.duration_from is None else "clock"
    raise_it = (f"or raise data.{field}_duration_tolerance_seconds (now {tolerance_seconds:g}) if the difference "
                "is meant")
    if annotations.duration_from is None:
        raise AnnotationError(
            f"{annotations.path}: says duration = {stated:g} s, but {edf.name} lasts {edf_seconds:g} s, so these "
            f"labels describe another recording (or another cut of it); use the label file of this EDF, {raise_it}"
        )
    raise AnnotationError(
        f"{edf}: {annotations.duration_from} gives it {stated:g} s, but {edf.name} lasts {edf_seconds:g} s, so "
        f"that entry describes another recording (or another cut of it); write {edf.with_suffix('.csv_bi').name} "
        f"beside the EDF with its seizures' times from the recording's start (it takes precedence), {raise_it}"
    )


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
