"""A brain-go-brr v2 checkpoint's own config under this project's names (its weights' names are
common/original.py's).

    model, notes = model_config(saved["config"]["model"])              # -> our ModelConfig fields
    postprocess, notes = postprocess_config(saved["config"]["postprocessing"])

The `model` section (brain-go-brr's schema) is read field by field through MODEL_FIELDS,
MODEL_REQUIRED and MODEL_IRRELEVANT: each field sets ours, or is known not to change the forward,
or holds the one value under which ours computes the original's function; any other value, and
any field none of them knows, is refused, naming the field, its value and what ours does. The
`postprocessing` section becomes ours as far as the fields mean the same; what does not map is
said in a note.
"""

from __future__ import annotations

import copy

from common.config import ModelConfig
from common.original import first_match
from common.train.class_weight import pos_weight_from_ratio

# ----------------------------------------------------------------------------------------------
# the checkpoint's own config: brain-go-brr's `model` section (schemas.py ModelConfig at 3.1.1,
# original_spec.md §3.11; older and later versions' fields where known), field by field

# The field -> the fields of ours it sets, to its value. Absent fields take 3.1.1's schema defaults
# (_MODEL_DEFAULTS), as its pydantic config did.
MODEL_FIELDS: dict[str, tuple[str, ...]] = {
    "tcn.kernel_size": ("tcn.kernel_size",),
    "tcn.dropout": ("tcn.dropout",),
    "tcn.stride_down": ("tcn.stride_down",),
    # the one `mamba` field the live streams read, both of them (spec §3.11; detector.py builds the
    # edge BiMamba2 with dropout=cfg.mamba.dropout)
    "mamba.dropout": ("node_mamba.dropout", "graph.edge_mamba.dropout"),
    "graph.edge_features": ("graph.edge_features",),
    "graph.edge_top_k": ("graph.top_k",),
    "graph.edge_threshold": ("graph.edge_threshold",),
    "graph.edge_mamba_layers": ("graph.edge_mamba.n_layers",),
    "graph.edge_mamba_d_state": ("graph.edge_mamba.d_state",),
    "graph.edge_mamba_d_model": ("graph.edge_lift", "graph.edge_mamba.d_model"),  # the lift is 1 -> d_model
    "graph.n_layers": ("graph.n_layers",),
    "graph.dropout": ("graph.dropout",),  # the GNN's
    "graph.use_residual": ("graph.use_residual",),  # `if self.use_residual and i > 0`, as ours
    "graph.alpha": ("graph.alpha",),
    "graph.k_eigenvectors": ("graph.k_eigenvectors",),
    "graph.semi_dynamic_interval": ("graph.semi_dynamic_interval",),
}

_ADJACENCY = ("ours builds 3.1.1's adjacency (top-k, threshold, averaged with its transpose), without a later "
              "version's conditioning")

# The field -> (the one value under which ours computes the original's function, what ours does).
# Any other value is refused. The later versions' fields (3.3+: bounded edge lift, adjacency
# conditioning, boundary norms) hold here the value their schema defaults to, which leaves 3.1.1's forward.
MODEL_REQUIRED: dict[str, tuple[object, str]] = {
    "architecture": ("v3", "ours maps an original checkpoint onto the V3 dual-stream only (architecture: v3)"),
    "tcn.num_layers": (8, "ours knows MinimalTCN's channels for the shipped 8 layers only ([64, 128, 256, 512] twice)"),
    "graph.enabled": (True, "ours builds no V3 whose edge stream runs and is discarded (model.graph None or not "
                            "enabled): a V3 without the GNN is not this model"),
    "graph.use_dynamic_pe": (True, "ours has no static PE of the original's (PyG AddLaplacianEigenvectorPE on the "
                                   "structural graph)"),
    "graph.pe_sign_consistency": (True, "ours fixes each eigenvector's sign (graph.pe_sign: sum); without it the "
                                        "original's signs were its eigensolver's, which no other reproduces"),
    "graph.edge_lift_activation": ("none", "ours lifts the edge features linearly, as 3.1.1"),
    "graph.edge_lift_norm": ("none", "ours normalises nothing after the edge lift, as 3.1.1"),
    "graph.edge_similarity_margin": (0.01, "ours clamps the similarity at ±0.99, as 3.1.1, under "
                                           "model.stability.guards: original"),
    "graph.adj_row_softmax": (False, _ADJACENCY),
    "graph.adj_ema_beta": (0.0, _ADJACENCY),
    "graph.adj_force_symmetric": (False, _ADJACENCY),
    "graph.laplacian_eps": (1e-4, "ours computes 3.1.1's Laplacian, I − D^-½AD^-½ + 1e-4·I, where a later "
                                  "version's laplacian_eps also floors the degrees"),
    "graph.laplacian_normalize": (True, "ours computes the normalised Laplacian, as 3.1.1"),
    "norms.boundary_norm": ("none", "ours has no norms between the stages, as 3.1.1"),
}

