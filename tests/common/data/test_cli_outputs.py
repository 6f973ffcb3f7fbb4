"""Where `python -m jaxbrr.data` writes: an output location that cannot be written is one line
(exit 2) before any recording is read, `labels` on a folder without recordings is an error, `labels`
never writes a .csv_bi beside an EDF, and
`inspect --plot` makes its folders, refuses a stretch past the recording's end and writes its PNG
atomically.

An unwritable folder is a path under a regular file: that fails for root too, where a folder
without write permission would not (common/files.py check_writable_folder).
"""

from __future__ import annotations

import pytest

from common.data.__main__ import main, plot_recording

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def blocker(tmp_path):
    """A regular file: nothing can be created under it."""
    path = tmp_path / "a-file"
    path.write_text("")
    return path


@pytest.fixture
def corpus(tmp_path, write_edf, tusz_signals):
    """One labelled 20 s TUSZ-named recording in a folder of its own."""
    from common.data.csv_bi import with_background, write_csv_bi

    folder = tmp_path / "corpus"
    folder.mkdir()
    write_edf(folder / "pa_s001_t000.edf", tusz_signals(20, 256.0), 256.0)
    write_csv_bi(folder / "pa_s001_t000.csv_bi", with_background([], 20.0), 20.0)
    return folder


def test_labels_refuses_an_unwritable_out_before_reading_any_label(corpus, blocker, capsys):
    assert main(["labels", str(corpus), "--out", str(blocker / "labels")]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"error: --out {blocker / 'labels'}: cannot write there ({blocker} is a file, not a "
                            "folder); set --out to a folder you can write to\n")
    assert "corpus" not in captured.out  # the survey's headline: nothing was read


def test_labels_on_a_folder_without_recordings_is_an_error_naming_dir(tmp_path, capsys):
    """It said "wrote 0 .csv_bi file(s)" and exited 0, where build exits 2 on the same folder."""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["labels", str(empty), "--out", str(tmp_path / "labels")]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"error: DIR {empty}: no EDF file (*.edf) under it, so no labels to write; "
                            "name the corpus folder, as downloaded\n")
    assert "wrote" not in captured.out and not (tmp_path / "labels").exists()
    # the folder is labels' positional DIR, not build's data.data_dir
    assert main(["labels", str(tmp_path / "nope"), "--out", str(tmp_path / "labels")]) == 2
    assert capsys.readouterr().err == (f"error: DIR {tmp_path / 'nope'}: no such folder; name the corpus "
                                       "folder, as downloaded\n")


def test_labels_refuses_an_out_that_puts_csv_bi_beside_the_edfs(corpus, tmp_path, capsys):
    """--out at the corpus folder itself would replace its .csv_bi (or, for a CHB-MIT corpus, plant
    one that build then reads ahead of the summary): refused before anything is written."""
    labels = corpus / "pa_s001_t000.csv_bi"
    before = labels.read_bytes()
    assert main(["labels", str(corpus), "--out", str(corpus)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"error: --out {corpus}: 1 .csv_bi file(s) would lie beside their EDF, e.g. {labels}, "
                            "and build would read them as the recordings' labels ahead of the corpus's own "
                            "files; choose an --out outside the corpus folder\n")
    assert labels.read_bytes() == before and "wrote" not in captured.out
    # a folder inside the corpus mirrors the tree below it: no EDF there, so it is fine
    assert main(["labels", str(corpus), "--out", str(corpus / "labels")]) == 0
    assert (corpus / "labels" / "pa_s001_t000.csv_bi").exists()


def test_build_refuses_an_unwritable_cache_dir_before_any_recording(corpus, blocker, monkeypatch, capsys):
    monkeypatch.setattr("common.data.prepare.prepare", lambda *a, **k: pytest.fail("the build started"))
    assert main(["build", "--set", "data.synthetic=null", "--set", f"data.data_dir={corpus}",
                 "--set", f"data.cache_dir={blocker / 'cache'}"]) == 2
    assert capsys.readouterr().err == (
        f"error: data.cache_dir {blocker / 'cache'}: cannot write there ({blocker} is a file, not a folder); "
        "set data.cache_dir (--set data.cache_dir=DIR) to a folder you can write to\n")


def test_inspect_refuses_an_unwritable_plot_before_reading_the_file(tmp_path, blocker, capsys):
    missing = tmp_path / "missing.edf"  # read first, it would be the error
    assert main(["inspect", str(missing), "--plot", str(blocker / "x.png")]) == 2
    assert capsys.readouterr().err == (f"error: --plot {blocker}: cannot write there ({blocker} is a file, not a "
                                       "folder); set --plot to a file in a folder you can write to\n")


def test_inspect_plot_makes_its_folders(corpus, tmp_path, capsys):
    out = tmp_path / "new" / "sub" / "x.png"
    assert main(["inspect", str(corpus / "pa_s001_t000.edf"), "--plot", str(out), "--seconds", "5"]) == 0
    assert f"plot written to {out}" in capsys.readouterr().out
    assert out.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("start", ["20", "500"])
def test_inspect_plot_past_the_end_is_an_error_naming_the_duration(corpus, tmp_path, start, capsys):
    """It wrote an empty plot and exited 0."""
    edf = corpus / "pa_s001_t000.edf"
    assert main(["inspect", str(edf), "--plot", str(tmp_path / "x.png"), "--start", start]) == 2
    assert capsys.readouterr().err == (f"error: {edf}: --start {start} s is at or past the recording's end "
                                       "(20 s): choose a --start below 20\n")
    assert not (tmp_path / "x.png").exists()


def test_inspect_plot_needs_a_stretch_to_show(corpus, tmp_path, capsys):
    for start, seconds in (("-1", "30"), ("0", "0")):
        assert main(["inspect", str(corpus / "pa_s001_t000.edf"), "--plot", str(tmp_path / "x.png"),
                     "--start", start, "--seconds", seconds]) == 2
        assert "the plot needs --start >= 0 and --seconds > 0" in capsys.readouterr().err


def test_a_plot_that_fails_half_way_leaves_no_half_file(tmp_path, monkeypatch):
    """Written through common/files.py save_figure, as every other figure: atomic."""
    import matplotlib.figure
    import numpy as np

    def savefig(self, target, **kwargs):
        with open(target, "wb") as handle:
            handle.write(PNG_MAGIC)  # half a PNG, then the disk fills
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    out = tmp_path / "x.png"
    with pytest.raises(OSError, match="No space left"):
        plot_recording(np.zeros((2, 256)), None, 256.0, ["A", "B"], out, seconds=1.0)
    assert list(tmp_path.iterdir()) == []
