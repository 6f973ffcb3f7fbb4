"""The GPU check's CPU rehearsal (issue 16): the wheelhouse installs offline for the GPU image's
Python 3.12, and benchmarks/gpu_check.sh runs end to end at tiny size on the CPU, so the script,
its report and the wheel list keep working between the rare runs on a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_bench  # noqa: E402
import wheelhouse  # noqa: E402

pytestmark = pytest.mark.slow


def test_wheelhouse_installs_offline_for_python_312(tmp_path):
    wheels = tmp_path / "whl"
    assert wheelhouse.main(["--out", str(wheels)]) == 0
    manifest = json.loads((wheels / "MANIFEST.json").read_text())
    assert set(manifest["versions"]) == {*wheelhouse.CARRY, wheelhouse.MAMBA}
    assert len(manifest["wheels"]) == len(manifest["versions"]) and manifest["megabytes"] < wheelhouse.MAX_MEGABYTES
    mamba = next(w["file"] for w in manifest["wheels"] if w["file"].startswith("mamba_ssm-"))
    assert mamba.endswith("-py3-none-any.whl")
    # as the GPU machine installs them: no index, no dependencies, a private target, Python 3.12
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site),
                    "--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
                    *map(str, sorted(wheels.glob("*.whl")))], check=True)
    assert (site / "mamba_ssm" / "modules" / "mamba2.py").is_file()
    assert list((site / "pydantic_core").glob("_pydantic_core.cpython-312-x86_64-linux-gnu.so"))


def test_the_cpu_rehearsal_runs_every_part_and_writes_the_report(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--budget", "45", "--out", str(out),
                           "--size", "tiny"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["env"]["packages"]["torch"].startswith("2.") and summary["env"]["jax_devices"] == ["cpu:cpu"]
    tests = summary["tests"]["tests"]
    names = {t["name"].split("::")[-1].split("[")[0] for t in tests}
    assert {"test_full_size_cuda_backend_matches_the_exact_path", "test_eigh_scenarios_on_cusolver",
            "test_cuda_backend_matches_torch_backend_at_full_size",
            "test_three_steps_on_the_gpu_with_mamba_ssm_kernels"} <= names
    assert all(t["outcome"] == "skipped" and t["message"] for t in tests)  # no CUDA here: skipped, saying why
    rows = [json.loads(line) for line in (out / "bench.jsonl").read_text().splitlines()]
    assert len(rows) == len(gpu_bench.rows_for("tiny"))  # every row accounted for, none silently dropped
    assert all(("skipped" in r) or ("error" in r) or ("wall_s" in r) for r in rows)
    assert rows[0]["kind"] == "peak" and rows[0]["tflops"] > 0
    report = (out / "gpu_report.md").read_text()
    assert summary["smoke"]["ok"], summary["smoke"]["lines"]
    for heading in ("## Machine", "## Smoke", "## Tests (`pytest -m gpu`)", "## Benchmarks", "## Targets"):
        assert heading in report
