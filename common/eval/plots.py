"""Evaluation and prediction plots (matplotlib, Agg), written atomically.

    roc.png             sample-level ROC of the stitched probabilities, AUROC in the legend
    sensitivity_fa.png  OVLP sensitivity against FA/24h over the threshold sweep, the targets and
                        the operating point chosen under each
    <stem>.png          (predict) the preprocessed EEG with the predicted events shaded, and below
                        it the probability trace, τ_on/τ_off and the events with their confidence

`plot_example`: one recording's probability trace, labels and post-processed mask (the
training loop's example plot and evaluation's per-recording timelines).
Curves and signals are thinned for drawing only (at most MAX_POINTS points per line; the EEG as
a min/max envelope); the numbers in metrics.json come from the full arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common.config import PostprocessConfig  # noqa: E402
from common.data.csv_bi import Event  # noqa: E402
from common.eval.sensitivity_at_fa import OperatingPoint, Sweep, shown_threshold  # noqa: E402
from common.files import save_figure  # noqa: E402

MAX_POINTS = 5000
EEG_SPACING = 6.0  # z-scored channels drawn 6 standard deviations apart


def _thin(n: int) -> np.ndarray:
    """Indices of at most MAX_POINTS evenly spaced points of n, both ends included."""
    return np.unique(np.linspace(0, n - 1, min(n, MAX_POINTS)).round().astype(np.int64))


def plot_roc(fpr: np.ndarray, tpr: np.ndarray, auroc: float, path: str | Path, title: str) -> Path:
    keep = _thin(fpr.size)
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.plot(fpr[keep], tpr[keep], lw=1.4, label=f"AUROC {auroc:.4f}")
    ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=0.8, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (samples)",
           ylabel="true positive rate (samples)", title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_sensitivity_fa(sweep: Sweep, points: dict[str, OperatingPoint], path: str | Path,
                        title: str) -> Path:
    """Each swept tau_on as a point (FA/24h, sensitivity), joined in threshold order."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(sweep.fa_per_24h, sweep.sensitivity, marker=".", ms=3, lw=0.8, color="k",
            label=f"τ_on swept ({sweep.tau_on.size} values)")
    for i, point in enumerate(points.values()):
        color = f"C{i}"
        ax.axvline(point.fa_target, color=color, ls="--", lw=0.8)
        marker = "o" if point.met else "x"
        where = f"τ_on {shown_threshold(point.tau_on)}" if point.met else "not met"
        ax.plot([point.fa_per_24h], [point.sensitivity], marker=marker, ms=7, color=color, ls="none",
                label=f"≤ {point.fa_target:g} FA/24h: {point.sensitivity:.3f} ({where})")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set(ylim=(-0.02, 1.02), xlabel="false alarms per 24 h (NEDC OVLP)",
           ylabel="sensitivity (NEDC OVLP)", title=title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def _envelope(x: np.ndarray, max_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin start indices, min, max) of x (C, n) over at most max_bins equal bins (the last one
    may be shorter)."""
    n = x.shape[-1]
    size = -(-n // max_bins)  # ceil: samples per bin
    bins = -(-n // size)
    padded = np.pad(x, ((0, 0), (0, size * bins - n)), mode="edge")  # repeat the last sample
    blocks = padded.reshape(x.shape[0], bins, size)  # (C, bins, size)
    return np.arange(bins) * size, blocks.min(axis=-1), blocks.max(axis=-1)


def plot_prediction(signals: np.ndarray, channels: Sequence[str], probs: np.ndarray,
                    events: Sequence[Event], sfreq: float, post: PostprocessConfig,
                    path: str | Path, title: str) -> Path:
    """EEG (C, n) z-scored, the probability trace (n,) and the predicted events (seconds)."""
    n_chans, n = signals.shape
    t = np.arange(n) / sfreq
    fig, (eeg, trace) = plt.subplots(
        2, 1, figsize=(13, 0.28 * n_chans + 3.4), sharex=True,
        gridspec_kw={"height_ratios": [max(2.0, 0.28 * n_chans), 1.6]})
    offsets = -np.arange(n_chans) * EEG_SPACING  # (C,)
    if n <= MAX_POINTS:
        eeg.plot(t, signals.T + offsets, lw=0.5, color="k")
    else:  # a min/max envelope per bin keeps every spike visible
        starts, low, high = _envelope(signals, MAX_POINTS)
        for c in range(n_chans):
            eeg.fill_between(t[starts], low[c] + offsets[c], high[c] + offsets[c], color="k", lw=0.3)
    for e in events:
        for ax in (eeg, trace):
            ax.axvspan(e.start_seconds, e.stop_seconds, color="tab:blue", alpha=0.15, lw=0)
    eeg.set_yticks(offsets, channels, fontsize=7)
    eeg.set_ylim(offsets[-1] - EEG_SPACING, EEG_SPACING)
    eeg.set_title(f"{title}  (preprocessed, z-scored; predicted seizures shaded)")

    keep = _thin(n)
    trace.plot(t[keep], probs[keep], lw=0.8, color="k", label="P(seizure)")
    trace.axhline(post.tau_on, color="tab:green", ls="--", lw=0.8, label=f"τ_on {post.tau_on:g}")
    trace.axhline(post.tau_off, color="tab:olive", ls=":", lw=0.8, label=f"τ_off {post.tau_off:g}")
    for e in events:
        trace.hlines(-0.06, e.start_seconds, e.stop_seconds, color="tab:blue", lw=5)
        trace.annotate(f"{e.confidence:.2f}", ((e.start_seconds + e.stop_seconds) / 2, -0.06),
                       xytext=(0, 5), textcoords="offset points", ha="center", fontsize=7,
                       color="tab:blue")
    trace.plot([], [], color="tab:blue", lw=5, label=f"predicted seizure ({len(events)}; confidence)")
    trace.set(xlim=(0, n / sfreq), ylim=(-0.12, 1.05), xlabel="time (s)", ylabel="probability")
    trace.legend(fontsize=7, loc="upper right", ncol=4)
    fig.tight_layout()
    return save_figure(fig, path)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2], edges[1::2], strict=True))


def plot_example(probs: np.ndarray, labels: np.ndarray, predicted: np.ndarray, sfreq: float,
                 post: PostprocessConfig, path: str | Path, title: str) -> Path:
    t = np.arange(len(probs)) / sfreq
    fig, ax = plt.subplots(figsize=(12, 3.2))
    for start, stop in _runs(labels.astype(bool)):
        ax.axvspan(t[start], t[stop - 1], color="tab:red", alpha=0.18, lw=0)
    for start, stop in _runs(predicted.astype(bool)):
        ax.hlines(-0.06, t[start], t[stop - 1], color="tab:blue", lw=5)
    ax.plot(t, probs, lw=0.7, color="k", label="P(seizure)")
    ax.axhline(post.tau_on, color="tab:green", ls="--", lw=0.8, label=f"τ_on {post.tau_on}")
    ax.axhline(post.tau_off, color="tab:olive", ls=":", lw=0.8, label=f"τ_off {post.tau_off}")
    ax.plot([], [], color="tab:red", alpha=0.3, lw=6, label="true seizure")
    ax.plot([], [], color="tab:blue", lw=5, label="predicted seizure")
    ax.set(xlim=(0, t[-1] if len(t) else 1), ylim=(-0.12, 1.05), xlabel="time (s)", title=title)
    ax.legend(fontsize=8, loc="upper right", ncol=5)
    fig.tight_layout()
    return save_figure(fig, path)
