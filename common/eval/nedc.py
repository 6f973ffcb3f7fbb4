"""NEDC nedc_eeg_eval v6.0.0 scoring of term-based seizure annotations: OVLP, TAES and epoch.

Reimplemented from the rules of NEDC's v6.0.0 Python sources (lib/nedc_eeg_eval_*.py, read in the
public copy github.com/Clarity-Digital-Twin/nedc-bench, nedc_eeg_eval/v6.0.0/) for the two-class
map of nedc_eeg_eval_params_v00.toml (SEIZ, BCKG); it reproduces NEDC's published output on its
30-file sample to the printed digit (tests/common/eval/test_nedc.py).

Glossary
    record     one recording: a reference (ref) and a hypothesis (hyp) `.csv_bi` file, paired by name
    timeline   a record's events after NEDC's filling: contiguous from 0 to the duration, labels
               alternating between `seiz` and `bckg` (every label of the file must be one of them)
    D          total duration: the sum of the reference durations, seconds
    label l    seiz or bckg; each is scored against the other ("per label"), then summed ("summary")

Timeline (nedc_eeg_eval_common.parse_files -> nedc_eeg_ann_tools.augment_annotation,
remove_repeated_events): events sorted by start; every gap, and the stretch after the last event,
becomes `bckg`; consecutive events of one label merge into one (two touching seizures are one
event, and explicit `bckg` rows merge with the filler around them). A file with no rows is one
`bckg` event. NEDC rounds times to a few decimals while filling; `.csv_bi` times carry four
decimals, so here gaps are compared exactly.

OVLP, any-overlap (nedc_eeg_eval_ovlp.py: NedcOverlap.compute, get_events; Wilson et al. 2003,
Clin. Neurophysiol. 114:2156):
    hit(l)          ref events of label l overlapped by a hyp event of label l, where [a, b) and
                    [c, d) overlap when d > a and c < b (touching is no overlap)
    miss(l)         targets(l) - hit(l)
    false alarm(l)  hyp events of label l overlapping no ref event of label l

TAES, time-aligned event scoring (nedc_eeg_eval_taes.py: NedcTAES.compute, compute_partial,
ovlp_ref_seqs, ovlp_hyp_seqs, calc_hf, anyovlp; Shah et al. 2021, "Objective Evaluation Metrics
for Automatic Classification of EEG Events"): fractional counts, ref events in time order, each
event used once (a flag per event):
    gate        a ref event not yet used, strictly overlapped by some hyp event of its label, is
                compared with every unused hyp event j of its label that overlaps it *by whole
                seconds*: [floor(a), floor(b)] meets [floor(c), floor(d)] (NEDC's anyovlp, a set of
                integer seconds), so an event within the same second counts even without overlap
    partial     ref r, hyp h, R = r.stop - r.start (calc_hf):
                  h inside r                   hit = (h.stop - h.start)/R,  fa = 0
                  h starts before, ends inside hit = (h.stop - r.start)/R,  fa = min(1, (r.start - h.start)/R)
                  h starts inside, ends after  hit = (r.stop - h.start)/R,  fa = min(1, (h.stop - r.stop)/R)
                  h covers r                   hit = 1,  fa = min(1, (r.start - h.start + h.stop - r.stop)/R)
                (first matching case in this order: h.start <= r.start and h.stop <= r.stop, then
                h.start >= r.start and h.stop >= r.stop, then strictly covering; with the
                whole-second gate a "hit" can be negative, as in NEDC)
    h reaches r.stop  (ovlp_ref_seqs) miss = 1 - hit; r and h are used; every later ref event of
                that label meeting h by whole seconds is used up as one more miss
    r outlasts h      (ovlp_hyp_seqs) miss = 1 - hit; r and h are used; every later hyp event of
                that label meeting r by whole seconds (used or not) adds its hit and fa, and its
                hit is taken off the miss
    left over   an unused ref event is one miss, an unused hyp event one false alarm
    All partial counts go to the ref event's label.

Epoch (nedc_eeg_eval_epoch.py: NedcEpoch.compute, time_to_index, compute_performance): both
timelines are sampled at t = E/2 + i E, E = 0.25 s, while t <= the record's duration; a sample
takes the label of the first event with start <= t <= stop (the last hyp event if none).
C[r, h] counts samples (ref label r, hyp label h). Per label: targets C[l, :], hit C[l, l],
miss the rest of row l; bckg is the null class, so false alarm(seiz) = insertion(seiz) =
C[bckg, seiz], deletion(seiz) = C[seiz, bckg], and bckg has none of the three.

Per-label metrics, as NEDC's compute_performance for all three methods (fractions, not %):
    OVLP, TAES  tp = hit(l), tn = hit(other label), fp = false alarm(l), fn = miss(l)
    epoch       tp = C[l, l], tn = C[o, o], fp = C[o, l], fn = C[l, o]   (o the other label)
    sensitivity = tp / (tp + fn)     specificity = tn / (tn + fp)
    precision   = tp / (tp + fp)     npv         = tn / (tn + fn)
    miss_rate   = 1 - sensitivity    fpr = 1 - specificity   fdr = 1 - precision   for = 1 - npv
    accuracy    = (tp + tn) / (tp + tn + fp + fn)   misclassification_rate = 1 - accuracy
    prevalence  = (tp + fn) / (tp + tn + fp + fn)
    f1          = 2 precision sensitivity / (precision + sensitivity)
    mcc         = (tp tn - fp fn) / sqrt((tp + fp)(tp + fn)(tn + fp)(tn + fn))
    fa_per_24h  = fp / D * 86400  (epoch: fp E / D * 86400, false-alarm seconds per day)
    A ratio whose denominator is 0 is 0 (NEDC's convention, with a printed warning there).

Summary (NEDC's "SUMMARY" block): tp, tn, fp, fn, targets, hits, ... summed over both labels and
the same ratios on the sums, except f1: NEDC divides 2 precision sensitivity of the sums by the
*last label's* (bckg's) precision + sensitivity, a slip in v6.0.0 that its printed summary F1
carries; reproduced as is so the numbers compare (the per-label f1 are correct).

Names are fixed strings (LABEL_METRICS, SUMMARY_METRICS, FILE_METRICS), never built from numbers.
Deviations, all rejecting input NEDC would score into nonsense: labels other than seiz/bckg,
overlapping rows or rows past the duration (common/data/csv_bi.py), and a hypothesis whose
duration differs from its reference's at four decimals are errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common.data.csv_bi import CsvBi

LABELS: tuple[str, ...] = ("seiz", "bckg")  # the [MAP] order of nedc_eeg_eval_params_v00.toml
SEIZ, BCKG = 0, 1
METHODS: tuple[str, ...] = ("ovlp", "taes", "epoch")
EPOCH_SECONDS = 0.25  # [NEDC_EPOCH] epoch_duration
SECONDS_PER_DAY = 86400.0

LABEL_METRICS: tuple[str, ...] = (
    "targets", "hits", "misses", "false_alarms", "insertions", "deletions",
    "tp", "tn", "fp", "fn",
    "sensitivity", "specificity", "precision", "npv", "miss_rate", "fpr", "fdr", "for",
    "accuracy", "misclassification_rate", "prevalence", "f1", "mcc", "fa_per_24h",
)
SUMMARY_METRICS: tuple[str, ...] = (
    "targets", "hits", "misses", "false_alarms", "insertions", "deletions", "tp", "fp",
    "sensitivity", "miss_rate", "accuracy", "misclassification_rate", "prevalence", "f1", "mcc",
    "duration_seconds", "total_false_alarms", "fa_per_24h",
)
_COUNTS = LABEL_METRICS[:6]  # targets ... deletions: counted, not derived
_SUMMARY_RATES = ("sensitivity", "miss_rate", "accuracy", "misclassification_rate", "prevalence")
# What NEDC prints per file (summary_{ovlp,taes,epoch}.txt), summed over both labels.
FILE_METRICS: dict[str, tuple[str, ...]] = {
    "ovlp": ("hits", "misses", "false_alarms"),
    "taes": ("hits", "misses", "false_alarms"),
    "epoch": ("hits", "substitutions"),  # of the run-length-compressed (ref, hyp) label pairs
}


@dataclass(frozen=True)
class Timeline:
    """A record's events after NEDC's filling (module docstring): contiguous, labels alternate."""

    name: str
    starts: np.ndarray  # (n,) float64 seconds; starts[0] = 0, starts[i + 1] = stops[i]
    stops: np.ndarray  # (n,) float64 seconds; stops[-1] = duration
    labels: np.ndarray  # (n,) int64 index into LABELS


@dataclass(frozen=True)
class NedcResult:
    method: str  # one of METHODS
    per_label: dict[str, dict[str, float]]  # LABELS -> LABEL_METRICS
    summary: dict[str, float]  # SUMMARY_METRICS
    per_file: dict[str, dict[str, float]]  # record name -> FILE_METRICS[method]

    @property
    def seiz(self) -> dict[str, float]:
        return self.per_label["seiz"]


# ----------------------------------------------------------------------------------------------
# timelines


def timeline(record: CsvBi) -> Timeline:
    """Fill gaps with bckg and merge neighbours of one label (module docstring, "Timeline")."""
    codes = {label: code for code, label in enumerate(LABELS)}
    unknown = sorted({e.label for e in record.events} - set(codes))
    if unknown:
        raise ValueError(f"{record.path}: labels {unknown} are not in NEDC's two-class map "
                         f"{list(LABELS)} (nedc_eeg_eval_params_v00.toml [MAP])")
    starts = np.array([e.start_seconds for e in record.events], np.float64)  # (m,)
    stops = np.array([e.stop_seconds for e in record.events], np.float64)  # (m,)
    labels = np.array([codes[e.label] for e in record.events], np.int64)  # (m,)

    previous_stops = np.concatenate([[0.0], stops])  # (m + 1,) where each gap would begin
    next_starts = np.concatenate([starts, [record.duration_seconds]])  # (m + 1,) where it ends
    gap = next_starts > previous_stops  # (m + 1,)
    starts = np.concatenate([starts, previous_stops[gap]])
    stops = np.concatenate([stops, next_starts[gap]])
    labels = np.concatenate([labels, np.full(int(gap.sum()), BCKG)])
    order = np.argsort(starts, kind="stable")
    starts, stops, labels = starts[order], stops[order], labels[order]

    first = np.concatenate([[True], labels[1:] != labels[:-1]])  # (n,) first event of each run
    last = np.concatenate([first[1:], [True]])  # (n,) last event of each run
    return Timeline(record.name, starts[first], stops[last], labels[first])


def timelines(pairs: Sequence[tuple[CsvBi, CsvBi]]) -> list[tuple[Timeline, Timeline]]:
    """(ref, hyp) timelines; names must pair up and durations agree at the files' 4 decimals."""
    if not pairs:
        raise ValueError("no records to score")
    out = []
    for ref, hyp in pairs:
        if ref.name != hyp.name:
            raise ValueError(f"reference {ref.path} is paired with hypothesis {hyp.path} of another name")
        if round(ref.duration_seconds, 4) != round(hyp.duration_seconds, 4):
            raise ValueError(f"durations differ: reference {ref.path} {ref.duration_seconds} s, "
                             f"hypothesis {hyp.path} {hyp.duration_seconds} s")
        out.append((timeline(ref), timeline(hyp)))
    return out


