"""The framework-neutral training loop: epochs of balanced batches, validation, early stopping,
checkpoints, logs, plots and the NaN policy. Each framework subclasses `Loop` and implements its
hooks (jaxbrr/train/loop.py: jaxbrr's Trainer; torchref/train/loop.py: torch's).

    for epoch e:  rows = balanced_rows(seed, e); pos_weight from the rows' seizure ratio
        for batch b of rows:  state = step(state, batch, pos_weight)   (the framework's update)
            every log_every: a metrics.jsonl line; every checkpoint_every: a `last` checkpoint
        validate on dev -> metrics; the early-stopping metric improves -> `best` checkpoint
        `last` checkpoint; plots; stop when patience runs out
    SIGINT/SIGTERM on one host: the step in flight ends, a `last` checkpoint there, Interrupted
        (common/train/stop.py)

Everything a step depends on is a function of (seed, epoch, step): the batch order (the
sampler's generator for (seed, epoch)), pos_weight, and dropout (each framework's RNG state is
checkpointed). So `--resume` from any checkpoint reproduces the uninterrupted run's losses
exactly (tests/jaxbrr/train/test_loop.py, tests/torchref/train/test_loop.py).

Non-finite steps (never silent; DESIGN.md §5): a framework's `_step` raises StepFailed when it
catches a NaN inside the step (JAX_DEBUG_NANS, checkify), or reports `finite: False`. A
StepFailed always writes the dump (common/train/dumps.py: the batch, the state from before the
step, its RNG) and stops with NonFiniteStep, whatever the policy: the step did not finish. For
`finite: False`, `train.nan_policy: raise` (default) does the same; `skip` counts the step (its
update discarded) and stops only after more than `train.max_skipped` in a row.

Several hosts: every host walks the same global batch order and loads only its slice of each
batch (sampler.host_rows); host 0 writes logs and plots. A background thread loads the next
train.prefetch batches while the step runs (common/data/prefetch.py); the time the loop still
waited for data is logged as `data_wait_s`.

This module imports neither JAX nor torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.config import Config, config_to_dict
from common.data.cache import MANIFEST
from common.data.prefetch import Prefetcher
from common.data.prepare import SPLITS_FILE, PreparedData, prepare, split_record, train_spec
from common.data.sampler import balanced_rows, batches, host_rows, seizure_window_ratio
from common.eval import plots as eval_plots
from common.files import write_text
from common.progress import LOG_LINE_SECONDS, Heartbeat
from common.shown import shown_inline
from common.train import plots
from common.train.class_weight import resolve_pos_weight
from common.train.compat import check_start
from common.train.dumps import NAN_DIR, replay_command
from common.train.lock import WorkdirBusy, hold, release
from common.train.log import RunLog
from common.train.stop import Interrupted, StopRequests
from common.train.validate import check_metric_name, is_better, metric_value, validate


class NonFiniteStep(RuntimeError):
    """A training step went non-finite; `dump` holds everything needed to replay it."""

    def __init__(self, message: str, dump: Path):
        super().__init__(f"{message}\n  dump: {dump}\n  replay: {replay_command(dump)}")
        self.dump = dump


@dataclass
class Progress:
    """The loop's position and early-stopping state; stored in every checkpoint's meta."""

    epoch: int = 0  # the epoch in progress
    batch: int = 0  # next batch within that epoch
    step: int = 0  # batches done
    best: float | None = None
    best_epoch: int | None = None
    best_step: int | None = None
    bad_epochs: int = 0
    skipped: int = 0
    skipped_in_a_row: int = 0
    finished: str | None = None  # why the run ended: epochs | max_steps | early_stopping
    # the losses of the epoch's steps since its last `train` log line: a run resumed between two
    # lines averages them into its next loss_mean, as the uninterrupted run does
    losses_since_log: list[float] = field(default_factory=list)


class ValidationStopped(Exception):
    """A stop request arrived while the dev split was predicted."""


class NonFiniteValidation(Exception):
    """The model's probabilities on a dev batch `x` (B, C, T) are not finite."""

    def __init__(self, x: np.ndarray):
        super().__init__("non-finite probabilities on a dev batch")
        self.x = x


@dataclass
class TrainResult:
    workdir: Path
    progress: Progress
    validations: list[dict] = field(default_factory=list)
    best_checkpoint: Path | None = None


