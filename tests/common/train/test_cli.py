"""The training command checks its arguments against the workdir before any data is read:
--resume with --init-from, a workdir that already holds checkpoints, --resume with a config that
differs from the checkpoint's (a TUSZ cache build takes 25 minutes; these must not wait for it).

The checkpoints are fakes: a jaxbrr step folder's meta (orbax writes it as JSON), or a torchref
step file, holding only the config and progress that the checks read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.config import config_to_dict, load_config
from common.train.cli import run
from tests.common.train.stubs import Unbuilt

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "configs" / "tiny.yaml"


def _no_trainer():
    return Unbuilt


@pytest.fixture
def no_data(monkeypatch, tmp_path):
    """`prepare` raises a marker: a check that comes after it shows up as that marker. The data
    folder does not exist either, so a real prepare could not succeed."""

    def prepare(*args, **kwargs):
        raise ValueError("data preparation started")

    monkeypatch.setattr("common.data.prepare.prepare", prepare)
    return [f"data.data_dir={tmp_path / 'absent'}", f"data.cache_dir={tmp_path / 'cache'}"]


def _train(workdir: Path, no_data: list[str], *args: str) -> int:
    sets = [f"--set={o}" for o in no_data]
    return run(["--config", str(TINY), "--workdir", str(workdir), "--no-progress", *sets, *args], "train", "",
               _no_trainer)


def _config(workdir: Path, no_data: list[str], *sets: str):
    return load_config(TINY, [*no_data, *sets, f"workdir={workdir}"])


def _jaxbrr_checkpoint(workdir: Path, no_data: list[str], step: int, *sets: str, kind: str = "last") -> Path:
    """WORKDIR/checkpoints/<kind>/<step>/meta/metadata with the config of tiny.yaml + sets."""
    config = _config(workdir, no_data, *sets)
    meta = workdir / "checkpoints" / kind / str(step) / "meta"
    meta.mkdir(parents=True)
    (meta / "metadata").write_text(json.dumps({"config": config_to_dict(config), "progress": {"step": step}}))
    return meta.parent


def test_resume_with_init_from_is_refused_before_any_data(tmp_path, no_data, capsys):
    _jaxbrr_checkpoint(tmp_path / "run", no_data, 4)
    assert _train(tmp_path / "run", no_data, "--resume", "--init-from", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "--init-from and --resume together" in err and "data preparation started" not in err


def test_a_workdir_holding_checkpoints_needs_resume_before_any_data(tmp_path, no_data, capsys):
    step = _jaxbrr_checkpoint(tmp_path / "run", no_data, 4)
    assert _train(tmp_path / "run", no_data) == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'run'} already holds checkpoints (newest: {step}): pass --resume" in err


def test_a_workdir_holding_a_best_checkpoint_and_no_last_is_no_empty_folder(tmp_path, no_data, capsys):
    """Killed at its first epoch's end between saving best and last, a run left best/<step> alone:
    that read as an empty folder, a fresh run started there, and best/ then held the old run's
    step beside the new one's, the higher one what locate, evaluate and --init-from read."""
    step = _jaxbrr_checkpoint(tmp_path / "run", no_data, 12, kind="best")
    for resume in ((), ("--resume",)):
        assert _train(tmp_path / "run", no_data, *resume) == 2
        err = capsys.readouterr().err
        assert err.strip() == (
            f"error: {tmp_path / 'run'} holds a best checkpoint ({step}) but no last one to resume from: the run "
            f"stopped between saving the two. Start a new run from its weights with --init-from {step} --workdir "
            f"NEW_DIR, or delete {tmp_path / 'run' / 'checkpoints'} to start again here")


def test_a_step_killed_while_saved_again_still_counts_as_the_runs_checkpoint(tmp_path, no_data, capsys):
    """A resume saves the step it stopped at again, the old copy renamed replaced-<step> first; a
    run killed then held its only `last` there, unseen: 'holds no checkpoint ... leave out --resume'
    followed, the fresh run's trainer put the old copy back and its first save (keep 1) deleted it.
    Now the old copy is the step: a fresh start is refused and --resume goes on."""
    from common.checkpoints import REPLACED

    workdir = tmp_path / "run"
    step = _jaxbrr_checkpoint(workdir, no_data, 6)
    aside = step.rename(step.with_name(f"{REPLACED}6"))
    (step / "model").mkdir(parents=True)  # the new copy, cut off before its meta
    assert _train(workdir, no_data) == 2
    assert f"error: {workdir} already holds checkpoints (newest: {aside}): pass --resume" in capsys.readouterr().err
    assert _train(workdir, no_data, "--resume") == 2
    assert capsys.readouterr().err.strip() == "error: data preparation started"  # the checks passed


