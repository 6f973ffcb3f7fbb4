"""common.data.preprocess against a float64 scipy oracle, and its handling of bad signals."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import signal

from common.config import PreprocessConfig
from common.data.edf import read_edf
from common.data.montage import REF19
from common.data.preprocess import preprocess, preprocess_file, resample, resample_ratio

CFG = PreprocessConfig()


def oracle(x: np.ndarray, sfreq_in: float, cfg: PreprocessConfig = CFG) -> np.ndarray:
    """The pipeline written step by step with scipy, in float64 (notch as its own (b, a) pass)."""
    n_out = round(x.shape[-1] * cfg.sfreq / sfreq_in)
    if sfreq_in != cfg.sfreq and cfg.resample == "fft":
        x = signal.resample(x, n_out, axis=-1)
    elif sfreq_in != cfg.sfreq:
        ratio = Fraction(cfg.sfreq) / Fraction(sfreq_in)
        x = signal.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)[:, :n_out]
    sos = signal.butter(cfg.bandpass_order, cfg.bandpass_hz, "bandpass", fs=cfg.sfreq, output="sos")
    b, a = signal.iirnotch(cfg.notch_hz, cfg.notch_q, fs=cfg.sfreq)
    if cfg.filter_phase == "causal":
        x = signal.lfilter(b, a, signal.sosfilt(sos, x, axis=-1), axis=-1)
    else:  # forward-backward over the whole cascade
        x = signal.sosfiltfilt(np.vstack([sos, signal.tf2sos(b, a)]), x, axis=-1)
    x = (x - x.mean(axis=-1, keepdims=True)) / x.std(axis=-1, keepdims=True)
    return x if cfg.clip_sigma is None else np.clip(x, -cfg.clip_sigma, cfg.clip_sigma)


def eeg(n_chans: int, n_samples: int, seed: int = 0) -> np.ndarray:
    return 30.0 * np.random.default_rng(seed).standard_normal((n_chans, n_samples))  # µV


def peak_hz(x: np.ndarray, sfreq: float) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(x.size, 1 / sfreq)[np.argmax(spectrum)])


@pytest.mark.parametrize(
    ("sfreq_in", "overrides"),
    [
        (250.0, {}),
        (256.0, {}),
        (512.0, {"resample": "fft"}),
        (400.0, {"filter_phase": "zero_phase"}),
    ],
)
def test_matches_scipy_oracle(sfreq_in, overrides):
    cfg = PreprocessConfig(**overrides)
    x = eeg(4, int(20 * sfreq_in))
    y, report = preprocess(x, sfreq_in, cfg, ["a", "b", "c", "d"])
    assert y.dtype == np.float32 and y.shape == (4, 20 * 256)
    np.testing.assert_allclose(y, oracle(x, sfreq_in, cfg), rtol=0, atol=2e-6)
    assert report.n_samples == 5120 and report.sfreq_in == sfreq_in and report.sfreq_out == 256.0


@pytest.mark.parametrize(("sfreq_in", "n_in"), [(250.0, 7560), (400.0, 12002), (512.0, 15361)])
def test_output_length_is_rounded(sfreq_in, n_in):
    for method in ("polyphase", "fft"):
        y, _ = preprocess(eeg(2, n_in), sfreq_in, PreprocessConfig(resample=method), ["a", "b"])
        assert y.shape[-1] == round(n_in * 256 / sfreq_in)


@pytest.mark.parametrize("sfreq", [250, 400, 512])
def test_edf_rates_keep_length_and_frequency(tmp_path, write_edf, sfreq):
    seconds = 20.5  # a short recording: kept whole, no 60 s minimum here
    t = np.arange(int(seconds * sfreq)) / sfreq
    rng = np.random.default_rng(sfreq)
    signals = {
        f"EEG {n.upper()}-REF": 50 * np.sin(2 * np.pi * 10 * t + k) + 5 * rng.standard_normal(t.size)
        for k, n in enumerate(REF19)
    }
    path = write_edf(tmp_path / f"sine{sfreq}.edf", signals, sfreq, record_seconds=0.5)
    y, report = preprocess_file(path, "ref19", CFG)
    assert y.shape == (19, round(seconds * 256)) and report.n_samples == 5248
    assert report.duration_seconds == seconds and report.sfreq_in == sfreq
    for row in y:
        assert abs(peak_hz(row, 256.0) - 10.0) < 0.1


@pytest.mark.parametrize("mains_hz", [50.0, 60.0])
def test_notch_attenuates_mains(mains_hz):
    t = np.arange(30 * 256) / 256
    x = np.vstack([50 * np.sin(2 * np.pi * 10 * t) + 50 * np.sin(2 * np.pi * mains_hz * t)])

    def mains_over_alpha(notch_hz):
        y, _ = preprocess(x, 256.0, PreprocessConfig(notch_hz=notch_hz), ["a"])
        spectrum = np.abs(np.fft.rfft(y[0, 10 * 256 :]))  # past the filters' start-up transient
        freqs = np.fft.rfftfreq(20 * 256, 1 / 256)
        return spectrum[freqs == mains_hz][0] / spectrum[freqs == 10.0][0]

    attenuation_db = 20 * np.log10(mains_over_alpha(None) / mains_over_alpha(mains_hz))
    assert attenuation_db > 20


def test_zscore_of_unclipped_channel():
    y, report = preprocess(eeg(3, 60 * 256) + 200.0, 256.0, CFG, ["a", "b", "c"])
    assert report.clipped_samples == [0, 0, 0]
    np.testing.assert_allclose(y.mean(axis=-1, dtype=np.float64), 0.0, atol=1e-6)
    np.testing.assert_allclose(y.std(axis=-1, dtype=np.float64), 1.0, atol=1e-6)


def test_clip_counts_planted_spike_exactly():
    x = eeg(3, 30 * 256)
    x[1, 4000] = 6000.0  # 200 sigma of the 30 µV background
    y, report = preprocess(x, 256.0, CFG, ["a", "b", "c"])
    unclipped = oracle(x, 256.0, PreprocessConfig(clip_sigma=None))
    expected = np.count_nonzero(np.abs(unclipped) > 10.0, axis=-1)
    assert expected[1] > 0 and report.clipped_samples == [int(k) for k in expected]
    assert report.clipped_samples[0] == report.clipped_samples[2] == 0
    assert y[1].max() == np.float32(10.0)
    np.testing.assert_allclose(y, oracle(x, 256.0), atol=2e-6)


def test_nonfinite_samples_are_zeroed_and_excluded():
    x = eeg(3, 30 * 256)
    x[1, 100:110] = np.nan
    x[2, 2000] = np.inf
    y, report = preprocess(x, 256.0, CFG, ["a", "b", "c"])
    assert report.nonfinite_samples == [0, 10, 1]
    assert np.all(np.isfinite(y))
    assert np.all(y[1, 100:110] == 0) and y[2, 2000] == 0
    assert np.isnan(x[1, 100])  # the caller's array is not modified
    valid = np.ones(x.shape[-1], bool)
    valid[100:110] = False
    assert abs(y[1, valid].mean(dtype=np.float64)) < 1e-6
    assert abs(y[1, valid].std(dtype=np.float64) - 1) < 1e-6
    np.testing.assert_allclose(y[0], oracle(x[:1], 256.0)[0], atol=2e-6)  # others untouched


def test_nonfinite_samples_after_resampling_are_finite():
    x = eeg(2, 20 * 250)
    x[0, 1234] = np.nan
    y, report = preprocess(x, 250.0, CFG, ["a", "b"])
    assert report.nonfinite_samples == [1, 0] and np.all(np.isfinite(y))
    assert y[0, round(1234 * 256 / 250)] == 0


def test_nonfinite_error_names_channel_and_count():
    x = eeg(3, 10 * 256)
    x[2, :7] = np.nan
    with pytest.raises(ValueError, match=r"rec\.edf: NaN/Inf samples \(Cz: 7\).*nonfinite: zero"):
        preprocess(x, 256.0, PreprocessConfig(nonfinite="error"), ["Fz", "Pz", "Cz"], source="rec.edf")


def test_flat_channel_is_reported_and_zero():
    x = eeg(3, 20 * 256)
    x[0] = 12.5  # a disconnected electrode at a constant offset
    y, report = preprocess(x, 256.0, CFG, ["a", "b", "c"])
    assert report.flat_channels == ["a"]
    assert np.all(y[0] == 0)
    rest, _ = preprocess(x[1:], 256.0, CFG, ["b", "c"])
    np.testing.assert_array_equal(y[1:], rest)


def test_a_recording_whose_every_channel_is_flat_is_refused():
    x = np.zeros((3, 20 * 256))
    x[1] = 7.0  # constant: flat too
    with pytest.raises(ValueError, match=r"rec\.edf: every channel is flat .*holds no EEG; remove it"):
        preprocess(x, 256.0, CFG, ["a", "b", "c"], source="rec.edf")
    _, report = preprocess(x, 256.0, CFG, ["a", "b", "c"], refuse_flat=False)  # for a look at it
    assert report.flat_channels == ["a", "b", "c"]
    x[2] = eeg(1, 20 * 256)[0]  # one channel of signal: kept, the flat ones reported
    assert preprocess(x, 256.0, CFG, ["a", "b", "c"])[1].flat_channels == ["a", "b"]


def test_all_nan_channel_is_flat():
    x = eeg(2, 10 * 256)
    x[1] = np.nan
    y, report = preprocess(x, 256.0, CFG, ["a", "b"])
    assert report.flat_channels == ["b"] and report.nonfinite_samples == [0, 2560]
    assert np.all(y[1] == 0)


def test_empty_recording_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        preprocess(np.zeros((2, 0)), 256.0, CFG, ["a", "b"])


def test_a_one_sample_recording_is_too_short_not_flat():
    with pytest.raises(ValueError, match=r"rec\.edf: 1 sample\(s\) at 256 Hz \(1 at 256 Hz\) are too short"):
        preprocess(np.ones((2, 1)), 256.0, PreprocessConfig(filter_phase="causal"), ["a", "b"], source="rec.edf")


def test_zero_phase_on_too_short_recording_is_an_error():
    with pytest.raises(ValueError, match="too few for zero-phase"):
        preprocess(eeg(1, 20), 256.0, PreprocessConfig(filter_phase="zero_phase"), ["a"])


def test_odd_rate_needs_fft_resampling():
    x = eeg(1, 2503)
    with pytest.raises(ValueError, match=r"^odd.edf: sampling rate 250.3 Hz .* remove this recording, or set "
                                         r"preprocess.resample: fft \(which resamples every recording"):
        preprocess(x, 250.3, CFG, ["a"], source="odd.edf")
    y, _ = preprocess(x, 250.3, PreprocessConfig(resample="fft"), ["a"])
    assert y.shape == (1, round(2503 * 256 / 250.3))


def test_a_rate_that_is_a_small_fraction_resamples_by_that_fraction():
    """An EDF of 1000 samples per 3 s record is 333.33... Hz, a float whose exact binary value
    needed factors ~2^52 and was refused; 256 / (1000/3) = 96/125. The polyphase output equals
    scipy's resample_poly at 96/125 itself."""
    from scipy import signal

    assert resample_ratio(1000 / 3, 256.0) == (96, 125)
    assert resample_ratio(250.0, 256.0) == (128, 125) and resample_ratio(512.0, 256.0) == (1, 2)
    x = eeg(2, 3000)
    assert np.array_equal(resample(x, 1000 / 3, CFG), signal.resample_poly(x, 96, 125, axis=-1)[:, :2304])


