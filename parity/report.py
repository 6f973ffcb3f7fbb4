"""The localiser's report: the Report of one run of parity.localize.localize, its text table
(format_report), its plot (plot_report) and its JSON (write_json, schema "jaxbrr.localize/1",
documented in parity/localize.py).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
import torch

from common import original
from common.files import save_figure, write_text
from common.shown import shown_inline, shown_lines
from parity.growth import OUTLIER_GROWTH, Growth
from parity.problem import Problem, batch_hash, suspect_windows
from parity.runs import Batch
from parity.verdicts import BACKWARD, PARAMETERS, WEIGHTS_FIX, Finding, TapRow, arbitrated_dtype
from torchref.precision import FULL_FLOAT32, TRITON_F32, set_triton_f32

SCHEMA = "jaxbrr.localize/1"
IDENTICAL_FLOOR = 1e-18  # where the plot draws a difference of exactly 0 (log axis)
MAX_MODULES_SHOWN = 12  # beyond this the printed report sums parameter counts per top-level module
# A batch whose mask leaves every window out runs, and is reported, rather than being refused: the
# forward rows still compare both frameworks on every window (the mask reaches only the loss), and
# what is wrong is not the input but that the backward has nothing to compare, which this says.
NO_VALID_WINDOW = ("no window of the batch is valid (its mask is False for every one): the loss is 0 and every "
                   "gradient exactly 0 on both sides, so the backward rows (loss, ∂, ∇) compared nothing and only "
                   "the forward rows were judged; to compare the backward, save the batch without its mask (or "
                   "pick windows it keeps, if --windows picked only ones it leaves out)")


@dataclass
class Report:
    problem: Problem
    dtypes: list[str]
    rows: list[TapRow]
    findings: list[Finding]
    replay: list[dict]
    eigh: dict
    errors: dict[str, str]
    extreme: float
    device: str = "cpu"
    # the float32 matmul/conv precision in force while the runs ran (--tf32), taken then
    precision: dict[str, str] = field(default_factory=lambda: precision_settings())
    growth: Growth | None = None  # the weights' RMS over their scale at init (parity/growth.py)

    @property
    def verdict(self) -> str:
        return self.findings[0].verdict if self.findings else "CLEAN"

    @property
    def first(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    @property
    def notes(self) -> list[str]:
        """The problem's notes, and first, when the runs ran with no valid window, that the backward
        rows compared nothing (NO_VALID_WINDOW)."""
        valid = self.problem.batch.valid
        unread = bool(self.rows) and valid is not None and not valid.any()
        return [NO_VALID_WINDOW, *self.problem.notes] if unread else list(self.problem.notes)

    def nonfinite_parameters(self) -> dict[str, dict[str, int]]:
        return {row.name.removeprefix(PARAMETERS): {run: n + i for run, (n, i) in row.nonfinite.items() if n + i}
                for row in self.rows if row.kind == "parameters" and any(sum(c) for c in row.nonfinite.values())}

    def to_dict(self) -> dict:
        x = self.problem.batch.x
        first = self.first
        return {
            "schema": SCHEMA, "source": self.problem.source,
            "batch": {"shape": list(x.shape), "sha1": batch_hash(x),
                      "labels": "given" if self.problem.batch.y is not None else "none: all-zero labels",
                      "valid_windows": valid_windows(self.problem.batch)},
            "dtypes": self.dtypes, "versions": versions(), "extreme_sigma": self.extreme,
            "device": self.device, "precision_settings": self.precision,
            "verdict": self.verdict, "first": first.to_dict() if first else None,
            "findings": [f.to_dict() for f in self.findings], "rows": [row.to_dict() for row in self.rows],
            "replay": self.replay, "nonfinite_parameters": self.nonfinite_parameters(), "eigh": self.eigh,
            "errors": self.errors, "expected": self.problem.expected, "notes": [*self.problem.said, *self.notes],
            "growth": self.growth.to_dict() if self.growth else None,
            "history": {"file": self.problem.history_file, "train": self.problem.history},
        }


def _mask_words(valid: np.ndarray | None, shown: int = 8) -> str:
    """What the batch line says of a mask that leaves windows out: the forward rows compare every
    window, the loss and the backward only those it keeps (one left out holds NaN harmlessly)."""
    if valid is None or valid.all():
        return ""
    out = np.flatnonzero(~valid)
    listed = ", ".join(map(str, out[:shown])) + (", ..." if len(out) > shown else "")
    return (f"; the loss reads {np.count_nonzero(valid)} of {len(valid)} windows (the mask leaves out "
            f"window{'s' * (len(out) > 1)} {listed})")


def valid_windows(batch: Batch) -> int:
    """How many windows the loss reads (every one without a mask)."""
    return len(batch.x) if batch.valid is None else int(np.count_nonzero(batch.valid))


def versions() -> dict[str, str]:
    import flax

    return {"torch": torch.__version__, "jax": jax.__version__, "flax": flax.__version__}


@contextlib.contextmanager
def float32_precision(torch_tf32: bool, jax_precision: str):
    """torch's TF32 switches (cuBLAS matmuls, cuDNN convolutions), Triton's float32 dot precision
    for mamba_ssm's kernels (`ssm.backend: cuda`; torchref/precision.py: "ieee", or unset for
    Triton's TF32, as torchref's trainer sets it) and JAX's default matmul precision for the block, restored
    after. Triton reads its variable when a kernel compiles: a kernel this process compiled before
    keeps the precision it was compiled with. What the GPU rows of parity/tolerances.py assume is
    float32_precision(False, "highest"); TF32 in both is (True, "tensorfloat32")."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, os.environ.get(TRITON_F32))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = torch_tf32
    set_triton_f32(None if torch_tf32 else FULL_FLOAT32)
    try:
        with jax.default_matmul_precision(jax_precision):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        set_triton_f32(saved[2])


