"""The NaN localiser: verdict rules on hand-made runs, then every scenario of the catalogue end to
end (expected verdict and first tap), the JSON report's schema, training dumps of both
frameworks replayed through the command they print, and bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex

import jax
import numpy as np
import pytest
import torch

from common.config import load_config, with_overrides
from common.train.log import RunLog
from parity import growth as growth_lib
from parity import localize, scenarios
from parity import problem as problem_lib
from parity import report as report_lib
from parity.report import float32_precision
from parity.runs import Run
from parity.verdicts import VERDICTS, WEIGHTS_FIX, TapRow, classify, find, tap_rows, where

# ----------------------------------------------------------------------------------------------
# verdict rules, on a three-stage graph with hand-made runs (no model, instant)

STAGES = {"input": ("x",), "tcn": ("input",), "logits": ("tcn",)}
MODULES = {"tcn": "tcn", "head": "logits"}


def _runs(edit=None, x_scale=1.0, dtypes=("float64", "float32")) -> list[Run]:
    """torch and jax at `dtypes`, all equal; edit(framework, dtype, run) changes one. A bfloat16
    run holds its values as float32 (as the localiser keeps them)."""
    rng = np.random.default_rng(0)
    base = {"input": rng.standard_normal((2, 3, 8)) * x_scale, "tcn": rng.standard_normal((2, 4, 2)),
            "logits": rng.standard_normal((2, 8))}
    grads = {"tcn.weight": rng.standard_normal((4, 3)), "head.weight": rng.standard_normal((4,))}
    out = []
    for dtype in dtypes:
        for framework in ("torch", "jax"):
            def cast(tree, held="float32" if dtype == "bfloat16" else dtype):  # a copy per run
                return {k: np.array(v, held) for k, v in tree.items()}
            run = Run(framework, dtype, cast(base), np.array(0.5, dtype if dtype != "bfloat16" else "float32"),
                      cast(base), cast(grads))
            if edit is not None:
                edit(framework, dtype, run)
            out.append(run)
    return out


def _verdict(runs):
    rows = tap_rows(runs, STAGES, MODULES, extreme=10.0)
    findings = find(rows)
    return rows, findings, (findings[0].verdict, findings[0].row, findings[0].side) if findings else ("CLEAN",)


def _poison(name, value, kind="taps"):
    def edit(framework, dtype, run, frameworks=("torch", "jax"), dtypes=("float32", "float64")):
        if framework in frameworks and dtype in dtypes:
            getattr(run, kind)[name] = np.full_like(getattr(run, kind)[name], value)
    return edit


def test_identical_runs_are_clean():
    rows, findings, verdict = _verdict(_runs())
    assert verdict == ("CLEAN",) and findings == []
    assert [r.name for r in rows] == ["input", "tcn", "logits", "loss", "∂logits", "∂tcn", "∂input",
                                      "∇tcn", "∇head"]


def test_one_sided_nan_at_float64_is_framework_with_the_side():
    def edit(framework, dtype, run):
        if framework == "jax":
            run.taps["tcn"][0, 0, 0] = math.nan
            run.taps["logits"][:] = math.nan  # inherited downstream: not a second finding
    rows, findings, verdict = _verdict(_runs(edit))
    assert verdict == ("FRAMEWORK", "tcn", "jax")
    assert [f.row for f in findings] == ["tcn"]
    assert not next(r for r in rows if r.name == "logits").born


def test_a_gradient_one_side_drops_under_a_nan_loss_names_the_side_that_dropped_it():
    """The loss NaN on both sides, ∂logits NaN in jax only: torch's clamp backward zeroed the NaN
    (the focal loss at NaN logits), so the detail says the finite side dropped it; a one-sided
    gradient under a finite loss keeps the plain detail."""
    def edit(framework, dtype, run):
        run.loss = np.array(math.nan, run.loss.dtype)
        run.taps["logits"][:] = math.nan
        if framework == "jax":
            run.cotangents["logits"][:] = math.nan
    rows, _, _ = _verdict(_runs(edit))
    row = next(r for r in rows if r.name == "∂logits")
    assert (row.verdict, row.side) == ("FRAMEWORK", "jax")
    assert "the loss is non-finite on both sides, so torch's finite gradient is the one that drops the NaN" in row.detail
    assert row.dropped_by == "torch" and row.to_dict()["dropped_by"] == "torch"
    runs = _runs(edit)
    problem = problem_lib.Problem(None, {}, problem_lib.Batch(runs[0].taps["input"]), "b.npz")
    table = report_lib.format_report(report_lib.Report(problem, ["float64", "float32"], rows, find(rows), [], {}, {}, 10.0))
    assert next(line for line in table.splitlines() if line.startswith("∂logits ")).endswith(
        " FRAMEWORK (jax; torch dropped the NaN)")
    # the same at float32 only (the loss overflowed there on both sides, finite in float64): not
    # "the values stay in float32's range there and jax's computation leaves it"
    rows, _, _ = _verdict(_runs(lambda framework, dtype, run: dtype == "float32" and edit(framework, dtype, run)))
    row = next(r for r in rows if r.name == "∂logits")
    assert (row.verdict, row.side, row.dropped_by) == ("FRAMEWORK", "jax", "torch")
    assert row.detail == ("jax only, at float32 (finite at float64); the loss is non-finite on both sides, so torch's "
                          "finite gradient is the one that drops the NaN (a backward that zeroes it, as torch.clamp's "
                          "does where jnp.clip's passes it on)")

    def finite_loss(framework, dtype, run):
        if framework == "jax":
            run.cotangents["logits"][:] = math.nan
    rows, _, _ = _verdict(_runs(finite_loss))
    row = next(r for r in rows if r.name == "∂logits")
    assert (row.verdict, row.side, row.detail) == ("FRAMEWORK", "jax", "jax only, at float64")


def test_nan_on_both_sides_in_float64_is_model():
    rows, findings, verdict = _verdict(_runs(_poison("tcn", math.nan, "cotangents")))
    assert verdict == ("MODEL", "∂tcn", "both")


def test_float32_only_overflow_is_precision():
    def edit(framework, dtype, run):
        if dtype == "float32":
            run.taps["tcn"][1] = math.inf
    rows, findings, verdict = _verdict(_runs(edit))
    assert verdict == ("PRECISION", "tcn", "both")
    assert "finite at float64" in findings[0].detail


def test_extreme_batch_is_data_and_what_follows_is_reported_too():
    def edit(framework, dtype, run):
        if dtype == "float32":
            run.taps["tcn"][:] = math.inf
    rows, findings, verdict = _verdict(_runs(edit, x_scale=30.0))
    assert [(f.verdict, f.row) for f in findings] == [("DATA", "input"), ("PRECISION", "tcn")]


def test_bad_data_and_bad_labels_are_data_and_say_where():
    """The batch as given, before any guard: a NaN in x, or in the labels (which only the loss
    reads, so that the runs blamed the model at the loss), is DATA, naming the windows and the
    first bad element."""
    runs = _runs()
    x = runs[0].taps["input"].copy()  # (2, 3, 8)
    x[1, 2, 5] = math.nan
    rows = tap_rows(runs, STAGES, MODULES, extreme=10.0, batch=x)
    assert rows[0].verdict == "DATA" and rows[0].detail == (
        "the batch holds 1 NaN, 0 Inf (window 1; first at window 1, channel 2, sample 5)")
    labels = np.zeros((2, 8), np.float32)
    labels[0, 3] = labels[1, 0] = math.nan
    rows = tap_rows(runs, STAGES, MODULES, extreme=10.0, batch=runs[0].taps["input"], labels=labels)
    assert rows[0].verdict == "DATA" and rows[0].detail == (
        "its labels hold 2 NaN, 0 Inf (labels windows 0, 1; first at window 0, sample 3)")
    outlier = runs[0].taps["input"].copy()
    outlier[0, 1, 7] = 50.0
    rows = tap_rows(runs, STAGES, MODULES, extreme=10.0, batch=outlier)
    assert rows[0].detail.endswith("(window 0; first at window 0, channel 1, sample 7)")


def test_rows_the_bad_data_reaches_inherit_data_and_the_labels_are_an_input_of_the_loss():
    """A NaN in x reaches every row below it in every run (jax's ∂logits too, torch's not): each
    inherits DATA, unstarred, none is MODEL or FRAMEWORK, and the one finding is DATA at input.
    NaN labels reach the loss and every gradient, not the forward taps: the labels are an input of
    the loss, so it inherits DATA from them rather than being born MODEL there."""
    def everything_below(taps):
        def edit(framework, dtype, run):
            for tap in taps:
                run.taps[tap][:] = math.nan
            run.loss = np.full_like(run.loss, math.nan)
            for tree in (run.cotangents, run.grads):
                for name in tree:
                    tree[name][:] = math.nan
            if framework == "torch" and taps:
                run.cotangents["logits"][:] = 0.0  # as in the rehearsal: torch's ∂logits stays finite
        return edit

    runs = _runs(everything_below(("input", "tcn", "logits")))
    x = runs[0].taps["input"].copy()
    rows = tap_rows(runs, STAGES, MODULES, extreme=10.0, batch=x)
    assert [(f.verdict, f.row) for f in find(rows)] == [("DATA", "input")]
    assert [(r.name, r.verdict, r.born) for r in rows] == [
        ("input", "DATA", True), ("tcn", "DATA", False), ("logits", "DATA", False), ("loss", "DATA", False),
        ("∂logits", "DATA", False), ("∂tcn", "DATA", False), ("∂input", "DATA", False), ("∇tcn", "DATA", False),
        ("∇head", "DATA", False)]
    by_name = {r.name: r for r in rows}
    assert by_name["tcn"].detail == "inherits the batch's NaN/Inf from input"
    assert by_name["∂logits"].detail == "inherits the batch's NaN/Inf from loss"

    runs = _runs(everything_below(()))
    labels = np.zeros((2, 8), np.float32)
    labels[1, 4] = math.nan
    rows = tap_rows(runs, STAGES, MODULES, extreme=10.0, batch=runs[0].taps["input"], labels=labels)
    assert [(f.verdict, f.row) for f in find(rows)] == [("DATA", "input")]
    loss = next(r for r in rows if r.name == "loss")
    assert (loss.upstream, loss.verdict, loss.born, loss.detail) == (
        ("logits", "labels"), "DATA", False, "inherits the batch's NaN/Inf from labels")
    assert {r.verdict for r in rows if any(r.bad(run) for run in r.nonfinite)} == {"DATA"}


def test_where_names_windows_by_their_index_in_the_batch_given():
    mask = np.zeros((2, 3, 8), bool)
    mask[1, 2, 5] = mask[0, 0, 7] = True
    assert where(mask, ("window", "channel", "sample")) == " (windows 0, 1; first at window 0, channel 0, sample 7)"
    assert where(mask, ("window", "channel", "sample"), windows=[4, 2]) == (
        " (windows 2, 4; first at window 4, channel 0, sample 7)")


def test_finite_difference_beyond_tolerance_is_drift_blaming_the_side_farther_from_float64():
    def edit(framework, dtype, run):
        if framework == "jax":
            run.taps["tcn"] = run.taps["tcn"] * (1 + 1e-3)
    rows, findings, verdict = _verdict(_runs(edit))
    assert verdict[:2] == ("DRIFT", "tcn")
    assert "float64 too" in findings[0].detail

    def edit32(framework, dtype, run):
        if framework == "jax" and dtype == "float32":
            run.taps["tcn"] = run.taps["tcn"] * (1 + 1e-3)
    rows, findings, verdict = _verdict(_runs(edit32))
    assert verdict == ("DRIFT", "tcn", "jax")


def test_a_pe_difference_where_the_pe_is_not_unique_is_the_models_not_a_drift():
    """Eigenvalues repeated among the k smallest: any basis of their eigenspace is a PE, each
    eigensolver picks its own, and the two sides differ at float64 with neither wrong."""
    stages = {"input": ("x",), "pe": ("input",), "logits": ("pe",)}

    def edit(framework, dtype, run):
        for tree in (run.taps, run.cotangents):
            tree["pe"] = tree.pop("tcn")
        if framework == "jax":
            run.taps["pe"] = run.taps["pe"][..., ::-1].copy()  # another basis
    runs = _runs(edit)
    rows = tap_rows(runs, stages, {"tcn": "pe", "head": "logits"}, extreme=10.0)
    assert next(r for r in rows if r.name == "pe").verdict == "DRIFT"
    rows = tap_rows(runs, stages, {"tcn": "pe", "head": "logits"}, extreme=10.0, ambiguous_pe="the PE is not unique")
    pe = next(r for r in rows if r.name == "pe")
    assert (pe.verdict, pe.side, pe.born, pe.detail) == ("MODEL", "both", True, "the PE is not unique")
    assert [(f.verdict, f.row) for f in find(rows)] == [("MODEL", "pe")]


def test_a_half_precision_stage_one_side_computes_wrongly_is_framework():
    """Differences at bfloat16 are reported, not judged, but for one case: a stage whose inputs are
    equal on both sides, bit for bit, and whose one side lands far from float64 (≥ HALF_FAR of its
    scale) where the other does not (≥ HALF_RATIO times closer): a wrong kernel. Inputs that differ
    already (rounding amplified upstream) never make one."""
    dtypes = ("float64", "float32", "bfloat16")

    def wrong_torch_tcn(framework, dtype, run):
        if dtype == "bfloat16":
            scale = np.abs(run.taps["tcn"]).max()
            run.taps["tcn"] = run.taps["tcn"] + (0.5 * scale if framework == "torch" else 0.004 * scale)
    rows, findings, verdict = _verdict(_runs(wrong_torch_tcn, dtypes=dtypes))
    assert verdict == ("FRAMEWORK", "tcn", "torch") and "at bfloat16, from inputs equal on both sides" in findings[0].detail

    def and_different_inputs(framework, dtype, run):
        wrong_torch_tcn(framework, dtype, run)
        if dtype == "bfloat16" and framework == "jax":
            run.taps["input"] = run.taps["input"] * np.float32(1 + 2**-8)
    assert _verdict(_runs(and_different_inputs, dtypes=dtypes))[2] == ("CLEAN",)

    def both_far(framework, dtype, run):
        if dtype == "bfloat16":
            run.taps["tcn"] = run.taps["tcn"] + (0.5 if framework == "torch" else 0.2) * np.abs(run.taps["tcn"]).max()
    assert _verdict(_runs(both_far, dtypes=dtypes))[2] == ("CLEAN",)


def test_a_float32_nan_on_one_side_only_is_the_frameworks():
    """Finite at float64 on both sides and in torch's float32: the values stay in float32's range
    there, so jax's float32 computation is what leaves it (it was PRECISION, whose advice says the
    values leave the range)."""
    def edit(framework, dtype, run):
        if framework == "jax" and dtype == "float32":
            run.taps["tcn"][1] = math.inf
    rows, findings, verdict = _verdict(_runs(edit))
    assert verdict == ("FRAMEWORK", "tcn", "jax")
    assert findings[0].detail.startswith("jax only, at float32: finite at float64 on both sides and in torch's float32")

    def half(framework, dtype, run):  # at a half precision one side rounding past its range is rounding's
        if framework == "jax" and dtype == "bfloat16":
            run.taps["tcn"][1] = math.inf
    assert _verdict(_runs(half, dtypes=("float64", "float32", "bfloat16")))[2] == ("PRECISION", "tcn", "jax")


def test_without_a_float64_run_model_and_precision_are_not_told_apart():
    """Both sides non-finite at float32 with no float64 run: the math (MODEL) or the range
    (PRECISION), which only float64 decides; the verdict says so, and so does the advice."""
    dtypes = ("float32", "bfloat16")
    rows, findings, verdict = _verdict(_runs(_poison("tcn", math.inf), dtypes=dtypes))
    assert verdict == ("MODEL", "tcn", "both")
    assert findings[0].detail == ("both frameworks non-finite at float32 (no float64 run: MODEL and PRECISION cannot "
                                  "be told apart; --dtype float64,float32 tells them)")
    problem = problem_lib.Problem(None, {}, problem_lib.Batch(_runs()[0].taps["input"]), "b.npz")
    report = report_lib.Report(problem, list(dtypes), rows, findings, [], {}, {}, 10.0)
    assert report_lib.next_step(report) == (
        "both frameworks are non-finite at tcn in float32,bfloat16, and no float64 run says whether the math is "
        "undefined there (MODEL) or the values leave the precision's range (PRECISION): run it again with --dtype "
        "float64,float32,bfloat16")
    # finite at float32, non-finite at bfloat16: PRECISION whether or not float64 ran (half-overflow's case)
    def half(framework, dtype, run):
        if dtype == "bfloat16":
            run.taps["tcn"][1] = math.inf
    rows, findings, verdict = _verdict(_runs(half, dtypes=dtypes))
    assert verdict == ("PRECISION", "tcn", "both") and "no float64 run" not in findings[0].detail
    report = report_lib.Report(problem, list(dtypes), rows, findings, [], {}, {}, 10.0)
    assert report_lib.next_step(report).startswith("finite in float32, not in a lower precision at tcn")


def test_a_nan_outranks_a_pe_that_is_not_unique_born_before_it():
    """A finite PE that is not unique is a MODEL row with no NaN; it was the verdict over the NaN
    born after it (the eigh gradient's, on a flat batch with pe_gradient full)."""
    stages = {"input": ("x",), "pe": ("input",), "logits": ("pe",)}

    def edit(framework, dtype, run):
        for tree in (run.taps, run.cotangents):
            tree["pe"] = tree.pop("tcn")
        if framework == "jax":
            run.taps["pe"] = run.taps["pe"][..., ::-1].copy()
        run.cotangents["input"][:] = math.nan  # every run: born at ∂input, ∂pe finite
    rows = tap_rows(_runs(edit), stages, {"tcn": "pe", "head": "logits"}, extreme=10.0,
                    ambiguous_pe="the PE is not unique")
    assert [(f.verdict, f.row) for f in find(rows)] == [("MODEL", "∂input"), ("MODEL", "pe")]


def test_a_nan_outranks_an_earlier_drift_and_drift_is_born_per_dtype():
    def edit(framework, dtype, run):
        if framework == "jax" and dtype == "float32":
            run.taps["tcn"] = run.taps["tcn"] * np.float32(1 + 1e-3)  # drifts at float32 only
        if framework == "jax" and dtype == "float64":
            run.taps["logits"] = run.taps["logits"] * (1 + 1e-6)  # drifts at float64, where tcn agrees
        run.cotangents["tcn"][0, 0, 0] = math.nan  # every run: MODEL
    rows, findings, verdict = _verdict(_runs(edit))
    assert verdict == ("MODEL", "∂tcn", "both")
    assert [(f.verdict, f.row) for f in findings] == [("MODEL", "∂tcn"), ("DRIFT", "tcn"), ("DRIFT", "logits")]


def test_float32_disagreement_that_float64_blames_on_neither_side_is_rounding_not_drift():
    def edit(framework, dtype, run):
        if dtype == "float32":  # one element, torch up and jax down: 1.6e-4 apart, each 0.8e-4 off
            scale = np.abs(run.taps["tcn"]).max()
            run.taps["tcn"][0, 0, 0] += (1 if framework == "torch" else -1) * np.float32(0.8e-4 * scale)
    rows, findings, verdict = _verdict(_runs(edit))
    tcn = next(r for r in rows if r.name == "tcn")
    assert not tcn.compare["float32"].passed and tcn.drifted == "neither"
    assert verdict == ("CLEAN",) and tcn.verdict == "CLEAN" and tcn.rounding

    def with_bfloat16(framework, dtype, run):  # and a bfloat16 run in which jax is far coarser
        edit(framework, dtype, run)
        if dtype == "bfloat16" and framework == "jax":
            run.taps["tcn"] += np.float32(0.05)
    rows, findings, verdict = _verdict(_runs(with_bfloat16, dtypes=("float64", "float32", "bfloat16")))
    tcn = next(r for r in rows if r.name == "tcn")  # float32's verdict is float32's, whatever else ran
    assert tcn.drifted == "neither" and verdict == ("CLEAN",) and tcn.rounding


def test_float32_drift_whose_replay_agrees_is_amplified_rounding_and_so_is_what_inherits_it():
    """A top-k near tie: jax's float32 tcn flips far from float64 (a drift blamed on jax) though
    each side's stage gives the other's result on the other's inputs. Once the replay says so
    (replay_agrees), tcn and the rows computed only from it are CLEAN, marked amplified; a row
    with a disagreement of its own stays a drift."""
    def edit(framework, dtype, run):
        if framework == "jax" and dtype == "float32":
            run.taps["tcn"] = run.taps["tcn"] * np.float32(1 + 1e-2)
            run.taps["logits"] = run.taps["logits"] * np.float32(1 + 1e-2)
    rows, findings, verdict = _verdict(_runs(edit))
    assert verdict == ("DRIFT", "tcn", "jax") and not next(r for r in rows if r.name == "logits").born
    classify(rows, ["float64", "float32"], 10.0, frozenset({"tcn"}))
    by_name = {r.name: r for r in rows}
    assert find(rows) == []
    assert by_name["tcn"].amplified and "replay" in by_name["tcn"].detail
    assert by_name["logits"].amplified and by_name["logits"].detail == "inherits the amplified rounding of tcn"

    def own_drift(framework, dtype, run):  # logits differs beyond what tcn's amplification explains
        edit(framework, dtype, run)
        if framework == "jax" and dtype == "float64":
            run.taps["logits"] = run.taps["logits"] * (1 + 1e-3)
    rows, findings, verdict = _verdict(_runs(own_drift))
    classify(rows, ["float64", "float32"], 10.0, frozenset({"tcn"}))
    assert [(f.verdict, f.row) for f in find(rows)] == [("DRIFT", "logits")]


# ----------------------------------------------------------------------------------------------
# the scenario catalogue, end to end on the tiny model (both frameworks, float32 and float64)


@pytest.fixture(scope="module")
def reports():
    cache = {}

    def get(name):
        if name not in cache:
            problem = scenarios.build(name)
            cache[name] = localize.localize(problem, problem.expected["dtypes"])
        return cache[name]
    return get


@pytest.mark.parametrize("name", list(scenarios.SCENARIOS))
def test_scenario_gives_its_expected_verdict_and_first_tap(reports, name):
    report = reports(name)
    expected = report.problem.expected
    print(report_lib.format_report(report))
    assert report.verdict == expected["verdict"]
    assert (report.first.row if report.first else None) == expected["tap"]
    assert f"\nnext: {report_lib.next_step(report)}\n" in report_lib.format_report(report)


def test_every_verdict_has_a_next_step():
    """A verdict added without one would be a KeyError at the end of a run of minutes."""
    from parity.verdicts import VERDICTS

    assert set(report_lib.NEXT_STEPS) >= set(VERDICTS)


@pytest.mark.parametrize(("verdict", "row", "detail", "pe_gradient", "starts"), [
    ("PRECISION", "tcn", "finite at float64, non-finite at bfloat16 (torch)", "safe", "finite in float64, not in a lower"),
    # float32 itself fails: "run it in float32" would be no advice
    ("PRECISION", "tcn", "finite at float64, non-finite at float32, bfloat16 (both)", "safe", "finite in float64, "
     "non-finite in float32"),
    ("MODEL", "∂adjacency", "both frameworks non-finite at float64", "full", "the eigh gradient is undefined"),
    ("MODEL", "∂adjacency", "both frameworks non-finite at float64", "safe", "the math of ∂adjacency"),
    # a forward PE that is finite but not unique: no NaN, and no pe_gradient advice
    ("MODEL", "pe", "the PE is not unique: 3 of 64 graphs have a repeated eigenvalue", "full", "the twins' PEs differ"),
])
def test_the_next_step_fits_the_case(verdict, row, detail, pe_gradient, starts):
    from types import SimpleNamespace

    config = load_config(scenarios.TINY, [f"model.stability.pe_gradient={pe_gradient}"])
    first = SimpleNamespace(verdict=verdict, row=row, detail=detail)
    report = SimpleNamespace(verdict=verdict, first=first, findings=[first], dtypes=["float64", "float32"],
                             problem=SimpleNamespace(config=config, kind=""))
    assert report_lib.next_step(report).startswith(starts)
    # a non-unique PE first, then the eigh gradient's NaN (a dump of pe_gradient: full, top_k: 1): the NaN's fix
    report.findings = [first, SimpleNamespace(verdict="MODEL", row="∂adjacency", detail="both frameworks non-finite")]
    if row == "pe" and pe_gradient == "full":
        assert report_lib.next_step(report).startswith("the eigh gradient is undefined")


def test_diverged_weights_point_at_the_learning_rate_not_the_stage(reports):
    """A run at a learning rate too large for the model: its NaN is PRECISION where float32 first
    overflows (true, not the cause); the weights' growth from init says what to fix. A clean
    scenario's weights (a fresh init) do not read as diverged."""
    report = reports("diverged")
    assert report.growth.diverged and report.growth.median > 10 * growth_lib.DIVERGED_GROWTH  # ~130x
    assert report_lib.next_step(report).startswith("the weights have grown")
    assert "Lower train.lr (30 here" in report_lib.next_step(report)
    assert report.to_dict()["growth"]["diverged"] is True
    clean = reports("clean")
    assert clean.growth.median == 1.0 and not clean.growth.diverged  # the scenario's weights are the seed-0 init
    assert report_lib.format_report(clean).count("\nweights: RMS 1x their scale at init") == 1


@pytest.mark.parametrize("largest", [50.0, 1e20])
def test_a_few_grown_tensors_are_named_as_the_cause_of_a_precision_verdict(largest):
    """Weights with two tensors blown up (a bad update to a few, not divergence: the median has not
    moved) gave PRECISION with 'bound that (a guard)' advice; past OUTLIER_GROWTH the tensors are
    named as the cause (50x is not: a long healthy run may grow a small-initialised tensor so far)."""
    from types import SimpleNamespace

    config = load_config(scenarios.TINY)
    ratio = {"tcn.layers.0.weight_g": largest, "tcn.layers.1.weight_g": largest / 2,
             **{f"w{i}": 1.0 for i in range(9)}}
    grown = growth_lib.Growth(ratio=ratio, rms=dict(ratio), rms_init=dict.fromkeys(ratio, 1.0))
    first = SimpleNamespace(verdict="PRECISION", row="tcn", detail="finite at float64, non-finite at float32 (both)")
    report = SimpleNamespace(verdict="PRECISION", first=first, findings=[first], dtypes=["float64", "float32"],
                             problem=SimpleNamespace(config=config, kind="original"), growth=grown)
    advice = report_lib.next_step(report)
    assert not grown.diverged
    if largest < growth_lib.OUTLIER_GROWTH:
        assert advice.startswith("finite in float64, non-finite in float32 at tcn")
    else:
        assert advice.startswith("finite in float64, not in a lower precision at tcn, with 2 weight tensor(s) grown "
                                 "far from their scale at init (tcn.layers.0.weight_g 1e+20x, "
                                 "tcn.layers.1.weight_g 5e+19x;")
        assert advice.endswith("a guard at tcn would only hide them")


def test_outlier_reports_data_then_precision_in_the_tcn(reports):
    report = reports("outlier")
    assert [(f.verdict, f.row) for f in report.findings][:2] == [("DATA", "input"), ("PRECISION", "tcn")]
    assert report.rows[0].max_abs_x > localize.EXTREME_SIGMA  # 1256 µV unclipped: 16 σ of this recording
    assert report_lib.next_step(report).startswith("fix or leave out the recording")  # the first finding's: DATA


@pytest.mark.parametrize("tcn_nan", [False, True])
def test_data_is_blamed_for_a_nan_only_where_one_came(tcn_nan):
    """A batch beyond the DATA bound is DATA either way; only where some run went non-finite does
    the advice say the model is not at fault (a finite run says nothing about the model)."""
    runs = ("torch/float32", "jax/float32", "torch/float64", "jax/float64")
    finite = dict.fromkeys(runs, (0, 0))
    rows = [TapRow("input", "forward", (2, 19, 512), dict(finite), {}, max_abs_x=40.0),
            TapRow("tcn", "forward", (2, 32, 32), {**finite, "torch/float32": (3 * tcn_nan, 0)}, {},
                   upstream=("input",))]
    classify(rows, ["float32", "float64"], extreme=10.0)
    report = report_lib.Report(problem_lib.Problem(None, {}, None, "hand-made"), ["float32", "float64"], rows,
                               find(rows), [], {}, {}, 10.0)
    assert (report.verdict, report.first.row) == ("DATA", "input")
    assert "max |x| = 40 > 10 σ" in report.first.detail
    advice = report_lib.next_step(report)
    assert advice.startswith("fix or leave out the recording") == tcn_nan
    assert advice.startswith("the batch is bad as given (the verdict line), yet every run stayed finite") != tcn_nan


def test_bad_data_in_some_windows_points_at_the_others():
    """One bad window makes every gradient non-finite (the loss is their mean) and hides what the
    model does on the others: the advice names them with --windows, where it said the model was not
    at fault."""
    runs = ("torch/float64", "jax/float64")
    x = np.zeros((3, 19, 512), np.float32)
    x[1, 2, 3] = math.nan
    rows = [TapRow("input", "forward", x.shape, {r: (1, 0) for r in runs}, {}, data_nonfinite=(1, 0)),
            TapRow("∂tcn", "backward", (3, 8), {r: (24, 0) for r in runs}, {}, upstream=("input",))]
    classify(rows, ["float64"], extreme=10.0)
    for windows, expected in ((None, "--windows 0,2 localizes them alone"), ([4, 7, 9], "--windows 4,9 localizes")):
        problem = problem_lib.Problem(None, {}, problem_lib.Batch(x), "hand-made", windows=windows)
        report = report_lib.Report(problem, ["float64"], rows, find(rows), [], {}, {}, 10.0)
        assert report.verdict == "DATA"
        assert expected in report_lib.next_step(report)


def test_an_original_checkpoint_not_run_as_the_original_says_how_to(tmp_path):
    """No NaN here, with stability other than the original's: that says nothing about the NaN the
    original met; the advice names the --set that runs its math, and the batch it saved."""
    from types import SimpleNamespace

    config = load_config(scenarios.TINY, ["model.stability.guards=none", "model.stability.pe_gradient=safe"])
    report = SimpleNamespace(verdict="CLEAN", first=None, findings=[], dtypes=["float64"],
                             problem=SimpleNamespace(config=config, kind="original", batch=None))
    advice = report_lib.next_step(report)
    assert advice.startswith("nothing to fix in this batch with these weights") and "debug/bad_batch_<step>.pt" in advice
    assert advice.endswith("This ran with model.stability guards none, pe_gradient safe, not the original's: --set "
                           "model.stability.guards=original --set model.stability.pe_gradient=full runs the math it "
                           "trained with")
    report.verdict, report.rows = "DATA", []  # bad data on which every run stayed finite
    advice = report_lib.next_step(report)
    assert "debug/bad_batch_<step>.pt" in advice and "localize the dump training wrote" not in advice
    report.problem.kind = "torchref"
    assert "This ran with" not in report_lib.next_step(report)
    assert "localize the dump training wrote" in report_lib.next_step(report)


def test_eigh_degenerate_names_the_eigh_backward_and_every_degenerate_graph(reports):
    report = reports("eigh-degenerate")
    op = report.first.op
    assert "LinalgEighBackward0" in op["torch"] and "at jaxbrr/graph.py" in op["jax"] and "(_eigh)" in op["jax"], op
    eigh = report.eigh
    assert eigh["graphs_with_repeats"] == eigh["graphs"] == 2 * 32  # B=2, 64 steps / interval 2
    assert {(e["multiplicity"], round(e["eigenvalue"], 6)) for e in eigh["repeated"]} == {(19, 0.0001)}  # L = ε·I
    assert eigh["graphs_with_repeats_in_pe"] == eigh["graphs"] and all(e["in_pe"] for e in eigh["repeated"])
    assert localize.pe_not_unique(eigh).startswith(f"the PE is not unique: {eigh['graphs']} of {eigh['graphs']} graphs")
    replay = [r for r in report.replay if r["tap"] == "∂adjacency"]
    assert replay and all(r["nonfinite"]["result"] == r["nonfinite"]["expected"] > 0 for r in replay)
    # what to do: the fix that config names, and how to check it here
    assert ("next: the eigh gradient is undefined where eigenvalues repeat: set model.stability.pe_gradient=safe "
            "(now full) and check it here with --set model.stability.pe_gradient=safe") in report_lib.format_report(report)


def test_exp_mask_names_the_node_mamba_parameters(reports):
    report = reports("exp-mask")
    bad = report.nonfinite_parameters()
    assert "node_mamba.layers.0.fwd" in bad
    assert not any(module.startswith("head") for module in bad)  # downstream of the birth: finite


def test_drift_replay_shows_the_difference_is_local_to_edge_weights(reports):
    report = reports("drift")
    replayed = [r for r in report.replay if r["tap"] == "edge_weights" and r["dtype"] == "float64"]
    assert replayed and not any(r["passed"] for r in replayed)  # torch's inputs do not remove it


def test_json_report_follows_the_documented_schema(reports, tmp_path):
    report = reports("eigh-degenerate")
    report_lib.write_json(report, tmp_path / "report.json")
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["schema"] == report_lib.SCHEMA
    assert set(data) >= {"source", "batch", "dtypes", "versions", "verdict", "first", "findings", "rows",
                         "replay", "nonfinite_parameters", "eigh", "errors", "expected", "notes", "growth", "history"}
    assert data["growth"]["median"] == 1.0 and data["history"] == {"file": "", "train": []}  # a scenario: no run
    assert data["verdict"] in VERDICTS and data["first"]["tap"] == "∂adjacency"
    row = next(r for r in data["rows"] if r["name"] == "∂adjacency")
    # the PE is recomputed every semi_dynamic_interval = 2 steps: 32 of the 64 graphs per window
    assert row["nonfinite"]["jax/float64"]["nan"] == 2 * 32 * 19 * 19
    assert set(row) >= {"kind", "shape", "verdict", "born", "max_abs", "max_rel", "err64", "upstream"}


# ----------------------------------------------------------------------------------------------
# training dumps of both frameworks, through the command they print


def _dump_problem():
    problem = scenarios.build("eigh-degenerate")
    batch = {"x": problem.batch.x, "y": problem.batch.y, "valid": np.ones(len(problem.batch.x), bool)}
    info = {"step": 7, "epoch": 0, "batch": 7, "pos_weight": 1.0, "why": "non-finite loss", "error": None}
    return problem, batch, info


def _replay(path, capsys, *extra) -> tuple[int, str]:
    record = json.loads((path / "nan.json").read_text())
    command = shlex.split(record["replay"])
    assert command[:3] == ["python", "-m", "parity.localize"]
    code = localize.main([*command[3:], "--dtype", "float64", *extra])
    return code, capsys.readouterr().out


def test_torchref_dump_replays_unchanged(tmp_path, capsys):
    import torch

    import torchref.model as tmodel
    from torchref.train.loop import write_dump

    problem, batch, info = _dump_problem()
    log = RunLog(tmp_path, tensorboard=False)  # the run's log: the dump is its WORKDIR/nan/step_000007
    for step in (1, 5):
        log.write("train", step, 0, {"loss": 0.5 / step, "grad_norm": 2.0 * step, "lr": 3e-4})
    log.write("validation", 5, 0, {"auroc": 0.5})
    log.write("train", 9, 0, {"loss": 0.1, "grad_norm": 1.0, "lr": 3e-4})  # nan_policy skip went on past it
    log.close()
    model = tmodel.SeizureDetector(problem.config.model)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in problem.weights.items()})
    path = write_dump(tmp_path, problem.config, model, torch.Generator().get_state(), batch, info)
    # with remat on: the JAX runs go through jaxbrr's scan(checkpoint(layer)) path, which updates
    # RNG counters in place (parity/runs.py _in_this_trace)
    code, out = _replay(path, capsys, "--set", "model.remat=true")
    assert code == 1 and "VERDICT: MODEL at ∂adjacency" in out and "model.remat=true" in out
    assert (f"the run before this step ({tmp_path / 'metrics.jsonl'}, the last 2 train records):\n"
            "  step 1: loss 0.5, grad norm 2, lr 0.0003\n  step 5: loss 0.1, grad norm 10, lr 0.0003\n") in out


