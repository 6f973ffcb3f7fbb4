"""common.data.edf: names, montages, interpolation, and every way an EDF file can be bad."""

from __future__ import annotations

import mne
import numpy as np
import pytest

from common.data import edf
from common.data.edf import EDFError, clean_channel_name, read_edf, read_header
from common.data.montage import BIPOLAR18, BIPOLAR23, REF19

SFREQ = 256.0
FIX = "re-export it from the recording software"


@pytest.mark.parametrize(
    ("label", "cleaned"),
    [
        ("EEG FP1-REF", "FP1"),
        ("EEG T3-LE", "T3"),
        ("EEG Fp1", "FP1"),
        ("Fz-ar", "FZ"),
        (" EEG  C3 - REF", "C3"),
        ("EEG FP1-REF-REF", "FP1-REF"),  # one suffix only
        ("FP1-F7", "FP1-F7"),
        ("EKG EKG", "EKGEKG"),
    ],
)
def test_clean_channel_name(label, cleaned):
    assert clean_channel_name(label) == cleaned


def test_ref19_reorders_and_keeps_microvolts(tmp_path, write_edf, tusz_signals):
    signals = tusz_signals(10, SFREQ)
    labels = list(signals)[::-1]  # file order differs from REF19 order
    path = write_edf(tmp_path / "rec.edf", {k: signals[k] for k in labels}, SFREQ)
    rec = read_edf(path, "ref19")
    assert rec.channels == REF19
    assert rec.signals_uv.shape == (19, 2560) and rec.signals_uv.dtype == np.float64
    assert rec.sfreq == SFREQ and rec.duration_seconds == 10.0
    assert rec.channel_sources["Fp1"] == "EEG FP1-REF"
    assert rec.channel_sources["T5"] == "EEG T5-REF"
    assert rec.interpolated == () and rec.repairs == ()
    np.testing.assert_array_equal(rec.nonfinite_samples, np.zeros(19))
    for c, name in enumerate(REF19):
        truth = signals[f"EEG {name.upper()}-REF"]
        step = np.ptp(truth) / 65535  # one 16-bit quantisation step
        np.testing.assert_allclose(rec.signals_uv[c], truth, atol=step)


def test_modern_names_are_synonyms(tmp_path, write_edf, tusz_signals):
    modern = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
    names = {n: f"EEG {modern.get(n, n).upper()}-LE" for n in REF19}
    path = write_edf(tmp_path / "le.edf", tusz_signals(4, SFREQ, names=names), SFREQ)
    rec = read_edf(path, "ref19")
    assert rec.channel_sources["T3"] == "EEG T7-LE"
    assert rec.channel_sources["T6"] == "EEG P8-LE"


def test_missing_channel_names_missing_and_found(tmp_path, write_edf, tusz_signals):
    signals = tusz_signals(4, SFREQ)
    del signals["EEG O2-REF"], signals["EEG C3-REF"]
    path = write_edf(tmp_path / "no_o2.edf", signals, SFREQ)
    with pytest.raises(EDFError) as err:
        read_edf(path, "ref19")
    msg = str(err.value)
    assert str(path) in msg
    assert "needs C3, O2" in msg
    assert "Channels found: EEG FP1-REF" in msg and "EEG EKG1-REF" in msg
    assert "may be interpolated" in msg


