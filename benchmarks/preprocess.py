"""Preprocessing throughput on one CPU core: EDF file -> float32 z-scores, versus plain MNE.

    .venv/bin/python benchmarks/preprocess.py [--hours 1] [--repeats 3] [--write BENCHMARKS.md]

Writes a synthetic 19-channel EDF at 250 Hz with TUSZ labels ("EEG FP1-REF", ...) into a
temporary folder, then times (median of --repeats runs):
- jaxbrr: read_edf + preprocess (resample 250 -> 256 Hz polyphase, Butterworth bandpass order 3,
  60 Hz notch, z-score, clip, float32), i.e. preprocess_file;
- MNE: read_raw_edf(preload) + raw.filter(0.5, 120, IIR Butterworth order 3) +
  raw.notch_filter(60) + raw.resample(256), its defaults otherwise.
Target (issue 2): at least 300x real time, i.e. one hour of EEG in at most 12 s.
--write replaces the "## Preprocessing (issue 2)" section of a markdown file (created if absent).
"""

from __future__ import annotations

import os

# One core: thread pools are sized when numpy/scipy load, so this precedes their imports.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import edfio  # noqa: E402
import mne  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402

from common.config import PreprocessConfig  # noqa: E402
from common.data.edf import read_edf  # noqa: E402
from common.data.montage import REF19  # noqa: E402
from common.data.preprocess import preprocess  # noqa: E402

SECTION = "## Preprocessing (issue 2)"
TARGET_REALTIME = 300.0
SFREQ_IN = 250


def pin_one_core() -> str:
    """Restrict this process to one CPU where the OS allows it; say what was done."""
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}; BLAS/OpenMP threads = 1"
    return "not pinned (no sched_setaffinity); BLAS/OpenMP threads = 1"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_synthetic_edf(path: Path, hours: float) -> None:
    """19 channels of 30 µV noise plus a 10 Hz rhythm and 60 Hz mains, 1 s data records."""
    rng = np.random.default_rng(0)
    n = int(hours * 3600 * SFREQ_IN)
    t = np.arange(n) / SFREQ_IN
    rhythm = 20 * np.sin(2 * np.pi * 10 * t) + 5 * np.sin(2 * np.pi * 60 * t)
    signals = [
        edfio.EdfSignal(rhythm + 30 * rng.standard_normal(n), SFREQ_IN, label=f"EEG {name.upper()}-REF",
                        physical_dimension="uV", physical_range=(-2000.0, 2000.0))
        for name in REF19
    ]
    edfio.Edf(signals, data_record_duration=1.0).write(path)


def time_jaxbrr(path: Path, cfg: PreprocessConfig) -> tuple[float, float]:
    start = time.perf_counter()
    rec = read_edf(path, "ref19", interpolate=cfg.interpolate)
    read = time.perf_counter() - start
    signals, _ = preprocess(rec.signals_uv, rec.sfreq, cfg, rec.channels)
    assert signals.dtype == np.float32 and signals.shape[0] == 19
    return read, time.perf_counter() - start


def time_mne(path: Path) -> float:
    start = time.perf_counter()
    raw = mne.io.read_raw_edf(path, preload=True, verbose="ERROR")
    raw.filter(0.5, 120.0, method="iir", iir_params=dict(order=3, ftype="butter"), verbose="ERROR")
    raw.notch_filter(60.0, verbose="ERROR")
    raw.resample(256.0, verbose="ERROR")
    raw.get_data()
    return time.perf_counter() - start


def markdown(rows: list[tuple[str, list[float]]], hours: float, mne_over_jaxbrr: float,
             pinning: str, command: str) -> str:
    total = statistics.median(rows[0][1])
    realtime = hours * 3600 / total
    verdict = (
        f"**Target met**: {realtime:.0f}x real time >= {TARGET_REALTIME:.0f}x "
        f"({hours * 3600 / TARGET_REALTIME:.0f} s allowed per {hours:g} h, {total:.2f} s taken)."
        if realtime >= TARGET_REALTIME
        else f"**Target missed**: {realtime:.0f}x real time < {TARGET_REALTIME:.0f}x."
    )
    lines = [
        SECTION,
        "",
        f"Synthetic {hours:g} h, 19-channel EDF at {SFREQ_IN} Hz (TUSZ labels), EDF read to float32 "
        f"output, one core, median of {len(rows[0][1])} runs.",
        "",
        "| pipeline | median s | x real time | h of EEG per min | runs (s) |",
        "|---|---:|---:|---:|---|",
    ]
    for name, runs in rows:
        median = statistics.median(runs)
        lines.append(
            f"| {name} | {median:.2f} | {hours * 3600 / median:.0f} | {hours * 60 / median:.1f} | "
            f"{', '.join(f'{r:.2f}' for r in runs)} |"
        )
    lines += [
        "",
        f"MNE / jaxbrr time ratio: **{mne_over_jaxbrr:.1f}x** (MNE's filter is zero-phase IIR, "
        "its notch an FIR filter, and it resamples by FFT after filtering at 250 Hz; it does no "
        "z-score, clip or float32 cast).",
        "",
        verdict,
        "",
        "| | |",
        "|---|---|",
        f"| machine | {cpu_model()}, {os.cpu_count()} logical cores, {pinning} |",
        f"| command | `{command}` |",
        f"| versions | Python {platform.python_version()}, numpy {np.__version__}, scipy "
        f"{scipy.__version__}, mne {mne.__version__}, edfio {edfio.__version__} |",
        "",
    ]
    return "\n".join(lines)


def replace_section(path: Path, section: str) -> None:
    """Put `section` in place of the old one (up to the next '## ' heading), or append it."""
    text = path.read_text() if path.exists() else "# jaxbrr benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", type=Path, help="markdown file whose preprocessing section to replace")
    args = parser.parse_args()
    pinning = pin_one_core()
    cfg = PreprocessConfig()
    with tempfile.TemporaryDirectory(prefix="jaxbrr-bench-") as tmp:
        path = Path(tmp) / "synthetic_1h.edf"
        write_synthetic_edf(path, args.hours)
        reads, totals, mnes = [], [], []
        for _ in range(args.repeats):
            read, total = time_jaxbrr(path, cfg)
            reads.append(read)
            totals.append(total)
            mnes.append(time_mne(path))
    rows = [
        ("jaxbrr read_edf + preprocess", totals),
        ("&nbsp;&nbsp;of which read_edf (MNE reader)", reads),
        ("&nbsp;&nbsp;of which preprocess", [t - r for t, r in zip(totals, reads, strict=True)]),
        ("MNE read + filter + notch + resample", mnes),
    ]
    ratio = statistics.median(mnes) / statistics.median(totals)
    command = " ".join([os.path.relpath(sys.executable), *sys.argv])
    table = markdown(rows, args.hours, ratio, pinning, command.strip())
    print(table)
    if args.write:
        replace_section(args.write, table)
        print(f"wrote the section into {args.write}")


if __name__ == "__main__":
    main()
