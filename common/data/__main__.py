"""Data command line.

    python -m jaxbrr.data synth --out DIR --recordings N --seed S
    python -m jaxbrr.data build [--config CFG] [--set key=value ...]
    python -m jaxbrr.data inspect FILE.edf [--montage ref19|bipolar|bipolar18] [--config CFG] [--plot out.png]
    python -m jaxbrr.data labels DIR --out DIR [--corpus auto|tusz|siena|chbmit|folder] [--config F] [--set K=V]

`labels` writes every recording's labels, read the way `build` reads them (a corpus's own files
included: CHB-MIT summaries and .edf.seizures, Siena seizure lists), as TUSZ `.csv_bi` files
(seizures `seiz`, the gaps `bckg`) in a tree mirroring DIR's, for NEDC and SzCORE tools. A seizure
that runs past its EDF's end is cut there and one that starts after it is dropped, each reported.
It writes every recording it can and exits 2 when it skipped any (each named on stderr with why),
so that a script notices labels it did not get; `build` exits 2 only when nothing is usable.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

from common.config import DEFAULT_CONFIG_HELP, ConfigError, CorpusName, default_config, load_config
from common.data.montage import MONTAGES
from common.files import check_writable_folder
from common.progress import add_progress_argument, plain_lines, wants_bars


def _synth(args) -> int:
    from common.data.synth import generate_corpus

    check_writable_folder(args.out, "--out")

    paths = generate_corpus(args.out, recordings=args.recordings, seed=args.seed, patients=args.patients,
                            progress=wants_bars(args.progress))
    print(f"{len(paths)} recordings in {args.out}")
    return 0


def _build(args) -> int:
    """Exit 2 when no recording could be used (all skipped, or none found); a build that skipped
    some but kept others exits 0, the skipped ones listed in its summary."""
    from common.data.cache import MANIFEST
    from common.data.prepare import format_summary, prepare

    config = load_config(args.config or default_config(), args.set)
    prepared = prepare(config, progress=wants_bars(args.progress), plain_lines=plain_lines(args.progress))
    print(format_summary(prepared), flush=True)  # before stderr's error line, in a log holding both
    build = prepared.build
    if not build.built and not build.reused:
        left_out = len(build.survey.left_out) if build.survey is not None else 0
        why = (f"all {len(build.skipped)} skipped (the reasons are above and under `skipped` in "
               f"{build.root / MANIFEST}): fix those files" if build.skipped
               else f"none found under {config.data.data_dir}: check data.data_dir and data.edf_glob")
        aside = f"; {left_out} EDF file(s) left out by the corpus layout (listed above)" if left_out else ""
        print(f"error: no usable recording: {why}{aside}", file=sys.stderr)
        return 2
    return 0


def _labels(args) -> int:
    from common.data.annotations import check_duration, duration_tolerance, labels_of
    from common.data.cache import find_recordings, skip_line
    from common.data.corpora import survey
    from common.data.csv_bi import Event, with_background, write_csv_bi
    from common.data.edf import read_header

    source, out = Path(args.dir), Path(args.out)
    data = load_config(args.config, args.set).data
    if not source.is_dir():
        raise FileNotFoundError(f"DIR {source}: no such folder; name the corpus folder, as downloaded")
    edfs = find_recordings(source)
    if not edfs:
        raise FileNotFoundError(f"DIR {source}: no EDF file (*.edf) under it, so no labels to write; "
                                "name the corpus folder, as downloaded")
    _check_not_beside_edfs(source, edfs, out)
    check_writable_folder(out, "--out")
    found = survey(source, edfs, args.corpus or data.corpus, "seeded")  # no split: every file
    print(found.headline())
    written, failed = 0, list(found.left_out)
    for recording in found.recordings:
        edf = recording.edf
        try:
            annotations = labels_of(edf, found.corpus, data)
            header = read_header(edf)
            duration = header.n_records * header.record_seconds
            check_duration(annotations, edf, duration, duration_tolerance(annotations, data))
        except ValueError as err:  # AnnotationError, EDFError
            failed.append({"source": str(edf), "reason": str(err)})
            continue
        seizures = annotations.seizures(data.seizure_labels)  # merged over channels, every seizure type
        kept = [Event(a, min(b, duration), "seiz") for a, b in seizures if a < duration]
        cut = sum(1 for a, b in seizures if a < duration < b)
        dropped = len(seizures) - len(kept)
        target = out / edf.relative_to(source).with_suffix(".csv_bi")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_csv_bi(target, with_background(kept, duration), duration)
        written += 1
        note = "".join([f", {cut} cut at the end ({duration:g} s)" if cut else "",
                        f", {dropped} starting after the end dropped" if dropped else ""])
        print(f"{target}: {len(kept)} seizure(s) from {annotations.path}{note}")
    print(f"wrote {written} .csv_bi file(s) under {out}")
    for item in failed:
        print(skip_line(item), file=sys.stderr)
    return 2 if failed else 0


def _check_not_beside_edfs(source: Path, edfs: list[Path], out: Path) -> None:
    """ValueError when a .csv_bi of the mirrored tree would land beside an EDF of the same name:
    build reads such a file as that recording's labels ahead of the corpus's own files (a CHB-MIT
    summary fixed later would be outvoted by the stale copy; a TUSZ .csv_bi would be replaced)."""
    beside = []
    for edf in edfs:
        target = out / edf.relative_to(source).with_suffix(".csv_bi")
        if target.parent.is_dir() and any(p.stem == target.stem and p.suffix.lower() == ".edf"
                                          for p in target.parent.iterdir()):
            beside.append(target)
    if beside:
        raise ValueError(f"--out {out}: {len(beside)} .csv_bi file(s) would lie beside their EDF, e.g. "
                         f"{beside[0]}, and build would read them as the recordings' labels ahead of the "
                         "corpus's own files; choose an --out outside the corpus folder")


def _inspect(args) -> int:
    import numpy as np

    from common.data.annotations import check_duration, duration_tolerance, labels_of, seizure_mask
    from common.data.corpora import corpus_of_name
    from common.data.csv_bi import AnnotationError
    from common.data.edf import read_edf
    from common.data.preprocess import preprocess

    config = load_config(args.config, args.set)
    montage = args.montage or config.data.montage
    edf = Path(args.file)
    if args.plot:  # before the file is read
        if args.start < 0 or args.seconds <= 0:
            raise ValueError(f"--start {args.start:g} --seconds {args.seconds:g}: the plot needs --start >= 0 "
                             "and --seconds > 0")
        check_writable_folder(Path(args.plot).parent, "--plot", "set --plot to a file in a folder you can write to")
    raw = read_edf(edf, montage, config.preprocess.interpolate)
    if args.plot and args.start >= raw.duration_seconds:
        raise ValueError(f"{edf}: --start {args.start:g} s is at or past the recording's end "
                         f"({raw.duration_seconds:g} s): choose a --start below {raw.duration_seconds:g}")
    signals, report = preprocess(raw.signals_uv, raw.sfreq, config.preprocess, raw.channels, source=str(edf),
                                 interpolated=raw.interpolated, repairs=raw.repairs, refuse_flat=False)
    print(f"{edf}  montage={montage}  {raw.sfreq:g} Hz -> {config.preprocess.sfreq} Hz  "
          f"{raw.duration_seconds:.2f} s  ({signals.shape[-1]} samples after preprocessing)")
    print(f"\n{'signal':<10} {'clipped':>8} {'non-finite':>10}  source")
    for i, name in enumerate(raw.channels):
        flags = " [flat]" if name in report.flat_channels else ""
        flags += " [interpolated]" if name in report.interpolated_channels else ""
        print(f"{name:<10} {report.clipped_samples[i]:>8} {report.nonfinite_samples[i]:>10}  "
              f"{raw.channel_sources[name]}{flags}")
    for repair in report.repairs:
        print(f"repaired: {repair}")
    if len(report.flat_channels) == len(raw.channels):
        print("every channel is flat: build, evaluate and predict refuse this recording (it holds no EEG)")
    labels = None
    corpus = config.data.corpus if config.data.corpus != "auto" else corpus_of_name(edf.stem)
    try:
        annotations = labels_of(edf, corpus, config.data)
        check_duration(annotations, edf, raw.duration_seconds, duration_tolerance(annotations, config.data))
    except AnnotationError as err:  # the signals are still worth a look
        print(f"\nno labels: {err}")
    else:
        labels, label_report = seizure_mask(annotations, signals.shape[-1], config.preprocess.sfreq,
                                            config.data.seizure_labels)
        print(f"\nlabels {annotations.path}: {label_report.events} seizure events, "
              f"{label_report.seizure_seconds:.2f} s of seizure, {label_report.clipped_events} cut at the end, "
              f"{label_report.dropped_events} past the end, {label_report.overlapping_events} overlapping")
    if args.plot:
        plot_recording(signals, labels, config.preprocess.sfreq, raw.channels, args.plot,
                       args.start, args.seconds, title=edf.name)
        print(f"plot written to {args.plot}")
    return 0 if np.isfinite(signals).all() else 1


def plot_recording(signals, labels, sfreq, channels, out, start_seconds=0.0, seconds=30.0, title=""):
    """Stacked traces of a stretch of preprocessed channels, labelled seizure shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from common.files import save_figure

    a = int(start_seconds * sfreq)
    b = min(signals.shape[-1], a + int(seconds * sfreq))
    t = np.arange(a, b) / sfreq
    fig, ax = plt.subplots(figsize=(12, 0.35 * len(channels) + 1.5))
    spacing = 6.0
    for i in range(len(channels)):
        ax.plot(t, signals[i, a:b] - i * spacing, lw=0.5, color="k")
    if labels is not None:
        seizure = labels[a:b].astype(bool)
        ax.fill_between(t, 1, -len(channels) * spacing, where=seizure, color="tab:red", alpha=0.2,
                        step="mid", label="labelled seizure")
        if seizure.any():
            ax.legend(loc="upper right")
    ax.set_yticks(-np.arange(len(channels)) * spacing, channels)
    ax.set_xlabel("time (s)")
    ax.set_title(f"{title}  (preprocessed, z-scored)")
    fig.tight_layout()
    save_figure(fig, out)  # atomic, its folders created, the figure closed


