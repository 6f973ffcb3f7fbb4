"""A brain-go-brr v2 (V3 dual-stream) checkpoint's weights under this project's names: the key
table, framework-neutral (torchref/original.py and the weights loader of common/checkpoints.py
use it; the arrays may be torch tensors or numpy).

    renamed, report = rename_original(state_dict, expected_shapes, config.model)

The original's `model_state_dict` is renamed key by key through TABLE below (no shape guessing)
and every shape is checked against the target model's. Anything the table does not cover raises
one ValueError that lists every problem: unknown original keys, keys of ours left unfilled,
shape mismatches (both keys, both shapes).

Key names are those of Clarity-Digital-Twin/brain-go-brr-v2 at HEAD 7504b39 (package 3.1.1), read
from src/brain_brr/models/{detector.py, tcn.py, mamba.py, gnn_pyg.py, edge_features.py} and
builders/{node_stream.py, edge_stream.py}; Mamba2 parameters are mamba_ssm 2.2's. The shapes
reproduce the original's documented 31,475,722 parameters (reference/original_spec.md §2).

Where the original's structure is not ours:
  - `mamba.*`: a 512-wide, 6-layer BiMamba2 stack that the V3 forward never calls (22.4 M
    parameters). Ignored, and listed in the report.
  - `*.forward_mamba_fallback.*` / `*.backward_mamba_fallback.*`: each BiMamba2 direction also holds
    a depthwise Conv1d(k=4) that runs instead of the SSM without mamba_ssm/CUDA. Ignored and listed;
    a checkpoint trained on that path alone has no `*_mamba_real.*` weights and is refused (its
    fwd/bwd keys stay unfilled): the conv is not an SSM (original_spec.md §8, item 23).
  - `gnn.last_valid_pe`: a PE cache saved as a buffer (original_spec.md §3.8 (e)). Ignored, listed.
  - `gnn.edge_transform` (Linear 1→1, 2 parameters): an extra parameter with no torchref
    counterpart. V3 builds the GNN with `bypass_edge_transform=True`, so the forward never uses
    it. Ignored, and listed with that reason.
  - `gnn.static_pe`: present only with `use_dynamic_pe: false`; the original computes it with
    PyG's AddLaplacianEigenvectorPE on an unweighted structural graph, which is not
    torchref.graph.static_pe. Refused.
  - `tcn_encoder.tcn.*` from the pytorch-tcn backend (BGB_FORCE_TCN_EXT=1: residual blocks, two
    convs each) has a different structure from MinimalTCN. Refused (unmapped keys).
Config-level differences that change the forward but not the weights (guards off, a LayerNorm
eps other than the original's 1e-5) are written to `LoadReport.notes` (config_notes).

The checkpoint's own config, its `model` and `postprocessing` sections, is read by
common/original_config.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from common.config import Config, ModelConfig
from common.shown import shown_inline, shown_lines

# mamba_ssm.modules.mamba2.Mamba2's parameters; torchref.mamba.Mamba2 keeps the same names.
MAMBA2_PARAMS = ("in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D",
                 "norm.weight", "out_proj.weight")


def _bimamba(original: str, ours: str) -> tuple[tuple[str, str], ...]:
    """Rows for one BiMamba2 stack (original mamba.py: BiMamba2Layer)."""
    layer, mine = f"{original}.layers.{{i}}", f"{ours}.layers.{{i}}"
    return (
        *((f"{layer}.forward_mamba_real.{p}", f"{mine}.fwd.{p}") for p in MAMBA2_PARAMS),
        *((f"{layer}.backward_mamba_real.{p}", f"{mine}.bwd.{p}") for p in MAMBA2_PARAMS),
        (f"{layer}.output_proj.weight", f"{mine}.proj.weight"),  # Linear(2D -> D)
        (f"{layer}.output_proj.bias", f"{mine}.proj.bias"),
        (f"{layer}.layer_norm.weight", f"{mine}.norm.weight"),
        (f"{layer}.layer_norm.bias", f"{mine}.norm.bias"),
    )


# (original key pattern, torchref key pattern). `{i}` is a layer index; `{3i}` is three times it:
# MinimalTCN.network is an nn.Sequential of [weight-normed Conv1d, ReLU, Dropout] per layer.
TABLE: tuple[tuple[str, str], ...] = (
    # tcn.py: TCNEncoder(tcn=MinimalTCN, channel_proj, downsample)
    ("tcn_encoder.tcn.network.{3i}.weight_g", "tcn.layers.{i}.weight_g"),
    ("tcn_encoder.tcn.network.{3i}.weight_v", "tcn.layers.{i}.weight_v"),
    ("tcn_encoder.tcn.network.{3i}.bias", "tcn.layers.{i}.bias"),
    ("tcn_encoder.tcn.projection.weight", "tcn.proj.weight"),
    ("tcn_encoder.tcn.projection.bias", "tcn.proj.bias"),
    ("tcn_encoder.channel_proj.weight", "tcn.channel_proj.weight"),
    ("tcn_encoder.channel_proj.bias", "tcn.channel_proj.bias"),
    ("tcn_encoder.downsample.weight", "tcn.downsample.weight"),
    ("tcn_encoder.downsample.bias", "tcn.downsample.bias"),
    # detector.py: V3 electrode projections and the edge stream's lift / projection
    ("proj_to_electrodes.weight", "proj_to_electrodes.weight"),
    ("proj_to_electrodes.bias", "proj_to_electrodes.bias"),
    ("proj_from_electrodes.weight", "proj_from_electrodes.weight"),
    ("proj_from_electrodes.bias", "proj_from_electrodes.bias"),
    ("edge_in_proj.weight", "edge_lift.weight"),  # Conv1d(1 -> F, k=1, bias=False)
    ("edge_out_proj.weight", "edge_proj.weight"),  # Conv1d(F -> 1, k=1)
    ("edge_out_proj.bias", "edge_proj.bias"),
    # builders/node_stream.py, builders/edge_stream.py: the two BiMamba2 stacks
    *_bimamba("node_mamba", "node_mamba"),
    *_bimamba("edge_mamba", "edge_mamba"),
    # gnn_pyg.py: GraphChannelMixerPyG; PyG SSGConv keeps its weights in `lin` (PyG Linear)
    ("gnn.gnn_layers.{i}.lin.weight", "gnn.layers.{i}.lin.weight"),
    ("gnn.gnn_layers.{i}.lin.bias", "gnn.layers.{i}.lin.bias"),
    ("gnn.layer_norms.{i}.weight", "gnn.norms.{i}.weight"),
    ("gnn.layer_norms.{i}.bias", "gnn.norms.{i}.bias"),
    # tcn.py: ProjectionHead.proj; detector.py: detection_head
    ("proj_head.proj.weight", "head.proj.weight"),
    ("proj_head.proj.bias", "head.proj.bias"),
    ("detection_head.weight", "head.detect.weight"),
    ("detection_head.bias", "head.detect.bias"),
)

# Original keys that may be left out, each with the reason given in the report.
IGNORED: tuple[tuple[str, str], ...] = (
    (r"mamba\..+", "512-wide BiMamba2 stack `mamba`, never called by the V3 forward"),
    (r"(node|edge)_mamba\.layers\.\d+\.(forward|backward)_mamba_fallback\.(weight|bias)",
     "depthwise Conv1d fallback of a BiMamba2 direction (what the original runs on CPU tensors or "
     "without mamba_ssm; not an SSM)"),
    (r"gnn\.last_valid_pe", "PE cache buffer, not a weight (original_spec.md §3.8 (e))"),
    (r"gnn\.edge_transform\.(weight|bias)",
     "Linear(1, 1) edge transform, bypassed in V3 (bypass_edge_transform=True)"),
)

# Original keys that are understood but cannot be mapped exactly: they make the load fail.
REFUSED: tuple[tuple[str, str], ...] = (
    (r"gnn\.static_pe",
     "static PE from PyG AddLaplacianEigenvectorPE (use_dynamic_pe: false), not "
     "torchref.graph.static_pe; only dynamic-PE checkpoints can be loaded"),
    (r"tcn_encoder\.tcn\.network\.\d+\.(conv1|conv2|downsample)\..+",
     "pytorch-tcn backend (BGB_FORCE_TCN_EXT=1), whose residual blocks are not MinimalTCN"),
)

ORIGINAL_LAYERNORM_EPS = 1e-5


@dataclass(frozen=True)
class LoadReport:
    """What from_original_state_dict did: original key -> torchref key, original key -> why it
    was ignored, and the config choices under which the loaded model computes another function."""

    mapped: dict[str, str]
    ignored: dict[str, str]
    notes: tuple[str, ...] = ()
    source: str | None = None

    def counts(self) -> list[str]:
        """Tensors loaded and ignored, the ignored by reason: the report without its notes."""
        lines = [f"original checkpoint{f' {self.source}' if self.source else ''}: "
                 f"{len(self.mapped)} tensors loaded, {len(self.ignored)} ignored"]
        by_reason: dict[str, int] = {}
        for reason in self.ignored.values():
            by_reason[reason] = by_reason.get(reason, 0) + 1
        return lines + [f"  ignored {count:>4}  {reason}" for reason, count in by_reason.items()]

    def __str__(self) -> str:
        return "\n".join([*self.counts(), *(f"  note: {note}" for note in self.notes)])


def _torchref_regex(pattern: str) -> re.Pattern:
    return re.compile(re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)") + "$")


_ROWS = tuple((original, _torchref_regex(ours)) for original, ours in TABLE)


def original_key(torchref_key: str) -> str | None:
    """The original checkpoint's name for a torchref key (None: TABLE has no row for it)."""
    for original, ours in _ROWS:
        match = ours.match(torchref_key)
        if match:
            i = int(match.group("i")) if "i" in ours.groupindex else 0
            return original.replace("{3i}", str(3 * i)).replace("{i}", str(i))
    return None


