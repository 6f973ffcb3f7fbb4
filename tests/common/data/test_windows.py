import numpy as np
import pytest

from common.data.windows import (
    BACKGROUND,
    FULL,
    PARTIAL,
    WindowSpec,
    cut_window,
    seizure_samples_per_window,
    window_classes,
    window_starts,
)


def test_original_window_arithmetic():
    # A D-second recording yields floor((D - 60) / 10) + 1 windows (original_spec.md §0.2).
    spec = WindowSpec(15360, 2560)
    for seconds in (60, 61, 69, 70, 125, 1831):
        starts = window_starts(seconds * 256, spec)
        assert len(starts) == (seconds - 60) // 10 + 1
        assert starts[0] == 0 and np.all(np.diff(starts) == 2560)
        assert starts[-1] + 15360 <= seconds * 256


def test_cover_tail_adds_one_window_ending_at_the_last_sample():
    spec = WindowSpec(100, 30, cover_tail=True)
    starts = window_starts(245, spec)
    assert starts.tolist() == [0, 30, 60, 90, 120, 145]
    assert window_starts(250, spec).tolist() == [0, 30, 60, 90, 120, 150]  # already covered


def test_short_recording_only_padded_on_request():
    assert window_starts(50, WindowSpec(100, 30)).size == 0
    assert window_starts(50, WindowSpec(100, 30, pad_short=True)).tolist() == [0]
    signals = np.arange(3 * 50, dtype=np.float32).reshape(3, 50)
    labels = np.ones(50, np.uint8)
    x, y, valid = cut_window(signals, labels, 0, 100)
    assert x.shape == (3, 100) and np.array_equal(x[:, :50], signals) and not x[:, 50:].any()
    assert y.sum() == 50 and valid.sum() == 50 and valid[:50].all()


def test_seizure_counts_and_classes():
    labels = np.zeros(1000, np.uint8)
    labels[150:400] = 1
    starts = np.array([0, 100, 200, 300, 500])
    counts = seizure_samples_per_window(labels, starts, 200)
    assert counts.tolist() == [50, 150, 200, 100, 0]
    classes = window_classes(counts, 200)
    assert classes.tolist() == [PARTIAL, PARTIAL, FULL, PARTIAL, BACKGROUND]
    # 99 % rule: 198 of 200 is full, 197 is partial
    assert window_classes(np.array([198, 197]), 200).tolist() == [FULL, PARTIAL]


def test_cut_window_reads_a_memory_map(tmp_path):
    signals = np.random.default_rng(0).standard_normal((4, 1000)).astype(np.float32)
    np.save(tmp_path / "s.npy", signals)
    mapped = np.load(tmp_path / "s.npy", mmap_mode="r")
    x, _, valid = cut_window(mapped, np.zeros(1000, np.uint8), 900, 200)
    assert np.array_equal(x[:, :100], signals[:, 900:]) and valid.sum() == 100


def test_bad_spec():
    with pytest.raises(ValueError):
        WindowSpec(0, 10)
