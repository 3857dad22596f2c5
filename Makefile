# lmlab: `make demo` and `make test` each do all the set-up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test docs bench lint clean setup

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard src/lmlab/models/*.pyx)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# the pinned CPU torch first: a bare `torch` requirement would pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lmlab tour

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

docs: $(STAMP)
	$(BIN)/mkdocs build --strict -d site

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	for b in benchmarks/[!_]*.py; do $(BIN)/python $$b || exit 1; done

# every benchmark's --quick: the same side-by-side comparisons at a small size (minutes each on 2 cores);
# writes benchmarks/results/NAME.quick.json, never the full-size NAME.json. A reference implementation that is
# not installed (Keras, gensim: the bench extra) is skipped with a note.
.PHONY: bench-quick
bench-quick: $(STAMP)
	for b in benchmarks/[!_]*.py; do echo "== $$b --quick"; nice $(BIN)/python $$b --quick || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) site runs build *.egg-info src/*.egg-info src/lmlab/models/_*_kernels.c src/lmlab/models/*.so
