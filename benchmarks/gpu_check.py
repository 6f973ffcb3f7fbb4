"""The GPU check's driver (benchmarks/gpu_check.sh installs the wheelhouse, then runs this).

    python benchmarks/gpu_check.py --budget 480 --out OUT [--parts env,tests,bench] [--size full]

Parts, each in its own subprocess so that one failing reports and the rest still runs:

    env     versions, the device (nvidia-smi, torch, JAX), the TF32 defaults       -> env.json
    smoke   every project import, mamba_ssm's Triton Mamba2 forward+backward, the tiny model's
            forward in both frameworks on the device (a minute: run it alone first, before
            spending the budget, with --parts env,smoke)                           -> smoke.log
    tests   pytest -m gpu (parity/test_gpu.py, the mamba_ssm kernels, both loops)  -> gpu_tests.log, .xml
    bench   benchmarks/gpu_bench.py with what is left of the budget                -> bench.jsonl

then gpu_report.md (the figures BENCHMARKS.md quotes, the targets of issue 16 checked) and
gpu_check.json (all of it). The tests get at most --tests-share of the budget.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("env", "smoke", "tests", "bench")
REPORT_SECONDS = 10  # kept back for writing the report
TARGET_SPEEDUP = 1.25  # jaxbrr's train step over torchref's (mamba_ssm kernels), equal batch and precision
TARGET_MFU = 0.25  # bfloat16 model FLOP utilisation

ENV_PROBE = r"""
import json, os, platform, subprocess, sys
info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}
def version(name):
    try:
        from importlib.metadata import version as v
        return v(name)
    except Exception as error:
        return f"missing ({type(error).__name__})"
info["packages"] = {n: version(n) for n in ("torch", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex",
    "mamba-ssm", "triton", "torch-geometric", "numpy", "scipy", "mne", "pydantic", "einops")}
