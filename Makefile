# Two commands on a fresh machine:
#   make repro   install the pinned environment, then `dvc repro` (embedded digits dataset)
#   make test    install the pinned environment, then the whole test suite
# uv is bootstrapped into .tools/ (from PyPI, pinned) when it is not already on PATH.
# Bytecode is compiled at install time: with PYTHONDONTWRITEBYTECODE set (as on CI machines),
# every stage process would otherwise recompile torch from source (about 6 s each).
# The DVC guard (src/kdlab/dvcguard.py) is a .pth file in the venv: kdlab checks every
# `dvc repro` / `dvc exp run` before DVC rewrites params.yaml or touches an output.

SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV_BIN := $(CURDIR)/.venv/bin
# Stages run `python -m kdlab...`: the venv must come first on PATH.
RUN := PATH="$(VENV_BIN):$$PATH"
UEA_MIRROR := $(CURDIR)/.tools/uea

.PHONY: repro test lint format install clean-env

repro: install
	$(RUN) dvc repro

test: install $(UEA_MIRROR)/.done
	KDLAB_UEA_MIRROR=$(UEA_MIRROR) $(RUN) python -m pytest $(PYTEST_ARGS)

# The UEA/UCR .ts files the sequence datasets' tests read, from the aeon wheel on PyPI (no
# dataset download at test time; kdlab does not depend on aeon).
$(UEA_MIRROR)/.done: tests/fixtures/uea_mirror.py
	$(PYTHON) tests/fixtures/uea_mirror.py $(UEA_MIRROR)
	touch $@

lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: install
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

install: .venv/.synced .dvc/plots-offline.html

.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --compile-bytecode
	$(VENV_BIN)/python -m kdlab.dvcguard --install
	touch $@

# The page `dvc plots show/diff` fill (.dvc/config: plots.html_template), with vega inlined
# from the pinned vl-convert-python so the plots draw with no network.
.dvc/plots-offline.html: .venv/.synced src/kdlab/plots_page.py
	$(RUN) python -m kdlab.plots_page $@

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

clean-env:
	rm -rf .venv .tools
