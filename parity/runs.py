"""One framework's forward and backward on one batch, stage by stage: what the localiser compares.

    run = run_jax(jax_model, batch, train_cfg)      # or run_torch(torch_model, batch, train_cfg, shapes)
    run.taps["adjacency"], run.cotangents["adjacency"], run.grads["gnn.norms.0.weight"]

Both models are graphs of stages (`ModelConfig.stage_inputs`, `SeizureDetector.stages()`). A run
adds a zero `perturbation` to every stage output, so the gradient of the loss with respect to it
is the cotangent ∂loss/∂tap, summed over every path, in both frameworks alike. Arrays come back
as numpy in the tap layout (torchref's); parameter gradients under torch state-dict names and
layout (parity/convert.py's rules, all of which are linear, so they carry gradients too).

Stage replay (`*_stage_forward`, `*_local_cotangent`) evaluates one stage, or the backward of the
stages that consume one tap, on inputs given from outside (the other framework's), so a local
difference can be told from one inherited from upstream. `torch_first_nonfinite` and
`jax_first_nonfinite` name the operation where a non-finite value is born.
"""

from __future__ import annotations

import functools
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from jax.experimental import checkify
from torch.utils._python_dispatch import TorchDispatchMode

import jaxbrr.train.loss as jloss
import torchref.train.loss as tloss
from common.config import ModelConfig, TrainConfig
from common.stages import parameter_stages, run_stages
from parity.convert import plan

LOSS = "loss"  # the pseudo-stage after logits: the training loss of the batch


@dataclass
class Batch:
    x: np.ndarray  # (B, C, T) float32, preprocessed
    y: np.ndarray | None = None  # (B, T) 0/1 labels; None: all zero (background), and said so
    valid: np.ndarray | None = None  # (B,) bool: windows that count in the loss; None: all
    pos_weight: float = 1.0  # the loss's positive-class weight, as the training step had it

    def labels(self) -> np.ndarray:
        return self.y if self.y is not None else np.zeros(self.x.shape[::2], np.float32)


@dataclass
class Run:
    framework: str  # "torch" | "jax"
    dtype: str
    taps: dict[str, np.ndarray]  # forward, in forward order
    loss: np.ndarray  # () the batch's training loss
    cotangents: dict[str, np.ndarray]  # ∂loss/∂tap, same names as taps
    grads: dict[str, np.ndarray]  # torch state-dict name -> ∂loss/∂parameter
    errors: dict[str, str] = field(default_factory=dict)  # stage -> what it raised (torch only)


def consumers(stage_inputs: dict[str, tuple[str, ...]], tap: str) -> list[str]:
    """The stages that read `tap` (LOSS for the logits)."""
    found = [name for name, inputs in stage_inputs.items() if tap in inputs]
    return found or [LOSS]


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    value = np.asarray(value)
    return value.astype(np.float32) if value.dtype.name == "bfloat16" else value


# ----------------------------------------------------------------------------------------------
# torch