def test_resume_with_a_changed_config_is_refused_before_any_data(tmp_path, no_data, capsys):
    workdir = tmp_path / "run"
    _jaxbrr_checkpoint(workdir, no_data, 2)
    _jaxbrr_checkpoint(workdir, no_data, 4, "train.lr=0.01")  # the newest is the one compared
    assert _train(workdir, no_data, "--resume", "--set=train.lr=0.01", "--set=model.graph.top_k=4") == 2
    err = capsys.readouterr().err
    assert "--resume: the config differs from the checkpoint's" in err
    assert "model.graph.top_k: checkpoint 3, now 4" in err and "train.lr" not in err
    assert "data preparation started" not in err
    # where the run runs, and what out_of_memory_advice names, may change: the checks pass and
    # the data is prepared
    assert _train(workdir, no_data, "--resume", "--set=train.lr=0.01", "--set=train.prefetch=0",
                  "--set=model.graph.eigh_calls=looped", "--set=model.remat=true", "--set=eval.batch_size=2") == 2
    assert capsys.readouterr().err.strip() == "error: data preparation started"
    # and what it keeps and says along the way: saves (a preemptible partition, a quota), logs,
    # the cache's place
    assert _train(workdir, no_data, "--resume", "--set=train.lr=0.01", "--set=train.checkpoint_every=1",
                  "--set=train.keep_checkpoints=1", "--set=train.log_every=1",
                  f"--set=data.cache_dir={tmp_path / 'node-local'}") == 2
    assert capsys.readouterr().err.strip() == "error: data preparation started"


def test_resume_reads_a_torchref_checkpoint_config_before_any_data(tmp_path, no_data, capsys):
    torch = pytest.importorskip("torch")
    workdir = tmp_path / "run"
    folder = workdir / "checkpoints" / "last"
    folder.mkdir(parents=True)
    config = _config(workdir, no_data, "train.batch_size=4")
    torch.save({"model": {}, "meta": {"config": config_to_dict(config)}}, folder / "step_000004.pt")
    assert _train(workdir, no_data, "--resume") == 2
    err = capsys.readouterr().err
    assert "train.batch_size: checkpoint 4, now 8" in err and "data preparation started" not in err


def test_resume_of_the_other_twins_run_is_refused_naming_both_ways_on(tmp_path, no_data, capsys):
    """torchref's --resume on a jaxbrr run died with a TypeError after preparing the data (it found
    no step_*.pt), jaxbrr's on a torchref run offered --resume as the fix."""
    torch = pytest.importorskip("torch")
    jax_run = tmp_path / "jax-run"
    step = _jaxbrr_checkpoint(jax_run, no_data, 4)
    sets = [f"--set={o}" for o in no_data]
    assert run(["--config", str(TINY), "--workdir", str(jax_run), "--no-progress", *sets, "--resume"],
               "python -m torchref.train", "", _no_trainer) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --resume: {jax_run} is a jaxbrr run (newest: {step}), which python -m torchref.train cannot "
        f"continue: continue it with python -m jaxbrr.train --resume, or start a torchref run from its weights "
        f"with --init-from {step} --workdir NEW_DIR")
    torch_run = tmp_path / "torch-run" / "checkpoints" / "last"
    torch_run.mkdir(parents=True)
    torch.save({"model": {}, "meta": {"config": config_to_dict(_config(torch_run.parents[1], no_data))}},
               torch_run / "step_000004.pt")
    assert run(["--config", str(TINY), "--workdir", str(torch_run.parents[1]), "--no-progress", *sets, "--resume"],
               "python -m jaxbrr.train", "", _no_trainer) == 2
    err = capsys.readouterr().err
    assert f"is a torchref run (newest: {torch_run / 'step_000004.pt'}), which python -m jaxbrr.train cannot" in err
    assert "data preparation started" not in err


