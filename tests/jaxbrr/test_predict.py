"""`python -m jaxbrr.predict` with tiny untrained checkpoints saved as training saves them
(tests/jaxbrr/conftest.py): the real CHB-MIT crop (41 s, 23 bipolar derivations, 256 Hz) through a
bipolar model, a recording shorter than one window, montage mismatches both ways, bad files and
bad checkpoints."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import edfio
import jax
import numpy as np
import pytest
from flax import nnx

from common.config import ConfigError, config_to_dict
from common.data.csv_bi import read_csv_bi
from common.data.edf import read_edf
from common.data.montage import BIPOLAR23, REF19
from common.data.preprocess import preprocess
from common.eval.recordings import predict_signals
from jaxbrr.predict import load_checkpoint, main, make_predict

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Every sample above both thresholds and no minimum duration: one event spanning the recording.
WHOLE_RECORDING = ["--set", "postprocess.tau_on=0.01", "--set", "postprocess.tau_off=0.01",
                   "--set", "postprocess.min_duration_seconds=0"]


@pytest.fixture(scope="module")
def chbmit(shared) -> Path:
    path = shared / "data" / "chbmit" / "chb01_03_Seizure.edf"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def trace_of(run: Path, edf: Path) -> np.ndarray:
    """The probability trace through the library calls, independently of the CLI."""
    config, model, _ = load_checkpoint(run)
    raw = read_edf(edf, config.data.montage)
    signals, _ = preprocess(raw.signals_uv, raw.sfreq, config.preprocess, raw.channels)
    return predict_signals(make_predict(model), signals, config)


def write_edf(path: Path, labels, seconds: float, sfreq: int = 256, seed: int = 0, flat=()) -> Path:
    rng = np.random.default_rng(seed)
    signals = [edfio.EdfSignal(30 * rng.standard_normal(int(seconds * sfreq)) * (label not in flat), sfreq,
                               label=label, physical_dimension="uV", physical_range=(-500, 500))
               for label in labels]
    edfio.Edf(signals, data_record_duration=seconds if seconds < 1 else 1.0).write(path)
    return path


def test_predict_chbmit_writes_a_csv_bi_that_round_trips_and_a_png(bipolar_run, chbmit, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--checkpoint", str(bipolar_run), str(chbmit), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "montage bipolar (23 channels)" in printed and "chb01_03_Seizure.csv_bi" in printed
    record = read_csv_bi(out / "chb01_03_Seizure.csv_bi")
    assert record.duration_seconds == 41.0 and record.montage_file == "nedc_eas_default_montage.txt"
    png = out / "chb01_03_Seizure.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 50_000

    # without a terminal and without --no-progress: a line per recording's windows for a log
    assert main(["--checkpoint", str(bipolar_run), str(chbmit), "--out", str(out)]) == 0
    assert re.search(r"\nchb01_03_Seizure.edf: (\d+)/\1 windows \(0:\d\d\)\n", logged := capsys.readouterr().out), logged
    assert "windows (" not in printed  # --no-progress: neither bars nor lines

    # thresholds near 0: one event over the whole recording, its confidence the trace's mean
    assert main(["--checkpoint", str(bipolar_run), str(chbmit), "--out", str(out), "--no-progress",
                 *WHOLE_RECORDING]) == 0
    (event,) = read_csv_bi(out / "chb01_03_Seizure.csv_bi").events
    trace = trace_of(bipolar_run, chbmit)
    assert trace.shape == (41 * 256,)
    assert (event.start_seconds, event.stop_seconds, event.label, event.channel) == (0.0, 41.0, "seiz", "TERM")
    assert event.confidence == round(float(trace.astype(np.float64).mean()), 4)


def test_a_recording_shorter_than_one_window(bipolar_run, tmp_path):
    edf = write_edf(tmp_path / "short_s001_t000.edf", BIPOLAR23[:-1], seconds=2.0)  # T8-P8 once serves both
    out = tmp_path / "out"
    assert main(["--checkpoint", str(bipolar_run), str(edf), "--out", str(out), "--no-progress",
                 *WHOLE_RECORDING]) == 0
    record = read_csv_bi(out / "short_s001_t000.csv_bi")
    assert record.duration_seconds == 2.0
    assert [(e.start_seconds, e.stop_seconds) for e in record.events] == [(0.0, 2.0)]
    assert trace_of(bipolar_run, edf).shape == (512,)  # 2 s, not the 4 s window
    assert (out / "short_s001_t000.png").read_bytes()[:8] == PNG_MAGIC


def test_a_file_whose_plot_fails_leaves_no_csv_bi(bipolar_run, tmp_path, monkeypatch, capsys):
    """Reported as not predicted, it left its .csv_bi in --out all the same (written before the
    PNG), for a scorer to read as a prediction."""
    from common.eval import plots

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots, "plot_prediction", full_disk)
    edf = write_edf(tmp_path / "short_s001_t000.edf", BIPOLAR23[:-1], seconds=2.0)
    out = tmp_path / "out"
    assert main(["--checkpoint", str(bipolar_run), str(edf), "--out", str(out), "--no-progress"]) == 2
    assert "1 of 1 files not predicted" in capsys.readouterr().err
    assert not (out / "short_s001_t000.csv_bi").exists()


def test_flat_channels_are_named_and_a_recording_of_nothing_but_is_not_predicted(bipolar_run, tmp_path, capsys):
    """All zeros would be predicted as "0 events", which reads as "no seizures"."""
    some = write_edf(tmp_path / "some_s001_t000.edf", BIPOLAR23[:-1], 8.0, flat=("FP1-F7", "CZ-PZ"))
    none = write_edf(tmp_path / "none_s001_t000.edf", BIPOLAR23[:-1], 8.0, flat=BIPOLAR23)
    assert main(["--checkpoint", str(bipolar_run), str(some), str(none), "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "; flat channels read as zeros: FP1-F7, CZ-PZ" in captured.out
    assert f"error: {none}: every channel is flat" in captured.err and "1 of 2 files not predicted" in captured.err


def test_a_montage_mismatch_is_refused_both_ways(bipolar_run, synthetic_run, chbmit, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--checkpoint", str(synthetic_run), str(chbmit), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{chbmit}: a bipolar recording, but the checkpoint's model was trained on the 'ref19' montage" in err
    assert "checkpoint trained with data.montage: bipolar" in err

    referential = write_edf(tmp_path / "ref_s001_t000.edf", [f"EEG {name.upper()}-REF" for name in REF19], 5.0)
    assert main(["--checkpoint", str(bipolar_run), str(referential), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "a ref19 recording, but the checkpoint's model was trained on the 'bipolar' montage" in err
    assert not list(out.glob("*.csv_bi"))


def test_bad_files_are_skipped_and_reported_the_others_predicted(bipolar_run, chbmit, tmp_path, capsys):
    corrupt = tmp_path / "corrupt_s001_t000.edf"
    corrupt.write_bytes(b"this is not an EDF file" * 20)
    truncated = tmp_path / "truncated_s001_t000.edf"
    truncated.write_bytes(chbmit.read_bytes()[:100_000])
    missing = tmp_path / "missing_s001_t000.edf"
    out = tmp_path / "out"
    argv = ["--checkpoint", str(bipolar_run), str(missing), str(corrupt), str(chbmit), str(truncated),
            "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{missing}: no such file or folder; check the path" in err
    assert f"{corrupt}: not an EDF file" in err and "re-export it from the recording software" in err
    assert f"{truncated}: truncated" in err and "copy it again" in err
    assert "data_dir" not in err  # build's advice, not predict's
    assert f"3 of 4 files not predicted (the reasons above); the other 1 are in {out}" in err
    assert sorted(p.name for p in out.iterdir()) == ["chb01_03_Seizure.csv_bi", "chb01_03_Seizure.png"]
    # that recording again, truncated now: the prediction the run above wrote of it goes (a scorer
    # would read it as this run's), and the message says so
    again = tmp_path / "again" / chbmit.name
    again.parent.mkdir()
    again.write_bytes(chbmit.read_bytes()[:100_000])
    assert main(["--checkpoint", str(bipolar_run), str(again), "--out", str(out), "--no-progress"]) == 2
    assert (f"; removed the outputs an earlier predict wrote for it: {out / 'chb01_03_Seizure.csv_bi'}, "
            f"{out / 'chb01_03_Seizure.png'}\n") in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_folders_stand_for_every_edf_under_them_mixed_with_files(bipolar_run, chbmit, tmp_path, capsys):
    """A corpus as it ships: nested folders, upper-case suffixes, other files beside the EDFs."""
    corpus = tmp_path / "corpus"
    nested = corpus / "chb01" / "deeper"
    nested.mkdir(parents=True)
    shutil.copy(chbmit, corpus / "chb01" / "chb01_03.edf")
    write_edf(nested / "chb01_04.EDF", BIPOLAR23[:-1], seconds=2.0)
    (corpus / "chb01" / "chb01-summary.txt").write_text("not an EDF\n")
    single = write_edf(tmp_path / "single_s001_t000.edf", BIPOLAR23[:-1], seconds=2.0, seed=1)
    # a folder linked in (`dev -> /datasets/...`): Path.rglob did not enter it on Python 3.11
    (tmp_path / "elsewhere").mkdir()
    write_edf(tmp_path / "elsewhere" / "chb02_01.edf", BIPOLAR23[:-1], seconds=2.0, seed=2)
    (corpus / "chb02").symlink_to(tmp_path / "elsewhere")
    (corpus / "chb01" / "up").symlink_to(corpus)  # a link back up the tree: each file still once
    out = tmp_path / "out"
    assert main(["--checkpoint", str(bipolar_run), str(corpus), str(single), "--out", str(out),
                 "--no-progress"]) == 0
    assert sorted(p.name for p in out.glob("*.csv_bi")) == [
        "chb01_03.csv_bi", "chb01_04.csv_bi", "chb02_01.csv_bi", "single_s001_t000.csv_bi"]
    assert read_csv_bi(out / "chb01_04.csv_bi").duration_seconds == 2.0

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--checkpoint", str(bipolar_run), str(empty), "--out", str(out)]) == 2
    assert f"no .edf file under {empty}" in capsys.readouterr().err


@pytest.fixture
def no_model(monkeypatch):
    """The model must not run: a refusal that comes after it shows up as this failure."""
    monkeypatch.setattr("jaxbrr.predict.predict_file", lambda *a, **k: pytest.fail("the model ran"))


def test_predictions_never_land_beside_an_edf_as_its_labels(bipolar_run, tmp_path, no_model, capsys):
    """--out the EDF's own folder replaced its reference .csv_bi, which the next `data build` reads
    as the recording's labels; an EDF of the same stem in --out would take the prediction as its
    labels too. Refused before the model runs, every file named."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    edf = write_edf(folder / "pa_s001_t000.edf", BIPOLAR23[:-1], seconds=2.0)
    reference = folder / "pa_s001_t000.csv_bi"
    reference.write_text("the reference labels")
    other = write_edf(folder / "pb_s001_t000.edf", BIPOLAR23[:-1], seconds=2.0)
    elsewhere = write_edf(tmp_path / "pb_s001_t000.EDF", BIPOLAR23[:-1], seconds=2.0)
    assert main(["--checkpoint", str(bipolar_run), str(edf), str(elsewhere), "--out", str(folder)]) == 2
    assert capsys.readouterr().err == (
        f"error: --out {folder}: predict would write 2 .csv_bi file(s) where they must not go:\n"
        f"  {reference}: beside {edf}, whose labels it would become\n"
        f"  {folder / 'pb_s001_t000.csv_bi'}: beside {other}, whose labels it would become\n"
        "choose another --out, a folder without EDF or label files (an older predict's .csv_bi, without that "
        "line, may be deleted instead)\n")
    assert reference.read_text() == "the reference labels"
    assert sorted(p.name for p in folder.iterdir()) == ["pa_s001_t000.csv_bi", "pa_s001_t000.edf", "pb_s001_t000.edf"]


