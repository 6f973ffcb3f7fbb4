"""Typed, frozen run configuration, loaded from YAML with dotted overrides.

Imports neither jax nor torch: data tools, torchref and jaxbrr all read the same objects.

    cfg = load_config("configs/default.yaml", ["train.lr=3e-4", "model.graph.enabled=false"])

Every section rejects unknown keys; errors name the file, the dotted key and what is allowed.
Every number the model or pipeline uses lives here; nothing is read from the environment.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections import Counter
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

from common import stages
from common.data.montage import Montage, montage_channels, n_edges
from common.data.native_labels import SIENA_LISTED_AS
from common.shown import shown_lines

_FROZEN = ConfigDict(extra="forbid")



def _section(cls):
    return dataclass(frozen=True, config=_FROZEN)(cls)


# ----------------------------------------------------------------------------------------------
# data


@_section
class SynthConfig:
    """The embedded synthetic corpus (common.data.synth), generated on first use."""

    recordings: int = Field(24, ge=1)
    patients: int = Field(8, ge=1)
    duration_seconds: tuple[float, float] = (180.0, 420.0)
    sfreqs: tuple[int, ...] = (250, 256, 400, 512)
    seizures_per_recording: tuple[int, int] = (0, 2)
    seed: int = 0
    # flat: every file in data_dir; tusz: laid out as TUSZ v2.0.x ships (train/dev/eval, then
    # patient/session/montage folders, TUSZ patient ids, the three TCP montages' channel names)
    layout: Literal["flat", "tusz"] = "flat"


@_section
class PreprocessConfig:
    """DESIGN.md §3. Order: resample, bandpass, notch, z-score, clip, float32."""

    sfreq: int = Field(256, gt=0)
    resample: Literal["polyphase", "fft"] = "polyphase"
    bandpass_hz: tuple[float, float] = (0.5, 120.0)
    bandpass_order: int = Field(3, ge=1)
    # causal: one forward pass (the original's lfilter); zero_phase: forward-backward (sosfiltfilt).
    filter_phase: Literal["causal", "zero_phase"] = "causal"
    # Where the causal filter starts. rest: from zero state, as the original's lfilter did, so a
    # channel's level at its first sample (an amplifier's DC offset) rings as a start-up transient
    # for seconds, which the z-score's std counts (scaling the whole channel down: 0.27x at a
    # 4000 uV offset on 20 uV EEG) and the clip cuts; steady: in the steady state of the first
    # sample's level, without that transient (each channel's first value is taken off before
    # resampling, which the band-pass, passing no DC, cannot tell from scipy's sosfilt_zi start).
    # zero_phase starts steady itself.
    filter_start: Literal["rest", "steady"] = "rest"
    notch_hz: float | None = 60.0
    notch_q: float = Field(30.0, gt=0)
    clip_sigma: float | None = Field(10.0, gt=0)  # null: no clipping (0 would clip every sample to 0)
    # What to do with NaN/Inf samples in the EDF: `zero` sets them to 0 before filtering (so an IIR
    # filter cannot spread them), leaves them out of the z-score statistics and outputs 0 there
    # (counted in the report); `error` refuses the recording.
    nonfinite: Literal["zero", "error"] = "zero"
    interpolate: tuple[str, ...] = ("Fz", "Pz")
    # A channel whose std (µV) is at most this is flat: reported, and output as zeros.
    flat_std_uv: float = Field(1e-6, ge=0)

    @model_validator(mode="after")
    def _check_band(self):
        low, high = self.bandpass_hz
        if not 0 < low < high < self.sfreq / 2:
            raise ValueError(
                f"bandpass_hz {self.bandpass_hz} must satisfy 0 < low < high < sfreq/2 = {self.sfreq / 2}"
            )
        if self.filter_start == "steady" and self.filter_phase != "causal":
            raise ValueError("filter_start: steady is for filter_phase: causal (zero_phase's forward-backward "
                             "pass starts steady itself); remove it")
        if self.notch_hz is not None and not 0 < self.notch_hz < self.sfreq / 2:
            raise ValueError(f"notch_hz {self.notch_hz} must lie in (0, sfreq/2 = {self.sfreq / 2}); null: no notch")
        return self


@_section
class BalanceConfig:
    """SeizureTransformer-style balanced epoch (original_spec.md §1.9), re-drawn each epoch."""

    enabled: bool = True
    full_ratio: float = Field(0.3, ge=0)
    background_ratio: float = Field(2.5, ge=0)


@_section
class SplitConfig:
    """Patient-disjoint split (common/data/corpora.py). `official`: the `train/`, `dev/`, `eval/`
    folders under data_dir (TUSZ's split; files outside them are reported and left out);
    `seeded`: patients permuted by `seed`, the first dev_fraction to dev, the next eval_fraction to
    eval; `auto`: official for TUSZ and for a folder corpus that has split folders, else seeded."""

    kind: Literal["auto", "official", "seeded"] = "auto"
    dev_fraction: float = Field(0.25, ge=0, lt=1)
    eval_fraction: float = Field(0.0, ge=0, lt=1)
    seed: int = 0


# data.corpus: how data_dir is laid out (common/data/corpora.py); auto: detected from the files
CorpusName = Literal["auto", "tusz", "siena", "chbmit", "folder"]


@_section
class DataConfig:
    data_dir: str = "data/synthetic"
    cache_dir: str = ".cache/jaxbrr"
    # Generate the synthetic corpus into data_dir, a folder the generator owns (common/data/synth.py):
    # it refuses a data_dir holding files it did not write.
    synthetic: SynthConfig | None = None
    # How data_dir is laid out: patient ids, the split and where labels come from
    # (common/data/corpora.py). auto: detected from the files, and printed.
    corpus: CorpusName = "auto"
    montage: Montage = "ref19"
    window_seconds: float = Field(60.0, gt=0)
    stride_seconds: float = Field(10.0, gt=0)
    seizure_labels: tuple[str, ...] = (
        "seiz", "gnsz", "fnsz", "cpsz", "absz", "spsz", "tcsz", "tnsz", "mysz",
    )
    # Labels that are known and mean "no seizure"; any other unknown label is an error.
    background_labels: tuple[str, ...] = ("bckg",)
    split: SplitConfig = SplitConfig()
    balance: BalanceConfig = BalanceConfig()
    # Files matched under data_dir (recursively). Labels: <stem>.csv_bi, else <stem>.csv, else the
    # corpus's own files (CHB-MIT chbNN-summary.txt / .edf.seizures, Siena Seizures-list-PNxx.txt).
    # The suffix in any case: clinical exports write .EDF (predict takes a folder's so too).
    edf_glob: str = "**/*.[eE][dD][fF]"
    # A label file's stated duration (a .csv_bi header) may differ from the EDF's by this much;
    # beyond it the two do not describe the same recording and the file is refused.
    label_duration_tolerance_seconds: float = Field(1.0, ge=0)
    # The same for the span of a CHB-MIT summary's File Start/End Time or a Siena list's
    # registration start/end: clock times typed by hand, to the second, which a recording's EDF may
    # not match exactly (the Siena lists' registration ends are not checked against their EDFs
    # anywhere we know of). A recording tens of minutes off is another one, or another cut of it.
    clock_duration_tolerance_seconds: float = Field(60.0, ge=0)
    # EDF file name -> the name the corpus's own label file lists it under, for a list that
    # misspells it; used only for a recording the list does not name as it is. Written as a
    # mapping ({PN01-1.edf: PN01.edf}), held as (name, listed name) pairs so that the config stays
    # hashable. The default holds Siena v1.0.0's five misspellings (native_labels.SIENA_LISTED_AS;
    # before this field those recordings were refused as unlisted); {} reads names only as written.
    listed_as: tuple[tuple[str, str], ...] = tuple(SIENA_LISTED_AS.items())
    # A CHB-MIT recording its chbNN-summary.txt leaves out and without a .edf.seizures file (chb24's
    # ten seizure-free recordings): refuse it (its seizures are unknown), or read it as seizure-free,
    # which holds only beside other .seizures files: PhysioNet ships one with every recording that
    # has a seizure (common/data/annotations.py, _chbmit_unlisted).
    chbmit_unlisted: Literal["refuse", "seizure_free"] = "refuse"

    @field_validator("listed_as", mode="before")
    @classmethod
    def _listed_as_pairs(cls, value):
        return tuple(value.items()) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _check_listed_as(self):
        for column in zip(*self.listed_as, strict=True):
            if twice := [name for name, count in Counter(column).items() if count > 1]:
                raise ValueError(f"listed_as names {twice[0]!r} twice: one recording has one label file entry, "
                                 "and one entry one recording's seizures")
        return self

    @model_validator(mode="after")
    def _check_synthetic(self):
        if self.synthetic is not None and self.corpus in ("tusz", "siena", "chbmit"):
            raise ValueError(
                f"data.synthetic generates a synthetic corpus, but data.corpus is {self.corpus!r}: to read "
                f"your {self.corpus} corpus set data.synthetic: null (--set data.synthetic=null); to "
                "generate, leave data.corpus at auto"
            )
        return self


# ----------------------------------------------------------------------------------------------
# model


@_section
class TCNConfig:
    channels: tuple[int, ...] = (64, 128, 256, 512, 64, 128, 256, 512)
    kernel_size: int = Field(7, ge=1)
    dropout: float = Field(0.15, ge=0, lt=1)
    out_channels: int = Field(512, ge=1)
    stride_down: int = Field(16, ge=1)
    # Kaiming-uniform gain of the TCN's convolutions, U(±gain·√(6/fan_in)). The original's 0.2
    # ("conservative init", original_spec.md §2) shrinks the signal ~0.2x per layer: after the 11
    # convolutions the encoder's output has a std of ~1e-7 for unit-variance input, and the
    # model starts out blind to its input. 1.0 (He init) keeps the variance through the ReLUs.
    init_gain: float = Field(0.2, gt=0)

    @model_validator(mode="after")
    def _check_kernel(self):
        if self.kernel_size % 2 == 0:  # "same" padding (K − 1)·d / 2 keeps the length for odd K only
            raise ValueError(f"kernel_size must be odd (the TCN pads (kernel_size − 1)·dilation / 2 on each "
                             f"side to keep the length), got {self.kernel_size}")
        return self


@_section
class MambaConfig:
    n_layers: int = Field(6, ge=1)
    d_model: int = Field(64, ge=1)
    d_state: int = Field(16, ge=1)
    d_conv: int = Field(4, ge=1)
    expand: int = Field(2, ge=1)
    headdim: int = Field(8, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _check_heads(self):
        if (self.expand * self.d_model) % self.headdim:
            raise ValueError(
                f"expand*d_model = {self.expand * self.d_model} is not a multiple of headdim {self.headdim}"
            )
        return self


@_section
class SSMConfig:
    """How the selective scan is computed. chunked and sequential are exact; sequential is the oracle.
    chunked_mask_after_exp is a hazard kept for the NaN localiser, never a default: chunked's forward,
    NaN gradients once exp overflows in a chunk (ssm_gnn_anchors.md §6.2; jaxbrr/ssm.py ssd_chunked).
    pallas is chunked fused into Pallas kernels in jaxbrr, for GPUs: the scan (jaxbrr/ssd_kernel.py;
    power-of-2 headdim, d_state and chunk_size) and, where d_inner is a power of 2, the mixer's skip
    term and gated norm (jaxbrr/norm_kernel.py; elsewhere XLA computes them), forward and backward;
    torchref computes it as chunked."""

    scan: Literal["chunked", "sequential", "chunked_mask_after_exp", "pallas"] = "chunked"
    chunk_size: int = Field(16, ge=1)
    # torch only: `cuda` runs mamba_ssm's own kernels (needs a GPU); never chosen silently.
    backend: Literal["torch", "cuda"] = "torch"


@_section
class GraphConfig:
    enabled: bool = True
    # cosine of the electrode features per step; correlation: Pearson's r with the original's
    # additive eps in its norms (common/constants.py CORRELATION_EPS)
    edge_features: Literal["cosine", "correlation"] = "cosine"
    edge_lift: int = Field(16, ge=1)
    edge_mamba: MambaConfig = MambaConfig(n_layers=2, d_model=16, d_state=8, headdim=4)
    top_k: int = Field(3, ge=1)
    edge_threshold: float = Field(1e-4, ge=0)
    n_layers: int = Field(2, ge=1)
    alpha: float = Field(0.05, ge=0, le=1)
    hops: int = Field(2, ge=1)  # SSGConv K
    dropout: float = Field(0.1, ge=0, lt=1)
    use_residual: bool = True
    k_eigenvectors: int = Field(16, ge=1)
    use_dynamic_pe: bool = True
    semi_dynamic_interval: int = Field(5, ge=1)
    pe_sign: Literal["sum", "max_abs"] = "sum"
    laplacian_epsilon: float = Field(1e-4, ge=0)
    # How the PE's eigh meets LAPACK (jaxbrr.graph.per_matrix): one batched call, or one call per
    # graph (`looped`, for several CPU devices, where jaxlib 0.10.2's batched call deadlocks).
    # Same numbers either way; torchref ignores it.
    eigh_calls: Literal["batched", "looped"] = "batched"


@_section
class StabilityConfig:
    """DESIGN.md §2. No clamp or nan_to_num exists anywhere unless `guards: original`."""

    guards: Literal["none", "original"] = "none"
    pe_gradient: Literal["full", "stop", "safe"] = "safe"
    # safe eigh VJP: 1/(λj−λi) is zeroed where |λj−λi| <= max(eigh_tau, the eigenvalues' rounding
    # split in their dtype: common.graph.eigenvalue_split · max|λ|, 8.6e-5 for a float32 19-node
    # Laplacian, 1.6e-13 in float64). A gap below the split cannot be told from a tie.
    eigh_tau: float = Field(1e-6, gt=0)


@_section
class ModelConfig:
    architecture: Literal["v3", "v2", "tcn"] = "v3"
    montage: Montage = "ref19"
    tcn: TCNConfig = TCNConfig()
    electrode_dim: int = Field(64, ge=1)
    node_mamba: MambaConfig = MambaConfig()
    # architecture v2: TCN -> 512-wide BiMamba-2 stack -> head.
    v2_mamba: MambaConfig = MambaConfig(d_model=512, headdim=64)
    graph: GraphConfig = GraphConfig()
    ssm: SSMConfig = SSMConfig()
    stability: StabilityConfig = StabilityConfig()
    layernorm_eps: float = Field(1e-5, gt=0)
    precision: Literal["float32", "bfloat16"] = "float32"
    remat: bool = False

    @property
    def n_chans(self) -> int:
        return len(montage_channels(self.montage))

    @property
    def n_edges(self) -> int:
        return n_edges(self.n_chans)

    @property
    def stage_inputs(self) -> dict[str, tuple[str, ...]]:
        """The model as a graph of stages: tap name -> the taps it is computed from, in forward
        order (common/stages.py's table; MODEL_INPUT names the model's argument x). Both
        frameworks run exactly this graph, and the NaN localiser perturbs, forces or replays one
        stage of it at a time."""
        return stages.stage_inputs(self.architecture, self.graph.enabled)

    @property
    def tap_names(self) -> tuple[str, ...]:
        """The taps both frameworks return, in forward order (a jitted dict comes back sorted)."""
        return tuple(self.stage_inputs)

    @model_validator(mode="after")
    def _check(self):
        if self.architecture == "v3" and self.node_mamba.d_model != self.electrode_dim:
            raise ValueError(
                f"node_mamba.d_model ({self.node_mamba.d_model}) must equal electrode_dim ({self.electrode_dim})"
            )
        if self.architecture == "v2" and self.v2_mamba.d_model != self.tcn.out_channels:
            raise ValueError(
                f"v2_mamba.d_model ({self.v2_mamba.d_model}) must equal tcn.out_channels ({self.tcn.out_channels})"
            )
        if self.graph.k_eigenvectors > len(montage_channels(self.montage)):
            raise ValueError(
                f"graph.k_eigenvectors ({self.graph.k_eigenvectors}) exceeds the montage's node count"
            )
        if self.architecture == "v3" and self.graph.enabled and self.graph.top_k > self.n_chans:
            raise ValueError(f"graph.top_k ({self.graph.top_k}) exceeds the {self.montage} montage's {self.n_chans} "
                             f"nodes (each node's {self.n_chans - 1} others are every edge)")
        return self


# ----------------------------------------------------------------------------------------------
# training, post-processing, evaluation


@_section
class EarlyStoppingConfig:
    """Stop after `patience` + 1 validations in a row that do not beat the best (strictly), as
    the original's EarlyStopping (counter > patience); `best` is the first epoch of the best value."""

    metric: str = "auroc"
    mode: Literal["max", "min"] = "max"
    patience: int = Field(5, ge=1)


@_section
class MeshConfig:
    """The device mesh of a training step (jaxbrr/train/mesh.py). data × fsdp must equal the
    number of devices (all hosts together); -1 means "all the devices the other axis leaves".
    The batch is split over data × fsdp; parameters and optimizer state are replicated over
    `data` and, with fsdp > 1, sharded over `fsdp` (each array along its largest divisible axis)."""

    data: int = Field(-1, ge=-1, le=65536)
    fsdp: int = Field(1, ge=1)
    # Arrays with fewer elements stay replicated under fsdp (sharding them saves nothing).
    fsdp_min_size: int = Field(1024, ge=0)

    @model_validator(mode="after")
    def _check(self):
        if self.data == 0:
            raise ValueError("train.mesh.data must be >= 1, or -1 for all the devices fsdp leaves")
        return self


@_section
class DistributedConfig:
    """Multi-host training on JAX's own runtime (jax.distributed.initialize). With
    initialize: true, a field left null comes from the environment: JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES, JAX_PROCESS_ID, else JAX's cluster detection (SLURM, Open MPI, Kubernetes)."""

    initialize: bool = False
    coordinator_address: str | None = None  # host:port of process 0
    num_processes: int | None = Field(None, ge=1)
    process_id: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check(self):
        if None not in (self.num_processes, self.process_id) and self.process_id >= self.num_processes:
            raise ValueError(f"train.distributed.process_id={self.process_id} must be below "
                             f"num_processes={self.num_processes}")
        return self


@_section
class TrainConfig:
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    gradient_clip: float = Field(1.0, ge=0)
    grad_accum_steps: int = Field(1, ge=1)
    loss: Literal["focal", "bce"] = "focal"
    focal_alpha: float = Field(0.5, ge=0, le=1)
    focal_gamma: float = Field(2.0, ge=0)
    # "auto": sqrt((1-r)/r) from the balanced set's window-level seizure ratio r (original §3.4).
    pos_weight: float | Literal["auto"] = "auto"
    nan_policy: Literal["raise", "skip"] = "raise"
    max_skipped: int = Field(10, ge=0)
    checkify: bool = False
    max_steps: int | None = Field(None, ge=1)
    log_every: int = Field(10, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    # A `last` checkpoint every this many steps within an epoch (None: at epoch ends only), so a
    # killed run loses at most that many steps.
    checkpoint_every: int | None = Field(None, ge=1)
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    seed: int = 0
    # Host batches loaded ahead by a background thread (0: load in the training thread).
    prefetch: int = Field(2, ge=0)
    # NVIDIA GPUs only: float32 matmuls and convolutions in TF32 (10-bit mantissa; JAX's and cuDNN's
    # GPU default) in both twins, or false: full float32 in both (as every CPU run, and what the
    # parity table's GPU rows assume). Process-wide; nothing changes on a CPU.
    tf32: bool = False
    mesh: MeshConfig = MeshConfig()
    distributed: DistributedConfig = DistributedConfig()


@_section
class PostprocessConfig:
    """Recording-level event extraction (DESIGN.md §6). Sample counts are at preprocess.sfreq."""

    tau_on: float = Field(0.86, gt=0, lt=1)
    tau_off: float = Field(0.78, gt=0, lt=1)
    opening_samples: int = Field(11, ge=1)
    closing_samples: int = Field(31, ge=1)
    min_duration_seconds: float = Field(3.0, ge=0)
    max_duration_seconds: float = Field(600.0, gt=0)
    merge_gap_seconds: float = Field(2.0, ge=0)
    confidence: Literal["mean", "peak"] = "mean"
    # A run longer than max_duration_seconds: `drop` it (predict and evaluate say how many they
    # dropped, and where), `split` it into ceil(length / max) events of equal length (the
    # original's intent, spec §4.3; each over max / 2), or `keep` it whole (what the original did:
    # its pieces were written back contiguously). NEDC's scorer joins touching events again, so
    # split and keep score alike, and the threshold sweep counts runs as it does. drop is the
    # default because at a low enough tau_on a whole recording becomes one run: kept, it overlaps
    # every seizure of the recording with no false alarm, and sensitivity at FA/24h (an
    # early-stopping metric) would be 1 on any split whose recordings all hold a seizure (Siena's).
    # The sweep counts a dropped run as a false alarm where it overlaps no seizure, never as a hit.
    long_events: Literal["drop", "split", "keep"] = "drop"

    @model_validator(mode="after")
    def _check(self):
        if self.tau_off > self.tau_on:
            raise ValueError(f"tau_off ({self.tau_off}) must not exceed tau_on ({self.tau_on})")
        for name in ("opening_samples", "closing_samples"):  # a centred element (the original's rule too)
            if getattr(self, name) % 2 == 0:
                raise ValueError(f"{name} must be odd (a centred element), got {getattr(self, name)}")
        if self.max_duration_seconds < self.min_duration_seconds:  # it would drop every event
            raise ValueError(f"max_duration_seconds ({self.max_duration_seconds:g}) is below min_duration_seconds "
                             f"({self.min_duration_seconds:g}): no event could be kept")
        return self


@_section
class EvalConfig:
    fa_rates: tuple[float, ...] = (10.0, 5.0, 2.5, 1.0)
    batch_size: int = Field(8, ge=1)
    # Window stride when scoring whole recordings (validation, evaluate, predict); None: the
    # training stride data.stride_seconds. Overlapping windows are averaged where they overlap.
    stride_seconds: float | None = Field(None, gt=0)
    # Sensitivity at fa_rates (common/eval/sensitivity_at_fa.py): tau_on swept over the grid
    # k / (threshold_steps + 1), k = 1..threshold_steps, then 1 - 10^-j (j = 3..7) above those, for
    # outputs that saturate near 1; each step post-processes every recording.
    threshold_steps: int = Field(99, ge=1)


@_section
class Config:
    name: str = "run"
    workdir: str = "runs/default"
    data: DataConfig = DataConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    postprocess: PostprocessConfig = PostprocessConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _check(self):
        if self.model.montage != self.data.montage:
            raise ValueError(
                f"model.montage ({self.model.montage}) differs from data.montage ({self.data.montage}): "
                "the model's nodes are the montage's channels; set both to one montage "
                "(in YAML, or --set data.montage=M --set model.montage=M)"
            )
        window = self.data.window_seconds * self.preprocess.sfreq
        if window != int(window) or int(window) % self.model.tcn.stride_down:
            raise ValueError(
                f"data.window_seconds * preprocess.sfreq = {window} samples must be an integer "
                f"multiple of model.tcn.stride_down ({self.model.tcn.stride_down})"
            )
        for key, stride in (("data.stride_seconds", self.data.stride_seconds),
                            ("eval.stride_seconds", self.eval.stride_seconds)):
            if stride is not None and stride > self.data.window_seconds:
                raise ValueError(f"{key} ({stride}) exceeds data.window_seconds ({self.data.window_seconds}): "
                                 "windows would leave samples between them unscored")
        return self

    @property
    def window_samples(self) -> int:
        return int(self.data.window_seconds * self.preprocess.sfreq)

    @property
    def stride_samples(self) -> int:
        return int(round(self.data.stride_seconds * self.preprocess.sfreq))

    @property
    def eval_stride_samples(self) -> int:
        seconds = self.eval.stride_seconds or self.data.stride_seconds
        return int(round(seconds * self.preprocess.sfreq))


# ----------------------------------------------------------------------------------------------
# loading


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file and the key."""


def _set_dotted(tree: dict, dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: cannot set {dotted!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`key.sub=value` with the value read as YAML (`3e-4`, `true`, `[1, 2]`, `null`)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:  # e.g. data.edf_glob=*.edf: YAML reads * as an alias
        first = str(error).splitlines()[0]
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({first}); quote it, "
                          f"e.g. --set '{key.strip()}=\"{raw}\"'") from None
    # YAML 1.1 reads 3e-4 as a string: pydantic's lax mode makes it the number a float field
    # wants, as it does for a config file's, and a string field keeps the text (name=1e-4).
    return key.strip(), value


def _section(cls, name: str):
    """The config section (a dataclass) that field `name` of section `cls` holds, else None
    (`SynthConfig | None` is a section; a number or a tuple is not)."""
    annotation = typing.get_type_hints(cls).get(name)
    for candidate in (annotation, *typing.get_args(annotation)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _field_path(loc: tuple) -> list[str]:
    """The config fields that pydantic's error location names: it goes on past the field with a
    union member's tag (`float`, `literal['auto']`) or an index, which are not keys a user sets."""
    path, cls = [], Config
    for part in loc:
        if cls is None or part not in {f.name for f in dataclasses.fields(cls)}:
            break
        path.append(part)
        cls = _section(cls, part)
    return path


def _fields_of(dotted: list[str]) -> list[str] | None:
    """The allowed keys of the section at path `dotted`, for an 'unknown key' message."""
    cls = Config
    for key in dotted:
        cls = _section(cls, key) if key in {f.name for f in dataclasses.fields(cls)} else None
        if cls is None:
            return None
    return [f.name for f in dataclasses.fields(cls)]


def _format_errors(err: ValidationError, source: str) -> str:
    lines, problems = [], {}  # key -> what pydantic says of it (a union: what each member wanted)
    for e in err.errors():
        if e["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            loc = [str(p) for p in e["loc"] if not isinstance(p, int)]
            allowed = _fields_of(loc[:-1])
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            lines.append(f"{source}: unknown key {'.'.join(loc)!r}{hint}")
        else:
            problems.setdefault(".".join(_field_path(e["loc"])), []).append(e["msg"])
    lines += [f"{source}: {key or '<root>'}: {'; or '.join(dict.fromkeys(msgs))}" for key, msgs in problems.items()]
    return "\n".join(lines)


class DuplicateKeyError(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping: PyYAML keeps the last, so a
    second `data:` section silently drops every field of the first."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: SafeLoader merges it (flatten_mapping)
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):  # SafeLoader refuses it itself, as not valid YAML
                continue
            if key in seen:
                raise DuplicateKeyError(f"the key {key!r} at line {key_node.start_mark.line + 1} was given "
                                        f"before, at line {seen[key] + 1}, in the same mapping; YAML would keep "
                                        "only the last: merge the two")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str):
    """yaml.safe_load, refusing duplicate keys (_UniqueKeyLoader)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)


# Top-level sections of brain-go-brr v2's config schema (reference/original_spec.md §3.11) that
# this project's has not: a user may pass the original's training YAML where ours is wanted.
_ORIGINAL_SECTIONS = ("experiment", "training", "evaluation", "preprocessing")


def original_sections(tree) -> list[str]:
    """The sections of brain-go-brr v2's own config schema that `tree` (a parsed YAML) holds: two
    or more of them make it the original's config, not this project's."""
    return [key for key in _ORIGINAL_SECTIONS if isinstance(tree, dict) and key in tree]


def original_yaml(path: str | Path) -> dict | None:
    """The parsed file when `path` is brain-go-brr v2's own YAML config with a model section (what
    its training ran with), else None (a file that does not read is load_config's to explain)."""
    try:
        tree = read_yaml(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return tree if len(original_sections(tree)) >= 2 and isinstance(tree.get("model"), dict) else None


def config_from_dict(tree: dict, source: str = "<dict>") -> Config:
    try:
        return TypeAdapter(Config).validate_python(tree)
    except ValidationError as err:
        lines = _format_errors(err, source).splitlines()
        theirs = original_sections(tree)
        if len(theirs) < 2:
            raise ConfigError("\n".join(lines)) from None
        raise ConfigError("\n".join([
            f"{source}: a brain-go-brr v2 config (sections {', '.join(theirs)}), not this project's: pass one of "
            "configs/ (configs/tusz.yaml is the full-size V3) with --set for what differs; an original "
            "checkpoint or state dict reads its model from it (its own config, else this file as --config)",
            *shown_lines(lines, indent="")])) from None


# The commands' default config: the current folder's, else the repository's (the package is
# installed editable from it); its relative paths are taken from the current folder either way.
DEFAULT_CONFIG = "configs/default.yaml"
REPOSITORY_DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / DEFAULT_CONFIG
DEFAULT_CONFIG_HELP = f"YAML config (default: {DEFAULT_CONFIG} of the current folder, else {REPOSITORY_DEFAULT_CONFIG})"


def default_config() -> Path:
    """configs/default.yaml of the current folder, else the repository's (said on stderr); a
    ConfigError when neither exists (the package installed from elsewhere than its repository)."""
    here = Path(DEFAULT_CONFIG)
    if here.is_file():
        return here
    if REPOSITORY_DEFAULT_CONFIG.is_file():
        print(f"config: {REPOSITORY_DEFAULT_CONFIG} (no {DEFAULT_CONFIG} in the current folder; the config's "
              "relative paths are still taken from here)", file=sys.stderr)
        return REPOSITORY_DEFAULT_CONFIG
    raise ConfigError(f"{DEFAULT_CONFIG}: not in the current folder, nor at {REPOSITORY_DEFAULT_CONFIG}: run from "
                      "the repository root or pass --config PATH")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (None: all defaults), apply `key.sub=value` overrides, validate."""
    tree: dict = {}
    source = "<defaults>"
    if path is not None:
        path = Path(path)
        source = str(path)
        if path.is_dir():
            raise ConfigError(f"{path}: a folder, not a YAML config file; a run folder's config travels with its "
                              "weights: pass the folder (or one of its steps) as --checkpoint, without --config")
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            tree = read_yaml(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file, so not a YAML config; pass a config file (train's "
                              "--config also takes a run folder or weights file: the config it was trained "
                              "with)") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value, f"{source} (--set {text})")
    if overrides:
        source = f"{source} with --set {' '.join(overrides)}"
    return config_from_dict(tree, source)


def with_overrides(config: Config, overrides: list[str] | tuple[str, ...], source: str = "<config>") -> Config:
    """`config` with `key.sub=value` overrides applied, validated again."""
    if not overrides:
        return config
    tree = config_to_dict(config)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value, f"{source} (--set {text})")
    return config_from_dict(tree, f"{source} with --set {' '.join(overrides)}")


def config_to_dict(config) -> dict:
    """Plain nested dict (tuples as lists), e.g. to save next to a checkpoint."""
    return TypeAdapter(type(config)).dump_python(config, mode="json")


def config_hash(section) -> str:
    """Stable short hash of a config section: keys the preprocessing cache."""
    import hashlib
    import json

    text = json.dumps(config_to_dict(section), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
