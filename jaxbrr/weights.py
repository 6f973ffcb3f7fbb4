"""jaxbrr's parameters under the neutral names: torchref's state-dict names and layouts.

    arrays = to_neutral(model)                    # {"node_mamba.layers.0.fwd.in_proj.weight": (out, in) ...}
    notes = fill(model, arrays, "best.safetensors")   # every Param filled exactly once, or one error
    config, model, located, notes = load_model("runs/default")   # any kind of weights (common/checkpoints.py)

The two model trees carry the same attribute names (STYLE.md "Names"): torch
`node_mamba.layers.0.fwd.in_proj` is NNX `node_mamba / layers / 0 / fwd / in_proj`. The NNX type of
each module picks its row in LEAVES, which lists the leaves the module owns directly and how each
changes layout; nothing is guessed from shapes:

    NNX module                    torch leaf (layout)     NNX leaf (layout)
    nnx.Linear                    weight (out, in)        kernel (in, out)
                                  bias (out,)             bias (out,)
    nnx.Conv                      weight (out, in, k)     kernel (k, in, out)
    mamba.CausalDepthwiseConv1d   weight (C, 1, W)        kernel (W, 1, C)
                                  bias                    bias (both optional)
    tcn.WeightNormConv1d          weight_v (out, in, k)   weight_v (k, in, out)
                                  weight_g (out, 1, 1)    weight_g (out,)
                                  bias                    bias
    nnx.LayerNorm                 weight, bias            scale, bias
    mamba.GatedRMSNorm            weight                  weight
    mamba.Mamba2                  A_log, D, dt_bias       A_log, D, dt_bias
    containers (SeizureDetector, TCNEncoder, ProjectionHead, BiMamba2, BiMamba2Layer, GraphMixer,
    SSGConv, nnx.List, nnx.Dropout): no leaves of their own.

parity/convert.py pairs each row with its torch module type (the twins) for in-memory conversion.
Dtype: a built model's Params keep the dtype the config's model built them in (float32, under
model.precision bfloat16 too: it computes in bf16 on float32 parameters). Narrower floats
(float16, bfloat16: a file saved in half precision) are widened to it, exactly, with a note; wider
ones are never narrowed: float64 stays float64 and needs jax_enable_x64 (refused without it, never
truncated). An abstract model (nnx.eval_shape, parity/twins.py's) has no values of its own, so its
Params take the values' dtype: the localiser's twin of a torch model cast whole to float16 is float16.
Imports no torch: a torchref checkpoint is read through common/pt.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxbrr.gnn as jgnn
import jaxbrr.mamba as jmamba
import jaxbrr.model as jmodel
import jaxbrr.tcn as jtcn
from common.checkpoints import (
    CONFIG_FIX,
    Located,
    check_finite,
    jaxbrr_meta,
    jaxbrr_step,
    locate,
    read_weights,
)
from common.config import Config, ConfigError, config_from_dict, with_overrides
from common.shown import shown_lines

MISSING, UNEXPECTED = "missing from", "but the model has no such parameter"  # key_problems' two kinds
NEEDS_X64 = "float64 needs jax_enable_x64 (it would be truncated)"
X64_FIX = ("float64 weights need JAX's 64-bit mode: run with JAX_ENABLE_X64=1, or cast the weights to float32 "
           "yourself (which rounds them)")


class WeightsError(ValueError):
    """A model and a set of weights do not match; `problems` names every offending path. With a
    `fix` (weights a user gave), the message names a few of each kind (missing, not in the model,
    the rest: shapes, dtypes), then the fix; without (this project's own tables), every one."""

    def __init__(self, what: str, problems: list[str], fix: str | None = None):
        self.problems, self.fix = problems, fix
        if fix is None:
            super().__init__(f"{what}: {len(problems)} problem(s)\n  " + "\n  ".join(problems))
            return
        kinds = {"missing from the weights": [p for p in problems if MISSING in p],
                 "not in the model": [p for p in problems if UNEXPECTED in p]}
        kinds["other"] = [p for p in problems if p not in kinds["missing from the weights"] + kinds["not in the model"]]
        counts = ", ".join(f"{len(found)} {kind}" for kind, found in kinds.items() if found)
        lines = [line for found in kinds.values() for line in shown_lines(found)]
        super().__init__("\n".join([f"{what}: {len(problems)} problem(s) ({counts})", *lines, fix]))


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _transpose(a: np.ndarray) -> np.ndarray:
    return a.T  # (out, in) <-> (in, out)


def _reverse_axes(a: np.ndarray) -> np.ndarray:
    return a.transpose(2, 1, 0)  # (out, in, k) <-> (k, in, out): an involution


def _gain_to_jax(g: np.ndarray) -> np.ndarray:
    return g.reshape(g.shape[0])  # (out, 1, 1) -> (out,)


def _gain_to_torch(g: np.ndarray) -> np.ndarray:
    return g.reshape(g.shape[0], 1, 1)  # (out,) -> (out, 1, 1)


class Leaf(NamedTuple):
    torch: str  # the neutral (torch state-dict) suffix
    nnx: str  # the attribute on the NNX module
    to_jax: Callable[[np.ndarray], np.ndarray] = _same  # neutral layout -> NNX layout
    to_torch: Callable[[np.ndarray], np.ndarray] = _same  # NNX layout -> neutral layout


LINEAR = (Leaf("weight", "kernel", _transpose, _transpose), Leaf("bias", "bias"))
CONV = (Leaf("weight", "kernel", _reverse_axes, _reverse_axes), Leaf("bias", "bias"))

LEAVES: dict[type, tuple[Leaf, ...]] = {
    nnx.Linear: LINEAR,
    nnx.Conv: CONV,
    jmamba.CausalDepthwiseConv1d: CONV,
    jtcn.WeightNormConv1d: (
        Leaf("weight_v", "weight_v", _reverse_axes, _reverse_axes),
        Leaf("weight_g", "weight_g", _gain_to_jax, _gain_to_torch),
        Leaf("bias", "bias"),
    ),
    nnx.LayerNorm: (Leaf("weight", "scale"), Leaf("bias", "bias")),
    jmamba.GatedRMSNorm: (Leaf("weight", "weight"),),
    # Mamba2's bare parameters; its in_proj/conv1d/norm/out_proj are children with their own rows.
    jmamba.Mamba2: (Leaf("A_log", "A_log"), Leaf("D", "D"), Leaf("dt_bias", "dt_bias")),
    # Containers: no parameters of their own, but listed so an unknown module type is an error.
    jmodel.SeizureDetector: (),
    jtcn.TCNEncoder: (),
    jtcn.ProjectionHead: (),
    jmamba.BiMamba2: (),
    jmamba.BiMamba2Layer: (),
    jgnn.GraphMixer: (),
    jgnn.SSGConv: (),
    nnx.List: (),
    nnx.Dropout: (),
}


class Entry(NamedTuple):
    torch_key: str  # neutral name, e.g. node_mamba.layers.0.fwd.in_proj.weight
    nnx_path: tuple  # e.g. ("node_mamba", "layers", 0, "fwd", "in_proj", "kernel")
    variable: nnx.Param
    leaf: Leaf


def dotted(path: tuple) -> str:
    return ".".join(str(key) for key in path)  # torch's spelling


def slashed(path: tuple) -> str:
    return "/".join(str(key) for key in path)  # NNX's spelling, in messages about NNX Params


def type_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def plan(model: nnx.Module) -> list[Entry]:
    """One Entry per parameter leaf, from walking the NNX modules; every problem at once."""
    problems: list[str] = []
    entries = []
    for path, module in nnx.iter_modules(model):
        name = dotted(path)
        leaves = LEAVES.get(type(module))
        if leaves is None:
            problems.append(f"{name or '<root>'}: no row in jaxbrr.weights.LEAVES for NNX {type_name(type(module))}")
            continue
        for leaf in leaves:
            variable = getattr(module, leaf.nnx, None)
            if variable is None:  # e.g. a conv without bias
                continue
            if not isinstance(variable, nnx.Param):
                problems.append(f"{slashed((*path, leaf.nnx))}: NNX attribute is a {type(variable).__name__}, not a Param")
                continue
            entries.append(Entry(f"{name}.{leaf.torch}" if name else leaf.torch, (*path, leaf.nnx), variable, leaf))
    filled = Counter(entry.nnx_path for entry in entries)
    problems += [f"{slashed(p)}: NNX Param filled {n} times" for p, n in filled.items() if n > 1]
    params = [path for path, node in nnx.iter_graph(model) if isinstance(node, nnx.Param)]
    problems += [f"{slashed(p)}: NNX Param is filled by no row" for p in params if p not in filled]
    if problems:
        raise WeightsError(f"the neutral names of {type(model).__name__}", problems)
    return entries


def to_neutral(model: nnx.Module) -> dict[str, np.ndarray]:
    """Neutral name -> neutral-layout numpy array (dtype kept)."""
    return {entry.torch_key: np.ascontiguousarray(entry.leaf.to_torch(np.asarray(entry.variable.get_value())))
            for entry in plan(model)}


def key_problems(wanted, keys, source: str) -> list[str]:
    wanted, keys = set(wanted), set(keys)
    missing = [f"{key}: {MISSING} {source}" for key in sorted(wanted - keys)]
    return missing + [f"{key}: in {source}, {UNEXPECTED}" for key in sorted(keys - wanted)]


def _widened(value: np.ndarray, target) -> np.ndarray:
    """`value` in the Param's dtype where that holds it exactly (a narrower float), else unchanged:
    a wider one is kept, and an abstract Param (a shape, no values yet) takes the value's dtype."""
    if isinstance(target, jax.ShapeDtypeStruct) or value.dtype == target.dtype:
        return value
    if jnp.issubdtype(value.dtype, jnp.floating) and jnp.promote_types(value.dtype, target.dtype) == target.dtype:
        return value.astype(target.dtype)  # exact: the wider float holds every value of the narrower
    return value


def fill(model: nnx.Module, arrays: dict[str, np.ndarray], source: str) -> list[str]:
    """Write neutral-layout `arrays` into the model's Params (in their dtype: module docstring),
    all checks first; returns notes on what was widened (callers print them)."""
    entries = plan(model)
    problems = key_problems([e.torch_key for e in entries], arrays.keys(), source)
    values, widened = [], Counter()
    for entry in entries:
        if entry.torch_key not in arrays:
            continue  # reported
        value = entry.leaf.to_jax(np.asarray(arrays[entry.torch_key]))
        target = entry.variable.get_value()
        if value.shape != target.shape:
            problems.append(f"{entry.torch_key} -> {slashed(entry.nnx_path)}: shape {value.shape} "
                            f"(after the layout change) vs NNX {target.shape}")
        elif value.dtype == np.float64 and not jax.config.jax_enable_x64:
            problems.append(f"{entry.torch_key}: {NEEDS_X64}")
        kept = _widened(value, target)
        if kept.dtype != value.dtype:
            widened[(value.dtype.name, kept.dtype.name)] += 1
        values.append((entry.variable, kept))
    if problems:
        # names and shapes are the config's to fix; float64 values alone, JAX's
        fix = X64_FIX if all(p.endswith(NEEDS_X64) for p in problems) else CONFIG_FIX
        raise WeightsError(f"{source} -> NNX", problems, fix)
    for variable, value in values:
        variable.set_value(jnp.asarray(value))
    return widening_notes(widened, source)


def widening_notes(widened: Counter, source: str) -> list[str]:
    """One note per (stored dtype, built dtype) pair: how many tensors were widened."""
    return [f"{source}: {n} {stored} tensor(s) widened to {built}, the dtype of the config's model "
            f"(the values are the file's, exactly: {built} represents every {stored})"
            for (stored, built), n in sorted(widened.items())]


def neutral_shapes(model_config) -> dict[str, tuple[int, ...]]:
    """Neutral name -> neutral-layout shape of a model of `model_config`, nothing allocated."""
    model = nnx.eval_shape(lambda: jmodel.SeizureDetector(model_config, rngs=nnx.Rngs(0)))
    return {entry.torch_key: entry.leaf.to_torch(np.broadcast_to(np.float32(0), entry.variable.get_value().shape)).shape
            for entry in plan(model)}


# the model fields that size no weight, which loaded weights may run under other values of: how
# the scan is computed, and the stability guards (DESIGN.md §2)
COMPUTE_FIELDS = ("model.ssm.", "model.stability.")


def load_model(path: str | Path, config_path: str | Path | Config | None = None,
               compute: Sequence[str] = (), finite: bool = False) -> tuple[Config, nnx.Module, Located, list[str]]:
    """(config, SeizureDetector, where it came from, notes) from weights of any kind
    (common/checkpoints.py): a jaxbrr checkpoint is restored whole (parameters and RNG streams,
    through orbax), anything else is read as neutral weights and filled into a fresh model of its
    config. `notes` says what the reader ignored or assumed (callers print them).

    `compute`: overrides of how the model computes (COMPUTE_FIELDS: the scan's algorithm and chunk
    size, the stability guards), applied to the weights' config before the model is built; they
    change no weight (a checkpoint trained with `scan: pallas` on a GPU runs with `scan: chunked`
    on a CPU; an original checkpoint runs with its clamps, `model.stability.guards: original`).

    `finite`: refuse weights holding NaN or Inf (CheckpointError naming them: common/checkpoints.py
    check_finite) as soon as they are read, for a command that would run the model on them; off,
    they load as they are (parity.convert and the localiser report them)."""
    from jaxbrr.train.checkpoint import restore_model

    outside = [text for text in compute if not text.startswith(COMPUTE_FIELDS)]
    if outside:
        raise ConfigError(f"{outside}: only {', '.join(f + '*' for f in COMPUTE_FIELDS)} (how the model computes) "
                          "can change for loaded weights")
    located = locate(path)
    step_dir = jaxbrr_step(located)
    if step_dir is not None:
        config = config_from_dict(jaxbrr_meta(step_dir)["config"], source=f"{step_dir}/meta")
        config = with_overrides(config, compute, f"{step_dir} (its config)")
        model = restore_model(step_dir, config)
        if finite:
            check_finite(to_neutral(model), step_dir)
        return config, model, located, []
    weights = read_weights(located.path, config_path, neutral_shapes)
    if finite:
        check_finite(weights.arrays, weights.path, weights.spelled)
    config = with_overrides(weights.config, compute, f"{weights.path} (its config)")
    model = jmodel.SeizureDetector(config.model, rngs=nnx.Rngs(config.train.seed))
    notes = fill(model, weights.arrays, str(weights.path))
    return config, model, located, [*weights.notes, *notes]
