"""THE weight table torch <-> Flax NNX, and a framework-neutral weights file (DESIGN.md §4).

The two model trees carry the same attribute names (STYLE.md "Names"): torch
`node_mamba.layers.0.fwd.in_proj` is NNX `node_mamba / layers / 0 / fwd / in_proj`. The walk pairs
the modules by that path and looks the pair of module TYPES up in `RULES`; a rule lists the leaves
the pair owns directly and how each one changes layout. Nothing is guessed from shapes:

    torch module              NNX module                     torch leaf (layout)  NNX leaf (layout)
    nn.Linear                 nnx.Linear                     weight (out, in)     kernel (in, out)
                                                             bias (out,)          bias (out,)
    nn.Conv1d                 nnx.Conv                       weight (out, in, k)  kernel (k, in, out)
    nn.Conv1d (depthwise)     mamba.CausalDepthwiseConv1d    weight (C, 1, W)     kernel (W, 1, C)
                                                             bias                 bias (both optional)
    tcn.WeightNormConv1d      tcn.WeightNormConv1d           weight_v (out,in,k)  weight_v (k, in, out)
                                                             weight_g (out,1,1)   weight_g (out,)
                                                             bias                 bias
    nn.LayerNorm              nnx.LayerNorm                  weight, bias         scale, bias
    mamba.GatedRMSNorm        mamba.GatedRMSNorm             weight               weight
    mamba.Mamba2              mamba.Mamba2                   A_log, D, dt_bias    A_log, D, dt_bias
    containers (SeizureDetector, TCNEncoder, ProjectionHead, BiMamba2, BiMamba2Layer, GraphMixer,
    SSGConv, ModuleList/List, Dropout): no leaves of their own.

Dtype: values keep the SOURCE's dtype on both sides. torch_to_jax of a `.double()` torch model
makes the NNX parameters float64 (this needs jax_enable_x64 and raises without it, never truncates);
jax_to_torch sets each torch parameter's data to the NNX value's dtype. So a round trip is bit-exact.

Every problem (a module or leaf on one side only, a type pair without a rule, a torch leaf that no
rule reads, an NNX Param left unfilled or filled twice, a shape mismatch) is collected and raised
at once as a ConversionError naming each path, before anything is written.

Weights file: safetensors, keys = torch state-dict names, values = torch-layout arrays, metadata
{format, format_version, framework, config (ModelConfig JSON)}. CLI: python -m parity.convert --help
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
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
from common.config import ModelConfig, config_to_dict, load_config

FORMAT, FORMAT_VERSION = "jaxbrr.weights", "1"


class ConversionError(ValueError):
    """The two trees (or a file and a tree) do not match; `problems` names every offending path."""

    def __init__(self, what: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{what}: {len(problems)} problem(s)\n  " + "\n  ".join(problems))


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _transpose(a: np.ndarray) -> np.ndarray:
    return a.T  # (out, in) <-> (in, out)


def _reverse_axes(a: np.ndarray) -> np.ndarray:
    return a.transpose(2, 1, 0)  # (out, in, k) <-> (k, in, out): permute(2, 1, 0), an involution


def _gain_to_jax(g: np.ndarray) -> np.ndarray:
    return g.reshape(g.shape[0])  # (out, 1, 1) -> (out,)


def _gain_to_torch(g: np.ndarray) -> np.ndarray:
    return g.reshape(g.shape[0], 1, 1)  # (out,) -> (out, 1, 1)


class Leaf(NamedTuple):
    torch: str  # attribute name on the torch module (the state-dict suffix)
    nnx: str  # attribute name on the NNX module
    to_jax: Callable[[np.ndarray], np.ndarray] = _same  # torch layout -> NNX layout
    to_torch: Callable[[np.ndarray], np.ndarray] = _same  # NNX layout -> torch layout


LINEAR = (Leaf("weight", "kernel", _transpose, _transpose), Leaf("bias", "bias"))
CONV = (Leaf("weight", "kernel", _reverse_axes, _reverse_axes), Leaf("bias", "bias"))

RULES: dict[tuple[type, type], tuple[Leaf, ...]] = {
    (nn.Linear, nnx.Linear): LINEAR,
    (nn.Conv1d, nnx.Conv): CONV,
    (nn.Conv1d, jmamba.CausalDepthwiseConv1d): CONV,
    (ttcn.WeightNormConv1d, jtcn.WeightNormConv1d): (
        Leaf("weight_v", "weight_v", _reverse_axes, _reverse_axes),
        Leaf("weight_g", "weight_g", _gain_to_jax, _gain_to_torch),
        Leaf("bias", "bias"),
    ),
    (nn.LayerNorm, nnx.LayerNorm): (Leaf("weight", "scale"), Leaf("bias", "bias")),
    (tmamba.GatedRMSNorm, jmamba.GatedRMSNorm): (Leaf("weight", "weight"),),
    # Mamba2's bare parameters; its in_proj/conv1d/norm/out_proj are children with their own rules.
    (tmamba.Mamba2, jmamba.Mamba2): (Leaf("A_log", "A_log"), Leaf("D", "D"), Leaf("dt_bias", "dt_bias")),
    # Containers: no parameters of their own, but listed so an unknown module type is an error.
    (tmodel.SeizureDetector, jmodel.SeizureDetector): (),
    (ttcn.TCNEncoder, jtcn.TCNEncoder): (),
    (ttcn.ProjectionHead, jtcn.ProjectionHead): (),
    (tmamba.BiMamba2, jmamba.BiMamba2): (),
    (tmamba.BiMamba2Layer, jmamba.BiMamba2Layer): (),
    (tgnn.GraphMixer, jgnn.GraphMixer): (),
    (tgnn.SSGConv, jgnn.SSGConv): (),
    (nn.ModuleList, nnx.List): (),
    (nn.Dropout, nnx.Dropout): (),
}


def _rules_by_nnx_type() -> dict[type, tuple[Leaf, ...]]:
    """A weights file has no torch modules: there the NNX type alone picks the rule, which is
    unambiguous as long as every NNX type pairs with one leaf list (checked here, at import)."""
    by_type: dict[type, tuple[Leaf, ...]] = {}
    for (_, nnx_type), leaves in RULES.items():
        if by_type.setdefault(nnx_type, leaves) != leaves:
            raise AssertionError(f"RULES maps NNX type {nnx_type.__name__} to two different leaf lists")
    return by_type


RULES_BY_NNX_TYPE = _rules_by_nnx_type()


class Entry(NamedTuple):
    torch_key: str  # state-dict name, e.g. node_mamba.layers.0.fwd.in_proj.weight
    nnx_path: tuple  # e.g. ("node_mamba", "layers", 0, "fwd", "in_proj", "kernel")
    variable: nnx.Param
    leaf: Leaf


def _dotted(path: tuple) -> str:
    return ".".join(str(key) for key in path)  # torch's spelling; pairs the modules


def _slashed(path: tuple) -> str:
    return "/".join(str(key) for key in path)  # NNX's spelling, in messages about NNX Params


def _name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def plan(jax_model: nnx.Module, torch_model: nn.Module | None = None) -> list[Entry]:
    """One Entry per leaf, from walking the NNX modules (paired with torch's when given)."""
    problems: list[str] = []
    jax_modules = dict(nnx.iter_modules(jax_model))
    torch_modules = dict(torch_model.named_modules()) if torch_model is not None else None
    if torch_modules is not None:
        jax_names = {_dotted(path) for path in jax_modules}
        for name in sorted(torch_modules.keys() - jax_names):
            problems.append(f"{name or '<root>'}: torch {_name(type(torch_modules[name]))} has no NNX module")
        for path, module in jax_modules.items():
            if _dotted(path) not in torch_modules:
                problems.append(f"{_dotted(path) or '<root>'}: NNX {_name(type(module))} has no torch module")

    entries = []
    for path, module in jax_modules.items():
        name = _dotted(path)
        prefix = f"{name}." if name else ""
        if torch_modules is not None:
            torch_module = torch_modules.get(name)
            if torch_module is None:
                continue  # reported above
            leaves = RULES.get((type(torch_module), type(module)))
            if leaves is None:
                problems.append(f"{name or '<root>'}: no rule for the pair "
                                f"({_name(type(torch_module))}, {_name(type(module))})")
                continue
        else:
            leaves = RULES_BY_NNX_TYPE.get(type(module))
            if leaves is None:
                problems.append(f"{name or '<root>'}: no rule for NNX {_name(type(module))}")
                continue
        for leaf in leaves:
            variable = getattr(module, leaf.nnx, None)
            if variable is not None and not isinstance(variable, nnx.Param):
                problems.append(f"{_slashed((*path, leaf.nnx))}: NNX attribute is a {type(variable).__name__}, not a Param")
                continue
            if torch_modules is not None:
                tensor = getattr(torch_module, leaf.torch, None)
                if (tensor is None) != (variable is None):
                    side = "NNX" if tensor is None else "torch"
                    problems.append(f"{prefix}{leaf.torch}: present on the {side} side only")
                    continue
            if variable is None:  # e.g. a conv without bias, on both sides
                continue
            entries.append(Entry(f"{prefix}{leaf.torch}", (*path, leaf.nnx), variable, leaf))

    filled = Counter(entry.nnx_path for entry in entries)
    problems += [f"{_slashed(p)}: NNX Param filled {n} times" for p, n in filled.items() if n > 1]
    read = Counter(entry.torch_key for entry in entries)
    problems += [f"{key}: torch leaf read {n} times" for key, n in read.items() if n > 1]
    params = [path for path, node in nnx.iter_graph(jax_model) if isinstance(node, nnx.Param)]
    problems += [f"{_slashed(p)}: NNX Param is filled by no rule" for p in params if p not in filled]
    if torch_model is not None:
        problems += _key_problems(entries, torch_model.state_dict().keys(), "the torch model")
    if problems:
        raise ConversionError(f"torch <-> NNX table ({type(jax_model).__name__})", problems)
    return entries


def _key_problems(entries: list[Entry], keys, source: str) -> list[str]:
    wanted = {entry.torch_key for entry in entries}
    missing = [f"{key}: missing from {source}" for key in sorted(wanted - set(keys))]
    return missing + [f"{key}: torch leaf of {source} is read by no rule" for key in sorted(set(keys) - wanted)]


def to_numpy(value) -> np.ndarray:
    """torch tensor, jax array or numpy array -> numpy array (no dtype change)."""
    if isinstance(value, torch.Tensor):
        if value.dtype not in (torch.float32, torch.float64, torch.float16):
            raise TypeError(f"weights of dtype {value.dtype} are not supported (float16/32/64 are)")
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _fill_jax(entries: list[Entry], arrays: dict[str, np.ndarray], source: str) -> None:
    """Write torch-layout `arrays` into the NNX Params of `entries`, all checks first."""
    problems = _key_problems(entries, arrays.keys(), source)
    values = []
    for entry in entries:
        if entry.torch_key not in arrays:
            continue  # reported
        value = entry.leaf.to_jax(arrays[entry.torch_key])
        target = entry.variable.get_value()
        if value.shape != target.shape:
            problems.append(f"{entry.torch_key} -> {_slashed(entry.nnx_path)}: shape {value.shape} "
                            f"(after the layout change) vs NNX {target.shape}")
        elif value.dtype == np.float64 and not jax.config.jax_enable_x64:
            problems.append(f"{entry.torch_key}: float64 needs jax_enable_x64 (it would be truncated)")
        values.append((entry.variable, value))
    if problems:
        raise ConversionError(f"{source} -> NNX", problems)
    for variable, value in values:
        variable.set_value(jnp.asarray(value))


def _jax_arrays(entries: list[Entry]) -> dict[str, np.ndarray]:
    """torch state-dict name -> torch-layout numpy array, read from the NNX Params."""
    return {entry.torch_key: np.ascontiguousarray(entry.leaf.to_torch(np.asarray(entry.variable.get_value())))
            for entry in entries}


def _fill_torch(torch_model: nn.Module, arrays: dict[str, np.ndarray], source: str) -> None:
    """Write torch-layout `arrays` into torch_model's state-dict tensors (taking their dtype)."""
    targets = torch_model.state_dict(keep_vars=True)
    problems = [f"{key}: missing from {source}" for key in targets if key not in arrays]
    problems += [f"{key}: in {source} but not a torch state-dict entry" for key in arrays if key not in targets]
    problems += [f"{key}: shape {tuple(arrays[key].shape)} vs torch {tuple(t.shape)}"
                 for key, t in targets.items() if key in arrays and tuple(arrays[key].shape) != tuple(t.shape)]
    if problems:
        raise ConversionError(f"{source} -> torch ({type(torch_model).__name__})", problems)
    with torch.no_grad():
        for key, tensor in targets.items():
            tensor.data = torch.from_numpy(np.array(arrays[key])).to(tensor.device)


def torch_to_jax(torch_model: nn.Module, jax_model: nnx.Module) -> None:
    """Fill jax_model's Params, in place, from torch_model (values keep torch's dtype)."""
    entries = plan(jax_model, torch_model)
    arrays = {key: to_numpy(value) for key, value in torch_model.state_dict().items()}
    _fill_jax(entries, arrays, "the torch model")


def jax_to_torch(jax_model: nnx.Module, torch_model: nn.Module) -> None:
    """Fill torch_model's parameters, in place, from jax_model (values keep the NNX dtype)."""
    _fill_torch(torch_model, _jax_arrays(plan(jax_model, torch_model)), "the NNX model")


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
    if framework == "torch":
        arrays = {key: np.ascontiguousarray(to_numpy(v)) for key, v in model.state_dict().items()}
    else:
        arrays = _jax_arrays(plan(model))
    config = getattr(model, "config", None)
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "framework": framework,
                "config": json.dumps(config_to_dict(config) if config is not None else None)}
    safetensors.numpy.save_file(arrays, str(path), metadata=metadata)


def read_metadata(path: str | Path) -> dict:
    """{format, format_version, framework, config (a dict or None)} of a weights file."""
    with safetensors.safe_open(str(path), framework="np") as handle:
        metadata = dict(handle.metadata() or {})
    if metadata.get("format") != FORMAT or metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} file (metadata {metadata})")
    metadata["config"] = json.loads(metadata["config"])
    return metadata


def load_weights(path: str | Path, model) -> dict:
    """Fill `model` (torch or NNX), in place, from a weights file; returns the file's metadata."""
    metadata = read_metadata(path)
    arrays = safetensors.numpy.load_file(str(path))
    if _framework(model) == "torch":
        _fill_torch(model, arrays, str(path))
    else:
        _fill_jax(plan(model), arrays, str(path))
    return metadata


def config_from_metadata(metadata: dict) -> ModelConfig:
    if metadata["config"] is None:
        raise ValueError("the weights file carries no model config; pass --config")
    return TypeAdapter(ModelConfig).validate_python(metadata["config"])


# ----------------------------------------------------------------------------------------------
# CLI

KINDS = {".safetensors": "neutral weights file", ".pt": "torchref state dict"}


def _kind(path: Path) -> str:
    if path.suffix not in KINDS:
        raise SystemExit(f"{path}: unsupported ({', '.join(KINDS)} only; a jaxbrr checkpoint "
                         f"directory is not supported yet)")
    return path.suffix


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m parity.convert",
        description="Convert model weights between a framework-neutral .safetensors file and a "
                    "torchref .pt state dict (either direction). A jaxbrr checkpoint directory is "
                    "not supported yet (a later issue).",
    )
    parser.add_argument("input", type=Path, help="IN: .safetensors or .pt")
    parser.add_argument("output", type=Path, help="OUT: .safetensors or .pt")
    parser.add_argument("--config", type=Path, help="run config YAML (its `model` section is used); "
                        "needed when IN is a .pt, optional for a .safetensors IN (default: its metadata)")
    args = parser.parse_args(argv)
    kind_in, kind_out = _kind(args.input), _kind(args.output)

    if args.config is not None:
        config, config_source = load_config(args.config).model, str(args.config)
    elif kind_in == ".safetensors":
        config, config_source = config_from_metadata(read_metadata(args.input)), f"{args.input} metadata"
    else:
        raise SystemExit(f"{args.input}: a .pt state dict carries no config; pass --config CFG")

    # The torchref model checks every name and shape against the config on the way through.
    model = tmodel.SeizureDetector(config, 0)
    if kind_in == ".pt":
        state = torch.load(args.input, map_location="cpu", weights_only=True)
        _fill_torch(model, {key: to_numpy(v) for key, v in state.items()}, str(args.input))
    else:
        load_weights(args.input, model)
    if kind_out == ".pt":
        torch.save(model.state_dict(), args.output)
    else:
        save_weights(args.output, model)

    state = model.state_dict()
    dtypes = "/".join(sorted({str(t.dtype).removeprefix("torch.") for t in state.values()}))
    print(f"{args.input} ({KINDS[kind_in]}) -> {args.output} ({KINDS[kind_out]})\n  {len(state)} tensors, "
          f"{sum(t.numel() for t in state.values()):,} values, dtype {dtypes}; "
          f"config {config.architecture} from {config_source}")


if __name__ == "__main__":
    main()
