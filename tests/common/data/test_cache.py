"""The cache: bad files skipped and listed, finished work kept, config changes rebuild."""

import io
import json
import os
import sys
import time
from pathlib import Path

import edfio
import numpy as np
import pytest

from common.config import load_config
from common.data.cache import (
    MANIFEST,
    MAPPED_RECORDINGS,
    Corpus,
    build_cache,
    cache_path,
)
from common.data.csv_bi import Event, with_background, write_csv_bi
from common.data.montage import REF19
from common.data.prepare import format_summary, prepare
from common.data.windows import WindowSpec
from common.eval.recordings import predict_recordings
from common.files import STALE_SECONDS

SFREQ = 256


def _write_edf(path, seconds, sfreq=SFREQ, drop=(), seed=0):
    rng = np.random.default_rng(seed)
    signals = [
        edfio.EdfSignal(rng.standard_normal(int(seconds * sfreq)) * 30, sfreq,
                        label=f"EEG {name.upper()}-REF", physical_dimension="uV",
                        physical_range=(-3000, 3000))
        for name in REF19 if name not in drop
    ]
    edfio.Edf(signals).write(path)


def _recording(folder, stem, seconds=40, seizure=(10.0, 25.0), **kw):
    _write_edf(folder / f"{stem}.edf", seconds, **kw)
    events = [Event(*seizure, "seiz")] if seizure else []
    write_csv_bi(folder / f"{stem}.csv_bi", with_background(events, seconds), seconds)


def _config(tmp_path, *extra):
    return load_config(None, [
        f"data.data_dir={tmp_path / 'edf'}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.window_seconds=16", "data.stride_seconds=8", *extra,
    ])


