"""Training checkpoints with orbax: `last` and `best`, atomic, keeping N.

    WORKDIR/checkpoints/last/<step>/{model, optimizer, meta, model.safetensors}   every epoch end (and
                                                                 every train.checkpoint_every steps)
    WORKDIR/checkpoints/best/<step>/{...}                        when the early-stopping metric improves

`<step>` is the number of training batches done. `model` is the whole NNX state of the model:
its parameters and its RNG streams (dropout's key and call count), so a restored model draws the
same dropout masks an uninterrupted run would. `optimizer` is nnx.Optimizer's state (step count,
AdamW moments, MultiSteps counters). `meta` is JSON: the config and the loop's
progress (epoch, batch within the epoch, early-stopping state, counters). `model.safetensors` is the
model's parameters again under the neutral names (common/checkpoints.py), for tools without JAX.

orbax writes each step into a temporary folder and renames it when complete, so a run killed
at any moment (SIGKILL included) leaves either a whole checkpoint or a temporary folder that the
next CheckpointManager ignores and removes: never a half-written `last`. A step saved again (`best`
after a resume that repeats steps) is first renamed `replaced-<step>`, a name orbax does not list,
and removed once the new copy is whole (its model.safetensors included); a run killed in between
gets it back at the next start. A step below the newest is saved too (orbax would skip it).

Typed PRNG keys are stored as their raw key data (uint32) and wrapped again on restore.

`load_model(path)` rebuilds a SeizureDetector from any of: a run's WORKDIR (its best checkpoint),
a `checkpoints/best` or `checkpoints/last` folder (its newest step), or one step's folder.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from common.checkpoints import (
    NEUTRAL_FILE,
    OTHER_STEP,
    REPLACED,
    CheckpointError,
    jaxbrr_meta,
    locate,
    write_neutral,
)
from common.config import Config, config_from_dict
from jaxbrr.train.distributed import barrier

KINDS = ("last", "best")
ITEMS = ("model", "optimizer", "meta")


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _savable(tree) -> Any:
    """A pure-dict state with typed keys replaced by their uint32 key data."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _unsavable(saved, template) -> Any:
    """Inverse of `_savable`, with `template` (the live state) saying which leaves were keys."""
    return jax.tree.map(
        lambda s, t: jax.random.wrap_key_data(s, impl=jax.random.key_impl(t)) if _is_key(t) else s,
        saved, template,
    )


def _pure(node: nnx.Module | nnx.Optimizer) -> dict:
    return nnx.to_pure_dict(nnx.state(node))


def _restore_into(node: nnx.Module | nnx.Optimizer, saved: dict) -> None:
    state = nnx.state(node)
    nnx.replace_by_pure_dict(state, _unsavable(saved, nnx.to_pure_dict(state)))
    nnx.update(node, state)


def _check_tree_metadata(item_dir: Path) -> None:
    """orbax reads an array item's `_METADATA` (JSON: the saved tree's structure) first and trips on
    a damaged one with whatever its parser meets (JSONDecodeError, KeyError, AttributeError); name
    the file instead. A missing one is _check_items' to name."""
    path = item_dir / "_METADATA"
    if not path.is_file():
        return
    try:
        tree = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError):
        tree = None
    if not (isinstance(tree, dict) and isinstance(tree.get("tree_metadata"), dict)):
        raise CheckpointError(f"{path}: damaged (not orbax's JSON tree metadata), so {item_dir.parent} "
                              f"cannot be restored; {OTHER_STEP}")


def _check_items(step_dir: Path, items: tuple[str, ...], fix: str) -> None:
    """A step folder missing an item folder, or an array item its `_METADATA` (what a scratch
    purge or a copy that stopped leaves), is named with the fix, not met as orbax's KeyError or
    'pytree structure error' naming no file."""
    missing = [item for item in items if not (step_dir / item).is_dir()]
    missing += [f"{item}/_METADATA" for item in items if item != "meta" and item not in missing
                and not (step_dir / item / "_METADATA").is_file()]
    if missing:
        raise CheckpointError(f"{step_dir}: incomplete ({', '.join(missing)} missing: a purge or a copy that "
                              f"stopped), so it cannot be restored; {fix}")


