"""Run plots, written to WORKDIR/plots/ at each validation and at the end (matplotlib, Agg).

    training.png   train loss (per logged step, with a running mean), learning rate, gradient
                   norm (before clipping; skipped steps marked), validation metrics per epoch
    example.png    one dev recording: its probability trace, the thresholds τ_on/τ_off, the true
                   seizures (shaded) and the post-processed predicted seizures (bars)
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxbrr.config import PostprocessConfig  # noqa: E402


def save_figure(fig, path: str | Path) -> Path:
    """Write through a temporary file and rename, so a reader never sees half a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2], edges[1::2], strict=True))


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
    ax.set(title="training loss", xlabel="step")
    ax.legend(loc="upper right", fontsize=8)

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


def plot_example(probs: np.ndarray, labels: np.ndarray, predicted: np.ndarray, sfreq: float,
                 post: PostprocessConfig, path: str | Path, title: str) -> Path:
    t = np.arange(len(probs)) / sfreq
    fig, ax = plt.subplots(figsize=(12, 3.2))
    for start, stop in _runs(labels.astype(bool)):
        ax.axvspan(t[start], t[stop - 1], color="tab:red", alpha=0.18, lw=0)
    for start, stop in _runs(predicted.astype(bool)):
        ax.hlines(-0.06, t[start], t[stop - 1], color="tab:blue", lw=5)
    ax.plot(t, probs, lw=0.7, color="k", label="P(seizure)")
    ax.axhline(post.tau_on, color="tab:green", ls="--", lw=0.8, label=f"τ_on {post.tau_on}")
    ax.axhline(post.tau_off, color="tab:olive", ls=":", lw=0.8, label=f"τ_off {post.tau_off}")
    ax.plot([], [], color="tab:red", alpha=0.3, lw=6, label="true seizure")
    ax.plot([], [], color="tab:blue", lw=5, label="predicted seizure")
    ax.set(xlim=(0, t[-1] if len(t) else 1), ylim=(-0.12, 1.05), xlabel="time (s)", title=title)
    ax.legend(fontsize=8, loc="upper right", ncol=5)
    fig.tight_layout()
    return save_figure(fig, path)