def test_jaxbrr_dump_replays_unchanged(tmp_path, capsys):
    from flax import nnx

    from jaxbrr.model import SeizureDetector
    from jaxbrr.train.nan import write_dump
    from jaxbrr.train.optim import make_nnx_optimizer
    from jaxbrr.weights import fill

    problem, batch, info = _dump_problem()
    model = SeizureDetector(problem.config.model, rngs=nnx.Rngs(0))
    fill(model, problem.weights, "the scenario's weights")
    optimizer = make_nnx_optimizer(model, problem.config.train, total_steps=10)
    path = write_dump(tmp_path, problem.config, model, optimizer, batch, info)
    code, out = _replay(path, capsys)
    assert code == 1 and "VERDICT: MODEL at ∂adjacency" in out


def test_a_dump_names_the_recordings_of_its_bad_windows(tmp_path, capsys):
    """A DATA verdict said which window, not which recording: training records each window's
    recording and start in nan.json (`windows`), and the localiser names those of the bad ones."""
    import torch

    import torchref.model as tmodel
    from torchref.train.loop import write_dump

    problem = scenarios.build("clean")
    x = problem.batch.x.copy()
    x[1, 3, 5] = math.nan
    batch = {"x": x, "y": problem.batch.y, "valid": np.ones(len(x), bool)}
    info = {"step": 2, "epoch": 0, "batch": 1, "pos_weight": 1.0, "why": "non-finite loss", "error": None,
            "windows": [["pa_s001_t000", 0.0], ["pb_s002_t001", 48.0]]}
    model = tmodel.SeizureDetector(problem.config.model)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in problem.weights.items()})
    path = write_dump(tmp_path, problem.config, model, torch.Generator().get_state(), batch, info)
    code, out = _replay(path, capsys)
    assert code == 1 and "VERDICT: DATA at input" in out
    assert "note: the bad windows come from 1: pb_s002_t001 from 48 s (the dump's nan.json `windows`)" in out


