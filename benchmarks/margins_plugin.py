"""pytest plugin: the margin of every float comparison a test makes, written as JSON lines.

    PYTHONPATH=benchmarks MARGINS_OUT=margins.jsonl pytest -p margins_plugin parity/

benchmarks/tolerance_margins.py runs the suite under perturbed CPU kernels with this plugin and
tabulates the result; see its docstring. For each comparison the record holds what was measured,
what the tolerance allowed, and `margin = allowed / measured` (inf when the two sides are equal):

    parity.compare.compare_arrays   measured max |a − b|, allowed atol + rtol · max |b|
                                    (a mask mismatch is margin 0). Also the localiser's rows, some
                                    of which are meant to fail: `passed` says which way it went.
    parity.tolerances.arbitrate     the float64 arbitration's decision: how far each RMSE is from
                                    the threshold that would have changed the answer
    parity.compare.assert_within_bounds   measured max |Δ|/bound, allowed 1 (per-element derived bounds)
    numpy.testing.assert_allclose   elementwise: min over elements of (atol + rtol·|desired|) / |diff|
    torch.testing.assert_close      the same, with torch's dtype defaults when rtol/atol are None

Nothing here changes what a test computes or asserts: each wrapper measures, then calls the
original function with the same arguments.
"""

from __future__ import annotations

import functools
import json
import math
import os

import numpy as np
import pytest

_records: list[dict] = []
_test: str | None = None


def _ratio(allowed: float, measured: float) -> float:
    if measured == 0:
        return math.inf
    return allowed / measured


def _record(kind: str, name: str, measured: float, allowed: float, passed: bool, **extra) -> None:
    _records.append({"test": _test, "kind": kind, "name": name, "measured": measured, "allowed": allowed,
                     "margin": _ratio(allowed, measured), "passed": passed, **extra})


def elementwise_margin(actual, desired, rtol: float, atol: float) -> tuple[float, float, float]:
    """(margin, measured, allowed) of an elementwise |actual − desired| <= atol + rtol·|desired|
    test: the element with the smallest allowed/|diff|. Non-finite positions must match exactly
    (as numpy and torch require); a mismatch there is margin 0."""
    actual = np.asarray(actual, np.float64)
    desired = np.broadcast_to(np.asarray(desired, np.float64), actual.shape)
    finite = np.isfinite(actual) & np.isfinite(desired)
    same_nonfinite = np.array_equal(actual[~finite], desired[~finite], equal_nan=True)
    if not same_nonfinite:
        return 0.0, math.inf, 0.0
    if not finite.any():
        return math.inf, 0.0, 0.0
    diff = np.abs(actual[finite] - desired[finite])
    allowed = atol + rtol * np.abs(desired[finite])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(diff == 0, np.inf, allowed / diff)
    worst = int(np.argmin(ratios))
    return float(ratios[worst]), float(diff[worst]), float(allowed[worst])


def _wrap_compare_arrays(module) -> None:
    original = module.compare_arrays

    @functools.wraps(original)
    def compare_arrays(name, a, b, check, dtype, device="cpu"):
        row = original(name, a, b, check, dtype, device)
        allowed = row.atol + row.rtol * row.scale
        measured = math.inf if row.mask_mismatches else row.max_abs
        _record("compare_arrays", name, measured, allowed, row.passed, check=check, dtype=row.dtype)
        return row

    module.compare_arrays = compare_arrays


def _wrap_assert_within_bounds(module) -> None:
    original = module.assert_within_bounds

    @functools.wraps(original)
    def assert_within_bounds(name, actual, expected, bounds):
        try:
            worst = original(name, actual, expected, bounds)
        except AssertionError:
            _record("assert_within_bounds", name, math.inf, 1.0, False)
            raise
        _record("assert_within_bounds", name, worst, 1.0, True)
        return worst

    module.assert_within_bounds = assert_within_bounds


