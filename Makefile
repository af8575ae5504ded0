# musicidx: the two commands of the README are `make demo` and `make test`.
# Both set up everything first (idempotent): the FluidSynth library and a General MIDI
# SoundFont from the system's packages, a virtualenv, CPU-only torch, the package itself.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A loose `torch` requirement pulls a multi-GB CUDA build; this pin takes the CPU build.
TORCH  ?= torch==2.13.0
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP  := $(VENV)/.musicidx-setup

.PHONY: setup system-deps demo test test-fast lint bench clean

setup: system-deps $(STAMP)
	@$(BIN)/pip install -q --no-deps --force-reinstall . >/dev/null

system-deps:
	@if ldconfig -p 2>/dev/null | grep -q libfluidsynth \
	   || [ -e /opt/homebrew/lib/libfluidsynth.dylib ] || [ -e /usr/local/lib/libfluidsynth.dylib ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "installing the FluidSynth library and a GM SoundFont with apt-get"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    libfluidsynth3 fluidsynth fluid-soundfont-gm >/dev/null; \
	else \
	  echo "musicidx needs the FluidSynth library: 'brew install fluid-synth' on macOS," \
	       "'conda install -c conda-forge fluidsynth' elsewhere; then run make again"; exit 1; \
	fi

$(STAMP): pyproject.toml
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	@$(BIN)/pip install -q ".[test,demo]"
	@touch $@

demo: setup
	$(BIN)/musicidx demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow"

bench: setup
	$(BIN)/python benchmarks/build_bench.py
	$(BIN)/python benchmarks/query_bench.py
	$(BIN)/python benchmarks/faiss_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