# ----------------------------------------------------------------------------------------------
# a checkpoint and a batch, through the command line


def _checkpoint_and_batch(tmp_path, x=None, y=None) -> tuple[str, str]:
    """The clean scenario's weights as a neutral .safetensors and its batch (or x, y) as an .npz."""
    from common.checkpoints import write_neutral

    problem = scenarios.build("clean")
    write_neutral(tmp_path / "w.safetensors", problem.weights, problem.config.model, "neutral")
    np.savez(tmp_path / "b.npz", x=problem.batch.x if x is None else x, y=problem.batch.y if y is None else y)
    return str(tmp_path / "w.safetensors"), str(tmp_path / "b.npz")


def test_a_mixed_precision_config_runs_each_dtype_as_the_whole_model(tmp_path, capsys):
    """A dump of a run trained with model.precision: bfloat16 keeps it in its config: the "float64"
    run autocast into bfloat16, torch refused float64 weights beside bfloat16 inputs, and that
    raised stage read as non-finite at float64: MODEL at tcn. The runs now take float32 as the
    config's precision (a note says so) and are CLEAN; the run's own precision is added to the
    default dtypes, not to a --dtype given."""
    weights, batch = _checkpoint_and_batch(tmp_path)
    code = localize.main(["--checkpoint", weights, "--batch", batch, "--set", "model.precision=bfloat16",
                          "--dtype", "float32,float64"])
    out = capsys.readouterr().out
    assert code == 0 and "VERDICT: CLEAN" in out, out
    assert ("note: the config's model.precision is bfloat16 (mixed precision, as the run trained): each run here "
            "casts the whole model to its dtype instead, under model.precision float32; --dtype float32,float64 "
            "has no bfloat16 run: add it to see what the run's precision does") in out

    # the scenario's 4 s windows against the defaults' 60 s (a file holding the model alone reads the
    # rest of its config as the defaults, its own note says): said beside the verdict
    assert "note: the batch's windows hold T = 1024 samples, the config's 15360 (data.window_seconds 60 s" in out

    problem = scenarios.build("clean", ["model.precision=bfloat16"])
    assert problem_lib.runs_whole_model(problem, ["float32", "float64"], False) == ["float32", "float64", "bfloat16"]
    assert problem.config.model.precision == "float32" and "bfloat16 was added to the dtypes" in problem.notes[-1]
    assert problem_lib.runs_whole_model(problem, ["float32"], False) == ["float32"]  # float32 now: nothing to do


