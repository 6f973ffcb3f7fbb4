"""From a config to a ready corpus: generate the synthetic data if asked, build the cache, split.

This is what `python -m jaxbrr.data build` and the training loop call. The summary says which
corpus layout and which split were used, what was left out and why, every recording whose
labels had to be cut, and those with flat channels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.config import Config
from common.data.cache import MANIFEST, BuildResult, Corpus, build_cache, skip_line
from common.data.corpora import SPLITS, assign_splits
from common.data.windows import BACKGROUND, WindowSpec
from common.shown import SUMMARY_SHOWN, shown_inline, shown_lines

# WORKDIR/splits.json: each split's recordings (stem -> patient) as the run's training found them.
# A seeded split permutes the patients it finds, so one patient added to or removed from the
# corpus moves others between splits; a resumed run and `evaluate --split` follow this file instead.
SPLITS_FILE = "splits.json"


@dataclass
class FollowedSplit:
    """The split read from a run's SPLITS_FILE rather than computed: `missing`, its recordings
    the corpus no longer yields; `new`, the corpus's recordings in none of its splits (unused);
    `sizes`, how many recordings the record puts in each split."""
    path: Path
    missing: list[str]
    new: list[str]
    sizes: dict[str, int] = field(default_factory=dict)


@dataclass
class PreparedData:
    corpus: Corpus
    splits: dict[str, list[str]]  # split -> recording stems
    build: BuildResult | None = None
    summary: list[dict] = field(default_factory=list)
    synthetic: str | None = None  # the summary's line saying the corpus is generated, when it is
    followed: FollowedSplit | None = None  # the splits are a run's recorded ones (prepare's keep_split)


def ensure_synthetic(config: Config, progress: bool = True) -> str | None:
    """Generate the synthetic corpus into data.data_dir when the config asks for one (a folder the
    generator owns: common/data/synth.py refuses one holding files it did not write); returns the
    line that says so (None without data.synthetic), so that a mistyped corpus path in a config
    that sets data.synthetic cannot pass for real EEG."""
    if config.data.synthetic is None:
        return None
    from common.data.synth import generate_from_config

    paths = generate_from_config(config.data.data_dir, config.data.synthetic, progress=progress)
    return (f"synthetic EEG (data.synthetic): {len(paths)} generated recordings in {config.data.data_dir}; "
            "for a corpus set data.synthetic: null and data.data_dir to its folder")


def prepare(config: Config, progress: bool = True, keep_split: Path | None = None,
            plain_lines: bool = False) -> PreparedData:
    """Generate, build, split. With `keep_split` (a run's SPLITS_FILE) the splits are the ones it
    records, where that file exists: PreparedData.followed says what it lacks or adds.
    `plain_lines`: without bars, the build's progress as a line a minute (common/progress.py)."""
    synthetic = ensure_synthetic(config, progress)
    build = build_cache(config, progress=progress, plain_lines=plain_lines)
    corpus = Corpus(build.root)
    stems = corpus.stems
    patients = {s: corpus.recordings[s]["patient"] for s in stems}
    official = None
    if build.survey.split_kind == "official":
        where = {r.stem: r.official for r in build.survey.recordings}
        official = {s: where[s] for s in stems}
    split_of = assign_splits(patients, config.data.split, official)
    splits = {name: [s for s in stems if split_of[s] == name] for name in SPLITS}
    prepared = PreparedData(corpus, splits, build, synthetic=synthetic)
    if keep_split is not None and Path(keep_split).is_file():
        follow_split(prepared, Path(keep_split))
    prepared.summary = summarize(prepared, config)
    return prepared


def split_record(prepared: PreparedData) -> dict:
    """What SPLITS_FILE holds: {"splits": {split: {stem: patient}}}."""
    recordings = prepared.corpus.recordings
    return {"splits": {name: {stem: recordings[stem]["patient"] for stem in stems}
                       for name, stems in prepared.splits.items()}}


def read_split_record(path: Path) -> dict[str, dict[str, str]]:
    """{split: {stem: patient}} of a SPLITS_FILE; ValueError naming the file when it is not one."""
    try:
        splits = json.loads(path.read_text())["splits"]
        if not isinstance(splits, dict):
            raise ValueError(f"splits is a {type(splits).__name__}, not a mapping of split names")
        if set(splits) - set(SPLITS) or not all(isinstance(v, dict) for v in splits.values()):
            raise ValueError(f"splits {sorted(splits)}, needs a subset of {list(SPLITS)} each mapping stems to patients")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a split record as training writes it ({err}); it records which "
                         "recordings the run trained and validated on: restore it from a backup, or "
                         "delete it to split the corpus afresh (a resumed run may then train on other "
                         "recordings, and evaluate --split may score ones the run trained on)") from None
    return splits