def overlapped(starts: np.ndarray, stops: np.ndarray, other_starts: np.ndarray,
               other_stops: np.ndarray) -> np.ndarray:
    """(n,) bool: interval i, [starts[i], stops[i]), is overlapped by some [c, d) of the other set
    (d > start and c < stop: NEDC's any-overlap). Both sets sorted and disjoint, so the only
    candidate is the last other interval starting before stop."""
    if other_starts.size == 0:
        return np.zeros(starts.size, bool)
    before = np.searchsorted(other_starts, stops, side="left")  # (n,) others starting < stop
    candidate_stop = other_stops[np.maximum(before - 1, 0)]
    return (before > 0) & (candidate_stop > starts)


def _overlapped(a: Timeline, b: Timeline) -> np.ndarray:
    """(n_a,) bool: event i of `a` is overlapped by an event of `b` with the same label (events
    of one label are disjoint and sorted)."""
    out = np.zeros(a.labels.size, bool)
    for code in (SEIZ, BCKG):
        mine, theirs = a.labels == code, b.labels == code
        out[mine] = overlapped(a.starts[mine], a.stops[mine], b.starts[theirs], b.stops[theirs])
    return out


# ----------------------------------------------------------------------------------------------
# OVLP, TAES, epoch: per-record counts, indexed by label