def test_a_torchref_run_folder_as_config_is_that_run_not_a_suffixed_one(tmp_path, no_data, capsys):
    """torchref's workdir is the config's + '-torchref'; a run folder's saved config holds that
    already, and `--config RUN --resume` looked for RUN-torchref."""
    torch = pytest.importorskip("torch")
    workdir = tmp_path / "run-torchref"
    folder = workdir / "checkpoints" / "last"
    folder.mkdir(parents=True)
    torch.save({"model": {}, "meta": {"config": config_to_dict(_config(workdir, no_data))}}, folder / "step_000004.pt")
    assert run(["--config", str(workdir), "--no-progress", "--resume"], "python -m torchref.train", "", _no_trainer,
               "-torchref") == 2
    assert capsys.readouterr().err.strip() == "error: data preparation started"  # the checks passed: that run


def test_init_from_weights_holding_nan_is_refused_before_any_data(tmp_path, no_data, capsys):
    """`train --init-from` weights a NaN step had saved built the cache, then stopped at step 0
    (exit 3). Refused before any data is read, naming the tensors as the file does (both trainers:
    one CLI); NaN in what an original checkpoint holds but no model loads (its unused 512-wide
    stack, the Conv1d fallbacks, the PE cache) is no reason."""
    import numpy as np

    from common.checkpoints import write_neutral

    torch = pytest.importorskip("torch")
    neutral = write_neutral(tmp_path / "w.safetensors", {"head.detect.bias": np.float32([np.nan, np.inf, 1]),
                                                         "head.detect.weight": np.ones((1, 3), np.float32)},
                            _config(tmp_path / "a", no_data).model, "jaxbrr")
    assert _train(tmp_path / "a", no_data, "--init-from", str(neutral)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {neutral}: 1 of 2 weight tensors hold NaN or Inf (saved after a training step "
                          "went non-finite), so every output would be NaN:\n  head.detect.bias: 1 NaN, 1 Inf\n"
                          "load other weights: an earlier step of the run")
    assert "data preparation started" not in err

    nan = torch.tensor([float("nan"), 1.0])
    ignored = {"mamba.layers.0.forward_mamba_real.D": torch.full((2,), float("inf")), "gnn.last_valid_pe": nan,
               "node_mamba.layers.0.forward_mamba_fallback.weight": nan}
    live = {"tcn_encoder.downsample.weight": torch.ones(2), "proj_from_electrodes.weight": torch.ones(2)}
    torch.save({"epoch": 6, "model_state_dict": {**live, **ignored}}, tmp_path / "ignored.pt")
    assert _train(tmp_path / "b", no_data, "--init-from", str(tmp_path / "ignored.pt")) == 2
    assert capsys.readouterr().err.strip() == "error: data preparation started"
    # in bfloat16 (a file common/pt.py reads as ml_dtypes' bfloat16)
    live = {key: value.bfloat16() for key, value in {**live, "proj_from_electrodes.weight": nan}.items()}
    torch.save({"epoch": 6, "model_state_dict": {**live, **ignored}}, tmp_path / "nan.pt")
    assert _train(tmp_path / "c", no_data, "--init-from", str(tmp_path / "nan.pt")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'nan.pt'}: 1 of 2 weight tensors hold NaN or Inf")
    assert "\n  proj_from_electrodes.weight: 1 NaN, 0 Inf\n" in err and "data preparation started" not in err
    # saved through DataParallel: named as the file holds it, prefix and all (it was the bare key, in no file)
    wrapped = {f"module.{key}": value for key, value in {**live, **ignored}.items()}
    torch.save({"epoch": 6, "model_state_dict": wrapped}, tmp_path / "wrapped.pt")
    assert _train(tmp_path / "d", no_data, "--init-from", str(tmp_path / "wrapped.pt")) == 2
    assert "\n  module.proj_from_electrodes.weight: 1 NaN, 0 Inf\n" in capsys.readouterr().err


def test_train_finds_the_repository_default_config_from_another_folder(tmp_path, monkeypatch, no_data, capsys):
    from common.config import REPOSITORY_DEFAULT_CONFIG

    monkeypatch.chdir(tmp_path)
    sets = [f"--set={o}" for o in no_data]
    assert run(["--workdir", str(tmp_path / "run"), *sets], "train", "", _no_trainer) == 2
    err = capsys.readouterr().err
    assert f"config: {REPOSITORY_DEFAULT_CONFIG} (no configs/default.yaml in the current folder" in err
    assert err.strip().endswith("error: data preparation started")  # the config loaded; on to the data


def test_no_usable_recording_names_the_skipped_recordings_and_the_report(tmp_path, capsys):
    """Every recording skipped at build: train's error says how many and where the reasons are."""
    from common.data.csv_bi import write_csv_bi
    from common.train.loop import Loop

    data = tmp_path / "edf"
    data.mkdir()
    (data / "pa_s001_t000.edf").write_text("patient notes, not a recording\n")
    write_csv_bi(data / "pa_s001_t000.csv_bi", [], 10.0)
    sets = [f"--set=data.data_dir={data}", f"--set=data.cache_dir={tmp_path / 'cache'}"]
    # the base Loop: _setup_data raises before _build, which needs a framework
    assert run(["--config", str(TINY), "--workdir", str(tmp_path / "run"), "--no-progress", *sets], "train", "",
               lambda: Loop) == 2
    captured = capsys.readouterr()
    manifest = next((tmp_path / "cache").glob("*/manifest.json"))
    assert f"skipped {data / 'pa_s001_t000.edf'}: " in captured.out  # the summary lists the reason
    assert captured.err.strip() == (
        f"error: no recording to train on under {data} (1 recording(s) skipped as unusable: the reasons are in the "
        f"summary above and under `skipped` in {manifest}; fix those files)")


def _failing_trainer(monkeypatch, error: BaseException):
    """A trainer class factory whose run raises `error`, with data preparation skipped."""
    monkeypatch.setattr("common.data.prepare.prepare", lambda *a, **k: None)
    monkeypatch.setattr("common.data.prepare.format_summary", lambda prepared: "")

    class Trainer(Unbuilt):
        def __init__(self, *args, **kwargs):
            pass

        def run(self):
            raise error

    return lambda: Trainer


@pytest.mark.parametrize("message", [
    "RESOURCE_EXHAUSTED: Out of memory allocating 31637062272 bytes.\n(the XLA buffer listing)",  # XLA
    "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB total capacity)",  # torch CUDA
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory",  # torch CPU
])
def test_out_of_memory_in_training_is_one_line_naming_the_settings(tmp_path, monkeypatch, capsys, message):
    """A full-size model at its default batch outgrows a 24 GB CPU (the README's TUSZ command ran
    out at 31.6 GB) or a smaller GPU: one line naming what shrinks it, not a traceback."""
    trainer = _failing_trainer(monkeypatch, RuntimeError(message))
    argv = ["--config", str(TINY), "--workdir", str(tmp_path / "run"), "--no-progress", "--set", "train.batch_size=32"]
    assert run(argv, "train", "", trainer) == 2
    err = capsys.readouterr().err
    first = message.splitlines()[0]
    assert err == (f"error: out of memory training v3 at batch 32 of 4 s windows ({first}); set model.remat=true "
                   "(the scans recomputed in the backward pass: less memory, more time), or a smaller "
                   "train.batch_size (now 32) or eval.batch_size (now 8), or model.precision=bfloat16 "
                   "(README, \"Training on GPUs and clusters\")\n")
    assert run([*argv, "--set", "model.remat=true", "--set", "model.precision=bfloat16"], "train", "", trainer) == 2
    assert "; set a smaller train.batch_size (now 32) or eval.batch_size (now 8) (README" in capsys.readouterr().err


def test_a_disk_that_fills_mid_run_is_one_line_with_the_newest_checkpoint_and_how_to_continue(
        tmp_path, monkeypatch, capsys):
    """ENOSPC from a checkpoint or log write was a raw traceback, without the resume line; any other
    OSError (a cache file moved away mid-run) is answered alike, without the talk of room."""
    import errno

    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "metrics.jsonl"))
    argv = ["--config", str(TINY), "--workdir", str(tmp_path / "run"), "--no-progress"]
    assert run(argv, "train", "", _failing_trainer(monkeypatch, full)) == 2
    assert capsys.readouterr().err == (f"error: {full}\n{tmp_path / 'run'} holds no checkpoint yet: once there is room, "
                                       "start again\n")
    step = _jaxbrr_checkpoint(tmp_path / "run", [], 12)
    assert run([*argv, "--resume"], "train", "", _failing_trainer(monkeypatch, full)) == 2
    assert capsys.readouterr().err == (f"error: {full}\nthe newest checkpoint is {step}; once there is room, continue "
                                       f"with: train {' '.join(argv)} --resume\n")
    gone = FileNotFoundError(errno.ENOENT, "No such file or directory", "cache/recordings/x.signals.npy")
    assert run([*argv, "--resume"], "train", "", _failing_trainer(monkeypatch, gone)) == 2
    assert capsys.readouterr().err == (f"error: {gone}\nthe newest checkpoint is {step}; once that is fixed, continue "
                                       f"with: train {' '.join(argv)} --resume\n")


