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

# the main job on the embedded teacher dataset: check it, build its value sidecar, train a
# small policy + value model, play games with it and compare its values with the returns;
# then a short teacher run and the baseline agents' games
demo: $(VENV)/.installed
	$(BIN)/lab2048 check
	$(BIN)/lab2048 value-sidecar --output runs/demo/default-values --overwrite
	$(BIN)/lab2048 train --config configs/train/demo.toml --overwrite
	$(BIN)/lab2048 play --init runs/demo/train/init --games 32 --seed 1 --out runs/demo/model-play --overwrite
	$(BIN)/lab2048 value-smoke --init runs/demo/train/init --games 8 --out runs/demo/value-smoke --overwrite
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
