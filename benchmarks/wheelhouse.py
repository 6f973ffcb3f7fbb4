"""The wheels a GPU machine without network needs to run benchmarks/gpu_check.sh.

    make wheelhouse                       # = python benchmarks/wheelhouse.py --out .whl
    python benchmarks/wheelhouse.py --list

The GPU image this project is lent (docs: README "Checking a GPU") has Python 3.12, torch, JAX
with its CUDA plugin, flax, optax, orbax, chex, torch-geometric, einops, safetensors, matplotlib,
scipy and a pytest of unknown version, and lacks the packages in CARRY (pytest among them). Each is taken at the version installed in this
venv (the one the suite passed with), for CPython 3.12 on manylinux x86-64: pure-Python wheels
and pydantic-core's binary one. mamba-ssm is built here from its sdist without its CUDA
extensions (MAMBA_SKIP_CUDA_BUILD): its Mamba2 runs on Triton kernels, compiled on the GPU
machine at first use; without causal-conv1d's extension the fused `use_mem_eff_path` fails and
the unfused path (the one torchref uses) works. That wheel holds no compiled code, so it is
retagged py3-none-any.

The folder gets MANIFEST.json (name, version, file, bytes of each wheel) and stays under
MAX_MEGABYTES, the size a device run can carry beside the working tree.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MEGABYTES = 40
PYTHON_VERSION = "3.12"
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
# distribution name -> why the GPU machine needs it (what imports it)
CARRY = {
    "pydantic": "common.config",
    "pydantic-core": "pydantic (binary, cp312)",
    "annotated-types": "pydantic",
    "typing-inspection": "pydantic",
    "typing-extensions": "pydantic needs a recent one",
    "mne": "common.data.edf (EDF reading, resampling)",
    "decorator": "mne",
    "pooch": "mne",
    "platformdirs": "pooch",
    "edfio": "common.data.synth (EDF writing)",
    "timescoring": "common.eval.szcore",
    "tensorboardX": "common.train.log",
    # the image's pytest is of a version no one recorded; conftest.py needs pytest >= 8
    # (hookimpl(wrapper=True): pluggy >= 1.2) and pyproject's `pythonpath`
    "pytest": "the GPU tests (pytest >= 8)",
    "pluggy": "pytest",
    "iniconfig": "pytest",
    "packaging": "pytest (>= 24)",
    "pygments": "pytest (>= 2.15)",
}
MAMBA = "mamba-ssm"  # built here, see the module docstring


def carried() -> dict[str, str]:
    """Every wheel the GPU machine gets: distribution -> version installed here. Raises when one
    is not installed (the venv is not the one `make` builds)."""
    versions = {}
    for name in [*CARRY, MAMBA]:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError as error:
            raise SystemExit(f"{name} is not installed in {sys.prefix}: run `make venv` first") from error
    return versions


def download(names: dict[str, str], out: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", PYTHON_VERSION, "--implementation", "cp", "-d", str(out)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run(command + [f"{name}=={version}" for name, version in names.items()], check=True)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def retag_pure(wheel: Path) -> Path:
    """A wheel without compiled code, tagged for this interpreter, as py3-none-any: WHEEL's Tag
    and Root-Is-Purelib, RECORD's line for WHEEL, and the file name."""
    with zipfile.ZipFile(wheel) as source:
        compiled = [n for n in source.namelist() if n.endswith((".so", ".pyd"))]
        if compiled:
            raise SystemExit(f"{wheel.name} holds compiled code ({compiled[:3]}): cannot be retagged pure")
        entries = {info: source.read(info) for info in source.infolist()}
    dist_info = next(i.filename.split("/")[0] for i in entries if i.filename.endswith(".dist-info/WHEEL"))
    wheel_meta = [line for line in entries_text(entries, f"{dist_info}/WHEEL").splitlines()
                  if not line.startswith(("Tag:", "Root-Is-Purelib:"))]
    wheel_meta += ["Root-Is-Purelib: true", "Tag: py3-none-any"]
    new_wheel = ("\n".join(wheel_meta) + "\n").encode()
    record_name = f"{dist_info}/RECORD"
    record = [line for line in entries_text(entries, record_name).splitlines()
              if line and not line.startswith(f"{dist_info}/WHEEL,")]
    record.append(_record_line(f"{dist_info}/WHEEL", new_wheel))
    name, version = dist_info.removesuffix(".dist-info").rsplit("-", 1)
    target = wheel.with_name(f"{name}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for info, data in entries.items():
            if info.filename == f"{dist_info}/WHEEL":
                data = new_wheel
            elif info.filename == record_name:
                data = ("\n".join(record) + "\n").encode()
            out.writestr(info, data)
    return target


def entries_text(entries: dict, name: str) -> str:
    return next(data for info, data in entries.items() if info.filename == name).decode()


def build_mamba(version: str, out: Path) -> Path:
    """mamba-ssm's wheel without CUDA extensions, built against this venv's torch."""
    env = {**os.environ, "MAMBA_FORCE_BUILD": "TRUE", "MAMBA_SKIP_CUDA_BUILD": "TRUE"}
    with tempfile.TemporaryDirectory() as build:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--no-binary", "mamba-ssm", "-w", build, f"{MAMBA}=={version}"], check=True, env=env)
        (built,) = Path(build).glob("mamba_ssm-*.whl")
        pure = retag_pure(built)
        return Path(shutil.move(pure, out / pure.name))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / ".whl")
    parser.add_argument("--list", action="store_true", help="print what would be carried and exit")
    args = parser.parse_args(argv)
    versions = carried()
    if args.list:
        for name, version in versions.items():
            print(f"{name}=={version}  ({CARRY.get(name, 'built here without CUDA extensions')})")
        return 0
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    download({n: v for n, v in versions.items() if n != MAMBA}, args.out)
    build_mamba(versions[MAMBA], args.out)
    wheels = sorted(args.out.glob("*.whl"))
    manifest = [{"file": w.name, "bytes": w.stat().st_size} for w in wheels]
    total = sum(w["bytes"] for w in manifest) / 1e6
    (args.out / "MANIFEST.json").write_text(json.dumps(
        {"python": PYTHON_VERSION, "versions": versions, "wheels": manifest, "megabytes": total}, indent=1))
    for w in manifest:
        print(f"{w['bytes'] / 1e6:7.2f} MB  {w['file']}")
    print(f"{total:7.2f} MB  in {len(wheels)} wheels, {args.out}")
    if len(wheels) != len(versions):
        raise SystemExit(f"expected {len(versions)} wheels, found {len(wheels)}")
    if total > MAX_MEGABYTES:
        raise SystemExit(f"the wheelhouse is {total:.1f} MB, over {MAX_MEGABYTES} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
