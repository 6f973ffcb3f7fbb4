"""What XLA's GPU compiler makes of jaxbrr's train step, on a machine without a GPU.

    make gpu-aot        # once: the jax CUDA plugin and NVIDIA's libraries into .gpu-aot/ (~5 GB)
    python benchmarks/gpu_aot.py --config configs/tusz.yaml --batch 8 --set model.precision=bfloat16
    python benchmarks/gpu_aot.py --config configs/tusz.yaml --batch 8 --set model.precision=bfloat16 \\
        --set model.ssm.scan=pallas         # with jaxbrr's fused scan kernels (Triton)

XLA compiles for a GPU it is only told about (deviceless ahead-of-time compilation: a
`jax.experimental.topologies` description built from a target config, through the jax CUDA
plugin; jax-ml/jax#23971, openxla/xla#16913). Nothing runs. The compiled program is the one the
GPU would run, short of autotuning (the GEMM tilings are XLA's defaults, not the ones a GPU would
time and pick), so its fusion decisions, its buffers and the Pallas kernels' machine code are the
GPU's. From it this reports:

- bytes moved per model stage, forward and backward, from the optimized HLO: each top-level op's
  operands and results, once (a fusion reads each operand once, as XLA's own cost analysis
  counts it; `hlo_traffic` reproduces XLA:CPU's `cost_analysis()` on CPU-compiled programs, a
  test). A deviceless executable has no cost analysis of its own. The Pallas kernels count their
  operands and results once (per-head re-reads of B and C are in ssd_kernel.hbm_bytes instead);
- the byte floor at the GPU's bandwidth, and the model FLOP utilisation a step at that floor
  would reach: the ceiling no schedule of this program passes;
- the device memory XLA's buffer assignment plans (arguments + outputs + temporaries − aliased):
  the peak a GPU run reports, less the runtime's own allocations;
- for each Triton kernel (the Pallas scan's), the registers per thread and spills that ptxas
  reports when XLA compiles its PTX for the target's architecture (scan_kernels).

The same compile on the GPU machine is what gpu_bench.py times; this tells, between GPU runs,
whether a change moves fewer bytes as the GPU's compiler fuses it (XLA:CPU fuses differently:
roofline.py's counts are the CPU's).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = ROOT / ".gpu-aot"

# The targets, as XLA's GpuTargetConfig text. Per-SM limits are compute capability 9.0's (CUDA C++
# Programming Guide, "Technical Specifications per Compute Capability": 64 K registers, 228 KiB
# shared memory per SM, 227 KiB per block opt-in, 2048 threads per SM); SM counts, clocks, memory
# sizes and bandwidths are NVIDIA's datasheets for the SXM parts (H200: 141 GB HBM3e at 4.8 TB/s,
# the GPU check's machine reported 143,771 MiB and 1980 MHz; H100: 80 GB HBM3 at 3.35 TB/s).
_SM90 = """
  threads_per_block_limit: 1024  threads_per_warp: 32  threads_per_core_limit: 2048
  shared_memory_per_block: 49152  shared_memory_per_core: 233472  shared_memory_per_block_optin: 232448
  registers_per_core_limit: 65536  registers_per_block_limit: 65536  fpus_per_core: 128
  block_dim_limit_x: 2147483647  block_dim_limit_y: 65535  block_dim_limit_z: 65535
  l2_cache_size: 52428800  clock_rate_ghz: 1.98  core_count: 132
  cuda_compute_capability { major: 9 minor: 0 }
