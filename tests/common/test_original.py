"""common/original.py and common/checkpoints.py on an original brain-go-brr checkpoint's own
config: every field of its model section sets ours, is known not to matter, or is refused naming
its value and what ours does; its post-processing becomes ours where the fields mean the same; the
notes describe the model that runs; weights that do not fit their config give a short error with
the fix.

The checkpoints are written here: the live weights of configs/tusz.yaml's model under the
original's names (zeros: nothing runs), with the config as brain-go-brr's save_checkpoint stores it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from pydantic import TypeAdapter

from common.checkpoints import CheckpointError, read_weights, weights_config
from common.config import ModelConfig, load_config
from common.original import original_key
from common.original_config import model_config, postprocess_config
from common.shown import MISMATCHES_SHOWN
from common.train.compat import check_init_config
from tests.torchref.original_checkpoint import FULL_ORIGINAL_MODEL_CONFIG
from torchref.model import SeizureDetector

ROOT = Path(__file__).resolve().parents[2]
FULL, TINY, DEFAULT = (ROOT / "configs" / name for name in ("tusz.yaml", "tiny.yaml", "default.yaml"))

# brain-go-brr 3.1.1's model section as its shipped configs/local/train.yaml sets it (original_spec.md §3.11, §3.12)
ORIGINAL_MODEL = FULL_ORIGINAL_MODEL_CONFIG
# its postprocessing section (the schema's defaults), tau_on/tau_off changed
ORIGINAL_POSTPROCESSING = {
    "hysteresis": {"tau_on": 0.95, "tau_off": 0.9, "min_onset_samples": 128, "min_offset_samples": 256},
    "morphology": {"opening_kernel": 11, "closing_kernel": 31, "use_gpu": False},
    "duration": {"min_duration_s": 3.0, "max_duration_s": 600.0},
    "events": {"tau_merge": 2.0, "confidence_method": "mean", "confidence_percentile": 0.75},
    "stitching": {"method": "overlap_add", "window_size": 15360, "stride": 2560},
    "min_duration": 3.0,
}
# brain-go-brr 3.3+'s fields, as a later checkpoint's config holds them (PR-1..5)
LATER_GRAPH = {"edge_similarity_margin": 0.01, "edge_lift_activation": "tanh", "edge_lift_norm": "none",
               "edge_lift_init_gain": 0.1, "adj_row_softmax": True, "adj_softmax_tau": 1.0, "adj_ema_beta": 0.0,
               "adj_force_symmetric": False, "laplacian_eps": 1e-3, "laplacian_normalize": True}


def _model(**graph) -> dict:
    section = copy.deepcopy(ORIGINAL_MODEL)
    section["graph"].update(graph)
    return section


def _ours(section: dict) -> ModelConfig:
    return TypeAdapter(ModelConfig).validate_python(model_config(section)[0])


# ----------------------------------------------------------------------------------------------
# the model section, field by field


def test_every_field_of_the_model_section_sets_ours():
    """Each value the original's schema allows, away from its default, lands in our field; the
    shipped section is configs/tusz.yaml's model, run as the original ran."""
    section = _model(edge_features="correlation", edge_top_k=5, edge_threshold=1e-3, edge_mamba_layers=3,
                     edge_mamba_d_state=16, edge_mamba_d_model=32, n_layers=3, dropout=0.2, use_residual=False,
                     alpha=0.1, k_eigenvectors=8, semi_dynamic_interval=2)
    section["tcn"].update(kernel_size=5, dropout=0.25, stride_down=8)
    section["mamba"]["dropout"] = 0.3
    ours = _ours(section)
    assert (ours.tcn.kernel_size, ours.tcn.dropout, ours.tcn.stride_down, ours.node_mamba.dropout) == (5, 0.25, 8, 0.3)
    g = ours.graph
    assert (g.edge_features, g.top_k, g.edge_threshold, g.n_layers, g.dropout, g.alpha, g.k_eigenvectors,
            g.semi_dynamic_interval) == ("correlation", 5, 1e-3, 3, 0.2, 0.1, 8, 2)
    # the edge BiMamba2 takes mamba.dropout, as the node one does; graph.dropout is the GNN's
    assert (g.edge_lift, g.edge_mamba.n_layers, g.edge_mamba.d_model, g.edge_mamba.d_state, g.edge_mamba.dropout) == (
        32, 3, 32, 16, 0.3)
    assert g.use_residual is False  # live in the original GNN: `if self.use_residual and i > 0`

    shipped = _ours(ORIGINAL_MODEL)
    assert shipped.stability.pe_gradient == "full" and shipped.stability.guards == "none"
    run = load_config(FULL).model
    assert shipped.graph == run.graph and shipped.node_mamba == run.node_mamba
    assert shipped.tcn.channels == run.tcn.channels and shipped.tcn.kernel_size == run.tcn.kernel_size


