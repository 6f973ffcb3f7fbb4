"""Synthetic TUSZ-like corpus: real EDF files with TUSZ channel names plus `.csv_bi` labels.

The project's embedded default dataset (DESIGN.md §3). numpy/scipy/edfio only. All amplitudes
are in µV. A recording is a pure function of (seed, recording index): patient p's traits come
from `default_rng([seed, 0, p])`, recording i from `default_rng([seed, 1, i])`, and inside a
recording background, artifacts and seizures draw from separate spawned generators, so adding a
seizure or an artifact leaves every other sample of the recording unchanged.

    paths = generate_corpus("data/synthetic", recordings=24, seed=0)

Files (layout `flat`): `<out_dir>/synth0003_s001_t002.edf` (patient `synth0003`, TUSZ naming)
and its `.csv_bi`. Layout `tusz`, as TUSZ v2.0.x ships: `<out_dir>/edf/<split>/<patient>/
s002_2002/<montage>/<patient>_s002_t000.edf` with TUSZ patient ids (`aaaaaaad`), one patient in
seven in dev and one in eval, and the three TCP montage folders in turn (`01_tcp_ar` and
`03_tcp_ar_a` with `EEG FP1-REF` channel names, `02_tcp_le` with `EEG FP1-LE`).

The output folder belongs to the generator: `.jaxbrr-synthetic` is written there before anything
else, and a folder without it that holds anything, or any EDF the generator did not write, is
refused (SynthFolderError): synthetic recordings never mix with a real corpus.
`<out_dir>/synth.json` holds the parameters and is written last.
"""

from __future__ import annotations

import datetime
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import edfio
import numpy as np
from scipy import signal as sps
from tqdm import tqdm

from common.data.csv_bi import Event, with_background, write_csv_bi
from common.data.montage import ref19_neighbours
from common.files import write_bytes, write_text

VERSION = 1  # bump when the signal model changes: synth.json then no longer matches
# The 19 ref19 electrodes in TUSZ file order (A1/A2 and the rest omitted), then two non-EEG
# channels as real TUSZ files carry them.
ELECTRODES: tuple[str, ...] = (
    "Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2",
    "F7", "F8", "T3", "T4", "T5", "T6", "Fz", "Cz", "Pz",
)
EKG_LABEL, PHOTIC_LABEL = "EEG EKG1-REF", "PHOTIC-REF"
# Wide enough that a 160σ electrode pop of a 50 µV channel is not clipped (0.3 µV steps).
PHYSICAL_RANGE_UV = (-10000.0, 10000.0)
START = datetime.datetime(2000, 1, 1, 0, 0, 0)  # fixed header date: same seed, same bytes
SEIZURE_LABEL = "seiz"

# The 10-20 neighbour graph (the static PE's, common/data/montage.py): seizures spread along it
# and volume conduction mixes along it.
NEIGHBOURS: dict[str, tuple[str, ...]] = ref19_neighbours()
# Posterior dominant rhythm: strongest occipital, weak frontal.
ALPHA_GAIN = {"O1": 1.0, "O2": 1.0, "P3": 0.8, "P4": 0.8, "Pz": 0.8, "T5": 0.6, "T6": 0.6,
              "C3": 0.3, "C4": 0.3, "Cz": 0.3, "T3": 0.25, "T4": 0.25}
# Generalised spike-and-wave: frontal predominance.
GENERALISED_GAIN = {"Fp1": 1.0, "Fp2": 1.0, "F3": 1.0, "F4": 1.0, "Fz": 1.0, "F7": 0.8, "F8": 0.8,
                    "C3": 0.8, "C4": 0.8, "Cz": 0.85, "T3": 0.65, "T4": 0.65, "P3": 0.65,
                    "P4": 0.65, "Pz": 0.7, "T5": 0.55, "T6": 0.55, "O1": 0.5, "O2": 0.5}
# Eye blinks: the cornea's dipole, seen at the frontal poles, fading by the vertex.
BLINK_GAIN = {"Fp1": 1.0, "Fp2": 1.0, "F7": 0.45, "F8": 0.45, "F3": 0.4, "F4": 0.4, "Fz": 0.45,
              "C3": 0.1, "C4": 0.1, "Cz": 0.1}
