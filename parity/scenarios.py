"""The scenario catalogue of the NaN localiser: planted problems, each with its expected verdict.

    problem = build("exp-mask")          # a parity.problem.Problem with .expected
    problem = build("clean", ["model.node_mamba.n_layers=3"])   # --set: before the weights are made
    python -m parity.localize --scenario exp-mask --plot exp-mask.png

Every scenario is the tiny model (configs/tiny.yaml) on synthetic EEG from the data pipeline,
with one thing changed: the batch, some weights, a config switch, or one side's conversion.
`build`'s overrides (localize's --set) are applied after the scenario's own, and like them before
its weights and batch are made (see build).

    name                  change                                           expected
    clean                 nothing                                          CLEAN
    outlier               a raw 1256 µV artifact preprocessed without      DATA at input, then
                          clipping, on TCN gains that overflow float32      PRECISION at tcn
    eigh-degenerate       edge stream below edge_threshold: every graph    MODEL at ∂adjacency
                          is edgeless, L = ε·I, all 19 eigenvalues
                          equal; pe_gradient: full
    eigh-degenerate-safe  the same with pe_gradient: safe                  CLEAN
    zero-node             electrode 5's features all zero (its rows of     CLEAN (jaxbrr's cosine is
                          proj_to_electrodes zeroed)                        gradient-safe; see below)
    exp-mask              ssm.scan: chunked_mask_after_exp and a node      MODEL at ∂electrodes
                          Mamba whose chunk decays overflow exp
    half-overflow         TCN output near 1e6 (> float16's 65504)           PRECISION at tcn
    drift                 JAX's edge-Mamba LayerNorm eps 1e-6, torch's      DRIFT at edge_weights
                          1e-5 (Flax's default leaking into a port)
    diverged              train.lr 30, every weight moved by ±30 (Adam's    PRECISION at node_mamba,
                          first step at that lr)                            and the weights' growth
                                                                            (parity/growth.py) names
                                                                            train.lr as the fix

zero-node documents which form the code uses: a cosine written as <a,b>/max(‖a‖‖b‖, eps) has a NaN
gradient in JAX at a zero vector (the norm's derivative at 0 is 0/0) where torch's is finite,
which would be FRAMEWORK at ∂electrodes; jaxbrr/graph.py's rsqrt(max(‖a‖², eps²)) is finite on
both sides, so the verdict is CLEAN (ssm_gnn_anchors.md §6.4, parity_nan_anchors.md §4.4).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from einops import rearrange

import torchref.model as tmodel
from common.config import Config, load_config
from common.data.montage import REF19
from common.data.preprocess import preprocess
from common.data.synth import patient_traits, synthesize_recording
from parity.problem import Problem

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"  # the repository's, from any folder
LEAD_IN_SECONDS = 2.0  # dropped: the causal bandpass's start-up transient
ARTIFACT_UV = 1256.0  # the raw artifact of the outlier scenario (µV)
ZERO_ELECTRODE = 5
DIVERGED_LR = 30.0  # the diverged scenario's learning rate


def eeg_windows(config: Config, n_windows: int, seed: int = 0,
                artifact_uv: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """n_windows consecutive windows of one synthetic ref19 recording (background rhythms, drawn
    artifacts, a focal seizure over 40-75 % of the span, so windows hold both classes), run
    through common.data.preprocess (config.preprocess: z-scored, clipped if clip_sigma is set):
    x (B, C, T) float32, labels (B, T) 0/1. artifact_uv adds a 40 ms pulse of that many µV to
    channel 0 in the middle of the first window, before preprocessing."""
    sfreq, window = config.preprocess.sfreq, config.window_samples
    span = n_windows * window / sfreq
    seizure = {"kind": "focal", "start_seconds": LEAD_IN_SECONDS + 0.4 * span, "duration_seconds": 0.35 * span}
    signals, events = synthesize_recording(np.random.default_rng(seed), sfreq, LEAD_IN_SECONDS + span,
                                           [seizure], patient_traits(seed, 1))
    uv = np.stack([signals[f"EEG {name.upper()}-REF"] for name in REF19])  # (C, N) µV
    lead = int(LEAD_IN_SECONDS * sfreq)
    if artifact_uv is not None:
        start = lead + window // 2
        uv[0, start : start + int(0.04 * sfreq)] += artifact_uv
    x, _ = preprocess(uv, sfreq, config.preprocess, REF19)  # (C, N)
    x = x[:, lead : lead + n_windows * window]  # (C, B·T)
    t = np.arange(lead, lead + n_windows * window) / sfreq
    labels = np.zeros(t.shape, np.float32)
    for event in events:
        labels[(t >= event.start_seconds) & (t < event.stop_seconds)] = 1.0
    x = rearrange(x, "c (b t) -> b c t", b=n_windows)  # (B, C, T)
    return np.ascontiguousarray(x), rearrange(labels, "(b t) -> b t", b=n_windows)


def _tiny_weights(config: Config, seed: int = 0) -> dict[str, np.ndarray]:
    model = tmodel.SeizureDetector(config.model, seed)
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _tcn_peak(config: Config, weights: dict[str, np.ndarray], x: np.ndarray) -> float:
    """max |tcn tap| of the torch model (float64) on x."""
    import torch

    model = tmodel.SeizureDetector(config.model).double()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    with torch.no_grad():
        return float(model.tcn(torch.from_numpy(x).double()).abs().max())


def _scale_tcn(config: Config, weights: dict[str, np.ndarray], x: np.ndarray, peak: float) -> None:
    """Scale the TCN's weight-norm gains alike until max |tcn| on x is about `peak` (the ReLU
    stack is homogeneous in them once the activations dwarf the biases)."""
    gains = sorted(k for k in weights if k.startswith("tcn.") and k.endswith("weight_g"))
    for _ in range(3):  # the biases make it only nearly homogeneous: refine
        factor = (peak / _tcn_peak(config, weights, x)) ** (1 / len(gains))
        for key in gains:
            weights[key] = weights[key] * np.float32(factor)


def _problem(name: str, overrides: list[str], extra: list[str], expected_verdict: str, expected_tap: str | None,
             change: Callable[[Config, dict, np.ndarray], None] | None = None, artifact_uv: float | None = None,
             prepare=None, dtypes=("float32", "float64"), notes=()):
    from parity.runs import Batch

    config = load_config(TINY, [*overrides, *extra])  # extra: build's, which win
    x, y = eeg_windows(config, n_windows=2, artifact_uv=artifact_uv)
    weights = _tiny_weights(config)
    if change is not None:
        change(config, weights, x)
    expected = {"verdict": expected_verdict, "tap": expected_tap, "dtypes": list(dtypes)}
    return Problem(config, weights, Batch(x, y), f"scenario {name}", prepare=prepare, expected=expected,
                   notes=list(notes))


def _outlier(extra):
    def change(config, weights, x):
        _scale_tcn(config, weights, x, peak=1e40)  # float32 holds 3.4e38, float64 1.8e308

    return _problem("outlier", ["preprocess.clip_sigma=null"], extra, "DATA", "input", change, artifact_uv=ARTIFACT_UV,
                    notes=["TCN gains scaled so max|tcn| = 1e40 on this batch: finite in float64 only"])


def _dead_edge_stream(config, weights, x):
    """edge_proj -> softplus(-30) ≈ 1e-13 < edge_threshold: every edge is cut, every node keeps only
    its self-loop (graph.adjacency), the Laplacian is ε·I (the original's: loops kept)."""
    weights["edge_proj.weight"] = np.zeros_like(weights["edge_proj.weight"])
    weights["edge_proj.bias"] = np.full_like(weights["edge_proj.bias"], -30.0)


def _eigh_degenerate(gradient: str, extra):
    name = "eigh-degenerate" + ("-safe" if gradient == "safe" else "")
    verdict, tap = ("MODEL", "∂adjacency") if gradient == "full" else ("CLEAN", None)
    return _problem(name, [f"model.stability.pe_gradient={gradient}"], extra, verdict, tap, _dead_edge_stream)


def _zero_node(extra):
    def change(config, weights, x):
        d = config.model.electrode_dim
        rows = slice(ZERO_ELECTRODE * d, (ZERO_ELECTRODE + 1) * d)
        weights["proj_to_electrodes.weight"][rows] = 0.0
        weights["proj_to_electrodes.bias"][rows] = 0.0

    # top_k 19 keeps every edge, so the verdict is the cosine's alone: the zero electrode's 18
    # equal edge weights would otherwise be a top-k tie (broken alike in both twins, lowest
    # indices first, jaxbrr/graph.py adjacency), and its graphs' spectra would enter the verdict.
    return _problem("zero-node", ["model.graph.top_k=19"], extra, "CLEAN", None, change,
                    notes=[f"electrode {ZERO_ELECTRODE}'s features are zero; jaxbrr's cosine is the "
                           "gradient-safe form, so CLEAN (a naive norm would be FRAMEWORK at ∂electrodes)"])


def _exp_mask(extra):
    def change(config, weights, x):
        # dt = softplus(dt_bias) ≈ 5 and A = -30: dt·A ≈ -150 per step, so an above-diagonal
        # exponent of a 16-step chunk reaches +2250: exp overflows in float32 and float64.
        prefix = "node_mamba.layers.0.fwd."
        weights[prefix + "A_log"] = np.full_like(weights[prefix + "A_log"], math.log(30.0))
        weights[prefix + "dt_bias"] = np.full_like(weights[prefix + "dt_bias"], 5.0)

    return _problem("exp-mask", ["model.ssm.scan=chunked_mask_after_exp"], extra, "MODEL", "∂electrodes", change)


def _half_overflow(extra):
    def change(config, weights, x):
        _scale_tcn(config, weights, x, peak=1e6)

    return _problem("half-overflow", [], extra, "PRECISION", "tcn", change, dtypes=("float32", "float16"),
                    notes=["TCN gains scaled so max|tcn| = 1e6 > float16's 65504"])


def _diverged(extra):
    def change(config, weights, x):
        # Adam's first step moves every weight by lr·m̂/√v̂ = lr·sign(g) (parity/growth.py): here
        # the step of a run at lr DIVERGED_LR, with a seeded sign for each weight
        rng = np.random.default_rng(0)
        parameters = dict(tmodel.SeizureDetector(config.model).named_parameters())
        for key in parameters:
            step = DIVERGED_LR * rng.choice(np.float32([-1, 1]), size=weights[key].shape)
            weights[key] = weights[key] + step

    return _problem("diverged", [f"train.lr={DIVERGED_LR:g}"], extra, "PRECISION", "node_mamba", change,
                    notes=[f"every weight moved by ±{DIVERGED_LR:g}, as by Adam's first step at lr {DIVERGED_LR:g}"])


def _drift(extra):
    def prepare(torch_model, jax_model):
        jax_model.edge_mamba.layers[0].norm.epsilon = 1e-6  # torch's stays at model.layernorm_eps = 1e-5

    return _problem("drift", [], extra, "DRIFT", "edge_weights", prepare=prepare,
                    notes=["jaxbrr's edge_mamba.layers.0.norm runs with eps 1e-6, torchref's with 1e-5"])


# name -> build(extra overrides)
SCENARIOS: dict[str, Callable[[list[str]], Problem]] = {
    "clean": lambda extra: _problem("clean", [], extra, "CLEAN", None),
    "outlier": _outlier,
    "eigh-degenerate": lambda extra: _eigh_degenerate("full", extra),
    "eigh-degenerate-safe": lambda extra: _eigh_degenerate("safe", extra),
    "zero-node": _zero_node,
    "exp-mask": _exp_mask,
    "half-overflow": _half_overflow,
    "drift": _drift,
    "diverged": _diverged,
}


def build(name: str, overrides: list[str] | tuple[str, ...] = ()) -> Problem:
    """The scenario `name` under its config with `overrides` (`key.sub=value`, localize's --set).

    They are applied before the weights and the batch are made, like the scenario's own, not to
    the built problem as to a checkpoint's: a scenario's weights are drawn from its config, so
    `--set model.node_mamba.n_layers=3` means the scenario on a 3-layer model, which is what such a
    --set asks for, where applied afterwards it found 2 layers of weights for 3 and could only be
    refused. So a --set of data or preprocess fields makes the batch under them too."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}: choose from {', '.join(SCENARIOS)}")
    return SCENARIOS[name](list(overrides))
