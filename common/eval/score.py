"""Scores of (reference, hypothesis) `.csv_bi` records: NEDC v6.0.0 OVLP, TAES and epoch for the
seiz label (common/eval/nedc.py) and SzCORE event scoring averaged over subjects
(common/eval/szcore.py), as one dict, its table, and metrics.json (jaxbrr/evaluate.py documents
the schema); and the pairing of two folders of `.csv_bi` files by name. Used by
`python -m jaxbrr.evaluate --score` and by common/eval/report.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.data.csv_bi import CsvBi, read_csv_bi
from common.eval.nedc import METHODS, score_nedc, timeline
from common.eval.szcore import COUNTS, score_szcore, seizure_mask
from common.files import write_text
from common.shown import plural

METRICS_FILE = "metrics.json"


def score_pairs(pairs: Sequence[tuple[CsvBi, CsvBi]]) -> dict:
    """Every score of (reference, hypothesis) records, as the module docstring's metrics.json."""
    nedc = score_nedc(pairs)
    szcore = score_szcore(pairs)
    return {
        "records": len(pairs),
        "duration_seconds": nedc["ovlp"].summary["duration_seconds"],
        # per_file: which recordings hold the misses and false alarms, without scoring again
        "nedc": {m: {**nedc[m].per_label, "summary": nedc[m].summary, "per_file": nedc[m].per_file} for m in METHODS},
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
    rows.append(f"{plural(metrics['records'], 'record')}, {hours:.2f} h; NEDC: FA/24h over the total duration "
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


@dataclass
class Pairing:
    """The records of two folders paired by file name, and the files left without a partner."""

    ref_dir: Path
    hyp_dir: Path
    pairs: list[tuple[CsvBi, CsvBi]]  # (reference, hypothesis), sorted by name
    reference_only: list[Path]  # no hypothesis file of the same name
    hypothesis_only: list[Path]  # no reference file of the same name
    refused: list[str] = field(default_factory=list)  # pairs that cannot be scored, why (naming the files)

    def unmatched_lines(self) -> list[str]:
        return ([f"{path} has no hypothesis file of the same name under {self.hyp_dir}" for path in self.reference_only]
                + [f"{path} has no reference file of the same name under {self.ref_dir}" for path in self.hypothesis_only])

    def unmatched_message(self) -> str:
        """One message naming every file without a partner (callers print it when there are any)."""
        lines = self.unmatched_lines()
        return (f"{len(lines)} file(s) without a partner of the same name, not scored (the other "
                f"{len(self.pairs)} pair(s) are); a recording whose prediction or labels were skipped has "
                "one side only: fix that recording and rerun the step that skipped it, or remove the "
                "file\n  " + "\n  ".join(lines))

    def refused_message(self) -> str:
        """One message naming every pair that could not be scored (callers print it when there are any)."""
        return (f"{len(self.refused)} pair(s) that cannot be scored, left out (the other {len(self.pairs)} "
                "are scored); fix or remove those files\n  " + "\n  ".join(self.refused))


def _csv_bi_files(side: str, folder: Path) -> dict[str, Path]:
    """name -> path of the `*.csv_bi` files at any depth (TUSZ nests them by patient and session)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{side} folder {folder} does not exist")
    files: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.csv_bi")):
        if path.name in files:
            raise ValueError(f"{side} folder {folder} holds {path.name} twice: {files[path.name]} and {path}")
        files[path.name] = path
    if not files:
        raise ValueError(f"{side} folder {folder} holds no .csv_bi files")
    return files


def pair_records(ref_dir: str | Path, hyp_dir: str | Path) -> Pairing:
    """The (reference, hypothesis) records whose files have the same name, at any depth of each
    folder; a file on one side only is left out and listed, not scored. A name found twice under
    one folder, an empty or missing folder, or no name on both sides is an error naming the files.
    """
    ref_dir, hyp_dir = Path(ref_dir), Path(hyp_dir)
    refs, hyps = _csv_bi_files("reference", ref_dir), _csv_bi_files("hypothesis", hyp_dir)
    names = sorted(refs.keys() & hyps.keys())
    pairing = Pairing(ref_dir, hyp_dir, [], [refs[n] for n in sorted(refs.keys() - hyps.keys())],
                      [hyps[n] for n in sorted(hyps.keys() - refs.keys())])
    if not names:  # every file is on one side only: name one of each side, not thousands
        raise ValueError(f"no file name is in both folders, so nothing can be scored: "
                         f"{pairing.reference_only[0]} has no hypothesis file of the same name under {hyp_dir}, "
                         f"nor {pairing.hypothesis_only[0]} a reference under {ref_dir} ({len(refs)} and "
                         f"{len(hyps)} files, none paired); a hypothesis is scored against the reference "
                         "named <stem>.csv_bi like it: check that the folders hold the same recordings")
    for name in names:  # one malformed file, or a pair of two recordings, costs that pair only
        try:
            ref, hyp = read_csv_bi(refs[name]), read_csv_bi(hyps[name])
        except ValueError as err:  # AnnotationError: the file, the line, the fix
            pairing.refused.append(str(err))
            continue
        if round(ref.duration_seconds, 4) != round(hyp.duration_seconds, 4):  # the scorers' own check
            pairing.refused.append(
                f"durations differ: reference {ref.path} {ref.duration_seconds} s, hypothesis {hyp.path} "
                f"{hyp.duration_seconds} s; a hypothesis is written for the recording its reference labels "
                "(predict writes the EDF's duration): are they of one recording?")
            continue
        try:  # what the scorers refuse (labels other than seiz/bckg, SzCORE's < 1 s), per pair, not per set
            for record in (ref, hyp):
                timeline(record)
                seizure_mask(record)
        except ValueError as err:
            pairing.refused.append(str(err))
            continue
        pairing.pairs.append((ref, hyp))
    if not pairing.pairs:
        raise ValueError(f"no pair of {ref_dir} and {hyp_dir} can be scored:\n  " + "\n  ".join(pairing.refused))
    return pairing


def read_pairs(ref_dir: str | Path, hyp_dir: str | Path) -> list[tuple[CsvBi, CsvBi]]:
    """pair_records' pairs when every file has its partner (a scoring set that must be complete,
    such as NEDC's sample); else the error names the first file without one."""
    pairing = pair_records(ref_dir, hyp_dir)
    unmatched = pairing.unmatched_lines() + pairing.refused
    if unmatched:
        raise ValueError(unmatched[0])
    return pairing.pairs