def first_match(key: str, rules: tuple[tuple[str, str], ...]) -> str | None:
    """The reason of the first (regex, reason) rule whose pattern matches all of `key`, else None."""
    return next((reason for pattern, reason in rules if re.fullmatch(pattern, key)), None)


def ignored_reason(key: str) -> str | None:
    """Why an original state-dict key is not loaded (IGNORED), or None for one a model loads."""
    return first_match(key, IGNORED)


def _shape(t) -> tuple[int, ...]:
    return tuple(t.shape)


# the original's windows: fixed in its schema (data.window_size and sampling_rate are Literals,
# original_spec.md §3.11), whatever its checkpoint's own data section says
ORIGINAL_WINDOW_SECONDS, ORIGINAL_SFREQ = 60.0, 256
ORIGINAL_RESAMPLE = "fft"


def window_notes(config: Config) -> tuple[str, ...]:
    """A note where `config` windows or resamples the EEG otherwise than every original checkpoint
    was trained."""
    window, sfreq = config.data.window_seconds, config.preprocess.sfreq
    notes = []
    if (window, sfreq) != (ORIGINAL_WINDOW_SECONDS, ORIGINAL_SFREQ):
        notes.append(f"the original trains on {ORIGINAL_WINDOW_SECONDS:g} s windows at {ORIGINAL_SFREQ} Hz (fixed in "
                     f"its schema); the config in force cuts {window:g} s windows at {sfreq} Hz: --set "
                     f"data.window_seconds={ORIGINAL_WINDOW_SECONDS:g} --set preprocess.sfreq={ORIGINAL_SFREQ} runs "
                     "it as trained")
    if config.preprocess.resample != ORIGINAL_RESAMPLE:
        notes.append(f"the original resamples with the FFT (scipy.signal.resample, original_spec.md 1.5); "
                     f"preprocess.resample is {config.preprocess.resample}, which differs near each recording's "
                     f"ends where its rate is not {sfreq} Hz: --set preprocess.resample={ORIGINAL_RESAMPLE} reads "
                     "the EEG as the original did")
    return tuple(notes)


