"""Inference real-time factor at full size: hours of EEG per minute, jaxbrr against torchref.

    python benchmarks/inference.py                           # configs/tusz.yaml, a 130 s recording, B=1 and 4
    python benchmarks/inference.py --seconds 250 --batches 1,8 --repeats 2

One preprocessed recording (standard normal samples, --seconds long, the config's 19 channels at
256 Hz) goes through what `python -m jaxbrr.predict` does after reading and preprocessing an EDF:
windows at the evaluation stride (full size: 60 s windows every 10 s, so 130 s is 8 windows and
every interior sample is predicted 6 times), batches of B (the last one padded), the model,
stitching (common/eval/recordings.py `predict_signals`) and post-processing. EEG h/min = the
recording's hours / the median wall time in minutes; "no overlap" rescales the measured time per
window to eval.stride_seconds = window (each sample predicted once), a derived number.

Both frameworks run the same weights: an NNX model initialised with seed 0 is written with
parity.convert.save_weights, and each worker fills a fresh model from that file
(parity.convert.load_weights: jaxbrr.model.SeizureDetector, torchref.model.SeizureDetector).
Each (framework, B) runs in a fresh process. "first batch s" is the first call on one batch (for
jax: tracing, XLA compilation and one run); "compile s" = first batch − a steady batch. The timed
runs start after that. The stitched traces of the two frameworks are compared (max |Δp|).
"load avg": the higher 1-minute load average seen at the start and the end of the row; above the
core count, other processes shared the CPU and the row's times are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FULL = "configs/tusz.yaml"


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def worker(framework: str, config_path: str, overrides: list[str], batch: int, seconds: float,
           repeats: int, weights: str, trace_out: str) -> dict:
    import numpy as np

    from common.config import load_config
    from common.eval.postprocess import postprocess
    from common.eval.recordings import predict_signals
    from parity.convert import load_weights

    config = load_config(ROOT / config_path, [*overrides, f"eval.batch_size={batch}"])
    if framework == "jax":
        from flax import nnx

        from jaxbrr.model import SeizureDetector
        from jaxbrr.predict import make_predict

        model = SeizureDetector(config.model, rngs=nnx.Rngs(0))
        load_weights(weights, model)
        predict = make_predict(model)
    else:
        import torch

        from torchref.model import SeizureDetector
        from torchref.train.step import eval_step

        torch.set_num_threads(os.cpu_count() or 1)
        model = SeizureDetector(config.model, 0)
        load_weights(weights, model)

        def predict(x):
            with torch.inference_mode():
                return eval_step(model, torch.from_numpy(x)).numpy()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, config.model.n_chans, config.window_samples), dtype=np.float32)
    start = time.perf_counter()
    predict(x)
    first = time.perf_counter() - start
    start = time.perf_counter()
    predict(x)
    steady = time.perf_counter() - start

    sfreq = config.preprocess.sfreq
    signals = rng.standard_normal((config.model.n_chans, int(seconds * sfreq)), dtype=np.float32)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        trace = predict_signals(predict, signals, config)
        postprocess(trace, sfreq, config.postprocess)
        runs.append(time.perf_counter() - start)
    np.save(trace_out, trace)
    windows = len(range(0, signals.shape[1] - config.window_samples + 1, config.eval_stride_samples))
    windows += (signals.shape[1] - config.window_samples) % config.eval_stride_samples > 0
    return {"first_s": first, "steady_s": steady, "runs": runs, "seconds": statistics.median(runs),
            "windows": windows, "window_seconds": config.data.window_seconds,
            "stride_seconds": config.eval_stride_samples / sfreq, "peak_rss_gb": _peak_rss_gb()}


def _run_worker(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        if out.returncode < 0:
            return {"error": f"killed by signal {-out.returncode} (out of memory?)"}
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{model}, {os.cpu_count()} logical cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=FULL, help=f"run config (default {FULL}, full size)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seconds", type=float, default=130.0, help="recording length (default 130 s)")
    parser.add_argument("--batches", default="1,4", help="comma-separated batch sizes (default 1,4)")
    parser.add_argument("--frameworks", default="jax,torch")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of the recording (median)")
    parser.add_argument("--worker", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        framework, config_path, overrides, batch, seconds, repeats, weights = args.worker
        result = worker(framework, config_path, json.loads(overrides), int(batch), float(seconds),
                        int(repeats), weights, weights + f".{framework}.{batch}.npy")
        print(json.dumps(result))
        return

    import numpy as np
    from flax import nnx

    from common.config import load_config
    from jaxbrr.model import SeizureDetector, count_parameters
    from parity.convert import save_weights

    config = load_config(ROOT / args.config, args.set)
    model = SeizureDetector(config.model, rngs=nnx.Rngs(0))
    parameters = count_parameters(model)
    batches = [int(b) for b in args.batches.split(",")]
    frameworks = args.frameworks.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="jaxbrr-inference-") as tmp:
        weights = str(Path(tmp) / "weights.safetensors")
        save_weights(weights, model)
        del model
        for batch in batches:
            for framework in frameworks:
                print(f"{framework} B={batch} ...", file=sys.stderr, flush=True)
                load = os.getloadavg()[0]
                result = _run_worker([framework, args.config, json.dumps(args.set), str(batch),
                                      str(args.seconds), str(args.repeats), weights])
                result["load"] = max(load, os.getloadavg()[0])
                trace = Path(weights + f".{framework}.{batch}.npy")
                rows.append((framework, batch, result, np.load(trace) if trace.exists() else None))

    hours = args.seconds / 3600
    sets = "".join(f" --set {s}" for s in args.set)
    print(f"\n{machine()}; {args.config}{sets}: {parameters:,} parameters; a {args.seconds:g} s recording, "
          f"{rows[0][2].get('window_seconds', '?')} s windows every {rows[0][2].get('stride_seconds', '?')} s\n")
    print("| framework | B | windows | first batch s | compile s | s / window | recording s | "
          "EEG h/min | EEG h/min, no overlap | peak RSS GB | load avg |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for framework, batch, r, _ in rows:
        if "error" in r:
            print(f"| {framework} | {batch} | error: {r['error']} |")
            continue
        per_window = r["seconds"] / r["windows"]
        no_overlap = r["window_seconds"] / per_window * 60 / 3600
        compile_s = f"{r['first_s'] - r['steady_s']:.1f}" if framework == "jax" else "–"
        print(f"| {'jaxbrr' if framework == 'jax' else 'torchref'} | {batch} | {r['windows']} | "
              f"{r['first_s']:.2f} | {compile_s} | {per_window:.3f} | {r['seconds']:.2f} | "
              f"{hours / (r['seconds'] / 60):.3f} | {no_overlap:.3f} | {r['peak_rss_gb']:.2f} | {r['load']:.1f} |")
    for batch in batches:
        traces = {f: t for f, b, _, t in rows if b == batch and t is not None}
        if len(traces) == 2:
            diff = float(np.max(np.abs(traces["jax"].astype(np.float64) - traces["torch"])))
            print(f"\nB={batch}: stitched traces, max |p_jaxbrr − p_torchref| = {diff:.2e}")
    print(f"\ncommand: python benchmarks/inference.py --config {args.config}{sets} --seconds {args.seconds:g} "
          f"--batches {args.batches} --frameworks {args.frameworks} --repeats {args.repeats}")


if __name__ == "__main__":
    main()
