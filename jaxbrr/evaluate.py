"""`python -m jaxbrr.evaluate --score REF_DIR HYP_DIR [--out DIR]`: score seizure annotations.

Modes (one per run):
    --score REF_DIR HYP_DIR   score existing `.csv_bi` hypotheses against references, no model:
                              files are paired by name at any depth (jaxbrr/eval/csv_bi.py)
    (--checkpoint CKPT [--split dev|eval | --edf-dir DIR], inference then scoring, is issue 8's
    other half and joins the same mutually exclusive group; it ends in `score_pairs` too.)

Scores: NEDC v6.0.0 OVLP, TAES and epoch for the seiz label (jaxbrr/eval/nedc.py) and SzCORE event
scoring, averaged over subjects (jaxbrr/eval/szcore.py). Prints a table; with --out, writes
DIR/metrics.json atomically:

    {"records": N, "duration_seconds": D,
     "nedc": {"ovlp" | "taes" | "epoch": {"seiz": {LABEL_METRICS}, "bckg": {...},
                                          "summary": {SUMMARY_METRICS}}},
     "szcore": {"mean": {SZCORE_METRICS}, "std": {...}, "subjects": S,
                "per_subject": {subject: {COUNTS and SZCORE_METRICS}}}}

NEDC ratios are fractions (NEDC prints them as %). An undefined SzCORE metric (NaN) is written
as null, JSON having no NaN. Exit status: 0 scored, 2 bad arguments or input files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxbrr.data.annotations import atomic_write_text
from jaxbrr.eval.csv_bi import CsvBi, read_pairs
from jaxbrr.eval.nedc import METHODS, score_nedc
from jaxbrr.eval.szcore import COUNTS, score_szcore

EXIT_OK, EXIT_INPUT = 0, 2
METRICS_FILE = "metrics.json"


def score_pairs(pairs: Sequence[tuple[CsvBi, CsvBi]]) -> dict:
    """Every score of (reference, hypothesis) records, as the module docstring's metrics.json."""
    nedc = score_nedc(pairs)
    szcore = score_szcore(pairs)
    return {
        "records": len(pairs),
        "duration_seconds": nedc["ovlp"].summary["duration_seconds"],
        "nedc": {m: {**nedc[m].per_label, "summary": nedc[m].summary} for m in METHODS},
        "szcore": {
            "mean": szcore.mean,
            "std": szcore.std,
            "subjects": len(szcore.per_subject),
            "per_subject": {
                subject: {**{k: getattr(c, k) for k in COUNTS}, **c.metrics()}
                for subject, c in szcore.per_subject.items()
            },
        },
    }


def _percent(value: float) -> str:
    return "       n/a" if math.isnan(value) else f"{100 * value:9.4f}%"


def metrics_table(metrics: dict) -> str:
    """Seizure-label scores, one row per method."""
    rows = [f"{'seiz':<14}{'sensitivity':>12}{'precision':>12}{'f1':>9}{'FA/24h':>12}  counts"]
    for method in METHODS:
        seiz = metrics["nedc"][method]["seiz"]
        counts = (f"{seiz['targets']:.0f} targets, {seiz['hits']:.2f} hits, "
                  f"{seiz['false_alarms']:.2f} false alarms")
        rows.append(f"{'NEDC ' + method.upper():<14}{_percent(seiz['sensitivity']):>12}"
                    f"{_percent(seiz['precision']):>12}{seiz['f1']:9.4f}{seiz['fa_per_24h']:12.4f}  {counts}")
    mean = metrics["szcore"]["mean"]
    f1 = "n/a" if math.isnan(mean["f1"]) else f"{mean['f1']:.4f}"
    rows.append(f"{'SzCORE event':<14}{_percent(mean['sensitivity']):>12}{_percent(mean['precision']):>12}"
                f"{f1:>9}{mean['fp_per_24h']:12.4f}  mean of {metrics['szcore']['subjects']} subjects")
    hours = metrics["duration_seconds"] / 3600
    rows.append(f"{metrics['records']} records, {hours:.2f} h; NEDC: FA/24h over the total duration "
                "(epoch: false-alarm seconds per day)")
    return "\n".join(rows)


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_metrics(metrics: dict, out_dir: str | Path) -> Path:
    path = Path(out_dir) / METRICS_FILE
    atomic_write_text(path, json.dumps(_json_safe(metrics), indent=2, allow_nan=False) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxbrr.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--score", nargs=2, metavar=("REF_DIR", "HYP_DIR"),
                      help="score existing .csv_bi hypotheses against references (no model)")
    # The model mode (--checkpoint CKPT with --split dev|eval or --edf-dir DIR) is added here.
    parser.add_argument("--out", metavar="DIR", help=f"write DIR/{METRICS_FILE}")
    args = parser.parse_args(argv)

    try:
        pairs = read_pairs(*args.score)
        metrics = score_pairs(pairs)
    except (OSError, ValueError) as err:  # missing folders, unpaired or malformed files
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    print(metrics_table(metrics))
    if args.out:
        print(f"wrote {write_metrics(metrics, args.out)}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