# model.stability as the original computes: its clamps and nan_to_num, eigh's gradient unguarded
ORIGINAL_STABILITY = {"guards": "original", "pe_gradient": "full"}


def stability_sets(config: ModelConfig) -> list[str]:
    """The --set of each model.stability field where `config` is not the original's math."""
    return [f"--set model.stability.{field}={value}" for field, value in ORIGINAL_STABILITY.items()
            if getattr(config.stability, field) != value]


def config_notes(config: ModelConfig) -> tuple[str, ...]:
    """Where a model of `config` (the model that runs) computes another function than the original."""
    notes = []
    if config.stability.guards != ORIGINAL_STABILITY["guards"]:
        notes.append(
            f"model.stability.guards = {config.stability.guards!r}: the original's clamps and "
            "nan_to_num are off, so outputs differ wherever they would have acted"
        )
    if config.stability.pe_gradient != ORIGINAL_STABILITY["pe_gradient"]:
        notes.append(
            f"model.stability.pe_gradient = {config.stability.pe_gradient!r}: the original backpropagated through "
            "eigh unguarded, so a gradient it made non-finite (degenerate eigenvalues) is finite here; "
            "--set model.stability.pe_gradient=full computes it as the original did"
        )
    if config.layernorm_eps != ORIGINAL_LAYERNORM_EPS:
        notes.append(
            f"model.layernorm_eps = {config.layernorm_eps} (the original's LayerNorms use "
            f"{ORIGINAL_LAYERNORM_EPS})"
        )
    return tuple(notes)