def test_non_finite_weights_are_their_own_verdict_named_as_the_checkpoint_spells_them(tmp_path, capsys, monkeypatch):
    """A checkpoint saved after a NaN step holds NaN weights: WEIGHTS, decided before anything
    runs (every run would be NaN from the first stage reading them, and called MODEL), naming each
    tensor as the model and as an original checkpoint spell it, its NaN/Inf counts and shape."""
    from common.original import original_key

    problem = scenarios.build("clean")
    state = {original_key(k): torch.from_numpy(v.copy()) for k, v in problem.weights.items()}
    for key in [k for k in state if k.endswith(("_mamba_real.D", "_mamba_real.norm.weight"))]:
        state[key] *= 0.9  # off their init of 1, as training moves them (common/original.py _untrained_mamba)
    state["node_mamba.layers.0.forward_mamba_real.A_log"][1] = math.nan
    state["proj_to_electrodes.weight"][3, 0, 0] = -math.inf  # a name the original shares
    torch.save({"epoch": 6, "model_state_dict": state}, tmp_path / "best_nanw.pt")
    _, batch = _checkpoint_and_batch(tmp_path)
    monkeypatch.setattr(localize.R, "run_jax", lambda *a: pytest.fail("a model ran"))
    code = localize.main(["--checkpoint", str(tmp_path / "best_nanw.pt"), "--batch", batch, "--config", str(scenarios.TINY),
                          "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")])
    out, err = capsys.readouterr()
    assert code == 1
    assert ("the weights hold NaN/Inf in 2 tensors (proj_to_electrodes.weight, node_mamba.layers.0.fwd.A_log): "
            "WEIGHTS, born before the checkpoint was saved; not running") in err
    lines = out.splitlines()
    start = lines.index("the weights hold NaN/Inf in 2 of 91 tensors")
    assert lines[start + 1:start + 5] == [
        "VERDICT: WEIGHTS at proj_to_electrodes.weight: 0 NaN, 1 Inf in shape (152, 16, 1)",
        "  WEIGHTS   proj_to_electrodes.weight: 0 NaN, 1 Inf in shape (152, 16, 1)",
        "  WEIGHTS   node_mamba.layers.0.fwd.A_log: 1 NaN, 0 Inf in shape (4,) "
        "(the checkpoint's node_mamba.layers.0.forward_mamba_real.A_log)",
        WEIGHTS_FIX]
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["verdict"] == "WEIGHTS" and data["rows"] == [] and not (tmp_path / "r.png").exists()
    assert [(f["tap"], f["kind"]) for f in data["findings"]] == [("proj_to_electrodes.weight", "weights"),
                                                                 ("node_mamba.layers.0.fwd.A_log", "weights")]
    # saved through DataParallel: named as the file holds it, prefix and all
    torch.save({"epoch": 6, "model_state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "dp.pt")
    assert localize.main(["--checkpoint", str(tmp_path / "dp.pt"), "--batch", batch, "--config", str(scenarios.TINY)]) == 1
    assert ("(the checkpoint's module.node_mamba.layers.0.forward_mamba_real.A_log)" in capsys.readouterr().out)


def test_the_loss_weight_of_a_checkpoint_is_given_with_pos_weight_and_an_originals_default_is_said(
        tmp_path, capsys, monkeypatch):
    """The original's focal loss weighed seizure samples by sqrt((1-r)/r) (1.3868 on its balanced
    set), computed each epoch and saved nowhere: the gradient rows took 1 in silence. --pos-weight
    sets it; without it, an original checkpoint's note says what 1 leaves out."""
    from common.original import original_key

    problem = scenarios.build("clean")
    state = {original_key(k): torch.from_numpy(v.copy()) for k, v in problem.weights.items()}
    for key in [k for k in state if k.endswith(("_mamba_real.D", "_mamba_real.norm.weight"))]:
        state[key] *= 0.9  # off their init of 1, as training moves them (common/original.py _untrained_mamba)
    torch.save({"epoch": 6, "model_state_dict": state}, tmp_path / "best.pt")
    _, batch = _checkpoint_and_batch(tmp_path)
    ran = []

    def localized(problem, *args, **kwargs):  # where the runs would start
        ran.append(problem)
        raise ValueError("stopped before the runs")

    monkeypatch.setattr(localize, "localize", localized)
    given = ["--checkpoint", str(tmp_path / "best.pt"), "--batch", batch, "--config", str(scenarios.TINY)]
    assert localize.main(given) == 2
    assert ran[-1].batch.pos_weight == 1.0
    assert ("the loss weighs seizure samples by 1; the original's weighed them by sqrt((1-r)/r) for its training "
            "set's seizure share r (1.3868 on its balanced TUSZ set)") in " ".join(ran[-1].notes)
    assert localize.main([*given, "--pos-weight", "1.3868"]) == 2
    assert ran[-1].batch.pos_weight == 1.3868 and not any("weighs seizure" in n for n in ran[-1].notes)
    capsys.readouterr()
    for wrong in (["--pos-weight", "0"], ["--pos-weight", "nan"]):
        with pytest.raises(SystemExit):
            localize.main([*given, *wrong])
        assert "--pos-weight must be a positive number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        localize.main(["--scenario", "clean", "--pos-weight", "2"])
    assert "--pos-weight goes with --checkpoint" in capsys.readouterr().err


def test_windows_are_named_by_their_index_in_the_batch_given_and_what_bad_data_reaches_is_data(tmp_path, capsys):
    """--windows 2 runs one window: the pre-run line and the verdict name it window 2, as the user
    knows it; every row the NaN reaches is DATA, unstarred. NaN labels: DATA, and no second
    finding at the loss (the labels are among its inputs)."""
    clean = scenarios.build("clean").batch
    x, y = np.concatenate([clean.x, clean.x[:1]]), np.concatenate([clean.y, clean.y[:1]])  # 3 windows
    x[2, 5, 7] = math.nan
    weights, batch = _checkpoint_and_batch(tmp_path, x, y)
    code = localize.main(["--checkpoint", weights, "--batch", batch, "--windows", "2", "--dtype", "float64",
                          "--json", str(tmp_path / "r.json")])
    out, err = capsys.readouterr()
    assert code == 1 and "the batch's data is bad as given in windows 2 (NaN/Inf" in err
    assert "VERDICT: DATA at input: the batch holds 1 NaN, 0 Inf (window 2; first at window 2, channel 5, sample 7)" in out
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    reached = [(r["name"], r["verdict"], r["born"]) for r in rows if any(sum(c.values()) for c in r["nonfinite"].values())]
    assert reached[0] == ("input", "DATA", True) and len(reached) > 10
    assert {(verdict, born) for _, verdict, born in reached[1:]} == {("DATA", False)}

    y = clean.y.copy()
    y[1, 300] = math.nan
    weights, batch = _checkpoint_and_batch(tmp_path, y=y)
    code = localize.main(["--checkpoint", weights, "--batch", batch, "--dtype", "float64"])
    out = capsys.readouterr().out
    verdicts = [line for line in out.splitlines() if line.startswith(("VERDICT", "  "))]
    assert code == 1 and verdicts[:2] == [
        "VERDICT: DATA at input: its labels hold 1 NaN, 0 Inf (labels window 1; first at window 1, sample 300)",
        "  DATA      input: its labels hold 1 NaN, 0 Inf (labels window 1; first at window 1, sample 300)"]
    assert not any(line.startswith(("  MODEL", "  FRAMEWORK", "  PRECISION")) for line in verdicts)


# ----------------------------------------------------------------------------------------------
# bad input: exit 2, the file and the fix named


def test_bad_inputs_name_the_file_and_the_fix(tmp_path, capsys):
    np.savez(tmp_path / "nox.npz", y=np.zeros((1, 4)))
    weights = tmp_path / "w.pt"
    import torch

    torch.save({}, weights)
    assert localize.main(["--checkpoint", str(weights), "--batch", str(tmp_path / "nox.npz")]) == 2
    assert "pass --config" in capsys.readouterr().err
    assert localize.main(["--dump", str(tmp_path)]) == 2
    assert "no nan.json" in capsys.readouterr().err
    # a dump cut short: its nan.json, its batch; a dump a killed run left as .tmp
    cut = tmp_path / "nan" / "step_000009"
    cut.mkdir(parents=True)
    (cut / "nan.json").write_text('{"step": 9, "config": {"na')
    assert localize.main(["--dump", str(cut)]) == 2
    assert f"{cut / 'nan.json'}: not whole JSON" in capsys.readouterr().err
    cut.rename(cut.with_name("step_000009.tmp"))
    assert localize.main(["--dump", str(cut)]) == 2
    assert f"{cut}.tmp is one a run was writing when it stopped" in capsys.readouterr().err
    np.savez(tmp_path / "whole.npz", x=np.zeros((1, 19, 64), np.float32))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "whole.npz").read_bytes()[:200])
    with pytest.raises(problem_lib.LocalizeError, match=r"cut.npz: not a readable .npz \(BadZipFile: .*\): a copy "
                                                        "that stopped short"):
        problem_lib.read_batch(tmp_path / "cut.npz")
    with pytest.raises(SystemExit):  # a dump holds its run's config
        localize.main(["--dump", str(cut), "--config", "configs/tiny.yaml"])
    assert "--config goes with --checkpoint" in capsys.readouterr().err
    with pytest.raises(problem_lib.LocalizeError, match=r"none of x, input, windows.*save it again under those names, e.g. np.savez\(path, x=x, y=y\)"):
        problem_lib.read_batch(tmp_path / "nox.npz")
    # the batch's shape against the config's, before any model is built
    config = load_config("configs/tiny.yaml")
    stride = config.model.tcn.stride_down
    short = problem_lib.Batch(np.zeros((1, config.model.n_chans, 4 * stride + 3), np.float32))
    with pytest.raises(problem_lib.LocalizeError, match=rf"b.npz: the batch's length T = {4 * stride + 3} is not a "
                                                        rf"multiple of model.tcn.stride_down = {stride}: crop or pad "
                                                        rf"x and y to {4 * stride} or {5 * stride} samples"):
        problem_lib.check_batch_shape(config, short, "b.npz")
    with pytest.raises(problem_lib.LocalizeError, match=r"b.npz: the batch has 2 channels, the model \(ref19 montage\) "
                                                        r"reads 19: Fp1, F3, C3, P3, \.\.\., O2, in that order; build the "
                                                        r"batch in that montage, or, for weights whose montage is another, "
                                                        r"pass --config the config these weights were trained with"):
        problem_lib.check_batch_shape(config, problem_lib.Batch(np.zeros((1, 2, 4 * stride), np.float32)), "b.npz")


