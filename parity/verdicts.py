"""DESIGN.md §5 verdicts, tap by tap, from the runs of both frameworks at every dtype.

    findings = weight_findings(weights, names)            # first, from the weights alone: WEIGHTS
    rows = tap_rows(runs, stage_inputs, groups, extreme)   # else run: forward, loss, backward, parameters
    findings = find(rows)                                 # where each problem is born, in order

A row holds, for one tap (or its cotangent, or one module's parameter gradients), the NaN and Inf
counts of every (framework, dtype) run, the torch↔jax difference at every dtype, and the float64
error of each side. Its verdict:

    WEIGHTS    (no rows: nothing runs) a weight or buffer the model loads holds NaN/Inf: the NaN
               was born before the checkpoint was saved
    DATA       the batch (the `input` tap) holds NaN/Inf or |x| > extreme (z-scored σ); a row
               non-finite only because a row it is computed from is DATA inherits DATA
    MODEL      non-finite on both sides at the highest precision run (float64): the math is
               undefined there (without a float64 run, said to be unarbitrated)
    FRAMEWORK  non-finite on one side only at the highest precision run, or, finite there on
               both, on one side only at float32 (the other framework's float32 stays finite):
               that side and its op
    PRECISION  finite at the highest precision, non-finite at a lower one (both sides, or one
               side at a half precision only)
    DRIFT      all finite, but torch and jax differ beyond parity/tolerances.py (at float64, or
               at float32 where the float64 run names a side that drifted: tolerances.arbitrate)
    CLEAN      nothing to report. A float32 difference beyond tolerance where both sides are
               within tolerance of float64 (arbitrate: "neither") is rounding, amplified by an
               ill-conditioned stage; the row is CLEAN and marked `rounding`, as is a Conv1d's or
               Linear's parameter gradient whose two sides lie within float32's bound on a sum
               of that many terms (parity/localize.py _summation_bound). So is a float32
               difference whose replay agrees both ways (each side's stage on the other's inputs
               gives the other's result: rounding of its inputs amplified by a discontinuity, a
               top-k near tie), marked `amplified`, with every row that inherits only from it;
               and a float32-only parameter gradient that float64 reproduces when made to take
               that side's float32 sides of the TCN's ReLU kinks, marked `amplified` too
               (parity/localize.py _kink_replay)

A non-finite row is *born* when some run is non-finite there while every row it is computed from
(for the loss: the logits and the labels) is finite in that run; a DRIFT row when, at a dtype
where it fails, every row it is computed from agrees; otherwise it inherits from upstream. The
findings are the born rows, non-finite ones first; the first finding is the verdict (a NaN
outranks a drift that came before it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from common.checkpoints import nonfinite_tensors
from common.shown import shown_inline
from common.stages import MODEL_INPUT
from parity.compare import Row, compare_arrays
from parity.runs import LOSS, Run, consumers
from parity.tolerances import HALF_FAR, HALF_RATIO, arbitrate

VERDICTS = ("WEIGHTS", "DATA", "MODEL", "FRAMEWORK", "PRECISION", "DRIFT", "CLEAN")
# dtypes from the highest precision down: the highest one run is the arbiter
PRECISIONS = ("float64", "float32", "bfloat16", "float16")
BACKWARD = "∂"  # a cotangent row: ∂tap
PARAMETERS = "∇"  # a parameter-gradient row: ∇module
PE = "pe"  # the Laplacian PE's tap (common/stages.py)
LABELS = "labels"  # the loss's other input: not a row; the input row holds their NaN/Inf counts
HALF = ("bfloat16", "float16")


@dataclass
class TapRow:
    name: str  # "tcn", "loss", "∂tcn", "∇node_mamba.layers.0.fwd.in_proj"
    kind: str  # forward | loss | backward | parameters
    shape: tuple
    nonfinite: dict[str, tuple[int, int]]  # "torch/float32" -> (NaN count, Inf count)
    compare: dict[str, Row]  # dtype -> torch↔jax comparison (jax against torch)
    err64: dict[str, float] = field(default_factory=dict)  # framework -> RMSE of its arbitrated_dtype vs torch float64
    drifted: str | None = None  # arbitrate(): torch | jax | both | neither (arbitrated_dtype, when it fails)
    half64: dict[str, dict[str, float]] = field(default_factory=dict)  # half dtype -> framework -> max|it − float64| / max|float64|
    max_abs_x: float = math.nan  # input row only: max |x| over finite values of the batch as given
    data_nonfinite: tuple[int, int] = (0, 0)  # input row only: NaN, Inf in the batch as given
    label_nonfinite: tuple[int, int] = (0, 0)  # input row only: NaN, Inf in the batch's labels
    data_where: str = ""  # input row only: where the batch is bad (windows, first window/channel/sample)
    upstream: tuple[str, ...] = ()  # the rows this one is computed from
    verdict: str = "CLEAN"
    born: bool = False
    side: str | None = None  # torch | jax | both
    detail: str = ""
    op: dict[str, str] = field(default_factory=dict)  # framework -> op where it is born
    # float32 sides differ beyond tolerance but float64 arbitration blames neither: CLEAN, shown
    rounding: bool = False
    # float32 sides differ beyond tolerance, yet each side's stage on the other's inputs gives the
    # other's result (the replay): rounding of its inputs amplified here (a top-k near tie), or
    # inherited from such a row; CLEAN, shown
    amplified: bool = False
    # a FRAMEWORK gradient row under a loss non-finite on both sides: the side whose finite
    # gradient dropped the NaN (classify), not the side in error
    dropped_by: str | None = None

    def bad(self, run: str) -> bool:
        return sum(self.nonfinite.get(run, (0, 0))) > 0

    def to_dict(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "shape": list(self.shape), "verdict": self.verdict,
            "born": self.born, "side": self.side, "detail": self.detail, "op": self.op, "rounding": self.rounding,
            "amplified": self.amplified, "dropped_by": self.dropped_by,
            "nonfinite": {run: {"nan": n, "inf": i} for run, (n, i) in self.nonfinite.items()},
            "max_abs": {d: json_float(r.max_abs) for d, r in self.compare.items()},
            "max_rel": {d: json_float(r.max_rel) for d, r in self.compare.items()},
            "within_tolerance": {d: r.passed for d, r in self.compare.items()},
            "err64": {k: json_float(v) for k, v in self.err64.items()}, "drifted": self.drifted,
            "upstream": list(self.upstream),
        }


def json_float(value: float):
    return value if math.isfinite(value) else str(value)


def run_key(run: Run) -> str:
    return f"{run.framework}/{run.dtype}"


def dtypes_of(runs: list[Run]) -> list[str]:
    """The dtypes run, highest precision first."""
    return [d for d in PRECISIONS if any(r.dtype == d for r in runs)]


def arbitrated_dtype(dtypes: list[str]) -> str:
    """The dtype whose torch-jax difference float64 arbitrates (err64, drifted): float32 when it ran,
    since the verdicts judge float32's differences and a half-precision run beside it must not
    change them; else the lowest run."""
    return "float32" if "float32" in dtypes else dtypes[-1]


def _counts(array: np.ndarray) -> tuple[int, int]:
    array = np.asarray(array, np.float64)
    return int(np.isnan(array).sum()), int(np.isinf(array).sum())


def _rmse(a: np.ndarray, reference: np.ndarray) -> float:
    a, reference = np.asarray(a, np.float64), np.asarray(reference, np.float64)
    both = np.isfinite(a) & np.isfinite(reference)
    if not both.all():
        return math.inf
    return float(np.sqrt(np.mean((a - reference) ** 2))) if a.size else 0.0


def _row(name: str, kind: str, arrays: dict[str, np.ndarray], runs: list[Run], check: str,
         upstream: tuple[str, ...], device: str = "cpu") -> TapRow:
    """arrays: run key -> this row's array in that run."""
    shape = next(iter(arrays.values())).shape
    row = TapRow(name, kind, tuple(shape), {key: _counts(a) for key, a in arrays.items()}, {}, upstream=upstream)
    dtypes = dtypes_of(runs)
    for dtype in dtypes:
        torch_array, jax_array = arrays.get(f"torch/{dtype}"), arrays.get(f"jax/{dtype}")
        if torch_array is not None and jax_array is not None:
            row.compare[dtype] = compare_arrays(name, jax_array, torch_array, check, tolerance_dtype(dtype), device)
    low = arbitrated_dtype(dtypes)
    if "float64" in dtypes and low != "float64" and "torch/float64" in arrays:
        reference = arrays["torch/float64"]
        for framework in ("torch", "jax"):
            if f"{framework}/{low}" in arrays:
                row.err64[framework] = _rmse(arrays[f"{framework}/{low}"], reference)
        if low in row.compare and not row.compare[low].passed and f"jax/{low}" in arrays:
            row.drifted = arbitrate(arrays[f"torch/{low}"], arrays[f"jax/{low}"], reference,
                                    check if low == "float32" else "model", device)
    if "torch/float64" in arrays:
        reference = np.asarray(arrays["torch/float64"], np.float64)
        scale = float(np.abs(reference[np.isfinite(reference)]).max(initial=0.0))
        for dtype in (d for d in dtypes if d in HALF and scale > 0):
            row.half64[dtype] = {framework: float(np.abs(np.asarray(arrays[key], np.float64) - reference).max()) / scale
                                 for framework in ("torch", "jax") if (key := f"{framework}/{dtype}") in arrays}
    return row