"""
GPUS = {
    "h200": {"bandwidth_tbs": 4.8, "memory": 143_771 * 2**20, "name": "NVIDIA H200"},
    "h100": {"bandwidth_tbs": 3.35, "memory": 80 * 10**9, "name": "NVIDIA H100 80GB HBM3"},
}


def target_config(gpu: str) -> str:
    """XLA's GpuTargetConfig (text format) for `gpu`. cuDNN 9.8 and CUDA 12.8 are the libraries it
    is told the GPU has (the plugin wants cuDNN 9.8 or newer); the TCN's convolutions become cuDNN
    calls, whose bytes count as their operands and results."""
    spec = GPUS[gpu]
    return (f"gpu_device_info {{{_SM90}  memory_bandwidth: {int(spec['bandwidth_tbs'] * 1e12)}\n"
            f"  device_memory_size: {spec['memory']}\n}}\n"
            f'platform_name: "CUDA"\ndnn_version_info {{ major: 9 minor: 8 }}\n'
            f'runtime_version {{ major: 12 minor: 8 }}\ndevice_description_str: "{spec["name"]}"\n')


# ---------------------------------------------------------------------------------------------
# Bytes from optimized HLO text

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
                "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}
_ARRAY = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([0-9,]*)\]")
_HEADER = re.compile(r"^(ENTRY )?%?([\w.\-]+) .*\{$")
_INSTRUCTION = re.compile(r"^(?:ROOT )?%?([\w.\-]+) = (.*?) ([a-z][\w\-]*)\((.*)$")
_NO_TRAFFIC = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "after-all", "partition-id"}
_STAGE = re.compile(r"(transpose\()?jvp\((\w+)\)")


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape string: an array `f32[2,3]{1,0}` or a tuple of them."""
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        count = 1
        for d in filter(None, dims.split(",")):
            count *= int(d)
        total += count * _DTYPE_BYTES[dtype]
    return total


def _computations(text: str) -> tuple[dict[str, list[str]], str]:
    computations, entry, current = {}, None, None
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header and not line.startswith(" "):
            current = header.group(2)
            computations[current] = []
            entry = current if header.group(1) else entry
        elif current and line.startswith("  "):
            computations[current].append(line.strip())
    if entry is None:
        raise ValueError("no ENTRY computation in this HLO text")
    return computations, entry


def hlo_traffic(text: str, slice_reads: bool = True) -> list[dict]:
    """One row per executed top-level op of an optimized HLO module: {"bytes": its results + its
    operands (times the trip count of the while loops around it), "op", "name", "stage",
    "direction"}. With slice_reads, a fusion operand that the fused computation only slices
    (through bitcasts) counts as the slices' bytes: a fusion that takes z out of the in_proj output
    reads z's columns, not all of them (XLA's CPU cost analysis counts the whole operand when a
    bitcast comes first; without slice_reads this counts every operand whole). Stage and direction come from the op's `jax.named_scope` in its
    metadata (`jvp(tcn)` forward, `transpose(jvp(tcn))` backward), or, for a fusion whose own
    metadata is empty, from the ops inside it."""
    computations, entry = _computations(text)
    parsed = {name: [m.groups() for m in map(_INSTRUCTION.match, lines) if m]
              for name, lines in computations.items()}
    shapes = {name: shape for body in parsed.values() for name, shape, _, _ in body}
    rows = []

    def operands_of(rest: str) -> list[str]:
        return re.findall(r"%([\w.\-]+)", rest.split(")", 1)[0])

    def operand_reads(op: str, rest: str, operands: list[str]) -> int:
        called = re.search(r"calls=%?([\w.\-]+)", rest) if op == "fusion" and slice_reads else None
        body = parsed.get(called.group(1), []) if called else []
        params = {int(r.split(")", 1)[0]): n for n, _, o, r in body if o == "parameter"}
        def users(value: str) -> list[tuple[str, str]]:  # (op, shape) of its uses, through bitcasts
            found = []
            for n, shape, o, r in body:
                if value in operands_of(r):
                    found += users(n) if o == "bitcast" else [(o, shape)]
            return found

        total = 0
        for index, operand in enumerate(operands):
            uses = users(params[index]) if index in params else []
            if uses and all(o in ("slice", "dynamic-slice") for o, _ in uses):
                total += min(sum(shape_bytes(shape) for _, shape in uses), shape_bytes(shapes.get(operand, "")))
            else:
                total += shape_bytes(shapes.get(operand, ""))
        return total

    def stage_of(rest: str) -> tuple[str, str]:
        found = _STAGE.search(rest)
        called = re.search(r"calls=%?([\w.\-]+)", rest)
        if not found and called:  # a fusion without metadata of its own: its ops' majority
            inner = collections.Counter(m.groups() for *_, r in parsed.get(called.group(1), [])
                                        if (m := _STAGE.search(r)))
            if inner:
                transpose, stage = inner.most_common(1)[0][0]
                return stage, "backward" if transpose else "forward"
        if not found:
            return "(unnamed)", "-"
        return found.group(2), "backward" if found.group(1) else "forward"

    def walk(computation: str, times: int) -> None:
        for name, shape, op, rest in parsed[computation]:
            if op == "while":
                trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', rest)
                walk(re.search(r"body=%?([\w.\-]+)", rest).group(1), times * (int(trips.group(1)) if trips else 1))
            elif op in ("call", "conditional", "async-start"):
                for called in re.findall(r"(?:to_apply|calls|branch_computations)=\{?%?([\w.\-]+)", rest):
                    if called in parsed:
                        walk(called, times)
            elif op not in _NO_TRAFFIC:
                moved = shape_bytes(shape) + operand_reads(op, rest, operands_of(rest))
                stage, direction = stage_of(rest)
                op_name = re.search(r'op_name="([^"]*)"', rest)
                rows.append({"bytes": moved * times, "trips": times, "op": op, "name": name, "stage": stage, "direction": direction,
                             "pallas": op == "custom-call" and "gpu.triton" in rest, "shape": shape,
                             "op_name": op_name.group(1) if op_name else ""})

    walk(entry, 1)
    return rows