def test_fields_this_model_cannot_honour_are_refused_naming_each_value_and_what_ours_does():
    section = _model(**LATER_GRAPH, pe_sign_consistency=False)
    section["mamba"]["temporal_type"] = "gated_deltanet"  # a later version's node stream
    section["norms"] = {"boundary_norm": "layernorm", "boundary_eps": 1e-5, "layerscale_alpha": 0.1}
    with pytest.raises(ValueError) as err:
        model_config(section)
    lines = str(err.value).splitlines()
    assert lines[0].startswith("its own config (brain-go-brr schema) sets 6 model field(s) this model cannot honour")
    assert lines[1:] == [  # in the config's order
        "  model.mamba.temporal_type = 'gated_deltanet', a field of neither brain-go-brr 3.1.1's schema nor a later "
        "one this reader knows: what it changes is unknown",
        "  model.graph.pe_sign_consistency = False, but ours fixes each eigenvector's sign (graph.pe_sign: sum); "
        "without it the original's signs were its eigensolver's, which no other reproduces; only True is honoured",
        "  model.graph.edge_lift_activation = 'tanh', but ours lifts the edge features linearly, as 3.1.1; only "
        "'none' is honoured",
        "  model.graph.adj_row_softmax = True, but ours builds 3.1.1's adjacency (top-k, threshold, averaged with its "
        "transpose), without a later version's conditioning; only False is honoured",
        "  model.graph.laplacian_eps = 0.001, but ours computes 3.1.1's Laplacian, I − D^-½AD^-½ + 1e-4·I, where a "
        "later version's laplacian_eps also floors the degrees; only 0.0001 is honoured",
        "  model.norms.boundary_norm = 'layernorm', but ours has no norms between the stages, as 3.1.1; only 'none' "
        "is honoured",
        "where you know a field changes nothing, save the state dict alone (torch.save(checkpoint['model_state_dict'], "
        "'weights.pt')) and pass --config with the model section it was trained with: the weights are then read "
        "under that config, and its notes say what differs",
    ]
    for graph in ({"enabled": False}, None):  # the schema's GNN off: its edge stream ran for nothing
        with pytest.raises(ValueError, match="without the GNN|V3 without the GNN"):
            model_config({**ORIGINAL_MODEL, "graph": graph})
    del section["graph"]["enabled"]  # the schema's default is off
    with pytest.raises(ValueError, match="model.graph.enabled = False"):
        model_config(section)


def test_later_fields_at_their_off_value_and_fields_that_change_nothing_are_read():
    """A later version's fields at the value that leaves 3.1.1's forward (and its init gain, a
    softmax temperature with the softmax off, a boundary norm's settings with none), older
    schemas' dead sections: the same model as the shipped section."""
    section = _model(**{**LATER_GRAPH, "edge_lift_activation": "none", "adj_row_softmax": False, "laplacian_eps": 1e-4},
                     similarity="cosine", top_k=3, threshold=1e-4, temperature=0.1)
    section["norms"] = {"boundary_norm": "none", "boundary_eps": 1e-5, "layerscale_alpha": 0.1, "after_gnn": True}
    section["encoder"] = {"stages": 4, "channels": [64, 128, 256, 512], "kernel_size": 5}
    section["tcn"]["channels"] = (64, 128, 256, 512)
    assert _ours(section) == _ours(ORIGINAL_MODEL)