class _Interval:
    """What the loop measures between two `train` log lines: windows, the time the loader kept
    the step waiting, and the losses of the steps not skipped."""

    def __init__(self, loader: Prefetcher, losses: list[float]):
        self.loader, self.losses = loader, losses  # Progress.losses_since_log, kept in the checkpoints
        self.windows, self.since, self.waited = 0, time.perf_counter(), self.loader.wait_seconds

    def _reset(self) -> None:
        self.windows, self.since, self.waited = 0, time.perf_counter(), self.loader.wait_seconds
        self.losses.clear()

    def add(self, windows: int, loss: float | None) -> None:
        self.windows += windows
        if loss is not None:
            self.losses.append(loss)

    def take(self) -> tuple[float, dict[str, float]]:
        """(mean loss, or NaN when every step was skipped; {windows_per_s, data_wait_s}), then
        starts the next interval."""
        loss_mean = float(np.mean(self.losses)) if self.losses else float("nan")
        measured = {"windows_per_s": self.windows / max(time.perf_counter() - self.since, 1e-9),
                    "data_wait_s": self.loader.wait_seconds - self.waited}
        self._reset()
        return loss_mean, measured


class StepFailed(Exception):
    """Raised by a framework's `_step` when a NaN is caught inside the step (JAX_DEBUG_NANS,
    checkify); the loop then writes the dump."""

    def __init__(self, why: str, error: str):
        super().__init__(why)
        self.why, self.error = why, error