MUSCLE_SITES = {"left": ("F7", "T3", "T5"), "right": ("F8", "T4", "T6")}  # temporalis
THETA_GAIN = {"Fz": 1.0, "Cz": 1.0, "F3": 0.8, "F4": 0.8, "C3": 0.8, "C4": 0.8}
# Seizure foci, weighted towards the temporal lobes as in adult focal epilepsy.
FOCI = {"T3": 3, "T4": 3, "F7": 3, "F8": 3, "T5": 2, "T6": 2, "F3": 1, "F4": 1, "C3": 1, "C4": 1,
        "P3": 1, "P4": 1, "O1": 1, "O2": 1}


def edf_label(electrode: str) -> str:
    """TUSZ spelling: `Fp1` -> `EEG FP1-REF`."""
    return f"EEG {electrode.upper()}-REF"


LABELS: tuple[str, ...] = tuple(edf_label(e) for e in ELECTRODES) + (EKG_LABEL, PHOTIC_LABEL)


def hops_from(focus: str) -> dict[str, int]:
    """Graph distance along NEIGHBOURS from focus to every electrode (breadth first)."""
    hops, frontier = {focus: 0}, [focus]
    while frontier:
        following = []
        for electrode in frontier:
            for neighbour in NEIGHBOURS[electrode]:
                if neighbour not in hops:
                    hops[neighbour] = hops[electrode] + 1
                    following.append(neighbour)
        frontier = following
    return hops


@dataclass(frozen=True)
class PatientTraits:
    patient_id: str  # no `_`: TUSZ's patient id is the stem before the first `_`
    focus: str  # focal seizures start here
    alpha_hz: float  # posterior dominant rhythm, 8-12 Hz
    background_uv: float  # background std per channel, 20-40 µV
    pink_exponent: float  # β of the 1/f^β background
    generalised_fraction: float  # chance that one of this patient's seizures is generalised


def patient_traits(seed: int, patient: int) -> PatientTraits:
    rng = np.random.default_rng([seed, 0, patient])
    foci = list(FOCI)
    weights = np.array([FOCI[f] for f in foci], dtype=float)
    return PatientTraits(
        patient_id=f"synth{patient:04d}",
        focus=foci[rng.choice(len(foci), p=weights / weights.sum())],
        alpha_hz=float(rng.uniform(8.0, 12.0)),
        background_uv=float(rng.uniform(20.0, 40.0)),
        pink_exponent=float(rng.uniform(1.0, 2.0)),
        # One patient in four has generalised epilepsy; the rest are focal with rare generalised.
        generalised_fraction=0.85 if rng.random() < 0.25 else 0.1,
    )


# ----------------------------------------------------------------------------------------------
# signal pieces


def _shaped_noise(rng, shape, sfreq: float, amplitude: Callable) -> np.ndarray:
    """Gaussian noise with amplitude spectrum amplitude(freqs_hz), unit std along the last axis."""
    n = shape[-1]
    spectrum = np.fft.rfft(rng.standard_normal(shape), axis=-1)
    spectrum *= amplitude(np.fft.rfftfreq(n, 1.0 / sfreq))
    noise = np.fft.irfft(spectrum, n, axis=-1)
    return noise / noise.std(axis=-1, keepdims=True)


def _bump(center_hz: float, width_hz: float) -> Callable:
    """A Gaussian amplitude spectrum for _shaped_noise: narrow-band noise around center_hz."""
    return lambda f: np.exp(-0.5 * ((f - center_hz) / width_hz) ** 2)


def _rise(n: int) -> np.ndarray:
    """Raised-cosine ramp of n samples, strictly inside (0, 1): an envelope starts on its sample."""
    return 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 1) / (n + 1))


def _gains(table: dict[str, float]) -> np.ndarray:
    return np.array([table.get(e, 0.0) for e in ELECTRODES])  # (19,)


