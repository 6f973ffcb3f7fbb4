"""The jaxbrr training loop end to end on the smoke config (a tiny V3 model, a synthetic corpus
of six short recordings in a temporary folder).

- a two-step run writes metrics.jsonl, TensorBoard events, plots and `best`/`last` checkpoints,
  and the `best` checkpoint reloads into a model that predicts exactly what the trainer did;
- `--resume` after SIGKILL of a real training process mid-epoch reproduces the uninterrupted
  run's losses, validation metrics and parameters bit for bit; so does a SIGTERM, which saves a
  checkpoint where it stopped;
- a planted NaN (`pe_gradient: full` with `top_k: 1`: every graph falls into several components,
  so the Laplacian's eigenvalue 0 repeats and eigh's gradient divides by 0) stops the run with a
  dump and the replay command under JAX_DEBUG_NANS=1, under `nan_policy: raise` (a two-process
  job: one dump with the whole global batch), under checkify (which names the source line); under
  `nan_policy: skip` the steps are skipped, counted, and leave the parameters untouched;
- a clean run under jax_debug_nans raises nothing (the model never makes a NaN on purpose);
- an unknown config key and a missing metric name fail with a clear message before any compute;
- several devices (issue 9): 2 forced CPU devices follow the 1-device run within the trajectory
  tolerance; 2 processes (gloo, one device each) equal the 2-device run bit for bit.

An adjacency that is the identity does not plant a NaN in this model: the entries below the edge
threshold are selected away (`jnp.where`), so eigh's infinite gradient never reaches a
parameter. Disconnected graphs with kept edges do (the test above).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.config import ConfigError, load_config, with_overrides
from common.data.prepare import prepare
from common.train.log import read_metrics
from common.train.loop import NonFiniteStep
from jaxbrr.model import SeizureDetector
from jaxbrr.precision import set_float32_precision
from jaxbrr.train.__main__ import main as train_main
from jaxbrr.train.checkpoint import load_model
from jaxbrr.train.loop import Trainer
from parity.tolerances import EVERY_EDGE, NO_DROPOUT, tolerance

HANG_WATCHDOG_S = 300  # a subprocess that should reach a checkpoint in about a minute
ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "smoke.yaml"
# batch 8: 6 batches per epoch; 8 steps cross an epoch end (a validation at step 6)
RUN = ["train.batch_size=8", "train.epochs=2", "train.max_steps=8", "train.log_every=1"]
# For curves compared across device layouts: the same computation (every device draws its own
# dropout masks) and no top-k near-tie for the layouts' rounding to flip (parity.tolerances).
SAME_MATH = [*NO_DROPOUT, EVERY_EDGE]
PLANTED_NAN = ["model.stability.pe_gradient=full", "model.graph.top_k=1"]


@pytest.fixture(scope="module")
def data_overrides(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke-data")
    return [f"data.data_dir={root / 'edf'}", f"data.cache_dir={root / 'cache'}"]


@pytest.fixture(scope="module")
def prepared(data_overrides):
    return prepare(load_config(SMOKE, data_overrides), progress=False)


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent XLA cache for the module's runs (and its subprocesses): each Trainer jits
    its own step, and identical programs then compile once."""
    path = str(tmp_path_factory.mktemp("xla-cache"))
    old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    yield path
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])


def config_for(tmp_path, data_overrides, *extra, name="run"):
    return load_config(SMOKE, [*data_overrides, *RUN, f"workdir={tmp_path / name}", *extra])


def losses(workdir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(workdir) if r["kind"] == "train"}


def validations(workdir) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in read_metrics(workdir) if r["kind"] == "validation"]


def params(trainer) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(trainer._objects(trainer.state)[0], nnx.Param))]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_overrides, prepared):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    config = config_for(tmp, data_overrides)
    trainer = Trainer(config, progress=False, prepared=prepared)
    result = trainer.run()
    return config, trainer, result


