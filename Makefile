# One command to set up and open the notebooks (`make lab`), one to set up and test everything (`make test`).
# Override VENV to use another environment, e.g. `make test VENV=/path/to/venv`.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
NOTEBOOKS := $(wildcard notebooks/*.ipynb notebooks/solutions/*.ipynb)

# Which PyTorch build the environment gets, chosen when it is created (`make clean` to choose again):
#   TORCH=auto  (default) cuda where `nvidia-smi` lists a GPU, cpu everywhere else
#   TORCH=cpu   the CPU-only build; stops, and says what to do, before pip would fetch a build that bundles CUDA
#   TORCH=cuda  pip's default build, which on Linux bundles CUDA (about 6 GB)
# TORCH_INDEX_URL: the package index to take torch from, e.g. the CPU-only one that PyTorch's "Get Started" page
# gives for Linux, Pip, CPU. See "Which PyTorch" in README.md.
TORCH ?= auto
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?=
TORCH_BUILD = $(if $(filter auto,$(TORCH)),$(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu),$(TORCH))
PIP_TORCH = $(PYTHON) -m pip install "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
# Reads the report of pip's dry run on stdin; fails when the torch it would install needs nvidia-* packages (CUDA).
BUNDLES_NO_CUDA := import json, sys; report = json.load(sys.stdin); \
	sys.exit(any(item["metadata"]["name"].startswith("nvidia-") for item in report["install"]))
define CPU_HELP
No CPU-only PyTorch $(TORCH_VERSION) is within pip's reach here: pip would install the build that bundles CUDA
(about 6 GB). Either give pip the CPU-only package index, the --index-url of the command that PyTorch's
"Get Started" page shows for Linux, Pip, CPU (about 1.9 GB in all):
    make $(or $(MAKECMDGOALS),install) TORCH_INDEX_URL=<that url>
or take the CUDA build:
    make $(or $(MAKECMDGOALS),install) TORCH=cuda
endef
export CPU_HELP

# PyTorch picks its CPU kernels by the widest vector instructions the CPU has (AVX-512 or AVX2 on x86-64), and the
# two round differently, so a training run drifts apart over its steps. The committed notebooks were computed with
# the AVX2 kernels, which every x86-64 CPU of the last decade has; pinning them lets `make notebooks` and `make lab`
# print the committed numbers on such a CPU (up to the matrix products of MKL, which picks its own instructions per
# CPU vendor). The check cells do not depend on it: `make claims` runs them under other kernels and seeds, and
# `make test` passes with and without the pin. For AVX-512: `make ... ATEN_CPU_CAPABILITY=avx512`.
ifeq ($(shell uname -m),x86_64)
export ATEN_CPU_CAPABILITY ?= avx2
endif

# Tests: torch on one thread per process (see rlhf_edu/core/runtime.py), JOBS processes side by side; each run
# lists its ten slowest tests, so a CI log shows where the time goes.
# pytest exits with 5 when it collects no test, which is no failure of the code: `|| [ $$? -eq 5 ]` lets it pass.
JOBS ?= 2
PYTEST := RLHF_EDU_THREADS=1 OMP_NUM_THREADS=1 $(PYTHON) -m pytest -p no:cacheprovider --durations=10
NO_TESTS_IS_OK := || [ $$? -eq 5 ]

# JupyterLab serves the repository root, so notebooks reach ../images/, and opens on notebooks/.
# LAB_FLAGS adds options, e.g. `make lab LAB_FLAGS=--no-browser`; tests/browser starts the server this way.
LAB_FLAGS ?=

# The tests never download: the shipped zoo and the world are all they need (as in .ci/run).
TEST_TARGETS := test unit unit-fast unit-and-rest nbval nbval-rest test-browser mutation
$(TEST_TARGETS): export HF_HUB_OFFLINE := 1
$(TEST_TARGETS): export HF_DATASETS_OFFLINE := 1
$(TEST_TARGETS): export TRANSFORMERS_OFFLINE := 1

# Lint and formatting in a small environment of their own that holds only ruff, so `make lint` needs no PyTorch.
# RUFF_VERSION is the one pinned in pyproject.toml's dev extra, which the main environment gets too.
LINT_VENV ?= .venv-lint
RUFF_VERSION := $(shell sed -n 's/.*"ruff==\([^"]*\)".*/\1/p' pyproject.toml)
LINT_PATHS := rlhf_edu tests benchmarks book

.PHONY: install lab test unit unit-fast unit-and-rest nbval nbval-rest test-browser book notebooks claims mutation \
	lint format figures zoo doctor dist clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	@echo "PyTorch $(TORCH_VERSION), $(TORCH_BUILD) build (TORCH=$(TORCH))"
	@if [ "$(TORCH_BUILD)" = cpu ]; then \
		$(PIP_TORCH) --quiet --dry-run --report - | $(PYTHON) -c '$(BUNDLES_NO_CUDA)' || { echo "$$CPU_HELP"; exit 1; }; \
	fi
	$(PIP_TORCH) --quiet
	$(PYTHON) -m pip install --quiet -e ".[dev,trl]"
	touch $@

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks $(LAB_FLAGS)

# What CI runs: the unit tests, nbval, and every notebook in a real browser. Each notebook runs once: the browser
# test runs every notebook with a widget top to bottom and checks what nbval would, so nbval runs only the others
# (tests/notebook_split.py; all of them where Chromium is missing, as the browser test is then skipped).
# The unit tests and nbval share one pytest run, one file or notebook per process at a time (--dist loadfile), so
# the slowest unit test (a zoo rebuild) no longer holds one process while the other sits idle.
test: unit-and-rest test-browser

unit: $(VENV)/.installed
	$(PYTEST) -n $(JOBS) tests --ignore=tests/browser $(NO_TESTS_IS_OK)

# The unit tests but for those marked slow (they take minutes, e.g. the zoo rebuild): the loop to run while editing.
unit-fast: $(VENV)/.installed
	$(PYTEST) -n $(JOBS) -m "not slow" tests --ignore=tests/browser $(NO_TESTS_IS_OK)

# Every notebook under nbval, one notebook per process (--dist loadfile), each with its own kernel.
NBVAL := $(PYTEST) -n $(JOBS) --dist loadfile --nbval-lax --nbval-cell-timeout=300 \
	--nbval-sanitize-with tests/nbval_sanitize.cfg
nbval: $(VENV)/.installed
	$(NBVAL) notebooks $(NO_TESTS_IS_OK)

# The notebooks that the browser test does not run.
nbval-rest: $(VENV)/.installed
	$(NBVAL) $$($(PYTHON) tests/notebook_split.py) $(NO_TESTS_IS_OK)

# `make unit` and `make nbval-rest` in one run (what `make test` runs before the browser test).
unit-and-rest: $(VENV)/.installed
	$(NBVAL) tests --ignore=tests/browser $$($(PYTHON) tests/notebook_split.py) $(NO_TESTS_IS_OK)

# JupyterLab in Chromium (/usr/bin/chromium; skipped without it): equations, images and widgets. Each process
# starts its own JupyterLab through `make lab`; screenshots go to tests/browser/artifacts/. It also opens every page
# of the book site, which it builds first (`make book`, which needs npm) where Chromium is there to open it.
test-browser: $(VENV)/.installed $(if $(wildcard /usr/bin/chromium),book)
	$(PYTEST) -n $(JOBS) --dist load tests/browser $(NO_TESTS_IS_OK)

# Re-execute every notebook in place, top to bottom, keeping widget state so the saved file shows them.
notebooks: $(VENV)/.installed
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=600 \
		--ExecutePreprocessor.store_widget_state=True $(NOTEBOOKS)

# Every notebook, solutions included, under other CPU kernels and seeds (two seed shifts, avx512 where the CPU has
# it, default), JOBS at a time; writes notebooks/claims/claims.md. Several full passes: not part of `make test`.
# CLAIMS_FLAGS adds options, e.g. `make claims CLAIMS_FLAGS="--perturb seed+1000 notebooks/12_direct_alignment.ipynb"`.
CLAIMS_FLAGS ?=
claims: $(VENV)/.installed
	$(VENV)/bin/rlhf-edu claims --jobs $(JOBS) $(CLAIMS_FLAGS)

# The book site: every notebook with its saved outputs, as static HTML in build/book/, which any static file server
# opens (`python -m http.server -d build/book`). Nothing is executed, so it needs no PyTorch: Sphinx and MyST-NB in an
# environment of their own (book/requirements.txt), and from npm (book/package-lock.json) MathJax and the widgets'
# HTML manager, which the site serves itself so that it reads offline. A warning fails the build.
BOOK_VENV ?= .venv-book
book: $(BOOK_VENV)/.installed book/node_modules/.package-lock.json
	rm -rf build/book build/book-doctrees
	$(BOOK_VENV)/bin/sphinx-build -b html -c book -d build/book-doctrees -W --keep-going -q . build/book
	@echo "the site is in build/book/: python -m http.server -d build/book, then open http://localhost:8000"

$(BOOK_VENV)/.installed: book/requirements.txt book/constraints.txt
	test -x $(BOOK_VENV)/bin/python || python3 -m venv $(BOOK_VENV)
	$(BOOK_VENV)/bin/python -m pip install --quiet -r book/requirements.txt
	touch $@

book/node_modules/.package-lock.json: book/package-lock.json
	cd book && npm ci --ignore-scripts --no-audit --no-fund

$(LINT_VENV)/.installed: pyproject.toml
	test -x $(LINT_VENV)/bin/python || python3 -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install --quiet "ruff==$(RUFF_VERSION)"
	touch $@

# ruff's checks, and that every file is as `ruff format` writes it.
# Mutation testing (mutmut; the modules and tests are in pyproject.toml's [tool.mutmut]): each small edit to the code
# that no test notices is a bug the suite would let through; `mutmut results` lists them, `mutmut show NAME` shows one.
# Tens of minutes on 2 cores, so not part of `make test`; the last score is in benchmarks/README.md. MUTATION_FLAGS narrows it
# to some mutants, e.g. `make mutation MUTATION_FLAGS='"rlhf_edu.policy_gradients*"'`.
MUTATION_FLAGS ?=
mutation: $(VENV)/.installed
	PATH="$(abspath $(VENV))/bin:$$PATH" RLHF_EDU_THREADS=1 OMP_NUM_THREADS=1 \
		$(VENV)/bin/mutmut run --max-children $(JOBS) $(MUTATION_FLAGS)
	$(VENV)/bin/mutmut results

lint: $(LINT_VENV)/.installed
	$(LINT_VENV)/bin/ruff check $(LINT_PATHS)
	$(LINT_VENV)/bin/ruff format --check $(LINT_PATHS)

# Rewrite the files as `ruff format` writes them (what `make lint` checks).
format: $(LINT_VENV)/.installed
	$(LINT_VENV)/bin/ruff format $(LINT_PATHS)

figures: $(VENV)/.installed
	$(VENV)/bin/rlhf-edu figures --out images

zoo: $(VENV)/.installed
	$(VENV)/bin/rlhf-edu zoo build

doctor: $(VENV)/.installed
	$(VENV)/bin/rlhf-edu doctor

# The wheel and the sdist, built in isolation as pip builds them, into dist/. Both carry the zoo, the shipped sweeps,
# the notebooks and the diagrams; `rlhf-edu notebooks DIR` copies the last two out of an installed wheel.
dist: $(VENV)/.installed
	$(PYTHON) -m build --outdir dist

clean:
	rm -rf $(VENV) $(LINT_VENV) $(BOOK_VENV) book/node_modules .pytest_cache build *.egg-info
