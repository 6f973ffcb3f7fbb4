import json
import re
from pathlib import Path

import numpy as np
import pytest

from common.config import config_to_dict
from common.data.csv_bi import read_csv_bi
from jaxbrr.evaluate import main

ROWS = "channel,start_time,stop_time,label,confidence\n"


@pytest.fixture(scope="module")
def sample(nedc_sample) -> Path:
    return nedc_sample


def test_score_mode_on_the_nedc_sample(sample, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--score", str(sample / "ref"), str(sample / "hyp"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "86.1626%" in printed and "3.8165" in printed and "mean of 19 subjects" in printed
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]  # written atomically
    metrics = json.loads((out / "metrics.json").read_text())
    ovlp = metrics["nedc"]["ovlp"]["seiz"]
    assert (ovlp["targets"], round(100 * ovlp["sensitivity"], 4), ovlp["false_alarms"],
            round(ovlp["fa_per_24h"], 4)) == (701, 86.1626, 2, 3.8165)
    assert round(100 * metrics["nedc"]["taes"]["seiz"]["sensitivity"], 4) == 6.6199
    assert round(100 * metrics["nedc"]["epoch"]["seiz"]["sensitivity"], 4) == 89.1678
    assert metrics["records"] == 30 and metrics["duration_seconds"] == 45277.0
    assert metrics["szcore"]["subjects"] == 19 and set(metrics["szcore"]["mean"]) == {
        "sensitivity", "precision", "f1", "fp_per_24h"}


