"""Where is a NaN born, and whose fault is it: the model's math, a framework, precision or the data.

    python -m parity.localize --dump runs/default/nan/step_000123
    python -m parity.localize --checkpoint CKPT --batch BATCH.npz [--config CFG]
    python -m parity.localize --scenario eigh-degenerate [--json report.json] [--plot report.png]
    python -m parity.localize --dump DIR --set model.stability.pe_gradient=safe   # does the fix hold?
    python -m parity.localize --scenario eigh-degenerate --device gpu             # cuSOLVER, cuDNN, Triton

Loads the same weights into torchref and jaxbrr (parity/convert.py), runs the same batch through
both, stage by stage (ModelConfig.stage_inputs), forward and backward (loss, the cotangent of every
tap, every parameter's gradient), at every --dtype (default float32,float64), and prints one row
per tap: NaN/Inf counts of each run, the torch↔jax difference, the float64 error of each side,
and the verdict of DESIGN.md §5 (parity/verdicts.py). For the first problem it then names the
operation on each side and *replays* the stage: torch's inputs into the JAX stage and JAX's into
torch's, which tells a local difference from one inherited from upstream. It also lists the
modules whose parameter gradients are non-finite, and, for the eigh Laplacian PE, the graphs
(batch, step) whose spectrum has repeated eigenvalues.

Before anything runs it checks every weight the model loads (parameters and buffers): one holding
NaN/Inf is the verdict WEIGHTS (each tensor named, also as an original checkpoint spells it), the
NaN born before the checkpoint was saved, and nothing runs.

Sources (--windows I,J keeps only those windows of the batch; the report names them by their
index in the batch as given)
  --dump DIR            a training NaN dump (jaxbrr: checkpoint/, torchref: model.pt; batch.npz, nan.json)
  --checkpoint CKPT     a neutral weights file (.safetensors), a torchref state dict or training
                        checkpoint (.pt), a brain-go-brr v2 checkpoint (.pt: read with its own
                        config), or a training checkpoint directory; with --batch BATCH.npz
                        holding x (B, C, T) float32 and optionally y (B, T) 0/1 and valid (B,)
  --scenario NAME       a planted problem from parity/scenarios.py, with its expected verdict
                        (--set applies before its weights and batch are made: scenarios.build)

--device gpu runs both frameworks on the first GPU (torch on CUDA, JAX on its GPU backend) and
judges differences by the GPU rows of parity/tolerances.py, which hold with TF32 off: so `--tf32
off` (the default) runs float32 matmuls and convolutions in full float32 on both sides (torch's
allow_tf32 off, JAX's default matmul precision "highest"); `--tf32 on` runs both in TF32 (how a
`train.tf32: true` run computed), and the settings in force are printed. The default device is
the CPU, the tight tier; --tf32 changes nothing there.
The runs are in eval mode (dropout off). Without labels the loss uses all-zero labels, and says so.
Exit status: 0 when the verdict is CLEAN (or, for a scenario, the expected one), 1 otherwise,
2 for bad input (parity/problem.py: weights that do not fit the config's model, labels outside
[0, 1], complex arrays, shapes).

JSON report (--json), schema "jaxbrr.localize/1":
  schema, source, batch {shape, sha1, labels, valid_windows (how many the loss reads; 0: the backward
  rows compared nothing, and a note says so)}, dtypes, versions, extreme_sigma,
  verdict (one of VERDICTS), first (the first finding or null), findings [{verdict, tap, kind,
  side, detail, op {framework: op}}] (WEIGHTS: one per tensor, tap its name, kind "weights", and
  rows, replay empty), rows [TapRow.to_dict(): name, kind, shape, verdict, born,
  side, detail, op, nonfinite {"torch/float32": {nan, inf}}, max_abs/max_rel/within_tolerance
  {dtype: ...}, err64 {framework: RMSE}, drifted, rounding, amplified, dropped_by (the side whose
  finite gradient dropped a NaN, under a loss non-finite on both), upstream], replay [{tap, dtype, direction,
  max_abs, max_rel, nonfinite, passed}], nonfinite_parameters {module: {run: count}},
  eigh {computed, tau, rounding_of, graphs, graphs_with_repeats, graphs_with_repeats_in_pe, k, from,
  repeated [{batch, step, eigenvalue, multiplicity, in_pe}]}, errors,
  expected (scenarios: {verdict, tap}), notes [what was read, cast, or could not be compared],
  growth {median, diverged, threshold, tensors {name: {ratio, rms, rms_init}}} (parity/growth.py;
  null when the weights are non-finite), history {file, train [a dump's run's last train records
  of metrics.jsonl before its step]}.
Non-finite floats are written as the strings "nan"/"inf".
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import torch

import torchref.model as tmodel
from common.checkpoints import CONFIG_FIX
from common.config import (
    Config,
    ConfigError,
    config_to_dict,
    with_overrides,
)
from common.files import check_writable_folder
from common.graph import eigenvalue_split, normalized_laplacian
from common.original_config import ORIGINAL_POS_WEIGHT
from common.out_of_memory import out_of_memory_line
from common.progress import LOG_LINE_SECONDS
from common.pt import torch_compatible
from common.shown import shown_inline
from common.train.compat import config_differences, difference_lines
from jaxbrr.model import SeizureDetector
from jaxbrr.precision import matmul_precision
from parity import runs as R
from parity.compare import compare_arrays
from parity.growth import weight_growth
from parity.problem import (
    LocalizeError,
    Problem,
    check_batch_shape,
    check_weights,
    load_checkpoint,
    load_dump,
    read_batch,
    runs_whole_model,
    select_windows,
    suspect_windows,
    window_length_note,
)
from parity.report import Report, float32_precision, format_report, plot_report, write_json
from parity.runs import Run
from parity.tolerances import tolerance, unit_roundoff
from parity.twins import make_twin
from parity.verdicts import (
    BACKWARD,
    PARAMETERS,
    PRECISIONS,
    Finding,
    TapRow,
    agrees,
    classify,
    dtypes_of,
    find,
    group_grads,
    json_float,
    run_key,
    tap_rows,
    tolerance_dtype,
    weight_findings,
)

# |x| of a z-scored batch beyond preprocess.clip_sigma σ did not come through the problem's own
# pipeline (DESIGN.md §3). A config that does not clip gives no such bound: beyond this many σ is
# then called an outlier (the default clip, and --extreme's value when nothing else says).
EXTREME_SIGMA = 10.0


def extreme_sigma(problem: Problem) -> float:
    """The DATA bound for `problem`: its config's preprocess.clip_sigma as the float32 cache holds a
    clipped sample (7.3 is 7.3000002 there), else EXTREME_SIGMA."""
    clip = problem.config.preprocess.clip_sigma
    return EXTREME_SIGMA if clip is None else float(np.float32(clip))


def precision(dtype: str):
    """float64 needs jax_enable_x64; every other dtype runs without it."""
    return jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()


DEVICES = ("cpu", "gpu")
# what each problem is run in: float64 arbitrates float32 (parity/tolerances.py arbitrate)
DEFAULT_DTYPES = ("float32", "float64")


def on_device(device: str):
    """JAX's default device for the block: the first of the backend `device` names."""
    if device not in DEVICES:
        raise ValueError(f"--device {device}: choose from {', '.join(DEVICES)}")
    try:
        return jax.default_device(jax.devices(device)[0])
    except RuntimeError as error:
        raise ValueError(f"--device {device}: JAX has no {device} backend here ({error})") from None


