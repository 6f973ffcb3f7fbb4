# Every target creates .venv when it is missing, then runs its job.
PY      := .venv/bin/python
STAMP   := .venv/.installed

.PHONY: train test parity bench lint venv clean-venv wheelhouse gpu-check gpu-aot triton-aot

venv: $(STAMP)

# torch==2.13.0 goes in first (on this project's machines the CPU build on disk; elsewhere
# TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" takes the CPU build, README).
# Anything that depends on torch afterwards sees its requirement met and pulls no CUDA build.
TORCH_PIP_ARGS ?=

$(STAMP): pyproject.toml
	test -x $(PY) || python3.11 -m venv .venv || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PY) -m pip install --quiet -e '.[dev]'
	MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE $(PY) -m pip install --quiet --no-build-isolation mamba-ssm \
		|| echo "mamba-ssm did not build: its oracle tests will skip"
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m jaxbrr.train

# Two workers, one test file each at a time (module fixtures stay shared within a file): one
# process leaves a core idle through every XLA compile. 20-27 min on the 2-core CPU (README "Tests").
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=25

parity: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile parity

bench: $(STAMP)
	$(PY) benchmarks/preprocess.py
	$(PY) benchmarks/model_step.py --sizes tiny,full --batches 1 --frameworks torch,jax
	$(PY) benchmarks/train.py --configs default,full --frameworks jax,torch

# What a GPU machine without network lacks, as wheels for its Python 3.12 (benchmarks/wheelhouse.py).
wheelhouse: $(STAMP)
	$(PY) benchmarks/wheelhouse.py --out .whl

# The whole GPU verification in one command (README "Checking a GPU"); on a CPU it rehearses.
gpu-check:
	benchmarks/gpu_check.sh

# XLA's GPU compiler without a GPU (benchmarks/gpu_aot.py): the jax CUDA plugin of this jax and
# NVIDIA's CUDA libraries (ptxas included), about 5 GB, into .gpu-aot/, outside the venv.
gpu-aot: $(STAMP)
	$(PY) -m pip install --quiet --target .gpu-aot \
		"jax-cuda12-plugin[with-cuda]==$$($(PY) -c 'import jax; print(jax.__version__)')"

# mamba_ssm's Triton kernels compiled here for the GPU check's machine, no GPU needed
# (benchmarks/triton_aot.py): the GPU machine's Triton into .triton-aot/ (~650 MB), then every
# kernel the check's torch side runs into .gpu-cache/triton_cache_aot.tar.xz (mamba_ssm from
# .whl/ when `make wheelhouse` has run, else the venv's: the same version).
triton-aot: $(STAMP)
	$(PY) benchmarks/triton_aot.py setup
	$(PY) benchmarks/triton_aot.py build

lint: $(STAMP)
	$(PY) -m ruff check .

clean-venv:
	rm -rf .venv
