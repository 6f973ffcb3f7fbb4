"""Gradient parity at full size on a CUDA GPU (`pytest -m gpu`; skipped without CUDA, run by
benchmarks/gpu_check.sh after the loops' GPU tests: its two full-size compiles, float32 and
float64, cost minutes that the cheaper tests should not wait behind).

configs/tusz.yaml, one 60 s window holding both classes, every edge kept (a top-k near tie would
be rounding's choice): forward, loss, every cotangent and every parameter gradient of the focal
loss, jaxbrr on the GPU against torchref on the GPU (its exact path), float32 and float64 on
both sides, judged as the localiser judges them (float64 arbitrates a float32 difference; a long
sum within float32's bound is rounding; parity/verdicts.py): CLEAN, with TF32 off on both sides.
Rehearsed on the CPU: CLEAN (BENCHMARKS.md, "NaN localiser")."""

from __future__ import annotations

import pytest
import torch

from parity import localize
from parity import problem as problem_lib
from parity import report as report_lib
from parity.runs import Batch
from parity.scenarios import eeg_windows
from parity.test_gpu import FULL, _jax_has_gpu, tf32_off  # noqa: F401 (a fixture)
from parity.test_model import FULL_SEED
from parity.tolerances import comparable_selection
from parity.twins import detector_pair

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (torch.cuda.is_available() and _jax_has_gpu()),
                       reason="needs a CUDA GPU visible to both torch and JAX"),
]


def test_full_size_gradients_through_the_localiser_on_the_gpu(tf32_off):  # noqa: F811
    pair = detector_pair(FULL, comparable_selection("float32"))
    x, y = eeg_windows(pair.config, n_windows=1, seed=FULL_SEED)  # 35 % of its samples in the seizure
    weights = {k: v.numpy() for k, v in pair.torch_model.state_dict().items()}
    problem = problem_lib.Problem(pair.config, weights, Batch(x, y), "full size on the GPU")
    report = localize.localize(problem, ["float32", "float64"], device="gpu")
    print(report_lib.format_report(report, all_parameters=True))
    assert report.verdict == "CLEAN", report.first
