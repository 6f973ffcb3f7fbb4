"""Where a jaxbrr train step spends its device time, by model stage, from one profiler trace.

    python benchmarks/step_profile.py --config configs/tiny.yaml --batch 2 [--set k=v ...]
    python benchmarks/step_profile.py --config configs/tusz.yaml --batch 8 --set model.precision=bfloat16  # a GPU

Each stage of SeizureDetector runs under jax.named_scope(tap name) (jaxbrr/model.py), so every
HLO instruction of the compiled step carries its stage in its op_name metadata: `jvp(node_mamba)`
in the forward, `transpose(jvp(node_mamba))` in the backward; what no stage owns (the loss, the
optimizer update, dropout's key plumbing, and the few ops whose name stack XLA dropped, such as
some reductions) is `step`, and what XLA inserted without a name (layout copies) is `xla`. The step runs `--steps` times under
jax.profiler.trace (with its Perfetto JSON); each executed op's time is attributed to its stage
and direction through the compiled module's text. On a GPU only the device's own events are
counted (the kernels); on the CPU, the thunks as XLA:CPU runs them. The times are the sum of op
durations (ops that overlap count each), per step; "share" is of that sum; "ops / step" counts the
executed ops (on a GPU, the kernel launches: a stage of many small ones is launch-bound).

gpu_bench.py runs this inside its bfloat16 train row at the small batch (the profile then costs
no second compile); on the CPU it answers the same question at tiny size.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

# an HLO instruction: `  [ROOT] %name = type opcode(...), ..., calls=%comp, metadata={op_name="..." ...}`
_INSTRUCTION = re.compile(r'^\s+(ROOT\s+)?%?([\w.\-]+)\s*=')
_CALLS = re.compile(r'calls=%?([\w.\-]+)')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_COMPUTATION = re.compile(r'^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$')  # a computation's header line
_WRAPPER = re.compile(r"^(?:transpose|jvp|vmap|remat|checkpoint|pjit|jit)\((.*)\)$")
OTHER = "step"  # loss, optimizer, dropout keys: what no stage's scope holds
COMPILER = "xla"  # instructions XLA added that carry no op_name (layout copies)


def op_names(hlo_text: str) -> dict[str, str | None]:
    """HLO instruction name -> its op_name; a fusion or call without one of its own takes its
    called computation's (the root's, else the first instruction's that has one); None where
    nothing in the module names it (a copy XLA inserted for a layout)."""
    own, calls, computations, current = {}, {}, {}, None
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header and not line.startswith(" "):
            current = header.group(1)
            continue
        instruction = _INSTRUCTION.match(line)
        if instruction is None:
            continue
        name, op_name = instruction.group(2), _OP_NAME.search(line)
        own[name] = op_name.group(1) if op_name else None
        if (called := _CALLS.search(line)) is not None:
            calls[name] = called.group(1)
        if op_name and current is not None:
            named = computations.setdefault(current, [])
            named.insert(0, op_name.group(1)) if instruction.group(1) else named.append(op_name.group(1))
    return {name: op_name or next(iter(computations.get(calls.get(name), [])), None) for name, op_name in own.items()}


def module_name(hlo_text: str) -> str | None:
    """The module's name (`HloModule jit_step, ...`): the hlo_module the profiler's events carry."""
    match = re.match(r"\s*HloModule\s+([\w.\-]+)", hlo_text)
    return match.group(1) if match else None


def op_stages(hlo_text: str, stages: Iterable[str]) -> dict[str, tuple[str, str, str]]:
    """HLO instruction name -> (stage, "forward" | "backward", what: the op_name's last two
    components) from a compiled module's text; (COMPILER, "-", "") where nothing names it."""
    stages = set(stages)
    return {name: (*stage_of(op_name, stages), "/".join(op_name.split("/")[-2:])) if op_name else (COMPILER, "-", "")
            for name, op_name in op_names(hlo_text).items()}


