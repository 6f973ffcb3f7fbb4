"""The training loop in PyTorch (torchref twin of jaxbrr.train.loop.Trainer).

common.train.loop.Loop owns everything that is not the framework: data, balanced sampling per
(seed, epoch), validation on whole dev recordings, early stopping, metrics.jsonl + TensorBoard,
plots, the NaN policy. This Trainer implements its hooks with torch:

    one step:  loss_and_gradients (torchref/train/step.py) -> loss and gradient norm finite?
               -> running mean of train.grad_accum_steps micro-batch gradients (optax.MultiSteps)
               -> every k-th: apply_gradients (clip, AdamW, one LambdaLR step: the schedule counts updates)

A non-finite loss or gradient norm reaches neither the accumulator, nor the optimizer, nor the
schedule (checked before optimizer.step(); jaxbrr/train/step.py keeps its state the same way), whatever
`train.nan_policy` says: under `raise` the loop stops with the dump, under `skip` it counts the
step. `lr` in the metrics is that of the last applied update, as jaxbrr reports it.

Dropout: nn.Dropout draws from torch's global CPU generator, which takes no Generator argument.
So each step runs with the global generator set to the state of the run's own dropout Generator
(a stream of train.seed's own, not the init's) and gives that state back afterwards
(torch.random.fork_rng): the masks are a function of (seed, step), and nothing else that draws
from the global generator shifts them. The Generator's state is in every checkpoint, so `--resume`
reproduces the uninterrupted run's losses exactly (tests/torchref/test_loop.py).

    WORKDIR/checkpoints/{last,best}/step_NNNNNN.pt   {model, optimizer, scheduler, generator,
                                                      accumulator, lr, meta (Loop._meta())}
    WORKDIR/nan/step_NNNNNN/                         batch.npz, model.pt (the state dict from
                                                      before the step), nan.json

Both are written to a temporary name and renamed, so they are complete or absent. NNNNNN is the
number of batches done.

Device: CUDA when torch sees a GPU, else the CPU (the original's `device: auto`); the dropout
Generator lives on that device (on CUDA: Philox state, seeded alike, so CPU and GPU masks
differ). model.precision bfloat16 runs each stage under the model's autocast (torchref/model.py).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from common.checkpoints import read_weights, torchref_steps
from common.config import ConfigError
from common.files import atomic_path
from common.pt import torch_compatible
from common.train import dumps
from common.train.compat import check_init_config
from common.train.loop import Loop, StepFailed
from torchref.model import SeizureDetector, count_parameters
from torchref.precision import FULL_FLOAT32, set_triton_f32
from torchref.train.optim import make_optimizer
from torchref.train.step import apply_gradients, eval_step, loss_and_gradients

DROPOUT_STREAM = 1  # the dropout Generator's seed is SeedSequence([train.seed, DROPOUT_STREAM])


# The size of a torch.Generator's state: Philox (seed, offset) on CUDA, Mersenne Twister on the CPU.
CUDA_GENERATOR_BYTES, CPU_GENERATOR_BYTES = 16, 5056


def checkpoint_path(workdir: str | Path, kind: str, step: int) -> Path:
    return Path(workdir) / "checkpoints" / kind / f"step_{step:06d}.pt"


def checkpoint_steps(workdir: str | Path, kind: str) -> list[int]:
    """Steps of the complete checkpoints of one kind, oldest first (a leftover .tmp is not one)."""
    return [step for step, _ in torchref_steps(Path(workdir) / "checkpoints" / kind)]


def dropout_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    state = np.random.SeedSequence([seed, DROPOUT_STREAM]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state))


def configure_cuda(tf32: bool, device: torch.device) -> str | None:
    """On a CUDA device, process-wide: train.tf32 as torch's TF32 switches for float32 matmuls
    (cuBLAS) and convolutions (cuDNN; on by default in torch) and as Triton's float32 dot
    precision (torchref/precision.py: "ieee", or unset for Triton's TF32; set before the first
    kernel compiles, as here, before the model runs), and cudnn.benchmark (fixed shapes: cuDNN times its
    convolution algorithms once, as XLA autotunes). Returns 'tf32' or 'float32', or None on the
    CPU (nothing set)."""
    if device.type != "cuda":
        return None
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    set_triton_f32(None if tf32 else FULL_FLOAT32)
    torch.backends.cudnn.benchmark = True
    return "tf32" if tf32 else "float32"


def default_device() -> torch.device:
    """CUDA when torch sees a GPU, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _save_atomic(value, path: Path) -> None:
    with atomic_path(path) as tmp:
        try:
            torch.save(value, tmp)
        except RuntimeError as error:  # torch's zip writer: "[enforce fail at inline_container.cc] ... unexpected pos"
            raise OSError(f"{path}: the checkpoint could not be written (a full disk?): "
                          f"{str(error).splitlines()[0]}") from error


