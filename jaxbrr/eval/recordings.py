"""Whole recordings through a model: windows in fixed-size batches -> one probability trace each.

Framework-neutral: `predict` is any function (B, C, W) float32 numpy -> (B, W) probabilities
(jaxbrr's jitted eval step, torchref's eval_step). Windows are cut with the evaluation stride
(`eval.stride_seconds`), a last window covers the tail, and a recording shorter than one window
is padded and masked (jaxbrr/data/windows.py); windows of all recordings are packed into batches
of exactly `eval.batch_size` (the last one padded with zero windows whose output is dropped), so
a jitted predict compiles once. Overlapping windows are averaged (jaxbrr/eval/stitch.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from jaxbrr.config import Config
from jaxbrr.data.cache import Corpus
from jaxbrr.data.windows import WindowSpec, window_starts
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


def predict_recordings(predict: Predict, corpus: Corpus, stems: list[str], config: Config,
                       progress: bool = False, desc: str = "predict") -> list[Trace]:
    """One stitched probability trace per recording of `stems`, in that order."""
    spec, w, size = eval_spec(config), config.window_samples, config.eval.batch_size
    jobs = []  # (recording index, start)
    for i, stem in enumerate(stems):
        _, labels = corpus.arrays(stem)
        jobs.extend((i, int(s)) for s in window_starts(len(labels), spec))
    probs = np.zeros((len(jobs), w), np.float32)
    valid = np.zeros((len(jobs), w), bool)
    bar = tqdm(total=len(jobs), desc=desc, unit="win", disable=not progress, leave=False)
    done = 0
    for chunk in _chunks(jobs, size):
        parts = [corpus.window(stems[i], start, w) for i, start in chunk]
        x = np.stack([p[0] for p in parts])  # (b, C, W)
        if len(chunk) < size:  # pad to the compiled batch size
            x = np.concatenate([x, np.zeros((size - len(chunk), *x.shape[1:]), x.dtype)])
        out = np.asarray(predict(x))[: len(chunk)]  # (b, W)
        probs[done : done + len(chunk)] = out
        valid[done : done + len(chunk)] = np.stack([p[2] for p in parts])
        done += len(chunk)
        bar.update(len(chunk))
    bar.close()

    traces, record = [], np.array([i for i, _ in jobs], np.int64)
    starts = np.array([s for _, s in jobs], np.int64)
    for i, stem in enumerate(stems):
        _, labels = corpus.arrays(stem)
        rows = record == i
        trace = stitch(probs[rows], starts[rows], len(labels), valid[rows])
        traces.append(Trace(stem, trace, np.asarray(labels), float(corpus.recordings[stem]["sfreq"])))
    return traces
