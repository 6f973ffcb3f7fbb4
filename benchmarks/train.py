"""Training throughput: one optimizer step as the training loops run it, per framework and config.

    python benchmarks/train.py                                  # default and full, jax and torch
    python benchmarks/train.py --configs default --repeats 5
    python benchmarks/train.py --configs full --frameworks jax --step-timeout 900

default: configs/default.yaml at its train.batch_size, on real batches: the first batches of
epoch 0 of its synthetic corpus (generated and cached on first use), drawn by the balanced
sampler with the epoch's pos_weight, as jaxbrr/train/loop.py does. full: configs/tusz.yaml with
model.remat=true at B=4, on random normal batches of its shape (its TUSZ folder is not needed).

The step is the loops' own: jaxbrr's `make_train_step(graphdef, cfg)` on `nnx.split((model,
optimizer))`, the batch put on the device and the metrics fetched with `jax.device_get` every
step (Trainer._step); torchref's `train_step` (forward, backward, clip, AdamW, LambdaLR, `.item()`
of the metrics) with torch.set_num_threads(os.cpu_count()). Batches are loaded before the clock
starts. Every (framework, config) runs in a fresh subprocess, so peak RSS (getrusage ru_maxrss,
interpreter and imports included) is that configuration's alone; time is the median of
--repeats timed steps after --warmup steps (jax: the first one compiles). A worker that goes
--step-timeout seconds without finishing its setup or a step is killed and its row reported as
not measured, with the steps it did finish. load avg: the highest 1-minute load average seen
during the row; above the core count, other jobs were sharing the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from model_step import machine  # the sibling script (benchmarks/ is on sys.path when run)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "default": ("configs/default.yaml", [], None),  # (path, overrides, batch size; None = the config's)
    "full": ("configs/tusz.yaml", ["model.remat=true"], 4),
}
# The schedule's length for the full config (no corpus to count batches in); it sets only the LR.
FULL_TOTAL_UPDATES = 1000


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


# -- workers (one per subprocess) ----------------------------------------------------------------


def _setup(name: str, n_batches: int):
    """The config, the batches (numpy, as Loop.load_batch returns them), pos_weight, total updates."""
    from common.config import load_config

    path, overrides, batch_size = CONFIGS[name]
    if batch_size is not None:
        overrides = [*overrides, f"train.batch_size={batch_size}"]
    config = load_config(ROOT / path, overrides)
    cfg = config.train
    if name != "default":
        rng = np.random.default_rng(0)
        shape = (cfg.batch_size, config.model.n_chans, config.window_samples)
        random = [{"x": rng.standard_normal(shape, dtype=np.float32),  # (B, C, T)
                   "y": (rng.random(shape[::2]) > 0.7).astype(np.float32),  # (B, T)
                   "valid": np.ones(cfg.batch_size, bool)} for _ in range(n_batches)]
        return config, random, 1.0, FULL_TOTAL_UPDATES

    from common.data.prepare import prepare, train_spec
    from common.data.sampler import balanced_rows, batches, seizure_window_ratio
    from common.train.class_weight import resolve_pos_weight

    prepared = prepare(config, progress=False)
    stems = prepared.splits["train"]
    table = prepared.corpus.window_table(stems, train_spec(config))
    rows = balanced_rows(table["class"], config.data.balance, cfg.seed, 0)
    plan = list(batches(rows, cfg.batch_size))
    if len(plan) < n_batches:
        raise ValueError(f"epoch 0 has {len(plan)} batches, fewer than the {n_batches} asked for")
    pos_weight = resolve_pos_weight(cfg, seizure_window_ratio(table["class"], rows))
    loaded = []
    for r in plan[:n_batches]:
        x, y, valid = prepared.corpus.batch(stems, table, r, config.window_samples)
        loaded.append({"x": x, "y": y.astype(np.float32), "valid": valid.all(axis=1)})  # (B,C,T) (B,T) (B,)
    total_updates = max(1, cfg.epochs * len(plan) // cfg.grad_accum_steps)
    return config, loaded, pos_weight, total_updates


def jax_worker(name: str, warmup: int, repeats: int) -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxbrr.model import SeizureDetector
    from jaxbrr.train.optim import make_nnx_optimizer
    from jaxbrr.train.step import make_train_step

    config, batches, pos_weight, total_updates = _setup(name, warmup + repeats)
    cfg = config.train
    model = SeizureDetector(config.model, rngs=nnx.Rngs(cfg.seed))
    optimizer = make_nnx_optimizer(model, cfg, total_updates)
    graphdef, state = nnx.split((model, optimizer))
    step_fn = make_train_step(graphdef, cfg)
    _emit({"ready": True, "batch": cfg.batch_size, "window_samples": config.window_samples})
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        device_batch = {k: jnp.asarray(v) for k, v in batch.items()}
        state, metrics = step_fn(state, device_batch, jnp.float32(pos_weight))
        metrics = jax.device_get(metrics)  # blocks on the step, as the loop does
        _emit({"step": i, "seconds": time.perf_counter() - start, "loss": float(metrics["loss"]),
               "peak_rss_gb": _peak_rss_gb()})


def torch_worker(name: str, warmup: int, repeats: int) -> None:
    import torch

    from torchref.model import SeizureDetector
    from torchref.train.optim import make_optimizer
    from torchref.train.step import train_step

    torch.set_num_threads(os.cpu_count() or 1)
    config, batches, pos_weight, total_updates = _setup(name, warmup + repeats)
    cfg = config.train
    model = SeizureDetector(config.model, cfg.seed)
    optimizer, scheduler = make_optimizer(model, cfg, total_updates)
    _emit({"ready": True, "batch": cfg.batch_size, "window_samples": config.window_samples})
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        tensors = {k: torch.as_tensor(v) for k, v in batch.items()}  # (B, C, T) (B, T) (B,)
        metrics = train_step(model, optimizer, scheduler, tensors, cfg, pos_weight)
        _emit({"step": i, "seconds": time.perf_counter() - start, "loss": metrics["loss"],
               "peak_rss_gb": _peak_rss_gb()})


# -- the parent: run a worker under a watchdog ---------------------------------------------------


def run_worker(framework: str, name: str, warmup: int, repeats: int, step_timeout: float) -> dict:
    """Start the worker and read its lines; kill it when setup or a step takes longer than
    step_timeout (setup gets 3x: it may generate and cache the corpus)."""
    cmd = [sys.executable, __file__, "--worker", framework, name, "--warmup", str(warmup),
           "--repeats", str(repeats)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)], daemon=True).start()
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()
    info, steps, load = {}, [], [os.getloadavg()[0]]
    start = time.perf_counter()
    while True:
        limit = step_timeout * (3 if not info else 1)
        try:
            line = lines.get(timeout=limit)
        except queue.Empty:
            proc.kill()
            proc.wait()
            phase = "setup" if not info else f"step {len(steps) + 1} of {warmup + repeats}"
            return {"error": f"not measured: {phase} exceeded {limit:.0f} s (killed after "
                             f"{time.perf_counter() - start:.0f} s)", "steps": steps, **info}
        if line is None:
            break
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("ready"):
            info = record
        elif "step" in record:
            steps.append(record)
            load.append(os.getloadavg()[0])
            print(f"  {framework} {name} step {record['step']}: {record['seconds']:.2f} s", file=sys.stderr)
    code = proc.wait()
    if code != 0:
        why = f"killed by signal {-code} (out of memory?)" if code < 0 else (
            stderr[-1].strip() if stderr else "failed")
        return {"error": why, "steps": steps, **info}
    timed = [s["seconds"] for s in steps[warmup:]]
    return {**info, "seconds": statistics.median(timed), "runs": timed,
            "first_s": steps[0]["seconds"], "peak_rss_gb": steps[-1]["peak_rss_gb"],
            "load": max(load), "losses": [s["loss"] for s in steps]}


def _row(name: str, framework: str, r: dict) -> str:
    label = f"{name} ({r.get('window_samples', '?')} samples)"
    batch = r.get("batch", "?")
    if "error" in r:
        done = ", ".join(f"{s['seconds']:.0f} s" for s in r.get("steps", []))
        return f"| {label} | {batch} | {framework} | {r['error']}" + (f"; steps done: {done}" if done else "") \
            + " | | | | | | |"
    runs = ", ".join(f"{s:.2f}" for s in r["runs"])
    return (f"| {label} | {batch} | {framework} | {r['seconds']:.2f} | {batch / r['seconds']:.3g} | "
            f"{batch * r['window_samples'] / r['seconds']:,.0f} | {r['peak_rss_gb']:.2f} | {r['first_s']:.1f} | "
            f"{runs} | {r['load']:.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="default,full")
    parser.add_argument("--frameworks", default="jax,torch")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed steps per row (default: 10 for default, 2 for full)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 2 / 1)")
    parser.add_argument("--step-timeout", type=float, default=600.0,
                        help="seconds a single step may take before its row is reported as not measured")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        framework, name = args.worker
        (jax_worker if framework == "jax" else torch_worker)(name, args.warmup, args.repeats)
        return 0

    frameworks = args.frameworks.split(",")
    lines = ["| config | B | framework | s / step (median) | windows / s | samples / s | peak RSS GB | "
             "first step s | timed steps s | load avg |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|---:|"]
    ratios = []
    for name in args.configs.split(","):  # in the order given: default first, full after
        warmup = args.warmup if args.warmup is not None else (2 if name == "default" else 1)
        repeats = args.repeats if args.repeats is not None else (10 if name == "default" else 2)
        results = {}
        for framework in frameworks:
            print(f"{framework} {name}: {warmup} warm-up + {repeats} timed steps", file=sys.stderr)
            results[framework] = r = run_worker(framework, name, warmup, repeats, args.step_timeout)
            print(f"{framework} {name}: {json.dumps(r)}", file=sys.stderr)
            lines.append(_row(name, framework, r))
        if {"jax", "torch"} <= set(results):
            jax_r, torch_r = results["jax"], results["torch"]
            ratio = (f"{jax_r['seconds'] / torch_r['seconds']:.2f}"
                     if "seconds" in jax_r and "seconds" in torch_r else "not measured")
            ratios.append(f"{name}: jax / torch step time = {ratio}")
    table = "\n".join(lines + [""] + ratios)
    footer = (f"\nmachine: {machine()}; "
              f"command: `{' '.join(['python benchmarks/train.py', *sys.argv[1:]])}`")
    print(table + footer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
