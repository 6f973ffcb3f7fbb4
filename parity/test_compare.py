"""parity/compare.py and the rules of parity/tolerances.py on hand-made numbers."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from parity.compare import compare_arrays, compare_trees
from parity.tolerances import CHECKS, DTYPES, arbitrate, tolerance

NAN, INF = np.nan, np.inf


def test_table_has_every_row_and_refuses_others():
    for check in CHECKS:
        for dtype in DTYPES:
            rtol, atol = tolerance(check, dtype)
            assert 0 < atol < rtol < 1e-2
    assert tolerance("layer", torch.float32) == tolerance("layer", np.float32) == tolerance("layer", jnp.float32)
    assert tolerance("layer", "float32").rtol == 1e-5 and tolerance("model", "float32").rtol == 1e-4
    assert tolerance("grad", "float32").rtol == 1e-4 and tolerance("model", "float64").rtol == 1e-10
    with pytest.raises(KeyError, match="no tolerance"):
        tolerance("model", "bfloat16")  # bfloat16 has layer and grad rows only
    assert tolerance("layer", "bfloat16", "gpu") == tolerance("layer", "bfloat16") == (3e-2, 1e-5)
    with pytest.raises(KeyError, match="no tolerance"):
        tolerance("weights", "float32")
    with pytest.raises(KeyError, match="device"):
        tolerance("layer", "float32", "tpu")


def test_gpu_rows_are_tier_t4_float32_times_ten_and_float64_unchanged():
    for check in CHECKS:
        cpu, gpu = tolerance(check, "float32"), tolerance(check, "float32", "gpu")
        assert gpu.rtol == pytest.approx(10 * cpu.rtol, rel=1e-15) and gpu.atol == pytest.approx(10 * cpu.atol, rel=1e-15)
        assert tolerance(check, "float64", "gpu") == tolerance(check, "float64")
    row = compare_arrays("x", np.array([1.0 + 5e-4]), np.array([1.0]), "model", "float32", "gpu")
    assert row.passed and not compare_arrays("x", np.array([1.0 + 5e-4]), np.array([1.0]), "model", "float32").passed


def test_one_sided_nan_fails_with_its_count_and_is_not_masked():
    a = np.array([1.0, NAN, 3.0, NAN])
    b = np.array([1.0, 2.0, 3.0, 4.0])
    row = compare_arrays("x", a, b, "layer", "float32")
    assert not row.passed
    assert row.nan == (2, 0) and row.mask_mismatches == 2
    assert "non-finite masks differ at 2 position(s), first at (1,)" in row.reason
    assert row.max_abs == 0.0  # the finite positions agree; only the mask fails the row
    reverse = compare_arrays("x", b, a, "layer", "float32")  # the NaN on the reference side
    assert not reverse.passed and reverse.nan == (0, 2)


def test_same_nan_mask_with_equal_finite_values_passes():
    a = np.array([[1.0, NAN], [-2.0, 0.5]])
    b = np.array([[1.0 + 1e-6, NAN], [-2.0, 0.5]])
    row = compare_arrays("x", a, b, "layer", "float32")
    assert row.passed and row.nan == (1, 1) and row.mask_mismatches == 0
    assert row.index == (0, 0) and row.max_abs == pytest.approx(1e-6)


def test_inf_handling():
    same = compare_arrays("x", [INF, -INF, 1.0], [INF, -INF, 1.0], "layer", "float32")
    assert same.passed and same.inf == (2, 2) and same.scale == 1.0
    flipped = compare_arrays("x", [INF, 1.0], [-INF, 1.0], "layer", "float32")  # same count, other sign
    assert not flipped.passed and flipped.mask_mismatches == 1
    finite_vs_inf = compare_arrays("x", [1e30, 1.0], [INF, 1.0], "layer", "float32")
    assert not finite_vs_inf.passed and finite_vs_inf.inf == (0, 1)
    nan_vs_inf = compare_arrays("x", [NAN, 1.0], [INF, 1.0], "layer", "float32")
    assert not nan_vs_inf.passed and nan_vs_inf.nan == (1, 0) and nan_vs_inf.inf == (0, 1)


def test_relative_difference_is_relative_to_max_abs_reference():
    # |a − b| = (0.5, 0, 0.001); max |b| = 4 (the −4); max_rel = 0.5 / 4 = 0.125, not 0.5 / 0.5.
    a = np.array([1.0, -4.0, 2.001])
    b = np.array([0.5, -4.0, 2.0])
    row = compare_arrays("x", a, b, "model", "float32")
    assert row.max_abs == 0.5 and row.scale == 4.0 and row.max_rel == 0.125
    assert row.index == (0,) and (row.a_value, row.b_value) == (1.0, 0.5)
    assert not row.passed
    # The bound is atol + rtol·max|b|: 1e-8 + 1e-4·1000 = 0.1 passes an error of 0.09 anywhere.
    assert compare_arrays("x", [1000.0, 0.09], [1000.0, 0.0], "model", "float32").passed
    assert not compare_arrays("x", [1000.0, 0.11], [1000.0, 0.0], "model", "float32").passed
    # An all-zero reference: only atol remains.
    assert compare_arrays("x", [5e-9, 0.0], [0.0, 0.0], "model", "float32").passed
    zero = compare_arrays("x", [1e-6, 0.0], [0.0, 0.0], "model", "float32")
    assert not zero.passed and zero.max_rel == np.inf


def test_mixed_frameworks_and_shape_mismatch():
    row = compare_arrays("x", torch.ones(2, 3, requires_grad=True), jnp.ones((2, 3)), "layer", torch.float32)
    assert row.passed and row.shape == (2, 3) and row.dtype == "float32"
    bad = compare_arrays("x", np.ones((2, 3)), np.ones((3, 2)), "layer", "float32")
    assert not bad.passed and bad.reason == "shape (2, 3) vs (3, 2)"


def test_report_order_first_failure_format_and_json():
    a = {"tcn": np.ones(3), "mamba": np.array([1.0, NAN]), "head": np.zeros(2), "only_a": np.ones(1)}
    b = {"tcn": np.ones(3), "mamba": np.array([1.0, 2.0]), "head": np.ones(2), "only_b": np.ones(1)}
    report = compare_trees(a, b, "layer", "float32")
    assert [row.name for row in report.rows] == ["tcn", "mamba", "head", "only_a", "only_b"]
    assert not report.passed and report.first_failure.name == "mamba"
    assert report["only_a"].reason == "missing in b" and report["only_b"].reason == "missing in a"
    text = report.format()
    print(text)
    lines = text.splitlines()
    assert lines[3].startswith("tcn ") and lines[3].endswith("ok")
    assert "1/0" in lines[4] and "FAIL non-finite masks differ" in lines[4]
    assert lines[-1] == "passed: False; first failure: mamba"
    as_json = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert as_json["first_failure"] == "mamba" and as_json["rows"][1]["nan"] == [1, 0]
    assert compare_trees({"x": np.ones(2)}, {"x": np.ones(2)}, "grad", "float64").passed


def test_arbitrate_names_the_side_farther_from_float64():
    ref = np.linspace(-1.0, 1.0, 2000)  # >= 1000 elements: multiplier 2; tol = 1e-4 · 1 (model)
    noise = np.where(np.arange(2000) % 2, 1.0, -1.0)  # RMSE of c · noise is exactly c
    close, far = ref + 1e-6 * noise, ref + 1e-3 * noise
    assert arbitrate(close, far, ref) == "jax"
    assert arbitrate(far, close, ref) == "torch"
    assert arbitrate(far, ref - 1e-3 * noise, ref) == "both"  # equally far, both beyond tol = 1e-4
    assert arbitrate(close, ref - 2e-6 * noise, ref) == "neither"  # 2e-6 <= 2·1e-6 + 1e-5: rounding
    # The same 3.5e-5 vs 1e-5 is blamed on large tensors (3.5e-5 > 2·1e-5 + 1e-5) ...
    assert arbitrate(ref + 1e-5 * noise, ref + 3.5e-5 * noise, ref) == "jax"
    # ... but not on fewer than 1000 elements (multiplier 3: 3.5e-5 <= 3·1e-5 + 1e-5).
    small = slice(0, 500)
    assert arbitrate((ref + 1e-5 * noise)[small], (ref + 3.5e-5 * noise)[small], ref[small]) == "neither"
    # A NaN the float64 run does not have is an infinite error.
    nan_jax = close.copy()
    nan_jax[7] = NAN
    assert arbitrate(close, nan_jax, ref) == "jax"
    assert arbitrate(torch.tensor(nan_jax), torch.tensor(nan_jax), ref) == "both"
