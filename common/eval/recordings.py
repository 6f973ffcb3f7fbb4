"""Whole recordings through a model: windows in fixed-size batches -> one probability trace each.

Framework-neutral: `predict` is any function (B, C, W) float32 numpy -> (B, W) probabilities
(jaxbrr's jitted eval step, torchref's eval_step). Windows are cut with the evaluation stride
(`eval.stride_seconds`), a last window covers the tail, and a recording shorter than one window
is padded and masked (common/data/windows.py); windows of all recordings are packed into batches
of exactly `eval.batch_size` (the last one padded with zero windows whose output is dropped), so
a jitted predict compiles once. Overlapping windows are averaged (common/eval/stitch.py).

`predict_recordings` packs the windows of many cached recordings into shared batches (validation,
evaluation); `predict_signals` runs one recording held in memory (prediction on EDF files).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from common.config import Config
from common.data.cache import Corpus
from common.data.windows import WindowSpec, cut_window, window_starts
from common.eval.stitch import stitch
from common.progress import ProgressLines

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class Trace:
    stem: str
    probs: np.ndarray  # (n,) float32
    labels: np.ndarray  # (n,) uint8
    sfreq: float


@dataclass
class NonFinite:
    """A recording on which the model's output is NaN/Inf where its windows are valid."""

    stem: str
    starts: list[int]  # the start samples of the windows with a non-finite valid output
    windows: int  # of this many windows in all
    sfreq: float


def eval_spec(config: Config) -> WindowSpec:
    return WindowSpec(config.window_samples, config.eval_stride_samples, cover_tail=True, pad_short=True)


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# Called with each batch's windows (b, C, W) and probabilities (b, W), the padding left out; it may
# raise to stop the prediction there (the training loop's stop requests and NaN check).
BatchCheck = Callable[[np.ndarray, np.ndarray], None]


def _predict_batches(predict: Predict, cut: Callable[[object], tuple[np.ndarray, np.ndarray]],
                     jobs: list, batch_size: int, bar,
                     each_batch: BatchCheck | None = None) -> Iterator[tuple[list, np.ndarray, np.ndarray]]:
    """(jobs of the batch, probs (b, W) float32, valid (b, W) bool), batch by batch, for the
    windows `cut(job)` -> (x (C, W), valid (W,)); every batch holds exactly batch_size windows
    (the last padded with zero windows whose output is dropped)."""
    for chunk in _chunks(jobs, batch_size):
        parts = [cut(job) for job in chunk]
        x = np.stack([p[0] for p in parts])  # (b, C, W)
        b = len(chunk)
        if b < batch_size:  # pad to the compiled batch size
            x = np.concatenate([x, np.zeros((batch_size - b, *x.shape[1:]), x.dtype)])
        probs = np.asarray(predict(x), np.float32)[:b]  # (b, W)
        if each_batch is not None:
            each_batch(x[:b], probs)
        bar.update(b)
        yield chunk, probs, np.stack([p[1] for p in parts])


