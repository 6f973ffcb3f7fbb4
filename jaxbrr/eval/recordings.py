"""Whole recordings through a model: windows in fixed-size batches -> one probability trace each.

Framework-neutral: `predict` is any function (B, C, W) float32 numpy -> (B, W) probabilities
(jaxbrr's jitted eval step, torchref's eval_step). Windows are cut with the evaluation stride
(`eval.stride_seconds`), a last window covers the tail, and a recording shorter than one window
is padded and masked (jaxbrr/data/windows.py); windows of all recordings are packed into batches
of exactly `eval.batch_size` (the last one padded with zero windows whose output is dropped), so
a jitted predict compiles once. Overlapping windows are averaged (jaxbrr/eval/stitch.py).

`predict_recordings` packs the windows of many cached recordings into shared batches (validation,
evaluation); `predict_signals` runs one recording held in memory (prediction on EDF files).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from jaxbrr.config import Config
from jaxbrr.data.cache import Corpus
from jaxbrr.data.windows import WindowSpec, cut_window, window_starts
from jaxbrr.eval.stitch import stitch

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class Trace:
    stem: str
    probs: np.ndarray  # (n,) float32
    labels: np.ndarray  # (n,) uint8
    sfreq: float


def eval_spec(config: Config) -> WindowSpec:
    return WindowSpec(config.window_samples, config.eval_stride_samples, cover_tail=True, pad_short=True)


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _predict_windows(predict: Predict, cut: Callable[[object], tuple[np.ndarray, np.ndarray]],
                     jobs: list, window_samples: int, batch_size: int, bar) -> tuple[np.ndarray, np.ndarray]:
    """(probs (J, W) float32, valid (J, W) bool) of the windows `cut(job)` -> (x (C, W), valid (W,)),
    in batches of exactly batch_size (the last padded with zero windows whose output is dropped)."""
    probs = np.zeros((len(jobs), window_samples), np.float32)
    valid = np.zeros((len(jobs), window_samples), bool)
    done = 0
    for chunk in _chunks(jobs, batch_size):
        parts = [cut(job) for job in chunk]
        x = np.stack([p[0] for p in parts])  # (b, C, W)
        if len(chunk) < batch_size:  # pad to the compiled batch size
            x = np.concatenate([x, np.zeros((batch_size - len(chunk), *x.shape[1:]), x.dtype)])
        probs[done : done + len(chunk)] = np.asarray(predict(x))[: len(chunk)]  # (b, W)
        valid[done : done + len(chunk)] = np.stack([p[1] for p in parts])
        done += len(chunk)
        bar.update(len(chunk))
    return probs, valid


def predict_recordings(predict: Predict, corpus: Corpus, stems: list[str], config: Config,
                       progress: bool = False, desc: str = "predict") -> list[Trace]:
    """One stitched probability trace per recording of `stems`, in that order."""
    spec, w = eval_spec(config), config.window_samples
    jobs = []  # (recording index, start)
    for i, stem in enumerate(stems):
        _, labels = corpus.arrays(stem)
        jobs.extend((i, int(s)) for s in window_starts(len(labels), spec))

    def cut(job):
        x, _, valid = corpus.window(stems[job[0]], job[1], w)
        return x, valid

    with tqdm(total=len(jobs), desc=desc, unit="win", disable=not progress, leave=False) as bar:
        probs, valid = _predict_windows(predict, cut, jobs, w, config.eval.batch_size, bar)

    traces, record = [], np.array([i for i, _ in jobs], np.int64)
    starts = np.array([s for _, s in jobs], np.int64)
    for i, stem in enumerate(stems):
        _, labels = corpus.arrays(stem)
        rows = record == i
        trace = stitch(probs[rows], starts[rows], len(labels), valid[rows])
        traces.append(Trace(stem, trace, np.asarray(labels), float(corpus.recordings[stem]["sfreq"])))
    return traces


def predict_signals(predict: Predict, signals: np.ndarray, config: Config,
                    progress: bool = False, desc: str = "predict") -> np.ndarray:
    """One recording's stitched probability trace (n,) float32 from its preprocessed signals (C, n).

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

    with tqdm(total=len(starts), desc=desc, unit="win", disable=not progress, leave=False) as bar:
        probs, valid = _predict_windows(predict, cut, list(starts), w, config.eval.batch_size, bar)
    return stitch(probs, starts, n, valid)