def _tensor(array, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    """A torch copy of a numpy array (taps that came back from JAX are read-only views)."""
    return torch.tensor(np.asarray(array), dtype=dtype, device=device)


def _where(model: torch.nn.Module) -> tuple[torch.dtype, torch.device]:
    parameter = next(model.parameters())
    return parameter.dtype, parameter.device


def _torch_loss(logits, batch: Batch, cfg: TrainConfig) -> torch.Tensor:
    labels = _tensor(batch.labels(), logits.dtype, logits.device)
    valid = torch.tensor(batch.valid, device=logits.device) if batch.valid is not None else None
    return tloss.compute_loss(logits, labels, cfg, batch.pos_weight, valid)


def _raised_stage(shape: tuple, inputs: list[torch.Tensor], dtype) -> torch.Tensor:
    """A stage whose linear algebra raised (torch.linalg.eigh does, on NaN input, where JAX returns
    NaN) outputs NaN, and its derivative is NaN too: 0·Σinputs ties the NaN cotangent to every
    input. Only LinAlgError: any other error is the harness's or the model's bug (a dtype mismatch),
    raised, not read as a non-finite stage."""
    device = inputs[0].device
    tie = sum((0 * t.sum() for t in inputs if t.requires_grad), torch.zeros((), dtype=dtype, device=device))
    return torch.full(shape, math.nan, dtype=dtype, device=device) + tie


def run_torch(model: torch.nn.Module, batch: Batch, cfg: TrainConfig, shapes: dict[str, tuple]) -> Run:
    """Forward tap by tap, the loss, and ∂loss/∂(every tap and parameter), in the model's dtype.
    `shapes` (tap -> shape) stands in for a stage that raises. Runs on the model's device."""
    dtype, device = _where(model)
    perturbations, errors = {}, {}

    def guarded(name, stage):  # a stage whose eigh raises yields NaN (see _raised_stage)
        def run(*inputs):
            try:
                return stage(*inputs)
            except torch.linalg.LinAlgError as error:
                errors[name] = str(error).splitlines()[0]
                return _raised_stage(shapes[name], list(inputs), dtype)
        return run

    def perturbed(name, out):
        perturbations[name] = torch.zeros_like(out, requires_grad=True)
        return out + perturbations[name]

    stages = {name: guarded(name, stage) for name, stage in model.stages().items()}
    values = run_stages(stages, model.config.stage_inputs, _tensor(batch.x, dtype, device), perturbed)
    loss = _torch_loss(values["logits"], batch, cfg)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, [*perturbations.values(), *params.values()], allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(t)
             for g, t in zip(grads, [*perturbations.values(), *params.values()], strict=True)]
    n = len(perturbations)
    return Run(
        framework="torch", dtype=str(dtype).removeprefix("torch."),
        taps={name: _numpy(values[name]) for name in perturbations}, loss=_numpy(loss),
        cotangents={name: _numpy(g) for name, g in zip(perturbations, grads[:n], strict=True)},
        grads={name: _numpy(g) for name, g in zip(params, grads[n:], strict=True)}, errors=errors,
    )


def torch_stage_forward(model: torch.nn.Module, name: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """One stage of the torch model on given (numpy) inputs."""
    dtype, device = _where(model)
    args = [_tensor(inputs[i], dtype, device) for i in model.config.stage_inputs[name]]
    with torch.no_grad():
        return _numpy(model.stages()[name](*args))


def _torch_inner(model, tap, value, values, cotangents, batch, cfg):
    """Σ over the consumers c of `tap` of <c(inputs with tap = value), ∂loss/∂c> (the loss itself
    for the logits): its gradient in `value` is the tap's cotangent given the consumers'."""
    dtype, device = value.dtype, value.device
    stage_inputs, stages = model.config.stage_inputs, model.stages()
    total = torch.zeros((), dtype=dtype, device=device)
    for consumer in consumers(stage_inputs, tap):
        if consumer == LOSS:
            total = total + _torch_loss(value, batch, cfg)
            continue
        args = [value if i == tap else _tensor(values[i], dtype, device)
                for i in stage_inputs[consumer]]
        cotangent = _tensor(cotangents[consumer], dtype, device)
        total = total + (stages[consumer](*args) * cotangent).sum()
    return total


def torch_local_cotangent(model, tap: str, values: dict, cotangents: dict, batch: Batch, cfg: TrainConfig) -> np.ndarray:
    """∂loss/∂tap from the consumers' cotangents and forward inputs given from outside."""
    dtype, device = _where(model)
    value = _tensor(values[tap], dtype, device).requires_grad_(True)
    total = _torch_inner(model, tap, value, values, cotangents, batch, cfg)
    (grad,) = torch.autograd.grad(total, [value], allow_unused=True)
    return _numpy(grad if grad is not None else torch.zeros_like(value))


class _FirstNonFinite(TorchDispatchMode):
    """Records the first aten op whose output holds NaN/Inf while its inputs are all finite, and
    the autograd node running it (in a backward pass: e.g. LinalgEighBackward0)."""

    def __init__(self):
        super().__init__()
        self.found: str | None = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.found is not None:
            return func(*args, **(kwargs or {}))
        inputs = [t for t in torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor) and t.is_floating_point()]
        finite = all(bool(torch.isfinite(t).all()) for t in inputs)  # before: ops may work in place
        out = func(*args, **(kwargs or {}))
        outputs = [t for t in torch.utils._pytree.tree_leaves(out)
                   if isinstance(t, torch.Tensor) and t.is_floating_point()]
        if finite and any(not bool(torch.isfinite(t).all()) for t in outputs):
            node = torch._C._current_autograd_node()
            self.found = str(func) + (f" in {node.name()}" if node is not None else "")
        return out


