"""The jaxbrr training loop end to end on the smoke config (a tiny V3 model, a synthetic corpus
of six short recordings in a temporary folder).

- a two-step run writes metrics.jsonl, TensorBoard events, plots and `best`/`last` checkpoints,
  and the `best` checkpoint reloads into a model that predicts exactly what the trainer did;
- `--resume` after SIGKILL of a real training process mid-epoch reproduces the uninterrupted
  run's losses, validation metrics and parameters bit for bit;
- a planted NaN (`pe_gradient: full` with `top_k: 1`: every graph falls into several components,
  so the Laplacian's eigenvalue 0 repeats and eigh's gradient divides by 0) stops the run with a
  dump and the replay command under JAX_DEBUG_NANS=1, under `nan_policy: raise`, under checkify
  (which names the source line); under `nan_policy: skip` the steps are skipped, counted, and
  leave the parameters untouched;
- a clean run under jax_debug_nans raises nothing (the model never makes a NaN on purpose);
- an unknown config key and a missing metric name fail with a clear message before any compute.

An adjacency that is the identity does not plant a NaN in this model: the entries below the edge
threshold are selected away (`jnp.where`), so eigh's infinite gradient never reaches a
parameter. Disconnected graphs with kept edges do (the test above).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from jaxbrr.config import load_config
from jaxbrr.data.prepare import prepare
from jaxbrr.train.__main__ import main as train_main
from jaxbrr.train.checkpoint import load_model
from jaxbrr.train.log import read_metrics
from jaxbrr.train.loop import NonFiniteStep, Trainer
from parity.tolerances import tolerance

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "smoke.yaml"
# batch 8: 6 batches per epoch; 8 steps cross an epoch end (a validation at step 6)
RUN = ["train.batch_size=8", "train.epochs=2", "train.max_steps=8", "train.log_every=1"]
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

    # the best checkpoint reloads into a model that predicts what the trainer predicted
    loaded_config, model = load_model(work)
    assert loaded_config == config
    x = trainer.prepared.corpus.batch(trainer.train_stems, trainer.table, np.arange(2), config.window_samples)[0]
    logits, _ = nnx.view(model, deterministic=True, raise_if_not_found=False)(x)
    np.testing.assert_array_equal(np.asarray(jax.nn.sigmoid(logits)), trainer.predict(x))


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
    deadline = time.time() + 300
    while not (work / "checkpoints" / "last" / "2").is_dir():  # killed in epoch 1, mid-run
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
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


def test_planted_nan_under_jax_debug_nans_writes_the_dump_and_the_replay_command(
        tmp_path, data_overrides, compilation_cache):
    work = tmp_path / "nan"
    sets = [f"--set={o}" for o in (*data_overrides, *PLANTED_NAN, "train.max_steps=3")]
    env = {**os.environ, "JAX_DEBUG_NANS": "1", "JAX_COMPILATION_CACHE_DIR": compilation_cache}
    done = subprocess.run([sys.executable, "-m", "jaxbrr.train", "--config", str(SMOKE), "--workdir", str(work),
                           "--no-progress", *sets], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 3, done.stderr[-3000:]
    dump = work / "nan" / "step_000000"
    assert f"replay: python -m parity.localize --dump {dump}" in done.stderr
    assert "JAX_DEBUG_NANS" in done.stderr
    info = json.loads((dump / "nan.json").read_text())
    assert info["step"] == 0 and "nan" in info["error"].lower()
    batch = np.load(dump / "batch.npz")
    assert batch["x"].shape == (4, 19, 4096) and np.isfinite(batch["x"]).all()  # the data was fine
    _, model = load_model(dump / "checkpoint")  # the weights from before the step reload
    assert len(jax.tree.leaves(nnx.state(model, nnx.Param))) > 0


def test_planted_nan_under_nan_policy_raise_and_checkify(tmp_path, data_overrides, prepared):
    config = config_for(tmp_path, data_overrides, *PLANTED_NAN, "train.max_steps=3")
    with pytest.raises(NonFiniteStep, match="train.nan_policy: raise") as err:
        Trainer(config, progress=False, prepared=prepared).run()
    assert (err.value.dump / "nan.json").is_file()

    config = config_for(tmp_path, data_overrides, *PLANTED_NAN, "train.max_steps=3", "train.checkify=true",
                        name="checkify")
    with pytest.raises(NonFiniteStep, match="checkify") as err:
        Trainer(config, progress=False, prepared=prepared).run()
    error = json.loads((err.value.dump / "nan.json").read_text())["error"]
    assert "nan generated by primitive" in error.lower() and ".py:" in error  # the op and its line


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
    assert [r["step"] for r in records if r["kind"] == "nan"] == [2]  # the third stopped the run
    for a, b in zip(before, params(trainer), strict=True):
        np.testing.assert_array_equal(a, b)  # nothing was applied
    assert json.loads((err.value.dump / "nan.json").read_text())["step"] == 2


def test_a_clean_run_under_jax_debug_nans_raises_nothing(tmp_path, data_overrides, prepared):
    config = config_for(tmp_path, data_overrides, "train.max_steps=2")
    with jax.debug_nans(True):
        result = Trainer(config, progress=False, prepared=prepared).run()
    assert result.progress.finished == "max_steps"


def test_unknown_key_and_missing_metric_fail_before_any_compute(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("jaxbrr.data.prepare.prepare", lambda *a, **k: pytest.fail("compute started"))
    code = train_main(["--config", str(SMOKE), "--workdir", str(tmp_path), "--set", "train.learning_rate=1e-3"])
    assert code == 2
    assert "unknown key 'train.learning_rate'" in capsys.readouterr().err
    code = train_main(["--config", str(SMOKE), "--workdir", str(tmp_path),
                       "--set", "train.early_stopping.metric=sensitivity_at_10fa"])
    assert code == 2
    err = capsys.readouterr().err
    assert "'sensitivity_at_10fa' is not a validation metric" in err and "auroc" in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_data_parallel_over_two_devices_follows_the_one_device_run(
        tmp_path, data_overrides, prepared, compilation_cache):
    """The same run on 2 forced CPU devices (batch sharded over the `data` mesh axis, state
    replicated, gradients averaged with pmean): the loss curve matches the 1-device run within the
    parity table's trajectory tolerance. With the static PE: the dynamic PE's eigh deadlocks XLA's
    CPU runtime across forced devices, and the trainer refuses that combination up front."""
    static = ("model.graph.use_dynamic_pe=false", "train.max_steps=4")
    one = Trainer(config_for(tmp_path, data_overrides, *static, name="one"), progress=False, prepared=prepared)
    one.run()
    work = tmp_path / "dp"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_COMPILATION_CACHE_DIR": compilation_cache}
    command = [sys.executable, "-m", "jaxbrr.train", "--config", str(SMOKE), "--workdir", str(work), "--no-progress",
               *[f"--set={o}" for o in (*data_overrides, *RUN, *static)]]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "devices: 2 x cpu (data parallel)" in done.stdout
    expected, got = losses(tmp_path / "one"), losses(work)
    assert sorted(got) == sorted(expected) == [1, 2, 3, 4]
    a, b = np.array([got[s] for s in sorted(got)]), np.array([expected[s] for s in sorted(expected)])
    rtol, atol = tolerance("trajectory", "float32")
    print(f"2-device vs 1-device losses: max rel {np.abs(a - b).max() / np.abs(b).max():.2e}")
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * np.abs(b).max() + atol)

    dynamic = [c for c in command if "use_dynamic_pe" not in c]
    refused = subprocess.run(dynamic, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "deadlock" in refused.stderr
