"""benchmarks/triton_aot.py: mamba_ssm's Triton kernels compiled without a GPU, found by the GPU
machine's Triton in its cache. The cache key is checked against the kernels an H200 compiled
(tests/benchmarks/data/h200_triton_kernels.txt) where `make triton-aot` has installed the GPU
machine's Triton; the archive's layout and the GPU side's unpacking everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_bench  # noqa: E402
import gpu_check  # noqa: E402
import triton_aot  # noqa: E402

from common.config import load_config  # noqa: E402

H200_KERNELS = Path(__file__).parent / "data" / "h200_triton_kernels.txt"


def test_the_replay_covers_the_bench_torch_rows_at_their_shapes_and_dtypes():
    calls = triton_aot.calls()
    full = load_config(ROOT / "configs" / "tusz.yaml")
    length = full.window_samples // full.model.tcn.stride_down  # 960 steps of the 60 s window
    assert {c.length for c in calls if c.label.startswith(("bench", "test_mamba", "test_gpu"))} == {length}
    bench = {(c.sequences, c.dims, c.bfloat16) for c in calls if c.label.startswith("bench")}
    node, edge = triton_aot.mixer_dims(full.model.node_mamba), triton_aot.mixer_dims(full.model.graph.edge_mamba)
    rows = [r for r in gpu_bench.rows_for("full") if r["kind"] == "train" and r["framework"] == "torch"
            and r["batch"] != "max"]  # the largest batch: a multiple of 16 known on the GPU only
    # node stream: batch x 19 electrodes; edge stream: batch x 171 electrode pairs; both bf16 stages
    expected = {(r["batch"] * n, dims, r["precision"] == "bfloat16") for r in rows for n, dims in ((19, node), (171, edge))}
    assert bench == expected and len(expected) == 8
    # the loop test's validation: whole recordings in batches of eval.batch_size, forward only
    tiny = load_config(ROOT / "configs" / "tiny.yaml")
    validation = [c for c in calls if c.label.startswith("test_loop validation")]
    assert {c.sequences for c in validation} == {tiny.eval.batch_size * 19, tiny.eval.batch_size * 171}
    assert not any(c.backward for c in validation)
    # the mixer tests: both streams at 2 windows, float32 and bfloat16
    assert {(c.sequences, c.bfloat16) for c in calls if c.label.startswith("test_mamba")} == {
        (38, False), (342, False), (38, True), (342, True)}


def test_the_archive_holds_the_kernels_the_tests_and_the_trainer_compile():
    """Triton's float32 dot precision is in every kernel's cache key: the archive is built with
    the one the GPU tests run under (conftest.py) and torchref's trainer sets for train.tf32 false,
    or the GPU would compile every kernel again (minutes of its budget)."""
    import torch

    from torchref.train.loop import configure_cuda

    assert os.environ.get("TRITON_F32_DEFAULT") == triton_aot.F32 == "ieee"
    full = load_config(ROOT / "configs" / "tusz.yaml")
    assert not full.train.tf32  # the bench's torch rows: configure_cuda then sets ieee
    saved = (os.environ.pop("TRITON_F32_DEFAULT"), torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        configure_cuda(full.train.tf32, torch.device("cuda"))  # sets, and on a CPU uses nothing
        assert os.environ["TRITON_F32_DEFAULT"] == triton_aot.F32
    finally:
        (os.environ["TRITON_F32_DEFAULT"], torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


def test_model_calls_follow_the_architecture_and_its_precision():
    v2 = load_config(ROOT / "configs" / "tiny.yaml", ["model.architecture=v2", "model.precision=bfloat16"])
    (call,) = triton_aot.model_calls(v2, 3, "v2")
    assert call.sequences == 3 and call.dims == triton_aot.mixer_dims(v2.model.v2_mamba) and call.bfloat16
    v2_float32 = load_config(ROOT / "configs" / "tiny.yaml", ["model.architecture=v2"])
    assert not triton_aot.model_calls(v2_float32, 3, "v2")[0].bfloat16
    tcn = load_config(ROOT / "configs" / "tiny.yaml", ["model.architecture=tcn"])
    assert triton_aot.model_calls(tcn, 3, "tcn") == []
    no_graph = load_config(ROOT / "configs" / "tiny.yaml", ["model.graph.enabled=false"])
    assert [c.label for c in triton_aot.model_calls(no_graph, 2, "g")] == ["g: node_mamba"]


def fake_kernel(cache: Path, folder: str, name: str, compiled_at: str) -> None:
    """A kernel folder as Triton 3.6 writes it, its group file naming where it was compiled."""
    (cache / folder).mkdir(parents=True)
    files = {f"{name}.cubin": b"\x7fELF cubin", f"{name}.json": b'{"name": "%s"}' % name.encode(),
             f"{name}.source": b"tt.func ..."}
    for file, data in files.items():
        (cache / folder / file).write_bytes(data)
    group = {"child_paths": {file: f"{compiled_at}/{folder}/{file}" for file in files}}
    (cache / folder / f"__grp__{name}.json").write_text(json.dumps(group))


def test_the_archive_unpacks_into_a_cache_the_gpu_machines_triton_reads(tmp_path, monkeypatch):
    built = tmp_path / "built"
    fake_kernel(built, "AAAA", "_chunk_scan_fwd_kernel", "/tmp/triton-aot-xyz")
    fake_kernel(built, "BBBB", "_layer_norm_bwd_kernel", "/tmp/triton-aot-xyz")
    (built / "LAUNCHER").mkdir()  # no .cubin: not a kernel
    (built / "LAUNCHER" / "__triton_launcher.so").write_bytes(b"so")
    archive = tmp_path / "gpu-cache" / "triton_cache_aot.tar.xz"
    triton_aot.write_archive(built, archive, MANIFEST)
    with tarfile.open(archive) as tar:
        names = sorted(tar.getnames())
    assert names == ["AAAA/__grp___chunk_scan_fwd_kernel.json", "AAAA/_chunk_scan_fwd_kernel.cubin",
                     "AAAA/_chunk_scan_fwd_kernel.json", "BBBB/__grp___layer_norm_bwd_kernel.json",
                     "BBBB/_layer_norm_bwd_kernel.cubin", "BBBB/_layer_norm_bwd_kernel.json", gpu_check.AOT_MANIFEST]
    assert triton_aot.archive_kernels(archive) == {"AAAA": "_chunk_scan_fwd_kernel", "BBBB": "_layer_norm_bwd_kernel"}
    # the GPU side: unpacked into its own TRITON_CACHE_DIR, each group lists the files beside it
    root = tmp_path / "jaxbrr-triton"
    monkeypatch.setattr(gpu_check, "cache_roots", lambda: {"triton_cache": root, "jax_cache": tmp_path / "jax"})
    seeded = gpu_check.seed_caches(archive.parent)
    assert seeded["archives"] == ["triton_cache_aot.tar.xz"] and seeded["aot"] == MANIFEST
    group = json.loads((root / "AAAA" / "__grp___chunk_scan_fwd_kernel.json").read_text())["child_paths"]
    assert group == {f"_chunk_scan_fwd_kernel.{ext}": str(root / "AAAA" / f"_chunk_scan_fwd_kernel.{ext}")
                     for ext in ("cubin", "json")}
    assert all(Path(p).is_file() for p in group.values())
    assert gpu_check.triton_kernels(root) == {"AAAA": "_chunk_scan_fwd_kernel", "BBBB": "_layer_norm_bwd_kernel"}


MANIFEST = {"triton": "3.6.0", "python": "3.12", "arch": 90, "sms": [132, 114], "mamba_ssm": "2.3.2.post1",
            "kernels": 2, "f32": "ieee"}
H200_ENV = {"python": "3.12.3", "packages": {"triton": "3.6.0", "mamba-ssm": "2.3.2.post1", "torch": "2.11.0"},
            "torch_capability": "9.0", "torch_sms": 132}


def test_the_report_says_when_the_precompiled_kernels_do_not_fit_the_machine():
    assert gpu_check.aot_mismatch(MANIFEST, H200_ENV) is None
    assert gpu_check.aot_mismatch(MANIFEST, {**H200_ENV, "torch_sms": 114}) is None  # an H100 PCIe
    assert gpu_check.aot_mismatch(None, H200_ENV) is None and gpu_check.aot_mismatch(MANIFEST, {}) is None
    newer = {**H200_ENV, "packages": {**H200_ENV["packages"], "triton": "3.7.0"}, "python": "3.13.1"}
    assert gpu_check.aot_mismatch(MANIFEST, newer) == "triton 3.6.0 (this machine: 3.7.0); python 3.12 (this machine: 3.13)"
    blackwell = {**H200_ENV, "torch_capability": "10.0", "torch_sms": 148}
    assert gpu_check.aot_mismatch(MANIFEST, blackwell) == (
        "sm_90 (this GPU: 10.0); [132, 114] SMs (this GPU: 148; a few kernels are compiled here)")
    # built for Triton's TF32 default (--f32 default, or an archive from before the field): every
    # kernel of the check's ieee processes would be compiled on the GPU; said even without the env part
    tf32 = "TRITON_F32_DEFAULT default (this check runs ieee: `python benchmarks/triton_aot.py build`)"
    assert gpu_check.aot_mismatch({**MANIFEST, "f32": "default"}, H200_ENV) == tf32
    before = {k: v for k, v in MANIFEST.items() if k != "f32"}
    assert gpu_check.aot_mismatch(before, {}) == tf32


def test_groups_that_already_point_home_or_are_not_groups_are_left_alone(tmp_path):
    fake_kernel(tmp_path, "AAAA", "k", "/elsewhere")
    assert gpu_check.rehome_triton_groups(tmp_path) == 1
    assert gpu_check.rehome_triton_groups(tmp_path) == 0  # now at home
    (tmp_path / "CCCC").mkdir()
    (tmp_path / "CCCC" / "__grp__broken.json").write_text("{not json")
    assert gpu_check.rehome_triton_groups(tmp_path) == 0
    assert (tmp_path / "CCCC" / "__grp__broken.json").read_text() == "{not json"


needs_gpu_triton = pytest.mark.skipif(not (triton_aot.FOLDER / "target.json").exists(),
                                      reason="needs `make triton-aot` (the GPU machine's Triton in .triton-aot/)")


def triton_aot_cli(*args: str) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "triton_aot.py"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout[done.stdout.index("{"):])


@needs_gpu_triton
def test_the_keys_computed_here_are_the_keys_the_h200_compiled():
    """The mixer test's replay, cache keys only, holds every kernel the H200 compiled in the GPU
    check (106: that test's float32 runs, cut short by the budget): the key (Triton's version and
    libtriton, the kernel's source, its specialisation, the options, the environment variables
    Triton names) is the GPU machine's. The H200 ran the tests at Triton's default float32 dot
    precision (conftest.py did not set TRITON_F32_DEFAULT yet): with "ieee", as the check now runs
    them, not one of its keys is made."""
    check = triton_aot_cli("keys", "--only", "test_mamba", "--f32", "default", "--check", str(H200_KERNELS))["check"]
    assert check["kernels"] == 106 and check["missing"] == [], check
    ieee = triton_aot_cli("keys", "--only", "test_mamba float32", "--check", str(H200_KERNELS))["check"]
    assert len(ieee["missing"]) == 106, ieee


@needs_gpu_triton
@pytest.mark.slow
def test_what_the_build_compiles_the_gpu_side_finds_in_its_cache(tmp_path):
    """Build one call's kernels, unpack the archive as gpu_check.py seeds it, replay: Triton's own
    account (its compilation listener's cache_hit) is every kernel found, none compiled."""
    archive = tmp_path / "triton_cache_aot.tar.xz"
    built = triton_aot_cli("build", "--only", "test_mamba float32: edge", "--out", str(archive))
    assert built["kernels"] > 50 and archive.exists()
    hits = triton_aot_cli("hits", "--only", "test_mamba float32: edge", "--out", str(archive))
    assert hits["found"] == built["kernels"] and hits["compiled"] == 0, hits