_STACK = "sizes the 512-wide stack `mamba`, which the V3 forward never calls (its weights are ignored)"
_BOUNDARY = "read only with a boundary norm (norms.boundary_norm other than none, refused)"

# Fields that do not change the forward of the model the others describe: (pattern, why).
MODEL_IRRELEVANT: tuple[tuple[str, str], ...] = (
    (r"name", "a label (the schema's one value is seizure_detector)"),
    (r"tcn\.causal", "not passed to the TCN (original_spec.md §2): its convolutions are symmetric"),
    (r"tcn\.channels", "not read: 3.1.1's TCNEncoder hard-codes [64, 128, 256, 512] twice, as ours builds"),
    (r"tcn\.use_cuda_optimizations", "not passed to the TCN (original_spec.md §2)"),
    (r"mamba\.(n_layers|d_model|d_state|conv_kernel)", _STACK),
    (r"graph\.edge_lift_init_gain", "initialisation only: the weights hold what it started"),
    (r"graph\.adj_softmax_tau", "read only with adj_row_softmax: true (refused)"),
    (r"norms\.(boundary_eps|layerscale_alpha|after_\w+|before_\w+)", _BOUNDARY),
    (r"(encoder|rescnn|decoder)\..+", "a deprecated U-Net section of older schemas, never built"),
    (r"graph\.(similarity|top_k|threshold|temperature)",
     "the v2.6 heuristic graph builder's, which the V3 path does not build (it reads edge_*)"),
)

_MODEL_DEFAULTS = {  # 3.1.1's schema defaults for what MODEL_FIELDS maps, under our names
    "architecture": "v3", "montage": "ref19",
    "tcn": {"channels": [64, 128, 256, 512] * 2, "kernel_size": 7, "dropout": 0.15, "stride_down": 16},
    "node_mamba": {"dropout": 0.1},
    "graph": {
        "enabled": True, "edge_features": "cosine", "top_k": 3, "edge_threshold": 1e-4, "edge_lift": 16,
        "edge_mamba": {"n_layers": 2, "headdim": 4, "d_model": 16, "d_state": 8, "dropout": 0.1},  # headdim hard-coded there
        "n_layers": 2, "dropout": 0.1, "use_residual": True, "alpha": 0.05, "k_eigenvectors": 16,
        "use_dynamic_pe": True, "semi_dynamic_interval": 1, "pe_sign": "sum",
    },
    # the original backpropagated through eigh; its clamps are off unless asked for
    "stability": {"guards": "none", "pe_gradient": "full"},
}


