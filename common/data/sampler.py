"""Patient-disjoint splits, the balanced epoch, and batch order as a pure function of (seed, epoch).

Balanced epoch (SeizureTransformer's recipe, as the original; original_spec.md §1.9): every
partial-seizure window, plus ⌊full_ratio·P⌋ full-seizure and ⌊background_ratio·P⌋ background
windows drawn without replacement (P = number of partial windows), capped at what exists. Unlike
the original, the draw is repeated every epoch from (seed, epoch), so the background windows a
run sees change from epoch to epoch and a resumed run sees exactly what an uninterrupted one did.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from common.config import BalanceConfig, SplitConfig
from common.data.cache import patient_id
from common.data.windows import BACKGROUND, FULL, PARTIAL

SPLITS = ("train", "dev", "eval")


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """Independent generator per (seed, epoch, stream); no global state."""
    return np.random.default_rng([seed, epoch, stream])


def official_split(source: str | Path, data_dir: str | Path) -> str | None:
    """`train`/`dev`/`eval` when the file lies under a folder of that name below data_dir."""
    try:
        parts = Path(source).resolve().relative_to(Path(data_dir).resolve()).parts
    except ValueError:
        return None
    return next((p for p in parts[:-1] if p in SPLITS), None)


def assign_splits(
    stems: list[str], cfg: SplitConfig, official: dict[str, str | None] | None = None
) -> dict[str, str]:
    """Map each recording stem to a split, never putting one patient in two splits.

    With official folders for every recording, those are used (and checked); otherwise patients
    are permuted by cfg.seed and the first dev_fraction go to dev, the next eval_fraction to eval.
    """
    official = official or {}
    if stems and all(official.get(s) for s in stems):
        splits = {s: official[s] for s in stems}
    else:
        patients = sorted({patient_id(s) for s in stems})
        order = np.random.default_rng(cfg.seed).permutation(len(patients))
        n_dev = int(round(cfg.dev_fraction * len(patients)))
        n_eval = int(round(cfg.eval_fraction * len(patients)))
        if len(patients) > 1 and cfg.dev_fraction > 0:
            n_dev = max(n_dev, 1)
        if n_dev + n_eval >= len(patients) and len(patients) > 1:
            raise ValueError(
                f"{len(patients)} patients cannot fill dev_fraction={cfg.dev_fraction} and "
                f"eval_fraction={cfg.eval_fraction} and leave any for training: lower them"
            )
        split_of = {}
        for rank, index in enumerate(order):
            split_of[patients[index]] = "dev" if rank < n_dev else "eval" if rank < n_dev + n_eval else "train"
        splits = {s: split_of[patient_id(s)] for s in stems}
    check_patient_disjoint(splits)
    return splits


def check_patient_disjoint(splits: dict[str, str]) -> None:
    seen: dict[str, str] = {}
    for stem, split in splits.items():
        other = seen.setdefault(patient_id(stem), split)
        if other != split:
            raise ValueError(
                f"patient {patient_id(stem)!r} appears in both {other!r} and {split!r} "
                f"(e.g. {stem}): a patient must stay in one split"
            )


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