def by_stage(rows: list[dict]) -> dict[str, dict[str, float]]:
    """stage -> {"forward": bytes, "backward": bytes, "-": bytes}, the Pallas kernels apart."""
    out: dict[str, dict[str, float]] = collections.defaultdict(lambda: {"forward": 0.0, "backward": 0.0, "-": 0.0})
    for row in rows:
        out[row["stage"] + (" (Pallas kernels)" if row["pallas"] else "")][row["direction"]] += row["bytes"]
    return dict(out)


# ---------------------------------------------------------------------------------------------
# The deviceless compile


def use_plugin(plugin_dir: Path) -> None:
    """Make the jax CUDA plugin in `plugin_dir` loadable without a GPU. Must run before jax is
    imported: the plugin registers itself at jax's backend initialisation."""
    if "jax" in sys.modules:
        raise RuntimeError("gpu_aot.use_plugin must run before jax is imported")
    sys.path.insert(0, str(plugin_dir))
    # find_spec of a submodule imports its parent, and raises where there is none (no jax_plugins at all)
    if importlib.util.find_spec("jax_plugins") is None or importlib.util.find_spec("jax_plugins.xla_cuda12") is None:
        raise SystemExit(f"no jax CUDA plugin in {plugin_dir}: run `make gpu-aot` (installs jax-cuda12-plugin "
                         "and NVIDIA's CUDA libraries there, about 5 GB; no GPU needed)")
    os.environ["JAX_PLATFORMS"] = "cpu"  # the CPU runs; the CUDA plugin only compiles
    os.environ["JAX_SKIP_CUDA_CONSTRAINTS_CHECK"] = "1"  # its check calls cuInit, which needs a GPU