def test_a_batch_of_another_window_length_than_the_configs_is_noted():
    config = load_config("configs/tiny.yaml")
    window = round(config.data.window_seconds * config.preprocess.sfreq)
    batch = problem_lib.Batch(np.zeros((1, config.model.n_chans, window), np.float32))
    assert problem_lib.window_length_note(config, batch) is None
    half = problem_lib.Batch(batch.x[:, :, :window // 2])
    assert problem_lib.window_length_note(config, half) == (
        f"the batch's windows hold T = {window // 2} samples, the config's {window} (data.window_seconds "
        f"{config.data.window_seconds:g} s at preprocess.sfreq {config.preprocess.sfreq} Hz): the runs see windows "
        "of another length than training did")


def test_a_batch_is_read_as_the_original_and_its_users_save_one(tmp_path):
    """The original's debug dump (torch.save of {windows, labels, global_step} at
    debug/bad_batch_<step>.pt) and window cache (np.savez windows, labels) are read as they are; a
    .npy or .pth too, and a DataLoader batch saved as it came (a list or tuple). What is not used, or cast, is said; a (B, T, C) x or a mask of the wrong
    shape is refused, naming the fix, before any model is built."""
    import torch

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 3, 16)), (rng.random((2, 16)) > 0.5)
    torch.save({"windows": torch.tensor(x, dtype=torch.float32), "labels": torch.tensor(y, dtype=torch.float32),
                "global_step": 7}, tmp_path / "bad_batch_000007.pt")
    np.savez(tmp_path / "rec_windows.npz", windows=x.astype(np.float32), labels=y.astype(np.float32))
    np.save(tmp_path / "x.npy", x)  # float64
    torch.save(torch.tensor(x, dtype=torch.float32), tmp_path / "batch.pth")
    for name in ("bad_batch_000007.pt", "rec_windows.npz", "x.npy", "batch.pth"):
        notes = []
        batch = problem_lib.read_batch(tmp_path / name, notes)
        np.testing.assert_array_equal(batch.x, x.astype(np.float32))
        assert (batch.y is not None) == (name in ("bad_batch_000007.pt", "rec_windows.npz"))
        if batch.y is not None:
            np.testing.assert_array_equal(batch.y, y.astype(np.float32))
        assert any("not used: global_step" in n for n in notes) == (name == "bad_batch_000007.pt")
        assert any("is float64, read as float32" in n for n in notes) == (name == "x.npy")

    # a DataLoader batch saved as it came: [windows, labels] (the original's), or with the mask too
    torch.save([torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)], tmp_path / "pair.pt")
    torch.save((torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32),
                torch.tensor([True, False])), tmp_path / "triple.pt")
    for name, valid in (("pair.pt", None), ("triple.pt", [True, False])):
        notes = []
        batch = problem_lib.read_batch(tmp_path / name, notes)
        np.testing.assert_array_equal(batch.x, x.astype(np.float32))
        np.testing.assert_array_equal(batch.y, y.astype(np.float32))
        assert (batch.valid is None if valid is None else batch.valid.tolist() == valid)
        assert notes == [f"{tmp_path / name}: a {'list' if valid is None else 'tuple'} of {2 if valid is None else 3} "
                         f"tensors, read as ({'x, y' if valid is None else 'x, y, valid'}) in that order"]
    torch.save((torch.tensor(y, dtype=torch.float32), torch.tensor(x, dtype=torch.float32)), tmp_path / "swapped.pt")
    with pytest.raises(problem_lib.LocalizeError, match=r"x has shape \(2, 16\), needs \(B, C, T\)"):
        problem_lib.read_batch(tmp_path / "swapped.pt")
    torch.save((torch.tensor(x), "labels"), tmp_path / "mixed.pt")
    with pytest.raises(problem_lib.LocalizeError, match=r"holds a tuple; expected a tensor, a dict"):
        problem_lib.read_batch(tmp_path / "mixed.pt")

    np.savez(tmp_path / "btc.npz", x=np.zeros((2, 16, 3), np.float32))
    with pytest.raises(problem_lib.LocalizeError, match=r"looks like \(B, T, C\).*np.transpose\(x, \(0, 2, 1\)\)"):
        problem_lib.read_batch(tmp_path / "btc.npz")
    np.savez(tmp_path / "mask.npz", x=np.zeros((2, 3, 16), np.float32), valid=np.ones(3, bool))
    with pytest.raises(problem_lib.LocalizeError, match=r"valid has shape \(3,\), needs \(B,\) = \(2,\)"):
        problem_lib.read_batch(tmp_path / "mask.npz")
    (tmp_path / "batch.csv").write_text("1,2")
    with pytest.raises(problem_lib.LocalizeError, match="not a batch file this reads"):
        problem_lib.read_batch(tmp_path / "batch.csv")
    # a batch as a DataLoader's dict names it, and labels per channel
    np.savez(tmp_path / "loader.npz", window=x.astype(np.float32), label=y.astype(np.float32))
    np.testing.assert_array_equal(problem_lib.read_batch(tmp_path / "loader.npz").y, y.astype(np.float32))
    np.savez(tmp_path / "per_channel.npz", x=x.astype(np.float32), labels=np.zeros(x.shape, np.float32))
    with pytest.raises(problem_lib.LocalizeError, match=r"labels has shape \(2, 3, 16\), one label per channel; "
                                                        r".*save labels.max\(axis=1\)"):
        problem_lib.read_batch(tmp_path / "per_channel.npz")


