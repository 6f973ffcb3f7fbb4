"""What the localiser runs, and where it comes from: weights in torch's state-dict names and
layout, a batch, a config (`Problem`), loaded from a training NaN dump of either framework, a
checkpoint with a batch file, or built by a scenario (parity/scenarios.py). Bad input raises
LocalizeError naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.checkpoints import BATCH_X_KEYS, CONFIG_FIX, CheckpointError, read_nan_record
from common.config import Config, with_overrides
from common.data.montage import montage_channels
from common.shown import shown_inline, shown_lines
from common.train.log import METRICS_FILE, read_metrics
from parity.runs import Batch

HISTORY_SHOWN = 5  # train records of a dump's run shown before its failing step


@dataclass
class Problem:
    """What the localiser runs: weights (torch state-dict names and layout), a batch, a config."""

    config: Config
    weights: dict[str, np.ndarray]
    batch: Batch
    source: str
    # A scenario's change to one side after the weights are loaded (e.g. drift: one LayerNorm's
    # eps); called as prepare(torch_model, jax_model) for every dtype.
    prepare: object | None = None
    expected: dict | None = None  # scenarios: {"verdict": ..., "tap": ...}
    notes: list[str] = field(default_factory=list)
    # --windows: each window's index in the batch as given (what the reports name); None: all of it
    windows: list[int] | None = None
    # a weight's name as its checkpoint spells it, where that differs (an original checkpoint's keys)
    checkpoint_names: dict[str, str] = field(default_factory=dict)
    # where each window of the batch as given came from, "recording from N s" (a NaN dump's nan.json)
    sources: list[str] | None = None
    # a NaN dump's run: its last train records before the failing step (WORKDIR/metrics.jsonl), and that file
    history: list[dict] = field(default_factory=list)
    history_file: str = ""
    kind: str = ""  # the checkpoint's kind (common/checkpoints.py: original, torchref, jaxbrr, ...); "" for a scenario
    # notes printed while loading (what was ignored or assumed, what --set changed): the JSON report
    # keeps them; the console said them already, so the report's end does not repeat them
    said: list[str] = field(default_factory=list)


def runs_whole_model(problem: Problem, dtypes: list[str], dtypes_given: bool) -> list[str]:
    """The dtypes to run, the problem's config made fit for them. The localiser casts the whole
    model to each run's dtype; a config's mixed precision (model.precision: bfloat16, as a run
    trained under it keeps in its dump) would autocast inside every run as well, so its "float64"
    run would compute in bfloat16 (and torch's autocast refuses float64 weights beside bfloat16
    inputs, which read as a stage non-finite at float64: MODEL). The runs take
    model.precision: float32, a note says so, and the run's own half precision joins the dtypes
    unless --dtype was given."""
    trained = problem.config.model.precision
    if trained == "float32":
        return dtypes
    problem.config = with_overrides(problem.config, ["model.precision=float32"], problem.source)
    added = not dtypes_given and trained not in dtypes
    problem.notes.append(
        f"the config's model.precision is {trained} (mixed precision, as the run trained): each run here casts "
        f"the whole model to its dtype instead, under model.precision float32; "
        + (f"{trained} was added to the dtypes, the closest to the run's own" if added
           else f"--dtype {','.join(dtypes)}" + ("" if trained in dtypes else f" has no {trained} run: add it "
                                                  "to see what the run's precision does")))
    return [*dtypes, trained] if added else dtypes


class LocalizeError(ValueError):
    """Bad input: the message names the file and the fix."""


def batch_hash(x: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()[:12]


# the names a batch's input, labels and mask go by: ours (x, y, valid; a training NaN dump's
# batch.npz), the original's debug dump `debug/bad_batch_<step>.pt` ({windows, labels,
# global_step}) and window cache `<stem>_windows.npz` (windows, labels), others' habits
X_KEYS = BATCH_X_KEYS
LABEL_KEYS, VALID_KEYS = ("y", "labels", "label", "target", "targets"), ("valid", "mask")
BATCH_FORMATS = (".npz (x or windows, and optionally y or labels, valid), .npy (x alone), or .pt/.pth: "
                 "a (B, C, T) tensor, a dict of them such as the original's debug/bad_batch_<step>.pt, or a "
                 "DataLoader batch saved as it came: (x, y) or (x, y, valid)")
# A DataLoader batch saved as it came: the original's datasets yield (window, label) pairs
# (original_spec.md §1.9), which default collation stacks into a list [windows, labels].
SEQUENCE_KEYS = ("x", "y", "valid")


def _read_batch_file(path: Path, notes: list[str]) -> dict:
    from common.pt import PtError, read_pt

    if path.suffix in (".pt", ".pth"):
        try:
            data = read_pt(path)
        except PtError as error:
            raise LocalizeError(str(error)) from None
        if isinstance(data, np.ndarray):
            return {"x": data}
        if isinstance(data, (tuple, list)) and 1 <= len(data) <= len(SEQUENCE_KEYS) \
                and all(isinstance(item, np.ndarray) for item in data):
            keys = SEQUENCE_KEYS[:len(data)]
            notes.append(f"{path}: a {type(data).__name__} of {len(data)} tensor{'s' * (len(data) > 1)}, read as "
                         f"({', '.join(keys)}) in that order")
            return dict(zip(keys, data, strict=True))
        if not isinstance(data, dict):
            raise LocalizeError(f"{path}: holds a {type(data).__name__}; expected a tensor, a dict with one of "
                                f"{', '.join(X_KEYS)}, or a DataLoader batch (x, y) or (x, y, valid)")
        return data
    if path.suffix in (".npz", ".npy"):
        try:
            data = np.load(path)
            return {"x": data} if isinstance(data, np.ndarray) else dict(data)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # a file cut short: the last two
            raise LocalizeError(f"{path}: not a readable {path.suffix} ({type(error).__name__}: {error}): a copy "
                                "that stopped short? Copy it again, or save one with np.savez(path, x=..., y=...)") from None
    raise LocalizeError(f"{path}: not a batch file this reads; pass {BATCH_FORMATS}")


def suspect_windows(problem: Problem, extreme: float) -> list[int]:
    """The windows whose data is bad as given: NaN/Inf in x or the labels, or |x| beyond `extreme`
    σ, by their index in the batch as given (Problem.windows); decided from the batch alone,
    before anything runs."""
    x, y = problem.batch.x, problem.batch.y
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(x).all(axis=(1, 2)) | (np.abs(x) > extreme).any(axis=(1, 2))
    if y is not None:
        bad |= ~np.isfinite(y).all(axis=1)
    return [problem.windows[i] if problem.windows else int(i) for i in np.flatnonzero(bad)]


def read_batch(path: Path, notes: list[str] | None = None) -> Batch:
    """A batch of (B, C, T) windows with optional (B, T) labels and (B,) mask, from any of
    BATCH_FORMATS, under any of the names above. Read without torch (common/pt.py). What was not
    used, or was changed on reading (a float64 x cast to the models' float32 input), goes into
    `notes`."""
    path = Path(path)
    notes = [] if notes is None else notes
    if not path.is_file():
        raise LocalizeError(f"{path}: no such batch file; pass {BATCH_FORMATS}")
    data = _read_batch_file(path, notes)
    x_key = next((key for key in X_KEYS if key in data), None)
    if x_key is None:
        raise LocalizeError(f"{path}: holds {sorted(data)}, none of {', '.join(X_KEYS)}: the (B, C, T) input; save it "
                            "again under those names, e.g. np.savez(path, x=x, y=y) (y the (B, T) labels, if any)")
    x = np.asarray(data[x_key])
    _refuse_complex(path, x_key, x)
    if x.ndim != 3:
        raise LocalizeError(f"{path}: {x_key} has shape {x.shape}, needs (B, C, T)")
    if x.shape[1] > x.shape[2]:  # EEG windows hold far more samples than channels
        raise LocalizeError(f"{path}: {x_key} has shape {x.shape}, more channels than samples: it looks like "
                            f"(B, T, C); save it as (B, C, T), e.g. np.transpose(x, (0, 2, 1))")
    label_key = next((key for key in LABEL_KEYS if key in data), None)
    if label_key:
        _refuse_complex(path, label_key, np.asarray(data[label_key]))
    y = np.asarray(data[label_key], np.float32) if label_key else None
    if y is not None and y.shape == x.shape:  # per-channel labels
        raise LocalizeError(f"{path}: {label_key} has shape {y.shape}, one label per channel; the model's are "
                            f"(B, T) = {(x.shape[0], x.shape[2])}, a sample seizure if any channel is: save "
                            f"{label_key}.max(axis=1)")
    if y is not None and y.shape != (x.shape[0], x.shape[2]):
        raise LocalizeError(f"{path}: {label_key} has shape {y.shape}, needs (B, T) = {(x.shape[0], x.shape[2])}")
    valid_key = next((key for key in VALID_KEYS if key in data), None)
    if valid_key:
        _refuse_complex(path, valid_key, np.asarray(data[valid_key]))
    valid = np.asarray(data[valid_key], bool) if valid_key else None
    if valid is not None and valid.shape != (x.shape[0],):
        raise LocalizeError(f"{path}: {valid_key} has shape {valid.shape}, needs (B,) = ({x.shape[0]},): "
                            "one flag per window")
    if y is not None:
        _check_label_range(path, label_key, y, valid)
    unused = sorted(set(data) - {x_key, label_key, valid_key})
    if unused:
        labels = label_key or f"none (none of {', '.join(LABEL_KEYS)}: the loss then uses all-zero labels)"
        notes.append(f"{path}: not used: {', '.join(unused)}; read the input from {x_key}, the labels from "
                     f"{labels}, the mask from {valid_key or 'none'}")
    if x.dtype != np.float32:
        notes.append(f"{path}: {x_key} is {x.dtype}, read as float32 (the models' input; the float64 run "
                     "casts that up)")
    return Batch(x.astype(np.float32), y, valid)


def _refuse_complex(path: Path, key: str, array: np.ndarray) -> None:
    """Casting a complex array to float32 keeps the real part and drops the rest with only numpy's
    ComplexWarning: the runs would compare a signal nobody gave."""
    if np.iscomplexobj(array):
        raise LocalizeError(f"{path}: {key} holds complex values ({array.dtype}); the models read real ones, and "
                            f"a cast keeps only the real part: save a real {key} (for a transform of the EEG, the "
                            "time-domain signal it was computed from)")


def _check_label_range(path: Path, key: str, y: np.ndarray, valid: np.ndarray | None) -> None:
    """Labels are 0 (background) or 1 (seizure), the loss's targets; its value at a 2 or a -1 is
    finite but meaningless, and the runs would compare it and say CLEAN. Only the windows the loss
    reads count: those `valid` leaves out may hold anything (their values reach neither the loss nor
    any gradient, jaxbrr/train/loss.py masked_mean). NaN/Inf is not refused here: the report calls
    it DATA and names where it is."""
    read = np.ones(len(y), bool) if valid is None else valid
    with np.errstate(invalid="ignore"):
        outside = np.isfinite(y) & ((y < 0) | (y > 1)) & read[:, None]  # (B, T)
    if not outside.any():
        return
    window, sample = (int(i) for i in np.argwhere(outside)[0])
    windows = np.flatnonzero(outside.any(axis=1))
    found = shown_inline([f"{v:g}" for v in np.unique(y[outside])])
    raise LocalizeError(f"{path}: {key} holds {y[window, sample]:g} at window {window}, sample {sample} "
                        f"({int(outside.sum())} labels outside [0, 1] in window{'s' * (len(windows) > 1)} "
                        f"{shown_inline(windows.tolist())}; values {found}); "
                        f"the loss's labels are 0 (background) or 1 (seizure): save ({key} > 0) where they are "
                        "seizure classes, and leave a window out with valid = False rather than labelling it -1")


def select_windows(batch: Batch, spec: str, source: str) -> tuple[Batch, list[int]]:
    """The windows `spec` names ("2", "0,3"), of x and of labels and valid mask alike, and their
    indices in `batch` (Problem.windows: the reports name them so). The model runs in eval mode,
    where windows do not interact, so each keeps the values it had in the whole batch; only the
    loss's mean (and so every gradient's scale) is over fewer windows."""
    try:
        picked = [int(part) for part in spec.split(",")]
    except ValueError:
        raise LocalizeError(f"--windows {spec!r}: comma-separated window indices, e.g. --windows 2 or --windows 0,3") from None
    size = batch.x.shape[0]
    if any(not 0 <= i < size for i in picked):
        raise LocalizeError(f"--windows {spec}: {source} holds windows 0..{size - 1}")
    return Batch(batch.x[picked], None if batch.y is None else batch.y[picked],
                 None if batch.valid is None else batch.valid[picked], batch.pos_weight), picked


def check_batch_shape(config: Config, batch: Batch, source: str) -> None:
    """The batch's shape against the model's, before any model is built: its channels, and a
    length the TCN's downsampling divides (the logits come back at T / stride · stride)."""
    if batch.x.shape[1] != config.model.n_chans:
        names = montage_channels(config.model.montage)
        raise LocalizeError(f"{source}: the batch has {batch.x.shape[1]} channels, the model ({config.model.montage} "
                            f"montage) reads {config.model.n_chans}: {', '.join(names[:4])}, ..., {names[-1]}, in that "
                            "order; build the batch in that montage, or, for weights whose montage is another, pass "
                            "--config the config these weights were trained with")
    length, stride = batch.x.shape[2], config.model.tcn.stride_down
    if length % stride:
        raise LocalizeError(f"{source}: the batch's length T = {length} is not a multiple of model.tcn.stride_down "
                            f"= {stride}: crop or pad x and y to {length - length % stride} or "
                            f"{length + stride - length % stride} samples")


