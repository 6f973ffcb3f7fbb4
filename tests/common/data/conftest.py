"""Fixtures for the data tests: EDF files written with edfio, and the shared real files.

Helpers are handed out as fixtures (`write_edf`, `tusz_signals`) rather than imported, so that
no test depends on which `conftest` module Python finds first.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import edfio
import numpy as np
import pytest

# TUSZ spelling of the 19 REF19 electrodes (01_tcp_ar files).
TUSZ_NAMES: dict[str, str] = {
    name: f"EEG {name.upper()}-REF"
    for name in ("Fp1", "F3", "C3", "P3", "F7", "T3", "T5", "O1", "Fz", "Cz", "Pz",
                 "Fp2", "F4", "C4", "P4", "F8", "T4", "T6", "O2")
}


@pytest.fixture
def SHARED(shared) -> Path:  # noqa: N802 - named as the folder it stands for
    """../shared/data (the root conftest's `shared` fixture skips when it is absent)."""
    return shared / "data"


def _write_edf(
    path: Path,
    signals_uv: dict[str, np.ndarray],
    sfreq: float | dict[str, float],
    units: str = "uV",
    record_seconds: float = 1.0,
    starttime: datetime.time | None = None,
) -> Path:
    """Write an EDF with labels exactly as given (16-bit, physical range = the data's range).

    sfreq may be one rate or a rate per label; every signal must fill whole data records.
    starttime is the header's clock time (edfio's default 00.00.00 when None).
    """
    signals = []
    for label, data in signals_uv.items():
        data = np.asarray(data, dtype=np.float64)
        low, high = float(data.min()), float(data.max())
        if high - low < 1e-3:  # a flat signal still needs a non-empty physical range
            low, high = low - 1.0, high + 1.0
        rate = sfreq[label] if isinstance(sfreq, dict) else sfreq
        signals.append(
            edfio.EdfSignal(data, rate, label=label, physical_dimension=units, physical_range=(low, high))
        )
    edfio.Edf(signals, data_record_duration=record_seconds, starttime=starttime).write(path)
    return path


def _tusz_signals(seconds: float, sfreq: float, seed: int = 0, names=None) -> dict[str, np.ndarray]:
    """Gaussian EEG-like noise (about 30 µV) under TUSZ labels, plus an EKG channel."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sfreq))
    names = TUSZ_NAMES if names is None else names
    out = {label: 30.0 * rng.standard_normal(n) for label in names.values()}
    out["EEG EKG1-REF"] = 300.0 * rng.standard_normal(n)
    return out


@pytest.fixture
def write_edf():
    return _write_edf


@pytest.fixture
def tusz_signals():
    return _tusz_signals
