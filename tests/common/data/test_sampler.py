import numpy as np
import pytest

from common.config import BalanceConfig
from common.data.sampler import balanced_rows, batches, seizure_window_ratio
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