class Loop:
    """The framework-neutral loop. A framework implements the hooks below (jaxbrr.train.loop.Trainer,
    torchref.train.loop.Trainer); data, sampling, validation, early stopping,
    logs, plots and the NaN policy are shared."""

    framework = "?"
    process_index, process_count = 0, 1  # this host among the hosts; a framework may set them

    def __init__(self, config: Config, resume: bool = False, progress: bool = True,
                 prepared: PreparedData | None = None, init_from: str | Path | None = None,
                 plain_lines: bool = False):
        check_metric_name(config)  # before any compute
        check_start(config, resume, init_from, self.framework)
        self.config, self.cfg = config, config.train
        self.workdir = Path(config.workdir)
        self.show = progress  # bars; without them, `plain_lines` prints a line a minute (common/progress.py)
        self.heartbeat = Heartbeat(LOG_LINE_SECONDS) if plain_lines and not progress else None
        self.stop = StopRequests(active=False)  # run() listens for SIGINT/SIGTERM (common/train/stop.py)
        self.prepared = prepared or prepare(config, progress=progress, plain_lines=plain_lines,
                                            keep_split=self.workdir / SPLITS_FILE if resume else None)
        if resume:
            self._check_followed_split()
        self._setup_data()
        try:
            self._build()  # holds the workdir once it knows which host it is (_hold_workdir)
            self._check_same_data()
            self.progress = Progress()
            self._resume_or_start(resume)
            if not resume and self.primary:  # what a resume and `evaluate --split` follow (SPLITS_FILE)
                write_text(self.workdir / SPLITS_FILE, json.dumps(split_record(self.prepared), indent=1) + "\n")
            if init_from is not None:
                self.initialised_from = self._init_weights(Path(init_from))
                print(f"initialised from {self.initialised_from} (fresh optimizer)")
            # every host keeps the records (early stopping decides alike everywhere); host 0 writes them
            self.log = RunLog(self.workdir, resume_step=self.progress.step if self.progress.step else None,
                              write_files=self.primary, resume_epoch=self.progress.epoch)
        except BaseException:  # a trainer that never runs lets its workdir go
            if self._held_here:
                release(self.workdir)
            raise
        earlier = sorted((self.workdir / NAN_DIR).glob("step_*")) if not resume and self.primary else []
        if earlier:
            print(f"note: {self.workdir / NAN_DIR} holds {len(earlier)} NaN dump(s) of an earlier attempt "
                  f"({shown_inline([d.name for d in earlier])}), not of "
                  "this run; a dump of this run at the same step replaces one")

    _held_here = False  # this Loop took the workdir's lock (not the command that built it)

    def _hold_workdir(self) -> None:
        """One trainer per workdir (common/train/lock.py): host 0 holds it, and every host stops
        alike when another run does. _build calls this once it knows the host, before the
        checkpoint store touches the workdir."""
        refusal = ""
        if self.primary:  # any failure of host 0's, said to every host: the others wait in the broadcast
            try:
                self._held_here = hold(self.workdir)
            except WorkdirBusy as busy:
                refusal = f"busy {busy}"
            except OSError as error:  # a folder it cannot create or lock
                refusal = f"error {error}"
        refusal = self._from_host_0(refusal)
        if refusal:
            kind, said = refusal.split(" ", 1)
            raise WorkdirBusy(said) if kind == "busy" else OSError(said)

    def _from_host_0(self, text: str) -> str:
        """Host 0's `text` on every host (one host: as is)."""
        return text

    def _digests_of_every_host(self, digest: bytes) -> list[bytes]:
        """Every host's `digest`, in host order (one host: [digest])."""
        return [digest]

    def _check_same_data(self) -> None:
        """Every host prepares the data itself (its own cache build, its own skipped files): the
        hosts must train and validate on the same recordings and plan the same batches, or the run
        trains on what no one chose and, with epochs of other lengths, waits forever. A ValueError
        on every host alike where any host differs."""
        plan = [self.train_stems, self.dev_stems, len(self.table), self.batches_per_epoch, self.total_batches]
        digests = self._digests_of_every_host(hashlib.sha256(json.dumps(plan).encode()).digest())
        differ = [host for host, digest in enumerate(digests) if digest != digests[0]]
        if differ:
            raise ValueError(
                f"host(s) {', '.join(map(str, differ))} prepared other data than host 0 (other recordings in the "
                "train or dev split, or another number of windows or batches): every host needs the same "
                "preprocessed corpus; build the cache once on a shared file system (python -m jaxbrr.data build) "
                "or alike on each host, and check each host's build summary for skipped files")

    # -- what a framework provides -------------------------------------------------------------

    @property
    def primary(self) -> bool:
        """Host 0 writes the logs and plots; checkpoints are written by every host (orbax)."""
        return self.process_index == 0

    @classmethod
    def check_placement(cls, config: Config) -> None:
        """What _build would refuse about where the run is placed (devices, mesh, batch), checked
        before the data is prepared: a first run on a corpus builds its whole cache first. Raises
        ValueError naming the field and the fix; a twin with nothing to check keeps this."""

    def _build(self) -> None:
        """Model, optimizer (total_updates known), checkpoint store."""
        raise NotImplementedError

    def _step(self, batch: dict[str, np.ndarray], pos_weight: float) -> dict:
        """One update; returns host scalars {loss, grad_norm, lr, finite}. Keeps the state from
        before the step until the next call (for `_dump`); may raise StepFailed."""
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(B, C, T) -> (B, T) probabilities, dropout off."""
        raise NotImplementedError

    def _save(self, kind: str) -> Path:
        raise NotImplementedError

    def _latest(self) -> int | None:
        """Step of the newest `last` checkpoint, None when there is none."""
        raise NotImplementedError

    def _restore(self) -> dict:
        """Load the newest `last` checkpoint into model and optimizer; returns its meta."""
        raise NotImplementedError

    def _dump(self, batch: dict[str, np.ndarray], info: dict) -> Path:
        """Write the NaN dump of the failed step (state from before it)."""
        raise NotImplementedError

    def parameter_count(self) -> int:
        raise NotImplementedError

    def _init_weights(self, path: Path) -> Path:
        """Fill the model from weights of any kind (common/checkpoints.py), the optimizer left
        fresh; check_init_config first. Returns where the weights came from."""
        raise NotImplementedError

    def checkpoint_path(self, kind: str, step: int) -> Path:
        """Where the `kind` checkpoint of `step` lives."""
        raise NotImplementedError

    # -- setup ---------------------------------------------------------------------------------

    def _check_followed_split(self) -> None:
        """A resumed run trains on the recordings it started with: its recorded split (a run
        started before SPLITS_FILE existed is split afresh, as then)."""
        followed = self.prepared.followed
        if followed is None or not followed.missing:
            return
        raise ValueError(f"{followed.path}: {len(followed.missing)} recording(s) this run was split with are not "
                         f"in the corpus under {self.config.data.data_dir} now ({shown_inline(followed.missing)}): restore them (resumed "
                         "without them the run would train or validate on other data than it started with), or "
                         f"start a new run from this one's weights with --init-from {self.workdir}")

    def _setup_data(self) -> None:
        corpus, cfg = self.prepared.corpus, self.cfg
        self.train_stems = self.prepared.splits["train"]
        self.dev_stems = self.prepared.splits["dev"]
        data = self.config.data
        survey = self.prepared.build.survey if self.prepared.build is not None else None
        if not corpus.stems:
            left_out = survey is not None and survey.left_out  # the summary above says why
            raise ValueError(f"no recording to train on under {data.data_dir}" + (
                self._skipped_note() or (" (every EDF file there was left out: the summary above says why)"
                                         if left_out else f": no EDF file there matches data.edf_glob "
                                         f"{data.edf_glob!r}; check data.data_dir")))
        if not self.train_stems:
            raise ValueError(f"the training split is empty{self._skipped_note()}: add recordings or lower "
                             "data.split fractions")
        if not self.dev_stems:
            official = survey is not None and survey.split_kind == "official"
            patients = {corpus.recordings[s]["patient"] for s in corpus.stems}
            if official:
                fix = "put recordings under the corpus's dev/ folder, or set data.split.kind: seeded"
            elif len(patients) == 1 and data.split.dev_fraction > 0:
                fix = (f"the corpus holds one patient ({next(iter(patients))}), and a patient's recordings "
                       "stay in one split; add recordings of other patients")
            else:
                fix = "set data.split.dev_fraction > 0"
            raise ValueError(f"the dev split is empty{self._skipped_note()}: {fix} (validation and early "
                             "stopping need it)")
        if not any(corpus.recordings[s]["labels"]["seizure_seconds"] for s in self.dev_stems):
            raise ValueError("the dev split has no seizure: AUROC and sensitivity are undefined there; "
                             "change data.split.seed or dev_fraction so dev holds a seizure patient")
        self.table = corpus.window_table(self.train_stems, train_spec(self.config))
        rows = balanced_rows(self.table["class"], self.config.data.balance, cfg.seed, 0)
        self.batches_per_epoch = len(rows) // cfg.batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"an epoch has {len(rows)} windows, fewer than train.batch_size={cfg.batch_size}: "
                             "lower the batch size or add data")
        total = cfg.epochs * self.batches_per_epoch
        self.total_batches = min(total, cfg.max_steps) if cfg.max_steps else total
        # an update per grad_accum_steps batches; the last total_batches % k batches make none
        self.total_updates = self.total_batches // cfg.grad_accum_steps
        if self.total_updates == 0:
            limit = ("train.max_steps" if total > self.total_batches
                     else f"{cfg.epochs} epoch(s) of {self.batches_per_epoch}")
            raise ValueError(f"train.grad_accum_steps={cfg.grad_accum_steps} batches make one update, but the run "
                             f"has {self.total_batches} batches ({limit}): no update would be applied; lower "
                             "grad_accum_steps or train longer")

    def _skipped_note(self) -> str:
        """How many recordings the build skipped and where the reasons are, for an error about an
        empty split ('' when it skipped none)."""
        build = self.prepared.build
        if build is None or not build.skipped:
            return ""
        return (f" ({len(build.skipped)} recording(s) skipped as unusable: the reasons are in the summary above "
                f"and under `skipped` in {build.root / MANIFEST}; fix those files)")

    def _meta(self) -> dict:
        return {"config": config_to_dict(self.config), "progress": dataclasses.asdict(self.progress),
                "time": time.time()}

    def _resume_or_start(self, resume: bool) -> None:
        """--resume: restore the newest `last` checkpoint (check_start has checked it exists and
        that its config is this run's)."""
        if not resume:
            return
        latest = self._latest()
        meta = self._restore()
        self.progress = Progress(**meta["progress"])
        print(f"resumed from {self.checkpoint_path('last', latest)}: epoch {self.progress.epoch + 1}, "
              f"batch {self.progress.batch}, step {self.progress.step}")

    def epoch_plan(self, epoch: int) -> tuple[list[np.ndarray], float]:
        rows = balanced_rows(self.table["class"], self.config.data.balance, self.cfg.seed, epoch)
        ratio = seizure_window_ratio(self.table["class"], rows)
        return list(batches(rows, self.cfg.batch_size))[: self.batches_per_epoch], resolve_pos_weight(self.cfg, ratio)

    def load_batch(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """This host's slice of the global batch `rows` (all of it on one host)."""
        rows = host_rows(rows, self.process_index, self.process_count)
        x, y, valid = self.prepared.corpus.batch(self.train_stems, self.table, rows, self.config.window_samples)
        return {"x": x, "y": y.astype(np.float32), "valid": valid.all(axis=1)}  # (B,C,T) (B,T) (B,)

    def _fail(self, batch: dict, pos_weight: float, why: str, error: str | None = None):
        """Dump the step and raise NonFiniteStep. The step is named as metrics.jsonl and the
        progress lines count it, from 1 (the run's second step is step 2, its dump nan/step_000002,
        holding the state after step 1); epoch and batch are 0-based indices in nan.json, counted
        from 1 in the message. Where the batch's own input is not finite, the message says so and
        names the recordings: no model is needed to see bad data."""
        p = self.progress
        dump, sources = self._dump_step(batch, pos_weight, why, error)
        self.log.write("nan", p.step + 1, p.epoch, {"why": why, "dump": str(dump)})
        # the error's first lines: checkify's names the op and its source line, JAX_DEBUG_NANS's the op
        said = [line.strip() for line in (error or "").splitlines() if line.strip()][:3]
        said += self._bad_input_lines(batch["x"], sources)
        raise NonFiniteStep(f"step {p.step + 1} (epoch {p.epoch + 1}, its batch {p.batch + 1}): {why}"
                            + "".join(f"\n  {line}" for line in said), dump)

    def _fail_validation(self, x: np.ndarray):
        """Every training step was finite, yet the model's probabilities on a dev batch are not:
        dump the weights with that batch (labels 0: the forward is what failed) as a step's dump
        (nan/step_<the next step>, the state before it) and raise NonFiniteStep (exit 3)."""
        p = self.progress
        why = (f"validation after epoch {p.epoch + 1}: the model's seizure probabilities on a dev batch are not "
               "finite (NaN or Inf), though every training step was")
        batch = {"x": x, "y": np.zeros((x.shape[0], x.shape[-1]), np.float32), "valid": np.ones(x.shape[0], bool)}
        info = self._step_info(self.epoch_plan(p.epoch)[1], why, None, windows=[])
        info["batch_is_global"] = True  # every host predicts the whole dev split
        dump = self._dump(batch, info)
        self.log.write("nan", p.step + 1, p.epoch, {"why": why, "dump": str(dump)})
        raise NonFiniteStep(why, dump)

    def _dump_step(self, batch: dict, pos_weight: float, why: str, error: str | None) -> tuple[Path, list[list]]:
        """Write the current step's NaN dump: (its folder, the windows' sources)."""
        sources = self._window_sources()
        return self._dump(batch, self._step_info(pos_weight, why, error, sources)), sources

    def _step_info(self, pos_weight: float, why: str, error: str | None, windows: list[list]) -> dict:
        """nan.json's record of the step about to run (the dump holds the state before it)."""
        p = self.progress
        return {"step": p.step + 1, "epoch": p.epoch, "batch": p.batch, "pos_weight": pos_weight, "why": why,
                "error": error, "skipped_in_a_row": p.skipped_in_a_row, "framework": self.framework,
                "windows": windows}

    def _say_skipped(self, batch: dict, pos_weight: float, metrics: dict) -> None:
        """A step train.nan_policy: skip left out is said on a line (with what training can see
        of bad input); the run's first also writes its dump, so that it can be localised (one: a
        run that skips often would fill the disk with them)."""
        p = self.progress
        why = f"{_non_finite(metrics)} (train.nan_policy: skip)"
        line = f"step {p.step + 1} skipped ({p.skipped} so far): {why}"
        if p.skipped == 1:
            dump, sources = self._dump_step(batch, pos_weight, why, None)
            line += f"\n  dump: {dump}\n  replay: {replay_command(dump)}"
        else:
            sources = self._window_sources()
        bad_input = self._bad_input_lines(batch["x"], sources)
        line += "".join(f"\n  {said}" for said in bad_input)
        if self.primary or bad_input:  # another host names the bad windows of its own slice
            tqdm.write(line, file=sys.stderr)

    def _window_sources(self) -> list[list]:
        """[recording, start in seconds] of each window of the current step's global batch, in
        its order (the hosts' contiguous slices in process order, as the dump's batch.npz)."""
        plan, _ = self.epoch_plan(self.progress.epoch)
        sfreq = self.config.preprocess.sfreq
        return [[self.train_stems[int(self.table["record"][r])], float(self.table["start"][r]) / sfreq]
                for r in plan[self.progress.batch]]

    def _bad_input_lines(self, x: np.ndarray, sources: list[list]) -> list[str]:
        """What training can say of a non-finite input without running anything: how many NaN/Inf,
        in which windows of this host's slice, from which recordings."""
        bad = np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))
        if not bad.size:
            return []
        first = self.process_index * len(x)  # this host's slice of the global batch (host_rows)
        named = [f"window {first + i} ({sources[first + i][0]} from {sources[first + i][1]:g} s)" for i in bad]
        whose = f"host {self.process_index}'s slice of the batch" if self.process_count > 1 else "the batch's input"
        return [f"{whose} holds {int(np.isnan(x).sum())} NaN and {int(np.isinf(x).sum())} Inf, in "
                f"{shown_inline(named)}: the data is bad before any model runs; check that recording "
                "(python -m jaxbrr.data inspect EDF) and its cache, or leave it out"]

    def _run_step(self, batch: dict, pos_weight: float) -> dict:
        """A step and the NaN policy: raise / skip (counted) / too many skipped in a row."""
        try:
            metrics = self._step(batch, pos_weight)
        except StepFailed as err:
            self._fail(batch, pos_weight, err.why, err.error)
        finite = bool(metrics["finite"])
        p = self.progress
        if not finite and self.cfg.nan_policy == "raise":
            self._fail(batch, pos_weight, f"{_non_finite(metrics)} (train.nan_policy: raise)")
        if not finite:
            p.skipped += 1
            p.skipped_in_a_row += 1
            if p.skipped_in_a_row > self.cfg.max_skipped:
                self._fail(batch, pos_weight, f"{p.skipped_in_a_row} non-finite steps in a row > "
                           f"train.max_skipped={self.cfg.max_skipped}")
            self._say_skipped(batch, pos_weight, metrics)
        else:
            p.skipped_in_a_row = 0
        return {**metrics, "skipped_now": not finite}

    # -- the loop ------------------------------------------------------------------------------

    def validate(self) -> tuple[dict, list, list]:
        """Predict and score the dev split; ValidationStopped where a stop request arrives first
        (TUSZ's dev split is 436 h: minutes of prediction, past a scheduler's grace period)."""
        stop = getattr(self, "stop", None)  # run() installs it

        def each_batch(x, probs):  # the padding of a last batch left out
            if not np.isfinite(probs).all():
                raise NonFiniteValidation(x)
            if stop is not None and stop.received:
                raise ValidationStopped

        return validate(self.predict, self.prepared.corpus, self.dev_stems, self.config, progress=self.show,
                        each_batch=each_batch)

    def run(self) -> TrainResult:
        p, cfg = self.progress, self.cfg
        if p.finished:
            print(f"{self.workdir}: this run already finished ({p.finished}) at step {p.step}")
            return self._result()
        print(self.describe())
        bar = tqdm(total=self.total_batches, initial=p.step, unit="step", dynamic_ncols=True,
                   disable=not self.show, desc=f"epoch {p.epoch + 1}/{cfg.epochs}")
        self.stop = StopRequests(active=self.process_count == 1)
        try:
            with self.stop:
                while p.finished is None:
                    self._train_epoch(bar)  # to the epoch's end, to max_steps, or to a stop request
                    self._end_epoch()
        except BaseException:
            # the curves up to a non-finite step or a stop are what one looks at; a plot that fails
            # then (a full disk, a second Ctrl-C) must not replace the error that stopped the run,
            # its dump path and its exit code
            try:
                self._final_plots()
            except BaseException as plot_error:  # noqa: BLE001 - reported, the run's own error raised
                print(f"note: the training plot was not written ({type(plot_error).__name__}: {plot_error})",
                      file=sys.stderr)
            raise
        finally:
            bar.close()
            self.log.close()
            if self._held_here:
                release(self.workdir)
        self._final_plots()
        return self._result()

    def _train_epoch(self, bar) -> None:
        p, cfg = self.progress, self.cfg
        plan, pos_weight = self.epoch_plan(p.epoch)
        bar.set_description(f"epoch {p.epoch + 1}/{cfg.epochs}")
        if cfg.max_steps and p.step >= cfg.max_steps:  # resumed from a stop during max_steps' validation
            p.finished = "max_steps"
            return
        if p.batch == 0:  # an epoch's first line averages its own steps only
            p.losses_since_log.clear()
        # the thread loads this host's next cfg.prefetch batches while the step runs
        with Prefetcher(self.load_batch, plan[p.batch:], cfg.prefetch) as loader:
            interval = _Interval(loader, p.losses_since_log)
            for b, batch in enumerate(loader, start=p.batch):
                metrics = self._run_step(batch, pos_weight)
                p.step += 1
                p.batch = b + 1
                interval.add(cfg.batch_size, None if metrics["skipped_now"] else float(metrics["loss"]))
                bar.update(1)
                if p.step % cfg.log_every == 0 or p.step == 1 or metrics["skipped_now"]:
                    loss_mean, measured = interval.take()
                    host = self._mean_over_hosts(measured)
                    self.log.write("train", p.step, p.epoch, {
                        "loss": metrics["loss"], "loss_mean": loss_mean,
                        "grad_norm": metrics["grad_norm"], "lr": metrics["lr"],
                        "pos_weight": pos_weight, "skipped": p.skipped, "skipped_now": metrics["skipped_now"],
                        **host,
                    })
                    shown = dict(loss=f"{float(metrics['loss']):.4f}", lr=f"{float(metrics['lr']):.2e}",
                                 gnorm=f"{float(metrics['grad_norm']):.3f}",
                                 win_s=f"{host['windows_per_s']:.1f}", skipped=p.skipped)
                    bar.set_postfix(**shown)
                    if self.heartbeat is not None and self.heartbeat.due():
                        print(f"[epoch {p.epoch + 1}/{cfg.epochs} step {p.step}/{self.total_batches}] "
                              + " ".join(f"{k}={v}" for k, v in shown.items()), flush=True)
                if cfg.max_steps and p.step >= cfg.max_steps:
                    p.finished = "max_steps"
                    return
                saved = bool(cfg.checkpoint_every and p.step % cfg.checkpoint_every == 0 and p.batch < len(plan))
                if saved:
                    self._save("last")
                if self.stop.received:
                    if not saved:
                        self._save("last")  # mid-epoch, or at the epoch's end before its validation
                    raise Interrupted(self.stop.received, p.step, self.checkpoint_path("last", p.step))
        if p.epoch + 1 >= cfg.epochs:
            p.finished = "epochs"

    def _mean_over_hosts(self, values: dict[str, float]) -> dict[str, float]:
        """Host-measured numbers averaged over the hosts (one host: unchanged)."""
        return values

    def _agreed_validation(self, value: float | None) -> float | None:
        """Host 0's validation outcome on every host: the early-stopping metric's value, None where
        its dev probabilities were not finite. Each host predicts the dev split with a program of its
        own, and a GPU's compile may choose other kernels on another host: a tie broken, or a NaN
        met, on one host only would have that host save `best`, stop or dump while the others wait
        for it forever. A host whose own outcome differs says so. One host: its own, as it is."""
        agreed = json.loads(self._from_host_0(json.dumps({"value": None if value is None else float(value)})))["value"]
        same = agreed == value or (agreed is not None and value is not None and np.isnan(agreed) and np.isnan(value))
        if not same:
            tqdm.write(f"note: host {self.process_index}'s validation gave {self.cfg.early_stopping.metric} "
                       f"{'non-finite probabilities' if value is None else value}, host 0's "
                       f"{'non-finite probabilities' if agreed is None else agreed}: every host follows host 0")
        return agreed

    def _end_epoch(self) -> None:
        p, es = self.progress, self.cfg.early_stopping
        try:
            metrics, traces, masks = self.validate()
        except ValidationStopped:  # the epoch is trained, its validation not begun for good: a resume runs it
            p.finished = None  # the last epoch's too: a run is finished once that validation is done
            self._save("last")
            raise Interrupted(self.stop.received, p.step, self.checkpoint_path("last", p.step)) from None
        except NonFiniteValidation as bad:
            metrics, traces, masks, nonfinite_x = {}, [], [], bad.x
        else:
            nonfinite_x = None
        value = self._agreed_validation(None if nonfinite_x is not None else metric_value(metrics, self.config))
        if value is None:  # host 0's probabilities were not finite: every host fails alike (host 0's dump)
            self._fail_validation(nonfinite_x if nonfinite_x is not None else
                                  np.zeros((1, self.config.model.n_chans, self.config.window_samples), np.float32))
        improved = is_better(value, p.best, es.mode)
        if improved:
            p.best, p.best_epoch, p.best_step, p.bad_epochs = value, p.epoch, p.step, 0
        else:
            p.bad_epochs += 1
        self.log.write("validation", p.step, p.epoch, {**metrics, "improved": improved})
        tqdm.write(self._validation_line(metrics, improved))
        self._plots(traces, masks)
        # The original's EarlyStopping: `patience` epochs without improvement are tolerated, the
        # next one stops (counter > patience; original_spec.md 3.7). A tie is no improvement.
        if p.bad_epochs > es.patience and p.finished is None:
            p.finished = "early_stopping"
            tqdm.write(f"early stopping: {es.metric} has not improved for {p.bad_epochs} epochs")
        p.epoch, p.batch = p.epoch + 1, 0
        if improved:
            self._save("best")
        self._save("last")
        if self.stop.received and p.finished is None:  # asked during validation: stop once saved
            raise Interrupted(self.stop.received, p.step, self.checkpoint_path("last", p.step))

    # -- reporting -----------------------------------------------------------------------------

    def describe(self) -> str:
        c, p = self.config, self.progress
        return (
            f"{self.framework} model: {c.model.architecture}, {self.parameter_count():,} parameters, "
            f"precision {c.model.precision}, scan {c.model.ssm.scan}\n"
            f"data: {len(self.train_stems)} training / {len(self.dev_stems)} dev recordings; "
            f"{self.batches_per_epoch} batches of {self.cfg.batch_size} x {c.window_samples} samples per epoch\n"
            f"{self.devices()}; workdir {self.workdir}; {self.total_batches - p.step} steps to go"
            + self._accumulation_note()
        )

    def _accumulation_note(self) -> str:
        """With gradient accumulation: the updates, and the last batches that make none."""
        k = self.cfg.grad_accum_steps
        if k == 1:
            return ""
        left = self.total_batches % k
        return (f"\ngradient accumulation: {self.total_updates} updates of {k} batches"
                + (f"; the last {left} batch(es) make no update ({self.total_batches} batches is not a "
                   "multiple of train.grad_accum_steps)" if left else ""))

    def devices(self) -> str:
        return "devices: ?"

    def _validation_line(self, metrics: dict, improved: bool) -> str:
        keys = ("auroc", "sensitivity", "specificity", "f1")
        body = "  ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics)
        return f"[epoch {self.progress.epoch + 1} step {self.progress.step}] validation: {body}" + (
            "  (best)" if improved else "")

    def _plots(self, traces: list, masks: list) -> None:
        if not self.primary:
            return
        plots.plot_training(self.log.records, self.workdir / "plots" / "training.png",
                            self.cfg.early_stopping.metric)
        i = int(np.argmax([t.labels.sum() for t in traces]))  # the dev recording with most seizure
        t = traces[i]
        eval_plots.plot_example(t.probs, t.labels, masks[i], t.sfreq, self.config.postprocess,
                           self.workdir / "plots" / "example.png",
                           f"{t.stem} (dev), epoch {self.progress.epoch + 1}")

    def _final_plots(self) -> None:
        if not self.primary:
            return
        plots.plot_training(self.log.records, self.workdir / "plots" / "training.png",
                            self.cfg.early_stopping.metric)

    def _result(self) -> TrainResult:
        best = self.progress.best_step
        return TrainResult(self.workdir, self.progress, self.log.of_kind("validation"),
                           self.checkpoint_path("best", best) if best is not None else None)