def _check_cache_dir(args) -> None:
    """build's data.cache_dir, writable, before any recording is read. The config is found here
    (args.config set), so that build reads the same file and says where it found it once."""
    args.config = args.config or default_config()
    cache_dir = load_config(args.config, args.set).data.cache_dir
    check_writable_folder(cache_dir, "data.cache_dir", "set data.cache_dir (--set data.cache_dir=DIR) to a "
                          "folder you can write to")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxbrr.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("synth", help="write a synthetic EDF + .csv_bi corpus")
    p.add_argument("--out", required=True)
    p.add_argument("--recordings", type=int, default=24)
    p.add_argument("--patients", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    add_progress_argument(p)
    p.set_defaults(run=_synth)
    for name, run, helptext in (
        ("labels", _labels, "write every recording's labels as .csv_bi files (NEDC/SzCORE tools)"),
        ("build", _build, "preprocess data.data_dir into the cache"),
        ("inspect", _inspect, "show how one EDF is read and preprocessed"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--config", default=None, help={
            "build": DEFAULT_CONFIG_HELP,
            "labels": "YAML config whose data.* label fields apply (default: built-in defaults)",
        }.get(name, "YAML config (default: built-in defaults)"))
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        p.set_defaults(run=run)
        if name == "build":
            add_progress_argument(p)
        if name == "labels":
            p.add_argument("dir", help="a corpus folder, as downloaded")
            p.add_argument("--out", required=True, help="where the .csv_bi tree goes")
            p.add_argument("--corpus", choices=typing.get_args(CorpusName),
                           help="the corpus's layout and label files (default: the config's data.corpus, auto)")
        if name == "inspect":
            p.add_argument("file")
            p.add_argument("--montage", choices=list(MONTAGES))
            p.add_argument("--plot", metavar="OUT.png")
            p.add_argument("--start", type=float, default=0.0, help="plot start (s)")
            p.add_argument("--seconds", type=float, default=30.0, help="plot length (s)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            _check_cache_dir(args)
        return args.run(args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