def check_optimizer_layout(item_dir: Path) -> None:
    """A checkpoint from before train.nan_policy: skip moved into the step (2026-12-07) holds
    optax.apply_if_finite's state around the optimizer's (`notfinite_count`, ...), which today's
    optimizer has not: say so, and how to go on, instead of orbax's tree mismatch."""
    path = item_dir / "_METADATA"
    tree = json.loads(path.read_bytes())["tree_metadata"] if path.is_file() else {}  # _check_tree_metadata's
    if any("'notfinite_count'" in key for key in tree):  # keys as orbax writes them: "('opt_state', 'notfinite_count')"
        raise CheckpointError(
            f"{item_dir.parent}: its optimizer state was saved by an older jaxbrr, whose train.nan_policy: skip wrapped "
            "the optimizer in optax.apply_if_finite (the step now keeps a skipped step's state itself), so it cannot "
            f"be resumed; start a run from its weights with --init-from {item_dir.parent}")


# how TensorStore's errors for array files cut short or overwritten begin (its status codes)
READ_FAILURES = ("DATA_LOSS:", "OUT_OF_RANGE:", "NOT_FOUND:")


def _causes(error: BaseException) -> list[BaseException]:
    """error and its __cause__ chain: TensorStore's own message is often a cause below orbax's."""
    chain = [error]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    return chain


class _Echoes:
    """What orbax's and TensorStore's threads report while one save or restore runs, held back:
    when it fails, each of its threads reports the same failure again ("_SignalingThread.run()
    raised an exception" through absl's logger, and TensorStore callbacks that reach the event loop
    orbax closed, "RuntimeError: Event loop is closed", through sys.unraisablehook; orbax-checkpoint
    0.12.8), tens to hundreds of tracebacks that bury the one-line error this module raises. They
    are dropped only when that error is raised, and counted in it; otherwise (success, or an error
    passed on unchanged) they are shown as they came. On a failure (an Exception) they are waited for: the Python
    threads the save or restore started are joined, and TensorStore's own threads, which go on
    calling back after orbax raised, until QUIET_S passes without an echo (all within WAIT_S)."""

    WAIT_S = 60.0
    QUIET_S = 0.5

    def __init__(self):
        self.records: list = []
        self._logger = logging.getLogger("absl")

    def filter(self, record: logging.LogRecord) -> bool:  # a logging.Filter: hold, do not emit
        self.records.append(record)
        return False

    def _unraisable(self, unraisable) -> None:
        self.records.append(unraisable)

    def __enter__(self) -> _Echoes:
        self._threads = set(threading.enumerate())
        self._hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        self._logger.addFilter(self)
        return self

    def __exit__(self, failed, *exc) -> None:
        if failed is not None and issubclass(failed, Exception):  # not on Ctrl-C
            deadline = time.monotonic() + self.WAIT_S
            for thread in set(threading.enumerate()) - self._threads:
                if not thread.daemon:  # orbax's _SignalingThreads and their event loops' (daemons idle on)
                    thread.join(max(0.0, deadline - time.monotonic()))
            heard = -1
            while heard != len(self.records) and time.monotonic() < deadline:
                heard = len(self.records)
                time.sleep(self.QUIET_S)
        self._logger.removeFilter(self)
        sys.unraisablehook = self._hook

    def show(self) -> None:
        for held in self.records:
            if isinstance(held, logging.LogRecord):
                self._logger.handle(held)
            else:
                self._hook(held)
        self.records.clear()

    def said(self) -> str:
        """The clause that the one-line error carries for what was dropped."""
        return f" ({len(self.records)} more reports of it from orbax's threads not shown)" if self.records else ""


@contextmanager
def _one_line(answer: Callable[[Exception, str], Exception | None]) -> Iterator[None]:
    """Raise answer(error, what the echoes clause says) in place of an error it recognises (it
    returns None for others, which pass unchanged); orbax's threads' echoes are dropped with the
    error they echo, and shown in every other case (_Echoes)."""
    echoes = _Echoes()
    dropped = False
    try:
        with echoes:
            yield
    except Exception as error:  # TensorStore's surface as plain Exceptions, the cause a ValueError
        replaced = answer(error, echoes.said())
        if replaced is None:
            raise
        dropped = True
        raise replaced from error
    finally:
        if not dropped:
            echoes.show()