def stage_of(op_name: str, stages: set[str]) -> tuple[str, str]:
    """The first path component that is a stage, unwrapped (jvp(x), transpose(jvp(x))), and
    whether a transpose (the backward pass) wrapped it."""
    for part in op_name.split("/")[1:]:
        backward, inner = part.startswith("transpose("), part
        while (match := _WRAPPER.match(inner)) is not None:
            inner = match.group(1)
        if inner in stages:
            return inner, "backward" if backward else "forward"
    return OTHER, "backward" if "transpose(" in op_name else "forward"


def load_events(trace_dir: Path) -> list[dict]:
    """The complete events ("ph": "X") of the newest Perfetto trace under trace_dir, each with
    its process's name as "process"."""
    traces = sorted(trace_dir.rglob("*perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not traces:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir}: was the trace written?")
    data = json.loads(gzip.open(traces[-1]).read())
    events = data["traceEvents"] if isinstance(data, dict) else data
    processes = {e["pid"]: e.get("args", {}).get("name", "") for e in events
                 if e.get("ph") == "M" and e.get("name") == "process_name"}
    return [{**e, "process": processes.get(e.get("pid"), "")} for e in events if e.get("ph") == "X"]


def _is_device(process: str) -> bool:
    """An accelerator's timeline: xprof names them "/device:GPU:0" and the like; the host's are
    "/host:CPU" (and XLA:CPU's own device, "/device:CPU:0", runs on the host's threads)."""
    name = process.lower()
    return ("gpu" in name or "tpu" in name) and "host" not in name


def breakdown(events: list[dict], owners: dict[str, tuple[str, str, str]], steps: int,
              module: str | None = None) -> dict:
    """Per (stage, direction): milliseconds per step and share of the attributed time; plus the
    ops that took longest. On a GPU every device event counts (one XLA did not annotate, a
    memcpy or a library's helper kernel, is unattributed); on the CPU the events that name an
    HLO op (the thunks), and one naming an op the module's text lacks is unattributed. Events
    that say they belong to another module than `module` (a conversion of an argument) are
    not the step's and are left out."""
    def ours(event):
        other = (event.get("args") or {}).get("hlo_module")
        return module is None or other is None or other == module

    device = [e for e in events if _is_device(e["process"]) and ours(e)]
    chosen = device or [e for e in events if (e.get("args") or {}).get("hlo_op") and ours(e)]
    # a kernel named after its instruction writes '.' and '-' as '_' (fusion.12 -> fusion_12)
    by_kernel_name = {re.sub(r"[.\-]", "_", name): owner for name, owner in owners.items()}
    per, ops, counts = defaultdict(float), defaultdict(float), defaultdict(int)
    unattributed = 0.0
    for event in chosen:
        op = (event.get("args") or {}).get("hlo_op") or event.get("name", "")
        owner = owners.get(op) or by_kernel_name.get(op)
        if owner is None:
            unattributed += event.get("dur", 0.0)
            continue
        per[owner[:2]] += event.get("dur", 0.0)
        counts[owner[:2]] += 1
        ops[(op, *owner)] += event.get("dur", 0.0)
    total = sum(per.values())
    rows = [{"stage": stage, "direction": direction, "ms_per_step": us / 1e3 / steps, "share": us / total,
             "ops_per_step": counts[stage, direction] / steps}
            for (stage, direction), us in sorted(per.items(), key=lambda kv: -kv[1])] if total else []
    top = [{"op": op, "stage": stage, "direction": direction, "what": what, "ms_per_step": us / 1e3 / steps}
           for (op, stage, direction, what), us in sorted(ops.items(), key=lambda kv: -kv[1])[:12]]
    # what the trace looked like, for a reader of a GPU run's report when attribution fails
    sample = [{"process": e["process"], "name": e.get("name", "")[:80], "args": sorted(e.get("args") or {})}
              for e in chosen[:3]]
    return {"events": "device" if device else "host (XLA:CPU thunks)", "steps": steps,
            "processes": sorted({e["process"] for e in events})[:12], "sample_events": sample,
            "attributed_ms_per_step": total / 1e3 / steps, "unattributed_ms_per_step": unattributed / 1e3 / steps,
            "ops_per_step": sum(counts.values()) / steps,
            "stages": rows, "top_ops": top}


def profile(run: Callable[[], None], hlo_text: str, stages: Iterable[str], steps: int = 3,
            trace_dir: Path | None = None) -> dict:
    """run() (one blocking step, already compiled) `steps` times under the profiler: breakdown()."""
    import jax

    with tempfile.TemporaryDirectory() as scratch:
        where = Path(trace_dir or scratch)
        with jax.profiler.trace(str(where), create_perfetto_trace=True):
            for _ in range(steps):
                run()
        return breakdown(load_events(where), op_stages(hlo_text, stages), steps, module_name(hlo_text))


def table(result: dict) -> str:
    """The breakdown as a markdown table (the top ops below it)."""
    lines = [f"{result['attributed_ms_per_step']:.2f} ms per step attributed ({result['events']} events, "
             f"{result['steps']} steps, {result['ops_per_step']:.0f} ops per step); "
             f"{result['unattributed_ms_per_step']:.2f} ms in events of no op of the step",
             "", "| stage | direction | ms / step | share | ops / step |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['stage']} | {r['direction']} | {r['ms_per_step']:.2f} | {r['share']:.1%} | {r['ops_per_step']:.0f} |"
              for r in result["stages"]]
    lines += ["", "| longest ops | stage | direction | what (op_name) | ms / step |", "|---|---|---|---|---:|"]
    lines += [f"| {r['op']} | {r['stage']} | {r['direction']} | {r['what']} | {r['ms_per_step']:.2f} |"
              for r in result["top_ops"]]
    return "\n".join(lines)


def profile_train_step(config, batch: dict, steps: int = 3) -> dict:
    """Build jaxbrr's train step for `config` (as the loops run it), compile it on `batch`, then
    profile(); returns the breakdown."""
    import jax
    import jax.numpy as jnp
    import roofline

    step_fn, state = roofline.train_step(config)
    data = {k: jnp.asarray(v) for k, v in batch.items()}
    box = {"state": state}

    def run():
        box["state"], metrics = step_fn(box["state"], data, jnp.float32(1.0))
        jax.block_until_ready(metrics)

    run()  # compile
    return profile_compiled(step_fn, (box["state"], data, jnp.float32(1.0)), run, config, steps)


def profile_compiled(step_fn, args: tuple, run: Callable[[], None], config, steps: int = 3) -> dict:
    """profile() of an already-called jitted step_fn: its compiled text (the executable in JAX's
    cache: no second compile) names each op's stage. `cost` is XLA's cost analysis of that
    executable (benchmarks/roofline.py: bytes moved and flops per step, as compiled for this device);
    `traffic` the bytes benchmarks/gpu_aot.py counts in its text, loops per trip, Pallas kernels by
    their blocks, and `planned_memory` XLA's buffer plan: what gpu_aot.py predicts without a GPU,
    here measured on one."""
    import gpu_aot
    import roofline

    traced = step_fn.trace(*args)
    compiled = traced.lower().compile()
    text = compiled.as_text()
    traffic, counted = gpu_aot.hlo_traffic(text), "Pallas kernels by their blocks"
    try:  # Pallas internals of another jax version: the report says so rather than losing the row
        traffic = gpu_aot.with_kernel_blocks(traffic, gpu_aot.pallas_block_bytes(traced.jaxpr))
    except Exception as error:  # noqa: BLE001
        counted = f"Pallas kernels' operands whole ({type(error).__name__}: {error})"
    return {**profile(run, text, config.model.stage_inputs, steps), "cost": roofline.cost(compiled),
            "traffic": sum(row["bytes"] for row in traffic), "traffic_counts": counted,
            "planned_memory": gpu_aot.planned_memory(compiled)}


def main(argv=None) -> int:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gpu_bench

    from common.config import load_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--json", type=Path, help="also write the breakdown here")
    args = parser.parse_args(argv)
    config = load_config(args.config, [*args.set, f"train.batch_size={args.batch}"])
    result = profile_train_step(config, gpu_bench._batch(config), args.steps)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
