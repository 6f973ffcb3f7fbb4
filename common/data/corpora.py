"""Corpus layouts: which files under data_dir are recordings, whose they are, and which split.

A corpus is used as it ships. `data.corpus` names the layout (`auto` detects it and says why):

    tusz    TUSZ v2.0.x (tuh_eeg_seizure): edf/{train,dev,eval}/<patient>/<session>/<montage>/
            <patient>_s<session>_t<take>.edf beside <stem>.csv_bi; patient `aaaaaaac` (v1.x: digits).
            Official split: the train/dev/eval folders.
    siena   Siena Scalp EEG (Detti et al. 2020, PhysioNet doi:10.13026/5d4a-j060): PNxx/PNxx-k.edf
            (some recordings are PNxx-k.l.m.edf), labels in PNxx/Seizures-list-PNxx.txt; patient `PN00`.
    chbmit  CHB-MIT Scalp EEG (Shoeb 2009, PhysioNet doi:10.13026/C2K01R): chbNN/chbNN_MM.edf (chb17's
            are chb17a_MM, chb17b_MM, chb17c_MM; a few carry a `+`, chb02_16+.edf), labels in
            chbNN/chbNN-summary.txt and chbNN_MM.edf.seizures; patient `chb17`. Case chb21 is the
            subject of chb01 recorded 1.5 years later (the database's SUBJECT-INFO and description),
            so both are patient `chb01`: a split keeps them together.
    folder  anything else: the patient is the file stem before its first `_`.

Split (data.split.kind): `official` takes the train/dev/eval folders below data_dir; `seeded` a
patient-disjoint seeded permutation (assign_splits, below); `auto` is official for TUSZ and for
a folder corpus with split folders, seeded otherwise. A file the layout cannot place (a name that
does not follow the corpus's naming, an EDF outside train/ dev/ eval/ under an official split) is
left out and reported, never allowed to change how the others are split.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.config import SplitConfig
from common.shown import SUMMARY_SHOWN, shown_lines

SPLITS = ("train", "dev", "eval")
NAMING = {
    "tusz": re.compile(r"(?P<patient>[a-z0-9]+)_s\d{3}_t\d{3}"),
    "siena": re.compile(r"(?P<patient>PN\d{2})-\d+(?:\.\d+)*"),
    "chbmit": re.compile(r"(?P<patient>chb\d{2})[a-z]?_\d+\+?"),
}
EXAMPLE = {"tusz": "aaaaaaac_s001_t000", "siena": "PN00-1", "chbmit": "chb17a_03"}
SAME_SUBJECT = {"chb21": "chb01"}  # CHB-MIT: one subject, two cases
# Files that mark a corpus even before its recordings are looked at.
MARKERS = {"chbmit": "chb*-summary.txt", "siena": "Seizures-list-*.txt"}


def name_prefix(stem: str, corpus: str) -> str | None:
    """The patient part of a file name as the corpus spells it (`chb17a_03` -> `chb17`); None when
    the name does not follow the corpus's naming."""
    if corpus == "folder":
        return stem.split("_", 1)[0]
    match = NAMING[corpus].fullmatch(stem)
    return match.group("patient") if match else None


def corpus_of_name(stem: str) -> str:
    """For one file seen alone: `siena` or `chbmit` when its name says so, else `folder`."""
    return next((c for c in ("siena", "chbmit") if NAMING[c].fullmatch(stem)), "folder")


def patient_id(stem: str, corpus: str | None = None) -> str | None:
    """The patient a recording belongs to. With corpus None (a scorer that only sees file names),
    Siena and CHB-MIT names are recognised and anything else is TUSZ's rule, the stem before `_`."""
    corpus = corpus or corpus_of_name(stem)
    prefix = name_prefix(stem, corpus)
    return SAME_SUBJECT.get(prefix, prefix) if corpus == "chbmit" else prefix


def split_folders(data_dir: Path) -> list[str]:
    """The official split folders present: data_dir/<split> or, as TUSZ ships, data_dir/edf/<split>."""
    return [s for s in SPLITS if (data_dir / s).is_dir() or (data_dir / "edf" / s).is_dir()]


def detect(data_dir: Path, edfs: list[Path]) -> tuple[str, str]:
    """(corpus, why) from the files: marker files first, then how most recordings are named."""
    for corpus, pattern in MARKERS.items():
        found = sorted(p.name for p in data_dir.rglob(pattern))
        if found:
            return corpus, f"{len(found)} {pattern} file(s), e.g. {found[0]}"
    counts = Counter(c for edf in edfs for c in ("siena", "chbmit", "tusz") if NAMING[c].fullmatch(edf.stem))
    if counts:
        corpus, count = counts.most_common(1)[0]
        if count * 2 > len(edfs) and (corpus != "tusz" or split_folders(data_dir)):
            return corpus, f"{count} of {len(edfs)} recordings named like {EXAMPLE[corpus]}"
    why = f"{len(edfs)} recordings without a known corpus's naming or files"
    if counts.get("tusz") and not split_folders(data_dir):
        why = "TUSZ-style names but no train/ dev/ eval/ folders"
    return "folder", why


@dataclass(frozen=True)
class Recording:
    edf: Path
    patient: str
    official: str | None  # the split folder it lies under, if any

    @property
    def stem(self) -> str:
        return self.edf.stem


