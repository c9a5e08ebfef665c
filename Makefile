# lookalike: set-up, demo and tests. `make test` is what CI runs.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
DATA    ?= ../shared/datasets
DEMO_WS ?= workspaces/demo
PORT    ?= 8000

.PHONY: setup demo test test-unit bench lint clean

setup: $(BIN)/lookalike

$(BIN)/lookalike: pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	# torch first, pinned: later installs must not pull another (CUDA) build
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/python -m lookalike.demo_run --workspace $(DEMO_WS) --datasets $(DATA) --port $(PORT)

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout 900 --durations 15 tests

test-unit: setup
	$(BIN)/python -m pytest -q -m "not slow and not browser" tests

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) workspaces