def write_dump(workdir: str | Path, config, model: torch.nn.Module, generator_state: torch.Tensor,
               batch: dict[str, np.ndarray], info: dict) -> Path:
    """common.train.dumps.write_dump with the model's state dict (the optimizer never stepped on
    it, so it is the state from before) as model.pt and the dropout Generator's state from before
    the step in nan.json (`torch.Generator(device).set_state` of the base64 bytes, on the kind of
    device named beside it: CUDA's Philox state does not fit a CPU Generator)."""
    state = base64.b64encode(generator_state.cpu().numpy().tobytes()).decode()
    device = "cuda" if generator_state.numel() == CUDA_GENERATOR_BYTES else "cpu"
    rng = {"dropout": {"generator_state_base64": state, "device": device}}
    return dumps.write_dump(workdir, config, batch, info, rng,
                            lambda folder: torch.save(model.state_dict(), folder / "model.pt"))


class Trainer(Loop):
    """The torchref loop: eager forward/backward on default_device(); torch.save checkpoints."""

    framework = "torchref"

    def _build(self) -> None:
        cfg = self.cfg
        self.device = default_device()
        self.float32_matmuls = configure_cuda(self.cfg.tf32, self.device)
        if cfg.checkify:  # it was ignored in silence: a run the user thought instrumented was not
            raise ConfigError("train.checkify instruments JAX's jitted step: torchref has no such mode; leave it "
                              "false (a non-finite step writes its dump, and `python -m parity.localize --dump` "
                              "names the op in both frameworks)")
        mesh = cfg.mesh
        if cfg.distributed.initialize or mesh.fsdp > 1 or mesh.data > 1:  # every host would train the whole batch
            raise ConfigError(f"train.distributed.initialize={cfg.distributed.initialize}, train.mesh.data={mesh.data}, "
                              f"train.mesh.fsdp={mesh.fsdp}: torchref trains on one device in one process; leave them "
                              "at their defaults (false, -1, 1), or train on several devices with python -m "
                              "jaxbrr.train")
        if self.config.model.ssm.backend == "cuda" and self.device.type != "cuda":
            raise ConfigError("model.ssm.backend = 'cuda' needs a CUDA GPU and torch sees none; "
                              "set model.ssm.backend=torch")
        self._hold_workdir()  # one process (refused above otherwise), before anything touches the workdir
        self.model = SeizureDetector(self.config.model, cfg.seed).to(self.device)
        # The loop accumulates (below), so the optimizer sees one averaged gradient per update.
        self.optimizer, self.scheduler = make_optimizer(
            self.model, dataclasses.replace(cfg, grad_accum_steps=1), self.total_updates)
        self.generator = dropout_generator(cfg.seed, self.device)
        self.generator_before = self.generator.get_state()
        self.micro_step = 0  # micro-batches in the running mean
        self.accumulated = [torch.zeros_like(p) for p in self.model.parameters()] if cfg.grad_accum_steps > 1 else []
        self.lr = self.optimizer.param_groups[0]["lr"]  # before any update: update 0's, as optax reports

    def devices(self) -> str:
        if self.device.type == "cuda":
            return (f"devices: {self.device} ({torch.cuda.get_device_name(self.device)}); float32 matmuls, "
                    f"convolutions and Triton dots: {self.float32_matmuls} (train.tf32)")
        return f"devices: cpu, torch {torch.get_num_threads()} threads"

    def parameter_count(self) -> int:
        return count_parameters(self.model)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)
        return eval_step(self.model, x).float().cpu().numpy()  # (B, T)

    # -- one step ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _dropout_rng(self):
        """Run the block with the device's global generator in the dropout Generator's state."""
        if self.device.type == "cuda":
            with torch.random.fork_rng(devices=[self.device], device_type="cuda"):
                torch.cuda.set_rng_state(self.generator.get_state(), self.device)
                yield
                self.generator.set_state(torch.cuda.get_rng_state(self.device))
            return
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.generator.get_state())
            yield
            self.generator.set_state(torch.get_rng_state())

    def _accumulate(self) -> bool:
        """Fold the micro-batch gradients in `.grad` into the running mean (optax.MultiSteps':
        acc + (g − acc)/(n + 1)); True when k are in, with their mean in `.grad` for the update."""
        k = self.cfg.grad_accum_steps
        if k == 1:
            return True
        n = self.micro_step
        for param, acc in zip(self.model.parameters(), self.accumulated, strict=True):
            grad = param.grad if param.grad is not None else torch.zeros_like(param)
            acc.add_((grad - acc) / (n + 1))
        self.micro_step = (n + 1) % k
        if self.micro_step:
            return False
        for param, acc in zip(self.model.parameters(), self.accumulated, strict=True):
            param.grad = acc.clone()
            acc.zero_()
        return True

    def _step(self, batch: dict[str, np.ndarray], pos_weight: float) -> dict:
        tensors = {key: torch.as_tensor(value).to(self.device) for key, value in batch.items()}  # (B, C, T) (B, T) (B,)
        self.generator_before = self.generator.get_state()
        with self._dropout_rng():
            try:
                loss, grad_norm = loss_and_gradients(self.model, tensors, self.cfg, pos_weight)
            except torch.linalg.LinAlgError as err:  # LAPACK refusing a matrix NaN reached: a NaN step, dumped
                self.model.zero_grad(set_to_none=True)
                raise StepFailed("a linear-algebra op refused a non-finite matrix inside the step", str(err)) from err
        loss, grad_norm = loss.item(), float(grad_norm)
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        if finite and self._accumulate():
            self.lr = apply_gradients(self.model, self.optimizer, self.scheduler, self.cfg)
        self.model.zero_grad(set_to_none=True)
        return {"loss": loss, "grad_norm": grad_norm, "lr": self.lr, "finite": finite}

    def _init_weights(self, path: Path) -> Path:
        target = self.model.state_dict()
        weights = read_weights(path, self.config, lambda model_config: {k: tuple(v.shape) for k, v in
                                                                  SeizureDetector(model_config).state_dict().items()})
        for note in weights.notes:
            print(f"note: {note}")
        check_init_config(self.config, weights.config, path)
        state = {key: torch.from_numpy(torch_compatible(value)).to(target[key].dtype) if key in target else value
                 for key, value in weights.arrays.items()}
        self.model.load_state_dict(state, strict=True)  # names every missing and unexpected key
        return weights.path

    # -- checkpoints ---------------------------------------------------------------------------

    def _save(self, kind: str) -> Path:
        path = checkpoint_path(self.workdir, kind, self.progress.step)
        _save_atomic({
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "accumulator": {"micro_step": self.micro_step, "grads": self.accumulated},
            "lr": self.lr,
            "meta": self._meta(),
        }, path)
        for step in checkpoint_steps(self.workdir, kind)[: -self.cfg.keep_checkpoints]:
            checkpoint_path(self.workdir, kind, step).unlink()
        return path

    def _latest(self) -> int | None:
        steps = checkpoint_steps(self.workdir, "last")
        return steps[-1] if steps else None

    def _restore(self) -> dict:
        path = checkpoint_path(self.workdir, "last", self._latest())
        state = torch.load(path, weights_only=True, map_location=self.device)
        saved, here = state["generator"].numel(), self.generator.get_state().numel()
        if saved != here:
            kinds = {CUDA_GENERATOR_BYTES: "a CUDA GPU", CPU_GENERATOR_BYTES: "the CPU"}
            raise ConfigError(
                f"--resume: {path} was written on {kinds.get(saved, 'another kind of device')} and this run "
                f"is on {kinds.get(here, self.device.type)}: torch's dropout stream of one device kind cannot "
                "continue on the other, so the resumed run would not repeat the uninterrupted one. Resume on "
                f"the kind of device that wrote it, or start a new run from its weights: --init-from {path}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"].cpu())
        self.micro_step = state["accumulator"]["micro_step"]
        self.accumulated = state["accumulator"]["grads"]
        self.lr = state["lr"]
        return state["meta"]

    def _dump(self, batch: dict[str, np.ndarray], info: dict) -> Path:
        return write_dump(self.workdir, self.config, self.model, self.generator_before, batch, info)

    def checkpoint_path(self, kind: str, step: int) -> Path:
        return checkpoint_path(self.workdir, kind, step)