def test_missing_fz_pz_are_interpolated(tmp_path, write_edf):
    # A spatially smooth field: one common rhythm plus small independent noise per electrode.
    rng = np.random.default_rng(1)
    t = np.arange(int(8 * SFREQ)) / SFREQ
    common = 40 * np.sin(2 * np.pi * 7 * t) + 20 * rng.standard_normal(t.size)
    signals = {
        f"EEG {n.upper()}-REF": common + 5 * rng.standard_normal(t.size)
        for n in REF19 if n not in ("Fz", "Pz")
    }
    path = write_edf(tmp_path / "no_midline.edf", signals, SFREQ)
    rec = read_edf(path, "ref19")
    assert rec.interpolated == ("Fz", "Pz")
    assert rec.channel_sources["Fz"].startswith("interpolated (spherical spline) from 17")
    fz, cz, pz = (rec.signals_uv[REF19.index(n)] for n in ("Fz", "Cz", "Pz"))
    assert np.all(np.isfinite(fz)) and np.std(fz) > 10
    assert np.corrcoef(fz, cz)[0, 1] > 0.9 and np.corrcoef(pz, cz)[0, 1] > 0.9

    # Oracle: MNE's own interpolate_bads on the full recording.
    present = [n for n in REF19 if n not in ("Fz", "Pz")]
    data = np.vstack([rec.signals_uv[REF19.index(n)] for n in present] + [np.zeros((2, t.size))])
    raw = mne.io.RawArray(data * 1e-6, mne.create_info(present + ["Fz", "Pz"], SFREQ, "eeg"), verbose="ERROR")
    raw.set_montage("standard_1020", verbose="ERROR")
    raw.info["bads"] = ["Fz", "Pz"]
    raw.interpolate_bads(reset_bads=True, verbose="ERROR")
    np.testing.assert_allclose(raw.get_data()[-2:] * 1e6, rec.signals_uv[[8, 10]], rtol=1e-9, atol=1e-9)


def test_midline_not_interpolated_when_not_allowed(tmp_path, write_edf, tusz_signals):
    signals = tusz_signals(4, SFREQ)
    del signals["EEG FZ-REF"]
    path = write_edf(tmp_path / "no_fz.edf", signals, SFREQ)
    with pytest.raises(EDFError, match="needs Fz"):
        read_edf(path, "ref19", interpolate=())


def test_failed_interpolation_raises(tmp_path, write_edf, tusz_signals, monkeypatch):
    signals = tusz_signals(4, SFREQ)
    del signals["EEG PZ-REF"]
    path = write_edf(tmp_path / "no_pz.edf", signals, SFREQ)

    def broken(self, *args, **kwargs):
        raise RuntimeError("no positions")

    monkeypatch.setattr(mne.io.RawArray, "interpolate_bads", broken)
    edf._interpolation_matrix.cache_clear()
    try:
        with pytest.raises(EDFError, match="interpolating Pz failed") as err:
            read_edf(path, "ref19")
    finally:
        edf._interpolation_matrix.cache_clear()
    assert str(path) in str(err.value)


def test_duplicate_after_cleanup(tmp_path, write_edf, tusz_signals):
    signals = tusz_signals(4, SFREQ)
    signals["EEG FP1-LE"] = signals["EEG FP1-REF"] + 1.0
    path = write_edf(tmp_path / "dup.edf", signals, SFREQ)
    with pytest.raises(EDFError) as err:
        read_edf(path, "ref19")
    msg = str(err.value)
    assert str(path) in msg and "'EEG FP1-REF', 'EEG FP1-LE'" in msg and "ambiguous" in msg


def test_bipolar_labels_with_duplicate_t8_p8(tmp_path, write_edf):
    rng = np.random.default_rng(2)
    signals = {}
    for k, name in enumerate(BIPOLAR23):  # edfio writes the two T8-P8 labels as given
        signals[name if name not in signals else name + " "] = k + rng.standard_normal(512)
    path = write_edf(tmp_path / "chb.edf", signals, SFREQ)
    assert read_header(path).labels.count("T8-P8") == 2
    rec = read_edf(path, "bipolar")
    assert rec.channels == BIPOLAR23 and rec.signals_uv.shape == (23, 512)
    # signal k has mean k: every derivation, both T8-P8 included, comes from its own signal
    np.testing.assert_allclose(rec.signals_uv.mean(axis=1), np.arange(23), atol=0.3)
    assert rec.channel_sources["T8-P8"] == "T8-P8 (EDF signal 15); T8-P8 (EDF signal 23)"


