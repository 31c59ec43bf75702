# The two quick-start commands (README): `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean default-dataset

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

# the embedded teacher dataset checked and given a value sidecar, a short teacher run, and
# the baseline agents' games
demo: $(VENV)/.installed
	$(BIN)/lab2048 check
	$(BIN)/lab2048 value-sidecar --output runs/demo/default-values --overwrite
	$(BIN)/lab2048 generate --config configs/demo-generate.toml --overwrite
	$(BIN)/lab2048 check runs/demo/teacher
	$(BIN)/lab2048 play --config configs/demo.toml --out runs/demo/play --overwrite

# rebuilds the small dataset shipped in the package (src/lab2048/data/default)
default-dataset: $(VENV)/.installed
	$(BIN)/lab2048 generate --config configs/default-dataset.toml --overwrite
	$(BIN)/lab2048 check src/lab2048/data/default

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/teacher.py
	$(BIN)/python benchmarks/value_sidecar.py

# numba caches compiled kernels in __pycache__; after editing a kernel that others call,
# clear them (numba only notices changes to a function's own file)
clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +
