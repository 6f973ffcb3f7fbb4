"""common/data/prepare.py read_split_record: a run's splits.json that is not one is refused,
naming the file and the fix, whatever shape its damage takes."""

from __future__ import annotations

import json

import pytest

from common.data.prepare import read_split_record


def test_a_split_record_is_read_as_written(tmp_path):
    path = tmp_path / "splits.json"
    path.write_text(json.dumps({"splits": {"train": {"pa_s001_t000": "pa"}, "dev": {}}}))
    assert read_split_record(path) == {"train": {"pa_s001_t000": "pa"}, "dev": {}}


@pytest.mark.parametrize("text", [
    "{}",  # no splits
    '{"splits": ["train", "dev"]}',  # a list: .values() raised AttributeError, a traceback
    '{"splits": {"test": {}}}',  # a split this project has no name for
    '{"splits": {"train": ["pa_s001_t000"]}}',  # stems without patients
    '{"splits": ',  # cut short
    "[1, 2]",  # not an object
])
def test_a_damaged_split_record_is_refused_naming_the_file_and_the_fix(tmp_path, text):
    path = tmp_path / "splits.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"^{path}: not a split record as training writes it \(.*\); .*restore it "
                                         "from a backup, or delete it to split the corpus afresh"):
        read_split_record(path)
