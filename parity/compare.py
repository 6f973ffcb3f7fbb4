"""Compare two arrays (or two dicts of named arrays): NaN/Inf masks first, then values.

    row = compare_arrays("logits", torch_logits, jax_logits, "model", "float32")
    report = compare_trees(torch_taps, jax_taps, "layer", "float32")
    print(report.format()); assert report.passed, report.first_failure

Masks first (DESIGN.md §4, parity_nan_anchors.md §0 point 2): the NaN, +Inf and −Inf positions
of the two sides must be identical. A NaN on one side only is a failure, reported with its count
and first index; NaNs are never zeroed or masked away before the values are compared (HF's
check_pt_flax_outputs does that, so a one-sided NaN passes there). Where both sides hold the same
infinity the values agree. Then, over the positions finite on both sides:

    max_abs = max |a − b|,   scale = max |b| (finite b),   max_rel = max_abs / scale,
    pass  <=>  masks equal and max_abs <= atol + rtol · scale   (parity/tolerances.py)

`b` is the reference side (torch, or float64). Inputs may be numpy, jax or torch arrays; the
arithmetic runs in float64.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from parity.tolerances import dtype_name, tolerance


def as_numpy(x) -> np.ndarray:
    """numpy, jax or torch array -> numpy (torch via .detach().cpu(); bfloat16 widened exactly)."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    return np.asarray(x)


@dataclass(frozen=True)
class Row:
    name: str
    check: str
    dtype: str
    shape: tuple | None  # None when the shapes differ or one side is missing
    passed: bool
    reason: str = ""  # why it failed; "" when it passed
    nan: tuple[int, int] = (0, 0)  # (a, b)
    inf: tuple[int, int] = (0, 0)  # (a, b)
    mask_mismatches: int = 0  # positions whose NaN/±Inf status differs between a and b
    max_abs: float = math.nan
    max_rel: float = math.nan  # max_abs / max|b|
    scale: float = math.nan  # max |b| over finite b
    index: tuple | None = None  # where max_abs occurs
    a_value: float = math.nan  # a and b at `index`
    b_value: float = math.nan
    rtol: float = math.nan
    atol: float = math.nan

    def to_dict(self) -> dict:
        return {key: _json(value) for key, value in dataclasses.asdict(self).items()}