def _wrap_arbitrate(module) -> None:
    original = module.arbitrate

    @functools.wraps(original)
    def arbitrate(torch32, jax32, ref64, check="model", device="cpu"):
        answer = original(torch32, jax32, ref64, check, device)
        ref = module._float64(ref64)
        finite = ref[np.isfinite(ref)]
        rtol, atol = module.tolerance(check, "float32", device)
        tol = atol + rtol * (float(np.abs(finite).max()) if finite.size else 0.0)
        multiplier = 3.0 if ref.size < 1000 else 2.0
        t, j = module._error(torch32, ref), module._error(jax32, ref)
        # every inequality the answer rests on, as (smaller side, larger side); the margin is the
        # tightest one's ratio (>= 1 for the answer given)
        blame_torch, blame_jax = (t, multiplier * j + tol / 10), (j, multiplier * t + tol / 10)
        conditions = {"torch": [blame_torch[::-1]], "jax": [blame_jax[::-1], blame_torch],
                      "neither": [blame_torch, blame_jax, (max(t, j), tol)],
                      "both": [blame_torch, blame_jax, (tol, max(t, j))]}[answer]
        measured, allowed = min(conditions, key=lambda c: _ratio(c[1], c[0]))
        _record("arbitrate", f"arbitrate → {answer}", measured, allowed, True, check=check)
        if answer != "jax":  # what most tests assert: jaxbrr is not the side that drifted
            _record("arbitrate", "arbitrate: jax not blamed", j, multiplier * t + tol / 10, True, check=check)
        return answer

    module.arbitrate = arbitrate


def _wrap_assert_allclose() -> None:
    original = np.testing.assert_allclose

    @functools.wraps(original)
    def assert_allclose(actual, desired, rtol=1e-7, atol=0, *args, **kwargs):
        margin, measured, allowed = elementwise_margin(actual, desired, rtol, atol)
        try:
            original(actual, desired, rtol, atol, *args, **kwargs)
        except AssertionError:
            _record("assert_allclose", "", measured, allowed, False, rtol=rtol, atol=atol)
            raise
        _record("assert_allclose", "", measured, allowed, True, rtol=rtol, atol=atol)

    np.testing.assert_allclose = assert_allclose


def _wrap_torch_assert_close() -> None:
    try:
        import torch
    except ImportError:
        return
    original = torch.testing.assert_close
    defaults = {torch.float16: (1e-3, 1e-5), torch.bfloat16: (1.6e-2, 1e-5), torch.float32: (1.3e-6, 1e-5),
                torch.float64: (1e-7, 1e-7)}

    @functools.wraps(original)
    def assert_close(actual, expected, *args, rtol=None, atol=None, **kwargs):
        if isinstance(actual, torch.Tensor) and actual.is_floating_point():
            default = defaults.get(actual.dtype, (0.0, 0.0))
            r = default[0] if rtol is None else rtol
            a = default[1] if atol is None else atol
            margin, measured, allowed = elementwise_margin(actual.detach().cpu().double().numpy(),
                                                           expected.detach().cpu().double().numpy(), r, a)
            passed = True
            try:
                original(actual, expected, *args, rtol=rtol, atol=atol, **kwargs)
            except AssertionError:
                passed = False
                raise
            finally:
                _record("assert_close", "", measured, allowed, passed, rtol=r, atol=a)
        else:
            original(actual, expected, *args, rtol=rtol, atol=atol, **kwargs)

    torch.testing.assert_close = assert_close


def pytest_configure(config):
    """Wrap before collection, so `from parity.compare import compare_arrays` binds the wrapper."""
    if os.environ.get("MARGINS_TORCH_MKLDNN") == "0":
        import torch

        torch.backends.mkldnn.enabled = False
    import parity.compare
    import parity.tolerances

    _wrap_compare_arrays(parity.compare)
    _wrap_assert_within_bounds(parity.compare)
    _wrap_arbitrate(parity.tolerances)
    _wrap_assert_allclose()
    _wrap_torch_assert_close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _test
    _test = item.nodeid
    yield
    _test = None


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        _records.append({"test": report.nodeid, "kind": "outcome", "when": report.when,
                         "outcome": report.outcome, "duration": report.duration})


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("MARGINS_OUT")
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        for record in _records:
            f.write(json.dumps(record, default=str) + "\n")
    os.replace(tmp, path)