# ----------------------------------------------------------------------------------------------
# the postprocessing section


def test_postprocessing_maps_what_means_the_same_and_notes_the_rest():
    section, notes = postprocess_config(ORIGINAL_POSTPROCESSING)
    assert section == {"tau_on": 0.95, "tau_off": 0.9, "opening_samples": 11, "closing_samples": 31,
                       "min_duration_seconds": 3.0, "max_duration_seconds": 600.0, "merge_gap_seconds": 2.0,
                       "confidence": "mean", "long_events": "keep"}
    assert notes[0].startswith("post-processing from the checkpoint's own config: tau_on 0.95, tau_off 0.9,")
    assert notes[1].startswith("post-processing of the checkpoint's own config not applied: "
                               "hysteresis.min_onset_samples 128 and min_offset_samples 256 (ours runs a plain")
    # an older config without the hysteresis run lengths ran with the schema's 128 and 256; percentile has no match
    section, notes = postprocess_config({"events": {"confidence_method": "percentile"}})
    assert "confidence" not in section and section["tau_on"] == 0.86
    assert "min_onset_samples 128" in notes[1] and "events.confidence_method 'percentile' (ours: mean or peak)" in notes[1]
    _, notes = postprocess_config({"hysteresis": {"min_onset_samples": 1, "min_offset_samples": 1}})
    assert len(notes) == 1  # ours is that hysteresis


# ----------------------------------------------------------------------------------------------
# read_weights on a checkpoint that carries its config


def _shapes(model: ModelConfig) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in SeizureDetector(model).state_dict().items()}


@pytest.fixture(scope="module")
def state():
    """The full-size V3's live weights under the original's names (zeros)."""
    return {original_key(key): torch.zeros(shape) for key, shape in _shapes(load_config(FULL).model).items()}


def _save(path: Path, state: dict, model: dict | None, postprocessing: dict | None = None) -> Path:
    saved = {"epoch": 5, "model_state_dict": state, "optimizer_state_dict": {"state": {}, "param_groups": []}}
    if model is not None:
        saved["config"] = {"model": model, **({"postprocessing": postprocessing} if postprocessing else {})}
    torch.save(saved, path)
    return path


def test_the_checkpoints_post_processing_is_read_unless_a_run_config_decides(tmp_path, state):
    path = _save(tmp_path / "own.pt", state, ORIGINAL_MODEL, ORIGINAL_POSTPROCESSING)
    weights = read_weights(path, None, _shapes)
    assert (weights.config.postprocess.tau_on, weights.config.postprocess.tau_off) == (0.95, 0.9)
    assert weights.own_sections == ("postprocess",)
    assert any(note.startswith("post-processing from the checkpoint's own config: tau_on 0.95") for note in weights.notes)
    # over a config file's own post-processing, which a note names
    weights = read_weights(path, DEFAULT, _shapes)
    assert weights.config.postprocess.tau_on == 0.95 and load_config(DEFAULT).postprocess.tau_on != 0.95
    assert f"{path} carries its own post-processing, used instead of the `postprocess` section of {DEFAULT}" in (
        "\n".join(weights.notes))
    # a training run's own config decides its post-processing
    run = load_config(FULL)
    weights = read_weights(path, run, _shapes)
    assert weights.config.postprocess == run.postprocess and weights.own_sections == ()