def window_length_note(config: Config, batch: Batch) -> str | None:
    """A note where the batch's windows are not the length the config trains on: the model runs at
    any multiple of the TCN's stride, but its scans and graphs then see another length than
    training did, and a NaN of 60 s windows need not show on 30 s ones."""
    window = round(config.data.window_seconds * config.preprocess.sfreq)
    length = batch.x.shape[2]
    if length == window:
        return None
    return (f"the batch's windows hold T = {length} samples, the config's {window} (data.window_seconds "
            f"{config.data.window_seconds:g} s at preprocess.sfreq {config.preprocess.sfreq} Hz): the runs see "
            "windows of another length than training did")


def check_weights(problem: Problem, as_loaded: Config, fix: str = CONFIG_FIX) -> None:
    """The weights' names and shapes against the model of the problem's config, as parity.convert
    checks them, before any model is built (torch's load_state_dict raised its own traceback
    there, exit 1, as if that were a finding). `as_loaded` is the config read with the weights,
    before --set: a mismatch only the --set makes is the --set's, and the fix says so; any other
    gets `fix`."""
    from parity.convert import torch_shapes, weight_problems

    problems = weight_problems(torch_shapes(problem.config.model), problem.weights, "the weights")
    if not problems:
        return
    if as_loaded.model != problem.config.model and not weight_problems(torch_shapes(as_loaded.model),
                                                                       problem.weights, "the weights"):
        fix = ("the --set changes the model's shape, and trained weights keep the shape they were trained "
               "with: drop the --set of the fields that size the model (layers, widths, channels)")
    raise LocalizeError(f"{problem.source}: the weights do not fit the model its config describes "
                        f"({len(problems)} mismatch{'es' * (len(problems) > 1)}):\n"
                        + "\n".join([*shown_lines(problems), fix]))


