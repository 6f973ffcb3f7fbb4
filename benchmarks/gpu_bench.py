"""GPU benchmarks of the full-size model, trimmed to a time budget: one JSON line per row.

    python benchmarks/gpu_bench.py --budget 300 --out OUT          # on a GPU, configs/tusz.yaml
    python benchmarks/gpu_bench.py --size tiny --budget 60 --out OUT   # the CPU rehearsal

Rows run in priority order, each in a fresh subprocess (its own compile, its own peak memory),
until the budget is spent; what does not fit is written as skipped, never silently left out.

    peak        a bf16 matmul (8192³, torch) in TFLOP/s: the ceiling the utilisation is measured
                against, in the same run
    train       one optimizer step as the loops run it (jaxbrr make_train_step on the split
                state; torchref train_step with ssm.backend cuda), random (B, 19, 15360) batches,
                float32 or bfloat16 (model.precision), batch 8, 32 and the largest jaxbrr fits:
                first step (compile included), median step, windows/s, peak device memory, and
                model FLOP utilisation = 3 × F × B / step time / peak on two counts of the
                forward's matmul and conv FLOPs per 60 s window F: issue 16's 110.6 GFLOP (the
                original with its CPU fallback for Mamba2, perf_grounding.md §3), on which the
                target is judged, and this model's own, 127.67 GFLOP (benchmarks/flops.py).
                jaxbrr's bfloat16 row at batch 8 runs again after its pair and its Pallas row
                (variant "profile", its executable from JAX's persistent cache, planned with the
                profile's own time) and profiles three more steps: device
                time per model stage, forward and backward (benchmarks/step_profile.py); with it
                XLA's cost analysis of the same executable (bytes moved, flops:
                benchmarks/roofline.py). Two more jaxbrr rows at that batch take
                ssm.chunk_size 8 and 64 (configs/tusz.yaml has 16, the CPU's fastest and, by
                XLA:CPU's cost analysis, the fewest bytes moved: 552 GB per bf16 B=8 step against
                607 at 8, 620 at 32, 828 at 64; BENCHMARKS.md "How many bytes the step moves").
    eigh        the Laplacian PE alone (adjacency -> eigh -> PE, forward + backward) at B=8: its
                share of the float32 B=8 step
    pallas      jaxbrr's train rows at batch 8 again with model.ssm.scan=pallas (jaxbrr/ssd_kernel.py:
                the chunked scan fused into two Triton kernels), bfloat16 and float32; skipped
                without a GPU
    scan        the selective scan alone, forward + backward at batch 8's node and edge shapes,
                float32: the Pallas kernels' ms against XLA chunked's, beside the kernels' logical
                bytes (a GPU only)
    inference   jaxbrr's eval forward at B=64: hours of EEG per minute at the 10 s stride

Both frameworks run with model.remat on from batch 32 (per-layer rematerialisation of the Mamba
stacks: a full-size window holds ~4 GB of activations without it; jaxbrr's bfloat16 B=8 step
peaked at 29 GB), so that the pair compares equal work.

`--warm` fills Triton's cache for the torchref train rows (their first step each, the budget's
worth), for gpu_check.py to run beside the GPU tests: mamba_ssm's kernels compile on the CPU for
minutes, and the bench's torch rows then find them compiled. The largest batch is predicted from
the bfloat16 B=32 row's peak memory (linear in B, rounded down to a multiple of 16, 85 % of the
device; JAX may allocate 92 %) and halved once if it does not fit; torchref then runs at the
batch jaxbrr ran (not retried: out of memory there is its result), and the targets pair the two.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Full size, 60 s window, matmul and conv FLOPs of the forward. Issue 16 states the target on
# 110.6 GFLOP, perf_grounding.md §3's count of the original with a depthwise conv in place of each
# Mamba2 direction (its CPU fallback); this model's own is 127.67 (`python benchmarks/flops.py
# --config configs/tusz.yaml`, the scan counted as its recurrence; tests/benchmarks/test_flops.py).
FORWARD_GFLOP_PER_WINDOW = 110.6
MODEL_FORWARD_GFLOP_PER_WINDOW = 127.67
TRAIN_FLOP_FACTOR = 3  # forward + backward ≈ 3 × forward
# The MFU denominator until a run measures its own: bf16 matmul 8192³ (torch) on the H200 of the
# first GPU check (BENCHMARKS.md "GPU check"); roofline.py and gpu_aot.py take it as --peak's default.
H200_BF16_PEAK_TFLOPS = 777.0
STRIDE_SECONDS = 10.0
SIZES = {  # size -> (config, overrides, train batches, inference batch, matmul n, timed steps)
    "full": ("configs/tusz.yaml", [], (8, 32), 64, 8192, 5),
    "tiny": ("configs/tiny.yaml", [], (2, 4), 4, 512, 2),
}
# planning estimates at full size, from the H200 run (BENCHMARKS.md): a jaxbrr train row took 89 s
# (70 s of it compiling), the PE row 8 s, the matmul peak 5.5 s
ROW_SECONDS = {"peak": 10, "train": 95, "eigh": 15, "inference": 60, "scan": 40}
# a torchref train row when `make triton-aot`'s kernels were seeded (--precompiled): no compile,
# the autotuner timing each kernel's 6 to 11 configurations once (~0.1 s each, some 20 kernels
# over the two streams' shapes), Triton's launchers (~1 s each, 13 on the H200), the model's build
# and six steps. A guess until a GPU measures one: it only decides whether the row is tried, and
# a row that takes longer stops at the bench's deadline.
TORCH_PRECOMPILED_SECONDS = 60
CHUNK_SIZES = (8, 64)  # jaxbrr rows beside the config's chunk size (bfloat16, small batch)
PROFILE_STEPS = 3
PROFILE_SECONDS = 120  # the profile's own limit, inside its row's


def rows_for(size: str) -> list[dict]:
    """Every row, in the order they run: what issue 16's targets need first (the bf16 and float32
    pairs at the small batch, each followed by jaxbrr's fused Pallas scan, its best candidate;
    the eigh share; the large batch pair; the largest batch jaxbrr fits, then torchref at it;
    inference), the experiments last (the scan alone, the chunk sizes), so that a budget that
    runs out cuts those. One exception: the profile of jaxbrr's bf16 step follows the bf16 rows
    (where that step's time goes is what the utilisation target needs next), never splitting a
    pair, and planned with its own time, so that it runs only where it fits (row_seconds)."""
    _, _, (small, large), infer, _, _ = SIZES[size]
    rows = [{"kind": "peak"}]
    for precision in ("bfloat16", "float32"):
        rows += [{"kind": "train", "framework": f, "precision": precision, "batch": small} for f in ("jax", "torch")]
        rows.append({"kind": "train", "framework": "jax", "precision": precision, "batch": small,
                     "scan": "pallas", "variant": "ssm.scan=pallas"})  # a GPU only
        if precision == "bfloat16":  # jaxbrr's bf16 small-batch step again (JAX's cache holds it), per model stage
            rows.append({"kind": "train", "framework": "jax", "precision": precision, "batch": small,
                         "profile": True, "variant": "profile"})
    rows.append({"kind": "eigh", "batch": small})
    rows += [{"kind": "train", "framework": f, "precision": "bfloat16", "batch": large} for f in ("jax", "torch")]
    # the largest batch jaxbrr fits, then torchref at that batch (its pair in the targets)
    rows += [{"kind": "train", "framework": f, "precision": "bfloat16", "batch": "max", "largest": True}
             for f in ("jax", "torch")]
    rows += [{"kind": "inference", "batch": infer, "precision": "float32"},
             {"kind": "inference", "batch": infer, "precision": "bfloat16"}]
    rows += [{"kind": "train", "framework": f, "precision": "float32", "batch": large} for f in ("jax", "torch")]
    rows.append({"kind": "scan", "batch": small, "scan": "pallas"})  # the scan alone, kernels against XLA
    rows += [{"kind": "train", "framework": "jax", "precision": "bfloat16", "batch": small, "chunk_size": c,
              "variant": f"ssm.chunk_size={c}"} for c in CHUNK_SIZES]
    return rows


def _config(size: str, precision: str, batch: int, framework: str, chunk_size: int | None = None,
            scan: str | None = None):
    from common.config import load_config

    path, overrides, (_, large), *_ = SIZES[size]
    overrides = [*overrides, f"model.precision={precision}", f"train.batch_size={batch}"]
    if batch >= large:
        overrides.append("model.remat=true")
    if chunk_size is not None:
        overrides.append(f"model.ssm.chunk_size={chunk_size}")
    if scan is not None:
        overrides.append(f"model.ssm.scan={scan}")
    if framework == "torch" and _cuda():
        overrides.append("model.ssm.backend=cuda")
    return load_config(ROOT / path, overrides)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _batch(config, seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    b, shape = config.train.batch_size, (config.train.batch_size, config.model.n_chans, config.window_samples)
    return {"x": rng.standard_normal(shape, dtype=np.float32), "y": (rng.random(shape[::2]) > 0.7).astype(np.float32),
            "valid": np.ones(b, bool)}


def _timed(step, n: int) -> tuple[float, list[float]]:
    """(first call's seconds, the next n calls' seconds); step() must block until done."""
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    times = []
    for _ in range(n):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return first, times


# -- workers -----------------------------------------------------------------------------------


def _jax_peak_gb() -> float | None:
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    return stats["peak_bytes_in_use"] / 1e9 if "peak_bytes_in_use" in stats else None


def worker_peak(size: str) -> dict:
    import torch

    n = SIZES[size][4]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)

    def step():
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()

    _, times = _timed(step, 10)
    seconds = statistics.median(times)
    return {"tflops": 2 * n**3 / seconds / 1e12, "n": n, "device": device}


def worker_train_jax(size: str, precision: str, batch: int, chunk_size: int | None = None,
                     profile: bool = False, scan: str | None = None) -> dict:
    import jax
    import jax.numpy as jnp
    import roofline
    import step_profile

    from jaxbrr.precision import set_float32_precision

    config = _config(size, precision, batch, "jax", chunk_size, scan)
    set_float32_precision(config.train.tf32, jax.default_backend())  # as the trainer: full float32 by default
    step_fn, state = roofline.train_step(config)
    data = {k: jnp.asarray(v) for k, v in _batch(config).items()}
    box = {"state": state}

    def step():
        box["state"], metrics = step_fn(box["state"], data, jnp.float32(1.0))
        box["loss"] = float(jax.device_get(metrics["loss"]))

    first, times = _timed(step, SIZES[size][5])
    result = {"first_step_s": first, "step_s": statistics.median(times), "runs": times, "loss": box["loss"],
              "peak_memory_gb": _jax_peak_gb(), "remat": config.model.remat, "chunk_size": config.model.ssm.chunk_size,
              "scan": config.model.ssm.scan,
              "device": str(jax.devices()[0].device_kind)}
    if profile:  # the compiled step's text names each op's stage; the executable is JAX's cached one
        print("RESULT " + json.dumps(result), flush=True)  # the timings stand if the profile dies or hangs
        start = time.perf_counter()
        signal.signal(signal.SIGALRM, _profile_timeout)
        signal.alarm(PROFILE_SECONDS)
        try:
            result["profile"] = step_profile.profile_compiled(step_fn, (box["state"], data, jnp.float32(1.0)),
                                                              step, config, PROFILE_STEPS)
        except Exception as error:  # the row's timings stand without it; the report says why it is missing
            result["profile_error"] = f"{type(error).__name__}: {error}"[:500]
        finally:
            signal.alarm(0)
        result["profile_s"] = time.perf_counter() - start
    return result


def _profile_timeout(signum, frame):
    raise TimeoutError(f"the profile took over {PROFILE_SECONDS} s")


def worker_train_torch(size: str, precision: str, batch: int, warm: bool = False) -> dict:
    import torch

    from torchref.model import SeizureDetector
    from torchref.precision import TRITON_F32
    from torchref.train.loop import configure_cuda
    from torchref.train.optim import make_optimizer
    from torchref.train.step import train_step

    config = _config(size, precision, batch, "torch")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    configure_cuda(config.train.tf32, device)  # as the trainer (torchref/train/loop.py)
    model = SeizureDetector(config.model, 0).to(device)
    optimizer, scheduler = make_optimizer(model, config.train, 1000)
    data = {k: torch.as_tensor(v).to(device) for k, v in _batch(config).items()}
    box = {}

    def step():
        box["loss"] = train_step(model, optimizer, scheduler, data, config.train)["loss"]  # .item(): synchronises

    first, times = _timed(step, 0 if warm else SIZES[size][5])
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None
    if warm:  # only the first step: its compiles are what --warm is for
        return {"first_step_s": first, "peak_memory_gb": peak, "backend": config.model.ssm.backend}
    return {"first_step_s": first, "step_s": statistics.median(times), "runs": times, "loss": box["loss"],
            "peak_memory_gb": peak, "backend": config.model.ssm.backend, "remat": config.model.remat,
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            # mamba_ssm's float32 dots: "ieee" with train.tf32 false (configure_cuda), else Triton's TF32
            "triton_f32": os.environ.get(TRITON_F32, "tf32")}


def worker_eigh(size: str, batch: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxbrr import graph
    from jaxbrr.precision import set_float32_precision

    config = _config(size, "float32", batch, "jax")
    set_float32_precision(config.train.tf32, jax.default_backend())  # as the step it is a share of
    g, st, n = config.model.graph, config.model.stability, config.model.n_chans
    steps = config.window_samples // config.model.tcn.stride_down
    rng = np.random.default_rng(0)
    weights = jnp.asarray(np.log1p(np.exp(rng.standard_normal((batch, n * (n - 1) // 2, steps)))), jnp.float32)
    cotangent = jnp.asarray(rng.standard_normal((batch, steps, n, g.k_eigenvectors)), jnp.float32)

    def pe_loss(w):
        A = graph.adjacency(w, n, g.top_k, g.edge_threshold)  # (B, L, N, N)
        pe = graph.laplacian_pe(A, g.k_eigenvectors, g.pe_sign, st.pe_gradient, st.eigh_tau,
                                g.semi_dynamic_interval, g.laplacian_epsilon, False, g.eigh_calls)
        return (pe * cotangent).sum()

    fn = jax.jit(jax.value_and_grad(pe_loss))
    first, times = _timed(lambda: jax.block_until_ready(fn(weights)), SIZES[size][5])
    return {"first_step_s": first, "pe_s": statistics.median(times), "runs": times,
            "graphs": batch * steps // g.semi_dynamic_interval, "pe_gradient": st.pe_gradient}


def worker_scan(size: str, batch: int) -> dict:
    """The selective scan alone, forward + backward, at the shapes of a batch's node and edge
    streams (all layers and directions share them), float32: jaxbrr's Pallas kernels against XLA's
    chunked scan, full float32 precision. Says whether the kernels run near their byte count or
    are latency-bound (each program is serial over its chunks)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxbrr import ssm
    from jaxbrr.precision import set_float32_precision
    from jaxbrr.ssd_kernel import hbm_bytes, heads_per_program
    from jaxbrr.ssm import selective_scan

    config = _config(size, "float32", batch, "jax")
    set_float32_precision(False, jax.default_backend())
    m, chunk = config.model, config.model.ssm.chunk_size
    length = config.window_samples // m.tcn.stride_down
    rng = np.random.default_rng(0)
    out = {}
    for stream, sequences, mamba in (("node", batch * m.n_chans, m.node_mamba),
                                     ("edge", batch * m.n_edges, m.graph.edge_mamba)):
        heads = mamba.expand * mamba.d_model // mamba.headdim
        x = rng.standard_normal((sequences, length, heads, mamba.headdim))
        dt = np.logaddexp(rng.standard_normal((sequences, length, heads)) - 3, 0)
        A = -(1 + 7 * rng.random(heads))
        B, C = rng.standard_normal((2, sequences, length, 1, mamba.d_state))
        args = [jnp.asarray(t, jnp.float32) for t in (x, dt, A, B, C)]
        row = {"sequences": sequences, "logical_gb": sum(hbm_bytes(
            (sequences, -(-length // chunk) * chunk, heads, mamba.headdim), 1, mamba.d_state, chunk).values()) / 1e9}
        variants = {"pallas": functools.partial(selective_scan, scan="pallas", chunk_size=chunk),
                    "chunked": functools.partial(selective_scan, scan="chunked", chunk_size=chunk)}
        r = heads_per_program(sequences, heads, 1)
        if r > 1:  # and the backward with one head per program
            variants["pallas_one_head"] = lambda *a: ssm.ssd_pallas(*a, chunk_size=chunk, heads_per_block=1)
        if heads % (2 * r) == 0:  # and with twice the heads: half the dB, dC bytes, more spills, fewer programs
            variants["pallas_double_heads"] = lambda *a, r=r: ssm.ssd_pallas(*a, chunk_size=chunk, heads_per_block=2 * r)
        for name, scan in variants.items():
            def loss(*a, scan=scan):
                return jnp.sum(scan(*a) ** 2)
            fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4)))
            first, times = _timed(lambda fn=fn, args=args: jax.block_until_ready(fn(*args)), SIZES[size][5])
            row[f"{name}_ms"], row[f"{name}_first_s"] = statistics.median(times) * 1e3, first
        out[stream] = row
    return {"streams": out, "batch": batch}


def worker_inference(size: str, precision: str, batch: int) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxbrr.model import SeizureDetector
    from jaxbrr.precision import set_float32_precision
    from jaxbrr.predict import probabilities

    config = _config(size, precision, batch, "jax")
    set_float32_precision(config.train.tf32, jax.default_backend())  # as jaxbrr.predict runs
    # predict's own program (jaxbrr.predict.make_predict) on the model split once, the batch on the
    # device: the forward's time, without the host's copies in and out (~75 MB in per batch of 64)
    graphdef, state = nnx.split(SeizureDetector(config.model, rngs=nnx.Rngs(0)))
    x = jnp.asarray(_batch(config)["x"])
    first, times = _timed(lambda: jax.block_until_ready(probabilities(graphdef, state, x)), SIZES[size][5])
    seconds = statistics.median(times)
    return {"first_step_s": first, "batch_s": seconds, "windows_per_s": batch / seconds,
            "eeg_hours_per_minute": batch / seconds * STRIDE_SECONDS * 60 / 3600, "peak_memory_gb": _jax_peak_gb()}


def run_worker(row: dict, size: str) -> dict:
    kind = row["kind"]
    if kind == "peak":
        return worker_peak(size)
    if kind == "train" and row["framework"] == "jax":
        return worker_train_jax(size, row["precision"], row["batch"], row.get("chunk_size"), row.get("profile", False),
                                row.get("scan"))
    if kind == "train":
        return worker_train_torch(size, row["precision"], row["batch"], row.get("warm", False))
    if kind == "eigh":
        return worker_eigh(size, row["batch"])
    if kind == "scan":
        return worker_scan(size, row["batch"])
    return worker_inference(size, row["precision"], row["batch"])


# -- the parent --------------------------------------------------------------------------------


def _device_memory_gb() -> float | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_properties(0).total_memory / 1e9 if torch.cuda.is_available() else None


def largest_batch(rows: list[dict], memory_gb: float | None, size: str) -> int | None:
    """From the jax bfloat16 row at the large batch: peak memory linear in B, 90 % of the device."""
    large = SIZES[size][2][1]
    base = next((r for r in rows if r.get("kind") == "train" and r.get("framework") == "jax" and
                 r.get("precision") == "bfloat16" and r.get("batch") == large and r.get("peak_memory_gb")), None)
    if base is None or memory_gb is None:
        return None
    per_window = base["peak_memory_gb"] / large
    # a multiple of 16, as the large batch is: the sequence counts (B·19, B·171) mamba_ssm's
    # Triton kernels specialise on then divide by 16 as the large batch's do, so the torchref row
    # at this batch reuses their compiled kernels (benchmarks/triton_aot.py builds those)
    return max(large, int(0.85 * memory_gb / per_window) // 16 * 16)


def largest_done(rows: list[dict], size: str) -> int | None:
    """The batch jaxbrr's largest-batch row ran at (after a halving for memory), or the large
    batch where that is the largest (the row then skipped, measured above); None otherwise."""
    row = next((r for r in rows if r.get("largest") and r.get("framework") == "jax"), None)
    if row is None or not isinstance(row.get("batch"), int):
        return None
    return row["batch"] if "step_s" in row or row["batch"] == SIZES[size][2][1] else None


def derive(row: dict, rows: list[dict], size: str) -> None:
    """windows/s, utilisation and shares that need other rows (the peak, the B=8 step)."""
    peak = next((r["tflops"] for r in rows if r.get("kind") == "peak" and "tflops" in r), None)
    if row["kind"] == "train" and "step_s" in row:
        row["windows_per_s"] = row["batch"] / row["step_s"]
        if size == "full" and peak:
            per_second = TRAIN_FLOP_FACTOR * 1e9 * row["batch"] / row["step_s"] / (peak * 1e12)
            row["mfu"] = FORWARD_GFLOP_PER_WINDOW * per_second  # the count: the target's
            row["mfu_model"] = MODEL_FORWARD_GFLOP_PER_WINDOW * per_second
    if row["kind"] == "eigh" and "pe_s" in row:
        for precision in ("float32", "bfloat16"):  # the PE runs in float32 in both steps
            step = next((r for r in rows if r.get("kind") == "train" and r.get("framework") == "jax" and
                         r.get("precision") == precision and r.get("batch") == row["batch"] and "step_s" in r
                         and not r.get("variant")), None)
            if step:
                row["share_of_step" if precision == "float32" else "share_of_bf16_step"] = row["pe_s"] / step["step_s"]


def append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for all rows together")
    parser.add_argument("--out", type=Path, required=True, help="folder for bench.jsonl")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--only", default="", help="comma-separated row kinds to run (default: all)")
    parser.add_argument("--warm", action="store_true", help="only the torch train rows' first steps (Triton's cache)")
    parser.add_argument("--warm-log", type=Path, help="what --warm printed: its rows' times plan the torch rows'")
    parser.add_argument("--precompiled", action="store_true",
                        help="mamba_ssm's kernels come from make triton-aot's archive: plan torch rows without compiles")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(run_worker(json.loads(args.worker), args.size)), flush=True)
        return 0
    if args.warm:
        return warm(args.size, args.budget)

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench.jsonl"
    path.unlink(missing_ok=True)
    deadline = time.monotonic() + args.budget
    memory_gb = _device_memory_gb()
    scale = 1.0 if args.size == "full" else 0.25
    done: list[dict] = []
    warmed = (json_lines(args.warm_log.read_text(errors="replace"))
              if args.warm_log is not None and args.warm_log.exists() else [])
    kinds = set(filter(None, args.only.split(",")))
    for row in rows_for(args.size):
        if kinds and row["kind"] not in kinds:
            continue
        if row.get("batch") == "max":
            row["batch"] = (largest_batch(done, memory_gb, args.size) if row["framework"] == "jax"
                            else largest_done(done, args.size)) or "max"
        left = deadline - time.monotonic()
        record = dict(row)
        if row.get("batch") == "max" and row["framework"] == "torch":
            record["skipped"] = "jaxbrr's largest-batch row did not finish: no batch to pair torchref with"
        elif row.get("batch") == "max":
            record["skipped"] = "no bfloat16 row at the large batch to size it from (or no device memory figure)"
        elif row.get("scan") == "pallas" and not _cuda():
            record["skipped"] = "ssm.scan=pallas compiles Triton kernels: a GPU only (the tests interpret them on the CPU)"
        elif row.get("largest") and row["batch"] == SIZES[args.size][2][1]:
            record["skipped"] = "the largest batch that fits is the large batch, measured above"
        elif left < (needed := row_seconds(row, done, scale, warmed, args.precompiled)):
            record["skipped"] = f"budget: {max(left, 0):.0f} s left, the row needs ~{needed:.0f} s"
        else:
            record.update(_run(row, args.size, left))
            # jaxbrr's largest batch is an estimate: halved once if it does not fit. torchref is not
            # retried: out of memory at jaxbrr's largest batch is its result
            if "error" in record and row.get("kind") == "train" and "out of memory" in record["error"].lower() \
                    and row["batch"] not in SIZES[args.size][2] and row["framework"] == "jax":
                row = {**row, "batch": max(16, row["batch"] // 2 // 16 * 16)}
                record = {**row, **_run(row, args.size, deadline - time.monotonic()), "retried_after_oom": True}
            derive(record, done, args.size)
        done.append(record)
        append(path, record)
        print(json.dumps(record), flush=True)
    return 0


def row_seconds(row: dict, done: list[dict], scale: float, warmed: list[dict] = (),
                precompiled: bool = False) -> float:
    """What a row is expected to take: the longest finished row of its kind and framework in this
    run (with the compile caches seeded a row takes a fraction of a cold one), else the planning
    estimate (a torch train row's with mamba_ssm's kernels `precompiled`:
    TORCH_PRECOMPILED_SECONDS), or less where the warm-up (`warmed`: --warm's rows, run only
    without precompiled kernels) ran the row's first step in less: that step compiled its kernels
    (minutes, the GPU shared with the tests), which the row finds in Triton's cache, only timing
    their configurations again and running five more steps. A profiled row adds the profile's
    limit (PROFILE_SECONDS)."""
    profile = PROFILE_SECONDS * scale if row.get("profile") else 0.0  # the profile's limit, on top of the step's
    seen = [r["wall_s"] - r.get("profile_s", 0.0) for r in done if r.get("kind") == row["kind"]
            and r.get("framework") == row.get("framework") and "wall_s" in r and "error" not in r]
    if seen:
        return max(seen) + profile
    planned = ROW_SECONDS[row["kind"]]
    if precompiled and row["kind"] == "train" and row.get("framework") == "torch":
        planned = TORCH_PRECOMPILED_SECONDS
    same = ("kind", "framework", "precision", "batch", "chunk_size", "scan")
    warm = [w["wall_s"] for w in warmed if all(w.get(k) == row.get(k) for k in same) and "wall_s" in w
            and "error" not in w]
    return min([planned * scale, *warm]) + profile


def warm(size: str, budget: float) -> int:
    """The torch train rows' first steps, in the bench's order, while the budget lasts: each
    compiles (and autotunes) the mamba_ssm kernels its shapes and dtype need into Triton's cache."""
    deadline = time.monotonic() + budget
    for row in rows_for(size):
        if row["kind"] != "train" or row["framework"] != "torch" or row["batch"] == "max":
            continue  # the largest batch is known once jaxbrr's row ran; it reuses the large batch's kernels
        left = deadline - time.monotonic()
        if left < 10:
            break
        print(json.dumps({**row, "warm": True, **_run({**row, "warm": True}, size, left)}), flush=True)
    return 0


def _run(row: dict, size: str, timeout: float) -> dict:
    command = [sys.executable, __file__, "--size", size, "--worker", json.dumps(row), "--out", "."]
    # JAX may take 92 % of the device (its default is 75 %): the largest-batch row needs it
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "true", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.92"}
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=max(timeout, 1), env=env,
                              preexec_fn=functools.partial(die_with_parent, os.getpid()))
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        stdout, stderr, code = _text(expired.stdout), _text(expired.stderr), "timeout"
    # the last RESULT line: a row that printed its timings before its profile keeps them
    results = [line[7:] for line in stdout.splitlines() if line.startswith("RESULT ")]
    if not results or (code != 0 and not row.get("profile")):
        reason = f"timed out after {timeout:.0f} s (the budget's remainder)" if code == "timeout" else \
            f"exit {code}: {' | '.join((stderr or stdout).strip().splitlines()[-3:])}"
        return {"error": reason, "wall_s": time.perf_counter() - start}
    record = {**json.loads(results[-1]), "wall_s": time.perf_counter() - start}
    if code != 0:  # a profiled row's timings stand; the profile after them did not finish
        record["profile_error"] = record.get("profile_error") or f"the worker ended ({code}) after its timings"
    return record


def json_lines(text: str) -> list[dict]:
    """The JSON objects of a log, one per line (bench.jsonl, what --warm printed); another line,
    or one cut short (a process stopped mid-write), is passed over."""
    rows = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _text(output) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def die_with_parent(parent: int) -> None:
    """In a child before exec (a preexec_fn; the drivers here are single-threaded, where that is
    safe): SIGKILL when `parent` dies (Linux's PR_SET_PDEATHSIG), so a killed run leaves no child
    holding the GPU, and exit at once if it died before the request was made."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raise SystemExit(main())