def test_bipolar_derived_from_referential(tmp_path, write_edf):
    rng = np.random.default_rng(3)
    electrodes = ["FP1", "F7", "T7", "P7", "O1", "F3", "C3", "P3", "FP2", "F4", "C4", "P4", "O2",
                  "F8", "T4", "P8", "FZ", "CZ", "PZ", "FT9", "FT10"]  # T4 is T8, as TUSZ writes it
    signals = {f"EEG {e}-REF": 50 * rng.standard_normal(1024) for e in electrodes}
    path = write_edf(tmp_path / "ref.edf", signals, SFREQ)
    rec = read_edf(path, "bipolar")
    raw = mne.io.read_raw_edf(path, preload=True, verbose="ERROR")
    volts = dict(zip(raw.ch_names, raw.get_data(), strict=True))
    np.testing.assert_allclose(
        rec.signals_uv[0], (volts["EEG FP1-REF"] - volts["EEG F7-REF"]) * 1e6, rtol=1e-12, atol=1e-9
    )
    assert rec.channel_sources["FP1-F7"] == "EEG FP1-REF - EEG F7-REF"
    assert rec.channel_sources["F8-T8"] == "EEG F8-REF - EEG T4-REF"
    assert rec.channel_sources["FT10-T8"] == "EEG FT10-REF - EEG T4-REF"
    np.testing.assert_array_equal(rec.signals_uv[14], rec.signals_uv[22])


def test_bipolar_missing_derivations(tmp_path, write_edf, tusz_signals):
    path = write_edf(tmp_path / "tusz.edf", tusz_signals(4, SFREQ), SFREQ)
    with pytest.raises(EDFError) as err:
        read_edf(path, "bipolar")
    msg = str(err.value)
    assert str(path) in msg and "needs T7-FT9, FT9-FT10, FT10-T8" in msg
    assert "montage 'ref19' reads its 19 referential electrodes; or montage 'bipolar18'" in msg
    # a bipolar file without the FT9/FT10 chain (about 30 of CHB-MIT's): bipolar18 only, not ref19
    chain = write_edf(tmp_path / "chb.edf", {name: np.full(512, float(k)) for k, name in enumerate(BIPOLAR18)}, SFREQ)
    with pytest.raises(EDFError, match=r"needs P7-T7, T7-FT9, FT9-FT10, FT10-T8, which .*For this file, montage "
                                       r"'bipolar18' leaves out the FT9/FT10 chain") as err:
        read_edf(chain, "bipolar")
    assert "'ref19'" not in str(err.value)
    # without T8-P8, which bipolar18 needs too, bipolar18 is no answer
    no_t8 = write_edf(tmp_path / "no_t8.edf", {n: np.full(512, 1.0) for n in BIPOLAR23 if n != "T8-P8"}, SFREQ)
    with pytest.raises(EDFError, match=r"needs T8-P8, T8-P8, which") as err:
        read_edf(no_t8, "bipolar")
    assert "bipolar18" not in str(err.value)


def _chbmit_without_the_chain(seed: int = 4) -> dict[str, np.ndarray]:
    """CHB-MIT's 23 derivations less the FT9/FT10 chain, T8-P8 held twice as CHB-MIT holds it."""
    rng = np.random.default_rng(seed)
    signals = {name: k + rng.standard_normal(512) for k, name in enumerate(BIPOLAR18)}
    signals["T8-P8 "] = signals["T8-P8"].copy()  # edfio writes the label as given; it cleans to T8-P8
    return signals


def test_bipolar18_reads_chbmit_without_the_ft_chain(tmp_path, write_edf):
    signals = _chbmit_without_the_chain()
    path = write_edf(tmp_path / "chb13_01.edf", signals, SFREQ)
    rec = read_edf(path, "bipolar18")
    assert rec.channels == BIPOLAR18 and rec.signals_uv.shape == (18, 512)
    np.testing.assert_allclose(rec.signals_uv.mean(axis=1), np.arange(18), atol=0.3)
    assert rec.channel_sources["T8-P8"] == "T8-P8"  # the first of the two equal copies
    # two copies that differ: which one is meant is no guess to make
    signals["T8-P8 "] += 1.0
    path = write_edf(tmp_path / "chb13_02.edf", signals, SFREQ)
    with pytest.raises(EDFError, match=r"T8-P8 is held 2 times with different samples \('T8-P8' \(EDF signal 15\), "
                                       r"'T8-P8' \(EDF signal 19\)\) and montage 'bipolar18' takes one"):
        read_edf(path, "bipolar18")


