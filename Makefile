# The two commands of the README. Both create .venv (python3 -m venv) and install the package
# with its test extra when missing or when pyproject.toml changed; nothing else is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKDIR ?= runs/fcn8s_mini
CONFIG ?= experiments/fcn.py:FCN-8s,mini
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: train test bench table clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

train: $(STAMP)
	$(BIN)/python -m segattn_jax.main train --config $(CONFIG) --workdir $(WORKDIR)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests

# Benchmarks compare against PyTorch (CPU), a reference only: installed here, never a dependency.
bench: $(STAMP)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) runs .pytest_cache