# what to do when the weights do not fit the model of the config given (a caller that knows where
# that config came from passes its own)
CONFIG_FIX = ("pass the config the checkpoint was trained with (--config), or one whose `model` section "
              "describes these weights")


def rename_original(state_dict: dict, expected: dict[str, tuple[int, ...]], config: ModelConfig,
                    source: str | None = None, fix: str = CONFIG_FIX) -> tuple[dict, LoadReport]:
    """An original V3 state dict (tensors or arrays: anything with .shape) renamed, key by key
    through TABLE, onto the neutral names of a model of `config` whose parameter shapes are
    `expected` (neutral name -> shape): (renamed, report). Every problem raises one ValueError:
    each kind counted, a few of each named (common.shown.MISMATCHES_SHOWN), then `fix`
    where a config that does not describe the weights can be the cause."""
    if config.architecture != "v3":
        raise ValueError(
            f"model.architecture = {config.architecture!r}: an original brain-go-brr V3 checkpoint "
            "maps only onto architecture: v3"
        )
    if config.montage != "ref19":
        raise ValueError(
            f"model.montage = {config.montage!r}: the original reads the 19 referential channels "
            "(set model.montage: ref19)"
        )

    # torchref key -> original key, from the table
    wanted = {key: original_key(key) for key in expected}
    not_in_table = sorted(key for key, orig in wanted.items() if orig is None)
    source_of = {orig: key for key, orig in wanted.items() if orig is not None}

    mapped: dict[str, str] = {}
    ignored: dict[str, str] = {}
    unmapped: list[str] = []
    refused: list[str] = []
    mismatched: list[str] = []
    for orig, tensor in state_dict.items():
        if orig in source_of:
            key = source_of[orig]
            if _shape(tensor) != tuple(expected[key]):
                mismatched.append(
                    f"{orig} {_shape(tensor)} -> {key} expects {tuple(expected[key])}"
                )
            else:
                mapped[orig] = key
        elif (reason := ignored_reason(orig)) is not None:
            ignored[orig] = reason
        elif (reason := first_match(orig, REFUSED)) is not None:
            refused.append(f"{orig}: {reason}")
        else:
            unmapped.append(orig)
    unfilled = sorted(key for key, orig in wanted.items() if orig and orig not in state_dict)

    problems = []
    if unmapped:
        problems.append(f"{len(unmapped)} original keys have no torchref counterpart:")
        problems += shown_lines([f"{key} {_shape(state_dict[key])}" for key in sorted(unmapped)])
    if refused:
        problems.append(f"{len(refused)} original keys cannot be mapped exactly:")
        problems += shown_lines(sorted(refused))
    if unfilled:
        problems.append(f"{len(unfilled)} torchref keys are not filled (original name expected):")
        problems += shown_lines([f"{key} <- {wanted[key]} {tuple(expected[key])}" for key in unfilled])
        streams = [key for key in state_dict if key.startswith(("node_mamba.", "edge_mamba."))]
        if not any("_mamba_real." in key for key in streams) and any(
            "_mamba_fallback." in key for key in streams
        ):
            problems.append(
                "  (its BiMamba2 streams hold only Conv1d fallback weights: it was built without "
                "mamba_ssm, and the fallback is not an SSM)"
            )
    if not_in_table:
        problems.append(f"{len(not_in_table)} torchref keys have no row in TABLE:")
        problems += shown_lines([f"{key} {tuple(expected[key])}" for key in not_in_table])
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (original -> torchref):")
        problems += shown_lines(sorted(mismatched))
    if problems:
        where = f" {source}" if source else ""
        # names the config cannot explain (a refused structure, a gap in TABLE) get no config fix
        config_fault = unmapped or unfilled or mismatched
        raise ValueError(
            f"cannot load the original checkpoint{where} into SeizureDetector "
            f"(architecture {config.architecture}):\n" + "\n".join(problems) + (f"\n{fix}" if config_fault else "")
        )

    untrained = _untrained_mamba(state_dict)
    if untrained:
        where = f" {source}" if source else ""
        raise ValueError(f"cannot load the original checkpoint{where}: {untrained}")
    renamed = {key: state_dict[orig] for orig, key in mapped.items()}
    return renamed, LoadReport(mapped=mapped, ignored=ignored, notes=config_notes(config), source=source)