def torch_device(device: str) -> torch.device:
    if device == "gpu" and not torch.cuda.is_available():
        raise ValueError("--device gpu: torch sees no CUDA GPU (torch.cuda.is_available() is False)")
    return torch.device("cuda" if device == "gpu" else "cpu")


# ----------------------------------------------------------------------------------------------
# running


def _models(problem: Problem, dtype: str, device: str = "cpu"):
    torch_model = tmodel.SeizureDetector(problem.config.model)
    torch_model.load_state_dict({k: torch.from_numpy(torch_compatible(v)) for k, v in problem.weights.items()})
    torch_model, jax_model = make_twin(
        torch_model, lambda rngs: SeizureDetector(problem.config.model, rngs=rngs), dtype)
    if problem.prepare is not None:
        problem.prepare(torch_model, jax_model)
    return torch_model.to(torch_device(device)), jax_model


def localize(problem: Problem, dtypes: list[str] = DEFAULT_DTYPES, extreme: float | None = None,
             progress=None, device: str = "cpu") -> Report:
    """Run both frameworks at every dtype on `device`, classify every row, then name ops and replay.
    extreme: the DATA bound in σ (None: extreme_sigma(problem))."""
    extreme = extreme_sigma(problem) if extreme is None else extreme
    # off for the runs: they must carry a NaN to the end for the rows to say where it was born
    # (JAX_DEBUG_NANS=1, left set from a training run, stopped jax's run at the first one)
    with on_device(device), jax.debug_nans(False):
        return _localize(problem, list(dtypes), extreme, progress, device)


