"""Sensitivity at a fixed false-alarm rate: sweep the threshold over whole recordings.

Glossary
    S          eval.threshold_steps;  R  recordings;  n  samples in one recording's stitched trace
    tau_on     the onset threshold of the hysteresis, swept over the grid k / (S + 1), k = 1..S,
               and 1 - 10^-j, j = 3..7, above it (threshold_grid: G = S + up to 5 thresholds)
    tau_off    tau_on · (cfg.tau_off / cfg.tau_on): the configured ratio, so each operating point
               is the configured post-processing with both thresholds scaled (always in (0, tau_on])
    target     a seizure event of the reference: a run of seizure samples of a recording's labels
    hit        a target overlapped by a predicted event of its recording   (NEDC OVLP, seiz label)
    false alarm  a predicted event overlapping no target of its recording  (NEDC OVLP, seiz label)

At each threshold every recording is post-processed as evaluation does (hysteresis, morphology,
merge, duration: common/eval/postprocess.py) and counted with NEDC's any-overlap rule, exactly as
common/eval/nedc.py's `score_ovlp` counts the seiz label (tests/common/eval/test_sensitivity_at_fa.py
checks the two agree), but for the runs that long_events: drop takes out (below):

    sensitivity(tau_on) = Σ_r hits_r / Σ_r targets_r
    fa_per_24h(tau_on)  = Σ_r false_alarms_r / Σ_r duration_r · 86400      (durations in seconds)

    sensitivity at F FA/24h = max { sensitivity(tau_on) : fa_per_24h(tau_on) <= F, tau_on fires }

ties broken by the lower FA rate, then by the higher tau_on. A threshold fires when it makes a hit
or a false alarm somewhere; one above every recording's peak (the tail's, mostly) is the detector
that predicts nothing, which meets any target. When no threshold that fires meets F, the
operating point is that empty detector (sensitivity 0, FA 0) and says so (`met = False`, no
threshold): the original reported its default threshold's sensitivity there, a number measured at
an FA rate above the target (original_spec.md §4.8).

Runs that `long_events: drop` takes out (longer than max_duration_seconds) hit nothing, as in the
written events, but each one that overlaps no target still counts as a false alarm, as NEDC
would count it kept. Counted as the written events alone, a threshold low enough to turn a whole
background recording into one long run cost no false alarm: a detector that fired for the whole
hour scored a perfect sensitivity at 1 FA/24h (a review's repro). Dropping may lose a hit; it
never hides an alarm. At the configured threshold the sweep can therefore count more false alarms
than NEDC's scorer reads in the written files; evaluate names the dropped runs.

The tail 1 - 10^-j of the grid: a model whose outputs saturate (artefacts at 0.995, seizures at
0.999, as float32 sigmoids do) has no operating point at a low FA target below 0.99, where the
grid k / (S + 1) ends at the default S = 99; the original's bisection searched up to 1.

Why a grid and not the original's bisection: neither count is monotone in tau_on once events are
merged and filtered by duration (a lower threshold can join two false alarms into one, or grow a
short one past the minimum duration), so bisection can stop at a threshold that misses a better
one; a sweep looks at all of them. Cost: G post-processing passes over every sample (vectorised
numpy per recording; thresholds above a recording's peak cost nothing).

Metric names are fixed strings (FA_RATE_METRICS), never formatted from a float: the original's
"sensitivity_at_10.0fa" against "sensitivity_at_10fa" silently broke its early stopping
(original_spec.md §8 item 2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from common.config import PostprocessConfig
from common.eval.nedc import SECONDS_PER_DAY, overlapped
from common.eval.postprocess import runs, runs_and_long
from common.eval.recordings import Trace
from common.progress import ProgressLines

# FA/24h target -> its metric name. eval.fa_rates must be keys of this table.
FA_RATE_METRICS: dict[float, str] = {
    100.0: "sensitivity_at_100_fa_per_24h",
    50.0: "sensitivity_at_50_fa_per_24h",
    20.0: "sensitivity_at_20_fa_per_24h",
    10.0: "sensitivity_at_10_fa_per_24h",
    5.0: "sensitivity_at_5_fa_per_24h",
    2.5: "sensitivity_at_2.5_fa_per_24h",
    2.0: "sensitivity_at_2_fa_per_24h",
    1.0: "sensitivity_at_1_fa_per_24h",
    0.5: "sensitivity_at_0.5_fa_per_24h",
}


def metric_name(fa_per_24h: float) -> str:
    """The fixed metric name of one FA/24h target; ValueError for a target outside the table."""
    if fa_per_24h not in FA_RATE_METRICS:
        known = ", ".join(f"{rate:g}" for rate in FA_RATE_METRICS)
        raise ValueError(f"eval.fa_rates holds {fa_per_24h:g}, which has no metric name; "
                         f"choose among {known} (common/eval/sensitivity_at_fa.py FA_RATE_METRICS)")
    return FA_RATE_METRICS[fa_per_24h]


def threshold_grid(steps: int) -> np.ndarray:
    """tau_on values, ascending and strictly inside (0, 1): k / (steps + 1), k = 1..steps, then
    1 - 10^-j, j = 3..7, those above the last (module docstring)."""
    if steps < 1:
        raise ValueError(f"eval.threshold_steps must be >= 1, got {steps}")
    grid = np.arange(1, steps + 1) / (steps + 1)  # (steps,)
    tail = 1 - 10.0 ** -np.arange(3, 8)  # (5,) 0.999 .. 0.9999999
    return np.concatenate([grid, tail[tail > grid[-1]]])


def shown_threshold(value: float) -> str:
    """A threshold with 4 decimals, or up to 9 where that writes it exactly: the grid's tail
    0.999 .. 0.9999999 (and 0.75 of it) would all read 1.0000 (0.7500); 1/3 stays 0.3333."""
    for digits in range(4, 10):
        if abs(value - round(value, digits)) < 1e-12:
            return f"{value:.{digits}f}"
    return f"{value:.4f}"


def ovlp_counts(ref_starts: np.ndarray, ref_stops: np.ndarray, hyp_starts: np.ndarray, hyp_stops: np.ndarray,
                dropped: np.ndarray | None = None) -> tuple[int, int]:
    """(hits, false alarms) of one recording's predicted runs against its target runs, NEDC OVLP:
    [a, b) and [c, d) overlap when d > a and c < b. Both sets sorted and disjoint (runs of a mask),
    so the only candidate for an interval is the last run of the other set starting before it ends.
    dropped (R_hyp,) bool: runs that hit nothing but are false alarms all the same (module docstring).
    """
    credited = slice(None) if dropped is None else ~dropped
    hits = int(np.count_nonzero(overlapped(ref_starts, ref_stops, hyp_starts[credited], hyp_stops[credited])))
    false_alarms = int(np.count_nonzero(~overlapped(hyp_starts, hyp_stops, ref_starts, ref_stops)))
    return hits, false_alarms


def swept_config(cfg: PostprocessConfig, tau_on: float) -> PostprocessConfig:
    """cfg with tau_on and tau_off = tau_on · cfg.tau_off / cfg.tau_on (module docstring)."""
    return dataclasses.replace(cfg, tau_on=float(tau_on), tau_off=float(tau_on * cfg.tau_off / cfg.tau_on))


@dataclass(frozen=True)
class Sweep:
    """OVLP counts at every swept threshold, summed over the recordings."""

    tau_on: np.ndarray  # (G,)
    tau_off: np.ndarray  # (G,)
    hits: np.ndarray  # (G,) int
    false_alarms: np.ndarray  # (G,) int
    targets: int
    duration_seconds: float

    @property
    def sensitivity(self) -> np.ndarray:
        return self.hits / self.targets  # (G,)

    @property
    def fa_per_24h(self) -> np.ndarray:
        return self.false_alarms / self.duration_seconds * SECONDS_PER_DAY  # (G,)


def sweep(traces: Sequence[Trace], cfg: PostprocessConfig, steps: int, progress: bool = False,
          plain_lines: bool = False) -> Sweep:
    """Post-process every recording at every threshold of the grid and count OVLP hits and
    false alarms. The recordings' labels must hold at least one seizure (else sensitivity is
    undefined). Without a bar, `plain_lines` prints the recordings done as lines for a log."""
    if not traces:
        raise ValueError("no recordings to sweep")
    grid = threshold_grid(steps)
    hits = np.zeros(grid.size, np.int64)
    false_alarms = np.zeros(grid.size, np.int64)
    configs = [swept_config(cfg, t) for t in grid]
    drop = cfg.long_events == "drop"
    targets, duration = 0, 0.0
    lines = ProgressLines("threshold sweep", len(traces), "recordings") if plain_lines and not progress else None
    for trace in tqdm(traces, desc="threshold sweep", unit="rec", disable=not progress, leave=False):
        ref_starts, ref_stops = runs(np.asarray(trace.labels).astype(bool))
        targets += ref_starts.size
        duration += trace.probs.size / trace.sfreq
        # above the peak nothing turns on (0 hits, 0 FA); compared as hysteresis compares p >= tau_on,
        # in the trace's dtype (a float32 trace's 0.99999988, sigmoid(16), is >= 0.9999999 there)
        fire = np.flatnonzero(grid.astype(trace.probs.dtype) <= trace.probs.max()) if trace.probs.size else []
        for s in fire:
            # runs, not event_spans' split events: NEDC joins touching events of a label again
            hyp_starts, hyp_stops, long = runs_and_long(trace.probs, trace.sfreq, configs[s])
            hit, false_alarm = ovlp_counts(ref_starts, ref_stops, hyp_starts, hyp_stops, long if drop else None)
            hits[s] += hit
            false_alarms[s] += false_alarm
        if lines is not None:
            lines.update()
    if targets == 0:
        raise ValueError(f"the {len(traces)} recordings hold no seizure: sensitivity is undefined")
    if duration <= 0:
        raise ValueError("the recordings have no samples")
    tau_off = np.array([c.tau_off for c in configs])
    return Sweep(grid, tau_off, hits, false_alarms, targets, duration)


@dataclass(frozen=True)
class OperatingPoint:
    fa_target: float  # FA/24h
    met: bool  # False: no swept threshold meets the target; the empty detector stands in
    sensitivity: float
    fa_per_24h: float
    hits: int
    false_alarms: int
    targets: int
    tau_on: float | None
    tau_off: float | None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def sensitivity_at_fa(result: Sweep, fa_targets: Sequence[float]) -> dict[str, OperatingPoint]:
    """The best operating point under each FA/24h target, keyed by its fixed metric name."""
    names = [metric_name(t) for t in fa_targets]  # unknown targets fail before any work
    sensitivity, fa = result.sensitivity, result.fa_per_24h
    out = {}
    for target, name in zip(fa_targets, names, strict=True):
        allowed = np.flatnonzero((fa <= target) & (result.hits + result.false_alarms > 0))
        if allowed.size == 0:
            out[name] = OperatingPoint(float(target), False, 0.0, 0.0, 0, 0, result.targets, None, None)
            continue
        # best sensitivity, then lowest FA, then highest tau_on (lexsort: last key first)
        best = allowed[np.lexsort((-result.tau_on[allowed], fa[allowed], -sensitivity[allowed]))[0]]
        out[name] = OperatingPoint(
            float(target), True, float(sensitivity[best]), float(fa[best]), int(result.hits[best]),
            int(result.false_alarms[best]), result.targets, float(result.tau_on[best]),
            float(result.tau_off[best]))
    return out
