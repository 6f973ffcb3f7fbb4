"""The TCN's ReLU kinks (parity/localize.py `_kink_replay`): a pre-activation within rounding of 0
that one side's float32 puts on the other side of the kink from float64 switches its unit's
gradient path, and a parameter gradient then differs beyond the float32 tolerance with every
forward row agreeing. The localiser replays float64 on that side's float32 decisions: if that
gives that side's gradient, the row is amplified rounding, not DRIFT.

No test here relies on where float32 rounding lands (that differs between CPUs): the crossing is
planted. One side's float32 run is given the gradients float64 computes when one ReLU unit is
taken on the other side of 0, and its pre-activations say so; a planted gradient error of the
same size without a crossing stays DRIFT."""

from __future__ import annotations

import numpy as np
import pytest

from parity import localize, scenarios
from parity import runs as R
from parity.problem import select_windows
from parity.verdicts import PARAMETERS, classify, find, tap_rows

CROSSED = 3  # units taken across the kink: they move ∇tcn.layers.1 by 2e-2 of its scale (beyond the
# float32 tolerance) and leave every other row within it; all within 2e-5 of 0, where the layer's
# largest is 0.31 (the replay takes crossings within 1e-4 of that, the forward's float32 tolerance)


def models_and_runs(problem) -> tuple[dict, dict]:
    """Both models and both runs of `problem` at float64 and float32, keyed as the localiser keys them."""
    models, runs = {}, {}
    for dtype in ("float64", "float32"):
        with localize.precision(dtype):
            torch_model, jax_model = localize._models(problem, dtype)
            models[dtype] = (torch_model, jax_model)
            jax_run = R.run_jax(jax_model, problem.batch, problem.config.train)
            shapes = {name: tap.shape for name, tap in jax_run.taps.items()}
            runs[f"torch/{dtype}"] = R.run_torch(torch_model, problem.batch, problem.config.train, shapes)
            runs[f"jax/{dtype}"] = jax_run
    return models, runs


@pytest.fixture(scope="module")
def clean():
    """The clean scenario's models and runs at float64 and float32, on its first window (half the
    time of both)."""
    problem = scenarios.build("clean")
    problem.batch, problem.windows = select_windows(problem.batch, "0", problem.source)
    return problem, *models_and_runs(problem)


def _rows(problem, runs, kinks=None):
    rows = tap_rows(list(runs.values()), problem.config.model.stage_inputs, R.parameter_stage(problem.config.model),
                    extreme=10.0)
    if kinks:
        classify(rows, ["float64", "float32"], 10.0, kinks=kinks)
    return rows


def test_float64_on_its_own_relu_sides_is_float64(clean):
    """The replay's mechanics: taking the sides float64 already takes changes nothing."""
    problem, models, runs = clean
    with localize.precision("float64"):
        own_inputs = R.torch_relu_inputs(models["float64"][0], runs["torch/float64"].taps["input"])
        own = [z > 0 for z in own_inputs]
        shapes = {name: tap.shape for name, tap in runs["torch/float64"].taps.items()}
        taken = R.run_torch_with_relu_signs(models["float64"][0], problem.batch, problem.config.train, shapes, own)
        jax_inputs = R.jax_relu_inputs(models["float64"][1], runs["jax/float64"].taps["input"])
    for name, grad in runs["torch/float64"].grads.items():
        np.testing.assert_array_equal(taken.grads[name], grad, err_msg=name)
    for z_jax, z_torch in zip(jax_inputs, own_inputs, strict=True):  # signs float64 rounding cannot decide
        decided = np.abs(z_torch) > 1e-12 * np.abs(z_torch).max()
        assert ((z_jax > 0) == (z_torch > 0))[decided].all()


