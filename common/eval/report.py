"""Whole-recording predictions -> scores, `.csv_bi` files and plots (`evaluate --checkpoint`).

Framework-neutral (numpy, matplotlib): the traces come from any model through
common/eval/recordings.py.

    metrics = evaluate_traces(traces, config, out_dir)

Per recording, the trace is post-processed at the configured thresholds (common/eval/postprocess.py)
into hypothesis events, and the runs of its labels become the reference events (seiz, confidence 1).
Both are written as OUT/ref/<stem>.csv_bi and OUT/hyp/<stem>.csv_bi and read back before scoring,
so the NEDC and SzCORE numbers are exactly those of `python -m jaxbrr.evaluate --score OUT/ref
OUT/hyp` (and what NEDC's own scorer reads from those files). Each carries a `# written_by =
jaxbrr.evaluate` comment line (which NEDC and read_csv_bi pass over). Another `.csv_bi` file that an
earlier evaluate left in those two folders is removed, so that re-scoring them pairs this run's
files; one without that line (reference labels kept in NEDC's ref/ hyp/ layout, say) is never
touched: check_out_dir refuses such an OUT, before any recording is predicted.

metrics (written as metrics.json by jaxbrr/evaluate.py) holds `score_pairs`' keys (records,
duration_seconds, nedc, szcore) and:
    sample             SAMPLE_METRICS over the concatenated traces: auroc of the probabilities;
                       sensitivity, specificity, precision, f1 of the post-processed mask against
                       the labels, sample by sample; positives, samples. null without seizure samples
    sensitivity_at_fa  {FA_RATE_METRICS name: OperatingPoint} for eval.fa_rates (null likewise)
    threshold_sweep    the sweep behind it: tau_on, tau_off, sensitivity, fa_per_24h, hits,
                       false_alarms per swept threshold
    postprocess        the PostprocessConfig the events were made with
    dropped_long_events  {stem: [[start, stop] seconds, ...]}: detections longer than
                       max_duration_seconds that postprocess.long_events: drop left out
Plots: OUT/roc.png, OUT/sensitivity_fa.png, and OUT/timelines/<stem>.png for at most
max_timelines recordings, those with the most labelled seizure first, then the most predicted.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from common.config import Config, config_to_dict
from common.data.csv_bi import Event, read_csv_bi, write_csv_bi, written_by, written_by_line
from common.eval import plots
from common.eval.metrics import auroc, mask_metrics, roc_curve
from common.eval.postprocess import dropped_long_runs, postprocess, runs
from common.eval.recordings import Trace
from common.eval.score import METRICS_FILE, score_pairs
from common.eval.sensitivity_at_fa import ovlp_counts, sensitivity_at_fa, shown_threshold, sweep
from common.shown import shown_lines

REFERENCE, HYPOTHESIS = "ref", "hyp"
WRITTEN_BY = "jaxbrr.evaluate"  # the program named in the .csv_bi files evaluate writes


def check_out_dir(out_dir: str | Path) -> None:
    """ValueError naming every .csv_bi file in OUT/ref and OUT/hyp that evaluate did not write:
    evaluate replaces and removes .csv_bi files there, and must never do so to someone's labels."""
    out_dir = Path(out_dir)
    foreign = [str(path) for side in (REFERENCE, HYPOTHESIS) if (out_dir / side).is_dir()
               for path in sorted((out_dir / side).glob("*.csv_bi")) if not written_by(path, WRITTEN_BY)]
    if foreign:
        raise ValueError(f"--out {out_dir}: {len(foreign)} .csv_bi file(s) in its {REFERENCE}/ and {HYPOTHESIS}/ that "
                         f"evaluate did not write (no '{written_by_line(WRITTEN_BY)}' line), which it would replace "
                         "or remove:\n" + "\n".join(shown_lines(foreign)) + "\nchoose another --out (files an older "
                         "evaluate wrote, without that line, may be deleted instead)")


# what evaluate writes into OUT beside metrics.json and the .csv_bi files (module docstring, and
# jaxbrr/evaluate.py's OUT/nonfinite/<stem>.npz)
EARLIER_PLOTS = ("roc.png", "sensitivity_fa.png", "timelines/*.png")
EARLIER_BATCHES = "nonfinite/*.npz"


