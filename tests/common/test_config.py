"""Every shipped config loads; errors name the file and the key."""

import dataclasses
from pathlib import Path

import pytest

from common.config import (
    ConfigError,
    config_hash,
    load_config,
    parse_override,
    read_yaml,
    with_overrides,
)

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"tiny.yaml", "default.yaml", "smoke.yaml", "tusz.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads(path):
    config = load_config(path)
    assert config.window_samples % config.model.tcn.stride_down == 0
    assert config.model.n_chans == (19 if config.data.montage == "ref19" else 23)


def test_tusz_is_the_original_full_size():
    config = load_config(CONFIGS[[p.name for p in CONFIGS].index("tusz.yaml")])
    model = config.model
    assert config.window_samples == 15360 and config.stride_samples == 2560
    assert model.tcn.channels == (64, 128, 256, 512, 64, 128, 256, 512)
    assert (model.node_mamba.n_layers, model.node_mamba.d_model, model.node_mamba.headdim) == (6, 64, 8)
    assert (model.graph.edge_mamba.n_layers, model.graph.edge_mamba.d_state) == (2, 8)
    assert model.n_edges == 171


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  tcn:\n    kernal_size: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "model.tcn.kernal_size" in message and "kernel_size" in message


def test_unknown_top_level_section(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("trian:\n  lr: 1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'trian'.*allowed: .*train"):
        load_config(path)


def test_bad_value_and_broken_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: -1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: train.lr"):
        load_config(path)
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path):
    """PyYAML keeps the last of two equal keys: a second `data:` section appended to a config
    silently dropped every field of the first (data.cache_dir went back to its default)."""
    path = tmp_path / "twice.yaml"
    path.write_text("data:\n  cache_dir: /fast/cache\n  window_seconds: 16\ntrain:\n  lr: 0.001\ndata:\n  stride_seconds: 5\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: not valid YAML: the key 'data' at line 6 was given before, "
                                          r"at line 1, in the same mapping; .*merge the two$"):
        load_config(path)
    path.write_text("data:\n  window_seconds: 16\n  window_seconds: 8\n")
    with pytest.raises(ConfigError, match=r"the key 'window_seconds' at line 3 was given before, at line 2"):
        load_config(path)
    path.write_text("data:\n  window_seconds: 16\ntrain:\n  window_seconds: 8\n")  # one per mapping
    with pytest.raises(ConfigError, match="train.window_seconds"):  # only the schema's objection
        load_config(path)


def test_merge_keys_still_merge_and_an_unhashable_key_is_still_not_valid_yaml(tmp_path):
    """The duplicate check must not read `<<: *anchor` as a key (it had refused merge keys), and a
    key YAML cannot hash stays SafeLoader's own error (it had become a TypeError traceback)."""
    path = tmp_path / "merged.yaml"
    path.write_text("base: &b\n  lr: 0.001\n  epochs: 1\ntrain:\n  <<: *b\n  epochs: 2\n")
    assert read_yaml(path.read_text())["train"] == {"lr": 0.001, "epochs": 2}  # a merge's override is no duplicate
    path.write_text("train:\n  ? [a, b]\n  : 1\n")
    with pytest.raises(ConfigError, match="(?s)not valid YAML: .*unhashable key"):
        load_config(path)


def test_every_shipped_config_reads():
    for path in sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")):
        load_config(path)


