"""Pairing two folders of `.csv_bi` files by name (common/eval/score.py `pair_records`): the files
present on both sides are scored, those on one side only listed; NEDC's numbers on the matched
pairs do not change."""

import shutil
from pathlib import Path

import pytest

from common.eval.score import pair_records, read_pairs, score_pairs

HEAD = "# version = csv_v1.0.0\n# duration = 100.0000 secs\nchannel,start_time,stop_time,label,confidence\n"


def _write(folder: Path, name: str, rows: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(HEAD + rows)
    return path


def test_files_on_one_side_only_are_listed_and_the_others_paired(tmp_path):
    ref, hyp = tmp_path / "ref", tmp_path / "hyp"
    _write(ref / "p1", "a_s001_t000.csv_bi", "TERM,10.0000,20.0000,seiz,1.0000\n")
    _write(ref, "b_s001_t000.csv_bi")  # its prediction was skipped
    _write(ref, "c_s001_t000.csv_bi", "TERM,30.0000,40.0000,seiz,1.0000\n")
    _write(hyp, "a_s001_t000.csv_bi", "TERM,12.0000,18.0000,seiz,0.9000\n")
    _write(hyp, "c_s001_t000.csv_bi")
    _write(hyp, "d_s001_t000.csv_bi", "TERM,1.0000,2.0000,seiz,0.9000\n")  # its labels were skipped
    pairing = pair_records(ref, hyp)
    assert [(r.name, h.name) for r, h in pairing.pairs] == [("a_s001_t000.csv_bi",) * 2, ("c_s001_t000.csv_bi",) * 2]
    assert pairing.reference_only == [ref / "b_s001_t000.csv_bi"]
    assert pairing.hypothesis_only == [hyp / "d_s001_t000.csv_bi"]
    assert pairing.unmatched_message().splitlines() == [
        "2 file(s) without a partner of the same name, not scored (the other 2 pair(s) are); a recording "
        "whose prediction or labels were skipped has one side only: fix that recording and rerun the step "
        "that skipped it, or remove the file",
        f"  {ref / 'b_s001_t000.csv_bi'} has no hypothesis file of the same name under {hyp}",
        f"  {hyp / 'd_s001_t000.csv_bi'} has no reference file of the same name under {ref}",
    ]
    # only the pairs are scored: a's seizure hit, c's missed, d's event no false alarm
    ovlp = score_pairs(pairing.pairs)["nedc"]["ovlp"]["seiz"]
    assert (ovlp["targets"], ovlp["hits"], ovlp["misses"], ovlp["false_alarms"]) == (2, 1, 1, 0)
    with pytest.raises(ValueError, match=r"ref/b_s001_t000\.csv_bi has no hypothesis file of the same name"):
        read_pairs(ref, hyp)  # the strict reader still refuses an incomplete set


def test_no_name_on_both_sides_is_an_error_naming_a_file_of_each(tmp_path):
    ref, hyp = tmp_path / "ref", tmp_path / "hyp"
    for name in ("a.csv_bi", "b.csv_bi"):
        _write(ref, name)
    _write(hyp, "a_hyp.csv_bi")
    with pytest.raises(ValueError) as info:
        pair_records(ref, hyp)
    assert str(info.value) == (
        f"no file name is in both folders, so nothing can be scored: {ref / 'a.csv_bi'} has no hypothesis "
        f"file of the same name under {hyp}, nor {hyp / 'a_hyp.csv_bi'} a reference under {ref} (2 and 1 "
        "files, none paired); a hypothesis is scored against the reference named <stem>.csv_bi like it: "
        "check that the folders hold the same recordings")


def test_nedc_numbers_on_the_matched_pairs_are_unchanged(nedc_sample, tmp_path):
    """NEDC's sample with a file added on each side: the 30 pairs score exactly as the sample alone
    (tests/common/eval/test_nedc.py checks those against NEDC's printed output)."""
    ref, hyp = tmp_path / "ref", tmp_path / "hyp"
    shutil.copytree(nedc_sample / "ref", ref)
    shutil.copytree(nedc_sample / "hyp", hyp)
    _write(ref, "zzzzzzzz_s001_t000.csv_bi", "TERM,10.0000,20.0000,seiz,1.0000\n")
    _write(hyp / "extra", "yyyyyyyy_s001_t000.csv_bi", "TERM,10.0000,20.0000,seiz,1.0000\n")
    pairing = pair_records(ref, hyp)
    assert len(pairing.pairs) == 30
    assert pairing.reference_only == [ref / "zzzzzzzz_s001_t000.csv_bi"]
    assert pairing.hypothesis_only == [hyp / "extra" / "yyyyyyyy_s001_t000.csv_bi"]
    metrics, expected = score_pairs(pairing.pairs), score_pairs(read_pairs(nedc_sample / "ref", nedc_sample / "hyp"))
    assert metrics["nedc"] == expected["nedc"] and metrics["szcore"] == expected["szcore"]
    ovlp = metrics["nedc"]["ovlp"]["seiz"]  # NEDC v6.0.0's printed OVLP summary of its sample
    assert (ovlp["targets"], round(100 * ovlp["sensitivity"], 4), ovlp["false_alarms"]) == (701, 86.1626, 2)
    assert metrics["records"] == 30 and metrics["duration_seconds"] == 45277.0
    # per recording (which hold the misses and false alarms): the labels' totals, file by file
    for method, field in (("ovlp", "hits"), ("ovlp", "false_alarms"), ("taes", "misses")):  # epoch: other units
        files = metrics["nedc"][method]["per_file"]
        assert len(files) == 30 and "zzzzzzzz_s001_t000" not in files
        total = sum(metrics["nedc"][method][label][field] for label in ("seiz", "bckg"))
        assert sum(f[field] for f in files.values()) == pytest.approx(total, rel=1e-12)


def test_a_pair_that_cannot_be_scored_is_left_out_and_named(tmp_path, capsys):
    """One malformed file or a pair of two recordings costs that pair, not the whole scoring."""
    from jaxbrr.evaluate import main

    ref, hyp = tmp_path / "ref", tmp_path / "hyp"
    _write(ref, "a_s001_t000.csv_bi", "TERM,10.0000,20.0000,seiz,1.0000\n")
    _write(hyp, "a_s001_t000.csv_bi", "TERM,12.0000,18.0000,seiz,0.9000\n")
    _write(ref, "b_s001_t000.csv_bi", "TERM,80.0000,130.0000,seiz,1.0000\n")  # past its own duration
    _write(hyp, "b_s001_t000.csv_bi")
    _write(ref, "c_s001_t000.csv_bi")
    (hyp / "c_s001_t000.csv_bi").write_text(HEAD.replace("100.0000", "100.5000"))
    # what only the scorers refuse: a label NEDC's two-class map lacks, a recording under SzCORE's 1 s
    _write(ref, "d_s001_t000.csv_bi")
    _write(hyp, "d_s001_t000.csv_bi", "TERM,10.0000,20.0000,gnsz,0.9000\n")
    for side in (ref, hyp):
        (side / "e_s001_t000.csv_bi").write_text(HEAD.replace("100.0000", "0.5000"))
    pairing = pair_records(ref, hyp)
    assert [r.name for r, _ in pairing.pairs] == ["a_s001_t000.csv_bi"]
    assert len(pairing.refused) == 4
    assert pairing.refused[0].startswith(f"{ref / 'b_s001_t000.csv_bi'}:4: need 0 <= start < stop <= duration")
    assert pairing.refused[1].startswith(f"durations differ: reference {ref / 'c_s001_t000.csv_bi'} 100.0 s, "
                                         f"hypothesis {hyp / 'c_s001_t000.csv_bi'} 100.5 s")
    assert pairing.refused[2].startswith(f"{hyp / 'd_s001_t000.csv_bi'}: labels ['gnsz'] are not in NEDC's two-class")
    assert pairing.refused[3] == f"{ref / 'e_s001_t000.csv_bi'}: duration 0.5 s is under one 1 Hz sample; SzCORE " \
                                 "cannot score it"
    with pytest.raises(ValueError, match=r"b_s001_t000\.csv_bi:4: need 0 <= start"):
        read_pairs(ref, hyp)  # the strict reader refuses an incomplete set
    assert main(["--score", str(ref), str(hyp), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "1 record, 0.03 h" in captured.out  # a's scores
    assert "error: 4 pair(s) that cannot be scored, left out (the other 1 are scored)" in captured.err
    (ref / "a_s001_t000.csv_bi").write_text(HEAD + "TERM,90.0000,101.0000,seiz,1.0000\n")
    with pytest.raises(ValueError, match=r"^no pair of .*ref and .*hyp can be scored:\n  .*a_s001_t000.csv_bi:4: "):
        pair_records(ref, hyp)