# the Mamba2 parameters mamba_ssm initialises to exactly 1 (its D skip and its gated RMSNorm's weight)
_ONES_AT_INIT = re.compile(r"(node|edge)_mamba\.layers\.\d+\.(forward|backward)_mamba_real\.(D|norm\.weight)$")


def _untrained_mamba(state_dict: dict) -> str | None:
    """Why the Mamba2 weights of `state_dict` are unusable, or None. The original builds both
    Mamba2 directions whenever mamba_ssm imports, yet runs its depthwise Conv1d fallback instead on
    CPU tensors, under SEIZURE_MAMBA_FORCE_FALLBACK=1 or when causal_conv1d fails
    (original_spec.md §2, §9 item 23); AdamW leaves a parameter that gets no gradient as it was,
    so a checkpoint trained that way holds Mamba2 weights at their initial values: D and the norm
    weight exactly 1 in every direction. Loading them would run an untrained SSM in silence."""
    ones = [key for key in state_dict if _ONES_AT_INIT.search(key)]
    if not ones or not all(bool((state_dict[key] == 1).all()) for key in ones):  # torch or numpy alike
        return None
    return (f"its Mamba2 weights were never trained: D and the gated norm's weight are exactly 1, their initial "
            f"value, in all {len(ones)} of those tensors. The original runs a depthwise Conv1d in place of Mamba2 "
            "on CPU tensors, under SEIZURE_MAMBA_FORCE_FALLBACK=1 or when causal_conv1d fails (original_spec.md §2), "
            "and AdamW leaves the parameters without a gradient as they were: this checkpoint was trained on that "
            "fallback (not an SSM, and not what either twin computes) or not trained at all. Retrain it with "
            "mamba_ssm's Mamba2 running on a GPU, or train the model here")


# weight_norm as a parametrization (torch.nn.utils.parametrizations.weight_norm, torch >= 2.1)
# names the magnitude and direction original0 / original1; the original's
# torch.nn.utils.weight_norm names them weight_g / weight_v (PyTorch's weight_norm docs)
_PARAMETRIZED = ((".parametrizations.weight.original0", ".weight_g"),
                 (".parametrizations.weight.original1", ".weight_v"))
_ANCHOR = "tcn_encoder."  # the original's TCN: every V3 state dict has keys under it


