"""`python -m jaxbrr.data` end to end: inspect a real file, synth + build a small corpus."""

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