def _background(rng, n: int, sfreq: int, traits: PatientTraits) -> tuple[np.ndarray, np.ndarray]:
    """(19, n) µV: spatially mixed pink noise + waxing/waning posterior alpha + theta bursts; and
    the alpha part alone (19, n) µV, which a generalised seizure blocks."""
    # 1/f^β with a 1 Hz knee, so the power sits in the EEG band rather than in DC drift.
    pink = _shaped_noise(rng, (19, n), sfreq, lambda f: (f**2 + 1.0) ** (-traits.pink_exponent / 4))
    adjacency = np.array([[b in NEIGHBOURS[a] for b in ELECTRODES] for a in ELECTRODES], float)
    mixing = np.eye(19) + 0.8 * adjacency / adjacency.sum(1, keepdims=True)  # volume conduction
    pink = mixing @ pink
    pink /= pink.std(axis=1, keepdims=True)
    # Alpha: a narrow band at the patient's frequency, left/right sources 70 % coherent, under a
    # slow (< 0.2 Hz) log-normal envelope.
    band = _shaped_noise(rng, (2, n), sfreq, _bump(traits.alpha_hz, 0.5))
    left, right = band[0], 0.7 * band[0] + 0.71 * band[1]
    side = [2 if e.endswith("z") else 1 - int(e[-1]) % 2 for e in ELECTRODES]  # odd: left
    alpha = np.stack([left, right, 0.5 * (left + right)])[side]  # (19, n)
    envelope = np.exp(0.6 * _shaped_noise(rng, (n,), sfreq, _bump(0.0, 0.1)))
    alpha *= envelope / envelope.mean()
    share = 0.8 * _gains(ALPHA_GAIN) + 0.1 * (_gains(ALPHA_GAIN) == 0)  # alpha's amplitude share
    alpha *= share[:, None]
    x = np.sqrt(1 - share**2)[:, None] * pink + alpha
    # Drowsy theta bursts (4-7 Hz, 1-3 s, frontocentral): physiological rhythms that are no seizure.
    theta_gain = _gains(THETA_GAIN) + 0.4
    for _ in range(rng.poisson(n / sfreq / 90)):
        length = int(rng.uniform(1.0, 3.0) * sfreq)
        start = int(rng.integers(0, max(1, n - length)))
        t = np.arange(length) / sfreq
        burst = np.sin(2 * np.pi * rng.uniform(4, 7) * t) * np.hanning(length)
        burst *= rng.uniform(1.0, 1.5)
        x[:, start:start + length] += theta_gain[:, None] * burst[: n - start]
    channel_uv = traits.background_uv * rng.uniform(0.85, 1.15, 19)
    return channel_uv[:, None] * x, channel_uv[:, None] * alpha


def _line_noise(rng, n: int, sfreq: int) -> np.ndarray:
    """(19, n) µV: 60 Hz mains pick-up, 1-4 µV, one phase, per-electrode coupling 0.7-1.3."""
    t = np.arange(n) / sfreq
    hum = rng.uniform(1.0, 4.0) * np.sin(2 * np.pi * 60.0 * t + rng.uniform(0, 2 * np.pi))
    return rng.uniform(0.7, 1.3, 19)[:, None] * hum


def _ekg(rng, n: int, sfreq: int) -> np.ndarray:
    """(n,) µV: beats at 55-95 bpm (P, QRS, T as Gaussians, R 400-1000 µV), wander and noise."""
    rr = 60.0 / rng.uniform(55, 95)
    beats = np.cumsum(rr * (1 + 0.03 * rng.standard_normal(int(n / sfreq / rr) + 2)))
    impulses = np.zeros(n)
    r_samples = (beats * sfreq).astype(int)
    impulses[r_samples[r_samples < n]] = rng.uniform(400, 1000)
    t = np.arange(-int(0.4 * sfreq), int(0.4 * sfreq) + 1) / sfreq
    waves = ((0.1, -0.2, 0.025), (-0.1, -0.03, 0.01), (1.0, 0.0, 0.012), (-0.25, 0.03, 0.012),
             (0.3, 0.25, 0.05))  # (height, time s, width s) of P, Q, R, S, T
    beat = sum(h * np.exp(-0.5 * ((t - c) / w) ** 2) for h, c, w in waves)
    wander = 50 * np.sin(2 * np.pi * 0.25 * np.arange(n) / sfreq + rng.uniform(0, 2 * np.pi))
    return sps.oaconvolve(impulses, beat, mode="same") + wander + 10 * rng.standard_normal(n)


def _photic(rng, n: int, sfreq: int) -> np.ndarray:
    """(n,): zero, or in 30 % of recordings one 10 s train of 5 ms flashes at 1-20 Hz."""
    x = np.zeros(n)
    if rng.random() < 0.3 and n > 12 * sfreq:
        start, rate = int(rng.integers(0, n - 11 * sfreq)), rng.choice([1, 5, 10, 15, 20])
        for flash in start + (np.arange(10 * rate) * sfreq / rate).astype(int):
            x[flash:flash + max(1, int(0.005 * sfreq))] = 100.0
    return x


