"""`python -m jaxbrr.predict --checkpoint CKPT PATH [PATH ...] [--out DIR]`: seizure events.

Each PATH is an EDF file or a folder, which stands for every `.edf` under it at any depth (a
downloaded corpus as it ships); files and folders may be mixed. For each EDF, into --out
(default `predictions/`):

    <stem>.csv_bi   the predicted events in TUSZ's csv_v1.0.0 (common/data/csv_bi.py), one
                    `TERM,start,stop,seiz,confidence` row each, 4 decimals; header duration = the EDF's,
                    and a `# written_by = jaxbrr.predict` line (NEDC's tools skip it)
    <stem>.png      the preprocessed EEG with the events shaded, the probability trace, τ_on/τ_off

Pipeline, all from the checkpoint's config (`--set` may change any field outside `model` and
`data.montage`, e.g. `--set postprocess.tau_on=0.9`, and how the model computes: model.ssm.*,
model.stability.*):
read the EDF in the montage the model was trained on (common/data/edf.py), preprocess (common/data/preprocess.py), cut windows at
`eval.stride_seconds` in batches of `eval.batch_size`, average the overlaps into one trace
(common/eval/recordings.py `predict_signals`; a recording shorter than one window is one padded
window, masked), post-process into events (common/eval/postprocess.py).

Montages: a model trained on `ref19` reads referential recordings, one trained on `bipolar` or
`bipolar18` reads bipolar (or re-references referential ones that carry every electrode). A
recording that only another montage can read is refused with a message saying so, never
re-montaged silently.

Durations: the trace has round(N · sfreq / sfreq_EDF) samples, which can run up to half a sample
past the EDF's own end N / sfreq_EDF; an event reaching the trace's end is written to stop at the
EDF's end (the .csv_bi duration), so reference and hypothesis files of a recording pair up.

Outputs never become labels: a .csv_bi beside an EDF is read as that recording's labels (README,
"Data"), so predict refuses, before running the model, an --out that holds an EDF of a stem it
predicts (the EDF's own folder, say), and an --out where a <stem>.csv_bi exists that it did not
write (no written_by line: perhaps reference labels). An --out that cannot be written is refused
then too (common/files.py check_writable_folder).

Bad files (missing, corrupt, wrong montage, another file with the same stem) are reported and
skipped, each with its fix; the others are still predicted. Exit status: 0 every file predicted, 2 a bad checkpoint,
config or argument, or at least one file skipped (each named on stderr with the fix).

The checkpoint helpers (`load_checkpoint`, `make_predict`) serve `python -m jaxbrr.evaluate` too.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from common.checkpoints import FIX, RUN_KINDS, CheckpointError, locate
from common.config import Config, ConfigError, parse_override, with_overrides
from common.data.cache import find_recordings
from common.data.csv_bi import Event, write_csv_bi, written_by, written_by_line
from common.data.edf import EDFError, RawRecording, read_edf
from common.data.montage import MONTAGES
from common.data.preprocess import preprocess
from common.eval.postprocess import dropped_long_runs, dropped_note, postprocess
from common.eval.recordings import Predict, predict_signals
from common.files import check_writable_folder, remove_stale_temporaries, sigterm_exits
from common.progress import add_progress_argument, plain_lines, wants_bars
from common.shown import plural, shown_lines
from jaxbrr.precision import set_float32_precision
from jaxbrr.weights import COMPUTE_FIELDS

EXIT_OK, EXIT_INPUT = 0, 2
DEFAULT_OUT = "predictions"
WRITTEN_BY = "jaxbrr.predict"  # the header line that marks a .csv_bi as predict's own

class MontageMismatch(EDFError):
    """A recording the checkpoint's model cannot read, but a model of another montage could."""


# ----------------------------------------------------------------------------------------------
# the checkpoint


def _split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(how the model computes: COMPUTE_FIELDS, the rest); the model's other fields and the
    montage are the checkpoint's."""
    compute, rest = [], []
    for text in overrides:
        key, _ = parse_override(text)
        if key.startswith(COMPUTE_FIELDS):
            compute.append(text)
        elif key == "model" or key.startswith("model.") or key == "data.montage":
            raise ConfigError(f"--set {text}: the model (and its montage) are the checkpoint's; "
                              "only fields outside `model` and `data.montage`, model.ssm.* (how the scan is "
                              "computed, e.g. model.ssm.scan=chunked) and model.stability.* (e.g. "
                              "model.stability.guards=original, an original checkpoint's clamps) can be "
                              "overridden")
        else:
            rest.append(text)
    return compute, rest


