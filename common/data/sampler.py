"""The balanced epoch and batch order as a pure function of (seed, epoch); the splits they draw
from are common/data/corpora.py's.

Balanced epoch (SeizureTransformer's recipe, as the original; original_spec.md §1.9): every
partial-seizure window, plus ⌊full_ratio·P⌋ full-seizure and ⌊background_ratio·P⌋ background
windows drawn without replacement (P = number of partial windows), capped at what exists. Unlike
the original, the draw is repeated every epoch from (seed, epoch), so the background windows a
run sees change from epoch to epoch and a resumed run sees exactly what an uninterrupted one did.
Training batches are full: an epoch is ⌊N/B⌋ of them, the last N mod B rows (fewer than a batch,
a different draw each epoch) left out, where the original's DataLoader (drop_last False) ran a
short last batch: a batch's loss is then always a mean over B windows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from common.config import BalanceConfig
from common.data.windows import BACKGROUND, FULL, PARTIAL


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """Independent generator per (seed, epoch, stream); no global state."""
    return np.random.default_rng([seed, epoch, stream])


def balanced_rows(classes: np.ndarray, cfg: BalanceConfig, seed: int, epoch: int) -> np.ndarray:
    """Row indices of one balanced epoch, shuffled; all rows, shuffled, when balancing is off."""
    rng = epoch_rng(seed, epoch)
    if not cfg.enabled:
        return rng.permutation(len(classes))
    partial = np.flatnonzero(classes == PARTIAL)
    full = np.flatnonzero(classes == FULL)
    background = np.flatnonzero(classes == BACKGROUND)
    if len(partial) == 0:
        raise ValueError(
            "balanced sampling needs at least one window that is partly seizure; the training split "
            "has none: check the annotations or set data.balance.enabled=false"
        )
    n_full = min(int(np.floor(cfg.full_ratio * len(partial))), len(full))
    n_background = min(int(np.floor(cfg.background_ratio * len(partial))), len(background))
    rows = np.concatenate([
        partial,
        rng.choice(full, n_full, replace=False),
        rng.choice(background, n_background, replace=False),
    ])
    return rng.permutation(rows)


def seizure_window_ratio(classes: np.ndarray, rows: np.ndarray) -> float:
    """Window-level seizure fraction of an epoch (the original's pos_weight input)."""
    return float(np.mean(classes[rows] != BACKGROUND)) if len(rows) else 0.0


def batches(rows: np.ndarray, batch_size: int, drop_last: bool = True) -> Iterator[np.ndarray]:
    stop = len(rows) - len(rows) % batch_size if drop_last else len(rows)
    for i in range(0, stop, batch_size):
        yield rows[i : i + batch_size]


def host_rows(global_batch: np.ndarray, host: int, hosts: int) -> np.ndarray:
    """Host `host`'s part of one global batch (its rows in order): the batch is split into `hosts`
    contiguous equal slices, slice h for host h, so host h reads only those windows from the
    cache. Every host computes the same global order from (seed, epoch), so the hosts' slices of
    an epoch are disjoint and together hold each of its windows exactly once; and slice h lands
    on host h's devices (the batch axis is sharded over the mesh's devices in process order)."""
    if not 0 <= host < hosts:
        raise ValueError(f"host {host} is not one of {hosts} hosts")
    if len(global_batch) % hosts:
        raise ValueError(f"a global batch of {len(global_batch)} windows does not split over {hosts} hosts: "
                         f"make train.batch_size a multiple of {hosts}")
    per_host = len(global_batch) // hosts
    return global_batch[host * per_host : (host + 1) * per_host]
