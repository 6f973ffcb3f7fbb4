"""torchref.train.step on the tiny model: five updates on one fixed batch lower the loss, the
metrics are finite and report the schedule's LR exactly, grad_norm is the norm before clipping,
and eval_step returns probabilities with dropout off and puts the model back in the mode it found
it in (also when the forward raises)."""

from __future__ import annotations

import math

import pytest
import torch

from common.config import load_config
from torchref.model import SeizureDetector
from torchref.train.optim import learning_rate_schedule, make_optimizer
from torchref.train.step import eval_step, train_step

TOTAL_STEPS = 100
OVERRIDES = ["train.lr=3e-3", "train.warmup_ratio=0.02", "train.gradient_clip=1.0",
             "train.weight_decay=0.01", "train.focal_gamma=2.0"]


@pytest.fixture(scope="module")
def config():
    return load_config("configs/tiny.yaml", OVERRIDES)


@pytest.fixture(scope="module")
def batch(config):
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(config.window_samples)  # (T,)
    onset = torch.randint(200, 800, (2, 1), generator=generator)
    y = (t[None, :] >= onset).float()  # (B, T)
    # Noise, plus a 5 Hz rhythm where the label is 1: a batch the model can learn from.
    rhythm = 2.0 * torch.sin(2 * math.pi * 5.0 * t / config.preprocess.sfreq)  # (T,)
    x = torch.randn(2, config.model.n_chans, config.window_samples, generator=generator)  # (B, C, T)
    x = x + (y * rhythm)[:, None, :]
    return {"x": x, "y": y, "valid": torch.tensor([True, True])}


def test_five_steps_lower_the_loss(config, batch):
    cfg = config.train
    model = SeizureDetector(config.model, 0)
    optimizer, scheduler = make_optimizer(model, cfg, TOTAL_STEPS)
    schedule = learning_rate_schedule(cfg, TOTAL_STEPS)  # W = 2: lr/2, lr, then the cosine
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.random.fork_rng():  # seeded dropout masks, the global generator left as it was
        torch.manual_seed(0)
        history = [train_step(model, optimizer, scheduler, batch, cfg, 1.3868) for _ in range(5)]
    losses = [m["loss"] for m in history]
    print(f"loss per step (dropout on): {[round(loss, 5) for loss in losses]}")
    print(f"grad_norm per step: {[round(m['grad_norm'], 5) for m in history]}")
    for step, metrics in enumerate(history):
        assert metrics["finite"] is True
        assert all(math.isfinite(metrics[key]) for key in ("loss", "grad_norm", "lr"))
        assert metrics["lr"] == schedule(step)  # exactly: LambdaLR multiplies the same factor
    assert [m["lr"] for m in history[:3]] == [1.5e-3, 3e-3, 3e-3]
    assert losses[-1] < 0.98 * losses[0]
    assert model.training  # train_step leaves the model in training mode
    assert scheduler.last_epoch == 5 and optimizer.param_groups[0]["lr"] == schedule(5)
    moved = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert len(moved) == len(before)  # every parameter took part (all of them get a gradient)


def test_grad_norm_is_reported_before_clipping(config, batch):
    """The same first step with a clip far below the gradient norm and with no clip at all."""
    norms = []
    for clip in (1e-6, 0.0):
        cfg = load_config("configs/tiny.yaml", [*OVERRIDES, f"train.gradient_clip={clip}"]).train
        model = SeizureDetector(config.model, 0)
        optimizer, scheduler = make_optimizer(model, cfg, TOTAL_STEPS)
        with torch.random.fork_rng():
            torch.manual_seed(1)  # the same dropout masks in both runs
            norms.append(train_step(model, optimizer, scheduler, batch, cfg)["grad_norm"])
    print(f"grad_norm clipped run {norms[0]:.6g}, unclipped run {norms[1]:.6g}")
    assert norms[0] > 1e-3
    assert norms[0] == pytest.approx(norms[1], rel=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_eval_step(config, batch, training):
    model = SeizureDetector(config.model, 0).train(training)
    probs = eval_step(model, batch["x"])
    assert probs.shape == batch["y"].shape and probs.dtype == torch.float32
    assert not probs.requires_grad
    assert bool(((probs >= 0) & (probs <= 1)).all())
    assert torch.equal(probs, eval_step(model, batch["x"]))  # dropout off: deterministic
    with torch.no_grad():
        logits, _ = model.eval()(batch["x"])
    torch.testing.assert_close(probs, torch.sigmoid(logits), rtol=0, atol=0)
    model.train(training)
    assert model.training is training  # eval_step put back the mode it found
    with pytest.raises(RuntimeError):
        eval_step(model, batch["x"][:, :5])  # 5 channels instead of 19: the forward raises
    assert model.training is training  # restored on the error path too
