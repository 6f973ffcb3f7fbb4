"""NEDC nedc_eeg_eval v6.0.0 on its own 30-file sample, checked against its printed output
(../shared/data/nedc_sample/expected), and each scoring rule on hand-built records."""

import math
import re
from pathlib import Path

import numpy as np
import pytest

from common.data.csv_bi import CsvBi, Event
from common.eval.nedc import (
    BCKG,
    LABEL_METRICS,
    SEIZ,
    SUMMARY_METRICS,
    score_epoch,
    score_nedc,
    score_ovlp,
    score_taes,
    timeline,
)
from common.eval.score import read_pairs

# NEDC's printed row names -> ours (nedc_eeg_eval_{ovlp,taes,epoch}.py display_results).
PRINTED = {
    "Targets": "targets", "Total": "targets", "Hits": "hits", "Misses": "misses",
    "False Alarms": "false_alarms", "Insertions": "insertions", "Deletions": "deletions",
    "True Positives (TP)": "tp", "True Positives(TP)": "tp", "True Negatives (TN)": "tn",
    "False Positives (FP)": "fp", "False Negatives (FN)": "fn",
    "Sensitivity (TPR, Recall)": "sensitivity", "Specificity (TNR)": "specificity",
    "Precision (PPV)": "precision", "Negative Pred. Value (NPV)": "npv", "Miss Rate (FNR)": "miss_rate",
    "False Positive Rate (FPR)": "fpr", "False Discovery Rate (FDR)": "fdr",
    "False Omission Rate (FOR)": "for", "Accuracy": "accuracy",
    "Misclassification Rate": "misclassification_rate", "Prevalence": "prevalence",
    "F1 Score (F Ratio)": "f1", "F1 Score": "f1", "Matthews (MCC)": "mcc",
    "False Alarm Rate": "fa_per_24h", "Total False Alarm Rate": "fa_per_24h",
    "Total Duration": "duration_seconds", "Total False Alarms": "total_false_alarms",
}
SECTIONS = {"ovlp": "NEDC OVERLAP SCORING SUMMARY", "taes": "NEDC TAES SCORING SUMMARY",
            "epoch": "NEDC EPOCH SCORING SUMMARY"}
ROW = re.compile(r"^\s+(.+?):\s+(-?\d+(?:\.(\d+))?)(%?)")


@pytest.fixture(scope="module")
def sample(nedc_sample) -> Path:
    return nedc_sample


@pytest.fixture(scope="module")
def scores(sample):
    return score_nedc(read_pairs(sample / "ref", sample / "hyp"))


def printed_blocks(text: str, method: str) -> dict[str, dict[str, tuple[str, int, bool]]]:
    """{"seiz" | "bckg" | "summary": {our name: (printed value, decimals, is percent)}}."""
    section = text.split(SECTIONS[method], 1)[1].split("=" * 20, 1)[0]
    blocks, current = {}, None
    for line in section.splitlines():
        if line.strip().startswith("LABEL:"):
            current = blocks.setdefault(line.split(":")[1].strip().lower(), {})
        elif line.strip() == "SUMMARY:":
            current = blocks.setdefault("summary", {})
        elif current is not None and (match := ROW.match(line)):
            name, value, decimals, percent = match.groups()
            current[PRINTED[name]] = (value, len(decimals or ""), percent == "%")
    return blocks


@pytest.mark.parametrize("method", ["ovlp", "taes", "epoch"])
def test_reproduces_nedc_summary_to_the_printed_digit(sample, scores, method):
    blocks = printed_blocks((sample / "expected" / "summary.txt").read_text(), method)
    ours = {**scores[method].per_label, "summary": scores[method].summary}
    assert set(blocks) == {"seiz", "bckg", "summary"}
    for block, printed in blocks.items():  # NEDC prints every metric we compute
        assert set(printed) == set(SUMMARY_METRICS if block == "summary" else LABEL_METRICS), block
    mismatches = [
        (block, name, value, f"{ours[block][name] * (100 if percent else 1):.{decimals}f}")
        for block, printed in blocks.items()
        for name, (value, decimals, percent) in printed.items()
        if f"{ours[block][name] * (100 if percent else 1):.{decimals}f}" != value
    ]
    print(f"{method}: {sum(map(len, blocks.values()))} printed numbers, mismatches {mismatches}")
    assert mismatches == []


def test_ovlp_headline_numbers(scores):
    seiz = scores["ovlp"].seiz
    assert seiz["targets"] == 701
    assert round(100 * seiz["sensitivity"], 4) == 86.1626
    assert seiz["false_alarms"] == 2
    assert round(seiz["fa_per_24h"], 4) == 3.8165


PER_FILE = re.compile(r"^\s+\d+: .*/([^/]+\.csv_bi)$")