def test_a_common_reference_and_chbmit_01_for_o1(tmp_path, write_edf):
    """chb12_27 is recorded against CS2 (FP1-CS2, F7-CS2, ...): A-B = (A-CS2) - (B-CS2), exactly;
    chb12_28/29 spell O1 '01'."""
    rng = np.random.default_rng(5)
    electrodes = ["FP1", "F7", "T7", "P7", "01", "F3", "C3", "P3", "FP2", "F4", "C4", "P4", "O2", "F8", "T8",
                  "P8", "FZ", "CZ", "PZ"]
    signals = {f"{e}-CS2": 50 * rng.standard_normal(512) for e in electrodes}
    path = write_edf(tmp_path / "chb12_27.edf", signals, SFREQ)
    rec = read_edf(path, "bipolar18")
    raw = mne.io.read_raw_edf(path, preload=True, verbose="ERROR")
    volts = dict(zip(raw.ch_names, raw.get_data(), strict=True))
    np.testing.assert_allclose(rec.signals_uv[BIPOLAR18.index("P7-O1")], (volts["P7-CS2"] - volts["01-CS2"]) * 1e6,
                               rtol=1e-12, atol=1e-9)
    assert rec.channel_sources["FP1-F7"] == "FP1-CS2 - F7-CS2"
    bare = write_edf(tmp_path / "chb12_28.edf", {e: signals[f"{e}-CS2"] for e in electrodes}, SFREQ)
    np.testing.assert_array_equal(read_edf(bare, "bipolar18").signals_uv, rec.signals_uv)
    assert read_edf(bare, "ref19").channel_sources["O1"] == "01"
    # '01' is O1 only in a file without an O1 of its own
    both = write_edf(tmp_path / "both.edf", {**{e: signals[f"{e}-CS2"] for e in electrodes}, "O1": np.zeros(512)},
                     SFREQ)
    assert read_edf(both, "ref19").channel_sources["O1"] == "O1"
    # a reference pair held twice: which FP1-CS2 is meant is ambiguous
    twice = write_edf(tmp_path / "twice.edf", {**signals, "FP1-CS2 ": signals["FP1-CS2"] + 1}, SFREQ)
    with pytest.raises(EDFError, match=r"2 signals \('FP1-CS2', 'FP1-CS2'\) all clean to 'FP1-CS2'"):
        read_edf(twice, "bipolar18")


def test_truncated_file(tmp_path, write_edf, tusz_signals):
    path = write_edf(tmp_path / "cut.edf", tusz_signals(10, SFREQ), SFREQ)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5000])
    with pytest.raises(EDFError) as err:
        read_edf(path, "ref19")
    msg = str(err.value)
    assert str(path) in msg and "truncated" in msg and FIX in msg


def test_discontinuous_edf_plus_is_refused(tmp_path, write_edf, tusz_signals):
    """EDF+D: records with gaps between them; read end to end, labels after a gap would move."""
    path = write_edf(tmp_path / "gaps.edf", tusz_signals(2, SFREQ), SFREQ)
    data = bytearray(path.read_bytes())
    data[192:236] = b"EDF+D".ljust(44)
    path.write_bytes(bytes(data))
    with pytest.raises(EDFError, match="EDF\\+D \\(discontinuous") as err:
        read_header(path)
    assert str(path) in str(err.value) and FIX in str(err.value)
    data[192:236] = b"EDF+C".ljust(44)  # continuous: read as ever
    path.write_bytes(bytes(data))
    assert read_header(path).n_records > 0


def test_truncated_header(tmp_path, write_edf, tusz_signals):
    path = write_edf(tmp_path / "cut_header.edf", tusz_signals(2, SFREQ), SFREQ)
    path.write_bytes(path.read_bytes()[:700])
    with pytest.raises(EDFError, match="truncated header") as err:
        read_edf(path, "ref19")
    assert str(path) in str(err.value) and FIX in str(err.value)


