"""Sliding windows over a preprocessed recording, without copying it.

A recording of n samples yields the starts 0, s, 2s, ... with start + w <= n (w window, s stride
in samples); 60 s / 10 s at 256 Hz covers every interior sample six times. Two explicit options:

- `cover_tail`: add one window ending at the last sample when the stride leaves a tail uncovered
  (inference and evaluation need every sample scored; training does not).
- `pad_short`: a recording shorter than one window gives a single window at 0, padded with zeros
  and masked; without it such a recording gives no window (and the caller reports that).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A window's seizure content decides its class for balanced sampling (original_spec.md §1.8).
BACKGROUND, PARTIAL, FULL = 0, 1, 2
FULL_FRACTION = 0.99


@dataclass(frozen=True)
class WindowSpec:
    window_samples: int
    stride_samples: int
    cover_tail: bool = False
    pad_short: bool = False

    def __post_init__(self):
        if self.window_samples <= 0 or self.stride_samples <= 0:
            raise ValueError(f"window and stride must be positive, got {self}")


def window_starts(n_samples: int, spec: WindowSpec) -> np.ndarray:
    """Start sample of every window of a recording of n_samples, as int64."""
    w, s = spec.window_samples, spec.stride_samples
    if n_samples < w:
        return np.zeros(1, np.int64) if spec.pad_short and n_samples > 0 else np.zeros(0, np.int64)
    starts = np.arange(0, n_samples - w + 1, s, dtype=np.int64)
    if spec.cover_tail and starts[-1] + w < n_samples:
        starts = np.append(starts, n_samples - w)
    return starts


def seizure_samples_per_window(labels: np.ndarray, starts: np.ndarray, window_samples: int) -> np.ndarray:
    """Number of seizure samples inside each window (padding counts as background)."""
    cumulative = np.concatenate([[0], np.cumsum(labels, dtype=np.int64)])
    stops = np.minimum(starts + window_samples, len(labels))
    return cumulative[stops] - cumulative[starts]


def window_classes(seizure_samples: np.ndarray, window_samples: int) -> np.ndarray:
    """BACKGROUND (no seizure sample), FULL (>= 99 % seizure) or PARTIAL, per window."""
    fraction = seizure_samples / window_samples
    classes = np.full(len(seizure_samples), PARTIAL, np.int8)
    classes[fraction == 0] = BACKGROUND
    classes[fraction >= FULL_FRACTION] = FULL
    return classes


def cut_window(
    signals: np.ndarray, labels: np.ndarray, start: int, window_samples: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One window (C, W) float32, its labels (W,) and a validity mask (W,), zero-padded past the end.

    `signals` may be a memory map: only the window's bytes are read.
    """
    stop = min(start + window_samples, signals.shape[-1])
    n = stop - start
    x = np.zeros((signals.shape[0], window_samples), np.float32)
    y = np.zeros(window_samples, np.uint8)
    valid = np.zeros(window_samples, bool)
    x[:, :n] = signals[:, start:stop]
    y[:n] = labels[start:stop]
    valid[:n] = True
    return x, y, valid
