"""Weights travel (issue 18): every kind converts to every other and back, bit for bit where no
framework computes, to the same logits where one does; every command opens every kind; training
starts from given weights; a brain-go-brr v2 user's checkpoint and failing batch give a verdict.

Kinds: a jaxbrr checkpoint folder (orbax, with its neutral model.safetensors), a torchref
training checkpoint (.pt: model, optimizer, meta), a torchref state dict (.pt), the neutral
.safetensors, an original brain-go-brr v2 checkpoint (.pt, with or without its own config).
"""

from __future__ import annotations

import json
import shutil

import ml_dtypes
import numpy as np
import pytest
import torch
from flax import nnx

import torchref.model as tmodel
from common.checkpoints import NEUTRAL_FILE, read_weights
from common.config import config_to_dict, load_config, with_overrides
from common.data.montage import REF19
from common.data.synth import edf_label, write_recording
from jaxbrr.model import SeizureDetector
from jaxbrr.predict import main as predict_main
from jaxbrr.weights import fill, load_model, to_neutral
from parity import convert, localize
from parity.compare import compare_arrays
from parity.scenarios import eeg_windows
from parity.test_model import FULL_SEED
from parity.tolerances import comparable_selection
from parity.twins import make_twin
from tests.torchref.original_checkpoint import original_checkpoint
from torchref.original import load_original_checkpoint

TINY = "configs/tiny.yaml"
FULL = "configs/tusz.yaml"


def neutral(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {key: value.detach().numpy() for key, value in model.state_dict().items()}


def assert_bit_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray], what: str) -> None:
    assert got.keys() == want.keys(), (what, sorted(got.keys() ^ want.keys())[:5])
    for key in want:
        assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]), (what, key)


