from dataclasses import replace
from pathlib import Path

import pytest

from common.data.csv_bi import AnnotationError, Event, format_csv_bi, read_csv_bi, write_csv_bi
from common.eval.score import read_pairs

TUSZ = """# version = csv_v1.0.0
# bname = aaaaaasf_s001_t000
# duration = 1289.0000 secs
# montage_file = nedc_eas_default_montage.txt
#
channel,start_time,stop_time,label,confidence
TERM,42.2786,81.7760,seiz,1.0000
TERM,133.8040,162.1105,seiz,0.5000
"""


@pytest.fixture(scope="module")
def sample(nedc_sample) -> Path:
    return nedc_sample


def _write(tmp_path, text, name="aaaaaasf_s001_t000.csv_bi"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_tusz_file(tmp_path):
    record = read_csv_bi(_write(tmp_path, TUSZ))
    assert record.duration_seconds == 1289.0
    assert record.montage_file == "nedc_eas_default_montage.txt"
    assert record.name == "aaaaaasf_s001_t000.csv_bi"
    assert record.events == (Event(42.2786, 81.7760, "seiz", "TERM", 1.0),
                             Event(133.8040, 162.1105, "seiz", "TERM", 0.5))


def test_a_byte_order_mark_is_read_past(tmp_path):
    """An editor that saves UTF-8 with a byte-order mark: the version line was refused as
    '\\ufeff# version = ...'."""
    marked = tmp_path / "marked" / "aaaaaasf_s001_t000.csv_bi"
    marked.parent.mkdir()
    marked.write_bytes(b"\xef\xbb\xbf" + TUSZ.encode())
    plain = read_csv_bi(_write(tmp_path, TUSZ))
    assert replace(read_csv_bi(marked), path=plain.path) == plain
    assert plain.events and plain.duration_seconds == 1289.0


def test_write_then_read_round_trip(tmp_path):
    events = [Event(0.0, 12.5, "bckg"), Event(12.5, 30.25, "seiz", confidence=0.875),
              Event(40.0, 41.0001, "seiz", confidence=0.12345)]
    path = write_csv_bi(tmp_path / "deep" / "aaaaaaaa_s001_t000.csv_bi", events, 60.0, "montage_x.txt")
    assert path.read_text() == (
        "# version = csv_v1.0.0\n# bname = aaaaaaaa_s001_t000\n# duration = 60.0000 secs\n"
        "# montage_file = montage_x.txt\n#\nchannel,start_time,stop_time,label,confidence\n"
        "TERM,0.0000,12.5000,bckg,1.0000\nTERM,12.5000,30.2500,seiz,0.8750\n"
        "TERM,40.0000,41.0001,seiz,0.1235\n"
    )
    record = read_csv_bi(path)
    assert record.duration_seconds == 60.0 and record.montage_file == "montage_x.txt"
    assert record.events[:2] == tuple(events[:2])
    assert record.events[2] == Event(40.0, 41.0001, "seiz", "TERM", 0.1235)  # 4 decimals
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left


def test_nedc_sample_files_round_trip_byte_for_byte(sample, tmp_path):
    files = sorted(sample.glob("*/*.csv_bi"))
    assert len(files) == 60
    for path in files:
        record = read_csv_bi(path)
        text = format_csv_bi(record.events, record.duration_seconds, path.stem, record.montage_file)
        assert text == path.read_text(), path


def test_a_rejected_write_leaves_the_old_file(tmp_path):
    path = write_csv_bi(tmp_path / "r.csv_bi", [Event(1.0, 2.0, "seiz")], 10.0)
    before = path.read_text()
    with pytest.raises(ValueError, match="within"):
        write_csv_bi(path, [Event(1.0, 11.0, "seiz")], 10.0)
    with pytest.raises(ValueError, match="non-overlapping"):
        write_csv_bi(path, [Event(1.0, 5.0, "seiz"), Event(4.0, 6.0, "seiz")], 10.0)
    with pytest.raises(ValueError, match="non-empty"):
        write_csv_bi(path, [Event(1.00001, 1.00002, "seiz")], 10.0)  # equal at 4 decimals
    with pytest.raises(ValueError, match="confidence"):
        write_csv_bi(path, [Event(1.0, 2.0, "seiz", confidence=1.5)], 10.0)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv_bi"]


def test_reads_two_decimal_durations_and_files_without_rows(tmp_path):
    text = "# version = csv_v1.0.0\n# duration = 1831.00 secs\nchannel,start_time,stop_time,label,confidence\n"
    record = read_csv_bi(_write(tmp_path, text))
    assert record.duration_seconds == 1831.0 and record.events == () and record.montage_file is None


HEAD = "# version = csv_v1.0.0\n# duration = 100.0000 secs\nchannel,start_time,stop_time,label,confidence\n"


@pytest.mark.parametrize(
    "text, where, message",
    [
        ("", "", "expected '# version = csv_v1.0.0' first, found an empty file"),
        ("# duration = 100 secs\n", ":1", "expected '# version = csv_v1.0.0' first"),
        ("# version = csv_v1.0.0\n# duration = 100 secs\n", "", "no column header"),
        ("# version = csv_v1.0.0\nchannel,start_time,stop_time,label,confidence\n", "", "no '# duration"),
        ("# version = csv_v1.0.0\n# duration = 100 minutes\nchannel,start_time,stop_time,label,confidence\n",
         "", "duration must read"),
        ("# version = csv_v1.0.0\n# duration = 100 secs\nTERM,1,2,seiz,1\n", ":3", "expected the column header"),
        (HEAD + "TERM,abc,10,seiz,1\n", ":4", "must be numbers"),
        (HEAD + "TERM,10,nan,seiz,1\n", ":4", "non-finite"),
        (HEAD + "TERM,10,5,seiz,1\n", ":4", "start < stop.*correct the row's times"),
        (HEAD + "TERM,10,10,seiz,1\n", ":4", "zero-length event at 10.0 s .* delete the row"),
        (HEAD + "TERM,90,101,seiz,1\n", ":4", "stop <= duration.*`duration = 100 secs` ends before this event: "
                                                "correct the event or the duration line"),
        (HEAD + "TERM,10,20,seiz\n", ":4", "expected 5 fields"),
        (HEAD + "FP1-F7,10,20,seiz,1\n", ":4", "term-based"),
        (HEAD + "TERM,10,20,seiz,2\n", ":4", "confidence must lie in"),
        (HEAD + "TERM,10,20,,1\n", ":4", "empty label"),
        (HEAD + "TERM,10,20,seiz,1\nTERM,15,30,bckg,1\n", ":5", "must not overlap"),
        (HEAD + "TERM,10,20,seiz,1\n# late\n", ":5", "comment after the column header"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, text, where, message):
    path = _write(tmp_path, text, "bad.csv_bi")
    with pytest.raises(AnnotationError, match=message) as info:
        read_csv_bi(path)
    assert str(info.value).startswith(f"{path}{where}:")


def test_touching_rows_are_fine(tmp_path):
    record = read_csv_bi(_write(tmp_path, HEAD + "TERM,10,20,seiz,1\nTERM,20,30,seiz,1\n"))
    assert [(e.start_seconds, e.stop_seconds) for e in record.events] == [(10, 20), (20, 30)]


def test_read_pairs_pairs_by_name_at_any_depth(tmp_path):
    for side, folder in (("ref", "p1/s001"), ("hyp", "")):
        for stem in ("b_s001_t000", "a_s001_t000"):
            target = tmp_path / side / folder
            target.mkdir(parents=True, exist_ok=True)
            (target / f"{stem}.csv_bi").write_text(HEAD)
    pairs = read_pairs(tmp_path / "ref", tmp_path / "hyp")
    assert [(r.name, h.name) for r, h in pairs] == [("a_s001_t000.csv_bi",) * 2, ("b_s001_t000.csv_bi",) * 2]
    assert Path(pairs[0][0].path).parent == tmp_path / "ref" / "p1" / "s001"


def test_read_pairs_errors_name_the_file(tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "hyp").mkdir()
    (tmp_path / "ref" / "a.csv_bi").write_text(HEAD)
    with pytest.raises(ValueError, match="hypothesis folder .* holds no .csv_bi files"):
        read_pairs(tmp_path / "ref", tmp_path / "hyp")
    (tmp_path / "hyp" / "b.csv_bi").write_text(HEAD)
    with pytest.raises(ValueError, match=r"ref/a\.csv_bi has no hypothesis file of the same name"):
        read_pairs(tmp_path / "ref", tmp_path / "hyp")
    (tmp_path / "hyp" / "a.csv_bi").write_text(HEAD)
    with pytest.raises(ValueError, match=r"hyp/b\.csv_bi has no reference file"):
        read_pairs(tmp_path / "ref", tmp_path / "hyp")
    (tmp_path / "ref" / "sub").mkdir()
    (tmp_path / "ref" / "sub" / "a.csv_bi").write_text(HEAD)
    with pytest.raises(ValueError, match="holds a.csv_bi twice"):
        read_pairs(tmp_path / "ref", tmp_path / "hyp")
    with pytest.raises(FileNotFoundError, match="missing does not exist"):
        read_pairs(tmp_path / "missing", tmp_path / "hyp")
