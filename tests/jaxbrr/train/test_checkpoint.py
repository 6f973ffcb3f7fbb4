"""jaxbrr's checkpoint store: a step saved again replaces the old copy without a moment in which
neither is on disk, and a damaged orbax tree metadata is refused naming the file.

- saving a step again leaves the new weights and nothing else;
- a run killed after the old copy was set aside and before the new one was whole (orbax's items
  and the neutral model.safetensors) gets the old copy back at its next start; one killed after
  the new copy was whole drops the old one;
- a step below the newest (a resumed run's `best`) is saved, not skipped as orbax would;
- `_METADATA` that is not JSON, or JSON of another shape, is a CheckpointError naming the file,
  from `load_model` and from a resume's `Checkpoints.restore` alike (orbax itself raises
  JSONDecodeError, KeyError or AttributeError, the last of which no caller expects); array files
  cut short are one naming the step, while a tree of another shape keeps orbax's error.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from flax import nnx

from common.checkpoints import NEUTRAL_FILE, CheckpointError
from common.config import config_to_dict, load_config
from jaxbrr.model import SeizureDetector
from jaxbrr.train.checkpoint import REPLACED, Checkpoints, load_model
from jaxbrr.train.optim import make_nnx_optimizer
from jaxbrr.weights import to_neutral
from tests.jaxbrr.conftest import TINY


@pytest.fixture(scope="module")
def config():
    return load_config(TINY)


def _model(config, seed: int):
    model = SeizureDetector(config.model, rngs=nnx.Rngs(seed))
    return model, make_nnx_optimizer(model, config.train, 1)


def _save(workdir, config, seed: int, step: int = 5) -> np.ndarray:
    """Save a model drawn with `seed` as `best` at `step`, with its neutral copy, as training does;
    returns its parameters."""
    model, optimizer = _model(config, seed)
    checkpoints = Checkpoints(workdir, keep=2)
    try:
        checkpoints.save("best", step, model, optimizer, {"config": config_to_dict(config)}, to_neutral(model))
    finally:
        checkpoints.close()
    return _weights(model)


def _restore_error(workdir, config) -> ValueError:
    """What a resume's restore of `best` raises into a model of `config` (CheckpointError is a
    ValueError; a tree of another shape raises orbax's own)."""
    model, optimizer = _model(config, seed=1)
    checkpoints = Checkpoints(workdir, keep=2)
    try:
        with pytest.raises(ValueError) as raised:
            checkpoints.restore("best", model, optimizer)
    finally:
        checkpoints.close()
    return raised.value


def _weights(model) -> np.ndarray:
    leaves = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    return np.concatenate([x.ravel() for x in leaves])


def test_a_step_saved_again_holds_the_new_weights_and_nothing_else(tmp_path, config):
    first = _save(tmp_path, config, seed=1)
    second = _save(tmp_path, config, seed=2)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(_weights(load_model(tmp_path)[1]), second)
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "best").iterdir()) == ["5"]


def test_a_run_killed_while_saving_a_step_again_keeps_the_old_copy(tmp_path, config, monkeypatch):
    old = _save(tmp_path, config, seed=1)

    class Killed(BaseException):
        pass

    def killed(*args, **kwargs):
        raise Killed

    model, optimizer = _model(config, seed=2)
    checkpoints = Checkpoints(tmp_path, keep=2)
    monkeypatch.setattr(checkpoints.managers["best"], "save", killed)
    with pytest.raises(Killed):
        checkpoints.save("best", 5, model, optimizer, {"config": config_to_dict(config)})
    best = tmp_path / "checkpoints" / "best"
    assert sorted(p.name for p in best.iterdir()) == [f"{REPLACED}5"]  # orbax sees no step now
    monkeypatch.undo()

    Checkpoints(tmp_path, keep=2).close()  # the next start puts it back
    assert sorted(p.name for p in best.iterdir()) == ["5"]
    np.testing.assert_array_equal(_weights(load_model(tmp_path)[1]), old)

    # killed after orbax's items were complete, before the neutral copy: the old copy comes back
    new = _save(tmp_path / "other", config, seed=2)
    (best / "5").rename(best / f"{REPLACED}5")
    shutil.copytree(tmp_path / "other" / "checkpoints" / "best" / "5", best / "5")
    (best / "5" / NEUTRAL_FILE).unlink()
    Checkpoints(tmp_path, keep=2).close()
    assert sorted(p.name for p in best.iterdir()) == ["5"] and (best / "5" / NEUTRAL_FILE).is_file()
    np.testing.assert_array_equal(_weights(load_model(tmp_path)[1]), old)

    # killed after the new copy was whole, before the old one was removed: the new one stays
    (best / "5").rename(best / f"{REPLACED}5")
    shutil.copytree(tmp_path / "other" / "checkpoints" / "best" / "5", best / "5")
    Checkpoints(tmp_path, keep=2).close()
    assert sorted(p.name for p in best.iterdir()) == ["5"]
    np.testing.assert_array_equal(_weights(load_model(tmp_path)[1]), new)