@dataclass
class Survey:
    """What data_dir holds, as the layout reads it."""

    data_dir: Path
    corpus: str
    why: str  # "set in the config" or what detection saw
    split_kind: str  # official | seeded
    recordings: list[Recording]
    left_out: list[dict] = field(default_factory=list)  # {"source", "reason"}: found, not used
    missing_splits: list[str] = field(default_factory=list)  # official split folders absent or empty
    # {"source", "reason"}: label files or entries that speak for no EDF present (annotations.labels_without_edf)
    without_edf: list[dict] = field(default_factory=list)

    def headline(self) -> str:
        patients = {r.patient for r in self.recordings}
        return f"corpus {self.corpus} ({self.why}): {len(self.recordings)} recordings of {len(patients)} patients"

    def lines(self) -> list[str]:
        """What the build summary prints about the corpus, before its table."""
        lines = [f"{self.headline()}; split {self.split_kind}"
                 + (" (the train/ dev/ eval/ folders)" if self.split_kind == "official" else " (data.split.seed)")]
        for name in self.missing_splits:
            lines.append(f"  no recordings under {name}/: the {name} split is empty")
        if self.left_out:
            lines.append(f"  {len(self.left_out)} EDF file(s) left out:")
            lines.extend(shown_lines([f"{item['source']}: {item['reason']}" for item in self.left_out],
                                     indent="    ", limit=SUMMARY_SHOWN))
        if self.without_edf:
            lines.append(f"  {len(self.without_edf)} label file(s) or entries without an EDF (their labels unused):")
            lines.extend(shown_lines([f"{item['source']}: {item['reason']}" for item in self.without_edf],
                                     indent="    ", limit=SUMMARY_SHOWN))
        return lines


def survey(data_dir: str | Path, edfs: list[Path], corpus: str = "auto", split_kind: str = "auto") -> Survey:
    """Place every EDF: its patient and official split, or why it is left out."""
    data_dir = Path(data_dir)
    if corpus == "auto":
        corpus, why = detect(data_dir, edfs)
        why = f"detected: {why}; set data.corpus to choose"
    else:
        why = "data.corpus"
    folders = split_folders(data_dir)
    if split_kind == "auto":
        split_kind = "official" if corpus == "tusz" or (corpus == "folder" and folders) else "seeded"
    if split_kind == "official" and not folders:
        raise ValueError(f"data.split.kind is official, but {data_dir} has no train/, dev/ or eval/ folder "
                         f"(nor edf/train/ ...): set data.split.kind: seeded, or lay the files out in them")
    recordings, left_out = [], []
    for edf in edfs:
        patient = patient_id(edf.stem, corpus)
        official = official_split(edf, data_dir)
        if patient is None:
            left_out.append({"source": str(edf), "reason": f"not named like a {corpus} recording "
                             f"({EXAMPLE[corpus]}.edf); set data.corpus: folder to take every file"})
        elif split_kind == "official" and official is None:
            left_out.append({"source": str(edf), "reason": "outside the train/ dev/ eval/ folders, so in no "
                             "official split; move it into one, or set data.split.kind: seeded"})
        else:
            recordings.append(Recording(edf, patient, official if split_kind == "official" else None))
    present = {r.official for r in recordings}
    missing = [s for s in SPLITS if split_kind == "official" and s not in present]
    return Survey(data_dir, corpus, why, split_kind, recordings, left_out, missing)


def official_split(source: str | Path, data_dir: str | Path) -> str | None:
    """`train`/`dev`/`eval` when the file lies under a folder of that name below data_dir: where it
    was found, else where it resolves to (a symlinked file's target lies anywhere)."""
    for found, root in ((Path(source).absolute(), Path(data_dir).absolute()),
                        (Path(source).resolve(), Path(data_dir).resolve())):
        try:
            parts = found.relative_to(root).parts
        except ValueError:
            continue
        return next((p for p in parts[:-1] if p in SPLITS), None)
    return None


def assign_splits(patients: dict[str, str], cfg: SplitConfig,
                  official: dict[str, str] | None = None) -> dict[str, str]:
    """Map each recording (stem -> patient) to a split, never one patient in two splits.

    official (stem -> split folder) is taken as it is, and checked; without it patients are
    permuted by cfg.seed and the first dev_fraction go to dev, the next eval_fraction to eval.
    """
    if official is not None:
        splits = {stem: official[stem] for stem in patients}
    else:
        names = sorted(set(patients.values()))
        order = np.random.default_rng(cfg.seed).permutation(len(names))
        n_dev = int(round(cfg.dev_fraction * len(names)))
        n_eval = int(round(cfg.eval_fraction * len(names)))
        if len(names) > 1 and cfg.dev_fraction > 0:
            n_dev = max(n_dev, 1)
        if n_dev + n_eval >= len(names) and len(names) > 1:
            raise ValueError(
                f"{len(names)} patients cannot fill dev_fraction={cfg.dev_fraction} and "
                f"eval_fraction={cfg.eval_fraction} and leave any for training: lower them"
            )
        split_of = {}
        for rank, index in enumerate(order):
            split_of[names[index]] = "dev" if rank < n_dev else "eval" if rank < n_dev + n_eval else "train"
        splits = {stem: split_of[patient] for stem, patient in patients.items()}
    check_patient_disjoint(splits, patients)
    return splits


def check_patient_disjoint(splits: dict[str, str], patients: dict[str, str]) -> None:
    """Every patient's recordings in one split; the error names the patient and two of its files."""
    seen: dict[str, tuple[str, str]] = {}
    for stem, split in splits.items():
        other, example = seen.setdefault(patients[stem], (split, stem))
        if other != split:
            raise ValueError(
                f"patient {patients[stem]!r} appears in both {other!r} ({example}) and {split!r} ({stem}): "
                "a patient must stay in one split; move the files, or set data.split.kind: seeded"
            )
