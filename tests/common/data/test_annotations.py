import numpy as np
import pytest

from common.data.annotations import read_annotations, seizure_mask
from common.data.csv_bi import AnnotationError, Event, with_background, write_csv_bi

TUSZ = """# version = csv_v1.0.0
# bname = aaaaaool_s004_t001
# duration = 1831.00 secs
# montage_file = $NEDC_NFC/lib/nedc_eas_default_montage.txt
#
channel,start_time,stop_time,label,confidence
TERM,0.0000,733.9656,bckg,1.0000
TERM,733.9656,818.0202,seiz,1.0000
TERM,818.0202,1831.0000,bckg,1.0000
"""
# the head of a file of the format, with its duration (seconds) to fill in
HEAD = "# version = csv_v1.0.0\n# duration = {} secs\n#\nchannel,start_time,stop_time,label,confidence\n"


def _write(tmp_path, text, name="r.csv_bi"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_tusz_term_file(tmp_path):
    ann = read_annotations(_write(tmp_path, TUSZ))
    assert ann.duration_seconds == 1831.0
    assert len(ann.events) == 3
    assert ann.seizures() == [(733.9656, 818.0202)]


def test_mask_floors_both_ends(tmp_path):
    ann = read_annotations(_write(tmp_path, TUSZ))
    mask, report = seizure_mask(ann, 1831 * 256, 256)
    onset, offset = int(733.9656 * 256), int(818.0202 * 256)
    assert mask.dtype == np.uint8 and mask.sum() == offset - onset
    assert mask[onset] == 1 and mask[onset - 1] == 0 and mask[offset - 1] == 1 and mask[offset] == 0
    assert report.events == 1 and report.clipped_events == 0
    assert report.seizure_seconds == pytest.approx((offset - onset) / 256)


def test_per_channel_csv_union(tmp_path):
    text = HEAD.format(60) + "FP1-F7,10,20,fnsz,1\nF7-T3,15,30,fnsz,1\nC3-P3,40,50,bckg,1\n"
    ann = read_annotations(_write(tmp_path, text, "r.csv"))
    assert ann.seizures() == [(10.0, 30.0)]
    mask, report = seizure_mask(ann, 60 * 10, 10)
    assert mask.sum() == 200 and report.overlapping_events == 0


@pytest.mark.parametrize(
    "row, message",
    [
        ("TERM,abc,10,seiz,1", "must be numbers"),
        ("TERM,10,5,seiz,1", "start < stop"),
        ("TERM,10,20", "expected 5 fields"),
        ("TERM,10,20,spkz,1", "unknown label 'spkz'"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, row, message):
    path = _write(tmp_path, HEAD.format(60) + row + "\n")
    with pytest.raises(AnnotationError, match=message) as err:
        read_annotations(path)
    where = str(path) if message.startswith("unknown label") else f"{path}:5"  # a label error names the time
    assert where in str(err.value)


def test_events_past_the_end_and_overlaps_are_reported(tmp_path):
    """A per-channel file whose duration outlasts the signal: one event is cut at its end, one
    starts after it, two of one channel overlap."""
    text = HEAD.format(100) + "FP1-F7,5,15,seiz,1\nFP1-F7,10,12,seiz,1\nF7-T3,50,70,seiz,1\nF7-T3,80,90,seiz,1\n"
    ann = read_annotations(_write(tmp_path, text, "r.csv"))
    mask, report = seizure_mask(ann, 60 * 4, 4)
    assert report.clipped_events == 1 and report.dropped_events == 1 and report.overlapping_events == 1
    assert mask.sum() == (15 - 5) * 4 + (60 - 50) * 4


def test_writer_round_trips(tmp_path):
    events = [Event(12.25, 40.5, "seiz", confidence=0.875), Event(100.0, 130.125, "seiz")]
    path = tmp_path / "out.csv_bi"
    write_csv_bi(path, with_background(events, 300.0), 300.0)
    text = path.read_text()
    assert text.startswith("# version = csv_v1.0.0\n# bname = out\n# duration = 300.0000 secs\n")
    assert "TERM,12.2500,40.5000,seiz,0.8750" in text
    ann = read_annotations(path)
    assert ann.duration_seconds == 300.0
    assert [(e.start_seconds, e.stop_seconds, e.label) for e in ann.events] == [
        (0.0, 12.25, "bckg"), (12.25, 40.5, "seiz"), (40.5, 100.0, "bckg"),
        (100.0, 130.125, "seiz"), (130.125, 300.0, "bckg"),
    ]


def test_real_annotation_files(shared):
    stubs = shared / "data" / "format_stubs"
    ann = read_annotations(stubs / "tusz" / "aaaaaool_s004_t001.csv_bi")
    assert ann.duration_seconds == 1831.0 and ann.seizures() == [(733.9656, 818.0202)]
    seizure = read_annotations(shared / "data" / "chbmit" / "chb01_03_Seizure.csv_bi")
    assert seizure.seizures() == [(1.0, 41.0)]
    background = read_annotations(shared / "data" / "chbmit" / "chb01_03_NonSeizure.csv_bi")
    assert background.seizures() == []
    # NEDC's sample: every reference and hypothesis file parses
    for path in sorted((shared / "data" / "nedc_sample").glob("*/*.csv_bi")):
        assert read_annotations(path).duration_seconds > 0