def _ovlp_record(ref: Timeline, hyp: Timeline) -> dict[str, np.ndarray]:
    targets = np.bincount(ref.labels, minlength=2)
    hits = np.bincount(ref.labels[_overlapped(ref, hyp)], minlength=2)
    false_alarms = np.bincount(hyp.labels[~_overlapped(hyp, ref)], minlength=2)
    return {"targets": targets, "hits": hits, "misses": targets - hits, "false_alarms": false_alarms}


def _meets_by_seconds(start: float, stop: float, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """NEDC's anyovlp: the whole seconds [floor(start), floor(stop)] and [floor(s), floor(e)] meet."""
    return np.maximum(math.floor(start), np.floor(starts)) <= np.minimum(math.floor(stop), np.floor(stops))


def _taes_partial(r_start: float, r_stop: float, h_start: float, h_stop: float) -> tuple[float, float]:
    """(hit, false alarm) of hyp h against ref r, NEDC's calc_hf (module docstring)."""
    length = r_stop - r_start
    if h_start <= r_start and h_stop <= r_stop:
        return (h_stop - r_start) / length, min(1.0, (r_start - h_start) / length)
    if h_start >= r_start and h_stop >= r_stop:
        return (r_stop - h_start) / length, min(1.0, (h_stop - r_stop) / length)
    if h_start < r_start and h_stop > r_stop:
        return 1.0, min(1.0, (h_stop - r_stop + r_start - h_start) / length)
    return (h_stop - h_start) / length, 0.0


def _taes_record(ref: Timeline, hyp: Timeline) -> dict[str, np.ndarray]:
    """Fractional hits, misses and false alarms per label. Sequential by nature: whether an event
    still counts depends on the ref events before it, so this loops over events (not samples)."""
    hits, misses, false_alarms = np.zeros(2), np.zeros(2), np.zeros(2)
    ref_unused = np.ones(ref.labels.size, bool)
    hyp_unused = np.ones(hyp.labels.size, bool)
    gated = _overlapped(ref, hyp)  # strictly overlapped by some hyp event of the same label
    for i in np.flatnonzero(gated):
        if not ref_unused[i]:
            continue
        label, r_start, r_stop = ref.labels[i], ref.starts[i], ref.stops[i]
        candidates = (hyp.labels == label) & _meets_by_seconds(r_start, r_stop, hyp.starts, hyp.stops)
        for j in np.flatnonzero(candidates):
            if not hyp_unused[j]:  # used up by an earlier j of this same ref event
                continue
            hit, false_alarm = _taes_partial(r_start, r_stop, hyp.starts[j], hyp.stops[j])
            miss = 1.0 - hit
            ref_unused[i] = hyp_unused[j] = False
            if hyp.stops[j] >= r_stop:  # h may reach later ref events: each is one more miss
                later = np.arange(i + 1, ref.labels.size)
                later = later[(ref.labels[later] == label) & _meets_by_seconds(
                    hyp.starts[j], hyp.stops[j], ref.starts[later], ref.stops[later])]
                ref_unused[later] = False
                miss += later.size
            else:  # r outlasts h: later hyp events inside r add to this r's hit
                later = np.arange(j + 1, hyp.labels.size)
                later = later[(hyp.labels[later] == label) & _meets_by_seconds(
                    r_start, r_stop, hyp.starts[later], hyp.stops[later])]
                hyp_unused[later] = False
                for k in later:
                    more_hit, more_false_alarm = _taes_partial(r_start, r_stop, hyp.starts[k], hyp.stops[k])
                    hit, miss, false_alarm = hit + more_hit, miss - more_hit, false_alarm + more_false_alarm
            hits[label] += hit
            misses[label] += miss
            false_alarms[label] += false_alarm
    misses += np.bincount(ref.labels[ref_unused], minlength=2)
    false_alarms += np.bincount(hyp.labels[hyp_unused], minlength=2)
    return {"targets": np.bincount(ref.labels, minlength=2).astype(np.float64), "hits": hits,
            "misses": misses, "false_alarms": false_alarms}


def _epoch_labels(line: Timeline, times: np.ndarray) -> np.ndarray:
    """Label of the first event with start <= t <= stop (contiguous: the first with stop >= t);
    past the end, the last event (NEDC's time_to_index returns -1, read as the last)."""
    index = np.searchsorted(line.stops, times, side="left")
    return line.labels[np.minimum(index, line.labels.size - 1)]


def _epoch_record(ref: Timeline, hyp: Timeline, epoch_seconds: float) -> tuple[np.ndarray, dict[str, float]]:
    """(C (2, 2) epoch counts [ref label, hyp label], NEDC's per-file hits and substitutions)."""
    count = int(ref.stops[-1] / epoch_seconds) + 2
    times = epoch_seconds / 2 + np.arange(count) * epoch_seconds  # as NEDC: E/2 + i E
    times = times[times <= ref.stops[-1]]
    pairs = 2 * _epoch_labels(ref, times) + _epoch_labels(hyp, times)  # (n_epochs,)
    confusion = np.bincount(pairs, minlength=4).reshape(2, 2)
    runs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]  # compressed pairs
    agree = int(np.count_nonzero(runs // 2 == runs % 2))
    return confusion, {"hits": agree, "substitutions": runs.size - agree}


# ----------------------------------------------------------------------------------------------
# metrics


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator != 0 else 0.0


def _f1(precision: float, sensitivity: float, denominator: float) -> float:
    return 2.0 * precision * sensitivity / denominator if denominator != 0 else 0.0


def _mcc(tp: float, tn: float, fp: float, fn: float) -> float:
    """NEDC's MCC (0 where a margin is 0). TAES's partial hits can be negative (its whole-second
    gate), and so can a margin: the MCC is then undefined, NaN (null in metrics.json). NEDC's own
    math.sqrt raises where an odd number of margins is negative (evaluate died with a traceback)
    and prints a meaningless number where an even number is."""
    margins = (tp + fp, tp + fn, tn + fp, tn + fn)
    if min(margins) < 0:
        return math.nan
    product = math.prod(margins)
    return float((tp * tn - fp * fn) / math.sqrt(product)) if product != 0 else 0.0


def _rates(tp: float, tn: float, fp: float, fn: float) -> dict[str, float]:
    total = tp + tn + fp + fn
    sensitivity, specificity = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    precision, npv = _ratio(tp, tp + fp), _ratio(tn, tn + fn)
    accuracy = _ratio(tp + tn, total)
    return {
        "sensitivity": sensitivity, "specificity": specificity, "precision": precision, "npv": npv,
        "miss_rate": 1 - sensitivity, "fpr": 1 - specificity, "fdr": 1 - precision, "for": 1 - npv,
        "accuracy": accuracy, "misclassification_rate": 1 - accuracy,
        "prevalence": _ratio(tp + fn, total),
        "f1": _f1(precision, sensitivity, precision + sensitivity), "mcc": _mcc(tp, tn, fp, fn),
    }


def _result(method: str, counts: dict[str, np.ndarray], cells: dict[str, np.ndarray],
            duration: float, fa_seconds: float, per_file: dict[str, dict[str, float]]) -> NedcResult:
    """Per-label and summary metrics from counts (_COUNTS) and cells (tp, tn, fp, fn), each (2,)
    by label. fa_seconds scales a false alarm: 1 for events, E for epochs."""
    per_label = {}
    for code, label in enumerate(LABELS):
        tp, tn, fp, fn = (float(cells[k][code]) for k in ("tp", "tn", "fp", "fn"))
        metrics = {k: float(counts[k][code]) for k in _COUNTS}
        metrics |= {"tp": tp, "tn": tn, "fp": fp, "fn": fn, **_rates(tp, tn, fp, fn),
                    "fa_per_24h": fp * fa_seconds / duration * SECONDS_PER_DAY}
        per_label[label] = {k: metrics[k] for k in LABEL_METRICS}

    tp, tn, fp, fn = (float(cells[k].sum()) for k in ("tp", "tn", "fp", "fn"))
    rates = _rates(tp, tn, fp, fn)
    last = per_label[LABELS[-1]]  # NEDC's summary f1 slip (module docstring)
    summary = {k: float(counts[k].sum()) for k in _COUNTS}
    summary |= {
        "tp": tp, "fp": fp, **{k: rates[k] for k in _SUMMARY_RATES},
        "f1": _f1(rates["precision"], rates["sensitivity"], last["precision"] + last["sensitivity"]),
        "mcc": rates["mcc"], "duration_seconds": duration, "total_false_alarms": fp,
        "fa_per_24h": fp * fa_seconds / duration * SECONDS_PER_DAY,
    }
    return NedcResult(method, per_label, {k: summary[k] for k in SUMMARY_METRICS}, per_file)


def _event_result(method: str, records: list[tuple[Timeline, dict[str, np.ndarray]]],
                  duration: float) -> NedcResult:
    counts = {k: sum(c[k] for _, c in records) for k in ("targets", "hits", "misses", "false_alarms")}
    counts |= {"insertions": counts["false_alarms"], "deletions": counts["misses"]}
    cells = {"tp": counts["hits"], "tn": counts["hits"][::-1], "fp": counts["false_alarms"],
             "fn": counts["misses"]}
    per_file = {line.name: {k: float(c[k].sum()) for k in FILE_METRICS[method]} for line, c in records}
    return _result(method, counts, cells, duration, 1.0, per_file)


def score_ovlp(pairs: Sequence[tuple[CsvBi, CsvBi]]) -> NedcResult:
    """NEDC any-overlap (OVLP) scores of (reference, hypothesis) records."""
    lines = timelines(pairs)
    duration = float(sum(ref.stops[-1] for ref, _ in lines))
    return _event_result("ovlp", [(ref, _ovlp_record(ref, hyp)) for ref, hyp in lines], duration)


def score_taes(pairs: Sequence[tuple[CsvBi, CsvBi]]) -> NedcResult:
    """NEDC time-aligned event scores (TAES) of (reference, hypothesis) records."""
    lines = timelines(pairs)
    duration = float(sum(ref.stops[-1] for ref, _ in lines))
    return _event_result("taes", [(ref, _taes_record(ref, hyp)) for ref, hyp in lines], duration)


def score_epoch(pairs: Sequence[tuple[CsvBi, CsvBi]], epoch_seconds: float = EPOCH_SECONDS) -> NedcResult:
    """NEDC epoch scores (samples every epoch_seconds) of (reference, hypothesis) records."""
    if not epoch_seconds > 0:
        raise ValueError(f"epoch_seconds must be > 0, got {epoch_seconds}")
    lines = timelines(pairs)
    duration = float(sum(ref.stops[-1] for ref, _ in lines))
    confusion, per_file = np.zeros((2, 2), np.int64), {}
    for ref, hyp in lines:
        record_confusion, per_file[ref.name] = _epoch_record(ref, hyp, epoch_seconds)
        confusion += record_confusion
    diagonal, off = np.diag(confusion), confusion[[BCKG, SEIZ], [SEIZ, BCKG]]  # off[l] = C[o, l]
    inserted = np.array([confusion[BCKG, SEIZ], 0])  # bckg is the null class
    counts = {"targets": confusion.sum(axis=1), "hits": diagonal,
              "misses": confusion.sum(axis=1) - diagonal, "false_alarms": inserted,
              "insertions": inserted, "deletions": np.array([confusion[SEIZ, BCKG], 0])}
    cells = {"tp": diagonal, "tn": diagonal[::-1], "fp": off, "fn": off[::-1]}
    return _result("epoch", counts, cells, duration, epoch_seconds, per_file)


def score_nedc(pairs: Sequence[tuple[CsvBi, CsvBi]]) -> dict[str, NedcResult]:
    """All three NEDC methods, keyed by METHODS."""
    return {"ovlp": score_ovlp(pairs), "taes": score_taes(pairs), "epoch": score_epoch(pairs)}
