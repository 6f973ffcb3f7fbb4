"""Labels that belong to another recording, and labels that belong to none (a user rehearsal's
defects): a CHB-MIT or Siena recording whose length is not its summary's or list's clock times,
a `.csv_bi` whose bname names another recording, and label-file entries with no EDF."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import numpy as np
import pytest

from common.config import DataConfig, load_config
from common.data.annotations import (
    check_duration,
    duration_tolerance,
    labels_for,
    labels_without_edf,
)
from common.data.cache import build_cache
from common.data.csv_bi import AnnotationError, Event, read_csv_bi, with_background, write_csv_bi
from common.data.edf import read_header
from common.data.montage import BIPOLAR23

TOLERANCE = DataConfig().label_duration_tolerance_seconds  # the default for a .csv_bi's duration, 1 s
CLOCK_TOLERANCE = 60  # the default for a CHB-MIT summary's or Siena list's clock times


@pytest.fixture
def header_edf(write_edf):
    """An EDF of `seconds` whose header is all the label checks read: one 1 Hz channel."""

    def make(path: Path, seconds: int, starttime: datetime.time | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_edf(path, {"FP1-F7": np.zeros(seconds)}, 1.0, starttime=starttime)

    return make


def _seconds(edf: Path) -> float:
    header = read_header(edf)
    return header.n_records * header.record_seconds


def _check(edf: Path, corpus: str, tolerance: float | None = None):
    """labels_for, then check_duration against the EDF's header, as `labels` does (at the default
    config's tolerance for the label file's kind, unless given)."""
    annotations = labels_for(edf, corpus)
    check_duration(annotations, edf, _seconds(edf),
                   duration_tolerance(annotations, DataConfig()) if tolerance is None else tolerance)
    return annotations


def _block(name: str, start: str, end: str, seizures=()) -> str:
    lines = [f"File Name: {name}", f"File Start Time: {start}", f"File End Time: {end}",
             f"Number of Seizures in File: {len(seizures)}"]
    for a, b in seizures:
        lines += [f"Seizure Start Time: {a} seconds", f"Seizure End Time: {b} seconds"]
    return "\n".join(lines) + "\n\n"


# -- B. a corpus's own clock times against the EDF's length ---------------------------------------


def test_chbmit_file_times_span_the_edf_through_midnight_and_past_24h(tmp_path, header_edf):
    """CHB-MIT clocks run past 24:00 (chb05's `23:21:32` to `24:21:32`), restart after midnight
    (`00:21:39` to `1:21:39`) or wrap (`23:50:00` to `0:10:00`); each span is the EDF's length."""
    folder = tmp_path / "chb05"
    spans = {"chb05_07.edf": ("23:21:32", "24:21:32", 3600), "chb05_08.edf": ("00:21:39", "1:21:39", 3600),
             "chb05_09.edf": ("24:39:08", "25:01:54", 1366), "chb05_10.edf": ("23:50:00", "0:10:00", 1200),
             "chb05_11.edf": ("23:59:59", "24:00:29", 30)}
    header_edf(folder / "chb05_12.edf", 45)  # listed without clock times: nothing to check
    text = "".join(_block(name, start, end) for name, (start, end, _) in spans.items())
    (folder / "chb05-summary.txt").write_text(text + "File Name: chb05_12.edf\nNumber of Seizures in File: 0\n")
    for name, (_, _, seconds) in spans.items():
        header_edf(folder / name, seconds)
        assert _check(folder / name, "chbmit").duration_seconds == seconds
    assert _check(folder / "chb05_12.edf", "chbmit").duration_seconds is None


def test_a_chbmit_recording_of_another_length_is_refused_naming_both(tmp_path, header_edf):
    """The rehearsal's chb05_07: 60 s of EEG listed for an hour, trained on as seizure-free."""
    folder = tmp_path / "chb05"
    summary = folder / "chb05-summary.txt"
    folder.mkdir()
    summary.write_text(_block("chb05_06.edf", "22:21:25", "23:21:25", [(417, 532)])
                       + _block("chb05_07.edf", "23:21:32", "24:21:32"))
    edf = header_edf(folder / "chb05_07.edf", 60)
    with pytest.raises(AnnotationError) as caught:
        _check(edf, "chbmit")
    assert str(caught.value) == (
        f"{edf}: {summary}:9 (File Start Time 23:21:32, File End Time 24:21:32) gives it 3600 s, but chb05_07.edf "
        "lasts 60 s, so that entry describes another recording (or another cut of it); write chb05_07.csv_bi "
        "beside the EDF with its seizures' times from the recording's start (it takes precedence), or raise "
        "data.clock_duration_tolerance_seconds (now 60) if the difference is meant")
    # the clock times' own tolerance (hand-typed clocks): 60 s off passes, 61 s does not unless allowed
    assert DataConfig().clock_duration_tolerance_seconds == CLOCK_TOLERANCE == 60
    header_edf(folder / "chb05_06.edf", 3660)
    assert _check(folder / "chb05_06.edf", "chbmit").seizures() == [(417.0, 532.0)]
    header_edf(folder / "chb05_06.edf", 3540)
    assert _check(folder / "chb05_06.edf", "chbmit").duration_seconds == 3600
    header_edf(folder / "chb05_06.edf", 3661)
    with pytest.raises(AnnotationError, match="gives it 3600 s, but chb05_06.edf lasts 3661 s"):
        _check(folder / "chb05_06.edf", "chbmit")
    assert _check(folder / "chb05_06.edf", "chbmit", tolerance=61.0).duration_seconds == 3600
    # the fix the message names: a .csv_bi beside the EDF, whose own duration is the EDF's
    write_csv_bi(folder / "chb05_07.csv_bi", with_background([], 60.0), 60.0)
    assert _check(edf, "chbmit").path == str(folder / "chb05_07.csv_bi")


def test_a_chbmit_seizure_past_its_summarys_file_end_is_refused_as_siena_is(tmp_path, header_edf):
    """A seizure listed after the File End Time the block itself gives was dropped (or cut) and
    the recording trained on as seizure-free; the same typo in a Siena list is refused."""
    folder = tmp_path / "chb05"
    summary = folder / "chb05-summary.txt"
    folder.mkdir()
    summary.write_text(_block("chb05_06.edf", "22:21:25", "23:21:25", [(3700, 3800)]))
    edf = header_edf(folder / "chb05_06.edf", 3600)
    with pytest.raises(AnnotationError) as caught:
        _check(edf, "chbmit")
    assert str(caught.value) == (
        f"{edf}: {summary} has a seizure of it ending 3800 s after the file start, past the file end it gives "
        "(3600 s): a typo in its times; write chb05_06.csv_bi beside the EDF with the seizure's real times")
    summary.write_text(_block("chb05_06.edf", "22:21:25", "23:21:25", [(3500, 3600)]))  # to the last second
    assert _check(edf, "chbmit").seizures() == [(3500.0, 3600.0)]
    # clock times 10 s short of the EDF (within their tolerance): a seizure inside the EDF stands
    summary.write_text(_block("chb05_06.edf", "22:21:25", "23:21:15", [(3500, 3598)]))
    assert _check(edf, "chbmit").seizures() == [(3500.0, 3598.0)]


def test_a_siena_recording_of_another_length_is_refused_naming_both(tmp_path, header_edf):
    """The rehearsal's PN00-4: 600 s of EEG, its registration 20.51.43 to 21.26.25 (2082 s), its
    seizure (1006 s) dropped as past the end; and a registration across midnight that agrees."""
    folder = tmp_path / "PN00"
    listing = folder / "Seizures-list-PN00.txt"
    folder.mkdir()
    listing.write_text(
        "Seizure n 4\nFile name: PN00-4.edf\nRegistration start time: 20.51.43\nRegistration end time: 21.26.25\n"
        "Seizure start time: 21.08.29\nSeizure end time: 21.09.43\n\n"
        "Seizure n 5\nFile name: PN00-5.edf\nRegistration start time:  23:50:00\nRegistration end time: 00:30:00\n"
        "Start time: 00.10.00\nEnd time: 00.11.40\n")
    edf = header_edf(folder / "PN00-4.edf", 600, datetime.time(20, 51, 43))
    with pytest.raises(AnnotationError) as caught:
        _check(edf, "siena")
    assert str(caught.value).startswith(
        f"{edf}: {listing}:3 (registration 20.51.43 to 21.26.25) gives it 2082 s, but PN00-4.edf lasts 600 s, so "
        "that entry describes another recording (or another cut of it); write PN00-4.csv_bi beside the EDF")
    header_edf(folder / "PN00-4.edf", 2082, datetime.time(20, 51, 43))
    assert _check(folder / "PN00-4.edf", "siena").seizures() == [(1006.0, 1080.0)]
    header_edf(folder / "PN00-5.edf", 2400, datetime.time(23, 50, 0))
    assert _check(folder / "PN00-5.edf", "siena").seizures() == [(1200.0, 1300.0)]


def test_a_recording_of_another_length_is_skipped_by_build_as_label_errors_are(tmp_path, write_edf, tusz_signals):
    """In a build the refused recording is skipped with its reason, the others built."""
    folder = tmp_path / "siena" / "PN00"
    folder.mkdir(parents=True)
    (folder / "Seizures-list-PN00.txt").write_text(
        "Seizure n 1\nFile name: PN00-1.edf\nRegistration start time: 10.00.00\nRegistration end time: 10.00.20\n"
        "Seizure start time: 10.00.05\nSeizure end time: 10.00.10\n\n"
        "Seizure n 2\nFile name: PN00-2.edf\nRegistration start time: 11.00.00\nRegistration end time: 11.10.00\n"
        "Seizure start time: 11.00.05\nSeizure end time: 11.00.10\n")
    write_edf(folder / "PN00-1.edf", tusz_signals(20, 64.0), 64.0, starttime=datetime.time(10, 0, 0))
    write_edf(folder / "PN00-2.edf", tusz_signals(20, 64.0, seed=1), 64.0, starttime=datetime.time(11, 0, 0))
    config = load_config(None, [f"data.data_dir={folder.parent}", f"data.cache_dir={tmp_path / 'cache'}"])
    result = build_cache(config, progress=False)
    assert result.built == ["PN00-1"]
    (skipped,) = result.skipped
    assert skipped["source"] == str(folder / "PN00-2.edf")
    assert "(registration 11.00.00 to 11.10.00) gives it 600 s, but PN00-2.edf lasts 20 s" in skipped["reason"]


def test_the_real_label_files_read_and_check_as_they_should(SHARED, tmp_path, header_edf):
    """../shared/data: the CHB-MIT crops (41 s) with their .csv_bi and the real chb01_03.edf.seizures
    (which gives no length) read without error; the real chb05 summary and Siena list against EDFs
    of their lengths pass (chb05_01's 17:20:05 to 18:20:15 is 3610 s), and the 2 s stand-ins with
    real headers are refused, naming both lengths."""
    for name in ("chb01_03_Seizure.edf", "chb01_03_NonSeizure.edf"):
        annotations = _check(SHARED / "chbmit" / name, "folder")
        assert annotations.duration_seconds == _seconds(SHARED / "chbmit" / name) == 41.0
    chb01 = tmp_path / "chbmit" / "chb01"
    chb01.mkdir(parents=True)
    shutil.copy(SHARED / "chbmit" / "chb01_03_Seizure.edf", chb01 / "chb01_03.edf")
    shutil.copy(SHARED / "chbmit" / "chb01_03.edf.seizures", chb01)
    assert _check(chb01 / "chb01_03.edf", "chbmit").seizures() == [(2996.0, 3036.0)]  # past its end: dropped later

    chb05 = tmp_path / "chbmit" / "chb05"
    chb05.mkdir()
    shutil.copy(SHARED / "format_stubs" / "chbmit" / "chb05-summary.txt", chb05)
    header_edf(chb05 / "chb05_01.edf", 3610)
    assert _check(chb05 / "chb05_01.edf", "chbmit").seizures() == []
    header_edf(chb05 / "chb05_07.edf", 3600)  # 23:21:32 to 24:21:32
    header_edf(chb05 / "chb05_08.edf", 3600)  # 00:21:39 to 1:21:39
    assert _check(chb05 / "chb05_07.edf", "chbmit").duration_seconds == 3600
    assert _check(chb05 / "chb05_08.edf", "chbmit").duration_seconds == 3600
    shutil.copy(SHARED / "format_stubs" / "chbmit" / "chb05_06.edf", chb05)
    with pytest.raises(AnnotationError, match=r"chb05-summary.txt:\d+ \(File Start Time 22:21:25, File End Time "
                                              r"23:21:25\) gives it 3600 s, but chb05_06.edf lasts 2 s"):
        _check(chb05 / "chb05_06.edf", "chbmit")

    siena = tmp_path / "siena" / "PN00"
    siena.mkdir(parents=True)
    shutil.copy(SHARED / "format_stubs" / "siena" / "Seizures-list-PN00.txt", siena)
    shutil.copy(SHARED / "format_stubs" / "siena" / "PN00-1.edf", siena)
    with pytest.raises(AnnotationError, match=r"\(registration 19.39.33 to 20.22.58\) gives it 2605 s, but "
                                              r"PN00-1.edf lasts 2 s"):
        _check(siena / "PN00-1.edf", "siena")
    header_edf(siena / "PN00-1.edf", 2605, datetime.time(19, 39, 33))
    assert _check(siena / "PN00-1.edf", "siena").seizures() == [(1143.0, 1213.0)]


# -- C. a .csv_bi's bname must name the EDF it labels ------------------------------------------


@pytest.mark.parametrize("suffix", [".tse_bi", ".lbl"])
def test_tusz_v1_labels_beside_an_edf_are_named_with_the_fix(tmp_path, suffix):
    """TUSZ v1.5's .tse_bi/.lbl beside an EDF: the error said only 'add one'."""
    edf = tmp_path / "00000258_s002_t000.edf"
    edf.with_suffix(suffix).write_text("version = tse_v1.0.0\n\n0.0000 10.0000 bckg 1.0000\n")
    with pytest.raises(AnnotationError, match=rf"{edf}: no annotation file .*; 00000258_s002_t000\{suffix} beside "
                                              r"it is TUSZ v1.x's label format, which is not read: use TUSZ v2.0.x"):
        labels_for(edf, "tusz")


def test_a_csv_bi_naming_another_recording_is_refused(tmp_path):
    """A file copied from another recording keeps the other's bname: it was taken as this one's."""
    edf = tmp_path / "aaaaaaab_s001_t000.edf"  # labels_for reads the file beside it, not the EDF
    write_csv_bi(tmp_path / "aaaaaaaa_s001_t000.csv_bi", with_background([Event(5.0, 9.0, "seiz")], 60.0), 60.0)
    copied = (tmp_path / "aaaaaaaa_s001_t000.csv_bi").read_text()
    beside = edf.with_suffix(".csv_bi")
    beside.write_text(copied)
    assert read_csv_bi(beside).bname == "aaaaaaaa_s001_t000"
    with pytest.raises(AnnotationError) as caught:
        labels_for(edf, "tusz")
    assert str(caught.value) == (
        f"{beside}: says bname = aaaaaaaa_s001_t000, but it labels aaaaaaab_s001_t000.edf (stem aaaaaaab_s001_t000), "
        "so it may be aaaaaaaa_s001_t000's labels copied here; if they are aaaaaaab_s001_t000.edf's, correct the "
        "line to '# bname = aaaaaaab_s001_t000' or delete it, else put aaaaaaab_s001_t000's own labels there")
    # either fix the message names is accepted
    beside.write_text(copied.replace("# bname = aaaaaaaa_s001_t000", "# bname = aaaaaaab_s001_t000"))
    assert labels_for(edf, "tusz").seizures() == [(5.0, 9.0)]
    beside.write_text(copied.replace("# bname = aaaaaaaa_s001_t000\n", ""))
    assert read_csv_bi(beside).bname is None
    assert labels_for(edf, "tusz").seizures() == [(5.0, 9.0)]
    # the per-channel .csv says it too
    (tmp_path / "aaaaaaac_s001_t000.csv").write_text(copied.replace("TERM", "FP1-F7"))
    with pytest.raises(AnnotationError, match=r"aaaaaaac_s001_t000.csv: says bname = aaaaaaaa_s001_t000"):
        labels_for(tmp_path / "aaaaaaac_s001_t000.edf", "tusz")


def test_every_csv_bi_the_project_or_nedc_writes_names_its_recording(SHARED, tmp_path):
    """NEDC's sample references and hypotheses, TUSZ's stub, the project's writer and its synthetic
    generator: each file's bname is its stem, so beside its EDF it is read."""
    from common.data.synth import generate_corpus

    files = sorted((SHARED / "nedc_sample").glob("*/*.csv_bi"))
    files += [SHARED / "format_stubs" / "tusz" / "aaaaaool_s004_t001.csv_bi"]
    files += [write_csv_bi(tmp_path / "written" / "pa_s001_t000.csv_bi", [Event(0.0, 8.0, "bckg")], 8.0)]
    edfs = generate_corpus(tmp_path / "synth", recordings=2, seed=0, duration_seconds=(20.0, 20.0), progress=False)
    files += [edf.with_suffix(".csv_bi") for edf in edfs]
    assert len(files) == 30 + 30 + 1 + 1 + 2
    for path in files:
        assert read_csv_bi(path).bname == path.stem
        labels_for(path.with_suffix(".edf"), "tusz")  # the EDF itself is not read


# -- D. label files and entries without an EDF: listed, not refused ------------------------------


def test_label_entries_without_an_edf_are_listed(tmp_path, header_edf):
    """The rehearsal's chb06_99.edf (a summary entry with a seizure), PN09-2.edf (a list entry) and
    a TUSZ .csv_bi with no EDF beside it were dropped without a word."""
    chb = tmp_path / "chbmit"
    header_edf(chb / "chb06" / "chb06_01.edf", 120)
    header_edf(chb / "chb06" / "chb06_02.edf", 120)
    summary = chb / "chb06" / "chb06-summary.txt"
    summary.write_text(_block("chb06_01.edf", "10:00:00", "10:02:00", [(50, 90)])
                       + "File Name: chb06_02.edf\nNumber of Seizures in File: 0\n\n"
                       + _block("chb06_99.edf", "11:00:00", "12:00:00", [(10, 20)])
                       + "File Name: chb06_98.edf\nNumber of Seizures in File: two\n")
    (chb / "chb06" / "chb06_97.edf.seizures").write_bytes(b"\0\0")
    write_csv_bi(chb / "chb06" / "chb06_96.csv_bi", [Event(0.0, 60.0, "bckg")], 60.0)
    assert labels_without_edf(chb, "chbmit") == [
        {"source": str(chb / "chb06" / "chb06-summary.txt"),
         "reason": "lists chb06_99.edf (1 seizure(s)), which is not in its folder or one below"},
        {"source": str(chb / "chb06" / "chb06-summary.txt"),
         "reason": "lists chb06_98.edf (unreadable), which is not in its folder or one below"},
        {"source": str(chb / "chb06" / "chb06_96.csv_bi"), "reason": "no chb06_96.edf beside it"},
        {"source": str(chb / "chb06" / "chb06_97.edf.seizures"), "reason": "no chb06_97.edf beside it"},
    ]
    assert labels_without_edf(chb, "folder") == [  # a folder corpus reads no summaries
        {"source": str(chb / "chb06" / "chb06_96.csv_bi"), "reason": "no chb06_96.edf beside it"}]
    summary.write_text("Data Sampling Rate: 256 Hz\n")  # unreadable as a whole: its recordings say so
    assert len(labels_without_edf(chb, "chbmit")) == 2

    siena = tmp_path / "siena"
    header_edf(siena / "PN09" / "PN09-1.edf", 600)
    header_edf(siena / "PN01" / "PN01-1.edf", 600)  # listed as PN01.edf (data.listed_as's default)
    block = "Seizure n {n}\nFile name: {name}\nRegistration start time: 10.00.00\nSeizure start time: 10.01.40\n" \
            "Seizure end time: 10.02.40\n\n"
    (siena / "PN09" / "Seizures-list-PN09.txt").write_text(
        block.format(n=1, name="PN09-1.edf") + block.format(n=2, name="PN09-2.edf"))
    (siena / "PN01" / "Seizures-list-PN01.txt").write_text(block.format(n=1, name="PN01.edf"))
    assert labels_without_edf(siena, "siena") == [
        {"source": str(siena / "PN09" / "Seizures-list-PN09.txt"),
         "reason": "lists PN09-2.edf (1 seizure(s)), which is not in its folder or one below"}]
    assert len(labels_without_edf(siena, "siena", listed_as=[])) == 2  # PN01.edf is then no EDF's

    tusz = tmp_path / "tusz" / "edf" / "dev" / "aaaaaaac" / "s001_2002" / "01_tcp_ar"
    header_edf(tusz / "aaaaaaac_s001_t000.edf", 60)
    write_csv_bi(tusz / "aaaaaaac_s001_t000.csv_bi", [Event(0.0, 60.0, "bckg")], 60.0)
    write_csv_bi(tusz / "aaaaaaac_s001_t001.csv_bi", [Event(0.0, 60.0, "bckg")], 60.0)
    assert labels_without_edf(tmp_path / "tusz", "tusz") == [
        {"source": str(tusz / "aaaaaaac_s001_t001.csv_bi"), "reason": "no aaaaaaac_s001_t001.edf beside it"}]


def test_a_build_lists_label_entries_without_an_edf_in_its_survey(tmp_path, write_edf):
    """Counted and listed beside the layout's left-out files; the build goes on (not skipped)."""
    from common.data.prepare import format_summary, prepare

    folder = tmp_path / "chbmit" / "chb06"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_edf(folder / "chb06_01.edf", {name: 30 * rng.standard_normal(20 * 64) for name in BIPOLAR23}, 64.0)
    (folder / "chb06-summary.txt").write_text(
        _block("chb06_01.edf", "10:00:00", "10:00:20", [(5, 10)])
        + _block("chb06_99.edf", "11:00:00", "12:00:00", [(10, 20)]))
    config = load_config(None, [f"data.data_dir={folder.parent}", f"data.cache_dir={tmp_path / 'cache'}",
                                "data.montage=bipolar", "model.montage=bipolar", "data.window_seconds=4",
                                "data.stride_seconds=4", "data.split.dev_fraction=0", "data.balance.enabled=false"])
    prepared = prepare(config, progress=False)
    assert prepared.build.built == ["chb06_01"] and prepared.build.skipped == []
    assert ("  1 label file(s) or entries without an EDF (their labels unused):\n"
            f"    {folder / 'chb06-summary.txt'}: lists chb06_99.edf (1 seizure(s)), which is not in its folder or one "
            "below\n") in format_summary(prepared)