@pytest.fixture
def corpus_dir(tmp_path):
    folder = tmp_path / "edf"
    folder.mkdir()
    _recording(folder, "pa_s001_t000")
    _recording(folder, "pa_s001_t001", seizure=None, seed=1)
    _recording(folder, "pb_s001_t000", seed=2)
    _recording(folder, "pc_s001_t000", seconds=10, seizure=None, seed=3)  # shorter than a window: kept, reported
    # bad inputs, each must be skipped with its reason
    _recording(folder, "bad1_s001_t000", drop=("C3",), seed=4)  # missing non-midline channel
    (folder / "bad2_s001_t000.edf").write_text("this is not an EDF file\n")
    write_csv_bi(folder / "bad2_s001_t000.csv_bi", [], 10.0)
    _recording(folder, "bad3_s001_t000", seed=5)
    good = (folder / "bad3_s001_t000.edf").read_bytes()
    (folder / "bad3_s001_t000.edf").write_bytes(good[: len(good) // 3])  # truncated
    _recording(folder, "bad4_s001_t000", seed=6)
    (folder / "bad4_s001_t000.csv_bi").write_text("TERM,1.0,oops,seiz,1\n")  # malformed row
    _write_edf(folder / "bad5_s001_t000.edf", 20, seed=7)  # no annotation file
    return folder


def test_build_skips_bad_files_and_keeps_good_ones(tmp_path, corpus_dir):
    config = _config(tmp_path)
    result = build_cache(config, progress=False)
    assert sorted(result.built) == ["pa_s001_t000", "pa_s001_t001", "pb_s001_t000", "pc_s001_t000"]
    reasons = {s["source"].split("/")[-1]: s["reason"] for s in result.skipped}
    assert set(reasons) == {f"bad{i}_s001_t000.edf" for i in range(1, 6)}
    assert "C3" in reasons["bad1_s001_t000.edf"]
    assert "bad4_s001_t000.csv_bi:1" in reasons["bad4_s001_t000.edf"]
    assert "no annotation file" in reasons["bad5_s001_t000.edf"]
    for name, reason in reasons.items():
        assert name.split(".")[0] in reason, f"reason for {name} does not name the file: {reason}"
    manifest = json.loads((result.root / "manifest.json").read_text())
    assert len(manifest["recordings"]) == 4 and len(manifest["skipped"]) == 5

    corpus = Corpus(result.root)
    signals, labels = corpus.arrays("pa_s001_t000")
    assert isinstance(signals, np.memmap) and signals.dtype == np.float32
    assert signals.shape == (19, 40 * SFREQ) and labels.shape == (40 * SFREQ,)
    assert labels.sum() == 15 * SFREQ and labels[10 * SFREQ] == 1 and labels[10 * SFREQ - 1] == 0
    short = corpus.recordings["pc_s001_t000"]
    assert short["n_samples"] == 10 * SFREQ  # kept, never dropped
    x, y, valid = corpus.window("pa_s001_t000", 8 * SFREQ, 16 * SFREQ)
    assert np.array_equal(x, np.asarray(signals[:, 8 * SFREQ : 24 * SFREQ]))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open descriptors in /proc/self/fd (Linux)")
def test_a_corpus_of_thousands_of_recordings_keeps_a_bounded_number_of_files_open(tmp_path):
    """Every recording stayed memory-mapped once read, two descriptors each: 520 recordings ran
    out of a 1024-descriptor limit at the summary after a whole build ("Too many open files").
    Reading 3 × MAPPED_RECORDINGS recordings' table, windows and evaluation traces now leaves at most
    MAPPED_RECORDINGS of them open, and a recording read again after it was let go reads the same."""
    n, samples = 3 * MAPPED_RECORDINGS, 64
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    for i in range(n):
        np.save(recordings / f"r{i:04d}.signals.npy", np.full((2, samples), i, np.float32))
        np.save(recordings / f"r{i:04d}.labels.npy", (np.arange(samples) >= i % samples).astype(np.uint8))
    (tmp_path / MANIFEST).write_text(json.dumps({"recordings": {f"r{i:04d}": {"n_samples": samples, "sfreq": 256.0} for i in range(n)}}))

    def open_files() -> int:
        return sum(1 for fd in Path("/proc/self/fd").iterdir() if str(tmp_path) in os.path.realpath(fd))

    corpus = Corpus(tmp_path)
    table = corpus.window_table(corpus.stems, WindowSpec(samples, samples))
    assert len(table["start"]) == n and table["seizure_samples"][5] == samples - 5
    x, y, _ = corpus.batch(corpus.stems, table, np.arange(n), samples)
    assert np.array_equal(x[:, 0, 0], np.arange(n)) and np.array_equal(y.sum(axis=1), samples - np.arange(n) % samples)
    assert 0 < open_files() <= 2 * MAPPED_RECORDINGS
    assert np.array_equal(corpus.window("r0001", 0, samples)[0], np.full((2, samples), 1, np.float32))  # let go, reread
    # evaluation's traces hold every recording's labels: copies, not views that keep each map open
    traces = predict_recordings(lambda x: np.zeros(x.shape[::2], np.float32), corpus, corpus.stems, load_config(None))
    assert [int(t.labels.sum()) for t in traces[:3]] == [samples, samples - 1, samples - 2]
    assert 0 < open_files() <= 2 * MAPPED_RECORDINGS


def test_rebuild_reuses_and_a_config_change_rebuilds(tmp_path, corpus_dir):
    config = _config(tmp_path)
    first = build_cache(config, progress=False)
    again = build_cache(config, progress=False)
    assert again.built == [] and sorted(again.reused) == sorted(first.built)
    # a killed build: the sidecar is written last, so a recording without one is rebuilt
    (first.root / "recordings" / "pb_s001_t000.json").unlink()
    resumed = build_cache(config, progress=False)
    assert resumed.built == ["pb_s001_t000"]
    # a SIGKILL mid-write leaves its temporary file; the next build removes it once it is stale,
    # and leaves a fresh one (another process building the same cache) alone
    recordings = first.root / "recordings"
    stale, fresh = recordings / ".pa_s001_t000.signals.npy.x1.tmp", recordings / ".pb_s001_t000.labels.npy.x2.tmp"
    for tmp in (stale, fresh):
        tmp.write_bytes(b"half")
    os.utime(stale, (time.time() - STALE_SECONDS - 5,) * 2)
    assert build_cache(config, progress=False).built == []
    assert not stale.exists() and fresh.exists()
    changed = _config(tmp_path, "preprocess.notch_hz=50")
    assert cache_path(changed) != cache_path(config)
    # a tightened duration check checks every recording again (it decided which were cached)
    for tightened in ("data.label_duration_tolerance_seconds=0.5", "data.clock_duration_tolerance_seconds=5"):
        assert cache_path(_config(tmp_path, tightened)) != cache_path(config)
    rebuilt = build_cache(changed, progress=False)
    assert len(rebuilt.built) == 4


def test_prepare_splits_by_patient_and_summarizes(tmp_path, corpus_dir):
    config = _config(tmp_path, "data.split.dev_fraction=0.34")
    prepared = prepare(config, progress=False)
    patients = {split: {s.split("_")[0] for s in stems} for split, stems in prepared.splits.items()}
    assert not patients["train"] & patients["dev"]
    assert sum(len(s) for s in prepared.splits.values()) == 4
    text = format_summary(prepared)
    assert "5 skipped" in text and "bad3_s001_t000.edf" in text
    rows = {r["split"]: r for r in prepared.summary}
    assert sum(r["recordings"] for r in rows.values()) == 4
    assert sum(r["shorter_than_window"] for r in rows.values()) == 1
    total_windows = sum(r["windows"] for r in rows.values())
    # 40 s recordings with 16 s / 8 s windows: 4 each; the 10 s one: none
    assert total_windows == 3 * 4
    table = prepared.corpus.window_table(["pa_s001_t000"], WindowSpec(16 * SFREQ, 8 * SFREQ))
    assert table["seizure_samples"].tolist() == [6 * SFREQ, 14 * SFREQ, 9 * SFREQ, 1 * SFREQ]


def test_flat_channels_are_listed_and_a_recording_of_nothing_but_is_skipped(tmp_path):
    folder = tmp_path / "edf"
    folder.mkdir()
    for stem, flat in (("pa_s001_t000", ("C3", "O2")), ("pb_s001_t000", REF19)):
        rng = np.random.default_rng(0)
        signals = [edfio.EdfSignal(np.zeros(40 * SFREQ) if name in flat else rng.standard_normal(40 * SFREQ) * 30,
                                   SFREQ, label=f"EEG {name.upper()}-REF", physical_dimension="uV",
                                   physical_range=(-3000, 3000)) for name in REF19]
        edfio.Edf(signals).write(folder / f"{stem}.edf")
        write_csv_bi(folder / f"{stem}.csv_bi", with_background([Event(10.0, 25.0, "seiz")], 40), 40)
    prepared = prepare(_config(tmp_path, "data.split.dev_fraction=0"), progress=False)
    assert prepared.build.built == ["pa_s001_t000"]
    assert "pb_s001_t000.edf: every channel is flat" in prepared.build.skipped[0]["reason"]
    assert "flat channels (read as zeros) in 1 recording(s):\n  pa_s001_t000: C3, O2" in format_summary(prepared)


def test_every_intervention_a_report_counts_reaches_the_summary():
    """Interpolated channels, NaN samples and header repairs were in the sidecars and `inspect`
    only; clipping is one line over the corpus (most TUSZ recordings clip a little)."""
    from common.data.prepare import clipping_line, intervention_issues

    def report(**given):
        return {"report": {"channels": ["Fp1", "Fz"], "n_samples": 1000, "flat_channels": [],
                           "interpolated_channels": [], "nonfinite_samples": [0, 0], "clipped_samples": [0, 0],
                           "repairs": [], **given}}

    recordings = {"a": report(interpolated_channels=["Fz"], clipped_samples=[3, 1]),
                  "b": report(nonfinite_samples=[0, 7], repairs=["start date written dd:mm:yy"]),
                  "c": report(clipped_samples=[0, 40]), "d": report()}
    assert intervention_issues(recordings, list(recordings)) == [
        ("channels interpolated (spherical spline)", ["a: Fz"]),
        ("NaN/Inf samples (zeroed, left out of the z-score)", ["b: Fz 7"]),
        ("EDF header repairs", ["b: start date written dd:mm:yy"])]
    assert clipping_line(recordings, list(recordings)) == (
        "samples clipped at preprocess.clip_sigma: 0.55 % of all, in 2 of 4 recording(s); the most in c (2 % of "
        "its samples; its sidecar, recordings/<stem>.json, counts them per channel)")
    assert clipping_line(recordings, ["b", "d"]) is None and intervention_issues(recordings, ["d"]) == []


def test_a_skipped_recording_has_the_split_its_patient_is_in_or_none(tmp_path):
    """Seeded: a patient's split is known from the recordings of it that were cached; a patient
    whose every recording was skipped is in no split (the permutation is over cached patients)."""
    from common.data.prepare import skipped_by_split

    folder = tmp_path / "edf"
    folder.mkdir()
    for seed, stem in enumerate(("pa_s001_t000", "pa_s001_t001", "pb_s001_t000", "pc_s001_t000")):
        _recording(folder, stem, seed=seed)
    for stem in ("pa_s001_t001", "pc_s001_t000"):
        (folder / f"{stem}.csv_bi").write_text("TERM,1.0,oops,seiz,1\n")
    prepared = prepare(_config(tmp_path, "data.split.kind=seeded", "data.split.dev_fraction=0.5"), progress=False)
    split_of_pa = next(name for name, stems in prepared.splits.items() if "pa_s001_t000" in stems)
    assert {Path(s["source"]).stem: s["split"] for s in skipped_by_split(prepared)} == {
        "pa_s001_t001": split_of_pa, "pc_s001_t000": None}


def test_a_recording_whose_rebuild_fails_leaves_the_manifest(tmp_path, corpus_dir):
    """Its earlier build came from files that changed since: training on it would train on labels
    the user has replaced. It is listed as skipped, and only there."""
    config = _config(tmp_path)
    build_cache(config, progress=False)
    (corpus_dir / "pa_s001_t000.csv_bi").write_text("TERM,1.0,oops,seiz,1\n")
    again = build_cache(config, progress=False)
    manifest = json.loads((again.root / "manifest.json").read_text())
    assert "pa_s001_t000" not in manifest["recordings"]
    assert any(s["source"].endswith("pa_s001_t000.edf") for s in manifest["skipped"])


def test_a_csv_bi_put_beside_a_cached_chbmit_recording_rebuilds_it(tmp_path):
    """Every label error's fix is a `<stem>.csv_bi` beside the EDF; a recording cached from the
    corpus's own label files must be rebuilt from it, not reused with its old labels."""
    folder = tmp_path / "edf" / "chb01"
    folder.mkdir(parents=True)
    _write_edf(folder / "chb01_01.edf", 40)
    (folder / "chb01-summary.txt").write_text("File Name: chb01_01.edf\nNumber of Seizures in File: 0\n")
    config = _config(tmp_path, "data.corpus=chbmit")
    first = build_cache(config, progress=False)
    assert first.built == ["chb01_01"] and Corpus(first.root).arrays("chb01_01")[1].sum() == 0
    write_csv_bi(folder / "chb01_01.csv_bi", with_background([Event(10.0, 20.0, "seiz")], 40), 40)
    again = build_cache(config, progress=False)
    assert again.built == ["chb01_01"] and Corpus(again.root).arrays("chb01_01")[1].sum() == 10 * SFREQ
    assert build_cache(config, progress=False).reused == ["chb01_01"]


# -- a build in a log file (stdout and stderr redirected: no bars) ---------------------------------


class _Log(io.StringIO):
    """Standard output as a log file sees it: `flushed` is how much of it had been flushed."""

    flushed = 0

    def flush(self):
        self.flushed = len(self.getvalue())


def _plain_build(tmp_path, monkeypatch, seconds_between_lines: float, **kw):
    import common.data.cache as cache

    monkeypatch.setattr(cache, "LOG_LINE_SECONDS", seconds_between_lines)
    log = _Log()
    monkeypatch.setattr(sys, "stdout", log)
    result = build_cache(_config(tmp_path), **kw)
    return result, log.getvalue().splitlines()


def test_a_build_without_bars_prints_the_survey_then_a_count_a_minute(tmp_path, corpus_dir, monkeypatch):
    """A TUSZ build takes 25 minutes: in a log, the survey comes first and a count at most once a
    LOG_LINE_SECONDS (the first at once), then the last; each line flushed as it is printed."""
    _, lines = _plain_build(tmp_path, monkeypatch, 1e9, progress=False, plain_lines=True)
    assert lines == ["corpus folder (detected: TUSZ-style names but no train/ dev/ eval/ folders; set data.corpus "
                     "to choose): 9 recordings of 8 patients; split seeded (data.split.seed)",
                     "caching recordings: 0/9 (0 built, 0 reused, 0 skipped)",
                     "caching recordings: 9/9 (4 built, 0 reused, 5 skipped)"]
    # due every time: one line before each recording, with the counts so far
    _, lines = _plain_build(tmp_path, monkeypatch, 0.0, progress=False, plain_lines=True)
    counts = [line for line in lines if line.startswith("caching recordings:")]
    assert counts[0] == "caching recordings: 0/9 (0 built, 0 reused, 0 skipped)"
    assert counts[1:] == [f"caching recordings: {n}/9 (0 built, 0 reused, {n} skipped)" for n in range(1, 6)] + [
        f"caching recordings: {n}/9 (0 built, {n - 5} reused, 5 skipped)" for n in range(6, 9)] + [
        "caching recordings: 9/9 (0 built, 4 reused, 5 skipped)"]  # bad1..bad5 come first, then pa, pb, pc


def test_the_build_lines_are_flushed_before_the_work_they_announce(tmp_path, corpus_dir, monkeypatch):
    import common.data.cache as cache

    seen = []
    build_one = cache.cache_recording

    def cache_recording(*args):
        seen.append(sys.stdout.flushed == len(sys.stdout.getvalue()) > 0)  # all printed so far is out
        return build_one(*args)

    monkeypatch.setattr(cache, "cache_recording", cache_recording)
    _plain_build(tmp_path, monkeypatch, 0.0, progress=False, plain_lines=True)
    assert seen == [True] * 9
    assert sys.stdout.flushed == len(sys.stdout.getvalue())


@pytest.mark.parametrize("kw", [{"progress": False}, {"progress": False, "plain_lines": False},
                                {"progress": True, "plain_lines": True}])
def test_no_plain_lines_with_bars_or_with_no_progress(tmp_path, corpus_dir, monkeypatch, kw):
    """--no-progress (plain_lines False) is silent until the summary; bars replace the lines."""
    _, lines = _plain_build(tmp_path, monkeypatch, 0.0, **kw)
    assert lines == []