def test_only_its_own_csv_bi_is_replaced(bipolar_run, chbmit, tmp_path, capsys):
    """predict marks its files (`# written_by = jaxbrr.predict`, skipped by NEDC's reader and by
    read_csv_bi); a .csv_bi without that line may be reference labels and is not replaced."""
    out = tmp_path / "out"
    argv = ["--checkpoint", str(bipolar_run), str(chbmit), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    written = out / "chb01_03_Seizure.csv_bi"
    assert written.read_text().splitlines()[4:6] == ["# written_by = jaxbrr.predict", "#"]
    assert main(argv + WHOLE_RECORDING) == 0  # its own: replaced
    assert len(read_csv_bi(written).events) == 1
    labels = written.read_text().replace("# written_by = jaxbrr.predict\n", "")
    written.write_text(labels)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out}: predict would write 1 .csv_bi file(s) where they must not go:\n"
                          f"  {written}: exists and predict did not write it (no '# written_by = jaxbrr.predict' "
                          "line): perhaps reference labels\n")
    assert written.read_text() == labels


def test_an_unwritable_out_is_refused_before_the_model_runs(bipolar_run, chbmit, tmp_path, no_model, capsys):
    """It ran the model on every file, then blamed each input file for the read-only --out. A path
    under a regular file cannot be written, by root either."""
    (tmp_path / "notes.txt").write_text("")
    out = tmp_path / "notes.txt" / "pred"
    assert main(["--checkpoint", str(bipolar_run), str(chbmit), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"error: --out {out}: cannot write there ({tmp_path / 'notes.txt'} is a "
                                       "file, not a folder); set --out to a folder you can write to\n")


def test_bad_checkpoints_exit_2_naming_the_path_and_the_fix(bipolar_run, chbmit, tmp_path, capsys):
    def error(checkpoint, *extra):
        assert main(["--checkpoint", str(checkpoint), str(chbmit), "--out", str(tmp_path), *extra]) == 2
        return capsys.readouterr().err

    assert f"{tmp_path / 'nowhere'}: no such file or folder; point it at a run folder" in error(
        tmp_path / "nowhere")
    assert f"{tmp_path}: holds no checkpoint" in error(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(bipolar_run, broken)
    for item in (broken / "checkpoints" / "best" / "1" / "model").iterdir():
        item.unlink() if item.is_file() else shutil.rmtree(item)
    message = error(broken)
    assert f"{broken / 'checkpoints' / 'best' / '1'}: incomplete (model/_METADATA missing" in message
    assert "--set model" in error(bipolar_run, "--set", "model.tcn.kernel_size=3")
    # the fused scan off a GPU: refused before any file (each file's compile failed, N of N skipped)
    assert "model.ssm.scan=pallas compiles Triton kernels" in error(bipolar_run, "--set", "model.ssm.scan=pallas")
    # a run's own config is what runs: a --config beside it was read by nothing, in silence (a review's)
    assert (f"--config configs/tiny.yaml: {bipolar_run / 'checkpoints' / 'best' / '1'} carries the whole config it "
            "was trained with, which is what runs; change its fields with --set KEY=VALUE") in error(
        bipolar_run, "--config", "configs/tiny.yaml")
    assert not list(tmp_path.glob("*.csv_bi"))


def test_a_damaged_checkpoint_is_refused_but_a_bug_surfaces(bipolar_run, tmp_path, monkeypatch):
    """A damaged checkpoint (here a meta without its config) is refused naming the step and what is
    missing; anything else (a bug, out of memory) is no checkpoint's fault and surfaces."""
    import json

    import jaxbrr.weights
    from common.checkpoints import CheckpointError

    broken = tmp_path / "broken"
    shutil.copytree(bipolar_run, broken)
    step = broken / "checkpoints" / "best" / "1"
    meta = json.loads((step / "meta" / "metadata").read_text())
    (step / "meta" / "metadata").write_text(json.dumps({"progress": meta["progress"]}))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(broken)
    assert str(info.value).startswith(f"{step}: checkpoint metadata {step / 'meta' / 'metadata'} holds no config; ")
    for error in (RuntimeError("a bug"), TypeError("a bug"), MemoryError("out of memory")):
        def load_model(*args, error=error, **options):
            raise error
        monkeypatch.setattr(jaxbrr.weights, "load_model", load_model)
        with pytest.raises(type(error), match=str(error)):
            load_checkpoint(bipolar_run)


def test_model_ssm_overrides_rebuild_the_model_on_the_same_weights(bipolar_run):
    """How the scan is computed is not what a run learned: --set model.ssm.scan rebuilds the model
    with another scan on the same weights (a checkpoint trained with scan pallas on a GPU runs with
    chunked on a CPU; here chunked to sequential); so do model.stability.*; other model fields stay
    refused."""
    from jaxbrr.mamba import Mamba2

    base_config, base_model, _ = load_checkpoint(bipolar_run)
    config, model, _ = load_checkpoint(bipolar_run, ["model.ssm.scan=sequential", "postprocess.tau_on=0.9"])
    assert (base_config.model.ssm.scan, config.model.ssm.scan, config.postprocess.tau_on) == (
        "chunked", "sequential", 0.9)

    def scans(m):
        return {node.scan for _, node in nnx.iter_graph(m) if isinstance(node, Mamba2)}

    assert scans(base_model) == {"chunked"} and scans(model) == {"sequential"}
    got, want = (jax.tree.leaves(nnx.state(m, nnx.Param)) for m in (model, base_model))
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ConfigError, match=r"only fields outside `model` and `data.montage`, model.ssm.\* .* and "
                                          r"model.stability.\* \(e.g. model.stability.guards=original"):
        load_checkpoint(bipolar_run, ["model.tcn.kernel_size=3"])
    # the guards size no weight either: an original checkpoint's users run it with the original's clamps
    config, model, _ = load_checkpoint(bipolar_run, ["model.stability.guards=original"])
    assert config.model.stability.guards == "original" and model.head.guards and not base_model.head.guards
    for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), want, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_relative_checkpoint_path_loads(bipolar_run, monkeypatch):
    """README's commands name the run folder relative to the working directory; orbax restores
    absolute paths only (load_model makes the path absolute)."""
    from jaxbrr.train.checkpoint import load_model

    _, expected = load_model(bipolar_run.absolute())
    monkeypatch.chdir(bipolar_run.parent)
    config, model = load_model(bipolar_run.name)
    assert config.model.montage == "bipolar"
    got, want = (jax.tree.leaves(nnx.state(m, nnx.Param)) for m in (model, expected))
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):  # the same weights as through the absolute path
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_weights_holding_nan_are_refused_before_any_recording_is_read(tmp_path, no_model, capsys):
    """predict computed for minutes, then blamed each EDF ("307200 valid window samples are not
    finite") for weights a NaN step had saved. Such weights are refused when they are read, every
    kind alike (a jaxbrr checkpoint through orbax, neutral weights), naming the first few tensors,
    how many in all, and the fix; evaluate too (the same loader)."""
    from common.checkpoints import write_neutral
    from jaxbrr.evaluate import main as evaluate_main
    from jaxbrr.model import SeizureDetector
    from jaxbrr.train.checkpoint import Checkpoints
    from jaxbrr.train.optim import make_nnx_optimizer
    from jaxbrr.weights import fill, to_neutral
    from tests.jaxbrr.conftest import tiny_config

    config = tiny_config("bipolar")
    model = SeizureDetector(config.model, rngs=nnx.Rngs(0))
    arrays = {name: value.copy() for name, value in to_neutral(model).items()}
    spoiled = list(arrays)[1:15:2]  # 7 tensors: 5 are named, 2 counted
    for i, name in enumerate(spoiled):
        arrays[name].flat[0] = np.inf if i == 1 else np.nan
    counts = {name: f"{int(i != 1)} NaN, {int(i == 1)} Inf" for i, name in enumerate(spoiled)}
    fill(model, arrays, "spoiled")
    run = tmp_path / "run"
    checkpoints = Checkpoints(run, keep=1)
    try:
        checkpoints.save("best", 3, model, make_nnx_optimizer(model, config.train, 1),
                         {"config": config_to_dict(config), "progress": {"step": 3}})
    finally:
        checkpoints.close()
    neutral = write_neutral(tmp_path / "spoiled.safetensors", arrays, config.model, "jaxbrr")
    (tmp_path / "edf").mkdir()
    edf = write_edf(tmp_path / "edf" / "pa_s001_t000.edf", BIPOLAR23[:-1], seconds=2.0)

    for weights, source in ((run, run / "checkpoints" / "best" / "3"), (neutral, neutral)):
        assert main(["--checkpoint", str(weights), str(edf), "--out", str(tmp_path / "out")]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert lines[0] == (f"error: {source}: 7 of {len(arrays)} weight tensors hold NaN or Inf (saved after a "
                            "training step went non-finite), so every output would be NaN:")
        assert lines[1:7] == [f"  {name}: {counts[name]}" for name in sorted(spoiled)[:5]] + ["  … and 2 more"]
        assert lines[7].startswith("load other weights: an earlier step of the run (checkpoints/best and "
                                   "checkpoints/last keep several) or another checkpoint. Where the NaN came from: "
                                   f"`python -m parity.localize --checkpoint {source} --batch BATCH`")
        assert evaluate_main(["--checkpoint", str(weights), "--edf-dir", str(tmp_path / "edf"),
                              "--out", str(tmp_path / "eval")]) == 2
        assert capsys.readouterr().err.splitlines()[0] == lines[0]


def test_weights_of_another_model_are_a_few_lines_and_the_fix(tmp_path, capsys):
    """A state dict read with a config of another model: each of its 200-odd mismatches was a line
    of the error, with no word of the fix. Now the count of each kind, five of each named, and the
    fix."""
    import torch

    from common.checkpoints import CONFIG_FIX
    from jaxbrr.model import SeizureDetector
    from jaxbrr.weights import to_neutral
    from tests.jaxbrr.conftest import TINY, tiny_config

    def neutral(*overrides):
        return to_neutral(SeizureDetector(tiny_config("ref19", *overrides).model, rngs=nnx.Rngs(0)))

    arrays, wanted = neutral("model.node_mamba.d_state=8"), neutral()  # TINY: d_state 4
    arrays.pop("head.detect.bias")
    arrays["tcn.extra"] = np.zeros(3, np.float32)
    shapes = sum(1 for name in arrays if name in wanted and arrays[name].shape != wanted[name].shape)
    assert shapes > 5
    torch.save({name: torch.tensor(np.asarray(value)) for name, value in arrays.items()}, tmp_path / "w.pt")
    edf = write_edf(tmp_path / "pa_s001_t000.edf", [f"EEG {e.upper()}-REF" for e in REF19], seconds=2.0)
    assert main(["--checkpoint", str(tmp_path / "w.pt"), "--config", str(TINY), str(edf),
                 "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (f"error: {tmp_path / 'w.pt'} -> NNX: {shapes + 2} problem(s) (1 missing from the weights, "
                        f"1 not in the model, {shapes} other)")
    assert lines[1:3] == [f"  head.detect.bias: missing from {tmp_path / 'w.pt'}",
                          f"  tcn.extra: in {tmp_path / 'w.pt'}, but the model has no such parameter"]
    assert all(" vs NNX " in line for line in lines[3:8]) and lines[8] == f"  … and {shapes - 5} more"
    assert lines[9:] == [CONFIG_FIX]


def test_a_killed_predicts_temporaries_are_removed_by_the_next(tmp_path, capsys):
    """SIGKILL (or SIGTERM before sigterm_exits) left `.<stem>.png.<random>.tmp` in --out, and a
    rerun kept it; only old ones go (a predict writing the same folder keeps its own)."""
    import os
    import time

    from common.files import STALE_SECONDS

    out = tmp_path / "out"
    out.mkdir()
    stale, fresh = out / ".pa_s001_t000.png.k3j.tmp", out / ".pb_s001_t000.png.q9z.tmp"
    others = out / ".notes.txt.a1b.tmp", out / ".x.png.q1q.tmp"  # another program's; a folder
    stale.write_text(""), fresh.write_text(""), others[0].write_text(""), others[1].mkdir()
    for old in (stale, *others):
        os.utime(old, (time.time() - STALE_SECONDS - 5,) * 2)
    edf = write_edf(tmp_path / "pa_s001_t000.edf", BIPOLAR23, seconds=2.0)
    assert main(["--checkpoint", str(tmp_path / "nowhere"), str(edf), "--out", str(out)]) == 2
    assert sorted(p.name for p in out.iterdir()) == sorted([fresh.name, *(p.name for p in others)])
    capsys.readouterr()
