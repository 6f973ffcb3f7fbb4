"""How many bytes a jaxbrr train step moves, by model stage, from XLA's cost analysis of the
compiled program, and the time floors they set on a device of given bandwidth and peak.

    python benchmarks/roofline.py --config configs/tiny.yaml --batch 2
    python benchmarks/roofline.py --config configs/tusz.yaml --batch 8 --set model.precision=bfloat16 \\
        --bandwidth 4.8 --peak 777          # the full-size step against an H200's HBM and measured bf16 peak

Nothing runs: each program is lowered and compiled for the local backend, and XLA's
`cost_analysis()` reports the flops and the bytes its ops read and write ("bytes accessed", after
fusion: a fused elementwise chain counts once). Rows: each stage with parameters or an eigh
(forward + backward of sum(stage output²) with respect to its parameters and inputs, at the
shapes the stage sees in the model, dropout off), then the whole train step (forward, backward,
clip, AdamW, dropout on). The floors are bytes / bandwidth and flops / peak: a stage whose byte
floor is far above its flop floor is memory-bound, and no kernel schedule beats its byte floor
unless the program moves fewer bytes (fusing what XLA materialises, such as the SSD's
within-chunk weights, into one kernel that keeps them on chip).

The bytes are those of the backend it compiles for: on a CPU, XLA:CPU's fusion decisions, which
are not a GPU's (XLA:GPU fuses more, so moves fewer bytes). gpu_bench.py reads the same analysis
from the GPU-compiled step of its bfloat16 row, with the achieved bandwidth beside it.

With `--set model.ssm.scan=pallas` on a machine without a GPU the stages are measured with the XLA
scan, and the train step is projected: its XLA part compiled with the Pallas kernels stood in for,
plus the kernels' logical bytes counted from their blocks (jaxbrr/ssd_kernel.py hbm_bytes); the
skip-and-norm kernels (jaxbrr/norm_kernel.py) count as the XLA composition they replace.
benchmarks/gpu_aot.py counts the program a GPU compiles, kernels included, on this machine too.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
from pathlib import Path

from gpu_aot import GPUS
from gpu_bench import H200_BF16_PEAK_TFLOPS

# Stages measured on their own: the ones with parameters, and the eigh PE.
STAGES = ("tcn", "mamba", "electrodes", "node_mamba", "edge_weights", "pe", "gnn", "from_electrodes", "logits")


def cost(compiled) -> dict[str, float]:
    """{"bytes": bytes accessed, "flops": flops} of a compiled JAX executable (XLA's cost model)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older jaxlibs: one dict per module
        analysis = analysis[0]
    return {"bytes": float(analysis.get("bytes accessed", 0.0)), "flops": float(analysis.get("flops", 0.0))}


def stage_costs(config, batch: int, stages=STAGES) -> dict[str, dict[str, float]]:
    """stage -> cost() of its forward + backward (of sum(output²)) at the model's shapes."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxbrr.model import SeizureDetector

    model = SeizureDetector(config.model, rngs=nnx.Rngs(0))
    model.eval()  # dropout off: the stage alone, deterministic
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.ShapeDtypeStruct((batch, config.model.n_chans, config.window_samples), jnp.float32)
    shapes = jax.eval_shape(lambda p, r, x: nnx.merge(graphdef, p, r)(x)[1], params, rest, x)
    shapes["x"] = x
    out = {}
    for name in (s for s in stages if s in config.model.stage_inputs):
        inputs = [shapes[i] for i in config.model.stage_inputs[name]]

        def objective(p, r, *args, name=name):
            output = nnx.merge(graphdef, p, r).stages()[name](*args)
            return jnp.sum(jnp.square(output.astype(jnp.float32)))

        floating = [i + 2 for i, s in enumerate(inputs) if jnp.issubdtype(s.dtype, jnp.floating)]
        gradient = jax.jit(jax.grad(objective, argnums=(0, *floating)))
        out[name] = cost(gradient.lower(params, rest, *inputs).compile())
    return out


def train_step(config):
    """(step_fn, state): jaxbrr's jitted train step for `config` as the loops build it
    (jaxbrr/train/step.py, on one device), and the split (model, optimizer) state it takes."""
    from flax import nnx

    from jaxbrr.model import SeizureDetector
    from jaxbrr.train.optim import make_nnx_optimizer
    from jaxbrr.train.step import make_train_step

    model = SeizureDetector(config.model, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split((model, make_nnx_optimizer(model, config.train, 1000)))
    return make_train_step(graphdef, config.train), state


def step_cost(config, batch: int) -> dict[str, float]:
    """cost() of the whole train step as the loops run it (jaxbrr/train/step.py)."""
    import jax
    import jax.numpy as jnp

    step_fn, state = train_step(config)
    shape = (batch, config.model.n_chans, config.window_samples)
    data = {"x": jax.ShapeDtypeStruct(shape, jnp.float32), "y": jax.ShapeDtypeStruct(shape[::2], jnp.float32)}
    return cost(step_fn.lower(state, data, jnp.float32(1.0)).compile())


@contextlib.contextmanager
def pallas_stand_in(shapes: dict):
    """scan pallas without a GPU: the scan kernels (whose traffic XLA cannot see) replaced by a
    stand-in of next to no traffic (y = x + 0·dt; zero cotangents for dt, A, B, C), so that the step's
    cost analysis counts everything else; the kernels' own bytes are then added from
    ssd_kernel.hbm_bytes. Records each kernel shape it replaces into `shapes`: x shape -> hbm_bytes'
    other arguments. The skip-and-norm kernels (jaxbrr/norm_kernel.py) stand in as the XLA
    composition they replace, so XLA:CPU counts them as that composition's bytes."""
    import jax
    import jax.numpy as jnp
    from einops import rearrange

    from jaxbrr import norm_kernel, ssd_kernel
    from jaxbrr.mamba import skip_and_gated_norm

    @functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7, 8))
    def stand_in(xbc, dt, A, chunk, interpret, headdim, groups, state, heads_per_block=None):
        batch, length, heads = dt.shape
        shapes[(batch, length, heads, headdim)] = {
            "groups": groups, "state": state, "chunk": chunk, "itemsize": xbc.dtype.itemsize,
            "scan_itemsize": dt.dtype.itemsize, "heads_per_block": heads_per_block}
        x = rearrange(xbc[..., :heads * headdim], "b l (h p) -> b l h p", p=headdim)
        return x + 0 * dt[..., None].astype(x.dtype)

    def forward(xbc, dt, A, chunk, interpret, headdim, groups, state, heads_per_block):
        return stand_in(xbc, dt, A, chunk, interpret, headdim, groups, state, heads_per_block), (xbc, dt, A)

    def backward(chunk, interpret, headdim, groups, state, heads_per_block, residuals, dy):
        xbc, dt, A = residuals
        dx = rearrange(dy, "b l h p -> b l (h p)").astype(xbc.dtype)
        dxbc = jnp.pad(dx, ((0, 0), (0, 0), (0, xbc.shape[-1] - dx.shape[-1])))
        return dxbc, 0 * jnp.sum(dy, axis=-1).astype(dt.dtype), jnp.zeros_like(A)

    def norm_as_xla(*args, interpret=None, **kwargs):
        return skip_and_gated_norm(*args, **kwargs)

    stand_in.defvjp(forward, backward)
    saved = ssd_kernel.fused_scan, ssd_kernel.on_gpu, norm_kernel.gated_norm
    ssd_kernel.fused_scan, ssd_kernel.on_gpu, norm_kernel.gated_norm = stand_in, lambda: True, norm_as_xla
    try:
        yield
    finally:
        ssd_kernel.fused_scan, ssd_kernel.on_gpu, norm_kernel.gated_norm = saved