def _file(folder: Path, name: str, rows: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(f"# version = csv_v1.0.0\n# duration = 100.0000 secs\n{ROWS}{rows}")


def test_undefined_szcore_metrics_are_null_in_json(tmp_path, capsys):
    _file(tmp_path / "ref", "a_s001_t000.csv_bi", "TERM,10.0000,20.0000,seiz,1.0000\n")
    _file(tmp_path / "hyp", "a_s001_t000.csv_bi")
    assert main(["--score", str(tmp_path / "ref"), str(tmp_path / "hyp"), "--out", str(tmp_path)]) == 0
    assert "n/a" in capsys.readouterr().out
    szcore = json.loads((tmp_path / "metrics.json").read_text())["szcore"]
    assert szcore["mean"]["precision"] is None and szcore["mean"]["sensitivity"] == 0


def test_unpaired_files_are_listed_and_the_pairs_scored(tmp_path, capsys):
    """The clinic chain (predict, data labels, --score) where a recording's labels were skipped, and
    another's prediction: the pair left is scored and written, the two listed in one message, exit 2."""
    ref, hyp, out = tmp_path / "ref", tmp_path / "hyp", tmp_path / "out"
    _file(ref, "a_s001_t000.csv_bi", "TERM,10.0000,20.0000,seiz,1.0000\n")
    _file(ref, "b_s001_t000.csv_bi", "TERM,10.0000,20.0000,seiz,1.0000\n")
    _file(hyp, "a_s001_t000.csv_bi", "TERM,10.0000,20.0000,seiz,0.9000\n")
    _file(hyp, "c_s001_t000.csv_bi", "TERM,50.0000,60.0000,seiz,0.9000\n")
    assert main(["--score", str(ref), str(hyp), "--out", str(out)]) == 2
    printed = capsys.readouterr()
    assert printed.err == (
        "error: 2 file(s) without a partner of the same name, not scored (the other 1 pair(s) are); a "
        "recording whose prediction or labels were skipped has one side only: fix that recording and rerun "
        "the step that skipped it, or remove the file\n"
        f"  {ref / 'b_s001_t000.csv_bi'} has no hypothesis file of the same name under {hyp}\n"
        f"  {hyp / 'c_s001_t000.csv_bi'} has no reference file of the same name under {ref}\n")
    assert "NEDC OVLP        100.0000%   100.0000%" in printed.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["records"] == 1 and metrics["nedc"]["ovlp"]["seiz"]["targets"] == 1
    assert metrics["unmatched"] == {"reference": [str(ref / "b_s001_t000.csv_bi")],
                                    "hypothesis": [str(hyp / "c_s001_t000.csv_bi")]}


def test_no_pair_or_malformed_files_exit_2_naming_the_file(tmp_path, capsys):
    _file(tmp_path / "ref", "b_s001_t000.csv_bi")
    _file(tmp_path / "hyp", "a_s001_t000.csv_bi")
    assert main(["--score", str(tmp_path / "ref"), str(tmp_path / "hyp"), "--out", str(tmp_path / "out")]) == 2
    assert "no file name is in both folders, so nothing can be scored" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    _file(tmp_path / "hyp", "b_s001_t000.csv_bi", "TERM,5,1,seiz,1\n")
    assert main(["--score", str(tmp_path / "ref"), str(tmp_path / "hyp")]) == 2
    assert "hyp/b_s001_t000.csv_bi:4: need 0 <= start < stop" in capsys.readouterr().err


def test_predicts_marked_files_score_as_any_other(tmp_path, capsys):
    """predict's `# written_by = jaxbrr.predict` line changes nothing the scorer reads."""
    from common.data.csv_bi import Event, write_csv_bi

    seizure = [Event(10.0, 20.0, "seiz", confidence=0.9)]
    write_csv_bi(tmp_path / "ref" / "a_s001_t000.csv_bi", seizure, 100.0)
    write_csv_bi(tmp_path / "hyp" / "a_s001_t000.csv_bi", seizure, 100.0, written_by="jaxbrr.predict")
    assert "# written_by = jaxbrr.predict" in (tmp_path / "hyp" / "a_s001_t000.csv_bi").read_text()
    assert main(["--score", str(tmp_path / "ref"), str(tmp_path / "hyp"), "--out", str(tmp_path / "out")]) == 0
    ovlp = json.loads((tmp_path / "out" / "metrics.json").read_text())["nedc"]["ovlp"]["seiz"]
    assert (ovlp["targets"], ovlp["hits"], ovlp["false_alarms"]) == (1, 1, 0)


def test_score_mode_refuses_an_unwritable_out_before_scoring(tmp_path, capsys):
    """It printed the scores, then a traceback. A path under a regular file cannot be written, by
    root either."""
    _file(tmp_path / "ref", "a_s001_t000.csv_bi", "TERM,10.0000,20.0000,seiz,1.0000\n")
    _file(tmp_path / "hyp", "a_s001_t000.csv_bi", "TERM,10.0000,20.0000,seiz,1.0000\n")
    (tmp_path / "notes.txt").write_text("")
    out = tmp_path / "notes.txt" / "score"
    assert main(["--score", str(tmp_path / "ref"), str(tmp_path / "hyp"), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"error: --out {out}: cannot write there ({tmp_path / 'notes.txt'} is a file, not a "
                            "folder); set --out to a folder you can write to\n")
    assert "NEDC OVLP" not in captured.out


def test_a_mode_is_required():
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


# ----------------------------------------------------------------------------------------------
# --checkpoint: a tiny untrained ref19 model (tests/jaxbrr/conftest.py) on a synthetic corpus of
# four 40-50 s recordings, one seizure each; the dev split is one patient's two recordings.

FA_NAMES = ["sensitivity_at_10_fa_per_24h", "sensitivity_at_5_fa_per_24h",
            "sensitivity_at_2.5_fa_per_24h", "sensitivity_at_1_fa_per_24h"]


def test_checkpoint_mode_on_a_synthetic_split(synthetic_run, capsys):
    assert main(["--checkpoint", str(synthetic_run), "--no-progress"]) == 0  # --split dev by default
    printed = capsys.readouterr().out
    out = synthetic_run / "eval" / "best-1" / "dev"  # WORKDIR/eval/<kind>-<step>/<split>
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["source"]["split"] == "dev" and metrics["records"] == 2 and metrics["skipped"] == []
    assert metrics["checkpoint"] == str(synthetic_run / "checkpoints" / "best" / "1")
    assert set(metrics["sample"]) == {"auroc", "sensitivity", "specificity", "precision", "f1",
                                      "positives", "samples"}
    assert 0 <= metrics["sample"]["auroc"] <= 1
    assert list(metrics["sensitivity_at_fa"]) == FA_NAMES
    for name in FA_NAMES:
        assert name in printed
        # the untrained model says ~0.5 everywhere: at a low enough tau_on one event covers each
        # recording, hits its seizure and is no false alarm
        point = metrics["sensitivity_at_fa"][name]
        assert (point["met"], point["sensitivity"], point["false_alarms"], point["targets"]) == (True, 1.0, 0, 2)
    sweep = metrics["threshold_sweep"]
    assert len(sweep["tau_on"]) == 19 + 5 and sweep["tau_on"][0] == 0.05 and sweep["hits"][0] == 2  # k/20 and 0.999..
    assert "AUROC" in printed and "NEDC OVLP" in printed and "SzCORE event" in printed

    # what was scored is on disk: re-scoring the written .csv_bi files gives the same numbers
    for name in ("roc.png", "sensitivity_fa.png"):
        assert (out / name).stat().st_size > 10_000
    assert len(list((out / "timelines").glob("*.png"))) == 2
    assert main(["--score", str(out / "ref"), str(out / "hyp")]) == 0
    assert main(["--score", str(out / "ref"), str(out / "hyp"), "--out", str(out / "rescored")]) == 0
    rescored = json.loads((out / "rescored" / "metrics.json").read_text())
    assert rescored["nedc"] == metrics["nedc"] and rescored["szcore"] == metrics["szcore"]


def test_a_recording_with_a_non_finite_output_is_left_out_and_kept_for_the_localiser(
        synthetic_run, tmp_path, monkeypatch, capsys):
    """The model's output NaN on one window of one recording: stitching cannot average it, and the
    whole evaluation died there with a traceback and nothing written. Now that recording is left
    out and named, its windows saved as a batch the localiser reads (the command with the run's
    --set); the other is scored, exit 2. NaN everywhere: nothing scored, the earlier run's scores
    removed, metrics.json says why; a clean run then leaves no saved batch behind."""
    import jaxbrr.predict
    from common.data.prepare import prepare
    from jaxbrr.predict import load_checkpoint

    real = jaxbrr.predict.make_predict
    calls, nan_everywhere = [], []

    def some_nan(model):
        predict = real(model)

        def run(x):
            probs = np.array(predict(x))
            if nan_everywhere:
                probs[:] = np.nan
            elif not calls:  # the first window of the first batch: the first recording's first
                probs[0, 5] = np.nan
            calls.append(len(x))
            return probs
        return run

    monkeypatch.setattr(jaxbrr.predict, "make_predict", some_nan)
    out = tmp_path / "out"
    args = ["--checkpoint", str(synthetic_run), "--out", str(out), "--no-progress", "--max-timelines", "0",
            "--set", "eval.threshold_steps=4"]
    assert main(args) == 2
    err = capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    (item,) = metrics["not_finite"]
    stem, batch = item["stem"], out / "nonfinite" / f"{item['stem']}.npz"
    assert (item["non_finite_windows"], item["first_seconds"], item["batch"]) == (1, 0.0, str(batch))
    assert f"error: {stem}: the model's output is NaN/Inf in 1 of its {item['windows']} windows (the first from 0 s): " \
           f"not scored; its first 1 such windows are in {batch}, and where the NaN is born: python -m " \
           f"parity.localize --checkpoint {synthetic_run / 'checkpoints' / 'best' / '1'} --batch {batch} " \
           "--set eval.threshold_steps=4\n" in err
    assert "1 of 2 recordings not scored: the model's output is NaN/Inf on them (above); the other 1 are scored" in err
    assert metrics["records"] == 1 and stem not in {p.stem for p in (out / "ref").glob("*.csv_bi")}
    config, _, _ = load_checkpoint(synthetic_run)
    x, labels, _ = prepare(config, progress=False).corpus.window(stem, 0, config.window_samples)
    saved = np.load(batch)
    np.testing.assert_array_equal(saved["x"], x[None])
    np.testing.assert_array_equal(saved["y"], labels[None].astype(np.float32))

    nan_everywhere.append(True)
    assert main(args) == 2
    assert "error: the model's output is NaN/Inf on every one of the 2 recordings: nothing to score" in \
        capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["records"] == 0 and len(metrics["not_finite"]) == 2 and "nedc" not in metrics
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == sorted(
        ["metrics.json", *(f"{item['stem']}.npz" for item in metrics["not_finite"])])  # no earlier scores
    nan_everywhere.clear()
    calls.append("the first batch is past")
    assert main(args) == 0
    assert json.loads((out / "metrics.json").read_text())["not_finite"] == [] and not list(out.glob("nonfinite/*"))


def test_split_follows_the_runs_recorded_split(synthetic_run, tmp_path, capsys):
    """A run's splits.json (written when its training started) decides --split: the corpus split
    afresh puts the other patient in dev here, one the recorded run trained on."""
    import shutil

    from common.data.prepare import SPLITS_FILE, prepare, split_record
    from jaxbrr.predict import load_checkpoint

    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    config, _, _ = load_checkpoint(run)
    fresh = split_record(prepare(config, progress=False))["splits"]
    assert len(fresh["dev"]) == 2 and len(fresh["train"]) == 2
    swapped = {"train": fresh["dev"], "dev": fresh["train"], "eval": {}}
    (run / SPLITS_FILE).write_text(json.dumps({"splits": swapped}))
    out = tmp_path / "out"
    assert main(["--checkpoint", str(run), "--split", "dev", "--out", str(out), "--no-progress",
                 "--max-timelines", "0", "--set", "eval.threshold_steps=4"]) == 0
    assert f"split: as recorded in {run / SPLITS_FILE}" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["source"]["split_file"] == str(run / SPLITS_FILE)
    assert sorted(p.stem for p in (out / "ref").glob("*.csv_bi")) == sorted(swapped["dev"])
    # not a split record: refused, naming it
    (run / SPLITS_FILE).write_text("{}")
    assert main(["--checkpoint", str(run), "--out", str(out), "--no-progress"]) == 2
    assert f"{run / SPLITS_FILE}: not a split record" in capsys.readouterr().err


def test_checkpoint_mode_on_an_edf_dir_skips_and_reports_a_bad_file(synthetic_run, tmp_path, capsys):
    from common.data.prepare import ensure_synthetic
    from jaxbrr.predict import load_checkpoint

    config, _, _ = load_checkpoint(synthetic_run)
    ensure_synthetic(config, progress=False)
    folder = tmp_path / "edfs"
    folder.mkdir()
    for source in sorted(Path(config.data.data_dir).glob("*_t001.*"))[:2]:  # one recording
        (folder / source.name).symlink_to(source)
    (folder / "bad_s001_t000.edf").write_bytes(b"0       " + b"x" * 300)
    (folder / "bad_s001_t000.csv_bi").write_text("# version = csv_v1.0.0\n")
    out = tmp_path / "out"
    # neither --progress nor --no-progress, and no terminal (a nohup log): the build says how far it is
    assert main(["--checkpoint", str(synthetic_run), "--edf-dir", str(folder), "--out", str(out),
                 "--max-timelines", "0", "--set", "eval.threshold_steps=4",
                 "--set", "data.split.seed=7"]) == 2  # no split with --edf-dir: its fields are free
    captured = capsys.readouterr()
    err = captured.err
    assert "caching recordings: 0/2 (" in captured.out and "caching recordings: 2/2 (" in captured.out
    assert f"skipped {folder / 'bad_s001_t000.edf'}: corrupt header" in err  # the path once
    assert f"1 of 2 EDF files under {folder} skipped (above); the other 1 are scored" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["records"] == 1 and metrics["source"] == {"edf_dir": str(folder.resolve())}
    assert [(Path(s["source"]).name, s["split"]) for s in metrics["skipped"]] == [("bad_s001_t000.edf", None)]
    assert len(metrics["threshold_sweep"]["tau_on"]) == 4 + 5 and not (out / "timelines").exists()


def test_labels_cut_at_a_recordings_end_are_reported_per_file(synthetic_run, tmp_path, capsys):
    """A Siena list whose second seizure runs past the recording's end, within the registration the
    list gives (Siena EDFs end up to ~20 s before their listed registration end): evaluate scores
    the cut labels and says so, on screen and in metrics.json."""
    from common.data.edf import read_header
    from common.data.prepare import ensure_synthetic
    from jaxbrr.predict import load_checkpoint

    config, _, _ = load_checkpoint(synthetic_run)
    ensure_synthetic(config, progress=False)
    source = sorted(Path(config.data.data_dir).glob("*_t001.edf"))[0]
    folder = tmp_path / "siena" / "PN07"
    folder.mkdir(parents=True)
    (folder / "PN07-1.edf").symlink_to(source)
    header = read_header(source)
    seconds = int(header.n_records * header.record_seconds)
    start = sum(int(part) * scale for part, scale in zip(header.starttime.split("."), (3600, 60, 1), strict=True))
    # the list's clock: the EDF header's start time + t s (the two must agree)
    clock = lambda t: f"{(start + t) // 3600 % 24:02d}.{(start + t) // 60 % 60:02d}.{(start + t) % 60:02d}"  # noqa: E731
    assert seconds > 20
    (folder / "Seizures-list-PN07.txt").write_text(
        f"Seizure n 1\nFile name: PN07-1.edf\nRegistration start time: {clock(0)}\n"
        f"Registration end time: {clock(seconds + 40)}\nSeizure start time: {clock(5)}\nSeizure end time: {clock(10)}\n\n"
        f"Seizure n 2\nFile name: PN07-1.edf\nSeizure start time: {clock(seconds - 10)}\n"
        f"Seizure end time: {clock(seconds + 30)}\n")
    out = tmp_path / "out"
    assert main(["--checkpoint", str(synthetic_run), "--edf-dir", str(folder.parent), "--out", str(out),
                 "--no-progress", "--max-timelines", "0", "--set", "eval.threshold_steps=4"]) == 0
    printed = capsys.readouterr().out
    assert ("labels cut in 1 recording(s); the reference files hold the cut labels:\n  PN07-1: 1 seizure "
            "event(s) cut at the recording's end, 0 starting after it, dropped") in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels_cut"] == {"PN07-1": {"clipped_events": 1, "dropped_events": 0,
                                                "annotations": str(folder / "Seizures-list-PN07.txt")}}
    reference = read_csv_bi(out / "ref" / "PN07-1.csv_bi")
    assert [(e.start_seconds, e.stop_seconds) for e in reference.events if e.label == "seiz"] == [
        (5.0, 10.0), (seconds - 10.0, reference.duration_seconds)]