def torch_first_nonfinite(fn: Callable[[], object]) -> str | None:
    """The op where fn() first makes a non-finite value from finite ones (or what it raised)."""
    mode = _FirstNonFinite()
    try:
        with mode:
            fn()
    except RuntimeError as error:
        return mode.found or f"raised: {str(error).splitlines()[0]}"
    return mode.found


# ----------------------------------------------------------------------------------------------
# jax


def _jax_loss(logits, batch: Batch, cfg: TrainConfig) -> jax.Array:
    labels = jnp.asarray(batch.labels(), logits.dtype)
    valid = jnp.asarray(batch.valid) if batch.valid is not None else None
    return jloss.compute_loss(logits, labels, cfg, batch.pos_weight, valid)


def _jax_forward(model: nnx.Module, x, perturbations: dict | None) -> dict:
    after = None if perturbations is None else (lambda name, out: out + perturbations[name])
    return run_stages(model.stages(), model.config.stage_inputs, x, after)


def tap_shapes(model: nnx.Module, x: np.ndarray) -> dict[str, jax.ShapeDtypeStruct]:
    """Every tap's shape and dtype, traced, nothing computed."""
    graphdef, state = nnx.split(model)
    return jax.eval_shape(lambda s, x: _jax_forward(nnx.merge(graphdef, s), x, None), state, x)


def _param_dtype(model: nnx.Module):
    return jax.tree.leaves(nnx.state(model, nnx.Param))[0].dtype


def _loss_config(cfg: TrainConfig) -> TrainConfig:
    """The fields of `cfg` the loss reads (jaxbrr/train/loss.py compute_loss), the rest at their
    defaults: runs whose configs differ elsewhere (a scenario's train.lr) share one compile."""
    return TrainConfig(loss=cfg.loss, focal_alpha=cfg.focal_alpha, focal_gamma=cfg.focal_gamma)


@functools.cache
def _loss_and_grads(graphdef: nnx.GraphDef, cfg: TrainConfig) -> Callable:
    """jit(value_and_grad) of the staged forward and loss, for one model structure and loss
    config (_loss_config): runs of the same structure (scenarios, dumps, dtypes apart) share one
    compile."""

    def loss_of(params, perturbations, rest, x, labels, pos_weight, valid):
        # merge keeps the Variable objects it is given: `rest` must be copied into this trace
        # (see _in_this_trace)
        fresh = jax.tree.map(lambda leaf: leaf, rest)
        values = _jax_forward(nnx.merge(graphdef, params, fresh), x, perturbations)
        return jloss.compute_loss(values["logits"], labels, cfg, pos_weight, valid), values

    return jax.jit(jax.value_and_grad(loss_of, argnums=(0, 1), has_aux=True))


def run_jax(model: nnx.Module, batch: Batch, cfg: TrainConfig) -> Run:
    """As run_torch: forward taps, loss, ∂loss/∂(taps, parameters); one jit."""
    dtype = _param_dtype(model)
    x = jnp.asarray(batch.x, dtype)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    shapes = tap_shapes(model, x)
    perturbations = {name: jnp.zeros(s.shape, s.dtype) for name, s in shapes.items()}
    labels = jnp.asarray(batch.labels(), dtype)
    valid = jnp.asarray(batch.valid) if batch.valid is not None else None
    (loss, values), (param_grads, cotangents) = _loss_and_grads(graphdef, _loss_config(cfg))(
        params, perturbations, rest, x, labels, jnp.asarray(batch.pos_weight, dtype), valid)
    by_path = dict(nnx.to_flat_state(param_grads))
    grads = {entry.torch_key: np.ascontiguousarray(entry.leaf.to_torch(_numpy(by_path[entry.nnx_path].get_value())))
             for entry in plan(model)}
    return Run(
        framework="jax", dtype=jnp.dtype(dtype).name, taps={name: _numpy(values[name]) for name in shapes},
        loss=_numpy(loss), cotangents={name: _numpy(cotangents[name]) for name in shapes}, grads=grads,
    )


