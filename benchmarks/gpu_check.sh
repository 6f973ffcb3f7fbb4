#!/usr/bin/env bash
# The GPU check: one command that proves the CUDA reference, JAX on the GPU and their speed.
#
#   benchmarks/gpu_check.sh [--budget SECONDS] [--out DIR] [--size full|tiny] [--parts env,tests,bench]
#
# On a GPU machine without network: `make wheelhouse` here first (it fills .whl/), carry .whl to
# the machine, run this from the repository root. The wheels are installed into a private
# folder (/tmp/jaxbrr-site, nothing of the machine's own Python changes) and put first on
# PYTHONPATH; then benchmarks/gpu_check.py prints versions and the device, runs `pytest -m gpu`
# and the GPU benchmarks within the budget, and writes gpu_report.md, gpu_check.json,
# bench.jsonl, logs.tar.xz and the compile caches into --out (default: $OUT when set, else
# ./gpu_check). A part that fails is reported and the rest still runs. Without .whl/ the current
# Python environment is used as it is (the CPU rehearsal in CI runs it so, at --size tiny).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SITE=${JAXBRR_SITE:-/tmp/jaxbrr-site}
if compgen -G ".whl/*.whl" > /dev/null; then
    echo "installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into $SITE (no network)"
    if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" .whl/*.whl; then
        echo "warning: installing .whl/ failed; running with the environment as it is" >&2
    fi
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "no .whl/ here: using the environment as it is"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
# Seconds, not the budget: every part imports the project, which needs the wheels' packages
# (pydantic, edfio, mne, timescoring: none on the GPU machine). Without them each test and bench
# row would fail in turn for the whole budget.
if ! "$PYTHON" -c "import common.config, common.data.edf, common.eval.szcore" 2> /tmp/jaxbrr-preflight.txt; then
    echo "error: the project does not import here: $(tail -n 1 /tmp/jaxbrr-preflight.txt)" >&2
    echo "  build the wheels with 'make wheelhouse' where there is network, carry .whl/ along, run this again" >&2
    exit 2
fi
if ! compgen -G ".gpu-cache/triton_cache_aot*.tar.xz" > /dev/null; then
    echo "warning: no .gpu-cache/triton_cache_aot*.tar.xz ('make triton-aot'): mamba_ssm's Triton kernels compile" \
         "here, minutes of the budget before any torch GPU test or bench row" >&2
fi
# Compile caches: mamba_ssm's Triton kernels took minutes to compile and autotune on a fresh
# machine, and JAX's full-size train step 70 s. gpu_check.py hands back what a run added to both
# (triton_cache_STAMP*.tar.xz, jax_cache_STAMP.tar); put those in .gpu-cache/ (git-ignored) beside
# the earlier ones and `make triton-aot`'s, carry it along, and gpu_check.py seeds the caches from them.
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/jaxbrr-triton}
export JAXBRR_JAX_CACHE=${JAXBRR_JAX_CACHE:-/tmp/jaxbrr-jax-cache}
exec "$PYTHON" benchmarks/gpu_check.py "$@"