def load_dump(path: Path) -> Problem:
    """A training NaN dump of either framework: nan.json (config, pos_weight), batch.npz, and the
    state from before the step (jaxbrr checkpoint/ or torchref model.pt)."""
    record_path = path / "nan.json"
    if not record_path.is_file():
        partial = path.with_name(path.name + ".tmp") if path.name else None  # `.` and `/` have none
        why = (f"{partial} is one a run was writing when it stopped: its model.pt and batch.npz, where whole, "
               "localize with --checkpoint and --batch" if partial is not None and partial.is_dir() else
               "no such folder" if not path.exists() else "no nan.json")
        raise LocalizeError(f"{path}: not a NaN dump ({why}); training writes them to WORKDIR/nan/step_N")
    try:
        record = read_nan_record(path)
    except CheckpointError as error:
        raise LocalizeError(str(error)) from None
    notes: list[str] = []
    batch = read_batch(path / "batch.npz", notes)
    batch.pos_weight = float(record.get("pos_weight", 1.0))
    said: list[str] = []
    config, weights, names, kind = load_checkpoint(path, None, said)
    check_batch_shape(config, batch, str(path))
    why = record.get("why") or record.get("error") or ""
    sources = [f"{stem} from {start:g} s" for stem, start in record["windows"]] if "windows" in record else None
    metrics = path.parent.parent / METRICS_FILE  # WORKDIR/nan/step_N -> WORKDIR/metrics.jsonl
    return Problem(config, weights, batch, f"dump {path} (step {record.get('step')}: {why})".strip(), notes=notes,
                   checkpoint_names=names, sources=sources, history=run_history(metrics, record.get("step")),
                   history_file=str(metrics) if metrics.is_file() else "", kind=kind, said=said)


