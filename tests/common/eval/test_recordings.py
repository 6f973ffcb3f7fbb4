import numpy as np
import pytest

from common.config import load_config
from common.eval.recordings import predict_signals

# windows of 1024 samples every 512, batches of 3
CONFIG = load_config(None, ["data.window_seconds=4", "data.stride_seconds=2", "eval.batch_size=3"])


def pointwise(calls: list):
    """A model whose output at a sample depends on that sample only: σ(channel 0), so any window
    covering a sample predicts the same value there and the stitched trace is σ(signal[0])."""

    def predict(x):
        calls.append(x.shape)
        return 1 / (1 + np.exp(-x[:, 0, :].astype(np.float64)))

    return predict


@pytest.mark.parametrize("n_samples", [1, 700, 1024, 1500, 5000])
def test_a_trace_has_the_recording_length_whatever_the_windows(n_samples):
    signals = np.random.default_rng(n_samples).standard_normal((3, n_samples)).astype(np.float32)
    calls = []
    trace = predict_signals(pointwise(calls), signals, CONFIG)
    assert trace.shape == (n_samples,) and trace.dtype == np.float32
    np.testing.assert_allclose(trace, 1 / (1 + np.exp(-signals[0].astype(np.float64))), rtol=1e-6)
    assert {shape for shape in calls} == {(3, 3, 1024)}  # every batch padded to eval.batch_size
    windows = 1 if n_samples <= 1024 else len(range(0, n_samples - 1024 + 1, 512)) + ((n_samples - 1024) % 512 > 0)
    assert len(calls) == -(-windows // 3)


def test_a_short_recording_is_padded_and_its_padding_masked():
    # the model sees one zero-padded window; the padding's outputs (σ(0) = 0.5) never reach the trace
    signals = np.full((3, 100), 4.0, np.float32)
    seen = []

    def predict(x):
        seen.append(x.copy())
        return 1 / (1 + np.exp(-x[:, 0, :]))

    trace = predict_signals(predict, signals, CONFIG)
    assert trace.shape == (100,)
    np.testing.assert_allclose(trace, 1 / (1 + np.exp(-4.0)), rtol=1e-6)
    (x,) = seen
    assert (x[0, :, :100] == 4).all() and (x[0, :, 100:] == 0).all() and (x[1:] == 0).all()


def test_non_finite_outputs_and_empty_signals_are_errors():
    signals = np.zeros((3, 2000), np.float32)
    with pytest.raises(ValueError, match="not finite"):
        predict_signals(lambda x: np.full(x.shape[::2], np.nan), signals, CONFIG)
    with pytest.raises(ValueError, match=r"\(C, n\) with n > 0"):
        predict_signals(lambda x: x[:, 0], np.zeros((3, 0), np.float32), CONFIG)


class _Corpus:
    """The part of common.data.cache.Corpus that predict_recordings reads, over in-memory arrays."""

    def __init__(self, recordings: dict[str, np.ndarray]):
        self._arrays = {stem: (x, (x[0] > 0).astype(np.uint8)) for stem, x in recordings.items()}
        self.recordings = {stem: {"sfreq": 256.0} for stem in recordings}

    def arrays(self, stem):
        return self._arrays[stem]

    def window(self, stem, start, window_samples):
        from common.data.windows import cut_window

        return cut_window(*self._arrays[stem], int(start), window_samples)


def test_recordings_share_batches_and_each_is_stitched_whole():
    """Batches of 3 straddle recordings (3 + 1 + 9 windows); each trace is still σ(its own signal)
    at its own length, in the order asked for, labels carried along."""
    from common.eval.recordings import predict_recordings

    rng = np.random.default_rng(1)
    recordings = {"a": rng.standard_normal((2, 2000)), "b": rng.standard_normal((2, 300)),
                  "c": rng.standard_normal((2, 5000))}
    calls = []
    traces = predict_recordings(pointwise(calls), _Corpus(recordings), ["c", "a", "b"], CONFIG)
    assert [t.stem for t in traces] == ["c", "a", "b"]
    for trace in traces:
        x = recordings[trace.stem]
        np.testing.assert_allclose(trace.probs, 1 / (1 + np.exp(-x[0])), rtol=1e-6)
        np.testing.assert_array_equal(trace.labels, x[0] > 0)
    assert all(shape[0] == 3 for shape in calls) and len(calls) == 5  # 9 + 3 + 1 windows, padded
