"""`python -m jaxbrr.data` end to end: inspect a real file, synth + build a small corpus; a build
that could use no recording exits 2, naming the skip report."""

import json

import pytest

from common.data.__main__ import main


def test_inspect_real_bipolar_file_with_plot(shared, tmp_path, capsys):
    out = tmp_path / "inspect.png"
    edf = shared / "data" / "chbmit" / "chb01_03_Seizure.edf"
    assert main(["inspect", str(edf), "--montage", "bipolar", "--plot", str(out), "--seconds", "10"]) == 0
    text = capsys.readouterr().out
    assert "256 Hz -> 256 Hz  41.00 s" in text and "(10496 samples after preprocessing)" in text
    assert "FT9-FT10" in text and "1 seizure events, 40.00 s of seizure" in text
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"


def test_inspect_reports_missing_channels(shared, capsys):
    # A CHB-MIT bipolar file has no referential electrodes: ref19 must refuse it, naming them.
    edf = shared / "data" / "chbmit" / "chb01_03_Seizure.edf"
    assert main(["inspect", str(edf), "--montage", "ref19"]) == 2
    err = capsys.readouterr().err
    assert "chb01_03_Seizure.edf" in err and "Fp1" in err


def test_build_with_unknown_key_fails_before_work(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("data:\n  windw_seconds: 10\n")
    assert main(["build", "--config", str(config)]) == 2
    assert "unknown key 'data.windw_seconds'" in capsys.readouterr().err


def test_synth_then_build(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--recordings", "3", "--patients", "3", "--seed", "5"]) == 0
    edfs = sorted(out.glob("*.edf"))
    assert len(edfs) == 3 and all(p.with_suffix(".csv_bi").is_file() for p in edfs)
    capsys.readouterr()
    assert main(["build", "--set", "data.synthetic=null", "--set", f"data.data_dir={out}", "--set", f"data.cache_dir={tmp_path / 'cache'}",
                 "--set", "data.split.dev_fraction=0.34"]) == 0
    text = capsys.readouterr().out
    assert "3 built, 0 reused, 0 skipped" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()[:1] in (["train"], ["dev"])}
    assert int(rows["train"][2]) + int(rows["dev"][2]) == 3  # recordings column


def test_labels_writes_the_corpora_own_labels_as_csv_bi(SHARED, tmp_path, write_edf, capsys):
    """CHB-MIT and Siena label files, read as build reads them, out as .csv_bi in a mirrored tree;
    a seizure past the EDF's end is cut, one after it dropped, both said; an EDF whose length is
    not its summary entry's (the real 2 s chb05_06 stub, listed for an hour) is refused, exit 2."""
    import datetime
    import shutil

    import numpy as np

    from common.data.csv_bi import read_csv_bi

    def edf(path, seconds, starttime=None):  # labels only need the header: one 1 Hz channel
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_edf(path, {"FP1-F7": np.zeros(seconds)}, 1.0, starttime=starttime)

    chb = tmp_path / "chbmit"
    (chb / "chb05").mkdir(parents=True)
    shutil.copy(SHARED / "format_stubs" / "chbmit" / "chb05-summary.txt", chb / "chb05")
    shutil.copy(SHARED / "format_stubs" / "chbmit" / "chb05_06.edf", chb / "chb05")  # the real 2 s stub
    edf(chb / "chb05" / "chb05_13.edf", 3600)
    edf(chb / "chb01" / "chb01_03.edf", 3600)
    edf(chb / "chb01" / "chb01_04.edf", 100)
    shutil.copy(SHARED / "chbmit" / "chb01_03.edf.seizures", chb / "chb01")
    shutil.copy(SHARED / "chbmit" / "chb01_03.edf.seizures", chb / "chb01" / "chb01_04.edf.seizures")
    out = tmp_path / "out"
    assert main(["labels", str(chb), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    printed = captured.out
    seizures = lambda path: [(e.start_seconds, e.stop_seconds) for e in read_csv_bi(path).events  # noqa: E731
                             if e.label == "seiz"]
    assert seizures(out / "chb01" / "chb01_03.csv_bi") == [(2996.0, 3036.0)]
    assert seizures(out / "chb05" / "chb05_13.csv_bi") == [(1086.0, 1196.0)]
    # a .seizures file says nothing of the length: its seizure at 2996 s lies past a 100 s EDF's end
    assert seizures(out / "chb01" / "chb01_04.csv_bi") == [] and read_csv_bi(out / "chb01" / "chb01_04.csv_bi").duration_seconds == 100.0
    assert "corpus chbmit (detected" in printed
    assert f"{out / 'chb01' / 'chb01_04.csv_bi'}: 0 seizure(s) from" in printed
    assert "1 starting after the end dropped" in printed and "wrote 3 .csv_bi file(s)" in printed
    assert not (out / "chb05" / "chb05_06.csv_bi").exists()
    # the config's data.corpus counts when --corpus is not given (it was read as auto)
    assert main(["labels", str(chb), "--out", str(tmp_path / "chosen"), "--set", "data.corpus=chbmit"]) == 2
    assert capsys.readouterr().out.startswith("corpus chbmit (data.corpus): 4 recordings")
    assert main(["labels", str(chb), "--out", str(tmp_path / "chosen"), "--set", "data.corpus=siena", "--corpus", "auto"]) == 2
    assert capsys.readouterr().out.startswith("corpus chbmit (detected")  # --corpus first
    assert (f"skipped {chb / 'chb05' / 'chb05_06.edf'}: {chb / 'chb05' / 'chb05-summary.txt'}:56 (File Start Time "
            "22:21:25, File End Time 23:21:25) gives it 3600 s, but chb05_06.edf lasts 2 s") in captured.err

    siena = tmp_path / "siena" / "PN00"
    siena.mkdir(parents=True)
    shutil.copy(SHARED / "format_stubs" / "siena" / "Seizures-list-PN00.txt", siena)
    edf(siena / "PN00-3.edf", 2489)
    edf(siena / "PN00-7.edf", 2605, datetime.time(19, 39, 33))  # not in the list: skipped, exit 2
    assert main(["labels", str(siena.parent), "--out", str(out / "siena")]) == 2
    captured = capsys.readouterr()
    assert not (out / "siena" / "PN00" / "PN00-3.csv_bi").exists()  # the list's typo: refused, not cut
    assert "PN00-3.edf: " in captured.err and "past the registration end it gives (2489 s)" in captured.err
    assert "PN00-7.edf: not listed in" in captured.err
    # each skip names its file once, then why (the readers' errors start with it too)
    assert f"skipped {siena / 'PN00-7.edf'}: not listed in {siena / 'Seizures-list-PN00.txt'}" in captured.err
    # --set reaches `labels`: the list's PN00-1.edf, which no EDF beside it is called, read as PN00-7's
    args = ["labels", str(siena.parent), "--out", str(out / "siena"), "--set", "data.listed_as={PN00-7.edf: PN00-1.edf}"]
    assert main(args) == 2  # PN00-3 still refused
    assert seizures(out / "siena" / "PN00" / "PN00-7.csv_bi") == [(1143.0, 1213.0)]


def _build_args(tmp_path, data_dir):
    return ["build", "--set", "data.synthetic=null", "--set", f"data.data_dir={data_dir}",
            "--set", f"data.cache_dir={tmp_path / 'cache'}"]


def _uncalibrated(folder, write_edf, tusz_signals):
    """A labelled recording whose C3 has digital max == digital min: unreadable, so skipped."""
    from common.data.csv_bi import with_background, write_csv_bi

    path = write_edf(folder / "bad_s001_t000.edf", tusz_signals(8, 256.0), 256.0)
    data = bytearray(path.read_bytes())
    n = int(data[252:256])
    c3 = 256 + 128 * n + 8 * 2  # digital max (column 128) of signal 3, EEG C3-REF
    data[c3 : c3 + 8] = data[256 + 120 * n + 16 : 256 + 120 * n + 24]  # := its digital min
    path.write_bytes(bytes(data))
    write_csv_bi(folder / "bad_s001_t000.csv_bi", with_background([], 8.0), 8.0)
    return path


def test_build_exits_2_when_every_recording_is_skipped(tmp_path, write_edf, tusz_signals, capsys):
    folder = tmp_path / "edf"
    folder.mkdir()
    bad = _uncalibrated(folder, write_edf, tusz_signals)
    assert main(_build_args(tmp_path, folder)) == 2
    captured = capsys.readouterr()
    assert "0 built, 0 reused, 1 skipped" in captured.out
    assert f"skipped {bad}: calibration that cannot scale" in captured.out  # the path once
    assert "'EEG C3-REF' digital min = max" in captured.out
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith("error: no usable recording: all 1 skipped") and "manifest.json" in error
    manifest = next((tmp_path / "cache").glob("*/manifest.json"))
    assert str(manifest) in error
    assert [item["source"] for item in json.loads(manifest.read_text())["skipped"]] == [str(bad)]


def test_build_flushes_its_summary_before_the_error_line(tmp_path, write_edf, tusz_signals, monkeypatch):
    """In a log holding both streams (`build >b.log 2>&1`), the summary naming the skipped files
    comes before the error line that points at it, not at exit after it."""
    import io
    import sys

    class Log(io.StringIO):
        flushed = 0

        def flush(self):
            self.flushed = len(self.getvalue())

    out = Log()
    printed_before_error = []

    class Err(io.StringIO):
        def write(self, text):
            if text.startswith("error:"):
                printed_before_error.append(out.getvalue()[:out.flushed])
            return super().write(text)

    folder = tmp_path / "edf"
    folder.mkdir()
    _uncalibrated(folder, write_edf, tusz_signals)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", Err())
    assert main(_build_args(tmp_path, folder)) == 2
    (flushed,) = printed_before_error
    assert "0 built, 0 reused, 1 skipped" in flushed


def test_build_exits_0_when_some_recordings_are_skipped(tmp_path, write_edf, tusz_signals, capsys):
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--recordings", "2", "--patients", "2", "--seed", "5"]) == 0
    _uncalibrated(out, write_edf, tusz_signals)
    capsys.readouterr()
    assert main(_build_args(tmp_path, out)) == 0
    captured = capsys.readouterr()
    assert "2 built, 0 reused, 1 skipped" in captured.out and f"skipped {out / 'bad_s001_t000.edf'}: " in captured.out
    assert "error" not in captured.err


def test_build_finds_the_repository_default_config_from_another_folder(tmp_path, monkeypatch, capsys):
    """Without --config, outside the repository: the repository's configs/default.yaml, said so;
    an empty data folder is an error (exit 2), not an empty cache."""
    from common.config import REPOSITORY_DEFAULT_CONFIG

    monkeypatch.chdir(tmp_path)
    (tmp_path / "edf").mkdir()
    assert main(_build_args(tmp_path, tmp_path / "edf")) == 2
    err = capsys.readouterr().err
    assert f"config: {REPOSITORY_DEFAULT_CONFIG} (no configs/default.yaml in the current folder" in err
    assert f"error: no usable recording: none found under {tmp_path / 'edf'}" in err


def test_build_without_any_default_config_says_how_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("common.config.REPOSITORY_DEFAULT_CONFIG", tmp_path / "gone" / "default.yaml")
    monkeypatch.setattr("common.data.prepare.prepare", lambda *a, **k: pytest.fail("work started"))
    assert main(_build_args(tmp_path, tmp_path / "edf")) == 2
    err = capsys.readouterr().err
    assert "run from the repository root or pass --config PATH" in err and "gone/default.yaml" in err


def test_inspect_checks_the_labels_duration_as_build_does(shared, capsys):
    """The TUSZ stub's EDF is a short stand-in; its .csv_bi says 1831 s: build refuses the pair,
    and inspect says so rather than counting the seizure as past the end."""
    edf = shared / "data" / "format_stubs" / "tusz" / "aaaaaool_s004_t001.edf"
    main(["inspect", str(edf)])
    out = capsys.readouterr().out
    assert "no labels: " in out and "labels describe another recording" in out
    assert "past the end" not in out


def test_inspect_shows_a_recording_of_nothing_but_flat_channels(tmp_path, capsys):
    """build and predict refuse it; inspect, where a user looks to see why, still shows the table."""
    import edfio
    import numpy as np

    from common.data.montage import REF19

    edf = tmp_path / "flat_s001_t000.edf"
    edfio.Edf([edfio.EdfSignal(np.zeros(10 * 256), 256, label=f"EEG {name.upper()}-REF", physical_dimension="uV",
                               physical_range=(-500, 500)) for name in REF19]).write(edf)
    assert main(["inspect", str(edf)]) == 0
    out = capsys.readouterr().out
    assert out.count(" [flat]") == 19
    assert "every channel is flat: build, evaluate and predict refuse this recording" in out
