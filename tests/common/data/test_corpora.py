"""Corpus layouts as the corpora ship (issue 19): which files, whose, which split, which labels.

Problems 1-5 of the issue each have a test here that fails without its fix: synthetic data written
into a real corpus's folder, a stray EDF replacing TUSZ's split, Siena/CHB-MIT patients split
apart, the corpora's own label files ignored, and labels lost without a word.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.config import ConfigError, SplitConfig, load_config
from common.data.annotations import labels_for
from common.data.cache import Corpus
from common.data.corpora import (
    assign_splits,
    check_patient_disjoint,
    official_split,
    patient_id,
    survey,
)
from common.data.csv_bi import AnnotationError, Event, read_csv_bi, with_background, write_csv_bi
from common.data.montage import BIPOLAR23
from common.data.prepare import format_summary, prepare
from common.data.synth import OWNER, SynthFolderError, generate_corpus
from common.eval.szcore import score_szcore

SFREQ = 64  # small files: preprocessing resamples to 256 Hz anyway


@pytest.fixture
def recording(write_edf, tusz_signals):
    """An EDF with TUSZ ref19 names (or `labels`) and, unless labels is False, its .csv_bi."""

    def make(path: Path, seconds: float = 20.0, seizures=((5.0, 12.0),), seed: int = 0, names=None,
             csv_bi: bool = True) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        signals = tusz_signals(seconds, SFREQ, seed, names)
        write_edf(path, signals, SFREQ)
        if csv_bi:
            events = [Event(a, b, "seiz") for a, b in seizures]
            write_csv_bi(path.with_suffix(".csv_bi"), with_background(events, seconds), seconds)
        return path

    return make


def config_for(tmp_path: Path, data_dir: Path, *extra: str):
    return load_config(None, [f"data.data_dir={data_dir}", f"data.cache_dir={tmp_path / 'cache'}",
                              "data.window_seconds=4", "data.stride_seconds=4", "data.balance.enabled=false",
                              *extra])


def tusz_tree(root: Path, recording) -> Path:
    """A TUSZ v2.0.x tree: edf/{train,dev,eval}/<patient>/<session>/<montage>/<stem>.edf."""
    layout = {"train": ("aaaaaaaa", "aaaaaaab", "aaaaaaac"), "dev": ("aaaaaaad",), "eval": ("aaaaaaae",)}
    seed = 0
    for split, patients in layout.items():
        for patient in patients:
            for session in (1, 2):
                seed += 1
                stem = f"{patient}_s{session:03d}_t000"
                recording(root / "edf" / split / patient / f"s{session:03d}_2010" / "01_tcp_ar" / f"{stem}.edf",
                          seed=seed)
    return root


# -- 1. synthetic data only in the generator's own folder ---------------------------------------


def test_the_generator_refuses_a_folder_holding_a_real_corpus(tmp_path, recording):
    tree = tusz_tree(tmp_path / "tusz", recording)
    before = sorted(p.relative_to(tree) for p in tree.rglob("*"))
    config = load_config("configs/default.yaml", [f"data.data_dir={tree}", f"data.cache_dir={tmp_path / 'c'}"])
    with pytest.raises(SynthFolderError, match=r"holds files the synthetic generator did not write") as err:
        prepare(config, progress=False)
    assert str(tree) in str(err.value) and "--set data.synthetic=null" in str(err.value)
    assert sorted(p.relative_to(tree) for p in tree.rglob("*")) == before  # nothing written, nothing cached
    assert not (tmp_path / "c").exists()

    # with the generator dropped, the tree is read as the TUSZ corpus it is
    prepared = prepare(load_config("configs/default.yaml", [
        f"data.data_dir={tree}", f"data.cache_dir={tmp_path / 'c'}", "data.synthetic=null"]), progress=False)
    assert {k: len(v) for k, v in prepared.splits.items()} == {"train": 6, "dev": 2, "eval": 2}

    # naming a real corpus and the generator together is a config error
    with pytest.raises(ConfigError, match="data.synthetic generates a synthetic corpus, but data.corpus is 'tusz'"):
        load_config("configs/default.yaml", ["data.corpus=tusz"])


def test_the_generators_folder_is_marked_and_foreign_recordings_in_it_refused(tmp_path, recording):
    out = tmp_path / "synthetic"
    generate_corpus(out, recordings=2, seed=0, patients=2, duration_seconds=(20.0, 20.0), progress=False)
    assert (out / OWNER).is_file()
    generate_corpus(out, recordings=2, seed=0, patients=2, duration_seconds=(20.0, 20.0), progress=False)  # reused
    recording(out / "nested" / "mine_s001_t000.edf")
    with pytest.raises(SynthFolderError, match=r"1 EDF file\(s\) in it are not its own") as err:
        generate_corpus(out, recordings=2, seed=0, patients=2, duration_seconds=(20.0, 20.0), progress=False)
    assert "mine_s001_t000.edf" in str(err.value)


def test_the_tusz_layout_is_laid_out_as_tusz_ships_and_read_back_with_its_official_split(tmp_path):
    out = tmp_path / "synthetic"
    paths = generate_corpus(out, recordings=9, seed=0, patients=7, duration_seconds=(20.0, 20.0),
                            progress=False, layout="tusz")
    relative = [p.relative_to(out).as_posix() for p in paths]
    assert relative[0] == "edf/train/aaaaaaaa/s001_2001/01_tcp_ar/aaaaaaaa_s001_t000.edf"
    assert relative[1] == "edf/train/aaaaaaab/s001_2001/02_tcp_le/aaaaaaab_s001_t000.edf"
    assert relative[5] == "edf/dev/aaaaaaaf/s001_2001/03_tcp_ar_a/aaaaaaaf_s001_t000.edf"
    assert relative[6] == "edf/eval/aaaaaaag/s001_2001/01_tcp_ar/aaaaaaag_s001_t000.edf"
    assert relative[7] == "edf/train/aaaaaaaa/s002_2002/02_tcp_le/aaaaaaaa_s002_t000.edf"
    from common.data.edf import read_header

    assert read_header(paths[1]).labels[0] == "EEG FP1-LE" and read_header(paths[0]).labels[0] == "EEG FP1-REF"
    found = survey(out, sorted(out.rglob("*.edf")))
    assert (found.corpus, found.split_kind, found.left_out) == ("tusz", "official", [])
    assert {r.official for r in found.recordings} == {"train", "dev", "eval"}


# -- 2. a stray file never changes TUSZ's split ---------------------------------------------------


def test_a_stray_edf_is_left_out_and_reported_and_the_official_split_stands(tmp_path, recording):
    tree = tusz_tree(tmp_path / "tusz", recording)
    stray = recording(tree / "edf" / "aaaaaaaz_s001_t000.edf", seed=99)
    prepared = prepare(config_for(tmp_path, tree), progress=False)
    assert {k: len({prepared.corpus.recordings[s]["patient"] for s in v}) for k, v in prepared.splits.items()} \
        == {"train": 3, "dev": 1, "eval": 1}
    summary = format_summary(prepared)
    assert ("corpus tusz (detected: 11 of 11 recordings named like aaaaaaac_s001_t000; set data.corpus to "
            "choose): 10 recordings of 5 patients; split official") in summary
    assert "split official (the train/ dev/ eval/ folders)" in summary
    assert f"1 EDF file(s) left out:\n    {stray}: outside the train/ dev/ eval/ folders" in summary
    assert "aaaaaaaz" not in prepared.corpus.recordings


def test_a_missing_split_folder_is_reported(tmp_path, recording):
    tree = tusz_tree(tmp_path / "tusz", recording)
    shutil.rmtree(tree / "edf" / "eval")
    summary = format_summary(prepare(config_for(tmp_path, tree), progress=False))
    assert "no recordings under eval/: the eval split is empty" in summary


def test_seeded_split_on_request_and_official_refused_without_folders(tmp_path, recording):
    tree = tusz_tree(tmp_path / "tusz", recording)
    prepared = prepare(config_for(tmp_path, tree, "data.split.kind=seeded", "data.split.dev_fraction=0.2",
                                  "data.split.eval_fraction=0.2"), progress=False)
    assert "split seeded (data.split.seed)" in format_summary(prepared)
    flat = tmp_path / "flat"
    recording(flat / "p1_s001_t000.edf")
    with pytest.raises(ValueError, match="data.split.kind is official, but .* has no train/, dev/ or eval/ folder"):
        survey(flat, [flat / "p1_s001_t000.edf"], split_kind="official")


def test_official_folders_are_checked_for_patients_in_two_splits(tmp_path):
    root = tmp_path / "edf"
    assert official_split(root / "dev" / "x" / "a_s1.edf", root) == "dev"
    assert official_split(root / "other" / "a_s1.edf", root) is None
    patients = {"a_s001_t000": "a", "a_s002_t000": "a", "b_s001_t000": "b"}
    official = {"a_s001_t000": "train", "a_s002_t000": "dev", "b_s001_t000": "eval"}
    with pytest.raises(ValueError, match=r"patient 'a' appears in both 'train' \(a_s001_t000\) and 'dev' "
                                         r"\(a_s002_t000\).*data.split.kind: seeded"):
        assign_splits(patients, SplitConfig(), official)
    with pytest.raises(ValueError, match="patient 'a'"):
        check_patient_disjoint({"a_s1_t0": "train", "a_s2_t0": "dev"}, {"a_s1_t0": "a", "a_s2_t0": "a"})


def test_seeded_split_never_mixes_a_patient():
    patients = {f"p{p:02d}_s001_t{t:03d}": f"p{p:02d}" for p in range(10) for t in range(3)}
    config = SplitConfig(dev_fraction=0.2, eval_fraction=0.1, seed=1)
    splits = assign_splits(patients, config)
    by_patient = {}
    for stem, split in splits.items():
        by_patient.setdefault(patients[stem], set()).add(split)
    assert all(len(s) == 1 for s in by_patient.values())
    counts = {k: sum(1 for s in by_patient.values() if k in s) for k in ("train", "dev", "eval")}
    assert counts == {"train": 7, "dev": 2, "eval": 1}
    assert splits == assign_splits(patients, config)


# -- 3. patient ids as each corpus names them -----------------------------------------------------


def test_patient_ids_follow_each_corpus():
    assert patient_id("aaaaaaac_s001_t000", "tusz") == "aaaaaaac"
    assert patient_id("00000258_s002_t001", "tusz") == "00000258"  # TUSZ v1.x ids
    assert [patient_id(f"PN00-{k}", "siena") for k in (1, 2, 3)] == ["PN00"] * 3
    assert patient_id("PN10-4.5.6", "siena") == "PN10"
    assert [patient_id(s, "chbmit") for s in ("chb17a_03", "chb17b_63", "chb17c_13")] == ["chb17"] * 3
    assert patient_id("chb02_16+", "chbmit") == "chb02"
    assert patient_id("chb21_05", "chbmit") == "chb01"  # one subject, recorded twice
    assert patient_id("PN00-1") == "PN00" and patient_id("chb17a_03") == "chb17"  # from the name alone
    assert patient_id("aaaaaaac_s001_t000") == "aaaaaaac" and patient_id("my-rec_1") == "my-rec"
    assert patient_id("notes", "chbmit") is None and patient_id("chb01_01", "siena") is None


@pytest.mark.parametrize("corpus,stems,patients", [
    ("siena", ["PN00-1", "PN00-2", "PN00-3", "PN01-1", "PN03-1", "PN05-2", "PN06-1", "PN07-1"], 6),
    ("chbmit", ["chb17a_03", "chb17b_63", "chb01_01", "chb21_01", "chb02_01", "chb03_01", "chb04_01",
                "chb05_01"], 6),
])
def test_a_seeded_split_keeps_each_patients_recordings_together(tmp_path, corpus, stems, patients):
    edfs = []
    for stem in stems:
        folder = tmp_path / corpus / stem.split("-")[0].split("_")[0][:5]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.edf").write_bytes(b"")  # the layout reads names only
        edfs.append(folder / f"{stem}.edf")
    found = survey(tmp_path / corpus, edfs)
    assert found.corpus == corpus and found.split_kind == "seeded"
    by_stem = {r.stem: r.patient for r in found.recordings}
    assert len(set(by_stem.values())) == patients
    for seed in range(20):
        splits = assign_splits(by_stem, SplitConfig(dev_fraction=0.3, eval_fraction=0.2, seed=seed))
        together = [("PN00-1", "PN00-2", "PN00-3")] if corpus == "siena" else [("chb17a_03", "chb17b_63"),
                                                                             ("chb01_01", "chb21_01")]
        for group in together:
            assert len({splits[s] for s in group}) == 1


def test_szcore_averages_over_subjects_as_the_corpus_names_them(tmp_path):
    def pair(name, seizure):
        ref = write_csv_bi(tmp_path / "ref" / f"{name}.csv_bi", with_background([Event(*seizure, "seiz")], 600), 600)
        hyp = write_csv_bi(tmp_path / "hyp" / f"{name}.csv_bi", with_background([Event(*seizure, "seiz")], 600), 600)
        return read_csv_bi(ref), read_csv_bi(hyp)

    (tmp_path / "ref").mkdir()
    (tmp_path / "hyp").mkdir()
    pairs = [pair("chb17a_03", (100, 200)), pair("chb17b_63", (100, 200)), pair("PN00-1", (100, 200)),
             pair("PN00-2", (100, 200)), pair("chb21_01", (100, 200)), pair("chb01_03", (100, 200))]
    assert sorted(score_szcore(pairs).per_subject) == ["PN00", "chb01", "chb17"]


# -- 4. the corpora's own label files --------------------------------------------------------------


def test_chbmit_labels_come_from_the_summary_and_the_seizures_file(SHARED, tmp_path):
    folder = tmp_path / "chb05"
    folder.mkdir()
    shutil.copy(SHARED / "format_stubs" / "chbmit" / "chb05-summary.txt", folder)
    for name in ("chb05_06.edf", "chb05_01.edf", "chb05_99.edf"):
        (folder / name).write_bytes(b"")
    assert [(e.start_seconds, e.stop_seconds, e.label) for e in labels_for(folder / "chb05_06.edf", "chbmit").events] \
        == [(417.0, 532.0, "seiz")]
    assert labels_for(folder / "chb05_01.edf", "chbmit").events == []  # listed with 0 seizures
    with pytest.raises(AnnotationError, match=r"chb05_99.edf: is not listed in .*chb05-summary.txt and has no "
                                              r"chb05_99.edf.seizures, so its seizures are unknown; its folder "
                                              r"holds no .seizures file.*download them, or write "
                                              r"chb05_99.csv_bi") as caught:
        labels_for(folder / "chb05_99.edf", "chbmit")
    assert "put the summary beside it" not in str(caught.value)  # it is beside it
    # a block that cannot be read refuses its recording, and its recording only
    summary = folder / "chb05-summary.txt"
    summary.write_text(summary.read_text() + "\nFile Name: chb05_99.edf\nNumber of Seizures in File: one\n")
    with pytest.raises(AnnotationError, match=r"chb05_99.edf: .*chb05-summary.txt:\d+: cannot read 'Number of "
                                              r"Seizures in File: one'.*; correct the label file"):
        labels_for(folder / "chb05_99.edf", "chbmit")
    assert labels_for(folder / "chb05_06.edf", "chbmit").seizures() == [(417.0, 532.0)]
    # a partial download: the summary's 38 other recordings are no misspellings of this one
    assert "listed_as" not in str(caught.value)

    # a .edf.seizures file alone (WFDB), and with a summary that agrees or not
    chb01 = tmp_path / "chb01"
    chb01.mkdir()
    shutil.copy(SHARED / "chbmit" / "chb01_03.edf.seizures", chb01)
    (chb01 / "chb01_03.edf").write_bytes(b"")
    annotations = labels_for(chb01 / "chb01_03.edf", "chbmit")
    assert [(e.start_seconds, e.stop_seconds) for e in annotations.events] == [(2996.0, 3036.0)]
    block = "File Name: chb01_03.edf\nNumber of Seizures in File: 1\nSeizure Start Time: {} seconds\n" \
            "Seizure End Time: 3036 seconds\n"
    (chb01 / "chb01-summary.txt").write_text(block.format(2996))
    assert labels_for(chb01 / "chb01_03.edf", "chbmit").files == (str(chb01 / "chb01-summary.txt"),
                                                                 str(chb01 / "chb01_03.edf.seizures"))
    (chb01 / "chb01-summary.txt").write_text(block.format(2900))
    with pytest.raises(AnnotationError, match=r"chb01-summary.txt says seizures \[\(2900.0, 3036.0\)\] s, "
                                              r"chb01_03.edf.seizures says \[\(2996.0, 3036.0\)\] s"):
        labels_for(chb01 / "chb01_03.edf", "chbmit")
    # a .csv_bi beside the EDF settles it
    write_csv_bi(chb01 / "chb01_03.csv_bi", with_background([Event(2950, 3036, "seiz")], 3600), 3600)
    assert labels_for(chb01 / "chb01_03.edf", "chbmit").seizures() == [(2950.0, 3036.0)]


def test_siena_labels_come_from_the_seizure_list(SHARED, tmp_path):
    folder = tmp_path / "PN00"
    folder.mkdir()
    shutil.copy(SHARED / "format_stubs" / "siena" / "Seizures-list-PN00.txt", folder)
    for k in (1, 3, 9):
        (folder / f"PN00-{k}.edf").write_bytes(b"")
    assert [(e.start_seconds, e.stop_seconds) for e in labels_for(folder / "PN00-1.edf", "siena").events] \
        == [(1143.0, 1213.0)]
    # the corpus's own typo (ends 19.29.29, the registration 18.57.13): cut at the recording's end
    # it would label 1724 s of seizure; refused, naming the fix
    with pytest.raises(AnnotationError, match=r"PN00-3.edf: .*Seizures-list-PN00.txt has a seizure of it ending "
                                              r"4425 s after the registration start, past the registration end it "
                                              r"gives \(2489 s\): a typo .* write PN00-3.csv_bi"):
        labels_for(folder / "PN00-3.edf", "siena")
    with pytest.raises(AnnotationError, match=r"PN00-9.edf: not listed in .*Seizures-list-PN00.txt"):
        labels_for(folder / "PN00-9.edf", "siena")
    # the list's seizure times are clock times from its registration start: the EDF header must
    # start there too (the real PN00-1's says 19.39.33, as the list does); 3 h apart is refused
    shutil.copy(SHARED / "format_stubs" / "siena" / "PN00-1.edf", folder)
    assert labels_for(folder / "PN00-1.edf", "siena").seizures() == [(1143.0, 1213.0)]
    set_start_time(folder / "PN00-1.edf", "16.39.33")
    with pytest.raises(AnnotationError, match=r"PN00-1.edf: .*Seizures-list-PN00.txt gives its registration start "
                                              r"as 19.39.33, the EDF header 16.39.33, 10800 s apart; .* write "
                                              r"PN00-1.csv_bi"):
        labels_for(folder / "PN00-1.edf", "siena")


def test_siena_as_it_ships_misspelt_names_and_an_unreadable_block(tmp_path):
    """Siena v1.0.0's lists call PN01-1.edf "PN01.edf" and write PN10-7.8.9's registration start
    `1 6.49.25`: the first is read through data.listed_as, the second refuses that recording only."""
    folder = tmp_path / "PN01"
    folder.mkdir()
    listing = folder / "Seizures-list-PN01.txt"
    listing.write_text(
        "Seizure n 1\nFile name: PN01.edf\nRegistration start time: 21.51.02\nRegistration end time: 23.51.02\n"
        "Seizure n 1\nStart time: 22.00.02\nEnd time: 22.01.02\n"
        "Seizure n 2\nStart time: 22.10.02\nEnd time: 22.10.32\n\n"
        "Seizure n 3\nFile name: PN01-7.8.9.edf\nRegistration start time:1 6.49.25\n"
        "Registration end time: 17.49.25\nSeizure start time: 17.00.00\nSeizure end time: 17.01.00\n")
    for name in ("PN01-1.edf", "PN01-7.8.9.edf"):
        (folder / name).write_bytes(b"")
    annotations = labels_for(folder / "PN01-1.edf", "siena")
    assert annotations.seizures() == [(540.0, 600.0), (1140.0, 1170.0)] and annotations.listed_as == "PN01.edf"
    # without the mapping: refused, naming the one entry no EDF is called and the whole mapping to set
    with pytest.raises(AnnotationError, match=r"PN01-1.edf: not listed in .*Seizures-list-PN01.txt .*; the list's "
                                              r"one entry that no EDF beside it is called is PN01.edf: if that is "
                                              r"this recording misspelt .* set data.listed_as: "
                                              r"\{PN06-1.edf: PNO6-1.edf, PN01-1.edf: PN01.edf\}"):
        labels_for(folder / "PN01-1.edf", "siena", listed_as=[("PN06-1.edf", "PNO6-1.edf")])
    (folder / "PN01-5.edf").write_bytes(b"")  # two unlisted recordings: which is which is no guess to offer
    with pytest.raises(AnnotationError, match=r"row$"):
        labels_for(folder / "PN01-5.edf", "siena", listed_as=())
    with pytest.raises(AnnotationError, match=r"PN01-7.8.9.edf: .*Seizures-list-PN01.txt:14: cannot read the time "
                                              r"'1 6.49.25'.*; correct the label file, or write "
                                              r"PN01-7.8.9.csv_bi"):
        labels_for(folder / "PN01-7.8.9.edf", "siena")
    # listed under both names: one entry's seizures would be dropped
    listing.write_text(listing.read_text() + "\nSeizure n 4\nFile name: PN01-1.edf\nRegistration start time: "
                       "21.51.02\nSeizure start time: 23.00.00\nSeizure end time: 23.00.10\n")
    with pytest.raises(AnnotationError, match=r"PN01-1.edf: .* lists it as PN01-1.edf and, by data.listed_as, as "
                                              r"PN01.edf: write its seizures as PN01-1.csv_bi"):
        labels_for(folder / "PN01-1.edf", "siena")
    # a name the list gives another recording beside it is no misspelling
    (folder / "PN01.edf").write_bytes(b"")
    with pytest.raises(AnnotationError, match=r"PN01-5.edf: data.listed_as reads it as Seizures-list-PN01.txt's "
                                              r"'PN01.edf', but PN01.edf is a recording of its own"):
        labels_for(folder / "PN01-5.edf", "siena", listed_as=[("PN01-5.edf", "PN01.edf")])


def test_listed_as_is_a_mapping_in_the_config_and_rebuilds_what_it_changes(tmp_path, recording):
    assert dict(load_config(None).data.listed_as)["PN06-1.edf"] == "PNO6-1.edf"  # a letter O, as the list has it
    assert load_config(None, ["data.listed_as={a.edf: b.edf}"]).data.listed_as == (("a.edf", "b.edf"),)
    with pytest.raises(ConfigError, match=r"listed_as names 'b.edf' twice"):
        load_config(None, ["data.listed_as={a.edf: b.edf, c.edf: b.edf}"])
    siena = tmp_path / "siena"
    recording(siena / "PN06" / "PN06-1.edf", seconds=20, csv_bi=False)
    recording(siena / "PN06" / "PN06-3.edf", seconds=20, csv_bi=False, seed=1)
    (siena / "PN06" / "Seizures-list-PN06.txt").write_text(
        "Seizure n 1\nFile name: PNO6-1.edf\nRegistration start time: 00.00.00\nSeizure start time: 00.00.05\n"
        "Seizure end time: 00.00.10\n\nSeizure n 2\nFile name: PN06-3.edf\nRegistration start time: 00.00.00\n"
        "Seizure start time: 00.00.02\nSeizure end time: 00.00.03\n")
    config = config_for(tmp_path, siena, "data.split.dev_fraction=0")
    first = prepare(config, progress=False).build
    assert first.built == ["PN06-1", "PN06-3"]
    # the mapping is no part of the cache's key (TUSZ's cache does not move for Siena's names), but
    # a recording read under a name the config no longer gives it is read again, and refused
    unmapped = config_for(tmp_path, siena, "data.split.dev_fraction=0", "data.listed_as={}")
    build = prepare(unmapped, progress=False).build
    assert build.root == first.root
    assert build.reused == ["PN06-3"] and "PN06-1.edf: not listed in" in build.skipped[0]["reason"]
    again = prepare(config, progress=False).build  # its cached copy holds the labels this mapping gives
    assert again.reused == ["PN06-1", "PN06-3"] and not again.skipped
    assert Corpus(again.root).arrays("PN06-1")[1].sum() == 5 * 256


def _wfdb_seizure(path: Path, onset: int, length: int) -> None:
    """A WFDB .seizures file: one onset ('[', type 32) `onset` samples in, its offset (']', 33)
    `length` samples later, then the end-of-file word (common/data/native_labels.py's format)."""
    path.write_bytes(b"".join(w.to_bytes(2, "little") for w in ((32 << 10) | onset, (33 << 10) | length, 0)))


def test_a_chbmit_recording_no_file_speaks_for_is_seizure_free_only_as_the_config_says(tmp_path, recording):
    """chb24's summary lists only its recordings with seizures; PhysioNet ships a .seizures file
    with each of those, so beside them a recording in neither is seizure-free, and elsewhere unknown."""
    bipolar = {name: name for name in BIPOLAR23}
    folder = tmp_path / "chbmit" / "chb24"
    recording(folder / "chb24_01.edf", seconds=20, names=bipolar, csv_bi=False)
    recording(folder / "chb24_02.edf", seconds=20, names=bipolar, seed=1, csv_bi=False)
    (folder / "chb24-summary.txt").write_text("File Name: chb24_01.edf\nNumber of Seizures in File: 1\n"
                                              "Seizure Start Time: 2 seconds\nSeizure End Time: 5 seconds\n")
    for unlisted in ("refuse", "seizure_free"):  # no annotation files downloaded: nothing is known
        with pytest.raises(AnnotationError, match=r"chb24_02.edf: is not listed in .*chb24-summary.txt .*its "
                                                  r"folder holds no .seizures file"):
            labels_for(folder / "chb24_02.edf", "chbmit", chbmit_unlisted=unlisted)
    _wfdb_seizure(folder / "chb24_01.edf.seizures", onset=2 * SFREQ, length=3 * SFREQ)  # the EDF's rate
    with pytest.raises(AnnotationError, match=r"this folder holds 1 for others but none for it: if the download "
                                              r"is whole .*set data.chbmit_unlisted: seizure_free, or write"):
        labels_for(folder / "chb24_02.edf", "chbmit")
    free = labels_for(folder / "chb24_02.edf", "chbmit", chbmit_unlisted="seizure_free")
    assert free.events == [] and free.unlisted and free.files == (str(folder / "chb24-summary.txt"),)
    assert free.path == f"not in {folder / 'chb24-summary.txt'}: seizure-free by data.chbmit_unlisted"
    listed = labels_for(folder / "chb24_01.edf", "chbmit", chbmit_unlisted="seizure_free")
    assert listed.seizures() == [(2.0, 5.0)] and not listed.unlisted  # summary and .seizures agree

    montage = ("data.montage=bipolar", "model.montage=bipolar", "data.split.dev_fraction=0")
    refused = prepare(config_for(tmp_path, folder.parent, *montage), progress=False).build
    assert refused.built == ["chb24_01"] and "chb24_02.edf: is not listed" in refused.skipped[0]["reason"]
    taken = prepare(config_for(tmp_path, folder.parent, *montage, "data.chbmit_unlisted=seizure_free"),
                    progress=False).build
    assert taken.root == refused.root and taken.built == ["chb24_02"] and taken.reused == ["chb24_01"]
    assert Corpus(taken.root).arrays("chb24_02")[1].sum() == 0
    assert Corpus(taken.root).arrays("chb24_01")[1].sum() == 3 * 256
    # read seizure-free by a setting since taken back: read again, and refused
    again = prepare(config_for(tmp_path, folder.parent, *montage), progress=False).build
    assert again.reused == ["chb24_01"] and "chb24_02.edf: is not listed" in again.skipped[0]["reason"]
    # read seizure-free, then its own .seizures file arrives (a partial download completed): read again
    free = config_for(tmp_path, folder.parent, *montage, "data.chbmit_unlisted=seizure_free")
    assert prepare(free, progress=False).build.reused == ["chb24_01", "chb24_02"]  # its seizure-free build
    _wfdb_seizure(folder / "chb24_02.edf.seizures", onset=SFREQ, length=SFREQ)
    assert prepare(free, progress=False).build.built == ["chb24_02"]
    assert Corpus(taken.root).arrays("chb24_02")[1].sum() == 256
    # the .seizures files that made it seizure-free are gone: read again, and refused
    (folder / "chb24_02.edf.seizures").unlink()
    assert prepare(free, progress=False).build.built == ["chb24_02"]  # seizure-free again, beside chb24_01's
    (folder / "chb24_01.edf.seizures").rename(folder / "chb24_01.seizures.bak")
    gone = prepare(free, progress=False).build
    assert "chb24_02" not in gone.reused and "its folder holds no .seizures file" in gone.skipped[-1]["reason"]
    with pytest.raises(ConfigError, match="chbmit_unlisted"):
        load_config(None, ["data.chbmit_unlisted=yes"])



def test_a_summary_put_beside_a_recording_its_seizures_file_labelled_is_checked_against_it(tmp_path, recording):
    """A build read chb01_03's labels from its .seizures file alone; its chbNN-summary.txt added
    since must agree with it, as in a fresh build. The cache reused the recording: it watched only
    the files it had read, and a summary appearing was none of them."""
    folder = tmp_path / "chbmit" / "chb01"
    recording(folder / "chb01_03.edf", seconds=20, names={name: name for name in BIPOLAR23}, csv_bi=False)
    _wfdb_seizure(folder / "chb01_03.edf.seizures", onset=5 * SFREQ, length=3 * SFREQ)
    config = config_for(tmp_path, folder.parent, "data.montage=bipolar", "model.montage=bipolar",
                        "data.split.dev_fraction=0")
    assert prepare(config, progress=False).build.built == ["chb01_03"]
    (folder / "chb01-summary.txt").write_text("File Name: chb01_03.edf\nNumber of Seizures in File: 1\n"
                                              "Seizure Start Time: 12 seconds\nSeizure End Time: 15 seconds\n")
    build = prepare(config, progress=False).build
    assert build.built == build.reused == []
    assert "chb01-summary.txt says seizures [(12.0, 15.0)] s, chb01_03.edf.seizures says [(5.0, 8.0)] s" in (
        build.skipped[0]["reason"])
    (folder / "chb01-summary.txt").write_text("File Name: chb01_03.edf\nNumber of Seizures in File: 1\n"
                                              "Seizure Start Time: 5 seconds\nSeizure End Time: 8 seconds\n")
    assert prepare(config, progress=False).build.built == ["chb01_03"]  # they agree: read from both
    assert prepare(config, progress=False).build.reused == ["chb01_03"]


def test_chbmit_and_siena_corpora_build_with_their_own_labels(tmp_path, recording):
    """The issue's chb05_06: labelled background before (its seizure at 417-532 s), now seizure."""
    bipolar = {name: f"{name}" for name in BIPOLAR23}
    chb = tmp_path / "chbmit"
    recording(chb / "chb05" / "chb05_06.edf", seconds=600, names=bipolar, csv_bi=False)
    recording(chb / "chb05" / "chb05_01.edf", seconds=30, names=bipolar, seed=1, csv_bi=False)
    (chb / "chb05" / "chb05-summary.txt").write_text(
        "File Name: chb05_01.edf\nNumber of Seizures in File: 0\n\n"
        "File Name: chb05_06.edf\nFile Start Time: 22:21:25\nFile End Time: 22:31:25\n"
        "Number of Seizures in File: 1\nSeizure Start Time: 417 seconds\nSeizure End Time: 532 seconds\n")
    prepared = prepare(config_for(tmp_path, chb, "data.montage=bipolar", "model.montage=bipolar"), progress=False)
    assert prepared.build.survey.corpus == "chbmit" and not prepared.build.skipped
    _, labels = prepared.corpus.arrays("chb05_06")
    assert labels.sum() == (532 - 417) * 256 and labels[417 * 256] == 1 and labels[417 * 256 - 1] == 0
    assert prepared.corpus.recordings["chb05_06"]["patient"] == "chb05"

    siena = tmp_path / "siena"
    recording(siena / "PN01" / "PN01-1.edf", seconds=20, csv_bi=False)
    set_start_time(siena / "PN01" / "PN01-1.edf", "23.59.50")  # as the list says it started
    (siena / "PN01" / "Seizures-list-PN01.txt").write_text(
        # no registration end time: the list does not say how long the EDF is (one that does must
        # say 20 s, test_label_checks.py), so seizures past its end are cut, or dropped, and said
        "Seizure n 1\nFile name: PN01-1.edf\nRegistration start time: 23.59.50\n"
        "Seizure start time: 00.00.05\nSeizure end time: 00.00.30\n\n"
        "Seizure n 2\nFile name: PN01-1.edf\nSeizure start time: 00.00.40\nSeizure end time: 00.00.50\n")
    prepared = prepare(config_for(tmp_path, siena, "data.split.dev_fraction=0"), progress=False)
    _, labels = prepared.corpus.arrays("PN01-1")
    assert labels.sum() == 5 * 256 and labels[-1] == 1  # 15 s .. the end (20 s), across midnight
    summary = format_summary(prepared)
    assert "labels cut in 1 recording(s):\n  PN01-1: 1 seizure event(s) cut at the recording's end, 1 " \
           "starting after it, dropped" in summary


# -- 5. labels are never lost without a word -----------------------------------------------------


def test_a_label_file_of_another_duration_is_refused_naming_both(SHARED, tmp_path):
    """The issue's own pair: a real TUSZ .csv_bi (duration 1831 s, seizure at 733-818 s) beside a
    2 s EDF. It was accepted and its seizure dropped; now the file is skipped, saying why."""
    tree = tmp_path / "tusz" / "edf" / "train" / "aaaaaool" / "s004_2011" / "01_tcp_ar"
    tree.mkdir(parents=True)
    for suffix in (".edf", ".csv_bi"):
        shutil.copy(SHARED / "format_stubs" / "tusz" / f"aaaaaool_s004_t001{suffix}", tree)
    config = config_for(tmp_path, tmp_path / "tusz", "data.window_seconds=1", "data.stride_seconds=1")
    prepared = prepare(config, progress=False)
    (skipped,) = prepared.build.skipped
    assert "aaaaaool_s004_t001.csv_bi: says duration = 1831 s, but aaaaaool_s004_t001.edf lasts 2 s" \
        in skipped["reason"]
    assert "data.label_duration_tolerance_seconds" in skipped["reason"]
    assert f"skipped {tree / 'aaaaaool_s004_t001.edf'}: " in format_summary(prepared)


def test_an_empty_label_file_is_an_error_not_background(tmp_path, recording):
    folder = tmp_path / "flat"
    recording(folder / "pa_s001_t000.edf", seizures=())
    (folder / "pa_s001_t000.csv_bi").write_bytes(b"")
    with pytest.raises(AnnotationError, match="found an empty file"):
        labels_for(folder / "pa_s001_t000.edf", "folder")
    prepared = prepare(config_for(tmp_path, folder), progress=False)
    assert "found an empty file" in prepared.build.skipped[0]["reason"]


def test_an_edited_label_file_rebuilds_the_recording(tmp_path, recording):
    folder = tmp_path / "flat"
    recording(folder / "pa_s001_t000.edf")
    config = config_for(tmp_path, folder, "data.split.dev_fraction=0")
    assert prepare(config, progress=False).build.built == ["pa_s001_t000"]
    assert prepare(config, progress=False).build.reused == ["pa_s001_t000"]
    write_csv_bi(folder / "pa_s001_t000.csv_bi", with_background([Event(1.0, 3.0, "seiz")], 20.0), 20.0)
    again = prepare(config, progress=False)
    assert again.build.built == ["pa_s001_t000"]
    assert Corpus(again.build.root).arrays("pa_s001_t000")[1].sum() == 2 * 256


def set_start_time(edf: Path, clock: str) -> None:
    """Write hh.mm.ss into an EDF header's start time (bytes 176-184)."""
    data = bytearray(edf.read_bytes())
    data[176:184] = clock.encode("ascii")
    edf.write_bytes(bytes(data))


def test_symlinked_folders_and_files_are_found_and_in_their_split(tmp_path):
    """A corpus assembled from links (a `dev -> /datasets/...` folder, git-annex or deduplicated
    files): Path.glob("**") skipped linked folders in silence, and a linked file resolved outside
    the split folders was left out of every split."""
    from common.data.cache import find_recordings

    elsewhere, data = tmp_path / "elsewhere", tmp_path / "data [v2.0.3]"  # a name glob would read as a pattern
    (elsewhere / "dev").mkdir(parents=True)
    (data / "train").mkdir(parents=True)
    (elsewhere / "dev" / "aaaaaaaa_s001_t000.edf").write_bytes(b"0")
    (elsewhere / "blob").write_bytes(b"0")
    (data / "dev").symlink_to(elsewhere / "dev", target_is_directory=True)
    (data / "train" / "bbbbbbbb_s001_t000.edf").symlink_to(elsewhere / "blob")
    found = find_recordings(data)
    assert [p.relative_to(data).as_posix() for p in found] == ["dev/aaaaaaaa_s001_t000.edf",
                                                               "train/bbbbbbbb_s001_t000.edf"]
    assert [official_split(p, data) for p in found] == ["dev", "train"]


def test_an_edf_suffix_in_capitals_is_a_recording_too(tmp_path):
    """A review's: a clinical export's X.EDF beside y.edf was left out of build and evaluate
    without a word (data.edf_glob was "**/*.edf"), and a seizure recording with it; predict's
    folder listing took any case already. The default pattern takes the suffix in any case."""
    from common.config import DataConfig
    from common.data.cache import find_recordings

    for name in ("chb01_03.EDF", "chb01_04.edf", "chb01_05.Edf", "chb01_03.EDF.seizures", "notes.txt"):
        (tmp_path / name).write_bytes(b"0")
    found = find_recordings(tmp_path, DataConfig().edf_glob)
    assert [p.name for p in found] == ["chb01_03.EDF", "chb01_04.edf", "chb01_05.Edf"]
    from common.data.annotations import labels_without_edf

    for name in ("chb01_03.csv_bi", "chb01_09.csv_bi"):  # the first beside its .EDF, the second alone
        (tmp_path / name).write_text("")
    assert [item["source"] for item in labels_without_edf(tmp_path, "folder", ())] == [str(tmp_path / "chb01_09.csv_bi")]