def _json(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": strict JSON has no such numbers
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    return value


def _index(flat: int, shape: tuple) -> tuple:
    return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()


def compare_arrays(name: str, a, b, check: str, dtype, device: str = "cpu") -> Row:
    """One Row: masks, then max |a − b| against tolerance(check, dtype, device), b the reference."""
    dtype = dtype_name(dtype)
    rtol, atol = tolerance(check, dtype, device)
    meta = dict(name=name, check=check, dtype=dtype, rtol=rtol, atol=atol)
    a, b = as_numpy(a).astype(np.float64), as_numpy(b).astype(np.float64)
    if a.shape != b.shape:
        return Row(**meta, shape=None, passed=False, reason=f"shape {a.shape} vs {b.shape}")
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    mismatch = (nan_a != nan_b) | ((a == np.inf) != (b == np.inf)) | ((a == -np.inf) != (b == -np.inf))
    both_finite = np.isfinite(a) & np.isfinite(b)
    finite_b = np.abs(b[np.isfinite(b)])
    scale = float(finite_b.max()) if finite_b.size else 0.0
    meta.update(
        shape=a.shape, nan=(int(nan_a.sum()), int(nan_b.sum())),
        inf=(int(np.isinf(a).sum()), int(np.isinf(b).sum())),
        mask_mismatches=int(mismatch.sum()), scale=scale,
    )
    if both_finite.any():
        positions = np.flatnonzero(both_finite)
        diff = np.abs(a.ravel()[positions] - b.ravel()[positions])
        worst = positions[int(np.argmax(diff))]
        max_abs = float(diff.max())
        meta.update(max_abs=max_abs, index=_index(worst, a.shape),
                    a_value=float(a.ravel()[worst]), b_value=float(b.ravel()[worst]))
        meta["max_rel"] = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    else:
        meta.update(max_abs=0.0, max_rel=0.0)

    if mismatch.any():
        first = int(np.flatnonzero(mismatch)[0])
        reason = (f"non-finite masks differ at {int(mismatch.sum())} position(s), first at "
                  f"{_index(first, a.shape)}: a={a.ravel()[first]}, b={b.ravel()[first]}")
        return Row(**meta, passed=False, reason=reason)
    bound = atol + rtol * scale
    if meta["max_abs"] > bound:
        return Row(**meta, passed=False, reason=f"max_abs {meta['max_abs']:.3g} > atol + rtol·max|b| = {bound:.3g}")
    return Row(**meta, passed=True)


@dataclass
class Report:
    check: str
    dtype: str
    rows: list[Row] = field(default_factory=list)
    device: str = "cpu"

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    @property
    def first_failure(self) -> Row | None:
        return next((row for row in self.rows if not row.passed), None)

    def __getitem__(self, name: str) -> Row:
        return next(row for row in self.rows if row.name == name)

    def format(self) -> str:
        """A fixed-width table, one row per compared name, in the order given."""
        rtol, atol = tolerance(self.check, self.dtype, self.device)
        width = max([4, *(len(row.name) for row in self.rows)])
        header = (f"{'name':<{width}}  {'shape':<18} {'max_abs':>9} {'max_rel':>9} {'nan a/b':>11} "
                  f"{'inf a/b':>11}  {'argmax':<16} {'a':>11} {'b':>11}  status")
        lines = [f"check={self.check} dtype={self.dtype} device={self.device} rtol={rtol:g} atol={atol:g} "
                 f"(pass: masks equal and max_abs <= atol + rtol·max|b|)", header, "-" * len(header)]
        for row in self.rows:
            shape = "×".join(map(str, row.shape)) if row.shape is not None else "-"
            status = "ok" if row.passed else f"FAIL {row.reason}"
            index = ",".join(map(str, row.index)) if row.index is not None else "-"
            lines.append(
                f"{row.name:<{width}}  {shape:<18} {row.max_abs:>9.2e} {row.max_rel:>9.2e} "
                f"{f'{row.nan[0]}/{row.nan[1]}':>11} {f'{row.inf[0]}/{row.inf[1]}':>11}  {index:<16} "
                f"{row.a_value:>11.4g} {row.b_value:>11.4g}  {status}"
            )
        first = self.first_failure
        lines.append(f"passed: {self.passed}" + (f"; first failure: {first.name}" if first else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        first = self.first_failure
        return {"check": self.check, "dtype": self.dtype, "passed": self.passed,
                "first_failure": first.name if first else None,
                "rows": [row.to_dict() for row in self.rows]}


def compare_trees(a: Mapping, b: Mapping, check: str, dtype, device: str = "cpu") -> Report:
    """compare_arrays for every name, in a's order, then the names only b holds (each a failure)."""
    dtype = dtype_name(dtype)
    rtol, atol = tolerance(check, dtype, device)
    report = Report(check, dtype, device=device)
    for name in [*a, *(name for name in b if name not in a)]:
        if name in a and name in b:
            report.rows.append(compare_arrays(name, a[name], b[name], check, dtype, device))
        else:
            side = "b" if name in a else "a"
            report.rows.append(Row(name=name, check=check, dtype=dtype, shape=None, passed=False,
                                   reason=f"missing in {side}", rtol=rtol, atol=atol))
    return report


def assert_within_bounds(name: str, actual, expected, bounds) -> float:
    """|actual − expected| <= bounds elementwise (bounds broadcast: a derived error bound per
    element, e.g. parity.tolerances.eigenvector_bounds), NaN/Inf positions equal. Returns the
    largest |difference| / bound, for printing; raises AssertionError naming the worst element."""
    actual, expected = as_numpy(actual).astype(np.float64), as_numpy(expected).astype(np.float64)
    bounds = np.broadcast_to(np.asarray(bounds, np.float64), actual.shape)
    finite = np.isfinite(actual) & np.isfinite(expected)
    if not np.array_equal(np.isnan(actual), np.isnan(expected)) or not np.array_equal(
            actual[~finite & ~np.isnan(actual)], expected[~finite & ~np.isnan(expected)]):
        raise AssertionError(f"{name}: the NaN/Inf positions differ")
    ratio = np.where(finite, np.abs(actual - expected) / bounds, 0.0)
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape) if ratio.size else ()
    if ratio.size and ratio[worst] > 1:
        raise AssertionError(f"{name}: |Δ| = {abs(actual[worst] - expected[worst]):.3g} at {worst} exceeds its "
                             f"bound {bounds[worst]:.3g} ({ratio[worst]:.3g}×)")
    return float(ratio.max()) if ratio.size else 0.0