def load_checkpoint(path: str | Path, overrides: Sequence[str] = (),
                    config_path: str | Path | None = None) -> tuple[Config, nnx.Module, Path]:
    """(config with overrides, SeizureDetector with the weights, where they came from): weights of
    any kind (jaxbrr.weights.load_model: a jaxbrr or torchref run or checkpoint, a .pt state dict,
    a .safetensors file, a brain-go-brr v2 checkpoint; `config_path` for those that carry no
    whole run config: refused, a ConfigError, for those that do). What the reader ignored is printed.

    Raises CheckpointError (not weights, ones that cannot be restored, or ones holding NaN or Inf,
    which would make every prediction NaN: refused before any recording is read) or ConfigError (a bad
    override), each naming the path and the fix. Any other error (a bug, out of memory) is not the
    checkpoint's and surfaces as it is.
    """
    from jaxbrr.weights import WeightsError, load_model

    found = locate(path)
    where = found.path  # the concrete step or file, for the messages
    if config_path is not None and found.kind in RUN_KINDS:  # it would be read by nothing, in silence
        raise ConfigError(f"--config {config_path}: {where} carries the whole config it was trained with, which is "
                          "what runs; change its fields with --set KEY=VALUE (e.g. --set postprocess.tau_on=0.9), "
                          "or drop --config")
    compute, overrides = _split_overrides(overrides)
    try:
        config, model, located, notes = load_model(path, config_path, compute, finite=True)  # NaN weights: refused
    except (CheckpointError, ConfigError):
        raise
    except WeightsError as err:
        raise CheckpointError(str(err)) from None
    # What a damaged or foreign checkpoint raises (the readers wrap the rest in CheckpointError):
    # orbax and tensorstore a ValueError (a tree or shape that does not match the config, missing
    # or corrupt array files: NOT_FOUND, DATA_LOSS) or FileNotFoundError (no model item), json a
    # JSONDecodeError (a ValueError), a meta or nan.json without its config a KeyError.
    except (ValueError, KeyError, OSError) as err:
        raise CheckpointError(f"{where}: cannot restore the model ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); {FIX}") from None
    for note in notes:
        print(f"note: {note}")
    if notes and (compute or overrides):  # the notes were made on reading, before the --set
        print(f"note: the notes above describe the checkpoint's config as read; --set then changed "
              f"{', '.join([*compute, *overrides])}")
    config = with_overrides(config, overrides, f"{located.path} (its config)")
    if config.model.ssm.scan == "pallas":  # here, not at the first file's compile (every file would fail)
        from jaxbrr.ssd_kernel import require_gpu

        try:
            require_gpu()
        except ValueError as err:
            raise ConfigError(f"{located.path}: {err}, with --set on the same weights") from None
    # on a GPU, train.tf32 of the checkpoint's config (false, full float32, for one written before
    # the field existed, though a GPU run then trained with JAX's TF32 default)
    set_float32_precision(config.train.tf32, jax.default_backend())
    return config, model, located.path


@functools.partial(jax.jit, static_argnums=0)
def probabilities(graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array) -> jax.Array:
    """σ(logits) (B, T) of x (B, C, T), dropout off. The graph definition is static, so models of
    one architecture share one compiled program (predict's and the trainer's validation)."""
    model = nnx.merge(graphdef, state)
    logits, _ = nnx.view(model, deterministic=True, raise_if_not_found=False)(x)  # (B, T)
    return jax.nn.sigmoid(logits)


def make_predict(model: nnx.Module) -> Predict:
    """(B, C, T) float32 numpy -> (B, T) probabilities numpy, jitted (one compile per batch shape)."""
    graphdef, state = nnx.split(model)
    return lambda x: np.asarray(probabilities(graphdef, state, jnp.asarray(x)))


# ----------------------------------------------------------------------------------------------
# one recording


def read_for_model(path: str | Path, config: Config) -> RawRecording:
    """The EDF in the checkpoint's montage; MontageMismatch when only the other montage fits."""
    path = Path(path)
    montage = config.data.montage
    if not path.is_file():
        raise EDFError(f"{path}: no such file or folder; check the path")
    try:
        return read_edf(path, montage, config.preprocess.interpolate)
    except EDFError as err:
        for other in (m for m in MONTAGES if m != montage):
            try:
                read_edf(path, other, config.preprocess.interpolate)
            except EDFError:
                continue
            detail = str(err).removeprefix(f"{path}: ")
            raise MontageMismatch(
                f"{path}: a {other} recording, but the checkpoint's model was trained on the "
                f"{montage!r} montage ({len(MONTAGES[montage])} channels); predict it with a "
                f"checkpoint trained with data.montage: {other} and model.montage: {other}.\n"
                f"  (read as {montage}: {detail})"
            ) from None
        raise


