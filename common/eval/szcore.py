"""SzCORE event scoring of seizure annotations, through the `timescoring` package.

SzCORE (Dan et al., "SzCORE: Seizure Community Open-source Research Evaluation framework for the
validation of EEG-based automated seizure detection algorithms", Epilepsia 2024) scores events
with clinical tolerances; its reference implementation is `timescoring.scoring.EventScoring`
(github.com/esl-epfl/epilepsy_performance_metrics) driven by szcore-evaluation's
`evaluate_dataset` (github.com/esl-epfl/szcore-evaluation, src/szcore_evaluation/evaluate.py).

Glossary
    record      a reference and a hypothesis `.csv_bi` file of one recording (common/data/csv_bi.py)
    subject     the patient, as SzCORE's BIDS sub-* folders, from the record name
                (common/data/corpora.py patient_id): TUSZ aaaaaasf_s001_t000 -> aaaaaasf, Siena
                PN00-1 -> PN00, CHB-MIT chb17a_03 -> chb17 and chb21_05 -> chb01 (one subject)
    event       a `seiz` row; `bckg` rows are background, any other label is an error

Per record, as szcore-evaluation (DESIGN.md §6):
    1. mask      both files become a 1 Hz mask of int(duration) samples, an event covering
                 samples int(start) .. int(stop) - 1 (epilepsy2bids Annotations.getMask with FS = 1)
    2. merge     events separated by less than 90 s become one   (minDurationBetweenEvents = 90)
    3. split     events longer than 300 s are cut into 300 s pieces  (maxEventDuration = 300)
    4. detect    a reference event extended 30 s before and 60 s after (toleranceStart = 30,
                 toleranceEnd = 60, clipped to the record) is a true positive when any hypothesis
                 sample falls inside it (minOverlap = 0: any overlap)
    5. false     a hypothesis event that touches no extended true-positive reference event is one
                 false positive
    EventScoring works at 10 Hz internally (timescoring/scoring.py).

Per subject (evaluate_dataset, avg_per_subject=True): tp, fp, reference events (ref_events) and
duration are summed over the subject's records, then
    sensitivity = tp / ref_events                NaN without reference events
    precision   = tp / (tp + fp)                 NaN without hypothesis events
    f1          = 2 tp / (2 tp + fp + fn), fn = ref_events - tp, NaN without either
    fp_per_24h  = fp / duration * 86400
Across subjects: the mean and standard deviation of each metric over the subjects where it is
defined (numpy nanmean / nanstd, as evaluate_dataset). Names are fixed (SZCORE_METRICS).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from timescoring.annotations import Annotation
from timescoring.scoring import EventScoring

from common.data.annotations import Annotations
from common.data.annotations import seizure_mask as training_mask
from common.data.corpora import patient_id
from common.data.csv_bi import CsvBi
from common.eval.nedc import SECONDS_PER_DAY

# timescoring's EventScoring.Parameters names, SzCORE's values, passed explicitly.
SZCORE_PARAMETERS: dict[str, float] = {
    "toleranceStart": 30.0,
    "toleranceEnd": 60.0,
    "minOverlap": 0.0,
    "maxEventDuration": 300.0,
    "minDurationBetweenEvents": 90.0,
}
SZCORE_METRICS: tuple[str, ...] = ("sensitivity", "precision", "f1", "fp_per_24h")
COUNTS: tuple[str, ...] = ("tp", "fp", "ref_events", "duration_seconds")
MASK_HZ = 1  # szcore-evaluation's FS


@dataclass(frozen=True)
class Counts:
    tp: int
    fp: int
    ref_events: int  # after merging and splitting
    duration_seconds: float  # as scored: int(duration) of the 1 Hz mask

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.ref_events + other.ref_events,
                      self.duration_seconds + other.duration_seconds)

    def metrics(self) -> dict[str, float]:
        """SZCORE_METRICS of these counts (module docstring); NaN where undefined."""
        fn = self.ref_events - self.tp
        return {
            "sensitivity": self.tp / self.ref_events if self.ref_events else math.nan,
            "precision": self.tp / (self.tp + self.fp) if self.tp + self.fp else math.nan,
            "f1": 2 * self.tp / (2 * self.tp + self.fp + fn) if self.ref_events + self.fp else math.nan,
            "fp_per_24h": self.fp / self.duration_seconds * SECONDS_PER_DAY,
        }


@dataclass(frozen=True)
class SzcoreResult:
    per_record: dict[str, Counts]  # record name -> counts
    per_subject: dict[str, Counts]  # subject -> summed counts
    mean: dict[str, float]  # SZCORE_METRICS: nanmean over subjects
    std: dict[str, float]  # SZCORE_METRICS: nanstd over subjects


def parameters() -> EventScoring.Parameters:
    return EventScoring.Parameters(**SZCORE_PARAMETERS)


def seizure_mask(record: CsvBi) -> np.ndarray:
    """(int(duration),) bool at 1 Hz: step 1 of the module docstring."""
    labels = {e.label for e in record.events}
    if not labels <= {"seiz", "bckg"}:
        raise ValueError(f"{record.path}: labels {sorted(labels - {'seiz', 'bckg'})} are neither "
                         "'seiz' nor 'bckg'")
    n = int(record.duration_seconds * MASK_HZ)
    if n < 1:
        raise ValueError(f"{record.path}: duration {record.duration_seconds} s is under one "
                         f"{MASK_HZ} Hz sample; SzCORE cannot score it")
    annotations = Annotations(record.path, record.duration_seconds, list(record.events))
    return training_mask(annotations, n, MASK_HZ, ("seiz",))[0].astype(bool)  # the training labels' rule


def score_record(ref: CsvBi, hyp: CsvBi) -> Counts:
    """Steps 1-5 of the module docstring for one record."""
    if round(ref.duration_seconds, 4) != round(hyp.duration_seconds, 4):
        raise ValueError(f"durations differ: reference {ref.path} {ref.duration_seconds} s, "
                         f"hypothesis {hyp.path} {hyp.duration_seconds} s")
    score = EventScoring(Annotation(seizure_mask(ref), MASK_HZ), Annotation(seizure_mask(hyp), MASK_HZ),
                         parameters())
    return Counts(int(score.tp), int(score.fp), int(score.refTrue), score.numSamples / score.fs)


def score_szcore(pairs: Sequence[tuple[CsvBi, CsvBi]],
                 subject_of: Callable[[str], str] = patient_id) -> SzcoreResult:
    """Per-record counts, per-subject sums and the mean and std over subjects.

    subject_of maps a record's file stem to its subject (default: the patient its name says).
    """
    if not pairs:
        raise ValueError("no records to score")
    per_record, per_subject = {}, {}
    for ref, hyp in pairs:
        if ref.name != hyp.name:
            raise ValueError(f"reference {ref.path} is paired with hypothesis {hyp.path} of another name")
        counts = score_record(ref, hyp)
        per_record[ref.name] = counts
        subject = subject_of(ref.name.split(".", 1)[0])
        per_subject[subject] = per_subject[subject] + counts if subject in per_subject else counts
    table = {k: np.array([c.metrics()[k] for c in per_subject.values()]) for k in SZCORE_METRICS}
    defined = {k: bool(np.isfinite(v).any()) for k, v in table.items()}  # nanmean of all-NaN warns
    mean = {k: float(np.nanmean(v)) if defined[k] else math.nan for k, v in table.items()}
    std = {k: float(np.nanstd(v)) if defined[k] else math.nan for k, v in table.items()}
    return SzcoreResult(per_record, per_subject, mean, std)
