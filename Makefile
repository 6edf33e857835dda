# samcam: the two commands of a fresh machine are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the builds this workplace's machines hold on disk; elsewhere pip fetches them.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEPS_HASH := $(shell (cat pyproject.toml Makefile; grep __version__ samcam/__init__.py) | sha256sum | cut -c1-16)
STAMP := $(VENV)/.deps-$(DEPS_HASH)

.PHONY: venv weights test test-fast demo reproduce bench mutation clean-venv

venv: $(STAMP)

$(STAMP):
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.deps-*
	@touch $@

weights: venv
	$(VENV)/bin/samcam weights fetch vit_t

# The whole suite, in a random order (pytest-randomly; the seed is printed last), with the ten slowest tests.
test: venv weights
	$(PY) -m pytest -q --durations=10 $(PYTEST_ARGS)

# The edit loop (1-2 min on 2 cores): no SAM model, notebook, or whole step on real data.
test-fast: venv
	$(PY) -m pytest -q -m "not slow and not integration" $(PYTEST_ARGS)

demo: venv weights
	$(VENV)/bin/samcam demo

reproduce: venv weights
	$(VENV)/bin/samcam reproduce

# The CPU benchmarks, each a reproduce step (notebooks/reproduce.yml), on a clean commit and an idle machine;
# bench_merge_e2e needs the paper's code checked out in ../baselines/SAM_WSSS.
bench: venv weights
	$(VENV)/bin/samcam reproduce --only bench_eval bench_merge bench_merge_e2e bench_generator_cpu bench_modes_cpu

# Mutation testing ([tool.mutmut] in pyproject.toml: every module that decides a number); folds the run
# into results/mutation/ (scripts/mutation_report.py). All modules take many hours on 2 cores: run parts
# with mutmut's own selection, e.g. make mutation MUTANTS='"samcam.io*" "samcam.training*"'.
# One thread: mutmut forks its test runs, and a forked child hangs in an OpenMP pool its parent started.
MUTANTS ?=
mutation: venv
	rm -rf mutants && mkdir mutants
	echo "$$(git rev-parse --short HEAD)$$(git status --porcelain -- samcam tests pyproject.toml | grep -q . && echo -dirty)" > mutants/samcam_commit
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 SAMCAM_MUTATION=1 SAMCAM_DATA=$${SAMCAM_DATA:-$$(cd .. && pwd)/shared/data} $(VENV)/bin/mutmut run $(MUTANTS) || true
	$(PY) scripts/mutation_report.py $(MUTANTS)

clean-venv:
	rm -rf $(VENV)
