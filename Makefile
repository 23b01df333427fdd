# Jittor-OverLoCK: `make demo` runs the main job, `make test` runs every check.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
NATTEN_PY := .venv-natten/bin/python
# Jittor orders fused-kernel inputs by Python string hashes: a fixed seed lets every process
# reuse its compiled-kernel cache instead of recompiling ~300 kernels.
export PYTHONHASHSEED := 0

.PHONY: help setup natten-env test lint demo reproduce compare bench bench-conv profile gpu-check clean-envs

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup:  ## .venv (pinned Jittor + PyTorch), oneDNN for Jittor's CPU convs, OpenMPI, the demo's kernels
	@tools/ensure_env.sh .venv requirements.txt
	@tools/install_onednn.sh
	@tools/install_mpi.sh
	@$(PY) -c "from core.jittor_env import jt, DEVICE; print(f'jittor {jt.__version__} ready on {DEVICE}')"
	@tools/warm_kernels.sh $(PY)

natten-env:  ## parity environment .venv-natten (torch 2.6.0 + NATTEN 0.17.4 built for CPU)
	@tools/ensure_env.sh .venv-natten requirements-natten.txt
	@tools/install_onednn.sh

lint: setup  ## ruff lint and format check
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

test: setup natten-env lint  ## setup, lint, the test suite, then the NATTEN parity tests
	OVERLOCK_REQUIRE_MPI=1 $(PY) -m pytest tests -m "not heavy"
	@echo "== big-variant gradient parity, in a process of its own =="
	$(PY) -m pytest tests -m heavy
	@echo "== NATTEN parity tests in .venv-natten =="
	OVERLOCK_REQUIRE_NATTEN=1 $(NATTEN_PY) -m pytest tests/natten_parity

DEMO_EPOCHS ?= 5
demo: setup  ## train XXT in PyTorch and Jittor from one init on the generated dataset, then plot
	$(PY) train_torch.py --epochs $(DEMO_EPOCHS) --out logs/torch
	$(PY) train.py --epochs $(DEMO_EPOCHS) --init logs/torch/init.pth --out logs/jittor
	$(PY) plot.py
	@echo "results: logs/torch/log.csv, logs/jittor/log.csv (per epoch), steps.csv (per step),"
	@echo "         checkpoints in logs/*/, figure visualization/training_metrics.png"

DATA ?=
EPOCHS ?= 20
RESULTS ?= logs/real
FIGS ?= visualization/real
reproduce: setup  ## DATA=tiny-imagenet-200: both frameworks from one init, then figures (resumes)
	@test -n "$(DATA)" || { echo "usage: make reproduce DATA=/path/to/tiny-imagenet-200 [EPOCHS=20]" >&2; exit 2; }
	@if [ -f $(RESULTS)/torch/checkpoint_latest.pth ]; then start=--resume; fi; \
	  set -x; $(PY) train_torch.py --data $(DATA) --epochs $(EPOCHS) --out $(RESULTS)/torch $$start
	@if [ -f $(RESULTS)/jittor/checkpoint_latest.pkl ]; then start=--resume; \
	  else start="--init $(RESULTS)/torch/init.pth"; fi; \
	  set -x; $(PY) train.py --data $(DATA) --epochs $(EPOCHS) --out $(RESULTS)/jittor $$start
	$(PY) plot.py --logs $(RESULTS)/jittor:Jittor $(RESULTS)/torch:PyTorch --out $(FIGS)_training_metrics.png
	$(PY) erf.py --checkpoint $(RESULTS)/jittor/checkpoint_latest.pkl --data $(DATA) --out $(FIGS)_erf_jittor.png
	$(PY) erf_torch.py --checkpoint $(RESULTS)/torch/checkpoint_latest.pth --data $(DATA) --out $(FIGS)_erf_torch.png
	$(PY) gradcam.py --checkpoint $(RESULTS)/jittor/checkpoint_latest.pkl --data $(DATA) --out $(FIGS)_gradcam_jittor.png
	$(PY) gradcam_torch.py --checkpoint $(RESULTS)/torch/checkpoint_latest.pth --data $(DATA) --out $(FIGS)_gradcam_torch.png
	$(PY) evaluate.py --checkpoint $(RESULTS)/jittor/checkpoint_latest.pkl --data $(DATA) --out $(RESULTS)/jittor/eval.json
	$(PY) evaluate_torch.py --checkpoint $(RESULTS)/torch/checkpoint_latest.pth --data $(DATA) --out $(RESULTS)/torch/eval.json

SEEDS ?= 3
COMPARE ?= logs/compare
compare: setup  ## DATA=tiny-imagenet-200 [SEEDS=3]: N seeds x both frameworks + a ulp control, report (resumes)
	@test -n "$(DATA)" || { echo "usage: make compare DATA=/path/to/tiny-imagenet-200 [SEEDS=3] [EPOCHS=20]" >&2; exit 2; }
	$(PY) compare.py --data $(DATA) --seeds $(SEEDS) --epochs $(EPOCHS) --out $(COMPARE)

bench: setup  ## Jittor vs PyTorch eager, channels_last, compile: step, eval, memory (logs/bench/)
	$(PY) bench.py

gpu-check:  ## on a CUDA machine: setup, parity on CUDA, NATTEN's CUDA op, 1 epoch each, bench (logs/gpu-check/)
	tools/gpu_check.sh

bench-conv: setup  ## Jittor vs PyTorch time of one dense 3x3 conv forward at batch 64
	$(PY) -m tools.bench_conv

WORK ?= step
profile: setup  ## WORK=step|eval|deploy-eval: where Jittor's time goes, by kind of kernel
	$(PY) -m tools.profile_jittor --work $(WORK)

clean-envs:  ## remove both virtual environments
	rm -rf .venv .venv-natten