def predict_recordings(predict: Predict, corpus: Corpus, stems: list[str], config: Config,
                       progress: bool = False, desc: str = "predict",
                       each_batch: BatchCheck | None = None,
                       nonfinite: list[NonFinite] | None = None, plain_lines: bool = False) -> list[Trace]:
    """One stitched probability trace per recording of `stems`, in that order (each_batch: BatchCheck).
    Without a bar, `plain_lines` prints the windows done as lines for a log (common/progress.py).

    A recording whose output is NaN/Inf where its windows are valid cannot be stitched: with
    `nonfinite` given it is left out of the traces and listed there, the others go on (evaluation
    scores them); without, a ValueError names it."""
    spec, w = eval_spec(config), config.window_samples
    jobs = []  # (recording index, start)
    for i, stem in enumerate(stems):
        _, labels = corpus.arrays(stem)
        jobs.extend((i, int(s)) for s in window_starts(len(labels), spec))

    def cut(job):
        x, _, valid = corpus.window(stems[job[0]], job[1], w)
        return x, valid

    # Windows come in recording order; a recording is stitched as soon as its last window is
    # predicted, so memory holds one recording's windows, not the whole split's.
    remaining = Counter(i for i, _ in jobs)
    pending: dict[int, list] = {}  # recording -> [(start, probs (W,), valid (W,))]
    traces: list[Trace | None] = [None] * len(stems)
    lines = ProgressLines(desc, len(jobs), "windows") if plain_lines and not progress else None
    with tqdm(total=len(jobs), desc=desc, unit="win", disable=not progress, leave=False) as bar:
        for chunk, probs, valid in _predict_batches(predict, cut, jobs, config.eval.batch_size, bar, each_batch):
            if lines is not None:
                lines.update(len(chunk))
            for (i, start), p, v in zip(chunk, probs, valid, strict=True):
                pending.setdefault(i, []).append((start, p, v))
                remaining[i] -= 1
                if remaining[i] == 0:
                    starts, window_probs, window_valid = zip(*pending.pop(i), strict=True)
                    sfreq = float(corpus.recordings[stems[i]]["sfreq"])
                    bad = [int(start) for start, p, v in zip(starts, window_probs, window_valid, strict=True)
                           if not np.isfinite(p[v]).all()]
                    if bad:
                        found = NonFinite(stems[i], bad, len(starts), sfreq)
                        if nonfinite is None:
                            raise ValueError(nonfinite_line(found))
                        nonfinite.append(found)
                        continue
                    _, labels = corpus.arrays(stems[i])  # copied into the Trace: a view keeps the map open
                    trace = stitch(np.stack(window_probs), np.array(starts, np.int64), len(labels),
                                   np.stack(window_valid))
                    traces[i] = Trace(stems[i], trace, np.array(labels), sfreq)
    left_out = {found.stem for found in nonfinite or []}
    kept = [(stem, trace) for stem, trace in zip(stems, traces, strict=True) if stem not in left_out]
    empty = [stem for stem, trace in kept if trace is None]
    if empty:
        raise ValueError(f"no windows in {len(empty)} recordings, e.g. {empty[0]}: they hold no samples")
    return [trace for _, trace in kept]


def nonfinite_line(found: NonFinite) -> str:
    first = found.starts[0] / found.sfreq
    return (f"{found.stem}: the model's output is NaN/Inf in {len(found.starts)} of its {found.windows} windows "
            f"(the first from {first:g} s)")


def predict_signals(predict: Predict, signals: np.ndarray, config: Config,
                    progress: bool = False, desc: str = "predict", plain_lines: bool = False) -> np.ndarray:
    """One recording's stitched probability trace (n,) float32 from its preprocessed signals (C, n).
    Without a bar, `plain_lines` prints the windows done as lines for a log (common/progress.py).

    A recording shorter than one window is a single zero-padded window whose padding is left out
    of the trace, so the trace always has the recording's own length.
    """
    signals = np.asarray(signals)
    if signals.ndim != 2 or signals.shape[1] == 0:
        raise ValueError(f"signals must be (C, n) with n > 0, got shape {signals.shape}")
    n, w = signals.shape[1], config.window_samples
    starts = window_starts(n, eval_spec(config))
    no_labels = np.zeros(n, np.uint8)

    def cut(start):
        x, _, valid = cut_window(signals, no_labels, int(start), w)
        return x, valid

    lines = ProgressLines(desc, len(starts), "windows") if plain_lines and not progress else None
    batches = []
    with tqdm(total=len(starts), desc=desc, unit="win", disable=not progress, leave=False) as bar:
        for batch in _predict_batches(predict, cut, list(starts), config.eval.batch_size, bar):
            batches.append(batch)
            if lines is not None:
                lines.update(len(batch[0]))
    probs = np.concatenate([b[1] for b in batches])
    valid = np.concatenate([b[2] for b in batches])
    return stitch(probs, starts, n, valid)