def remove_earlier_outputs(out_dir: str | Path, everything: bool = False) -> list[Path]:
    """Delete what an earlier evaluate wrote into OUT that this run may not write again: the
    batches it saved (only evaluate writes there), and its plots where it left its metrics.json (a
    run that draws no ROC, fewer timelines or other recordings would leave them beside its own
    metrics); `everything` (a run that scores nothing) also its metrics.json and its ref/ and hyp/
    files (check_out_dir: no one else's are there). The removed."""
    out_dir = Path(out_dir)
    patterns = [EARLIER_BATCHES]
    if everything or (out_dir / METRICS_FILE).is_file():
        patterns += EARLIER_PLOTS
    if everything:
        check_out_dir(out_dir)
        patterns += [METRICS_FILE, f"{REFERENCE}/*.csv_bi", f"{HYPOTHESIS}/*.csv_bi"]
    removed = [path for pattern in patterns for path in sorted(out_dir.glob(pattern)) if path.is_file()]
    for path in removed:
        path.unlink()
    return removed


def reference_events(labels: np.ndarray, sfreq: float) -> list[Event]:
    """One seiz Event per run of labelled samples, [start / sfreq, stop / sfreq) seconds."""
    starts, stops = runs(np.asarray(labels).astype(bool))
    return [Event(float(a / sfreq), float(b / sfreq), "seiz") for a, b in zip(starts, stops, strict=True)]


def _write_pairs(traces: list[Trace], events: list[list[Event]], out_dir: Path):
    """Write OUT/ref and OUT/hyp, remove an earlier evaluate's other files there, read the pairs back."""
    check_out_dir(out_dir)  # every .csv_bi there is evaluate's own
    written = {f"{t.stem}.csv_bi" for t in traces}
    for side in (REFERENCE, HYPOTHESIS):
        folder = out_dir / side
        if folder.is_dir():
            for stale in folder.glob("*.csv_bi"):
                if stale.name not in written:
                    stale.unlink()
    pairs = []
    for trace, hyp in zip(traces, events, strict=True):
        duration = trace.probs.size / trace.sfreq
        name = f"{trace.stem}.csv_bi"
        ref_path = write_csv_bi(out_dir / REFERENCE / name, reference_events(trace.labels, trace.sfreq), duration,
                                written_by=WRITTEN_BY)
        hyp_path = write_csv_bi(out_dir / HYPOTHESIS / name, hyp, duration, written_by=WRITTEN_BY)
        pairs.append((read_csv_bi(ref_path), read_csv_bi(hyp_path)))
    return pairs


