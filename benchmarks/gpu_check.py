"""The GPU check's driver (benchmarks/gpu_check.sh installs the wheelhouse, then runs this).

    python benchmarks/gpu_check.py --budget 480 --out OUT [--parts env,tests,bench] [--size full]

Parts, each in its own subprocess so that one failing reports and the rest still runs:

    env     versions, the device (nvidia-smi, torch, JAX), the TF32 defaults       -> logs/env.json
    smoke   (not by default) every project import, mamba_ssm's Triton Mamba2 forward+backward,
            the tiny model's forward in both frameworks on the device: a first look on its own,
            --parts env,smoke (its Triton compile took over two minutes cold)     -> logs/smoke.log
    tests   pytest -m gpu (parity/test_gpu.py, the mamba_ssm kernels, jaxbrr's Pallas kernels, both loops) as two
            processes side by side: the tests marked `triton` (mamba_ssm's kernels, whose
            compiles are minutes of CPU work) beside the JAX-side ones; unless make triton-aot's
            kernels for this machine were seeded, a third fills Triton's cache for the bench's
            torch rows (gpu_bench.py --warm), for a bench in this call or the next on the same
            machine, and is stopped when the tests end, so that nothing shares the GPU with a
            timed row
                                                                  -> logs/gpu_tests_{jax,triton}.log, .xml
    bench   benchmarks/gpu_bench.py with what is left of the budget                -> bench.jsonl

then gpu_report.md (the figures BENCHMARKS.md quotes, the targets of issue 16 checked) and
gpu_check.json (all of it). The tests get at most --tests-share of the budget.

What comes back from a device run is at most eight files: the logs are packed into
logs.tar.xz, and what the compile caches gained in the run is handed back for the next run to
carry (the caches are seeded from .gpu-cache/ at the start, benchmarks/triton_aot.py's
precompiled mamba_ssm kernels among them): Triton's (kernels, launchers and, from the bench, its
autotuning picks) as triton_cache_STAMP[.N].tar.xz and JAX's persistent compilation cache as
jax_cache_STAMP.tar, STAMP the run's start (UTC), each part under 15 MiB (what does not fit is
left out and said so). The report is written before the packing
and again after; SIGTERM stops the parts' processes and still writes it; the processes also get
SIGKILL if this driver dies outright.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

import gpu_bench
import step_profile

from torchref.precision import FULL_FLOAT32, TRITON_F32

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("env", "smoke", "tests", "bench")
DEFAULT_PARTS = ("env", "tests", "bench")  # smoke is a quick look on its own: it compiles Triton alone, minutes
RESERVE_SECONDS = {"full": 40, "tiny": 10}  # kept back for packing what is handed back, and the report
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
    "mamba-ssm", "triton", "torch-geometric", "numpy", "scipy", "mne", "pydantic", "einops", "pytest", "pluggy")}
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
    if torch.cuda.is_available():
        info["torch_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        info["torch_sms"] = torch.cuda.get_device_properties(0).multi_processor_count
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


LIVE: set[subprocess.Popen] = set()  # what _spawn started and nobody has waited for


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _child_setup(parent: int) -> None:
    """In a child before exec: the stop signals unblocked again (_spawn blocks them around the
    fork), and SIGKILL when the parent dies (Linux's PR_SET_PDEATHSIG), so that a run killed
    outright (the device tool at its time limit) leaves nothing holding the GPU for the next
    call; a parent that died before the request was made means exit at once. This driver is
    single-threaded, where a preexec_fn is safe."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    gpu_bench.die_with_parent(parent)


def _spawn(command: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """command in its own process group (not its own session: whatever stops this run still
    reaches it) that dies with this process, stdout and stderr to log as they come (a run
    stopped at its limit keeps what it printed). A stop signal that arrives while it starts is
    held until it is in LIVE, where main() finds it to stop."""
    log.parent.mkdir(parents=True, exist_ok=True)
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        with open(log, "w") as handle:
            process = subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, text=True,
                                       env={**os.environ, **(env or {})}, process_group=0,
                                       preexec_fn=functools.partial(_child_setup, os.getpid()))
        LIVE.add(process)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return process


def _finish(process: subprocess.Popen, timeout: float) -> int | str:
    """Its exit status, or "timeout" once it has been stopped (its whole process group: pytest's
    and the bench's workers with it) after `timeout` seconds."""
    try:
        code = process.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        _stop(process)
        return "timeout"
    LIVE.discard(process)
    return code


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to its process group (pytest's and the bench's workers with it), then SIGKILL."""
    LIVE.discard(process)
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _run(command: list[str], timeout: float, log: Path, env: dict | None = None) -> dict:
    start = time.perf_counter()
    code = _finish(_spawn(command, log, env), timeout)
    return {"returncode": code, "seconds": time.perf_counter() - start, "output": log.read_text(errors="replace")}


def part_env(out: Path, timeout: float) -> dict:
    result = _run([sys.executable, "-c", ENV_PROBE], timeout, out / "logs" / "env.log")
    lines = [line for line in result["output"].splitlines() if line.startswith("{")]
    info = json.loads(lines[-1]) if lines else {"error": result["output"][-2000:]}
    (out / "logs" / "env.json").write_text(json.dumps(info, indent=1))
    return info


TEST_TIMEOUT = 300  # seconds one GPU test may take (pytest-timeout, where installed) before it fails
# In the order they run: what issue 16 requires first (parity on the GPU, the loops), the Pallas
# kernels' own tests last (each builds a float64 reference on the CPU; their bf16 tests run the
# float32 kernels on bf16-rounded inputs, two Triton compiles per stream): a budget that runs out
# cuts those. Every file holding a gpu- or triton-marked test (tests/benchmarks/test_gpu_check.py).
# The full-size gradients (two full-size compiles, minutes) come after the loops' cheaper tests.
GPU_TEST_FILES = ("parity/test_gpu.py", "tests/jaxbrr/train/test_loop.py", "tests/torchref/test_mamba.py",
                  "tests/torchref/train/test_loop.py", "tests/torchref/test_graph.py",
                  "parity/test_gpu_gradients.py", "tests/jaxbrr/test_ssd_kernel.py", "tests/jaxbrr/test_norm_kernel.py")
# Two pytest processes side by side. The first test that calls mamba_ssm's Triton kernels pays
# their compilation and autotuning (measured: over two minutes on a fresh H200 machine, all of it
# one CPU core), which the JAX-side tests would otherwise wait behind.
TEST_GROUPS = {"jax": "gpu and not triton", "triton": "gpu and triton"}
LIMIT_BYTES = 15 * 2**20  # one handed-back file (the device tool returns files up to 16 MiB, 8 in all)


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
    result = _run([sys.executable, "-c", SMOKE], timeout, out / "logs" / "smoke.log",
                  {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", **jax_cache_env("tests")})
    lines = result["output"].strip().splitlines()
    return {"returncode": result["returncode"], "seconds": result["seconds"], "ok": "SMOKE OK" in lines,
            "lines": [line for line in lines if "ok" in line or "forward" in line] or lines[-8:]}


def jax_cache_env(part: str) -> dict:
    """JAX's persistent compilation cache for one part, under $JAXBRR_JAX_CACHE: handed back
    with the results, seeded from .gpu-cache/ on the next run (a full-size train step compiled
    in 70 s on the H200)."""
    return {"JAX_COMPILATION_CACHE_DIR": str(cache_roots()["jax_cache"] / part), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "2"}


def part_tests(out: Path, timeout: float, size: str, warm: bool) -> tuple[dict, subprocess.Popen | None]:
    """Both test groups side by side (and, with `warm`, gpu_bench.py --warm); returns the
    summary and the warm process, still running or not, for main() to stop before the bench."""
    start = time.perf_counter()
    # torch and JAX share the device in one process: JAX must not take 75 % of it up front
    env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", **jax_cache_env("tests")}
    processes = {}
    for group, marker in TEST_GROUPS.items():
        # tee-sys: what a test prints reaches the log as it happens, and survives a stop at the budget
        command = [sys.executable, "-m", "pytest", "-m", marker, "-v", "-rA", "--capture=tee-sys",
                   "-p", "no:cacheprovider", "--continue-on-collection-errors",
                   f"--junitxml={out / 'logs' / f'gpu_tests_{group}.xml'}", "-o", "junit_logging=system-out",
                   "--durations=0", *GPU_TEST_FILES]
        if importlib.util.find_spec("pytest_timeout") is not None:
            command.append(f"--timeout={TEST_TIMEOUT}")
        processes[group] = _spawn(command, out / "logs" / f"gpu_tests_{group}.log", env)
    warmer = _spawn([sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--warm", "--size", size,
                     "--budget", str(max(timeout, 1)), "--out", str(out / "logs")], out / "logs" / "warm.log",
                    {"TRITON_CACHE_AUTOTUNING": "0"}) if warm else None
    deadline = time.monotonic() + timeout
    summary = {"returncode": 0, "tests": [], "groups": {}}
    for group, process in processes.items():
        code = _finish(process, deadline - time.monotonic())
        output = (out / "logs" / f"gpu_tests_{group}.log").read_text(errors="replace")
        xml = out / "logs" / f"gpu_tests_{group}.xml"
        # stopped at the budget: no XML (or a cut one), but -v printed each finished test's outcome
        try:
            summary["tests"] += parse_junit(xml) if xml.exists() else parse_verbose(output)
        except ET.ParseError:
            summary["tests"] += parse_verbose(output)
        summary["groups"][group] = {"returncode": code, "summary": next(
            (line.strip(" =") for line in reversed(output.splitlines())
             if " passed" in line or " failed" in line or " skipped" in line or " error" in line
             or "no tests ran" in line), str(code))}
        if code not in (0, 5):  # 5: nothing selected
            summary["returncode"] = code
    summary["seconds"] = time.perf_counter() - start
    summary["summary"] = "; ".join(f"{group}: {g['summary']}" for group, g in summary["groups"].items())
    return summary, warmer


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
                message = next(iter((element.get("message") or element.text or "").strip().splitlines()), "")[:300]
        printed = (case.findtext("system-out") or "").splitlines()
        measured = [line.strip() for line in printed
                    if any(key in line for key in ("max_rel", "VERDICT", "passed:", "near-tie", "arbitration"))]
        cases.append({"name": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0), "message": message, "measured": measured[:40]})
    return cases


def precompiled(seeded: dict, summary: dict) -> bool:
    """Whether make triton-aot's kernels were seeded and made for this machine (as far as the env
    part tells: without it, trusted)."""
    return seeded["aot"] is not None and aot_mismatch(seeded["aot"], summary.get("env", {})) is None


def part_bench(out: Path, budget: float, size: str, precompiled: bool = False) -> dict:
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--budget", str(budget),
               "--out", str(out), "--size", size, "--warm-log", str(out / "logs" / "warm.log"),
               *(["--precompiled"] if precompiled else [])]
    # only the bench's autotuning picks are kept (it has the GPU to itself; the tests and the warm
    # run share it, so their timings would pick at random)
    result = _run(command, budget + 60, out / "logs" / "bench.log",
                  {"TRITON_CACHE_AUTOTUNING": "1", **jax_cache_env("bench")})
    path = out / "bench.jsonl"
    rows = gpu_bench.json_lines(path.read_text()) if path.exists() else []
    return {"returncode": result["returncode"], "seconds": result["seconds"], "rows": rows}


# -- what comes back -------------------------------------------------------------------------------


def cache_roots() -> dict[str, Path]:
    """name -> folder of each compile cache this run filled (gpu_check.sh sets both)."""
    return {"triton_cache": Path(os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache"),
            "jax_cache": Path(os.environ.get("JAXBRR_JAX_CACHE", "/tmp/jaxbrr-jax-cache"))}


def cache_items(name: str, root: Path, seeded: dict[str, tuple[int, int]] | None = None) -> list[list[Path]]:
    """What must travel together, most valuable first: a Triton kernel's folder (its binary,
    metadata and, from the bench, the autotuning pick) newest first, since the bench compiles
    last; JAX's cache entries one file each, the bench's before the tests'. Left out: what
    .gpu-cache/ put there and this run did not change (`seeded`, from seed_caches())."""
    if not root.is_dir():
        return []
    seeded = seeded or {}
    if name == "triton_cache":
        folders = sorted((d for d in root.iterdir() if d.is_dir()
                          and not all(_unchanged(f, root, seeded) for f in d.rglob("*") if f.is_file())),
                         key=lambda d: -d.stat().st_mtime)
        return [sorted(d.rglob("*")) for d in folders]
    return [[f] for part in ("bench", "tests") for f in sorted((root / part).rglob("*"))
            if f.is_file() and not _unchanged(f, root, seeded)]


def _stat(file: Path) -> tuple[int, int]:
    info = file.stat()
    return info.st_size, info.st_mtime_ns


def _unchanged(file: Path, root: Path, seeded: dict[str, tuple[int, int]]) -> bool:
    """Whether `file` is one seed_caches() unpacked under `root`, as it was unpacked."""
    return seeded.get(str(file.relative_to(root))) == _stat(file)


def _write_tar(path: Path, root: Path, items: list[list[Path]], compress: bool = True) -> int:
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w:xz", preset=3) if compress else tarfile.open(tmp, "w") as tar:
        for group in items:
            for file in group:
                tar.add(file, arcname=str(file.relative_to(root)), recursive=False)
    os.replace(tmp, path)
    return path.stat().st_size


ARCHIVES = (".tar", ".tar.xz", ".tar.gz")  # what seed_caches() unpacks (not a half-written .tmp)
# What benchmarks/triton_aot.py's kernels were built for (Triton, Python, mamba_ssm, arch, SMs), at
# the root of its archive: the report compares it with this machine.
AOT_MANIFEST = "triton_aot.json"


def seed_caches(folder: Path) -> dict:
    """Unpack the triton_cache* and jax_cache* archives in `folder` (.gpu-cache/: earlier runs'
    and benchmarks/triton_aot.py's precompiled mamba_ssm kernels) into this run's cache folders
    (Python's tarfile: the image need not have xz). An archive that cannot be read is reported,
    never fatal. Returns {"archives": what was unpacked (or why not), "files": {cache: {relative
    path: (size, mtime_ns)}}}: what the archives put there, for hand_back() to leave out."""
    roots = cache_roots()
    archives, members = [], {name: set() for name in roots}
    found = sorted(p for p in folder.glob("*_cache*") if p.name.endswith(ARCHIVES)) if folder.is_dir() else []
    for archive in found:
        name = "triton_cache" if archive.name.startswith("triton") else "jax_cache"
        roots[name].mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(archive) as tar:
                files = [os.path.normpath(m.name) for m in tar.getmembers() if m.isfile()]  # "./a/b" is a/b
                tar.extractall(roots[name], filter="data")
            members[name].update(files)
            archives.append(archive.name)
        except Exception as error:  # truncated, not a tar, unwritable: the run goes on without it
            archives.append(f"{archive.name}: not unpacked ({type(error).__name__}: {error})")
    rehome_triton_groups(roots["triton_cache"])
    manifest = roots["triton_cache"] / AOT_MANIFEST
    try:
        aot = json.loads(manifest.read_text()) if manifest.is_file() else None
    except (OSError, ValueError):
        aot = None
    return {"archives": archives, "aot": aot,
            "files": {name: {path: _stat(roots[name] / path) for path in paths if (roots[name] / path).is_file()}
                      for name, paths in members.items()}}


def aot_mismatch(aot: dict | None, env: dict) -> str | None:
    """Why the precompiled kernels (their manifest `aot`) cannot be found here, if they cannot:
    built for another float32 dot precision than the check's torch side compiles under
    (FULL_FLOAT32: the tests by conftest.py, the bench's rows by torchref's configure_cuda, for
    train.tf32 false; an archive without
    the field is from before it was recorded: Triton's default), or another Triton, Python or
    mamba_ssm than the machine's (env part), or a GPU not sm_`arch`."""
    if not aot:
        return None
    f32 = aot.get("f32", "default")
    differ = [] if f32 == FULL_FLOAT32 else [f"{TRITON_F32} {f32} (this check runs {FULL_FLOAT32}: "
                                           "`python benchmarks/triton_aot.py build`)"]
    if not env:
        return "; ".join(differ) or None
    packages = env.get("packages") or {}
    here = {"triton": packages.get("triton"), "mamba_ssm": packages.get("mamba-ssm"),
            "python": ".".join(str(env.get("python", "")).split(".")[:2])}
    differ += [f"{key} {aot.get(key)} (this machine: {value})" for key, value in here.items()
               if value and str(aot.get(key)) != str(value)]
    capability, sms = env.get("torch_capability"), env.get("torch_sms")
    if capability and int(str(capability).replace(".", "")) != aot.get("arch"):
        differ.append(f"sm_{aot.get('arch')} (this GPU: {capability})")
    if sms and sms not in aot.get("sms", [sms]):  # only the gated-norm backward's few kernels
        differ.append(f"{aot.get('sms')} SMs (this GPU: {sms}; a few kernels are compiled here)")
    return "; ".join(differ) or None


def rehome_triton_groups(root: Path) -> int:
    """Point each kernel's group file at the files beside it under `root`. Triton (3.6,
    runtime/cache.py FileCacheManager.get_group) lists a kernel's files by absolute path and
    takes only those that exist: unpacked elsewhere than where they were compiled, the kernels
    would be compiled again. Returns how many group files were rewritten."""
    rewritten = 0
    for group in root.glob("*/__grp__*.json") if root.is_dir() else []:
        try:
            children = json.loads(group.read_text())["child_paths"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a group file Triton would read either
        here = {child: str(group.parent / child) for child in children if (group.parent / child).exists()}
        if here != children:
            group.write_text(json.dumps({"child_paths": here}))
            rewritten += 1
    return rewritten


def triton_kernels(root: Path) -> dict[str, str]:
    """{cache folder: kernel name} of the compiled kernels (a .cubin each) in a Triton cache."""
    if not root.is_dir():
        return {}
    return {d.name: next(d.glob("*.cubin")).stem for d in root.iterdir() if d.is_dir() and any(d.glob("*.cubin"))}


def kernel_origins(root: Path, seeded: dict[str, tuple[int, int]]) -> dict[str, dict[str, str]]:
    """The compiled kernels in a Triton cache by where their binary came from: "seeded" (unpacked
    from .gpu-cache/ and untouched) or "compiled" (written in this run, also over a seeded one)."""
    origins = {"seeded": {}, "compiled": {}}
    for folder, kernel in triton_kernels(root).items():
        seeded_binary = _unchanged(next((root / folder).glob("*.cubin")), root, seeded)
        origins["seeded" if seeded_binary else "compiled"][folder] = kernel
    return origins


def _bytes(group: list[Path]) -> int:
    return sum(f.stat().st_size + 512 for f in group if f.is_file())  # + a tar header each


def pack_cache(name: str, root: Path, out: Path, limit: int = LIMIT_BYTES, max_parts: int = 2,
               compress: bool = True, seeded: dict[str, tuple[int, int]] | None = None,
               stem: str | None = None) -> dict:
    """root's items (cache_items(), most valuable first) in at most max_parts files of at most
    `limit` bytes: name.tar.xz, or name.1.tar.xz, name.2.tar.xz ...; without `compress` (JAX's
    entries are compressed already) name.tar. At most three passes over the data: the whole
    (compressed: to learn the ratio), then the items placed first-fit by their estimated size,
    then a part still over the limit cut to 80 % once; the items that found no room are left out
    and counted; what `seeded` put there unchanged is not packed at all. The files are named `stem`
    (default: name). Returns the files written, their sizes and the counts."""
    suffix = ".tar.xz" if compress else ".tar"
    stem = stem or name
    for old in out.glob(f"{stem}*.tar*"):
        old.unlink()
    items = cache_items(name, root, seeded)
    if not items:
        return {"files": [], "items": 0, "left_out": 0}
    ratio = 1.0
    if compress:
        whole = _write_tar(out / f"{stem}{suffix}", root, items)
        if whole <= limit:
            return {"files": [f"{stem}{suffix}"], "megabytes": [round(whole / 2**20, 2)], "items": len(items),
                    "left_out": 0}
        (out / f"{stem}{suffix}").unlink()
        ratio = whole / max(1, sum(map(_bytes, items)))
    bins: list[list[list[Path]]] = [[] for _ in range(max_parts)]
    room = [limit / 1.1] * max_parts  # a 10 % margin on the estimate
    for group in items:
        size = _bytes(group) * ratio
        fit = next((i for i in range(max_parts) if size <= room[i]), None)
        if fit is not None:
            bins[fit].append(group)
            room[fit] -= size
    bins = [b for b in bins if b]
    names = [f"{stem}{suffix}"] if len(bins) == 1 else [f"{stem}.{i + 1}{suffix}" for i in range(len(bins))]
    kept = []  # (file, bytes, items)
    for file, part in zip(names, bins, strict=True):
        size = _write_tar(out / file, root, part, compress)
        if size > limit:  # the estimate was off: once more with 80 % of its items
            part = part[: max(1, len(part) * 4 // 5)]
            size = _write_tar(out / file, root, part, compress)
        if size > limit:
            (out / file).unlink()
        else:
            kept.append((file, size, len(part)))
    packed = sum(n for _, _, n in kept)
    return {"files": [file for file, _, _ in kept], "megabytes": [round(size / 2**20, 2) for _, size, _ in kept],
            "items": packed, "left_out": len(items) - packed}


CACHES = {"triton_cache": {"compress": True, "max_parts": 2},  # ptx/llir text: ~20x smaller as xz
          "jax_cache": {"compress": False, "max_parts": 1}}  # entries compressed already
# 2 + 1 parts of 15 MiB come back at most; what a call carries (the repository, ~3 MB, .whl/,
# ~11 MB, and .gpu-cache/, which gathers every run's archives and triton_aot.py's ~11 MB) must stay
# under the device tool's 64 MiB: README "Checking a GPU" says what to drop


def hand_back(out: Path, deadline: float, seeded: dict[str, dict[str, tuple[int, int]]] | None = None,
              stamp: str = "") -> dict:
    """logs/ packed into logs.tar.xz (the device tool returns at most eight files), and what each
    compile cache gained in this run (not what .gpu-cache/ `seeded` unchanged: that is there already)
    as pack_cache() writes it while time.monotonic() < deadline, named with `stamp` so that it
    sits beside the earlier runs' archives in .gpu-cache/. A failure here is reported, never fatal."""
    handed = {}
    logs = out / "logs"
    try:
        if logs.is_dir():
            _write_tar(out / "logs.tar.xz", out, [sorted(logs.rglob("*"))])
            shutil.rmtree(logs)
            handed["logs"] = "logs.tar.xz"
        for name, root in cache_roots().items():
            if time.monotonic() > deadline:
                handed[name] = {"files": [], "skipped": "no time left to pack it"}
                continue
            handed[name] = pack_cache(name, root, out, **CACHES[name], seeded=(seeded or {}).get(name),
                                      stem=f"{name}_{stamp}" if stamp else None)
    except Exception as error:  # the report must still be written
        handed["error"] = f"{type(error).__name__}: {error}"
    return handed


# -- the report ----------------------------------------------------------------------------------


def _f(value, spec: str = ".3g", missing: str = "–") -> str:
    return missing if value is None else format(value, spec)


PALLAS = "ssm.scan=pallas"  # gpu_bench.py's variant for jaxbrr's fused scan kernels


def _status(row: dict | None) -> str:
    """Why a train row has no step time: 'out of memory', its skip or error, or 'not run'."""
    if row is None:
        return "not run"
    why = row.get("skipped") or row.get("error") or "no step time"
    lines = [line.strip() for line in why.splitlines() if line.strip()]
    if "out of memory" in why.lower():
        return "out of memory"
    return lines[-1][:120] if lines else why  # a traceback's last line says what went wrong


def targets(rows: list[dict]) -> list[str]:
    """Issue 16's targets, each with the numbers it rests on; every planned pair has a line,
    'not measured' with each side's reason where a row is missing. The utilisation target is
    jaxbrr's (its rows only; torchref's best beside it) on the issue's FLOP count."""
    lines = []
    # the pairs compare the config as it is, and jaxbrr's fused scan (the same model and math); a
    # row with another ssm.chunk_size only enters the utilisation
    train = {(r["framework"], r["precision"], r["batch"], r.get("variant")): r for r in rows if r.get("kind") == "train"}
    for (framework, precision, batch, variant), jax_row in sorted(train.items(), key=lambda kv: str((*kv[0][:3], kv[0][3] or ""))):
        if framework != "jax" or variant not in (None, PALLAS):
            continue
        torch_row = train.get(("torch", precision, batch, None))
        pair = f"jaxbrr{f' ({variant})' if variant else ''} / torchref throughput, {precision} B={batch}"
        if "step_s" in jax_row and torch_row is not None and "step_s" in torch_row:
            speedup = torch_row["step_s"] / jax_row["step_s"]
            verdict = "met" if speedup >= TARGET_SPEEDUP else "missed"
            lines.append(f"- {pair}: {speedup:.2f}× (target ≥ {TARGET_SPEEDUP}×): {verdict}")
        elif "step_s" in jax_row and _status(torch_row) == "out of memory":
            lines.append(f"- {pair}: jaxbrr ran ({jax_row['batch'] / jax_row['step_s']:.1f} windows/s), "
                         f"torchref ran out of memory at this batch")
        else:
            lines.append(f"- {pair}: not measured (jaxbrr: {'ran' if 'step_s' in jax_row else _status(jax_row)}; "
                         f"torchref: {'ran' if torch_row and 'step_s' in torch_row else _status(torch_row)})")

    def best(framework: str) -> dict | None:
        candidates = [r for r in rows if r.get("kind") == "train" and r.get("framework") == framework
                      and r.get("precision") == "bfloat16" and "mfu" in r
                      and r.get("variant") != "profile"]  # the profiled row times jaxbrr's plain row's step again
        return max(candidates, key=lambda r: r["mfu"], default=None)

    jax_best, torch_best = best("jax"), best("torch")
    if jax_best:
        verdict = "met" if jax_best["mfu"] >= TARGET_MFU else "missed"
        model = f"; {jax_best['mfu_model']:.1%} on the model's own count" if "mfu_model" in jax_best else ""
        lines.append(f"- bfloat16 model FLOP utilisation, jaxbrr's best: {jax_best['mfu']:.1%} "
                     f"({jax_best.get('variant') or 'as configured'}, B={jax_best['batch']}{model}) "
                     f"(target ≥ {TARGET_MFU:.0%} on the issue's {gpu_bench.FORWARD_GFLOP_PER_WINDOW} GFLOP forward): "
                     f"{verdict}" + (f"; torchref's best {torch_best['mfu']:.1%} (B={torch_best['batch']})"
                                     if torch_best else ""))
    else:
        lines.append("- bfloat16 model FLOP utilisation: not measured (no jaxbrr bfloat16 train row finished "
                     "beside the matmul peak)")
    return lines


def scan_line(row: dict) -> str:
    """The scan-alone row: Pallas kernels against XLA chunked per stream, the rate the kernels'
    logical bytes imply, and the kernels with one head per backward program where the step's use
    more, and with twice the step's where a group has them (ssd_kernel.heads_per_program)."""
    if "streams" not in row:
        return f"scan alone (B={row['batch']}): {row.get('skipped') or row.get('error')}"
    parts = [f"{name} {s['pallas_ms']:.2f} ms vs XLA {s['chunked_ms']:.2f} ms ({s['chunked_ms'] / s['pallas_ms']:.1f}×; "
             f"{s['logical_gb'] / (s['pallas_ms'] / 1e3) / 1e3:.2f} TB/s logical"
             + (f"; one head per backward program {s['pallas_one_head_ms']:.2f} ms" if "pallas_one_head_ms" in s else "")
             + (f"; twice the heads per backward program {s['pallas_double_heads_ms']:.2f} ms"
                if "pallas_double_heads_ms" in s else "")
             + ")" for name, s in row["streams"].items()]
    return f"scan alone, fwd+bwd, float32 (B={row['batch']}), Pallas kernels vs XLA chunked: " + "; ".join(parts)


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
    lines += ["", f"MFU on the issue's {gpu_bench.FORWARD_GFLOP_PER_WINDOW} GFLOP forward per window (the target's), "
                  f"MFU model on this model's {gpu_bench.MODEL_FORWARD_GFLOP_PER_WINDOW} (benchmarks/flops.py)", "",
              "| framework | precision | B | first step s | step s | windows/s | peak GB | MFU | MFU model | note |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.get("kind") != "train":
            continue
        note = r.get("skipped") or r.get("error") or ", ".join(
            n for n in (r.get("variant"), "remat" if r.get("remat") else None, r.get("backend")) if n)
        lines.append(f"| {r['framework']} | {r['precision']} | {r['batch']} | {_f(r.get('first_step_s'), '.1f')} | "
                     f"{_f(r.get('step_s'), '.4f')} | {_f(r.get('windows_per_s'), '.1f')} | "
                     f"{_f(r.get('peak_memory_gb'), '.1f')} | {_f(r.get('mfu'), '.1%')} | "
                     f"{_f(r.get('mfu_model'), '.1%')} | {note} |")
    for r in rows:
        if r.get("kind") == "inference":
            lines.append(f"\ninference ({r['precision']}, B={r['batch']}): "
                         + (f"{r['eeg_hours_per_minute']:.1f} h of EEG per minute ({r['windows_per_s']:.0f} windows/s, "
                            f"stride 10 s)" if "eeg_hours_per_minute" in r else r.get("skipped") or r.get("error")))
        if r.get("kind") == "scan":
            lines.append("\n" + scan_line(r))
        if r.get("kind") == "eigh":
            lines.append(f"\neigh PE (fwd+bwd, B={r['batch']}, {r.get('graphs', '?')} graphs): "
                         + (f"{r['pe_s'] * 1e3:.1f} ms" + (f", {r['share_of_step']:.1%} of the float32 step"
                                                            if "share_of_step" in r else "")
                            + (f", {r['share_of_bf16_step']:.1%} of the bfloat16 step"
                               if "share_of_bf16_step" in r else "")
                            if "pe_s" in r else r.get("skipped") or r.get("error")))
    profiled = next((r for r in rows if isinstance(r.get("profile"), dict)), None)
    failed = next((r for r in rows if r.get("profile_error")), None)
    if failed:
        lines += ["", f"The step's profile failed ({failed['framework']} {failed['precision']} B={failed['batch']}): "
                  f"{failed['profile_error']}"]
    if profiled:
        lines += ["", f"### Where the step goes: {profiled['framework']} {profiled['precision']} B={profiled['batch']}",
                  "", step_profile.table(profiled["profile"])]
        moved = profiled["profile"].get("cost", {}).get("bytes")
        if moved and profiled.get("step_s"):  # benchmarks/roofline.py: is the step memory-bound?
            lines += ["", f"XLA's cost analysis of this GPU-compiled step: {moved / 1e9:.1f} GB moved and "
                          f"{profiled['profile']['cost']['flops'] / 1e9:.0f} GFLOP per step; at "
                          f"{profiled['step_s'] * 1e3:.1f} ms per step that is "
                          f"{moved / profiled['step_s'] / 1e12:.2f} TB/s of memory traffic."]
        counted = profiled["profile"].get("traffic")
        if counted and profiled.get("step_s"):  # what benchmarks/gpu_aot.py predicts without a GPU
            how = profiled["profile"].get("traffic_counts", "")
            lines += ["", f"benchmarks/gpu_aot.py's count of the same executable: {counted / 1e9:.1f} GB moved "
                          f"({counted / profiled['step_s'] / 1e12:.2f} TB/s{'; ' + how if how else ''}); XLA planned "
                          f"{profiled['profile'].get('planned_memory', 0) / 1e9:.2f} GB of device memory."]
    lines += ["", "## Targets", "", *targets(rows)]
    if summary.get("stopped"):
        lines += ["", f"**Stopped**: {summary['stopped']}."]
    for part, trace in (summary.get("failed") or {}).items():
        lines += ["", f"**The {part} part failed** (the parts after it ran):", "", "```", trace.rstrip(), "```"]
    warm = summary.get("warm")
    if warm:
        done = [f"{r['precision']} B={r['batch']}: {_f(r.get('first_step_s'), '.0f')} s" if "first_step_s" in r
                else f"{r['precision']} B={r['batch']}: {r.get('error', '?')}" for r in warm["rows"]]
        lines += ["", "Triton warm-up beside the tests (torch rows' first steps): " + ("; ".join(done) or "none finished")
                  + (" (stopped when the bench began)" if warm["stopped_early"] else "")]
    kernels = summary.get("triton_kernels")
    if kernels and (kernels["seeded"] or kernels["compiled_here"]):
        by_kernel = ", ".join(f"{name} {count}" for name, count in kernels["compiled_here_by_kernel"].items())
        lines += ["", f"Triton kernels: {kernels['seeded']} from .gpu-cache/ (benchmarks/triton_aot.py compiles "
                  f"mamba_ssm's without a GPU), {kernels['compiled_here']} compiled on this machine"
                  + (f" ({by_kernel})" if by_kernel else "")]
    if summary.get("aot_mismatch"):
        lines += ["", f"**The precompiled Triton kernels do not fit this machine**: built for "
                      f"{summary['aot_mismatch']}; rebuild them (`make triton-aot`, with GPU_TRITON in "
                      "benchmarks/triton_aot.py set to this machine's Triton)."]
    handed = summary.get("handed_back") or {}
    if handed:
        files = [handed.get("logs")] + [f for name in ("triton_cache", "jax_cache")
                                        for f in (handed.get(name) or {}).get("files", [])]
        left_out = {name: handed[name]["left_out"] for name in ("triton_cache", "jax_cache")
                    if (handed.get(name) or {}).get("left_out")}
        lines += ["", "Handed back: " + ", ".join(f for f in files if f) + (f"; left out (over the size limit): "
                                                                          f"{left_out}" if left_out else "")
                  + (f"; {handed['error']}" if "error" in handed else "")]
    failed = [name for name, part in (("tests", tests), ("bench", bench)) if part and part.get("returncode") not in (0,)]
    if failed:
        lines += ["", f"Parts that did not exit cleanly: {', '.join(failed)} (see their logs)."]
    return "\n".join(lines) + "\n"


class Stopped(Exception):
    """SIGTERM or SIGINT reached the driver: what was measured is still written."""


@contextlib.contextmanager
def part_failures(summary: dict, part: str):
    """A part's own exception (a line its parser did not expect, a file missing) goes into
    summary["failed"] with its traceback, and the next parts run: one part must not lose the
    report of the others. A stop request still ends the run."""
    try:
        yield
    except Stopped:
        raise
    except Exception as error:
        for process in list(LIVE):  # a part's processes end with it: nothing may share the GPU with the next
            _stop(process)
        summary.pop(part, None)
        summary.setdefault("failed", {})[part] = traceback.format_exc(limit=8)
        print(f"{part}: failed ({type(error).__name__}: {error}); the next parts still run", flush=True)


def _raise_stopped(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def write_outputs(out: Path, summary: dict, start: float) -> str:
    summary["seconds"] = time.monotonic() - start
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=1, default=str))
    text = report(summary)
    (out / "gpu_report.md").write_text(text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for everything (default %(default)s)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "gpu_check"))
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS), help=f"some of {','.join(PARTS)}")
    parser.add_argument("--tests-share", type=float, default=0.5, help="most of the budget the tests may take")
    parser.add_argument("--size", choices=("full", "tiny"), default="full", help="benchmark size (tiny: rehearsal)")
    parser.add_argument("--seed", type=Path, default=ROOT / ".gpu-cache",
                        help="the compile-cache archives to seed from (default: %(default)s)")
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {PARTS}")
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    start, wall_start = time.monotonic(), time.time()
    left = lambda: args.budget - (time.monotonic() - start) - RESERVE_SECONDS[args.size]  # noqa: E731
    summary = {"command": " ".join(["benchmarks/gpu_check.sh", *(argv if argv is not None else sys.argv[1:])]),
               "budget": args.budget, "size": args.size}
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stopped)
    seeded = {"archives": [], "files": {}, "aot": None}  # what .gpu-cache/ put in the caches: not handed back
    try:
        seeded = seed_caches(args.seed)
        summary["seeded"] = seeded["archives"]
        if seeded["archives"]:
            kernels = sum(path.endswith(".cubin") for path in seeded["files"].get("triton_cache", {}))
            print(f"caches seeded from {args.seed}: " + ", ".join(seeded["archives"])
                  + f" ({kernels} Triton kernels)", flush=True)
        if "env" in parts:
            with part_failures(summary, "env"):
                summary["env"] = part_env(args.out, min(60, left()))
                print(f"env: {summary['env'].get('nvidia_smi') or summary['env'].get('jax_devices')}", flush=True)
        if "smoke" in parts:
            with part_failures(summary, "smoke"):
                summary["smoke"] = part_smoke(args.out, min(180, left()))
                print("smoke: " + " / ".join(summary["smoke"]["lines"]), flush=True)
        if "tests" in parts:
            # the warm-up compiles the bench's torch kernels beside the tests, for a bench in this call
            # or the next on the same (warm) machine. With make triton-aot's kernels seeded, and made
            # for this machine, it has nothing to compile (and its autotuning picks are not kept):
            # it would only take GPU memory and time from the tests (three full-size processes on one
            # 80 GB H100)
            with part_failures(summary, "tests"):
                summary["tests"], warmer = part_tests(args.out, min(args.tests_share * args.budget, left()),
                                                      args.size, warm=not precompiled(seeded, summary))
                print(f"tests: {summary['tests']['summary']}", flush=True)
                if warmer is not None:  # nothing may share the GPU with a timed row
                    running = warmer.poll() is None
                    _stop(warmer)
                    summary["warm"] = {"stopped_early": running, "rows": gpu_bench.json_lines(
                        (args.out / "logs" / "warm.log").read_text(errors="replace"))}
        if "bench" in parts:
            with part_failures(summary, "bench"):
                summary["bench"] = part_bench(args.out, max(left(), 0), args.size, precompiled(seeded, summary))
                print(f"bench: {len(summary['bench']['rows'])} rows", flush=True)
    except Stopped as stop:
        summary["stopped"] = f"{stop} after {time.monotonic() - start:.0f} s: the parts after it did not run"
        print(summary["stopped"], flush=True)
    finally:
        for process in list(LIVE):
            _stop(process)
    summary["aot_mismatch"] = aot_mismatch(seeded["aot"], summary.get("env", {}))
    origins = kernel_origins(cache_roots()["triton_cache"], seeded["files"].get("triton_cache", {}))
    summary["triton_kernels"] = {"seeded": len(origins["seeded"]), "compiled_here": len(origins["compiled"]),
                                 "compiled_here_by_kernel": dict(collections.Counter(origins["compiled"].values())
                                                                 .most_common())}
    for signum in STOP_SIGNALS:  # while the figures are written: nothing stops it
        signal.signal(signum, signal.SIG_IGN)
    write_outputs(args.out, summary, start)  # first, so that a kill while packing loses no figure
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    summary["handed_back"] = hand_back(args.out, start + args.budget, seeded["files"],
                                       time.strftime("%Y%m%d-%H%M", time.gmtime(wall_start)))
    print(write_outputs(args.out, summary, start))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