def test_a_half_precision_batch_is_read_as_float32_and_said_so(tmp_path):
    """A bfloat16 batch (the original under autocast saves one) got no "read as float32" note where a
    float16 one did: common/pt.py widened it on reading. Both are said alike now, the values exact."""
    import torch

    x = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float16, torch.bfloat16):
        path = tmp_path / f"{str(dtype).removeprefix('torch.')}.pt"
        torch.save({"windows": x.to(dtype)}, path)
        notes = []
        batch = problem_lib.read_batch(path, notes)
        assert notes == [f"{path}: windows is {str(dtype).removeprefix('torch.')}, read as float32 (the models' input; "
                         "the float64 run casts that up)"]
        assert batch.x.dtype == np.float32
        np.testing.assert_array_equal(batch.x, x.to(dtype).float().numpy())


def test_weights_that_do_not_fit_the_config_are_bad_input_naming_them_and_the_fix(tmp_path, capsys, monkeypatch):
    """Weights trained under another config (a bare state dict with the wrong --config, a
    .safetensors whose names are not the model's, a --set that resizes the model) are refused before
    any model is built, exit 2, with a few of the tensors, their count and the fix; torch's
    load_state_dict raised a RuntimeError there, exit 1, as if it were a finding."""
    import torchref.model as tmodel
    from common.checkpoints import write_neutral

    monkeypatch.setattr(localize.R, "run_jax", lambda *a: pytest.fail("a model ran"))
    clean = scenarios.build("clean")
    weights, batch = _checkpoint_and_batch(tmp_path)
    three_layers = with_overrides(clean.config, ["model.node_mamba.n_layers=3"]).model
    torch.save(tmodel.SeizureDetector(three_layers, 0).state_dict(), tmp_path / "three.pt")
    code = localize.main(["--checkpoint", str(tmp_path / "three.pt"), "--config", str(scenarios.TINY),
                          "--batch", batch])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0] == (f"error: checkpoint {tmp_path / 'three.pt'}, batch {batch}: the weights do not fit the model "
                        "its config describes (20 mismatches):")  # layer 2: 2 directions x 8, proj and norm x 2
    assert lines[1] == "  node_mamba.layers.2.bwd.A_log: in the weights, but the model has no such parameter"
    assert lines[6] == "  … and 15 more" and lines[7] == problem_lib.CONFIG_FIX

    arrays = dict(clean.weights)
    arrays["gnn.norms.one.weight"] = arrays.pop("gnn.norms.1.weight")
    write_neutral(tmp_path / "renamed.safetensors", arrays, clean.config.model, "neutral")
    assert localize.main(["--checkpoint", str(tmp_path / "renamed.safetensors"), "--batch", batch]) == 2
    assert capsys.readouterr().err.splitlines()[1:3] == [
        "  gnn.norms.1.weight: missing from the weights",
        "  gnn.norms.one.weight: in the weights, but the model has no such parameter"]

    # the weights fit their config; the --set does not: the fix names the --set
    assert localize.main(["--checkpoint", weights, "--batch", batch, "--set", "model.node_mamba.n_layers=3"]) == 2
    err = capsys.readouterr().err
    assert "with --set model.node_mamba.n_layers=3: the weights do not fit" in err
    assert "  node_mamba.layers.2.bwd.A_log: missing from the weights" in err
    assert err.strip().endswith("the --set changes the model's shape, and trained weights keep the shape they were "
                                "trained with: drop the --set of the fields that size the model (layers, widths, "
                                "channels)")


