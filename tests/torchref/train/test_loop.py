"""torchref.train.loop.Trainer on the tiny model and a four-recording synthetic corpus: a short run
logs every step with the schedule's LR and keeps the newest checkpoints, which load back into a
model that predicts what the trainer does; a run interrupted mid-accumulation and resumed repeats
the uninterrupted run's losses and weights bit for bit (dropout on); a planted NaN batch is
skipped without touching parameters, optimizer or schedule (`nan_policy: skip`) or stops the run
with a replayable dump (`raise`); and `python -m torchref.train` runs, defaults its workdir
beside the config's and exits 2 on a bad config."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from common.config import ConfigError, load_config
from common.data.prepare import SPLITS_FILE, prepare, split_record
from common.train.log import read_metrics
from common.train.loop import NonFiniteStep
from torchref.model import SeizureDetector
from torchref.precision import TRITON_F32
from torchref.train import loop as torch_loop
from torchref.train.__main__ import main
from torchref.train.loop import Trainer, checkpoint_path, checkpoint_steps, configure_cuda
from torchref.train.optim import learning_rate_schedule

TINY = Path("configs/tiny.yaml").absolute()
# 2 training and 2 dev recordings of 60-90 s: 23 batches of 2 windows per epoch.
CORPUS = ["data.synthetic.recordings=4", "data.synthetic.patients=2",
          "data.synthetic.duration_seconds=[60,90]"]
TRAIN = ["train.batch_size=2", "train.log_every=1", "train.lr=3e-3"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[str]:
    """The data overrides of a corpus generated and cached once for the module."""
    root = tmp_path_factory.mktemp("corpus")
    return [*CORPUS, f"data.data_dir={root / 'edf'}", f"data.cache_dir={root / 'cache'}"]


@pytest.fixture(scope="module")
def prepared(corpus):
    return prepare(load_config(TINY, corpus), progress=False)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the same reductions in every run of a comparison."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trainer(workdir: Path, corpus: list[str], prepared, *extra: str, resume: bool = False) -> Trainer:
    config = load_config(TINY, [*corpus, *TRAIN, f"workdir={workdir}", *extra])
    return Trainer(config, resume=resume, progress=False, prepared=prepared)


def train_records(workdir: Path) -> list[dict]:
    return [r for r in read_metrics(workdir) if r["kind"] == "train"]


def test_three_steps(tmp_path, corpus, prepared):
    run = trainer(tmp_path, corpus, prepared, "train.max_steps=3", "train.checkpoint_every=1",
                  "train.keep_checkpoints=2")
    result = run.run()
    records = read_metrics(tmp_path)
    train = [r for r in records if r["kind"] == "train"]
    print([(r["step"], round(r["loss"], 6), r["lr"]) for r in train])
    assert [r["step"] for r in train] == [1, 2, 3]
    schedule = learning_rate_schedule(run.cfg, 3)  # 3 updates: W = 1, then the cosine
    assert [r["lr"] for r in train] == [schedule(0), schedule(1), schedule(2)]
    assert all(np.isfinite(r["loss"]) and r["skipped"] == 0 for r in train)
    assert [(r["kind"], r["step"]) for r in records[3:]] == [("validation", 3)]
    # `last` at steps 1 and 2 (checkpoint_every) and 3 (epoch end); keep_checkpoints=2 keeps 2, 3.
    assert checkpoint_steps(tmp_path, "last") == [2, 3]
    assert checkpoint_steps(tmp_path, "best") == [3]
    assert result.best_checkpoint == checkpoint_path(tmp_path, "best", 3) and result.best_checkpoint.is_file()
    saved = torch.load(checkpoint_path(tmp_path, "last", 3), weights_only=True)
    assert saved["meta"]["progress"]["step"] == 3 and saved["meta"]["progress"]["finished"] == "max_steps"
    assert saved["scheduler"]["last_epoch"] == 3
    model = SeizureDetector(run.config.model, 123)  # other weights until loaded
    model.load_state_dict(saved["model"])
    x = run.load_batch(np.arange(2))["x"]  # (2, C, T)
    with torch.no_grad():
        probs = torch.sigmoid(model.eval()(torch.from_numpy(x))[0]).numpy()  # (2, T)
    np.testing.assert_array_equal(probs, run.predict(x))


@pytest.fixture
def cuda_flags_restored():
    """The trainer sets torch's TF32 switches and cudnn.benchmark process-wide: put them back."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