def _restoring(step_dir: Path):
    """Turns orbax's page-long error for damaged array data (files cut short or overwritten: a disk
    that filled, a copy that stopped) into one line naming the step; any other error (a tree that
    does not match the model, say) passes unchanged."""
    def answer(error: Exception, echoed: str) -> Exception | None:
        said = next((str(e).strip().splitlines()[0] for e in _causes(error) if str(e).startswith(READ_FAILURES)), None)
        return None if said is None else CheckpointError(
            f"{step_dir}: its arrays cannot be read ({said[:300]}){echoed}; {OTHER_STEP}")
    return _one_line(answer)


OS_ERROR_CODE = re.compile(r"os_error_code='(\d+)'")  # how TensorStore names the OS's error


def _writing(step_dir: Path):
    """TensorStore reports a write that the OS refused (a full disk, a file-size limit, a folder
    gone read-only) as a ValueError ("OUT_OF_RANGE: Error writing local file ...
    [os_error_code='28']"): raise it as the OSError it is, naming the step, so that the training
    command answers it as it does any write failure (common/train/cli.py)."""
    def answer(error: Exception, echoed: str) -> Exception | None:
        found = next(filter(None, (OS_ERROR_CODE.search(str(e)) for e in _causes(error))), None)
        if not isinstance(error, ValueError) or found is None:
            return None
        code = int(found.group(1))
        return OSError(code, f"{os.strerror(code)}: the checkpoint {step_dir} could not be written "
                             f"({str(error).strip().splitlines()[0][:200]}){echoed}")
    return _one_line(answer)


class Checkpoints:
    """The `last` and `best` checkpoint folders of one run."""

    def __init__(self, workdir: str | Path, keep: int):
        self.root = Path(workdir).absolute() / "checkpoints"  # orbax wants absolute paths
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        self.managers = {
            kind: ocp.CheckpointManager(self.root / kind, options=options, item_names=ITEMS) for kind in KINDS
        }
        self._finish_replacements()

    def _finish_replacements(self) -> None:
        """A run killed while saving a step again left the old copy aside: drop it where the new
        copy is complete (orbax's items, and the neutral copy where the old one had it), else put
        it back."""
        if jax.process_index() == 0:
            for kind in KINDS:
                for aside in (self.root / kind).glob(REPLACED + "*"):
                    step_dir = aside.with_name(aside.name.removeprefix(REPLACED))
                    if step_dir.exists() and ((step_dir / NEUTRAL_FILE).exists()
                                              or not (aside / NEUTRAL_FILE).exists()):
                        shutil.rmtree(aside)
                        continue
                    if step_dir.exists():
                        shutil.rmtree(step_dir)
                    aside.rename(step_dir)
        barrier("checkpoints-replacements")
        for manager in self.managers.values():
            manager.reload()

    def _move_aside(self, kind: str, step: int) -> Path:
        """Rename a saved step out of orbax's sight (every host joins; host 0 renames)."""
        step_dir = self.root / kind / str(step)
        aside = step_dir.with_name(REPLACED + str(step))
        if jax.process_index() == 0:
            step_dir.rename(aside)
        barrier(f"checkpoints-aside-{kind}-{step}")
        self.managers[kind].reload()
        return aside

    def save(self, kind: str, step: int, model: nnx.Module, optimizer: nnx.Optimizer, meta: dict,
             neutral: dict | None = None) -> Path:
        """`neutral`: the model's weights under the neutral names (jaxbrr.weights.to_neutral), kept
        beside orbax's items as model.safetensors so that tools without JAX read them."""
        manager = self.managers[kind]
        # e.g. best saved again after a resume: replace, never mix, and never be without a copy
        aside = self._move_aside(kind, step) if step in manager.all_steps() else None
        # force: orbax skips a step below its newest unless forced (a resumed run's `best` beside
        # one from before the resume); this store saves what it is asked to, as torchref's does
        step_dir = self.root / kind / str(step)
        with _writing(step_dir):
            saved = manager.save(step, force=True, args=ocp.args.Composite(
                model=ocp.args.StandardSave(_savable(_pure(model))),
                optimizer=ocp.args.StandardSave(_savable(_pure(optimizer))),
                meta=ocp.args.JsonSave(meta),
            ))
            manager.wait_until_finished()
        if not saved:
            raise CheckpointError(f"orbax did not save {step_dir} (its CheckpointManager declined the step)")
        if neutral is not None:  # with the run's config, so that the file alone reads as its step does
            run_config = config_from_dict(meta["config"], f"{step_dir}/meta") if "config" in meta else None
            write_neutral(step_dir / NEUTRAL_FILE, neutral, model.config, "jax", run_config=run_config)
        if aside is not None and jax.process_index() == 0:
            shutil.rmtree(aside)  # last: the new copy is whole, neutral file included
        return step_dir

    def latest(self, kind: str) -> int | None:
        return self.managers[kind].latest_step()

    def restore(self, kind: str, model: nnx.Module, optimizer: nnx.Optimizer | None,
                step: int | None = None) -> dict:
        """Fill `model` (and `optimizer`) in place from a checkpoint; returns its meta."""
        manager = self.managers[kind]
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no {kind!r} checkpoint under {self.root / kind}")
        step_dir = self.root / kind / str(step)
        _check_items(step_dir, ("model", "meta", "optimizer") if optimizer is not None else ("model", "meta"),
                     f"delete {step_dir}, and --resume continues from the step saved before it")
        for item in ("model", "optimizer"):
            _check_tree_metadata(step_dir / item)
        args = {
            "model": ocp.args.StandardRestore(_savable(_pure(model))),
            "meta": ocp.args.JsonRestore(),
        }
        if optimizer is not None:
            check_optimizer_layout(self.root / kind / str(step) / "optimizer")
            args["optimizer"] = ocp.args.StandardRestore(_savable(_pure(optimizer)))
        with _restoring(self.root / kind / str(step)):
            restored = manager.restore(step, args=ocp.args.Composite(**args))
        _restore_into(model, restored["model"])
        if optimizer is not None:
            _restore_into(optimizer, restored["optimizer"])
        return restored["meta"]

    def close(self) -> None:
        for manager in self.managers.values():
            manager.close()