try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    info["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
except Exception as error:
    info["nvidia_smi"] = f"not available ({error})"
try:
    import torch
    info["torch_cuda"] = torch.version.cuda
    info["torch_device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    info["torch_tf32_defaults"] = {"matmul": torch.backends.cuda.matmul.allow_tf32,
                                   "cudnn": torch.backends.cudnn.allow_tf32}
except Exception as error:
    info["torch_error"] = repr(error)
try:
    import jax
    info["jax_devices"] = [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
    info["jax_default_matmul_precision"] = str(jax.config.jax_default_matmul_precision)
except Exception as error:
    info["jax_error"] = repr(error)
print(json.dumps(info))
"""


def _run(command: list[str], timeout: float, log: Path | None = None, env: dict | None = None) -> dict:
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=max(timeout, 1),
                              env={**os.environ, **(env or {})})
        out, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        out = (expired.stdout or b"").decode(errors="replace") if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        code = "timeout"
    if log is not None:
        log.write_text(out)
    return {"returncode": code, "seconds": time.perf_counter() - start, "output": out}


def part_env(out: Path, timeout: float) -> dict:
    result = _run([sys.executable, "-c", ENV_PROBE], timeout)
    lines = [line for line in result["output"].splitlines() if line.startswith("{")]
    info = json.loads(lines[-1]) if lines else {"error": result["output"][-2000:]}
    (out / "env.json").write_text(json.dumps(info, indent=1))
    return info


TEST_TIMEOUT = 300  # seconds one GPU test may take (pytest-timeout, where installed) before it fails
# In this order: JAX-side parity first; the first test that calls mamba_ssm's Triton kernels pays
# their compilation and autotuning (measured: over two minutes on a fresh H200 machine).
GPU_TEST_FILES = ("parity/test_gpu.py", "tests/jaxbrr/train/test_loop.py", "tests/torchref/test_mamba.py",
                  "tests/torchref/train/test_loop.py")


SMOKE = r"""
import time; start = time.perf_counter()
import importlib, jax, jax.numpy as jnp, numpy as np, torch
from flax import nnx
for name in ("common.config", "common.data.edf", "common.data.synth", "common.eval.szcore", "jaxbrr.train.loop",
             "jaxbrr.evaluate", "jaxbrr.predict", "torchref.train.loop", "parity.localize", "parity.twins"):
    importlib.import_module(name)
print(f"imports ok ({time.perf_counter() - start:.1f} s)")
from common.config import load_config
from parity.twins import detector_pair
from torchref.mamba import Mamba2
device = "cuda" if torch.cuda.is_available() else "cpu"
if device == "cuda":
    m = Mamba2(16, 8, 4, 2, 4, backend="cuda", device="cuda")
    u = torch.randn(4, 100, 16, device="cuda", requires_grad=True)
    m(u).square().sum().backward()
    print(f"mamba_ssm Triton Mamba2 forward+backward ok: |du| {u.grad.norm().item():.3g} ({time.perf_counter() - start:.1f} s)")
pair = detector_pair("configs/tiny.yaml")
x = np.random.default_rng(0).standard_normal((2, pair.config.model.n_chans, pair.config.window_samples)).astype(np.float32)
logits, _ = nnx.jit(lambda m, x: m(x))(pair.jax_model, jnp.asarray(x))
with torch.no_grad():
    expected, _ = pair.torch_model.to(device)(torch.from_numpy(x).to(device))
print(f"tiny forward on {jax.devices()[0].platform}/{device}: max |jax - torch| "
      f"{float(np.abs(np.asarray(logits) - expected.cpu().numpy()).max()):.3g} ({time.perf_counter() - start:.1f} s)")
print("SMOKE OK")
"""


def part_smoke(out: Path, timeout: float) -> dict:
    result = _run([sys.executable, "-c", SMOKE], timeout, out / "smoke.log", {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"})
    lines = result["output"].strip().splitlines()
    return {"returncode": result["returncode"], "seconds": result["seconds"], "ok": "SMOKE OK" in lines,
            "lines": [line for line in lines if "ok" in line or "forward" in line] or lines[-8:]}


def part_tests(out: Path, timeout: float) -> dict:
    xml = out / "gpu_tests.xml"
    # tee-sys: what a test prints reaches the log as it happens, and survives a stop at the budget
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-rA", "--capture=tee-sys", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", f"--junitxml={xml}", "-o", "junit_logging=system-out",
               "--durations=0", *GPU_TEST_FILES]
    if importlib.util.find_spec("pytest_timeout") is not None:
        command.append(f"--timeout={TEST_TIMEOUT}")
    # torch and JAX share the device in one process: JAX must not take 75 % of it up front
    result = _run(command, timeout, out / "gpu_tests.log", {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"})
    # killed at the budget: no XML, but -v printed each finished test's outcome
    tests = parse_junit(xml) if xml.exists() else parse_verbose(result["output"])
    return {"returncode": result["returncode"], "seconds": result["seconds"], "tests": tests,
            "summary": next((line for line in reversed(result["output"].splitlines())
                             if " passed" in line or " failed" in line or " skipped" in line
                             or " error" in line or "no tests ran" in line), result["returncode"])}


def parse_verbose(output: str) -> list[dict]:
    cases = []
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and "::" in parts[0] and parts[1] in ("PASSED", "FAILED", "SKIPPED", "ERROR"):
            cases.append({"name": parts[0], "outcome": parts[1].lower(), "seconds": 0.0,
                          "message": "(from the log: the run was stopped at the budget)", "measured": []})
    return cases


def parse_junit(path: Path) -> list[dict]:
    """One dict per test case: name, outcome, seconds, message, and the lines it printed that
    report a measured difference (max_rel / max_abs / VERDICT)."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (element.get("message") or element.text or "").strip().splitlines()[0][:300] \
                    if (element.get("message") or element.text) else ""
        printed = (case.findtext("system-out") or "").splitlines()
        measured = [line.strip() for line in printed
                    if any(key in line for key in ("max_rel", "VERDICT", "passed:", "near-tie", "arbitration"))]
        cases.append({"name": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0), "message": message, "measured": measured[:40]})
    return cases


def part_bench(out: Path, budget: float, size: str) -> dict:
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--budget", str(budget),
               "--out", str(out), "--size", size]
    result = _run(command, budget + 60, out / "bench.log")
    path = out / "bench.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {"returncode": result["returncode"], "seconds": result["seconds"], "rows": rows}


# -- the report ----------------------------------------------------------------------------------


def _f(value, spec: str = ".3g", missing: str = "–") -> str:
    return missing if value is None else format(value, spec)


def targets(rows: list[dict]) -> list[str]:
    """Issue 16's targets, each with the numbers it rests on; 'not measured' where a row is missing."""
    lines = []
    train = {(r["framework"], r["precision"], r["batch"]): r for r in rows
             if r.get("kind") == "train" and "step_s" in r}
    for (framework, precision, batch), jax_row in sorted(train.items(), key=str):
        torch_row = train.get(("torch", precision, batch))
        if framework != "jax" or torch_row is None:
            continue
        speedup = torch_row["step_s"] / jax_row["step_s"]
        verdict = "met" if speedup >= TARGET_SPEEDUP else "missed"
        lines.append(f"- jaxbrr / torchref throughput, {precision} B={batch}: {speedup:.2f}× "
                     f"(target ≥ {TARGET_SPEEDUP}×): {verdict}")
    mfus = [(r["batch"], r["framework"], r["mfu"]) for r in rows
            if r.get("kind") == "train" and r.get("precision") == "bfloat16" and "mfu" in r]
    if mfus:
        best = max(mfus, key=lambda m: m[2])
        verdict = "met" if best[2] >= TARGET_MFU else "missed"
        lines.append(f"- bfloat16 model FLOP utilisation, best: {best[2]:.1%} ({best[1]} B={best[0]}) "
                     f"(target ≥ {TARGET_MFU:.0%}): {verdict}")
    if not lines:
        lines.append("- not measured: no pair of jaxbrr/torchref train rows finished")
    return lines


