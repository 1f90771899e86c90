# Two commands do everything on a fresh machine with Python 3.11:
#   make serve   create .venv, install, start the API on 127.0.0.1:8000 plus one worker
#   make test    create .venv, install, run ruff, mypy and the whole test suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Two pytest processes (pytest-xdist; one per core, at most 4): the tests that start real services
# run one at a time in one of them (tests/conftest.py), the rest beside them (README: Tests).
PYTEST_PROCESSES ?= --numprocesses=auto --maxprocesses=4 --dist=loadgroup

# The MNIST IDX files beside this checkout, when present (see README: Data).
SHARED_MNIST := $(abspath ../shared/data/mnist)
ifneq ($(wildcard $(SHARED_MNIST)/t10k-images-idx3-ubyte.gz),)
export GAN_DATA_DIR ?= $(SHARED_MNIST)
endif

.PHONY: install serve worker test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/gan serve

worker: $(STAMP)
	$(BIN)/gan worker

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest $(PYTEST_PROCESSES)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