def precision_settings() -> dict[str, str]:
    """The float32 matmul/conv precision each framework is set to (what GPU rows assume: TF32 off)."""
    return {"jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
            "torch.backends.cuda.matmul.allow_tf32": str(torch.backends.cuda.matmul.allow_tf32),
            "torch.backends.cudnn.allow_tf32": str(torch.backends.cudnn.allow_tf32),
            TRITON_F32: os.environ.get(TRITON_F32, "unset (Triton's default: TF32)")}


def _cell(row: TapRow, run: str) -> str:
    nan, inf = row.nonfinite.get(run, (0, 0))
    return "·" if nan == inf == 0 else f"{nan}/{inf}"


def format_report(report: Report, all_parameters: bool = False) -> str:
    runs = [f"{fw}/{d}" for d in report.dtypes for fw in ("torch", "jax")]
    low = arbitrated_dtype(report.dtypes)
    x = report.problem.batch.x
    lines = [
        f"source: {report.problem.source}",
        f"batch: {'×'.join(map(str, x.shape))} sha1 {batch_hash(x)}"
        + ("" if report.problem.batch.y is not None else " (no labels: the loss uses all-zero labels)")
        + _mask_words(report.problem.batch.valid)
        + "; eval mode (dropout off); " + " ".join(f"{k} {v}" for k, v in versions().items()),
        f"device: {report.device}" + ("; " + ", ".join(f"{k}={v}" for k, v in report.precision.items())
                                      if report.device == "gpu" else ""),
        *_history_lines(report.problem),
    ]
    if report.verdict == "WEIGHTS":  # found before anything ran: no rows
        lines.append(f"the weights hold NaN/Inf in {len(report.findings)} of {len(report.problem.weights)} tensors")
        lines += _verdict_lines(report) + [WEIGHTS_FIX] + [f"note: {note}" for note in report.notes]
        return "\n".join(lines)
    lines += [
        "columns: NaN/Inf counts per run (· = none); max_rel = max|jax−torch| / max|torch| per dtype; "
        f"err64 = RMSE of each side's {low} against torch float64; * = born here; "
        "(rounding) = beyond tolerance at float32, but neither side farther from float64, or both sides "
        "within float32's bound on a sum of that many terms; "
        "(amplified) = beyond tolerance at float32, but each side's stage gives the other's result on the "
        "other's inputs (replay): rounding amplified by a discontinuity (a top-k near tie), or inherited from one",
    ]
    name_width = max(12, *(len(r.name) for r in report.rows))
    header = (f"{'row':<{name_width}} {'shape':<16}" + "".join(f" {run.replace('float', 'f'):>11}" for run in runs)
              + "".join(f" {'rel ' + d.replace('float', 'f'):>9}" for d in report.dtypes)
              + f" {'err64 t':>9} {'err64 j':>9}  verdict")
    lines += [header, "-" * len(header)]
    hidden = 0
    for row in report.rows:
        if row.kind == "parameters" and row.verdict == "CLEAN" and not (row.amplified or row.rounding) and not all_parameters:
            hidden += 1
            continue
        shape = "×".join(map(str, row.shape)) or "()"
        rel = "".join(f" {row.compare[d].max_rel:>9.1e}" if d in row.compare else f" {'-':>9}" for d in report.dtypes)
        err = "".join(f" {row.err64[k]:>9.1e}" if k in row.err64 else f" {'-':>9}" for k in ("torch", "jax"))
        verdict = (" (rounding)" if row.rounding else " (amplified)" if row.amplified else "") if row.verdict == "CLEAN" else \
            ("*" if row.born else " ") + row.verdict
        if row.verdict != "CLEAN" and row.side and row.side not in ("both", "neither"):
            verdict += f" ({row.side}; {row.dropped_by} dropped the NaN)" if row.dropped_by else f" ({row.side})"
        lines.append(f"{row.name:<{name_width}} {shape[:16]:<16}" + "".join(f" {_cell(row, r):>11}" for r in runs)
                     + rel + err + "  " + verdict)
    if hidden:
        lines.append(f"({hidden} parameter groups clean, not shown; --all-parameters shows them)")
    lines.append("")
    if not any(row.bad(run) for row in report.rows for run in row.nonfinite):
        lines.append(f"no NaN or Inf in any run ({', '.join(report.dtypes)}, eval mode: dropout off): a NaN met in "
                     "training was not reproduced here (a train-mode step's dropout is not replayed). The original "
                     "trains under float16 autocast on CUDA where its training.mixed_precision is true (the load "
                     "notes say what a checkpoint's own config set); autocast "
                     "keeps norms, cosine similarity and rsqrt in float32, which no run here emulates: "
                     "--dtype float64,float32,float16 casts the whole model to float16, where the edge features' "
                     "eps² (1e-16) is 0 and edge_features reads PRECISION on any batch.")
    lines += _verdict_lines(report)
    for entry in report.replay:
        status = "agrees" if entry["passed"] else "differs"
        if not entry["passed"] and entry["max_rel"] == 0 and len(set(entry["nonfinite"].values())) == 1:
            status = "differs: as many non-finite values, not all at the same places or of the same kind (NaN, Inf)"
        lines.append(f"  replay {entry['tap']} {entry['dtype']}: {entry['direction']}: max_rel {_e(entry['max_rel'])}"
                     f", non-finite {entry['nonfinite']['result']} vs {entry['nonfinite']['expected']}: {status}")
    lines.append(f"next: {next_step(report)}")
    params = report.nonfinite_parameters()
    if params:
        lines.append(f"non-finite parameter gradients ({len(params)} modules):")
        shown = params if len(params) <= MAX_MODULES_SHOWN else _by_top_module(params)
        for module, counts in shown.items():
            lines.append(f"  {module}: " + ", ".join(f"{run} {n}" for run, n in counts.items()))
        if shown is not params:
            lines.append("  (summed per top-level module; every module is in the JSON report)")
    if report.growth is not None:
        lines.append(report.growth.line())
    eigh = report.eigh
    if eigh.get("computed"):
        lines.append(f"eigh: {eigh['graphs_with_repeats']} of {eigh['graphs']} graphs hold repeated eigenvalues "
                     f"(gap <= max(tau {eigh['tau']:g}, {eigh['rounding_of']} rounding), {eigh['from']}), "
                     f"{eigh['graphs_with_repeats_in_pe']} among the {eigh['k']} smallest (the PE's: not unique there)")
        lines.extend(shown_lines([f"batch {entry['batch']} step {entry['step']}: λ = {entry['eigenvalue']:.6g} "
                                  f"×{entry['multiplicity']}" for entry in eigh["repeated"]],
                                 where=" in the JSON report"))
    for key, message in report.errors.items():
        lines.append(f"raised: {key}: {message}")
    for note in report.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