def test_report_paths_are_checked_before_any_run_and_a_stray_batch_is_refused(tmp_path, capsys, monkeypatch):
    """--json/--plot into a folder that cannot be made: exit 2 before the runs (they were written
    after them: minutes to hours lost, then a traceback). --batch beside --dump or --scenario was
    ignored in silence, yet named in a shape error as if it were read."""
    monkeypatch.setattr(localize.R, "run_jax", lambda *a: pytest.fail("a model ran"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    weights, batch = _checkpoint_and_batch(tmp_path)
    for option in ("--json", "--plot"):
        code = localize.main(["--checkpoint", weights, "--batch", batch, option, str(blocker / "report" / "r.out")])
        assert code == 2
        assert capsys.readouterr().err == (f"error: {option} {blocker / 'report'}: cannot write there ({blocker} is a "
                                           f"file, not a folder); set {option} to a folder you can write to\n")
    with pytest.raises(SystemExit) as exited:
        localize.main(["--scenario", "clean", "--batch", batch])
    assert exited.value.code == 2
    assert "--batch goes with --checkpoint: a --dump holds its own batch (batch.npz)" in capsys.readouterr().err


def test_a_scenario_is_built_under_its_set_so_a_resized_model_gets_its_weights(monkeypatch):
    """--scenario with a --set that resizes the model: the --set joins the scenario's own overrides
    before its weights are drawn, so the model has weights of its size (applied afterwards, the
    scenario's 2 layers of weights met a 3-layer model in load_state_dict)."""
    import torchref.model as tmodel

    problem = scenarios.build("exp-mask", ["model.node_mamba.n_layers=3"])
    assert problem.config.model.node_mamba.n_layers == 3
    assert problem.config.model.ssm.scan == "chunked_mask_after_exp"  # the scenario's own override stays
    assert np.all(problem.weights["node_mamba.layers.0.fwd.dt_bias"] == 5.0)  # and so does its planted change
    tmodel.SeizureDetector(problem.config.model).load_state_dict(
        {k: torch.from_numpy(v) for k, v in problem.weights.items()})  # strict: every name and shape

    class Ran(Exception):
        pass

    def run(problem, *args, **kwargs):
        run.problem = problem
        raise Ran

    monkeypatch.setattr(localize, "localize", run)
    with pytest.raises(Ran):
        localize.main(["--scenario", "clean", "--set", "model.node_mamba.n_layers=3"])
    assert run.problem.source == "scenario clean with --set model.node_mamba.n_layers=3"
    assert "node_mamba.layers.2.fwd.A_log" in run.problem.weights


def test_labels_outside_zero_one_are_bad_input_naming_the_window_and_value(tmp_path, capsys):
    """A 2 (a seizure class) or a -1 (an ignore label) gave CLEAN: the loss is finite there, and
    meaningless. Windows the mask leaves out are not read by the loss, so their labels may be anything."""
    x = np.zeros((3, 2, 16), np.float32)
    y = np.zeros((3, 16), np.float32)
    y[1, 7], y[2, 0], y[2, 3] = 2.0, -1.0, math.nan  # NaN: DATA in the report, not refused here
    np.savez(tmp_path / "b.npz", x=x, y=y)
    with pytest.raises(problem_lib.LocalizeError) as raised:
        problem_lib.read_batch(tmp_path / "b.npz")
    assert str(raised.value) == (
        f"{tmp_path / 'b.npz'}: y holds 2 at window 1, sample 7 (2 labels outside [0, 1] in windows 1, 2; values "
        "-1, 2); the loss's labels are 0 (background) or 1 (seizure): save (y > 0) where they are seizure classes, "
        "and leave a window out with valid = False rather than labelling it -1")
    np.savez(tmp_path / "masked.npz", x=x, y=y, valid=np.array([True, False, False]))
    assert problem_lib.read_batch(tmp_path / "masked.npz").y[1, 7] == 2.0
    np.savez(tmp_path / "one.npz", x=x, y=y, valid=np.array([True, False, True]))
    with pytest.raises(problem_lib.LocalizeError, match=r"y holds -1 at window 2, sample 0 \(1 labels outside "
                                                        r"\[0, 1\] in window 2; values -1\)"):
        problem_lib.read_batch(tmp_path / "one.npz")
    clean = scenarios.build("clean").batch
    labels = clean.y.copy()
    labels[1, 300] = 2.0
    weights, batch = _checkpoint_and_batch(tmp_path, y=labels)
    assert localize.main(["--checkpoint", weights, "--batch", batch]) == 2
    assert "y holds 2 at window 1, sample 300" in capsys.readouterr().err


def test_complex_arrays_are_bad_input_naming_the_array(tmp_path):
    """Cast to float32 they kept their real part, with only numpy's ComplexWarning."""
    x, y = np.ones((2, 3, 16), np.float32), np.zeros((2, 16), np.float32)
    for name, arrays in (("x", {"x": x.astype(np.complex64), "y": y}), ("labels", {"x": x, "labels": y + 0j}),
                         ("valid", {"x": x, "y": y, "valid": np.ones(2, np.complex128)})):
        np.savez(tmp_path / "b.npz", **arrays)
        with pytest.raises(problem_lib.LocalizeError, match=rf"b.npz: {name} holds complex values \(complex"):
            problem_lib.read_batch(tmp_path / "b.npz")


def test_a_batch_with_no_valid_window_says_the_backward_compared_nothing(tmp_path):
    """valid False for every window: the loss and every gradient are exactly 0 on both sides, so the
    backward rows agree having compared nothing. The report runs (the forward rows still compare
    every window) and says so, in its text and its JSON; a mask keeping any window does not. The
    batch line names the windows a mask leaves out (a NaN there reaches no loss)."""
    runs = _runs()
    rows = tap_rows(runs, STAGES, MODULES, extreme=10.0)
    x = runs[0].taps["input"]
    for valid, noted in ((np.zeros(2, bool), True), (np.array([False, True]), False), (None, False)):
        problem = problem_lib.Problem(None, {}, problem_lib.Batch(x, valid=valid), "b.npz", notes=["read"])
        report = report_lib.Report(problem, ["float64", "float32"], rows, find(rows), [], {}, {}, 10.0)
        assert report.verdict == "CLEAN"
        assert report.notes == ([report_lib.NO_VALID_WINDOW] if noted else []) + ["read"]
        text = report_lib.format_report(report)
        assert (f"note: {report_lib.NO_VALID_WINDOW}" in text) == noted
        batch_line = next(line for line in text.splitlines() if line.startswith("batch: "))
        left_out = {True: "; the loss reads 0 of 2 windows (the mask leaves out windows 0, 1)",
                    False: "; the loss reads 1 of 2 windows (the mask leaves out window 0)"}
        assert (left_out[noted] + "; eval mode" in batch_line) if valid is not None else "the loss reads" not in batch_line
        report_lib.write_json(report, tmp_path / "r.json")
        data = json.loads((tmp_path / "r.json").read_text())
        assert data["notes"] == report.notes
        assert data["batch"]["valid_windows"] == (2 if valid is None else int(valid.sum()))


def test_the_data_bound_is_the_problems_clip(monkeypatch):
    """A value beyond the config's preprocess.clip_sigma did not come through its pipeline."""
    clean = scenarios.build("clean")
    assert localize.extreme_sigma(clean) == clean.config.preprocess.clip_sigma
    unclipped = dataclasses.replace(clean, config=with_overrides(clean.config, ["preprocess.clip_sigma=null"]))
    assert localize.extreme_sigma(unclipped) == localize.EXTREME_SIGMA
    # a clipped sample as the float32 cache holds it is not beyond the clip: 7.3 rounds up there
    odd = dataclasses.replace(clean, config=with_overrides(clean.config, ["preprocess.clip_sigma=7.3"]))
    held = float(np.clip(np.float32(100.0), -np.float32(7.3), np.float32(7.3)))
    assert held > 7.3 and not held > localize.extreme_sigma(odd)


def test_out_of_memory_is_one_line_naming_the_batch_and_the_fix(monkeypatch, capsys):
    """A full-size model on long windows can exceed a CPU's memory (the original's 4 x 60 s debug
    batch needs a 30 GB buffer without remat): the answer is the batch's shape and what to change,
    not XLA's traceback. Any other runtime error still propagates."""
    def exhausted(*args, **kwargs):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 30172993496 bytes.\nmore")

    monkeypatch.setattr(localize, "localize", exhausted)
    assert localize.main(["--scenario", "clean"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: out of memory running both models on a ") and "30172993496 bytes" in err
    assert "--set model.remat=true" in err and "fewer windows (--windows I,J)" in err and "more" not in err
    assert localize.main(["--scenario", "clean", "--set", "model.remat=true"]) == 2
    assert "model.remat" not in capsys.readouterr().err  # already on: only the other fix
    assert localize.main(["--scenario", "outlier"]) == 2  # the windows to pick, when the data says
    assert "(--windows I,J; the data of windows 0 is bad as given)" in capsys.readouterr().err

    monkeypatch.setattr(localize, "localize", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        localize.main(["--scenario", "clean"])

    def reading(*args, **kwargs):  # before any batch is read: the error itself, not a NameError
        raise RuntimeError(reading.message)

    monkeypatch.setattr(scenarios, "build", reading)
    reading.message = "DefaultCPUAllocator: not enough memory: you tried to allocate 8 bytes"
    assert localize.main(["--scenario", "clean"]) == 2
    assert "out of memory reading the checkpoint or the batch (DefaultCPUAllocator" in capsys.readouterr().err
    reading.message = "an unreadable file"
    with pytest.raises(RuntimeError, match="an unreadable file"):
        localize.main(["--scenario", "clean"])


def test_windows_selects_rows_of_the_batch_alike_and_names_a_bad_index():
    x = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)
    batch = problem_lib.Batch(x, y=np.arange(12, dtype=np.float32).reshape(4, 3), valid=np.array([1, 0, 1, 1], bool),
                              pos_weight=2.5)
    picked, index = problem_lib.select_windows(batch, "3,1", "batch.pt")
    assert index == [3, 1]
    np.testing.assert_array_equal(picked.x, x[[3, 1]])
    np.testing.assert_array_equal(picked.y, batch.y[[3, 1]])
    assert picked.valid.tolist() == [True, False] and picked.pos_weight == 2.5
    assert problem_lib.select_windows(problem_lib.Batch(x), "2", "b")[0].y is None
    with pytest.raises(problem_lib.LocalizeError, match=r"--windows 4: batch.pt holds windows 0..3"):
        problem_lib.select_windows(batch, "4", "batch.pt")
    with pytest.raises(problem_lib.LocalizeError, match="comma-separated"):
        problem_lib.select_windows(batch, "two", "batch.pt")


def test_float32_precision_sets_both_frameworks_for_the_block_and_restores_them(monkeypatch):
    """--tf32 on a GPU: JAX's default matmul precision, torch's two TF32 switches and Triton's
    float32 dots (mamba_ssm's kernels) inside the block, each previous setting after it (an
    exception included)."""
    monkeypatch.setenv("TRITON_F32_DEFAULT", "as before")  # and restored after the test

    def settings():
        return (jax.config.jax_default_matmul_precision, torch.backends.cuda.matmul.allow_tf32,
                torch.backends.cudnn.allow_tf32, os.environ.get("TRITON_F32_DEFAULT"))

    before = settings()
    for torch_tf32, jax_precision, triton in ((False, "highest", "ieee"), (True, "tensorfloat32", None)):
        with pytest.raises(KeyError), float32_precision(torch_tf32, jax_precision):
            assert settings() == (jax_precision, torch_tf32, torch_tf32, triton)
            raise KeyError("leaves the block")
        assert settings() == before
    # a report made inside the block (as localize() makes it) prints the settings of its runs
    with float32_precision(True, "tensorfloat32"):
        report = report_lib.Report(None, [], [], [], [], {}, {}, 1.0, device="gpu")
    assert report.precision == {"jax_default_matmul_precision": "tensorfloat32",
                                "torch.backends.cuda.matmul.allow_tf32": "True",
                                "torch.backends.cudnn.allow_tf32": "True",
                                "TRITON_F32_DEFAULT": "unset (Triton's default: TF32)"}


def test_the_runs_carry_nans_even_with_jax_debug_nans_left_on(monkeypatch):
    """JAX_DEBUG_NANS=1, left exported from a training run, stopped jax's run at its first NaN
    (a FloatingPointError traceback): the localiser's runs must carry NaNs to the end."""
    seen = []
    monkeypatch.setattr(localize, "_localize", lambda *args: seen.append(jax.config.jax_debug_nans))
    with jax.debug_nans(True):
        localize.localize(scenarios.build("clean"), ["float32"])
        assert jax.config.jax_debug_nans
    assert seen == [False]


def test_a_long_step_says_it_still_runs(capsys):
    """A full-size run was 12 minutes without a line between two steps."""
    import time

    say = localize.StatusLines(every=0.2)
    with say.heartbeat():
        say("float64: jax forward + backward")
        deadline = time.monotonic() + 30  # the beat is due after 0.2 s; a loaded machine may be slow
        while "still" not in capsys.readouterr().err and time.monotonic() < deadline:
            time.sleep(0.05)
    assert time.monotonic() < deadline, "no '... still:' line in 30 s"