def run_history(metrics: Path, step: int | None) -> list[dict]:
    """The last HISTORY_SHOWN train records of the run before `step` (none where the dump was moved
    away from its run's folder): whether loss and grad norm climbed for steps before the NaN, or
    the NaN came out of a calm run, is the first thing to know about it."""
    if step is None:
        return []
    records = [r for r in read_metrics(metrics) if r.get("kind") == "train" and r.get("step", step) < step]
    return records[-HISTORY_SHOWN:]


def load_checkpoint(path: Path, config_path: str | None, said: list[str] | None = None,
                    ) -> tuple[Config, dict[str, np.ndarray], dict[str, str], str]:
    """Neutral weights and config of any kind (parity.convert.read_any: common/checkpoints.py,
    and orbax for a jaxbrr checkpoint without its neutral copy), the names the checkpoint spells
    its weights by where they differ (Problem.checkpoint_names), and its kind; what it ignored or
    assumed is printed and added to `said` (Problem.said: the JSON keeps what the console said)."""
    from parity.convert import read_any

    try:
        weights = read_any(path, config_path)
    except (CheckpointError, ValueError) as error:
        raise LocalizeError(str(error)) from None
    for note in weights.notes:
        print(f"note: {note}")
    if said is not None:
        said += weights.notes
    return weights.config, weights.arrays, weights.spelled, weights.kind
