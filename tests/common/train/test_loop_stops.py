"""The shared loop skeleton (common/train/loop.py) around a stop request, a resume and a non-finite
validation, on a numpy
"framework": a weight that counts its steps, checkpoints as pickles. What it checks is the
skeleton's, not a framework's: where a stop during validation saves, and that a resume writes the
log an uninterrupted run writes. (tests/jaxbrr/train/test_loop.py and tests/torchref/train/ run
the real trainers through SIGTERM and SIGKILL.)"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from common.config import load_config
from common.data.prepare import prepare
from common.train import loop as loop_lib
from common.train.log import read_metrics
from common.train.loop import NonFiniteStep
from common.train.stop import Interrupted

SMOKE = Path(__file__).resolve().parents[3] / "configs" / "smoke.yaml"
RUN = ["train.batch_size=8", "train.epochs=2", "train.max_steps=null", "train.log_every=1"]


class Counting(loop_lib.Loop):
    """A framework whose state is one number, the steps taken; `on` plants events by place."""

    framework = "numpy"
    on: dict = {}

    def _build(self) -> None:
        self.weight = 0.0

    def _step(self, batch, pos_weight):
        self._event("step")
        self.weight += 1
        return {"loss": float(np.abs(batch["x"]).mean()) + 1e-3 * self.weight, "grad_norm": 1.0, "lr": 1e-3,
                "finite": True}

    def predict(self, x):
        self._event("predict")
        return np.random.default_rng(int(self.weight)).random((x.shape[0], x.shape[-1])).astype(np.float32)

    def _event(self, place: str) -> None:
        if place in self.on:
            self.on[place](self)

    def _save(self, kind):
        path = self.checkpoint_path(kind, self.progress.step)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps({"weight": self.weight, "meta": self._meta()}))
        return path

    def _latest(self):
        steps = sorted((self.workdir / "checkpoints" / "last").glob("*.pkl"))
        return int(steps[-1].stem) if steps else None

    def _restore(self):
        saved = pickle.loads(self.checkpoint_path("last", self._latest()).read_bytes())
        self.weight = saved["weight"]
        return saved["meta"]

    def _dump(self, batch, info):
        folder = self.workdir / "nan" / f"step_{info['step']:06d}"
        folder.mkdir(parents=True)
        (folder / "dump.pkl").write_bytes(pickle.dumps({"batch": batch, "info": info, "weight": self.weight}))
        return folder

    def parameter_count(self):
        return 1

    # the plots are the real trainers' (tests/jaxbrr/train/test_loop.py draws them); matplotlib took
    # two thirds of these tests' time
    def _plots(self, traces, masks):
        pass

    def _final_plots(self):
        pass

    def checkpoint_path(self, kind, step):
        return self.workdir / "checkpoints" / kind / f"{step:08d}.pkl"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke-data")
    overrides = [f"data.data_dir={root / 'edf'}", f"data.cache_dir={root / 'cache'}", *RUN]
    return overrides, prepare(load_config(SMOKE, overrides), progress=False)


@pytest.fixture(autouse=True)
def no_events(monkeypatch):
    monkeypatch.setattr(Counting, "on", {})
    monkeypatch.setattr(loop_lib, "check_start", lambda *a, **k: None)  # the pickles are no framework's files


def _run(data, workdir, resume=False, sets=()):
    overrides, prepared = data
    return Counting(load_config(SMOKE, [*overrides, f"workdir={workdir}", *sets]), resume=resume, progress=False,
                    prepared=prepared).run()


def _records(workdir, kind):
    return [{k: v for k, v in r.items() if k not in ("time", "windows_per_s", "data_wait_s")}
            for r in read_metrics(workdir) if r["kind"] == kind]


def test_a_stop_during_validation_saves_the_trained_epoch_at_once_and_a_resume_validates_it(data, tmp_path):
    """A SIGTERM while the dev split was predicted waited for the whole validation (minutes on
    TUSZ's 436 h dev split: past a scheduler's grace period, so the epoch was lost). Now the
    prediction stops at its next batch, `last` is saved at the epoch's end, before its validation,
    and a resume validates that epoch and ends as an uninterrupted run."""
    uninterrupted = _run(data, tmp_path / "whole")
    calls = []

    def stop_at_the_second_batch(loop):
        calls.append(loop.progress.step)
        if len(calls) == 2:
            loop.stop.received = "SIGTERM"

    Counting.on = {"predict": stop_at_the_second_batch}
    with pytest.raises(Interrupted) as stopped:
        _run(data, tmp_path / "run")
    assert len(calls) == 2  # the prediction stopped where the request came, not after the split
    epoch_end = calls[0]
    assert stopped.value.step == epoch_end and stopped.value.checkpoint.name == f"{epoch_end:08d}.pkl"
    saved = pickle.loads(stopped.value.checkpoint.read_bytes())["meta"]["progress"]
    assert (saved["epoch"], saved["step"], saved["best"]) == (0, epoch_end, None)  # trained, not validated
    assert _records(tmp_path / "run", "validation") == []
    Counting.on = {}
    resumed = _run(data, tmp_path / "run", resume=True)
    assert resumed.progress == uninterrupted.progress
    assert _records(tmp_path / "run", "validation") == _records(tmp_path / "whole", "validation")


def test_a_resume_from_an_epochs_last_batch_writes_its_validation_once(data, tmp_path):
    """`last` saved on an epoch's last batch precedes that epoch's validation at the same step. A
    resume that validated (and logged) it, then died before its own save, left the record behind:
    the next resume kept it (records up to the step were kept) and wrote it again."""
    uninterrupted = _run(data, tmp_path / "whole")

    def stop(loop):
        if loop.progress.step == loop.batches_per_epoch - 1:  # the last batch's step is in flight
            loop.stop.received = "SIGTERM"

    class Killed(BaseException):
        pass

    def kill(loop):
        raise Killed  # as a SIGKILL after the validation line, before the epoch's saves

    Counting.on = {"step": stop}
    with pytest.raises(Interrupted):
        _run(data, tmp_path / "run")
    Counting.on = {}
    original_plots = Counting._plots
    Counting._plots = lambda self, traces, masks: kill(self)
    try:
        with pytest.raises(Killed):
            _run(data, tmp_path / "run", resume=True)
    finally:
        Counting._plots = original_plots
    assert len(_records(tmp_path / "run", "validation")) == 1  # written, its epoch not saved
    _run(data, tmp_path / "run", resume=True)
    validations = _records(tmp_path / "run", "validation")
    assert [(r["epoch"], r["step"]) for r in validations] == [(0, uninterrupted.validations[0]["step"]),
                                                               (1, uninterrupted.validations[1]["step"])]
    assert validations == _records(tmp_path / "whole", "validation")


def test_non_finite_validation_probabilities_are_a_nan_stop_with_a_dump_of_that_batch(data, tmp_path, monkeypatch):
    """Every training step finite, the dev batch's probabilities NaN: it was a ValueError from the
    stitching, 'N valid window samples are not finite', exit 2 as a bad config, with no dump. Now
    it is the run's NaN stop (exit 3): the weights and that dev batch dumped for parity.localize."""
    def nan_probabilities(self, x):
        return np.full((x.shape[0], x.shape[-1]), np.nan, np.float32)

    monkeypatch.setattr(Counting, "predict", nan_probabilities)
    with pytest.raises(NonFiniteStep) as failed:
        _run(data, tmp_path / "run")
    message = str(failed.value)
    assert message.startswith("validation after epoch 1: the model's seizure probabilities on a dev batch are not "
                              "finite (NaN or Inf), though every training step was\n  dump: ")
    dumped = pickle.loads((failed.value.dump / "dump.pkl").read_bytes())
    overrides, _ = data
    config = load_config(SMOKE, overrides)
    epoch_end = dumped["weight"]  # the steps taken: an epoch's
    assert dumped["info"]["step"] == epoch_end + 1 and failed.value.dump.name == f"step_{int(epoch_end) + 1:06d}"
    assert dumped["batch"]["x"].shape == (config.eval.batch_size, config.model.n_chans, config.window_samples)
    assert not dumped["batch"]["y"].any() and dumped["batch"]["valid"].all()
    assert [r["kind"] for r in read_metrics(tmp_path / "run")][-1] == "nan"


