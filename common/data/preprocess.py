"""Whole-recording preprocessing: µV at any rate -> float32 z-scores at cfg.sfreq.

    signals, report = preprocess_file("x.edf", "ref19", cfg.preprocess)   # (C, N_out) float32

The original's order (original_spec.md §1.5): resample, bandpass Butterworth, notch, per-channel
z-score over the recording (population std), clip, float32. Differences, each deliberate:
- filters run as second-order sections (`sosfilt`), not `lfilter` on (b, a): the same transfer
  function, but a 0.5 Hz edge at 256 Hz is ill-conditioned in (b, a) form. Bandpass and notch
  are one cascade, so the data is traversed once.
- `polyphase` resampling (scipy's resample_poly) is the default; `fft` is the original's
  scipy.signal.resample. Both give round(n * sfreq / sfreq_in) samples.
- non-finite input samples are zeroed *before* filtering (an IIR filter would spread one NaN to
  the end of the recording), kept out of the mean and std, and zero in the output; the original
  zeroed them after the z-score, by which point the whole channel was NaN.
- a flat channel is reported and output as zeros instead of dividing by std + 1e-8; a recording
  whose every channel is flat is refused.
Every intervention is counted in a RecordingReport.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import signal

from common.config import PreprocessConfig

# resample_poly's filter has ~20 * max(up, down) taps; beyond this the ratio is not a plausible
# pair of EEG rates and polyphase filtering would crawl.
_MAX_POLYPHASE_FACTOR = 1000


@dataclass
class RecordingReport:
    """What preprocessing did to one recording; json-serialisable through to_dict()."""

    source: str
    sfreq_in: float
    sfreq_out: float
    duration_seconds: float  # of the input, n_in / sfreq_in
    n_samples: int  # of the output
    clipped_samples: list[int]  # per channel, at the output rate
    nonfinite_samples: list[int]  # per channel, NaN/Inf in the input
    flat_channels: list[str]
    interpolated_channels: list[str]
    channels: list[str]
    repairs: list[str] = field(default_factory=list)  # EDF header repairs (common.data.edf)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _as_fraction(rate: float) -> Fraction:
    """The fraction of denominator <= 10^6 that is `rate` to float precision, else rate's exact value."""
    near = Fraction(rate).limit_denominator(10**6)
    return near if abs(float(near) - rate) <= 4 * np.finfo(float).eps * abs(rate) else Fraction(rate)


def resample_ratio(sfreq_in: float, sfreq_out: float, source: str = "<array>") -> tuple[int, int]:
    """(up, down) in lowest terms with sfreq_out / sfreq_in = up / down; ValueError if huge. A rate
    that is a fraction with a small denominator (an EDF of 1000 samples per 3 s record: 333.33... Hz)
    is read as that fraction, not as the float's binary expansion (whose factors are ~2^52)."""
    ratio = _as_fraction(sfreq_out) / _as_fraction(sfreq_in)
    if max(ratio.numerator, ratio.denominator) > _MAX_POLYPHASE_FACTOR:
        raise ValueError(
            f"{source}: sampling rate {sfreq_in} Hz -> {sfreq_out} Hz needs polyphase factors "
            f"{ratio.numerator}/{ratio.denominator}; remove this recording, or set preprocess.resample: fft "
            "(which resamples every recording by FFT, and so changes the cache of all of them)"
        )
    return ratio.numerator, ratio.denominator


def filter_sos(cfg: PreprocessConfig) -> np.ndarray:
    """Bandpass (Butterworth, 2*order poles) then notch, as one (S, 6) cascade at cfg.sfreq."""
    sos = signal.butter(cfg.bandpass_order, cfg.bandpass_hz, btype="bandpass", fs=cfg.sfreq, output="sos")
    if cfg.notch_hz is None:
        return sos
    b, a = signal.iirnotch(cfg.notch_hz, cfg.notch_q, fs=cfg.sfreq)
    return np.vstack([sos, signal.tf2sos(b, a)])


