# The two commands: `make demo` runs DatasetGAN end to end on the built-in default,
# `make test` runs the tests. Each creates or refreshes .venv first (quick when current).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test venv browser

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch and torchvision first, pinned to the builds pip finds on this machine's disk
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/datasetgan demo

# Debian's Chromium for the studio's browser tests (Playwright drives it; no browser download)
browser:
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q
