"""Forward and forward+backward time and peak memory of the model, per framework, size and batch.

    python benchmarks/model_step.py                       # torchref, tiny + full, B=1 and B=4
    python benchmarks/model_step.py --sizes full --batches 4 --repeats 2
    python benchmarks/model_step.py --gnn                 # dense GNN vs a per-graph PyG loop
    python benchmarks/model_step.py --write BENCHMARKS.md # also write the tables there

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

    from jaxbrr.config import load_config
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


def gnn_worker(batch: int, repeats: int) -> dict:
    """The GNN stage alone at full size: dense batched SSGConv vs the original's approach, a
    Python loop over all B·L graphs building PyG edge lists for torch_geometric's SSGConv."""
    import torch
    import torch.nn.functional as F
    from torch_geometric.nn import SSGConv as PygSSGConv

    from jaxbrr.config import load_config
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,full")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--frameworks", default="torch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gnn", action="store_true", help="benchmark the GNN stage against a PyG loop")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run, e.g. --set model.remat=true")
    parser.add_argument("--write", metavar="BENCHMARKS.md")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        kind, *rest = args.worker
        if kind == "torch":
            size, batch, mode = rest
            result = torch_worker(size, int(batch), mode, args.repeats, args.set)
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
    else:
        lines += ["| framework | size | B | fwd s | fwd peak RSS GB | fwd+bwd s | fwd+bwd peak RSS GB |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for framework in args.frameworks.split(","):
            for size in args.sizes.split(","):
                for batch in [int(b) for b in args.batches.split(",")]:
                    cells = []
                    for mode in ("fwd", "train"):
                        r = _run_worker([framework, size, str(batch), mode, "--repeats", str(args.repeats)],
                                        args.set)
                        cells += ([f"error: {r['error']}", ""] if "error" in r
                                  else [f"{r['seconds']:.3f}", f"{r['peak_rss_gb']:.2f}"])
                        print(f"{framework} {size} B={batch} {mode}: {r}", file=sys.stderr)
                    lines.append(f"| {framework} | {size} | {batch} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    footer = f"\nmachine: {machine()}; command: `python benchmarks/model_step.py {' '.join(sys.argv[1:])}`"
    print(table + footer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