@pytest.mark.gpu
@pytest.mark.triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA and mamba_ssm kernels")
def test_three_steps_on_the_gpu_with_mamba_ssm_kernels(tmp_path, corpus, prepared, cuda_flags_restored):
    run = trainer(tmp_path, corpus, prepared, "train.max_steps=3", "model.ssm.backend=cuda")
    assert run.device.type == "cuda" and next(run.model.parameters()).is_cuda
    result = run.run()
    records = read_metrics(tmp_path)
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3] and result.progress.step == 3
    assert all(np.isfinite(r["loss"]) and r["skipped"] == 0 for r in train)
    assert [r["kind"] for r in records[3:]] == ["validation"]
    assert "float32 matmuls, convolutions and Triton dots: float32 (train.tf32)" in run.devices()
    assert os.environ[TRITON_F32] == "ieee"
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    saved = torch.load(checkpoint_path(tmp_path, "last", 3), weights_only=True, map_location="cpu")
    assert saved["meta"]["progress"]["step"] == 3


def test_train_tf32_sets_torchs_and_tritons_switches_on_cuda_only(monkeypatch):
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark
    monkeypatch.setenv(TRITON_F32, "as before")  # restored after the test, whatever configure_cuda sets
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = False
        assert configure_cuda(False, torch.device("cpu")) is None and torch.backends.cudnn.allow_tf32
        assert not torch.backends.cudnn.benchmark and os.environ[TRITON_F32] == "as before"
        assert configure_cuda(False, torch.device("cuda")) == "float32" and torch.backends.cudnn.benchmark
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert os.environ[TRITON_F32] == "ieee"  # mamba_ssm's float32 dots in full float32 too
        assert configure_cuda(True, torch.device("cuda")) == "tf32"
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert TRITON_F32 not in os.environ  # Triton's default: TF32
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


class Interrupted(RuntimeError):
    pass


def test_resume_repeats_the_run(tmp_path, corpus, prepared, monkeypatch):
    """Two micro-batches per update, a checkpoint every 3 steps: the run killed at step 4
    resumes from step 3, half-way through an accumulation, with dropout on."""
    extra = ("train.max_steps=6", "train.grad_accum_steps=2", "train.checkpoint_every=3")
    # 1. uninterrupted
    whole = trainer(tmp_path / "whole", corpus, prepared, *extra)
    whole.run()
    # 2. killed before step 4, then resumed
    cut = trainer(tmp_path / "cut", corpus, prepared, *extra)
    step = cut._step

    def dies_at_4(batch, pos_weight):
        if cut.progress.step == 3:
            raise Interrupted
        return step(batch, pos_weight)

    monkeypatch.setattr(cut, "_step", dies_at_4)
    with pytest.raises(Interrupted):
        cut.run()
    assert checkpoint_steps(tmp_path / "cut", "last") == [3]
    resumed = trainer(tmp_path / "cut", corpus, prepared, *extra, resume=True)
    assert resumed.progress.step == 3 and resumed.micro_step == 1
    resumed.run()
    # 3. compare
    a, b = train_records(tmp_path / "whole"), train_records(tmp_path / "cut")
    print("losses:", [r["loss"] for r in a])
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "grad_norm", "lr"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    # A checkpoint from another kind of device (a CUDA Generator's 16-byte state in place of the
    # CPU's 5056 bytes) cannot continue the dropout stream here: refused, naming the way out.
    path = checkpoint_path(tmp_path / "cut", "last", checkpoint_steps(tmp_path / "cut", "last")[-1])
    saved = torch.load(path, weights_only=True)
    torch.save({**saved, "generator": torch.zeros(16, dtype=torch.uint8)}, path)
    with pytest.raises(ConfigError, match=r"written on a CUDA GPU and this run is on the CPU.*--init-from"):
        trainer(tmp_path / "cut", corpus, prepared, *extra, resume=True)
    # The LR of the last applied update (optax's report): the schedule counts 3 updates, not 6.
    schedule = learning_rate_schedule(whole.cfg, 3)
    assert [r["lr"] for r in a] == [schedule(s) for s in (0, 0, 0, 1, 1, 2)]
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def snapshot(run: Trainer) -> dict:
    """Copies of the weights, the first parameter's AdamW moments, the updates done, the dropout state."""
    return {"model": {k: v.clone() for k, v in run.model.state_dict().items()},
            "moments": {k: v.clone() for k, v in run.optimizer.state_dict()["state"][0].items()},
            "updates": run.scheduler.last_epoch, "generator": run.generator.get_state()}