@dataclass
class Prediction:
    source: Path
    stem: str
    duration_seconds: float  # the EDF's own
    probs: np.ndarray  # (n,) at config.preprocess.sfreq
    events: list[Event]
    csv_bi: Path
    png: Path
    flat_channels: list[str] = dataclasses.field(default_factory=list)  # read as zeros (preprocess)
    dropped: list[tuple[float, float]] = dataclasses.field(default_factory=list)  # over max_duration_seconds


def _end_at(events: list[Event], duration_seconds: float) -> list[Event]:
    """Events stopping at most at the EDF's end (module docstring, "Durations")."""
    return [dataclasses.replace(e, stop_seconds=min(e.stop_seconds, duration_seconds)) for e in events]


def predict_file(path: str | Path, config: Config, predict: Predict, out_dir: str | Path,
                 progress: bool = False, plain_lines: bool = False) -> Prediction:
    """Read, preprocess, predict and post-process one EDF; write its .csv_bi and PNG (progress,
    plain_lines: common/eval/recordings.py predict_signals)."""
    from common.eval.plots import plot_prediction  # matplotlib only when files are written

    path, out_dir = Path(path), Path(out_dir)
    raw = read_for_model(path, config)
    signals, report = preprocess(raw.signals_uv, raw.sfreq, config.preprocess, raw.channels,
                                 source=str(path), interpolated=raw.interpolated, repairs=raw.repairs)
    sfreq = config.preprocess.sfreq
    probs = predict_signals(predict, signals, config, progress=progress, desc=path.name, plain_lines=plain_lines)
    _, events = postprocess(probs, sfreq, config.postprocess)
    events = _end_at(events, raw.duration_seconds)
    # the picture first: a file reported as not predicted leaves no .csv_bi behind (a scorer would read it)
    png = plot_prediction(signals, raw.channels, probs, events, sfreq, config.postprocess,
                          out_dir / f"{path.stem}.png",
                          f"{path.name}: {len(events)} predicted seizure{'s' * (len(events) != 1)}")
    csv_bi = write_csv_bi(out_dir / f"{path.stem}.csv_bi", events, raw.duration_seconds, written_by=WRITTEN_BY)
    return Prediction(path, path.stem, raw.duration_seconds, probs, events, csv_bi, png, report.flat_channels,
                      dropped_long_runs(probs, sfreq, config.postprocess))


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; a folder becomes every `.edf` (any case) under it, sorted. A path that does
    not exist stays, so that it is reported with the others instead of ending the run."""
    files = []
    for given in map(Path, paths):
        if given.is_dir():  # into symlinked folders too, as build reads a corpus (find_recordings)
            files.extend(p for p in find_recordings(given, "**/*") if p.suffix.lower() == ".edf")
        else:
            files.append(given)
    return files


def remove_earlier_prediction(out_dir: str | Path, stem: str) -> list[Path]:
    """Delete <stem>.csv_bi (only one predict wrote: check_out_dir refused others before the run)
    and <stem>.png in out_dir, left by an earlier run for a file not predicted now; the removed."""
    csv_bi, png = Path(out_dir) / f"{stem}.csv_bi", Path(out_dir) / f"{stem}.png"
    removed = [path for path in (csv_bi, png) if path.is_file() and (path == png or written_by(path, WRITTEN_BY))]
    for path in removed:
        path.unlink()
    return removed


def check_out_dir(files: Sequence[Path], out_dir: str | Path) -> None:
    """ValueError naming every <stem>.csv_bi predict must not write into out_dir: one beside an
    EDF there (build, train and evaluate would read the prediction as that recording's labels),
    or one predict did not write (perhaps the reference labels)."""
    out_dir = Path(out_dir)
    edfs = {p.stem: p for p in (out_dir.iterdir() if out_dir.is_dir() else ())
            if p.suffix.lower() == ".edf"}
    refused = []
    for stem in dict.fromkeys(path.stem for path in files):
        target = out_dir / f"{stem}.csv_bi"
        if stem in edfs:
            refused.append(f"{target}: beside {edfs[stem]}, whose labels it would become")
        elif target.exists() and not written_by(target, WRITTEN_BY):
            refused.append(f"{target}: exists and predict did not write it (no "
                           f"'{written_by_line(WRITTEN_BY)}' line): perhaps reference labels")
    if refused:
        raise ValueError(f"--out {out_dir}: predict would write {len(refused)} .csv_bi file(s) where they "
                         "must not go:\n" + "\n".join(shown_lines(refused)) + "\nchoose another --out, a folder without "
                         "EDF or label files (an older predict's .csv_bi, without that line, may be deleted instead)")


def describe(config: Config, weights_path: Path) -> str:
    m = config.model
    return (f"checkpoint {weights_path}: {m.architecture}, montage {config.data.montage} ({m.n_chans} "
            f"channels), windows {config.data.window_seconds:g} s every "
            f"{config.eval_stride_samples / config.preprocess.sfreq:g} s, batch {config.eval.batch_size}, "
            f"τ_on {config.postprocess.tau_on:g} / τ_off {config.postprocess.tau_off:g}")


def main(argv: list[str] | None = None) -> int:
    with sigterm_exits():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxbrr.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="weights of any kind: a jaxbrr or torchref run folder (its best checkpoint), "
                             "checkpoints/best|last or one step, a .pt or .safetensors file, a brain-go-brr "
                             "v2 checkpoint")
    parser.add_argument("--config", metavar="CFG", help="for weights that carry no config (a bare state dict)")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="EDF files, or folders: every .edf under a folder, at any depth")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"where <stem>.csv_bi and <stem>.png go (default: {DEFAULT_OUT}/)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field outside `model` (e.g. --set postprocess.tau_on=0.9), or "
                             "how the model computes: model.ssm.* (e.g. --set model.ssm.scan=chunked) and "
                             "model.stability.* (e.g. --set model.stability.guards=original)")
    add_progress_argument(parser)
    args = parser.parse_args(argv)
    bars, lines = wants_bars(args.progress), plain_lines(args.progress)
    files = expand_paths(args.paths)
    if not files:
        print(f"error: no .edf file under {', '.join(args.paths)}; name EDF files or folders holding them",
              file=sys.stderr)
        return EXIT_INPUT
    try:  # the outputs, before the model is loaded or run
        check_writable_folder(args.out, "--out")
        check_out_dir(files, args.out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    if Path(args.out).is_dir():  # what a predict killed (SIGKILL) while writing left there, and only that
        remove_stale_temporaries(Path(args.out), names=("*.csv_bi", "*.png"))
    try:
        config, model, weights_path = load_checkpoint(args.checkpoint, args.set, args.config)
    except (CheckpointError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    print(describe(config, weights_path))
    predict = make_predict(model)

    skipped, stems = [], {}
    bar = tqdm(files, desc="recordings", unit="rec", disable=not bars or len(files) < 2)
    for path in bar:
        if path.stem in stems:
            skipped.append((path, f"{path}: {stems[path.stem]} has the same stem, and its outputs "
                                  f"{args.out}/{path.stem}.csv_bi/.png would be overwritten; rename one "
                                  "or predict them into separate --out folders"))
            tqdm.write(f"error: {skipped[-1][1]}", file=sys.stderr)
            continue
        stems[path.stem] = path
        try:
            result = predict_file(path, config, predict, args.out, progress=bars, plain_lines=lines)
        except (ValueError, OSError) as err:  # EDFError, MontageMismatch, preprocessing, a NaN prediction
            message = str(err) if str(path) in str(err) else f"{path}: {err}"
            removed = remove_earlier_prediction(args.out, path.stem)
            if removed:  # a scorer would read an earlier run's prediction as this one's
                message += f"; removed the outputs an earlier predict wrote for it: {', '.join(map(str, removed))}"
            skipped.append((path, message))
            tqdm.write(f"error: {message}", file=sys.stderr)
            continue
        seizure = sum(e.stop_seconds - e.start_seconds for e in result.events)
        flat = f"; flat channels read as zeros: {', '.join(result.flat_channels)}" if result.flat_channels else ""
        tqdm.write(f"{path}: {result.duration_seconds:.1f} s, {plural(len(result.events), 'event')} "
                   f"({seizure:.1f} s) -> {result.csv_bi}, {result.png}{flat}"
                   + dropped_note(result.dropped, config.postprocess.max_duration_seconds))
    bar.close()
    if skipped:
        done = len(files) - len(skipped)
        print(f"{len(skipped)} of {len(files)} files not predicted (the reasons above)"
              + (f"; the other {done} are in {args.out}" if done else "") + ":", file=sys.stderr)
        for path, _ in skipped:
            print(f"  {path}", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
