"""Scores of (reference, hypothesis) `.csv_bi` records: NEDC v6.0.0 OVLP, TAES and epoch for the
seiz label (common/eval/nedc.py) and SzCORE event scoring averaged over subjects
(common/eval/szcore.py), as one dict, its table, and metrics.json (jaxbrr/evaluate.py documents
the schema). Used by `python -m jaxbrr.evaluate --score` and by common/eval/report.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from common.data.csv_bi import CsvBi, read_csv_bi
from common.eval.nedc import METHODS, score_nedc
from common.eval.szcore import COUNTS, score_szcore
from common.files import write_text

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
    write_text(path, json.dumps(_json_safe(metrics), indent=2, allow_nan=False) + "\n")
    return path


def read_pairs(ref_dir: str | Path, hyp_dir: str | Path) -> list[tuple[CsvBi, CsvBi]]:
    """(reference, hypothesis) records paired by file name, sorted by name.

    `*.csv_bi` files are found at any depth (TUSZ nests them by patient and session); a name
    found twice under one folder, or on one side only, is an error naming the file(s).
    """
    found = {}
    for side, folder in (("reference", Path(ref_dir)), ("hypothesis", Path(hyp_dir))):
        if not folder.is_dir():
            raise FileNotFoundError(f"{side} folder {folder} does not exist")
        files: dict[str, Path] = {}
        for path in sorted(folder.rglob("*.csv_bi")):
            if path.name in files:
                raise ValueError(f"{side} folder {folder} holds {path.name} twice: {files[path.name]} and {path}")
            files[path.name] = path
        if not files:
            raise ValueError(f"{side} folder {folder} holds no .csv_bi files")
        found[side] = files
    refs, hyps = found["reference"], found["hypothesis"]
    for name in sorted(refs.keys() ^ hyps.keys()):
        missing, present = ("hypothesis", refs[name]) if name in refs else ("reference", hyps[name])
        raise ValueError(f"{present} has no {missing} file of the same name under "
                         f"{hyp_dir if missing == 'hypothesis' else ref_dir}")
    return [(read_csv_bi(refs[name]), read_csv_bi(hyps[name])) for name in sorted(refs)]
