"""common.checkpoints: where a run's weights are, for every tool that reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.checkpoints import (
    CheckpointError,
    jaxbrr_meta,
    last_steps,
    locate,
    read_weights,
    weights_config,
    write_neutral,
)
from common.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_newest_torchref_step_is_the_largest_number_not_the_last_name(tmp_path):
    """torchref.train pads steps to six digits, so step 1,000,000 sorts before 999,999 by name;
    --resume, evaluate and predict must all take the newest by number. A leftover .tmp is none."""
    for kind in ("last", "best"):
        folder = tmp_path / "checkpoints" / kind
        folder.mkdir(parents=True)
        for name in ("step_999999.pt", "step_1000000.pt", "step_1000001.pt.tmp"):
            (folder / name).write_bytes(b"")
    assert [p.name for p in last_steps(tmp_path)] == ["step_999999.pt", "step_1000000.pt"]
    located = locate(tmp_path)
    assert (located.kind, located.path) == ("torchref", tmp_path / "checkpoints" / "best" / "step_1000000.pt")


def test_weights_of_a_bipolar_model_are_read_in_their_montage_whatever_the_config_says(tmp_path):
    """A .safetensors file carries its model section; read with the defaults (ref19) or another
    run's config, the run config must take the weights' montage for the data too, else the two
    montages disagree and the config is refused for a mismatch the user did not make."""
    bipolar = load_config(ROOT / "configs" / "tiny.yaml", ["model.montage=bipolar", "data.montage=bipolar"])
    path = write_neutral(tmp_path / "bipolar.safetensors", {"w": np.zeros(2, np.float32)}, bipolar.model, "jax")
    for config in (None, ROOT / "configs" / "default.yaml", load_config(ROOT / "configs" / "tiny.yaml")):
        weights = read_weights(path, config)
        assert (weights.config.model.montage, weights.config.data.montage) == ("bipolar", "bipolar")
        assert weights.config.model == bipolar.model
        fallback = weights_config(path, config if config is not None else ROOT / "configs" / "default.yaml")
        assert fallback.data.montage == "bipolar"
        # a config file whose model differs is not used for the model, and that is said
        said = [note for note in weights.notes if "carries its own model config, used instead of" in note]
        assert len(said) == (config == ROOT / "configs" / "default.yaml")


def test_a_weights_file_cut_short_after_its_header_is_one_line_naming_it(tmp_path):
    """Its header (the metadata) reads; its tensors end early (a disk that filled, a copy that
    stopped): --init-from and predict met safetensors' SafetensorError as a traceback."""
    config = load_config(ROOT / "configs" / "tiny.yaml")
    path = write_neutral(tmp_path / "w.safetensors", {"w": np.zeros(4096, np.float32)}, config.model, "jax")
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match=rf"^{path}: not a readable \.safetensors file \("):
        read_weights(path)


def test_a_damaged_step_metadata_says_to_use_another_step(tmp_path):
    """The step is a run's (its meta folder is there): 'point it at a run folder' was the wrong
    advice; bytes that are not text are a CheckpointError too, not a UnicodeDecodeError."""
    meta = tmp_path / "checkpoints" / "last" / "36" / "meta" / "metadata"
    meta.parent.mkdir(parents=True)
    for damaged in (b'{"bad', b"\xff\xfe\x00"):
        meta.write_bytes(damaged)
        with pytest.raises(CheckpointError, match=rf"{meta.parent.parent}: damaged checkpoint metadata {meta} "
                                                  r"\(.*\); use another step of the run"):
            jaxbrr_meta(meta.parent.parent)


def test_a_nan_dump_whose_config_is_broken_is_named_by_its_file(tmp_path):
    """weights_config of a NaN dump (train --init-from DUMP) named `<dict>`, no file, for a config
    that does not validate."""
    import json

    from common.config import ConfigError

    (tmp_path / "nan.json").write_text(json.dumps({"config": {"train": {"epochs": "many"}}}))
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'nan.json'}: train\.epochs"):
        weights_config(tmp_path)
