"""EDF reading: one file -> microvolt signals in a montage's order, with a record of every repair.

    rec = read_edf("aaaaaool_s004_t001.edf", "ref19")
    rec.signals_uv                 # (19, N) float64 µV, REF19 order
    rec.channel_sources["Fp1"]     # 'EEG FP1-REF'

The header is parsed here first (it is cheap, and MNE reads a truncated file without complaint,
dropping the incomplete records); MNE then reads only the signals the montage needs
(`include=`), so an auxiliary channel at a higher rate cannot change the sampling rate.
Every failure is an EDFError that names the file and says what to do. Nothing is filled with
zeros silently: Fz/Pz may be interpolated (recorded in `interpolated`), anything else missing is
an error. Non-finite samples are counted here and handled by preprocess.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import mne
import numpy as np

from common.data.montage import (
    BIPOLAR18,
    INTERPOLATABLE,
    REF19,
    SYNONYMS,
    montage_channels,
)

_FIX = "re-export it from the recording software"
_SUFFIXES = ("-REF", "-LE", "-AR")
# The physical dimensions MNE converts to volts (mne/io/edf/edf.py, _read_edf_header); any other
# unit would be taken as volts, a silent factor of up to 1e6.
_VOLT_UNITS = {"uV", "\u00b5V", "\u03bcV", "\x83\xcaV", "mV", "V"}


class EDFError(ValueError):
    """An EDF file that cannot be used; the message names the file and the fix."""


def clean_channel_name(name: str) -> str:
    """'EEG FP1-REF' -> 'FP1': no spaces, no leading EEG, one -REF/-LE/-AR suffix off, upper case.

    The original's cleanup (original_spec.md §1.2 step 3), made case-insensitive.
    """
    cleaned = name.replace(" ", "").upper()
    if cleaned.startswith("EEG"):
        cleaned = cleaned[3:]
    for suffix in _SUFFIXES:
        if cleaned.endswith(suffix):
            cleaned = cleaned[: -len(suffix)]
            break
    return cleaned


def canonical_electrode(name: str) -> str:
    """Upper-case electrode name with the T7/T8/P7/P8 -> T3/T4/T5/T6 synonyms applied."""
    upper = name.upper()
    return SYNONYMS.get(upper, upper)


# ----------------------------------------------------------------------------------------------
# header


@dataclass(frozen=True)
class EDFHeader:
    """The parts of an EDF header this module checks (EDF spec, Kemp et al. 1992)."""

    labels: tuple[str, ...]
    units: tuple[str, ...]
    samples_per_record: tuple[int, ...]
    n_records: int
    record_seconds: float
    startdate: str
    # per signal (min, max), None where the field is not a number: samples scale to physical
    # units by the gain (physical max - min) / (digital max - min)
    physical: tuple[tuple[float | None, float | None], ...] = ()
    digital: tuple[tuple[float | None, float | None], ...] = ()
    starttime: str = ""  # hh.mm.ss as the header holds it

    def sfreq(self, index: int) -> float:
        return self.samples_per_record[index] / self.record_seconds


def check_calibration(path: Path, header: EDFHeader, indices: Sequence[int]) -> None:
    """EDFError naming every signal among `indices` whose calibration cannot scale its samples:
    digital max == min (the gain divides by zero: MNE read one such signal at up to 6.6e8 µV),
    physical max == min (a gain of 0: the signal is lost), or a field that is not a number.
    Only the signals a montage reads are checked: a broken auxiliary channel costs nothing."""
    broken = []
    for i in indices:
        for kind, (low, high) in (("digital", header.digital[i]), ("physical", header.physical[i])):
            if low is None or high is None:
                broken.append(f"{header.labels[i]!r} {kind} min/max not numbers")
            elif low == high:
                broken.append(f"{header.labels[i]!r} {kind} min = max = {low:g}")
    if broken:
        raise EDFError(f"{path}: calibration that cannot scale the samples to µV: {'; '.join(broken)}; set those "
                       f"signals' physical and digital min/max in the header, or {_FIX}")


def read_header(path: str | Path) -> EDFHeader:
    """Parse and check an EDF header; EDFError if the file is empty, not EDF, or truncated. The
    calibration is checked by read_edf, for the signals a montage reads (check_calibration)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(256)
            if size == 0:
                raise EDFError(f"{path}: the file is empty (0 bytes); {_FIX}")
            if len(head) < 256 or head[:8] != b"0       ":
                kind = "a BDF file" if head[:8] == b"\xffBIOSEMI" else "not an EDF file"
                raise EDFError(
                    f"{path}: {kind} (first bytes {head[:8]!r}, expected b'0       '); "
                    f"convert it to EDF or {_FIX}"
                )
            if head[192:197] == b"EDF+D":  # the reserved field (EDF+, Kemp & Olivan 2003, section 2.1.3.1)
                raise EDFError(
                    f"{path}: EDF+D (discontinuous: its data records have gaps in time between them), which "
                    "would be read end to end, every label after a gap then in the wrong place; export it as "
                    f"continuous EDF (EDF+C) or {_FIX}"
                )
            n_signals = _header_int(path, head, 252, 256, "number of signals")
            header_bytes = _header_int(path, head, 184, 192, "header bytes")
            n_records = _header_int(path, head, 236, 244, "number of data records")
            record_seconds = _header_float(path, head, 244, 252, "data record duration")
            if n_signals <= 0 or header_bytes != 256 * (n_signals + 1) or record_seconds <= 0:
                raise EDFError(
                    f"{path}: corrupt header (signals={n_signals}, header bytes={header_bytes}, "
                    f"record duration={record_seconds}); {_FIX}"
                )
            body = handle.read(header_bytes - 256)
    except OSError as err:
        raise EDFError(f"{path}: cannot read: {err}") from None
    if len(body) < header_bytes - 256:
        raise EDFError(f"{path}: truncated header ({size} bytes, header alone is {header_bytes}); {_FIX}")

    def column(offset: int, width: int) -> list[bytes]:
        start = offset * n_signals
        return [body[start + i * width : start + (i + 1) * width] for i in range(n_signals)]

    # Per-signal fields, each a column of n_signals entries: label 16, transducer 80, unit 8,
    # physical min/max 8+8, digital min/max 8+8, prefiltering 80, samples per record 8.
    labels = tuple(raw.strip().decode("latin-1") for raw in column(0, 16))
    units = tuple(raw.strip().decode("latin-1") for raw in column(96, 8))
    try:
        samples = tuple(int(raw.strip()) for raw in column(216, 8))
    except ValueError:
        raise EDFError(f"{path}: corrupt header (samples per record are not integers); {_FIX}") from None
    physical = tuple(zip(map(_number, column(104, 8)), map(_number, column(112, 8)), strict=True))
    digital = tuple(zip(map(_number, column(120, 8)), map(_number, column(128, 8)), strict=True))
    record_bytes = 2 * sum(samples)
    if record_bytes <= 0:
        raise EDFError(f"{path}: corrupt header (its signals hold no samples per data record); {_FIX}")
    data_bytes = size - header_bytes
    if n_records == -1:  # allowed while recording; the file size says how many were written
        n_records = data_bytes // record_bytes
    if n_records <= 0:
        raise EDFError(f"{path}: contains no data records; {_FIX}")
    if data_bytes < n_records * record_bytes:
        raise EDFError(
            f"{path}: truncated: the header announces {n_records} data records "
            f"({n_records * record_bytes} bytes) but the file holds {data_bytes} data bytes "
            f"(an incomplete copy or download?); copy it again or {_FIX}"
        )
    return EDFHeader(labels, units, samples, n_records, record_seconds, head[168:176].decode("latin-1"),
                     physical, digital, head[176:184].decode("latin-1"))