def test_a_recording_of_the_scored_split_skipped_building_is_said_beside_the_scores(bipolar_run, tmp_path, capsys):
    """A TUSZ-laid-out corpus where an eval/ and a train/ recording fail to build: --split eval
    scores the other eval recording, says one more was skipped, and exits 2; the train/ one is
    listed with its split. --edf-dir on the eval/ folder alone scores it with no split."""
    import edfio
    import numpy as np

    from common.data.csv_bi import Event, with_background, write_csv_bi
    from common.data.montage import BIPOLAR23

    tree = tmp_path / "tusz" / "edf"
    for seed, (split, stem) in enumerate((("train", "aaaaaaaa_s001_t000"), ("train", "aaaaaaab_s001_t000"),
                                          ("dev", "aaaaaaac_s001_t000"), ("eval", "aaaaaaad_s001_t000"),
                                          ("eval", "aaaaaaae_s001_t000"))):
        edf = tree / split / stem[:8] / "s001_2010" / "01_tcp_ar" / f"{stem}.edf"
        edf.parent.mkdir(parents=True)
        rng = np.random.default_rng(seed)
        edfio.Edf([edfio.EdfSignal(30 * rng.standard_normal(8 * 256), 256, label=name, physical_dimension="uV",
                                   physical_range=(-500, 500)) for name in BIPOLAR23[:-1]]).write(edf)
        write_csv_bi(edf.with_suffix(".csv_bi"), with_background([Event(2.0, 5.0, "seiz")], 8.0), 8.0)
    for bad in ("aaaaaaab_s001_t000", "aaaaaaae_s001_t000"):  # truncated
        edf = next(tree.rglob(f"{bad}.edf"))
        edf.write_bytes(edf.read_bytes()[:5000])
    out = tmp_path / "out"
    data = ["--set", f"data.data_dir={tree.parent}", "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    assert main(["--checkpoint", str(bipolar_run), "--split", "eval", "--out", str(out), "--no-progress",
                 "--max-timelines", "0", "--set", "eval.threshold_steps=4", *data]) == 2
    captured = capsys.readouterr()
    assert "evaluating 1 recordings (0.00 h): the eval split of " in captured.out
    assert "; 1 more skipped, not scored (listed at the end)" in captured.out
    assert "1 of 2 recordings of the eval split skipped (above); the other 1 are scored" in captured.err
    skipped = {Path(s["source"]).stem: s["split"] for s in json.loads((out / "metrics.json").read_text())["skipped"]}
    assert skipped == {"aaaaaaab_s001_t000": "train", "aaaaaaae_s001_t000": "eval"}
    # a split folder alone, under a config that names the corpus: every file scored, no split
    assert main(["--checkpoint", str(bipolar_run), "--edf-dir", str(tree / "eval"), "--out", str(tmp_path / "o2"),
                 "--no-progress", "--max-timelines", "0", "--set", "eval.threshold_steps=4",
                 "--set", "data.corpus=tusz", "--set", f"data.cache_dir={tmp_path / 'cache'}"]) == 2
    assert "1 of 2 EDF files under" in capsys.readouterr().err