def _in_this_trace(model: nnx.Module) -> nnx.Module:
    """A copy of `model` whose Variables belong to the current trace: the remat path updates RNG
    counters in place, which NNX refuses for a Variable made in an outer trace (jit's, under grad)."""
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.tree.map(lambda leaf: leaf, state))


def _functional(model: nnx.Module, body: Callable) -> tuple[Callable, nnx.State]:
    """(fn, state): body(model, *args) as fn(state, *args), pure, for jit and checkify (the
    weights are an argument, not constants baked into the compiled code)."""
    graphdef, state = nnx.split(model)
    return (lambda state, *args: body(nnx.merge(graphdef, state), *args)), state


def _jax_stage_fn(model: nnx.Module, name: str) -> Callable:
    inputs = model.config.stage_inputs[name]
    return _functional(model, lambda m, values: m.stages()[name](*(values[i] for i in inputs)))


def _jax_values(model: nnx.Module, values: dict[str, np.ndarray], names) -> dict[str, jax.Array]:
    dtype = _param_dtype(model)
    return {name: jnp.asarray(values[name], dtype if values[name].dtype.kind == "f" else None) for name in names}


def jax_stage_forward(model: nnx.Module, name: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """One stage of the NNX model on given (numpy) inputs."""
    values = _jax_values(model, inputs, model.config.stage_inputs[name])
    fn, state = _jax_stage_fn(model, name)
    return _numpy(jax.jit(fn)(state, values))


def _jax_cotangent_fn(model: nnx.Module, tap: str, batch: Batch, cfg: TrainConfig) -> Callable:
    stage_inputs = model.config.stage_inputs

    def cotangent(m, value, values, cotangents):
        def inner(value):
            local = _in_this_trace(m)
            total = jnp.zeros((), value.dtype)
            for consumer in consumers(stage_inputs, tap):
                if consumer == LOSS:
                    total = total + _jax_loss(value, batch, cfg)
                    continue
                args = [value if i == tap else values[i] for i in stage_inputs[consumer]]
                total = total + (local.stages()[consumer](*args) * cotangents[consumer]).sum()
            return total

        return jax.grad(inner)(value)

    return _functional(model, cotangent)


def _cotangent_args(model, tap, values, cotangents):
    stage_inputs = model.config.stage_inputs
    users = [c for c in consumers(stage_inputs, tap) if c != LOSS]
    needed = {i for c in users for i in stage_inputs[c]} - {tap}
    return (_jax_values(model, values, [tap])[tap], _jax_values(model, values, needed),
            _jax_values(model, cotangents, users))


def jax_local_cotangent(model, tap: str, values: dict, cotangents: dict, batch: Batch, cfg: TrainConfig) -> np.ndarray:
    """∂loss/∂tap from the consumers' cotangents and forward inputs given from outside."""
    fn, state = _jax_cotangent_fn(model, tap, batch, cfg)
    return _numpy(jax.jit(fn)(state, *_cotangent_args(model, tap, values, cotangents)))


# The project's code: its packages' files in the repository (not .venv's site-packages: jax, flax,
# einops; nor a cached Triton build beside them).
_REPOSITORY = Path(__file__).absolute().parents[1]
_PACKAGES = ("jaxbrr", "torchref", "parity", "common")


def _op_frame(frames: list[tuple[str, int, str]]) -> str:
    """" at FILE:LINE (FUNCTION)" of the op, from (file, line, function) frames, innermost first:
    the innermost frame of the project's code, so neither a library's internals nor a wrapper
    that only calls the stage (jaxbrr/model.py's named scope, an upcast) is named; else the
    outermost frame recorded (an op traced inside a library's own jit records no frame above it)."""

    def ours(file: str) -> bool:
        path = Path(file)
        return path.is_relative_to(_REPOSITORY) and path.relative_to(_REPOSITORY).parts[0] in _PACKAGES

    frame = next((f for f in frames if ours(f[0])), frames[-1] if frames else None)
    if frame is None:
        return ""
    file, line, function = frame
    short = Path(file).relative_to(_REPOSITORY).as_posix() if ours(file) else file.split("site-packages/")[-1]
    return f" at {short}:{line} ({function})"


def _source_line(error: BaseException) -> str:
    """Where error's (Python) traceback met the op: _op_frame."""
    frames = traceback.extract_tb(error.__traceback__)
    return _op_frame([(f.filename, f.lineno, f.name) for f in reversed(frames)])


def _checkify_location(error: BaseException) -> str:
    """Where checkify saw the primitive: _op_frame of the traceback recorded with the jaxpr equation."""
    traceback_info = getattr(error, "traceback_info", None)
    frames = list(traceback_info.frames) if traceback_info is not None else []
    return _op_frame([(f.file_name, f.line_num, f.function_name) for f in frames])


def jax_first_nonfinite(fn: Callable, *args) -> str | None:
    """The primitive where fn(*args) first makes a NaN (checkify's float checks: primitive and
    source line) or, failing that, an Inf (jax_debug_infs re-runs it op by op)."""
    error, _ = jax.jit(checkify.checkify(fn, errors=checkify.float_checks))(*args)
    exception = error.get_exception()
    if exception is not None:
        return str(exception).splitlines()[0].rstrip(".") + _checkify_location(exception)
    try:
        with jax.debug_infs(True):
            jax.block_until_ready(jax.jit(fn)(*args))
    except FloatingPointError as found:
        return str(found).splitlines()[0] + _source_line(found)
    return None


def jax_stage_op(model: nnx.Module, name: str, inputs: dict[str, np.ndarray]) -> str | None:
    values = _jax_values(model, inputs, model.config.stage_inputs[name])
    fn, state = _jax_stage_fn(model, name)
    return jax_first_nonfinite(fn, state, values)


def jax_cotangent_op(model, tap, values, cotangents, batch, cfg) -> str | None:
    fn, state = _jax_cotangent_fn(model, tap, batch, cfg)
    return jax_first_nonfinite(fn, state, *_cotangent_args(model, tap, values, cotangents))


def torch_stage_op(model, name: str, inputs: dict[str, np.ndarray]) -> str | None:
    return torch_first_nonfinite(lambda: torch_stage_forward(model, name, inputs))


def torch_cotangent_op(model, tap, values, cotangents, batch, cfg) -> str | None:
    return torch_first_nonfinite(lambda: torch_local_cotangent(model, tap, values, cotangents, batch, cfg))


def parameter_stage(config: ModelConfig) -> dict[str, str]:
    """Top-level module of the model -> the stage that runs it (for grouping gradients)."""
    return parameter_stages(config.architecture, config.graph.enabled)


# ----------------------------------------------------------------------------------------------
# the TCN's ReLU kinks: which side of 0 each pre-activation lies on, and float64 made to take a
# float32 run's sides (parity/localize.py `_kink_replay`)


def torch_relu_inputs(model: torch.nn.Module, x: np.ndarray) -> list[np.ndarray]:
    """Each TCN layer's ReLU input (its pre-activation), (B, C_i, T), for input tap `x`."""
    inputs = []
    hooks = [layer.register_forward_hook(lambda module, args, out: inputs.append(_numpy(out)))
             for layer in model.tcn.layers]
    dtype, device = _where(model)
    try:
        with torch.no_grad():
            model.tcn(_tensor(x, dtype, device))
    finally:
        for hook in hooks:
            hook.remove()
    return inputs


def jax_relu_inputs(model: nnx.Module, x: np.ndarray) -> list[np.ndarray]:
    """As torch_relu_inputs, from jaxbrr's TCN (channels-last inside; eval mode: no dropout)."""
    h = jnp.asarray(np.swapaxes(x, 1, 2), _param_dtype(model))  # (B, T, C)
    inputs = []
    for layer in model.tcn.layers:  # TCNEncoder.__call__'s loop, its pre-activations kept
        z = layer(h)
        inputs.append(np.swapaxes(_numpy(z), 1, 2))
        h = jax.nn.relu(z)
    return inputs


def run_torch_with_relu_signs(model: torch.nn.Module, batch: Batch, cfg: TrainConfig, shapes: dict[str, tuple],
                              signs: list[np.ndarray]) -> Run:
    """run_torch, each TCN ReLU taking the side of 0 `signs` gives (another run's), not its own:
    z becomes ±|z| by `signs` in the forward (a change no larger than |z|, which is within
    rounding of 0 where the two disagree), and the ReLU's derivative is `signs` in the backward."""
    dtype, device = _where(model)
    tiny = torch.finfo(dtype).tiny  # a pre-activation of exactly 0 taken as positive must pass its gradient

    def hook(index):
        def take_sides(module, args, z):
            side = torch.as_tensor(signs[index], device=device)
            wanted = torch.where(side, z.abs().clamp_min(tiny), -z.abs())
            return z + (wanted - z).detach()  # forward: wanted; backward: ∂/∂z = 1, then the ReLU's
        return take_sides

    hooks = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(model.tcn.layers)]
    try:
        return run_torch(model, batch, cfg, shapes)
    finally:
        for h in hooks:
            h.remove()