# the rows whose NaN the Laplacian PE's eigh gradient makes where eigenvalues repeat (DESIGN.md §2)
EIGH_GRADIENT_ROWS = (BACKWARD + "pe", BACKWARD + "adjacency")


def _history_lines(problem: Problem) -> list[str]:
    """A dump's run before its failing step: loss, grad norm and lr of its last train records."""
    if not problem.history:
        return []
    return [f"the run before this step ({problem.history_file}, the last {len(problem.history)} train records):",
            *(f"  step {r['step']}: loss {_g(r.get('loss'))}, grad norm {_g(r.get('grad_norm'))}, lr {_g(r.get('lr'))}"
              + (" (skipped)" if r.get("skipped_now") else "") for r in problem.history)]


def _g(value) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)  # metrics.jsonl writes NaN as "nan"


def next_step(report: Report) -> str:
    """What to do about the verdict: the one line a person acts on."""
    row, detail = (report.first.row, report.first.detail) if report.first else ("", "")
    config = getattr(report.problem.config, "model", None)  # a report made by hand may have none
    growth = getattr(report, "growth", None)
    if growth is not None and growth.diverged and report.verdict in DIVERGED_VERDICTS:
        return NEXT_STEPS["DIVERGED"].format(median=growth.median, lr=report.problem.config.train.lr,
                                             scale=growth.typical_init)
    if report.verdict == "MODEL" and "float64" not in report.dtypes and not detail.startswith("the PE is not unique"):
        return NEXT_STEPS["UNARBITRATED"].format(row=row, dtypes=",".join(report.dtypes))
    # a NaN the eigh gradient makes comes first: a non-unique PE born before it is no NaN
    eigh_nan = any(f.verdict == "MODEL" and f.row in EIGH_GRADIENT_ROWS for f in report.findings)
    if (eigh_nan or report.verdict == "MODEL" and row in EIGH_GRADIENT_ROWS) and config is not None \
            and config.stability.pe_gradient != "safe":
        return (f"the eigh gradient is undefined where eigenvalues repeat: set model.stability.pe_gradient=safe "
                f"(now {config.stability.pe_gradient}) and check it here with --set model.stability.pe_gradient=safe")
    if report.verdict == "MODEL" and detail.startswith("the PE is not unique"):  # verdicts.classify's
        return NEXT_STEPS["PE_NOT_UNIQUE"] + _not_the_originals_math(report)
    if report.verdict == "DATA" and not any(row.bad(run) for row in report.rows for run in row.nonfinite):
        failed = ORIGINAL_FAILED_BATCH if report.problem.kind == "original" else "the dump training wrote at the step that failed"
        return NEXT_STEPS["DATA_FINITE"].format(failed=failed) + _not_the_originals_math(report)  # no NaN came of it
    if report.verdict == "DATA" and report.problem.batch is not None:
        bad = suspect_windows(report.problem, report.extreme)
        others = [w for w in report.problem.windows or range(len(report.problem.batch.x)) if w not in bad]
        if bad and others:  # one bad window makes every gradient non-finite (the loss is their mean)
            return NEXT_STEPS["DATA_SOME"].format(bad=shown_inline(bad), others=",".join(map(str, others)))
    if report.verdict == "CLEAN" and report.problem.kind == "original":
        return NEXT_STEPS["CLEAN_ORIGINAL"] + _not_the_originals_math(report)
    if report.verdict == "PRECISION" and growth is not None and growth.outliers:
        grown = growth.outliers
        return NEXT_STEPS["PRECISION_GROWN"].format(
            row=row, top=report.dtypes[0] if report.dtypes else "float64", n=len(grown),
            tensors=shown_inline([f"{name} {growth.ratio[name]:.3g}x" for name in grown]),
            outlier=OUTLIER_GROWTH)
    if report.verdict == "PRECISION" and "float32" in detail.partition("non-finite at ")[2]:
        return NEXT_STEPS["PRECISION_FLOAT32"].format(row=row)
    return NEXT_STEPS[report.verdict].format(row=row, top=report.dtypes[0] if report.dtypes else "float64")



