"""Wall time and peak memory of the NaN localiser, tiny and full size, through its command line.

    python benchmarks/localize.py                        # tiny and full (configs/tusz.yaml), B=1
    python benchmarks/localize.py --sizes full --batch 2 --dtype float32

For each size: a torchref SeizureDetector (seed 0) is saved as the neutral safetensors file
(parity/convert.py), one synthetic EEG batch from the data pipeline as BATCH.npz, and then
`python -m parity.localize --checkpoint W --batch B --config C --dtype D --json R` runs in a fresh
subprocess, timed end to end (imports, both models, every dtype's forward and backward in both
frameworks, compiles included). Peak memory is the subprocess's ru_maxrss. A clean model's
report is CLEAN, so no op naming or replay runs: those add about one stage's compile each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"tiny": "configs/tiny.yaml", "full": "configs/tusz.yaml"}


def _inputs(config_path: str, n_windows: int, folder: Path) -> tuple[Path, Path]:
    import torchref.model as tmodel
    from common.config import load_config
    from parity.convert import save_weights
    from parity.scenarios import eeg_windows

    config = load_config(ROOT / config_path)
    weights, batch = folder / "weights.safetensors", folder / "batch.npz"
    save_weights(weights, tmodel.SeizureDetector(config.model, 0))
    x, y = eeg_windows(config, n_windows)
    np.savez(batch, x=x, y=y)
    return weights, batch


def measure(size: str, n_windows: int, dtype: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights, batch = _inputs(SIZES[size], n_windows, folder)
        report = folder / "report.json"
        command = [sys.executable, "-m", "parity.localize", "--checkpoint", str(weights), "--batch", str(batch),
                   "--config", SIZES[size], "--dtype", dtype, "--json", str(report)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if done.returncode not in (0, 1):
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        verdict = json.loads(report.read_text())["verdict"]
    return {"size": size, "batch": n_windows, "dtype": dtype, "seconds": seconds,
            "peak_gb": max(peak, before) / 1024**2, "verdict": verdict}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,full")
    parser.add_argument("--batch", type=int, default=1, help="windows in the batch")
    parser.add_argument("--dtype", default="float32,float64")
    args = parser.parse_args(argv)
    rows = []
    for size in args.sizes.split(","):
        rows.append(measure(size, args.batch, args.dtype))
        print(f"{size}: {rows[-1]['seconds']:.1f} s, peak {rows[-1]['peak_gb']:.2f} GB, {rows[-1]['verdict']}",
              file=sys.stderr, flush=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"command: python benchmarks/localize.py --sizes {args.sizes} --batch {args.batch} --dtype {args.dtype}")
    print("| size | B | dtypes | wall (s) | peak RSS (GB) | verdict |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['batch']} | {r['dtype']} | {r['seconds']:.1f} | {r['peak_gb']:.2f} | {r['verdict']} |")


if __name__ == "__main__":
    main()