# ----------------------------------------------------------------------------------------------
# seizures


def _grid_samples(sfreq: int) -> int:
    """Onsets lie on multiples of 1/gcd(sfreq, 16) s: exact in binary and in 4 decimals."""
    return sfreq // math.gcd(sfreq, 16)


def _frequency_phase(rng, start_hz: float, end_hz: float, length: int, sfreq: int):
    """Geometric glide start_hz -> end_hz with 4 % slow jitter; returns (freq, phase) (length,)."""
    progress = np.arange(length) / length
    freq = start_hz * (end_hz / start_hz) ** progress
    freq *= 1 + 0.04 * _shaped_noise(rng, (length,), sfreq, _bump(0.0, 0.3))
    return freq, 2 * np.pi * np.cumsum(freq) / sfreq


def _focal(rng, length: int, sfreq: int, focus: str, traits: PatientTraits) -> dict:
    """Evolving focal discharge: 5-8 Hz at the focus gliding to 2-3 Hz, RMS rising from 1-2 to 3-5
    background std, sharper (more harmonics) as it evolves, recruiting neighbours hop by hop."""
    freq, phase = _frequency_phase(rng, rng.uniform(5, 8), rng.uniform(2, 3), length, sfreq)
    progress = np.arange(length) / length
    harmonics = (0.15 + 0.55 * progress)[None] ** np.arange(4)[:, None]  # (4, length)
    unit_rms = np.sqrt((harmonics**2).sum(0) / 2)
    rms_start, rms_end = rng.uniform(1.0, 2.0), rng.uniform(3.0, 5.0)
    envelope = traits.background_uv * (rms_start + (rms_end - rms_start) * progress)
    seconds_per_hop, extent = rng.uniform(1.5, 4.0), int(rng.choice([1, 2, 2, 3, 3, 4]))
    taper = _rise(int(0.25 * sfreq))[::-1]
    out = {}
    for electrode, hop in hops_from(focus).items():
        if hop > extent:
            continue
        delay = 0 if hop == 0 else int((hop * seconds_per_hop + rng.uniform(0, 0.5)) * sfreq)
        lag_phase = 2 * np.pi * freq * hop * rng.uniform(0.01, 0.03)  # conduction lag
        if delay > length - sfreq:
            continue
        wave = sum(harmonics[k] * np.cos((k + 1) * (phase - lag_phase)) for k in range(4))
        wave /= unit_rms
        x = np.zeros(length)
        x[delay:] = wave[delay:] * envelope[delay:] * 0.6**hop
        ramp = _rise(int(rng.uniform(1.0, 2.0) * sfreq))[: length - delay]
        x[delay:delay + len(ramp)] *= ramp
        x[-len(taper):] *= taper
        out[electrode] = x
    return out


def _spike_wave(cycle: np.ndarray) -> np.ndarray:
    """One spike-and-wave per unit of cycle phase: a 30 ms-wide spike, then an opposite slow wave;
    zero mean and unit RMS over a cycle."""
    def shape(c):
        return np.exp(-0.5 * ((c - 0.12) / 0.03) ** 2) - np.exp(-0.5 * ((c - 0.5) / 0.12) ** 2)
    grid = shape(np.linspace(0, 1, 1000, endpoint=False))
    return (shape(cycle) - grid.mean()) / grid.std()


def _generalised(rng, length: int, sfreq: int, traits: PatientTraits) -> tuple[dict, np.ndarray]:
    """3 Hz spike-and-wave (3-3.5 Hz slowing to 2.5-3 Hz) on all electrodes at once, frontal
    predominant, RMS 3-4.5 background std, abrupt onset and offset. Returns the discharge and its
    (length,) envelope, by which the posterior alpha is blocked."""
    freq, phase = _frequency_phase(rng, rng.uniform(3.0, 3.5), rng.uniform(2.5, 3.0), length, sfreq)
    rms = traits.background_uv * rng.uniform(3.0, 4.5)
    envelope = np.ones(length)
    envelope[: int(0.3 * sfreq)] = _rise(int(0.3 * sfreq))
    envelope[length - int(0.2 * sfreq):] *= _rise(int(0.2 * sfreq))[::-1]
    out = {}
    for electrode in ELECTRODES:
        cycle = (phase / (2 * np.pi) - freq * rng.uniform(0, 0.015)) % 1.0
        out[electrode] = rms * GENERALISED_GAIN[electrode] * _spike_wave(cycle) * envelope
    return out, envelope


