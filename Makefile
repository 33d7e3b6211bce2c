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

.PHONY: lab test setup lint sync-check unit notebooks learner browser-deps clean help

help:
	@echo "make lab   - set up .venv and open JupyterLab on the course"
	@echo "make test  - set up .venv and run every check (unit, property, notebooks, jupytext sync, lint)"

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

lab: setup learner
	$(BIN)/jupyter lab --notebook-dir=. --port=$(PORT) $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

# Chromium for the browser test: installed from Debian when missing and we can (root + apt).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the browser test will be skipped"; }

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check diffusion_course tests scripts benchmarks

sync-check: setup
	$(BIN)/jupytext --sync --pre-commit-mode notebooks/*.py

test: setup browser-deps lint sync-check
	$(BIN)/python scripts/make_learner_notebooks.py --out build/learner --force
	$(BIN)/python -m pytest tests notebooks/*.ipynb build/learner/*.ipynb --nbval-lax --durations=15

clean:
	rm -rf $(VENV) build learner .pytest_cache .ruff_cache .hypothesis