@pytest.mark.parametrize("method", ["ovlp", "taes", "epoch"])
def test_reproduces_nedc_per_file_lines(sample, scores, method):
    text = (sample / "expected" / f"summary_{method}.txt").read_text()
    printed, name = {}, None
    for line in text.splitlines():
        if (match := PER_FILE.match(line)) and name is None:
            name = match.group(1)
        elif line.strip().startswith("(Hit:"):
            printed[name] = dict(re.findall(r"(\w[\w ]*?): (-?[\d.]+)", line))
            name = None
    ours = scores[method].per_file
    assert len(printed) == 30 and set(printed) == set(ours)
    for name, values in printed.items():
        if method == "epoch":
            expected = {"Hit": ours[name]["hits"], "Sub": ours[name]["substitutions"], "Ins": 0, "Del": 0,
                        "Total": ours[name]["substitutions"]}
            assert {k: int(v) for k, v in values.items()} == expected, name
        else:
            digits = 4 if method == "taes" else 0
            hit, miss, fa = (ours[name][k] for k in ("hits", "misses", "false_alarms"))
            total = miss + fa if method == "taes" else hit + miss + fa  # as each prints it
            expected = {"Hit": hit, "Miss": miss, "False Alarms": fa, "Total": total}
            assert values == {k: f"{v:.{digits}f}" for k, v in expected.items()}, name


# ----------------------------------------------------------------------------------------------
# hand-built records


def record(events, duration, name="x_s001_t000.csv_bi"):
    return CsvBi(name, duration, tuple(Event(a, b, label) for a, b, label in events))


def seiz(*spans):
    return [(a, b, "seiz") for a, b in spans]


def test_timeline_fills_background_and_merges_neighbours():
    line = timeline(record(seiz((10, 20), (20, 30)) + [(40, 50, "bckg")], 60))
    assert line.starts.tolist() == [0, 10, 30] and line.stops.tolist() == [10, 30, 60]
    assert line.labels.tolist() == [BCKG, SEIZ, BCKG]
    empty = timeline(record([], 60))
    assert (empty.starts.tolist(), empty.stops.tolist(), empty.labels.tolist()) == ([0], [60], [BCKG])
    full = timeline(record(seiz((0, 60)), 60))
    assert (full.starts.tolist(), full.stops.tolist(), full.labels.tolist()) == ([0], [60], [SEIZ])


def test_bad_pairs_are_errors():
    with pytest.raises(ValueError, match=r"labels \['gnsz'\] are not in NEDC's two-class map"):
        score_ovlp([(record([(1, 2, "gnsz")], 60), record([], 60))])
    with pytest.raises(ValueError, match="durations differ"):
        score_ovlp([(record([], 60), record([], 60.001))])
    with pytest.raises(ValueError, match="of another name"):
        score_ovlp([(record([], 60), record([], 60, name="y.csv_bi"))])
    with pytest.raises(ValueError, match="no records"):
        score_ovlp([])


def test_ovlp_any_overlap_hits_misses_and_false_alarms():
    ref = record(seiz((100, 200), (300, 400), (1000, 1100)), 3600)
    # one hyp event covers two ref events; one only touches a ref event (no overlap); one is alone
    hyp = record(seiz((150, 350), (1100, 1200), (2000, 2010)), 3600)
    result = score_ovlp([(ref, hyp)])
    s, b = result.seiz, result.per_label["bckg"]
    assert (s["targets"], s["hits"], s["misses"], s["false_alarms"]) == (3, 2, 1, 2)
    # bckg: ref [0,100) [200,300) [400,1000) [1100,3600); hyp [0,150) [350,1100) [1200,2000) [2010,3600)
    assert (b["targets"], b["hits"], b["misses"], b["false_alarms"]) == (4, 3, 1, 0)
    assert (s["tp"], s["tn"], s["fp"], s["fn"]) == (2, 3, 2, 1)
    assert s["sensitivity"] == pytest.approx(2 / 3) and s["specificity"] == pytest.approx(3 / 5)
    assert s["fa_per_24h"] == pytest.approx(2 / 3600 * 86400)
    assert result.per_file["x_s001_t000.csv_bi"] == {"hits": 5, "misses": 2, "false_alarms": 2}


def taes_seiz(ref_spans, hyp_spans, duration=100.0):
    s = score_taes([(record(seiz(*ref_spans), duration), record(seiz(*hyp_spans), duration))]).seiz
    return s["hits"], s["misses"], s["false_alarms"]


def test_taes_fractional_partial_overlap():
    assert taes_seiz([(10, 20)], [(15, 25)]) == pytest.approx((0.5, 0.5, 0.5))  # starts inside, ends after
    assert taes_seiz([(10, 20)], [(8, 14)]) == pytest.approx((0.4, 0.6, 0.2))  # starts before, ends inside
    assert taes_seiz([(10, 20)], [(9, 22)]) == pytest.approx((1.0, 0.0, 0.3))  # covers
    assert taes_seiz([(10, 20)], [(0, 40)]) == pytest.approx((1.0, 0.0, 1.0))  # false alarm capped at 1
    assert taes_seiz([(50, 60)], []) == (0, 1, 0) and taes_seiz([], [(70, 80)]) == (0, 0, 1)