def test_any_other_runtime_error_in_training_is_raised(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match="a bug"):
        run(["--config", str(TINY), "--workdir", str(tmp_path / "run"), "--no-progress"], "train", "",
            _failing_trainer(monkeypatch, RuntimeError("a bug")))


def _base_loop(tmp_path: Path, *sets: str) -> tuple[int, str]:
    """`run` with the framework-neutral Loop, which raises in its data checks before it builds a
    model (that needs a framework): (exit status, stderr)."""
    from common.train.loop import Loop

    argv = ["--config", str(ROOT / "configs" / "smoke.yaml"), "--workdir", str(tmp_path / "run"), "--no-progress",
            f"--set=data.cache_dir={tmp_path / 'cache'}", *[f"--set={o}" for o in sets]]
    return run(argv, "train", "", lambda: Loop)


def test_a_folder_without_edf_files_says_so(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    status = _base_loop(tmp_path, f"data.data_dir={tmp_path / 'notes'}", "data.synthetic=null")
    assert status == 2
    assert capsys.readouterr().err == (f"error: no recording to train on under {tmp_path / 'notes'}: no EDF file "
                                       "there matches data.edf_glob '**/*.[eE][dD][fF]'; check data.data_dir\n")


def test_one_patient_cannot_fill_a_dev_split_and_the_error_says_why(tmp_path, capsys):
    """A seeded split keeps each patient in one split: with one patient, dev_fraction > 0 cannot
    help (the error used to ask for it)."""
    sets = [f"data.data_dir={tmp_path / 'edf'}", "data.synthetic.patients=1", "data.synthetic.recordings=2"]
    assert _base_loop(tmp_path, *sets) == 2
    captured = capsys.readouterr()
    assert "synthetic EEG (data.synthetic): 2 generated recordings in" in captured.out  # never passes for EEG
    assert captured.err.startswith("error: the dev split is empty: the corpus holds one patient (")
    assert "add recordings of other patients" in captured.err and "dev_fraction" not in captured.err


@pytest.mark.parametrize(("sets", "limit"), [
    (["train.grad_accum_steps=20", "train.max_steps=null"], "1 epoch(s) of "),
    (["train.grad_accum_steps=4", "train.max_steps=3"], "train.max_steps"),
])
def test_gradient_accumulation_longer_than_the_run_is_refused(tmp_path, capsys, sets, limit):
    """k batches per update and fewer than k batches in the run: no update at all (it used to
    finish 'normally' with the initial weights)."""
    k = sets[0].split("=")[1]
    assert _base_loop(tmp_path, f"data.data_dir={tmp_path / 'edf'}", *sets) == 2
    err = capsys.readouterr().err
    assert f"error: train.grad_accum_steps={k} batches make one update, but the run has " in err
    assert limit in err and "no update would be applied" in err


def test_a_workdir_that_is_a_file_is_refused_before_any_data(tmp_path, no_data, capsys):
    (tmp_path / "run.log").write_text("")
    assert _train(tmp_path / "run.log", no_data) == 2
    assert capsys.readouterr().err == f"error: workdir {tmp_path / 'run.log'} is a file, not a folder: pass --workdir DIR (a new or a run's folder)\n"


def test_a_workdir_that_cannot_be_written_is_refused_before_any_data(tmp_path, no_data, capsys):
    """It was orbax's traceback at the first checkpoint, after the data was read. A path under a
    regular file cannot be written, by root either."""
    (tmp_path / "notes.txt").write_text("")
    workdir = tmp_path / "notes.txt" / "run"
    assert _train(workdir, no_data) == 2
    assert capsys.readouterr().err == (f"error: workdir {workdir}: cannot write there ({tmp_path / 'notes.txt'} "
                                       "is a file, not a folder); pass --workdir DIR, a folder you can write to\n")
    # the cache the build writes, too: it was a PermissionError traceback from build_cache
    cache = tmp_path / "notes.txt" / "cache"
    assert _train(tmp_path / "run", [*no_data, f"data.cache_dir={cache}"]) == 2
    assert capsys.readouterr().err == (f"error: data.cache_dir {cache}: cannot write there ({tmp_path / 'notes.txt'} "
                                       "is a file, not a folder); set data.cache_dir (--set data.cache_dir=DIR) to a "
                                       "folder you can write to\n")


def test_the_resume_command_repeats_the_arguments_without_init_from():
    from common.train.cli import resume_command

    argv = ["--config", "c.yaml", "--set", "train.lr=3e-4", "--init-from", "old/run", "--workdir", "runs/a b"]
    assert resume_command("python -m jaxbrr.train", argv) == (
        "python -m jaxbrr.train --config c.yaml --set train.lr=3e-4 --workdir 'runs/a b' --resume")
    assert resume_command("p", ["--init-from=x", "--resume"]) == "p --resume"


def test_a_second_ctrl_c_says_what_is_lost_with_or_without_a_checkpoint(tmp_path, monkeypatch, capsys):
    """It named 'the newest checkpoint' of a workdir that held none."""
    from common.data.prepare import PreparedData

    class Interrupted(Unbuilt):  # a trainer whose run the second Ctrl-C stops outright
        def __init__(self, *args, **kwargs):
            pass

        def run(self):
            raise KeyboardInterrupt

    monkeypatch.setattr("common.data.prepare.prepare", lambda *a, **k: object.__new__(PreparedData))
    monkeypatch.setattr("common.data.prepare.format_summary", lambda prepared: "")
    workdir = tmp_path / "run"
    argv = ["--config", str(TINY), "--workdir", str(workdir), "--no-progress"]
    assert run(argv, "train", "", lambda: Interrupted) == 130
    assert capsys.readouterr().err == (f"interrupted before {workdir} held a checkpoint: start again, without "
                                       "--resume (one Ctrl-C saves a checkpoint first)\n")
    step = _jaxbrr_checkpoint(workdir, [], 12)
    assert run([*argv, "--resume"], "train", "", lambda: Interrupted) == 130
    assert capsys.readouterr().err == f"interrupted: the steps since {step} are lost (one Ctrl-C saves a checkpoint first)\n"


def test_an_interrupt_while_preparing_the_data_is_one_line(tmp_path, monkeypatch, capsys):
    def prepare(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("common.data.prepare.prepare", prepare)
    assert run(["--config", str(TINY), "--workdir", str(tmp_path / "run"), "--no-progress"], "train", "",
               _no_trainer) == 130
    assert capsys.readouterr().err == "interrupted while preparing the data; the recordings cached so far are kept\n"


def test_init_from_an_original_checkpoint_is_checked_against_its_own_config_before_any_data(tmp_path, no_data,
                                                                                         capsys):
    """Its model section (brain-go-brr schema) is the weights' model: a run that starts them with
    another init gain is that model (the gain only drew the first weights, which they replace),
    and a later version's field ours cannot honour is refused naming it, before any data."""
    torch = pytest.importorskip("torch")  # the original's checkpoints are torch files

    from tests.torchref.original_checkpoint import FULL_ORIGINAL_MODEL_CONFIG

    def init_from(name: str, model: dict) -> int:
        path = tmp_path / name
        torch.save({"model_state_dict": {"tcn_encoder.downsample.bias": torch.zeros(512)}, "config": {"model": model}},
                   path)
        sets = [f"--set={o}" for o in [*no_data, "model.tcn.init_gain=1.0"]]
        return run(["--config", str(ROOT / "configs" / "tusz.yaml"), "--workdir", str(tmp_path / name[:-3]),
                    "--no-progress", *sets, "--init-from", str(path)], "train", "", _no_trainer)

    assert init_from("best.pt", FULL_ORIGINAL_MODEL_CONFIG) == 2
    assert capsys.readouterr().err == "error: data preparation started\n"  # the check passed
    later = {**FULL_ORIGINAL_MODEL_CONFIG, "graph": {**FULL_ORIGINAL_MODEL_CONFIG["graph"], "adj_row_softmax": True}}
    assert init_from("later.pt", later) == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'later.pt'}: its own config (brain-go-brr schema) sets 1 model field(s)" in err
    assert "model.graph.adj_row_softmax = True" in err and "data preparation started" not in err