# ----------------------------------------------------------------------------------------------
# reading a checkpoint outside training


def resolve_step_dir(path: str | Path) -> Path:
    """A jaxbrr run folder, checkpoints/<kind> folder or step folder -> the step folder
    (common.checkpoints.locate); CheckpointError for anything else, naming it."""
    located = locate(path)
    if located.kind != "jaxbrr":
        raise CheckpointError(f"{path}: a {located.kind} checkpoint ({located.path}), not a jaxbrr one; "
                              "convert it with `python -m parity.convert` or load it with the tool for its kind")
    return located.path


def read_meta(path: str | Path) -> dict:
    return jaxbrr_meta(resolve_step_dir(path))


def restore_model(step_dir: Path, config: Config) -> nnx.Module:
    """A SeizureDetector of `config` with a jaxbrr step folder's model item: parameters and RNG."""
    from jaxbrr.model import SeizureDetector

    model = SeizureDetector(config.model, rngs=nnx.Rngs(config.train.seed))
    _check_items(Path(step_dir), ("model",), OTHER_STEP)
    _check_tree_metadata(Path(step_dir) / "model")
    with _restoring(step_dir):
        saved = ocp.StandardCheckpointer().restore(Path(step_dir).absolute() / "model", _savable(_pure(model)))
    _restore_into(model, saved)
    return model


def load_model(path: str | Path) -> tuple[Config, nnx.Module]:
    """(config, SeizureDetector with the checkpoint's weights and RNG state) of a jaxbrr checkpoint;
    weights of any kind: jaxbrr.weights.load_model."""
    step_dir = resolve_step_dir(Path(path).absolute())  # orbax restores absolute paths only
    config = config_from_dict(read_meta(step_dir)["config"], source=f"{step_dir}/meta")
    return config, restore_model(step_dir, config)