def _localize(problem: Problem, dtypes: list[str], extreme: float, progress, device: str) -> Report:
    say = progress or (lambda text: None)
    unknown = [d for d in dtypes if d not in PRECISIONS]
    if unknown:
        raise ValueError(f"--dtype {','.join(unknown)}: choose from {', '.join(PRECISIONS)}")
    suspects = suspect_windows(problem, extreme)
    if suspects and problem.sources is not None:
        problem.notes.append("the bad windows come from " + shown_inline(
            [f"{i}: {problem.sources[i]}" for i in suspects]) + " (the dump's nan.json `windows`)")
    broken = weight_findings(problem.weights, problem.checkpoint_names)
    if broken:  # every run would carry their NaN from the first stage that reads them: nothing to localize
        say(f"the weights hold NaN/Inf in {len(broken)} tensor{'s' * (len(broken) > 1)} "
            f"({shown_inline([f.row for f in broken])}): WEIGHTS, born before the checkpoint was saved; not running"
            + (f" (the batch's data is bad as given too, in windows {shown_inline(suspects)})"
               if suspects else ""))
        return Report(problem, dtypes, [], broken, [], {"computed": False, "why": "not run: the weights are non-finite"},
                      {}, extreme, device)
    growth = weight_growth(problem.config, problem.weights)
    if growth.diverged:
        say(f"the weights are {growth.median:.3g}x their scale at init: the run diverged before these weights were saved")
    if suspects:  # in seconds, before the runs (minutes at full size) say so
        say(f"the batch's data is bad as given in windows {shown_inline(suspects)} (NaN/Inf, or beyond "
            f"{extreme:g} σ): DATA whatever the runs find")
    runs: list[Run] = []
    models = {}
    train_cfg = problem.config.train
    for dtype in dtypes:
        with precision(dtype):
            say(f"{dtype}: building both models")
            torch_model, jax_model = _models(problem, dtype, device)
            models[dtype] = (torch_model, jax_model)
            say(f"{dtype}: jax forward + backward")
            jax_run = R.run_jax(jax_model, problem.batch, train_cfg)
            say(f"{dtype}: torch forward + backward")
            shapes = {name: tap.shape for name, tap in jax_run.taps.items()}  # for a stage that raises
            runs += [R.run_torch(torch_model, problem.batch, train_cfg, shapes), jax_run]
    stage_inputs = problem.config.model.stage_inputs
    eigh = eigh_report(problem.config, runs, problem.windows)
    ambiguous_pe = pe_not_unique(eigh)
    rows = tap_rows(runs, stage_inputs, R.parameter_stage(problem.config.model), extreme, device, problem.batch.x,
                    problem.batch.y, ambiguous_pe, problem.windows)
    by_key = {run_key(r): r for r in runs}
    replay, replayed, agreed = [], set(), set()
    while True:  # a float32 drift whose replay agrees both ways is amplified rounding: classify again
        findings = find(rows)
        todo = [f for f in findings if f.verdict != "DATA" and f.kind in ("forward", "backward") and f.row not in replayed]
        if not todo:
            break
        known = len(agreed)
        for finding in todo:
            say(f"naming the op and replaying {finding.row}")
            row = next(r for r in rows if r.name == finding.row)
            _name_ops(row, finding, models, by_key, problem)
            entries = _replay(row, models, by_key, problem, _wrong_at(row, dtypes_of(runs)), device)
            replay += entries
            replayed.add(row.name)
            if finding.verdict == "DRIFT" and entries and all(e["passed"] and e["dtype"] == "float32" for e in entries):
                agreed.add(row.name)
        if len(agreed) == known:
            break
        classify(rows, dtypes_of(runs), extreme, frozenset(agreed), ambiguous_pe)
    # the summation bound first: one float64 pass settles a long sum's rounding, where the kink
    # replay would run the TCN in float64 and float32 and a float64 step more, and report a
    # replay that differs for a row that is rounding all the same
    summed = _summation_bound(rows, models, by_key, problem, device, say)
    if summed:
        classify(rows, dtypes_of(runs), extreme, frozenset(agreed), ambiguous_pe, summed=summed)
    kinks, entries = _kink_replay(rows, models, by_key, problem, device, say)
    replay += entries
    if kinks:
        classify(rows, dtypes_of(runs), extreme, frozenset(agreed), ambiguous_pe, kinks, summed)
    if summed or kinks:
        findings = find(rows)
    errors = {f"{r.framework}/{r.dtype}:{stage}": message for r in runs for stage, message in r.errors.items()}
    return Report(problem, dtypes_of(runs), rows, findings, replay, eigh, errors, extreme, device, growth=growth)