def test_a_run_resumed_between_two_log_lines_logs_the_uninterrupted_runs_loss_means(data, tmp_path):
    """loss_mean averages the steps since the last `train` line; a resume started that average
    afresh, so its first line differed from the uninterrupted run's after any stop off a
    log_every boundary (every SIGTERM, mostly)."""
    sets = ["train.log_every=4"]
    _run(data, tmp_path / "whole", sets=sets)

    def stop(loop):
        if loop.progress.step == 1:  # the second step is in flight: one loss since the last line
            loop.stop.received = "SIGTERM"

    Counting.on = {"step": stop}
    with pytest.raises(Interrupted):
        _run(data, tmp_path / "run", sets=sets)
    Counting.on = {}
    _run(data, tmp_path / "run", resume=True, sets=sets)
    resumed, whole = _records(tmp_path / "run", "train"), _records(tmp_path / "whole", "train")
    assert [r["step"] for r in resumed] == [r["step"] for r in whole] and len(whole) > 2
    assert [r["loss_mean"] for r in resumed] == [r["loss_mean"] for r in whole]


def test_the_padding_of_a_last_dev_batch_is_not_checked(data, tmp_path, monkeypatch):
    """The last dev batch is padded with zero windows to the compiled batch size, and their output
    is dropped: a NaN there is no reason to stop the run."""
    padded = []
    original = Counting.predict

    def nan_on_padding(self, x):
        probs = original(self, x)
        zero = ~np.abs(x).reshape(len(x), -1).any(axis=1)
        padded.append(int(zero.sum()))
        probs[zero] = np.nan
        return probs

    monkeypatch.setattr(Counting, "predict", nan_on_padding)
    result = _run(data, tmp_path / "run")
    assert max(padded) > 0 and result.progress.finished == "epochs"


