"""mamba_ssm's Triton kernels compiled here, without a GPU, for the GPU check's machine.

    make triton-aot       # = python benchmarks/triton_aot.py setup, then build
    python benchmarks/triton_aot.py build [--check ARCHIVE]   # -> .gpu-cache/triton_cache_aot.tar.xz
    python benchmarks/triton_aot.py keys --check ARCHIVE      # cache keys only, nothing compiled
    python benchmarks/triton_aot.py hits      # replay against the archive unpacked as gpu_check.py does

Why. The GPU check's torch rows and its mamba_ssm tests run mamba_ssm's Mamba2, whose Triton
kernels are autotuned over 6 to 11 configurations each, every configuration compiled on first use
on one CPU core: on the H200 the first tiny forward+backward had not returned after 130 s, and the
full-size test was still compiling when the device time ran out, so no torchref row was ever timed
(BENCHMARKS.md "GPU check"). Compiling needs no GPU: Triton compiles for the target it is given
(sm_90 here) with the ptxas its wheel ships. Timing a configuration does need one; with this
archive seeded (gpu_check.py unpacks .gpu-cache/*), the autotuner on the GPU finds every
configuration compiled and only times them.

How. Triton finds a kernel in its on-disk cache when the key matches (triton 3.6,
runtime/cache.py `get_cache_key`, compiler/compiler.py `compile`): `triton_key()` (Triton's
version, the hashes of its Python sources and of libtriton), the kernel's source and its
specialisation (argument dtypes; which integers are 1 or multiples of 16 and which pointers
16-byte aligned; the constexprs), the backend (ptxas version, arch) and the compile options. So:

- the GPU machine's Triton version runs here (`setup` installs it into .triton-aot/ for this
  Python); its libtriton is built per Python version, so triton_key() takes libtriton's hash from
  the wheel for the GPU machine's Python instead (the wheels differ in no other hashed file);
- mamba_ssm's own Python code (the wheel `make wheelhouse` built, the one the GPU machine
  installs) runs torchref's `backend: cuda` Mamba2 on CPU tensors, with a stand-in Triton driver
  that reports an sm_90 device, launches that only compile (Triton's `warmup`), and an autotuner
  "benchmark" that compiles each configuration it is handed;
- every Mamba2 call the GPU check makes with mamba_ssm's kernels is replayed at its shapes,
  dtypes and batch (`calls()`): the GPU tests' and the bench's torch train rows'. bfloat16 runs
  under CPU autocast, which casts the same ops mamba_ssm's Mamba2 meets as CUDA autocast does
  (linear, conv1d); the kernels then see bf16 x, B, C, z and dt (float32 from mamba_ssm's
  cumsum kernel on) and float32 A, D, dt_bias and the norm weight.

`--check` compares with an archive a GPU run handed back: which of the kernels it compiled this
build reproduces, by cache key. Against the H200's of 2026-12-04 (BENCHMARKS.md): all of them.
The archive holds triton_aot.json, what its kernels were built for (Triton, Python, mamba_ssm,
arch, SM counts); gpu_check.py's report says when the machine differs. Not made here: Triton's launchers (a small C module per kernel signature, built on the GPU machine
against its Python and CUDA headers, about a second each) and the autotuner's picks.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import types
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402
from wheelhouse import PLATFORMS, PYTHON_VERSION  # noqa: E402  (the GPU machine's Python)

from torchref.precision import FULL_FLOAT32, set_triton_f32  # noqa: E402

FOLDER = ROOT / ".triton-aot"
# Triton's float32 dot precision (TRITON_F32_DEFAULT, part of every kernel's cache key): every call
# replayed here runs with "ieee" in the check (torchref/precision.py), the tests by conftest.py, the
# bench's torch rows and the loop test by torchref's trainer (configure_cuda, train.tf32 false);
# "default" (unset, TF32) is how the H200 ran the tests of 2026-12-04, before either set it. The
# archive's manifest records it, and the check says when it is not its own. (The opt-in smoke part
# runs a small Mamba2 outside the trainer, at Triton's default, at shapes no call here has.)
F32_CHOICES = ("ieee", "default")
F32 = FULL_FLOAT32  # what the build uses unless told
OUT = ROOT / ".gpu-cache" / "triton_cache_aot.tar.xz"
# The GPU machine's Triton (the GPU check's env part reports it; BENCHMARKS.md "GPU check"): a
# kernel compiled by another version has another key and is compiled again there.
GPU_TRITON = "3.6.0"
GPU_ARCH = 90  # H100 and H200: compute capability 9.0
# SMs of the GPUs the check may get: an H100 or H200 SXM (132), an H100 PCIe (114). mamba_ssm's
# gated-norm backward splits its rows over them, and the rows per program is a kernel argument
# (specialised when it is 1 or a multiple of 16): the replay runs once per count.
GPU_SMS = (132, 114)
# Kept in the archive: what a cache hit loads (triton 3.6 CompiledKernel reads the group's files).
KEPT = (".cubin", ".json")


# -- setup ------------------------------------------------------------------------------------------


def setup(folder: Path, version: str) -> dict:
    """Triton `version` for this Python into folder/site, and the sha256 of the libtriton.so in its
    wheel for the GPU machine's Python into folder/target.json (the wheel itself is not kept)."""
    site, done = folder / "site", folder / "target.json"
    if done.exists() and json.loads(done.read_text()).get("triton") == version and (site / "triton").is_dir():
        print(f"{folder} holds triton {version} already", flush=True)
        return json.loads(done.read_text())
    shutil.rmtree(site, ignore_errors=True)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "install", "--quiet", "--no-deps", "--target", str(site), f"triton=={version}"], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version",
                        PYTHON_VERSION, *(f"--platform={p}" for p in PLATFORMS), "-d", tmp, f"triton=={version}"],
                       check=True)
        wheel = next(Path(tmp).glob("triton-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            digest = hashlib.sha256(archive.read("triton/_C/libtriton.so")).hexdigest()
    target = {"triton": version, "python": PYTHON_VERSION, "wheel": wheel.name, "libtriton_sha256": digest}
    done.write_text(json.dumps(target, indent=1) + "\n")
    return target


# -- a Triton that compiles for the GPU machine ------------------------------------------------------


class CompileOnlyDriver:
    """What Triton's runtime asks its driver, answered for an sm_90 device that never runs anything."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def get_benchmarker(self):
        def compile_instead(kernel_call, quantiles=None, **_):  # the autotuner's do_bench
            kernel_call()  # compiles this configuration (the launch is a warmup)
            return [1.0] * len(quantiles or (0,))  # all equal: the autotuner keeps its first

        return compile_instead


@dataclasses.dataclass
class Compiles:
    """Every compile the replay asked for, filled as it runs (by the compile threads)."""

    kernels: dict[str, str] = dataclasses.field(default_factory=dict)  # cache folder -> kernel name
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # "kernel folder" -> the error


def activate(folder: Path, keys_only: bool = False) -> Compiles:
    """Import the Triton of folder/site as the GPU machine's and make kernel launches compile for
    it (keys_only: compute each cache key and compile nothing)."""
    target = json.loads((folder / "target.json").read_text())
    sys.path.insert(0, str(folder / "site"))
    import triton

    if triton.__version__ != target["triton"]:
        raise SystemExit(f"{folder / 'site'} holds triton {triton.__version__}, target.json says {target['triton']}: "
                         "run `python benchmarks/triton_aot.py setup` again")
    _hash_the_gpu_machines_libtriton(target["libtriton_sha256"])
    from triton.runtime import driver

    driver.set_active(CompileOnlyDriver(GPU_ARCH))
    _launches_compile_every_configuration()
    compiled = _record_compiles(keys_only)
    _torch_as_on_the_gpu_machine()
    wheel = next((ROOT / ".whl").glob("mamba_ssm-*.whl"), None)
    if wheel is not None:  # the very code the GPU machine runs (pure Python: importable from the zip)
        sys.path.insert(0, str(wheel))
    print(f"triton {triton.__version__} compiling for sm_{GPU_ARCH} as the GPU machine's (Python {target['python']}); "
          f"mamba_ssm from {wheel or 'this venv (no .whl/: `make wheelhouse` builds the one the GPU installs)'}",
          flush=True)
    return compiled


def _hash_the_gpu_machines_libtriton(digest: str) -> None:
    """triton_key() as the GPU machine computes it: libtriton is the one hashed file that differs
    between the wheels for two Pythons."""
    import triton
    import triton.runtime.autotuner as autotuner
    from triton.runtime import cache

    here = hashlib.sha256((Path(triton.__file__).parent / "_C" / "libtriton.so").read_bytes()).hexdigest()
    key = cache.triton_key()
    if here not in key:
        raise SystemExit(f"triton {triton.__version__}'s triton_key() does not hash libtriton.so as 3.6 does: "
                         "update benchmarks/triton_aot.py")
    gpu_key = key.replace(here, digest)
    cache.triton_key = autotuner.triton_key = lambda: gpu_key


def _launches_compile_every_configuration() -> None:
    """Each kernel launch compiles and runs nothing (Triton's warmup). The autotuner times its
    configurations once per tuning key and then runs its pick, also for a new specialisation
    (other strides) under the same key: the GPU's pick is unknown here, so every call compiles
    every configuration."""
    import triton.runtime.autotuner as autotuner
    from triton.runtime import jit

    launch, tune = jit.JITFunction.run, autotuner.Autotuner.run

    def compile_only(self, *args, grid, warmup, **kwargs):
        return launch(self, *args, grid=grid, warmup=True, **kwargs)

    def every_configuration(self, *args, **kwargs):
        self.cache.clear()
        return tune(self, *args, **kwargs)

    jit.JITFunction.run, autotuner.Autotuner.run = compile_only, every_configuration


def _record_compiles(keys_only: bool) -> Compiles:
    """Triton's compile, recording each kernel's cache folder (the base32 of the key's sha256,
    as triton 3.6's get_cache_manager names it); keys_only: nothing compiled."""
    import triton.compiler as triton_compiler
    from triton._C.libtriton import get_cache_invalidating_env_vars

    compile_kernel, compiled = triton_compiler.compile, Compiles()

    def recording(src, target=None, options=None, _env_vars=None):
        backend = triton_compiler.make_backend(target)
        parsed = backend.parse_options(dict(options or {}, **src.parse_options()))
        env_vars = get_cache_invalidating_env_vars() if _env_vars is None else _env_vars
        digest = hashlib.sha256(triton_compiler.get_cache_key(src, backend, parsed, env_vars).encode()).hexdigest()
        folder = base64.b32encode(bytes.fromhex(digest)).decode().rstrip("=")
        if keys_only:
            compiled.kernels[folder] = src.name
            return types.SimpleNamespace(name=src.name)  # never launched: every run is a warmup
        try:
            kernel = compile_kernel(src, target=target, options=options, _env_vars=_env_vars)
        except Exception as error:  # the autotuner on the GPU drops such a configuration too
            compiled.failed[f"{src.name} {folder}"] = f"{type(error).__name__}: {error}"[:300]
            raise
        compiled.kernels[folder] = src.name
        return kernel

    triton_compiler.compile = recording  # JITFunction binds it when it first runs a kernel
    return compiled


def _torch_as_on_the_gpu_machine() -> None:
    """What mamba_ssm's Python asks of torch about CUDA, answered for one H100/H200; and no
    `quack` (mamba_ssm's optional CuTe kernels, absent from the GPU machine's image)."""
    import torch

    torch.cuda.is_available = lambda: True
    torch.cuda.device = lambda *_: contextlib.nullcontext()
    pretend_sms(GPU_SMS[0])
    sys.modules.setdefault("quack", None)


def pretend_sms(count: int) -> None:
    import torch

    torch.cuda.get_device_properties = lambda *_: types.SimpleNamespace(multi_processor_count=count)


# -- what the GPU check runs with mamba_ssm's kernels -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Call:
    """One Mamba2 forward (and backward) at one shape: (sequences, length, d_model)."""

    label: str
    dims: tuple[int, int, int, int, int]  # d_model, d_state, d_conv, expand, headdim
    sequences: int
    length: int
    chunk_size: int
    bfloat16: bool
    backward: bool = True


def mixer_dims(mamba) -> tuple[int, int, int, int, int]:
    return (mamba.d_model, mamba.d_state, mamba.d_conv, mamba.expand, mamba.headdim)


def model_calls(config, batch: int, label: str, backward: bool = True) -> list[Call]:
    """The Mamba2 calls of one torchref model step at `batch` windows: each BiMamba-2 stage runs
    its forward and backward mixers over the same (sequences, length) shape."""
    from common.stages import FLOAT32_STAGES

    model = config.model
    length = config.window_samples // model.tcn.stride_down
    if model.architecture == "v2":
        stages = [("mamba", model.v2_mamba, batch)]
    elif model.architecture == "v3":
        stages = [("node_mamba", model.node_mamba, batch * model.n_chans)]
        if model.graph.enabled:
            stages.append(("edge_weights", model.graph.edge_mamba, batch * model.n_edges))
    else:
        stages = []
    bf16 = model.precision == "bfloat16"
    return [Call(f"{label}: {name}", mixer_dims(mamba), sequences, length, model.ssm.chunk_size,
                 bf16 and name not in FLOAT32_STAGES, backward) for name, mamba, sequences in stages]


def calls() -> list[Call]:
    """Every Mamba2 call with mamba_ssm's kernels in benchmarks/gpu_check.py's default parts, the
    tests first (they compile first on the GPU)."""
    import gpu_bench

    from common.config import load_config

    full = ROOT / "configs" / "tusz.yaml"
    # tests/torchref/test_mamba.py, test_cuda_backend_matches_torch_backend_at_full_size: both
    # streams' mixers at the shapes of 2 windows, float32 and bfloat16
    result = [call for p in ("float32", "bfloat16")
              for call in model_calls(load_config(full, [f"model.precision={p}"]), 2, f"test_mamba {p}")]
    # parity/test_gpu.py, the whole model at full size on one window, float32
    result += model_calls(load_config(full), 1, "test_gpu full size")
    # tests/torchref/train/test_loop.py, three steps of configs/tiny.yaml at batch 2, then validation
    # (whole recordings in batches of eval.batch_size, the last one padded)
    tiny = load_config(ROOT / "configs" / "tiny.yaml", ["train.batch_size=2"])
    result += model_calls(tiny, 2, "test_loop train")
    result += model_calls(tiny, tiny.eval.batch_size, "test_loop validation", backward=False)
    # benchmarks/gpu_bench.py: the torch train rows (their first step compiles)
    for row in gpu_bench.rows_for("full"):
        # (the largest-batch row's batch, a multiple of 16, is known on the GPU only; its kernels
        # are the large batch's: gpu_bench.largest_batch)
        if row["kind"] == "train" and row["framework"] == "torch" and row["batch"] != "max":
            config = gpu_bench._config("full", row["precision"], row["batch"], "torch", row.get("chunk_size"),
                                       row.get("scan"))
            result += model_calls(config, row["batch"], f"bench torch {row['precision']} B={row['batch']}")
    return result


def replay(call: Call) -> None:
    """One call. The depthwise conv's output, which x, B and C are views of after the SiLU (and
    which mamba_ssm's backward takes as the forward got them), is made (B, C, L)-contiguous: what
    the H200 returned (the kernels it compiled have those strides) and what torch returns on a CPU
    here, whatever the convolution backend chooses."""
    import torch

    from torchref.mamba import Mamba2

    module = Mamba2(*call.dims, chunk_size=call.chunk_size, backend="cuda", device="cpu")
    module._upstream.conv1d.register_forward_hook(lambda _, __, out: out.contiguous())
    u = torch.randn(call.sequences, call.length, call.dims[0], requires_grad=call.backward)
    with torch.set_grad_enabled(call.backward):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=call.bfloat16):
            out = module(u)
        if call.backward:
            out.backward(torch.randn_like(out))


# -- the archive --------------------------------------------------------------------------------------


def archive_kernels(path: Path) -> dict[str, str]:
    """{cache folder: kernel name} of a Triton cache archive (a GPU run's triton_cache*.tar.*), or
    of a list of them, "folder kernel" a line (tests/benchmarks/data/h200_triton_kernels.txt)."""
    if path.suffix == ".txt":
        lines = [line.split() for line in path.read_text().splitlines() if line and not line.startswith("#")]
        return {folder: kernel for folder, kernel in lines}
    with tarfile.open(path) as tar:
        return {Path(m.name).parts[-2]: Path(m.name).stem for m in tar.getmembers() if m.name.endswith(".cubin")}


def write_archive(cache: Path, out: Path, manifest: dict | None = None) -> int:
    """The compiled kernels under `cache`, their binaries and metadata only, as out (tar.xz,
    written atomically), with `manifest` (what they were built for) as gpu_check.AOT_MANIFEST.
    Each group file lists what the archive holds; gpu_check.py points its paths at the cache
    folder it unpacks into, and its report compares the manifest with the machine."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")  # not an archive name gpu_check.py seeds from
    try:
        _write_kernels(cache, tmp, manifest)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out.stat().st_size


def _write_kernels(cache: Path, path: Path, manifest: dict | None) -> None:
    def add_json(tar: tarfile.TarFile, name: str, value: dict) -> None:
        data = json.dumps(value).encode()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, fileobj=io.BytesIO(data))

    with tarfile.open(path, "w:xz") as tar:
        if manifest is not None:
            add_json(tar, gpu_check.AOT_MANIFEST, manifest)
        for name in sorted(gpu_check.triton_kernels(cache)):
            folder = cache / name
            kept = sorted(f for f in folder.iterdir() if f.suffix in KEPT and not f.name.startswith("__grp__"))
            for group in folder.glob("__grp__*.json"):
                add_json(tar, f"{name}/{group.name}", {"child_paths": {f.name: f"{name}/{f.name}" for f in kept}})
            for file in kept:
                tar.add(file, arcname=f"{name}/{file.name}")


def check(built: dict[str, str], archive: Path) -> dict:
    """Which of the kernels in a GPU run's cache archive `built` holds (by cache folder = key)."""
    theirs = archive_kernels(archive)
    missing = {name: kernel for name, kernel in theirs.items() if name not in built}
    return {"archive": archive.name, "kernels": len(theirs), "reproduced": len(theirs) - len(missing),
            "missing": sorted(f"{kernel} {name}" for name, kernel in missing.items())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("setup", "build", "keys", "hits"),
                        help="setup: install; build: compile into --out; keys: cache keys only; "
                             "hits: replay against --out unpacked as the GPU check does, counting compiles")
    parser.add_argument("--folder", type=Path, default=FOLDER, help="where setup installs Triton")
    parser.add_argument("--triton", default=GPU_TRITON, help="the GPU machine's Triton version (setup)")
    parser.add_argument("--out", type=Path, default=OUT, help="the archive build writes (and hits reads)")
    parser.add_argument("--check", type=Path, help="a triton_cache archive a GPU run handed back, or a list of its kernels")
    parser.add_argument("--only", default="", help="replay only the calls whose label contains this")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="parallel compiles")
    parser.add_argument("--f32", choices=F32_CHOICES, default=F32,
                        help="Triton's float32 dot precision the kernels are built for (TRITON_F32_DEFAULT): "
                             "ieee, as the GPU check runs them (default), or Triton's own default (TF32)")
    args = parser.parse_args(argv)
    if args.command == "setup":
        print(json.dumps(setup(args.folder, args.triton)))
        return 0
    if not (args.folder / "target.json").exists():
        raise SystemExit(f"no {args.folder / 'target.json'}: run `python benchmarks/triton_aot.py setup` "
                         "(or `make triton-aot`) first")
    if args.command == "hits" and not args.out.exists():
        raise SystemExit(f"no {args.out}: run `python benchmarks/triton_aot.py build` first")
    with tempfile.TemporaryDirectory(prefix="triton-aot-") as cache:
        summary = run(args, Path(cache))
    print(json.dumps(summary, indent=1))
    return 0


def run(args, cache: Path) -> dict:
    """Replay the calls with Triton's cache in `cache`: compiling into it (build), computing keys
    (keys), or, the archive unpacked into it as gpu_check.py seeds it, counting what Triton finds
    there and what it compiles (hits)."""
    os.environ["TRITON_CACHE_DIR"] = str(cache)
    os.environ["TRITON_STORE_BINARY_ONLY"] = "1"  # no IR beside the binaries (the source stays: dropped below)
    set_triton_f32(None if args.f32 == "default" else args.f32)
    if args.command == "hits":
        with tarfile.open(args.out) as tar:
            tar.extractall(cache, filter="data")
        gpu_check.rehome_triton_groups(cache)
    compiled = activate(args.folder, keys_only=args.command == "keys")
    import triton
    from tqdm import tqdm
    from triton.runtime._async_compile import AsyncCompileMode

    outcomes = {True: [], False: []}  # Triton's own account: cache hit or compiled
    triton.knobs.compilation.listener = lambda *, src, cache_hit, **_: outcomes[cache_hit].append(src.name)
    todo = [(sms, c) for sms in GPU_SMS for c in calls() if args.only in c.label]
    start = time.monotonic()
    # compiles in parallel, waited for at exit; a configuration that fails to compile is left out,
    # as the autotuner on the GPU leaves it out (counted in `failed`)
    with AsyncCompileMode(ThreadPoolExecutor(args.threads), ignore_errors=True):
        for sms, call in (bar := tqdm(todo, unit="call")):
            bar.set_description(f"{call.label}, {sms} SMs ({len(compiled.kernels)} kernels)")
            pretend_sms(sms)
            replay(call)
    summary = {"calls": len(todo), "kernels": len(compiled.kernels), "failed": compiled.failed,
               "seconds": round(time.monotonic() - start, 1)}
    if args.command == "build":
        target = json.loads((args.folder / "target.json").read_text())
        manifest = {"triton": target["triton"], "python": target["python"], "arch": GPU_ARCH,
                    "sms": list(GPU_SMS), "mamba_ssm": importlib.metadata.version("mamba_ssm"),
                    "kernels": len(compiled.kernels), "f32": args.f32}
        summary["megabytes"] = round(write_archive(cache, args.out, manifest) / 2**20, 2)
        summary["out"] = str(args.out)
    if args.command == "hits":
        summary["found"], summary["compiled"] = len(outcomes[True]), len(outcomes[False])
        summary["compiled_by_kernel"] = dict(collections.Counter(outcomes[False]).most_common())
    if args.check:
        summary["check"] = check(compiled.kernels, args.check)
    return summary


if __name__ == "__main__":
    sys.exit(main())