def _kink_replay(rows: list[TapRow], models, runs: dict[str, Run], problem: Problem, device: str,
                 say) -> tuple[dict[str, str], list[dict]]:
    """A parameter gradient beyond tolerance at float32 only, one side farther from float64
    (DRIFT), while the forward rows agree: the TCN's ReLU is a kink, and a pre-activation within rounding
    of 0 lands on one side of it in float64 and on the other in that side's float32, switching its
    unit's whole gradient path on or off (measured: one unit of 65,536 at -1.6e-6 in float64,
    +3.5e-7 in torch float32, moved ∇tcn.layers.4 by 8e-4 of its scale). Replay: float64 made to
    take that side's float32 sides of 0 (runs.run_torch_with_relu_signs). Where it then gives that
    side's float32 gradient within the float32 tolerance, the difference is rounding amplified by
    the kink, not drift: ({row: why}, the replay entries). Only where the TCN's output agrees at
    float32 and every crossed pre-activation lies within the forward's float32 tolerance of 0 (the
    `model` row's rtol of its layer's largest |z|): a unit farther out crossed by a bug is not rounding."""
    wanted = [row for row in rows if row.verdict == "DRIFT" and row.kind == "parameters"
              and row.drifted in ("torch", "jax")
              and agrees(row, "float64")]
    tcn = next((row for row in rows if row.name == "tcn"), None)
    if not wanted or "float32" not in models or "float64" not in models or tcn is None or not agrees(tcn, "float32"):
        return {}, []
    near = tolerance("model", "float32", device).rtol
    with precision("float64"):
        reference = R.torch_relu_inputs(models["float64"][0], runs["torch/float64"].taps["input"])
    kinks, entries = {}, []
    for side in sorted({row.drifted for row in wanted}):
        say(f"replaying the TCN's ReLU decisions of {side}/float32 in float64")
        with precision("float32"):
            inputs = (R.torch_relu_inputs if side == "torch" else R.jax_relu_inputs)(
                models["float32"][0 if side == "torch" else 1], runs[f"{side}/float32"].taps["input"])
        signs = [z > 0 for z in inputs]
        crossed = [(z64 > 0) != s for z64, s in zip(reference, signs, strict=True)]
        count = sum(int(c.sum()) for c in crossed)
        if not count:
            continue
        widest = max(float(np.abs(z64[c]).max()) for z64, c in zip(reference, crossed, strict=True) if c.any())
        if any(c.any() and np.abs(z64[c]).max() > near * np.abs(z64).max() for z64, c in zip(reference, crossed, strict=True)):
            say(f"{side}/float32 crosses a TCN ReLU farther from 0 than float32 rounding: not replayed")
            continue
        with precision("float64"):
            shapes = {name: tap.shape for name, tap in runs["torch/float64"].taps.items()}
            taken = R.run_torch_with_relu_signs(models["float64"][0], problem.batch, problem.config.train,
                                                shapes, signs)
        replayed, own = group_grads(taken.grads), group_grads(runs[f"{side}/float32"].grads)
        for row in (r for r in wanted if r.drifted == side):
            module = row.name.removeprefix(PARAMETERS)
            compared = compare_arrays(row.name, replayed[module], own[module], "grad", tolerance_dtype("float32"), device)
            entries.append({"tap": row.name, "dtype": "float32",
                            "direction": f"torch float64 on {side}/float32's ReLU sides -> {side} gradient",
                            "max_abs": json_float(compared.max_abs), "max_rel": json_float(compared.max_rel),
                            "nonfinite": {"result": int((~np.isfinite(replayed[module])).sum()),
                                          "expected": int((~np.isfinite(own[module])).sum())},
                            "passed": compared.passed})
            if compared.passed:
                kinks[row.name] = (
                    f"beyond tolerance at float32, {side} farther from float64, yet float64 taking {side}'s "
                    f"float32 side of 0 at the {count} TCN ReLU input(s) where they differ (each within "
                    f"{widest:.1e} of 0 in float64) gives {side}'s gradient (max_rel {compared.max_rel:.1e}): "
                    "rounding amplified by the ReLU's kink, not drift")
    return kinks, entries


def _tf32(side: str) -> bool:
    """Whether `side`'s float32 matmuls or convolutions run in TF32 now (on a GPU: --tf32 on, or
    JAX's default precision): their products then round to 10 mantissa bits, not float32's 23."""
    if side == "torch":
        return torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
    return jax.config.jax_default_matmul_precision not in ("highest", "float32")