def resample(x: np.ndarray, sfreq_in: float, cfg: PreprocessConfig, source: str = "<array>") -> np.ndarray:
    """(C, N) -> (C, round(N * cfg.sfreq / sfreq_in)); x itself when the rates agree."""
    if sfreq_in == cfg.sfreq:
        return x
    n_out = int(round(x.shape[-1] * cfg.sfreq / sfreq_in))
    if cfg.resample == "fft":
        return signal.resample(x, n_out, axis=-1)  # (C, n_out)
    up, down = resample_ratio(sfreq_in, cfg.sfreq, source)
    # resample_poly returns ceil(N * up / down) samples; the last one may go.
    return signal.resample_poly(x, up, down, axis=-1)[:, :n_out]  # (C, n_out)


def _output_mask(bad: np.ndarray, n_out: int) -> np.ndarray:
    """(C, N_in) bad input samples -> (C, n_out) output samples whose span touches one."""
    n_in = bad.shape[-1]
    cumulative = np.zeros((bad.shape[0], n_in + 1), np.int64)
    np.cumsum(bad, axis=-1, out=cumulative[:, 1:])
    j = np.arange(n_out)
    lo = (j * n_in) // n_out
    hi = np.maximum(lo + 1, -((-(j + 1) * n_in) // n_out))  # ceil((j+1) * n_in / n_out)
    return (cumulative[:, hi] - cumulative[:, lo]) > 0


def preprocess(
    signals_uv: np.ndarray,
    sfreq_in: float,
    cfg: PreprocessConfig,
    channels: Sequence[str],
    *,
    source: str = "<array>",
    interpolated: Sequence[str] = (),
    repairs: Sequence[str] = (),
    refuse_flat: bool = True,
) -> tuple[np.ndarray, RecordingReport]:
    """(C, N) µV at sfreq_in -> ((C, N_out) float32 at cfg.sfreq, report). Input is not modified.
    A recording whose every channel is flat is a ValueError unless `refuse_flat` is False (for a
    look at it: `python -m jaxbrr.data inspect`)."""
    x = np.asarray(signals_uv, dtype=np.float64)  # (C, N)
    if x.ndim != 2 or x.shape[0] != len(channels):
        raise ValueError(f"{source}: signals of shape {x.shape} do not match {len(channels)} channels")
    n_in = x.shape[-1]
    if n_in == 0:
        raise ValueError(f"{source}: the recording has no samples")

    finite = np.isfinite(x)
    nonfinite = n_in - np.count_nonzero(finite, axis=-1)  # (C,)
    has_bad = bool(nonfinite.any())
    if has_bad and cfg.nonfinite == "error":
        counts = ", ".join(f"{c}: {int(k)}" for c, k in zip(channels, nonfinite, strict=True) if k)
        raise ValueError(
            f"{source}: NaN/Inf samples ({counts}); fix the recording, or set "
            "preprocess.nonfinite: zero to zero them (they are counted in the report)"
        )
    if has_bad:
        x = np.where(finite, x, 0.0)  # a copy: the caller's array keeps its NaNs
        valid = np.maximum(n_in - nonfinite, 1)
        mean_in = x.sum(axis=-1) / valid
        std_in = np.sqrt((np.where(finite, x - mean_in[:, None], 0.0) ** 2).sum(axis=-1) / valid)
    else:
        std_in = x.std(axis=-1)
    flat = std_in <= cfg.flat_std_uv  # (C,); an all-NaN channel is flat too

    # 1. resample, 2. bandpass + notch (one SOS cascade along time, all channels at once). Under
    # filter_start: steady each channel's first value is taken off first: the band-pass passes no
    # DC, so filtering x - x[0] from rest is filtering x from the steady state of x[0] (scipy's
    # sosfilt_zi), and taken off before resampling it is no step for resample_poly's zero padding
    # either (whose first output sample would otherwise not be the channel's level at 400, 512 Hz)
    if cfg.filter_phase == "causal" and cfg.filter_start == "steady":
        x = x - x[:, :1]  # a copy: the caller's array is left as it is
    y = resample(x, sfreq_in, cfg, source)  # (C, N_out)
    n_out = y.shape[-1]
    if n_out < 2:  # one sample varies in no channel: "flat" would misname it
        raise ValueError(f"{source}: {n_in} sample(s) at {sfreq_in:g} Hz ({n_out} at {cfg.sfreq:g} Hz) are too "
                         "short a recording to read; remove it")
    sos = filter_sos(cfg)
    if cfg.filter_phase == "causal":
        y = signal.sosfilt(sos, y, axis=-1)  # (C, N_out), a new array
    else:
        # sosfiltfilt's default padding (scipy/signal/_signaltools.py, sosfiltfilt)
        padlen = 3 * (2 * len(sos) + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum()))
        if n_out <= padlen:
            raise ValueError(
                f"{source}: {n_out} samples are too few for zero-phase filtering (need > {padlen}); "
                "remove this recording or use preprocess.filter_phase: causal"
            )
        y = signal.sosfiltfilt(sos, y, axis=-1)  # (C, N_out)

    # 3. z-score over the recording (population std), excluding samples that were not finite
    bad_out = _output_mask(~finite, n_out) if has_bad else None
    del finite
    if bad_out is not None:
        y[bad_out] = 0.0
        count = np.maximum(n_out - bad_out.sum(axis=-1), 1)
    else:
        count = np.full(len(channels), n_out)
    mean = y.sum(axis=-1) / count
    y -= mean[:, None]
    if bad_out is not None:
        y[bad_out] = 0.0
    std = np.sqrt(np.einsum("ct,ct->c", y, y) / count)  # (C,), without a (C, N) temporary
    flat |= std == 0.0  # all energy outside the band
    if flat.all() and refuse_flat:  # zeros labelled as anything would teach, and score, silence
        raise ValueError(
            f"{source}: every channel is flat (std <= preprocess.flat_std_uv = {cfg.flat_std_uv:g} µV, or no "
            "energy in the band): the recording holds no EEG; remove it from the data"
        )
    y[flat] = 0.0
    y /= np.where(flat, 1.0, std)[:, None]

    # 4. clip at ±clip_sigma, counting what was cut
    clipped = np.zeros(len(channels), np.int64)
    if cfg.clip_sigma is not None:
        clipped = np.count_nonzero(y > cfg.clip_sigma, axis=-1) + np.count_nonzero(y < -cfg.clip_sigma, axis=-1)
        np.clip(y, -cfg.clip_sigma, cfg.clip_sigma, out=y)

    report = RecordingReport(
        source=str(source),
        sfreq_in=float(sfreq_in),
        sfreq_out=float(cfg.sfreq),
        duration_seconds=n_in / float(sfreq_in),
        n_samples=int(n_out),
        clipped_samples=[int(k) for k in clipped],
        nonfinite_samples=[int(k) for k in nonfinite],
        flat_channels=[c for c, f in zip(channels, flat, strict=True) if f],
        interpolated_channels=list(interpolated),
        channels=list(channels),
        repairs=list(repairs),
    )
    return y.astype(np.float32), report  # (C, N_out)


def preprocess_file(path: str | Path, montage: str, cfg: PreprocessConfig) -> tuple[np.ndarray, RecordingReport]:
    """read_edf + preprocess: one EDF file -> ((C, N_out) float32, report)."""
    from common.data.edf import read_edf  # MNE is imported only by callers that read files

    recording = read_edf(path, montage, interpolate=cfg.interpolate)
    return preprocess(
        recording.signals_uv,
        recording.sfreq,
        cfg,
        recording.channels,
        source=recording.path,
        interpolated=recording.interpolated,
        repairs=recording.repairs,
    )