def evaluate_traces(traces: list[Trace], config: Config, out_dir: str | Path, max_timelines: int = 20,
                    progress: bool = False, plain_lines: bool = False) -> dict:
    """Score the traces, write the .csv_bi files and plots under out_dir; returns the metrics."""
    if not traces:
        raise ValueError("no recordings to evaluate")
    out_dir = Path(out_dir)
    post = config.postprocess
    processed = [postprocess(t.probs, t.sfreq, post) for t in traces]  # [(mask, events)]
    metrics = score_pairs(_write_pairs(traces, [events for _, events in processed], out_dir))

    probs = np.concatenate([t.probs for t in traces])
    labels = np.concatenate([t.labels for t in traces]).astype(bool)
    has_seizure = bool(labels.any())
    metrics["sample"] = metrics["sensitivity_at_fa"] = metrics["threshold_sweep"] = None
    if has_seizure and not labels.all():
        masks = np.concatenate([mask for mask, _ in processed])
        metrics["sample"] = {"auroc": auroc(probs, labels), **mask_metrics(masks, labels),
                             "positives": int(labels.sum()), "samples": int(labels.size)}
        fpr, tpr, _ = roc_curve(probs, labels)
        plots.plot_roc(fpr, tpr, metrics["sample"]["auroc"], out_dir / "roc.png",
                       f"sample-level ROC, {len(traces)} recordings")
    if has_seizure:
        result = sweep(traces, post, config.eval.threshold_steps, progress=progress, plain_lines=plain_lines)
        points = sensitivity_at_fa(result, config.eval.fa_rates)
        metrics["sensitivity_at_fa"] = {name: p.to_dict() for name, p in points.items()}
        metrics["threshold_sweep"] = {
            "tau_on": result.tau_on.tolist(), "tau_off": result.tau_off.tolist(),
            "sensitivity": result.sensitivity.tolist(), "fa_per_24h": result.fa_per_24h.tolist(),
            "hits": result.hits.tolist(), "false_alarms": result.false_alarms.tolist(),
        }
        plots.plot_sensitivity_fa(result, points, out_dir / "sensitivity_fa.png",
                                  f"NEDC OVLP, {result.targets} seizures, "
                                  f"{result.duration_seconds / 3600:.2f} h")
    metrics["postprocess"] = config_to_dict(post)

    # detections longer than max_duration_seconds that long_events: drop left out of the events
    dropped = {t.stem: spans for t in traces if (spans := dropped_long_runs(t.probs, t.sfreq, post))}
    order = sorted(range(len(traces)), key=lambda i: (-int(traces[i].labels.sum()),
                                                      -int(processed[i][0].sum()), traces[i].stem))
    for i in order[:max_timelines]:
        trace, (mask, _) = traces[i], processed[i]
        hits, false_alarms = ovlp_counts(*runs(trace.labels.astype(bool)), *runs(mask))
        targets = runs(trace.labels.astype(bool))[0].size
        long = len(dropped.get(trace.stem, []))  # the sweep's false alarms where they miss the seizures
        plots.plot_example(trace.probs, trace.labels, mask, trace.sfreq, post,
                     out_dir / "timelines" / f"{trace.stem}.png",
                     f"{trace.stem}: {hits} of {targets} seizures hit, {false_alarms} false alarms (OVLP)"
                     + (f"; {long} detection(s) over {post.max_duration_seconds:g} s dropped" if long else ""))
    metrics["timelines"] = min(max_timelines, len(traces))
    metrics["dropped_long_events"] = {stem: [list(span) for span in spans] for stem, spans in dropped.items()}
    return metrics


def _value(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def checkpoint_lines(metrics: dict) -> list[str]:
    """The sample-level and sensitivity-at-FA rows of the on-screen table."""
    post = metrics["postprocess"]
    sample = metrics["sample"]
    if sample is None:
        lines = ["sample level: n/a (the labels hold one class only)"]
    else:
        lines = [f"sample level ({sample['samples']:,} samples, {sample['positives'] / sample['samples']:.2%} "
                 f"seizure): AUROC {_value(sample['auroc'])}; post-processed at τ_on {post['tau_on']:g} / "
                 f"τ_off {post['tau_off']:g}: sensitivity {_value(sample['sensitivity'])}, specificity "
                 f"{_value(sample['specificity'])}, precision {_value(sample['precision'])}, f1 {_value(sample['f1'])}"]
    points = metrics["sensitivity_at_fa"]
    if points is None:
        return [*lines, "sensitivity at FA/24h: n/a (the references hold no seizure)"]
    steps = len(metrics["threshold_sweep"]["tau_on"])
    lines.append(f"sensitivity at FA/24h (NEDC OVLP; τ_on swept over {steps} values, "
                 f"τ_off = {post['tau_off'] / post['tau_on']:.4f} τ_on):")
    lines.append(f"  {'metric':<32}{'sensitivity':>12}{'FA/24h':>10}{'hits':>10}{'FA':>6}{'τ_on':>12}{'τ_off':>12}")
    for name, p in points.items():
        if p["met"]:
            where = f"{shown_threshold(p['tau_on']):>12}{shown_threshold(p['tau_off']):>12}"
        else:
            where = "  no threshold meets it"
        lines.append(f"  {name:<32}{p['sensitivity']:12.4f}{p['fa_per_24h']:10.4f}"
                     f"{p['hits']:>5}/{p['targets']:<4}{p['false_alarms']:>6}{where}")
    return lines