def plant_nan(monkeypatch, run: Trainer, at_step: int) -> dict:
    """Put a NaN into the batch of step `at_step`; returns {"before": .., "after": ..} that step."""
    load_batch, step = run.load_batch, run._step
    seen, loads = {}, []

    def poisoned(rows):  # batches load in step order, possibly ahead of the step (train.prefetch)
        batch = load_batch(rows)
        if len(loads) == at_step:
            batch["x"][0, 0, 0] = np.nan
        loads.append(rows)
        return batch

    def recorded(batch, pos_weight):
        if run.progress.step != at_step:
            return step(batch, pos_weight)
        seen["before"] = snapshot(run)
        metrics = step(batch, pos_weight)
        seen["after"] = snapshot(run)
        return metrics

    monkeypatch.setattr(run, "load_batch", poisoned)
    monkeypatch.setattr(run, "_step", recorded)
    return seen


def test_skip_leaves_the_state_untouched(tmp_path, corpus, prepared, monkeypatch, capsys):
    run = trainer(tmp_path, corpus, prepared, "train.max_steps=3", "train.nan_policy=skip")
    seen = plant_nan(monkeypatch, run, at_step=1)
    initial = {k: v.clone() for k, v in run.model.state_dict().items()}
    result = run.run()
    # said, and the run's first skipped step dumped, so that it can be localised (it was silent)
    err = capsys.readouterr().err
    dump = tmp_path / "nan" / "step_000002"
    assert "step 2 skipped (1 so far): non-finite loss nan" in err and f"dump: {dump}" in err
    assert "the batch's input holds 1 NaN and 0 Inf, in window 0 (" in err
    model = torch.load(dump / "model.pt", weights_only=True)
    for name, value in seen["before"]["model"].items():
        assert torch.equal(value, model[name]), name
    train = train_records(tmp_path)
    print([(r["step"], r["loss"], r["skipped_now"]) for r in train])
    assert [(r["loss"] == "nan", r["skipped_now"], r["skipped"]) for r in train] == [
        (False, False, 0), (True, True, 1), (False, False, 1)]
    assert result.progress.skipped == 1 and result.progress.finished == "max_steps"
    before, after = seen["before"], seen["after"]
    for part in ("model", "moments"):
        for name, value in before[part].items():
            assert torch.equal(value, after[part][name]), (part, name)
    assert before["updates"] == after["updates"] == 1
    assert not torch.equal(before["generator"], after["generator"])  # dropout drew its masks all the same
    assert run.scheduler.last_epoch == 2  # steps 0 and 2 updated
    assert any(not torch.equal(v, initial[k]) for k, v in before["model"].items())  # step 0 did update
    assert all(torch.isfinite(v).all() for v in run.model.state_dict().values())