# ----------------------------------------------------------------------------------------------
# full size: an original checkpoint through every kind


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The full-size V3 as the original saves it: its exact key names and shapes (the dead 512-wide
    stack, the Conv1d fallbacks, the edge transform, the PE cache included) and its own config."""
    root = tmp_path_factory.mktemp("full")
    config = load_config(FULL).model
    model = tmodel.SeizureDetector(config, 0).eval()
    torch.save(original_checkpoint(model, config, with_config=True), root / "original.pt")
    return root, model


@pytest.mark.slow
def test_an_original_checkpoint_converts_to_every_kind_and_back(full, capsys):
    root, model = full
    want = neutral(model)  # what the original's weights are under our names
    chain = [("original.pt", "a.safetensors"), ("a.safetensors", "b.pt"), ("a.safetensors", "run"),
             ("run", "c.safetensors"), ("run", "d.pt")]
    for source, target in chain:
        assert convert.main([str(root / source), str(root / target)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "original.pt (original) ->" in printed and "512-wide BiMamba2 stack `mamba`" in printed  # what it ignored
    assert_bit_equal(read_weights(root / "a.safetensors").arrays, want, "original -> safetensors")
    assert_bit_equal(read_weights(root / "b.pt", FULL).arrays, want, "-> torchref state dict")
    assert_bit_equal(read_weights(root / "run").arrays, want, "-> jaxbrr checkpoint (neutral copy)")
    assert_bit_equal(read_weights(root / "c.safetensors").arrays, want, "jaxbrr checkpoint -> safetensors")
    assert_bit_equal(read_weights(root / "d.pt", FULL).arrays, want, "jaxbrr checkpoint -> torchref")
    # a jaxbrr checkpoint without its neutral copy is read through orbax
    step = next((root / "run" / "checkpoints" / "best").iterdir())
    (step / NEUTRAL_FILE).unlink()
    assert convert.main([str(root / "run"), str(root / "e.safetensors")]) == 0
    assert_bit_equal(read_weights(root / "e.safetensors").arrays, want, "orbax -> safetensors")
    # the model the original's own config describes is the full-size one, run as the original ran
    weights = read_weights(root / "original.pt", shapes=convert.torch_shapes)
    assert weights.config.model.stability.pe_gradient == "full"
    assert config_to_dict(weights.config.model.graph) == config_to_dict(load_config(FULL).model.graph)

    # the same logits: torchref from the original file, jaxbrr from the converted checkpoint, both
    # keeping every edge (a top-k near tie in float32 is rounding's choice: parity/tolerances.py)
    x, _ = eeg_windows(weights.config, n_windows=1, seed=FULL_SEED)
    every_edge = with_overrides(weights.config, comparable_selection("float32"), "the logits' comparison").model
    original_model, _ = load_original_checkpoint(root / "original.pt", every_edge)
    with torch.no_grad():
        torch_logits, _ = original_model.eval()(torch.from_numpy(x))
    _, run_model, _, _ = load_model(root / "run")
    jax_model = SeizureDetector(every_edge, rngs=nnx.Rngs(0))
    fill(jax_model, to_neutral(run_model), "the converted run's weights")
    jax_logits, _ = nnx.jit(lambda m, x: nnx.view(m, deterministic=True, raise_if_not_found=False)(x))(jax_model, x)
    row = compare_arrays("logits", jax_logits, torch_logits, "model", "float32")
    print(f"logits: max_abs {row.max_abs:.3g} of scale {row.scale:.3g}")
    assert row.passed, row.reason


# ----------------------------------------------------------------------------------------------
# dtype: the config's model's, never the file's


def test_half_precision_weights_are_widened_to_the_models_dtype(tmp_path):
    """An original checkpoint saved in float16 made jaxbrr compute in float16 although its config
    says float32 (0.43 from torchref at the adjacency). The Params keep the dtype the config's
    model builds; the file's values are widened, exactly, and a note says so."""
    config = load_config(TINY, ["model.architecture=tcn"])
    source = tmodel.SeizureDetector(config.model, 0)
    full = neutral(source)
    model = SeizureDetector(config.model, rngs=nnx.Rngs(1))
    for stored in (np.float16, ml_dtypes.bfloat16):
        narrow = {key: value.astype(stored) for key, value in full.items()}
        notes = fill(model, narrow, "best_half.pt")
        name = np.dtype(stored).name
        assert notes == [f"best_half.pt: {len(full)} {name} tensor(s) widened to float32, the dtype of the "
                         f"config's model (the values are the file's, exactly: float32 represents every {name})"]
        assert_bit_equal(to_neutral(model), {k: v.astype(np.float32) for k, v in narrow.items()}, name)
    assert fill(model, full, "best.pt") == []  # float32: unchanged, no note
    assert_bit_equal(to_neutral(model), full, "float32")

    # every caller sees the same: load_model (predict, train --init-from), a converted checkpoint
    torch.save({k: v.half() for k, v in source.state_dict().items()}, tmp_path / "half.pt")
    _, loaded, _, notes = load_model(tmp_path / "half.pt", config)
    want = {k: v.astype(np.float16).astype(np.float32) for k, v in full.items()}
    assert_bit_equal(to_neutral(loaded), want, "load_model")
    assert "float16 tensor(s) widened to float32" in notes[-1]
    convert.write_jaxbrr_checkpoint(tmp_path / "run", config, read_weights(tmp_path / "half.pt", config).arrays, "half.pt")
    assert_bit_equal(read_weights(tmp_path / "run").arrays, want, "converted checkpoint")
    # the localiser's twin of a torch model cast whole to float16 (abstract: no dtype of its own) is float16
    _, twin = make_twin(source, lambda rngs: SeizureDetector(config.model, rngs=rngs), "float16")
    assert {a.dtype.name for a in to_neutral(twin).values()} == {"float16"}