# ----------------------------------------------------------------------------------------------
# how much a Conv1d's or Linear's parameter gradients sum (parity/localize.py `_summation_bound`)

SUMMED_MODULES = (torch.nn.Conv1d, torch.nn.Linear)


def _abs_terms(module: torch.nn.Module, x: torch.Tensor, delta: torch.Tensor) -> tuple[dict[str, torch.Tensor], int]:
    """One call of `module` on input x with output cotangent delta: (parameter -> Σ|terms| of its
    gradient, n). ∇weight and ∇bias are sums over the positions the call applied them at (B·L
    for a Conv1d, every leading index for a Linear) of δ·x and of δ; Σ|terms| is the same sum of
    |δ|·|x| and of |δ|. n counts the positions whose cotangent is not all zero: a zero term adds
    exactly (Mamba2's causal conv computes d_conv − 1 outputs more than it keeps)."""
    x, delta = x.abs(), delta.abs()
    if isinstance(module, torch.nn.Conv1d):
        weight = torch.nn.grad.conv1d_weight(x, module.weight.shape, delta, module.stride, module.padding,
                                             module.dilation, module.groups)
        terms, n = {"weight": weight, "bias": delta.sum(dim=(0, 2))}, int((delta != 0).any(dim=1).sum())
    else:
        flat_x, flat_delta = x.reshape(-1, x.shape[-1]), delta.reshape(-1, delta.shape[-1])
        terms, n = {"weight": flat_delta.T @ flat_x, "bias": flat_delta.sum(dim=0)}, int((flat_delta != 0).any(dim=1).sum())
    return {name: value for name, value in terms.items() if getattr(module, name, None) is not None}, n