def test_raise_writes_the_dump(tmp_path, corpus, prepared, monkeypatch):
    run = trainer(tmp_path, corpus, prepared, "train.max_steps=3")  # nan_policy: raise (the default)
    seen = plant_nan(monkeypatch, run, at_step=1)
    with pytest.raises(NonFiniteStep) as caught:
        run.run()
    before = seen["before"]
    dump = caught.value.dump
    assert dump == tmp_path / "nan" / "step_000002" and sorted(p.name for p in dump.iterdir()) == [
        "batch.npz", "model.pt", "nan.json"]
    batch = np.load(dump / "batch.npz")
    assert batch["x"].shape == (2, 19, 1024) and np.isnan(batch["x"][0, 0, 0]) and batch["valid"].all()
    model = torch.load(dump / "model.pt", weights_only=True)
    for name, value in before["model"].items():
        assert torch.equal(value, model[name]), name
    record = json.loads((dump / "nan.json").read_text())
    assert (record["step"], record["epoch"], record["batch"], record["framework"]) == (2, 0, 1, "torchref")
    assert "non-finite loss" in record["why"] and record["replay"].endswith(str(dump))
    table = run.table  # where each window came from: the NaN is in window 0
    assert record["windows"] == [[run.train_stems[table["record"][r]], table["start"][r] / run.config.preprocess.sfreq]
                                 for r in run.epoch_plan(0)[0][1]]
    stem, start = record["windows"][0]
    assert str(caught.value).startswith("step 2 (epoch 1, its batch 2): non-finite loss")
    assert (f"the batch's input holds 1 NaN and 0 Inf, in window 0 ({stem} from {start:g} s): the data is bad "
            "before any model runs") in str(caught.value)
    state = base64.b64decode(record["rng"]["dropout"]["generator_state_base64"])
    assert state == before["generator"].numpy().tobytes()  # the dropout state the step started from
    assert record["rng"]["dropout"]["device"] == "cpu"
    assert record["config"]["train"]["nan_policy"] == "raise"
    assert [(r["kind"], r["step"]) for r in read_metrics(tmp_path)] == [("train", 1), ("nan", 2)]


def test_a_nan_reaching_the_graph_under_the_original_guards_is_a_nan_stop_with_its_dump(tmp_path, corpus, prepared,
                                                                                         monkeypatch):
    """Under guards: original, torch.linalg.cond raised LAPACK's error on a Laplacian NaN had
    reached (lr 1e30: NaN weights after the first step), and the run died with a traceback, no
    dump, exit 1, where jaxbrr stops with its dump. Now the step is a NaN step like jaxbrr's; and
    any such error of a linear-algebra op inside a step is a NaN stop with its dump."""
    run = trainer(tmp_path / "guards", corpus, prepared, "train.lr=1e30", "train.max_steps=4",
                  "model.stability.guards=original")
    with pytest.raises(NonFiniteStep, match=r": non-finite (loss|grad norm) ") as caught:  # as jaxbrr's, not refused
        run.run()
    assert (caught.value.dump / "nan.json").is_file()

    import torchref.train.loop as tloop

    def refusing(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(tloop, "loss_and_gradients", refusing)
    run = trainer(tmp_path / "refused", corpus, prepared, "train.max_steps=2")
    with pytest.raises(NonFiniteStep, match="a linear-algebra op refused a non-finite matrix inside the step") as caught:
        run.run()
    record = json.loads((caught.value.dump / "nan.json").read_text())
    assert record["step"] == 1 and "linalg.eigh: The algorithm failed to converge" in record["error"]


@pytest.mark.parametrize("sets", [["train.distributed.initialize=true"], ["train.mesh.data=4"],
                                  ["train.mesh.fsdp=2", "train.mesh.data=1"]])
def test_several_devices_or_hosts_are_refused_not_ignored(tmp_path, corpus, prepared, sets):
    """jaxbrr's multi-device fields: torchref ran them as one process in silence, each host of a
    multi-host launch training the whole batch into the same workdir."""
    with pytest.raises(ConfigError, match="torchref trains on one device in one process"):
        trainer(tmp_path, corpus, prepared, *sets)


def test_checkify_is_refused_not_ignored(tmp_path, corpus, prepared):
    """train.checkify is JAX's: torchref ran without it, in silence, a run its user thought instrumented."""
    from common.config import ConfigError

    with pytest.raises(ConfigError, match="train.checkify instruments JAX's jitted step: torchref has no such mode"):
        trainer(tmp_path, corpus, prepared, "train.checkify=true")


def test_a_plot_failing_after_a_nan_stop_does_not_replace_its_error(tmp_path, corpus, prepared, monkeypatch, capsys):
    """The training plot is drawn on the way out of a failed run; when it fails too (a full disk),
    the run's NonFiniteStep, with its dump, is what is raised, and the plot's failure a note."""
    from common.train import plots

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots, "plot_training", full_disk)
    run = trainer(tmp_path, corpus, prepared, "train.max_steps=3")
    plant_nan(monkeypatch, run, at_step=1)
    with pytest.raises(NonFiniteStep) as caught:
        run.run()
    assert caught.value.dump == tmp_path / "nan" / "step_000002"
    assert ("note: the training plot was not written (OSError: [Errno 28] No space left on device)"
            in capsys.readouterr().err)


