"""parity/convert.py: the torch <-> NNX table round-trips bit-exactly on every architecture, fails
loudly and by path on a broken mapping, writes a weights file either framework reads, and the
converted tiny models give the same logits in float64."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import jaxbrr.weights as weights
import torchref.model as tmodel
from common.checkpoints import CONFIG_FIX, FORMAT
from common.config import config_to_dict, load_config
from jaxbrr.model import SeizureDetector
from parity import convert
from parity.compare import compare_arrays, compare_trees
from parity.convert import ConversionError, jax_to_torch, load_weights, save_weights, torch_to_jax

TINY = "configs/tiny.yaml"
SWITCHES = {
    "v3": [],
    "v2": ["model.architecture=v2"],
    "tcn": ["model.architecture=tcn"],
    "graph-off": ["model.graph.enabled=false"],
    "static-pe": ["model.graph.use_dynamic_pe=false"],
}


def jax_params(model) -> dict[str, np.ndarray]:
    return {"/".join(map(str, path)): np.asarray(v.get_value())
            for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def torch_params(model) -> dict[str, np.ndarray]:
    return {key: value.detach().numpy() for key, value in model.state_dict().items()}


def assert_bit_exact(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key].dtype == expected[key].dtype, key
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key, strict=True)


def jax_model(config, seed: int, abstract: bool = False):
    """abstract: built by nnx.eval_shape (no arrays, no init compiles: a full-size NNX init costs
    ~8 s of XLA compiles on a 2-core CPU); torch_to_jax must then fill every Param, or raise."""
    build = lambda: SeizureDetector(config, rngs=nnx.Rngs(seed))  # noqa: E731
    return nnx.eval_shape(build) if abstract else build()


@pytest.mark.parametrize("name", SWITCHES)
def test_round_trips_bit_exact_on_every_switch(name):
    config = load_config(TINY, SWITCHES[name]).model
    # torch -> jax -> torch, each side starting from different random weights
    source = tmodel.SeizureDetector(config, 0)
    jax_side = jax_model(config, seed=1)
    torch_to_jax(source, jax_side)
    back = tmodel.SeizureDetector(config, 2)
    jax_to_torch(jax_side, back)
    assert_bit_exact(torch_params(back), torch_params(source))
    # jax -> torch -> jax
    source_jax = jax_model(config, seed=3)
    expected = jax_params(source_jax)
    torch_side = tmodel.SeizureDetector(config, 4)
    jax_to_torch(source_jax, torch_side)
    again = jax_model(config, seed=5)
    torch_to_jax(torch_side, again)
    assert_bit_exact(jax_params(again), expected)


def test_round_trip_full_size():
    config = load_config("configs/tusz.yaml").model
    source = tmodel.SeizureDetector(config, 0)
    jax_side = jax_model(config, seed=0, abstract=True)
    torch_to_jax(source, jax_side)  # fills every Param of the abstract model
    assert sum(v.size for v in jax_params(jax_side).values()) == 9_040_392
    back = tmodel.SeizureDetector(config, 1)
    jax_to_torch(jax_side, back)
    assert_bit_exact(torch_params(back), torch_params(source))
    again = jax_model(config, seed=0, abstract=True)
    torch_to_jax(back, again)
    assert_bit_exact(jax_params(again), jax_params(jax_side))


def test_layouts_follow_the_table():
    config = load_config(TINY).model
    source, jax_side = tmodel.SeizureDetector(config, 0), jax_model(config, 1)
    torch_to_jax(source, jax_side)
    tcn0, mamba = source.tcn.layers[0], source.node_mamba.layers[0].fwd
    pairs = [  # (NNX value, torch value in NNX layout), written out by hand
        (jax_side.tcn.layers[0].weight_v, tcn0.weight_v.detach().numpy().transpose(2, 1, 0)),
        (jax_side.tcn.layers[0].weight_g, tcn0.weight_g.detach().numpy()[:, 0, 0]),
        (jax_side.node_mamba.layers[0].fwd.in_proj.kernel, mamba.in_proj.weight.detach().numpy().T),
        (jax_side.node_mamba.layers[0].fwd.conv1d.kernel, mamba.conv1d.weight.detach().numpy().transpose(2, 1, 0)),
        (jax_side.node_mamba.layers[0].norm.scale, source.node_mamba.layers[0].norm.weight.detach().numpy()),
        (jax_side.gnn.layers[1].lin.kernel, source.gnn.layers[1].lin.weight.detach().numpy().T),
    ]
    for variable, expected in pairs:
        np.testing.assert_array_equal(np.asarray(variable.get_value()), expected, strict=True)
    assert jax_side.edge_lift.bias is None and source.edge_lift.bias is None  # bias-less conv


def broken(mutate_torch=None, mutate_jax=None):
    config = load_config(TINY).model
    source, jax_side = tmodel.SeizureDetector(config, 0), jax_model(config, 0, abstract=True)
    if mutate_torch:
        mutate_torch(source)
    if mutate_jax:
        mutate_jax(jax_side)
    with pytest.raises(ConversionError) as info:
        torch_to_jax(source, jax_side)
    return str(info.value)


def test_broken_mappings_raise_naming_every_path(monkeypatch):
    extra_torch = lambda m: m.tcn.proj.register_parameter("extra", torch.nn.Parameter(torch.zeros(3)))  # noqa: E731
    assert "tcn.proj.extra: in the torch model, but the model has no such parameter" in broken(extra_torch)

    def extra_param(m):
        m.gnn.norms[0].extra = nnx.Param(jnp.zeros(3))
        m.head.proj.also = nnx.Param(jnp.zeros(2))

    message = broken(mutate_jax=extra_param)
    assert "gnn/norms/0/extra: NNX Param is filled by no row" in message
    assert "head/proj/also: NNX Param is filled by no row" in message

    drop_bias = lambda m: m.tcn.proj.register_parameter("bias", None)  # noqa: E731
    assert "tcn.proj.bias: missing from the torch model" in broken(drop_bias)

    def swap_type(m):
        m.head.detect = torch.nn.Linear(19, 1)

    assert "head.detect: no rule for the pair (torch.nn.modules.linear.Linear, flax.nnx.nn.linear.Conv)" in broken(swap_type)

    def wrong_shape(m):
        m.gnn.norms[1] = torch.nn.LayerNorm(5)

    assert "gnn.norms.1.weight -> gnn/norms/1/scale: shape (5,)" in broken(wrong_shape)

    # A bad table: LayerNorm's bias also written into its scale.
    leaves = (weights.Leaf("weight", "scale"), weights.Leaf("bias", "scale"))
    monkeypatch.setitem(weights.LEAVES, nnx.LayerNorm, leaves)
    message = broken()
    assert "gnn/norms/0/scale: NNX Param filled 2 times" in message
    assert "gnn/norms/0/bias: NNX Param is filled by no row" in message


def test_float64_without_x64_raises():
    config = load_config(TINY, ["model.architecture=tcn"]).model
    source = tmodel.SeizureDetector(config, 0).double()
    with pytest.raises(ConversionError, match="float64 needs jax_enable_x64") as raised:
        torch_to_jax(source, jax_model(config, 0))
    # JAX's mode is the fix, not the config (a review: the config's fix had been appended)
    assert str(raised.value).endswith(weights.X64_FIX) and weights.CONFIG_FIX not in str(raised.value)


def test_weights_file_from_either_side(tmp_path):
    config = load_config(TINY).model
    torch_model, jax_side = tmodel.SeizureDetector(config, 0), jax_model(config, 1)
    # torch writes, jax reads
    save_weights(tmp_path / "torch.safetensors", torch_model)
    metadata = load_weights(tmp_path / "torch.safetensors", jax_side)
    assert metadata["framework"] == "torch" and metadata["format_version"] == "1"
    assert metadata["config"] == config_to_dict(config)
    expected = jax_model(config, 2)
    torch_to_jax(torch_model, expected)
    assert_bit_exact(jax_params(jax_side), jax_params(expected))
    # jax writes, torch reads
    jax_source = jax_model(config, 3)
    save_weights(tmp_path / "jax.safetensors", jax_source)
    reader = tmodel.SeizureDetector(config, 4)
    assert load_weights(tmp_path / "jax.safetensors", reader)["framework"] == "jax"
    direct = tmodel.SeizureDetector(config, 5)
    jax_to_torch(jax_source, direct)
    assert_bit_exact(torch_params(reader), torch_params(direct))
    assert convert.config_from_metadata(convert.read_metadata(tmp_path / "jax.safetensors")) == config


def test_weights_file_with_a_missing_key_raises(tmp_path):
    import safetensors.numpy

    config = load_config(TINY, ["model.architecture=tcn"]).model
    path = tmp_path / "w.safetensors"
    save_weights(path, tmodel.SeizureDetector(config, 0))
    arrays = safetensors.numpy.load_file(str(path))
    del arrays["tcn.layers.1.weight_g"]
    metadata = {"format": FORMAT, "format_version": "1", "framework": "torch", "config": "null"}
    safetensors.numpy.save_file(arrays, str(path), metadata=metadata)
    with pytest.raises(ConversionError, match=r"tcn.layers.1.weight_g: missing from"):
        load_weights(path, jax_model(config, 0))
    with pytest.raises(ConversionError, match=r"tcn.layers.1.weight_g: missing from"):
        load_weights(path, tmodel.SeizureDetector(config, 0))


def test_cli_pt_to_safetensors_to_pt(tmp_path, capsys):
    config = load_config(TINY).model
    source = tmodel.SeizureDetector(config, 7)
    torch.save(source.state_dict(), tmp_path / "in.pt")
    assert convert.main([str(tmp_path / "in.pt"), str(tmp_path / "mid.safetensors"), "--config", TINY]) == 0
    assert convert.main([str(tmp_path / "mid.safetensors"), str(tmp_path / "out.pt")]) == 0  # config from metadata
    printed = capsys.readouterr().out
    assert "in.pt (pt) ->" in printed and "(neutral weights file)" in printed and "(torchref state dict)" in printed
    assert json.loads(json.dumps(convert.read_metadata(tmp_path / "mid.safetensors")["config"])) == config_to_dict(config)
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert_bit_exact({k: v.numpy() for k, v in out.items()}, torch_params(source))
    assert convert.main([str(tmp_path / "in.pt"), str(tmp_path / "x.safetensors")]) == 2
    assert "a bare state dict carries no config; pass --config" in capsys.readouterr().err
    # into a folder: a jaxbrr checkpoint; never into a run that holds checkpoints (its best was pruned)
    assert convert.main([str(tmp_path / "mid.safetensors"), str(tmp_path / "run")]) == 0
    written = sorted(p.name for p in (tmp_path / "run" / "checkpoints" / "best").iterdir())
    assert convert.main([str(tmp_path / "mid.safetensors"), str(tmp_path / "run")]) == 2
    assert f"{tmp_path / 'run'} already holds checkpoints (checkpoints/best/0)" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints" / "best").iterdir()) == written == ["0"]


def test_a_runs_weights_file_keeps_the_runs_config_and_a_bare_one_says_it_has_none(tmp_path, capsys):
    """A .safetensors converted from a run read back 60 s windows every 10 s (the defaults) where
    the run trained on 16 s every 8 s, in silence: the run's config now goes with its weights, and
    a file that holds the model alone says its other settings are the defaults."""
    from common.checkpoints import read_weights, weights_config

    run_config = load_config(TINY, ["data.window_seconds=16", "data.stride_seconds=8", "postprocess.tau_on=0.9"])
    step = tmp_path / "run" / "checkpoints" / "best" / "step_000024.pt"
    step.parent.mkdir(parents=True)
    torch.save({"model": tmodel.SeizureDetector(run_config.model, 7).state_dict(),
                "meta": {"config": config_to_dict(run_config), "progress": {"step": 24}}}, step)
    assert convert.main([str(tmp_path / "run"), str(tmp_path / "run.safetensors")]) == 0
    # into a jaxbrr run: the step the run saved them at (it was 0, and evaluate labelled its scores so)
    assert convert.main([str(tmp_path / "run"), str(tmp_path / "jax-run")]) == 0
    assert [p.name for p in (tmp_path / "jax-run" / "checkpoints" / "best").iterdir()] == ["24"]
    read = read_weights(tmp_path / "run.safetensors")
    assert read.config.data == run_config.data and read.config.postprocess == run_config.postprocess
    assert not any("holds the model alone" in note for note in read.notes)
    assert weights_config(tmp_path / "run.safetensors").data == run_config.data  # train's --config, --init-from
    # converted again, the file's run config goes with it (it was dropped: a .safetensors input
    # counted as the model alone), unless --config replaces it
    assert convert.main([str(tmp_path / "run.safetensors"), str(tmp_path / "again.safetensors")]) == 0
    assert read_weights(tmp_path / "again.safetensors").config == read.config
    assert convert.main([str(tmp_path / "run.safetensors"), str(tmp_path / "other.safetensors"), "--config", TINY]) == 0
    assert "run_config" not in convert.read_neutral_metadata(tmp_path / "other.safetensors")

    torch.save(tmodel.SeizureDetector(run_config.model, 7).state_dict(), tmp_path / "bare.pt")
    assert convert.main([str(tmp_path / "bare.pt"), str(tmp_path / "bare.safetensors"), "--config", TINY]) == 0
    read = read_weights(tmp_path / "bare.safetensors")
    assert read.config.data.window_seconds == load_config(None).data.window_seconds  # the defaults, and said:
    assert f"{tmp_path / 'bare.safetensors'} holds the model alone: its windows, post-processing" in " ".join(read.notes)


def test_cli_writes_half_precision_weights_in_the_models_dtype_and_says_so(tmp_path, capsys):
    config = load_config(TINY).model
    source = tmodel.SeizureDetector(config, 7)
    torch.save({k: v.half() for k, v in source.state_dict().items()}, tmp_path / "half.pt")
    n = len(source.state_dict())
    for out in ("half.safetensors", "back.pt", "run"):
        assert convert.main([str(tmp_path / "half.pt"), str(tmp_path / out), "--config", TINY]) == 0
        printed = capsys.readouterr().out
        assert "dtype float16 as read" in printed
        assert f"half.pt: {n} float16 tensor(s) widened to float32, the dtype of the config's model" in printed
    broken = {k: v.clone() for k, v in source.state_dict().items()}
    broken["head.detect.bias"][0] = float("nan")
    torch.save(broken, tmp_path / "nan.pt")
    assert convert.main([str(tmp_path / "nan.pt"), str(tmp_path / "nan.safetensors"), "--config", TINY]) == 0
    assert ("note: head.detect.bias holds 1 NaN, 0 Inf in shape (1,): these weights compute NaN"
            in capsys.readouterr().out)
    torch.save({k: v.double() for k, v in source.state_dict().items()}, tmp_path / "double.pt")
    assert convert.main([str(tmp_path / "double.pt"), str(tmp_path / "double.safetensors"), "--config", TINY]) == 0
    assert "widened" not in capsys.readouterr().out  # float64 is kept, never narrowed
    assert {a.dtype for a in convert.read_neutral(tmp_path / "double.safetensors").values()} == {np.dtype(np.float64)}
    written = convert.read_neutral(tmp_path / "half.safetensors")
    assert {a.dtype for a in written.values()} == {np.dtype(np.float32)}
    expected = {k: v.half().float().numpy() for k, v in source.state_dict().items()}
    assert_bit_exact(written, expected)


def test_cli_checks_names_before_writing_a_weights_file(tmp_path, capsys):
    """A DataParallel-wrapped torchref state dict (`module.` before every key) was written to a
    .safetensors file labelled `model v3` that failed only where it was read."""
    config = load_config(TINY).model
    wrapped = {f"module.{k}": v for k, v in tmodel.SeizureDetector(config, 7).state_dict().items()}
    torch.save(wrapped, tmp_path / "dp.pt")
    assert convert.main([str(tmp_path / "dp.pt"), str(tmp_path / "dp.safetensors"), "--config", TINY]) == 2
    err = capsys.readouterr().err
    # the count of each kind, five of each named, then the fix
    assert re.search(rf"dp.pt -> torch \(SeizureDetector\): {len(wrapped) * 2} problem\(s\) \({len(wrapped)} missing "
                     rf"from the weights, {len(wrapped)} not in the model\)\n", err), err
    assert re.search(r"\n  module\.[\w.]+: in \S+dp.pt, but the model has no such parameter\n", err), err
    assert err.rstrip().endswith(CONFIG_FIX)
    assert not (tmp_path / "dp.safetensors").exists()


def test_cli_answers_a_missing_or_unreadable_input_in_one_line(tmp_path, capsys):
    """Issue 19, problem 8: `MISSING.pt out.safetensors --config C` ended in a traceback."""
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip, not a pickle" * 10)
    empty = tmp_path / "empty_run"
    empty.mkdir()
    for source, names in ((tmp_path / "MISSING.pt", "no such file or folder"),
                          (garbage, "garbage.pt"), (empty, "holds no checkpoint")):
        assert convert.main([str(source), str(tmp_path / "out.safetensors"), "--config", TINY]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {source}") and names in err, err
        assert err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out.safetensors").exists()


def test_an_original_state_dict_reads_its_model_from_the_originals_own_yaml(tmp_path, capsys):
    """The original's mid-epoch snapshots and bare state dicts carry no config; the user has the
    brain-go-brr YAML the run trained with. Passed as --config, its model, post-processing and
    loss sections read as a checkpoint's own config would (it had been refused as not ours)."""
    import yaml

    from common.checkpoints import read_weights
    from common.original import original_key
    from tests.torchref.original_checkpoint import FULL_ORIGINAL_MODEL_CONFIG

    state = {original_key(k): torch.zeros(s) for k, s in convert.torch_shapes(load_config("configs/tusz.yaml").model).items()}
    torch.save({"model_state_dict": state, "config": None, "extra": {"kind": "mid_epoch"}}, tmp_path / "mid.pt")
    model = {**FULL_ORIGINAL_MODEL_CONFIG, "graph": {**FULL_ORIGINAL_MODEL_CONFIG["graph"], "semi_dynamic_interval": 1,
                                                     "use_residual": False}}
    theirs = tmp_path / "modal.yaml"
    theirs.write_text(yaml.safe_dump({"experiment": {"name": "v3"}, "model": model, "training": {"loss": "bce"},
                                      "evaluation": {"fa_rates": [10]}}))
    assert convert.main([str(tmp_path / "mid.pt"), str(tmp_path / "o.safetensors"), "--config", str(theirs)]) == 0
    assert (f"  config: the model, post-processing and loss sections of {theirs}, a brain-go-brr v2 config, read as "
            f"{tmp_path / 'mid.pt'}'s own config would be; the rest this project's defaults") in capsys.readouterr().out
    read = read_weights(tmp_path / "o.safetensors")
    graph = read.config.model.graph
    assert (graph.semi_dynamic_interval, graph.use_residual, read.config.train.loss) == (1, False, "bce")

    # a checkpoint with its own config reads that one, and says the YAML given beside it is not read
    torch.save({"model_state_dict": state, "config": {"model": model}}, tmp_path / "own.pt")
    assert convert.main([str(tmp_path / "own.pt"), str(tmp_path / "q.safetensors"), "--config", str(theirs)]) == 0
    assert (f"  config: {tmp_path / 'own.pt'}'s own config (brain-go-brr schema); --config {theirs}, a brain-go-brr v2 "
            "config too, is not read") in capsys.readouterr().out

    small = {**model, "graph": {**model["graph"], "edge_mamba_d_model": 32}}  # not these weights' model
    theirs.write_text(yaml.safe_dump({"experiment": {"name": "v3"}, "model": small, "training": {"loss": "bce"}}))
    assert convert.main([str(tmp_path / "mid.pt"), str(tmp_path / "p.safetensors"), "--config", str(theirs)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"the model is the one the `model` section of {theirs} (a brain-go-brr v2 config) describes: pass --config "
        "the config these weights were trained with")


def test_converted_tiny_models_agree_in_float64():
    config = load_config(TINY).model
    torch_model = tmodel.SeizureDetector(config, 0).double().eval()
    jax_side = jax_model(config, 1)  # built before x64 is on: it reuses the float32 init compiles
    jax_side.eval()
    x = np.random.default_rng(0).standard_normal((2, config.n_chans, 1024))

    # 1. torch
    with torch.no_grad():
        torch_logits, torch_taps = torch_model(torch.from_numpy(x))
    # 2. jax
    with jax.enable_x64(True):
        torch_to_jax(torch_model, jax_side)  # the NNX params become float64
        jax_logits, jax_taps = nnx.jit(lambda m, x: m(x))(jax_side, jnp.asarray(x))
        assert jax_logits.dtype == jnp.float64
    # 3. compare
    row = compare_arrays("logits", jax_logits, torch_logits, "model", "float64")
    in_forward_order = {name: jax_taps[name] for name in torch_taps if name in jax_taps}  # jit sorts keys
    taps = compare_trees(in_forward_order, dict(torch_taps), "model", "float64")
    print(taps.format())
    print(f"float64 logits: max_abs {row.max_abs:.3g}, max_rel {row.max_rel:.3g} (max |logit| {row.scale:.3g})")
    assert row.passed, row.reason
    assert taps.passed, taps.first_failure


def test_bfloat16_weights_convert_to_numpy_exactly():
    """The localiser's bfloat16 runs copy a bf16 torch model into JAX (it raised a TypeError)."""
    import ml_dtypes

    torch_model = tmodel.SeizureDetector(load_config(TINY).model, 3).to(torch.bfloat16)
    weight = torch_model.state_dict()["head.proj.weight"]
    got = convert.to_numpy(weight)
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got.astype(np.float32), weight.float().numpy())