def pallas_rows(config, batch: int) -> dict[str, dict[str, float]]:
    """The train step with model.ssm.scan=pallas on a machine without a GPU: its XLA part (the
    kernels stood in for), the kernels' traffic (ssd_kernel.hbm_bytes, per call, times the calls a
    step makes: each BiMamba-2 layer runs both directions, forward and backward, and with
    model.remat the forward twice), and their sum, the projection."""
    from jaxbrr.ssd_kernel import hbm_bytes

    shapes: dict = {}
    with pallas_stand_in(shapes):
        rest = step_cost(config, batch)
    m = config.model
    layers = {batch * m.n_chans: m.node_mamba.n_layers, batch * m.n_edges: m.graph.edge_mamba.n_layers}
    forwards = 2 if m.remat else 1
    kernels = 0.0
    for x_shape, arguments in shapes.items():
        traffic = hbm_bytes(x_shape, **arguments)
        kernels += 2 * layers[x_shape[0]] * (forwards * traffic["forward"] + traffic["backward"])
    return {"train step, XLA part (scan kernels stood in for)": rest,
            f"scan kernels ({len(shapes)} shapes, hbm_bytes)": {"bytes": kernels, "flops": 0.0},
            "train step, projected": {"bytes": rest["bytes"] + kernels, "flops": rest["flops"]}}


