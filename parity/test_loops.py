"""Training parity through the two loops: torchref.train.loop.Trainer vs jaxbrr.train.loop.Trainer.

parity/test_train.py drives the two train steps on batches it draws itself. This test drives the
whole loops, as `python -m torchref.train` and `python -m jaxbrr.train` run them, with one config
(the tiny model on a four-recording synthetic corpus, every dropout rate 0, float32): each loop
builds its model and optimizer, draws the balanced batches for (seed, epoch), estimates
pos_weight, sizes the schedule from the corpus, trains STEPS steps, writes metrics.jsonl and
validates on the whole dev recordings. The jax model starts from the torch model's weights
(parity.convert.torch_to_jax, then `sync_from_objects`).

What it shows: the loops feed both frameworks the same batches, pos_weight and schedule and log
the same numbers. The loss curves in the two metrics.jsonl files agree within the trajectory
tolerance, the LRs within the optimiser's, pos_weight exactly; the first validation's dev
probabilities (every recording, stitched from overlapping windows) agree within the trajectory
tolerance; the LRs follow warm-up and cosine as the formula gives them. Measured (AMD EPYC):
losses to 3.5e-7 and gradient norms to 3.6e-6 of their values (rtol 2e-3), dev probabilities to
1.2e-7 (1.2e-4 and 1.9e-4 when the test kept top_k 3: see below).

A second run of both loops accumulates gradients over 2 batches (train.grad_accum_steps) with
`nan_policy: skip` and a NaN sample planted in its third batch: both skip that step alone and dump
the same batch, both pair the remaining batches into the same updates (the logged LRs follow the
schedule of 4 updates exactly), and the loss curves and dev probabilities agree within the
trajectory tolerance.

What it does not show: that the two AUROCs agree closely. After STEPS updates the tiny model is
not a detector yet: its dev probabilities span ~3e-3 around one value (std ~2.6e-4, printed), not
much wider than the float32 difference between the frameworks, so the ranking the AUROC measures
is decided by rounding (measured with top_k 3: torch 0.532 / jax 0.558 on one AMD host, 0.551 /
0.497 on an Intel one). A fixed margin on that difference is ill-posed. What does hold on every host: each
loop logs the AUROC of its own stitched traces (exactly), both traces carry the same labels, and
the AUROCs differ by no more than the probability difference allows — the fraction of
(seizure, background) sample pairs closer than twice the largest probability change, the only
pairs whose order can flip (auroc_change_bound).

gradient_clip 1e-2 clips every update, and top_k 18 keeps every edge, as in parity/test_train.py's
float32 runs (its docstring says why torch's clip differs from optax's by 1e-6/‖g‖ and why that
stays below float32's tolerance, and why a top-k selection lets rounding part float32 curves).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.config import load_config
from common.data.prepare import prepare
from common.eval.metrics import auroc
from common.train.log import read_metrics
from jaxbrr.train.loop import Trainer as JaxTrainer
from parity.compare import compare_arrays
from parity.convert import torch_to_jax
from parity.tolerances import EVERY_EDGE, NO_DROPOUT
from torchref.train.loop import Trainer as TorchTrainer

TINY = "configs/tiny.yaml"
STEPS = 8
# warmup_ratio 0.5 of the STEPS updates: 4 of warm-up, then 4 of the cosine (0.1 gave one of warm-up)
WARMUP = STEPS // 2
TRAIN = ["train.lr=3e-3", "train.warmup_ratio=0.5", "train.weight_decay=0.05", "train.batch_size=2",
         "train.gradient_clip=1e-2", f"train.max_steps={STEPS}", "train.log_every=1"]
CORPUS = ["data.synthetic.recordings=4", "data.synthetic.patients=2",
          "data.synthetic.duration_seconds=[60,90]"]

pytestmark = pytest.mark.slow  # ~45 s on the 2-core CPU, most of it XLA compiling jaxbrr's step


def run_loop(trainer) -> tuple[list[dict], list]:
    """Run a built trainer; (its metrics.jsonl records, the traces of its first validation)."""
    validate, traces = trainer.validate, []

    def recorded():
        metrics, step_traces, masks = validate()
        traces.append(step_traces)
        return metrics, step_traces, masks

    trainer.validate = recorded
    trainer.run()
    return read_metrics(trainer.workdir), traces[0]


def auroc_change_bound(probs: np.ndarray, labels: np.ndarray, delta: float) -> float:
    """The most the AUROC of `probs` can change when every probability moves by at most `delta`
    (after a common shift, which leaves ranks alone): the fraction of (seizure, background)
    sample pairs at most 2·delta apart, the only pairs whose order can change."""
    positives, negatives = np.sort(probs[labels]), np.sort(probs[~labels])
    reach = 2 * delta * (1 + 1e-9)  # a pair exactly 2·delta apart is not lost to the rounding of p ± reach
    near = (np.searchsorted(negatives, positives + reach, "right")
            - np.searchsorted(negatives, positives - reach, "left"))  # (P,)
    return float(near.sum() / (positives.size * negatives.size))


def of_kind(records: list[dict], kind: str, key: str) -> np.ndarray:
    return np.array([r[key] for r in records if r["kind"] == kind], np.float64)


def run_twins(root, overrides: list[str], poisoned_batch: int | None = None):
    """Both loops on one prepared corpus, the jax model from the torch model's weights; (torch
    records, torch traces, jax records, jax traces). poisoned_batch: the index (from 0) of the
    batch that gets a NaN sample, in both loops alike."""
    data = [f"data.data_dir={root / 'edf'}", f"data.cache_dir={root / 'cache'}"]
    overrides = [*NO_DROPOUT, *TRAIN, EVERY_EDGE, *CORPUS, *data, *overrides]
    prepared = prepare(load_config(TINY, overrides), progress=False)
    torch_trainer = TorchTrainer(load_config(TINY, [*overrides, f"workdir={root / 'torchref'}"]),
                                 progress=False, prepared=prepared)
    jax_trainer = JaxTrainer(load_config(TINY, [*overrides, f"workdir={root / 'jaxbrr'}"]),
                             progress=False, prepared=prepared)
    torch_to_jax(torch_trainer.model, jax_trainer.model)
    jax_trainer.sync_from_objects()
    if poisoned_batch is not None:
        for trainer in (torch_trainer, jax_trainer):
            trainer.load_batch = poison(trainer.load_batch, poisoned_batch)
    # 1. torch, on one thread: two OpenMP threads spin-wait for each other when the 2-core CPU
    # is shared with XLA's threads or another process (measured: 3 s alone, up to 50 s shared)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch_records, torch_traces = run_loop(torch_trainer)
    finally:
        torch.set_num_threads(threads)
    # 2. jax
    jax_records, jax_traces = run_loop(jax_trainer)
    return torch_records, torch_traces, jax_records, jax_traces


def poison(load_batch, index: int):
    """load_batch with one NaN sample in the batch it loads `index`-th (batches load in step
    order, possibly ahead of the step: train.prefetch)."""
    loads = 0

    def poisoned(rows):
        nonlocal loads
        batch = load_batch(rows)
        if loads == index:
            batch["x"][0, 0, 0] = np.nan
        loads += 1
        return batch

    return poisoned


@pytest.fixture(scope="module")
def loops(tmp_path_factory):
    return run_twins(tmp_path_factory.mktemp("loops"), [])


def test_loss_curves(loops):
    torch_records, _, jax_records, _ = loops
    keys = ("loss", "grad_norm", "lr", "pos_weight")
    torch_train = {key: of_kind(torch_records, "train", key) for key in keys}
    jax_train = {key: of_kind(jax_records, "train", key) for key in keys}
    # 3. compare
    assert len(torch_train["loss"]) == len(jax_train["loss"]) == STEPS
    np.testing.assert_array_equal(jax_train["pos_weight"], torch_train["pos_weight"])  # the shared loop's
    # both schedules run through warm-up and into the cosine: lr·(s+1)/W, then lr·½(1 + cos(π(s−W)/(T−W)))
    s = np.arange(STEPS)
    expected = 3e-3 * np.where(s < WARMUP, (s + 1) / WARMUP, 0.5 * (1 + np.cos(np.pi * (s - WARMUP) / (STEPS - WARMUP))))
    for lr in (torch_train["lr"], jax_train["lr"]):
        np.testing.assert_allclose(lr, expected, rtol=1e-6)  # the logged LR is a float32 in jaxbrr
    rows = [compare_arrays(f"{key} curve", jax_train[key], torch_train[key], check, "float32")
            for key, check in (("loss", "trajectory"), ("grad_norm", "trajectory"), ("lr", "optim"))]
    print(f"{'step':>4} {'torch loss':>12} {'jax loss':>12} {'rel diff':>9} {'grad_norm':>10} {'lr':>10}")
    for step in range(STEPS):
        t, j = torch_train["loss"][step], jax_train["loss"][step]
        print(f"{step + 1:>4} {t:>12.8f} {j:>12.8f} {abs(j - t) / abs(t):>9.2e} "
              f"{torch_train['grad_norm'][step]:>10.3e} {torch_train['lr'][step]:>10.3e}")
    for row in rows:
        print(f"{row.name}: max_abs {row.max_abs:.3g}, max_rel {row.max_rel:.3g} (rtol {row.rtol:g})")
    assert all(row.passed for row in rows), [row.reason for row in rows if not row.passed]


def test_first_validation(loops):
    torch_records, torch_traces, jax_records, jax_traces = loops
    # 3. compare
    assert [t.stem for t in jax_traces] == [t.stem for t in torch_traces]
    rows = [compare_arrays(f"dev probabilities {t.stem}", j.probs, t.probs, "trajectory", "float32")
            for t, j in zip(torch_traces, jax_traces, strict=True)]
    for row in rows:
        print(f"{row.name}: {row.shape[0]} samples, max_abs {row.max_abs:.3g} "
              f"(allowed {row.atol + row.rtol * row.scale:.3g})")
    assert all(row.passed for row in rows), [row.reason for row in rows if not row.passed]

    labels = np.concatenate([t.labels for t in torch_traces]).astype(bool)
    np.testing.assert_array_equal(np.concatenate([j.labels for j in jax_traces]).astype(bool), labels)
    probs = {name: np.concatenate([t.probs for t in traces]).astype(np.float64)
             for name, traces in (("torch", torch_traces), ("jax", jax_traces))}
    logged = {"torch": of_kind(torch_records, "validation", "auroc")[0],
              "jax": of_kind(jax_records, "validation", "auroc")[0]}
    for name in logged:  # each loop logs the AUROC of the traces it stitched, to the last bit
        assert logged[name] == auroc(probs[name], labels), name
    moved = probs["jax"] - probs["torch"]
    bound = auroc_change_bound(probs["torch"], labels, (moved.max() - moved.min()) / 2)
    difference = abs(logged["jax"] - logged["torch"])
    print(f"dev probabilities (torch): std {probs['torch'].std():.3g}, "
          f"range [{probs['torch'].min():.5f}, {probs['torch'].max():.5f}]")
    print(f"AUROC torch {logged['torch']:.6f}, jax {logged['jax']:.6f}, difference {difference:.2e}; "
          f"the probability difference allows up to {bound:.3g}")
    assert difference <= bound + 1e-12  # 1e-12: the AUROCs' own float64 rank sums


# Gradient accumulation with a skipped micro-batch: 9 batches of which the third holds a NaN sample
# make 4 updates of 2 (batches 1+2, 4+5, 6+7, 8+9). Each twin has its own accumulator (torchref's
# running mean in its loop, jaxbrr's optax.MultiSteps inside its step) and its own way to leave
# a skipped step out (torchref checks before the accumulator; jaxbrr selects the old state with
# jnp.where): if either counted the skipped batch, its updates would pair other batches and
# its curve would leave the other's from step 5 on, and its `lr` would too.
ACCUMULATED = 9
POISONED = 2  # the third batch, step 3


@pytest.fixture(scope="module")
def accumulating(tmp_path_factory):
    root = tmp_path_factory.mktemp("accumulating")
    sets = ["train.grad_accum_steps=2", "train.nan_policy=skip", f"train.max_steps={ACCUMULATED}"]
    return root, run_twins(root, sets, poisoned_batch=POISONED)


def test_accumulation_around_a_skipped_batch(accumulating):
    root, (torch_records, torch_traces, jax_records, jax_traces) = accumulating
    keys = ("loss", "grad_norm", "lr", "skipped")
    torch_train = {key: of_kind(torch_records, "train", key) for key in keys}
    jax_train = {key: of_kind(jax_records, "train", key) for key in keys}
    assert len(torch_train["loss"]) == len(jax_train["loss"]) == ACCUMULATED
    # the poisoned step, and only it, is skipped in both, and both dump the same batch for it
    for train in (torch_train, jax_train):
        assert np.flatnonzero(~np.isfinite(train["loss"])).tolist() == [POISONED]
        np.testing.assert_array_equal(train["skipped"], np.arange(ACCUMULATED) >= POISONED)
    dumps = [np.load(root / twin / "nan" / f"step_{POISONED + 1:06d}" / "batch.npz") for twin in ("torchref", "jaxbrr")]
    assert np.isnan(dumps[0]["x"][0, 0, 0])
    for key in dumps[0].files:
        np.testing.assert_array_equal(dumps[1][key], dumps[0][key], err_msg=key)
    # `lr` is that of the last update applied (update 0's before any): the updates complete at
    # batches 2, 5, 7 and 9, and the schedule counts 4 updates (2 of warm-up, then the cosine)
    update = np.array([0, 0, 0, 0, 1, 1, 2, 2, 3])
    warmup, updates = 2, ACCUMULATED // 2
    expected = 3e-3 * np.where(update < warmup, (update + 1) / warmup,
                               0.5 * (1 + np.cos(np.pi * (update - warmup) / (updates - warmup))))
    for train in (torch_train, jax_train):
        np.testing.assert_allclose(train["lr"], expected, rtol=1e-6)
    finite = np.isfinite(torch_train["loss"])
    rows = [compare_arrays(f"{key} curve (steps not skipped)", jax_train[key][finite], torch_train[key][finite],
                           "trajectory", "float32") for key in ("loss", "grad_norm")]
    rows += [compare_arrays(f"dev probabilities {t.stem}", j.probs, t.probs, "trajectory", "float32")
             for t, j in zip(torch_traces, jax_traces, strict=True)]
    for row in rows:
        print(f"{row.name}: max_abs {row.max_abs:.3g}, max_rel {row.max_rel:.3g} (rtol {row.rtol:g})")
    assert all(row.passed for row in rows), [row.reason for row in rows if not row.passed]