def test_a_bfloat16_checkpoint_is_reported_as_one_and_loads_exactly(tmp_path, capsys):
    """parity.convert said "dtype float32 as read", with no note, for an original checkpoint saved
    in bfloat16 (common/pt.py widened it on reading) where a float16 one got "float16" and the
    widening note. Said alike now, and every torch loader takes the bfloat16 arrays (torch's
    from_numpy refuses ml_dtypes'): convert's, torchref's original loader, the localiser's models."""
    from parity.problem import Batch, Problem

    config = load_config(TINY)
    model = tmodel.SeizureDetector(config.model, 3)
    saved = original_checkpoint(model, config.model, with_config=False)
    saved["model_state_dict"] = {key: value.bfloat16() for key, value in saved["model_state_dict"].items()}
    torch.save(saved, tmp_path / "bf16.pt")
    want = {key: value.bfloat16().float().numpy() for key, value in model.state_dict().items()}

    assert convert.main([str(tmp_path / "bf16.pt"), str(tmp_path / "out.safetensors"), "--config", TINY]) == 0
    printed = capsys.readouterr().out
    assert (f"  {len(want)} tensors, {sum(v.size for v in want.values()):,} values, dtype bfloat16 as read; "
            "model v3\n") in printed
    assert (f"  {tmp_path / 'bf16.pt'}: {len(want)} bfloat16 tensor(s) widened to float32, the dtype of the "
            "config's model (the values are the file's, exactly: float32 represents every bfloat16)\n") in printed
    assert_bit_equal(read_weights(tmp_path / "out.safetensors").arrays, want, "convert")
    assert_bit_equal(neutral(load_original_checkpoint(tmp_path / "bf16.pt", config.model)[0]), want, "torchref")
    weights = read_weights(tmp_path / "bf16.pt", TINY, convert.torch_shapes).arrays
    assert {value.dtype.name for value in weights.values()} == {"bfloat16"}
    problem = Problem(config, weights, Batch(np.zeros((1, 19, config.window_samples), np.float32)), "bf16.pt")
    torch_model, jax_model = localize._models(problem, "float32")
    assert_bit_equal(neutral(torch_model), want, "the localiser's torch model")
    assert_bit_equal(to_neutral(jax_model), want, "the localiser's jax model")


def test_weights_in_the_layouts_users_share_them_read_to_the_same_arrays(tmp_path):
    """A review's: an original state dict saved with safetensors.torch (bfloat16, behind
    DataParallel's prefix) or a torchref one was refused ("not a jaxbrr.weights v1 file", naming
    the very command that failed); a state dict under a key of the user's own ({"model": ...})
    was "not a state dict"; {"model", "meta"} without a config was a KeyError. Each reads now, to
    the arrays of the .pt it came from, and an EMA copy beside model_state_dict is named, not read."""
    import safetensors.torch

    from common.checkpoints import CheckpointError, loaded_tensors, weights_config

    config = load_config(TINY)
    model = tmodel.SeizureDetector(config.model, 3)
    saved = original_checkpoint(model, config.model, with_config=False)
    state = saved["model_state_dict"]
    want = {key: value.bfloat16().float().numpy() for key, value in model.state_dict().items()}
    wrapped = {f"module.{key}": value.bfloat16().contiguous() for key, value in state.items()}
    safetensors.torch.save_file(wrapped, tmp_path / "shared.safetensors")
    weights = read_weights(tmp_path / "shared.safetensors", TINY, convert.torch_shapes)
    assert weights.kind == "original" and any("module." in note for note in weights.notes)
    assert {value.dtype.name for value in weights.arrays.values()} == {"bfloat16"}
    assert_bit_equal({k: v.astype(np.float32) for k, v in weights.arrays.items()}, want, "plain safetensors")
    assert weights_config(tmp_path / "shared.safetensors") is None  # another program's file: a config is needed
    torch.save(wrapped, tmp_path / "shared.pt")  # what --init-from checks: as the .pt of the same state
    assert set(loaded_tensors(tmp_path / "shared.safetensors")[1]) == set(loaded_tensors(tmp_path / "shared.pt")[1])
    with pytest.raises(CheckpointError, match="shared.safetensors: .*--config"):
        read_weights(tmp_path / "shared.safetensors", None, convert.torch_shapes)

    # transformers' save_pretrained writes {"format": "pt"}: not ours either
    safetensors.torch.save_file(model.state_dict(), tmp_path / "torchref.safetensors", metadata={"format": "pt"})
    assert_bit_equal(read_weights(tmp_path / "torchref.safetensors", TINY).arrays, neutral(model), "torchref names")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((tmp_path / "torchref.safetensors").read_bytes()[:-1000])  # a copy that stopped
    with pytest.raises(CheckpointError, match=r"cut.safetensors: tensor .*'s bytes are not where its header says"):
        read_weights(cut, TINY)
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "torchref_own_key.pt")  # torchref's names
    weights = read_weights(tmp_path / "torchref_own_key.pt", TINY)
    assert weights.notes == ["the model's weights read from its 'model' entry"]
    assert_bit_equal(weights.arrays, neutral(model), "torchref names under 'model'")
    # torchref's trainer's checkpoint carries its run's whole config: a --config beside it is said to be unused
    run = tmp_path / "torchref_run.pt"
    torch.save({"model": model.state_dict(), "meta": {"config": config_to_dict(load_config(TINY))}}, run)
    weights = read_weights(run, "configs/default.yaml")
    assert weights.kind == "torchref" and weights.notes == [
        f"{run} carries its training run's whole config, which is used; configs/default.yaml is not (change a field "
        "of the run's with --set FIELD=VALUE)"]
    assert read_weights(run, None).notes == []

    float_state = {key: value.float() for key, value in state.items()}
    torch.save({"model": float_state, "epoch": 3}, tmp_path / "own_key.pt")
    weights = read_weights(tmp_path / "own_key.pt", TINY, convert.torch_shapes)
    assert weights.notes[0] == "the model's weights read from its 'model' entry"
    assert_bit_equal(weights.arrays, neutral(model), "under 'model'")
    torch.save({"model": float_state, "meta": {"step": 3}}, tmp_path / "model_meta.pt")  # not torchref's: no config
    assert_bit_equal(read_weights(tmp_path / "model_meta.pt", TINY, convert.torch_shapes).arrays, neutral(model), "meta")
    torch.save({"model": float_state, "ema": float_state}, tmp_path / "two.pt")
    with pytest.raises(CheckpointError, match=r"two.pt: holds state dicts under 2 entries \(model, ema\) and no model_state_dict"):
        read_weights(tmp_path / "two.pt", TINY, convert.torch_shapes)
    torch.save({**saved, "ema_state_dict": float_state}, tmp_path / "ema.pt")
    weights = read_weights(tmp_path / "ema.pt", TINY, convert.torch_shapes)
    assert any(note.startswith("its entry ema_state_dict also holds weights (an EMA copy?), not read")
               for note in weights.notes)