def _leaves(section: dict, prefix: str = "") -> dict[str, object]:
    """A nested config section as dotted field -> value (an empty or None section is a value;
    a tuple, as a config dump may hold a list, a list)."""
    leaves = {}
    for key, value in section.items():
        if isinstance(value, dict) and value:
            leaves.update(_leaves(value, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return leaves


def _set(tree: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for key in path:
        tree = tree[key]
    tree[last] = value


def model_config(original: dict) -> tuple[dict, list[str]]:
    """This project's model section for an original checkpoint's own `config["model"]`
    (brain-go-brr's schema), and notes on what it assumes. A field ours cannot honour raises one
    ValueError naming every such field, its value and what ours does instead."""
    if original.get("graph") is None:
        raise ValueError("its own config has model.graph: None, a V3 without the GNN: its edge stream ran and was "
                         "discarded, which this model does not build")
    model = copy.deepcopy(_MODEL_DEFAULTS)
    refused = []
    # a graph section without `enabled` is off: the schema's default
    for field, value in {"graph.enabled": False, **_leaves(original)}.items():
        if field in MODEL_FIELDS:
            for ours in MODEL_FIELDS[field]:
                _set(model, ours, value)
        elif field in MODEL_REQUIRED:
            required, instead = MODEL_REQUIRED[field]
            if value != required:
                refused.append(f"model.{field} = {value!r}, but {instead}; only {required!r} is honoured")
        elif first_match(field, MODEL_IRRELEVANT) is None:
            refused.append(f"model.{field} = {value!r}, a field of neither brain-go-brr 3.1.1's schema nor a later "
                           "one this reader knows: what it changes is unknown")
    if refused:
        raise ValueError(f"its own config (brain-go-brr schema) sets {len(refused)} model field(s) this model "
                         "cannot honour; its weights would compute another function here:\n  " + "\n  ".join(refused)
                         + "\nwhere you know a field changes nothing, save the state dict alone (torch.save(checkpoint"
                         "['model_state_dict'], 'weights.pt')) and pass --config with the model section it was trained "
                         "with: the weights are then read under that config, and its notes say what differs")
    return model, ["model read from the checkpoint's own config (brain-go-brr schema)"]


def run_note(running: ModelConfig, run_config: bool) -> str:
    """How the model of an original checkpoint runs, the rest of its first note: `running` is the
    model that runs; `run_config`: a training run's own config decides its model.stability."""
    stability = running.stability
    parts = [f"model.stability as the run's config sets it (guards {stability.guards}, pe_gradient "
             f"{stability.pe_gradient})"] if run_config else []
    if stability.pe_gradient == "full":
        parts.append("stability.pe_gradient = full, as the original")
    if stability.guards == "none":
        parts.append("its clamps are off: --set model.stability.guards=original turns them on "
                     "(parity.localize, train --init-from)")
    return "; ".join(parts)


# ----------------------------------------------------------------------------------------------
# the checkpoint's own config: its `postprocessing` section (original_spec.md §3.11, §4)

# The field -> our postprocess field, where both mean the same (samples at 256 Hz, the original's
# one rate, as ours at preprocess.sfreq). Ours merges before the duration filter and drops events
# longer than the maximum, which the original kept whole (common/eval/postprocess.py's deviations).
POSTPROCESS_FIELDS: dict[str, str] = {
    "hysteresis.tau_on": "tau_on",
    "hysteresis.tau_off": "tau_off",
    "morphology.opening_kernel": "opening_samples",
    "morphology.closing_kernel": "closing_samples",
    "duration.min_duration_s": "min_duration_seconds",
    "duration.max_duration_s": "max_duration_seconds",
    "events.tau_merge": "merge_gap_seconds",
    "events.confidence_method": "confidence",  # mean, peak; percentile has no counterpart (noted)
}

# 3.1.1's schema defaults of the fields above and of the hysteresis' run lengths, which ours lacks
_POSTPROCESS_DEFAULTS = {
    "hysteresis.tau_on": 0.86, "hysteresis.tau_off": 0.78, "hysteresis.min_onset_samples": 128,
    "hysteresis.min_offset_samples": 256, "morphology.opening_kernel": 11, "morphology.closing_kernel": 31,
    "duration.min_duration_s": 3.0, "duration.max_duration_s": 600.0, "events.tau_merge": 2.0,
    "events.confidence_method": "mean",
}

_RUN_LENGTHS = ("hysteresis.min_onset_samples", "hysteresis.min_offset_samples")  # ours has no such fields

# Fields that change nothing the original's post-processing computed: (pattern, why).
POSTPROCESS_IRRELEVANT: tuple[tuple[str, str], ...] = (
    (r"morphology\.use_gpu", "no effect"),
    (r"events\.confidence_percentile", "read only by confidence_method: percentile"),
    (r"stitching\..+", "dead: its evaluation hard-codes the stitching (spec §3.11)"),
    (r"min_duration", "deprecated and dead (spec §3.11)"),
)


# The positive-class weight the original's loss took on its balanced TUSZ set: sqrt((1 - r)/r) for
# the window-level seizure share r = 0.3421, computed each epoch from the training set and saved
# nowhere (original_spec.md §3.4; its focal loss passes it only at focal_alpha 0.5, as shipped).
ORIGINAL_SEIZURE_RATIO = 0.3421
ORIGINAL_POS_WEIGHT = round(pos_weight_from_ratio(ORIGINAL_SEIZURE_RATIO), 4)  # 1.3868
# The loss fields of the original's `training` section, with its schema's defaults
# (original_spec.md §3.11: loss "bce", focal_alpha 0.5, focal_gamma 2.0; ours defaults to focal).
LOSS_DEFAULTS = {"loss": "bce", "focal_alpha": 0.5, "focal_gamma": 2.0}


def loss_config(training: dict) -> tuple[dict, list[str]]:
    """This project's train.loss, focal_alpha and focal_gamma for an original checkpoint's own
    `config["training"]`, and a note saying so (the localiser's gradient rows differentiate it)."""
    section = {field: training.get(field, default) for field, default in LOSS_DEFAULTS.items()}
    if section["loss"] not in ("bce", "focal"):
        raise ValueError(f"its own config's training.loss is {section['loss']!r}; this project has bce and focal")
    notes = [f"loss from the checkpoint's own config: {loss_text(**section)}"]
    # the schema's default is True: float16 autocast on CUDA (original_spec.md §3.11)
    if training.get("mixed_precision", True) is not False:
        notes.append("the original trained this under float16 autocast on CUDA (training.mixed_precision true, its "
                     "schema's default); the runs here are whole-model precisions: parity.localize --dtype "
                     "float64,float32,float16 casts the model to float16 throughout, which autocast does not")
    return section, notes


def loss_text(loss: str, focal_alpha: float, focal_gamma: float) -> str:
    """A loss as the notes name it: "bce", or "focal (focal_alpha A, focal_gamma G)"."""
    return loss + (f" (focal_alpha {focal_alpha:g}, focal_gamma {focal_gamma:g})" if loss == "focal" else "")


def postprocess_config(original: dict) -> tuple[dict, list[str]]:
    """This project's postprocess section for an original checkpoint's own
    `config["postprocessing"]`, and notes: what it set, and each field whose meaning ours lacks."""
    section, left, runs = {}, [], {}
    for field, value in {**_POSTPROCESS_DEFAULTS, **_leaves(original)}.items():
        if field == "events.confidence_method" and value not in ("mean", "peak"):
            left.append(f"events.confidence_method {value!r} (ours: mean or peak)")
        elif field in POSTPROCESS_FIELDS:
            section[POSTPROCESS_FIELDS[field]] = value
        elif field in _RUN_LENGTHS:
            runs[field] = value
        elif first_match(field, POSTPROCESS_IRRELEVANT) is None:
            left.append(f"{field} {value!r} (unknown here)")
    if any(value != 1 for value in runs.values()):
        left.insert(0, f"hysteresis.min_onset_samples {runs['hysteresis.min_onset_samples']} and min_offset_samples "
                       f"{runs['hysteresis.min_offset_samples']} (ours runs a plain two-threshold hysteresis, 1 and 1: "
                       "an event starts at the first sample at or above tau_on and ends at the first below tau_off)")
    section["long_events"] = "keep"  # its split wrote the pieces back contiguously: kept whole (spec §4.3)
    notes = ["post-processing from the checkpoint's own config: " + ", ".join(
        f"{ours} {section[ours]}" for ours in POSTPROCESS_FIELDS.values() if ours in section)
        + ", long_events keep (the original kept an event over max_duration_s whole)"]
    if left:
        notes.append("post-processing of the checkpoint's own config not applied: " + "; ".join(left)
                     + " (common/eval/postprocess.py)")
    return section, notes
