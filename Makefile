# Set-up is part of every target: a fresh machine with Python 3.10+ and pip needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint docs chromium compiler bench data notebooks clean

$(STAMP): pyproject.toml constraints.txt
	@echo "setting up .venv (torch CPU build, TransformerLens, dev tools): a few minutes on a first run"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

## demo: train the default 2-layer attention-only model on induction and print its heads
demo: $(STAMP)
	$(BIN)/circuits train

## test: lint, type-check, the docs' strict build, and the whole test suite (unit, training,
## notebooks, browser): about 22 minutes on a lightly loaded 2-core machine (docs/testing.md)
test: $(STAMP) lint docs chromium compiler
	$(BIN)/python -m pytest

## test-fast: the unit tier only (a few minutes on a quiet 2-core machine)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not notebook and not browser"

lint: $(STAMP)
	$(BIN)/ruff check circuits tests bench scripts
	$(BIN)/ruff format --check circuits tests bench scripts
	$(BIN)/mypy circuits
	$(BIN)/lint-imports

## docs: build the documentation site into site/; any warning (a broken link or reference, a
## docstring mkdocstrings cannot parse) fails the build
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict  # not --quiet: it hides warnings from --strict

# The browser tests (tests/test_report_browser.py) need Chromium: install it where we can (root
# with apt-get, as .ci/run does), otherwise stop here and say so rather than fail later.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	command -v google-chrome >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the browser tests (apt-get install chromium; once)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	      >/dev/null 2>&1 || { echo "make: could not install chromium with apt-get" >&2; exit 1; }; \
	  else \
	    echo "make test needs chromium for the browser tests: install it (apt-get install" \
	      "chromium), or run make test-fast for the unit tier only" >&2; exit 1; \
	  fi; }

# The stacked trainer's attention kernel (circuits/training/native_attention.c) is compiled on
# first use; its tests fail, not skip, without a C compiler: install one where we can.
compiler:
	@command -v $${CC:-cc} >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing a C compiler for the attention kernel's tests (apt-get install gcc; once)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc) \
	      >/dev/null 2>&1 || { echo "make: could not install gcc with apt-get" >&2; exit 1; }; \
	  else \
	    echo "make test needs a C compiler (cc) for the attention kernel's tests: install one" \
	      "(apt-get install gcc, xcode-select --install), or run make test-fast" >&2; exit 1; \
	  fi; }

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