def test_predict_refuses_nan_in_what_an_original_checkpoint_loads_only(tmp_path):
    """NaN weights are refused before any recording is read (tests/jaxbrr/test_predict.py), named
    as the model and as the checkpoint name them; NaN in what the original holds but no model
    loads (its unused stack, the PE cache) is no reason."""
    from common.checkpoints import CheckpointError
    from jaxbrr.predict import load_checkpoint

    config = load_config(TINY)
    saved = original_checkpoint(tmodel.SeizureDetector(config.model, 3), config.model, with_config=False)
    state = saved["model_state_dict"]
    state["gnn.last_valid_pe"][:] = float("nan")
    state["mamba.layers.0.forward_mamba_real.D"][:] = float("inf")
    torch.save(saved, tmp_path / "ignored.pt")
    assert load_checkpoint(tmp_path / "ignored.pt", config_path=TINY)[0].model == config.model
    state["node_mamba.layers.0.forward_mamba_real.out_proj.weight"][0, :3] = float("nan")
    torch.save(saved, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "nan.pt", config_path=TINY)
    assert str(info.value).splitlines()[:2] == [
        f"{tmp_path / 'nan.pt'}: 1 of {len(tmodel.SeizureDetector(config.model, 3).state_dict())} weight tensors hold "
        "NaN or Inf (saved after a training step went non-finite), so every output would be NaN:",
        "  node_mamba.layers.0.fwd.out_proj.weight (the checkpoint's "
        "node_mamba.layers.0.forward_mamba_real.out_proj.weight): 3 NaN, 0 Inf"]