def follow_split(prepared: PreparedData, path: Path) -> None:
    """Set prepared.splits to the record's, in the corpus's order, and prepared.followed."""
    recorded = read_split_record(path)
    split_of = {stem: name for name, members in recorded.items() for stem in members}
    present = set(prepared.corpus.stems)
    prepared.splits = {name: [s for s in prepared.corpus.stems if split_of.get(s) == name] for name in SPLITS}
    prepared.followed = FollowedSplit(path, sorted(set(split_of) - present),
                                      [s for s in prepared.corpus.stems if s not in split_of],
                                      {name: len(members) for name, members in recorded.items()})


def followed_lines(followed: FollowedSplit) -> list[str]:
    """The summary's words for a followed split."""
    lines = [f"split: as recorded in {followed.path}"]
    if followed.new:
        lines.append(f"  {len(followed.new)} recording(s) new since, in none of its splits (not used): "
                     + shown_inline(followed.new, SUMMARY_SHOWN))
    if followed.missing:
        lines.append(f"  {len(followed.missing)} of its recording(s) not in the corpus now (built? skipped?): "
                     + shown_inline(followed.missing, SUMMARY_SHOWN))
    return lines


def skipped_by_split(prepared: PreparedData) -> list[dict]:
    """The build's left-out and skipped files ({"source", "reason"}), each with "split": the one
    it would be in (its official folder's, else its patient's where that patient's other
    recordings were split), or None (a seeded split places only patients with a cached recording)."""
    build = prepared.build
    if build is None:
        return []
    found = {str(r.edf): r for r in build.survey.recordings}
    split_of_patient = {prepared.corpus.recordings[s]["patient"]: name
                        for name, stems in prepared.splits.items() for s in stems}
    out = []
    for item in build.survey.left_out + build.skipped:
        recording = found.get(item["source"])
        split = None if recording is None else recording.official or split_of_patient.get(recording.patient)
        out.append({**item, "split": split})
    return out


def train_spec(config: Config) -> WindowSpec:
    return WindowSpec(config.window_samples, config.stride_samples)


def summarize(prepared: PreparedData, config: Config) -> list[dict]:
    """One row per split: recordings, hours, windows, seizure windows, seizure hours."""
    rows = []
    spec = train_spec(config)
    for name, stems in prepared.splits.items():
        meta = [prepared.corpus.recordings[s] for s in stems]
        table = prepared.corpus.window_table(stems, spec)
        short = sum(1 for m in meta if m["n_samples"] < spec.window_samples)
        rows.append({
            "split": name,
            "patients": len({m["patient"] for m in meta}),
            "recordings": len(meta),
            "hours": sum(m["n_samples"] / m["sfreq"] for m in meta) / 3600,
            "windows": int(len(table["class"])),
            "seizure_windows": int(np.sum(table["class"] != BACKGROUND)),
            "seizure_hours": sum(m["labels"]["seizure_seconds"] for m in meta) / 3600,
            "shorter_than_window": short,
        })
    return rows


def labels_cut(recordings: dict[str, dict], stems: list[str]) -> dict[str, dict]:
    """{stem: {clipped_events, dropped_events, annotations}} of the recordings whose seizure events
    ran past their end (cut there) or started after it (dropped)."""
    cut = {}
    for stem in stems:
        report = recordings[stem]["labels"]
        if report["clipped_events"] or report["dropped_events"]:
            cut[stem] = {"clipped_events": report["clipped_events"], "dropped_events": report["dropped_events"],
                         "annotations": recordings[stem]["annotations"]}
    return cut


def label_issues(recordings: dict[str, dict], stems: list[str]) -> list[str]:
    """labels_cut as lines, one per recording."""
    return [f"{stem}: {c['clipped_events']} seizure event(s) cut at the recording's end, {c['dropped_events']} "
            f"starting after it, dropped ({c['annotations']})" for stem, c in labels_cut(recordings, stems).items()]