def _crossing(problem, models, runs):
    """float64's TCN pre-activations with the last layer's CROSSED smallest in magnitude negated
    (as float32 rounding crosses them: the forward moves by no more than they are), and the
    float64 gradients computed on those sides."""
    with localize.precision("float64"):
        inputs = R.torch_relu_inputs(models["float64"][0], runs["torch/float64"].taps["input"])
        crossed = [z.copy() for z in inputs]
        last = crossed[-1].reshape(-1)  # a view
        units = np.argsort(np.abs(last))[:CROSSED]
        last[units] = np.where(last[units] == 0, 1e-300, -last[units])
        shapes = {name: tap.shape for name, tap in runs["torch/float64"].taps.items()}
        taken = R.run_torch_with_relu_signs(models["float64"][0], problem.batch, problem.config.train, shapes,
                                            [z > 0 for z in crossed])
    return crossed, taken


def test_a_planted_crossing_in_one_sides_float32_is_amplified_rounding(clean, monkeypatch):
    problem, models, runs = clean
    crossed, taken = _crossing(problem, models, runs)
    planted = dict(runs)
    jax32 = runs["jax/float32"]
    planted["jax/float32"] = R.Run("jax", "float32", jax32.taps, jax32.loss, jax32.cotangents,
                                   {name: g.astype(np.float32) for name, g in taken.grads.items()})
    monkeypatch.setattr(R, "jax_relu_inputs", lambda model, x: [z.astype(np.float32) for z in crossed])
    rows = _rows(problem, planted)
    drifted = [r for r in rows if r.verdict == "DRIFT"]
    assert drifted and all(r.kind == "parameters" and r.name.startswith(PARAMETERS + "tcn.") and r.drifted == "jax"
                           for r in drifted)
    kinks, entries = localize._kink_replay(rows, models, planted, problem, "cpu", lambda text: None)
    assert sorted(kinks) == sorted(r.name for r in drifted)
    assert all(e["passed"] for e in entries) and len(entries) == len(drifted)
    assert f"at the {CROSSED} TCN ReLU input(s) where they differ" in next(iter(kinks.values()))
    rows = _rows(problem, planted, kinks)
    assert not find(rows)
    assert {r.name for r in rows if r.amplified} == set(kinks)


def test_a_gradient_error_without_a_crossing_stays_drift(clean, monkeypatch):
    """The same gradients planted, but jax's pre-activations on float64's sides: nothing to
    replay (no crossing), so the DRIFT stands; with the crossing said but gradients that are not
    float64's on those sides, the replay disagrees and the DRIFT stands too; and a crossing far
    from 0 is not taken for rounding at all."""
    problem, models, runs = clean
    crossed, taken = _crossing(problem, models, runs)
    jax32 = runs["jax/float32"]
    planted = dict(runs)
    planted["jax/float32"] = R.Run("jax", "float32", jax32.taps, jax32.loss, jax32.cotangents,
                                   {name: g.astype(np.float32) for name, g in taken.grads.items()})
    with localize.precision("float64"):
        own = R.torch_relu_inputs(models["float64"][0], runs["torch/float64"].taps["input"])
    monkeypatch.setattr(R, "jax_relu_inputs", lambda model, x: own)
    rows = _rows(problem, planted)
    assert localize._kink_replay(rows, models, planted, problem, "cpu", lambda text: None) == ({}, [])

    monkeypatch.setattr(R, "jax_relu_inputs", lambda model, x: [z.astype(np.float32) for z in crossed])
    scaled = {name: (10 * g - 9 * runs["torch/float64"].grads[name]).astype(np.float32)  # 10× the crossing's effect
              for name, g in taken.grads.items()}
    planted["jax/float32"] = R.Run("jax", "float32", jax32.taps, jax32.loss, jax32.cotangents, scaled)
    rows = _rows(problem, planted)
    kinks, entries = localize._kink_replay(rows, models, planted, problem, "cpu", lambda text: None)
    assert kinks == {} and entries and not any(e["passed"] for e in entries)

    # a crossing far from 0 (the layer's largest pre-activation) is no rounding: not replayed
    far = [z.copy() for z in crossed]
    far[-1].reshape(-1)[np.argmax(np.abs(far[-1]))] *= -1
    monkeypatch.setattr(R, "jax_relu_inputs", lambda model, x: [z.astype(np.float32) for z in far])
    assert localize._kink_replay(rows, models, planted, problem, "cpu", lambda text: None) == ({}, [])