# ----------------------------------------------------------------------------------------------
# tiny: every command opens every kind


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """One tiny model's weights as every kind, and an EDF and a batch to run them on."""
    root = tmp_path_factory.mktemp("kinds")
    config = load_config(TINY)
    model = tmodel.SeizureDetector(config.model, 3).eval()
    paths = {"original": root / "original.pt"}  # first: it moves the Mamba2 D off its init, as training would
    torch.save(original_checkpoint(model, config.model, with_config=False), paths["original"])
    paths["safetensors"] = root / "w.safetensors"
    convert.save_weights(paths["safetensors"], model)
    paths["pt"] = root / "w.pt"
    torch.save(model.state_dict(), paths["pt"])
    paths["torchref"] = root / "torchref" / "checkpoints" / "best" / "step_000001.pt"
    paths["torchref"].parent.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "optimizer": {}, "meta": {"config": config_to_dict(config),
                                                                       "progress": {}}}, paths["torchref"])
    paths["jaxbrr"] = root / "jaxbrr"
    convert.write_jaxbrr_checkpoint(paths["jaxbrr"], config, neutral(model), "the tiny torchref model")
    noise = np.random.default_rng(0).standard_normal((len(REF19), 30 * 256)) * 30
    edf = write_recording(root / "rec_s001_t000.edf", {edf_label(e): row for e, row in zip(REF19, noise, strict=True)},
                          256, "rec")
    x, y = eeg_windows(config, n_windows=1)
    np.savez(root / "batch.npz", x=x, y=y)
    return root, config, model, paths, edf


# the kinds that carry no config of their own are opened with --config
NEEDS_CONFIG = ("pt", "original")


def test_every_kind_reads_to_the_same_neutral_weights(kinds):
    _, _, model, paths, _ = kinds
    for kind, path in paths.items():
        weights = read_weights(path, TINY if kind in NEEDS_CONFIG else None, convert.torch_shapes)
        assert_bit_equal(weights.arrays, neutral(model), kind)
        assert weights.config.model == load_config(TINY).model, kind


@pytest.mark.slow
def test_predict_opens_every_kind_with_the_same_result(kinds, tmp_path, capsys):
    root, _, _, paths, edf = kinds
    written = {}
    for kind, path in paths.items():
        out = tmp_path / kind
        extra = ["--config", TINY] if kind in NEEDS_CONFIG else []
        assert predict_main(["--checkpoint", str(path), str(edf), "--out", str(out), "--no-progress", *extra]) == 0, kind
        written[kind] = (out / f"{edf.stem}.csv_bi").read_text()
    assert len(set(written.values())) == 1, {k: v[-200:] for k, v in written.items()}  # the same events
    # the original's clamps on, as its note offers; the notes made on reading are followed by what --set changed
    capsys.readouterr()
    assert predict_main(["--checkpoint", str(paths["original"]), str(edf), "--out", str(tmp_path / "guarded"),
                         "--no-progress", "--config", TINY, "--set", "model.stability.guards=original"]) == 0
    printed = capsys.readouterr().out
    assert "note: model.stability.guards = 'none': the original's clamps and nan_to_num are off" in printed
    assert ("note: the notes above describe the checkpoint's config as read; --set then changed "
            "model.stability.guards=original\n") in printed


@pytest.mark.slow
def test_the_localiser_opens_every_kind(kinds, capsys):
    root, _, _, paths, _ = kinds
    for kind, path in paths.items():
        extra = ["--config", TINY] if kind in NEEDS_CONFIG else []
        code = localize.main(["--checkpoint", str(path), "--batch", str(root / "batch.npz"), *extra])
        out = capsys.readouterr().out
        assert code == 0 and "VERDICT: CLEAN" in out, (kind, out[-800:])


def test_init_from_refuses_another_model_naming_the_fields(kinds, tmp_path, capsys):
    from common.train.cli import run
    from jaxbrr.train.__main__ import _jax_trainer

    _, _, _, paths, _ = kinds
    argv = ["--config", TINY, "--set", "model.electrode_dim=4", "--set", "model.node_mamba.d_model=4",
            "--set", f"data.data_dir={tmp_path / 'edf'}", "--set", f"data.cache_dir={tmp_path / 'cache'}",
            "--workdir", str(tmp_path / "run"), "--init-from", str(paths["safetensors"]), "--no-progress"]
    assert run(argv, "python -m jaxbrr.train", "", _jax_trainer) == 2
    err = capsys.readouterr().err
    assert "the config's model differs from the weights' model" in err
    assert "model.electrode_dim: weights 8, now 4" in err and "model.node_mamba.d_model: weights 8, now 4" in err