def test_command_line(tmp_path, corpus, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the config's relative workdir runs/tiny lands here
    overrides = [*corpus, *TRAIN, "train.max_steps=1"]
    args = ["--config", str(TINY), *(f"--set={o}" for o in overrides)]
    assert main(args) == 0
    # no --[no-]progress and standard error not a terminal (captured): no bars, plain lines
    out, err = capsys.readouterr()
    assert "[epoch 1/" in out and " step 1/" in out and "loss=" in out
    assert "\r" not in err and "step/s" not in err and "it/s" not in err
    workdir = tmp_path / "runs" / "tiny-torchref"
    assert [r["kind"] for r in read_metrics(workdir)] == ["train", "validation"]
    assert main(args) == 2  # the workdir holds a run: --resume or another --workdir
    assert "pass --resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0  # finished already: says so, exits 0
    assert main(["--config", str(TINY), "--set", "train.no_such_field=1"]) == 2

    # the split the run started with is recorded, and a resume follows the record, not the corpus
    # split afresh (a patient added or removed moves others); one it lacks now is refused
    capsys.readouterr()
    record = json.loads((workdir / SPLITS_FILE).read_text())
    assert record == split_record(prepare(load_config(TINY, overrides), progress=False))
    swapped = {"train": record["splits"]["dev"], "dev": record["splits"]["train"], "eval": {}}
    (workdir / SPLITS_FILE).write_text(json.dumps({"splits": swapped}))
    followed = prepare(load_config(TINY, overrides), progress=False, keep_split=workdir / SPLITS_FILE)
    assert followed.splits["dev"] == sorted(swapped["dev"]) and followed.splits["train"] == sorted(swapped["train"])
    assert (followed.followed.missing, followed.followed.new) == ([], [])
    assert main([*args, "--resume"]) == 0
    assert f"split: as recorded in runs/tiny-torchref/{SPLITS_FILE}" in capsys.readouterr().out
    (workdir / SPLITS_FILE).write_text(json.dumps({"splits": {**swapped, "eval": {"gone_s001_t000": "gone"}}}))
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "1 recording(s) this run was split with are not in the corpus" in err and "gone_s001_t000" in err


def test_torch_writing_a_checkpoint_on_a_full_disk_is_an_oserror_naming_the_file(tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError of its zip writer, which the trainer's
    command re-raised as an unknown error."""
    def full(value, path):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3008 vs 2944")

    monkeypatch.setattr(torch, "save", full)
    target = tmp_path / "step_000004.pt"
    with pytest.raises(OSError, match=f"{target}: the checkpoint could not be written .*unexpected pos 3008"):
        torch_loop._save_atomic({}, target)
    assert list(tmp_path.iterdir()) == []  # no half file left