@pytest.mark.parametrize("sets", [[], ["train.max_steps=3"]], ids=["last-epoch", "max-steps"])
def test_a_stop_during_the_final_validation_leaves_it_to_the_resume(data, tmp_path, sets):
    """The final validation (after the last epoch, or at max_steps) stopped by a request: the
    run was saved as finished, so the resume said 'already finished' and that validation, its
    best checkpoint and its summary row never came."""
    whole = _run(data, tmp_path / "whole", sets=sets)

    def stop_in_the_final_validation(loop):
        if loop.progress.finished is not None:
            loop.stop.received = "SIGTERM"

    Counting.on = {"predict": stop_in_the_final_validation}
    with pytest.raises(Interrupted):
        _run(data, tmp_path / "run", sets=sets)
    Counting.on = {}
    resumed = _run(data, tmp_path / "run", resume=True, sets=sets)
    assert resumed.progress == whole.progress and resumed.progress.finished == whole.progress.finished
    assert _records(tmp_path / "run", "validation") == _records(tmp_path / "whole", "validation") != []
    assert resumed.best_checkpoint is not None and resumed.best_checkpoint.name == whole.best_checkpoint.name


def test_early_stopping_tolerates_patience_epochs_without_improvement_and_stops_at_the_next(data, tmp_path,
                                                                                           monkeypatch):
    """The original's EarlyStopping (original_spec.md 3.7): a value strictly better than the best
    resets the count, a tie does not, and the run stops when the count exceeds `patience`. The
    loop stopped at count == patience, an epoch before the original on the same validations."""
    aurocs = iter([0.9, 0.8, 0.85, 0.95, 0.95, 0.9, 0.95, 0.99, 0.99])
    monkeypatch.setattr(Counting, "validate", lambda self: ({"auroc": next(aurocs)}, [], []))
    result = _run(data, tmp_path / "run", sets=["train.epochs=9", "train.early_stopping.metric=auroc",
                                                 "train.early_stopping.patience=2"])
    validations = _records(tmp_path / "run", "validation")
    assert [(r["auroc"], r["improved"]) for r in validations] == [
        (0.9, True), (0.8, False), (0.85, False), (0.95, True), (0.95, False), (0.9, False), (0.95, False)]
    p = result.progress
    assert (p.finished, p.bad_epochs, p.best, p.best_epoch) == ("early_stopping", 3, 0.95, 3)


class HostOne(Counting):
    """Host 1 of two, told host 0's validation outcome (`host_0`: its early-stopping value, None
    for non-finite probabilities) where the real twin broadcasts it."""

    host_0: float | None = 0.5

    def _build(self) -> None:
        super()._build()
        self.process_index, self.process_count = 1, 2

    def _from_host_0(self, text):
        import json

        return json.dumps({"value": self.host_0})


def test_every_host_decides_validation_as_host_0_does(data, tmp_path, capsys, monkeypatch):
    """Each host predicted the dev split itself and decided from its own metrics: on GPUs a tie
    broken, or a NaN met, on one host only had it save `best`, stop or dump while the others
    waited for it forever. Now host 0's outcome decides on every host, and a host whose own
    differs says so."""
    overrides, prepared = data
    config = load_config(SMOKE, [*overrides, f"workdir={tmp_path / 'run'}"])
    result = HostOne(config, progress=False, prepared=prepared).run()
    assert result.progress.best == 0.5 and result.progress.best_epoch == 0  # host 0's value, tied after
    assert result.progress.bad_epochs == 1
    assert "note: host 1's validation gave auroc " in capsys.readouterr().out

    # host 0's probabilities were not finite, this host's were: it fails as host 0 does
    monkeypatch.setattr(HostOne, "host_0", None)
    with pytest.raises(NonFiniteStep, match="validation after epoch 1"):
        HostOne(config, progress=False, prepared=prepared).run()
    assert "host 0's non-finite probabilities: every host follows host 0" in capsys.readouterr().out


def test_hosts_that_prepared_other_data_are_refused_on_every_host(data, tmp_path):
    """Each host builds or reads its own cache: a host that skipped a file another kept trained on
    other recordings, and with epochs of other lengths the hosts waited for each other forever."""
    overrides, prepared = data

    class Elsewhere(Counting):
        def _digests_of_every_host(self, digest):
            return [digest, digest, b"another host's plan"]

    with pytest.raises(ValueError, match=r"^host\(s\) 2 prepared other data than host 0 .*python -m jaxbrr.data build"):
        Elsewhere(load_config(SMOKE, [*overrides, f"workdir={tmp_path / 'run'}"]), progress=False, prepared=prepared)
