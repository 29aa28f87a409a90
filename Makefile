# Every target builds what it needs by itself: a fresh clone needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The reference client lives in its own environment: its pins must never leak into ours.
COMPAT_VENV := .venv-compat
COMPAT_STAMP := $(COMPAT_VENV)/.installed-stamp
INFERENCE_CLI_VERSION ?= 1.8.3

.PHONY: demo test lint typecheck unit compat bench bench-quick bench-cpu bench-wan bench-wan-quick bench-startup soak fmt clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

$(COMPAT_STAMP):
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/pip install --quiet --disable-pip-version-check 'inference-cli==$(INFERENCE_CLI_VERSION)'
	touch $(COMPAT_STAMP)

demo: $(STAMP)
	$(BIN)/rfbatch demo

# Only folders that exist: a fresh clone has no benchmarks/data and the like.
CODE_DIRS := $(wildcard src tests compat benchmarks)

lint: $(STAMP)
	$(BIN)/ruff check $(CODE_DIRS)
	$(BIN)/ruff format --check $(CODE_DIRS)

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -n 2 --dist worksteal

test: lint typecheck unit

compat: $(STAMP) $(COMPAT_STAMP)
	INFERENCE_BIN=$(abspath $(COMPAT_VENV))/bin/inference $(BIN)/pytest compat

# Benchmarks: rfbatch side by side with inference-cli (its own venv under benchmarks/).
BENCH_REF_VENV := benchmarks/.venv-ref
BENCH_REF_STAMP := $(BENCH_REF_VENV)/.installed-stamp

$(BENCH_REF_STAMP):
	$(PYTHON) -m venv $(BENCH_REF_VENV)
	$(BENCH_REF_VENV)/bin/pip install --quiet --disable-pip-version-check 'inference-cli==$(INFERENCE_CLI_VERSION)'
	touch $(BENCH_REF_STAMP)

bench: $(STAMP) $(BENCH_REF_STAMP)
	$(BIN)/python benchmarks/run.py --reference $(abspath $(BENCH_REF_VENV))/bin/inference

bench-quick: $(STAMP) $(BENCH_REF_STAMP)
	$(BIN)/python benchmarks/run.py --quick --reference $(abspath $(BENCH_REF_VENV))/bin/inference

# Issue 14's CPU cost: 10,000 images uploaded and exported, CPU-s/GB and CPU-ms/file.
bench-cpu: $(STAMP) $(BENCH_REF_STAMP)
	$(BIN)/python benchmarks/run.py --cpu --reference $(abspath $(BENCH_REF_VENV))/bin/inference

# The WAN profile (issue 13): HTTPS and a shaped link, scenarios W1-W4 (1, 3, 4 and 5 above).
WAN := --tls --link rtt=40ms,conn=25MB/s,total=100MB/s --only 1,3,4,5 --no-ram

bench-wan: $(STAMP) $(BENCH_REF_STAMP)
	$(BIN)/python benchmarks/run.py $(WAN) --reference $(abspath $(BENCH_REF_VENV))/bin/inference

bench-wan-quick: $(STAMP) $(BENCH_REF_STAMP)
	$(BIN)/python benchmarks/run.py $(WAN) --quick --reference $(abspath $(BENCH_REF_VENV))/bin/inference

# Start-up of --version and --help, beside inference-cli (medians of 15 runs).
bench-startup: $(STAMP) $(BENCH_REF_STAMP)
	$(BIN)/python benchmarks/startup.py --reference $(abspath $(BENCH_REF_VENV))/bin/inference

# Minutes of the daemon under continuous arrivals and mixed faults; not part of CI.
SOAK_MINUTES ?= 10
SOAK_RATE ?= 40
soak: $(STAMP)
	$(BIN)/python -m tests.reliability.soak --minutes $(SOAK_MINUTES) --rate $(SOAK_RATE) $(SOAK_ARGS)

fmt: $(STAMP)
	$(BIN)/ruff check --fix $(CODE_DIRS)
	$(BIN)/ruff format $(CODE_DIRS)

clean:
	rm -rf $(VENV) $(COMPAT_VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