def cuda_sharding(gpu: str):
    """A single-device sharding on the described GPU: arguments placed with it compile for it."""
    import jax
    from jax.experimental import topologies

    topology = topologies.get_topology_desc(platform="cuda", target_config=target_config(gpu), topology="1x1x1")
    mesh = topologies.make_mesh(topology, (1,), ("device",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


@contextlib.contextmanager
def compiling_for_gpu():
    """scan pallas refuses a CPU default backend (ssd_kernel.require_gpu); here the CPU is the
    default backend, but the program compiles for the GPU, whose compute capability the Pallas
    kernels' lowering takes from an abstract device (ssd_kernel.lowering_without_a_gpu)."""
    from jaxbrr import ssd_kernel

    saved = ssd_kernel.on_gpu
    ssd_kernel.on_gpu = lambda: True
    try:
        with ssd_kernel.lowering_without_a_gpu():
            yield
    finally:
        ssd_kernel.on_gpu = saved


_HLO_DTYPES = {"bfloat16": "bf16", "float16": "f16", "float32": "f32", "float64": "f64", "int32": "s32", "bool": "pred"}


def _shapes_key(text: str) -> tuple[str, ...]:
    """("bf16[152,960,16,8]", "f32[152,960,16]", ...) from an HLO result shape, layouts dropped."""
    return tuple(f"{dtype}[{dims}]" for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", text))


def pallas_block_bytes(jaxpr) -> dict[tuple, int]:
    """(kernel name, result shapes) -> the bytes a Pallas kernel's blocks read and write, each
    distinct block of each operand and result once over the whole grid (index maps evaluated at
    every grid point). A kernel handed a wide array reads only the columns its blocks cover (the
    scan kernels read x, B, C from xBC; the norm kernels x from xBC and z from the in_proj output),
    which XLA's view of the custom call, whole operands, overstates. A block several programs read
    (a group's B and C, read by each head) counts once, as if the cache served the re-reads: a
    lower bound, below ssd_kernel.hbm_bytes (what roofline.py adds), which counts them per program."""
    import jax
    import jax.numpy as jnp
    from jax._src.pallas.core import Squeezed

    from jaxbrr.ssd_kernel import pallas_calls

    out = {}
    for eqn in pallas_calls(jaxpr):
        key = tuple(f"{_HLO_DTYPES[v.aval.dtype.name]}[{','.join(map(str, v.aval.shape))}]" for v in eqn.outvars)
        if (eqn.params["name"], key) in out:  # every layer's call of one kernel at one shape: counted once
            continue
        grid_mapping = eqn.params["grid_mapping"]
        points = np.indices(grid_mapping.grid).reshape(len(grid_mapping.grid), -1)  # (grid dims, programs)
        total = 0
        for mapping in grid_mapping.block_mappings:
            index_map = mapping.index_map_jaxpr
            blocks = jax.vmap(lambda *g, m=index_map: jax.core.eval_jaxpr(m.jaxpr, m.consts, *g))(
                *(jnp.asarray(p, jnp.int32) for p in points))
            distinct = np.unique(np.stack([np.asarray(b) for b in blocks], axis=1), axis=0).shape[0]
            size = math.prod(1 if isinstance(b, Squeezed) else b.block_size for b in mapping.block_shape)
            total += distinct * size * mapping.array_aval.dtype.itemsize
        out[(eqn.params["name"], key)] = total
    return out


def with_kernel_blocks(rows: list[dict], block_bytes: dict[tuple, int]) -> list[dict]:
    """hlo_traffic's rows with each Pallas kernel's bytes those its blocks move (pallas_block_bytes),
    times the trips of the loops around it; a kernel it does not know raises."""
    out = []
    for row in rows:
        if row["pallas"]:
            key = (row["op_name"].split("/")[-2], _shapes_key(row["shape"]))
            if key not in block_bytes:
                raise KeyError(f"no block count for the Pallas kernel {key}")
            trips = row.get("trips", 1)
            row = {**row, "bytes": block_bytes[key] * trips}
        out.append(row)
    return out


def trace_train_step(config, batch: int, sharding):
    """jaxbrr's train step (jaxbrr/train/step.py, one device) traced for the sharding's GPU."""
    import jax
    import jax.numpy as jnp
    from roofline import train_step

    step_fn, state = train_step(config)
    on_gpu = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding)  # noqa: E731
    shape = (batch, config.model.n_chans, config.window_samples)
    data = {"x": jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding),
            "y": jax.ShapeDtypeStruct(shape[::2], jnp.float32, sharding=sharding)}
    with compiling_for_gpu():
        return step_fn.trace(jax.tree.map(on_gpu, state), data, on_gpu(jnp.float32(1.0)))


def compile_train_step(config, batch: int, sharding):
    """The train step compiled for the sharding's GPU."""
    with compiling_for_gpu():
        return trace_train_step(config, batch, sharding).lower().compile()


def planned_memory(compiled) -> int:
    """Device bytes XLA's buffer assignment plans for one call: arguments, results and
    temporaries, aliased buffers once."""
    m = compiled.memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


# XLA's own ptxas report. XLA compiles PTX with libnvptxcompiler, in process and in silence; with
# it off, XLA runs NVIDIA's ptxas binary with -v and logs its output at VLOG level 3 of
# subprocess_compilation. jaxlib 0.10.2 also dumped the PTX (--xla_dump_to) for a ptxas of our
# own, 0.11.2 dumps none; the log has the report under both.
PTXAS_REPORT_ENV = {"XLA_FLAGS": "--xla_gpu_enable_libnvptxcompiler=false",
                    "TF_CPP_VMODULE": "subprocess_compilation=3", "TF_CPP_MIN_LOG_LEVEL": "0"}
KERNEL_MARK = "gpu_aot: kernel "  # the child's line before each compile: which stream and kernel follow
PTXAS_ENTRY = re.compile(r"Compiling entry function '(\w+)'.*?(\d+) bytes spill stores, (\d+) bytes spill "
                         r"loads.*?Used (\d+) registers", re.S)
SCAN_KERNELS = ("ssd_", "gated_norm_")  # the Pallas kernels' entry names (the rest are XLA's fusions)


def ptxas_reports(log: str) -> dict[str, dict[str, int]]:
    """From a child's stderr (KERNEL_MARK lines, then XLA's ptxas report of what it compiled):
    "<stream> <entry>" -> {"registers", "spill_stores", "spill_loads"} for the Pallas kernels."""
    out = {}
    for part in log.split(KERNEL_MARK)[1:]:
        stream, kernel = part.split(maxsplit=2)[:2]
        found = [entry for entry in PTXAS_ENTRY.findall(part) if entry[0].startswith(SCAN_KERNELS)]
        if not found:  # said, not left out in silence
            out[f"{stream} {kernel}"] = {"error": "no ptxas report of its kernels in XLA's log"}
        for entry, stores, loads, registers in found:
            out[f"{stream} {entry}"] = {"registers": int(registers), "spill_stores": int(stores),
                                        "spill_loads": int(loads)}
    return out


def scan_kernels(args: argparse.Namespace) -> dict[str, dict[str, int]]:
    """The Pallas kernels of `scan: pallas` (scan and skip-and-norm, node and edge stream, forward
    and backward), each compiled alone for the GPU in a child process with XLA's ptxas report on
    (PTXAS_REPORT_ENV: process-wide, and for these kernels only, not the step's ~1,000 fusions)
    -> "<stream> <kernel>": ptxas's registers and spills per thread; or {"error": ...} when the
    log holds none of them."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--kernels-only", "--config", args.config,
            "--batch", str(args.batch), "--gpu", args.gpu, "--plugin-dir", str(args.plugin_dir),
            *(f"--set={o}" for o in args.set)]
    flags = f"{os.environ.get('XLA_FLAGS', '')} {PTXAS_REPORT_ENV['XLA_FLAGS']}".strip()
    child = subprocess.run(argv, env={**os.environ, **PTXAS_REPORT_ENV, "XLA_FLAGS": flags}, cwd=Path.cwd(),
                           capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"compiling the Pallas kernels alone failed:\n{child.stderr[-3000:]}")
    return ptxas_reports(child.stderr) or {"Pallas kernels": {
        "error": "no ptxas report of the Pallas kernels in XLA's log (PTXAS_REPORT_ENV: "
                 f"{' '.join(f'{k}={v}' for k, v in PTXAS_REPORT_ENV.items())})"}}


def compile_scan_kernels(config, batch: int, sharding) -> None:
    """The child's part of scan_kernels: compile each Pallas kernel, forward and backward, at the
    shapes and dtypes the step gives it, for the sharding's GPU, a KERNEL_MARK line before each."""
    import jax
    import jax.numpy as jnp

    from common.constants import MAMBA_NORM_EPS
    from jaxbrr.norm_kernel import gated_norm
    from jaxbrr.ssm import ssd_pallas

    m = config.model
    length = config.window_samples // m.tcn.stride_down
    compute, f32 = jnp.dtype(m.precision), jnp.dtype(jnp.float32)  # x, B, C, z; dt, A, D, w from parameters
    streams = {"node": (batch * m.n_chans, m.node_mamba), "edge": (batch * m.n_edges, m.graph.edge_mamba)}
    for stream, (sequences, mamba) in streams.items():
        heads = mamba.expand * mamba.d_model // mamba.headdim
        inner, rows, state = heads * mamba.headdim, sequences * length, mamba.d_state
        scan_args = [((sequences, length, heads, mamba.headdim), compute), ((sequences, length, heads), f32),
                     ((heads,), f32), ((sequences, length, 1, state), compute), ((sequences, length, 1, state), compute)]
        norm_args = [((rows, inner), compute), ((rows, inner + 2 * state), compute),  # y; xBC
                     ((rows, 2 * inner + 2 * state + heads), compute), ((inner,), f32), ((inner,), f32)]  # zxbcdt; D, w

        def scan(*args):
            return ssd_pallas(*args, chunk_size=m.ssm.chunk_size)

        def norm(*args):
            return gated_norm(*args, eps=MAMBA_NORM_EPS, out_dtype=compute)

        for name, fn, args in (("scan", scan, scan_args), ("norm", norm, norm_args)):
            def objective(*a, fn=fn):
                return jnp.sum(jnp.square(fn(*a).astype(f32)))

            arrays = [jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for shape, dtype in args]
            print(f"{KERNEL_MARK}{stream} {name}", file=sys.stderr, flush=True)
            with compiling_for_gpu():
                jax.jit(jax.grad(objective, argnums=tuple(range(len(args))))).lower(*arrays).compile()


def top_ops(rows: list[dict], count: int) -> str:
    """The `count` ops that move the most bytes, as a markdown table: where to look next."""
    lines = ["| GB | op | stage | result | op_name |", "|---:|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: -r["bytes"])[:count]:
        where = row["stage"] + ("" if row["direction"] == "-" else f" {row['direction']}")
        lines.append(f"| {row['bytes'] / 1e9:.3f} | {row['op']} `{row['name']}` | {where} | `{row['shape'][:60]}` | "
                     f"{row['op_name'][-70:]} |")
    return "\n".join(lines)


def report(rows: list[dict], memory: int, kernels: dict, gpu: str, flops_per_step: float | None,
           peak_tflops: float) -> str:
    """The markdown report: bytes per stage, the totals and their floors, memory, kernels."""
    total = sum(r["bytes"] for r in rows)
    lines = ["| stage | forward GB | backward GB | other GB | share |", "|---|---:|---:|---:|---:|"]
    for stage, parts in sorted(by_stage(rows).items(), key=lambda kv: -sum(kv[1].values())):
        lines.append(f"| {stage} | {parts['forward'] / 1e9:.2f} | {parts['backward'] / 1e9:.2f} | "
                     f"{parts['-'] / 1e9:.2f} | {100 * sum(parts.values()) / total:.1f} % |")
    floor_ms = total / (GPUS[gpu]["bandwidth_tbs"] * 1e12) * 1e3
    lines += ["", f"total: {total / 1e9:.1f} GB in {len(rows)} ops; byte floor at "
              f"{GPUS[gpu]['bandwidth_tbs']:g} TB/s: {floor_ms:.1f} ms per step"]
    if flops_per_step:
        rate = flops_per_step / floor_ms / 1e9  # TFLOP/s
        from gpu_bench import FORWARD_GFLOP_PER_WINDOW, MODEL_FORWARD_GFLOP_PER_WINDOW

        own = MODEL_FORWARD_GFLOP_PER_WINDOW / FORWARD_GFLOP_PER_WINDOW  # benchmarks/flops.py's count
        lines.append(f"model FLOP rate at that floor: {rate:.0f} TFLOP/s ({flops_per_step / 1e9:.0f} GFLOP per step "
                     f"on issue 16's {FORWARD_GFLOP_PER_WINDOW} GFLOP forward), {100 * rate / peak_tflops:.1f} % "
                     f"of a {peak_tflops:g} TFLOP/s peak: the utilisation ceiling "
                     f"({100 * own * rate / peak_tflops:.1f} % on the model's own {MODEL_FORWARD_GFLOP_PER_WINDOW})")
    lines.append(f"planned device memory: {memory / 1e9:.2f} GB")
    for name, k in kernels.items():
        lines.append(f"kernel {name}: {k['error']}" if "error" in k else
                     f"kernel {name}: {k['registers']} registers per thread, spills "
                     f"{k['spill_stores']} B stored / {k['spill_loads']} B loaded")
    return "\n".join(lines)


def main(argv=None) -> int:
    from gpu_bench import FORWARD_GFLOP_PER_WINDOW, H200_BF16_PEAK_TFLOPS, TRAIN_FLOP_FACTOR

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--gpu", choices=sorted(GPUS), default="h200")
    parser.add_argument("--peak", type=float, default=H200_BF16_PEAK_TFLOPS,
                        help="matmul peak, TFLOP/s (default: the H200's bf16 matmul as gpu_bench.py measured it)")
    parser.add_argument("--plugin-dir", type=Path, default=PLUGIN_DIR, help="where `make gpu-aot` installed the plugin")
    parser.add_argument("--json", type=Path, help="also write the rows and totals here")
    parser.add_argument("--hlo", type=Path, help="also write the optimized HLO text here")
    parser.add_argument("--top", type=int, default=0, metavar="N", help="also list the N ops that move the most bytes")
    parser.add_argument("--kernels-only", action="store_true", help=argparse.SUPPRESS)  # scan_kernels' child
    args = parser.parse_args(argv)

    use_plugin(args.plugin_dir)
    sys.path.insert(0, str(ROOT))
    from common.config import load_config
    from common.files import write_text

    config = load_config(args.config, [*args.set, f"train.batch_size={args.batch}"])
    sharding = cuda_sharding(args.gpu)
    if args.kernels_only:
        compile_scan_kernels(config, args.batch, sharding)
        return 0
    print(f"compiling the train step for an {GPUS[args.gpu]['name']} (no GPU here; ~40 s at full size)",
          file=sys.stderr, flush=True)
    traced = trace_train_step(config, args.batch, sharding)
    with compiling_for_gpu():
        compiled = traced.lower().compile()
    kernels, block_bytes = {}, {}
    if config.model.ssm.scan == "pallas":
        print("compiling the Pallas kernels alone, with XLA's ptxas report", file=sys.stderr, flush=True)
        kernels = scan_kernels(args)
        block_bytes = pallas_block_bytes(traced.jaxpr)
    text = compiled.as_text()
    rows = with_kernel_blocks(hlo_traffic(text), block_bytes)
    full_size = config.window_samples == 60 * 256 and config.model.node_mamba.n_layers == 6
    flops = TRAIN_FLOP_FACTOR * FORWARD_GFLOP_PER_WINDOW * 1e9 * args.batch if full_size else None
    memory = planned_memory(compiled)
    print(report(rows, memory, kernels, args.gpu, flops, args.peak))
    if args.top:
        print("\n" + top_ops(rows, args.top))
    if args.hlo:
        write_text(args.hlo, text)
    if args.json:
        write_text(args.json, json.dumps({"gpu": args.gpu, "config": args.config, "batch": args.batch, "set": args.set,
                                          "bytes": sum(r["bytes"] for r in rows), "planned_memory": memory,
                                          "stages": by_stage(rows), "kernels": kernels}, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