def original_state(saved) -> tuple[dict, list[str], dict[str, str]] | None:
    """The original model's state dict inside `saved`, its keys as the bare model names them;
    notes on what was unwrapped; and bare key -> the key as the file holds it, where they differ.
    None when `saved` holds no original model.

    `saved` is brain-go-brr's save_checkpoint dict (`model_state_dict`), a Lightning checkpoint
    (`state_dict`), a dict with one other entry holding the model (state_dict_entry) or a bare
    state dict. Inside it the model's keys may all carry one prefix that
    a wrapper put there: (Distributed)DataParallel's `module.`, torch.compile's `_orig_mod.`, a
    Lightning module's attribute (`model.`), or several (`module._orig_mod.`); it is found before
    the TCN's keys and removed, and keys outside it (a Lightning module's loss buffers) are left
    out, both said in the notes. Two prefixes before TCN keys (two models in one file) raise."""
    if not isinstance(saved, dict):
        return None
    if "model_state_dict" in saved and not isinstance(saved["model_state_dict"], dict):
        raise ValueError(f"its model_state_dict is a {type(saved['model_state_dict']).__name__}, not a state dict")
    inner, notes = state_dict_entry(saved)
    keys = [k for k in inner if isinstance(k, str)]
    if len(keys) != len(inner) and ("model_state_dict" in saved or any(_ANCHOR in k for k in keys)):
        odd = next(k for k in inner if not isinstance(k, str))
        raise ValueError(f"its state dict holds a key that is no name ({odd!r}): not a state dict torch saved")
    prefixes = sorted({k[:k.index(_ANCHOR)] for k in keys
                       if _ANCHOR in k and (k.index(_ANCHOR) == 0 or k[k.index(_ANCHOR) - 1] == ".")})
    if not prefixes:
        return (dict(inner), notes, {}) if "model_state_dict" in saved else None  # rename_original lists its keys
    if len(prefixes) > 1:
        raise ValueError(f"holds the original's TCN under {len(prefixes)} prefixes ({', '.join(map(repr, prefixes))}): "
                         "two models in one file (a model and its EMA copy?); save the one to load alone")
    prefix = prefixes[0]
    held = {k[len(prefix):]: k for k in keys if k.startswith(prefix)}  # bare -> as the file holds it
    state = {bare: inner[key] for bare, key in held.items()}
    if prefix:
        outside = [k for k in keys if not k.startswith(prefix)]
        notes.append(f"keys read without the prefix {prefix!r} a wrapper put before them (DataParallel's `module.`, "
                     "torch.compile's `_orig_mod.`, a Lightning module's attribute)"
                     + (f"; {len(outside)} keys outside it left out: {shown_inline(outside)}" if outside else ""))
    renamed = 0
    for old, new in _PARAMETRIZED:
        for key in [k for k in state if k.endswith(old)]:
            state[key[:-len(old)] + new] = state.pop(key)
            held[key[:-len(old)] + new] = held.pop(key)
            renamed += 1
    if renamed:
        notes.append(f"{renamed} weight_norm parametrization tensors (`parametrizations.weight.original0/1`, "
                     "torch >= 2.1) read as weight_g / weight_v")
    return state, notes, {bare: spelled for bare, spelled in held.items() if bare != spelled}


def _holds_original_keys(value) -> bool:
    return isinstance(value, dict) and any(isinstance(k, str) and _ANCHOR in k for k in value)


def state_dict_entry(saved: dict, holds: Callable[[object], bool] = _holds_original_keys) -> tuple[dict, list[str]]:
    """The dict of `saved` that holds the model: brain-go-brr's `model_state_dict`, Lightning's
    `state_dict`, `saved` itself where `holds` says it is a state dict (a bare one), else its one
    entry that `holds` says is (a user's own `{"model": ...}`), with a note; another such entry
    beside the model's (an EMA copy) is named in a note, not read. Two such entries and no
    model_state_dict raise a ValueError. `holds`: the original's key names here (any tensor type:
    torchref/original.py passes torch's); common/checkpoints.py passes "a dict of arrays" for
    state dicts of other names."""
    named = next((k for k in ("model_state_dict", "state_dict") if isinstance(saved.get(k), dict)), None)
    if named is None and holds(saved):
        return saved, []
    others = [k for k, v in saved.items() if k != named and holds(v)]
    if named is None and len(others) > 1:
        raise ValueError(f"holds state dicts under {len(others)} entries ({shown_inline(others)}) and no "
                         "model_state_dict (a model and its EMA copy?): save the one to load alone, e.g. "
                         f"torch.save(checkpoint[{others[0]!r}], 'model.pt')")
    if named is None and others:
        return saved[others[0]], [f"the model's weights read from its {others[0]!r} entry"]
    entries = f"entry {others[0]} also holds" if len(others) == 1 else f"entries {shown_inline(others)} also hold"
    notes = [f"its {entries} weights (an EMA copy?), not read: to load them, save them alone, e.g. "
             f"torch.save(checkpoint[{others[0]!r}], 'ema.pt')"] if others else []
    return (saved if named is None else saved[named]), notes


def is_original(saved) -> bool:
    """An original checkpoint: brain-go-brr's save_checkpoint dict (`model_state_dict`), or a state
    dict (bare, in a Lightning checkpoint, under a wrapper's prefix) holding its TCN's keys
    (`tcn_encoder.`): original_state's."""
    try:
        return original_state(saved) is not None
    except ValueError:  # two models: an original checkpoint, which original_state refuses to read
        return True