def _not_the_originals_math(report: Report) -> str:
    """For an original checkpoint run with model.stability other than the original's (guards
    original, pe_gradient full): the --set that runs its math, which a verdict of no NaN says
    nothing about (common/original.py config_notes says so on loading)."""
    config = getattr(report.problem.config, "model", None)
    if report.problem.kind != "original" or config is None:
        return ""
    stability, sets = config.stability, original.stability_sets(config)
    if not sets:
        return ""
    return (f". This ran with model.stability guards {stability.guards}, pe_gradient {stability.pe_gradient}, "
            f"not the original's: {' '.join(sets)} runs the math it trained with")

# where an original checkpoint's user finds the batch that failed (the original writes no weights dump)
ORIGINAL_FAILED_BATCH = ("the batch the original saved at the step that failed (debug/bad_batch_<step>.pt) with the "
                         "last checkpoint saved before it (best.pt holds the best epoch's weights, not the failing "
                         "step's)")

# verdict -> what to do about it ({row}: where it was born), and the cases of a verdict that want
# other advice (next_step)
NEXT_STEPS = {
    "DATA": "fix or leave out the recording the bad windows come from (python -m jaxbrr.data inspect EDF shows how "
            "it reads): the NaN here is the data's, not the model's",
    "DATA_SOME": "fix or leave out the recording that windows {bad} come from (python -m jaxbrr.data inspect EDF "
                 "shows how it reads). One bad window makes every gradient non-finite (the loss is a mean over "
                 "windows), which hides what the model does on the others: --windows {others} localizes them alone",
    "UNARBITRATED": "both frameworks are non-finite at {row} in {dtypes}, and no float64 run says whether the math "
                    "is undefined there (MODEL) or the values leave the precision's range (PRECISION): run it again "
                    "with --dtype float64,{dtypes}",
    "CLEAN_ORIGINAL": "nothing to fix in this batch with these weights: a NaN met in training came from another "
                      "batch, or from a train-mode step's dropout; localize " + ORIGINAL_FAILED_BATCH,
    "DATA_FINITE": "the batch is bad as given (the verdict line), yet every run stayed finite on it with these weights: "
                   "fix or leave out that recording if its values are artefacts (python -m jaxbrr.data inspect EDF "
                   "shows how it reads); a NaN met in training came from elsewhere (another batch, or a train-mode "
                   "step's dropout): localize {failed}",
    "MODEL": "the math of {row} is undefined on this input even in float64, in both frameworks: change the model "
             "there (a config field that names the guard, or the input range it accepts), then check the change "
             "here with --set FIELD=VALUE on this same batch",
    "FRAMEWORK": "one framework's {row} is non-finite where the other's is finite: its op (named above) is the "
                 "cause, not the model; keep the batch and weights (--json) for a report upstream, or train with "
                 "the other twin",
    "PRECISION": "finite in {top}, not in a lower precision at {row}: run it in float32 (model.precision: "
                 "float32, the default) or bring its values into that precision's range; --dtype "
                 "float64,float32,bfloat16 shows which precisions fail",
    "PRECISION_FLOAT32": "finite in float64, non-finite in float32 at {row}: its values leave float32's range "
                         "there; find what grows them in the rows above it, and bound that (a guard a config field "
                         "names) rather than the NaN",
    "PRECISION_GROWN": "finite in {top}, not in a lower precision at {row}, with {n} weight tensor(s) grown far "
                       "from their scale at init ({tensors}; at {outlier:g}x and more a tensor is past what healthy "
                       "training does): those weights carry the values out of range, not the model's math. Use a "
                       "checkpoint saved before they grew, and find what grew them (the learning rate, or a step "
                       "whose loss or gradient norm jumped in the training log); a guard at {row} would only hide "
                       "them",
    "PE_NOT_UNIQUE": "the twins' PEs differ with neither wrong: a repeated eigenvalue among the k smallest leaves "
                     "its eigenvectors any basis of its eigenspace, and each eigensolver picks its own; no NaN comes "
                     "from this, and neither twin has a bug here",
    "DRIFT": "torch and jax compute {row} differently beyond the parity table: a bug in the drifting side's "
             "implementation of that stage (parity/test_modules.py compares each stage on its own)",
    "CLEAN": "nothing to fix in this batch with these weights: a NaN met in training came from elsewhere (another "
             "batch, or a train-mode step's dropout); localize the dump training wrote at the step that failed",
    "WEIGHTS": WEIGHTS_FIX,
    "DIVERGED": "the weights have grown {median:.3g}x from their scale at init (the weights line): training diverged "
                "before this step, and that is the cause to fix, whatever stage first leaves its range. Lower "
                "train.lr ({lr:g} here: Adam moves every weight by about lr a step, and a typical weight's scale at "
                "init is {scale:.2g}), then resume from a checkpoint saved before loss and grad norm began to climb "
                "(metrics.jsonl)",
}
# the verdicts a diverged run's weights explain (parity/growth.py): not DATA (the batch is bad as
# given), FRAMEWORK or DRIFT (one side differs from the other on the same weights)
DIVERGED_VERDICTS = ("MODEL", "PRECISION", "CLEAN")


