import re
from pathlib import Path

import pytest

from common.data.csv_bi import AnnotationError, Event
from common.data.native_labels import (
    NativeLabels,
    read_chbmit_summary,
    read_siena_list,
    read_wfdb_seizures,
    seizure_events,
)


def _write(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _line_of(text: str, fragment: str) -> int:
    """1-based number of the first line holding `fragment`."""
    return next(n for n, line in enumerate(text.splitlines(), start=1) if fragment in line)


def _raises_at(reader, path: Path, text: str, fragment: str, match: str) -> None:
    """`reader(path)` raises an AnnotationError naming the file and the line holding `fragment`."""
    with pytest.raises(AnnotationError, match=match) as caught:
        reader(path)
    assert f"{path}:{_line_of(text, fragment)}:" in str(caught.value)


# --- WFDB bytes (MIT format: 16-bit little-endian words, type in the high 6 bits) ---------------


def _ann(code: int, interval: int = 0) -> bytes:
    return ((code << 10) | interval).to_bytes(2, "little")


def _skip(interval: int) -> bytes:
    value = interval & 0xFFFFFFFF  # two's complement, then high word first
    return _ann(59) + (value >> 16).to_bytes(2, "little") + (value & 0xFFFF).to_bytes(2, "little")


def _aux(text: str) -> bytes:
    raw = text.encode("latin-1")
    return _ann(63, len(raw)) + raw + b"\0" * (len(raw) % 2)


END = _ann(0, 0)


# --- real files ----------------------------------------------------------------------------------


def test_real_chb05_summary(SHARED):
    labels = read_chbmit_summary(SHARED / "format_stubs" / "chbmit" / "chb05-summary.txt")
    assert list(labels) == [f"chb05_{i:02d}.edf" for i in range(1, 40)]  # 39 File Name blocks
    seizures = {name: record.seizures for name, record in labels.items() if record.seizures}
    assert seizures == {
        "chb05_06.edf": ((417.0, 532.0),),
        "chb05_13.edf": ((1086.0, 1196.0),),
        "chb05_16.edf": ((2317.0, 2413.0),),
        "chb05_17.edf": ((2451.0, 2571.0),),
        "chb05_22.edf": ((2348.0, 2465.0),),
    }
    assert labels["chb05_01.edf"].seizures == ()
    assert labels["chb05_01.edf"].duration_seconds == 3610.0  # 17:20:05 to 18:20:15
    assert labels["chb05_07.edf"].duration_seconds == 3600.0  # 23:21:32 to 24:21:32
    assert labels["chb05_31.edf"].duration_seconds == 3600.0  # 23:24:21 to 24:24:21
    assert labels["chb05_08.edf"].duration_seconds == 3600.0  # 00:21:39 to 1:21:39
    assert labels["chb05_06.edf"].file_name == "chb05_06.edf"
    assert labels["chb05_06.edf"].source.endswith("chb05-summary.txt")


def test_real_chb01_03_seizures(SHARED):
    path = SHARED / "chbmit" / "chb01_03.edf.seizures"
    # The helper's encoding is the file's: a NOTE carrying the time resolution, a SKIP of -1
    # undone by a type-0 annotation one sample on, then the onset and offset behind SKIPs.
    assert path.read_bytes() == (_ann(22) + _aux("## time resolution: 256") + _skip(-1) + _ann(0, 1)
                                 + _skip(766976) + _ann(32) + _skip(10240) + _ann(33) + END)
    expected = NativeLabels("chb01_03.edf", ((2996.0, 3036.0),), str(path), None)
    assert read_wfdb_seizures(path) == expected
    assert read_wfdb_seizures(path, sfreq=256) == expected  # the note and the argument agree
    with pytest.raises(AnnotationError, match="sfreq=512.0 Hz but the file's time resolution note says 256.0"):
        read_wfdb_seizures(path, sfreq=512)
    assert seizure_events(expected) == [Event(2996.0, 3036.0, "seiz", "TERM", 1.0)]


def test_real_siena_pn00(SHARED):
    path = SHARED / "format_stubs" / "siena" / "Seizures-list-PN00.txt"
    labels = read_siena_list(path)
    assert list(labels) == [f"PN00-{i}.edf" for i in range(1, 6)]
    # 19.58.36 - 19.39.33 = 19 min 3 s; 19.59.46 - 19.39.33 = 20 min 13 s; 20.22.58 - 19.39.33 = 43 min 25 s
    assert labels["PN00-1.edf"] == NativeLabels("PN00-1.edf", ((1143.0, 1213.0),), str(path), 2605.0,
                                                start_clock=19 * 3600 + 39 * 60 + 33)
    # The corpus's typo is returned as written: the seizure ends 1936 s after the recording does.
    # 18.28.29 - 18.15.44 = 765 s; 19.29.29 - 18.15.44 = 4425 s; 18.57.13 - 18.15.44 = 2489 s
    assert labels["PN00-3.edf"].seizures == ((765.0, 4425.0),)
    assert labels["PN00-3.edf"].duration_seconds == 2489.0
    assert labels["PN00-2.edf"].seizures == ((1220.0, 1274.0),)  # leading-space registration times


# --- CHB-MIT summary ---------------------------------------------------------------------------

CHB_VARIANTS = """Data Sampling Rate: 256 Hz
*************************

Channels in EDF Files:
**********************
Channel 1: FP1-F7
Channel 2: F7-T7

File Name: chb04_01.edf
File Start Time: 23:21:32
File End Time: 0:21:39
Number of Seizures in File: 2
Seizure 1 Start Time: 1862 seconds
Seizure 1 End Time: 1963 seconds
Seizure 2 Start Time:  2996 second
Seizure 2 End Time:   3036
Channels changed:
Channel 1: FP1-F7
Channel 2: -

File Name: chb04_02.edf
File Start Time: 24:21:32
File End Time: 1:21:39
Number of Seizures in File: 0

File Name: chb04_03.edf
File Start Time: 23:21:32
File End Time: 1:21:39
Number of Seizures in File: 1
Seizure Start Time: 7804 seconds
Seizure End Time: 7853 seconds
"""


def test_chbmit_variants(tmp_path):
    path = _write(tmp_path, CHB_VARIANTS, "chb04-summary.txt")
    labels = read_chbmit_summary(path)
    assert labels == {
        "chb04_01.edf": NativeLabels("chb04_01.edf", ((1862.0, 1963.0), (2996.0, 3036.0)), str(path), 3607.0),
        "chb04_02.edf": NativeLabels("chb04_02.edf", (), str(path), 3607.0),  # 24:21:32 is 00:21:32
        "chb04_03.edf": NativeLabels("chb04_03.edf", ((7804.0, 7853.0),), str(path), 7207.0),
    }


def test_chbmit_without_clock_times_and_unsorted(tmp_path):
    text = ("File Name: chb24_01.edf\nNumber of Seizures in File: 2\n"
            "Seizure 1 Start Time: 2451 seconds\nSeizure 1 End Time: 2476 seconds\n"
            "Seizure 2 Start Time: 480.5 seconds\nSeizure 2 End Time: 505 seconds\n")
    labels = read_chbmit_summary(_write(tmp_path, text, "chb24-summary.txt"))
    assert labels["chb24_01.edf"].duration_seconds is None
    assert labels["chb24_01.edf"].seizures == ((480.5, 505.0), (2451.0, 2476.0))


CHB_ONE = """File Name: chb01_01.edf
File Start Time: 11:42:54
File End Time: 12:42:54
Number of Seizures in File: 1
Seizure Start Time: 100 seconds
Seizure End Time: 200 seconds
"""


@pytest.mark.parametrize(("old", "new", "fragment", "match"), [
    ("Number of Seizures in File: 1", "Number of Seizures in File: 2", "Number of", "says 2 seizures but lists 1"),
    ("Seizure End Time: 200 seconds\n", "", "Seizure Start", "start without an end"),
    ("Seizure End Time: 200 seconds\n", "Seizure Start Time: 300 seconds\nSeizure End Time: 400 seconds\n",
     "Seizure Start Time: 100", "start without an end"),
    ("Seizure Start Time: 100 seconds\n", "", "Seizure End", "without a 'Seizure Start Time'"),
    ("Seizure End Time: 200", "Seizure End Time: 100", "Seizure End", "not after its start at 100.0"),
    ("Seizure End Time: 200 seconds", "Seizure End Time: 2OO seconds", "Seizure End", "cannot read"),
    ("File End Time: 12:42:54", "File End Time: 11:42:54", "File End", "equals File Start Time"),
    ("File End Time: 12:42:54", "File End Time: 12:62:54", "File End", "past 59"),
    ("File End Time: 12:42:54\n", "", "File Start", "not the other"),
    ("Number of Seizures in File: 1\n", "", "File Name", "no 'Number of Seizures in File"),
])
def test_chbmit_errors_name_file_and_line_and_spoil_that_recording_only(tmp_path, old, new, fragment, match):
    text = CHB_ONE.replace(old, new) + CHB_OTHER
    path = _write(tmp_path, text, "chb01-summary.txt")
    listed = read_chbmit_summary(path)
    assert isinstance(listed["chb01_01.edf"], AnnotationError) and re.search(match, str(listed["chb01_01.edf"]))
    assert str(listed["chb01_01.edf"]).startswith(f"{path}:{_line_of(text, fragment)}:")
    assert listed["chb01_02.edf"] == NativeLabels("chb01_02.edf", (), str(path), None)


CHB_OTHER = "\nFile Name: chb01_02.edf\nNumber of Seizures in File: 0\n"  # which CHB_ONE's errors leave alone


def test_chbmit_file_listed_twice_lines_of_no_recording_and_no_block(tmp_path):
    text = CHB_ONE + "\n" + CHB_ONE.replace("Seizure Start Time: 100", "Seizure Start Time: 150") + CHB_OTHER
    path = _write(tmp_path, text, "chb01-summary.txt")
    listed = read_chbmit_summary(path)  # which block holds its seizures is unknown: neither is read
    assert str(listed["chb01_01.edf"]).startswith(f"{path}:8: chb01_01.edf is listed twice (first at line 1)")
    assert listed["chb01_02.edf"].seizures == ()
    for old, new, fragment, match in (
        ("File Name: chb01_01.edf", "Number of Seizures in File: 0", "Number of", "cannot read"),
        ("File Name: chb01_02.edf", "File Name: chb01 02.edf", "chb01 02", "cannot read"),
        # a block boundary lost: its lines would go to the block before it
        ("File Name: chb01_02.edf", "Name: chb01_02.edf", "Number of Seizures in File: 0",
         "a second 'Number of Seizures in File' for chb01_01.edf: a 'File Name:' line before it is missing"),
    ):
        text = (CHB_ONE + CHB_OTHER).replace(old, new, 1)
        _raises_at(read_chbmit_summary, _write(tmp_path, text, "chb01-summary.txt"), text, fragment, match)
    # 'Filename:' is a File Name line, not a line of the block before it
    text = (CHB_ONE + CHB_OTHER).replace("File Name: chb01_02.edf", "Filename: chb01_02.edf")
    assert read_chbmit_summary(_write(tmp_path, text, "chb01-summary.txt"))["chb01_02.edf"].seizures == ()
    path = _write(tmp_path, "Data Sampling Rate: 256 Hz\nChannel 1: FP1-F7\n", "empty-summary.txt")
    with pytest.raises(AnnotationError, match=f"{path}: no 'File Name:' block"):
        read_chbmit_summary(path)


# --- WFDB annotation file ----------------------------------------------------------------------


def test_wfdb_large_skip_odd_aux_and_pseudo_annotations(tmp_path):
    data = (_aux("## time resolution: 250")  # 23 bytes: one pad byte
            + _aux("odd") + _ann(22, 5) + _ann(60, 7) + _ann(61, 1) + _ann(62, 3)  # no time advance
            + _skip(3_000_000) + _ann(32, 10)  # onset at 5 + 3_000_000 + 10; high word 0x2d
            + _skip(-1_000) + _ann(0, 1000)  # back and forth: net 0
            + _ann(1, 1000) + _ann(33, 500)  # offset 1500 samples later
            + _ann(32, 1) + _ann(33, 250) + END)
    labels = read_wfdb_seizures(_write_bytes(tmp_path, data, "rec_01.edf.seizures"))
    onset = 3_000_015
    assert labels.seizures == ((onset / 250, (onset + 1500) / 250), ((onset + 1501) / 250, (onset + 1751) / 250))
    assert labels.seizures[0] == (12000.06, 12006.06)
    assert labels.file_name == "rec_01.edf" and labels.duration_seconds is None


def test_wfdb_sfreq_argument_without_note(tmp_path):
    path = _write_bytes(tmp_path, _skip(70_000) + _ann(32) + _ann(33, 512) + END, "a.edf.seizures")
    assert read_wfdb_seizures(path, sfreq=512.0).seizures == ((70_000 / 512, 70_512 / 512),)
    with pytest.raises(AnnotationError, match=f"{path}: no '## time resolution' note; pass sfreq="):
        read_wfdb_seizures(path)
    with pytest.raises(AnnotationError, match="need a finite frequency > 0 Hz"):
        read_wfdb_seizures(path, sfreq=0.0)
    # the EDF's rate stands in for a missing note, and only then (a note counts the original's samples)
    assert read_wfdb_seizures(path, edf_sfreq=512.0).seizures == ((70_000 / 512, 70_512 / 512),)
    noted = _write_bytes(tmp_path, _aux("## time resolution: 256") + _skip(70_000) + _ann(32) + _ann(33, 512) + END,
                         "b.edf.seizures")
    assert read_wfdb_seizures(noted, edf_sfreq=128.0).seizures == ((70_000 / 256, 70_512 / 256),)


@pytest.mark.parametrize(("data", "match"), [
    (_ann(32, 5) + _ann(1, 5) + END, "byte 0: seizure onset at sample 5 without an offset"),
    (_ann(32, 5) + _ann(32, 5) + _ann(33, 5) + END, "byte 2: seizure onset at sample 10 while the seizure from"),
    (_ann(33, 5) + END, "byte 0: seizure offset at sample 5 without an onset"),
    (_ann(32, 5) + _skip(-5) + _ann(33) + END, "byte 8: seizure offset at sample 0, not after its onset at 5"),
    (_skip(-3) + _ann(32, 1) + _ann(33, 5) + END, "byte 6: seizure onset at negative sample -2"),
    (_ann(32, 5) + _ann(33, 5), "byte 4: the file ends before an annotation word; it is truncated"),
    (_ann(32, 5) + _ann(33, 5) + END[:1], "byte 4: the file ends before an annotation word"),
    (_skip(70_000)[:4], "byte 4: the file ends before SKIP's interval"),
    (_aux("## time resolution: 256")[:10], "byte 0: AUX text of 23 bytes runs past the end"),
    (_aux("## time resolution: 256") + _aux("## time resolution: 512") + END, "conflicting"),
])
def test_wfdb_errors_name_file_and_byte(tmp_path, data, match):
    path = _write_bytes(tmp_path, data, "bad.edf.seizures")
    with pytest.raises(AnnotationError, match=match) as caught:
        read_wfdb_seizures(path, sfreq=256)
    assert str(caught.value).startswith(f"{path}:")


def test_wfdb_needs_a_seizures_file_name(tmp_path):
    path = _write_bytes(tmp_path, END, "chb01_03.atr")
    with pytest.raises(AnnotationError, match="'<edf name>.seizures'"):
        read_wfdb_seizures(path, sfreq=256)


def _write_bytes(tmp_path: Path, data: bytes, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- Siena seizure list ------------------------------------------------------------------------

SIENA_VARIANTS = """PN07

Data Sampling Rate: 512 Hz

Channels in EDF files:
Channel 1: Fp1      \r
Seizure n 1
File name: PN07-1.edf
Registration start time:   23.50.00  \r
Registration end time:00:30:00
Start time: 23.55.00
End time:23:56:10

Seizure n 2\x20
Seizure start time: 00.10.00
Seizure end time: 00.11.40

Seizure n 3
File name: PN07-1.edf
Registration start time: 23.50.00
Seizure start time:00.05.00
Seizure end time: 00.05.30

Seizure n 4
File name: PN07-2.edf
Registration start time: 02.18.17
Seizure start time: 02.38.37
Seizure end time: 02.39.31
"""


def test_siena_variants(tmp_path):
    path = _write(tmp_path, SIENA_VARIANTS, "Seizures-list-PN07.txt")
    labels = read_siena_list(path)
    # 23.55.00 - 23.50.00 = 300 s; 00.10.00 - 23.50.00 = 1200 s past midnight; sorted by start
    assert labels["PN07-1.edf"] == NativeLabels(
        "PN07-1.edf", ((300.0, 370.0), (900.0, 930.0), (1200.0, 1300.0)), str(path), 2400.0, 23 * 3600 + 50 * 60)
    assert labels["PN07-2.edf"] == NativeLabels("PN07-2.edf", ((1220.0, 1274.0),), str(path), None,
                                                2 * 3600 + 18 * 60 + 17)
    events = seizure_events(labels["PN07-2.edf"], label="sz")
    assert events == [Event(1220.0, 1274.0, "sz", "TERM", 1.0)]


SIENA_ONE = """Seizure n 1
File name: PN01-1.edf
Registration start time: 19.39.33
Registration end time: 20.22.58
Seizure start time: 19.58.36
Seizure end time: 19.59.46
"""


@pytest.mark.parametrize(("old", "new", "fragment", "match"), [
    ("File name: PN01-1.edf\n", "", "Registration start", "before any 'File name"),
    ("Seizure n 1", "Seizure #1", "Seizure #1", "cannot read 'Seizure #1'; expected .* or 'Seizure n N'"),
    ("File name: PN01-1.edf", "File name: PN01 1.edf", "File name", "cannot read 'File name: PN01 1.edf'"),
])
def test_siena_lines_of_no_recording_spoil_the_list(tmp_path, old, new, fragment, match):
    text = SIENA_ONE.replace(old, new) + SIENA_OTHER
    _raises_at(read_siena_list, _write(tmp_path, text, "Seizures-list-PN01.txt"), text, fragment, match)
    # a later block's header that cannot be read is no line of the recording before it either
    text = SIENA_ONE + SIENA_OTHER.replace("Seizure n 2", "Seizure #2")
    _raises_at(read_siena_list, _write(tmp_path, text, "Seizures-list-PN01.txt"), text, "Seizure #2", "Seizure #2")


@pytest.mark.parametrize(("old", "new", "fragment", "match"), [
    ("Registration start time: 19.39.33\n", "", "Seizure start", "without a 'File name:' and 'Registration start"),
    ("Seizure end time: 19.59.46", "Seizure end time: 19.58.00", "Seizure end", "ends 1107 s .* not after"),
    ("Seizure end time: 19.59.46", "Seizure end time: 19.58.36", "Seizure end", "not after its start"),
    ("Seizure end time: 19.59.46", "Seizure end time: 19,59,46", "Seizure end", "cannot read the time '19,59,46'"),
    # a start before the registration's was read past midnight, 85827 s in, and its end "not after" it
    ("Seizure start time: 19.58.36", "Seizure start time: 19.30.00", "Seizure start",
     r"seizure start time 19.30.00 is not within PN01-1.edf's registration, 19.39.33 to 20.22.58 \(line \d+\)"),
    ("Seizure start time: 19.58.36\nSeizure end time: 19.59.46", "Seizure start time: 20.30.00\nSeizure end "
     "time: 20.40.00", "Seizure start", "seizure start time 20.30.00 is not within"),
    ("Seizure start time: 19.58.36", "Seizure start time: 19.58.36 pm", "Seizure start", "cannot read the time"),
    ("Registration end time: 20.22.58", "Registration end time: 19.39.33", "Registration end", "equals its start"),
    ("Seizure end time: 19.59.46\n", "", "Seizure start", "start without an end"),
    ("Seizure end time: 19.59.46\n", "Seizure n 2\n", "Seizure start", "start without an end"),
    ("Seizure start time: 19.58.36\n", "", "Seizure end", "end time without a start"),
    ("Registration start time: 19.39.33", "Registration start time:1 9.39.33", "Registration start",
     "cannot read the time '1 9.39.33'"),  # as PN10's list writes PN10-7.8.9's
    # listed, yet no seizure read (a misspelt key is no key): not a seizure-free recording
    ("Seizure start time: 19.58.36\nSeizure end time: 19.59.46", "Strat time: 19.58.36\nEnd tme: 19.59.46",
     "File name", "PN01-1.edf is listed, yet no seizure start and end time of it was read"),
    ("Registration start time: 19.39.33\nRegistration end time: 20.22.58\nSeizure start time: 19.58.36\n"
     "Seizure end time: 19.59.46", "Registration end time: 20.22.58", "File name", "is listed, yet no seizure"),
])
def test_siena_errors_name_file_and_line_and_spoil_that_recording_only(tmp_path, old, new, fragment, match):
    text = SIENA_ONE.replace(old, new) + SIENA_OTHER
    path = _write(tmp_path, text, "Seizures-list-PN01.txt")
    listed = read_siena_list(path)
    assert isinstance(listed["PN01-1.edf"], AnnotationError)
    assert re.search(match, str(listed["PN01-1.edf"]))
    assert str(listed["PN01-1.edf"]).startswith(f"{path}:{_line_of(text, fragment)}:")
    assert listed["PN01-2.edf"] == NativeLabels("PN01-2.edf", ((20.0, 50.0),), str(path), None, 8 * 3600)


# a second recording after SIENA_ONE, which its errors must leave alone
SIENA_OTHER = """
Seizure n 2
File name: PN01-2.edf
Registration start time: 08.00.00
Seizure start time: 08.00.20
Seizure end time: 08.00.50
"""


def test_siena_a_bad_later_block_spoils_its_recording_and_a_repeat_must_agree(tmp_path):
    text = SIENA_ONE + "\nSeizure n 2\nFile name: PN01-1.edf\nRegistration start time: 19.39.34\n" + SIENA_OTHER
    path = _write(tmp_path, text, "Seizures-list-PN01.txt")
    listed = read_siena_list(path)
    # its first block was read, but a recording with a block that is not is no recording to train on
    assert str(listed["PN01-1.edf"]).startswith(f"{path}:{_line_of(text, '19.39.34')}: registration start time "
                                                "of PN01-1.edf differs from the one at line 3")
    assert listed["PN01-2.edf"].seizures == ((20.0, 50.0),)
