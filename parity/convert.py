"""Weights between the frameworks: the twins' module pairs, in-memory conversion, and
`python -m parity.convert IN OUT` between every kind of weights file.

The table of leaves (which parameters a module owns, under which neutral name, in which layout)
is jaxbrr/weights.py's LEAVES, keyed by NNX type: the neutral names ARE torchref's state-dict
names, so torch needs no table of its own. Here TWINS pairs each NNX type with its torch type, so
that converting two live models also checks that the trees are twins: the walk pairs modules by
path (torch `node_mamba.layers.0.fwd.in_proj` is NNX `node_mamba / layers / 0 / fwd / in_proj`)
and every pair must be a TWINS pair. Nothing is guessed from shapes.

Dtype: values keep the SOURCE's dtype on both sides. torch_to_jax of a `.double()` torch model
makes the NNX parameters float64 (this needs jax_enable_x64 and raises without it, never truncates);
jax_to_torch sets each torch parameter's data to the NNX value's dtype. So a round trip is bit-exact.

Every problem (a module on one side only, a pair of types that are not twins, a torch leaf that no
row reads, an NNX Param left unfilled or filled twice, a shape mismatch) is collected and raised
at once as a ConversionError naming each path, before anything is written.

Weights files (common/checkpoints.py reads every kind): the neutral .safetensors (keys = torch
state-dict names, values = torch-layout arrays, metadata {format, format_version, framework,
config}), a torchref .pt state dict, a jaxbrr checkpoint folder; as input also torchref training
checkpoints, NaN dumps and brain-go-brr v2 checkpoints. CLI: python -m parity.convert --help
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from flax import nnx
from pydantic import TypeAdapter
from torch import nn

import jaxbrr.gnn as jgnn
import jaxbrr.mamba as jmamba
import jaxbrr.model as jmodel
import jaxbrr.tcn as jtcn
import torchref.gnn as tgnn
import torchref.mamba as tmamba
import torchref.model as tmodel
import torchref.tcn as ttcn
from common.checkpoints import (
    CONFIG_FIX,
    LOSS_FIELDS,
    CheckpointError,
    Weights,
    carries_run_config,
    locate,
    nonfinite_tensors,
    read_neutral,
    read_neutral_metadata,
    read_weights,
    write_neutral,
)
from common.config import ModelConfig, config_to_dict
from common.pt import torch_compatible
from common.shown import shown_inline
from common.train.compat import config_differences
from jaxbrr.weights import (
    LEAVES,
    Entry,
    WeightsError,
    dotted,
    fill,
    key_problems,
    to_neutral,
    type_name,
    widening_notes,
)
from jaxbrr.weights import plan as nnx_plan


class ConversionError(WeightsError):
    """The two trees (or a file and a tree) do not match; `problems` names every offending path."""


# NNX type -> its torch twin. A pair of live models must pair every module this way.
TWINS: dict[type, type] = {
    nnx.Linear: nn.Linear,
    nnx.Conv: nn.Conv1d,
    jmamba.CausalDepthwiseConv1d: nn.Conv1d,
    jtcn.WeightNormConv1d: ttcn.WeightNormConv1d,
    nnx.LayerNorm: nn.LayerNorm,
    jmamba.GatedRMSNorm: tmamba.GatedRMSNorm,
    jmamba.Mamba2: tmamba.Mamba2,
    jmodel.SeizureDetector: tmodel.SeizureDetector,
    jtcn.TCNEncoder: ttcn.TCNEncoder,
    jtcn.ProjectionHead: ttcn.ProjectionHead,
    jmamba.BiMamba2: tmamba.BiMamba2,
    jmamba.BiMamba2Layer: tmamba.BiMamba2Layer,
    jgnn.GraphMixer: tgnn.GraphMixer,
    jgnn.SSGConv: tgnn.SSGConv,
    nnx.List: nn.ModuleList,
    nnx.Dropout: nn.Dropout,
}
assert TWINS.keys() == LEAVES.keys(), "every NNX type of jaxbrr.weights.LEAVES needs its torch twin here"


def plan(jax_model: nnx.Module, torch_model: nn.Module | None = None) -> list[Entry]:
    """One Entry per leaf (jaxbrr.weights.plan); with torch_model also the twin checks."""
    if torch_model is None:
        return nnx_plan(jax_model)
    problems: list[str] = []
    jax_modules = {dotted(path): module for path, module in nnx.iter_modules(jax_model)}
    torch_modules = dict(torch_model.named_modules())
    for name in sorted(torch_modules.keys() - jax_modules.keys()):
        problems.append(f"{name or '<root>'}: torch {type_name(type(torch_modules[name]))} has no NNX module")
    for name, module in jax_modules.items():
        twin = torch_modules.get(name)
        if twin is None:
            problems.append(f"{name or '<root>'}: NNX {type_name(type(module))} has no torch module")
        elif type(twin) is not TWINS.get(type(module)):
            problems.append(f"{name or '<root>'}: no rule for the pair ({type_name(type(twin))}, {type_name(type(module))})")
    entries = []
    try:
        entries = nnx_plan(jax_model)
    except WeightsError as error:
        problems += error.problems
    problems += key_problems([e.torch_key for e in entries], torch_model.state_dict().keys(), "the torch model")
    if problems:
        raise ConversionError(f"torch <-> NNX table ({type(jax_model).__name__})", problems)
    return entries


def to_numpy(value) -> np.ndarray:
    """torch tensor, jax array or numpy array -> numpy array (no dtype change; bfloat16 as
    ml_dtypes' bfloat16, which JAX takes, through float32, which holds every bfloat16 exactly)."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bfloat16:
            import ml_dtypes

            return value.detach().cpu().float().numpy().astype(ml_dtypes.bfloat16)
        if value.dtype not in (torch.float32, torch.float64, torch.float16):
            raise TypeError(f"weights of dtype {value.dtype} are not supported (bfloat16, float16/32/64 are)")
        return value.detach().cpu().numpy()
    return np.asarray(value)


def weight_problems(shapes: dict[str, tuple[int, ...]], arrays: dict[str, np.ndarray], source: str) -> list[str]:
    """Every way neutral `arrays` do not fit a torch model whose state dict has `shapes` (a model's
    own, or torch_shapes of a config): a name on one side only, a shape that differs; [] when they fit."""
    problems = key_problems(shapes.keys(), arrays.keys(), source)
    return problems + [f"{key}: shape {tuple(arrays[key].shape)} vs torch {tuple(shape)}"
                       for key, shape in shapes.items() if key in arrays and tuple(arrays[key].shape) != tuple(shape)]


def _fill_torch(torch_model: nn.Module, arrays: dict[str, np.ndarray], source: str) -> None:
    """Write neutral `arrays` into torch_model's state-dict tensors: a narrower float (float16,
    bfloat16) widened to the tensor's own dtype, exactly, as jaxbrr/weights.py `fill` does; any
    other keeps its dtype (float64 stays float64: never truncated)."""
    targets = torch_model.state_dict(keep_vars=True)
    problems = weight_problems({key: tuple(t.shape) for key, t in targets.items()}, arrays, source)
    if problems:
        raise ConversionError(f"{source} -> torch ({type(torch_model).__name__})", problems, CONFIG_FIX)
    with torch.no_grad():
        for key, tensor in targets.items():
            value = torch.from_numpy(torch_compatible(arrays[key]))  # a bfloat16 file's: float32, exactly
            if value.is_floating_point() and torch.promote_types(value.dtype, tensor.dtype) == tensor.dtype:
                value = value.to(tensor.dtype)  # exact: a half-precision file; a wider one keeps its dtype
            tensor.data = value.to(tensor.device)


def _widened_notes(read: dict[str, np.ndarray], written: dict[str, np.ndarray], source: str) -> list[str]:
    """jaxbrr/weights.py fill's note, for tensors written into torch in a wider dtype than read."""
    return widening_notes(Counter((read[k].dtype.name, written[k].dtype.name) for k in written
                                  if read[k].dtype != written[k].dtype), source)


def _fill_jax(jax_model: nnx.Module, arrays: dict[str, np.ndarray], source: str) -> None:
    """jaxbrr.weights.fill, its problems raised as a ConversionError."""
    try:
        fill(jax_model, arrays, source)
    except WeightsError as error:
        raise ConversionError(f"{source} -> NNX", error.problems, error.fix) from None


def torch_to_jax(torch_model: nn.Module, jax_model: nnx.Module) -> None:
    """Fill jax_model's Params, in place, from torch_model (values keep torch's dtype)."""
    plan(jax_model, torch_model)  # the twin checks
    _fill_jax(jax_model, {key: to_numpy(value) for key, value in torch_model.state_dict().items()}, "the torch model")


def jax_to_torch(jax_model: nnx.Module, torch_model: nn.Module) -> None:
    """Fill torch_model's parameters, in place, from jax_model (values keep the NNX dtype)."""
    plan(jax_model, torch_model)
    _fill_torch(torch_model, to_neutral(jax_model), "the NNX model")


# ----------------------------------------------------------------------------------------------
# the framework-neutral weights file


def _framework(model) -> str:
    if isinstance(model, nn.Module):
        return "torch"
    if isinstance(model, nnx.Module):
        return "jax"
    raise TypeError(f"expected a torch nn.Module or an nnx.Module, got {type(model).__name__}")


def save_weights(path: str | Path, model) -> None:
    """Torch state-dict names and layouts, from either framework, plus the model config."""
    framework = _framework(model)
    arrays = ({key: to_numpy(v) for key, v in model.state_dict().items()} if framework == "torch"
              else to_neutral(model))
    write_neutral(path, arrays, getattr(model, "config", None), framework)


def read_metadata(path: str | Path) -> dict:
    """{format, format_version, framework, config (a dict or None)} of a weights file."""
    return read_neutral_metadata(path)


def load_weights(path: str | Path, model) -> dict:
    """Fill `model` (torch or NNX), in place, from a weights file; returns the file's metadata."""
    metadata = read_metadata(path)
    arrays = read_neutral(path)
    if _framework(model) == "torch":
        _fill_torch(model, arrays, str(path))
    else:
        _fill_jax(model, arrays, str(path))
    return metadata


def config_from_metadata(metadata: dict) -> ModelConfig:
    if metadata["config"] is None:
        raise ValueError("the weights file carries no model config; pass --config")
    return TypeAdapter(ModelConfig).validate_python(metadata["config"])


def torch_shapes(model_config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Neutral name -> shape of torchref's model of `model_config` (for an original checkpoint)."""
    return {key: tuple(value.shape) for key, value in tmodel.SeizureDetector(model_config).state_dict().items()}


# ----------------------------------------------------------------------------------------------
# CLI


def read_any(path: str | Path, config_path: str | Path | None = None):
    """Neutral weights of any kind (common.checkpoints.read_weights); a jaxbrr checkpoint without
    its neutral copy is restored through orbax (JAX is here anyway)."""
    located = locate(path)
    if located.kind in ("jaxbrr", "nan_dump"):
        try:
            return read_weights(path, config_path, torch_shapes)
        except CheckpointError as error:
            if "neutral copy" not in str(error):
                raise
        from jaxbrr.weights import load_model

        config, model, located, notes = load_model(path, config_path)
        return Weights(config, to_neutral(model), located.kind, located.path, notes)
    return read_weights(path, config_path, torch_shapes)


def write_jaxbrr_checkpoint(folder: Path, config, arrays: dict[str, np.ndarray],
                            source: str, step: int = 0) -> tuple[Path, list[str]]:
    """A jaxbrr run folder holding one `best` checkpoint of these weights at `step` (the step the
    source run saved them at, 0 for weights of no run), with a fresh optimizer: what predict,
    evaluate and `train --init-from` open; (its step folder, fill's notes)."""
    import dataclasses

    from common.train.loop import Progress
    from jaxbrr.model import SeizureDetector
    from jaxbrr.train.checkpoint import Checkpoints
    from jaxbrr.train.optim import make_nnx_optimizer

    held = sorted(str(p.relative_to(folder)) for p in folder.glob("checkpoints/*/*"))
    if held:  # a run's own checkpoints: keep=1 would delete its best, and its last would stay beside
        raise CheckpointError(f"{folder} already holds checkpoints ({shown_inline(held)}): convert into a new folder")
    model = SeizureDetector(config.model, rngs=nnx.Rngs(config.train.seed))
    notes = fill(model, arrays, source)
    optimizer = make_nnx_optimizer(model, config.train, 1)
    meta = {"config": config_to_dict(config), "progress": dataclasses.asdict(Progress(step=step)),
            "converted_from": source}
    checkpoints = Checkpoints(folder, keep=1)
    try:
        return checkpoints.save("best", step, model, optimizer, meta, to_neutral(model)), notes
    finally:
        checkpoints.close()


PT_SUFFIXES = (".pt", ".pth")  # what OUT may end in for a torchref state dict (torch.save's)


def _bare_state_dict_note(out: Path, model: ModelConfig, own: list[str]) -> str:
    """A state dict carries no config: what reading `out` back needs (--config with this model
    section), and what else of the weights' own is left behind."""
    changed = config_differences(config_to_dict(model), config_to_dict(ModelConfig()), "model.")
    described = ("the defaults (configs/tusz.yaml's)" if not changed else "configs/tusz.yaml's with "
                 + ", ".join(f"{name} {mine!r}" for name, _, mine in changed))
    left = f"; nor the checkpoint's own {' and '.join(own)}" if own else ""
    return (f"{out} is a bare state dict: it carries no config{left}. Reading it back needs --config with this "
            f"model section: {described}. A .safetensors file or a folder (a jaxbrr checkpoint) keeps the config")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m parity.convert",
        description="Convert model weights between every kind this project reads: IN is a jaxbrr or "
                    "torchref run folder (or one checkpoint of it), a .pt (torchref state dict or "
                    "training checkpoint, or a brain-go-brr v2 checkpoint), a .safetensors file or a NaN "
                    "dump; OUT is a .safetensors file, a .pt state dict, or a folder (a jaxbrr checkpoint "
                    "that predict, evaluate and train --init-from open).",
    )
    parser.add_argument("input", type=Path, help="IN: weights of any kind")
    parser.add_argument("output", type=Path, help="OUT: .safetensors, .pt, or a folder for a jaxbrr checkpoint")
    parser.add_argument("--config", type=Path, help="run config YAML, for weights that carry none (a bare state "
                        "dict, an original checkpoint without its config); its `model` must describe them")
    args = parser.parse_args(argv)
    try:
        weights = read_any(args.input, args.config)
        out, notes = args.output, list(weights.notes)
        if out.suffix in (".safetensors", *PT_SUFFIXES):  # a file of wrong names would fail only where it is read
            model = tmodel.SeizureDetector(weights.config.model, 0)  # checks every name and shape
            _fill_torch(model, weights.arrays, str(args.input))  # in the model's dtype, as jaxbrr's fill
            written = {key: value.detach().numpy() for key, value in model.state_dict().items()}
            notes += _widened_notes(weights.arrays, written, str(args.input))
        # an original checkpoint's own sections beyond its model (or a file's converted from one)
        own = [{"postprocess": "post-processing", "loss": "loss"}[s] for s in weights.own_sections]
        if out.suffix in PT_SUFFIXES:
            notes.append(_bare_state_dict_note(out, weights.config.model, own))
        if out.suffix == ".safetensors":
            # a run's whole config goes with its weights (a NaN dump's too): windows, post-processing,
            # evaluation; else the post-processing and loss the weights carry, if any
            run_config = weights.config if carries_run_config(weights.kind, weights.path, args.config) else None
            mine = () if run_config is not None else weights.own_sections
            postprocess = weights.config.postprocess if "postprocess" in mine else None
            loss = {f: getattr(weights.config.train, f) for f in LOSS_FIELDS} if "loss" in mine else None
            write_neutral(out, written, weights.config.model, "neutral", run_config=run_config, postprocess=postprocess,
                          loss=loss)
            kind_out = "neutral weights file"
        elif out.suffix in PT_SUFFIXES:
            from common.files import atomic_path

            with atomic_path(out) as tmp:
                torch.save(model.state_dict(), tmp)
            kind_out = "torchref state dict"
        elif out.suffix:
            raise CheckpointError(f"{out}: OUT must be a .safetensors, .pt or .pth file, or a folder (no suffix)")
        else:
            step = int(((weights.meta or {}).get("progress") or {}).get("step", 0))  # a run's: kept
            out, widened = write_jaxbrr_checkpoint(out, weights.config, weights.arrays, str(args.input), step)
            notes += widened
            kind_out = "jaxbrr checkpoint"
    except (CheckpointError, WeightsError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    values = sum(int(np.prod(a.shape)) for a in weights.arrays.values())
    dtypes = "/".join(sorted({a.dtype.name for a in weights.arrays.values()}))
    print(f"{args.input} ({weights.kind}) -> {out} ({kind_out})\n  {len(weights.arrays)} tensors, {values:,} values, "
          f"dtype {dtypes} as read; model {weights.config.model.architecture}")
    for note in notes:
        print(f"  {note}")
    for name, (nan, inf) in nonfinite_tensors(weights.arrays).items():  # converted as they are: evidence
        print(f"  note: {name} holds {nan} NaN, {inf} Inf in shape {tuple(weights.arrays[name].shape)}: these "
              "weights compute NaN; `python -m parity.localize` names them as its WEIGHTS verdict")
    return 0


if __name__ == "__main__":
    sys.exit(main())
