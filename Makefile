# The two quick-start commands (README): `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean default-dataset default-model

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

# the demo seeds: the games `make demo` plays and the README's figures were measured on
DEMO_GAMES := 64
DEMO_SEED := 0

# the shipped model (src/lab2048/model/default) plays the demo seeds, its values are compared
# with the returns they realise, and it is evaluated against the greedy baseline on the same
# seeds; then the main job on the embedded teacher dataset shows training works (check it,
# build its value sidecar, train a tiny policy + value model, play it); a short teacher run
demo: $(VENV)/.installed
	$(BIN)/lab2048 play --init default --games 16 --seed $(DEMO_SEED) --out runs/demo/default-play --overwrite
	$(BIN)/lab2048 value-smoke --init default --agent value:depth=1 --games 8 --moves 3000 --out runs/demo/default-value-smoke --overwrite
	$(BIN)/lab2048 evaluate --agents policy,value:depth=1,hybrid:top=2,greedy --init default --games $(DEMO_GAMES) --seed $(DEMO_SEED) --out runs/demo/evaluate --overwrite
	$(BIN)/lab2048 check
	$(BIN)/lab2048 value-sidecar --output runs/demo/default-values --overwrite
	$(BIN)/lab2048 train --config configs/train/demo.toml --overwrite
	$(BIN)/lab2048 play --init runs/demo/train/init --games 32 --seed 1 --out runs/demo/model-play --overwrite
	$(BIN)/lab2048 value-smoke --init runs/demo/train/init --games 8 --out runs/demo/value-smoke --overwrite
	$(BIN)/lab2048 generate --config configs/demo-generate.toml --overwrite
	$(BIN)/lab2048 check runs/demo/teacher

# rebuilds the model shipped in the package (README, "The shipped model"): 300 games of the
# project's teacher (configs/default-model-data.toml), their value sidecar, training with
# configs/train/default-model.toml, then self-play TD rounds from that model
# (configs/train/default-model-td.toml), an evaluation on the demo seeds, and publishing into
# src/lab2048/model/default. Publishing refuses to replace the shipped model unless
# OVERWRITE=1; the intermediate outputs under runs/default-model are replaced (RESUME_TD=1
# continues an interrupted self-play stage instead). TRAIN_ARGS and TD_ARGS add `--set` items
# to the two stages (the shipped init records the second's settings in training-config.json).
#   make default-model [OVERWRITE=1] [RESUME_TD=1] [TRAIN_ARGS="--set ..."] [TD_ARGS="--set ..."]
DEFAULT_MODEL := runs/default-model
default-model: $(VENV)/.installed
	$(BIN)/lab2048 generate --config configs/default-model-data.toml --overwrite
	$(BIN)/lab2048 value-sidecar --dataset $(DEFAULT_MODEL)/dataset --overwrite
	$(BIN)/lab2048 train --config configs/train/default-model.toml $(TRAIN_ARGS) --overwrite
	$(BIN)/lab2048 train --config configs/train/default-model-td.toml $(TD_ARGS) $(if $(RESUME_TD),--resume,--overwrite)
	$(BIN)/lab2048 evaluate --agents policy,value:depth=1,hybrid:top=2,greedy --init $(DEFAULT_MODEL)/td/init --games $(DEMO_GAMES) --seed $(DEMO_SEED) --out $(DEFAULT_MODEL)/evaluate --overwrite
	$(BIN)/lab2048 publish $(DEFAULT_MODEL)/td --evaluation $(DEFAULT_MODEL)/evaluate $(if $(OVERWRITE),--overwrite)

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
