import numpy as np
import pytest

from common.config import BalanceConfig, SplitConfig
from common.data.sampler import (
    assign_splits,
    balanced_rows,
    batches,
    check_patient_disjoint,
    official_split,
    seizure_window_ratio,
)
from common.data.windows import BACKGROUND, FULL, PARTIAL


def _classes(partial=20, full=30, background=500):
    return np.array([PARTIAL] * partial + [FULL] * full + [BACKGROUND] * background, np.int8)


def test_balanced_counts_follow_the_recipe():
    classes = _classes()
    rows = balanced_rows(classes, BalanceConfig(), seed=0, epoch=0)
    picked = classes[rows]
    assert np.sum(picked == PARTIAL) == 20          # every partial window
    assert np.sum(picked == FULL) == 6              # floor(0.3 * 20)
    assert np.sum(picked == BACKGROUND) == 50       # floor(2.5 * 20)
    assert len(set(rows.tolist())) == len(rows)     # without replacement
    assert seizure_window_ratio(classes, rows) == pytest.approx(26 / 76)


def test_caps_at_availability():
    rows = balanced_rows(_classes(partial=10, full=1, background=5), BalanceConfig(), 0, 0)
    assert len(rows) == 10 + 1 + 5


def test_order_is_a_pure_function_of_seed_and_epoch():
    classes = _classes()
    a = balanced_rows(classes, BalanceConfig(), seed=3, epoch=2)
    b = balanced_rows(classes, BalanceConfig(), seed=3, epoch=2)
    c = balanced_rows(classes, BalanceConfig(), seed=3, epoch=3)
    assert np.array_equal(a, b)
    # A new epoch redraws the background windows (the original drew them once, forever).
    background = lambda r: set(r[classes[r] == BACKGROUND].tolist())  # noqa: E731
    assert background(a) != background(c)


def test_no_partial_window_is_a_clear_error():
    with pytest.raises(ValueError, match="balance.enabled=false"):
        balanced_rows(_classes(partial=0), BalanceConfig(), 0, 0)
    rows = balanced_rows(_classes(partial=0), BalanceConfig(enabled=False), 0, 0)
    assert sorted(rows.tolist()) == list(range(530))


def test_batches_drop_last():
    rows = np.arange(10)
    assert [b.tolist() for b in batches(rows, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(list(batches(rows, 4, drop_last=False))) == 3


def test_patient_split_never_mixes_a_patient():
    stems = [f"p{p:02d}_s001_t{t:03d}" for p in range(10) for t in range(3)]
    splits = assign_splits(stems, SplitConfig(dev_fraction=0.2, eval_fraction=0.1, seed=1))
    by_patient = {}
    for stem, split in splits.items():
        by_patient.setdefault(stem.split("_")[0], set()).add(split)
    assert all(len(s) == 1 for s in by_patient.values())
    counts = {k: sum(1 for s in by_patient.values() if k in s) for k in ("train", "dev", "eval")}
    assert counts == {"train": 7, "dev": 2, "eval": 1}
    assert splits == assign_splits(stems, SplitConfig(dev_fraction=0.2, eval_fraction=0.1, seed=1))


def test_official_folders_win_and_are_checked(tmp_path):
    root = tmp_path / "edf"
    assert official_split(root / "dev" / "x" / "a_s1.edf", root) == "dev"
    assert official_split(root / "other" / "a_s1.edf", root) is None
    stems = ["a_s1_t0", "b_s1_t0"]
    splits = assign_splits(stems, SplitConfig(), {"a_s1_t0": "train", "b_s1_t0": "eval"})
    assert splits == {"a_s1_t0": "train", "b_s1_t0": "eval"}
    with pytest.raises(ValueError, match="patient 'a'"):
        check_patient_disjoint({"a_s1_t0": "train", "a_s2_t0": "dev"})


def test_too_few_patients():
    with pytest.raises(ValueError, match="lower them"):
        assign_splits(["a_1", "b_1"], SplitConfig(dev_fraction=0.5, eval_fraction=0.5))