def test_a_dc_offset_rings_from_rest_and_not_from_the_steady_state():
    """preprocess.filter_start. From rest (the original's lfilter), a 4000 uV offset on 20 uV EEG
    rings for seconds; the z-score's std counts the ring, and the channel after it is scaled far
    down. From the steady state the band-pass's zero DC gain removes the offset exactly (up to
    float64 rounding, ~1e-12 of the signal: far below float32's 6e-8 output rounding), so the
    output equals that of the signal without the offset."""
    steady = PreprocessConfig(filter_start="steady")
    for sfreq in (256.0, 512.0, 400.0):  # resampled too: resample_poly pads with zeros, a step of its own
        seconds = 600
        x = 20.0 * np.random.default_rng(3).standard_normal((1, int(sfreq * seconds)))
        offset, _ = preprocess(x + 4000.0, sfreq, steady, ["a"])
        plain, _ = preprocess(x, sfreq, steady, ["a"])
        np.testing.assert_allclose(offset, plain, rtol=0, atol=1e-5)
        rest, _ = preprocess(x + 4000.0, sfreq, CFG, ["a"])
        after = slice(60 * 256, None)
        assert rest[0, after].std() < 0.5 < 0.9 < plain[0, after].std(), sfreq  # 0.25-0.34 against 1.0
        # a channel that starts at zero starts at rest either way: the same bytes
        x[:, 0] = 0.0
        np.testing.assert_array_equal(preprocess(x, sfreq, steady, ["a"])[0], preprocess(x, sfreq, CFG, ["a"])[0])