def test_checkpoint_mode_bad_arguments_exit_2(synthetic_run, tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "nowhere")]) == 2
    assert "no such file or folder; point it at a run folder" in capsys.readouterr().err
    assert main(["--checkpoint", str(synthetic_run), "--split", "eval"]) == 2  # eval_fraction 0
    assert ("is empty: the checkpoint's data.split, which its training used, puts no recording in it; "
            "evaluate --split dev, or score other recordings with --edf-dir DIR") in capsys.readouterr().err
    assert main(["--checkpoint", str(synthetic_run), "--set", "eval.fa_rates=[3.0]"]) == 2
    assert "eval.fa_rates holds 3, which has no metric name" in capsys.readouterr().err
    assert main(["--checkpoint", str(synthetic_run), "--edf-dir", str(tmp_path / "none")]) == 2
    assert "--edf-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--score", "a", "b", "--split", "dev"])
    assert info.value.code == 2 and "--split only apply with --checkpoint" in capsys.readouterr().err


def test_an_unwritable_out_is_refused_before_any_recording_is_read(synthetic_run, tmp_path, monkeypatch, capsys):
    """It built the cache and predicted every recording, then a traceback. A path under a regular
    file cannot be written, by root either: given as --out, or as the run's own eval folder."""
    import shutil

    monkeypatch.setattr("jaxbrr.evaluate._recordings", lambda *a, **k: pytest.fail("the recordings were read"))
    (tmp_path / "notes.txt").write_text("")
    out = tmp_path / "notes.txt" / "eval"
    assert main(["--checkpoint", str(synthetic_run), "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err == (f"error: --out {out}: cannot write there ({tmp_path / 'notes.txt'} is a "
                                       "file, not a folder); set --out to a folder you can write to\n")
    run = shutil.copytree(synthetic_run, tmp_path / "run", ignore=shutil.ignore_patterns("eval"))
    (run / "eval").write_text("")  # where WORKDIR/eval/best-1/dev would go
    assert main(["--checkpoint", str(run), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"error: the run's eval folder (the default --out) {run / 'eval' / 'best-1' / 'dev'}: cannot write there "
        f"({run / 'eval'} is a file, not a folder); pass --out DIR, a folder you can write to\n")


def test_an_out_holding_someones_labels_is_refused_and_an_earlier_evaluates_files_are_replaced(
        synthetic_run, tmp_path, monkeypatch, capsys):
    """evaluate removes the .csv_bi files in OUT/ref and OUT/hyp that this run does not write: it
    deleted reference labels kept there in NEDC's layout. Now it touches only files it marked, and
    refuses an OUT holding any other before a recording is read. An earlier run's plots go too."""
    from common.data.csv_bi import Event, write_csv_bi
    from common.eval.report import WRITTEN_BY

    out = tmp_path / "out"
    args = ["--checkpoint", str(synthetic_run), "--out", str(out), "--no-progress", "--max-timelines", "0",
            "--set", "eval.threshold_steps=4"]
    earlier = write_csv_bi(out / "hyp" / "gone_s001_t000.csv_bi", [], 10.0, written_by=WRITTEN_BY)
    # an earlier evaluate's plots and saved batch: this run draws no timeline, so they would stay
    # beside its metrics as if they were its own
    pictures = [out / "timelines" / "gone_s001_t000.png", out / "nonfinite" / "gone_s001_t000.npz"]
    for path in [*pictures, out / "metrics.json"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"an earlier run's")
    assert main(args) == 0
    capsys.readouterr()
    ours = sorted((out / "ref").glob("*.csv_bi"))
    assert ours and not earlier.exists() and all(f"# written_by = {WRITTEN_BY}" in p.read_text() for p in ours)
    assert not any(path.exists() for path in pictures) and (out / "roc.png").stat().st_size > 10_000
    theirs = write_csv_bi(out / "ref" / "chb01_03.csv_bi", [Event(2996.0, 3036.0, "seiz")], 3600.0)
    kept = theirs.read_bytes()
    monkeypatch.setattr("jaxbrr.evaluate._recordings", lambda *a, **k: pytest.fail("the recordings were read"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out}: 1 .csv_bi file(s) in its ref/ and hyp/ that evaluate did not write "
                          f"(no '# written_by = {WRITTEN_BY}' line)") and f"  {theirs}\n" in err
    assert theirs.read_bytes() == kept and sorted((out / "ref").glob("*.csv_bi")) == sorted([*ours, theirs])


def test_split_fields_cannot_change_the_split_being_scored(synthetic_run, capsys):
    """Recomputing the split with another eval_fraction would score a training patient as `eval`:
    with --split (dev by default) what decides the split is refused before anything is computed."""
    before = sorted(synthetic_run.rglob("*"))
    for split_args, override in ((["--split", "eval"], "data.split.eval_fraction=0.5"),
                                 ([], "data.split.seed=1"),
                                 (["--split", "dev"], "data.corpus=folder")):
        assert main(["--checkpoint", str(synthetic_run), *split_args, "--set", override, "--no-progress"]) == 2
        key = override.split("=")[0]
        split = split_args[1] if split_args else "dev"
        assert capsys.readouterr().err == (
            f"error: --set {override}: {key} decides which recordings are in which split, so with --split it "
            f"stays the checkpoint's: another value could put the model's training patients into the {split} "
            "split it scores; drop this --set, or score other recordings with --edf-dir DIR\n")
    assert sorted(synthetic_run.rglob("*")) == before  # nothing evaluated, nothing written


@pytest.mark.parametrize("override", [
    "data.edf_glob='**/x.edf'", "data.synthetic=null", "data.synthetic.seed=4",
    "data.corpus=folder", "data.split={kind: seeded}", "data.split.kind=seeded", "data.split.dev_fraction=0.1",
    "data.seizure_labels=[seiz]", "data.background_labels=[bckg]", "data.label_duration_tolerance_seconds=9",
    "data.listed_as={}", "data.chbmit_unlisted=seizure_free",
    "preprocess.notch_hz=50", "preprocess={}", "data={}",
])
def test_every_field_that_decides_the_split_is_refused(override):
    from common.config import ConfigError
    from jaxbrr.evaluate import refuse_split_overrides

    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"^{re.escape(f'--set {override}: {key} decides which recordings')}"):
        refuse_split_overrides(["postprocess.tau_on=0.7", override], "eval")


def test_only_weights_with_their_runs_config_keep_its_split(synthetic_run, tmp_path, capsys):
    """A run folder (or one of its steps) carries the data section its training used, and so does
    a .safetensors file converted from a run, or a step's neutral copy, read without --config; a
    weights file of the model alone takes --config and --set for its data. A converted file was
    let through: --set data.split.seed scored training patients as `dev`."""
    from common.checkpoints import NEUTRAL_FILE, read_neutral, read_neutral_metadata, write_neutral
    from jaxbrr.evaluate import carries_its_split
    from jaxbrr.predict import load_checkpoint

    step = next((synthetic_run / "checkpoints" / "best").iterdir())
    assert carries_its_split(synthetic_run) and carries_its_split(step)
    config, _, _ = load_checkpoint(synthetic_run)
    arrays = read_neutral(step / NEUTRAL_FILE)
    converted = write_neutral(tmp_path / "run.safetensors", arrays, config.model, "jax", run_config=config)
    alone = write_neutral(tmp_path / "weights.safetensors", arrays, config.model, "jax")
    assert carries_its_split(converted) and not carries_its_split(converted, "configs/default.yaml")
    assert not carries_its_split(alone)
    (tmp_path / "original.pt").touch()  # located by kind, not read
    assert not carries_its_split(tmp_path / "original.pt")
    # the refusal, from the command
    assert main(["--checkpoint", str(converted), "--set", "data.split.seed=3", "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 2
    assert "--set data.split.seed=3: data.split.seed decides which recordings" in capsys.readouterr().err
    # a training step's neutral copy carries its run's config: the file alone reads as its step
    assert read_neutral_metadata(step / NEUTRAL_FILE)["run_config"] == json.loads(json.dumps(config_to_dict(config)))
    assert carries_its_split(step / NEUTRAL_FILE) and not carries_its_split(step / NEUTRAL_FILE, "configs/tiny.yaml")


def test_a_steps_neutral_copy_evaluates_into_its_runs_folder_and_a_folder_is_no_config(synthetic_run, capsys):
    """evaluate --checkpoint STEP/model.safetensors said the file was not inside a run's
    checkpoints/ folder; --config RUN said 'config file not found' of a folder that exists."""
    from common.checkpoints import NEUTRAL_FILE
    from jaxbrr.evaluate import _step_of, default_out_dir

    step = next((synthetic_run / "checkpoints" / "best").iterdir())
    assert default_out_dir(_step_of(step / NEUTRAL_FILE), "dev") == synthetic_run / "eval" / f"best-{step.name}" / "dev"
    # read with another config it is not the run's step, nor are its scores the run's
    assert main(["--checkpoint", str(step / NEUTRAL_FILE), "--config", "configs/tiny.yaml", "--no-progress"]) == 2
    assert "a step's weights are not evaluated as its run's" in capsys.readouterr().err
    assert main(["--checkpoint", str(step / NEUTRAL_FILE), "--config", str(synthetic_run), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"error: {synthetic_run}: a folder, not a YAML config file; a run folder's config travels with its weights: "
        "pass the folder (or one of its steps) as --checkpoint, without --config\n")


def test_an_empty_split_of_a_runs_record_is_called_empty_not_missing(synthetic_run, tmp_path, capsys):
    """The run's splits.json puts no recording in `eval` (eval_fraction 0): the error blamed
    recordings missing from the corpus, 'listed above', where none were."""
    import shutil

    from common.data.prepare import SPLITS_FILE, prepare, split_record
    from jaxbrr.predict import load_checkpoint

    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    config, _, _ = load_checkpoint(run)
    record = split_record(prepare(config, progress=False))["splits"]
    (run / SPLITS_FILE).write_text(json.dumps({"splits": {**record, "eval": {}}}))
    assert main(["--checkpoint", str(run), "--split", "eval", "--no-progress"]) == 2
    assert ("the eval split of" in (err := capsys.readouterr().err) and "is empty: the checkpoint's data.split"
            in err and "yields now" not in err), err
    (run / SPLITS_FILE).write_text(json.dumps({"splits": {**record, "eval": {"gone_s001_t000": "gone"}}}))
    assert main(["--checkpoint", str(run), "--split", "eval", "--no-progress"]) == 2
    assert "the run's eval split holds no recording the corpus under" in capsys.readouterr().err


def test_fields_outside_the_split_may_change():
    from jaxbrr.evaluate import refuse_split_overrides

    refuse_split_overrides(["postprocess.tau_on=0.7", "eval.batch_size=2", "data.cache_dir=/tmp/c", "data.data_dir=/moved",
                            "data.window_seconds=8", "data.balance.enabled=false", "model.ssm.scan=chunked",
                            "train.seed=3", "data.splitting=1"], "dev")  # a prefix is no field


def test_both_twins_checkpoints_are_evaluated_into_folders_named_alike(tmp_path):
    from jaxbrr.evaluate import default_out_dir

    jax_step = tmp_path / "run" / "checkpoints" / "best" / "36"
    torch_step = tmp_path / "run-torchref" / "checkpoints" / "best" / "step_000036.pt"
    assert default_out_dir(jax_step, "dev") == tmp_path / "run" / "eval" / "best-36" / "dev"
    assert default_out_dir(torch_step, "dev") == tmp_path / "run-torchref" / "eval" / "best-36" / "dev"