def test_windows_other_than_the_originals_are_noted(tmp_path, state):
    """The original trains on 60 s windows at 256 Hz whatever its config says (fixed in its schema):
    the defaults and configs/tusz.yaml window so, configs/default.yaml cuts 16 s windows."""
    path = _save(tmp_path / "own.pt", state, ORIGINAL_MODEL)
    note = ("the original trains on 60 s windows at 256 Hz (fixed in its schema); the config in force cuts 16 s "
            "windows at 256 Hz: --set data.window_seconds=60 --set preprocess.sfreq=256 runs it as trained")
    assert note in read_weights(path, DEFAULT, _shapes).notes
    for config in (None, FULL, load_config(FULL)):  # a file, or a training run's own config (--init-from)
        assert not any(n.startswith("the original trains on") for n in read_weights(path, config, _shapes).notes)
    assert note in read_weights(path, load_config(DEFAULT), _shapes).notes
    # the original resampled with the FFT; ours defaults to polyphase
    resampled = [n for n in read_weights(path, FULL, _shapes).notes if n.startswith("the original resamples")]
    assert resampled == ["the original resamples with the FFT (scipy.signal.resample, original_spec.md 1.5); "
                         "preprocess.resample is polyphase, which differs near each recording's ends where its rate "
                         "is not 256 Hz: --set preprocess.resample=fft reads the EEG as the original did"]
    fft = load_config(FULL, ["preprocess.resample=fft"])
    assert not any(n.startswith("the original resamples") for n in read_weights(path, fft, _shapes).notes)


@pytest.mark.parametrize(("training", "expected"), [
    ({}, ("bce", 0.5, 2.0)),  # the original schema's defaults: bce, where ours defaults to focal
    ({"loss": "focal", "focal_alpha": 0.25, "focal_gamma": 3.0, "mixed_precision": True}, ("focal", 0.25, 3.0)),
    ({"loss": "focal", "mixed_precision": False}, ("focal", 0.5, 2.0)),
])
def test_the_checkpoints_loss_is_read_unless_a_run_config_decides(tmp_path, state, training, expected):
    """The localiser's gradient rows differentiate the loss: an original checkpoint's own
    training.loss (focal_alpha, focal_gamma) was ignored for ours (focal, 0.5, 2). Its
    mixed_precision (default true: float16 autocast) is said, not read into the runs."""
    saved = {"model_state_dict": state, "config": {"model": ORIGINAL_MODEL, "training": training}}
    torch.save(saved, tmp_path / "own.pt")
    weights = read_weights(tmp_path / "own.pt", None, _shapes)
    train = weights.config.train
    assert (train.loss, train.focal_alpha, train.focal_gamma) == expected
    assert f"loss from the checkpoint's own config: {expected[0]}" in "\n".join(weights.notes)
    autocast = any(n.startswith("the original trained this under float16 autocast on CUDA") for n in weights.notes)
    assert autocast is (training.get("mixed_precision", True) is not False)
    run = load_config(FULL)  # a training run's own config decides (--init-from)
    assert read_weights(tmp_path / "own.pt", run, _shapes).config.train.loss == run.train.loss
    torch.save({**saved, "config": {"model": ORIGINAL_MODEL, "training": {"loss": "dice"}}}, tmp_path / "dice.pt")
    with pytest.raises(CheckpointError, match="its own config's training.loss is 'dice'; this project has bce and focal"):
        read_weights(tmp_path / "dice.pt", None, _shapes)


def test_the_notes_describe_the_stability_of_the_model_that_runs(tmp_path, state):
    """Read on its own, the checkpoint's model runs as the original (pe_gradient full); read by
    a training run (--init-from), the run's config decides how it runs (configs/ say `safe`), and
    the notes must say so, not that the original's `full` is in force."""
    path = _save(tmp_path / "best.pt", state, ORIGINAL_MODEL)
    alone = read_weights(path, None, _shapes).notes
    assert alone[0] == ("model read from the checkpoint's own config (brain-go-brr schema); stability.pe_gradient = "
                        "full, as the original; its clamps are off: --set model.stability.guards=original turns them "
                        "on (parity.localize, train --init-from)")
    assert not any("pe_gradient = 'safe'" in note for note in alone)
    run = load_config(FULL)
    assert run.model.stability.pe_gradient == "safe"
    notes = read_weights(path, run, _shapes).notes
    assert notes[0].startswith("model read from the checkpoint's own config (brain-go-brr schema); model.stability "
                               "as the run's config sets it (guards none, pe_gradient safe)")
    assert not any("full, as the original" in note for note in notes)
    assert any(note.startswith("model.stability.pe_gradient = 'safe': the original backpropagated through eigh")
               for note in notes)