def _channels_with(counts: list[int], channels: list[str]) -> str:
    return ", ".join(f"{c} {k}" for c, k in zip(channels, counts, strict=True) if k)


# What a recording's preprocessing report counts, as the summary lists it: (heading, the report's
# entry as one line's text, or "" where there is nothing to say)
INTERVENTIONS = (
    ("flat channels (read as zeros)", lambda r: ", ".join(r["flat_channels"])),
    ("channels interpolated (spherical spline)", lambda r: ", ".join(r["interpolated_channels"])),
    ("NaN/Inf samples (zeroed, left out of the z-score)",
     lambda r: _channels_with(r["nonfinite_samples"], r["channels"])),
    ("EDF header repairs", lambda r: "; ".join(r["repairs"])),
)


def intervention_issues(recordings: dict[str, dict], stems: list[str]) -> list[tuple[str, list[str]]]:
    """Per INTERVENTIONS kind that some recording's report counts: (heading, one line per recording)."""
    reports = [(stem, report) for stem in stems if (report := recordings[stem].get("report"))]
    found = []
    for heading, said in INTERVENTIONS:
        lines = [f"{stem}: {text}" for stem, report in reports if (text := said(report))]
        if lines:
            found.append((heading, lines))
    return found


def clipping_line(recordings: dict[str, dict], stems: list[str]) -> str | None:
    """Clipped samples over the corpus, one line (None when none were): where in one recording
    they are many, its sidecar says which channels (a DC offset's start-up ring under
    preprocess.filter_start: rest clips there first)."""
    reports = [(stem, report) for stem in stems if (report := recordings[stem].get("report"))]
    share = {stem: sum(r["clipped_samples"]) / max(1, r["n_samples"] * len(r["channels"])) for stem, r in reports}
    clipped = [stem for stem in share if share[stem]]
    if not clipped:
        return None
    total = sum(sum(r["clipped_samples"]) for _, r in reports)
    every = sum(r["n_samples"] * len(r["channels"]) for _, r in reports)
    most = max(clipped, key=share.get)
    return (f"samples clipped at preprocess.clip_sigma: {100 * total / every:.3g} % of all, in {len(clipped)} of "
            f"{len(reports)} recording(s); the most in {most} ({100 * share[most]:.3g} % of its samples; its "
            "sidecar, recordings/<stem>.json, counts them per channel)")


def format_summary(prepared: PreparedData) -> str:
    head = f"{'split':<6} {'patients':>8} {'recs':>5} {'hours':>7} {'windows':>8} {'sz win':>7} {'sz hours':>8} {'short':>5}"
    build = prepared.build
    lines = [prepared.synthetic] if prepared.synthetic else []
    lines += build.survey.lines() if build is not None and build.survey is not None else []
    lines += followed_lines(prepared.followed) if prepared.followed is not None else []
    lines += [head, "-" * len(head)]
    for r in prepared.summary:
        lines.append(
            f"{r['split']:<6} {r['patients']:>8} {r['recordings']:>5} {r['hours']:>7.2f} {r['windows']:>8} "
            f"{r['seizure_windows']:>7} {r['seizure_hours']:>8.3f} {r['shorter_than_window']:>5}"
        )
    if build is not None:
        lines.append(
            f"cache {build.root}: {len(build.built)} built, {len(build.reused)} reused, "
            f"{len(build.skipped)} skipped"
            + (" (fix them, or remove them from data_dir):" if build.skipped else "")
        )
        lines.extend(shown_lines([skip_line(item) for item in build.skipped], limit=SUMMARY_SHOWN,
                                 where=f" (every one under `skipped` in {build.root / MANIFEST})"))
    issues = label_issues(prepared.corpus.recordings, prepared.corpus.stems)
    if issues:
        lines.append(f"labels cut in {len(issues)} recording(s):")
        lines.extend(shown_lines(issues, limit=SUMMARY_SHOWN, where=" (each recording's sidecar, recordings/<stem>.json)"))
    for heading, found in intervention_issues(prepared.corpus.recordings, prepared.corpus.stems):
        lines.append(f"{heading} in {len(found)} recording(s):")
        lines.extend(shown_lines(found, limit=SUMMARY_SHOWN, where=" (each recording's sidecar, recordings/<stem>.json)"))
    clipping = clipping_line(prepared.corpus.recordings, prepared.corpus.stems)
    lines += [clipping] if clipping else []
    return "\n".join(lines)
