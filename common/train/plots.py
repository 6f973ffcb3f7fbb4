"""Run plots, written to WORKDIR/plots/ at each validation and at the end (matplotlib, Agg).

    training.png   train loss (per logged step, with a running mean), learning rate, gradient
                   norm (before clipping; skipped steps marked), validation metrics per epoch
    example.png    (common.eval.plots.plot_example) one dev recording: its probability trace, τ_on/τ_off, the true
                   seizures (shaded) and the post-processed predicted seizures (bars)
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common.files import save_figure  # noqa: E402


def plot_training(records: list[dict], path: str | Path, metric: str | None = None) -> Path:
    """Loss, LR, gradient norm and validation metrics of a run's metrics.jsonl records (non-finite
    values were written as the strings "nan"/"inf", which float() reads back)."""
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "validation"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5))
    steps = np.array([r["step"] for r in train])
    loss = np.array([float(r.get("loss_mean", r["loss"])) for r in train])

    ax = axes[0, 0]
    if len(train):
        ax.plot(steps, loss, lw=0.8, alpha=0.5, label="train loss (mean per logged interval)")
        k = max(1, len(loss) // 20)
        if len(loss) >= k > 1:
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1 :], smooth, lw=1.6, label=f"mean of {k}")
        ax.set_yscale("log")
        ax.legend(loc="upper right", fontsize=8)  # none without a line (a run stopped at its first step)
    ax.set(title="training loss", xlabel="step")

    ax = axes[0, 1]
    ax.plot(steps, [float(r["lr"]) for r in train], lw=1.2)
    ax.set(title="learning rate", xlabel="step")

    ax = axes[1, 0]
    ax.plot(steps, [float(r["grad_norm"]) for r in train], lw=0.9)
    skipped = [r["step"] for r in train if r.get("skipped_now")]
    if skipped:
        ax.scatter(skipped, np.ones(len(skipped)), marker="x", color="red", label="skipped (non-finite)")
        ax.legend(fontsize=8)
    ax.set(title="gradient norm (before clipping)", xlabel="step", yscale="log")

    ax = axes[1, 1]
    if val:
        epochs = [r["epoch"] + 1 for r in val]  # 1-based, as the printed table
        for name in ("auroc", "sensitivity", "specificity", "f1"):
            if name in val[0]:
                ax.plot(epochs, [float(r[name]) for r in val], marker="o", lw=1.2,
                        label=name + (" (early stopping)" if name == metric else ""))
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8, loc="lower right")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(title="validation (dev split)", xlabel="epoch")
    fig.tight_layout()
    return save_figure(fig, path)
