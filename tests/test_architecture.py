"""The boundaries the layout promises (README "Layout"; STYLE.md):

- common/ imports neither JAX nor torch, statically (no import statement names them, at any
  depth) and at run time (importing every module of it loads neither);
- no import cycle among the project's modules, counting the imports inside functions;
- torchref trains with JAX unimportable, and jaxbrr's trainer, predict and evaluate run with
  torch unimportable (each in a subprocess whose import system refuses the other framework).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "jaxbrr", "torchref", "parity")
JAX_FAMILY = ("jax", "jaxlib", "flax", "optax", "orbax", "chex")
TORCH_FAMILY = ("torch", "torch_geometric", "mamba_ssm", "triton")
SMOKE = ["--config", "configs/smoke.yaml", "--no-progress", "--set", "train.max_steps=2",
         "--set", "train.batch_size=4"]

# A subprocess prelude: the named top-level packages raise ImportError, as if not installed.
BLOCK = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not installed (blocked by tests/test_architecture.py)")
sys.meta_path.insert(0, Refuse())
"""


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports_of(name: str, path: Path) -> set[str]:
    """Every module an import statement in the file names (at any depth), absolute."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import module`
    return found


def project_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: {m for m in imports_of(name, path) if m in modules and m != name}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_package_folder_is_a_regular_package():
    """setuptools' find (pyproject.toml) installs only folders with an __init__.py: a module in a
    folder without one works from the checkout and is missing from an installed copy."""
    folders = {path.parent for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    assert sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file()) == []


def test_the_import_graph_has_no_cycle():
    graph = project_graph()
    assert len(graph) > 80  # every module was read
    assert cycles(graph) == []


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_common_names_no_framework_in_any_import():
    offenders = {name: sorted(m for m in imports_of(name, path) if m.split(".")[0] in JAX_FAMILY + TORCH_FAMILY
                              + ("jaxbrr", "torchref", "parity"))
                 for name, path in module_files().items() if name.split(".")[0] == "common"}
    assert {name: found for name, found in offenders.items() if found} == {}


def _run(code: str, blocked: tuple[str, ...], timeout: int = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    prelude = BLOCK.format(blocked=set(blocked))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_every_common_module_imports_without_either_framework():
    names = sorted(name for name in module_files() if name.split(".")[0] == "common")
    code = f"""
import importlib, json
for name in {names!r}:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {JAX_FAMILY + TORCH_FAMILY!r})))
"""
    done = _run(code, JAX_FAMILY + TORCH_FAMILY)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory) -> list[str]:
    """The smoke corpus, generated and cached once (framework-neutral) for both runs below."""
    from common.config import load_config
    from common.data.prepare import prepare

    root = tmp_path_factory.mktemp("smoke")
    sets = [f"data.data_dir={root / 'edf'}", f"data.cache_dir={root / 'cache'}"]
    prepare(load_config(ROOT / "configs" / "smoke.yaml", sets), progress=False)
    return [arg for s in sets for arg in ("--set", s)]


@pytest.mark.slow
def test_torchref_trains_without_jax(smoke_data, tmp_path):
    work = tmp_path / "torchref"
    code = f"""
from torchref.train.__main__ import main
code = main({[*SMOKE, *smoke_data, "--workdir", str(work)]!r})
assert not any(m.split(".")[0] in {JAX_FAMILY!r} for m in sys.modules), "a JAX module was imported"
sys.exit(code)
"""
    done = _run(code, JAX_FAMILY)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2]
    assert list((work / "checkpoints" / "best").glob("step_*.pt"))


@pytest.mark.slow
def test_jaxbrr_trains_predicts_and_evaluates_without_torch(smoke_data, tmp_path):
    work, out = tmp_path / "jaxbrr", tmp_path / "predictions"
    edf = next(Path(smoke_data[1].split("=", 1)[1]).glob("*.edf"))
    code = f"""
from jaxbrr.train.__main__ import main as train
from jaxbrr.predict import main as predict
from jaxbrr.evaluate import main as evaluate
codes = [train({[*SMOKE, *smoke_data, "--workdir", str(work)]!r}),
         predict(["--checkpoint", {str(work)!r}, {str(edf)!r}, "--out", {str(out)!r}, "--no-progress"]),
         evaluate(["--checkpoint", {str(work)!r}, "--out", {str(tmp_path / "eval")!r}, "--no-progress",
                   "--max-timelines", "1"])]