@pytest.mark.parametrize("duration", [b"nan", b"inf", b"x"])
def test_a_record_duration_that_is_no_number_is_a_corrupt_header(tmp_path, write_edf, tusz_signals, duration):
    """nan passed `<= 0` and read as 'different sampling rates'; inf made MNE divide by zero."""
    path = write_edf(tmp_path / "duration.edf", tusz_signals(2, SFREQ), SFREQ)
    data = bytearray(path.read_bytes())
    data[244:252] = duration.ljust(8)
    path.write_bytes(bytes(data))
    with pytest.raises(EDFError, match=f"corrupt header: data record duration is b'{duration.decode()}"):
        read_edf(path, "ref19")


def test_no_samples_per_record_is_a_corrupt_header(tmp_path, write_edf, tusz_signals):
    """Every signal at 0 samples per record, with the record count left -1 (as while recording):
    the count from the file size divided by zero, a ZeroDivisionError that ended a whole build."""
    path = write_edf(tmp_path / "zero.edf", tusz_signals(2, SFREQ), SFREQ)
    data = bytearray(path.read_bytes())
    n_signals = int(data[252:256])
    data[236:244] = b"-1".ljust(8)
    column = 256 + 216 * n_signals
    data[column : column + 8 * n_signals] = b"0".ljust(8) * n_signals
    path.write_bytes(bytes(data))
    with pytest.raises(EDFError, match="corrupt header \\(its signals hold no samples per data record\\)") as err:
        read_header(path)
    assert str(path) in str(err.value) and FIX in str(err.value)


def test_text_file_named_edf(tmp_path):
    path = tmp_path / "notes.edf"
    path.write_text("patient notes, not a recording\n" * 20)
    with pytest.raises(EDFError) as err:
        read_edf(path, "ref19")
    msg = str(err.value)
    assert str(path) in msg and "not an EDF file" in msg and FIX in msg


def test_empty_file(tmp_path):
    path = tmp_path / "empty.edf"
    path.write_bytes(b"")
    with pytest.raises(EDFError, match="empty") as err:
        read_edf(path, "ref19")
    assert str(path) in str(err.value) and FIX in str(err.value)


def test_colon_start_date_is_repaired_on_a_copy(tmp_path, write_edf, tusz_signals):
    path = write_edf(tmp_path / "quirk.edf", tusz_signals(4, SFREQ), SFREQ)
    good = read_edf(path, "ref19")
    data = bytearray(path.read_bytes())
    data[168:176] = b"01:02:03"
    path.write_bytes(bytes(data))
    rec = read_edf(path, "ref19")
    assert rec.repairs == ("start date '01:02:03' read as '01.02.03' (TUSZ header quirk)",)
    np.testing.assert_array_equal(rec.signals_uv, good.signals_uv)
    assert path.read_bytes()[168:176] == b"01:02:03"  # the original is untouched


def test_non_voltage_unit(tmp_path, write_edf, tusz_signals):
    path = write_edf(tmp_path / "unitless.edf", tusz_signals(2, SFREQ), SFREQ, units="")
    with pytest.raises(EDFError, match="not in a voltage unit") as err:
        read_edf(path, "ref19")
    assert str(path) in str(err.value)


def test_auxiliary_rate_does_not_change_sfreq(tmp_path, write_edf, tusz_signals):
    signals = tusz_signals(4, 250)
    signals["EEG EKG1-REF"] = np.zeros(2000) + np.arange(2000) % 7  # 500 Hz auxiliary
    rates = {label: 500 if "EKG" in label else 250 for label in signals}
    rec = read_edf(write_edf(tmp_path / "aux.edf", signals, rates), "ref19")
    assert rec.sfreq == 250.0 and rec.signals_uv.shape == (19, 1000)


