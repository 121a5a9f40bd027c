# Set-up is part of every target: a fresh machine with Python 3.10+ and pip needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint bench data notebooks clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

## demo: train the default 2-layer attention-only model on induction and print its heads
demo: $(STAMP)
	$(BIN)/circuits train

## test: lint, type-check, and the whole test suite (unit, training, notebooks, report)
test: $(STAMP) lint
	$(BIN)/python -m pytest

## test-fast: unit tests only (seconds)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not notebook and not browser"

lint: $(STAMP)
	$(BIN)/ruff check circuits tests bench scripts
	$(BIN)/ruff format --check circuits tests bench scripts
	$(BIN)/mypy circuits

## data: regenerate the small trained checkpoints in data/ (about a minute on 2 cores)
data: $(STAMP)
	$(BIN)/python scripts/make_data.py --quiet

## notebooks: execute notebooks/NN_name.py and store it, with outputs, in NN_name.ipynb
notebooks: $(STAMP)
	$(BIN)/python scripts/run_notebooks.py

## bench: side-by-side benchmarks against TransformerLens (writes bench/results.json)
bench: $(STAMP)
	$(BIN)/circuits bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