def summary_table(result: TrainResult, metric: str) -> str:
    """The per-epoch validation metrics and where the best model is."""
    rows = result.validations
    keys = ("auroc", "sensitivity", "specificity", "precision", "f1")
    head = f"{'epoch':>5} {'step':>6} " + " ".join(f"{k:>11}" for k in keys)
    lines = [head, "-" * len(head)]
    for r in rows:
        mark = "  *" if r.get("improved") else ""
        lines.append(f"{r['epoch'] + 1:>5} {r['step']:>6} " + " ".join(f"{float(r[k]):>11.4f}" for k in keys) + mark)
    p = result.progress
    best = f"{p.best:.4f}" if p.best is not None else "none"
    lines.append(f"finished: {p.finished}; best {metric} {best} at epoch "
                 f"{(p.best_epoch or 0) + 1}, step {p.best_step}; skipped steps: {p.skipped}")
    if result.best_checkpoint:
        lines.append(f"best checkpoint: {result.best_checkpoint}")
    lines.append(f"plots: {result.workdir / 'plots'}; metrics: {result.workdir / 'metrics.jsonl'}")
    return "\n".join(lines)


def _non_finite(metrics: dict) -> str:
    """What of a step's loss and gradient norm is not finite, the other given for reference."""
    loss, norm = float(metrics["loss"]), float(metrics["grad_norm"])
    if not np.isfinite(loss):
        return f"non-finite loss {loss}" + (f" and grad norm {norm}" if not np.isfinite(norm) else f" (grad norm {norm:.4g})")
    return f"non-finite grad norm {norm} (loss {loss:.4g})"
