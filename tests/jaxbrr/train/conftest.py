"""Fixtures of the training-loop tests (module-scoped: each test module builds its own): the
smoke config's synthetic corpus in a temporary folder, prepared, and a persistent XLA cache."""

from __future__ import annotations

import pytest

from tests.jaxbrr.train.smoke_runs import SMOKE


@pytest.fixture(scope="module")
def data_overrides(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke-data")
    return [f"data.data_dir={root / 'edf'}", f"data.cache_dir={root / 'cache'}"]


@pytest.fixture(scope="module")
def prepared(data_overrides):
    from common.config import load_config
    from common.data.prepare import prepare

    return prepare(load_config(SMOKE, data_overrides), progress=False)


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """One persistent XLA cache for the module's runs (and its subprocesses): each Trainer jits
    its own step, and identical programs then compile once. A module of training runs uses it
    throughout (pytestmark = pytest.mark.usefixtures("compilation_cache"))."""
    import jax

    path = str(tmp_path_factory.mktemp("xla-cache"))
    old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    yield path
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
