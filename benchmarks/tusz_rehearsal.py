"""A TUSZ-sized rehearsal: generate, build, kill, rebuild, train one epoch (issue 19).

    python benchmarks/tusz_rehearsal.py --out /tmp/rehearsal [--hours 50] [--kill-at 0.5]

1. generate  a synthetic corpus laid out as TUSZ v2.0.x ships (common/data/synth.py, layout tusz:
             edf/{train,dev,eval}/<patient>/<session>/<montage>/, mixed TCP montages and rates
             250/256/400/512 Hz, recordings of 20-40 min), at least --hours of EEG
2. build     `python -m jaxbrr.data build` as a user runs it on a corpus (configs/default.yaml with
             data.synthetic=null), SIGKILLed once --kill-at of the recordings are cached
3. check     every recording the killed build finished loads whole (its arrays match its sidecar);
             no half-written file is taken for a finished one
4. rebuild   the same command: finished recordings reused, the rest built
5. train     `python -m jaxbrr.train` for one epoch of the default model on the built corpus

Measured per step: wall time, the child's peak RSS and its peak anonymous (own, not page-cache)
memory, polled from /proc. Written: OUT/rehearsal.json
and a markdown table on stdout, extrapolated to TUSZ v2.0.x's size (TUSZ_HOURS below).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# TUSZ v2.0.x: train 910 h, dev 436 h, eval 128 h of EEG (the corpus's AAREADME.txt statistics as
# we read them; scale the extrapolation by your copy's own total).
TUSZ_HOURS = 1474.0
DURATION_SECONDS = (1200.0, 2400.0)


def memory_mib(pid: int) -> tuple[float, float]:
    """The process's peak resident set so far (VmHWM) and its anonymous resident memory now
    (RssAnon), in MiB; zeros once it is gone. VmHWM counts the memory-mapped cache pages a run
    touches (the page cache's, reclaimable); RssAnon is the process's own. Not rusage's
    ru_maxrss: Linux carries the parent's RSS at fork into the child's across exec."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0.0
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    hwm, anon = (int(fields.get(name, "0 kB").split()[0]) / 1024 for name in ("VmHWM", "RssAnon"))
    return hwm, anon


def run_measured(command: list[str], log: Path, kill_when=None, poll_seconds: float = 0.5) -> dict:
    """Run `command` (stdout+stderr to log); SIGKILL it when kill_when() turns true. Returns wall
    seconds, exit status, peak RSS and peak anonymous RSS (MiB, polled) and whether it was killed."""
    start, peak, anon, killed = time.perf_counter(), 0.0, 0.0, False
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            hwm, now = memory_mib(proc.pid)
            peak, anon = max(peak, hwm), max(anon, now)
            if kill_when is not None and not killed and kill_when():
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
            time.sleep(poll_seconds)
    return {"seconds": time.perf_counter() - start, "exit": proc.returncode, "killed": killed,
            "peak_rss_mib": peak, "peak_anon_mib": anon}


def sidecars(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/recordings/*.json"))


def check_finished(cache: Path) -> dict:
    """Every sidecar's arrays load whole and match it; count the temporaries a kill left."""
    checked = 0
    for sidecar in sidecars(cache):
        meta = json.loads(sidecar.read_text())
        base = sidecar.with_suffix("")
        signals = np.load(f"{base}.signals.npy", mmap_mode="r")
        labels = np.load(f"{base}.labels.npy", mmap_mode="r")
        assert signals.shape == (meta["n_channels"], meta["n_samples"]), sidecar
        assert labels.shape == (meta["n_samples"],), sidecar
        assert np.isfinite(signals[:, -1]).all(), sidecar  # the last column was written
        checked += 1
    temporaries = list(cache.glob("*/recordings/.*.tmp"))
    return {"finished_and_whole": checked, "temporaries_left": len(temporaries),
            "temporary_bytes": sum(p.stat().st_size for p in temporaries)}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--hours", type=float, default=50.0)
    parser.add_argument("--kill-at", type=float, default=0.5, help="fraction of recordings cached at the kill")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from common.data.synth import generate_corpus

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    corpus, cache = out / "corpus", out / "cache"
    recordings = math.ceil(1.05 * args.hours * 3600 / np.mean(DURATION_SECONDS))  # durations are drawn: margin
    patients = max(7, recordings // 3)
    results: dict = {"hours_asked": args.hours, "recordings": recordings, "patients": patients}

    # 1. generate
    start = time.perf_counter()
    paths = generate_corpus(corpus, recordings, args.seed, patients, DURATION_SECONDS, (250, 256, 400, 512),
                            (0, 2), progress=True, layout="tusz")
    results["generate_seconds"] = time.perf_counter() - start
    results["edf_bytes"] = sum(p.stat().st_size for p in paths)
    print(f"generated {len(paths)} recordings in {results['generate_seconds']:.0f} s", flush=True)

    sets = [f"data.data_dir={corpus}", f"data.cache_dir={cache}", "data.synthetic=null"]
    build = [sys.executable, "-m", "jaxbrr.data", "build", "--config", "configs/default.yaml",
             *[f"--set={s}" for s in sets]]

    # 2. build, killed
    target = math.ceil(args.kill_at * recordings)
    results["build_killed"] = run_measured(build, out / "build1.log", lambda: len(sidecars(cache)) >= target)
    results["build_killed"]["finished"] = len(sidecars(cache))
    print(f"build 1: {results['build_killed']}", flush=True)

    # 3. check what it left
    results["after_kill"] = check_finished(cache)
    print(f"after the kill: {results['after_kill']}", flush=True)

    # 4. rebuild
    results["rebuild"] = run_measured(build, out / "build2.log")
    summary = (out / "build2.log").read_text()
    print(summary[-3000:], flush=True)
    line = next(x for x in summary.splitlines() if x.startswith("cache "))
    results["rebuild"]["summary"] = line
    manifest = json.loads(next(cache.glob("*/manifest.json")).read_text())
    hours = sum(m["n_samples"] / m["sfreq"] for m in manifest["recordings"].values()) / 3600
    results["hours_built"] = hours
    if hours < args.hours:
        print(f"warning: {hours:.1f} h built, fewer than the {args.hours:g} h asked", flush=True)
    results["cache_bytes"] = folder_bytes(cache)
    results["after_rebuild"] = check_finished(cache)

    # 5. one epoch of the default model
    train = [sys.executable, "-m", "jaxbrr.train", "--config", "configs/default.yaml", "--no-progress",
             "--workdir", str(out / "run"), *[f"--set={s}" for s in sets], "--set=train.epochs=1"]
    results["train"] = run_measured(train, out / "train.log")
    results["train"]["tail"] = (out / "train.log").read_text()[-1500:]

    killed_hours = hours * results["build_killed"]["finished"] / recordings
    t1, t2 = results["build_killed"]["seconds"], results["rebuild"]["seconds"]
    rate = hours / ((t1 + t2) / 60)  # hours of EEG per minute, the two runs together
    results["throughput_hours_per_minute"] = rate
    results["cache_bytes_per_hour"] = results["cache_bytes"] / hours
    (out / "rehearsal.json").write_text(json.dumps(results, indent=1))

    gib = 1024 ** 3
    print(f"""
| step | wall | peak RSS | peak anon | what |
|---|---:|---:|---:|---|
| generate | {results['generate_seconds'] / 60:.1f} min | – | – | {recordings} recordings, {patients} patients, {results['edf_bytes'] / gib:.2f} GiB of EDF |
| build (SIGKILL at {results['build_killed']['finished']} of {recordings}) | {t1 / 60:.1f} min | {results['build_killed']['peak_rss_mib']:.0f} MiB | {results['build_killed']['peak_anon_mib']:.0f} MiB | ~{killed_hours:.1f} h cached; all {results['after_kill']['finished_and_whole']} finished recordings whole, {results['after_kill']['temporaries_left']} temporaries left |
| rebuild | {t2 / 60:.1f} min | {results['rebuild']['peak_rss_mib']:.0f} MiB | {results['rebuild']['peak_anon_mib']:.0f} MiB | {line} |
| train 1 epoch | {results['train']['seconds'] / 60:.1f} min | {results['train']['peak_rss_mib']:.0f} MiB | {results['train']['peak_anon_mib']:.0f} MiB | exit {results['train']['exit']} |

{hours:.1f} h of EEG: build {rate:.2f} h/min, cache {results['cache_bytes_per_hour'] / 1024**2:.0f} MiB per hour
({results['cache_bytes'] / gib:.2f} GiB). TUSZ v2.0.x ({TUSZ_HOURS:.0f} h): build ~{TUSZ_HOURS / rate / 60:.1f} h on this
machine, cache ~{results['cache_bytes_per_hour'] * TUSZ_HOURS / gib:.0f} GiB.""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
