"""Forward and forward+backward time and peak memory of the model, per framework, size and batch.

    python benchmarks/model_step.py                       # torchref, tiny + full, B=1 and B=4
    python benchmarks/model_step.py --sizes full --batches 4 --repeats 2
    python benchmarks/model_step.py --gnn                 # dense GNN vs a per-graph PyG loop
    python benchmarks/model_step.py --scan                # the selective scan alone over L
    python benchmarks/model_step.py --tcn-peak            # TCN forward against the matmul peak

Every (framework, size, batch) runs in a fresh subprocess so that peak RSS (getrusage ru_maxrss,
which includes the interpreter and imports) belongs to that configuration alone. Time is the
median of --repeats timed runs after one warm-up. fwd: eval mode, no gradient. fwd+bwd: train
mode (dropout on), binary cross-entropy on random labels, gradients w.r.t. every parameter.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"tiny": "configs/tiny.yaml", "full": "configs/tusz.yaml"}


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _timed(fn, repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up (and compile, for jit)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), runs


def torch_worker(size: str, batch: int, mode: str, repeats: int, overrides: list[str]) -> dict:
    import torch
    import torch.nn.functional as F

    from common.config import load_config
    from torchref.model import SeizureDetector

    torch.set_num_threads(os.cpu_count() or 1)
    config = load_config(ROOT / SIZES[size], overrides)
    model = SeizureDetector(config.model, 0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, config.model.n_chans, config.window_samples, generator=g)
    y = (torch.rand(batch, config.window_samples, generator=g) > 0.7).float()

    def forward():
        model.eval()
        with torch.no_grad():
            model(x)

    def train_step():
        model.train()
        model.zero_grad(set_to_none=True)
        logits, _ = model(x)
        F.binary_cross_entropy_with_logits(logits, y).backward()

    median, runs = _timed(forward if mode == "fwd" else train_step, repeats)
    return {"seconds": median, "runs": runs, "peak_rss_gb": _peak_rss_gb()}


def jax_worker(size: str, batch: int, mode: str, repeats: int, overrides: list[str]) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from common.config import load_config
    from jaxbrr.model import SeizureDetector

    config = load_config(ROOT / SIZES[size], overrides)
    model = SeizureDetector(config.model, rngs=nnx.Rngs(0))
    key = jax.random.key(0)
    x = jax.random.normal(key, (batch, config.model.n_chans, config.window_samples))
    y = (jax.random.uniform(jax.random.fold_in(key, 1), (batch, config.window_samples)) > 0.7).astype(jnp.float32)

    @nnx.jit
    def forward(m, x):
        return m(x)[0]

    def loss_fn(m, x, y):
        logits = m(x)[0]
        return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits)  # BCE with logits

    @nnx.jit
    def train_step(m, x, y):
        return nnx.value_and_grad(loss_fn)(m, x, y)

    if mode == "fwd":
        model.eval()
        run = lambda: jax.block_until_ready(forward(model, x))  # noqa: E731
    else:
        model.train()
        run = lambda: jax.block_until_ready(train_step(model, x, y))  # noqa: E731
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    median, runs = _timed(run, repeats)
    return {"seconds": median, "runs": runs, "first_call_s": first, "peak_rss_gb": _peak_rss_gb()}


def gnn_worker(batch: int, repeats: int) -> dict:
    """The GNN stage alone at full size: dense batched SSGConv vs the original's approach, a
    Python loop over all B·L graphs building PyG edge lists for torch_geometric's SSGConv."""
    import torch
    import torch.nn.functional as F
    from torch_geometric.nn import SSGConv as PygSSGConv

    from common.config import load_config
    from torchref import graph
    from torchref.gnn import GraphMixer

    config = load_config(ROOT / SIZES["full"]).model
    g_cfg, n, d, steps = config.graph, config.n_chans, config.electrode_dim, 960
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, steps, n, d, generator=gen)
    weights = F.softplus(torch.randn(batch, n * (n - 1) // 2, steps, generator=gen))
    A = graph.adjacency(weights, n, g_cfg.top_k, g_cfg.edge_threshold)
    pe = torch.randn(batch, steps, n, g_cfg.k_eigenvectors, generator=gen)
    mixer = GraphMixer(g_cfg, d, g_cfg.k_eigenvectors, config.layernorm_eps, gen).eval()
    pyg = [PygSSGConv(conv.lin.in_features, conv.lin.out_features, g_cfg.alpha, g_cfg.hops)
           for conv in mixer.layers]
    for ours, theirs in zip(mixer.layers, pyg, strict=True):
        theirs.lin.weight.data.copy_(ours.lin.weight)
        theirs.lin.bias.data.copy_(ours.lin.bias)

    def dense():
        with torch.no_grad():
            return mixer(x, A, pe)

    def per_graph_loop():
        # The original's vectorised path: a Python loop over all B·L graphs (one nonzero() each)
        # builds one big edge list, then PyG's SSGConv runs once on the batched graph.
        with torch.no_grad():
            h = torch.cat([x, pe], dim=-1).reshape(batch * steps * n, -1)
            adj = A.reshape(batch * steps, n, n)
            indices, weights_ = [], []
            for i in range(batch * steps):
                index = adj[i].nonzero().t()
                weights_.append(adj[i][index[0], index[1]])
                indices.append(index + i * n)
            index, w = torch.cat(indices, dim=1), torch.cat(weights_)
            z = h
            for k, (conv, norm) in enumerate(zip(pyg, mixer.norms, strict=True)):
                y = conv(z, index, w)
                z = norm(y + z) if k > 0 else norm(y)
            return z.reshape(batch, steps, n, d)

    agreement = float((dense() - per_graph_loop()).abs().max())
    dense_s, _ = _timed(dense, repeats)
    loop_s, _ = _timed(per_graph_loop, repeats)
    return {"dense_s": dense_s, "loop_s": loop_s, "max_abs_diff": agreement}


def _run_worker(args: list[str], overrides: list[str] = ()) -> dict:
    sets = [item for o in overrides for item in ("--set", o)]
    out = subprocess.run([sys.executable, __file__, *sets, "--worker", *args], capture_output=True,
                         text=True, cwd=ROOT)
    if out.returncode != 0:
        if out.returncode < 0:  # killed by a signal: on Linux SIGKILL here is the OOM killer
            return {"error": f"killed by signal {-out.returncode} (out of memory?)"}
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores, Python {platform.python_version()}"


def scan_worker(impl: str, length: int, repeats: int) -> dict:
    """The selective scan alone, forward+backward, at node-stream sizes (B·N = 19 sequences,
    H=16, P=8, N=16): time should grow linearly in L for the chunked and sequential scans."""
    import numpy as np

    rng = np.random.default_rng(0)
    b, h, p, n = 19, 16, 8, 16
    x = rng.standard_normal((b, length, h, p)).astype(np.float32)
    dt = (0.01 + 0.1 * rng.random((b, length, h))).astype(np.float32)
    A = -np.exp(rng.standard_normal(h)).astype(np.float32)
    B = rng.standard_normal((b, length, 1, n)).astype(np.float32)
    C = rng.standard_normal((b, length, 1, n)).astype(np.float32)
    name, _, chunk = impl.partition("-")
    if name == "torch":
        import torch

        from torchref.ssm import ssd_chunked

        torch.set_num_threads(os.cpu_count() or 1)
        tx = torch.tensor(x, requires_grad=True)
        args = [torch.tensor(a) for a in (dt, A, B, C)]

        def run():
            tx.grad = None
            ssd_chunked(tx, *args, int(chunk)).square().sum().backward()
    else:
        import jax

        from jaxbrr.ssm import selective_scan

        scan = "sequential" if name == "sequential" else "chunked"
        size = int(chunk) if chunk else 16
        grad = jax.jit(jax.grad(lambda x, *a: (selective_scan(x, *a, scan, size) ** 2).sum()))

        def run():
            jax.block_until_ready(grad(x, dt, A, B, C))
    median, runs = _timed(run, repeats)
    return {"seconds": median, "runs": runs}


def tcn_peak_worker(repeats: int) -> dict:
    """Full-size TCN forward (B=1) in JAX against this CPU's float32 matmul peak (jit, 4096²)."""
    import jax
    from flax import nnx

    from common.config import load_config
    from jaxbrr.tcn import TCNEncoder

    config = load_config(ROOT / SIZES["full"])
    cfg, t = config.model.tcn, config.window_samples
    encoder = TCNEncoder(config.model.n_chans, cfg, rngs=nnx.Rngs(0))
    encoder.eval()
    x = jax.random.normal(jax.random.key(0), (1, t, config.model.n_chans))
    forward = nnx.jit(lambda m, x: m(x))
    tcn_s, _ = _timed(lambda: jax.block_until_ready(forward(encoder, x)), repeats)
    widths = (config.model.n_chans, *cfg.channels)
    flops = sum(2 * a * b * cfg.kernel_size * t for a, b in zip(widths, widths[1:], strict=False))
    flops += 2 * 2 * widths[-1] * cfg.out_channels * t + 2 * cfg.out_channels**2 * t  # proj, channel_proj, downsample
    a = jax.random.normal(jax.random.key(1), (4096, 4096))
    matmul = jax.jit(lambda a: a @ a)
    mm_s, _ = _timed(lambda: jax.block_until_ready(matmul(a)), repeats)
    return {"tcn_gflops": flops / tcn_s / 1e9, "matmul_gflops": 2 * 4096**3 / mm_s / 1e9,
            "tcn_s": tcn_s, "tcn_gflop": flops / 1e9}


def _model_rows(args) -> list[str]:
    frameworks = args.frameworks.split(",")
    lines = ["| size | B | mode | " + " | ".join(f"{f} s | {f} peak RSS GB" for f in frameworks)
             + (" | jax / torch |" if len(frameworks) == 2 else " |"),
             "|---|---:|---|" + "---:|---:|" * len(frameworks) + ("---:|" if len(frameworks) == 2 else "")]
    for size in args.sizes.split(","):
        for batch in [int(b) for b in args.batches.split(",")]:
            for mode in ("fwd", "train"):
                results = {}
                for framework in frameworks:
                    results[framework] = r = _run_worker(
                        [framework, size, str(batch), mode, "--repeats", str(args.repeats)], args.set)
                    print(f"{framework} {size} B={batch} {mode}: {r}", file=sys.stderr)
                cells = []
                for framework in frameworks:
                    r = results[framework]
                    cells += ([f"error: {r['error']}", ""] if "error" in r
                              else [f"{r['seconds']:.3f}", f"{r['peak_rss_gb']:.2f}"])
                if len(frameworks) == 2 and all("seconds" in results[f] for f in frameworks):
                    cells.append(f"{results['jax']['seconds'] / results['torch']['seconds']:.2f}")
                elif len(frameworks) == 2:
                    cells.append("")
                label = "fwd" if mode == "fwd" else "fwd+bwd"
                lines.append(f"| {size} | {batch} | {label} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,full")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--frameworks", default="torch,jax")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gnn", action="store_true", help="benchmark the GNN stage against a PyG loop")
    parser.add_argument("--scan", action="store_true", help="the selective scan alone over L")
    parser.add_argument("--lengths", default="960,1920,3840,7680")
    parser.add_argument("--tcn-peak", action="store_true", help="TCN forward vs the matmul peak")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run, e.g. --set model.remat=true")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        kind, *rest = args.worker
        if kind in ("torch", "jax"):
            size, batch, mode = rest
            worker = torch_worker if kind == "torch" else jax_worker
            result = worker(size, int(batch), mode, args.repeats, args.set)
        elif kind == "scan":
            result = scan_worker(rest[0], int(rest[1]), args.repeats)
        elif kind == "tcn":
            result = tcn_peak_worker(args.repeats)
        else:
            result = gnn_worker(int(rest[0]), args.repeats)
        print(json.dumps(result))
        return 0

    lines = []
    if args.gnn:
        lines += ["| GNN stage, full size (L=960, 19 nodes, 2 SSGConv + LN), no grad | dense batched | per-graph edge-list loop + PyG SSGConv | loop / dense | max abs diff |",
                  "|---|---:|---:|---:|---:|"]
        for batch in [int(b) for b in args.batches.split(",")]:
            r = _run_worker(["gnn", str(batch), "--repeats", str(args.repeats)])
            if "error" in r:
                lines.append(f"| B={batch} | error: {r['error']} | | | |")
                continue
            lines.append(f"| B={batch} | {r['dense_s'] * 1e3:.1f} ms | {r['loop_s'] * 1e3:.0f} ms | "
                         f"{r['loop_s'] / r['dense_s']:.1f}x | {r['max_abs_diff']:.1e} |")
    elif args.scan:
        impls = ["jax-16", "jax-32", "jax-64", "sequential", "torch-16"]
        lengths = [int(n) for n in args.lengths.split(",")]
        lines += ["| scan fwd+bwd (19 seq, H16 P8 N16) | " + " | ".join(f"L={n}" for n in lengths) + " |",
                  "|---|" + "---:|" * len(lengths)]
        for impl in impls:
            cells = []
            for n in lengths:
                r = _run_worker(["scan", impl, str(n), "--repeats", str(args.repeats)])
                cells.append(r.get("error") or f"{r['seconds'] * 1e3:.0f} ms")
            label = {"sequential": "jax lax.scan (sequential)"}.get(impl, impl.replace("-", " chunked ", 1))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    elif args.tcn_peak:
        r = _run_worker(["tcn", "--repeats", str(args.repeats)])
        lines += ["| TCN forward, full size, B=1 (jax) | GFLOP | time | GFLOP/s | matmul peak GFLOP/s | % of peak |",
                  "|---|---:|---:|---:|---:|---:|",
                  f"| jit, float32 | {r['tcn_gflop']:.1f} | {r['tcn_s']:.3f} s | {r['tcn_gflops']:.0f} | "
                  f"{r['matmul_gflops']:.0f} | {100 * r['tcn_gflops'] / r['matmul_gflops']:.0f} % |"]
    else:
        lines += _model_rows(args)
    table = "\n".join(lines)
    footer = f"\nmachine: {machine()}; command: `python benchmarks/model_step.py {' '.join(sys.argv[1:])}`"
    print(table + footer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
