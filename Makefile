# Two commands do all set-up:  make lab  |  make test
# Both create .venv with $(PYTHON) and install the course into it (once; again when pyproject.toml changes).

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# torch/torchvision are pinned here (not in pyproject) to releases that pip finds on the course
# machines' local disk; on a laptop, override: make lab TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= dev,diffusers,class
PORT ?= 8888
# make test runs pytest in this many processes, one torch thread each (a notebook and its cells stay on one)
TEST_WORKERS ?= 2
# make lab opens the learner copies; the worked solutions: make lab LAB_DIR=notebooks
LAB_DIR ?= learner
# make hub: the class hub's address (127.0.0.1:HUB_PORT) and extra JupyterHub flags, e.g.
# HUB_ARGS="--JupyterHub.hub_port=8091 --ConfigurableHTTPProxy.api_url=http://127.0.0.1:8092"
HUB_PORT ?= 8000
HUB_ARGS ?=

.PHONY: lab test setup lint sync-check unit notebooks learner nbgrader-course browser-deps hub hub-deps gpu-check clean help

help:
	@echo "make lab   - set up .venv and open JupyterLab on the course"
	@echo "make test  - set up .venv and run every check (unit, property, notebooks, jupytext sync, lint)"
	@echo "make hub   - set up and start the demo class JupyterHub on 127.0.0.1:$(HUB_PORT) (class/)"
	@echo "make nbgrader-course - write the nbgrader course (source/ + nbgrader_config.py) into class/nbgrader"
	@echo "make gpu-check - on a CUDA machine (<= 8 min): notebooks, trainer, DDP, sampler -> docs/benchmarks/gpu.md"
	@echo "                 DRY_RUN=1: tiny sizes on the CPU, writes nothing in docs/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	@touch $@

setup: $(VENV)/.installed

learner: setup
	$(BIN)/python scripts/make_learner_notebooks.py --out learner

# The nbgrader course (one assignment per notebook) in class/nbgrader, generated from notebooks/.
# Its exchange folder: make nbgrader-course NBGRADER_ARGS="--exchange /srv/nbgrader/exchange"
nbgrader-course: setup
	$(BIN)/python scripts/make_nbgrader_source.py --course-dir class/nbgrader $(NBGRADER_ARGS)

lab: setup learner
	$(BIN)/jupyter lab --notebook-dir=. --port=$(PORT) $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_DIR)/

# Chromium for the browser test: installed from Debian when missing and we can (root + apt).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the browser test will be skipped"; }

# The class hub's proxy, configurable-http-proxy, from npm into class/node_modules (class/package-lock.json).
hub-deps: class/node_modules/.installed

class/node_modules/.installed: class/package.json class/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix class --no-audit --no-fund --loglevel=error && touch $@ \
	  || echo "npm ci --prefix class failed (offline?): the hub test will be skipped"; \
	else echo "node/npm not found: install Node.js 20 or newer with npm (https://nodejs.org, or your" \
	  "distribution's nodejs and npm), then run make hub-deps; until then the hub test is skipped"; fi

# The class JupyterHub in demo mode on 127.0.0.1 (class/jupyterhub_config.py says what it sets up).
hub: setup hub-deps
	PATH="$(CURDIR)/class/node_modules/.bin:$(CURDIR)/$(BIN):$$PATH" DIFFUSION_COURSE_HUB=demo exec \
	  $(BIN)/jupyterhub -f class/jupyterhub_config.py --port=$(HUB_PORT) $(HUB_ARGS)

# One prepared check of the GPU path (scripts/gpu_check.py; options: GPU_CHECK_ARGS="--help").
gpu-check: setup
	$(BIN)/python scripts/gpu_check.py $(if $(filter 1,$(DRY_RUN)),--dry-run) $(GPU_CHECK_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check diffusion_course tests scripts benchmarks class/*.py

sync-check: setup
	$(BIN)/jupytext --sync --pre-commit-mode notebooks/*.py

test: setup browser-deps hub-deps lint sync-check
	$(BIN)/python scripts/make_learner_notebooks.py --out build/learner --force
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests notebooks/*.ipynb build/learner/*.ipynb --nbval-lax \
	  -n $(TEST_WORKERS) --dist loadfile --durations=15 -m "not alone"
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -m alone

clean:
	rm -rf $(VENV) build learner .pytest_cache .ruff_cache .hypothesis