def _summation_bound(rows: list[TapRow], models, runs: dict[str, Run], problem: Problem, device: str,
                     say) -> dict[str, str]:
    """A Conv1d's or Linear's parameter gradients beyond tolerance at float32 only, one side
    farther from float64 (DRIFT): ∇weight and ∇bias are sums over the n positions the module ran
    at (with a non-zero cotangent), and float32 summation of n terms, in any order, is within
    γ_n·Σ|terms| of the exact sum, γ_n = n·u / (1 − n·u), u = 2^-24 (Higham, Accuracy and
    Stability of Numerical Algorithms, 2nd ed., 2002, §4.2 eq. 4.4; §3.1 eq. 3.5 for the products
    of ∇weight). The rule as applied: every element of BOTH sides' float32 gradient within
    γ_{n+2}·Σ|terms| (2 of margin) plus the grad row's atol floor of float64 (Σ|terms| from
    float64: runs.torch_gradient_sums). The error measured also carries what the float32 inputs of
    the sum brought; within the bound, it is no more than float32's summation of that many terms
    may make alone: rounding, not drift. A long sequential reduction reaches a good part of the
    bound: at full size (n = 15,360 samples of one 60 s window) torch's float32
    ∇head.detect.bias erred by 9.5e-6 of 0.045, 2.1e-4 of its scale, where XLA's summed within
    6e-10 (Σ|terms| 0.149: the bound is 1.4e-4). Returns {row: why}. Not for a side in TF32
    (_tf32)."""
    wanted = [row for row in rows if row.verdict == "DRIFT" and row.kind == "parameters"
              and row.drifted in ("torch", "jax") and agrees(row, "float64") and not (device == "gpu" and _tf32(row.drifted))]
    if not wanted or "float32" not in models or "float64" not in models:
        return {}
    torch64 = models["float64"][0]
    named = dict(torch64.named_modules())
    wanted = [row for row in wanted if (m := named.get(row.name.removeprefix(PARAMETERS))) is not None and R.summable(m)]
    if not wanted:
        return {}
    say("bounding the float32 summation of " + ", ".join(row.name for row in wanted))
    with precision("float64"):
        shapes = {name: tap.shape for name, tap in runs["torch/float64"].taps.items()}
        sums = R.torch_gradient_sums(torch64, problem.batch, problem.config.train, shapes,
                                     [row.name.removeprefix(PARAMETERS) for row in wanted])
    u, atol = unit_roundoff("float32"), tolerance("grad", "float32", device).atol
    bounds = group_grads({name: (n + 2) * u / (1 - (n + 2) * u) * terms for name, (terms, n) in sums.items()})
    reference = group_grads(runs["torch/float64"].grads)
    summed = {}
    for row in wanted:
        module = row.name.removeprefix(PARAMETERS)
        if module not in bounds:  # the loss reached no call of it
            continue
        ratio = max(float((np.abs(group_grads(runs[f"{side}/float32"].grads)[module].astype(np.float64)
                                  - reference[module]) / (bounds[module] + atol)).max()) for side in ("torch", "jax"))
        n = next(count for name, (_, count) in sums.items() if name.rsplit(".", 1)[0] == module)
        if ratio <= 1:
            summed[row.name] = (
                f"beyond tolerance at float32, {row.drifted} farther from float64, yet every element of both sides "
                f"within float32's summation bound γ_n·Σ|terms| of its n = {n:,} terms (at most {ratio:.2g} of it, "
                "n + 2 for margin): no more than summing that many terms in float32 may err: rounding, not drift")
    return summed


def _wrong_at(row: TapRow, dtypes: list[str]) -> list[str]:
    """The highest precision at which the row is non-finite or fails its comparison: the one
    replay that decides local against inherited (each dtype more costs a compile)."""
    wrong = [d for d in dtypes if row.bad(f"torch/{d}") or row.bad(f"jax/{d}")
             or (d in row.compare and not row.compare[d].passed)]
    return wrong[:1]


def _tap_of(row: TapRow) -> str:
    return row.name.removeprefix(BACKWARD)


def _name_ops(row: TapRow, finding: Finding, models, runs: dict[str, Run], problem: Problem) -> None:
    """The op where the non-finite value is born, on each side that goes non-finite, at the
    highest precision where it does; for DRIFT nothing (no op makes a NaN)."""
    if row.verdict == "DRIFT":
        return
    tap = _tap_of(row)
    for framework in ("torch", "jax"):
        dtype = next((d for d in dtypes_of(list(runs.values())) if row.bad(f"{framework}/{d}")), None)
        if dtype is None:
            continue
        run, model = runs[f"{framework}/{dtype}"], models[dtype][0 if framework == "torch" else 1]
        values = {**run.taps, "x": problem.batch.x}
        with precision(dtype):
            if row.kind == "forward":
                op = (R.torch_stage_op if framework == "torch" else R.jax_stage_op)(model, tap, values)
            else:
                op = (R.torch_cotangent_op if framework == "torch" else R.jax_cotangent_op)(
                    model, tap, values, run.cotangents, problem.batch, problem.config.train)
        finding.op[framework] = f"{op or 'not found (the op may need its inputs as they were)'} [{dtype}]"
    row.op = finding.op