def test_cli_reads_an_original_checkpoints_own_config_field_by_field(tmp_path, capsys):
    """brain-go-brr checkpoints (the full-size V3's live weights under its names, zeros): its own
    config's `graph.use_residual: false` is ours; a later version's fields ours cannot honour are
    refused, naming each; its post-processing and loss go on with it into a .safetensors file and from there
    into a jaxbrr checkpoint (not into a bare .pt state dict, which says so); weights read with a
    config that is not theirs name a few tensors, the count and the fix."""
    from common.checkpoints import read_weights
    from common.original import original_key
    from tests.torchref.original_checkpoint import FULL_ORIGINAL_MODEL_CONFIG

    state = {original_key(k): torch.zeros(s) for k, s in convert.torch_shapes(load_config("configs/tusz.yaml").model).items()}
    no_residual = {**FULL_ORIGINAL_MODEL_CONFIG, "graph": {**FULL_ORIGINAL_MODEL_CONFIG["graph"], "use_residual": False}}
    torch.save({"model_state_dict": state, "config": {"model": no_residual, "postprocessing": {
        "hysteresis": {"tau_on": 0.95, "tau_off": 0.9, "min_onset_samples": 1, "min_offset_samples": 1}},
        "training": {"loss": "bce"}}}, tmp_path / "no_residual.pt")
    assert convert.main([str(tmp_path / "no_residual.pt"), str(tmp_path / "o.safetensors")]) == 0
    assert convert.read_metadata(tmp_path / "o.safetensors")["config"]["graph"]["use_residual"] is False
    printed = capsys.readouterr().out
    assert "  post-processing from the checkpoint's own config: tau_on 0.95, tau_off 0.9," in printed
    read = read_weights(tmp_path / "o.safetensors")
    assert (read.config.postprocess.tau_on, read.config.postprocess.tau_off) == (0.95, 0.9)
    assert read.own_sections == ("postprocess", "loss") and read.config.model.graph.use_residual is False
    assert load_config(TINY).train.loss == "focal" and read.config.train.loss == "bce"  # its own loss, carried
    assert f"{tmp_path / 'o.safetensors'} holds the model alone and its post-processing: its windows and evaluation" in read.notes[0]
    defaults = load_config(TINY).postprocess  # tau_on 0.86: the file's own comes first, said in a note
    read = read_weights(tmp_path / "o.safetensors", TINY)
    assert read.config.postprocess.tau_on == 0.95 != defaults.tau_on
    assert f"{tmp_path / 'o.safetensors'} carries its own post-processing, used instead of the `postprocess` section of {TINY}" in " ".join(read.notes)
    assert read.config.train.loss == "bce" and (f"{tmp_path / 'o.safetensors'} carries its own loss, bce, used instead of "
                                                f"{TINY}'s focal (focal_alpha 0.5, focal_gamma 2); --set train.loss=... "
                                                "changes it") in read.notes
    run = load_config(TINY, ["postprocess.tau_on=0.99"])  # a training run's own config decides (--init-from)
    assert read_weights(tmp_path / "o.safetensors", run).config.postprocess == run.postprocess
    assert convert.main([str(tmp_path / "o.safetensors"), str(tmp_path / "o-jax")]) == 0
    assert read_weights(tmp_path / "o-jax").config.postprocess.tau_on == 0.95
    assert read_weights(tmp_path / "o-jax").config.train.loss == "bce"
    capsys.readouterr()
    assert convert.main([str(tmp_path / "o.safetensors"), str(tmp_path / "o.pth")]) == 0
    assert (f"  {tmp_path / 'o.pth'} is a bare state dict: it carries no config; nor the checkpoint's own "
            "post-processing and loss. Reading it back needs --config with this model section: configs/tusz.yaml's "
            "with model.graph.use_residual False, model.stability.pe_gradient 'full'.") in capsys.readouterr().out
    assert read_weights(tmp_path / "o.pth", TINY).config.model.graph.use_residual is True  # indeed not carried

    later = {**FULL_ORIGINAL_MODEL_CONFIG, "graph": {**FULL_ORIGINAL_MODEL_CONFIG["graph"], "edge_lift_activation": "tanh",
                                                    "adj_row_softmax": True, "laplacian_eps": 1e-3}}
    torch.save({"model_state_dict": state, "config": {"model": later}}, tmp_path / "later.pt")
    assert convert.main([str(tmp_path / "later.pt"), str(tmp_path / "l.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'later.pt'}: its own config (brain-go-brr schema) sets 3 model field(s)")
    for field in ("graph.edge_lift_activation = 'tanh'", "graph.adj_row_softmax = True", "graph.laplacian_eps = 0.001"):
        assert f"\n  model.{field}, but ours " in err
    assert not (tmp_path / "l.safetensors").exists()

    torch.save(state, tmp_path / "bare.pt")
    assert convert.main([str(tmp_path / "bare.pt"), str(tmp_path / "b.safetensors"), "--config", "configs/default.yaml"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) < 20 and "  … and " in lines[7], lines  # was one line per tensor: 200
    assert lines[-1] == ("the model is the one the `model` section of --config configs/default.yaml describes: pass "
                         "--config the config these weights were trained with")
