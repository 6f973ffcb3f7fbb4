import json
from pathlib import Path

import pytest

from jaxbrr.evaluate import main

ROWS = "channel,start_time,stop_time,label,confidence\n"


@pytest.fixture(scope="module")
def sample(shared) -> Path:
    path = shared / "data" / "nedc_sample"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


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


def test_unpaired_or_malformed_files_exit_2_naming_the_file(tmp_path, capsys):
    _file(tmp_path / "ref", "a_s001_t000.csv_bi")
    _file(tmp_path / "ref", "b_s001_t000.csv_bi")
    _file(tmp_path / "hyp", "a_s001_t000.csv_bi")
    assert main(["--score", str(tmp_path / "ref"), str(tmp_path / "hyp")]) == 2
    assert "b_s001_t000.csv_bi has no hypothesis file" in capsys.readouterr().err
    _file(tmp_path / "hyp", "b_s001_t000.csv_bi", "TERM,5,1,seiz,1\n")
    assert main(["--score", str(tmp_path / "ref"), str(tmp_path / "hyp")]) == 2
    assert "hyp/b_s001_t000.csv_bi:4: need 0 <= start < stop" in capsys.readouterr().err


def test_a_mode_is_required():
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