def summable(module: torch.nn.Module) -> bool:
    """A Conv1d or Linear whose gradients are plain sums over positions (zero padding, a padding
    given as numbers: torch.nn.grad.conv1d_weight takes no "same")."""
    if isinstance(module, torch.nn.Conv1d):
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    return isinstance(module, torch.nn.Linear)


def torch_gradient_sums(model: torch.nn.Module, batch: Batch, cfg: TrainConfig, shapes: dict[str, tuple],
                        modules: list[str]) -> dict[str, tuple[np.ndarray, int]]:
    """One forward + backward of `model` (run it in float64): for each named `summable` module,
    its parameters' state-dict name -> (Σ|terms| of the gradient, elementwise; n, the number of
    terms each element sums, over every call of the module)."""
    found: dict[str, list] = {name: [] for name in modules}  # name -> [(x, output)] per call
    named = dict(model.named_modules())

    def record(name):
        def hook(module, args, out):
            found[name].append([args[0].detach(), None])
            if out.requires_grad:
                out.register_hook(lambda grad, call=found[name][-1]: call.__setitem__(1, grad.detach()))
        return hook

    hooks = []
    try:
        for name in modules:
            hooks.append(named[name].register_forward_hook(record(name)))
        run_torch(model, batch, cfg, shapes)
    finally:
        for hook in hooks:
            hook.remove()
    sums = {}
    for name in modules:
        total, n = {}, 0
        for x, delta in found[name]:
            if delta is None:  # a call the loss does not reach
                continue
            terms, count = _abs_terms(named[name], x, delta)
            total = {key: total.get(key, 0) + value for key, value in terms.items()}
            n += count
        sums.update({f"{name}.{key}": (_numpy(value), n) for key, value in total.items()})
    return sums