@pytest.mark.parametrize("text", ["garbage{", "{}", "[1]", '{"tree_metadata": 3}'])
def test_a_damaged_tree_metadata_is_refused_naming_the_file(tmp_path, config, text):
    _save(tmp_path, config, seed=1)
    damaged = tmp_path / "checkpoints" / "best" / "5" / "model" / "_METADATA"
    damaged.write_text(text)
    with pytest.raises(CheckpointError, match=f"{damaged}: damaged"):
        load_model(tmp_path)
    error = _restore_error(tmp_path, config)
    assert isinstance(error, CheckpointError) and str(error).startswith(f"{damaged}: damaged")


@pytest.mark.parametrize("removed", ["meta", "optimizer", "model/_METADATA"])
def test_a_step_missing_an_item_is_refused_naming_it_and_the_fix(tmp_path, config, removed):
    """What a scratch purge or a partial rsync leaves: a resume met orbax's KeyError ('Item "meta"
    was not found') as a traceback, a missing _METADATA its 'pytree structure error' naming no file."""
    _save(tmp_path, config, seed=1)
    step = tmp_path / "checkpoints" / "best" / "5"
    target = step / removed
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    error = _restore_error(tmp_path, config)
    assert isinstance(error, CheckpointError) and str(error) == (f"{step}: incomplete ({removed} missing: a purge or a copy that stopped), so it "
                                 f"cannot be restored; delete {step}, and --resume continues from the step saved "
                                 "before it")
    if removed == "model/_METADATA":  # outside training too (predict, evaluate, --init-from)
        with pytest.raises(CheckpointError, match=r"incomplete \(model/_METADATA missing"):
            load_model(tmp_path)


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", ["data", "manifest"])
def test_array_files_cut_short_are_one_line_naming_the_step(tmp_path, config, damage):
    """Array data cut short (a disk that filled, a copy that stopped): orbax's page-long TensorStore
    error (exit 1 from train, predict and evaluate) becomes a CheckpointError naming the step and
    what to do, from load_model and from a resume's restore alike; TensorStore's threads' echoes of
    it ("Event loop is closed", from callbacks after orbax raised) are counted in it, not shown."""
    _save(tmp_path, config, seed=1)
    step = tmp_path / "checkpoints" / "best" / "5"
    pattern = "**/d/*" if damage == "data" else "**/manifest.ocdbt"
    cut = [f for f in (step / "model").glob(pattern) if f.is_file()]
    assert cut
    for f in cut:
        f.write_bytes(f.read_bytes()[:10])
    said = rf"{step.absolute()}: its arrays cannot be read \((DATA_LOSS|OUT_OF_RANGE): .*\); use another step"
    with pytest.raises(CheckpointError, match=said):
        load_model(tmp_path)
    error = _restore_error(tmp_path, config)
    assert isinstance(error, CheckpointError) and re.match(said, str(error))


def test_a_tree_that_does_not_match_the_model_is_not_called_damaged(tmp_path, config):
    """Only read failures are answered 'use another step': a model of another shape (a checkpoint
    of another version, say) keeps orbax's own error, which names the differing parameters."""
    _save(tmp_path, config, seed=1)
    other = load_config(TINY, ["model.tcn.kernel_size=5"])
    assert not isinstance(_restore_error(tmp_path, other), CheckpointError)


def test_a_step_below_the_newest_is_saved_not_skipped(tmp_path, config):
    """orbax's CheckpointManager declines a step below its newest unless forced; a resumed run's
    `best` may be one (torchref's store writes it too). It must be written whole, not skipped."""
    _save(tmp_path, config, seed=1, step=10)
    weights = _save(tmp_path, config, seed=2, step=5)
    step_dir = tmp_path / "checkpoints" / "best" / "5"
    assert (step_dir / "meta").is_dir() and (step_dir / "model.safetensors").is_file()
    np.testing.assert_array_equal(_weights(load_model(step_dir)[1]), weights)