def _verdict_lines(report: Report) -> list[str]:
    lines = [f"VERDICT: {report.verdict}" + (f" at {report.first.row}: {report.first.detail}" if report.first else "")]
    for finding in report.findings:
        lines.append(f"  {finding.verdict:<9} {finding.row}: {finding.detail}")
        for framework, op in finding.op.items():
            lines.append(f"            op ({framework}): {op}")
    return lines


def _by_top_module(params: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """module -> run -> count, summed over each top-level module (tcn, node_mamba, ...)."""
    out: dict[str, dict[str, int]] = {}
    for module, counts in params.items():
        total = out.setdefault(module.split(".")[0], {})
        for run, n in counts.items():
            total[run] = total.get(run, 0) + n
    return out


def _e(value) -> str:
    return f"{value:.2e}" if isinstance(value, float) else str(value)


def plot_report(report: Report, path: Path) -> None:
    """Top: torch↔jax relative difference per row and dtype (log), tolerance marked; bottom: the
    non-finite fraction of every run per row; born findings labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report.rows if r.kind != "parameters" or r.verdict != "CLEAN"]
    names = [r.name for r in rows]
    index = np.arange(len(rows))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 0.42 * len(rows)), 7), sharex=True)
    for dtype, marker in zip(report.dtypes, "os^v", strict=False):
        values = np.array([r.compare[dtype].max_rel if dtype in r.compare else np.nan for r in rows])
        (line,) = top.semilogy(index, np.where(values > 0, values, np.nan), marker, label=f"max_rel {dtype}")
        exact = values == 0
        top.semilogy(index[exact], np.full(exact.sum(), IDENTICAL_FLOOR), marker, mfc="none", color=line.get_color())
        rtol = next((r.compare[dtype].rtol for r in rows if dtype in r.compare), None)
        if rtol:
            top.axhline(rtol, ls=":", lw=0.8, color=line.get_color())
    top.set_ylabel("|jax − torch| / max|torch|\n(hollow at the bottom: identical)", fontsize=9)
    top.legend(fontsize=8, loc="upper left")
    runs = [f"{fw}/{d}" for d in report.dtypes for fw in ("torch", "jax")]
    width = 0.8 / len(runs)
    for k, run in enumerate(runs):
        fraction = [sum(r.nonfinite.get(run, (0, 0))) / max(1, int(np.prod(r.shape))) for r in rows]
        bottom.bar(index + (k - (len(runs) - 1) / 2) * width, fraction, width, label=run)
    bottom.set_ylabel("non-finite fraction")
    bottom.set_ylim(0, 1.05)
    bottom.legend(fontsize=8, ncol=len(runs), loc="upper left")
    for k, row in enumerate(rows):
        if row.born and row.verdict != "CLEAN":
            for axis in (top, bottom):
                axis.axvline(k, color="crimson", lw=1, alpha=0.5)
            bottom.annotate(row.verdict, (k, 1.0), rotation=90, va="top", ha="right", fontsize=8, color="crimson")
    bottom.set_xticks(index, names, rotation=60, ha="right", fontsize=8)
    fig.suptitle(f"{report.problem.source} — verdict {report.verdict}"
                 + (f" at {report.first.row}" if report.first else ""), fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def write_json(report: Report, path: Path) -> None:
    """Atomically: a reader never sees half a report."""
    write_text(path, json.dumps(report.to_dict(), indent=1))
