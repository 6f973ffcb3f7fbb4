"""`python -m jaxbrr.evaluate`: score seizure annotations, or a checkpoint on whole recordings.

Modes (one per run):
    --score REF_DIR HYP_DIR   score existing `.csv_bi` hypotheses against references, no model:
                              files are paired by name at any depth (common/eval/score.py)
    --checkpoint CKPT [--split dev|eval | --edf-dir DIR]
                              run the checkpoint's model over whole recordings (the dev split of
                              its config's data by default; every EDF under DIR with its labels,
                              as build reads them (common/data/corpora.py), with --edf-dir), stitch, post-process
                              and score: `run_checkpoint` below, common/eval/report.py

Scores: NEDC v6.0.0 OVLP, TAES and epoch for the seiz label (common/eval/nedc.py) and SzCORE event
scoring, averaged over subjects (common/eval/szcore.py). Prints a table; with --out, writes
DIR/metrics.json atomically:

    {"records": N, "duration_seconds": D,
     "nedc": {"ovlp" | "taes" | "epoch": {"seiz": {LABEL_METRICS}, "bckg": {...},
                                          "summary": {SUMMARY_METRICS},
                                          "per_file": {record: {FILE_METRICS[method]}}}},
     "szcore": {"mean": {SZCORE_METRICS}, "std": {...}, "subjects": S,
                "per_subject": {subject: {COUNTS and SZCORE_METRICS}}}}

NEDC ratios are fractions (NEDC prints them as %). An undefined SzCORE metric (NaN) is written
as null, JSON having no NaN. The checkpoint mode adds sample-level metrics, sensitivity at fixed
FA/24h, the reference and hypothesis `.csv_bi` files it scored and plots (common/eval/report.py),
"checkpoint", "source", "skipped" (files the cache build could not use, with the reason) and
"labels_cut" ({stem: {"clipped_events", "dropped_events", "annotations"}} for recordings whose
seizure events ran past their end; printed too) and "not_finite" (recordings on which the model's
output is NaN/Inf, left out: their first such windows are saved as OUT/nonfinite/<stem>.npz, the
localiser's --batch).
--score adds "unmatched": {"reference": [files], "hypothesis": [files]}, the files with no file of
the same name on the other side, and "refused": [why], pairs that cannot be scored (a malformed
file, durations that differ), naming the files; neither is scored.

With --split the recordings are those the run put in that split, as its WORKDIR/splits.json
records them (common/data/prepare.py SPLITS_FILE: the corpus split afresh may have moved patients
since), else those the checkpoint's own config puts there: `--set` may not change what decides
it (SPLIT_FIELDS below), since another split could hand the model its own training patients to
score; --edf-dir DIR scores other recordings. (Weights without their run's config, a .pt, .safetensors or original checkpoint,
take the data section from --config or the defaults, and may set it.)

Exit status: 0 scored; 2 bad arguments, checkpoint or input files, and also when an input was left
out: with --edf-dir an EDF under DIR that was skipped, with --split a recording of that split
skipped building the cache (its official folder's, or a patient's whose other recordings are in
it), a recording on which the model's output is NaN/Inf, with --score a file without a partner of the same name or a pair refused (the others are
scored, the left-out ones listed on stderr). Files of other splits skipped building the cache
are listed, and with their split ("split": null where it is unknown) in metrics.json's "skipped".
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.checkpoints import NEUTRAL_FILE, TORCHREF_STEP_FILE
from common.config import ConfigError, parse_override
from common.data.cache import skip_line
from common.eval.recordings import NonFinite, nonfinite_line, predict_recordings
from common.eval.report import checkpoint_lines
from common.eval.score import METRICS_FILE, metrics_table, pair_records, score_pairs, write_metrics
from common.files import atomic_path, check_writable_folder, sigterm_exits
from common.progress import add_progress_argument, plain_lines, wants_bars
from common.shown import SUMMARY_SHOWN, shown_lines

EXIT_OK, EXIT_INPUT = 0, 2

# What decides which recordings are in which split (common/data/prepare.py `prepare`): the files
# found (edf_glob, and synthetic, which writes them), whose they are (corpus), the split itself,
# and which recordings the cache build keeps, since a seeded split permutes the patients of the
# cached recordings and one left out reshuffles them all (preprocess, and how labels are read).
# data.data_dir may change: the same corpus moved to another machine or folder holds the same
# patients, hence the same split.
# Weights read with their run's config carry its data section (carries_its_split); a .pt file or
# an original checkpoint takes it from --config or the defaults: there the split is the config's.
SPLIT_FIELDS = ("data.edf_glob", "data.synthetic", "data.corpus", "data.split",
                "data.seizure_labels", "data.background_labels", "data.label_duration_tolerance_seconds",
                "data.clock_duration_tolerance_seconds",
                "data.listed_as", "data.chbmit_unlisted", "preprocess")


# ----------------------------------------------------------------------------------------------
# --checkpoint


def default_out_dir(step_dir: Path, source: str) -> Path:
    """WORKDIR/eval/<kind>-<step>/<source> for a step WORKDIR/checkpoints/<kind>/<step> (jaxbrr's
    folder `36`, torchref's file `step_000036.pt`: both `best-36`; a jaxbrr step's neutral copy
    `36/model.safetensors` is its step where read with the run's config: run_checkpoint)."""
    if _step_of(step_dir) != step_dir:
        raise ValueError(f"{step_dir}: read without its run's config (given --config, or saved before a step's "
                         "copy carried it), a step's weights are not evaluated as its run's, so their scores do "
                         "not go in the run's eval folder: pass --out DIR")
    if run_folder(step_dir) is None:
        raise ValueError(f"{step_dir} is not inside a run's checkpoints/ folder, so there is no "
                         "run folder to write into: pass --out DIR")
    torchref_step = TORCHREF_STEP_FILE.fullmatch(step_dir.name)
    step = int(torchref_step[1]) if torchref_step else step_dir.name
    return run_folder(step_dir) / "eval" / f"{step_dir.parent.name}-{step}" / source


def carries_its_split(checkpoint: str | Path, config_path: str | Path | None = None) -> bool:
    """Whether the weights are read with their run's config, data section included
    (common.checkpoints.carries_run_config). A .safetensors file does not carry its run's
    splits.json: its split is computed from that config."""
    from common.checkpoints import carries_run_config, locate

    located = locate(checkpoint)
    return carries_run_config(located.kind, located.path, config_path)


def refuse_split_overrides(overrides: Sequence[str], split: str) -> None:
    """ConfigError for the first `--set` of a field in SPLIT_FIELDS (or of a section holding one):
    with --split the split is the checkpoint's own."""
    for text in overrides:
        key, _ = parse_override(text)
        if any(key == f or key.startswith(f"{f}.") or f.startswith(f"{key}.") for f in SPLIT_FIELDS):
            raise ConfigError(
                f"--set {text}: {key} decides which recordings are in which split, so with --split it stays "
                f"the checkpoint's: another value could put the model's training patients into the {split} "
                "split it scores; drop this --set, or score other recordings with --edf-dir DIR")


def _step_of(path: Path) -> Path:
    """A jaxbrr step's folder for its neutral copy (STEP/model.safetensors), else path itself."""
    return path.parent if path.name == NEUTRAL_FILE and (path.parent / "meta").is_dir() else path


def run_folder(step_dir: Path) -> Path | None:
    """WORKDIR of a step WORKDIR/checkpoints/<kind>/<step>, else None."""
    return step_dir.parents[2] if step_dir.parent.parent.name == "checkpoints" else None


def _recordings(config, split: str | None, edf_dir: str | None, progress: bool, run: Path | None = None,
                plain_lines: bool = False):
    """(corpus, stems, skipped files, source description) of what is to be evaluated. With
    --split, the run's recorded split where it has one (SPLITS_FILE): the corpus split afresh may
    put other patients in it, some the run trained on."""
    from common.data.cache import Corpus, build_cache
    from common.data.prepare import SPLITS_FILE, followed_lines, prepare, skipped_by_split

    if edf_dir is not None:
        folder = Path(edf_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"--edf-dir {folder}: no such folder")
        # every EDF under DIR is scored, so no split: a TUSZ split folder (edf/eval) has no train/ ...
        data = dataclasses.replace(config.data, data_dir=str(folder), synthetic=None,
                                   split=dataclasses.replace(config.data.split, kind="seeded"))
        build = build_cache(dataclasses.replace(config, data=data), progress=progress, plain_lines=plain_lines)
        corpus = Corpus(build.root)
        if not corpus.stems:
            reasons = "".join(f"\n{line}" for line in shown_lines([skip_line(s) for s in build.survey.left_out + build.skipped],
                                                                   limit=SUMMARY_SHOWN))
            raise ValueError(f"--edf-dir {folder}: no usable recording (EDF files matching "
                             f"{config.data.edf_glob} with their labels){reasons}")
        skipped = [{**item, "split": None} for item in build.survey.left_out + build.skipped]  # no split here
        return corpus, corpus.stems, skipped, {"edf_dir": str(folder.resolve())}
    prepared = prepare(config, progress=progress, keep_split=None if run is None else run / SPLITS_FILE,
                       plain_lines=plain_lines)
    if prepared.followed is not None:
        print("\n".join(followed_lines(prepared.followed)))
    stems = prepared.splits[split]
    if not stems and prepared.followed is not None and prepared.followed.sizes.get(split):
        raise ValueError(f"{prepared.followed.path}: the run's {split} split holds no recording the corpus under "
                         f"{config.data.data_dir} yields now (not found there: {len(prepared.followed.missing)} of the "
                         "run's recordings, listed above): restore them, or score other recordings with --edf-dir DIR")
    if not stems:
        other = "eval" if split == "dev" else "dev"
        raise ValueError(f"the {split} split of {config.data.data_dir} is empty: the checkpoint's "
                         f"data.split, which its training used, puts no recording in it; evaluate "
                         f"--split {other}, or score other recordings with --edf-dir DIR")
    source = {"split": split, "data_dir": config.data.data_dir}
    if prepared.followed is not None:
        source["split_file"] = str(prepared.followed.path)
    return prepared.corpus, stems, skipped_by_split(prepared), source


def checkpoint_table(metrics: dict) -> str:
    """Sample level, sensitivity at FA/24h, then the event scores at the configured thresholds."""
    post = metrics["postprocess"]
    return "\n".join([*checkpoint_lines(metrics), "",
                      f"events at the configured τ_on {post['tau_on']:g} / τ_off {post['tau_off']:g}:",
                      metrics_table(metrics)])


def _describe_source(source: dict) -> str:
    if "edf_dir" in source:
        return f"the EDF files under {source['edf_dir']}"
    return f"the {source['split']} split of {source['data_dir']}"


def run_checkpoint(checkpoint: str, split: str | None = None, edf_dir: str | None = None,
                   out: str | None = None, overrides: Sequence[str] = (), max_timelines: int = 20,
                   progress: bool = True, config_path: str | None = None, plain_lines: bool = False) -> int:
    """Load, predict every recording, score, write; the exit status of the module docstring.
    Without bars, `plain_lines` has the cache build, the model's windows and the threshold sweep
    print a line a minute (common/progress.py)."""
    from common.checkpoints import CheckpointError
    from common.data.prepare import label_issues, labels_cut
    from common.eval.report import check_out_dir, evaluate_traces, remove_earlier_outputs
    from common.eval.sensitivity_at_fa import metric_name
    from jaxbrr.predict import describe, load_checkpoint, make_predict

    split = split or ("dev" if edf_dir is None else None)
    source_name = split if edf_dir is None else f"edf-{Path(edf_dir).resolve().name}"
    try:
        own_split = carries_its_split(checkpoint, config_path)
        if edf_dir is None and own_split:
            refuse_split_overrides(overrides, split)
        config, model, weights_path = load_checkpoint(checkpoint, overrides, config_path)
        for rate in config.eval.fa_rates:  # fixed metric names, checked before any compute
            metric_name(rate)
        # a step's neutral copy read with its run's config is that step, its scores the run's
        step = _step_of(weights_path) if own_split else weights_path
        out_dir = Path(out) if out else default_out_dir(step, source_name)
        # before the cache is built and every recording predicted, not after
        check_writable_folder(out_dir, "--out" if out else "the run's eval folder (the default --out)",
                              None if out else "pass --out DIR, a folder you can write to")
        check_out_dir(out_dir)  # no one's labels in its ref/ hyp/, which evaluate replaces
        print(describe(config, weights_path))
        corpus, stems, skipped, source = _recordings(config, split, edf_dir, progress,
                                                     run_folder(step) if own_split else None, plain_lines)
    except (CheckpointError, ConfigError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    hours = sum(corpus.recordings[s]["n_samples"] / corpus.recordings[s]["sfreq"] for s in stems) / 3600
    # what the scores leave out: every skipped EDF under --edf-dir, the split's own with --split
    lost = skipped if edf_dir is not None else [item for item in skipped if item["split"] == split]
    # a seeded split places only patients with a cached recording: one whose every recording was
    # skipped is in no split, perhaps this one
    unplaced = [] if edf_dir is not None else [item for item in skipped if item["split"] is None]
    print(f"evaluating {len(stems)} recordings ({hours:.2f} h): {_describe_source(source)}"
          + (f"; {len(lost)} more skipped, not scored" if lost else "")
          + (f"; {len(unplaced)} skipped in no split" if unplaced else "")
          + (" (listed at the end)" if lost or unplaced else ""))
    issues = label_issues(corpus.recordings, stems)
    if issues:  # the reference files hold only what fits the recording: say so beside the scores
        print(f"labels cut in {len(issues)} recording(s); the reference files hold the cut labels:")
        print("\n".join(f"  {line}" for line in issues))
    nonfinite: list[NonFinite] = []
    traces = predict_recordings(make_predict(model), corpus, stems, config, progress=progress, desc="evaluate",
                                nonfinite=nonfinite, plain_lines=plain_lines)
    # nothing of an earlier run beside this one's metrics (all of it where nothing is scored now)
    remove_earlier_outputs(out_dir, everything=not traces)
    localize = _localize_options(config_path, overrides)
    not_finite = [_save_nonfinite(found, corpus, config, out_dir, weights_path, localize) for found in nonfinite]
    for item in not_finite:
        print(f"error: {item['line']}", file=sys.stderr)
    metrics = {"checkpoint": str(weights_path), "source": source}
    if traces:
        metrics.update(evaluate_traces(traces, config, out_dir, max_timelines, progress, plain_lines))
        print(checkpoint_table(metrics))
        if metrics["dropped_long_events"]:
            dropped = metrics["dropped_long_events"]
            print(f"{sum(map(len, dropped.values()))} detection(s) longer than "
                  f"{config.postprocess.max_duration_seconds:g} s dropped from the events of {len(dropped)} "
                  "recording(s) (metrics.json's dropped_long_events): --set postprocess.long_events=split "
                  "reports them")
    else:
        metrics["records"] = 0
    metrics.update(skipped=skipped, not_finite=not_finite, labels_cut=labels_cut(corpus.recordings, stems))
    written = write_metrics(metrics, out_dir)
    if traces:
        print(f"wrote {written}; plots in {out_dir} ({metrics['timelines']} of {len(traces)} timelines, "
              f"--max-timelines); scored files in {out_dir / 'ref'}, {out_dir / 'hyp'}")
    for item in skipped:
        print(skip_line(item), file=sys.stderr)
    if lost:
        where = f"EDF files under {edf_dir}" if edf_dir is not None else f"recordings of the {split} split"
        print(f"{len(lost)} of {len(lost) + len(stems)} {where} skipped (above); the other {len(stems)} "
              "are scored", file=sys.stderr)
    if not traces:
        print(f"error: the model's output is NaN/Inf on every one of the {len(stems)} recordings: nothing to score "
              f"(wrote {written})", file=sys.stderr)
    elif not_finite:
        print(f"{len(not_finite)} of {len(stems)} recordings not scored: the model's output is NaN/Inf on them "
              f"(above); the other {len(traces)} are scored", file=sys.stderr)
    return EXIT_INPUT if lost or not_finite else EXIT_OK


def _localize_options(config_path: str | None, overrides: Sequence[str]) -> str:
    """The localiser's options for the model this evaluation ran: its --config and --set."""
    return "".join([f" --config {shlex.quote(str(config_path))}" * (config_path is not None),
                    *(f" --set {shlex.quote(text)}" for text in overrides)])


# the windows of a recording with a non-finite output kept for the localiser (its --batch)
NONFINITE_WINDOWS_KEPT = 4


def _save_nonfinite(found: NonFinite, corpus, config, out_dir: Path, weights_path: Path, options: str = "") -> dict:
    """The first windows whose output is non-finite, as OUT/nonfinite/<stem>.npz (x, y, valid: the
    localiser's --batch), and the record metrics.json keeps with the line that says where to look."""
    cut = [corpus.window(found.stem, start, config.window_samples) for start in found.starts[:NONFINITE_WINDOWS_KEPT]]
    path = out_dir / "nonfinite" / f"{found.stem}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, x=np.stack([c[0] for c in cut]), y=np.stack([c[1] for c in cut]).astype(np.float32),
                 starts=np.array(found.starts[:NONFINITE_WINDOWS_KEPT]))
    line = (f"{nonfinite_line(found)}: not scored; its first {len(cut)} such windows are in {path}, and where the "
            f"NaN is born: python -m parity.localize --checkpoint {weights_path} --batch {path}{options}")
    return {"stem": found.stem, "windows": found.windows, "non_finite_windows": len(found.starts),
            "first_seconds": found.starts[0] / found.sfreq, "batch": str(path), "line": line}


def main(argv: list[str] | None = None) -> int:
    with sigterm_exits():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxbrr.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--score", nargs=2, metavar=("REF_DIR", "HYP_DIR"),
                      help="score existing .csv_bi hypotheses against references (no model)")
    mode.add_argument("--checkpoint", metavar="CKPT",
                      help="evaluate weights of any kind (a jaxbrr or torchref run folder, checkpoints/best|last "
                           "or a step, a .pt or .safetensors file, a brain-go-brr v2 checkpoint)")
    parser.add_argument("--config", metavar="CFG",
                        help="with --checkpoint: for weights that carry no config (a bare state dict)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--split", choices=("dev", "eval"),
                        help="with --checkpoint: a split of the checkpoint config's data (default dev)")
    source.add_argument("--edf-dir", metavar="DIR",
                        help="with --checkpoint: every EDF under DIR (a corpus as it ships), labels in <stem>.csv_bi "
                             "or .csv or the corpus's own files (CHB-MIT, Siena)")
    parser.add_argument("--out", metavar="DIR",
                        help=f"write DIR/{METRICS_FILE} (with --checkpoint also the plots and the "
                             ".csv_bi files; default WORKDIR/eval/<kind>-<step>/<split> or .../edf-<DIR name>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="with --checkpoint: override a config field outside `model` (with --split, "
                             "not those that decide the split: data.split.*, data.corpus, preprocess.*, ...), or "
                             "model.ssm.* and model.stability.* (how the model computes)")
    parser.add_argument("--max-timelines", type=int, default=20, metavar="N",
                        help="with --checkpoint: plot at most N per-recording timelines (default 20)")
    add_progress_argument(parser)
    args = parser.parse_args(argv)
    bars = wants_bars(args.progress)

    if args.checkpoint is None:
        given = [flag for flag, value in (("--split", args.split), ("--edf-dir", args.edf_dir),
                                          ("--set", args.set), ("--config", args.config)) if value]
        if given:
            parser.error(f"{', '.join(given)} only apply with --checkpoint")
        return _score_mode(args)
    if args.max_timelines < 0:
        parser.error(f"--max-timelines must be >= 0, got {args.max_timelines}")
    return run_checkpoint(args.checkpoint, split=args.split, edf_dir=args.edf_dir, out=args.out,
                          overrides=args.set, max_timelines=args.max_timelines,
                          progress=bars, config_path=args.config, plain_lines=plain_lines(args.progress))


def _score_mode(args) -> int:
    try:
        if args.out:  # before scoring, not after the scores are printed
            check_writable_folder(args.out, "--out")
        pairing = pair_records(*args.score)
        metrics = score_pairs(pairing.pairs)
    except (OSError, ValueError) as err:  # missing folders, no pair at all, malformed files, --out
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    metrics["unmatched"] = {"reference": list(map(str, pairing.reference_only)),
                            "hypothesis": list(map(str, pairing.hypothesis_only))}
    metrics["refused"] = pairing.refused
    print(metrics_table(metrics))
    if args.out:
        print(f"wrote {write_metrics(metrics, args.out)}")
    if pairing.reference_only or pairing.hypothesis_only:
        print(f"error: {pairing.unmatched_message()}", file=sys.stderr)
    if pairing.refused:
        print(f"error: {pairing.refused_message()}", file=sys.stderr)
    return EXIT_INPUT if pairing.reference_only or pairing.hypothesis_only or pairing.refused else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