_WRITE_REFUSED = """
import errno, json, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
from flax import nnx
from common.config import load_config
from jaxbrr.model import SeizureDetector
from jaxbrr.train.checkpoint import Checkpoints
from jaxbrr.train.optim import make_nnx_optimizer
config = load_config(sys.argv[1])
model = SeizureDetector(config.model, rngs=nnx.Rngs(0))
checkpoints = Checkpoints(sys.argv[2], keep=2)
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))  # every array file outgrows it
try:
    checkpoints.save("last", 1, model, make_nnx_optimizer(model, config.train, 10), {"progress": {}})
    print(json.dumps({"saved": True}))
except OSError as error:
    print(json.dumps({"errno": error.errno, "message": str(error)}))
"""


def test_a_write_the_os_refuses_is_an_oserror_naming_the_step(tmp_path):
    """TensorStore reports a full disk or a file-size limit as a ValueError (OUT_OF_RANGE ...
    os_error_code), which the training command answered as a bad config, without the newest
    checkpoint or the resume line. A real refusal: RLIMIT_FSIZE in a subprocess."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _WRITE_REFUSED, str(TINY), str(tmp_path / "run")],
                          cwd=Path(__file__).resolve().parents[3], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said.get("errno") == errno.EFBIG, said
    assert f"the checkpoint {tmp_path / 'run' / 'checkpoints' / 'last' / '1'} could not be written" in said["message"]
    # orbax's threads each report the failure again (tens to hundreds of tracebacks): counted, not shown
    assert "Traceback" not in done.stderr and "Event loop is closed" not in done.stderr, done.stderr[-3000:]


class _Refused(ValueError):
    pass


def _echoing(error: Exception | None):
    """A save or restore as orbax's threads make one look: an absl record and an unraisable
    exception from another thread, then `error` (or none)."""
    import logging
    import sys
    import threading

    def thread():
        logging.getLogger("absl").error("_SignalingThread.run() raised an exception: echo")
        try:
            raise RuntimeError("Event loop is closed")
        except RuntimeError as raised:
            sys.unraisablehook(SimpleNamespace(exc_type=RuntimeError, exc_value=raised, exc_traceback=None,
                                               err_msg="echo", object=None))

    worker = threading.Thread(target=thread)
    worker.start()
    worker.join()
    if error is not None:
        raise error


def _answer(error, echoed):
    return OSError(28, f"refused{echoed}") if isinstance(error, _Refused) else None


def test_orbax_echoes_are_dropped_with_the_error_they_echo_and_shown_otherwise(caplog, monkeypatch):
    """A refused write is one line that counts the echoes; a save that succeeds, or an error that
    is not answered, shows what the threads said, unchanged."""
    from jaxbrr.train.checkpoint import _one_line

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", lambda held: unraisable.append(str(held.exc_value)))

    def logged() -> list[str]:
        said = [record.getMessage() for record in caplog.records if record.name == "absl"]
        caplog.clear()
        return said

    with pytest.raises(OSError, match=r"^\[Errno 28\] refused \(2 more reports of it from orbax's threads not shown\)$"):
        with _one_line(_answer):
            _echoing(_Refused("OUT_OF_RANGE"))
    assert unraisable == [] and logged() == []

    echo = ["_SignalingThread.run() raised an exception: echo"]
    with _one_line(_answer):
        _echoing(None)
    assert unraisable == ["Event loop is closed"] and logged() == echo

    with pytest.raises(KeyError):
        with _one_line(_answer):
            _echoing(KeyError("not answered"))
    assert unraisable == ["Event loop is closed"] * 2 and logged() == echo
    assert logging.getLogger("absl").filters == []


def test_an_optimizer_saved_under_apply_if_finite_is_refused_with_the_way_on(tmp_path):
    """train.nan_policy: skip wrapped the optimizer in optax.apply_if_finite until 2026-12-07; its
    state does not fit today's optimizer, and orbax said so as a page of tree mismatch."""
    from jaxbrr.train.checkpoint import check_optimizer_layout

    item = tmp_path / "checkpoints" / "last" / "8" / "optimizer"
    item.mkdir(parents=True)
    (item / "_METADATA").write_text(json.dumps({"tree_metadata": {"('opt_state', 'inner_state')": {},
                                                                  "('opt_state', 'notfinite_count')": {}}}))
    with pytest.raises(CheckpointError, match=r"8: its optimizer state was saved by an older jaxbrr.*--init-from "):
        check_optimizer_layout(item)
    (item / "_METADATA").write_text(json.dumps({"tree_metadata": {"('opt_state', '0', 'count')": {}}}))
    check_optimizer_layout(item)  # today's layout: nothing to say
