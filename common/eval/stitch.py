"""Overlapping window outputs -> one probability trace per recording (DESIGN.md §6).

Glossary
    W  windows of one recording;  T  samples per window;  n  samples in the recording
    p        (W, T) window probabilities
    starts   (W,) first sample of each window in the recording
    valid    (W, T) True where a window sample is real signal; False for zero padding past the end
             (common.data.windows.cut_window) or anything else the caller wants left out

Every sample i takes the plain mean of the valid window values that land on it:

    coverage[i] = Σ_w valid[w, i − s_w]                         over w with s_w ≤ i < s_w + T
    trace[i]    = Σ_w valid[w, i − s_w] · p[w, i − s_w] / coverage[i]

the original's `overlap_add` (original_spec.md §4.5), but per recording with its own starts rather
than over a whole split laid end to end, and without its two silent repairs: the original clamped
coverage to 1e-8 (an uncovered sample read as probability 0) and clipped the output to [0, 1].
Here an uncovered sample is an error unless asked for, and the mean of values in [0, 1] needs no clip.
"""

from __future__ import annotations

import numpy as np


def stitch_with_coverage(
    window_probs: np.ndarray,
    starts: np.ndarray,
    n_samples: int,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stitched trace (n,) float32 and coverage (n,) int64; uncovered samples are 0 in the trace.

    Window samples at or past n_samples are ignored (padding). A start outside [0, n_samples)
    is a bookkeeping error and raises, as does a non-finite value in a valid sample.
    """
    probs = np.asarray(window_probs)
    if probs.ndim != 2:
        raise ValueError(f"window_probs must be (W, T), got shape {probs.shape}")
    n_windows, window_samples = probs.shape
    starts = np.asarray(starts)
    if starts.shape != (n_windows,) or not np.issubdtype(starts.dtype, np.integer):
        raise ValueError(
            f"starts must be ({n_windows},) integers, one per window; got {starts.dtype} {starts.shape}"
        )
    if valid is None:
        valid = np.ones(probs.shape, bool)
    else:
        valid = np.asarray(valid)
        if valid.shape != probs.shape or valid.dtype != np.bool_:
            raise ValueError(f"valid must be bool {probs.shape}, got {valid.dtype} {valid.shape}")
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    outside = (starts < 0) | (starts >= n_samples)
    if outside.any():
        raise ValueError(
            f"{int(outside.sum())} window starts lie outside [0, {n_samples}), "
            f"the first {int(starts[outside][0])}; starts and n_samples must come from one recording"
        )

    index = starts.astype(np.int64)[:, None] + np.arange(window_samples)  # (W, T)
    keep = valid & (index < n_samples)  # (W, T)
    index, values = index[keep], probs[keep].astype(np.float64)  # (K,) each
    non_finite = int(np.count_nonzero(~np.isfinite(values)))
    if non_finite:
        raise ValueError(f"{non_finite} valid window samples are not finite (NaN or inf)")
    coverage = np.bincount(index, minlength=n_samples)  # (n,)
    total = np.bincount(index, weights=values, minlength=n_samples)  # (n,)
    trace = np.zeros(n_samples, np.float64)
    np.divide(total, coverage, out=trace, where=coverage > 0)
    return trace.astype(np.float32), coverage


def stitch(
    window_probs: np.ndarray,
    starts: np.ndarray,
    n_samples: int,
    valid: np.ndarray | None = None,
    allow_gaps: bool = False,
) -> np.ndarray:
    """Stitched trace (n,) float32: the mean of the valid window values at each sample.

    A sample covered by no valid window raises ValueError (the windows do not tile the
    recording: use `cover_tail` in WindowSpec); with allow_gaps=True it is 0, and
    `stitch_with_coverage` says which samples those are.
    """
    trace, coverage = stitch_with_coverage(window_probs, starts, n_samples, valid)
    uncovered = np.flatnonzero(coverage == 0)
    if uncovered.size and not allow_gaps:
        raise ValueError(
            f"{uncovered.size} of {n_samples} samples are covered by no valid window "
            f"(first at sample {int(uncovered[0])}); cover the recording (WindowSpec.cover_tail) "
            f"or pass allow_gaps=True to read them as 0"
        )
    return trace