def test_an_original_checkpoints_config_meets_a_run_config_only_where_the_weights_do(tmp_path, state):
    """tcn.init_gain only draws the first weights, which --init-from replaces; the checkpoint's
    model section reads back with our default (0.2), a run that would start afresh from He init says 1.0."""
    path = _save(tmp_path / "best.pt", state, ORIGINAL_MODEL)
    run = load_config(FULL, ["model.tcn.init_gain=1.0"])
    theirs = weights_config(path, run)
    assert (theirs.model.tcn.init_gain, run.model.tcn.init_gain) == (0.2, 1.0)
    check_init_config(run, theirs, path)  # no ConfigError
    # a field ours cannot honour is refused there too, naming the file
    later = _save(tmp_path / "later.pt", {"tcn_encoder.x": torch.zeros(1)}, _model(**LATER_GRAPH))
    with pytest.raises(CheckpointError, match=rf"^{later}: its own config .*\n  model.graph.edge_lift_activation = 'tanh'"):
        weights_config(later, run)


def test_weights_that_do_not_fit_their_config_name_a_few_then_the_count_and_the_fix(tmp_path, state):
    """A bare state dict read with another model's --config, and a checkpoint whose own config is
    not its weights': each kind of problem names MISMATCHES_SHOWN keys and counts the rest, and the
    fix says which config described the model."""
    bare = tmp_path / "bare.pt"
    torch.save(dict(state), bare)
    with pytest.raises(CheckpointError) as err:
        read_weights(bare, TINY, _shapes)
    lines = str(err.value).splitlines()
    assert lines[0] == f"cannot load the original checkpoint {bare} into SeizureDetector (architecture v3):"
    assert len(lines) < 4 * (MISMATCHES_SHOWN + 2), lines  # was one line per tensor: 200
    assert lines[1] == "118 original keys have no torchref counterpart:" and lines[7] == "  … and 113 more"
    assert lines[-1] == (f"the model is the one the `model` section of --config {TINY} describes: pass --config the "
                         "config these weights were trained with")

    lying = _save(tmp_path / "lying.pt", state, _model(edge_mamba_d_model=32))
    with pytest.raises(CheckpointError) as err:
        read_weights(lying, DEFAULT, _shapes)
    assert str(err.value).splitlines()[-1] == (
        f"the model is the one {lying}'s own config describes (brain-go-brr schema), not the `model` section of "
        f"--config {DEFAULT}, and that config is not these weights': save the state dict alone "
        "(torch.save(checkpoint['model_state_dict'], 'weights.pt')) and pass --config the config they were trained with")


def test_the_originals_run_folder_and_a_batch_given_for_weights_say_what_to_pass(tmp_path, state):
    """Two mistakes a brain-go-brr user makes: its run folder (results/<run>/checkpoints/best.pt,
    files where ours keeps step folders) was 'holds no checkpoint'; the debug batch passed as the
    checkpoint (the two options swapped) was 'a bare state dict carries no config; pass --config'."""
    from common.checkpoints import locate

    run = tmp_path / "results" / "v3"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("best.pt", "last.pt"):
        torch.save({"model_state_dict": state}, run / "checkpoints" / name)
    with pytest.raises(CheckpointError) as err:
        locate(run)
    assert str(err.value) == (f"{run}: not a checkpoint folder of this project's (checkpoints/best or /last with a "
                              f"step in it), but it holds weights files: pass one of them ({run / 'checkpoints'}"
                              f"/best.pt, {run / 'checkpoints'}/last.pt)")
    torch.save({"windows": torch.zeros(2, 19, 64), "labels": torch.zeros(2, 64), "global_step": 7}, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match=r"b\.pt: a batch of windows \(windows, labels, global_step\), not "
                                              r"weights: pass it as --batch, and the checkpoint as --checkpoint"):
        read_weights(tmp_path / "b.pt", FULL, _shapes)
    # a state dict that happens to hold an "input" tensor among the model's is still weights
    torch.save({**state, "input": torch.zeros(3)}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError) as err:  # refused for its stray key, as any unknown one
        read_weights(tmp_path / "w.pt", FULL, _shapes)
    assert "input" in str(err.value) and "a batch of windows" not in str(err.value)