def test_two_step_run_writes_logs_plots_and_checkpoints(tmp_path, data_overrides, prepared):
    config = config_for(tmp_path, data_overrides, "train.max_steps=2")
    trainer = Trainer(config, progress=False, prepared=prepared)
    result = trainer.run()
    work = tmp_path / "run"
    records = read_metrics(work)
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 and r["lr"] > 0 for r in train)
    (val,) = [r for r in records if r["kind"] == "validation"]
    assert 0.0 <= val["auroc"] <= 1.0 and val["recordings"] == len(prepared.splits["dev"])
    assert result.progress.finished == "max_steps" and result.progress.step == 2
    assert (work / "checkpoints" / "last" / "2").is_dir() and (work / "checkpoints" / "best" / "2").is_dir()
    assert list((work / "tensorboard").glob("events.out.tfevents.*"))
    for name in ("training.png", "example.png"):
        assert (work / "plots" / name).stat().st_size > 10_000

    # the best checkpoint reloads the trainer's weights bit for bit, so the trainer's own (jitted)
    # predict gives the same probabilities from it; eager vs jitted code may round apart, which is
    # not what this checks
    loaded_config, model = load_model(work)
    assert loaded_config == config
    loaded = jax.tree.leaves(nnx.state(model, nnx.Param))
    for a, b in zip(loaded, params(trainer), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    x = trainer.prepared.corpus.batch(trainer.train_stems, trainer.table, np.arange(2), config.window_samples)[0]
    np.testing.assert_array_equal(np.asarray(trainer._predict(nnx.state(model), jnp.asarray(x))), trainer.predict(x))


def test_resume_after_sigkill_equals_the_uninterrupted_run(
        tmp_path, data_overrides, prepared, uninterrupted, compilation_cache):
    """A real process killed mid-epoch with SIGKILL, then --resume: the losses of every step, the
    validations and the final parameters are those of the uninterrupted run, bit for bit."""
    _, reference, _ = uninterrupted
    work = tmp_path / "killed"
    sets = (*data_overrides, *RUN, "train.checkpoint_every=2")
    args = [sys.executable, "-m", "jaxbrr.train", "--config", str(SMOKE), "--workdir", str(work),
            "--no-progress", *[f"--set={o}" for o in sets]]
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": compilation_cache,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + HANG_WATCHDOG_S
    while not (work / "checkpoints" / "last" / "2").is_dir():  # killed in epoch 1, mid-run
        if proc.poll() is not None:
            pytest.fail("the run exited before its second checkpoint:\n" + proc.stderr.read().decode()[-2000:])
        if time.time() > deadline:  # kill before reading: a live process's stderr has no end
            proc.kill()
            pytest.fail(f"no second checkpoint after {HANG_WATCHDOG_S} s: a hang watchdog (the run takes ~60 s here), "
                        "not a speed target:\n" + proc.communicate()[1].decode()[-2000:])
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    config = load_config(SMOKE, [*sets, f"workdir={work}"])
    with pytest.raises(FileExistsError, match="--resume"):  # never overwrites a run by accident
        Trainer(config, progress=False, prepared=prepared)
    resumed = Trainer(config, resume=True, progress=False, prepared=prepared)
    assert 2 <= resumed.progress.step < 8
    resumed.run()
    expected = losses(reference.workdir)
    assert sorted(expected) == list(range(1, 9))
    assert losses(work) == expected  # exactly, every step
    assert validations(work) == validations(reference.workdir)
    for a, b in zip(params(resumed), params(reference), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sigterm_saves_where_it_stopped_and_resume_equals_the_uninterrupted_run(
        tmp_path, data_overrides, prepared, uninterrupted, monkeypatch, capsys):
    """SIGTERM (a scheduler's preemption) during step 3 of an epoch of 6: the step finishes, a
    `last` checkpoint is saved there, the command exits 143 printing how to continue, and
    --resume from it gives the uninterrupted run's losses, validations and parameters exactly.
    It used to save nothing (no checkpoint_every): the epoch was lost."""
    _, reference, _ = uninterrupted
    work = tmp_path / "preempted"
    step = Trainer._step

    def step_then_signal(self, batch, pos_weight):
        metrics = step(self, batch, pos_weight)
        if self.progress.step == 2:  # the third step: progress.step counts those done before it
            os.kill(os.getpid(), signal.SIGTERM)
        return metrics

    monkeypatch.setattr(Trainer, "_step", step_then_signal)
    handler = signal.getsignal(signal.SIGTERM)
    argv = ["--config", str(SMOKE), "--workdir", str(work), "--no-progress",
            *[f"--set={o}" for o in (*data_overrides, *RUN)]]
    assert train_main(argv) == 143
    err = capsys.readouterr().err
    assert f"stopped by SIGTERM at step 3; saved {work.absolute() / 'checkpoints' / 'last' / '3'}" in err
    assert f"continue with: python -m jaxbrr.train {' '.join(argv)} --resume" in err
    assert signal.getsignal(signal.SIGTERM) == handler  # restored
    assert (work / "plots" / "training.png").is_file()  # the curves up to the stop
    monkeypatch.undo()

    config = load_config(SMOKE, [*data_overrides, *RUN, f"workdir={work}"])
    resumed = Trainer(config, resume=True, progress=False, prepared=prepared)
    assert (resumed.progress.step, resumed.progress.epoch, resumed.progress.batch) == (3, 0, 3)
    resumed.run()
    assert losses(work) == losses(reference.workdir)
    assert validations(work) == validations(reference.workdir)
    for a, b in zip(params(resumed), params(reference), strict=True):
        np.testing.assert_array_equal(a, b)


def test_resume_may_change_where_the_run_runs_but_not_what_it_computes(tmp_path, prepared, uninterrupted):
    """--resume accepts a different prefetch depth and eigh batching (the same numbers; e.g. a
    1-device run continued on several CPU devices needs eigh_calls=looped) and refuses a changed
    learning rate, naming it. A checkpoint written before a config field existed resumes: the
    missing field is its default."""
    config, reference, _ = uninterrupted
    work = tmp_path / "older"
    shutil.copytree(reference.workdir, work)
    for meta in work.glob("checkpoints/*/*/meta/metadata"):  # as written before train.mesh existed
        tree = json.loads(meta.read_text())
        del tree["config"]["train"]["mesh"]
        meta.write_text(json.dumps(tree))
    config = with_overrides(config, [f"workdir={work}"])
    placed = with_overrides(config, ["train.prefetch=0", "model.graph.eigh_calls=looped"])
    assert Trainer(placed, resume=True, progress=False, prepared=prepared).progress.step == 8
    with pytest.raises(ConfigError, match=r"train.lr: checkpoint 0.001, now 0.1"):
        Trainer(with_overrides(config, ["train.lr=0.1"]), resume=True, progress=False, prepared=prepared)


def test_planted_nan_under_jax_debug_nans_writes_the_dump_and_the_replay_command(
        tmp_path, data_overrides, compilation_cache):
    work = tmp_path / "nan"
    sets = [f"--set={o}" for o in (*data_overrides, *PLANTED_NAN, "train.max_steps=3")]
    env = {**os.environ, "JAX_DEBUG_NANS": "1", "JAX_COMPILATION_CACHE_DIR": compilation_cache}
    done = subprocess.run([sys.executable, "-m", "jaxbrr.train", "--config", str(SMOKE), "--workdir", str(work),
                           "--no-progress", *sets], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 3, done.stderr[-3000:]
    dump = work / "nan" / "step_000001"
    assert f"replay: python -m parity.localize --dump {dump}" in done.stderr
    assert "JAX_DEBUG_NANS" in done.stderr
    info = json.loads((dump / "nan.json").read_text())
    assert info["step"] == 1 and "nan" in info["error"].lower()  # the run's first step
    batch = np.load(dump / "batch.npz")
    assert batch["x"].shape == (4, 19, 4096) and np.isfinite(batch["x"]).all()  # the data was fine
    # the dump holds the weights from before the failed step: at step 0, the initial ones
    config, model = load_model(dump / "checkpoint")
    initial = SeizureDetector(config.model, rngs=nnx.Rngs(config.train.seed))
    saved, expected = (jax.tree.leaves(nnx.state(m, nnx.Param)) for m in (model, initial))
    assert len(saved) == len(expected) > 0
    for a, b in zip(saved, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_planted_nan_under_checkify(tmp_path, data_overrides, prepared):
    """(nan_policy: raise alone: the two-process test below.)"""
    config = config_for(tmp_path, data_overrides, *PLANTED_NAN, "train.max_steps=3", "train.checkify=true",
                        name="checkify")
    with pytest.raises(NonFiniteStep, match="checkify") as err:
        Trainer(config, progress=False, prepared=prepared).run()
    error = json.loads((err.value.dump / "nan.json").read_text())["error"]
    assert "nan generated by primitive" in error.lower() and ".py:" in error  # the op and its line
    assert error.splitlines()[0].strip() in str(err.value)  # and the console says it too


def test_planted_nan_under_nan_policy_skip_is_skipped_and_counted(tmp_path, data_overrides, prepared):
    config = config_for(tmp_path, data_overrides, *PLANTED_NAN, "train.nan_policy=skip", "train.max_skipped=2")
    trainer = Trainer(config, progress=False, prepared=prepared)
    before = params(trainer)
    with pytest.raises(NonFiniteStep, match="3 non-finite steps in a row > train.max_skipped=2") as err:
        trainer.run()
    assert trainer.progress.skipped == 3
    records = read_metrics(tmp_path / "run")
    train = [r for r in records if r["kind"] == "train"]
    assert [r["skipped"] for r in train] == [1, 2] and all(r["skipped_now"] for r in train)
    assert [r["step"] for r in records if r["kind"] == "nan"] == [3]  # the third stopped the run (steps from 1)
    for a, b in zip(before, params(trainer), strict=True):
        np.testing.assert_array_equal(a, b)  # nothing was applied
    assert json.loads((err.value.dump / "nan.json").read_text())["step"] == 3 and err.value.dump.name == "step_000003"


def test_jax_debug_nans_names_the_op_of_a_nan_after_the_first_step(tmp_path, data_overrides, compilation_cache):
    """lr 1e30 without warm-up: the first step is finite and leaves weights of ~1e30, a later one
    is NaN. Under JAX_DEBUG_NANS=1 (the environment variable; `jax.debug_nans(True)` in-process
    did not show it) the step's jit checked its outputs only on its first, compiling call: the
    later step returned NaN in silence and stopped as a plain non-finite loss with no op named
    ("NaN at batch 7" is never the first step). The trainer runs it again through a new jit."""
    work = tmp_path / "diverged"
    sets = [f"--set={o}" for o in (*data_overrides, "train.lr=1e30", "train.warmup_ratio=0", "train.max_steps=4")]
    env = {**os.environ, "JAX_DEBUG_NANS": "1", "JAX_COMPILATION_CACHE_DIR": compilation_cache}
    done = subprocess.run([sys.executable, "-m", "jaxbrr.train", "--config", str(SMOKE), "--workdir", str(work),
                           "--no-progress", *sets], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "JAX_DEBUG_NANS: a NaN inside the step" in done.stderr
    (dump,) = (work / "nan").iterdir()
    info = json.loads((dump / "nan.json").read_text())
    assert info["step"] >= 2 and "invalid value (nan) encountered in" in info["error"]  # steps count from 1


def test_non_finite_validation_dumps_the_weights_that_validated(tmp_path, data_overrides, prepared, monkeypatch):
    """NaN probabilities on the dev split after finite steps: the NaN stop's dump holds the weights
    after the epoch's last step (a training step's dump holds those before its step)."""
    from jaxbrr.weights import load_model as load_weights

    monkeypatch.setattr(Trainer, "predict", lambda self, x: np.full((x.shape[0], x.shape[-1]), np.nan, np.float32))
    trainer = Trainer(config_for(tmp_path, data_overrides), progress=False, prepared=prepared)
    with pytest.raises(NonFiniteStep, match="^validation after epoch 1: ") as err:
        trainer.run()
    assert err.value.dump.name == f"step_{trainer.progress.step + 1:06d}" and trainer.progress.step == 6
    _, dumped, _, _ = load_weights(err.value.dump)
    got = [np.asarray(x) for x in jax.tree.leaves(nnx.state(dumped, nnx.Param))]
    assert all(np.array_equal(a, b) for a, b in zip(got, params(trainer), strict=True))


def test_a_clean_run_under_jax_debug_nans_raises_nothing(tmp_path, data_overrides, prepared):
    config = config_for(tmp_path, data_overrides, "train.max_steps=2")
    with jax.debug_nans(True):
        result = Trainer(config, progress=False, prepared=prepared).run()
    assert result.progress.finished == "max_steps"


def _jax_has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


@pytest.fixture
def matmul_precision_restored():
    """train.tf32 sets JAX's default matmul precision process-wide: put it back after the test."""
    saved = jax.config.jax_default_matmul_precision
    yield
    jax.config.update("jax_default_matmul_precision", saved)


def test_train_tf32_sets_the_float32_precision_on_gpus_only(matmul_precision_restored):
    saved = jax.config.jax_default_matmul_precision
    assert set_float32_precision(False, "cpu") is None and jax.config.jax_default_matmul_precision == saved
    assert set_float32_precision(False, "gpu") == jax.config.jax_default_matmul_precision == "highest"
    assert set_float32_precision(True, "gpu") == jax.config.jax_default_matmul_precision == "tensorfloat32"
    assert load_config(SMOKE).train.tf32 is False  # full float32 unless asked


@pytest.mark.gpu
@pytest.mark.skipif(not _jax_has_gpu(), reason="needs a JAX GPU backend")
def test_three_steps_on_the_gpu_then_again_under_jax_debug_nans(tmp_path, data_overrides, prepared,
                                                                 matmul_precision_restored):
    """The smoke run on the GPU (JAX's default backend there, float32 dots in full float32 by
    train.tf32: false), then the same run with jax_debug_nans on: no false alarm, and the same
    losses within the GPU trajectory row."""
    runs = {}
    for name, debug in (("plain", False), ("debug-nans", True)):
        config = config_for(tmp_path, data_overrides, "train.max_steps=3", name=name)
        with jax.debug_nans(debug):
            trainer = Trainer(config, progress=False, prepared=prepared)
            result = trainer.run()
        assert result.progress.step == 3 and "gpu" in trainer.devices().lower()
        assert "float32 dots and convolutions: highest (train.tf32)" in trainer.devices()
        runs[name] = losses(tmp_path / name)
        assert len(runs[name]) == 3 and all(np.isfinite(v) for v in runs[name].values())
    rtol, atol = tolerance("trajectory", "float32", "gpu")
    a, b = (np.array(list(runs[name].values())) for name in ("debug-nans", "plain"))
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * np.abs(b).max() + atol)


def test_unknown_key_and_missing_metric_fail_before_any_compute(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("common.data.prepare.prepare", lambda *a, **k: pytest.fail("compute started"))
    code = train_main(["--config", str(SMOKE), "--workdir", str(tmp_path), "--set", "train.learning_rate=1e-3"])
    assert code == 2
    assert "unknown key 'train.learning_rate'" in capsys.readouterr().err
    code = train_main(["--config", str(SMOKE), "--workdir", str(tmp_path),
                       "--set", "train.early_stopping.metric=sensitivity_at_10fa"])
    assert code == 2
    err = capsys.readouterr().err
    assert "'sensitivity_at_10fa' is not a validation metric" in err and "auroc" in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_the_pallas_scan_is_refused_off_a_gpu_before_anything_compiles(tmp_path, data_overrides, prepared):
    from jaxbrr.ssd_kernel import on_gpu

    if on_gpu():
        pytest.skip("a GPU runs the kernels")
    with pytest.raises(ValueError, match="set model.ssm.scan=chunked"):
        Trainer(config_for(tmp_path, data_overrides, "model.ssm.scan=pallas"), progress=False, prepared=prepared)
    assert not (tmp_path / "run").exists()


def test_jax_debug_nans_over_several_processes_is_refused(tmp_path, data_overrides, prepared, monkeypatch):
    """JAX checks each process's own arrays and re-runs a step op by op where it saw a NaN: the
    processes that saw none would wait in a collective forever."""
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with jax.debug_nans(True), pytest.raises(ValueError, match="JAX_DEBUG_NANS with 2 processes: .*replay command"):
        Trainer(config_for(tmp_path, data_overrides), progress=False, prepared=prepared)
    assert not (tmp_path / "run").exists()


def test_a_placement_that_cannot_run_is_refused_before_the_data_is_prepared(tmp_path, capsys, monkeypatch):
    """A mesh or batch that does not fit the devices was refused in the trainer's build, after a
    first run on a corpus had built its whole cache (a review: tusz.yaml's batch 4 on 8 GPUs)."""
    monkeypatch.setattr("common.data.prepare.prepare", lambda *a, **k: pytest.fail("the data was prepared"))
    for override, said in (("train.mesh.fsdp=2", "train.mesh: data (-1 = all) × fsdp (2) must equal the 1 visible"),
                           ("model.ssm.scan=pallas", "set model.ssm.scan=chunked")):
        if override.endswith("pallas") and __import__("jaxbrr.ssd_kernel").ssd_kernel.on_gpu():
            continue  # a GPU runs the kernels
        assert train_main(["--config", str(SMOKE), "--workdir", str(tmp_path / "run"), "--set", override]) == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resume_without_a_checkpoint_is_an_error_naming_the_workdir(tmp_path, capsys, monkeypatch):
    """A mistyped workdir must not start a new run in silence (issue 19, problem 7)."""
    monkeypatch.setattr("common.data.prepare.prepare", lambda *a, **k: pytest.fail("compute started"))
    for workdir in (tmp_path / "typo", tmp_path):  # missing, and present without checkpoints
        assert train_main(["--config", str(SMOKE), "--workdir", str(workdir), "--resume"]) == 2
        err = capsys.readouterr().err
        assert f"--resume: {workdir} holds no checkpoint" in err and "leave out --resume" in err
    assert not (tmp_path / "typo").exists()


def train_command(work: Path, *sets: str) -> list[str]:
    return [sys.executable, "-m", "jaxbrr.train", "--config", str(SMOKE), "--workdir", str(work), "--no-progress",
            *[f"--set={o}" for o in sets]]


# `python -m MODULE ARGS` that receives SIGKILL when its parent (argv[1]) dies: Linux's
# prctl(PR_SET_PDEATHSIG), set in the child itself (a preexec_fn is unsafe in a threaded parent),
# then a check that the parent did not die before it was set.
DIE_WITH_PARENT = """
import ctypes, os, runpy, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit("parent gone before the guard was set")
sys.argv = [sys.argv[3], *sys.argv[4:]]  # argv[2] == "-m"
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def two_processes(work: Path, sets: list[str], compilation_cache: str) -> list[subprocess.CompletedProcess]:
    """`python -m jaxbrr.train` as 2 processes of one job (README, "Training on GPUs and
    clusters"): one CPU device each, connected through JAX's coordinator and gloo collectives."""
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo", JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
               JAX_NUM_PROCESSES="2", JAX_COMPILATION_CACHE_DIR=compilation_cache)
    command = train_command(work, *sets, "train.distributed.initialize=true")
    # each dies with this process: a pytest worker killed mid-test (out of memory, say) must not
    # leave the pair waiting at a collective for ever
    guarded = [sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), *command[1:]]
    procs = [subprocess.Popen(guarded, cwd=ROOT, env={**env, "JAX_PROCESS_ID": str(r)}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in range(2)]
    try:
        outputs = [proc.communicate(timeout=600) for proc in procs]
    finally:
        for proc in procs:  # one process failing leaves the other waiting at a collective
            proc.kill()
    return [subprocess.CompletedProcess(command, proc.returncode, out, err)
            for proc, (out, err) in zip(procs, outputs, strict=True)]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory, data_overrides, prepared):
    """The run on one device with SAME_MATH: what the multi-device layouts are held to."""
    config = config_for(tmp_path_factory.mktemp("one-device"), data_overrides, *SAME_MATH)
    trainer = Trainer(config, progress=False, prepared=prepared)
    trainer.run()
    return trainer.workdir


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory, data_overrides, compilation_cache):
    """The one_device run's config on 2 forced CPU devices in one process (batch sharded over
    the `data` mesh axis, state replicated, gradients averaged with pmean), with the dynamic PE's
    eigh looped (model.graph.eigh_calls; the batched call deadlocks there)."""
    work = tmp_path_factory.mktemp("two-devices") / "run"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_COMPILATION_CACHE_DIR": compilation_cache}
    command = train_command(work, *data_overrides, *RUN, *SAME_MATH, "model.graph.eigh_calls=looped")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return work, done, command, env


def test_data_parallel_over_two_devices_follows_the_one_device_run(one_device, two_devices):
    """The loss curve on 2 devices follows the 1-device run of the same math (SAME_MATH) within
    the parity table's float32 trajectory tolerance: they differ by the gradient mean's order of
    summation only. The batched eigh is refused there, naming the fix."""
    work, done, command, env = two_devices
    assert "devices: 2 x cpu (data parallel)" in done.stdout
    expected, got = losses(one_device), losses(work)
    assert sorted(got) == sorted(expected) == list(range(1, 9))
    a, b = np.array([got[s] for s in sorted(got)]), np.array([expected[s] for s in sorted(expected)])
    rtol, atol = tolerance("trajectory", "float32")
    print(f"2-device vs 1-device losses: max rel {np.abs(a - b).max() / np.abs(b).max():.2e}")
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * np.abs(b).max() + atol)

    batched = [c for c in command if "eigh_calls" not in c]  # in a new workdir: this one holds checkpoints
    batched[batched.index("--workdir") + 1] = str(work.parent / "batched")
    refused = subprocess.run(batched, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "Set model.graph.eigh_calls=looped" in refused.stderr


def test_two_processes_train_exactly_like_two_devices_in_one(tmp_path, data_overrides, two_devices,
                                                              compilation_cache):
    """Two processes (one device each) and one process with two devices compute the same global
    steps: every loss, every validation and the best checkpoint's parameters are equal, bit for
    bit. Each host loaded only its half of every batch; host 0 alone wrote the logs. Both loop the
    eigh (eigh_calls=looped, as two devices in one process must): a batched LAPACK call against a
    looped one is the same math, but which bits it gives is the library's choice on each CPU."""
    work = tmp_path / "two-hosts"
    hosts = two_processes(work, [*data_overrides, *RUN, *SAME_MATH, "model.graph.eigh_calls=looped"],
                          compilation_cache)
    for host in hosts:
        assert host.returncode == 0, host.stderr[-3000:]
    for r, host in enumerate(hosts):
        assert f"devices: 2 x cpu on 2 hosts (this is host {r})" in host.stdout
    reference = two_devices[0]
    assert losses(work) == losses(reference)
    assert validations(work) == validations(reference)
    for a, b in zip(*(jax.tree.leaves(nnx.state(load_model(w)[1], nnx.Param)) for w in (work, reference)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fsdp_over_two_processes_checkpoints_and_follows_one_device(tmp_path, data_overrides, one_device,
                                                                   compilation_cache):
    """Parameters and Adam moments split over two processes (mesh data 1 × fsdp 2): the run
    validates and writes its checkpoints (gathering a split state is a collective that every host
    joins; host 0 alone once waited there for ever), and its steps follow the 1-device run of the
    same math within the trajectory tolerance."""
    work = tmp_path / "fsdp-hosts"
    hosts = two_processes(work, [*data_overrides, *RUN, *SAME_MATH, "train.max_steps=2", "train.mesh.fsdp=2",
                                 "train.mesh.fsdp_min_size=0"], compilation_cache)
    for host in hosts:
        assert host.returncode == 0, host.stderr[-3000:]
        assert "(mesh data 1 x fsdp 2)" in host.stdout
    assert (work / "checkpoints" / "last" / "2" / "model.safetensors").is_file()
    expected, got = losses(one_device), losses(work)
    assert sorted(got) == [1, 2]
    a, b = np.array([got[1], got[2]]), np.array([expected[1], expected[2]])
    rtol, atol = tolerance("trajectory", "float32")
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * np.abs(b).max() + atol)
    config, model = load_model(work)  # the best checkpoint, written from the gathered state
    assert config.train.mesh.fsdp == 2 and all(np.isfinite(np.asarray(p)).all()
                                               for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_planted_nan_on_two_processes_writes_one_whole_dump(tmp_path, data_overrides, uninterrupted,
                                                            compilation_cache):
    """A NaN step of a two-process job (train.nan_policy: raise): both processes stop with exit
    code 3 and the replay command, and one dump holds the whole global batch (both hosts' halves,
    in order) and the parameters from before the step."""
    work = tmp_path / "nan-two-hosts"
    hosts = two_processes(work, [*data_overrides, *RUN, *PLANTED_NAN, "train.max_steps=3"], compilation_cache)
    dump = work / "nan" / "step_000001"
    for host in hosts:
        assert host.returncode == 3, host.stderr[-3000:]
        assert "train.nan_policy: raise" in host.stderr and f"--dump {dump}" in host.stderr
    assert sorted((work / "nan").iterdir()) == [dump]  # no temporary folder left
    _, reference, _ = uninterrupted  # same data, sampler and seed
    expected = reference.load_batch(reference.epoch_plan(0)[0][0])
    batch = np.load(dump / "batch.npz")
    assert sorted(batch.files) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(batch[key], expected[key])
    # each window's recording and start, in the batch's order (both hosts' slices)
    table, sfreq = reference.table, reference.config.preprocess.sfreq
    assert json.loads((dump / "nan.json").read_text())["windows"] == [
        [reference.train_stems[table["record"][r]], table["start"][r] / sfreq] for r in reference.epoch_plan(0)[0][0]]
    config, model = load_model(dump / "checkpoint")
    initial = SeizureDetector(config.model, rngs=nnx.Rngs(config.train.seed))
    for a, b in zip(*(jax.tree.leaves(nnx.state(m, nnx.Param)) for m in (model, initial)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