def _replay(row: TapRow, models, runs: dict[str, Run], problem: Problem, dtypes: list[str],
            device: str = "cpu") -> list[dict]:
    """Each side's stage (or, for ∂tap, the backward of the tap's consumers) on the other side's
    inputs, compared with the other side's own result: a local difference stays, an inherited
    one vanishes."""
    tap, out = _tap_of(row), []
    check = "model" if row.kind == "forward" else "grad"
    for dtype in dtypes:
        with precision(dtype):
            for source, target in (("torch", "jax"), ("jax", "torch")):
                run = runs[f"{source}/{dtype}"]
                model = models[dtype][0 if target == "torch" else 1]
                values = {**run.taps, "x": problem.batch.x}
                if row.kind == "forward":
                    fn = R.torch_stage_forward if target == "torch" else R.jax_stage_forward
                    result, expected = fn(model, tap, values), run.taps[tap]
                else:
                    fn = R.torch_local_cotangent if target == "torch" else R.jax_local_cotangent
                    result = fn(model, tap, values, run.cotangents, problem.batch, problem.config.train)
                    expected = run.cotangents[tap]
                compared = compare_arrays(row.name, result, expected, check, tolerance_dtype(dtype), device)
                out.append({
                    "tap": row.name, "dtype": dtype, "direction": f"{source} inputs -> {target} {row.kind}",
                    "max_abs": json_float(compared.max_abs), "max_rel": json_float(compared.max_rel),
                    "nonfinite": {"result": int((~np.isfinite(result)).sum()),
                                  "expected": int((~np.isfinite(expected)).sum())},
                    "passed": compared.passed,
                })
    return out


def eigh_report(config: Config, runs: list[Run], windows: list[int] | None = None) -> dict:
    """The Laplacian spectra the dynamic PE decomposed (float64, from the most precise torch
    adjacency): which graphs (batch, step) hold eigenvalues that the safe eigh backward of the
    least precise run treats as tied, closer than max(stability.eigh_tau, that dtype's rounding
    split · max |λ|) (common.graph.eigenvalue_split). `batch` is the window's index in the batch
    as given (`windows`, Problem.windows, when only those ran)."""
    model = config.model
    if model.architecture != "v3" or not model.graph.enabled or not model.graph.use_dynamic_pe:
        return {"computed": False, "why": "no dynamic Laplacian PE in this model"}
    run = next(r for d in dtypes_of(runs) for r in runs if r.framework == "torch" and r.dtype == d)
    adjacency = np.asarray(run.taps["adjacency"], np.float64)[:, :: model.graph.semi_dynamic_interval]
    if not np.isfinite(adjacency).all():
        return {"computed": False, "why": f"the adjacency is non-finite ({run_key(run)})"}
    # the coarsest eigh: half-precision runs decompose their Laplacian in float32
    tau, coarsest = model.stability.eigh_tau, "float64" if dtypes_of(runs)[-1] == "float64" else "float32"
    eigenvalues = np.linalg.eigvalsh(normalized_laplacian(adjacency, model.graph.laplacian_epsilon))  # (B, S, N)
    split = eigenvalue_split(eigenvalues.shape[-1], float(np.finfo(coarsest).eps))
    repeated = []
    for b, s in np.ndindex(*eigenvalues.shape[:2]):
        values = eigenvalues[b, s]
        width = max(tau, split * float(np.abs(values).max()))
        starts = np.concatenate([[0], np.flatnonzero(np.diff(values) > width) + 1])
        clusters = np.split(values, starts[1:])
        window = windows[b] if windows else int(b)
        repeated += [{"batch": window, "step": int(s * model.graph.semi_dynamic_interval), "eigenvalue": float(c[0]),
                      "multiplicity": len(c), "in_pe": bool(start < model.graph.k_eigenvectors)}
                     for start, c in zip(starts, clusters, strict=True) if len(c) > 1]
    return {"computed": True, "tau": tau, "rounding_of": coarsest, "graphs": int(np.prod(eigenvalues.shape[:2])),
            "graphs_with_repeats": len({(r["batch"], r["step"]) for r in repeated}),
            "graphs_with_repeats_in_pe": len({(r["batch"], r["step"]) for r in repeated if r["in_pe"]}),
            "k": model.graph.k_eigenvectors, "repeated": repeated, "from": run_key(run)}


def pe_not_unique(eigh: dict) -> str:
    """Why the two sides' PE may differ with neither wrong, "" when it is unique: a repeated
    eigenvalue among the k smallest has an eigenspace that any orthonormal basis of it spans, and
    each framework's eigensolver picks its own (the sign rule fixes signs, not a basis)."""
    if not eigh.get("computed") or not eigh["graphs_with_repeats_in_pe"]:
        return ""
    return (f"the PE is not unique: {eigh['graphs_with_repeats_in_pe']} of {eigh['graphs']} graphs have a repeated "
            f"eigenvalue among the {eigh['k']} smallest, whose eigenvectors are any basis of its eigenspace (each "
            "eigensolver picks its own); the model's output depends on that choice")


# ----------------------------------------------------------------------------------------------
# CLI