def test_overrides():
    config = load_config(None, ["train.lr=3e-4", "model.graph.enabled=false", "model.tcn.channels=[4, 8]"])
    assert config.train.lr == pytest.approx(3e-4)
    assert config.model.graph.enabled is False
    assert config.model.tcn.channels == (4, 8)
    with pytest.raises(ConfigError, match="unknown key 'train.lrr'"):
        load_config(None, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("train.lr")
    # a glob is not YAML (* starts an alias): a one-line error with the quoting that works
    with pytest.raises(ConfigError, match=r"""not valid YAML .*--set 'data.edf_glob="\*\*/\*.edf"'"""):
        load_config(None, ["data.edf_glob=**/*.edf"])
    assert load_config(None, ['data.edf_glob="**/*.edf"']).data.edf_glob == "**/*.edf"
    # YAML 1.1 reads 3e-4 and nan as strings: a float field takes the number, a string field the text
    config = load_config(None, ["name=1e-4", "preprocess.bandpass_hz=[5e-1, 1.2e2]", "train.pos_weight=2e0"])
    assert (config.name, config.preprocess.bandpass_hz, config.train.pos_weight) == ("1e-4", (0.5, 120.0), 2.0)
    assert load_config(None, ["name=nan"]).name == "nan"
    # a field of several types (a number or 'auto') is named as the key a user sets, once
    with pytest.raises(ConfigError) as error:
        load_config(None, ["train.pos_weight=abc"])
    assert str(error.value).count("\n") == 0 and ": train.pos_weight: " in str(error.value)
    assert "valid number" in str(error.value) and "'auto'" in str(error.value)


def test_overrides_on_a_loaded_config():
    base = load_config("configs/tiny.yaml")
    changed = with_overrides(base, ["model.remat=true", "train.lr=3e-4"], "dump")
    assert (changed.model.remat, changed.train.lr) == (True, 3e-4)
    assert changed.model.n_chans == base.model.n_chans and not base.model.remat  # the rest, and base, unchanged
    assert with_overrides(base, []) is base
    with pytest.raises(ConfigError, match="dump"):
        with_overrides(base, ["model.remat=maybe"], "dump")


def test_configs_are_frozen_and_hash_stably():
    a, b = load_config(), load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.train.lr = 1.0
    assert config_hash(a.preprocess) == config_hash(b.preprocess)
    c = load_config(None, ["preprocess.notch_hz=50"])
    assert config_hash(c.preprocess) != config_hash(a.preprocess)


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="stride_down"):
        load_config(None, ["data.window_seconds=1.01"])
    with pytest.raises(ConfigError, match=r"differs from data.montage \(ref19\): .*--set data.montage=M --set model.montage=M"):
        load_config(None, ["model.montage=bipolar"])
    with pytest.raises(ConfigError, match="headdim"):
        load_config(None, ["model.node_mamba.headdim=7"])
    with pytest.raises(ConfigError, match=r"graph.top_k \(20\) exceeds the ref19 montage's 19 nodes"):
        load_config(None, ["model.graph.top_k=20"])
    assert load_config(None, ["model.graph.top_k=19"]).model.graph.top_k == 19  # every edge, as 18
    assert load_config(None, ["model.graph.top_k=20", "model.graph.enabled=false"]).model.graph.top_k == 20  # unread
    with pytest.raises(ConfigError, match="kernel_size must be odd"):
        load_config(None, ["model.tcn.kernel_size=6"])
    with pytest.raises(ConfigError, match=r"eval.stride_seconds \(90.0\) exceeds data.window_seconds"):
        load_config(None, ["eval.stride_seconds=90"])
    assert load_config(None, ["eval.stride_seconds=60"]).eval_stride_samples == 60 * 256
    assert load_config(None).eval_stride_samples == load_config(None).stride_samples  # None: the training stride
    # preprocessing that would ruin every recording is refused before any EDF is read: a notch
    # outside (0, sfreq/2) failed per file after the whole read, and clip_sigma 0 clipped every
    # sample to 0 (null turns each off)
    for notch in ("200", "0", "128"):
        with pytest.raises(ConfigError, match=rf"notch_hz {float(notch)} must lie in \(0, sfreq/2 = 128.0\); null: no notch"):
            load_config(None, [f"preprocess.notch_hz={notch}"])
    for clip in ("0", "-3"):
        with pytest.raises(ConfigError, match="preprocess.clip_sigma: Input should be greater than 0"):
            load_config(None, [f"preprocess.clip_sigma={clip}"])
    off = load_config(None, ["preprocess.notch_hz=null", "preprocess.clip_sigma=null"]).preprocess
    assert off.notch_hz is None and off.clip_sigma is None
    # post-processing that predict and evaluate refused only after the model ran on every file
    # (an even element), or that dropped every event in silence (max duration below min)
    for name in ("opening_samples", "closing_samples"):
        with pytest.raises(ConfigError, match=rf"{name} must be odd \(a centred element\), got 32"):
            load_config(None, [f"postprocess.{name}=32"])
    with pytest.raises(ConfigError, match=r"max_duration_seconds \(2\) is below min_duration_seconds \(3\): no event "
                                          r"could be kept"):
        load_config(None, ["postprocess.max_duration_seconds=2"])
    kept = load_config(None, ["postprocess.max_duration_seconds=3", "postprocess.closing_samples=1"]).postprocess
    assert (kept.max_duration_seconds, kept.closing_samples) == (3.0, 1)


def test_the_original_projects_config_is_told_apart(tmp_path):
    """A user passes brain-go-brr v2's training YAML where ours is wanted: one line says so and
    which config to pass, before at most five of its unknown keys."""
    theirs = tmp_path / "v3.yaml"
    theirs.write_text("experiment: {name: v3, seed: 42}\ndata: {dataset: tuh_eeg, data_dir: data}\n"
                      "training: {epochs: 100, batch_size: 4, learning_rate: 0.0003}\nevaluation: {fa_rates: [10]}\n"
                      "model: {architecture: v3, tcn: {num_layers: 8}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(theirs)
    lines = str(err.value).splitlines()
    assert lines[0] == (f"{theirs}: a brain-go-brr v2 config (sections experiment, training, evaluation), not this "
                        "project's: pass one of configs/ (configs/tusz.yaml is the full-size V3) with --set for what "
                        "differs; an original checkpoint or state dict reads its model from it (its own config, else "
                        "this file as --config)")
    assert len(lines) <= 7 and "unknown key" in lines[1]
    with pytest.raises(ConfigError) as err:  # one stray section is a typo, not the other project
        load_config(None, ["training.epochs=3"])
    assert "brain-go-brr" not in str(err.value)


def test_a_run_folder_or_weights_file_as_config_is_the_config_it_was_trained_with(tmp_path):
    """--resume's refusal says the checkpoint holds the run's config, and train's `--config` took
    only YAML: a .pt gave "'utf-8' codec can't decode byte 0x80", naming neither file nor option."""
    import json

    from common.checkpoints import run_config
    from common.config import config_to_dict

    trained = load_config(None, ["train.lr=5e-4", "data.window_seconds=16"])
    meta = tmp_path / "run" / "checkpoints" / "last" / "7" / "meta"
    meta.mkdir(parents=True)
    (meta / "metadata").write_text(json.dumps({"config": config_to_dict(trained), "progress": {"step": 7}}))
    assert run_config(tmp_path / "run") == trained
    assert run_config(tmp_path / "run", ["train.lr=1e-3"]).train.lr == 1e-3  # --set still applies

    binary = tmp_path / "notes.bin"
    binary.write_bytes(b"\x80\x02}q\x00")
    for read in (load_config, run_config):
        with pytest.raises(ConfigError, match=rf"^{binary}: not a text file, so not a YAML config; pass a config "
                                              "file \\(train's --config also takes a run folder or weights file"):
            read(binary)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=rf"^--config {tmp_path / 'empty'}: holds no checkpoint .*; or a YAML config file$"):
        run_config(tmp_path / "empty")
