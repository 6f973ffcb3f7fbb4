"""How far every float comparison of the test suite is from failing, under perturbed CPU kernels.

    python benchmarks/tolerance_margins.py --out margins/ [--only base,threads1] [PYTEST_ARGS ...]

The suite must pass on any x86-64 host, and hosts differ in how they round float32 reductions
(AVX2 vs AVX-512 kernels in oneDNN, MKL and ATen; thread counts; XLA:CPU's vectorisation). This
script runs pytest (default: the whole suite) once per perturbation below, each a different
reduction order of the same math, with benchmarks/margins_plugin.py recording every comparison's
margin = allowed / measured. It prints, per test file, the smallest margin over all
perturbations and where it occurred, then every comparison under MIN_MARGIN. A test whose margin
is under 3 is a test a different CPU can fail.

A compare_arrays row that fails inside a passing test (the localiser's planted drifts, a row
that is printed but not asserted) is tabulated separately, as how far it is past its tolerance.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIN_MARGIN = 3.0

# name -> (environment, what it changes). Each was checked to change float32 results here:
# ATen's vectorised kernels (ATEN_CPU_CAPABILITY), MKL's sgemm code path (MKL_CBWR), oneDNN's
# convolutions (ONEDNN_MAX_CPU_ISA; XLA:CPU's too), the thread split of reductions (OMP, Eigen),
# XLA:CPU's vector width.
PERTURBATIONS: dict[str, tuple[dict[str, str], str]] = {
    "base": ({}, "this machine's defaults"),
    "threads1": ({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                  "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"},
                 "one thread in torch/MKL, XLA's Eigen single-threaded"),
    "avx2": ({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2",
              "XLA_FLAGS": "--xla_cpu_max_isa=AVX2"},
             "an AVX2-only host: ATen, oneDNN, MKL and XLA capped at AVX2"),
    "generic": ({"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "MARGINS_TORCH_MKLDNN": "0",
                 "XLA_FLAGS": "--xla_cpu_prefer_vector_width=512"},
                "ATen's scalar kernels, MKL's compatible path, oneDNN off in torch, XLA 512-bit vectors"),
}


def run(name: str, out: Path, pytest_args: list[str]) -> dict:
    env_changes, _ = PERTURBATIONS[name]
    env = {**os.environ, **env_changes, "MARGINS_OUT": str(out / f"{name}.jsonl"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "margins_plugin", "-p", "no:cacheprovider", *pytest_args]
    start = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        code = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    return {"name": name, "returncode": code, "seconds": time.perf_counter() - start}


def load(out: Path, names: list[str]) -> list[dict]:
    records = []
    for name in names:
        path = out / f"{name}.jsonl"
        if path.exists():
            records += [{**json.loads(line), "perturbation": name} for line in path.read_text().splitlines()]
    return records


def _file(test: str) -> str:
    return test.split("::")[0]


def _fmt(margin: float) -> str:
    return "equal" if math.isinf(margin) else f"{margin:.3g}"


def summarise(records: list[dict]) -> str:
    failed = sorted({(r["test"], r["perturbation"]) for r in records
                     if r["kind"] == "outcome" and r["outcome"] == "failed"})
    failed_tests = {t for t, _ in failed}
    comparisons = [r for r in records if r["kind"] != "outcome" and r["test"]]
    held = [r for r in comparisons if r["passed"] or r["test"] in failed_tests]
    overshoot = [r for r in comparisons if not r["passed"] and r["test"] not in failed_tests]

    lines = ["| test file | comparisons | smallest margin | where (test, comparison, perturbation) |",
             "|---|---:|---:|---|"]
    by_file = defaultdict(list)
    for r in held:
        by_file[_file(r["test"])].append(r)
    for path in sorted(by_file):
        rows = by_file[path]
        worst = min(rows, key=lambda r: r["margin"])
        name = f"{worst['kind']} {worst['name']}".strip()
        lines.append(f"| {path} | {len(rows)} | {_fmt(worst['margin'])} | "
                     f"{worst['test'].split('::', 1)[-1]}: {name} ({worst['perturbation']}) |")

    thin = sorted((r for r in held if r["margin"] < MIN_MARGIN), key=lambda r: r["margin"])
    lines += ["", f"Comparisons under margin {MIN_MARGIN:g}: {len(thin)}"]
    seen = set()
    for r in thin:
        key = (r["test"], r["kind"], r["name"])
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"  {_fmt(r['margin']):>8}  {r['test']}  {r['kind']} {r['name']}  "
                     f"measured {r['measured']:.3g} allowed {r['allowed']:.3g} ({r['perturbation']})")

    by_test = defaultdict(list)
    for r in overshoot:
        by_test[(r["test"], r["name"])].append(r)
    lines += ["", "Rows past their tolerance inside passing tests (planted drifts, printed-only rows): "
              "the smallest measured/allowed"]
    for (test, name), rows in sorted(by_test.items()):
        worst = min(rows, key=lambda r: r["measured"] / r["allowed"] if r["allowed"] else math.inf)
        ratio = worst["measured"] / worst["allowed"] if worst["allowed"] else math.inf
        lines.append(f"  {ratio:>8.3g}  {test}  {name} ({worst['perturbation']})")

    lines += ["", f"Failed tests: {len(failed)}"] + [f"  {t} ({p})" for t, p in failed]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "margins")
    parser.add_argument("--only", default=",".join(PERTURBATIONS), help="perturbations to run, comma-separated")
    parser.add_argument("--summarise-only", action="store_true", help="tabulate what --out already holds")
    args, pytest_args = parser.parse_known_args(argv)
    names = args.only.split(",")
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        parser.error(f"unknown perturbation(s) {unknown}; choose from {list(PERTURBATIONS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.summarise_only:
        for name in names:
            env, what = PERTURBATIONS[name]
            print(f"{name}: {what}  {' '.join(f'{k}={v}' for k, v in env.items())}", flush=True)
            result = run(name, args.out, pytest_args)
            print(f"  pytest exit {result['returncode']} in {result['seconds']:.0f} s "
                  f"(log: {args.out / (name + '.log')})", flush=True)
    print(summarise(load(args.out, names)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
