"""Data-parallel scaling over simulated CPU devices, and what the prefetch thread saves.

    python benchmarks/scale.py                          # 1, 2, 4 devices; prefetch 0 vs 2
    python benchmarks/scale.py --devices 1 2 --steps 6 --config configs/tiny.yaml

Scaling: for each device count a fresh subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=N runs the training loop's own step
(make_train_step on a `data` × `fsdp` mesh, jaxbrr/train/mesh.py) on the same global batches
(random normal, the config's batch size, the dynamic Laplacian PE with model.graph.eigh_calls=looped:
the batched LAPACK eigh deadlocks over forced CPU devices, jaxbrr.graph.per_matrix). A last row
runs 1 device with the batched eigh, the cost of looping. Forced devices share the same CPU cores,
so this checks that the sharded step is correct and compiles for every layout (the losses must
agree), not that it gets faster: on one machine the work per step is the same, split differently.

Prefetch: the loop's Prefetcher (common/data/prefetch.py) in front of the 1-device step, with a
loader that costs about as much host time as reading a batch from the cache (--load-ms of numpy
work per batch); step time = wall time per step including the wait for data. "waited" is the
time the step loop spent blocked on the loader.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LOOPED = ["model.graph.eigh_calls=looped"]


def _batches(config, count: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    b, t = config.train.batch_size, config.window_samples
    out = []
    for _ in range(count):
        onset = rng.integers(t // 4, 3 * t // 4, (b, 1))
        out.append({"x": rng.standard_normal((b, 19, t)).astype(np.float32),  # (B, C, T)
                    "y": (np.arange(t)[None] >= onset).astype(np.float32), "valid": np.ones(b, bool)})
    return out


def worker(args) -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    sys.path.insert(0, str(ROOT))
    from common.config import load_config
    from common.data.prefetch import Prefetcher
    from jaxbrr.model import SeizureDetector
    from jaxbrr.train.mesh import global_batch, make_mesh, state_shardings
    from jaxbrr.train.optim import make_nnx_optimizer
    from jaxbrr.train.step import make_train_step

    config = load_config(ROOT / args.config, [*LOOPED, *args.set])
    model = SeizureDetector(config.model, rngs=nnx.Rngs(0))
    optimizer = make_nnx_optimizer(model, config.train, 1000)
    graphdef, state = nnx.split((model, optimizer))
    mesh = shardings = None
    if jax.device_count() > 1:
        mesh = make_mesh(config.train)
        shardings = state_shardings(state, mesh, config.train.mesh)
        state = jax.device_put(state, shardings)
    step = make_train_step(graphdef, config.train, mesh=mesh, state_shardings=shardings)
    plan = _batches(config, args.steps + 1)

    def put(batch):
        return global_batch(batch, mesh) if mesh is not None else {k: jnp.asarray(v) for k, v in batch.items()}

    def run(state, loader_items, load):
        losses, times = [], []
        with Prefetcher(load, loader_items, args.prefetch) as loader:
            since = time.perf_counter()
            for batch in loader:
                state, metrics = step(state, put(batch), jnp.float32(1.5))
                losses.append(float(jax.device_get(metrics["loss"])))
                now = time.perf_counter()
                times.append(now - since)
                since = now
            waited = loader.wait_seconds
        return state, losses, times, waited

    started = time.perf_counter()
    state, _, _, _ = run(state, plan[:1], lambda b: b)  # compile
    compile_s = time.perf_counter() - started

    def load(batch):  # host work of about --load-ms, as reading and copying a batch from the cache
        until = time.perf_counter() + args.load_ms / 1000
        out = {k: v.copy() for k, v in batch.items()}
        while time.perf_counter() < until:
            np.sqrt(np.abs(out["x"][:, :1]))
        return out

    _, losses, times, waited = run(state, plan[1:], load if args.load_ms else (lambda b: b))
    print(json.dumps({"devices": jax.device_count(), "prefetch": args.prefetch, "compile_s": compile_s,
                      "step_s": statistics.median(times), "losses": losses,
                      "waited_s": waited / len(times), "batch": config.train.batch_size}), flush=True)


def measure(args, devices: int, prefetch: int, load_ms: float, extra: tuple[str, ...] = ()) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, __file__, "--worker", "--config", args.config, "--steps", str(args.steps),
               "--prefetch", str(prefetch), "--load-ms", str(load_ms), *[f"--set={s}" for s in (*args.set, *extra)]]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"worker failed ({devices} devices):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/smoke.yaml")
    parser.add_argument("--set", action="append", default=["train.batch_size=8"], metavar="KEY=VALUE")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one compiling step)")
    parser.add_argument("--load-ms", type=float, default=100.0, help="host cost of loading one batch")
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    print(f"command: python benchmarks/scale.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"config {args.config} {' '.join(LOOPED + args.set)}; {os.cpu_count()} CPU cores, "
          f"load avg {os.getloadavg()[0]:.1f}\n")
    rows = [("looped", measure(args, n, 0, 0.0)) for n in args.devices]
    rows.append(("batched", measure(args, 1, 0, 0.0, ("model.graph.eigh_calls=batched",))))
    reference = np.array(rows[0][1]["losses"])
    print("| devices | eigh calls | per device | step (s) | windows/s | compile (s) | max loss diff vs 1st row |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for calls, r in rows:
        diff = np.abs(np.array(r["losses"]) - reference).max() / np.abs(reference).max()
        print(f"| {r['devices']} | {calls} | {r['batch'] // r['devices']} | {r['step_s']:.3f} | "
              f"{r['batch'] / r['step_s']:.1f} | {r['compile_s']:.1f} | {diff:.1e} |")

    print(f"\nprefetch, 1 device, loader {args.load_ms:g} ms of host work per batch:\n")
    print("| train.prefetch | step incl. wait (s) | waited per step (s) |")
    print("|---:|---:|---:|")
    for depth in (0, args.prefetch):
        r = measure(args, 1, depth, args.load_ms)
        print(f"| {depth} | {r['step_s']:.3f} | {r['waited_s']:.3f} |")


if __name__ == "__main__":
    main()