def test_mixed_montage_rates(tmp_path, write_edf, tusz_signals):
    signals = tusz_signals(4, 250)
    signals["EEG O2-REF"] = np.random.default_rng(0).standard_normal(2000)
    rates = {label: 500 if "O2" in label else 250 for label in signals}
    path = write_edf(tmp_path / "mixed.edf", signals, rates)
    with pytest.raises(EDFError, match="different sampling rates") as err:
        read_edf(path, "ref19")
    assert "'EEG O2-REF' 500 Hz" in str(err.value)


# per-signal header fields (EDF spec): offset of the column in units of n_signals bytes, width 8
PHYSICAL_MIN, PHYSICAL_MAX, DIGITAL_MIN, DIGITAL_MAX = 104, 112, 120, 128


def _set_signal_field(path, label, column, text):
    """Overwrite one signal's 8-byte header field (e.g. DIGITAL_MAX of 'EEG C3-REF') in place."""
    data = bytearray(path.read_bytes())
    n = int(data[252:256])
    labels = [data[256 + 16 * i : 256 + 16 * (i + 1)].decode().strip() for i in range(n)]
    start = 256 + column * n + 8 * labels.index(label)
    data[start : start + 8] = f"{text:<8}".encode()
    path.write_bytes(bytes(data))


def test_digital_min_equal_max_is_refused_naming_the_signal(tmp_path, write_edf, tusz_signals):
    """Digital max == min divides MNE's gain by zero: the signal reads at absurd amplitudes."""
    path = write_edf(tmp_path / "cal.edf", tusz_signals(4, SFREQ), SFREQ)
    _set_signal_field(path, "EEG EKG1-REF", DIGITAL_MAX, "-32768")  # not in the montage: harmless
    assert np.abs(read_edf(path, "ref19").signals_uv).max() < 1000
    _set_signal_field(path, "EEG C3-REF", DIGITAL_MAX, "-32768")
    header = read_header(path)
    assert header.digital[header.labels.index("EEG C3-REF")] == (-32768.0, -32768.0)
    with pytest.raises(EDFError) as err:
        read_edf(path, "ref19")
    msg = str(err.value)
    assert msg.startswith(f"{path}: calibration that cannot scale")
    assert "'EEG C3-REF' digital min = max = -32768" in msg and "EKG" not in msg
    assert "physical and digital min/max" in msg and FIX in msg


def test_physical_min_equal_max_and_a_non_number_are_refused(tmp_path, write_edf, tusz_signals):
    path = write_edf(tmp_path / "flatcal.edf", tusz_signals(4, SFREQ), SFREQ)
    _set_signal_field(path, "EEG O2-REF", PHYSICAL_MIN, "100")
    _set_signal_field(path, "EEG O2-REF", PHYSICAL_MAX, "100")
    _set_signal_field(path, "EEG FP1-REF", DIGITAL_MIN, "low")
    _set_signal_field(path, "EEG C3-REF", PHYSICAL_MIN, "nan")  # a float to Python, and never == itself
    _set_signal_field(path, "EEG C4-REF", PHYSICAL_MAX, "inf")
    with pytest.raises(EDFError) as err:
        read_edf(path, "ref19")
    msg = str(err.value)  # every broken signal at once
    assert "'EEG O2-REF' physical min = max = 100" in msg and "'EEG FP1-REF' digital min/max not numbers" in msg
    assert "'EEG C3-REF' physical min/max not numbers" in msg and "'EEG C4-REF' physical min/max not numbers" in msg



def test_a_decimal_comma_in_the_calibration_is_a_decimal_point(tmp_path, write_edf, tusz_signals):
    """Exporters in a comma locale write `-3000,5`; MNE reads it as -3000.5 when it scales the
    samples, and the header check refused the file as 'not numbers'."""
    path = write_edf(tmp_path / "point.edf", tusz_signals(4, SFREQ), SFREQ)
    header = read_header(path)
    point = read_edf(path, "ref19").signals_uv
    n, data = len(header.labels), path.read_bytes()
    for column in (PHYSICAL_MIN, PHYSICAL_MAX):  # signal 0's fields as written, with a comma
        text = data[256 + column * n : 256 + column * n + 8].decode().strip()
        assert "." in text
        _set_signal_field(path, header.labels[0], column, text.replace(".", ","))
    assert read_header(path).physical[0] == header.physical[0]
    np.testing.assert_array_equal(read_edf(path, "ref19").signals_uv, point)