def test_filter_start_steady_is_for_the_causal_filter():
    with pytest.raises(ValidationError, match="filter_start: steady is for filter_phase: causal"):
        PreprocessConfig(filter_phase="zero_phase", filter_start="steady")


def test_report_is_json():
    x = eeg(2, 10 * 250)
    x[0, 5] = np.nan
    _, report = preprocess(x, 250, CFG, ["a", "b"], source="s.edf", interpolated=["b"])
    loaded = json.loads(json.dumps(report.to_dict()))
    assert loaded == {
        "source": "s.edf", "sfreq_in": 250.0, "sfreq_out": 256.0, "duration_seconds": 10.0,
        "n_samples": 2560, "clipped_samples": report.clipped_samples, "nonfinite_samples": [1, 0],
        "flat_channels": [], "interpolated_channels": ["b"], "channels": ["a", "b"], "repairs": [],
    }
    assert all(type(k) is int for k in loaded["clipped_samples"])


def test_preprocess_file_reports_interpolation(tmp_path, write_edf, tusz_signals):
    signals = tusz_signals(20, 250)
    del signals["EEG FZ-REF"], signals["EEG PZ-REF"]
    path = write_edf(tmp_path / "no_midline.edf", signals, 250)
    y, report = preprocess_file(path, "ref19", CFG)
    rec = read_edf(path, "ref19")
    expected, _ = preprocess(rec.signals_uv, rec.sfreq, CFG, rec.channels)
    np.testing.assert_array_equal(y, expected)
    assert report.interpolated_channels == ["Fz", "Pz"] and report.source == str(path)
    assert report.channels == list(REF19) and report.nonfinite_samples == [0] * 19


def test_real_chbmit_crop(SHARED):
    y, report = preprocess_file(SHARED / "chbmit/chb01_03_Seizure.edf", "bipolar", CFG)
    assert y.shape == (23, 41 * 256) and np.all(np.isfinite(y))
    assert report.flat_channels == [] and report.duration_seconds == 41.0