def report(summary: dict) -> str:
    env, tests, bench = summary.get("env", {}), summary.get("tests", {}), summary.get("bench", {})
    lines = ["# GPU check", "",
             f"command: `{summary['command']}`; budget {summary['budget']:.0f} s, "
             f"finished in {summary['seconds']:.0f} s; size {summary['size']}", "", "## Machine", ""]
    if env:
        lines += [f"- device: {env.get('nvidia_smi') or env.get('torch_device')}",
                  f"- JAX devices: {env.get('jax_devices')}; torch CUDA {env.get('torch_cuda')}",
                  f"- Python {env.get('python')}, {env.get('cpus')} CPUs; "
                  + ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items()),
                  f"- TF32 defaults: torch {env.get('torch_tf32_defaults')}, JAX default matmul precision "
                  f"{env.get('jax_default_matmul_precision')}"]
    smoke = summary.get("smoke")
    if smoke:
        lines += ["", "## Smoke", "", *(f"- {line}" for line in smoke["lines"])]
    lines += ["", "## Tests (`pytest -m gpu`)", ""]
    if tests:
        lines += [f"{tests.get('summary')} ({tests.get('seconds', 0):.0f} s)", "",
                  "| test | outcome | s | measured |", "|---|---|---:|---|"]
        for case in tests.get("tests", []):
            measured = "<br>".join(case["measured"][:6]) or case["message"]
            lines.append(f"| {case['name'].split('.')[-1]} | {case['outcome']} | {case['seconds']:.1f} | "
                         f"{measured.replace('|', '/')} |")
    else:
        lines.append("not run")
    lines += ["", "## Benchmarks", ""]
    rows = bench.get("rows", [])
    peak = next((r for r in rows if r.get("kind") == "peak"), None)
    if peak and "tflops" in peak:
        lines.append(f"bfloat16 matmul peak ({peak['n']}³, torch): {peak['tflops']:.0f} TFLOP/s")
    lines += ["", "| framework | precision | B | first step s | step s | windows/s | peak GB | MFU | note |",
              "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.get("kind") != "train":
            continue
        note = r.get("skipped") or r.get("error") or ("remat" if r.get("remat") else r.get("backend", ""))
        lines.append(f"| {r['framework']} | {r['precision']} | {r['batch']} | {_f(r.get('first_step_s'), '.1f')} | "
                     f"{_f(r.get('step_s'), '.4f')} | {_f(r.get('windows_per_s'), '.1f')} | "
                     f"{_f(r.get('peak_memory_gb'), '.1f')} | {_f(r.get('mfu'), '.1%')} | {note} |")
    for r in rows:
        if r.get("kind") == "inference":
            lines.append(f"\ninference ({r['precision']}, B={r['batch']}): "
                         + (f"{r['eeg_hours_per_minute']:.1f} h of EEG per minute ({r['windows_per_s']:.0f} windows/s, "
                            f"stride 10 s)" if "eeg_hours_per_minute" in r else r.get("skipped") or r.get("error")))
        if r.get("kind") == "eigh":
            lines.append(f"\neigh PE (fwd+bwd, B={r['batch']}, {r.get('graphs', '?')} graphs): "
                         + (f"{r['pe_s'] * 1e3:.1f} ms" + (f", {r['share_of_step']:.1%} of the float32 step"
                                                            if "share_of_step" in r else "")
                            if "pe_s" in r else r.get("skipped") or r.get("error")))
    lines += ["", "## Targets", "", *targets(rows)]
    failed = [name for name, part in (("tests", tests), ("bench", bench)) if part and part.get("returncode") not in (0,)]
    if failed:
        lines += ["", f"Parts that did not exit cleanly: {', '.join(failed)} (see their logs)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for everything (default %(default)s)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "gpu_check"))
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--tests-share", type=float, default=0.5, help="most of the budget the tests may take")
    parser.add_argument("--size", choices=("full", "tiny"), default="full", help="benchmark size (tiny: rehearsal)")
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {PARTS}")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    left = lambda: args.budget - (time.monotonic() - start) - REPORT_SECONDS  # noqa: E731
    summary = {"command": " ".join(["benchmarks/gpu_check.sh", *(argv if argv is not None else sys.argv[1:])]),
               "budget": args.budget, "size": args.size}
    if "env" in parts:
        summary["env"] = part_env(args.out, min(60, left()))
        print(f"env: {summary['env'].get('nvidia_smi') or summary['env'].get('jax_devices')}", flush=True)
    if "smoke" in parts:
        summary["smoke"] = part_smoke(args.out, min(180, left()))
        print("smoke: " + " / ".join(summary["smoke"]["lines"]), flush=True)
    if "tests" in parts:
        summary["tests"] = part_tests(args.out, min(args.tests_share * args.budget, left()))
        print(f"tests: {summary['tests']['summary']}", flush=True)
    if "bench" in parts:
        summary["bench"] = part_bench(args.out, max(left(), 0), args.size)
        print(f"bench: {len(summary['bench']['rows'])} rows", flush=True)
    summary["seconds"] = time.monotonic() - start
    (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=1, default=str))
    text = report(summary)
    (args.out / "gpu_report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
