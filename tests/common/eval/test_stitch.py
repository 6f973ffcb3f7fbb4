import numpy as np
import pytest

from common.eval.stitch import stitch, stitch_with_coverage

# A stitched float32 sample is the mean of a few float32 window values: the inputs' rounding, the
# sum's and the division's, each u = 2^-24 relative; 4·eps = 8u keeps a margin of 2 over 4u.
FLOAT32_MEAN_RTOL = 4 * np.finfo(np.float32).eps


def loop_stitch(window_probs, starts, n_samples, valid):
    """Oracle: visit every window sample once, in float64."""
    total, count = np.zeros(n_samples), np.zeros(n_samples, np.int64)
    for w, start in enumerate(starts):
        for t in range(window_probs.shape[1]):
            i = start + t
            if i < n_samples and valid[w, t]:
                total[i] += window_probs[w, t]
                count[i] += 1
    trace = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    return trace, count


def test_two_windows_by_hand():
    probs = np.array([[0.2, 0.4, 0.6, 0.8], [1.0, 0.0, 0.5, 0.25]], np.float32)
    trace = stitch(probs, np.array([0, 2]), 6)
    np.testing.assert_allclose(trace, [0.2, 0.4, 0.8, 0.4, 0.5, 0.25], rtol=FLOAT32_MEAN_RTOL)
    assert trace.dtype == np.float32


@pytest.mark.parametrize("seed", range(8))
def test_matches_loop_with_valid_masks_and_tail_padding(seed):
    rng = np.random.default_rng(seed)
    window_samples = int(rng.integers(3, 12))
    stride = int(rng.integers(1, window_samples))
    n_samples = int(rng.integers(3 * window_samples, 90))
    starts = np.arange(0, n_samples, stride)  # the last windows run past the end
    probs = rng.random((starts.size, window_samples)).astype(np.float32)
    valid = rng.random(probs.shape) < 0.8
    probs[~valid] = np.nan  # invalid samples must never be read
    expected, expected_count = loop_stitch(probs, starts, n_samples, valid)
    trace, coverage = stitch_with_coverage(probs, starts, n_samples, valid)
    np.testing.assert_array_equal(coverage, expected_count)
    np.testing.assert_allclose(trace, expected, rtol=1e-6, atol=0)
    assert expected_count.max() > 1  # the windows did overlap


def test_padding_past_the_end_is_ignored_without_a_valid_mask():
    probs = np.array([[0.5, 0.5, 0.5], [0.1, 0.3, 0.9]])
    trace, coverage = stitch_with_coverage(probs, np.array([0, 2]), 4)
    np.testing.assert_array_equal(coverage, [1, 1, 2, 1])
    np.testing.assert_allclose(trace, [0.5, 0.5, 0.3, 0.3], rtol=FLOAT32_MEAN_RTOL)


def test_gap_raises_with_the_count_unless_allowed():
    probs = np.full((2, 3), 0.7)
    starts = np.array([0, 5])  # samples 3 and 4 uncovered, and 8, 9 past the last window
    with pytest.raises(ValueError, match=r"4 of 10 samples are covered by no valid window \(first at sample 3\)"):
        stitch(probs, starts, 10)
    trace = stitch(probs, starts, 10, allow_gaps=True)
    np.testing.assert_allclose(trace, [0.7, 0.7, 0.7, 0, 0, 0.7, 0.7, 0.7, 0, 0], rtol=FLOAT32_MEAN_RTOL)
    _, coverage = stitch_with_coverage(probs, starts, 10)
    assert coverage.tolist() == [1, 1, 1, 0, 0, 1, 1, 1, 0, 0]


def test_invalid_samples_leave_a_gap():
    valid = np.array([[True, False, True]])
    with pytest.raises(ValueError, match="1 of 3 samples"):
        stitch(np.full((1, 3), 0.5), np.array([0]), 3, valid)


def test_bad_inputs_raise():
    probs = np.full((2, 4), 0.5)
    with pytest.raises(ValueError, match="outside"):
        stitch(probs, np.array([0, 8]), 8)
    with pytest.raises(ValueError, match="outside"):
        stitch(probs, np.array([-1, 2]), 8)
    with pytest.raises(ValueError, match="integers"):
        stitch(probs, np.array([0.0, 2.0]), 8)
    with pytest.raises(ValueError, match="valid must be bool"):
        stitch(probs, np.array([0, 2]), 8, valid=np.ones((2, 4), np.uint8))
    probs[1, 0] = np.nan
    with pytest.raises(ValueError, match="1 valid window samples are not finite"):
        stitch(probs, np.array([0, 2]), 8)