def _on_gpu() -> bool:
    from jaxbrr.ssd_kernel import on_gpu  # Pallas, imported only for scan pallas

    return on_gpu()


def floors(row: dict[str, float], bandwidth_tbs: float, peak_tflops: float) -> dict[str, float]:
    """The row with its byte floor and flop floor in ms, and bytes per flop."""
    return {**row, "byte_floor_ms": row["bytes"] / (bandwidth_tbs * 1e12) * 1e3,
            "flop_floor_ms": row["flops"] / (peak_tflops * 1e12) * 1e3,
            "bytes_per_flop": row["bytes"] / row["flops"] if row["flops"] else float("inf")}


def table(rows: dict[str, dict[str, float]], bandwidth_tbs: float, peak_tflops: float) -> str:
    lines = [f"| program | GB moved | GFLOP | byte floor at {bandwidth_tbs:g} TB/s (ms) | "
             f"flop floor at {peak_tflops:g} TFLOP/s (ms) | bytes / flop |", "|---|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        r = floors(row, bandwidth_tbs, peak_tflops)
        lines.append(f"| {name} | {r['bytes'] / 1e9:.3g} | {r['flops'] / 1e9:.3g} | {r['byte_floor_ms']:.3g} | "
                     f"{r['flop_floor_ms']:.3g} | {r['bytes_per_flop']:.3g} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from common.config import load_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to measure alone ('' for none)")
    parser.add_argument("--bandwidth", type=float, default=GPUS["h200"]["bandwidth_tbs"],
                        help="device memory bandwidth, TB/s (default: H200's 4.8)")
    parser.add_argument("--peak", type=float, default=H200_BF16_PEAK_TFLOPS,
                        help="device matmul peak, TFLOP/s (default: the H200's bf16 matmul measured by gpu_bench.py)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    config = load_config(args.config, [*args.set, f"train.batch_size={args.batch}"])
    project = config.model.ssm.scan == "pallas" and not _on_gpu()
    stages = load_config(args.config, [*args.set, f"train.batch_size={args.batch}", "model.ssm.scan=chunked"]) \
        if project else config  # the stages alone with the XLA scan: the kernels cannot run here
    rows = stage_costs(stages, args.batch, [s for s in args.stages.split(",") if s])
    if project:
        rows.update(pallas_rows(config, args.batch))
    else:
        rows["train step"] = step_cost(config, args.batch)
    print(table(rows, args.bandwidth, args.peak))
    if args.json:
        args.json.write_text(json.dumps({k: floors(v, args.bandwidth, args.peak) for k, v in rows.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
