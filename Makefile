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
# `make test` also installs the optional engines (Ray, the HTTP server) and a headless browser,
# so that CI tests them; `make demo` and a plain install never need them.
TEST_STAMP := $(VENV)/.musicidx-test-extras

.PHONY: setup system-deps test-deps demo test test-fast lint bench clean

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

# Chromium and its driver for the page test of `musicidx serve` (Debian's packages).
test-deps: setup $(TEST_STAMP)
	@if command -v chromedriver >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 \
	   || command -v chromium-browser >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1; }; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Chromium and chromedriver with apt-get (for the browser test)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    chromium chromium-driver >/dev/null; \
	else \
	  echo "no chromedriver: the browser test of 'musicidx serve' will be skipped"; \
	fi

$(TEST_STAMP): pyproject.toml $(STAMP)
	@$(BIN)/pip install -q ".[test,demo,ray,serve]"
	@$(BIN)/pip install -q --no-deps --force-reinstall . >/dev/null
	@touch $@

demo: setup
	$(BIN)/musicidx demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: test-deps lint
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow"

# The build, query and FAISS figures of BENCHMARKS.md (needs ../shared/data; the rest: benchmarks/README.md).
bench: setup
	$(BIN)/python -m benchmarks.perf.build_bench
	$(BIN)/musicidx build ../shared/data/musicians --out idx
	$(BIN)/python -m benchmarks.perf.query_bench --index idx
	$(BIN)/python -m benchmarks.perf.faiss_bench

clean:
	rm -rf $(VENV) build *.egg-info