def _number(raw: bytes, decimal_comma: bool = True) -> float | None:
    """A header field's number; None for text that is none, and for `nan` or `inf`, which Python
    reads as floats but which scale no sample (NaN even passes a min == max check). A decimal
    comma (`-5000,0`, written by exporters in a comma locale) is a decimal point, as MNE reads it
    when it scales the samples."""
    try:
        value = float(raw.strip().replace(b",", b".") if decimal_comma else raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _header_int(path: Path, head: bytes, start: int, stop: int, what: str) -> int:
    try:
        return int(head[start:stop].strip())
    except ValueError:
        raise EDFError(f"{path}: corrupt header: {what} is {head[start:stop]!r}; {_FIX}") from None


def _header_float(path: Path, head: bytes, start: int, stop: int, what: str) -> float:
    value = _number(head[start:stop], decimal_comma=False)  # nan and inf too are no duration; MNE reads no comma here
    if value is None:
        raise EDFError(f"{path}: corrupt header: {what} is {head[start:stop]!r}; {_FIX}")
    return value


@contextmanager
def _readable_copy(path: Path, header: EDFHeader) -> Iterator[tuple[Path, list[str]]]:
    """TUSZ quirk (original_spec.md §1.2): a start date written 'dd:mm:yy'. Read a repaired copy."""
    if ":" not in header.startdate:
        yield path, []
        return
    fixed = header.startdate.replace(":", ".")
    with tempfile.TemporaryDirectory(prefix="jaxbrr-edf-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        with copy.open("r+b") as handle:
            handle.seek(168)
            handle.write(fixed.encode("latin-1"))
        yield copy, [f"start date {header.startdate!r} read as {fixed!r} (TUSZ header quirk)"]


# ----------------------------------------------------------------------------------------------
# montage plans: which EDF signals make each montage channel


@dataclass
class RawRecording:
    """One recording in montage order, before any filtering, and where each signal came from."""

    path: str
    signals_uv: np.ndarray  # (C, N) float64 µV, montage order
    sfreq: float
    channels: tuple[str, ...]
    channel_sources: dict[str, str]
    interpolated: tuple[str, ...] = ()
    nonfinite_samples: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (C,)
    repairs: tuple[str, ...] = ()  # header repairs made on a temporary copy

    @property
    def duration_seconds(self) -> float:
        return self.signals_uv.shape[-1] / self.sfreq


def _index_by(labels: Sequence[str], key) -> dict[str, list[int]]:
    by_key: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_key.setdefault(key(clean_channel_name(label)), []).append(index)
    return by_key


def _missing_error(path: Path, montage: str, missing: Sequence[str], labels: Sequence[str], fix: str):
    return EDFError(
        f"{path}: montage {montage!r} needs {', '.join(missing)}, which the file lacks. "
        f"Channels found: {', '.join(labels)}. {fix}"
    )


def _duplicate_error(path: Path, name: str, indices: Sequence[int], labels: Sequence[str]):
    found = ", ".join(repr(labels[i]) for i in indices)
    return EDFError(
        f"{path}: {len(indices)} signals ({found}) all clean to {name!r}, so which one to use is "
        f"ambiguous; rename or drop the extra signal when exporting, or {_FIX}"
    )


def _electrodes_of(labels: Sequence[str]) -> Callable[[str], str]:
    """canonical_electrode for this file's labels, reading '01' as O1 when the file has no O1 of
    its own: CHB-MIT's chb12_28 and chb12_29 spell O1 with a zero."""
    parts = {part for label in labels for part in clean_channel_name(label).split("-")}
    if "01" not in parts or "O1" in parts:
        return canonical_electrode
    return lambda name: "O1" if name.upper() == "01" else canonical_electrode(name)


def _plan_ref19(path: Path, labels: Sequence[str], interpolate: Sequence[str]):
    """Per REF19 channel: (signal index,), or () when it must be interpolated."""
    by_name = _index_by(labels, _electrodes_of(labels))
    allowed = {name.upper() for name in interpolate}
    plan, missing = [], []
    for name in montage_channels("ref19"):
        indices = by_name.get(canonical_electrode(name), [])
        if len(indices) > 1:
            raise _duplicate_error(path, name, indices, labels)
        if not indices and name.upper() not in allowed:
            missing.append(name)
        plan.append((indices[0],) if indices else ())
    if missing:
        raise _missing_error(
            path, "ref19", missing, labels,
            f"Only {', '.join(interpolate) or 'no channels'} may be interpolated "
            "(preprocess.interpolate); use a recording with these electrodes, or montage "
            "'bipolar' if it is a bipolar recording ('bipolar18' if it lacks the FT9/FT10 chain).",
        )
    return plan


def _bipolar_key(name: str, electrode: Callable[[str], str] = canonical_electrode) -> tuple[str, str] | None:
    parts = name.split("-")
    if len(parts) != 2 or not all(parts):
        return None
    return electrode(parts[0]), electrode(parts[1])


def _plan_bipolar(path: Path, labels: Sequence[str], montage: str):
    """Per derivation A-B: (the file's 'A-B' signal,), else (referential A, referential B), else
    (A-R, B-R) for a common reference R. Also the groups of signals that must be equal: the
    copies of a derivation the file holds more often than the montage lists it (CHB-MIT's second
    T8-P8 under `bipolar18`), of which the first is used."""
    derivations, electrode = montage_channels(montage), _electrodes_of(labels)
    bipolar: dict[tuple[str, str], list[int]] = {}
    referential: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        cleaned = clean_channel_name(label)
        key = _bipolar_key(cleaned, electrode)
        if key is not None:
            bipolar.setdefault(key, []).append(index)
        elif "-" not in cleaned:
            referential.setdefault(electrode(cleaned), []).append(index)
    wanted: dict[tuple[str, str], int] = {}
    for name in derivations:
        key = _bipolar_key(name)
        wanted[key] = wanted.get(key, 0) + 1
    plan, missing, equal, used = [], [], [], dict.fromkeys(wanted, 0)
    for name in derivations:
        key = _bipolar_key(name)
        if key in bipolar:
            indices = bipolar[key]
            # CHB-MIT records T8-P8 twice; the k-th occurrence in the montage takes the k-th one
            # in the file, and a file with only one serves both. Copies beyond the montage's
            # must hold the same samples as the first (checked once read).
            if len(indices) > wanted[key] and not used[key]:
                equal.append((name, tuple(indices[wanted[key] - 1:])))
            plan.append((indices[min(used[key], len(indices) - 1)],))
            used[key] += 1
            continue
        poles = [referential.get(electrode, []) for electrode in key]
        for electrode, indices in zip(key, poles, strict=True):
            if len(indices) > 1:
                raise _duplicate_error(path, electrode, indices, labels)
        if all(poles):
            plan.append((poles[0][0], poles[1][0]))
        elif common := _common_reference(path, key, bipolar, labels):
            plan.append(common)
        else:
            missing.append(name)
    if missing:
        hints = []
        if all(canonical_electrode(name) in referential for name in REF19):
            hints.append("montage 'ref19' reads its 19 referential electrodes")
        if montage == "bipolar" and not set(missing) & set(BIPOLAR18):
            hints.append("montage 'bipolar18' leaves out the FT9/FT10 chain, which about 30 CHB-MIT files lack")
        advice = f" For this file, {'; or '.join(hints)} (data.montage and model.montage)." if hints else ""
        raise _missing_error(
            path, montage, missing, labels,
            "Each derivation A-B needs a signal labelled A-B, referential signals A and B, or A-R and "
            f"B-R against one reference R.{advice}",
        )
    return plan, equal


def _common_reference(path: Path, key: tuple[str, str], bipolar: dict[tuple[str, str], list[int]],
                      labels: Sequence[str]) -> tuple[int, int] | None:
    """(A-R, B-R) for derivation A-B, the first reference R (in file order) both are recorded
    against: (A - R) - (B - R) = A - B exactly. None when there is none; a pair held twice is
    ambiguous, an error."""
    a, b = key
    for (first, reference), indices in bipolar.items():
        if first == a and (b, reference) in bipolar:
            for pole, held in ((f"{a}-{reference}", indices), (f"{b}-{reference}", bipolar[(b, reference)])):
                if len(held) > 1:
                    raise _duplicate_error(path, pole, held, labels)
            return indices[0], bipolar[(b, reference)][0]
    return None


@lru_cache(maxsize=16)
def _interpolation_matrix(present: tuple[str, ...], missing: tuple[str, ...]) -> np.ndarray:
    """(len(missing), len(present)) spherical-spline weights (Perrin et al. 1989, as MNE).

    MNE's interpolate_bads is linear in the data, so running it once on an identity signal
    gives its weights; every recording with the same channels then costs one matrix product.
    """
    names = list(present) + list(missing)
    identity = np.zeros((len(names), len(present)))
    identity[: len(present)] = np.eye(len(present))
    raw = mne.io.RawArray(identity, mne.create_info(names, 1.0, "eeg"), verbose="ERROR")
    raw.set_montage("standard_1020", match_case=False, verbose="ERROR")
    raw.info["bads"] = list(missing)
    raw.interpolate_bads(reset_bads=True, verbose="ERROR")
    weights = raw.get_data()[len(present) :]
    weights.flags.writeable = False  # shared by every caller through the cache
    return weights


# ----------------------------------------------------------------------------------------------
# reading


def _describe(found: list[tuple[str, int]]) -> str:
    """A name the montage lists twice (T8-P8) says which EDF signal (1-based) fed each occurrence."""
    if len(found) == 1:
        return found[0][0]
    return "; ".join(f"{text} (EDF signal {index + 1})" for text, index in found)


def read_edf(path: str | Path, montage: str, interpolate: Sequence[str] = INTERPOLATABLE) -> RawRecording:
    """Read one EDF into montage order, in µV. Raises EDFError naming the file and the fix.

    montage: 'ref19' (missing channels among `interpolate` are spherical-spline interpolated
    from the others with MNE's standard_1020 positions), 'bipolar' or 'bipolar18' (no
    interpolation; common/data/montage.py).
    """
    path = Path(path)
    channels = montage_channels(montage)
    header = read_header(path)
    labels = header.labels
    plan, equal = (_plan_ref19(path, labels, interpolate), []) if montage == "ref19" else _plan_bipolar(
        path, labels, montage)

    needed = sorted({index for terms in plan for index in terms} | {i for _, group in equal for i in group})
    rates = {header.sfreq(i) for i in needed}
    if len(rates) > 1:
        detail = ", ".join(f"{labels[i]!r} {header.sfreq(i):g} Hz" for i in needed)
        raise EDFError(f"{path}: the montage's signals have different sampling rates ({detail}); {_FIX}")
    bad_units = [f"{labels[i]!r} in {header.units[i]!r}" for i in needed if header.units[i] not in _VOLT_UNITS]
    if bad_units:
        raise EDFError(
            f"{path}: signals not in a voltage unit (uV, mV, V): {', '.join(bad_units)}; "
            f"MNE would read them as volts. Set their physical dimension to uV, or {_FIX}"
        )
    check_calibration(path, header, needed)

    include = sorted({labels[i] for i in needed})
    # MNE keeps file order for every signal whose label is included (duplicates too), so its rows
    # map to header indices by position, whatever it renames duplicates to ('T8-P8-0', 'T8-P8-1').
    selected = [i for i, label in enumerate(labels) if label in include]
    with _readable_copy(path, header) as (readable, repairs):
        try:
            raw = mne.io.read_raw_edf(readable, include=include, preload=True, verbose="ERROR")
        except Exception as err:  # MNE's errors are ValueError, RuntimeError, struct errors...
            raise EDFError(f"{path}: MNE cannot read it ({type(err).__name__}: {err}); {_FIX}") from None
        data = raw.get_data()  # (len(selected), N) volts
    # MNE counts the data records by the file's size; the EDF's count is the header's (a file
    # longer than it announces holds bytes no record describes; pyedflib's issue 17 met a CHB-MIT
    # file of chb17b larger than its header implies). Those are not read as signal.
    announced = header.n_records * header.samples_per_record[needed[0]]
    if data.shape[1] > announced:
        extra = data.shape[1] - announced
        data = data[:, :announced]
        repairs = [*repairs, f"{extra / header.sfreq(needed[0]):g} s of data past the header's "
                             f"{header.n_records} data records left out (the file is longer than its header says)"]
    if data.shape[0] != len(selected):
        raise EDFError(
            f"{path}: MNE returned {data.shape[0]} signals for {len(selected)} requested "
            f"({', '.join(include)}); {_FIX}"
        )
    row = {index: k for k, index in enumerate(selected)}
    n_samples = data.shape[1]
    for name, group in equal:
        if not all(np.array_equal(data[row[group[0]]], data[row[i]]) for i in group[1:]):
            found = ", ".join(f"{labels[i]!r} (EDF signal {i + 1})" for i in group)
            raise EDFError(f"{path}: {name} is held {len(group)} times with different samples ({found}) and montage "
                           f"{montage!r} takes one: which is ambiguous; use a montage that lists it as often, or {_FIX}")

    signals = np.zeros((len(channels), n_samples))  # (C, N); a missing channel's row is interpolated below
    sources: dict[str, list[tuple[str, int]]] = {}  # name -> [(label text, first signal index)]
    for c, (name, terms) in enumerate(zip(channels, plan, strict=True)):
        if len(terms) == 1:
            signals[c] = data[row[terms[0]]]
        elif len(terms) == 2:  # a bipolar derivation from two referential signals
            np.subtract(data[row[terms[0]]], data[row[terms[1]]], out=signals[c])
        if terms:
            text = " - ".join(labels[i] for i in terms)
            sources.setdefault(name, []).append((text, terms[0]))
    signals *= 1e6  # volts -> µV

    missing = tuple(name for name, terms in zip(channels, plan, strict=True) if not terms)
    if missing:
        present_rows = [c for c, terms in enumerate(plan) if terms]
        try:
            weights = _interpolation_matrix(tuple(channels[c] for c in present_rows), missing)
        except Exception as err:
            raise EDFError(
                f"{path}: interpolating {', '.join(missing)} failed ({type(err).__name__}: {err}); "
                "use a recording that has them, or drop the file"
            ) from None
        if not np.all(np.isfinite(weights)) or not np.any(weights):
            raise EDFError(
                f"{path}: interpolation weights for {', '.join(missing)} are degenerate; "
                "use a recording that has them, or drop the file"
            )
        missing_rows = [channels.index(name) for name in missing]
        signals[missing_rows] = weights @ signals[present_rows]  # (M, N)
        for name in missing:
            sources[name] = [(f"interpolated (spherical spline) from {len(present_rows)} channels", -1)]

    channel_sources = {name: _describe(sources[name]) for name in dict.fromkeys(channels)}
    nonfinite = signals.shape[1] - np.count_nonzero(np.isfinite(signals), axis=-1)
    return RawRecording(
        path=str(path),
        signals_uv=signals,
        sfreq=float(raw.info["sfreq"]),
        channels=channels,
        channel_sources=channel_sources,
        interpolated=missing,
        nonfinite_samples=nonfinite.astype(np.int64),
        repairs=tuple(repairs),
    )