def _half_framework(row: TapRow, by_name: dict[str, TapRow]) -> tuple[str, str] | None:
    """(side, detail) of a half-precision FRAMEWORK finding at `row` (HALF_FAR, HALF_RATIO), else None."""
    for dtype, errors in row.half64.items():
        if len(errors) < 2 or not all(by_name[u].compare.get(dtype) is not None and by_name[u].compare[dtype].max_abs == 0
                                      for u in row.upstream if u in by_name):
            continue
        far, near = sorted(errors, key=errors.get, reverse=True)
        if errors[far] >= HALF_FAR and errors[far] >= HALF_RATIO * errors[near]:
            return far, (f"at {dtype}, from inputs equal on both sides: {far} lands {errors[far]:.2g} of max|float64| "
                         f"from float64, {near} {errors[near]:.2g}: {far}'s {dtype} computes this stage wrongly")
    return None


def tolerance_dtype(dtype: str) -> str:
    """The table's dtype a run's torch-jax difference is compared at. Half precisions at float32's:
    the table's bfloat16 rows bound one layer or one gradient (tests), not a whole model's taps, so
    a half-precision comparison is reported only (its verdicts come from non-finite counts, never
    DRIFT)."""
    return dtype if dtype in ("float32", "float64") else "float32"


def group_grads(grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """parameter name -> gradient, into module -> all its parameters' gradients, flattened."""
    groups: dict[str, list[np.ndarray]] = {}
    for name, grad in sorted(grads.items()):  # one order for both frameworks
        groups.setdefault(name.rsplit(".", 1)[0], []).append(np.ravel(grad))
    return {module: np.concatenate(parts) for module, parts in groups.items()}


def tap_rows(runs: list[Run], stage_inputs: dict[str, tuple[str, ...]], parameter_stage: dict[str, str],
             extreme: float, device: str = "cpu", batch: np.ndarray | None = None,
             labels: np.ndarray | None = None, ambiguous_pe: str = "",
             windows: list[int] | None = None) -> list[TapRow]:
    """Every row in report order: forward taps, the loss, cotangents in backward order,
    parameter gradients by module (modules in forward order), each classified against the
    tolerances of the device the runs ran on. `batch` is the data as given, before the model's
    input stage (whose guards, with stability.guards: original, clip it and zero its NaNs): the
    DATA verdict is about that, not about what the guards leave; and about its `labels`.
    `ambiguous_pe`: why the PE is not unique, when it is not (classify). `windows`: each window's
    index in the batch as given (Problem.windows), which the DATA detail names."""
    taps = list(stage_inputs)
    rows = [_row(tap, "forward", {run_key(r): r.taps[tap] for r in runs}, runs, "model",
                 tuple(i for i in stage_inputs[tap] if i != MODEL_INPUT), device) for tap in taps]
    rows.append(_row(LOSS, "loss", {run_key(r): r.loss for r in runs}, runs, "loss", ("logits", LABELS), device))
    for tap in reversed(taps):
        users = consumers(stage_inputs, tap)
        upstream = tuple(BACKWARD + c if c != LOSS else LOSS for c in users)
        upstream += tuple(dict.fromkeys(i for c in users if c != LOSS for i in (c, *stage_inputs[c])
                                        if i != MODEL_INPUT))
        rows.append(_row(BACKWARD + tap, "backward", {run_key(r): r.cotangents[tap] for r in runs}, runs, "grad",
                         upstream, device))
    grouped = {run_key(r): group_grads(r.grads) for r in runs}
    modules = list(next(iter(grouped.values())))
    order = {stage: index for index, stage in enumerate(taps)}
    modules.sort(key=lambda m: order[parameter_stage[m.split(".")[0]]])
    for module in modules:
        stage = parameter_stage[module.split(".")[0]]
        upstream = (BACKWARD + stage, *(i for i in stage_inputs[stage] if i != MODEL_INPUT))
        rows.append(_row(PARAMETERS + module, "parameters", {key: g[module] for key, g in grouped.items()}, runs,
                         "grad", upstream, device))
    input_row = rows[0]
    given = [batch] if batch is not None else [r.taps["input"] for r in runs]
    finite_x = [np.abs(x[np.isfinite(x)]) for x in given]
    input_row.max_abs_x = max((float(a.max()) for a in finite_x if a.size), default=0.0)
    if batch is not None:
        input_row.data_nonfinite = _counts(batch)
        bad = ~np.isfinite(batch)
        input_row.data_where = where(bad if bad.any() else np.abs(batch) > extreme,
                                     ("window", "channel", "sample"), windows=windows)
    if labels is not None:
        input_row.label_nonfinite = _counts(labels)
        input_row.data_where += where(~np.isfinite(labels), ("window", "sample"), "labels ", windows)
    classify(rows, dtypes_of(runs), extreme, ambiguous_pe=ambiguous_pe)
    return rows


def where(mask: np.ndarray, axes: tuple[str, ...], what: str = "", windows: list[int] | None = None) -> str:
    """Where `mask` is true, for a person to go and look: the windows (first axis; by `windows`,
    their indices in the batch as given, when only those ran) and the first element, e.g.
    " (windows 2, 5; first at window 2, channel 7, sample 301)"; "" when nowhere."""
    hits = np.argwhere(mask)
    if not hits.size:
        return ""
    if windows is not None:
        hits[:, 0] = np.asarray(windows)[hits[:, 0]]
    hit = sorted({int(i) for i in hits[:, 0]})
    first = ", ".join(f"{axis} {int(i)}" for axis, i in zip(axes, hits[0], strict=True))
    return f" ({what}window{'s' * (len(hit) > 1)} {shown_inline(hit)}; first at {first})"


def _dropped_by_the_other(row: TapRow, by_name: dict[str, TapRow], dtype: str) -> str | None:
    """For a gradient non-finite on one side at `dtype` while the loss is non-finite on both
    there: the side with the finite gradient, the one that dropped the NaN (torch.clamp's
    backward zeroes a NaN input's gradient where jnp.clip's passes it on: the focal loss at NaN
    logits), so the NaN side is not the one in error; None otherwise."""
    loss = by_name.get("loss")
    if not row.name.startswith(("∂", "∇")) or loss is None or not (loss.bad(f"torch/{dtype}")
                                                                    and loss.bad(f"jax/{dtype}")):
        return None
    return "jax" if row.side == "torch" else "torch"


def _dropped_detail(dropped_by: str) -> str:
    return (f"the loss is non-finite on both sides, so {dropped_by}'s finite gradient is the one that drops the NaN "
            "(a backward that zeroes it, as torch.clamp's does where jnp.clip's passes it on)")


def classify(rows: list[TapRow], dtypes: list[str], extreme: float, replay_agrees: frozenset[str] = frozenset(),
             ambiguous_pe: str = "", kinks: dict[str, str] | None = None,
             summed: dict[str, str] | None = None) -> None:
    """Set verdict, side, born and detail of every row (DESIGN.md §5; module docstring).
    `replay_agrees`: rows whose float32 replay agreed both ways (parity/localize.py), amplified
    rounding rather than drift; classify runs again once they are known. `ambiguous_pe`: why the
    Laplacian PE is not unique (parity.localize.pe_not_unique), "" when it is: the PE row's
    difference is then the model's (MODEL), not a drift of either side. `kinks`: float32-only
    parameter rows that float64 reproduces when it takes one side's float32 ReLU decisions
    (parity/localize.py _kink_replay), row -> why: amplified rounding, not drift. `summed`:
    float32-only parameter rows whose two sides lie within float32's summation bound
    (parity/localize.py _summation_bound), row -> why: rounding, not drift."""
    by_name = {row.name: row for row in rows}
    top = dtypes[0]
    for row in rows:
        row.verdict, row.born, row.side, row.detail, row.rounding, row.amplified = "CLEAN", False, None, "", False, False
        row.dropped_by = None
        bad_runs = [run for run in row.nonfinite if row.bad(run)]
        if row.name == "input" and (bad_runs or sum(row.data_nonfinite) or sum(row.label_nonfinite)
                                    or row.max_abs_x > extreme):
            row.verdict, row.born = "DATA", True
            parts = []
            if sum(row.data_nonfinite):
                parts.append("the batch holds {} NaN, {} Inf".format(*row.data_nonfinite))
            elif bad_runs:
                parts.append(f"the batch holds {_count_text(row)}")
            elif row.max_abs_x > extreme:
                parts.append(f"max |x| = {row.max_abs_x:.4g} > {extreme:g} σ: beyond what the pipeline's clip leaves")
            if sum(row.label_nonfinite):
                parts.append("its labels hold {} NaN, {} Inf".format(*row.label_nonfinite))
            row.detail = "; ".join(parts) + row.data_where
            continue
        if bad_runs:
            row.born = any(all(not _bad(by_name, u, run) for u in row.upstream) for run in bad_runs)
            data = [u for u in row.upstream if _source(by_name, u).verdict == "DATA"
                    and any(_bad(by_name, u, run) for run in bad_runs)]
            carried = all(any(u in data and _bad(by_name, u, run) for u in row.upstream) for run in bad_runs)
            if not row.born and carried:  # in every run the batch's NaN/Inf carried here: not the model's
                row.verdict, row.side = "DATA", None
                row.detail = f"inherits the batch's NaN/Inf from {', '.join(data)}"
                continue
            torch_bad, jax_bad = row.bad(f"torch/{top}"), row.bad(f"jax/{top}")
            if torch_bad and jax_bad:
                row.verdict, row.side = "MODEL", "both"
                row.detail = f"both frameworks non-finite at {top}"
            elif torch_bad or jax_bad:
                row.verdict, row.side = "FRAMEWORK", "torch" if torch_bad else "jax"
                row.detail = f"{row.side} only, at {top}"
                row.dropped_by = _dropped_by_the_other(row, by_name, top)
                if row.dropped_by:
                    row.detail += f"; {_dropped_detail(row.dropped_by)}"
            else:
                lows = [d for d in dtypes[1:] if row.bad(f"torch/{d}") or row.bad(f"jax/{d}")]
                sides = [s for s in ("torch", "jax") if row.bad(f"{s}/{lows[0]}")]
                # at float32 the other framework computes it finitely too (at a half precision, a
                # value at the edge of float16's range rounds past it on one side: rounding)
                if len(sides) == 1 and lows[0] == "float32":
                    row.verdict, row.side = "FRAMEWORK", sides[0]
                    other = "jax" if row.side == "torch" else "torch"
                    row.dropped_by = _dropped_by_the_other(row, by_name, lows[0])
                    if row.dropped_by:  # not a value leaving float32's range: a NaN one backward dropped
                        row.detail = f"{row.side} only, at {lows[0]} (finite at {top}); {_dropped_detail(row.dropped_by)}"
                    else:
                        row.detail = (f"{row.side} only, at {lows[0]}: finite at {top} on both sides and in {other}'s "
                                      f"{lows[0]}, so the values stay in {lows[0]}'s range there and {row.side}'s "
                                      "computation leaves it")
                else:
                    sides = {s for d in lows for s in ("torch", "jax") if row.bad(f"{s}/{d}")}
                    row.verdict, row.side = "PRECISION", "both" if len(sides) == 2 else sides.pop()
                    row.detail = f"finite at {top}, non-finite at {', '.join(lows)} ({row.side})"
            if top != "float64" and row.verdict == "MODEL":
                row.detail += (f" (no float64 run: MODEL and PRECISION cannot be told apart; --dtype float64,{top} "
                               "tells them)")
            continue
        failing = [d for d, r in row.compare.items() if not r.passed and d in ("float32", "float64")]
        if failing == ["float32"] and row.drifted == "neither":
            row.rounding = True  # float64 arbitrates: neither side drifted
            row.detail = ("float32 sides differ beyond tolerance, each within tolerance of float64: "
                          "rounding, not drift")
            continue
        if failing == ["float32"] and summed and row.name in summed:
            row.rounding = True
            row.detail = summed[row.name]
            continue
        if failing == ["float32"] and kinks and row.name in kinks:
            row.amplified = True
            row.detail = kinks[row.name]
            continue
        if failing == ["float32"] and row.name in replay_agrees:
            row.amplified = True
            row.detail = ("float32 sides differ beyond tolerance, yet each side's stage on the other's inputs gives "
                          "the other's result (replay): float32 inputs within tolerance, amplified here (a "
                          "discontinuity such as a top-k near tie, or ill-conditioning): rounding, not drift")
            continue
        disagreeing = [by_name[u] for u in row.upstream if u in by_name and not agrees(by_name[u], "float32")]
        if failing == ["float32"] and disagreeing and all(u.amplified for u in disagreeing):
            row.amplified = True
            row.detail = "inherits the amplified rounding of " + ", ".join(u.name for u in disagreeing)
            continue
        if not failing and (one_sided := _half_framework(row, by_name)):
            row.verdict, row.born, (row.side, row.detail) = "FRAMEWORK", True, one_sided
            continue
        if failing:
            row.verdict = "DRIFT"
            # born where, at some dtype it fails at, everything it is computed from agrees
            row.born = any(all(agrees(by_name[u], d) for u in row.upstream if u in by_name) for d in failing)
            if row.name == PE and ambiguous_pe:
                row.verdict, row.side, row.detail = "MODEL", "both", ambiguous_pe
                continue
            row.side = row.drifted
            row.detail = f"beyond tolerance at {', '.join(failing)}"
            if "float64" in failing:
                row.detail += " (float64 too: the two sides compute different functions here)"
            elif row.drifted:
                row.detail += f"; farther from float64: {row.drifted}"


def _source(by_name: dict[str, TapRow], name: str) -> TapRow:
    """The row an upstream name stands for: LABELS are the input row's."""
    return by_name["input" if name == LABELS else name]


def _bad(by_name: dict[str, TapRow], name: str, run: str) -> bool:
    """Upstream `name` is non-finite in `run`; the labels, as given, in every run."""
    if name == LABELS:
        return sum(by_name["input"].label_nonfinite) > 0
    return by_name[name].bad(run)


def agrees(row: TapRow, dtype: str) -> bool:
    """torch and jax agree on `row` at `dtype` and every higher precision run (a disagreement at
    float64 is not undone by float32 passing under its atol floor), or differ by rounding only."""
    higher = PRECISIONS[: PRECISIONS.index(dtype) + 1]
    return row.rounding or all(row.compare[d].passed for d in higher if d in row.compare)


def _count_text(row: TapRow) -> str:
    return ", ".join(f"{run}: {n} NaN, {i} Inf" for run, (n, i) in row.nonfinite.items() if n or i)


@dataclass
class Finding:
    verdict: str
    row: str
    kind: str
    side: str | None
    detail: str
    op: dict[str, str]

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "tap": self.row, "kind": self.kind, "side": self.side,
                "detail": self.detail, "op": self.op}


