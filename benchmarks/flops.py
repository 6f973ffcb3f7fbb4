"""The model's FLOPs per window, by stage: the numerator of model FLOP utilisation.

    python benchmarks/flops.py --config configs/tusz.yaml      # full size: 60 s window
    python benchmarks/flops.py --config configs/tiny.yaml --set model.graph.n_layers=1

Counted as torch.utils.flop_counter and the usual MFU accounting count: matrix products and
convolutions only, 2 FLOPs per multiply-add, elementwise work, norms and the eigh left out.
The count is read from the jaxpr of jaxbrr's eval forward on one window (nothing runs: the
model is traced, not compiled), `dot_general` and `conv_general_dilated` equations by their
shapes, a loop's body times its trip count, and attributed to the stage whose `jax.named_scope`
(jaxbrr/model.py) the equation was traced under.

The selective scan is counted as the plain recurrence (`model.ssm.scan: sequential`, whatever
the config says): per token and head, h ← a·h + x·Bᵀ and y = C·h, 4·headdim·d_state FLOPs. That
is the model's work; the chunked algorithm (and mamba_ssm's kernels) do more multiplies within
a chunk to parallelise it (scan: chunked at chunk 16 counts ~1.7× the recurrence's), and a Pallas
kernel is opaque to the jaxpr. So the count is the same for every scan and chunk size, and a
faster algorithm shows as a higher utilisation, not as more FLOPs.

Issue 16 states the full-size forward as 110.6 GFLOP: that is perf_grounding.md §3's count of
the original model on a CPU, whose Mamba2 falls back to a depthwise convolution per direction
(original_spec.md: "node fallback stack 1.9, edge fallback stack 0.4" GFLOP). This model runs
Mamba2 itself: its projections alone are ~17 GFLOP. gpu_bench.py reports utilisation on both
counts and judges the target on the issue's.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNSCOPED = "(unscoped)"
RECURRENCE = " recurrence"
LOOPS = ("scan",)  # `while`: refused where it holds products (jaxpr_flops)


def _equation_flops(eqn) -> int:
    """2 × multiply-adds of one dot_general or conv_general_dilated equation, else 0."""
    import numpy as np

    name = eqn.primitive.name
    out = int(np.prod(eqn.outvars[0].aval.shape))
    if name == "dot_general":
        (contracting, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return 2 * out * int(np.prod([lhs[i] for i in contracting]))  # an empty contraction is 1
    if name == "conv_general_dilated":
        rhs, spec = eqn.invars[1].aval.shape, eqn.params["dimension_numbers"].rhs_spec
        # rhs_spec: (out features, in features per group, spatial...); each output element takes
        # in-features-per-group × kernel taps multiply-adds, whatever the grouping
        return 2 * out * int(rhs[spec[1]] * np.prod([rhs[i] for i in spec[2:]]))
    return 0


def _sub_jaxprs(eqn):
    """(jaxpr, trip count) of each jaxpr an equation holds (scan bodies run `length` times)."""
    import jax.extend as jex

    trips = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
    for value in eqn.params.values():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, jex.core.ClosedJaxpr):
                yield item.jaxpr, trips
            elif isinstance(item, jex.core.Jaxpr):
                yield item, trips


def jaxpr_flops(jaxpr, counts: collections.Counter | None = None, times: int = 1,
                stage: str | None = None) -> collections.Counter:
    """stage -> FLOPs of a jaxpr's products, by the outermost named scope of each equation. A
    loop body's equations count under the scope of the loop (their name stacks start afresh),
    as "<stage> recurrence": in this model the only loop with products is the sequential scan.
    A `cond` counts its costliest branch; a `while` with products inside is refused (its trip
    count is not in the jaxpr)."""
    counts = collections.Counter() if counts is None else counts
    for eqn in jaxpr.eqns:
        scope = stage or str(eqn.source_info.name_stack).split("/")[0] or UNSCOPED
        counts[scope] += _equation_flops(eqn) * times
        subs = list(_sub_jaxprs(eqn))
        if eqn.primitive.name == "cond":
            branches = [jaxpr_flops(sub, None, times * trips, scope) for sub, trips in subs]
            counts.update(max(branches, key=lambda c: sum(c.values()), default=collections.Counter()))
            continue
        if eqn.primitive.name == "while" and sum(jaxpr_flops(sub, None, 1, scope).total() for sub, _ in subs):
            raise ValueError(f"a while loop with matrix products in {scope}: its trip count is not in the jaxpr, so "
                             "its FLOPs cannot be counted from it")
        for sub, trips in subs:
            looped = eqn.primitive.name in LOOPS and not scope.endswith(RECURRENCE)
            jaxpr_flops(sub, counts, times * trips, f"{scope}{RECURRENCE}" if looped else scope)
    return +counts  # without the stages that hold no product


def forward_flops(config) -> dict[str, int]:
    """stage -> FLOPs of one window's eval forward (batch 1), the scan as the recurrence."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxbrr.model import SeizureDetector

    model_config = dataclasses.replace(config.model, ssm=dataclasses.replace(config.model.ssm, scan="sequential"))
    # shapes only: the parameters are never drawn
    model = nnx.eval_shape(lambda: SeizureDetector(model_config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(nnx.view(model, deterministic=True, raise_if_not_found=False))
    x = jax.ShapeDtypeStruct((1, model_config.n_chans, config.window_samples), jnp.float32)
    closed = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x)[0])(state, x)
    return dict(jaxpr_flops(closed.jaxpr))


def table(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    lines = ["| stage | GFLOP | share |", "|---|---:|---:|"]
    lines += [f"| {stage} | {flops / 1e9:.6g} | {flops / total:.1%} |"
              for stage, flops in sorted(counts.items(), key=lambda kv: -kv[1])]
    lines.append(f"| **forward, one window** | **{total / 1e9:.6g}** | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "tusz.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from common.config import load_config

    config = load_config(args.config, args.set)
    print(f"{args.config}, {config.window_samples} samples per window: matmul and conv FLOPs of the forward")
    print(table(forward_flops(config)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