def draw_seizures(rng, duration_seconds: float, count: int, traits: PatientTraits) -> list[dict]:
    """`count` non-overlapping seizures (focal 15-90 s, generalised 10-45 s), 20 s apart, none in
    the first 10 s or last 5 s. In a short recording they are shortened (to no less than 10 s),
    then dropped, until they fit."""
    kinds = ["generalised" if rng.random() < traits.generalised_fraction else "focal"
             for _ in range(count)]
    lengths = [rng.uniform(10, 45) if k == "generalised" else rng.uniform(15, 90) for k in kinds]
    head, tail, gap = 10.0, 5.0, 20.0
    while lengths and sum(lengths) + gap * (len(lengths) - 1) + head + tail > duration_seconds:
        fits = (duration_seconds - head - tail - gap * (len(lengths) - 1)) / len(lengths)
        if fits >= 10.0:
            lengths = [min(length, fits) for length in lengths]
        else:
            kinds, lengths = kinds[:-1], lengths[:-1]
    free = duration_seconds - head - tail - sum(lengths) - gap * max(0, len(lengths) - 1)
    offsets = np.sort(rng.uniform(0, free, len(lengths)))
    starts = [head + offsets[i] + sum(lengths[:i]) + gap * i for i in range(len(lengths))]
    return [{"kind": k, "start_seconds": float(s), "duration_seconds": float(d)}
            for k, s, d in zip(kinds, starts, lengths, strict=True)]


# ----------------------------------------------------------------------------------------------
# artifacts


def draw_artifacts(rng, duration_seconds: float) -> list[dict]:
    """Blinks 3-15/min, muscle bursts 0.3-1.5/min, ~1.2 electrode pops per recording, and in one
    recording in ten a flat electrode."""
    def times(count, margin=6.0):
        return np.sort(rng.uniform(0.5, max(0.5, duration_seconds - margin), count))
    per_minute = duration_seconds / 60
    artifacts = [{"kind": "blink", "start_seconds": float(t)}
                 for t in times(rng.poisson(rng.uniform(3, 15) * per_minute))]
    artifacts += [{"kind": "muscle", "start_seconds": float(t),
                   "duration_seconds": float(rng.uniform(1, 5)),
                   "side": str(rng.choice(["left", "right"]))}
                  for t in times(rng.poisson(rng.uniform(0.3, 1.5) * per_minute))]
    artifacts += [{"kind": "pop", "start_seconds": float(t), "channel": str(rng.choice(ELECTRODES))}
                  for t in times(rng.poisson(1.2))]
    if rng.random() < 0.1:
        artifacts.append({"kind": "flat", "channel": str(rng.choice(ELECTRODES))})
    return artifacts