# what a WEIGHTS verdict asks of the user (format_report prints it under the findings)
WEIGHTS_FIX = ("the checkpoint was saved with these weights non-finite: the NaN was born in a training step "
               "before the save, not in this batch's forward or backward; nothing was run. Localize with the last "
               "checkpoint whose weights are all finite, with the batch that failed (e.g. the original's "
               "debug/bad_batch_<step>.pt)")


def weight_findings(weights: dict[str, np.ndarray], checkpoint_names: dict[str, str]) -> list[Finding]:
    """WEIGHTS: a finding for each tensor the model loads (parameter or buffer) that holds NaN/Inf,
    named as the model names it and, where that differs, as the checkpoint spells it; decided from
    the weights alone, before anything runs. [] when all are finite."""
    findings = []
    for name, (nan, inf) in nonfinite_tensors(weights).items():
        spelled = f" (the checkpoint's {checkpoint_names[name]})" if name in checkpoint_names else ""
        detail = f"{nan} NaN, {inf} Inf in shape {tuple(np.shape(weights[name]))}{spelled}"
        findings.append(Finding("WEIGHTS", name, "weights", None, detail, {}))
    return findings


def find(rows: list[TapRow]) -> list[Finding]:
    """Born problems, non-finite ones first (a NaN is what one came for), each group in report
    order, then the born finite ones: DRIFT, and the PE that is not unique (a MODEL row with no
    NaN, which ranked before a NaN born after it) (the first DRIFT row when none is born and nothing else is:
    every drift inherits from a row whose own difference stayed within tolerance); [] when CLEAN.
    The first finding is the verdict."""
    def finite(row: TapRow) -> bool:  # a born problem with no NaN/Inf: a drift, or a PE that is not unique
        return row.verdict in ("DRIFT", "MODEL") and not any(row.bad(run) for run in row.nonfinite)

    nonfinite = [row for row in rows if row.born and not finite(row)]
    drifts = [row for row in rows if row.born and finite(row)]
    if not drifts and not nonfinite:  # every drifting row inherits from another: report the first one
        drifts = [row for row in rows if row.verdict == "DRIFT"][:1]
    return [Finding(r.verdict, r.name, r.kind, r.side, r.detail, r.op) for r in nonfinite + drifts]
