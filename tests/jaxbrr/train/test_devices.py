"""The jaxbrr training loop on several devices and processes (issue 9), on the smoke config
(tests/jaxbrr/train/smoke_runs.py):

- 2 forced CPU devices in one process follow the 1-device run of the same math within the
  trajectory tolerance, and the batched eigh is refused there naming the fix;
- 2 processes (gloo, one device each) equal the 2-device run bit for bit;
- fsdp over 2 processes checkpoints (a collective gather) and follows the 1-device run;
- a planted NaN in a two-process job (`nan_policy: raise`) writes one dump with the whole global
  batch, in order, and both processes stop with the replay command.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from jaxbrr.model import SeizureDetector
from jaxbrr.train.checkpoint import load_model
from jaxbrr.train.loop import Trainer
from parity.tolerances import tolerance
from tests.jaxbrr.train.smoke_runs import (
    PLANTED_NAN,
    ROOT,
    RUN,
    SAME_MATH,
    SMOKE,
    config_for,
    losses,
    validations,
)

pytestmark = pytest.mark.usefixtures("compilation_cache")  # conftest.py


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
    """Two processes (one device each, the batched eigh) and one process with two devices compute
    the same global steps: every loss, every validation and the best checkpoint's parameters are
    equal, bit for bit. Each host loaded only its half of every batch; host 0 alone wrote the logs."""
    work = tmp_path / "two-hosts"
    hosts = two_processes(work, [*data_overrides, *RUN, *SAME_MATH], compilation_cache)
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


def test_planted_nan_on_two_processes_writes_one_whole_dump(tmp_path, data_overrides, prepared,
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
    reference = Trainer(config_for(tmp_path, data_overrides), progress=False, prepared=prepared)  # same data, sampler, seed
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