def _add_artifact(x: np.ndarray, artifact: dict, rng, sfreq: int, background_std: np.ndarray):
    """Adds one artifact to x (19, n) in place; missing amplitudes are drawn from rng."""
    kind, n = artifact["kind"], x.shape[1]
    start = int(round(artifact.get("start_seconds", 0.0) * sfreq))
    if kind == "blink":  # 200-400 ms positive hump, 100-200 µV at Fp1/Fp2
        length = int(artifact.get("duration_seconds", rng.uniform(0.2, 0.4)) * sfreq)
        hump = np.hanning(length + 2)[1:-1] * artifact.get("amplitude_uv", rng.uniform(100, 200))
        x[:, start:start + length] += _gains(BLINK_GAIN)[:, None] * hump[: n - start]
    elif kind == "muscle":  # 20-70 Hz broadband EMG, 15-50 µV RMS, local to one temporalis
        length = int(artifact["duration_seconds"] * sfreq)
        sos = sps.butter(4, (20, 70), btype="bandpass", fs=sfreq, output="sos")
        emg = sps.sosfilt(sos, rng.standard_normal((3, length + sfreq)))[:, sfreq:]  # settled
        emg *= artifact.get("amplitude_uv", rng.uniform(15, 50)) / emg.std()
        edge = min(int(0.2 * sfreq), length // 2)
        envelope = np.ones(length)
        envelope[:edge], envelope[length - edge:] = _rise(edge), _rise(edge)[::-1]
        for k, (gain, electrode) in enumerate(zip((1.0, 0.8, 0.6), MUSCLE_SITES[artifact["side"]],
                                                  strict=True)):
            burst = gain * envelope * emg[k]
            x[ELECTRODES.index(electrode), start:start + length] += burst[: n - start]
    elif kind == "pop":  # impedance jump: a step of 110-160 background std decaying in 0.2-1 s
        row = ELECTRODES.index(artifact["channel"])
        height = artifact.get("sigma_multiple", rng.uniform(110, 160)) * background_std[row]
        height = min(height, 8000.0) * rng.choice([-1.0, 1.0])
        tau = rng.uniform(0.2, 1.0)
        decay = np.exp(-np.arange(min(n - start, int(12 * tau * sfreq))) / (tau * sfreq))
        x[row, start:start + len(decay)] += height * decay
    elif kind == "flat":  # a disconnected electrode: constant 0 µV for the whole recording
        x[ELECTRODES.index(artifact["channel"])] = 0.0
    else:
        raise ValueError(f"unknown artifact kind {kind!r}; known: blink, muscle, pop, flat")


# ----------------------------------------------------------------------------------------------
# one recording


def synthesize_recording(
    rng: np.random.Generator,
    sfreq: int,
    duration_seconds: float,
    seizures: list[dict] | None,
    patient_traits: PatientTraits,
    artifacts: list[dict] | None = None,
) -> tuple[dict[str, np.ndarray], list[Event]]:
    """Signals in µV keyed by EDF label (LABELS order) and the seizure events.

    seizures: dicts {kind: focal|generalised, start_seconds, duration_seconds[, focus]}; None or []
    for none. Onset and offset snap to the 1/16 s grid (1/2 s at 250 Hz) so the event's 4-decimal
    times are exactly the first and one-past-last sample of the discharge.
    artifacts: None draws them (draw_artifacts); a list places exactly those ([] for none).
    """
    n = int(round(duration_seconds * sfreq))
    background_rng, artifact_rng, seizure_rng = rng.spawn(3)
    x, alpha = _background(background_rng, n, sfreq, patient_traits)  # (19, n) each
    background_std = x.std(axis=1)
    x += _line_noise(background_rng, n, sfreq)
    ekg = _ekg(background_rng, n, sfreq)
    for electrode in ("T3", "T4", "T5", "T6"):  # cardiac field picked up at the temporal chain
        x[ELECTRODES.index(electrode)] += background_rng.uniform(0.003, 0.008) * ekg
    photic = _photic(background_rng, n, sfreq)

    events, step = [], _grid_samples(sfreq)
    for spec in seizures or []:
        onset = int(round(spec["start_seconds"] * sfreq / step)) * step
        stop_seconds = spec["start_seconds"] + spec["duration_seconds"]
        offset = min(int(round(stop_seconds * sfreq / step)) * step, n // step * step)
        if onset < 0 or offset - onset < sfreq:
            raise ValueError(f"seizure {spec} must lie inside the {duration_seconds} s recording "
                             f"and last at least 1 s")
        if spec["kind"] == "focal":
            focus = spec.get("focus", patient_traits.focus)
            if focus not in NEIGHBOURS:
                raise ValueError(f"seizure focus {focus!r} is not one of {', '.join(ELECTRODES)}")
            discharge = _focal(seizure_rng, offset - onset, sfreq, focus, patient_traits)
        elif spec["kind"] == "generalised":
            discharge, envelope = _generalised(seizure_rng, offset - onset, sfreq, patient_traits)
            x[:, onset:offset] -= envelope * alpha[:, onset:offset]  # spike-wave replaces alpha
        else:
            raise ValueError(f"seizure kind {spec['kind']!r}: use 'focal' or 'generalised'")
        for electrode, wave in discharge.items():
            x[ELECTRODES.index(electrode), onset:offset] += wave
        events.append(Event(onset / sfreq, offset / sfreq, SEIZURE_LABEL))

    if artifacts is None:
        artifacts = draw_artifacts(artifact_rng, duration_seconds)
    for artifact in sorted(artifacts, key=lambda a: a["kind"] == "flat"):  # flat last: stays flat
        _add_artifact(x, artifact, artifact_rng, sfreq, background_std)

    signals = {edf_label(e): x[i] for i, e in enumerate(ELECTRODES)}
    signals[EKG_LABEL], signals[PHOTIC_LABEL] = ekg, photic
    return signals, events


def write_recording(path: str | Path, signals_uv: dict[str, np.ndarray], sfreq: int,
                    patient_id: str) -> Path:
    """EDF with 1 s records, ±10 mV physical range, fixed start date; written atomically."""
    path = Path(path)
    edf_signals = []
    for label, data in signals_uv.items():
        low, high = float(data.min()), float(data.max())
        if low < PHYSICAL_RANGE_UV[0] or high > PHYSICAL_RANGE_UV[1]:
            raise ValueError(f"{path}: channel {label} spans [{low:.0f}, {high:.0f}] µV, outside "
                             f"the physical range {PHYSICAL_RANGE_UV}; it would saturate")
        edf_signals.append(edfio.EdfSignal(data, sfreq, label=label, physical_dimension="uV",
                                           physical_range=PHYSICAL_RANGE_UV))
    edf = edfio.Edf(edf_signals, patient=edfio.Patient(code=patient_id),
                    recording=edfio.Recording(startdate=START.date()), starttime=START.time(),
                    data_record_duration=1.0)
    buffer = io.BytesIO()
    edf.write(buffer)
    write_bytes(path, buffer.getvalue())
    return path


# ----------------------------------------------------------------------------------------------
# the corpus


@dataclass
class SynthRecording:
    stem: str
    patient: PatientTraits
    sfreq: int
    duration_seconds: float
    signals_uv: dict[str, np.ndarray]
    events: list[Event]


OWNER = ".jaxbrr-synthetic"  # the generator's mark on its output folder, written first
TUSZ_MONTAGES = (("01_tcp_ar", "REF"), ("02_tcp_le", "LE"), ("03_tcp_ar_a", "REF"))


class SynthFolderError(ValueError):
    """The output folder holds files the generator did not write."""


def recording_stem(index: int, patients: int) -> str:
    """Recording i belongs to patient i % patients, as its (i // patients + 1)-th take."""
    return f"synth{index % patients:04d}_s001_t{index // patients + 1:03d}"


def tusz_patient(patient: int) -> str:
    """Eight lower-case letters, as TUSZ v2 names patients: 0 -> aaaaaaaa, 3 -> aaaaaaad."""
    letters = []
    for _ in range(8):
        patient, digit = divmod(patient, 26)
        letters.append(chr(ord("a") + digit))
    return "".join(reversed(letters))


def recording_path(index: int, patients: int, layout: str) -> tuple[str, str]:
    """(path below out_dir without suffix, EEG channel reference) of recording `index`."""
    if layout == "flat":
        return recording_stem(index, patients), "REF"
    patient, session = index % patients, index // patients + 1
    split = "eval" if patient % 7 == 6 else "dev" if patient % 7 == 5 else "train"
    montage, reference = TUSZ_MONTAGES[index % len(TUSZ_MONTAGES)]
    name = tusz_patient(patient)
    return f"edf/{split}/{name}/s{session:03d}_{2000 + session}/{montage}/{name}_s{session:03d}_t000", reference


def claim(out_dir: Path) -> None:
    """Make out_dir the generator's, or refuse it: SynthFolderError naming what is in the way."""
    marker = out_dir / OWNER
    if not marker.is_file():
        try:  # folders written before the mark existed carry the generator's synth.json
            owned = json.loads((out_dir / "synth.json").read_text()).get("generator") == "common.data.synth"
        except (OSError, ValueError, AttributeError):
            owned = False
        present = sorted(out_dir.iterdir()) if out_dir.is_dir() else []
        if present and not owned:
            raise SynthFolderError(
                f"{out_dir} holds files the synthetic generator did not write (e.g. {present[0].name}); it "
                "writes only into an empty folder of its own. To use the recordings there, drop the "
                "generator (--set data.synthetic=null, or a config without data.synthetic); to generate, "
                "point data.data_dir at a new folder"
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text(marker, "written by common/data/synth.py; everything in this folder is synthetic\n")


def check_own_files(out_dir: Path, files: list[str]) -> None:
    """Every EDF in the generator's folder is one it writes (files: paths below out_dir, no suffix)."""
    ours = set(files)
    foreign = sorted(p for p in out_dir.rglob("*.edf") if p.relative_to(out_dir).with_suffix("").as_posix() not in ours)
    if foreign:
        raise SynthFolderError(
            f"{out_dir} is the synthetic generator's folder, but {len(foreign)} EDF file(s) in it are not "
            f"its own (e.g. {foreign[0]}): move them to a folder of their own and point data.data_dir there"
        )


def synthesize_corpus_recording(index: int, seed: int, patients: int,
                                duration_seconds: tuple[float, float], sfreqs: tuple[int, ...],
                                seizures_per_recording: tuple[int, int]) -> SynthRecording:
    """Recording `index` of the corpus; a function of (seed, index, patients, ranges) only."""
    traits = patient_traits(seed, index % patients)
    rng = np.random.default_rng([seed, 1, index])
    sfreq = int(sfreqs[rng.integers(len(sfreqs))])
    duration = float(max(1, round(rng.uniform(*duration_seconds))))  # whole 1 s EDF records
    low, high = seizures_per_recording
    count = int(rng.integers(low, high + 1))
    if index < patients and high >= 1:  # every patient's first take has a seizure to detect
        count = max(count, 1)
    seizures = draw_seizures(rng, duration, count, traits)
    signals, events = synthesize_recording(rng, sfreq, duration, seizures, traits)
    return SynthRecording(recording_stem(index, patients), traits, sfreq, duration, signals, events)


def generate_corpus(
    out_dir: str | Path,
    recordings: int,
    seed: int,
    patients: int = 8,
    duration_seconds: tuple[float, float] = (180.0, 420.0),
    sfreqs: tuple[int, ...] = (250, 256, 400, 512),
    seizures_per_recording: tuple[int, int] = (0, 2),
    progress: bool = True,
    layout: str = "flat",
) -> list[Path]:
    """Write the corpus to out_dir (see the module docstring for the folder rules); returns the
    EDF paths. Files already written with the same parameters (synth.json) are kept; with other
    parameters the old files are removed first."""
    out_dir = Path(out_dir)
    places = [recording_path(i, patients, layout) for i in range(recordings)]
    files = [path for path, _ in places]
    params = {
        "generator": "common.data.synth", "version": VERSION, "recordings": recordings,
        "patients": patients, "seed": seed, "duration_seconds": list(duration_seconds),
        "sfreqs": list(sfreqs), "seizures_per_recording": list(seizures_per_recording),
        "layout": layout, "files": files,
    }
    claim(out_dir)
    manifest = out_dir / "synth.json"
    try:
        previous = json.loads(manifest.read_text())
    except (OSError, ValueError):
        previous = None
    if previous is not None and previous != params:
        manifest.unlink()
        for stem in previous.get("files", []):
            for suffix in (".edf", ".csv_bi"):
                (out_dir / f"{stem}{suffix}").unlink(missing_ok=True)
    check_own_files(out_dir, files)
    paths = []
    for index in tqdm(range(recordings), desc="synthetic EEG", unit="rec", disable=not progress):
        (place, reference), stem = places[index], Path(places[index][0]).name
        edf_path, csv_path = out_dir / f"{place}.edf", out_dir / f"{place}.csv_bi"
        paths.append(edf_path)
        if previous == params and edf_path.is_file() and csv_path.is_file():
            continue
        rec = synthesize_corpus_recording(index, seed, patients, tuple(duration_seconds),
                                          tuple(sfreqs), tuple(seizures_per_recording))
        edf_path.parent.mkdir(parents=True, exist_ok=True)
        patient = rec.patient.patient_id if layout == "flat" else stem.split("_", 1)[0]
        eeg = {edf_label(e) for e in ELECTRODES}  # TUSZ names the reference in each label
        signals = {label.replace("-REF", f"-{reference}") if label in eeg else label: x
                   for label, x in rec.signals_uv.items()}
        write_recording(edf_path, signals, rec.sfreq, patient)
        write_csv_bi(csv_path, with_background(rec.events, rec.duration_seconds), rec.duration_seconds)
    write_text(manifest, json.dumps(params, indent=2, sort_keys=True) + "\n")
    return paths


def generate_from_config(out_dir: str | Path, cfg, progress: bool = True) -> list[Path]:
    """generate_corpus with the fields of a common.config.SynthConfig."""
    return generate_corpus(out_dir, cfg.recordings, cfg.seed, cfg.patients, cfg.duration_seconds,
                           cfg.sfreqs, cfg.seizures_per_recording, progress, cfg.layout)