assert not any(m.split(".")[0] in {TORCH_FAMILY!r} for m in sys.modules), "a torch module was imported"
print(codes)
sys.exit(max(codes))
"""
    done = _run(code, TORCH_FAMILY)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (out / f"{edf.stem}.csv_bi").is_file() and (out / f"{edf.stem}.png").is_file()
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["records"] >= 1 and 0 <= metrics["sample"]["auroc"] <= 1


def _pytest_without(blocked: tuple[str, ...], *args: str) -> subprocess.CompletedProcess:
    """pytest in a subprocess whose imports of `blocked` fail as if they were not installed."""
    code = f"import sys, pytest; sys.exit(pytest.main({['-q', '-p', 'no:cacheprovider', *args]!r}))"
    prelude = BLOCK.replace("raise ImportError(f\"{{name}} is not installed (blocked by tests/test_architecture.py)\")",
                            "raise ModuleNotFoundError(f\"No module named '{{name}}'\", name=name)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTEST_XDIST_WORKER", None)
    return subprocess.run([sys.executable, "-c", prelude.format(blocked=set(blocked)) + code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_test_file_needing_the_other_framework_is_skipped_without_it_and_says_so():
    """pip install '.[jax]' has no torch, '.[torch]' no JAX: a test file comparing with the other
    twin was a collection error, and the folder conftests' imports stopped the whole run; now the
    whole suite collects, such a file is a skip naming the framework (conftest.py), and a file
    that needs neither runs."""
    for blocked in (TORCH_FAMILY, ("jax", "jaxlib", "flax", "optax", "orbax")):
        done = _pytest_without(blocked, "--collect-only")
        assert done.returncode == 0, (blocked, done.stdout[-3000:] + done.stderr[-2000:])
    done = _pytest_without(TORCH_FAMILY, "-rs", "tests/common/test_pt.py", "tests/common/test_shown.py")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert ("SKIPPED [1] tests/common/test_pt.py:0: needs torch, which is not installed (the file, or a helper it "
            "imports, uses the other twin)") in done.stdout
    assert "2 passed, 1 skipped" in done.stdout  # the torch-free file ran


def test_only_a_missing_framework_imported_where_it_may_be_is_a_skip():
    """Not a skip: another missing module, an installed framework's import error, and a framework
    imported by common/ or by the other twin's package (that breaks the twins' independence)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    root_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root_conftest)
    missing = root_conftest._missing_framework

    def error(frame: str, name: str) -> str:
        return f"{frame}:3: in <module>\n    import {name}\nE   ModuleNotFoundError: No module named '{name}'"

    assert missing(error("tests/common/test_x.py", "yaml_typo")) is None  # no framework
    if importlib.util.find_spec("torch") is not None:  # installed: its import error is a real one
        assert missing(error("tests/common/test_x.py", "torch")) is None
    with mock.patch.object(importlib.util, "find_spec", return_value=None):  # as if nothing were installed
        assert missing(error("tests/jaxbrr/test_x.py", "torch")) == "torch"
        assert missing(error("torchref/model.py", "torch")) == "torch"  # torchref's own framework
        assert missing(error("common/config.py", "torch")) is None  # the core must need neither
        assert missing(error("jaxbrr/model.py", "torch")) is None  # nor one twin the other's


def test_the_pytest_script_collects_parity_tests_that_import_tests_helpers(tmp_path):
    """README says `pytest parity/`: the script, unlike `python -m pytest`, does not put the
    current folder on sys.path, and under --import-mode=importlib parity/test_weights.py's
    `from tests.torchref...` failed to import (pyproject's `pythonpath` puts the root there)."""
    script = Path(sys.executable).with_name("pytest")
    if not script.is_file():
        pytest.skip(f"no pytest script beside {sys.executable}")
    done = subprocess.run([str(script), "--collect-only", "-q", "-p", "no:cacheprovider",
                           str(ROOT / "parity" / "test_weights.py")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