def test_taes_one_hyp_event_counts_for_one_ref_event():
    # the hyp event reaches past the first ref event: the second one it covers is a miss
    assert taes_seiz([(10, 20), (30, 40)], [(8, 42)]) == pytest.approx((1.0, 1.0, 1.0))


def test_taes_several_hyp_events_inside_one_ref_event_add_up():
    assert taes_seiz([(10, 30)], [(12, 14), (20, 25)]) == pytest.approx((0.35, 0.65, 0.0))


def test_taes_whole_second_gate_as_nedc():
    # [10.1, 10.3] does not overlap [10.5, 20] but shares second 10 with it: NEDC's anyovlp lets it
    # in (with a negative "hit"), because [12, 15] opens the gate with a real overlap.
    hit, miss, fa = taes_seiz([(10.5, 20)], [(10.1, 10.3), (12, 15)])
    assert (hit, miss, fa) == pytest.approx((2.8 / 9.5, 1 - 2.8 / 9.5, 0.4 / 9.5))


def test_taes_mcc_of_a_negative_margin_is_undefined_not_a_crash():
    """Sub-second events whose whole-second gate makes partial hits negative (a review's random
    records): one negative margin of the MCC, where NEDC's own math.sqrt raises, and two, where it
    prints a number (-0.75 here) that means nothing."""
    records = {1: ([(0.1016, 1.2216), (1.6636, 2.0629), (2.4952, 2.8135)],
                   [(0.3237, 0.4707), (0.5317, 1.8061), (3.443, 3.7853)]),
               2: ([(0.0716, 0.6537), (0.8001, 1.175), (1.4348, 2.2934)],
                   [(0.3828, 0.6582), (1.1866, 1.2859), (1.4317, 2.717)])}
    for negative, (ref, hyp) in records.items():
        scored = score_taes([(record(seiz(*ref), 5.0), record(seiz(*hyp), 5.0))]).seiz
        tp, tn, fp, fn = (scored[k] for k in ("tp", "tn", "fp", "fn"))
        assert sum(m < 0 for m in (tp + fp, tp + fn, tn + fp, tn + fn)) == negative
        assert math.isnan(scored["mcc"]) and math.isfinite(scored["sensitivity"])  # the rest as NEDC scores it


def test_epoch_samples_mid_epoch_with_inclusive_bounds():
    result = score_epoch([(record(seiz((0.5, 1.0)), 2.0), record(seiz((0.5, 1.5)), 2.0))])
    s, b = result.seiz, result.per_label["bckg"]
    # epochs at 0.125, 0.375, ..., 1.875: ref seiz at 0.625, 0.875; hyp seiz from 0.625 to 1.375
    assert (s["targets"], s["hits"], s["misses"], s["false_alarms"]) == (2, 2, 0, 2)
    assert (b["targets"], b["hits"], b["misses"], b["false_alarms"]) == (6, 4, 2, 0)
    assert (s["insertions"], s["deletions"], b["insertions"], b["deletions"]) == (2, 0, 0, 0)
    assert (s["tp"], s["tn"], s["fp"], s["fn"]) == (2, 4, 2, 0)
    assert s["fa_per_24h"] == pytest.approx(2 * 0.25 / 2.0 * 86400)
    # run-length pairs (b,b) (s,s) (b,s) (b,b)
    assert result.per_file["x_s001_t000.csv_bi"] == {"hits": 3, "substitutions": 1}
    # a sample on a boundary takes the earlier event; the last sample may sit on the end
    # (ref seiz holds the samples 0.375 and 0.625 on its bounds, and gets only 0.625)
    edge = score_epoch([(record(seiz((0.375, 0.625)), 2.125), record(seiz((0.5, 0.75)), 2.125))])
    assert (edge.seiz["targets"], edge.seiz["hits"], edge.seiz["false_alarms"]) == (1, 1, 0)
    assert edge.summary["targets"] == 9


def test_no_seizures_at_all_follows_nedc_zero_convention():
    result = score_ovlp([(record([], 100), record([], 100))])
    assert result.seiz["targets"] == 0 and result.seiz["sensitivity"] == 0 and result.seiz["mcc"] == 0
    assert result.per_label["bckg"]["sensitivity"] == 1


def test_results_use_the_canonical_names(scores):
    for result in scores.values():
        assert all(tuple(m) == LABEL_METRICS for m in result.per_label.values())
        assert tuple(result.summary) == SUMMARY_METRICS
        assert all(np.isfinite(v) for m in result.per_label.values() for v in m.values())