# ----------------------------------------------------------------------------------------------
# real files (../shared/data); their format_stubs signals are random, so names/rates/durations only


@pytest.mark.parametrize("name", ["chb01_03_Seizure.edf", "chb01_03_NonSeizure.edf"])
def test_real_chbmit_crops(SHARED, name):
    rec = read_edf(SHARED / "chbmit" / name, "bipolar")
    assert rec.channels == BIPOLAR23 and rec.signals_uv.shape == (23, 41 * 256)
    assert rec.sfreq == 256.0 and rec.duration_seconds == 41.0
    assert rec.channel_sources["FP1-F7"] == "FP1-F7"
    assert rec.channel_sources["T8-P8"] == "T8-P8 (EDF signal 15); T8-P8 (EDF signal 23)"
    std = rec.signals_uv.std(axis=1)
    assert np.all((std > 5) & (std < 1000))  # real EEG in µV, not volts


@pytest.mark.parametrize("name", ["chb01_03_Seizure.edf", "chb01_03_NonSeizure.edf"])
def test_real_chbmit_crops_as_bipolar18_are_bipolar_less_the_chain(SHARED, name):
    whole = read_edf(SHARED / "chbmit" / name, "bipolar").signals_uv
    np.testing.assert_array_equal(read_edf(SHARED / "chbmit" / name, "bipolar18").signals_uv, whole[:18])
    np.testing.assert_array_equal(whole[14], whole[22])  # its two T8-P8, bit for bit: one may stand for both


def test_real_tusz_header(SHARED):
    rec = read_edf(SHARED / "format_stubs/tusz/aaaaaool_s004_t001.edf", "ref19")
    assert rec.sfreq == 250.0 and rec.signals_uv.shape == (19, 500)
    assert rec.channel_sources["Fp1"] == "EEG FP1-REF" and rec.channel_sources["Pz"] == "EEG PZ-REF"
    assert rec.interpolated == ()


def test_real_siena_header(SHARED):
    rec = read_edf(SHARED / "format_stubs/siena/PN00-1.edf", "ref19")
    assert rec.sfreq == 512.0 and rec.duration_seconds == 2.0
    assert rec.channel_sources["Fp1"] == "EEG Fp1" and rec.channel_sources["T6"] == "EEG T6"


def test_real_chbmit_header(SHARED):
    rec = read_edf(SHARED / "format_stubs/chbmit/chb05_06.edf", "bipolar")
    assert rec.sfreq == 256.0 and rec.signals_uv.shape == (23, 512)


def test_real_tusz_is_not_bipolar(SHARED):
    with pytest.raises(EDFError, match="needs T7-FT9, FT9-FT10, FT10-T8"):
        read_edf(SHARED / "format_stubs/tusz/aaaaaool_s004_t001.edf", "bipolar")


def test_bytes_past_the_headers_records_are_not_read_as_signal(tmp_path, write_edf, tusz_signals):
    """The header's record count is the EDF's (Kemp et al. 1992); MNE counted the records by the
    file's size and read 3 records of junk appended to a 10 s file as 3 s more signal."""
    signals = tusz_signals(10, SFREQ)
    path = write_edf(tmp_path / "long.edf", signals, SFREQ)
    header = read_header(path)
    record_bytes = 2 * sum(header.samples_per_record)
    with path.open("ab") as handle:
        handle.write(b"\x00\x7f" * (record_bytes // 2) * 3 + b"xyz")  # 3 records and 3 stray bytes
    assert read_header(path).n_records == 10
    rec = read_edf(path, "ref19")
    assert rec.duration_seconds == 10.0
    assert rec.repairs == ("3 s of data past the header's 10 data records left out (the file is longer than its "
                           "header says)",)
    step = np.ptp(signals["EEG FP1-REF"]) / 65535
    np.testing.assert_allclose(rec.signals_uv[0], signals["EEG FP1-REF"], atol=step)