def out_of_memory_advice(error: BaseException, problem: Problem | None) -> str | None:
    """The one-line answer to XLA's or torch's out-of-memory error (full size, long windows, a
    CPU), or None for any other error. `problem` is None when reading the inputs ran out."""
    first = out_of_memory_line(error)
    if first is None:
        return None
    if problem is None:
        return f"out of memory reading the checkpoint or the batch ({first})"
    shape = "x".join(map(str, problem.batch.x.shape))
    remat = "" if problem.config.model.remat else "--set model.remat=true (the scans recomputed in the backward pass), or "
    suspects = suspect_windows(problem, extreme_sigma(problem))
    which = f"; the data of windows {shown_inline(suspects)} is bad as given" if suspects else ""
    return (f"out of memory running both models on a {shape} batch ({first}); "
            f"add {remat}pass fewer windows (--windows I,J{which})")


class StatusLines:
    """Progress lines on stderr, each with the time since the start; while one step runs past a
    minute, a line a minute says it still runs (a full-size XLA compile, or a float64 run on a
    CPU, is many minutes of silence otherwise)."""

    def __init__(self, every: float = LOG_LINE_SECONDS):
        self.started = self.since = time.monotonic()
        self.every, self.step = every, ""
        self.lock = threading.Lock()  # the step and its time change together; lines never interleave

    def _line(self, text: str) -> None:
        minutes, seconds = divmod(int(time.monotonic() - self.started), 60)
        print(f"[localize {minutes}:{seconds:02d}] {text}", file=sys.stderr, flush=True)

    def __call__(self, text: str) -> None:
        with self.lock:
            self.step, self.since = text, time.monotonic()
            self._line(text)

    @contextlib.contextmanager
    def heartbeat(self):
        stop = threading.Event()

        def beat():
            while not stop.wait(self.every / 4):
                with self.lock:
                    if self.step and time.monotonic() - self.since >= self.every:
                        self.since = time.monotonic()
                        self._line(f"... still: {self.step}")

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def main(argv: list[str] | None = None) -> int:
    from parity import scenarios

    parser = argparse.ArgumentParser(prog="python -m parity.localize", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dump", type=Path, help="a training NaN dump directory (WORKDIR/nan/step_N)")
    source.add_argument("--checkpoint", type=Path, help=".safetensors, .pt (ours or a brain-go-brr v2 checkpoint) or a training checkpoint directory")
    source.add_argument("--scenario", choices=sorted(scenarios.SCENARIOS), help="a planted problem")
    parser.add_argument("--batch", type=Path, help="with --checkpoint: an .npz holding x (B, C, T), optionally y, valid; the original's .pt "
                                                 "debug batch; or a DataLoader batch saved as it came, (x, y)")
    parser.add_argument("--config", help="config YAML (for a bare state dict, or the loss of a .safetensors that "
                                         "carries none of its own)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field of the run, e.g. model.remat=true (less memory at full "
                             "size) or model.stability.pe_gradient=safe (does the fix hold?); repeatable")
    parser.add_argument("--dtype", help=f"comma-separated, from {','.join(PRECISIONS)} (default: "
                                        f"{','.join(DEFAULT_DTYPES)}, or a scenario's own)")
    parser.add_argument("--device", default="cpu", choices=DEVICES,
                        help="where both frameworks run (default %(default)s; gpu: the first CUDA GPU)")
    parser.add_argument("--tf32", choices=("off", "on"), default="off",
                        help="with --device gpu: float32 matmuls/convolutions in full float32 on both sides "
                             "(off, default: what the GPU tolerances assume) or in TF32 on both (on)")
    parser.add_argument("--extreme", type=float, default=None,
                        help="|x| beyond this (z-scored σ) is a DATA finding (default: the config's "
                             f"preprocess.clip_sigma, else {EXTREME_SIGMA:g})")
    parser.add_argument("--json", type=Path, help="write the report as JSON (schema in the module docstring)")
    parser.add_argument("--plot", type=Path, help="write the per-tap plot (PNG)")
    parser.add_argument("--windows", metavar="I[,J...]",
                        help="only these windows of the batch (e.g. the one with the outlier): a full-size "
                             "model on long windows may not fit a CPU's memory with the whole batch")
    parser.add_argument("--all-parameters", action="store_true", help="show clean parameter groups too")
    parser.add_argument("--pos-weight", type=float, metavar="W",
                        help="with --checkpoint: the loss's positive-class weight as the training step had it "
                             "(default 1; a --dump holds its own). The original's focal loss took sqrt((1-r)/r) "
                             f"for its training set's seizure share r: {ORIGINAL_POS_WEIGHT} on its balanced TUSZ set")
    args = parser.parse_args(argv)
    if args.pos_weight is not None and args.checkpoint is None:
        parser.error("--pos-weight goes with --checkpoint: a --dump holds the weight its step had (nan.json)")
    if args.pos_weight is not None and not (math.isfinite(args.pos_weight) and args.pos_weight > 0):
        parser.error(f"--pos-weight must be a positive number, got {args.pos_weight}")
    if args.batch is not None and args.checkpoint is None:
        parser.error("--batch goes with --checkpoint: a --dump holds its own batch (batch.npz); "
                     "a --scenario makes its own")
    if args.config is not None and args.dump is not None:
        parser.error("--config goes with --checkpoint: a --dump holds its run's own config (nan.json); "
                     "change a field of it with --set FIELD=VALUE")
    say = StatusLines()
    problem = None
    try:
        # the reports' folders before the runs (minutes to hours at full size) rather than after
        for option, path in (("--json", args.json), ("--plot", args.plot)):
            if path is not None:
                check_writable_folder(path.parent, option)
        if args.scenario:
            # --set goes in with the scenario's own overrides, before its weights are made (scenarios.build)
            problem = scenarios.build(args.scenario, args.set)
            dtypes = args.dtype.split(",") if args.dtype else problem.expected.get("dtypes", list(DEFAULT_DTYPES))
        else:
            dtypes = args.dtype.split(",") if args.dtype else list(DEFAULT_DTYPES)
            if args.dump:
                problem = load_dump(args.dump)
                fix = (f"the dump's own config does not describe its weights, so the dump is not as training "
                       f"wrote it: localize a checkpoint of the run instead, with --checkpoint CKPT --batch "
                       f"{args.dump / 'batch.npz'}")
            else:
                if args.batch is None:
                    parser.error("--checkpoint needs --batch BATCH.npz")
                said: list[str] = []
                config, weights, names, kind = load_checkpoint(args.checkpoint, args.config, said)
                notes: list[str] = []
                batch = read_batch(args.batch, notes)
                batch.pos_weight = 1.0 if args.pos_weight is None else args.pos_weight
                if args.pos_weight is None and kind == "original":
                    notes.append(f"the loss weighs seizure samples by 1; the original's weighed them by sqrt((1-r)/r) for "
                                 f"its training set's seizure share r ({ORIGINAL_POS_WEIGHT} on its balanced TUSZ set), "
                                 "which the checkpoint does not hold: --pos-weight W sets it for the gradient rows")
                problem = Problem(config, weights, batch, f"checkpoint {args.checkpoint}, batch {args.batch}",
                                  notes=notes, checkpoint_names=names, kind=kind, said=said)
                fix = CONFIG_FIX
            as_loaded = problem.config
            problem.config = with_overrides(problem.config, args.set, problem.source)
            changed = config_differences(config_to_dict(problem.config), config_to_dict(as_loaded))
            if changed:  # the notes printed on loading describe the config as read
                note = "--set changes the config those notes describe:\n  " + difference_lines(changed, "read")
                print(f"note: {note}")
                problem.said.append(note)
        if args.set:
            problem.source += f" with --set {' '.join(args.set)}"
        if not args.scenario:
            check_weights(problem, as_loaded, fix)
            # against the model as --set leaves it (a stride it changes), before any model is built
            check_batch_shape(problem.config, problem.batch, str(args.batch or args.dump / "batch.npz"))
            problem.notes += filter(None, [window_length_note(problem.config, problem.batch)])
        dtypes = runs_whole_model(problem, dtypes, args.dtype is not None)
        if args.windows:
            problem.batch, problem.windows = select_windows(problem.batch, args.windows, problem.source)
            problem.source += f", windows {args.windows}"
        tf32 = args.tf32 == "on"
        precision = (float32_precision(tf32, matmul_precision(tf32)) if args.device == "gpu"
                     else contextlib.nullcontext())
        with precision, say.heartbeat():
            report = localize(problem, dtypes, args.extreme, progress=say, device=args.device)
    except (LocalizeError, ConfigError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as error:
        advice = out_of_memory_advice(error, problem)
        if advice is None:
            raise
        print(f"error: {advice}", file=sys.stderr)
        return 2
    print(format_report(report, args.all_parameters))
    if args.json:
        write_json(report, args.json)
        say(f"wrote {args.json}")
    if args.plot and report.rows:
        plot_report(report, args.plot)
        say(f"wrote {args.plot}")
    elif args.plot:
        say(f"no plot written: nothing ran ({report.verdict})")
    if problem.expected:
        matched = (report.verdict, report.first.row if report.first else None) == (
            problem.expected["verdict"], problem.expected["tap"])
        at = f" at {problem.expected['tap']}" if problem.expected["tap"] else ""
        print(f"expected: {problem.expected['verdict']}{at}: " + ("matched" if matched else "NOT matched"))
        return 0 if matched else 1
    return 0 if report.verdict == "CLEAN" else 1


if __name__ == "__main__":
    sys.exit(main())
