import numpy as np
import pytest

from jaxbrr.config import load_config
from jaxbrr.eval.recordings import predict_signals

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