@pytest.mark.slow
def test_training_starts_from_given_weights_in_both_frameworks(kinds, tmp_path):
    """jaxbrr from the original checkpoint, torchref from the jaxbrr checkpoint (its neutral copy:
    no JAX needed): each trainer's model holds the given weights before its first step."""
    from common.data.prepare import prepare
    from jaxbrr.train.loop import Trainer as JaxTrainer
    from torchref.train.loop import Trainer as TorchTrainer

    _, config, model, paths, _ = kinds
    data = [f"data.data_dir={tmp_path / 'edf'}", f"data.cache_dir={tmp_path / 'cache'}",
            "data.synthetic.recordings=4", "data.synthetic.patients=2", "data.synthetic.duration_seconds=[60,90]"]
    prepared = prepare(load_config(TINY, data), progress=False)
    jax_run = JaxTrainer(load_config(TINY, [*data, f"workdir={tmp_path / 'j'}"]), progress=False, prepared=prepared,
                         init_from=paths["original"])  # no config of its own: the run's describes it
    assert_bit_equal(to_neutral(jax_run.model), neutral(model), "jaxbrr --init-from")
    torch_run = TorchTrainer(load_config(TINY, [*data, f"workdir={tmp_path / 't'}"]), progress=False,
                             prepared=prepared, init_from=paths["jaxbrr"])
    assert_bit_equal(neutral(torch_run.model), neutral(model), "torchref --init-from")
    with pytest.raises(ValueError, match="--init-from and --resume"):
        JaxTrainer(load_config(TINY, [*data, f"workdir={tmp_path / 'k'}"]), resume=True, progress=False,
                   prepared=prepared, init_from=paths["pt"])


# ----------------------------------------------------------------------------------------------
# the original's users: their checkpoint and the batch that failed


@pytest.mark.slow
def test_an_original_checkpoint_and_its_debug_batch_give_a_verdict(kinds, tmp_path, capsys):
    """`python -m parity.localize --checkpoint best.pt --batch batch_7.pt`: the batch as the
    original's debug dump saves it (torch.save of a dict with the input under `input`), here with a
    150 σ electrode pop left unclipped, the extreme input that started the original's NaN hunt."""
    root, config, _, paths, _ = kinds
    x, _ = eeg_windows(config, n_windows=1)
    x[0, 0, 500:510] = 150.0  # z-scored: 150 σ
    torch.save({"input": torch.from_numpy(x), "batch_idx": 7}, tmp_path / "batch_7.pt")
    argv = ["--checkpoint", str(paths["original"]), "--batch", str(tmp_path / "batch_7.pt"), "--config", TINY]
    assert localize.main(argv) == 1
    out = capsys.readouterr().out
    assert "VERDICT: DATA at input" in out
    # with the original's clamps: the batch is still the problem, whatever the input guard leaves
    assert localize.main([*argv, "--set", "model.stability.guards=original", "--json", str(tmp_path / "r.json")]) == 1
    guarded = capsys.readouterr().out
    notes = json.loads((tmp_path / "r.json").read_text())["notes"]  # the report keeps what the console said
    assert all(f"note: {note}" in guarded for note in notes)
    assert any(note.startswith("model.stability.guards = 'none'") for note in notes)
    assert any(note.startswith("--set changes the config those notes describe") for note in notes)
    assert guarded.count("note: --set changes the config those notes describe") == 1  # said once
    assert "model.stability.guards=original" in guarded and "VERDICT: DATA at input" in guarded
    # the notes on loading describe the config as read; what the --set changed in it is said after them
    assert "note: model.stability.guards = 'none'" in guarded
    assert ("note: --set changes the config those notes describe:\n  model.stability.guards: read 'none', now "
            "'original'\n") in guarded
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_an_original_checkpoint_with_another_models_config_is_a_short_error_with_the_fix(kinds, capsys):
    """The original's tiny checkpoint (no config of its own) with --config of the default model:
    90 lines, one per tensor, and no fix; now a few of each kind, their count, and the fix."""
    root, _, _, paths, _ = kinds
    argv = ["--checkpoint", str(paths["original"]), "--batch", str(root / "batch.npz"), "--config", "configs/default.yaml"]
    assert localize.main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"error: cannot load the original checkpoint {paths['original']} into SeizureDetector (architecture v3):"
    assert len(lines) < 20 and sum(line.startswith("  … and ") for line in lines) >= 2, lines
    assert lines[-1] == ("the model is the one the `model` section of --config configs/default.yaml describes: pass "
                         "--config the config these weights were trained with")
